//! Slack incoming webhooks. (If the process dies between Slack's 200 and the processor's "sent" mark,
//! the claim's lease runs out and the retried message sends again: Slack webhooks take no idempotency
//! key, so that window cannot be closed from here.)

use std::time::Duration;

use super::NotifyError;
use crate::handlers::Notification;

/// An incoming-webhook URL. Its `Debug` hides the URL: the path is the credential.
#[derive(Clone)]
pub struct SlackNotifier {
    http: reqwest::Client,
    url: String,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackNotifier([redacted])")
    }
}

impl SlackNotifier {
    /// A notifier posting to `url`, giving up on one attempt after 5 s (the message is retried).
    pub fn new(url: impl Into<String>) -> Result<Self, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(NotifyError::Unreachable)?;
        Ok(Self {
            http,
            url: url.into(),
        })
    }

    /// Posts one message.
    pub async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::json!({ "text": notification.text });
        let response = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(NotifyError::Unreachable)?;
        if !response.status().is_success() {
            return Err(NotifyError::Rejected(response.status().as_u16()));
        }
        Ok(())
    }
}
