//! Remembering which events were already enqueued, so a redelivery is answered 200 without a second
//! message — and claiming an event while it is being enqueued, so concurrent deliveries cannot both
//! enqueue it.
//!
//! An event id goes through three states in the dedup table:
//! - absent (or expired, or a `pending` claim whose lease ran out): free, the next delivery claims it;
//! - `pending` with a lease: one delivery is enqueueing it right now; others get [`Claim::InFlight`];
//! - `enqueued`: safely on the queue; later deliveries get [`Claim::AlreadyEnqueued`] until it expires.
//!
//! Nothing is marked `enqueued` before the queue accepted the message, and a failed enqueue releases the
//! claim, so a retry from Stripe starts afresh. If a receiver dies between claim and release, the lease
//! expiring frees the event.
//!
//! The same table does two more jobs, each its own trait and type, under keys that can never be an
//! event id:
//! - [`BodyStash`] keeps bodies too large for an SQS message ([`stash`]), for the processor to read;
//! - [`DuplicateCounter`] counts deliveries dropped as duplicates, per hour ([`counters`]), for the
//!   console.
//!
//! The receiver needs all three ([`DedupStore`], [`DynamoDedupStore`]); the processor only reads
//! bodies and counts the duplicates that reach it, so it holds a [`DynamoBodyStash`] and a
//! [`DynamoDuplicateCounter`], the counter built with the configured retention.

pub mod counters;
mod dynamo;
#[cfg(any(test, feature = "test-util"))]
mod memory;
pub mod stash;

pub use counters::{duplicate_counter_key, DuplicateCounter, DynamoDuplicateCounter};
pub use dynamo::DynamoDedupStore;
#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryDedupStore;
pub use stash::{
    BodyStash, DynamoBodyStash, StashedBody, BODY_CHUNK_BYTES, MAX_STASHED_BODY_BYTES,
};

use std::future::Future;

/// The result of trying to claim an event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This delivery owns the event now and must enqueue it, then mark it or release it.
    New(ClaimToken),
    /// The event is already on the queue: answer 200 and do nothing.
    AlreadyEnqueued,
    /// Another delivery is enqueueing it right now. Its outcome is unknown, so the answer must make Stripe
    /// retry: a 2xx here would lose the event if that other attempt fails.
    InFlight,
}

/// Proof of a claim: only its holder may mark or release it, so a delivery whose lease ran out cannot
/// undo the claim of the delivery that took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken(pub(crate) String);

impl ClaimToken {
    fn random() -> Self {
        Self(format!("{:032x}", fastrand::u128(..)))
    }
}

/// What the table knows of an event, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupRecord {
    /// `pending` or `enqueued`.
    pub status: ClaimStatus,
    /// The event type recorded with the claim.
    pub event_type: String,
    /// Unix seconds after which the record no longer counts (the table's TTL attribute).
    pub expires_at: u64,
    /// For a pending claim, when its lease ends.
    pub lease_until: Option<u64>,
}

/// The state of a claimed event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Claimed, not yet on the queue.
    Pending,
    /// On the queue.
    Enqueued,
}

impl ClaimStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Enqueued => "enqueued",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "enqueued" => Some(Self::Enqueued),
            _ => None,
        }
    }
}

/// The dedup table could not answer. Every variant means "we do not know": the receiver answers 5xx.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// DynamoDB failed or could not be reached.
    #[error("dedup table unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An item has a shape we did not write.
    #[error("dedup item is malformed")]
    MalformedItem,
    /// A stashed body is missing or does not match its checksum.
    #[error("stashed body is missing or corrupt")]
    CorruptBody,
    /// A body is too large to stash.
    #[error("body too large to stash")]
    BodyTooLarge,
}

/// The claim protocol. Times are unix seconds, passed in so callers and tests share one clock.
pub trait ClaimStore: Send + Sync {
    /// Claims `event_id` for this delivery, unless it is enqueued or claimed by someone else whose lease
    /// still runs. Expired records count as absent: DynamoDB deletes TTL-expired items lazily (often days
    /// later), so the condition re-checks the expiry itself.
    fn claim(
        &self,
        event_id: &str,
        event_type: &str,
        now: u64,
    ) -> impl Future<Output = Result<Claim, DedupError>> + Send;

    /// Records that the event is safely on the queue. Returns `false` if the claim was lost (its lease ran
    /// out and another delivery took over); the message is on the queue either way.
    fn mark_enqueued(
        &self,
        event_id: &str,
        token: &ClaimToken,
        now: u64,
    ) -> impl Future<Output = Result<bool, DedupError>> + Send;

    /// Gives up a claim after a failed enqueue, so Stripe's retry can claim again at once.
    fn release(
        &self,
        event_id: &str,
        token: &ClaimToken,
    ) -> impl Future<Output = Result<(), DedupError>> + Send;

    /// What the table knows of `event_id` (expired records included, as stored).
    fn lookup(
        &self,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<DedupRecord>, DedupError>> + Send;
}

/// The whole dedup table, as the receiver (and the CLI's intake: backfill, replay) uses it: claims,
/// the stash for large bodies, and the duplicate counters.
pub trait DedupStore: ClaimStore + BodyStash + DuplicateCounter {}

impl<T: ClaimStore + BodyStash + DuplicateCounter> DedupStore for T {}

/// Whether a record leaves the event free to claim at `now`.
fn is_free(record: &DedupRecord, now: u64) -> bool {
    record.expires_at < now
        || (record.status == ClaimStatus::Pending && record.lease_until.is_some_and(|l| l < now))
}

/// What a failed claim means, given the record that blocked it.
fn blocked_by(record: &DedupRecord) -> Claim {
    match record.status {
        ClaimStatus::Enqueued => Claim::AlreadyEnqueued,
        ClaimStatus::Pending => Claim::InFlight,
    }
}
