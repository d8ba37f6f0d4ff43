//! The event queue on SQS.

use aws_sdk_sqs::{types::MessageAttributeValue, Client};

use super::{EventQueue, QueueError, QueueMessage, STRING_TYPE};

/// The event queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsEventQueue {
    client: Client,
    queue_url: String,
}

impl SqsEventQueue {
    /// The queue at `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

impl EventQueue for SqsEventQueue {
    async fn enqueue(&self, message: &QueueMessage) -> Result<String, QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.encoded_body());
        for (name, value) in message.attributes() {
            let value = MessageAttributeValue::builder()
                .data_type(STRING_TYPE)
                .string_value(value)
                .build()
                .map_err(|e| QueueError::Unavailable(Box::new(e)))?;
            request = request.message_attributes(name, value);
        }
        let output = request
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(Box::new(e)))?;
        Ok(output.message_id.unwrap_or_default())
    }
}
