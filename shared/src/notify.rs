//! Sending notifications to Slack through an incoming webhook.
//!
//! Each notification is sent at most once per event and channel: before sending, the processor claims
//! `(event, channel)` in the billing table (a conditional put with a short lease), and marks it sent
//! after Slack's 200. A duplicate delivery of the event finds the claim and sends nothing. A send that
//! fails gives the claim up and fails the SQS message, so it is retried — without re-applying state,
//! which the event's marker already guards. (If the process dies between Slack's 200 and the mark, the
//! lease runs out and the retried message sends again: Slack webhooks take no idempotency key, so that
//! window cannot be closed from here.)

use std::time::Duration;

use crate::handlers::Notification;

/// Slack could not be reached or refused the message.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request failed (connection, timeout).
    #[error("slack webhook unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// Slack answered with an error status.
    #[error("slack webhook answered {0}")]
    Rejected(u16),
}

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

    /// The channel name recorded per event.
    pub fn channel(&self, notification: &Notification) -> String {
        format!("slack.{}", notification.audience.as_str())
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
