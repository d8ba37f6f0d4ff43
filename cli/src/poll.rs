//! `poll`: the local stand-in for the Lambda SQS event source mapping that feeds the processor in AWS.
//!
//! Like the mapping it long-polls the event queue, gathers a batch until it holds `batch_size`
//! messages or the batching window has passed since the first one, hands the batch to the processor as
//! an `SqsEvent`, and reads the `SqsBatchResponse`: the messages not reported failed are deleted, the
//! failed ones are left alone, so SQS makes them visible again after the visibility timeout and, after
//! the queue's `maxReceiveCount` receives, moves them to the dead-letter queue itself (the queue's
//! redrive policy, from `template.yaml`). A response naming a message that was not in the batch, an
//! error for the whole invocation, or a panic fail the whole batch, as Lambda treats them.
//!
//! The processor is either run in this process ([`Target::InProcess`]: the same
//! `processor::handler::handle` the Lambda runs, wired as `functions/processor/src/main.rs` wires it),
//! or invoked over HTTP through `cargo lambda watch` ([`Target::Invoke`]), which rebuilds it on every
//! change — what `make dev` uses.
//!
//! Unlike the mapping, batches run one at a time (the mapping runs up to `ProcessorMaxConcurrency`).

use std::{collections::HashSet, future::Future, pin::pin, sync::Arc, time::Duration};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use lambda_runtime::{Context, LambdaEvent};
use stripe_pipeline::{queue::attribute, telemetry::error_chain};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::sqs::{message_attribute, system_attribute, Queue, QueueInfo, SqsError};

/// The processor as the Lambda wires it.
pub type ProcessorApp = processor::init::DeployedApp;

/// Why the poller could not start.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// SQS failed.
    #[error(transparent)]
    Sqs(#[from] SqsError),
    /// The in-process processor could not start (settings, secrets, clients).
    #[error(transparent)]
    Init(#[from] processor::init::InitError),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The function never answered (`cargo lambda watch` not running, or its build failing).
    #[error("the processor at {0} did not answer within {1:?}")]
    NotReady(String, Duration),
}

/// Builds the processor exactly as `functions/processor/src/main.rs` does (the same function).
pub async fn in_process_app(aws: &aws_config::SdkConfig) -> Result<ProcessorApp, PollError> {
    Ok(processor::init::app(aws).await?)
}

/// Who processes the batches.
#[derive(Debug, Clone)]
pub enum Target {
    /// `processor::handler::handle`, in this process.
    InProcess(Arc<ProcessorApp>),
    /// The function served by `cargo lambda watch` (or anything speaking Lambda's Invoke API).
    Invoke {
        /// The client.
        http: reqwest::Client,
        /// `<base>/2015-03-31/functions/<name>/invocations`.
        url: String,
    },
}

impl Target {
    /// The function `name` behind Lambda's Invoke API at `base` (`cargo lambda watch`:
    /// `http://127.0.0.1:9000`).
    pub fn invoke(base: &str, name: &str) -> Result<Self, PollError> {
        // The first invocation after a change waits for cargo to rebuild the function.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(900))
            .build()
            .map_err(PollError::Client)?;
        Ok(Self::Invoke {
            http,
            url: format!(
                "{}/2015-03-31/functions/{name}/invocations",
                base.trim_end_matches('/')
            ),
        })
    }

    /// Runs one batch; `Err` says why the whole batch failed.
    async fn process(&self, event: SqsEvent) -> Result<SqsBatchResponse, String> {
        match self {
            Self::InProcess(app) => {
                let app = Arc::clone(app);
                // A task of its own, so a panic fails this batch (as the Lambda runtime reports it as
                // an invocation error) instead of the poller. Aborted if this call is dropped, as an
                // invocation dies with its sandbox: the chaos suite kills batches that way.
                let mut task = AbortOnDrop(tokio::spawn(async move {
                    processor::handler::handle(&app, LambdaEvent::new(event, Context::default()))
                        .await
                        .map_err(|e| e.to_string())
                }));
                match (&mut task.0).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(error)) => Err(format!("the processor failed the batch: {error}")),
                    Err(_) => Err("the processor panicked".to_owned()),
                }
            }
            Self::Invoke { http, url } => {
                let response = http
                    .post(url)
                    .json(&event)
                    .send()
                    .await
                    .map_err(|e| format!("invoking the processor failed: {e}"))?;
                let status = response.status();
                let function_error = response.headers().contains_key("x-amz-function-error");
                let body: serde_json::Value = response
                    .json()
                    .await
                    .map_err(|e| format!("the processor's answer ({status}) is not JSON: {e}"))?;
                if !status.is_success() || function_error || body.get("errorType").is_some() {
                    return Err(format!(
                        "the processor failed the batch ({status}): {} {}",
                        body["errorType"].as_str().unwrap_or(""),
                        body["errorMessage"].as_str().unwrap_or("")
                    ));
                }
                serde_json::from_value(body)
                    .map_err(|e| format!("the processor's answer is not an SqsBatchResponse: {e}"))
            }
        }
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How batches are made, as the event source mapping's settings.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    /// Most messages per batch (`ProcessorBatchSize`).
    pub batch_size: usize,
    /// Longest wait to fill a batch after its first message (`ProcessorBatchingWindowSecs`).
    pub batching_window: Duration,
    /// Long-poll wait for the first message (≤ 20 s).
    pub wait_secs: i32,
    /// Overrides the queue's visibility timeout for received messages (the template's is 200 s, so a
    /// failed message is retried that much later); `None` keeps the queue's.
    pub visibility_timeout_secs: Option<i32>,
}

