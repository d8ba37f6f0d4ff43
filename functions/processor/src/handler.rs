//! One SQS batch: each message's event is planned by its handler, applied to the billing state exactly
//! once, and its notifications sent; the response lists exactly the messages that failed.
//!
//! A failed message is listed as a `BatchItemFailure`, so SQS retries only it (and moves it to the DLQ
//! after `maxReceiveCount`) while the rest of the batch is deleted. That needs
//! `FunctionResponseTypes: [ReportBatchItemFailures]` on the event source mapping (set in
//! `template.yaml`); without it the response is ignored and a failure retries the whole batch.
//! Nothing is acknowledged that was not applied: a message succeeds only once its changes committed
//! (now or by an earlier delivery) and its notifications were sent (now or before) — or a channel
//! refused one for good (a configuration error, logged and counted: retrying cannot fix it).
//!
//! Stripe API fetches are bounded by the invocation's deadline ([`fetch_deadline`]): a fetch that
//! cannot finish in time fails its own message, which SQS retries, instead of the whole invocation
//! timing out and SQS redelivering messages already done.

use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use lambda_runtime::{Error, LambdaEvent};
use stripe_pipeline::{
    billing::{Applied, AttributesExt, BillingError, BillingStore, EventMarker, Key, NotifyClaim},
    dedup::{DedupError, DedupStore},
    delivery::{parse_delivery, Delivery},
    event::{EventError, EventType, StripeEvent},
    feed::FeedRecord,
    handlers::{self, HandlerError, Notification},
    notify::{About, Channel, NotifyError, Router},
    queue::{attribute, MessageBody, QueueError, QueueMessage},
    signature::unix_now,
    stripe_api::{OnBehalfOf, StripeApi, StripeApiError},
    telemetry::{error_chain, Metrics, Outcome, DECISION},
};
use tracing::{error, info, warn, Instrument};

/// Everything a batch needs, built once at cold start.
#[derive(Debug)]
pub struct App<S, B> {
    /// The dedup table, where bodies too large for SQS are stashed.
    pub bodies: S,
    /// The billing state.
    pub billing: B,
    /// Where notifications go, by event type; with no channels they are only logged.
    pub notify: Router,
    /// Stripe's API, if a key is configured: ordering-sensitive objects are re-fetched before their
    /// handler runs, and thin events are fetched. Without it thin events cannot be handled.
    pub stripe: Option<StripeApi>,
    /// EMF metrics.
    pub metrics: Metrics,
}

