//! Telling people: routes from event type to channels, and the channels (Slack incoming webhooks,
//! email through Amazon SES).
//!
//! Handlers say *what* the news is ([`Notification`], with its [`Audience`](crate::handlers::Audience));
//! the routing document says *who* hears it, by event type ([`routes`]). Each notification is sent at
//! most once per event and channel: before sending, the processor claims `(event, channel)` in the
//! billing table (a conditional put with a short lease) and marks it sent after the channel accepted
//! it. A duplicate delivery of the event finds the mark and sends nothing. A channel that fails gives
//! its claim up and fails the SQS message, so it is retried — without re-applying state (the event's
//! marker guards that) and without re-sending to the channels that already have it (their marks).

mod email;
pub mod outbox;
pub mod routes;
mod slack;

pub use email::EmailNotifier;
pub use outbox::OutboxError;
pub use routes::{Route, RouteError, Router, Routes};
pub use slack::SlackNotifier;

use crate::handlers::Notification;

/// A channel could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request failed (connection, timeout).
    #[error("slack webhook unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// Slack answered with an error status worth retrying (5xx, 408).
    #[error("slack webhook answered {0}")]
    Rejected(u16),
    /// Slack asked to slow down for longer than a send may wait: the retried message sends it.
    #[error("slack webhook rate limited for {retry_after_secs} s")]
    RateLimited {
        /// Slack's `Retry-After`.
        retry_after_secs: u64,
    },
    /// Slack refused the webhook for good (403 revoked or disallowed, 404 removed, 410 archived,
    /// another 4xx): a configuration error that no retry fixes.
    #[error("slack webhook refused for good ({status} {code}): check the channel's webhook URL")]
    Misconfigured {
        /// HTTP status.
        status: u16,
        /// Slack's error code (`channel_not_found`, `invalid_token`…), never the URL.
        code: String,
    },
    /// SES refused or could not be reached.
    #[error("SES SendEmail failed")]
    Email(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl NotifyError {
    /// Whether retrying cannot help: the channel is misconfigured.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Misconfigured { .. })
    }
}

/// Where a notification goes.
#[derive(Debug, Clone)]
pub enum Channel {
    /// A Slack incoming webhook.
    Slack(SlackNotifier),
    /// An email to fixed recipients, through SES.
    Email(EmailNotifier),
}

/// The event a notification is about, for the channels that say more than one line (email).
#[derive(Debug, Clone, Copy)]
pub struct About<'a> {
    /// `evt_…`
    pub event_id: &'a str,
    /// Its type.
    pub event_type: &'a str,
    /// Live or test mode, when known.
    pub livemode: Option<bool>,
}

impl Channel {
    /// Sends one notification.
    pub async fn send(
        &self,
        notification: &Notification,
        about: About<'_>,
    ) -> Result<(), NotifyError> {
        match self {
            Self::Slack(slack) => slack.send(notification).await,
            Self::Email(email) => email.send(notification, about).await,
        }
    }

    /// `slack` or `email`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Slack(_) => "slack",
            Self::Email(_) => "email",
        }
    }
}
