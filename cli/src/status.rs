//! What the pipeline knows of one event: the dedup table's record (was it received and enqueued, is a
//! delivery enqueueing it now) and the billing table's (was it applied, which notifications went out).

use serde::Serialize;
use stripe_pipeline::{
    billing::{AttributesExt, BillingError, BillingStore, Key},
    dedup::{ClaimStatus, ClaimStore, DedupError},
    event::EventType,
    signature::unix_now,
};

use crate::settings::format_time;

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The dedup table failed.
    #[error("could not read the dedup table")]
    Dedup(#[from] DedupError),
    /// The billing table failed.
    #[error("could not read the billing table")]
    Billing(#[from] BillingError),
}

/// The dedup table's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Intake {
    /// No record: never received, or forgotten (30 days after it was).
    Unknown,
    /// On the queue (or processed since).
    Enqueued {
        /// The type recorded at the claim.
        event_type: String,
        /// When the record stops counting, unix seconds.
        expires_at: u64,
    },
    /// A delivery claimed it and is enqueueing it.
    Pending {
        /// The type recorded at the claim.
        event_type: String,
        /// When the claim frees itself, unix seconds.
        lease_until: Option<u64>,
    },
    /// The record expired: a new delivery would be enqueued again.
    Expired {
        /// When it expired, unix seconds.
        expired_at: u64,
    },
}

/// One notification's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationRecord {
    /// The channel (`slack.ops`, …).
    pub channel: String,
    /// `sent`, or `sending` while a delivery holds the claim.
    pub status: String,
}

/// Everything known of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventStatus {
    /// The event.
    pub event_id: String,
    /// The dedup table's view.
    pub intake: Intake,
    /// When the processor applied it (unix seconds), if it did.
    pub applied_at: Option<i64>,
    /// The type recorded with the processor's marker.
    pub applied_type: Option<String>,
    /// Notifications recorded for it.
    pub notifications: Vec<NotificationRecord>,
}

/// Reads what both tables know of `event_id`.
pub async fn status<S: ClaimStore, B: BillingStore>(
    store: &S,
    billing: &B,
    event_id: &str,
) -> Result<EventStatus, StatusError> {
    let now = unix_now();
    let intake = match store.lookup(event_id).await? {
        None => Intake::Unknown,
        Some(record) if record.expires_at < now => Intake::Expired {
            expired_at: record.expires_at,
        },
        Some(record) => match record.status {
            ClaimStatus::Enqueued => Intake::Enqueued {
                event_type: record.event_type,
                expires_at: record.expires_at,
            },
            ClaimStatus::Pending => Intake::Pending {
                event_type: record.event_type,
                lease_until: record.lease_until,
            },
        },
    };
    let marker = Key::event_marker(event_id);
    let mut status = EventStatus {
        event_id: event_id.to_owned(),
        intake,
        applied_at: None,
        applied_type: None,
        notifications: Vec::new(),
    };
    for (sk, item) in billing.query(&marker.pk).await? {
        if sk == marker.sk {
            status.applied_at = item.n("applied_at");
            status.applied_type = item.s("event_type").map(str::to_owned);
        } else if let Some(channel) = sk.strip_prefix("NOTIFY#") {
            status.notifications.push(NotificationRecord {
                channel: channel.to_owned(),
                status: item.s("status").unwrap_or("unknown").to_owned(),
            });
        }
    }
    Ok(status)
}

impl std::fmt::Display for EventStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.event_id)?;
        let intake = match &self.intake {
            Intake::Unknown => {
                "not received (or received more than the dedup TTL ago, 30 days by default)"
                    .to_owned()
            }
            Intake::Enqueued {
                event_type,
                expires_at,
            } => format!(
                "{event_type}: enqueued; a redelivery is a duplicate until {}",
                format_time(*expires_at)
            ),
            Intake::Pending {
                event_type,
                lease_until,
            } => format!(
                "{event_type}: being enqueued by a delivery right now (claim frees itself at {})",
                lease_until.map_or_else(|| "?".to_owned(), format_time)
            ),
            Intake::Expired { expired_at } => format!(
                "record expired at {}: a new delivery would be enqueued again",
                format_time(*expired_at)
            ),
        };
        writeln!(f, "  dedup table:   {intake}")?;
        let applied = match self.applied_at {
            Some(at) => format!(
                "applied at {}{}",
                format_time(u64::try_from(at).unwrap_or(0)),
                self.applied_type
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ),
            None => match &self.intake {
                // Types without a handler are acknowledged and counted, and leave no marker.
                Intake::Enqueued { event_type, .. }
                    if matches!(EventType::from(event_type.as_str()), EventType::Other(_)) =>
                {
                    format!("nothing to apply: the processor has no handler for {event_type} and only acknowledges it")
                }
                Intake::Enqueued { .. } => {
                    "not applied: still on the queue, failing (see the processor's logs), or in the dead-letter queue (`dlq show`)".to_owned()
                }
                _ => "not applied".to_owned(),
            },
        };
        writeln!(f, "  billing state: {applied}")?;
        if self.notifications.is_empty() {
            writeln!(f, "  notifications: none recorded")?;
        }
        for notification in &self.notifications {
            writeln!(
                f,
                "  notification:  {} {}",
                notification.channel, notification.status
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueued(event_type: &str) -> EventStatus {
        EventStatus {
            event_id: "evt_1".to_owned(),
            intake: Intake::Enqueued {
                event_type: event_type.to_owned(),
                expires_at: 1_800_000_000,
            },
            applied_at: None,
            applied_type: None,
            notifications: Vec::new(),
        }
    }

    #[test]
    fn an_unapplied_event_is_explained_by_whether_the_processor_handles_its_type() {
        let handled = enqueued("invoice.paid").to_string();
        assert!(
            handled.contains("not applied: still on the queue"),
            "{handled}"
        );
        let unhandled = enqueued("customer.created").to_string();
        assert!(
            unhandled.contains("no handler for customer.created"),
            "{unhandled}"
        );
        let applied = EventStatus {
            applied_at: Some(1_795_132_800),
            applied_type: Some("invoice.paid".to_owned()),
            ..enqueued("invoice.paid")
        };
        assert!(applied
            .to_string()
            .contains("applied at 2026-11-20T00:00:00Z (invoice.paid)"));
    }
}