/// Why one message could not be processed. Each is retried by SQS, then dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The message has no body.
    #[error("message has no body")]
    EmptyMessage,
    /// The body does not match its `body_location`.
    #[error("malformed message")]
    Malformed(#[from] QueueError),
    /// The stashed body could not be read.
    #[error("stashed body unavailable")]
    StashedBody(#[from] DedupError),
    /// The body is not a Stripe event.
    #[error("not a stripe event")]
    NotAnEvent(#[from] EventError),
    /// The handler could not plan.
    #[error("handler failed")]
    Handler(#[from] HandlerError),
    /// The billing table failed.
    #[error("billing state unavailable")]
    Billing(#[from] BillingError),
    /// A notification could not be sent.
    #[error("notification failed")]
    Notify(#[from] NotifyError),
    /// A thin event arrived, but no Stripe API key is configured, or it points at nothing.
    #[error("thin event {0} cannot be fetched (no STRIPE_API_KEY, or no related object)")]
    ThinEventNotFetched(String),
    /// Another delivery of the event holds the notification's claim; retried until it is sent.
    #[error("notification is being sent by another delivery")]
    NotificationInFlight,
    /// The channel accepted the notification but its `sent` mark failed: the retry sends it again
    /// once the claim's lease ends. Neither Slack webhooks nor SES take an idempotency key, so a
    /// second copy is the price of never losing one.
    #[error("notification sent but not recorded; the retry sends it again")]
    NotificationUnrecorded(#[source] BillingError),
    /// Stripe's API did not answer (after its own retries): the message is retried.
    #[error("Stripe API fetch failed")]
    Fetch(#[from] StripeApiError),
}

impl ProcessError {
    fn reason(&self) -> &'static str {
        match self {
            Self::EmptyMessage | Self::Malformed(_) | Self::NotAnEvent(_) => "malformed_message",
            Self::StashedBody(_) => "stashed_body_unavailable",
            Self::Handler(HandlerError::Object(_)) => "unexpected_object",
            Self::Handler(HandlerError::Unfulfillable(_)) => "unfulfillable_payment",
            Self::Handler(HandlerError::Billing(_)) | Self::Billing(_) => "billing_unavailable",
            Self::Notify(_) => "notification_failed",
            Self::NotificationInFlight => "notification_in_flight",
            Self::NotificationUnrecorded(_) => "notification_unrecorded",
            Self::ThinEventNotFetched(_) => "thin_event_not_fetched",
            Self::Fetch(StripeApiError::OutOfTime) => "stripe_api_out_of_time",
            Self::Fetch(_) => "stripe_api_unavailable",
        }
    }
}

/// Handles one batch; never fails as a whole, each message succeeds or is reported.
pub async fn handle<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = fetch_deadline(event.context.deadline, SystemTime::now());
    let results = join_all(event.payload.records.iter().map(|message| {
        let message_id = message.message_id.clone().unwrap_or_default();
        let event_id = message_attribute(message, attribute::EVENT_ID).unwrap_or("");
        let span = tracing::info_span!("message", message_id = %message_id, event_id = %event_id);
        async move { (message_id, process(app, message, deadline).await) }.instrument(span)
    }))
    .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, result) in results {
        if result.is_err() {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

/// The share of an invocation's time left that Stripe fetches may use; the rest is kept for applying
/// the events and sending their notifications after them (a DynamoDB transaction, up to 5 s per Slack
/// post), so a slow fetch never times the invocation out: 20 s of the template's 30 s timeout.
const FETCH_SHARE_OF_TIME_LEFT: f64 = 2.0 / 3.0;

/// When the batch's Stripe fetches must be done: [`FETCH_SHARE_OF_TIME_LEFT`] of the time until
/// `deadline_ms` (the invocation's deadline, unix milliseconds, from the Lambda context). `None` when
/// no deadline is known (0: `Context::default()`, as the local poller and unit tests pass it).
pub fn fetch_deadline(deadline_ms: u64, now: SystemTime) -> Option<tokio::time::Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    let left = deadline.duration_since(now).unwrap_or_default();
    Some(tokio::time::Instant::now() + left.mul_f64(FETCH_SHARE_OF_TIME_LEFT))
}

async fn process<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    message: &SqsMessage,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), ProcessError> {
    let started = Instant::now();
    let result = apply(app, message, deadline).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(done) => {
            let outcome = if done.handled {
                Outcome::Handled
            } else {
                Outcome::Ignored
            };
            info!(
                target: DECISION,
                event_id = %done.event_id,
                event_type = %done.event_type,
                outcome = %outcome,
                reason = done.reason,
                skipped = ?done.skipped,
                notified = done.notified,
                latency_ms,
                emf = app.metrics.emf(outcome, latency_ms).as_str(),
                "event processed"
            );
        }
        Err(err) => {
            error!(target: DECISION, outcome = %Outcome::Failed, reason = err.reason(), error = %error_chain(err), latency_ms, receive_count = receive_count(message), emf = app.metrics.emf(Outcome::Failed, latency_ms).as_str(), "message failed; SQS will retry it");
        }
    }
    result.map(|_| ())
}

/// What became of one event, for its log line.
struct Done {
    event_id: String,
    event_type: String,
    handled: bool,
    reason: &'static str,
    skipped: Vec<&'static str>,
    notified: usize,
}

async fn apply<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    message: &SqsMessage,
    deadline: Option<tokio::time::Instant>,
) -> Result<Done, ProcessError> {
    let event = match read_event(app, message, deadline).await? {
        Read::Event(event) => event,
        Read::AppliedBefore { id, event_type } => {
            count_duplicate(app, message, &id, unix_now() as i64).await;
            return Ok(Done {
                handled: !matches!(EventType::from(event_type.as_str()), EventType::Other(_)),
                event_id: id,
                event_type,
                reason: "applied_before",
                skipped: Vec::new(),
                notified: 0,
            });
        }
    };
    let mut done = Done {
        event_id: event.id.clone(),
        event_type: event.event_type.to_string(),
        handled: false,
        reason: "no_handler",
        skipped: Vec::new(),
        notified: 0,
    };
    let now = unix_now() as i64;
    // Every event gets a feed record, carried by its marker: types no handler acts on too.
    let record = FeedRecord::of(&event);
    let marker = EventMarker::new(&event.id, event.event_type.as_str())
        .recording(record.marker_attributes(now));
    let mut plan = match handlers::plan(&event, &app.billing, now).await? {
        Some(plan) => {
            done.handled = true;
            plan
        }
        None => handlers::Plan {
            changes: Vec::new(),
            notifications: Vec::new(),
        },
    };
    plan.changes.extend(record.dispute_entry());
    match app.billing.apply(&marker, plan.changes).await? {
        Applied::Now { skipped } => {
            done.reason = if skipped.is_empty() {
                "applied"
            } else {
                "applied_older_event"
            };
            done.skipped = skipped;
        }
        Applied::Before => {
            done.reason = "applied_before";
            count_duplicate(app, message, &event.id, now).await;
        }
    }
    if !done.handled {
        done.reason = "no_handler";
    }
    // Notifications go out after the state commits; a redelivery (after a failed send) lands here with
    // `Applied::Before` and sends only what no channel has recorded as sent. Every channel is tried
    // even when one fails, so a channel that is down delays only itself.
    let mut failed = None;
    for notification in &plan.notifications {
        let channels = app.notify.channels_for(event.event_type.as_str());
        if channels.is_empty() {
            info!(event_id = %event.id, audience = notification.audience.as_str(), "notification (no channel routed)");
        }
        for (name, channel) in channels {
            match notify(app, &event, notification, name, channel, now).await {
                Ok(true) => done.notified += 1,
                Ok(false) => {}
                // The channel refused it for good (a Slack webhook revoked, removed, archived): no
                // retry can deliver it, and failing the message would only walk the money event
                // into the DLQ. Its claim was given up, so a replay sends it once the channel is
                // fixed.
                Err(ProcessError::Notify(err)) if err.is_permanent() => {
                    error!(event_id = %event.id, channel = name, kind = channel.kind(), reason = "notification_misconfigured", error = %error_chain(&err), "notification refused for good: fix the channel; not retried");
                    app.metrics.record_misconfigured_channel(name);
                }
                Err(err) => {
                    warn!(event_id = %event.id, channel = name, kind = channel.kind(), error = %error_chain(&err), "notification failed; the message will be retried");
                    failed.get_or_insert(err);
                }
            }
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(done),
    }
}

/// Counts a delivery of an event already applied for the console, if it is the message's first receive:
/// that is a duplicate (both ingresses on, or a copy that raced past the receiver); a retried message
/// is not one.
async fn count_duplicate<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    message: &SqsMessage,
    event_id: &str,
    now: i64,
) {
    if receive_count(message).parse::<u32>().unwrap_or(1) <= 1 {
        if let Err(err) = app.bodies.count_duplicate(now as u64).await {
            warn!(event_id = %event_id, error = %error_chain(&err), "duplicate not counted");
        }
    }
}

/// Sends one notification to one channel unless it was already sent there for this event; `true` if
/// sent now.
async fn notify<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    event: &StripeEvent,
    notification: &Notification,
    name: &str,
    channel: &Channel,
    now: i64,
) -> Result<bool, ProcessError> {
    // One record per (event, channel, kind of news): what `status` and the console show.
    let key = format!("{name}.{}", notification.audience.as_str());
    let token = format!("{:032x}", fastrand::u128(..));
    match app
        .billing
        .claim_notification(&event.id, &key, &token, now)
        .await?
    {
        NotifyClaim::Claimed => {}
        NotifyClaim::AlreadySent => return Ok(false),
        NotifyClaim::HeldElsewhere => return Err(ProcessError::NotificationInFlight),
    }
    let about = About {
        event_id: &event.id,
        event_type: event.event_type.as_str(),
        livemode: event.livemode,
    };
    if let Err(err) = channel.send(notification, about).await {
        // Give the claim up so the retried message sends it; if this fails too, the lease runs out.
        let _ = app
            .billing
            .finish_notification(&event.id, &key, false)
            .await;
        return Err(err.into());
    }
    app.billing
        .finish_notification(&event.id, &key, true)
        .await
        .map_err(ProcessError::NotificationUnrecorded)?;
    Ok(true)
}

/// What reading a message gave.
enum Read {
    /// The event, ready for its handler.
    Event(StripeEvent),
    /// A thin event applied before, with nothing left to send: not fetched at all.
    AppliedBefore {
        /// `evt_…`
        id: String,
        /// Its type (without the `v1.` prefix).
        event_type: String,
    },
}

async fn read_event<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    message: &SqsMessage,
    deadline: Option<tokio::time::Instant>,
) -> Result<Read, ProcessError> {
    let body = message.body.as_deref().ok_or(ProcessError::EmptyMessage)?;
    let location = message_attribute(message, attribute::BODY_LOCATION);
    let bytes = match QueueMessage::parse_body(body, location)? {
        MessageBody::Inline(text) => text.into_bytes(),
        MessageBody::Stashed(stashed) => app.bodies.fetch_body(&stashed).await?,
    };
    match parse_delivery(&bytes)? {
        Delivery::Snapshot { event, .. } => match &app.stripe {
            Some(stripe) => Ok(Read::Event(refetch(app, stripe, event, deadline).await?)),
            None => Ok(Read::Event(event)),
        },
        Delivery::Thin { mut event, .. } => {
            let Some(stripe) = &app.stripe else {
                return Err(ProcessError::ThinEventNotFetched(event.id));
            };
            if event.related_object.is_none() {
                return Err(ProcessError::ThinEventNotFetched(event.id));
            }
            let on_behalf_of = event
                .context
                .as_deref()
                .map_or(OnBehalfOf::Platform, OnBehalfOf::Context);
            if event.snapshot_event.is_none() && event.event_type.starts_with("v1.") {
                event.snapshot_event =
                    snapshot_event_of(stripe, &event.id, on_behalf_of, deadline).await?;
            }
            let event_type = event
                .event_type
                .strip_prefix("v1.")
                .unwrap_or(&event.event_type);
            if applied_and_notified(app, event.effect_id(), event_type).await? {
                return Ok(Read::AppliedBefore {
                    id: event.effect_id().to_owned(),
                    event_type: event_type.to_owned(),
                });
            }
            let Some(related) = &event.related_object else {
                return Err(ProcessError::ThinEventNotFetched(event.id));
            };
            let object = stripe
                .object_for(&related.url, on_behalf_of, deadline)
                .await?;
            Ok(Read::Event(event.into_snapshot(object)?))
        }
    }
}

/// The snapshot event a thin event of a v1 type mirrors, read from the whole v2 event when the
/// notification did not carry it: Stripe names it there (`snapshot_event`), and while an endpoint
/// migrates both copies arrive, so both must be recorded under that one id. `None` when the thin event
/// mirrors no snapshot event (or Stripe no longer has it: events are kept 30 days).
async fn snapshot_event_of(
    stripe: &StripeApi,
    thin_id: &str,
    on_behalf_of: OnBehalfOf<'_>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<String>, ProcessError> {
    #[derive(serde::Deserialize)]
    struct WholeEvent {
        #[serde(default)]
        snapshot_event: Option<String>,
    }
    let path = format!("/v2/core/events/{thin_id}");
    match stripe.object_for(&path, on_behalf_of, deadline).await {
        Ok(body) => Ok(serde_json::from_str::<WholeEvent>(&body)
            .map_err(EventError::NotAnEvent)?
            .snapshot_event
            .filter(|id| !id.is_empty())),
        Err(StripeApiError::NotFound) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Whether the event's marker exists and every channel its type is routed to has recorded its
/// notification as sent: then a redelivery has nothing to do that a fetch could serve. (One query:
/// the marker and the notification records share the event's partition.)
async fn applied_and_notified<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    event_id: &str,
    event_type: &str,
) -> Result<bool, BillingError> {
    let marker = Key::event_marker(event_id);
    let items = app.billing.query(&marker.pk).await?;
    if !items.iter().any(|(sk, _)| *sk == marker.sk) {
        return Ok(false);
    }
    if !handlers::NOTIFYING.contains(&event_type) {
        return Ok(true);
    }
    let sent = |channel: &str| {
        // Records are keyed `<channel>.<audience>`.
        let prefix = Key::notification(event_id, &format!("{channel}.")).sk;
        items
            .iter()
            .any(|(sk, item)| sk.starts_with(&prefix) && item.s("status") == Some("sent"))
    };
    Ok(app
        .notify
        .channels_for(event_type)
        .iter()
        .all(|(name, _)| sent(name)))
}

/// Refetch mode: the objects whose state depends on delivery order (subscriptions, invoices) are read
/// from Stripe as they are now, so a handler never writes a stale snapshot even when events arrive
/// out of order. The event's own version still orders the write.
///
/// An event whose marker exists is not re-fetched: the marker refuses its changes, so Stripe's current
/// object would go unused (any notification still unsent reads the delivered snapshot). A connected
/// account's event (`account`) is fetched from that account (`Stripe-Account`).
async fn refetch<S: DedupStore, B: BillingStore>(
    app: &App<S, B>,
    stripe: &StripeApi,
    mut event: StripeEvent,
    deadline: Option<tokio::time::Instant>,
) -> Result<StripeEvent, ProcessError> {
    use stripe_pipeline::event::EventType::*;
    let kind = match event.event_type {
        CustomerSubscriptionCreated | CustomerSubscriptionUpdated | CustomerSubscriptionDeleted => {
            "subscriptions"
        }
        InvoicePaid | InvoicePaymentSucceeded | InvoicePaymentFailed | InvoiceFinalized => {
            "invoices"
        }
        _ => return Ok(event),
    };
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let Id { id } = event.object()?;
    if app
        .billing
        .get(&Key::event_marker(&event.id))
        .await?
        .is_some()
    {
        return Ok(event);
    }
    let on_behalf_of = event
        .account
        .as_deref()
        .map_or(OnBehalfOf::Platform, OnBehalfOf::Account);
    let current = stripe
        .object_for(&format!("/v1/{kind}/{id}"), on_behalf_of, deadline)
        .await?;
    event.data.object =
        serde_json::value::RawValue::from_string(current).map_err(EventError::NotAnEvent)?;
    Ok(event)
}

fn message_attribute<'a>(message: &'a SqsMessage, name: &str) -> Option<&'a str> {
    message
        .message_attributes
        .get(name)?
        .string_value
        .as_deref()
}

