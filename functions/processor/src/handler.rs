//! One SQS batch: each message is processed by [`Processor::process`] (the library's
//! [`process`](stripe_pipeline::process) module: read, fetch, plan, apply exactly once, notify), and the
//! response lists exactly the messages that failed.
//!
//! A failed message is listed as a `BatchItemFailure`, so SQS retries only it (and moves it to the DLQ
//! after `maxReceiveCount`) while the rest of the batch is deleted. That needs
//! `FunctionResponseTypes: [ReportBatchItemFailures]` on the event source mapping (set in
//! `template.yaml`); without it the response is ignored and a failure retries the whole batch.
//!
//! Stripe API fetches are bounded by the invocation's deadline ([`fetch_deadline`]): a fetch that
//! cannot finish in time fails its own message, which SQS retries, instead of the whole invocation
//! timing out and SQS redelivering messages already done.

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use lambda_runtime::{Error, LambdaEvent};
use stripe_pipeline::{
    billing::BillingStore,
    dedup::{BodyStash, DuplicateCounter},
    process::{Processor, QueuedEvent},
    queue::attribute,
};
use tracing::Instrument;

/// Handles one batch; never fails as a whole, each message succeeds or is reported.
pub async fn handle<S: BodyStash, C: DuplicateCounter, B: BillingStore>(
    app: &Processor<S, C, B>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = fetch_deadline(event.context.deadline, SystemTime::now());
    let results = join_all(event.payload.records.iter().map(|message| {
        let message_id = message.message_id.clone().unwrap_or_default();
        let event_id = message_attribute(message, attribute::EVENT_ID).unwrap_or("");
        let span = tracing::info_span!("message", message_id = %message_id, event_id = %event_id);
        async move { (message_id, app.process(&queued(message), deadline).await) }.instrument(span)
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

/// The parts of an SQS message processing reads.
fn queued(message: &SqsMessage) -> QueuedEvent<'_> {
    QueuedEvent {
        body: message.body.as_deref(),
        body_location: message_attribute(message, attribute::BODY_LOCATION),
        receive_count: receive_count(message),
    }
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
        sync::{Arc, OnceLock},
        time::Duration,
    };

    use aws_lambda_events::event::sqs::SqsMessageAttribute;
    use lambda_runtime::Context;
    use stripe_pipeline::{
        billing::{self, MemoryBillingStore},
        dedup::MemoryDedupStore,
        notify::{OutboxError, Router},
        process::ProcessError,
        signature::unix_now,
        telemetry::Metrics,
        testing::slack::FakeSlack,
    };

    use super::*;

    type TestApp = Processor<MemoryDedupStore, MemoryDedupStore, MemoryBillingStore>;

    fn app() -> TestApp {
        Processor {
            bodies: MemoryDedupStore::new(Duration::from_secs(3600), Duration::from_secs(30)),
            duplicates: MemoryDedupStore::new(Duration::from_secs(3600), Duration::from_secs(30)),
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

    async fn failed_ids(app: &TestApp, records: Vec<SqsMessage>) -> Vec<String> {
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

    /// A local Slack webhook that answers 200 to every post; at the first it takes the billing table
    /// down, so that notification's `sent` mark fails right after the channel accepted it.
    async fn slack_breaking_billing_once(app: Arc<OnceLock<Arc<TestApp>>>) -> FakeSlack {
        FakeSlack::with_hook(move |post| {
            if post == 0 {
                if let Some(app) = app.get() {
                    app.billing.set_unavailable(true);
                }
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_notification_whose_mark_fails_is_sent_again_never_lost() {
        let cell = Arc::new(OnceLock::new());
        let slack = slack_breaking_billing_once(cell.clone()).await;
        let routes = stripe_pipeline::notify::Routes::parse(None, Some(&slack.url), None).unwrap();
        let mut app = app();
        app.notify = Router::new(routes, None, None).unwrap();
        // A lease that has run out by the retry, as 30 s has by the 200 s visibility timeout.
        app.billing = MemoryBillingStore::new().with_notify_lease(0);
        let app = Arc::new(app);
        cell.set(app.clone()).ok().unwrap();
        let body =
            include_str!("../../../tests/fixtures/stripe/events/invoice.payment_failed.json");

        // Slack took it, then the mark failed: the message fails, and says why.
        let err = app
            .process(&queued(&message("m1", body, None)), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProcessError::Notification(OutboxError::Unrecorded(_))),
            "{err:?}"
        );
        assert_eq!(err.reason(), "notification_unrecorded");
        assert_eq!(slack.posts(), 1);
        app.billing.set_unavailable(false);
        let state = app.billing.state();

        // The retry, once the lease is over: billing state untouched, Slack hears it a second time
        // (never zero times); a third delivery sends nothing.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(failed_ids(&app, vec![message("m1", body, None)])
            .await
            .is_empty());
        assert_eq!(slack.posts(), 2);
        assert!(failed_ids(&app, vec![message("m1", body, None)])
            .await
            .is_empty());
        assert_eq!(slack.posts(), 2);
        assert_eq!(app.billing.state(), state);
    }
}
