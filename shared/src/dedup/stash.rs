//! Bodies too large for an SQS message, kept in the dedup table for the processor to read. Chunks are
//! keyed by the body's SHA-256 (`#body#<sha256>#<i>`), which can never be an event id, and expire with
//! the claim. Keyed by content, a stash can never change the bytes under a message already queued: a
//! takeover, a forced replay or a backfill of the same event with other bytes writes other keys.

use std::{future::Future, time::Duration};

use aws_sdk_dynamodb::{
    primitives::Blob,
    types::{AttributeValue, Put, TransactWriteItem},
    Client,
};
use sha2::{Digest, Sha256};

use super::{
    dynamo::{n, s, unavailable, Table, EXPIRES_AT, KEY},
    DedupError,
};

/// Bodies are stored in pieces of this size: a DynamoDB item holds at most 400 KB. Part of the layout a
/// queued reference is read by (chunk `i` starts at `i * BODY_CHUNK_BYTES`): changing it needs a new
/// key prefix, or a message queued before the change would read chunks cut elsewhere.
pub const BODY_CHUNK_BYTES: usize = 300_000;
/// The most a stashed body may take: all its chunks are written in one transaction, which DynamoDB
/// limits to 4 MB.
pub const MAX_STASHED_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The attribute holding a chunk's bytes.
const BODY: &str = "body";

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
    pub(super) fn describe(event_id: &str, body: &[u8]) -> Self {
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

    pub(super) fn check(&self, body: Vec<u8>) -> Result<Vec<u8>, DedupError> {
        if body.len() != self.bytes || hex::encode(Sha256::digest(&body)) != self.sha256 {
            return Err(DedupError::CorruptBody);
        }
        Ok(body)
    }
}

/// Where bodies too large for the queue wait for the processor.
pub trait BodyStash: Send + Sync {
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
}

/// The stash on the dedup table.
#[derive(Debug, Clone)]
pub struct DynamoBodyStash {
    table: Table,
    ttl: Duration,
}

impl DynamoBodyStash {
    /// The stash in `table`, keeping what it stores for `ttl` (the dedup TTL: a queued reference
    /// never outlives the claim of its event).
    pub fn new(client: Client, table: impl Into<String>, ttl: Duration) -> Self {
        Self {
            table: Table::new(client, table),
            ttl,
        }
    }

    /// The chunks of a stashed body under the keys `key` names, concatenated; `None` if the first is
    /// absent (nothing stashed under that naming).
    async fn read_chunks(
        &self,
        stashed: &StashedBody,
        key: fn(&StashedBody, usize) -> String,
    ) -> Result<Option<Vec<u8>>, DedupError> {
        let mut body = Vec::with_capacity(stashed.bytes);
        for index in 0..stashed.chunks {
            let Some(item) = self.table.consistent_get(key(stashed, index)).await? else {
                if index == 0 {
                    return Ok(None);
                }
                return Err(DedupError::CorruptBody);
            };
            let chunk = item
                .get(BODY)
                .and_then(|v| v.as_b().ok())
                .ok_or(DedupError::CorruptBody)?;
            body.extend_from_slice(chunk.as_ref());
        }
        Ok(Some(body))
    }
}

impl BodyStash for DynamoBodyStash {
    async fn stash_body(
        &self,
        event_id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<StashedBody, DedupError> {
        if body.len() > MAX_STASHED_BODY_BYTES {
            return Err(DedupError::BodyTooLarge);
        }
        let stashed = StashedBody::describe(event_id, body);
        let expires_at = now + self.ttl.as_secs();
        let mut items = Vec::with_capacity(stashed.chunks);
        for (index, chunk) in body.chunks(BODY_CHUNK_BYTES).enumerate() {
            let put = Put::builder()
                .table_name(&self.table.name)
                .item(KEY, s(&stashed.chunk_key(index)))
                .item(BODY, AttributeValue::B(Blob::new(chunk)))
                .item(EXPIRES_AT, n(expires_at))
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        // One transaction: the processor never sees half a body. No condition is needed: the keys are
        // the body's hash, so a put can only ever write the bytes already there.
        self.table
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(stashed)
    }

    async fn fetch_body(&self, stashed: &StashedBody) -> Result<Vec<u8>, DedupError> {
        if let Some(body) = self.read_chunks(stashed, StashedBody::chunk_key).await? {
            return stashed.check(body);
        }
        // A message queued before bodies were keyed by their hash names the same fields, but its
        // chunks are under the event id. The checksum still decides whether those bytes are its own.
        match self
            .read_chunks(stashed, StashedBody::legacy_chunk_key)
            .await?
        {
            Some(body) => stashed.check(body),
            None => Err(DedupError::CorruptBody),
        }
    }
}