fn receive_count(message: &SqsMessage) -> &str {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc, OnceLock,
        },
        time::Duration,
    };

    use aws_lambda_events::event::sqs::SqsMessageAttribute;
    use lambda_runtime::Context;
    use stripe_pipeline::{
        billing::{self, MemoryBillingStore},
        dedup::MemoryDedupStore,
        signature::unix_now,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    type TestApp = App<MemoryDedupStore, MemoryBillingStore>;

    fn app() -> TestApp {
        App {
            bodies: MemoryDedupStore::new(Duration::from_secs(3600), Duration::from_secs(30)),
            billing: MemoryBillingStore::new(),
            notify: Router::none(),
            stripe: None,
            metrics: Metrics::new("Test", "processor"),
        }
    }

    fn message(id: &str, body: &str, location: Option<&str>) -> SqsMessage {
        let mut message = SqsMessage::default();
        message.message_id = Some(id.to_owned());
        message.body = Some(body.to_owned());
        if let Some(location) = location {
            let mut value = SqsMessageAttribute::default();
            value.string_value = Some(location.to_owned());
            value.data_type = Some("String".to_owned());
            message
                .message_attributes
                .insert(attribute::BODY_LOCATION.to_owned(), value);
        }
        message
    }

    async fn failed_ids(
        app: &App<MemoryDedupStore, MemoryBillingStore>,
        records: Vec<SqsMessage>,
    ) -> Vec<String> {
        let mut event = SqsEvent::default();
        event.records = records;
        let response = handle(app, LambdaEvent::new(event, Context::default()))
            .await
            .unwrap();
        response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect()
    }

    #[test]
    fn fetches_get_two_thirds_of_the_time_the_invocation_has_left() {
        let now = SystemTime::now();
        assert!(fetch_deadline(0, now).is_none(), "no deadline known");
        let in_30s = (now + Duration::from_secs(30))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let before = tokio::time::Instant::now();
        let deadline = fetch_deadline(in_30s, now).unwrap();
        let after = tokio::time::Instant::now();
        assert!(deadline >= before + Duration::from_millis(19_990));
        assert!(deadline <= after + Duration::from_secs(20));
        // Already past: the deadline is now, so every fetch fails at once.
        assert!(fetch_deadline(1, now).unwrap() <= tokio::time::Instant::now());
    }

    #[tokio::test]
    async fn only_the_failing_messages_are_reported() {
        let app = app();
        let good = include_str!("../../../tests/fixtures/stripe/events/invoice.paid.json");
        let records = vec![
            message("m-good", good, Some("inline")),
            message("m-not-json", "{not json", None),
            message("m-good-no-attributes", good, None),
            message("m-bad-ref", "{}", Some("dedup_table")),
            message("m-unknown-location", good, Some("s3")),
        ];
        assert_eq!(
            failed_ids(&app, records).await,
            ["m-not-json", "m-bad-ref", "m-unknown-location"]
        );
    }

    #[tokio::test]
    async fn stashed_bodies_are_fetched_and_a_missing_one_fails_the_message() {
        let app = app();
        let body = include_bytes!("../../../tests/fixtures/stripe/events/charge.refunded.json");
        let stashed = app
            .bodies
            .stash_body("evt_big", body, unix_now())
            .await
            .unwrap();
        let reference = serde_json::to_string(&stashed).unwrap();
        let mut missing = stashed.clone();
        missing.sha256 = "00".repeat(32);
        let missing = serde_json::to_string(&missing).unwrap();
        let records = vec![
            message("m-stashed", &reference, Some("dedup_table")),
            message("m-missing", &missing, Some("dedup_table")),
        ];
        assert_eq!(failed_ids(&app, records).await, ["m-missing"]);
        // The stashed charge.refunded was applied.
        let charge = app
            .billing
            .get(&billing::Key::object(
                "CHARGE",
                "ch_1PgafuB7WZ01zgkWXYmPNZs8",
            ))
            .await
            .unwrap();
        assert!(charge.is_some());
    }

    #[tokio::test]
    async fn billing_down_fails_the_message_and_a_retry_applies_it_once() {
        let app = app();
        let body = include_str!("../../../tests/fixtures/stripe/events/invoice.paid.json");
        app.billing.set_unavailable(true);
        assert_eq!(
            failed_ids(&app, vec![message("m1", body, None)]).await,
            ["m1"]
        );
        app.billing.set_unavailable(false);
        assert!(failed_ids(&app, vec![message("m1", body, None)])
            .await
            .is_empty());
        let state = app.billing.state();
        assert!(failed_ids(&app, vec![message("m1", body, None)])
            .await
            .is_empty());
        assert_eq!(app.billing.state(), state);
    }

    /// A local Slack webhook that answers 200 to every post; after the first it takes the billing
    /// table down, so that notification's `sent` mark fails right after the channel accepted it.
    async fn slack_breaking_billing_once(
        app: Arc<OnceLock<Arc<TestApp>>>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/services/T/B/X", listener.local_addr().unwrap());
        let posts = Arc::new(AtomicUsize::new(0));
        let counted = posts.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                // The notifier posts one small JSON object per connection.
                while !request.ends_with(b"}") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    if let Some(app) = app.get() {
                        app.billing.set_unavailable(true);
                    }
                }
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        (url, posts)
    }

    #[tokio::test]
    async fn a_notification_whose_mark_fails_is_sent_again_never_lost() {
        let cell = Arc::new(OnceLock::new());
        let (url, posts) = slack_breaking_billing_once(cell.clone()).await;
        let routes = stripe_pipeline::notify::Routes::parse(None, Some(&url), None).unwrap();
        let mut app = app();
        app.notify = Router::new(routes, None, None).unwrap();
        // A lease that has run out by the retry, as 30 s has by the 200 s visibility timeout.
        app.billing = MemoryBillingStore::new().with_notify_lease(0);
        let app = Arc::new(app);
        cell.set(app.clone()).ok().unwrap();
        let body =
            include_str!("../../../tests/fixtures/stripe/events/invoice.payment_failed.json");

        // Slack took it, then the mark failed: the message fails, and says why.
        let err = process(&app, &message("m1", body, None), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProcessError::NotificationUnrecorded(_)),
            "{err:?}"
        );
        assert_eq!(err.reason(), "notification_unrecorded");
        assert_eq!(posts.load(Ordering::SeqCst), 1);
        app.billing.set_unavailable(false);
        let state = app.billing.state();

        // The retry, once the lease is over: billing state untouched, Slack hears it a second time
        // (never zero times); a third delivery sends nothing.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(failed_ids(&app, vec![message("m1", body, None)])
            .await
            .is_empty());
        assert_eq!(posts.load(Ordering::SeqCst), 2);
        assert!(failed_ids(&app, vec![message("m1", body, None)])
            .await
            .is_empty());
        assert_eq!(posts.load(Ordering::SeqCst), 2);
        assert_eq!(app.billing.state(), state);
    }
}
