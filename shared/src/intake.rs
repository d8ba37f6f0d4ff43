//! The path from a verified Stripe event to the queue: claim the event id, enqueue the raw body (or a
//! reference to it, stashed), mark it enqueued — and release the claim if the enqueue fails, so a retry
//! starts afresh. The receiver runs it for every webhook; operator tools (backfill, replay) run the same
//! function, so an event already seen is skipped the same way whichever door it came through.
//!
//! A caller with a deadline (the receiver: its Lambda invocation ends) passes it, and every step runs
//! under it: each SDK call is capped on its own, but claim, stash, send and mark in sequence could
//! together outlast the function, which would then be killed with nothing logged or released.

use std::{future::Future, time::Duration};

use tokio::time::{timeout_at, Instant};
use tracing::{error, info, warn};

use crate::{
    dedup::{Claim, DedupError, DedupStore},
    event::EventEnvelope,
    queue::{EventQueue, QueueError, QueueMessage},
    signature::unix_now,
    telemetry::error_chain,
};

/// What became of an admitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Newly claimed and put on the queue.
    Enqueued,
    /// Already on the queue: nothing sent.
    Duplicate,
}

/// Why an event could not be admitted now. All of them are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Another delivery is enqueueing the same event right now.
    #[error("event is being enqueued by another delivery")]
    InFlight,
    /// The dedup table failed.
    #[error("dedup table unavailable")]
    Dedup(#[from] DedupError),
    /// The queue failed.
    #[error("event queue unavailable")]
    Queue(#[from] QueueError),
    /// The caller's deadline passed while `step` was under way; any claim held was released.
    #[error("deadline exceeded while {step}")]
    DeadlineExceeded {
        /// What was under way: `claiming` or `enqueueing`.
        step: &'static str,
    },
}

/// How long releasing a claim may take after the deadline has passed: the caller keeps at least this
/// much of its own time back, so the claim is given back and the answer still sent.
pub const RELEASE_GRACE: Duration = Duration::from_secs(1);

/// `future`, unless `deadline` passes first.
async fn by<F: Future>(deadline: Option<Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

/// Claims, enqueues and marks `event` (whose raw bytes are `body`). `sqs_max_message_bytes` decides
/// when the body is stashed in the dedup table instead of sent inline.
///
/// With a `deadline`, each step must finish by it. Past it while claiming: the put may still land, and
/// then the lease frees the event (a retry meanwhile gets 409). Past it while enqueueing: the claim is
/// released (taking up to [`RELEASE_GRACE`] more), so Stripe's retry claims afresh; if the send did
/// land, that retry sends a second copy, which the processor's per-event idempotency absorbs. Past it
/// while marking: the message is on the queue, so the event is admitted all the same.
pub async fn admit<S: DedupStore, Q: EventQueue>(
    store: &S,
    queue: &Q,
    event: &EventEnvelope,
    body: &[u8],
    sqs_max_message_bytes: usize,
    deadline: Option<Instant>,
) -> Result<Admitted, IntakeError> {
    let now = unix_now();
    let claim = by(
        deadline,
        store.claim(&event.id, event.event_type.as_str(), now),
    )
    .await
    .ok_or(IntakeError::DeadlineExceeded { step: "claiming" })??;
    let token = match claim {
        Claim::New(token) => token,
        Claim::AlreadyEnqueued => {
            match by(deadline, store.count_duplicate(now)).await {
                Some(Ok(())) => {}
                Some(Err(err)) => {
                    warn!(event_id = %event.id, error = %error_chain(&err), "duplicate not counted")
                }
                None => warn!(event_id = %event.id, "duplicate not counted: out of time"),
            }
            return Ok(Admitted::Duplicate);
        }
        Claim::InFlight => return Err(IntakeError::InFlight),
    };
    let enqueued = by(
        deadline,
        enqueue(store, queue, event, body, sqs_max_message_bytes, now),
    )
    .await
    .unwrap_or(Err(IntakeError::DeadlineExceeded { step: "enqueueing" }));
    if let Err(err) = enqueued {
        // Give the event back so the retry can claim it at once. If this fails too, the lease expiring
        // frees it a little later.
        let release_by = deadline.map(|deadline| deadline.max(Instant::now()) + RELEASE_GRACE);
        match by(release_by, store.release(&event.id, &token)).await {
            Some(Ok(())) => {}
            Some(Err(release)) => {
                error!(event_id = %event.id, error = %error_chain(&release), "could not release claim; it frees itself when the lease ends")
            }
            None => {
                error!(event_id = %event.id, "could not release claim in time; it frees itself when the lease ends")
            }
        }
        return Err(err);
    }
    match by(deadline, store.mark_enqueued(&event.id, &token, unix_now())).await {
        Some(Ok(true)) => {}
        // The message is on the queue, which is what success promises. Unmarked, a redelivery after the
        // lease may enqueue a second copy; the processor is idempotent per event id, so that is harmless.
        Some(Ok(false)) => {
            warn!(event_id = %event.id, "claim was taken over before it was marked; a second copy may be enqueued")
        }
        Some(Err(err)) => {
            error!(event_id = %event.id, error = %error_chain(&err), "enqueued but not marked; a second copy may be enqueued")
        }
        None => {
            error!(event_id = %event.id, "enqueued but not marked in time; a second copy may be enqueued")
        }
    }
    Ok(Admitted::Enqueued)
}

/// Sends the event inline when SQS can carry it, otherwise stashes the body in the dedup table and sends
/// a reference. Does not claim: [`admit`] does, and a forced replay deliberately skips it.
pub async fn enqueue<S: DedupStore, Q: EventQueue>(
    store: &S,
    queue: &Q,
    event: &EventEnvelope,
    body: &[u8],
    sqs_max_message_bytes: usize,
    now: u64,
) -> Result<(), IntakeError> {
    let inline = std::str::from_utf8(body)
        .ok()
        .map(|text| QueueMessage::inline(event, text.to_owned()))
        .filter(|message| message.fits(sqs_max_message_bytes));
    let message = match inline {
        Some(message) => message,
        None => {
            let stashed = store.stash_body(&event.id, body, now).await?;
            info!(event_id = %event.id, bytes = body.len(), chunks = stashed.chunks, "body stashed in the dedup table");
            QueueMessage::inline(event, String::new()).stashed(stashed)
        }
    };
    queue.enqueue(&message).await?;
    Ok(())
}
