//! Replay: fetch one event from Stripe's API and put it on the queue.
//!
//! Without `force` it goes through [`intake::admit`] like any delivery, so an event already enqueued is
//! left alone. With `force` the dedup table is bypassed ([`intake::enqueue`]): the event is enqueued
//! again even though it was seen — for a message lost after it was enqueued (dead-lettered and then
//! dropped, or purged). That cannot apply anything twice: the processor commits each event's changes
//! together with a marker (`EVENT#<id>` in the billing table) and does nothing for an event whose
//! marker exists, so a forced replay of an applied event is a no-op there.

use stripe_pipeline::{
    dedup::DedupStore,
    intake::{self, Admitted, IntakeError},
    queue::EventQueue,
    signature::unix_now,
};

use crate::stripe_api::{RawEvent, StripeApi, StripeApiError};

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Claimed and enqueued: it had not been enqueued before (or its record expired).
    Enqueued,
    /// Already enqueued earlier: nothing sent (use force to send anyway).
    AlreadySeen,
    /// Enqueued without looking at the dedup table.
    Forced,
}

/// What `replay` prints: the event and what happened to it.
#[derive(Debug, Clone, Copy)]
pub struct ReplayReport<'a> {
    /// What the replay did.
    pub replayed: Replayed,
    /// `evt_…`
    pub event_id: &'a str,
    /// Its type.
    pub event_type: &'a str,
}

impl std::fmt::Display for ReplayReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): ", self.event_id, self.event_type)?;
        match self.replayed {
            Replayed::Enqueued => writeln!(f, "enqueued"),
            Replayed::AlreadySeen => writeln!(
                f,
                "already enqueued earlier, nothing sent (`status {}` shows whether it was applied; --force sends it anyway)",
                self.event_id
            ),
            Replayed::Forced => writeln!(
                f,
                "enqueued again (forced); if it was applied before, the processor skips it"
            ),
        }
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The event could not be fetched.
    #[error("could not fetch the event from Stripe")]
    Api(#[from] StripeApiError),
    /// The dedup table or the queue failed, or a delivery of the same event is being enqueued.
    #[error("could not enqueue the event")]
    Intake(#[from] IntakeError),
}

/// Fetches `event_id` and enqueues it; the event is returned for the caller to describe.
pub async fn replay<S: DedupStore, Q: EventQueue>(
    api: &StripeApi,
    store: &S,
    queue: &Q,
    event_id: &str,
    force: bool,
    sqs_max_message_bytes: usize,
) -> Result<(Replayed, RawEvent), ReplayError> {
    let event = api.event(event_id).await?;
    let replayed = if force {
        intake::enqueue(
            store,
            queue,
            &event.envelope,
            event.bytes(),
            sqs_max_message_bytes,
            unix_now(),
        )
        .await?;
        Replayed::Forced
    } else {
        match intake::admit(
            store,
            queue,
            &event.envelope,
            event.bytes(),
            sqs_max_message_bytes,
            None,
        )
        .await?
        {
            Admitted::Enqueued => Replayed::Enqueued,
            Admitted::Duplicate => Replayed::AlreadySeen,
        }
    };
    Ok((replayed, event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_report_says_what_was_sent_and_how_to_check_it() {
        let report = |replayed| {
            ReplayReport {
                replayed,
                event_id: "evt_1",
                event_type: "invoice.paid",
            }
            .to_string()
        };
        assert_eq!(
            report(Replayed::Enqueued),
            "evt_1 (invoice.paid): enqueued\n"
        );
        assert_eq!(
            report(Replayed::AlreadySeen),
            "evt_1 (invoice.paid): already enqueued earlier, nothing sent (`status evt_1` shows whether it was applied; --force sends it anyway)\n"
        );
        assert!(report(Replayed::Forced).contains("enqueued again (forced)"));
    }
}
