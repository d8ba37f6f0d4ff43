//! `POST /webhooks/stripe`: verify, claim, enqueue, answer.
//!
//! The answer is what tells Stripe whether to retry, so each one is chosen for that: 2xx only once the
//! event is safely on the queue (or already was), 4xx for deliveries no retry can fix, and 409 / 5xx
//! whenever a retry might succeed. All of it is decided in one place, [`ReceiverError::status`].

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lambda_http::{
    http::{header, Method, StatusCode},
    Body, Request, RequestExt, Response,
};
use stripe_pipeline::{
    config::{TestConnectEvents, RECEIVER_TIMEOUT_SECS},
    dedup::DedupStore,
    event::{EventEnvelope, EventError},
    intake::{self, Admitted, IntakeError, RELEASE_GRACE},
    queue::EventQueue,
    signature::{SignatureError, SignatureVerifier},
    source_ips::SourceIpAllowList,
    telemetry::{error_chain, Metrics, Outcome, DECISION},
};
use tracing::{error, info, warn};

/// The route this function serves (after any API Gateway stage prefix).
pub const WEBHOOK_PATH: &str = "/webhooks/stripe";
const SIGNATURE_HEADER: &str = "stripe-signature";

/// The part of the invocation's time kept back from the work: enough to release a claim
/// ([`RELEASE_GRACE`]) and still answer and log before Lambda ends the invocation.
pub const ANSWER_RESERVE: Duration = RELEASE_GRACE.saturating_add(Duration::from_millis(500));

/// Everything a request needs, built once at cold start.
#[derive(Debug)]
pub struct App<S, Q> {
    /// The only addresses requests may come from, if the allow-list is on.
    pub source_ips: Option<SourceIpAllowList>,
    /// Checks `Stripe-Signature`.
    pub verifier: SignatureVerifier,
    /// The dedup table.
    pub store: S,
    /// The event queue.
    pub queue: Q,
    /// Expected `livemode`, if enforced.
    pub livemode: Option<bool>,
    /// What a live endpoint does with connected accounts' test-mode events.
    pub test_connect_events: TestConnectEvents,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Largest message the queue takes.
    pub sqs_max_message_bytes: usize,
    /// EMF metrics.
    pub metrics: Metrics,
}

/// Why a delivery was not (or not yet) accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The allow-list is on and the caller's address is not on it (or unknown).
    #[error("forbidden")]
    SourceNotAllowed,
    /// Any path but [`WEBHOOK_PATH`].
    #[error("not found")]
    NotFound,
    /// Any method but POST.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Body over the configured limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The signature does not hold.
    #[error("invalid signature")]
    Signature(#[from] SignatureError),
    /// Signed, but not a Stripe event.
    #[error("not a stripe event")]
    NotAnEvent(#[from] EventError),
    /// A test-mode event at a live endpoint or the reverse: the endpoint's secret belongs to the other
    /// mode's stack. Retrying cannot help; the operator must fix the configuration.
    #[error("livemode mismatch")]
    LivemodeMismatch,
    /// Another request is enqueueing the same event right now, or the dedup table or queue failed.
    #[error("{}", match .0 {
        IntakeError::InFlight => "event is being processed",
        IntakeError::DeadlineExceeded { .. } => "deadline exceeded",
        _ => "temporarily unavailable",
    })]
    Intake(#[from] IntakeError),
}

