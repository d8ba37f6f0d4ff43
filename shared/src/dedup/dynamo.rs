//! The dedup table on DynamoDB: one item per event id, claimed with a conditional put; and the handle
//! that the stash and the counters share.

use std::{collections::HashMap, time::Duration};

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError,
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
    Client,
};

use super::{
    blocked_by, is_free, BodyStash, Claim, ClaimStatus, ClaimStore, ClaimToken, DedupError,
    DedupRecord, DuplicateCounter, DynamoBodyStash, DynamoDuplicateCounter, StashedBody,
};

/// Attribute names, as `template.yaml` declares the key and TTL.
pub(super) const KEY: &str = "event_id";
pub(super) const EXPIRES_AT: &str = "expires_at";
const STATUS: &str = "status";
const LEASE_UNTIL: &str = "lease_until";
const CLAIM_TOKEN: &str = "claim_token";
const EVENT_TYPE: &str = "event_type";
const FIRST_CLAIMED_AT: &str = "claimed_at";
const ENQUEUED_AT: &str = "enqueued_at";

/// The dedup table: its client and name, shared by the claims, the stash and the counters.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) client: Client,
    pub(super) name: String,
}

impl Table {
    pub(super) fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub(super) async fn consistent_get(&self, key: String) -> Result<Option<Item>, DedupError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(KEY, AttributeValue::S(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }
}

/// The whole dedup table on DynamoDB, as the receiver uses it: claims, and through the same handle the
/// stash and the duplicate counters, all kept for the configured TTL.
#[derive(Debug, Clone)]
pub struct DynamoDedupStore {
    table: Table,
    ttl: Duration,
    lease: Duration,
    bodies: DynamoBodyStash,
    duplicates: DynamoDuplicateCounter,
}

impl DynamoDedupStore {
    /// A store on `table`, remembering events (and their stashed bodies and duplicate counts) for
    /// `ttl` and letting a claim block others for `lease`.
    pub fn new(client: Client, table: impl Into<String>, ttl: Duration, lease: Duration) -> Self {
        let table = Table::new(client, table);
        Self {
            bodies: DynamoBodyStash::new(table.client.clone(), &table.name, ttl),
            duplicates: DynamoDuplicateCounter::new(table.client.clone(), &table.name, ttl),
            table,
            ttl,
            lease,
        }
    }

    /// A store for [`ClaimStore::lookup`] and other reads (the CLI's `status`), which never write:
    /// TTL and lease are the defaults and unused. A writer is built with [`Self::new`].
    pub fn for_reading(client: Client, table: impl Into<String>) -> Self {
        use crate::config::{DEFAULT_DEDUP_LEASE_SECS, DEFAULT_DEDUP_TTL_SECS};
        Self::new(
            client,
            table,
            Duration::from_secs(DEFAULT_DEDUP_TTL_SECS),
            Duration::from_secs(DEFAULT_DEDUP_LEASE_SECS),
        )
    }
}

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> DedupError {
    DedupError::Unavailable(Box::new(error))
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn s(value: &str) -> AttributeValue {
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

impl ClaimStore for DynamoDedupStore {
    async fn claim(&self, event_id: &str, event_type: &str, now: u64) -> Result<Claim, DedupError> {
        let token = ClaimToken::random();
        let result = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
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
            None => self.table.consistent_get(event_id.to_owned()).await?,
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
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
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
            .table
            .client
            .delete_item()
            .table_name(&self.table.name)
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
        self.table
            .consistent_get(event_id.to_owned())
            .await?
            .map(|item| read_record(&item))
            .transpose()
    }
}

impl BodyStash for DynamoDedupStore {
    async fn stash_body(
        &self,
        event_id: &str,
        body: &[u8],
        now: u64,
    ) -> Result<StashedBody, DedupError> {
        self.bodies.stash_body(event_id, body, now).await
    }

    async fn fetch_body(&self, stashed: &StashedBody) -> Result<Vec<u8>, DedupError> {
        self.bodies.fetch_body(stashed).await
    }
}

impl DuplicateCounter for DynamoDedupStore {
    async fn count_duplicate(&self, now: u64) -> Result<(), DedupError> {
        self.duplicates.count_duplicate(now).await
    }

    async fn duplicates_between(&self, from: u64, to: u64) -> Result<u64, DedupError> {
        self.duplicates.duplicates_between(from, to).await
    }
}
