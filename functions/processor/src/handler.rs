//! One SQS batch: read each message's event, log it, and report exactly the messages that failed.
//!
//! Business handlers come later; today each event is parsed, its stashed body fetched when it was too
//! large for SQS, and the decision logged. A message that fails is listed as a `BatchItemFailure`, so
//! SQS retries only it (and moves it to the DLQ after `maxReceiveCount`) while the rest of the batch is
//! deleted. That needs `FunctionResponseTypes: [ReportBatchItemFailures]` on the event source mapping
//! (set in `template.yaml`); without it the response is ignored and a failure retries the whole batch.

use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use lambda_runtime::{Error, LambdaEvent};
use stripe_pipeline::{
    dedup::{DedupError, DedupStore},
    event::{EventEnvelope, EventError},
    queue::{attribute, MessageBody, QueueError, QueueMessage},
    telemetry::{Metrics, Outcome},
};
use tracing::{error, info, Instrument};

/// Everything a batch needs, built once at cold start.
#[derive(Debug)]
pub struct App<S> {
    /// The dedup table, where bodies too large for SQS are stashed.
    pub store: S,
    /// EMF metrics.
    pub metrics: Metrics,
}

/// Why one message could not be processed.
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
}

/// Handles one batch; never fails as a whole, each message succeeds or is reported.
pub async fn handle<S: DedupStore>(
    app: &App<S>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let results = join_all(event.payload.records.iter().map(|message| {
        let message_id = message.message_id.clone().unwrap_or_default();
        let event_id = message_attribute(message, attribute::EVENT_ID).unwrap_or("");
        let span = tracing::info_span!("message", message_id = %message_id, event_id = %event_id);
        async move { (message_id, process(app, message).await) }.instrument(span)
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

async fn process<S: DedupStore>(app: &App<S>, message: &SqsMessage) -> Result<(), ProcessError> {
    let started = Instant::now();
    let result = read_event(app, message).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(event) => {
            info!(event_id = %event.id, event_type = %event.event_type, outcome = %Outcome::Ignored, reason = "no_handler", latency_ms, "event processed");
            app.metrics.record(Outcome::Ignored, latency_ms);
        }
        Err(err) => {
            error!(outcome = %Outcome::Failed, reason = %err, latency_ms, receive_count = receive_count(message), "message failed; SQS will retry it");
            app.metrics.record(Outcome::Failed, latency_ms);
        }
    }
    result.map(|_| ())
}

async fn read_event<S: DedupStore>(
    app: &App<S>,
    message: &SqsMessage,
) -> Result<EventEnvelope, ProcessError> {
    let body = message.body.as_deref().ok_or(ProcessError::EmptyMessage)?;
    let location = message_attribute(message, attribute::BODY_LOCATION);
    let bytes = match QueueMessage::parse_body(body, location)? {
        MessageBody::Inline(text) => text.into_bytes(),
        MessageBody::Stashed(stashed) => app.store.fetch_body(&stashed).await?,
    };
    Ok(EventEnvelope::parse(&bytes)?)
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
    use std::time::Duration;

    use aws_lambda_events::event::sqs::SqsMessageAttribute;
    use lambda_runtime::Context;
    use stripe_pipeline::{dedup::MemoryDedupStore, signature::unix_now};

    use super::*;

    fn app() -> App<MemoryDedupStore> {
        App {
            store: MemoryDedupStore::new(Duration::from_secs(3600), Duration::from_secs(30)),
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

    async fn failed_ids(app: &App<MemoryDedupStore>, records: Vec<SqsMessage>) -> Vec<String> {
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
            .store
            .stash_body("evt_big", body, unix_now())
            .await
            .unwrap();
        let reference = serde_json::to_string(&stashed).unwrap();
        let mut missing = stashed.clone();
        missing.event_id = "evt_gone".into();
        let missing = serde_json::to_string(&missing).unwrap();
        let records = vec![
            message("m-stashed", &reference, Some("dedup_table")),
            message("m-missing", &missing, Some("dedup_table")),
        ];
        assert_eq!(failed_ids(&app, records).await, ["m-missing"]);
    }
}
