//! The dedup table on DynamoDB: one item per event id, claimed with a conditional put.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError,
    primitives::Blob,
    types::{AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem},
    Client,
};

use super::{
    blocked_by, counter_keys, duplicate_counter_key, is_free, Claim, ClaimStatus, ClaimToken,
    DedupError, DedupRecord, DedupStore, StashedBody, BODY_CHUNK_BYTES, MAX_STASHED_BODY_BYTES,
};

/// Attribute names, as `template.yaml` declares the key and TTL.
const KEY: &str = "event_id";
const EXPIRES_AT: &str = "expires_at";
const STATUS: &str = "status";
const LEASE_UNTIL: &str = "lease_until";
const CLAIM_TOKEN: &str = "claim_token";
const EVENT_TYPE: &str = "event_type";
const FIRST_CLAIMED_AT: &str = "claimed_at";
const ENQUEUED_AT: &str = "enqueued_at";
const BODY: &str = "body";
/// The count of a duplicate counter item.
const DUPLICATES: &str = "duplicates";

/// The dedup table on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoDedupStore {
    client: Client,
    table: String,
    ttl: Duration,
    lease: Duration,
}

impl DynamoDedupStore {
    /// A store on `table`, remembering events for `ttl` and letting a claim block others for `lease`.
    pub fn new(client: Client, table: impl Into<String>, ttl: Duration, lease: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            ttl,
            lease,
        }
    }

    /// A store for a reader of stashed bodies (the processor), which never claims: TTL and lease
    /// are those of the defaults and unused.
    pub fn for_reading(client: Client, table: impl Into<String>) -> Self {
        use crate::config::{DEFAULT_DEDUP_LEASE_SECS, DEFAULT_DEDUP_TTL_SECS};
        Self::new(
            client,
            table,
            Duration::from_secs(DEFAULT_DEDUP_TTL_SECS),
            Duration::from_secs(DEFAULT_DEDUP_LEASE_SECS),
        )
    }

    async fn consistent_get(&self, key: String) -> Result<Option<Item>, DedupError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }
}

type Item = HashMap<String, AttributeValue>;