impl ReceiverError {
    /// The one place errors become HTTP statuses.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SourceNotAllowed => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::NotAnEvent(_) | Self::LivemodeMismatch => StatusCode::BAD_REQUEST,
            // Not 2xx: the other attempt may still fail, and then only a retry saves the event.
            Self::Intake(IntakeError::InFlight) => StatusCode::CONFLICT,
            Self::Intake(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Self::SourceNotAllowed => Outcome::Blocked,
            Self::Intake(IntakeError::InFlight) => Outcome::InFlight,
            Self::Intake(_) => Outcome::Failed,
            // Stripe signed these: each is an event it will retry and then drop, not internet noise.
            Self::NotAnEvent(_) | Self::LivemodeMismatch => Outcome::Refused,
            Self::NotFound
            | Self::MethodNotAllowed
            | Self::PayloadTooLarge
            | Self::Signature(_) => Outcome::Rejected,
        }
    }

    /// A stable snake_case reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SourceNotAllowed => "source_ip_not_allowed",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Signature(e) => e.kind(),
            Self::NotAnEvent(_) => "not_an_event",
            Self::LivemodeMismatch => "livemode_mismatch",
            Self::Intake(IntakeError::InFlight) => "in_flight",
            Self::Intake(IntakeError::Dedup(_)) => "dedup_unavailable",
            Self::Intake(IntakeError::Queue(_)) => "queue_unavailable",
            Self::Intake(IntakeError::DeadlineExceeded { .. }) => "deadline_exceeded",
        }
    }
}

/// What an accepted delivery amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepted {
    Enqueued,
    Duplicate,
    /// A connected account's test-mode event at a live endpoint, left alone.
    IgnoredTestMode,
}

/// The event a decision concerns, once known, for the log line.
#[derive(Default)]
struct Seen {
    event_id: Option<String>,
    event_type: Option<String>,
    livemode: Option<bool>,
    account: Option<String>,
}

/// Handles one request. Never fails: every outcome is an HTTP answer.
pub async fn handle<S: DedupStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    let started = Instant::now();
    let deadline = work_deadline(&request);
    let mut seen = Seen::default();
    let result = receive(app, &request, deadline, &mut seen).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let event_id = seen.event_id.as_deref().unwrap_or("");
    let event_type = seen.event_type.as_deref().unwrap_or("");
    let account = seen.account.as_deref().unwrap_or("");
    // Each branch below writes the one decision line, its metrics in it.
    let metrics = |outcome| app.metrics.emf(outcome, latency_ms);
    let response = match result {
        Ok(accepted) => {
            let (outcome, status) = match accepted {
                Accepted::Enqueued => (Outcome::Enqueued, "enqueued"),
                Accepted::Duplicate => (Outcome::Duplicate, "duplicate"),
                Accepted::IgnoredTestMode => (Outcome::IgnoredTestMode, "ignored"),
            };
            let emf = metrics(outcome);
            let emf = emf.as_str();
            if accepted == Accepted::IgnoredTestMode {
                info!(target: DECISION, event_id, event_type, account, outcome = %outcome, reason = "test_mode_connect_event", latency_ms, emf, "webhook ignored: a connected account's test-mode event at this live endpoint");
            } else {
                info!(target: DECISION, event_id, event_type, outcome = %outcome, latency_ms, emf, "webhook accepted");
            }
            let body = serde_json::json!({ "status": status });
            respond(StatusCode::OK, &body)
        }
        Err(err) => {
            let outcome = err.outcome();
            let reason = err.reason();
            let source_ip = source_ip(&request).map(|ip| ip.to_string());
            let source_ip = source_ip.as_deref().unwrap_or("");
            let emf = metrics(outcome);
            let emf = emf.as_str();
            match &err {
                ReceiverError::Intake(
                    IntakeError::Dedup(_)
                    | IntakeError::Queue(_)
                    | IntakeError::DeadlineExceeded { .. },
                ) => {
                    error!(target: DECISION, event_id, event_type, outcome = %outcome, reason, latency_ms, emf, error = %error_chain(&err), "webhook failed; stripe will retry");
                }
                // Signed, so from Stripe: error level, and the alarm on `refused` fires at the first one.
                ReceiverError::NotAnEvent(parse) => {
                    error!(target: DECISION, event_id, event_type, outcome = %outcome, reason, latency_ms, emf, source_ip, error = %parse.detail(), "signed webhook refused: not an event we can read; stripe retries it for 3 days, then drops it");
                }
                ReceiverError::LivemodeMismatch => {
                    error!(target: DECISION, event_id, event_type, account, outcome = %outcome, reason, latency_ms, emf, source_ip, livemode = ?seen.livemode, expected_livemode = ?app.livemode, "signed webhook refused: an event of the other mode; this endpoint's secret belongs to a stack of the other mode");
                }
                // The cheapest refusal there is (nothing read but the address): one line, no store.
                ReceiverError::SourceNotAllowed => {
                    warn!(target: DECISION, outcome = %outcome, reason, latency_ms, emf, source_ip, "webhook refused: source address not on the allow-list");
                }
                ReceiverError::Intake(IntakeError::InFlight) => {
                    info!(target: DECISION, event_id, event_type, outcome = %outcome, reason, latency_ms, emf, "webhook in flight elsewhere; stripe will retry");
                }
                _ => {
                    warn!(target: DECISION, event_id, event_type, outcome = %outcome, reason, latency_ms, emf, source_ip, "webhook rejected");
                }
            }
            let body = serde_json::json!({ "error": err.to_string() });
            let mut response = respond(err.status(), &body);
            if matches!(err, ReceiverError::MethodNotAllowed) {
                response
                    .headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            }
            response
        }
    };
    Ok(response)
}

