//! The CLI's SQS calls, all here: receiving (with every attribute), deleting, copying a message to
//! another queue as it is, changing visibility, and reading a queue's settings. Sending a new event
//! stays with [`stripe_pipeline::queue`], through [`stripe_pipeline::intake`]; [`Queue::send_body`]
//! is for what another sender would put there (an EventBridge rule's target).

use aws_sdk_sqs::{
    types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
        MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
    },
    Client,
};

/// The most messages one SQS batch call takes.
pub const MAX_BATCH: usize = 10;
/// The longest long poll SQS allows.
pub const MAX_WAIT_SECS: i32 = 20;

/// SQS failed or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// A call failed.
    #[error("SQS {0} failed")]
    Unavailable(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    call: &'static str,
) -> impl Fn(E) -> SqsError {
    move |error| SqsError::Unavailable(call, Box::new(error))
}

/// What a queue's attributes say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's ARN.
    pub arn: String,
    /// Messages waiting (approximate).
    pub visible: u64,
    /// Messages received and not yet deleted (approximate).
    pub in_flight: u64,
    /// Its redrive policy's `maxReceiveCount`, if it has a dead-letter queue.
    pub max_receive_count: Option<u32>,
    /// Its visibility timeout.
    pub visibility_timeout_secs: Option<u32>,
}

/// One queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    url: String,
}

impl Queue {
    /// The queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// Its client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Receives up to `max` (≤ 10) messages with all their attributes, waiting up to `wait_secs` for
    /// the first; `visibility_secs` overrides the queue's visibility timeout for these messages.
    pub async fn receive(
        &self,
        max: usize,
        wait_secs: i32,
        visibility_secs: Option<i32>,
    ) -> Result<Vec<Message>, SqsError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait_secs.clamp(0, MAX_WAIT_SECS))
            .set_visibility_timeout(visibility_secs)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(failed("ReceiveMessage"))?;
        Ok(output.messages.unwrap_or_default())
    }

    /// Deletes received messages; returns the message ids whose delete failed.
    pub async fn delete(&self, messages: &[&Message]) -> Result<Vec<String>, SqsError> {
        let mut failed_ids = Vec::new();
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle.clone())
                        .build()
                        .ok()
                })
                .collect();
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(failed("DeleteMessageBatch"))?;
            failed_ids.extend(output.failed.iter().filter_map(|f| {
                let index: usize = f.id.parse().ok()?;
                chunk.get(index)?.message_id.clone()
            }));
        }
        Ok(failed_ids)
    }

    /// Sends one message with just this body and no message attributes, as an EventBridge rule's SQS
    /// target does; returns its message id.
    pub async fn send_body(&self, body: String) -> Result<String, SqsError> {
        let output = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map_err(failed("SendMessage"))?;
        Ok(output.message_id.unwrap_or_default())
    }

    /// Sends copies of `messages` (body and message attributes as received) to this queue; returns the
    /// message ids (of the originals) that were sent.
    pub async fn send_copies(&self, messages: &[&Message]) -> Result<Vec<String>, SqsError> {
        let mut sent = Vec::new();
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(m.body.clone().unwrap_or_default())
                        .set_message_attributes(m.message_attributes.clone())
                        .build()
                        .ok()
                })
                .collect();
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(failed("SendMessageBatch"))?;
            sent.extend(output.successful.iter().filter_map(|s| {
                let index: usize = s.id.parse().ok()?;
                chunk.get(index)?.message_id.clone()
            }));
        }
        Ok(sent)
    }

    /// Makes received messages visible again after `secs` (0: at once).
    pub async fn set_visibility(&self, messages: &[&Message], secs: i32) -> Result<(), SqsError> {
        for chunk in messages.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .set_receipt_handle(m.receipt_handle.clone())
                        .visibility_timeout(secs)
                        .build()
                        .ok()
                })
                .collect();
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(failed("ChangeMessageVisibilityBatch"))?;
        }
        Ok(())
    }

    /// The queue's ARN, depth and redrive settings.
    pub async fn info(&self) -> Result<QueueInfo, SqsError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(failed("GetQueueAttributes"))?;
        let attributes = output.attributes.unwrap_or_default();
        let get = |name: QueueAttributeName| attributes.get(&name).cloned();
        let number = |name: QueueAttributeName| get(name).and_then(|v| v.parse().ok());
        let max_receive_count = get(QueueAttributeName::RedrivePolicy)
            .and_then(|policy| serde_json::from_str::<serde_json::Value>(&policy).ok())
            .and_then(|policy| match &policy["maxReceiveCount"] {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            })
            .and_then(|n| u32::try_from(n).ok());
        Ok(QueueInfo {
            arn: get(QueueAttributeName::QueueArn).unwrap_or_default(),
            visible: number(QueueAttributeName::ApproximateNumberOfMessages).unwrap_or(0),
            in_flight: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .unwrap_or(0),
            max_receive_count,
            visibility_timeout_secs: number(QueueAttributeName::VisibilityTimeout)
                .and_then(|n: u64| u32::try_from(n).ok()),
        })
    }
}

/// A message's string attribute.
pub fn message_attribute<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .message_attributes
        .as_ref()?
        .get(name)?
        .string_value
        .as_deref()
}

/// A message's system attribute (`ApproximateReceiveCount`, `SentTimestamp`, …).
pub fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    message.attributes.as_ref()?.get(&name).map(String::as_str)
}
