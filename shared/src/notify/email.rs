//! Email through Amazon SES (v2 `SendEmail`), plain text: a subject line that says what happened and a
//! body with the facts and the event to look up. SES takes no idempotency key either; the processor's
//! per-channel claim is what keeps it to one email per event.

use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};

use super::{About, NotifyError};
use crate::handlers::Notification;

/// The longest subject we send; SES allows more, mail clients show less.
const MAX_SUBJECT_CHARS: usize = 120;

/// A sender and its recipients.
#[derive(Debug, Clone)]
pub struct EmailNotifier {
    ses: aws_sdk_sesv2::Client,
    from: String,
    to: Vec<String>,
}

impl EmailNotifier {
    /// Sends from `from` (an SES-verified identity) to `to`.
    pub fn new(ses: aws_sdk_sesv2::Client, from: impl Into<String>, to: Vec<String>) -> Self {
        Self {
            ses,
            from: from.into(),
            to,
        }
    }

    /// The recipients.
    pub fn recipients(&self) -> &[String] {
        &self.to
    }

    /// Sends one email.
    pub async fn send(
        &self,
        notification: &Notification,
        about: About<'_>,
    ) -> Result<(), NotifyError> {
        let (subject, body) = render(notification, about);
        let content = |text: String| {
            Content::builder()
                .data(text)
                .charset("UTF-8")
                .build()
                .map_err(|e| NotifyError::Email(Box::new(e)))
        };
        let message = Message::builder()
            .subject(content(subject)?)
            .body(Body::builder().text(content(body)?).build())
            .build();
        self.ses
            .send_email()
            .from_email_address(&self.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(self.to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| NotifyError::Email(Box::new(e)))?;
        Ok(())
    }
}

/// Subject and body of the email for `notification`.
pub(crate) fn render(notification: &Notification, about: About<'_>) -> (String, String) {
    let mode = match about.livemode {
        Some(true) => "",
        Some(false) => "[test mode] ",
        None => "",
    };
    let mut subject = format!("{mode}{}", notification.text);
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        subject = subject
            .chars()
            .take(MAX_SUBJECT_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    let body = format!(
        "{}\n\nEvent: {} ({})\nLook it up: stripe-webhooks status {}\n",
        notification.text, about.event_id, about.event_type, about.event_id
    );
    (subject, body)
}