async fn receive<S: DedupStore, Q: EventQueue>(
    app: &App<S, Q>,
    request: &Request,
    deadline: tokio::time::Instant,
    seen: &mut Seen,
) -> Result<Accepted, ReceiverError> {
    // Refusals come in order of cost, so a flood of forged requests is cheap to turn away: the address
    // first (nothing read), then route, method and size, then the header's shape, and only then a
    // pass over the body to hash it. None of them touches DynamoDB or SQS.
    if let Some(allowed) = &app.source_ips {
        // An unknown address is refused too: with the list on, nothing is let through unchecked.
        if !source_ip(request).is_some_and(|ip| allowed.allows(ip)) {
            return Err(ReceiverError::SourceNotAllowed);
        }
    }
    if !request.uri().path().ends_with(WEBHOOK_PATH) {
        return Err(ReceiverError::NotFound);
    }
    if request.method() != Method::POST {
        return Err(ReceiverError::MethodNotAllowed);
    }
    // lambda_http has already base64-decoded the body when API Gateway flagged it: these are the bytes
    // Stripe signed. They are verified and enqueued as they are, never re-serialized.
    let body: &[u8] = request.body().as_ref();
    if body.len() > app.max_body_bytes {
        return Err(ReceiverError::PayloadTooLarge);
    }
    let header = request
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().map_err(|_| SignatureError::MalformedHeader))
        .transpose()?;
    app.verifier.verify(body, header)?;

    let event = match EventEnvelope::parse(body) {
        Ok(event) => event,
        Err(err) => {
            // Stripe signed it, so it is an event we are about to lose: its id lets it be found.
            seen.event_id = EventEnvelope::readable_id(body);
            return Err(err.into());
        }
    };
    seen.event_id = Some(event.id.clone());
    seen.event_type = Some(event.event_type.to_string());
    seen.livemode = event.livemode;
    seen.account = event.connected_account().map(str::to_owned);
    if let Some(expected) = app.livemode {
        if event.livemode != Some(expected) {
            // A live Connect endpoint also gets its connected accounts' test-mode events, signed with
            // the live secret: not a misconfiguration, and a 4xx would make Stripe retry each for 3
            // days and flag the endpoint.
            let test_connect_event =
                expected && event.livemode == Some(false) && event.connected_account().is_some();
            if test_connect_event && app.test_connect_events == TestConnectEvents::Ignore {
                return Ok(Accepted::IgnoredTestMode);
            }
            return Err(ReceiverError::LivemodeMismatch);
        }
    }

    let admitted = intake::admit(
        &app.store,
        &app.queue,
        &event,
        body,
        app.sqs_max_message_bytes,
        Some(deadline),
    )
    .await?;
    Ok(match admitted {
        Admitted::Enqueued => Accepted::Enqueued,
        Admitted::Duplicate => Accepted::Duplicate,
    })
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// When this request's work must be done: the invocation's deadline (from the Lambda context) less
/// [`ANSWER_RESERVE`]. Without a context (unit tests), the function's timeout from now stands in, and so
/// it does when the context's deadline is no later than the reserve at the start: Lambda starts the
/// handler with its whole timeout ahead, but `cargo lambda watch` stamps the deadline when the request
/// arrives, which can be before a rebuild of the function has finished.
fn work_deadline(request: &Request) -> tokio::time::Instant {
    let deadline_ms = request
        .lambda_context_ref()
        .map_or(0, |context| context.deadline);
    let left = (UNIX_EPOCH + Duration::from_millis(deadline_ms))
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let left = if left <= ANSWER_RESERVE {
        Duration::from_secs(RECEIVER_TIMEOUT_SECS)
    } else {
        left
    };
    tokio::time::Instant::now() + left.saturating_sub(ANSWER_RESERVE)
}

