//! Reading Stripe's API: `GET /v1/events` page by page, `GET /v1/events/{id}` (the CLI's backfill and
//! replay), and any object by its API path (the processor's refetch and thin events), under a request
//! rate limit, obeying 429 and `Retry-After`, retrying 5xx and dropped connections with backoff.
//!
//! Events come back as the raw JSON Stripe sent (a [`RawEvent`]), never re-serialized: the same bytes
//! go onto the queue, as with a webhook delivery.
//!
//! Only GETs are made, so every retry is safe. Stripe's `Stripe-Should-Retry` header, when present,
//! overrides the status-based decision.
//!
//! A caller with a deadline (the processor: its Lambda invocation ends) passes it to
//! [`StripeApi::object_for`]: no request, backoff or `Retry-After` sleep then runs past it, and one that
//! would fails at once with [`StripeApiError::OutOfTime`], which is worth retrying later. Requests for
//! a connected account's data name it ([`OnBehalfOf`]): `Stripe-Account` for v1 Connect events,
//! `Stripe-Context` for thin (v2) events.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use crate::event::{EventEnvelope, EventError};
use reqwest::{header::HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::{sync::Mutex, time::Instant};
use tracing::warn;

/// Most events one list request returns (Stripe's maximum `limit`).
pub const MAX_PAGE_SIZE: u8 = 100;
/// The longest `Retry-After` obeyed as given; longer ones are cut to this (a wrong header must not
/// stall an outage recovery for hours).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The longest one request may take (a deadline may cut it shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Stripe's read limit for a live-mode key, per account (every client of the key shares it).
pub const LIVE_MODE_READS_PER_SECOND: f64 = 100.0;
/// Stripe's read limit for a test-mode (sandbox) key, per account.
pub const TEST_MODE_READS_PER_SECOND: f64 = 25.0;

/// A Stripe API key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key; `None` if empty.
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into().trim().to_owned();
        (!key.is_empty()).then_some(Self(key))
    }

    /// Live (`true`) or test mode, from the prefix of a secret (`sk_`) or restricted (`rk_`) key;
    /// `None` for another shape.
    pub fn livemode(&self) -> Option<bool> {
        let mode = self
            .0
            .strip_prefix("sk_")
            .or_else(|| self.0.strip_prefix("rk_"))?;
        if mode.starts_with("live_") {
            Some(true)
        } else if mode.starts_with("test_") {
            Some(false)
        } else {
            None
        }
    }

    /// Stripe's read limit for this key's account: 100 requests/s in live mode, 25 in test mode. A
    /// key of unknown shape gets the lower one.
    pub fn account_reads_per_second(&self) -> f64 {
        match self.livemode() {
            Some(true) => LIVE_MODE_READS_PER_SECOND,
            _ => TEST_MODE_READS_PER_SECOND,
        }
    }
}

