//! The path from a verified Stripe event to the queue: claim the event id, enqueue the raw body (or a
//! reference to it, stashed), mark it enqueued — and release the claim if the enqueue fails, so a retry
//! starts afresh. The receiver runs it for every webhook; operator tools (backfill, replay) run the same
//! function, so an event already seen is skipped the same way whichever door it came through.

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
}

/// Claims, enqueues and marks `event` (whose raw bytes are `body`). `sqs_max_message_bytes` decides
/// when the body is stashed in the dedup table instead of sent inline.
pub async fn admit<S: DedupStore, Q: EventQueue>(
    store: &S,
    queue: &Q,
    event: &EventEnvelope,
    body: &[u8],
    sqs_max_message_bytes: usize,
) -> Result<Admitted, IntakeError> {
    let now = unix_now();
    let token = match store
        .claim(&event.id, event.event_type.as_str(), now)
        .await?
    {
        Claim::New(token) => token,
        Claim::AlreadyEnqueued => {
            if let Err(err) = store.count_duplicate(now).await {
                warn!(event_id = %event.id, error = %error_chain(&err), "duplicate not counted");
            }
            return Ok(Admitted::Duplicate);
        }
        Claim::InFlight => return Err(IntakeError::InFlight),
    };
    if let Err(err) = enqueue(store, queue, event, body, sqs_max_message_bytes, now).await {
        // Give the event back so the retry can claim it at once. If this fails too, the lease expiring
        // frees it a little later.
        if let Err(release) = store.release(&event.id, &token).await {
            error!(event_id = %event.id, error = %error_chain(&release), "could not release claim; it frees itself when the lease ends");
        }
        return Err(err);
    }
    match store.mark_enqueued(&event.id, &token, unix_now()).await {
        Ok(true) => {}
        // The message is on the queue, which is what success promises. Unmarked, a redelivery after the
        // lease may enqueue a second copy; the processor is idempotent per event id, so that is harmless.
        Ok(false) => {
            warn!(event_id = %event.id, "claim was taken over before it was marked; a second copy may be enqueued")
        }
        Err(err) => {
            error!(event_id = %event.id, error = %error_chain(&err), "enqueued but not marked; a second copy may be enqueued")
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