/// The caller's address as API Gateway saw it (not a header the caller controls), for rejected requests.
fn source_ip(request: &Request) -> Option<IpAddr> {
    use lambda_http::request::RequestContext;
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref()?.parse().ok(),
        RequestContext::ApiGatewayV1(context) => {
            context.identity.source_ip.as_deref()?.parse().ok()
        }
        _ => None,
    }
}

/// `request` as an HTTP API (payload 2.0) hands it over from `source_ip`: the context [`source_ip`]
/// reads. For the integration tests and the bench driver, which build requests without API Gateway.
pub fn with_source_ip(request: Request, source_ip: &str) -> Request {
    use lambda_http::{
        aws_lambda_events::apigw::ApiGatewayV2httpRequestContext, request::RequestContext,
        RequestExt,
    };
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.http.source_ip = Some(source_ip.to_owned());
    request.with_request_context(RequestContext::ApiGatewayV2(context))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lambda_http::http;
    use stripe_pipeline::{
        dedup::{BodyStash, ClaimStatus, ClaimStore, MemoryDedupStore},
        queue::{MemoryEventQueue, MessageBody},
        signature::{sign, unix_now, SigningSecret},
    };

    use super::*;
    use base64::Engine as _;

    const SECRET: &str = "whsec_unit_test_secret";

    fn app() -> App<MemoryDedupStore, MemoryEventQueue> {
        App {
            source_ips: None,
            verifier: SignatureVerifier::new(
                vec![SigningSecret::new(SECRET).unwrap()],
                Duration::from_secs(300),
            )
            .unwrap(),
            store: MemoryDedupStore::new(Duration::from_secs(3600), Duration::from_secs(30)),
            queue: MemoryEventQueue::new(),
            livemode: Some(false),
            test_connect_events: TestConnectEvents::Ignore,
            max_body_bytes: 1024 * 1024,
            sqs_max_message_bytes: 256 * 1024,
            metrics: Metrics::new("Test", "receiver"),
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/stripe/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    }

    fn signed(body: &[u8], t: u64) -> Request {
        let secret = SigningSecret::new(SECRET).unwrap();
        post(body, Some(&sign(body, &secret, t)))
    }

    fn post(body: &[u8], signature: Option<&str>) -> Request {
        let mut builder = http::Request::builder()
            .method("POST")
            .uri("https://example.com/webhooks/stripe");
        if let Some(signature) = signature {
            builder = builder.header("Stripe-Signature", signature);
        }
        builder.body(Body::Binary(body.to_vec())).unwrap()
    }

    async fn status(app: &App<MemoryDedupStore, MemoryEventQueue>, request: Request) -> u16 {
        handle(app, request).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn a_new_event_is_enqueued_once_with_its_raw_bytes_and_marked() {
        let app = app();
        let body = fixture("invoice.paid");
        assert_eq!(status(&app, signed(&body, unix_now())).await, 200);
        let messages = app.queue.messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].body,
            MessageBody::Inline(String::from_utf8(body).unwrap())
        );
        assert_eq!(messages[0].event_type, "invoice.paid");
        let record = app
            .store
            .lookup(&messages[0].event_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, ClaimStatus::Enqueued);
    }

    #[tokio::test]
    async fn a_redelivery_with_a_fresh_signature_is_acknowledged_without_a_second_message() {
        let app = app();
        let body = fixture("charge.refunded");
        assert_eq!(status(&app, signed(&body, unix_now() - 100)).await, 200);
        let response = handle(&app, signed(&body, unix_now())).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body().as_ref(), br#"{"status":"duplicate"}"#);
        assert_eq!(app.queue.messages().len(), 1);
    }

    #[tokio::test]
    async fn signature_failures_are_401_and_touch_nothing() {
        let app = app();
        let body = fixture("invoice.paid");
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        let secret = SigningSecret::new(SECRET).unwrap();
        let cases = [
            post(&body, None),
            post(&body, Some("garbage")),
            post(&tampered, Some(&sign(&body, &secret, unix_now()))),
            signed(&body, unix_now() - 301),
            signed(&body, unix_now() + 301),
        ];
        for request in cases {
            assert_eq!(status(&app, request).await, 401);
        }
        assert!(app.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn signed_bodies_that_are_not_events_or_of_the_wrong_mode_are_400() {
        let app = app();
        assert_eq!(status(&app, signed(b"not json", unix_now())).await, 400);
        assert_eq!(
            status(&app, signed(br#"{"object":"event"}"#, unix_now())).await,
            400
        );
        let live = br#"{"id":"evt_live","type":"invoice.paid","livemode":true}"#;
        assert_eq!(status(&app, signed(live, unix_now())).await, 400);
        assert!(app.queue.messages().is_empty());
    }

    /// A thin (API v2) event as a webhook endpoint with the thin payload style receives it: `created` is
    /// an RFC 3339 string, and there is no `data`, only the `related_object` to fetch.
    const THIN: &[u8] = br#"{"id":"evt_test_65RThinUnit","object":"v2.core.event","type":"v1.customer.subscription.updated","created":"2026-12-06T10:00:00.000Z","livemode":false,"related_object":{"id":"sub_1","type":"subscription","url":"/v1/subscriptions/sub_1"},"reason":{"type":"request","request":{"id":"req_1","idempotency_key":null}}}"#;

    #[tokio::test]
    async fn a_signed_thin_event_is_enqueued_once_with_its_raw_bytes() {
        let app = app();
        let response = handle(&app, signed(THIN, unix_now())).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body().as_ref(), br#"{"status":"enqueued"}"#);
        // Stripe's retry of it is a duplicate, as for a snapshot event.
        let again = handle(&app, signed(THIN, unix_now())).await.unwrap();
        assert_eq!(again.body().as_ref(), br#"{"status":"duplicate"}"#);
        let messages = app.queue.messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].body,
            MessageBody::Inline(String::from_utf8(THIN.to_vec()).unwrap())
        );
        assert_eq!(messages[0].event_id, "evt_test_65RThinUnit");
        assert_eq!(messages[0].event_type, "v1.customer.subscription.updated");
    }

    /// `body` as a connected account's event: `account` set, `livemode` as given.
    fn connect_event(body: &[u8], livemode: bool) -> Vec<u8> {
        let mut event: serde_json::Value = serde_json::from_slice(body).unwrap();
        event["account"] = "acct_1ConnectedTest".into();
        event["livemode"] = livemode.into();
        serde_json::to_vec(&event).unwrap()
    }

    #[tokio::test]
    async fn a_connected_accounts_test_mode_event_at_a_live_endpoint_is_acknowledged_and_ignored() {
        // GIVEN a live Connect endpoint
        let mut app = app();
        app.livemode = Some(true);
        let body = connect_event(&fixture("invoice.paid"), false);
        let id = EventEnvelope::parse(&body).unwrap().id;
        // WHEN Stripe sends it a connected account's test-mode event (signed with the live secret)
        let response = handle(&app, signed(&body, unix_now())).await.unwrap();
        // THEN it is answered 2xx, so Stripe neither retries it nor flags the endpoint, and nothing is
        // claimed or enqueued
        assert_eq!(response.status(), 200);
        assert_eq!(response.body().as_ref(), br#"{"status":"ignored"}"#);
        assert!(app.queue.messages().is_empty());
        assert_eq!(app.store.lookup(&id).await.unwrap(), None);
        // AND a test-mode event of no connected account is still a misconfiguration
        let own = fixture("invoice.paid");
        assert_eq!(status(&app, signed(&own, unix_now())).await, 400);
        // AND so is a live event at a test endpoint, connected account or not
        app.livemode = Some(false);
        let live = connect_event(&fixture("invoice.paid"), true);
        assert_eq!(status(&app, signed(&live, unix_now())).await, 400);
        assert!(app.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn a_live_endpoint_told_to_reject_test_mode_connect_events_answers_400() {
        let mut app = app();
        app.livemode = Some(true);
        app.test_connect_events = TestConnectEvents::Reject;
        let body = connect_event(&fixture("invoice.paid"), false);
        assert_eq!(status(&app, signed(&body, unix_now())).await, 400);
        assert!(app.queue.messages().is_empty());
    }

    #[test]
    fn signed_refusals_have_their_own_outcome_apart_from_unauthenticated_rejections() {
        let not_an_event = ReceiverError::from(EventEnvelope::parse(b"not json").unwrap_err());
        for refused in [not_an_event, ReceiverError::LivemodeMismatch] {
            assert_eq!(refused.outcome().as_str(), "refused", "{refused}");
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        }
        for rejected in [
            ReceiverError::Signature(SignatureError::MalformedHeader),
            ReceiverError::PayloadTooLarge,
        ] {
            assert_eq!(rejected.outcome().as_str(), "rejected", "{rejected}");
        }
    }

    /// Runs `request` through `handle` with the Lambda's own JSON subscriber and filter (at INFO),
    /// returning the log lines.
    async fn logged(
        app: &App<MemoryDedupStore, MemoryEventQueue>,
        request: Request,
    ) -> Vec<serde_json::Value> {
        let capture = stripe_pipeline::testing::LogCapture::start();
        handle(app, request).await.unwrap();
        capture.lines()
    }

    #[tokio::test]
    async fn a_signed_refusal_is_logged_with_the_event_id_and_the_parse_error() {
        let app = app();
        // GIVEN a signed body with an id but no type, and a customer's email inside
        let body = br#"{"id":"evt_1RefusedNoType","livemode":false,"data":{"object":{"email":"jane@example.com"}}}"#;
        let lines = logged(&app, signed(body, unix_now())).await;
        let line = lines
            .iter()
            .find(|l| l["reason"] == "not_an_event")
            .expect("a decision line");
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["outcome"], "refused");
        assert_eq!(line["event_id"], "evt_1RefusedNoType");
        let error = line["error"].as_str().expect("the parse error");
        assert!(error.contains("missing field `type`"), "{error}");
        let all = serde_json::to_string(&lines).unwrap();
        assert!(!all.contains("jane@example.com"), "{all}");
        // AND a wrong-mode event is logged as refused, with its id
        let live = br#"{"id":"evt_1RefusedLive","type":"invoice.paid","livemode":true}"#;
        let lines = logged(&app, signed(live, unix_now())).await;
        let line = lines
            .iter()
            .find(|l| l["reason"] == "livemode_mismatch")
            .expect("a decision line");
        assert_eq!(line["outcome"], "refused");
        assert_eq!(line["event_id"], "evt_1RefusedLive");
    }

    #[tokio::test]
    async fn a_parse_error_in_the_log_does_not_quote_the_body() {
        let app = app();
        let body =
            br#"{"id":"evt_1RefusedQuoted","type":"invoice.paid","livemode":"jane@example.com"}"#;
        let lines = logged(&app, signed(body, unix_now())).await;
        let all = serde_json::to_string(&lines).unwrap();
        assert!(all.contains("evt_1RefusedQuoted"), "{all}");
        assert!(!all.contains("jane@example.com"), "{all}");
    }

    #[tokio::test]
    async fn wrong_route_method_and_size_get_their_status() {
        let mut app = app();
        let body = fixture("invoice.paid");
        let mut get = signed(&body, unix_now());
        *get.method_mut() = Method::GET;
        let response = handle(&app, get).await.unwrap();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        let mut elsewhere = signed(&body, unix_now());
        *elsewhere.uri_mut() = "https://example.com/other".parse().unwrap();
        assert_eq!(status(&app, elsewhere).await, 404);
        app.max_body_bytes = body.len() - 1;
        assert_eq!(status(&app, signed(&body, unix_now())).await, 413);
    }

    #[tokio::test]
    async fn a_concurrent_claim_gets_409_and_no_message() {
        let app = app();
        let body = fixture("invoice.paid");
        let event = EventEnvelope::parse(&body).unwrap();
        // GIVEN another delivery holding the claim
        app.store
            .claim(&event.id, "invoice.paid", unix_now())
            .await
            .unwrap();
        assert_eq!(status(&app, signed(&body, unix_now())).await, 409);
        assert!(app.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn a_queue_failure_is_503_and_releases_the_claim_so_a_retry_succeeds() {
        let app = app();
        let body = fixture("payment_intent.succeeded");
        app.queue.set_unavailable(true);
        assert_eq!(status(&app, signed(&body, unix_now())).await, 503);
        let id = EventEnvelope::parse(&body).unwrap().id;
        assert_eq!(app.store.lookup(&id).await.unwrap(), None);
        app.queue.set_unavailable(false);
        assert_eq!(status(&app, signed(&body, unix_now())).await, 200);
        assert_eq!(app.queue.messages().len(), 1);
    }

    #[tokio::test]
    async fn a_store_failure_is_503_and_sends_nothing() {
        let app = app();
        app.store.set_unavailable(true);
        let body = fixture("payment_intent.succeeded");
        assert_eq!(status(&app, signed(&body, unix_now())).await, 503);
        assert!(app.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn a_body_too_large_for_sqs_is_stashed_and_referenced() {
        let mut app = app();
        app.sqs_max_message_bytes = 1000;
        let body = fixture("invoice.paid");
        assert!(body.len() > 1000);
        assert_eq!(status(&app, signed(&body, unix_now())).await, 200);
        let messages = app.queue.messages();
        let MessageBody::Stashed(stashed) = &messages[0].body else {
            panic!("expected a stashed body")
        };
        assert_eq!(app.store.fetch_body(stashed).await.unwrap(), body);
    }

    /// A signed HTTP API (payload 2.0) request as API Gateway hands it over, from `source_ip`, with the
    /// body base64-encoded as API Gateway does for a binary content type.
    fn from_address(body: &[u8], source_ip: &str) -> Request {
        let secret = SigningSecret::new(SECRET).unwrap();
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": "POST /webhooks/stripe",
            "rawPath": "/webhooks/stripe",
            "rawQueryString": "",
            // A forwarded header naming an allowed address must not count: only the context does.
            "headers": {"stripe-signature": sign(body, &secret, unix_now()), "x-forwarded-for": "3.18.12.63"},
            "requestContext": {
                "accountId": "1", "apiId": "a", "domainName": "x", "domainPrefix": "x",
                "http": {"method": "POST", "path": "/webhooks/stripe", "protocol": "HTTP/1.1",
                         "sourceIp": source_ip, "userAgent": "Stripe/1.0"},
                "requestId": "r", "routeKey": "POST /webhooks/stripe", "stage": "$default",
                "time": "24/Nov/2026:00:00:00 +0000", "timeEpoch": 0
            },
            "body": base64::engine::general_purpose::STANDARD.encode(body),
            "isBase64Encoded": true
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    fn with_allow_list() -> App<MemoryDedupStore, MemoryEventQueue> {
        let mut app = app();
        app.source_ips = Some(SourceIpAllowList::parse("3.18.12.63,54.187.174.169").unwrap());
        app
    }

    #[tokio::test]
    async fn with_the_allow_list_on_a_listed_address_is_served() {
        let app = with_allow_list();
        let body = fixture("invoice.paid");
        assert_eq!(
            status(&app, from_address(&body, "54.187.174.169")).await,
            200
        );
        assert_eq!(app.queue.messages().len(), 1);
    }

    #[tokio::test]
    async fn with_the_allow_list_on_any_other_address_is_403_and_touches_nothing() {
        let mut app = with_allow_list();
        let body = fixture("invoice.paid");
        let id = EventEnvelope::parse(&body).unwrap().id;
        // A correctly signed event from elsewhere, whatever X-Forwarded-For says
        let response = handle(&app, from_address(&body, "203.0.113.9"))
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        assert_eq!(response.body().as_ref(), br#"{"error":"forbidden"}"#);
        // and a request that carries no address at all (no API Gateway context) are refused
        assert_eq!(status(&app, signed(&body, unix_now())).await, 403);
        // even on another route, before the path is looked at
        let mut elsewhere = from_address(&body, "203.0.113.9");
        *elsewhere.uri_mut() = "https://example.com/other".parse().unwrap();
        assert_eq!(status(&app, elsewhere).await, 403);
        assert!(app.queue.messages().is_empty());
        assert_eq!(app.store.lookup(&id).await.unwrap(), None);
        // AND without the list the same request is served
        app.source_ips = None;
        assert_eq!(status(&app, from_address(&body, "203.0.113.9")).await, 200);
    }

    #[tokio::test]
    async fn a_blocked_request_is_one_line_with_its_address_and_its_own_outcome() {
        let app = with_allow_list();
        let lines = logged(&app, from_address(&fixture("invoice.paid"), "203.0.113.9")).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["outcome"], "blocked");
        assert_eq!(lines[0]["reason"], "source_ip_not_allowed");
        assert_eq!(lines[0]["source_ip"], "203.0.113.9");
        // and that one line is also the request's metric
        assert_eq!(lines[0]["Outcome"], "blocked");
        assert_eq!(lines[0]["Events"], 1);
        assert_eq!(
            ReceiverError::SourceNotAllowed.status(),
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn a_context_deadline_already_past_at_the_start_is_not_taken_for_lambdas() {
        // cargo lambda watch stamps the deadline on arrival; a rebuild can outlast it
        let app = app();
        let mut context = lambda_http::Context::default();
        context.deadline = 1;
        let request = signed(&fixture("invoice.paid"), unix_now()).with_lambda_context(context);
        assert_eq!(status(&app, request).await, 200);
        assert_eq!(app.queue.messages().len(), 1);
    }

    #[tokio::test]
    async fn api_gateway_base64_bodies_are_verified_on_the_decoded_bytes() {
        // GIVEN an HTTP API (payload 2.0) event whose body API Gateway base64-encoded
        let app = app();
        let body = fixture("customer.created");
        let request = from_address(&body, "203.0.113.9");
        assert_eq!(source_ip(&request), Some("203.0.113.9".parse().unwrap()));
        // WHEN it is handled THEN the signature holds over the decoded bytes
        assert_eq!(status(&app, request).await, 200);
        assert_eq!(
            app.queue.messages()[0].body,
            MessageBody::Inline(String::from_utf8(body).unwrap())
        );
    }
}
