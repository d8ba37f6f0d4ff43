//! The event queue: what a queued message looks like, and sending it.
//!
//! A message's body is the raw event JSON exactly as Stripe signed it, with `event_id`, `event_type`,
//! `livemode`, `api_version` and `body_location` as message attributes so consumers (and operators
//! looking at the DLQ) can route without parsing. A body SQS cannot carry — too large, or with characters
//! SQS refuses — is stashed in the dedup table and the message carries a [`StashedBody`] reference
//! instead (`body_location = dedup_table`): the claim-check pattern, so no event is lost to a size limit.

#[cfg(any(test, feature = "test-util"))]
mod memory;
mod sqs;

#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryEventQueue;
pub use sqs::SqsEventQueue;

use std::future::Future;

use crate::{dedup::StashedBody, event::EventEnvelope};

/// Message attribute names.
pub mod attribute {
    /// The Stripe event id.
    pub const EVENT_ID: &str = "event_id";
    /// The Stripe event type.
    pub const EVENT_TYPE: &str = "event_type";
    /// `true` / `false`.
    pub const LIVEMODE: &str = "livemode";
    /// The payload's API version.
    pub const API_VERSION: &str = "api_version";
    /// `inline` or `dedup_table`.
    pub const BODY_LOCATION: &str = "body_location";
}

const INLINE: &str = "inline";
const DEDUP_TABLE: &str = "dedup_table";
/// SQS counts each attribute's name, data type and value towards the message size.
const STRING_TYPE: &str = "String";

/// Where a message's event body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// In the message itself.
    Inline(String),
    /// Stashed in the dedup table.
    Stashed(StashedBody),
}

/// One event on its way to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// The event id.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// The event's livemode, if it said.
    pub livemode: Option<bool>,
    /// The payload's API version, if it said.
    pub api_version: Option<String>,
    /// The body, or where to find it.
    pub body: MessageBody,
}

/// The queue refused or could not be reached. The receiver answers 5xx and releases its claim.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// SQS failed or could not be reached.
    #[error("event queue unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A received message body does not match its `body_location`.
    #[error("queued message is malformed")]
    MalformedMessage,
}

impl QueueMessage {
    /// A message carrying `raw_body` inline.
    pub fn inline(event: &EventEnvelope, raw_body: String) -> Self {
        Self {
            event_id: event.id.clone(),
            event_type: event.event_type.as_str().to_owned(),
            livemode: event.livemode,
            api_version: event.api_version.clone(),
            body: MessageBody::Inline(raw_body),
        }
    }

    /// The same message with its body replaced by a reference to where it was stashed.
    pub fn stashed(self, stashed: StashedBody) -> Self {
        Self {
            body: MessageBody::Stashed(stashed),
            ..self
        }
    }

    /// The attributes sent with the message, as (name, value) pairs.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attributes = vec![
            (attribute::EVENT_ID, self.event_id.clone()),
            (attribute::EVENT_TYPE, self.event_type.clone()),
            (attribute::BODY_LOCATION, self.body_location().to_owned()),
        ];
        if let Some(livemode) = self.livemode {
            attributes.push((attribute::LIVEMODE, livemode.to_string()));
        }
        if let Some(version) = &self.api_version {
            attributes.push((attribute::API_VERSION, version.clone()));
        }
        attributes
    }

    fn body_location(&self) -> &'static str {
        match self.body {
            MessageBody::Inline(_) => INLINE,
            MessageBody::Stashed(_) => DEDUP_TABLE,
        }
    }

    /// The message body as sent to SQS.
    pub fn encoded_body(&self) -> String {
        match &self.body {
            MessageBody::Inline(body) => body.clone(),
            MessageBody::Stashed(stashed) => {
                serde_json::to_string(stashed).unwrap_or_else(|_| String::new())
            }
        }
    }

    /// Whether SQS can carry this message as it is, under a message size limit of `max_bytes`: the size
    /// SQS counts (body plus every attribute's name, type and value) fits, and every character of the
    /// body is one SQS allows.
    pub fn fits(&self, max_bytes: usize) -> bool {
        let MessageBody::Inline(body) = &self.body else {
            return true;
        };
        let attributes: usize = self
            .attributes()
            .iter()
            .map(|(name, value)| name.len() + STRING_TYPE.len() + value.len())
            .sum();
        body.len() + attributes <= max_bytes && body.chars().all(sqs_allows)
    }

    /// Reads a received message's body given its `body_location` attribute (absent means inline, so
    /// messages put on the queue by hand or by other tools still work).
    pub fn parse_body(body: &str, body_location: Option<&str>) -> Result<MessageBody, QueueError> {
        match body_location {
            None | Some(INLINE) => Ok(MessageBody::Inline(body.to_owned())),
            Some(DEDUP_TABLE) => serde_json::from_str(body)
                .map(MessageBody::Stashed)
                .map_err(|_| QueueError::MalformedMessage),
            Some(_) => Err(QueueError::MalformedMessage),
        }
    }
}

/// The characters SQS accepts in a message body (its documented allow-list). JSON can carry others,
/// such as U+FFFF, unescaped.
fn sqs_allows(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// The event queue.
pub trait EventQueue: Send + Sync {
    /// Sends one message; returns the queue's message id.
    fn enqueue(
        &self,
        message: &QueueMessage,
    ) -> impl Future<Output = Result<String, QueueError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> QueueMessage {
        let event =
            EventEnvelope::parse(br#"{"id":"evt_1","type":"invoice.paid","livemode":false}"#)
                .unwrap();
        QueueMessage::inline(&event, body.to_owned())
    }

    #[test]
    fn size_counts_body_and_attributes() {
        let m = message("x");
        // event_id+String+evt_1, event_type+String+invoice.paid, body_location+String+inline,
        // livemode+String+false
        let attributes = (8 + 6 + 5) + (10 + 6 + 12) + (13 + 6 + 6) + (8 + 6 + 5);
        assert!(m.fits(1 + attributes));
        assert!(!m.fits(attributes));
    }

    #[test]
    fn characters_sqs_refuses_force_a_stash() {
        assert!(message("{\"a\":\"\u{FFFE}\"}").fits(usize::MAX).eq(&false));
        assert!(message("{\"a\":\"\u{1F600} é\"}").fits(usize::MAX));
    }

    #[test]
    fn stashed_references_round_trip() {
        let stashed = StashedBody {
            event_id: "evt_1".into(),
            chunks: 2,
            bytes: 400_000,
            sha256: "ab".repeat(32),
        };
        let m = message("x").stashed(stashed.clone());
        let location = m
            .attributes()
            .into_iter()
            .find(|(k, _)| *k == attribute::BODY_LOCATION)
            .unwrap()
            .1;
        assert_eq!(
            QueueMessage::parse_body(&m.encoded_body(), Some(&location)).unwrap(),
            MessageBody::Stashed(stashed)
        );
        assert_eq!(
            QueueMessage::parse_body("{}", None).unwrap(),
            MessageBody::Inline("{}".into())
        );
        assert!(QueueMessage::parse_body("nope", Some("dedup_table")).is_err());
    }
}