impl Default for PollSettings {
    /// The template's defaults.
    fn default() -> Self {
        Self {
            batch_size: 10,
            batching_window: Duration::from_secs(1),
            wait_secs: crate::sqs::MAX_WAIT_SECS,
            visibility_timeout_secs: None,
        }
    }
}

/// A message the processor reported failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedMessage {
    /// The SQS message id.
    pub message_id: String,
    /// Its `event_id` attribute.
    pub event_id: Option<String>,
    /// Receives so far, this one included.
    pub receive_count: Option<u32>,
}

/// What one batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages in the batch.
    pub received: usize,
    /// Processed and deleted.
    pub succeeded: usize,
    /// Left on the queue for a retry.
    pub failed: Vec<FailedMessage>,
    /// Why the whole batch failed, if it did.
    pub batch_error: Option<String>,
}

/// Sums over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollTotals {
    /// Batches processed.
    pub batches: usize,
    /// Messages received.
    pub received: usize,
    /// Messages processed and deleted.
    pub succeeded: usize,
    /// Messages failed (each receive counts).
    pub failed: usize,
}

/// Feeds one queue to one processor.
#[derive(Debug)]
pub struct Poller {
    queue: Queue,
    target: Target,
    settings: PollSettings,
    info: QueueInfo,
    region: String,
}

impl Poller {
    /// A poller of `queue`; reads the queue's ARN and redrive policy once.
    pub async fn new(
        queue: Queue,
        target: Target,
        settings: PollSettings,
        region: impl Into<String>,
    ) -> Result<Self, PollError> {
        let info = queue.info().await?;
        Ok(Self {
            queue,
            target,
            settings,
            info,
            region: region.into(),
        })
    }

    /// The queue's settings as read at start.
    pub fn queue_info(&self) -> &QueueInfo {
        &self.info
    }