/// Whose data a request reads: the key's own account, or one connected to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBehalfOf<'a> {
    /// The key's own (platform) account: no header.
    #[default]
    Platform,
    /// A connected account (`acct_…`), sent as `Stripe-Account`: a v1 Connect event's top-level
    /// `account`.
    Account(&'a str),
    /// A thin (v2) event's `context`, sent as `Stripe-Context`.
    Context(&'a str),
}

impl OnBehalfOf<'_> {
    /// The header to send, if any; `Err` for a value that is not a Stripe account or context id
    /// (`acct_…`, or several joined by `/`), which could otherwise smuggle a header.
    fn header(self) -> Result<Option<(&'static str, String)>, StripeApiError> {
        let (name, value) = match self {
            Self::Platform => return Ok(None),
            Self::Account(value) => ("Stripe-Account", value),
            Self::Context(value) => ("Stripe-Context", value),
        };
        let plain = !value.is_empty()
            && value.len() <= 255
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/'));
        if !plain {
            return Err(StripeApiError::InvalidAccount);
        }
        Ok(Some((name, value.to_owned())))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; each later one doubles, with jitter.
    pub base_delay: Duration,
    /// The longest backoff (a `Retry-After` may be longer, up to [`MAX_RETRY_AFTER`]).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (1-based): exponential, between half and all of it.
    fn backoff(&self, retry: u32) -> Duration {
        let full = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        full.mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// Why the API could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// The base URL is not a URL.
    #[error("STRIPE_API_BASE is not an http(s) URL")]
    InvalidBase,
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// 401: the key is wrong, revoked or of another account.
    #[error("Stripe refused the API key (401)")]
    Unauthorized,
    /// 403: a restricted key without *Events: read*.
    #[error("the API key may not read events (403); a restricted key needs Events: read")]
    Forbidden,
    /// 404 on `GET /v1/events/{id}`: unknown, or older than 30 days.
    #[error("no such event (unknown, of the other mode, or older than Stripe's 30 days)")]
    NotFound,
    /// Another 4xx: a bad request, not worth retrying.
    #[error("Stripe refused the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Stripe's `error.message`.
        message: String,
    },
    /// Still 429 or 5xx after every retry.
    #[error("Stripe answered {status} {attempts} times; giving up")]
    GaveUp {
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// No answer (connection refused, reset, timed out) after every retry.
    #[error("Stripe could not be reached")]
    Unreachable(#[source] reqwest::Error),
    /// The answer is not what the API documents.
    #[error("Stripe's answer could not be read")]
    Malformed(#[source] serde_json::Error),
    /// An event in the answer has no usable id or type.
    #[error("Stripe returned something that is not an event")]
    NotAnEvent(#[source] EventError),
    /// The answer could not come before the caller's deadline: a `Retry-After` or backoff longer
    /// than the time left, no rate-limit slot before it, or a request still unanswered at it. Worth
    /// retrying later (the processor fails the message and SQS brings it back).
    #[error("no time left for Stripe's answer before the deadline")]
    OutOfTime,
    /// The event names a connected account or context that is not a Stripe id.
    #[error("the event's account or context is not a Stripe id")]
    InvalidAccount,
    /// No v1 collection is known for the object type.
    #[error("no v1 collection for objects of type {0}")]
    NoCollection(String),
}

/// One event as Stripe returned it.
#[derive(Debug, Clone)]
pub struct RawEvent {
    /// What the pipeline routes and deduplicates on.
    pub envelope: EventEnvelope,
    /// The event JSON exactly as received.
    pub body: Box<RawValue>,
}

impl RawEvent {
    /// Parses one event from its raw JSON.
    pub fn parse(body: Box<RawValue>) -> Result<Self, StripeApiError> {
        let envelope =
            EventEnvelope::parse(body.get().as_bytes()).map_err(StripeApiError::NotAnEvent)?;
        Ok(Self { envelope, body })
    }

    /// The raw bytes, as enqueued.
    pub fn bytes(&self) -> &[u8] {
        self.body.get().as_bytes()
    }
}

/// Which events to list. Stripe lists newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// `created[gte]`, unix seconds.
    pub created_gte: Option<u64>,
    /// `created[lt]`, unix seconds.
    pub created_lt: Option<u64>,
    /// `types[]`: only these types (Stripe takes at most 20).
    pub types: Vec<String>,
    /// `delivery_success`: `Some(false)` lists only events some webhook endpoint has not
    /// acknowledged (still retrying, or given up).
    pub delivery_success: Option<bool>,
}

impl EventFilter {
    /// The query parameters of one page.
    pub fn query(&self, starting_after: Option<&str>, limit: u8) -> Vec<(String, String)> {
        let mut query = vec![(
            "limit".to_owned(),
            limit.clamp(1, MAX_PAGE_SIZE).to_string(),
        )];
        if let Some(gte) = self.created_gte {
            query.push(("created[gte]".to_owned(), gte.to_string()));
        }
        if let Some(lt) = self.created_lt {
            query.push(("created[lt]".to_owned(), lt.to_string()));
        }
        for event_type in &self.types {
            query.push(("types[]".to_owned(), event_type.clone()));
        }
        if let Some(success) = self.delivery_success {
            query.push(("delivery_success".to_owned(), success.to_string()));
        }
        if let Some(id) = starting_after {
            query.push(("starting_after".to_owned(), id.to_owned()));
        }
        query
    }
}

/// One page of `GET /v1/events`.
#[derive(Debug)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<RawEvent>,
    /// Whether another page follows (ask with `starting_after` = the last id).
    pub has_more: bool,
}

#[derive(Deserialize)]
struct ListBody {
    data: Vec<Box<RawValue>>,
    has_more: bool,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
}

/// What the client has done so far, for summaries.
#[derive(Debug, Default)]
pub struct ApiCounters {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    waited_ms: AtomicU64,
}

/// A snapshot of [`ApiCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 5xx answers and dropped connections.
    pub server_errors: u64,
    /// Time spent waiting to retry.
    pub waited: Duration,
}

/// Spaces requests evenly: at most one per `interval`, whoever asks. A 429 pauses everyone.
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn new(per_second: f64) -> Self {
        let interval = if per_second.is_finite() && per_second > 0.0 {
            Duration::from_secs_f64(1.0 / per_second)
        } else {
            Duration::ZERO
        };
        Self {
            per_second: if interval.is_zero() {
                f64::INFINITY
            } else {
                per_second
            },
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Reserves the first free slot at or after `now` and returns its time, unless that is at or
    /// after `deadline`: then nothing is reserved, so a caller out of time takes no one's slot.
    async fn reserve(&self, now: Instant, deadline: Option<Instant>) -> Option<Instant> {
        let mut next = self.next.lock().await;
        let at = (*next).max(now);
        if deadline.is_some_and(|deadline| at >= deadline) {
            return None;
        }
        *next = at + self.interval;
        Some(at)
    }

    /// Waits for a slot; `false` (at once) if none is free before `deadline`.
    async fn acquire(&self, deadline: Option<Instant>) -> bool {
        match self.reserve(Instant::now(), deadline).await {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                true
            }
            None => false,
        }
    }

    /// No slot before `until` for anyone.
    async fn pause_until(&self, until: Instant) {
        let mut next = self.next.lock().await;
        *next = (*next).max(until);
    }
}

/// A client of Stripe's events API, built once per run.
#[derive(Debug)]
pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    key: ApiKey,
    limiter: RateLimiter,
    retry: RetryPolicy,
    counters: ApiCounters,
}

impl StripeApi {
    /// A client of the API at `base` (e.g. `https://api.stripe.com`), making at most `max_rps`
    /// requests per second.
    pub fn new(
        base: &str,
        key: ApiKey,
        max_rps: f64,
        retry: RetryPolicy,
    ) -> Result<Self, StripeApiError> {
        let base = base.trim_end_matches('/');
        let valid = reqwest::Url::parse(base)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !valid {
            return Err(StripeApiError::InvalidBase);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("stripe-webhooks/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(StripeApiError::Client)?;
        Ok(Self {
            http,
            base: base.to_owned(),
            key,
            limiter: RateLimiter::new(max_rps),
            retry,
            counters: ApiCounters::default(),
        })
    }

    /// One page of events, newest first.
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        starting_after: Option<&str>,
        limit: u8,
    ) -> Result<EventPage, StripeApiError> {
        let body = self
            .get(
                "/v1/events",
                &filter.query(starting_after, limit),
                OnBehalfOf::Platform,
                None,
            )
            .await?;
        let list: ListBody = serde_json::from_slice(&body).map_err(StripeApiError::Malformed)?;
        let events = list
            .data
            .into_iter()
            .map(RawEvent::parse)
            .collect::<Result<_, _>>()?;
        Ok(EventPage {
            events,
            has_more: list.has_more,
        })
    }

    /// One event by id.
    pub async fn event(&self, id: &str) -> Result<RawEvent, StripeApiError> {
        // Ids are `evt_` + alphanumerics; anything else could escape the path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StripeApiError::NotFound);
        }
        let body = self
            .get(&format!("/v1/events/{id}"), &[], OnBehalfOf::Platform, None)
            .await?;
        RawEvent::parse(serde_json::from_slice(&body).map_err(StripeApiError::Malformed)?)
    }

    /// An object by its API path (`/v1/subscriptions/sub_1`, a thin event's `related_object.url`), as
    /// raw JSON. Only Stripe API paths of plain segments are fetched, so a path from a message can
    /// never point the key at another host.
    pub async fn object(&self, path: &str) -> Result<String, StripeApiError> {
        self.object_for(path, OnBehalfOf::Platform, None).await
    }

    /// The object `id` of `object_type` (`subscription`, `invoice`…) as it is now, read from its v1
    /// collection ([`v1_collection`](crate::delivery::v1_collection)) like
    /// [`object_for`](Self::object_for).
    pub async fn current_object(
        &self,
        object_type: &str,
        id: &str,
        on_behalf_of: OnBehalfOf<'_>,
        deadline: Option<Instant>,
    ) -> Result<String, StripeApiError> {
        let collection = crate::delivery::v1_collection(object_type)
            .ok_or_else(|| StripeApiError::NoCollection(object_type.to_owned()))?;
        self.object_for(&format!("/v1/{collection}/{id}"), on_behalf_of, deadline)
            .await
    }

    /// [`object`](Self::object) of `on_behalf_of`'s account, answered before `deadline` or failed
    /// with [`StripeApiError::OutOfTime`] by then.
    pub async fn object_for(
        &self,
        path: &str,
        on_behalf_of: OnBehalfOf<'_>,
        deadline: Option<Instant>,
    ) -> Result<String, StripeApiError> {
        let safe = (path.starts_with("/v1/") || path.starts_with("/v2/"))
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
            && !path.contains("..");
        if !safe {
            return Err(StripeApiError::NotFound);
        }
        let body = self.get(path, &[], on_behalf_of, deadline).await?;
        String::from_utf8(body).map_err(|_| StripeApiError::NotFound)
    }

    /// The most requests per second this client sends.
    pub fn max_rps(&self) -> f64 {
        self.limiter.per_second()
    }

    /// What the client has done so far.
    pub fn stats(&self) -> ApiStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ApiStats {
            requests: load(&self.counters.requests),
            rate_limited: load(&self.counters.rate_limited),
            server_errors: load(&self.counters.server_errors),
            waited: Duration::from_millis(load(&self.counters.waited_ms)),
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        on_behalf_of: OnBehalfOf<'_>,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, StripeApiError> {
        let url = format!("{}{path}", self.base);
        let account = on_behalf_of.header()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !self.limiter.acquire(deadline).await {
                return Err(StripeApiError::OutOfTime);
            }
            // Each attempt ends by the deadline at the latest, so a hung connection cannot take the
            // caller past it.
            let timeout = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(StripeApiError::OutOfTime);
                    }
                    left.min(REQUEST_TIMEOUT)
                }
                None => REQUEST_TIMEOUT,
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .get(&url)
                .query(query)
                .bearer_auth(&self.key.0)
                .timeout(timeout);
            if let Some((name, value)) = &account {
                request = request.header(*name, value);
            }
            let sent = request.send().await;
            let delay = match sent {
                Ok(response) if response.status().is_success() => {
                    return response.bytes().await.map(|b| b.to_vec()).map_err(|error| {
                        if past(deadline, Duration::ZERO) {
                            StripeApiError::OutOfTime
                        } else {
                            StripeApiError::Unreachable(error)
                        }
                    });
                }
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await.unwrap_or_default();
                    if !should_retry(status, &headers) {
                        return Err(refusal(status, &body));
                    }
                    if attempt > self.retry.max_retries {
                        return Err(StripeApiError::GaveUp {
                            status: status.as_u16(),
                            attempts: attempt,
                        });
                    }
                    let delay = match retry_after(&headers) {
                        Some(wait) => wait.min(MAX_RETRY_AFTER),
                        None => self.retry.backoff(attempt),
                    };
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        // Everyone waits, not just this request: the limit is per account.
                        self.limiter.pause_until(Instant::now() + delay).await;
                    } else {
                        self.counters.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if past(deadline, delay) {
                        warn!(
                            status = status.as_u16(),
                            attempt,
                            retry_in_ms = delay.as_millis() as u64,
                            path,
                            "Stripe API: the retry would pass the deadline; giving up for now"
                        );
                        return Err(StripeApiError::OutOfTime);
                    }
                    warn!(
                        status = status.as_u16(),
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        path,
                        "Stripe API: retrying"
                    );
                    delay
                }
                Err(_) if past(deadline, Duration::ZERO) => return Err(StripeApiError::OutOfTime),
                Err(error) if attempt <= self.retry.max_retries && is_transient(&error) => {
                    self.counters.server_errors.fetch_add(1, Ordering::Relaxed);
                    let delay = self.retry.backoff(attempt);
                    if past(deadline, delay) {
                        return Err(StripeApiError::OutOfTime);
                    }
                    warn!(
                        attempt,
                        retry_in_ms = delay.as_millis() as u64,
                        path,
                        error = %error,
                        "Stripe API unreachable: retrying"
                    );
                    delay
                }
                Err(error) => return Err(StripeApiError::Unreachable(error)),
            };
            self.counters
                .waited_ms
                .fetch_add(delay.as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }
}

