//! The billing table on DynamoDB: each event's changes and marker in one `TransactWriteItems`.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, Put, TransactWriteItem, Update},
    Client,
};

use super::{
    apply_with, attr,
    feed::{self, FeedEntry, FeedRange},
    Applied, Attributes, BillingError, BillingStore, Change, EventMarker, Guard, Key, NotifyClaim,
    Op, Value, Write,
};
use crate::signature::unix_now;

/// Attempts of one transaction that loses to a concurrent one before the message is failed.
const CONFLICT_ATTEMPTS: u64 = 4;

/// The billing table on DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoBillingStore {
    client: Client,
    table: String,
    notify_lease_secs: i64,
    /// How long markers and notification records live (the table's TTL); `None`: for ever.
    retention_secs: Option<i64>,
}

impl DynamoBillingStore {
    /// The store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            notify_lease_secs: super::NOTIFY_LEASE_SECS,
            retention_secs: None,
        }
    }

    /// Event markers and notification records expire `secs` after they are written (the table's TTL
    /// attribute, as feed records): see [`crate::config::DEFAULT_EVENT_MARKER_RETENTION_SECS`].
    pub fn with_marker_retention(mut self, secs: Option<i64>) -> Self {
        self.retention_secs = secs;
        self
    }

    fn expires_at(&self, now: i64) -> Option<i64> {
        self.retention_secs.map(|secs| now.saturating_add(secs))
    }

    /// With notification claims leased for `secs` instead of [`super::NOTIFY_LEASE_SECS`]: for a
    /// harness that compresses time (a 3 s visibility timeout must keep the deployed relation
    /// "visibility timeout > lease", or a message whose claim holder died burns its receives waiting
    /// for the lease and is dead-lettered with its notification unsent).
    pub fn with_notify_lease(mut self, secs: i64) -> Self {
        self.notify_lease_secs = secs;
        self
    }
}

/// Where the next page of a feed partition starts (DynamoDB's `LastEvaluatedKey`); opaque.
#[derive(Debug, Clone)]
pub struct FeedPageToken(HashMap<String, AttributeValue>);

impl DynamoBillingStore {
    /// One page of the feed index's `partition`, newest first, within `range`, from `page` on (the
    /// token the previous page returned; `None` for the first), and the token of the next page if
    /// there is one. Entries without a record are left out. (The index is eventually consistent: an
    /// event processed a moment ago may not be in it yet.)
    pub async fn feed_page(
        &self,
        partition: &str,
        range: FeedRange<'_>,
        page: Option<FeedPageToken>,
    ) -> Result<(Vec<FeedEntry>, Option<FeedPageToken>), BillingError> {
        let mut condition = format!("{} = :p", feed::PARTITION);
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(feed::INDEX)
            .scan_index_forward(false)
            .expression_attribute_values(":p", AttributeValue::S(partition.to_owned()))
            .set_exclusive_start_key(page.map(|token| token.0));
        match range {
            FeedRange::All => {}
            FeedRange::Before(sort) => {
                condition.push_str(&format!(" AND {} < :sort", feed::SORT));
                query =
                    query.expression_attribute_values(":sort", AttributeValue::S(sort.to_owned()));
            }
            FeedRange::From(sort) => {
                condition.push_str(&format!(" AND {} >= :sort", feed::SORT));
                query =
                    query.expression_attribute_values(":sort", AttributeValue::S(sort.to_owned()));
            }
        }
        let output = query
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(unavailable)?;
        let entries = output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| FeedEntry::from_attributes(&from_item(item)))
            .collect();
        Ok((entries, output.last_evaluated_key.map(FeedPageToken)))
    }
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(error: E) -> BillingError {
    BillingError::Unavailable(Box::new(error))
}

fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::S(s) => AttributeValue::S(s.clone()),
        Value::N(n) => AttributeValue::N(n.to_string()),
        Value::Bool(b) => AttributeValue::Bool(*b),
    }
}

/// An item's attributes as [`Attributes`] (keys and attributes of other types left out).
fn from_item(item: HashMap<String, AttributeValue>) -> Attributes {
    item.into_iter()
        .filter(|(k, _)| k != attr::PK && k != attr::SK)
        .filter_map(|(k, v)| {
            let value = match v {
                AttributeValue::S(s) => Value::S(s),
                AttributeValue::N(n) => Value::N(n.parse().ok()?),
                AttributeValue::Bool(b) => Value::Bool(b),
                _ => return None,
            };
            Some((k, value))
        })
        .collect()
}

