//! The outbox: each notification is sent at most once per event and channel, and never lost.
//!
//! Claim → send → mark. The claim is a conditional put in the billing table under the event's partition
//! with a short lease; the mark records `sent` once the channel accepted the notification. A redelivery
//! of the event finds the mark and sends nothing; a send that failed gives its claim up so the retried
//! message sends it; a mark that failed after the channel accepted leaves the claim to run out, so the
//! retry sends a second copy (neither Slack webhooks nor SES take an idempotency key: a second copy is
//! the price of never losing one).

use crate::{
    billing::{Attributes, AttributesExt, BillingError, BillingStore, Key, NotifyClaim},
    handlers::Notification,
};

use super::{About, Channel, NotifyError};

/// Why a notification was not sent and recorded.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The billing table failed while claiming.
    #[error("billing state unavailable")]
    Billing(#[from] BillingError),
    /// The channel could not deliver; the claim was given up.
    #[error("notification failed")]
    Send(#[from] NotifyError),
    /// Another delivery of the event holds the claim; retried until it is sent.
    #[error("notification is being sent by another delivery")]
    InFlight,
    /// The channel accepted the notification but its `sent` mark failed: the retry sends it again
    /// once the claim's lease ends.
    #[error("notification sent but not recorded; the retry sends it again")]
    Unrecorded(#[source] BillingError),
}

/// The record of one notification: one per (event, channel, kind of news), what `status` and the
/// console show. Keyed `<channel>.<audience>` under the event's partition.
fn record_name(channel: &str, notification: &Notification) -> String {
    format!("{channel}.{}", notification.audience.as_str())
}

/// Sends `notification` about `about` to `channel` (named `name` in the routes) unless it was already
/// sent there for this event; `true` if sent now.
pub async fn send_once<B: BillingStore>(
    billing: &B,
    about: About<'_>,
    notification: &Notification,
    name: &str,
    channel: &Channel,
    now: i64,
) -> Result<bool, OutboxError> {
    let key = record_name(name, notification);
    let token = format!("{:032x}", fastrand::u128(..));
    match billing
        .claim_notification(about.event_id, &key, &token, now)
        .await?
    {
        NotifyClaim::Claimed => {}
        NotifyClaim::AlreadySent => return Ok(false),
        NotifyClaim::HeldElsewhere => return Err(OutboxError::InFlight),
    }
    if let Err(err) = channel.send(notification, about).await {
        // Give the claim up so the retried message sends it; if this fails too, the lease runs out.
        let _ = billing
            .finish_notification(about.event_id, &key, false)
            .await;
        return Err(err.into());
    }
    billing
        .finish_notification(about.event_id, &key, true)
        .await
        .map_err(OutboxError::Unrecorded)?;
    Ok(true)
}

/// Whether `items` (the event's partition) record a notification to `channel` as sent, of any kind of
/// news.
pub fn sent_on(items: &[(String, Attributes)], event_id: &str, channel: &str) -> bool {
    let prefix = Key::notification(event_id, &format!("{channel}.")).sk;
    items
        .iter()
        .any(|(sk, item)| sk.starts_with(&prefix) && item.s("status") == Some("sent"))
}
