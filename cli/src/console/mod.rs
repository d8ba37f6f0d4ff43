//! `stripe-webhooks console`: a local web page of what happened to the money events, served on
//! 127.0.0.1 only, from the pipeline's own tables (never Stripe's API): the processor's feed records
//! (billing table, GSI `ByFeed`), the dedup table and the dead-letter queue. The page (HTML, CSS and JS
//! in one file, embedded in the binary; no external asset) polls this server's JSON API.
//!
//! Actions (replay, redrive) call the same code as the CLI subcommands and need the per-run token the
//! server wrote into the page: a request from another site cannot read the page, so it cannot know the
//! token, and the custom header it must carry cannot be sent cross-origin without a preflight that
//! this server never approves.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stripe_pipeline::{
    billing::{
        feed::{self, FeedEntry, FeedOutcome, FeedRange, FeedRecord},
        DynamoBillingStore,
    },
    dedup::{DuplicateCounter, DynamoDedupStore},
    event::EventType,
    money::Money,
    signature::unix_now,
    stripe_api::StripeApi,
};

use crate::{dead_letters, progress, replay, sqs::Queue, status};

const PAGE: &str = include_str!("page.html");
/// Feed days looked back through (the records' TTL is 30 days by default).
const DAYS_BACK: i64 = 31;
const MAX_PAGE: usize = 100;

/// What the console reads and acts on.
pub struct Console {
    /// The dedup table (status, replay).
    pub dedup: DynamoDedupStore,
    /// The billing table: the feed (its `ByFeed` index, the records), status.
    pub billing: DynamoBillingStore,
    /// The event queue (replay, redrive target).
    pub event_queue: Queue,
    /// The dead-letter queue.
    pub dead_letters: Queue,
    /// Stripe's API, for replay (absent: replay answers why).
    pub stripe: Option<StripeApi>,
    /// "Today" and the times shown are in this zone.
    pub time_zone: jiff::tz::TimeZone,
    /// Its name.
    pub time_zone_name: String,
    /// What the header says this is ("local emulators", "profile prod, eu-west-1").
    pub environment: String,
    /// The per-run token actions need.
    pub token: String,
    /// The largest SQS message the event queue takes (replay stashes bigger bodies).
    pub sqs_max_message_bytes: usize,
}

/// A random token for one run.
pub fn new_token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The server's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/events", get(events))
        .route("/api/types", get(types))
        .route("/api/summary", get(summary))
        .route("/api/events/{id}", get(detail))
        .route("/api/events/{id}/replay", post(replay_event))
        .route("/api/events/{id}/redrive", post(redrive))
        .with_state(console)
}