impl DynamoDedupStore {
    /// The chunks of a stashed body under the keys `key` names, concatenated; `None` if the first is
    /// absent (nothing stashed under that naming).
    async fn read_chunks(
        &self,
        stashed: &StashedBody,
        key: fn(&StashedBody, usize) -> String,
    ) -> Result<Option<Vec<u8>>, DedupError> {
        let mut body = Vec::with_capacity(stashed.bytes);
        for index in 0..stashed.chunks {
            let Some(item) = self.consistent_get(key(stashed, index)).await? else {
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

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> DedupError {
    DedupError::Unavailable(Box::new(error))
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn read_n(item: &Item, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn read_record(item: &Item) -> Result<DedupRecord, DedupError> {
    let status = item
        .get(STATUS)
        .and_then(|v| v.as_s().ok())
        .and_then(|v| ClaimStatus::parse(v))
        .ok_or(DedupError::MalformedItem)?;
    Ok(DedupRecord {
        status,
        event_type: item
            .get(EVENT_TYPE)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default(),
        expires_at: read_n(item, EXPIRES_AT).ok_or(DedupError::MalformedItem)?,
        lease_until: read_n(item, LEASE_UNTIL),
    })
}

impl DedupStore for DynamoDedupStore {
    async fn claim(&self, event_id: &str, event_type: &str, now: u64) -> Result<Claim, DedupError> {
        let token = ClaimToken::random();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, s(event_id))
            .item(STATUS, s(ClaimStatus::Pending.as_str()))
            .item(CLAIM_TOKEN, s(&token.0))
            .item(EVENT_TYPE, s(event_type))
            .item(LEASE_UNTIL, n(now + self.lease.as_secs()))
            .item(EXPIRES_AT, n(now + self.ttl.as_secs()))
            .item(FIRST_CLAIMED_AT, n(now))
            // Free means: never seen, expired but not yet swept by TTL, or a pending claim whose holder
            // died (lease over). Mirrors `is_free`.
            .condition_expression(
                "attribute_not_exists(#key) OR #expires < :now \
                 OR (#status = :pending AND #lease < :now)",
            )
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#lease", LEASE_UNTIL)
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":pending", s(ClaimStatus::Pending.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let Err(error) = result else {
            return Ok(Claim::New(token));
        };
        let Some(PutItemError::ConditionalCheckFailedException(failed)) = error.as_service_error()
        else {
            return Err(unavailable(error));
        };
        // The blocking item comes back with the failure; if this DynamoDB does not return it, read it.
        let item = match failed.item() {
            Some(item) => Some(item.clone()),
            None => self.consistent_get(event_id.to_owned()).await?,
        };
        match item {
            // Our own write: an attempt whose put was applied but whose answer was lost or late (the
            // SDK's attempt timeout), retried by the SDK with the same item and so the same token.
            // Only this request carries that token; calling it InFlight would answer Stripe 409 and
            // leave the event pending until the lease ends.
            Some(item)
                if item.get(CLAIM_TOKEN).and_then(|v| v.as_s().ok()) == Some(&token.0)
                    && read_record(&item)?.status == ClaimStatus::Pending =>
            {
                Ok(Claim::New(token))
            }
            Some(item) => {
                let record = read_record(&item)?;
                // The item changed between the put and the read so that it is free now: let Stripe retry.
                if is_free(&record, now) {
                    return Ok(Claim::InFlight);
                }
                Ok(blocked_by(&record))
            }
            // Deleted (released) between the put and the read: someone else is mid-flight.
            None => Ok(Claim::InFlight),
        }
    }

    async fn mark_enqueued(
        &self,
        event_id: &str,
        token: &ClaimToken,
        now: u64,
    ) -> Result<bool, DedupError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(event_id))
            .update_expression("SET #status = :enqueued, #enqueued_at = :now REMOVE #lease")
            .condition_expression("#token = :token")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#enqueued_at", ENQUEUED_AT)
            .expression_attribute_names("#lease", LEASE_UNTIL)
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_values(":enqueued", s(ClaimStatus::Enqueued.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":token", s(&token.0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release(&self, event_id: &str, token: &ClaimToken) -> Result<(), DedupError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, s(event_id))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", CLAIM_TOKEN)
            .expression_attribute_values(":token", s(&token.0))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else holds it now: theirs to finish.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lookup(&self, event_id: &str) -> Result<Option<DedupRecord>, DedupError> {
        self.consistent_get(event_id.to_owned())
            .await?
            .map(|item| read_record(&item))
            .transpose()
    }

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
                .table_name(&self.table)
                .item(KEY, s(&stashed.chunk_key(index)))
                .item(BODY, AttributeValue::B(Blob::new(chunk)))
                .item(EXPIRES_AT, n(expires_at))
                .build()
                .map_err(unavailable)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        // One transaction: the processor never sees half a body. No condition is needed: the keys are
        // the body's hash, so a put can only ever write the bytes already there.
        self.client
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

    async fn count_duplicate(&self, now: u64) -> Result<(), DedupError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(&duplicate_counter_key(now)))
            .update_expression("ADD #count :one SET #expires = if_not_exists(#expires, :expires)")
            .expression_attribute_names("#count", DUPLICATES)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expires", n(now + self.ttl.as_secs()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn duplicates_between(&self, from: u64, to: u64) -> Result<u64, DedupError> {
        let mut total = 0;
        // At most 100 keys per BatchGetItem: 100 hours is four days, more than any day.
        for keys in counter_keys(from, to).chunks(100) {
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(
                    keys.iter()
                        .map(|key| HashMap::from([(KEY.to_owned(), s(key))]))
                        .collect(),
                ))
                .build()
                .map_err(unavailable)?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(unavailable)?;
            if output
                .unprocessed_keys
                .as_ref()
                .is_some_and(|u| !u.is_empty())
            {
                return Err(DedupError::Unavailable(
                    "BatchGetItem left keys unprocessed".into(),
                ));
            }
            for item in output
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                if let Some(AttributeValue::N(count)) = item.get(DUPLICATES) {
                    total += count
                        .parse::<u64>()
                        .map_err(|_| DedupError::MalformedItem)?;
                }
            }
        }
        Ok(total)
    }
}