/// Whether waiting `delay` from now reaches `deadline`.
fn past(deadline: Option<Instant>, delay: Duration) -> bool {
    deadline.is_some_and(|deadline| Instant::now() + delay >= deadline)
}

fn is_transient(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request() || error.is_body()
}

/// Stripe's own advice wins; otherwise 429 and 5xx are worth retrying.
fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    match headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
    {
        Some("true") => true,
        Some("false") => false,
        _ => status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Stripe and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

fn refusal(status: StatusCode, body: &[u8]) -> StripeApiError {
    match status {
        StatusCode::UNAUTHORIZED => StripeApiError::Unauthorized,
        StatusCode::FORBIDDEN => StripeApiError::Forbidden,
        StatusCode::NOT_FOUND => StripeApiError::NotFound,
        _ if status.is_client_error() => StripeApiError::Rejected {
            status: status.as_u16(),
            message: serde_json::from_slice::<ErrorBody>(body)
                .ok()
                .and_then(|b| b.error.message)
                .unwrap_or_default(),
        },
        _ => StripeApiError::GaveUp {
            status: status.as_u16(),
            attempts: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_query_carries_every_filter() {
        let filter = EventFilter {
            created_gte: Some(100),
            created_lt: Some(200),
            types: vec!["invoice.paid".into(), "charge.refunded".into()],
            delivery_success: Some(false),
        };
        let query = filter.query(Some("evt_1"), 250);
        let pairs: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("limit", "100"),
                ("created[gte]", "100"),
                ("created[lt]", "200"),
                ("types[]", "invoice.paid"),
                ("types[]", "charge.refunded"),
                ("delivery_success", "false"),
                ("starting_after", "evt_1"),
            ]
        );
    }

    #[test]
    fn stripe_should_retry_overrides_the_status() {
        let mut headers = HeaderMap::new();
        assert!(should_retry(StatusCode::TOO_MANY_REQUESTS, &headers));
        assert!(should_retry(StatusCode::BAD_GATEWAY, &headers));
        assert!(!should_retry(StatusCode::BAD_REQUEST, &headers));
        headers.insert("stripe-should-retry", "false".parse().unwrap());
        assert!(!should_retry(StatusCode::SERVICE_UNAVAILABLE, &headers));
        headers.insert("stripe-should-retry", "true".parse().unwrap());
        assert!(should_retry(StatusCode::CONFLICT, &headers));
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_backoff_grows_to_its_cap() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
        let policy = RetryPolicy::default();
        assert!(policy.backoff(1) <= Duration::from_millis(500));
        assert!(policy.backoff(1) >= Duration::from_millis(250));
        assert!(policy.backoff(30) <= policy.max_delay);
        assert!(policy.backoff(30) >= policy.max_delay / 2);
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let key = ApiKey::new("sk_test_secret").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert!(ApiKey::new("  ").is_none());
    }

    // The limiter is checked on the slots it hands out for a fixed `now`, not by timing requests:
    // counts, no clock.
    #[tokio::test]
    async fn the_limiter_hands_out_at_most_its_rate_of_slots_per_second() {
        let limiter = RateLimiter::new(2.5);
        let t0 = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..10 {
            slots.push(limiter.reserve(t0, None).await.unwrap());
        }
        let in_first_second = slots
            .iter()
            .filter(|at| **at < t0 + Duration::from_secs(1))
            .count();
        assert_eq!(in_first_second, 3, "slots at 0, 400 and 800 ms");
        let in_four_seconds = slots
            .iter()
            .filter(|at| **at < t0 + Duration::from_secs(4))
            .count();
        assert_eq!(in_four_seconds, 10);
        assert_eq!(slots[9] - slots[0], Duration::from_millis(3600));
    }

    #[tokio::test]
    async fn no_slot_is_taken_past_a_deadline_and_a_pause_holds_everyone() {
        let limiter = RateLimiter::new(2.5);
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_secs(2));
        let granted = {
            let mut granted = 0;
            while limiter.reserve(t0, deadline).await.is_some() {
                granted += 1;
            }
            granted
        };
        assert_eq!(granted, 5, "0, 0.4, 0.8, 1.2, 1.6 s");
        // A caller without a deadline still gets the next slot: the refused ones took none.
        assert_eq!(
            limiter.reserve(t0, None).await,
            Some(t0 + Duration::from_secs(2))
        );
        limiter.pause_until(t0 + Duration::from_secs(60)).await;
        assert_eq!(
            limiter.reserve(t0, None).await,
            Some(t0 + Duration::from_secs(60))
        );
    }

    #[test]
    fn the_account_limit_follows_the_key_mode() {
        let limit = |key: &str| ApiKey::new(key).unwrap().account_reads_per_second();
        assert_eq!(limit("sk_live_abc"), LIVE_MODE_READS_PER_SECOND);
        assert_eq!(limit("rk_live_abc"), LIVE_MODE_READS_PER_SECOND);
        assert_eq!(limit("sk_test_abc"), TEST_MODE_READS_PER_SECOND);
        assert_eq!(limit("rk_test_abc"), TEST_MODE_READS_PER_SECOND);
        assert_eq!(limit("whatever"), TEST_MODE_READS_PER_SECOND);
        assert_eq!(ApiKey::new("sk_live_abc").unwrap().livemode(), Some(true));
        assert_eq!(ApiKey::new("pk_live_abc").unwrap().livemode(), None);
    }

    #[test]
    fn connected_accounts_are_sent_as_their_header_and_odd_values_refused() {
        assert_eq!(OnBehalfOf::Platform.header().unwrap(), None);
        assert_eq!(
            OnBehalfOf::Account("acct_1Abc").header().unwrap(),
            Some(("Stripe-Account", "acct_1Abc".to_owned()))
        );
        assert_eq!(
            OnBehalfOf::Context("acct_1Abc/acct_2Def").header().unwrap(),
            Some(("Stripe-Context", "acct_1Abc/acct_2Def".to_owned()))
        );
        for bad in ["", "acct_1\r\nX-Evil: 1", "acct 1"] {
            assert!(matches!(
                OnBehalfOf::Account(bad).header(),
                Err(StripeApiError::InvalidAccount)
            ));
        }
    }
}
