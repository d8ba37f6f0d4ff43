//! Deliveries dropped as duplicates, counted per hour in the dedup table under `#duplicates#<hour>`
//! (never an event id), for people: the console's "deduplicated today". Both the receiver (a
//! redelivery it answers 200 without enqueueing) and the processor (a copy that raced past the
//! receiver, or came in by the other ingress) count into the same items.

use std::{collections::HashMap, future::Future, time::Duration};

use aws_sdk_dynamodb::{types::AttributeValue, Client};

use super::{
    dynamo::{n, s, unavailable, Table, EXPIRES_AT, KEY},
    DedupError,
};

/// The count of a duplicate counter item.
const DUPLICATES: &str = "duplicates";

/// The duplicate counters of the dedup table.
pub trait DuplicateCounter: Send + Sync {
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
pub(super) fn counter_keys(from: u64, to: u64) -> Vec<String> {
    (from.div_ceil(3600)..to.div_ceil(3600))
        .map(|hour| duplicate_counter_key(hour * 3600))
        .collect()
}

/// The counters on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoDuplicateCounter {
    table: Table,
    ttl: Duration,
}

impl DynamoDuplicateCounter {
    /// The counters in `table`, each hour's kept for `ttl` (the dedup TTL, as event ids are kept).
    pub fn new(client: Client, table: impl Into<String>, ttl: Duration) -> Self {
        Self {
            table: Table::new(client, table),
            ttl,
        }
    }
}

impl DuplicateCounter for DynamoDuplicateCounter {
    async fn count_duplicate(&self, now: u64) -> Result<(), DedupError> {
        self.table
            .client
            .update_item()
            .table_name(&self.table.name)
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
                .table
                .client
                .batch_get_item()
                .request_items(&self.table.name, request)
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
                .remove(&self.table.name)
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