    /// For an invoked processor: waits until it answers an empty batch (the first invocation makes
    /// `cargo lambda watch` build it), so no message is received before it can be processed.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Result<(), PollError> {
        let Target::Invoke { url, .. } = &self.target else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let mut told = false;
        loop {
            match self.target.process(SqsEvent::default()).await {
                Ok(_) => return Ok(()),
                Err(why) if Instant::now() < deadline => {
                    if !told {
                        info!(reason = %why, "waiting for the processor (cargo lambda watch builds it on first use)");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(_) => return Err(PollError::NotReady(url.clone(), timeout)),
            }
        }
    }

    /// Receives one batch as the event source mapping would: the first message by long poll, then more
    /// until the batch is full or the batching window has passed. Empty if nothing came.
    pub async fn gather(&self) -> Result<Vec<Message>, SqsError> {
        let size = self.settings.batch_size.max(1);
        let visibility = self.settings.visibility_timeout_secs;
        let mut batch = self
            .queue
            .receive(size, self.settings.wait_secs, visibility)
            .await?;
        if batch.is_empty() {
            return Ok(batch);
        }
        let mut ids: HashSet<Option<String>> = batch.iter().map(|m| m.message_id.clone()).collect();
        let deadline = Instant::now() + self.settings.batching_window;
        while batch.len() < size {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let remaining = deadline - now;
            let wait = i32::try_from(remaining.as_secs()).unwrap_or(0);
            let more = self
                .queue
                .receive(size - batch.len(), wait, visibility)
                .await?;
            if more.is_empty() && wait == 0 {
                tokio::time::sleep(remaining.min(Duration::from_millis(100))).await;
            }
            // With a visibility timeout of 0 the same message can come back within one batch.
            batch.extend(
                more.into_iter()
                    .filter(|m| ids.insert(m.message_id.clone())),
            );
        }
        Ok(batch)
    }

    /// Hands `messages` to the processor as one batch, deletes the ones that succeeded, and reports.
    pub async fn process(&self, messages: Vec<Message>) -> Result<BatchReport, SqsError> {
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| processor::sqs::lambda_message(m, &self.info.arn, &self.region))
            .collect();
        let ids: HashSet<&str> = messages
            .iter()
            .filter_map(|m| m.message_id.as_deref())
            .collect();
        let mut report = BatchReport {
            received: messages.len(),
            ..BatchReport::default()
        };
        let failed: HashSet<String> = match self.target.process(event).await {
            Ok(response) => {
                let reported: HashSet<String> = response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect();
                if reported.iter().all(|id| ids.contains(id.as_str())) {
                    reported
                } else {
                    report.batch_error =
                        Some("a reported failure names no message of the batch".to_owned());
                    ids.iter().map(|id| (*id).to_owned()).collect()
                }
            }
            Err(why) => {
                report.batch_error = Some(why);
                ids.iter().map(|id| (*id).to_owned()).collect()
            }
        };
        let (done, retried): (Vec<&Message>, Vec<&Message>) = messages
            .iter()
            .partition(|m| m.message_id.as_ref().is_some_and(|id| !failed.contains(id)));
        let undeleted = self.queue.delete(&done).await?;
        if !undeleted.is_empty() {
            // Processed, so a second receive finds the event's marker and changes nothing.
            warn!(
                count = undeleted.len(),
                "processed messages could not be deleted; they will be received again"
            );
        }
        report.succeeded = done.len();
        report.failed = retried
            .iter()
            .map(|m| FailedMessage {
                message_id: m.message_id.clone().unwrap_or_default(),
                event_id: message_attribute(m, attribute::EVENT_ID).map(str::to_owned),
                receive_count: system_attribute(
                    m,
                    MessageSystemAttributeName::ApproximateReceiveCount,
                )
                .and_then(|n| n.parse().ok()),
            })
            .collect();
        self.log(&report);
        Ok(report)
    }

    /// Gathers and processes one batch; `None` if no message came within the long poll.
    pub async fn poll_once(&self) -> Result<Option<BatchReport>, SqsError> {
        let messages = self.gather().await?;
        if messages.is_empty() {
            return Ok(None);
        }
        self.process(messages).await.map(Some)
    }

    /// Polls until `shutdown` completes. Waiting for messages is cut short by it; a batch being
    /// processed is finished first. SQS errors are logged and retried.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> PollTotals {
        let mut shutdown = pin!(shutdown);
        let mut totals = PollTotals::default();
        loop {
            let gathered = tokio::select! {
                () = &mut shutdown => break,
                gathered = self.gather() => gathered,
            };
            let result = match gathered {
                Ok(messages) if messages.is_empty() => continue,
                Ok(messages) => self.process(messages).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(report) => {
                    totals.batches += 1;
                    totals.received += report.received;
                    totals.succeeded += report.succeeded;
                    totals.failed += report.failed.len();
                }
                Err(error) => {
                    error!(error = %error_chain(&error), "event queue unavailable; retrying in 5 s");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        }
        totals
    }

    fn log(&self, report: &BatchReport) {
        info!(
            received = report.received,
            succeeded = report.succeeded,
            failed = report.failed.len(),
            "poller: batch processed"
        );
        if let Some(why) = &report.batch_error {
            error!(reason = %why, "poller: the whole batch failed");
        }
        let visibility = self
            .settings
            .visibility_timeout_secs
            .map(i64::from)
            .or(self.info.visibility_timeout_secs.map(i64::from))
            .unwrap_or(-1);
        for failed in &report.failed {
            let count = failed.receive_count.unwrap_or(0);
            let last = self.info.max_receive_count.is_some_and(|max| count >= max);
            warn!(
                message_id = %failed.message_id,
                event_id = failed.event_id.as_deref().unwrap_or(""),
                receive_count = count,
                max_receive_count = self.info.max_receive_count.unwrap_or(0),
                visible_again_in_secs = visibility,
                "{}",
                if last {
                    "poller: message failed its last receive; SQS moves it to the dead-letter queue"
                } else {
                    "poller: message failed; SQS delivers it again after the visibility timeout"
                }
            );
        }
    }
}