fn key_map(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (attr::PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (attr::SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

/// Placeholders for one transaction item's expressions.
#[derive(Default)]
struct Expression {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn name(&mut self, name: &str) -> String {
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), name.to_owned());
        placeholder
    }
    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }
    fn condition(&mut self, guards: &[Guard]) -> Option<String> {
        let clauses: Vec<String> = guards
            .iter()
            .map(|guard| match guard {
                Guard::Absent => format!("attribute_not_exists({})", self.name(attr::PK)),
                Guard::Newer(version) => {
                    let n = self.name(attr::VERSION);
                    let v = self.value(AttributeValue::S(version.as_str().to_owned()));
                    format!("(attribute_not_exists({n}) OR {n} < {v})")
                }
                Guard::Below(name, value) => {
                    let n = self.name(name);
                    let v = self.value(AttributeValue::N(value.to_string()));
                    format!("(attribute_not_exists({n}) OR {n} < {v})")
                }
                Guard::Unset(name) => format!("attribute_not_exists({})", self.name(name)),
                Guard::Equals(name, value) => {
                    let n = self.name(name);
                    let v = self.value(to_attribute(value));
                    format!("{n} = {v}")
                }
                Guard::NotIn(name, values) => {
                    let n = self.name(name);
                    let vs: Vec<String> = values
                        .iter()
                        .map(|v| self.value(AttributeValue::S((*v).to_owned())))
                        .collect();
                    format!(
                        "(attribute_not_exists({n}) OR NOT ({n} IN ({})))",
                        vs.join(", ")
                    )
                }
            })
            .collect();
        (!clauses.is_empty()).then(|| clauses.join(" AND "))
    }
}

impl DynamoBillingStore {
    fn transact_item(&self, write: &super::Write) -> Result<TransactWriteItem, BillingError> {
        let mut expression = Expression::default();
        let condition = expression.condition(&write.guards);
        match &write.op {
            Op::Put(attributes) => {
                let mut item = key_map(&write.key);
                item.extend(attributes.iter().map(|(k, v)| (k.clone(), to_attribute(v))));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(
                        (!expression.names.is_empty()).then_some(expression.names),
                    )
                    .set_expression_attribute_values(
                        (!expression.values.is_empty()).then_some(expression.values),
                    )
                    .build()
                    .map_err(unavailable)?;
                Ok(TransactWriteItem::builder().put(put).build())
            }
            Op::Set(attributes) => {
                let sets: Vec<String> = attributes
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{} = {}",
                            expression.name(k),
                            expression.value(to_attribute(v))
                        )
                    })
                    .collect();
                self.update(
                    write,
                    format!("SET {}", sets.join(", ")),
                    condition,
                    expression,
                )
            }
            Op::Add(deltas) => {
                let adds: Vec<String> = deltas
                    .iter()
                    .map(|(k, delta)| {
                        format!(
                            "{} {}",
                            expression.name(k),
                            expression.value(AttributeValue::N(delta.to_string()))
                        )
                    })
                    .collect();
                self.update(
                    write,
                    format!("ADD {}", adds.join(", ")),
                    condition,
                    expression,
                )
            }
        }
    }

    fn update(
        &self,
        write: &super::Write,
        update_expression: String,
        condition: Option<String>,
        expression: Expression,
    ) -> Result<TransactWriteItem, BillingError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key_map(&write.key)))
            .update_expression(update_expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(expression.names))
            .set_expression_attribute_values(Some(expression.values))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// The attribute of a marker written alone: which attempt wrote it (see [`DynamoBillingStore::put_marker`]).
const APPLY_TOKEN: &str = "apply_token";