/// Serves until `shutdown` resolves. The address must be a loopback one.
pub async fn serve(
    console: Arc<Console>,
    address: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if !address.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the console binds to 127.0.0.1 only: it shows payment data",
        ));
    }
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why an API request failed. [`ConsoleError::status`] is the one place a status is chosen; what the
/// page reads is the error's own message, never the text of an underlying error (an AWS SDK error can
/// carry a request id, a table ARN, an account): that goes to the console's log.
#[derive(Debug, thiserror::Error)]
enum ConsoleError {
    /// The request itself is wrong (a cursor, a filter).
    #[error("{0}")]
    BadRequest(String),
    /// An action without the run's token.
    #[error("missing or wrong X-Console-Token")]
    Forbidden,
    /// An action this console cannot take as started.
    #[error("{0}")]
    Conflict(&'static str),
    /// A table, queue or Stripe's API failed.
    #[error("{what} unavailable; the console's log says why")]
    Unavailable {
        /// What failed, for people.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stripe's API refused or failed; what it says is ours, or Stripe's own `error.message`.
    #[error("Stripe: {0}")]
    Stripe(stripe_pipeline::stripe_api::StripeApiError),
    /// A date computation failed (a time zone without today).
    #[error("internal error; the console's log says why")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ConsoleError {
    fn unavailable(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            what,
            source: Box::new(source),
        }
    }

    fn internal(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(source))
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Stripe(stripe_pipeline::stripe_api::StripeApiError::NotFound) => {
                StatusCode::NOT_FOUND
            }
            Self::Unavailable { .. } | Self::Stripe(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %stripe_pipeline::telemetry::error_chain(&self), "console request failed");
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

async fn page(State(console): State<Arc<Console>>) -> Response {
    let html = PAGE
        .replace("__CONSOLE_TOKEN__", &console.token)
        .replace("__CONSOLE_ENV__", &escape_html(&console.environment));
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(html),
    )
        .into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[derive(Debug, Deserialize)]
struct FeedQuery {
    #[serde(default, rename = "type")]
    event_type: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// One card.
#[derive(Debug, Serialize)]
struct Card {
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    created_display: String,
    recorded_at: Option<i64>,
    amount: Option<i64>,
    currency: Option<String>,
    amount_display: Option<String>,
    customer: Option<String>,
    customer_email: Option<String>,
    object_id: Option<String>,
    outcome: FeedOutcome,
    detail: Option<String>,
    object_status: Option<String>,
}

impl Console {
    fn display(&self, unix: i64) -> String {
        jiff::Timestamp::from_second(unix)
            .map(|t| {
                t.to_zoned(self.time_zone.clone())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default()
    }

    fn card(&self, record: FeedRecord, recorded_at: Option<i64>) -> Card {
        let amount_display = match (record.amount, &record.currency) {
            (Some(amount), Some(currency)) => Some(Money::new(amount, currency).to_string()),
            _ => None,
        };
        Card {
            created_display: self.display(record.created),
            event_id: record.event_id,
            event_type: record.event_type,
            created: record.created,
            recorded_at,
            amount: record.amount,
            currency: record.currency,
            amount_display,
            customer: record.customer,
            customer_email: record.customer_email,
            object_id: record.object_id,
            outcome: record.outcome,
            detail: record.detail,
            object_status: record.object_status,
        }
    }

    /// Feed entries of one index partition, newest first, within `range`, up to `limit` of those
    /// passing `keep`; and whether more were left.
    async fn query_partition(
        &self,
        partition: &str,
        range: FeedRange<'_>,
        limit: usize,
        keep: &(dyn Fn(&FeedRecord) -> bool + Sync),
    ) -> Result<(Vec<FeedEntry>, bool), ConsoleError> {
        let mut found = Vec::new();
        let mut page = None;
        loop {
            let (entries, next) = self
                .billing
                .feed_page(partition, range, page.take())
                .await
                .map_err(|e| ConsoleError::unavailable("DynamoDB (the feed index)", e))?;
            for entry in entries {
                if keep(&entry.record) {
                    if found.len() == limit {
                        return Ok((found, true));
                    }
                    found.push(entry);
                }
            }
            page = next;
            if page.is_none() {
                return Ok((found, false));
            }
        }
    }

    /// Newest-first feed after `cursor` ("<day>|<sort key>"), `limit` cards, and the next cursor.
    async fn feed_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&FeedRecord) -> bool + Sync),
    ) -> Result<(Vec<Card>, Option<String>), ConsoleError> {
        let now = unix_now() as i64;
        let (mut day, mut before) = match cursor.and_then(|c| c.split_once('|')) {
            Some((day, sort)) => (
                day.parse::<i64>()
                    .map_err(|_| ConsoleError::BadRequest("bad cursor".into()))?,
                Some(sort.to_owned()),
            ),
            None => (now.div_euclid(86_400), None),
        };
        let oldest = now.div_euclid(86_400) - DAYS_BACK;
        let mut cards = Vec::new();
        while day >= oldest {
            let partition = feed::day_partition(day * 86_400);
            let want = limit - cards.len();
            let range = before.as_deref().map_or(FeedRange::All, FeedRange::Before);
            let (found, more) = self.query_partition(&partition, range, want, keep).await?;
            let last = found.last().map(|entry| entry.sort.clone());
            cards.extend(
                found
                    .into_iter()
                    .map(|entry| self.card(entry.record, entry.recorded_at)),
            );
            if cards.len() == limit {
                let next = if more {
                    last.map(|sort| format!("{day}|{sort}"))
                } else {
                    Some(format!("{}|~", day - 1))
                };
                return Ok((cards, next.filter(|_| day > oldest || more)));
            }
            day -= 1;
            before = None;
        }
        Ok((cards, None))
    }
}

async fn events(
    State(console): State<Arc<Console>>,
    Query(query): Query<FeedQuery>,
) -> Result<Json<Value>, ConsoleError> {
    let event_type = query.event_type.filter(|t| !t.is_empty());
    let outcome = match query.outcome.as_deref().filter(|o| !o.is_empty()) {
        None => None,
        Some(text) => Some(
            FeedOutcome::parse(text)
                .ok_or_else(|| ConsoleError::BadRequest(format!("unknown outcome {text:?}")))?,
        ),
    };
    let keep = move |r: &FeedRecord| {
        event_type.as_deref().is_none_or(|t| r.event_type == t)
            && outcome.is_none_or(|o| r.outcome == o)
    };
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let (cards, next) = console.feed_page(cursor.as_deref(), limit, &keep).await?;
    // A cursor that points past the last card of the oldest day has nothing behind it; say so now
    // rather than after an empty page.
    let next = match next {
        Some(next) => {
            let (more, _) = console.feed_page(Some(&next), 1, &keep).await?;
            (!more.is_empty()).then_some(next)
        }
        None => None,
    };
    Ok(Json(json!({ "events": cards, "next_cursor": next })))
}

async fn types(State(console): State<Arc<Console>>) -> Result<Json<Value>, ConsoleError> {
    let (recent, _) = console.feed_page(None, MAX_PAGE, &|_| true).await?;
    let mut types: Vec<String> = EventType::HANDLED.iter().map(|t| (*t).to_owned()).collect();
    types.extend(recent.into_iter().map(|c| c.event_type));
    types.sort();
    types.dedup();
    Ok(Json(json!({ "types": types })))
}

/// Today's totals (the console's time zone): money by currency from `payment_intent.succeeded` (every Stripe payment, card,
/// Checkout or invoice, succeeds through a PaymentIntent, so nothing is counted twice); failures as
/// failed payment attempts (`payment_intent.payment_failed`; the feed also shows the `charge.failed`
/// and `invoice.payment_failed` of the same attempt); open disputes (not won, lost or closed) by their
/// evidence deadline;
/// deliveries dropped as duplicates by the receiver or the processor (hourly counters, so the day's
/// edges are those of whole hours: exact for zones on whole-hour offsets).
async fn summary(State(console): State<Arc<Console>>) -> Result<Json<Value>, ConsoleError> {
    let now = unix_now() as i64;
    let today = jiff::Timestamp::from_second(now)
        .map_err(ConsoleError::internal)?
        .to_zoned(console.time_zone.clone());
    let start = today
        .start_of_day()
        .map_err(ConsoleError::internal)?
        .timestamp()
        .as_second();
    let end = today
        .tomorrow()
        .and_then(|t| t.start_of_day())
        .map_err(ConsoleError::internal)?
        .timestamp()
        .as_second();
    let mut succeeded: BTreeMap<String, i64> = BTreeMap::new();
    let mut failed = 0;
    for day in start.div_euclid(86_400)..=(end - 1).div_euclid(86_400) {
        let partition = feed::day_partition(day * 86_400);
        let (entries, _) = console
            .query_partition(&partition, FeedRange::All, usize::MAX, &|_| true)
            .await?;
        for FeedEntry {
            record,
            recorded_at,
            ..
        } in entries
        {
            if !recorded_at.is_some_and(|at| (start..end).contains(&at)) {
                continue;
            }
            match record.event_type.as_str() {
                "payment_intent.succeeded" => {
                    if let (Some(amount), Some(currency)) = (record.amount, record.currency) {
                        *succeeded.entry(currency).or_default() += amount;
                    }
                }
                "payment_intent.payment_failed" => failed += 1,
                _ => {}
            }
        }
    }
    let not_yet_due = feed::sort_key(now, "");
    let (disputes, _) = console
        .query_partition(
            feed::DISPUTES,
            FeedRange::From(&not_yet_due),
            usize::MAX,
            &|_| true,
        )
        .await?;
    let mut open: BTreeMap<String, i64> = BTreeMap::new();
    let mut over = HashSet::new();
    for FeedEntry { record, .. } in disputes {
        let closed = record.closes_dispute();
        if let (Some(id), Some(due)) = (record.object_id, record.due_by) {
            if closed {
                over.insert(id);
            } else {
                open.insert(id, due);
            }
        }
    }
    open.retain(|id, _| !over.contains(id));
    let nearest = open.values().min().copied();
    let dlq = console
        .dead_letters
        .info()
        .await
        .map_err(|e| ConsoleError::unavailable("SQS (the dead-letter queue)", e))?
        .visible;
    let deduplicated = console
        .dedup
        .duplicates_between(start.max(0) as u64, end.max(0) as u64)
        .await
        .map_err(|e| ConsoleError::unavailable("DynamoDB (the dedup table)", e))?;
    Ok(Json(json!({
        "date": today.strftime("%Y-%m-%d").to_string(),
        "time_zone": console.time_zone_name,
        "succeeded": succeeded.iter().map(|(currency, amount)| json!({
            "currency": currency, "amount": amount, "display": Money::new(*amount, currency).to_string(),
        })).collect::<Vec<_>>(),
        "failed": failed,
        "open_disputes": {
            "count": open.len(),
            "nearest_due_by": nearest,
            "nearest_display": nearest.map(|due| format!(
                "{} ({})", &console.display(due)[..10], stripe_pipeline::handlers::days_left(due, now))),
        },
        "dlq": dlq,
        "deduplicated": deduplicated,
    })))
}

async fn detail(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ConsoleError> {
    let known = status::status(&console.dedup, &console.billing, &id)
        .await
        .map_err(|e| ConsoleError::unavailable("DynamoDB (the event's status)", e))?;
    let record = feed::record_of(&console.billing, &id)
        .await
        .map_err(|e| ConsoleError::unavailable("DynamoDB (the billing table)", e))?
        .map(|entry| console.card(entry.record, entry.recorded_at));
    let letters = dead_letters::list(&console.dead_letters, 100)
        .await
        .map_err(|e| ConsoleError::unavailable("SQS (the dead-letter queue)", e))?;
    let intake = match &known.intake {
        status::Intake::Unknown => {
            json!({"state": "unknown", "event_type": null, "until_display": null})
        }
        status::Intake::Enqueued {
            event_type,
            expires_at,
        } => json!({
            "state": "enqueued", "event_type": event_type, "until_display": console.display(*expires_at as i64)}),
        status::Intake::Pending {
            event_type,
            lease_until,
            ..
        } => json!({
            "state": "pending", "event_type": event_type, "until_display": lease_until.map(|at| console.display(at as i64))}),
        status::Intake::Expired { expired_at } => json!({
            "state": "expired", "event_type": null, "until_display": console.display(*expired_at as i64)}),
    };
    Ok(Json(json!({
        "event_id": id,
        "record": record,
        "intake": intake,
        "applied_display": known.applied_at.map(|at| console.display(at)),
        "applied_type": known.applied_type,
        "notifications": known.notifications.iter().map(|n| json!({
            "channel": n.channel, "state": n.status, "at_display": null,
        })).collect::<Vec<_>>(),
        "dead_letters": letters.iter().filter(|l| l.event_id.as_deref() == Some(id.as_str())).map(|l| json!({
            "message_id": l.message_id, "receive_count": l.receive_count,
        })).collect::<Vec<_>>(),
    })))
}

fn check_token(console: &Console, headers: &HeaderMap) -> Result<(), ConsoleError> {
    let given = headers
        .get("x-console-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Constant-time: the token is the only thing between a local page and these actions.
    if given.len() == console.token.len()
        && given
            .bytes()
            .zip(console.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    {
        Ok(())
    } else {
        Err(ConsoleError::Forbidden)
    }
}

async fn replay_event(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ConsoleError> {
    check_token(&console, &headers)?;
    let Some(api) = &console.stripe else {
        return Err(ConsoleError::Conflict(
            "replay reads the event from Stripe's API: start the console with STRIPE_API_KEY (or STRIPE_API_KEY_SECRET_ARN)",
        ));
    };
    let queue = stripe_pipeline::queue::SqsEventQueue::new(
        console.event_queue.client().clone(),
        console.event_queue.url(),
    );
    let (replayed, _) = replay::replay(
        api,
        &console.dedup,
        &queue,
        &id,
        false,
        console.sqs_max_message_bytes,
    )
    .await
    .map_err(|e| match e {
        replay::ReplayError::Api(e) => ConsoleError::Stripe(e),
        replay::ReplayError::Intake(e) => {
            ConsoleError::unavailable("the dedup table or the event queue (replay)", e)
        }
    })?;
    let message = match replayed {
        replay::Replayed::Enqueued => format!("{id}: enqueued"),
        replay::Replayed::AlreadySeen => format!("{id}: already enqueued earlier, nothing sent"),
        replay::Replayed::Forced => format!("{id}: enqueued again"),
    };
    Ok(Json(json!({ "message": message })))
}

async fn redrive(
    State(console): State<Arc<Console>>,
    Path(_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ConsoleError> {
    check_token(&console, &headers)?;
    let summary = dead_letters::redrive(
        &console.dead_letters,
        &console.event_queue,
        None,
        &progress::hidden(),
    )
    .await
    .map_err(|e| ConsoleError::unavailable("SQS (redrive)", e))?;
    Ok(Json(json!({ "message": format!(
        "moved {} message(s) from the dead-letter queue to the event queue ({} failed)",
        summary.moved, summary.failed) })))
}
