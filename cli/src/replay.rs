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