impl DynamoBillingStore {
    /// Writes an event's marker when it is all the event changes: one conditional `PutItem` (1 WRU
    /// under 1 KB) instead of a transaction of one item (2 WRU). The put carries a token of this
    /// attempt, so when the SDK retries a put that had landed (the answer lost), the retry finds its
    /// own marker and reports it applied now, not a duplicate.
    async fn put_marker(&self, marker: Write) -> Result<Applied, BillingError> {
        let Op::Put(attributes) = &marker.op else {
            unreachable!("a marker is a put");
        };
        let token = format!("{:032x}", fastrand::u128(..));
        let mut item = key_map(&marker.key);
        item.extend(attributes.iter().map(|(k, v)| (k.clone(), to_attribute(v))));
        item.insert(APPLY_TOKEN.to_owned(), AttributeValue::S(token.clone()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #token = :token")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#token", APPLY_TOKEN)
            .expression_attribute_values(":token", AttributeValue::S(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Applied::Now {
                skipped: Vec::new(),
            }),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(Applied::Before)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}

impl BillingStore for DynamoBillingStore {
    async fn apply(
        &self,
        marker: &EventMarker,
        changes: Vec<Change>,
    ) -> Result<Applied, BillingError> {
        let now = unix_now() as i64;
        let marker = marker.write(now, self.expires_at(now));
        if changes.is_empty() {
            return self.put_marker(marker).await;
        }
        apply_with(marker, changes, |writes| async move {
            let items = writes
                .iter()
                .map(|w| self.transact_item(w))
                .collect::<Result<Vec<_>, _>>()?;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let result = self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(items.clone()))
                    .send()
                    .await;
                let Err(error) = result else {
                    return Ok(Vec::new());
                };
                let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                    error.as_service_error()
                else {
                    return Err(unavailable(error));
                };
                let reasons = cancelled.cancellation_reasons();
                let failed: Vec<usize> = reasons
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                    .map(|(i, _)| i)
                    .collect();
                if !failed.is_empty() {
                    return Ok(failed);
                }
                // Another transaction on the same items (the same event twice in one batch, or two
                // events of one customer) won the race; nothing was written. Try again shortly; after
                // that, fail the message and let SQS retry it.
                let conflict = reasons
                    .iter()
                    .any(|r| r.code() == Some("TransactionConflict"));
                if !conflict || attempt >= CONFLICT_ATTEMPTS {
                    return Err(unavailable(error));
                }
                let backoff = 20 * attempt + fastrand::u64(..30);
                tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
            }
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<Option<Attributes>, BillingError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item.map(from_item))
    }

    async fn query(&self, pk: &str) -> Result<Vec<(String, Attributes)>, BillingError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items.unwrap_or_default() {
                let sk = item
                    .get(attr::SK)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default();
                items.push((sk, from_item(item)));
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    async fn claim_notification(
        &self,
        event_id: &str,
        channel: &str,
        token: &str,
        now: i64,
    ) -> Result<NotifyClaim, BillingError> {
        let mut item = key_map(&Key::notification(event_id, channel));
        item.insert("status".to_owned(), AttributeValue::S("sending".to_owned()));
        item.insert(
            "claim_token".to_owned(),
            AttributeValue::S(token.to_owned()),
        );
        item.insert(
            "lease_until".to_owned(),
            AttributeValue::N((now + self.notify_lease_secs).to_string()),
        );
        if let Some(expires_at) = self.expires_at(now) {
            item.insert(
                super::attr::EXPIRES_AT.to_owned(),
                AttributeValue::N(expires_at.to_string()),
            );
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // Free: never claimed, our own claim (the SDK retried a put that had landed), or a
            // sending claim whose holder's lease ran out.
            .condition_expression(
                "attribute_not_exists(#pk) OR #token = :token \
                 OR (#status = :sending AND #lease < :now)",
            )
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#token", "claim_token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#lease", "lease_until")
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()))
            .expression_attribute_values(":sending", AttributeValue::S("sending".to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        let Err(error) = result else {
            return Ok(NotifyClaim::Claimed);
        };
        let Some(
            aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                failed,
            ),
        ) = error.as_service_error()
        else {
            return Err(unavailable(error));
        };
        let sent = failed
            .item()
            .and_then(|i| i.get("status"))
            .and_then(|v| v.as_s().ok())
            .is_some_and(|s| s == "sent");
        Ok(if sent {
            NotifyClaim::AlreadySent
        } else {
            NotifyClaim::HeldElsewhere
        })
    }

    async fn finish_notification(
        &self,
        event_id: &str,
        channel: &str,
        sent: bool,
    ) -> Result<(), BillingError> {
        let key = key_map(&Key::notification(event_id, channel));
        if sent {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .update_expression("SET #status = :sent REMOVE #lease, #token")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#lease", "lease_until")
                .expression_attribute_names("#token", "claim_token")
                .expression_attribute_values(":sent", AttributeValue::S("sent".to_owned()))
                .send()
                .await
                .map_err(unavailable)?;
        } else {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
