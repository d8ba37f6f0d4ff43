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
//! The same table also keeps bodies too large for an SQS message ([`DedupStore::stash_body`]), under keys
//! made of the body's SHA-256, which can never be an event id (`#body#<sha256>#0`), expiring with the
//! claim. Keyed by content, a stash can never change the bytes under a message already queued: a
//! takeover, a forced replay or a backfill of the same event with other bytes writes other keys.

mod dynamo;
#[cfg(any(test, feature = "test-util"))]
mod memory;

pub use dynamo::DynamoDedupStore;
#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryDedupStore;

use std::future::Future;

use sha2::{Digest, Sha256};

/// Bodies are stored in pieces of this size: a DynamoDB item holds at most 400 KB. Part of the layout a
/// queued reference is read by (chunk `i` starts at `i * BODY_CHUNK_BYTES`): changing it needs a new
/// key prefix, or a message queued before the change would read chunks cut elsewhere.
pub const BODY_CHUNK_BYTES: usize = 300_000;
/// The most a stashed body may take: all its chunks are written in one transaction, which DynamoDB
/// limits to 4 MB.
pub const MAX_STASHED_BODY_BYTES: usize = 3 * 1024 * 1024;

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

/// Where a body stashed in the table is, and how to check it came back whole: the message body of a
/// queued reference. The chunks are found by `sha256`, so the reference names its own bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StashedBody {
    /// The event whose body this is (for logs, and for reading references queued before bodies were
    /// keyed by their hash).
    pub event_id: String,
    /// Number of chunks.
    pub chunks: usize,
    /// Total length in bytes.
    pub bytes: usize,
    /// Lowercase hex SHA-256 of the body: the key its chunks are stored under, and its checksum.
    pub sha256: String,
}

impl StashedBody {
    fn describe(event_id: &str, body: &[u8]) -> Self {
        Self {
            event_id: event_id.to_owned(),
            chunks: body.len().div_ceil(BODY_CHUNK_BYTES).max(1),
            bytes: body.len(),
            sha256: hex::encode(Sha256::digest(body)),
        }
    }

    fn chunk_key(&self, index: usize) -> String {
        format!("#body#{}#{index}", self.sha256)
    }

    /// Where chunks were stored before they were keyed by the body's hash: still read, so a message
    /// queued by a receiver of before that change (up to the dead-letter queue's 14 days) resolves.
    fn legacy_chunk_key(&self, index: usize) -> String {
        format!("{}#body#{index}", self.event_id)
    }

    fn check(&self, body: Vec<u8>) -> Result<Vec<u8>, DedupError> {
        if body.len() != self.bytes || hex::encode(Sha256::digest(&body)) != self.sha256 {
            return Err(DedupError::CorruptBody);
        }
        Ok(body)
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

/// The dedup table. Times are unix seconds, passed in so callers and tests share one clock.
pub trait DedupStore: Send + Sync {
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

    /// Stores a body too large for the queue, to be fetched by the processor, under its SHA-256: a later
    /// stash of other bytes for the same event never changes what an earlier reference reads.
    fn stash_body(
        &self,
        event_id: &str,
        body: &[u8],
        now: u64,
    ) -> impl Future<Output = Result<StashedBody, DedupError>> + Send;

    /// Reads back a stashed body, checking its length and checksum.
    fn fetch_body(
        &self,
        stashed: &StashedBody,
    ) -> impl Future<Output = Result<Vec<u8>, DedupError>> + Send;

    /// Counts one delivery dropped as a duplicate at `now`, in the hour's counter (kept as long as
    /// event ids are). For people (the console's "deduplicated today"), so callers treat a failure as
    /// a log line, never as a reason to fail the delivery.
    fn count_duplicate(&self, now: u64) -> impl Future<Output = Result<(), DedupError>> + Send;

    /// Duplicates counted in the hours that start in `[from, to)`.
    fn duplicates_between(
        &self,
        from: u64,
        to: u64,
    ) -> impl Future<Output = Result<u64, DedupError>> + Send;
}

/// The key of the duplicate counter of the hour holding `unix`: `#duplicates#<hour number>`. Event ids
/// are `evt_` and alphanumerics, so it can never be one.
pub fn duplicate_counter_key(unix: u64) -> String {
    format!("#duplicates#{}", unix / 3600)
}

/// The hours (as counter keys) that start in `[from, to)`.
fn counter_keys(from: u64, to: u64) -> Vec<String> {
    (from.div_ceil(3600)..to.div_ceil(3600))
        .map(|hour| duplicate_counter_key(hour * 3600))
        .collect()
}

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
