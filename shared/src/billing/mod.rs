//! Billing state: what the processor's handlers write, and the small read API an application uses
//! ([`entitlement`], [`credit_balance`], [`subscription`], [`payment`], [`order`], [`invoice`]).
//!
//! # Exactly once
//! A handler does not write; it plans [`Change`]s. [`BillingStore::apply`] commits them in one DynamoDB
//! transaction together with a per-event marker (`EVENT#<id>`, put only if absent; an event that
//! changes nothing is its marker alone, one conditional put). A redelivered
//! message finds the marker and changes nothing, so credits cannot be granted twice nor a refund
//! reversed twice.
//!
//! # In order, whatever order events arrive in
//! Every object item carries the [`Version`] of the event that last wrote it: `(created, rank, event
//! id)`, compared as one fixed-width string. A write guarded by [`Guard::Newer`] only lands if the item
//! is older; otherwise its [`Change`] is dropped (the event is still marked applied: it is recorded, it
//! just does not roll state back). Within one second, `rank` orders an object's lifecycle (created <
//! updated < deleted) and the event id breaks remaining ties, so every replica of a history ends in the
//! same state. Access periods only grow ([`Guard::Below`], a max that commutes) and credits are sums
//! guarded by one grant record per payment, so neither depends on order at all.
//!
//! # Table layout (single table, `pk` + `sk`)
//! | pk | sk | holds |
//! | --- | --- | --- |
//! | `CUSTOMER#<cus>` | `SUB#<sub>` | plan, period end, cancel_at_period_end, version |
//! | `CUSTOMER#<cus>` | `SUB#<sub>#STATUS` | status, version (also set by a paid checkout; never by invoices) |
//! | `CUSTOMER#<cus>` | `SUB#<sub>#PAID` | `paid_until`: latest period end a paid invoice of this subscription covers |
//! | `CUSTOMER#<cus>` | `CREDITS` | `balance` |
//! | `CUSTOMER#<cus>` | `INVOICE#<in>` | amount due/paid, due date, hosted URL, status, version |
//! | `PAYMENT#<pi>` | `PAYMENT` | amount, status, decline reason, customer, version |
//! | `PAYMENT#<pi>` | `REFUND` | `refunded` once a charge of the payment is fully refunded |
//! | `ORDER#<order_id>` | `ORDER` | `paid`, the payment, amount |
//! | `GRANT#<pi or cs>` | `GRANT` | credits a payment granted, `reversed` once refunded |
//! | `CHARGE#<ch>` / `DISPUTE#<dp>` | same | the record, version |
//! | `EVENT#<evt>` | `EVENT` | the exactly-once marker, carrying the event's feed record ([`feed`]) |
//! | `EVENT#<evt>` | `NOTIFY#<channel>` | a notification sent for the event |

mod dynamo;
pub mod feed;
#[cfg(any(test, feature = "test-util"))]
mod memory;

pub use dynamo::{DynamoBillingStore, FeedPageToken};
#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryBillingStore;

use std::{collections::BTreeMap, future::Future};

use crate::money::Money;

/// Attribute names shared by the store implementations and the read API.
pub mod attr {
    /// Partition key.
    pub const PK: &str = "pk";
    /// Sort key.
    pub const SK: &str = "sk";
    /// The [`super::Version`] of the event that last wrote an object item.
    pub const VERSION: &str = "version";
    /// The table's TTL attribute (epoch seconds), as in the dedup table: on markers (with their feed
    /// records), notification records and dispute entries; never on billing state.
    pub const EXPIRES_AT: &str = "expires_at";
}

/// A value of an item attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    S(String),
    /// An integer.
    N(i64),
    /// A boolean.
    Bool(bool),
}

/// An item's attributes (keys excluded).
pub type Attributes = BTreeMap<String, Value>;

/// Builds [`Attributes`] from pairs, skipping `None`s.
pub fn attributes<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Attributes {
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect()
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::S(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::S(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::N(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// Reads typed values out of [`Attributes`].
pub trait AttributesExt {
    /// A string attribute.
    fn s(&self, name: &str) -> Option<&str>;
    /// A number attribute.
    fn n(&self, name: &str) -> Option<i64>;
    /// A boolean attribute (absent is false).
    fn flag(&self, name: &str) -> bool;
}

impl AttributesExt for Attributes {
    fn s(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::S(s) => Some(s),
            _ => None,
        }
    }
    fn n(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            Value::N(n) => Some(*n),
            _ => None,
        }
    }
    fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }
}

/// An item's primary key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Partition key.
    pub pk: String,
    /// Sort key.
    pub sk: String,
}

impl Key {
    /// A key from its parts.
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
    /// `CUSTOMER#<id>` / `sk`.
    pub fn customer(customer: &str, sk: impl Into<String>) -> Self {
        Self::new(format!("CUSTOMER#{customer}"), sk)
    }
    /// An object's own item: `<KIND>#<id>` / `<KIND>`.
    pub fn object(kind: &str, id: &str) -> Self {
        Self::new(format!("{kind}#{id}"), kind)
    }
    /// The full-refund record of a PaymentIntent, beside its payment record (`PAYMENT#<pi>` / `REFUND`).
    pub fn payment_refund(payment_intent: &str) -> Self {
        Self::new(Self::object("PAYMENT", payment_intent).pk, "REFUND")
    }
    /// The exactly-once marker of an event.
    pub fn event_marker(event_id: &str) -> Self {
        Self::new(format!("EVENT#{event_id}"), "EVENT")
    }
    /// The record of a notification sent for an event on a channel.
    pub fn notification(event_id: &str, channel: &str) -> Self {
        Self::new(format!("EVENT#{event_id}"), format!("NOTIFY#{channel}"))
    }
}

/// The position of an event in an object's history: `created`, then `rank` (lifecycle order within a
/// second), then the event id. Encoded fixed-width so DynamoDB can compare it as a string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    /// The version of an event. `created` is clamped to `0..10^12` (Stripe's are ~1.7·10^9).
    pub fn new(created: i64, rank: u8, event_id: &str) -> Self {
        Self(format!(
            "{:012}:{rank}:{event_id}",
            created.clamp(0, 999_999_999_999)
        ))
    }
    /// As stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A condition on an item, all of which must hold for a [`Write`] to land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The item does not exist.
    Absent,
    /// The item is absent or was last written by an older event.
    Newer(Version),
    /// The attribute is absent or below the value (a max that commutes).
    Below(&'static str, i64),
    /// The attribute is absent.
    Unset(&'static str),
    /// The attribute equals the value.
    Equals(&'static str, Value),
    /// The attribute is absent or a string other than these.
    NotIn(&'static str, &'static [&'static str]),
}

/// What a write does to its item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Replace the whole item.
    Put(Attributes),
    /// Set these attributes, creating the item if needed.
    Set(Attributes),
    /// Add to numeric attributes (absent counts as 0), creating the item if needed.
    Add(Vec<(&'static str, i64)>),
}

/// One item write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The item.
    pub key: Key,
    /// The write.
    pub op: Op,
    /// Conditions, all required.
    pub guards: Vec<Guard>,
}

/// What to do when a change's guards do not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Drop the change: the state already reflects something newer (an out-of-order event).
    Skip,
    /// Fail the message so it is retried: the plan was made from a read that is now stale.
    Retry,
}

/// Writes that land together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What it is, for logs (`subscription`, `credits.grant`, ...).
    pub what: &'static str,
    /// The writes.
    pub writes: Vec<Write>,
    /// When a guard fails.
    pub on_conflict: OnConflict,
    /// With `Skip`: what to try instead when a guard fails (e.g. a grant arriving after its refund).
    pub fallback: Option<Box<Change>>,
}

impl Change {
    /// A change whose writes are dropped (as out of date) when a guard fails.
    pub fn skippable(what: &'static str, writes: Vec<Write>) -> Self {
        Self {
            what,
            writes,
            on_conflict: OnConflict::Skip,
            fallback: None,
        }
    }

    /// A change planned from a read: if a guard fails, the message is retried and re-planned.
    pub fn retryable(what: &'static str, writes: Vec<Write>) -> Self {
        Self {
            what,
            writes,
            on_conflict: OnConflict::Retry,
            fallback: None,
        }
    }

    /// This change, or `fallback` when its guards fail.
    pub fn or_else(self, fallback: Change) -> Self {
        Self {
            fallback: Some(Box::new(fallback)),
            ..self
        }
    }
}

/// The exactly-once marker of one event (`EVENT#<id>` / `EVENT`), and what it records beside itself.
///
/// The marker carries the event's feed record ([`feed::FeedRecord::marker_attributes`]), so the
/// one item that makes an event's effects exactly-once is also what the console lists: one write per
/// event instead of two, and the feed shows an event exactly when its effects are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMarker {
    /// `evt_...`
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Further attributes of the marker item. The marker's own (`event_type`, `applied_at`,
    /// `expires_at`) win over any of the same name.
    pub record: Attributes,
}

impl EventMarker {
    /// The marker of an event, recording nothing else.
    pub fn new(event_id: impl Into<String>, event_type: impl Into<String>) -> Self {
        Self {
            event_id: event_id.into(),
            event_type: event_type.into(),
            record: Attributes::new(),
        }
    }

    /// This marker, also carrying `record`'s attributes.
    pub fn recording(mut self, record: Attributes) -> Self {
        self.record = record;
        self
    }

    /// The marker's write at `now`, expiring at `expires_at` (`None`: kept for ever).
    fn write(&self, now: i64, expires_at: Option<i64>) -> Write {
        let mut item = self.record.clone();
        item.extend(attributes([
            ("event_type", Some(self.event_type.as_str().into())),
            ("applied_at", Some(now.into())),
            (attr::EXPIRES_AT, expires_at.map(Into::into)),
        ]));
        if expires_at.is_none() {
            // A record's own expiry must not make the marker mortal.
            item.remove(attr::EXPIRES_AT);
        }
        Write {
            key: Key::event_marker(&self.event_id),
            op: Op::Put(item),
            guards: vec![Guard::Absent],
        }
    }
}

/// The result of applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Committed with its marker; `skipped` names the changes dropped as out of date.
    Now {
        /// Dropped changes.
        skipped: Vec<&'static str>,
    },
    /// The marker was already there: applied by an earlier delivery, nothing written.
    Before,
}

/// The billing table failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// DynamoDB failed or could not be reached.
    #[error("billing table unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A change planned from a read lost a race; retrying re-plans it.
    #[error("concurrent change to {0}; retry")]
    Conflict(&'static str),
    /// More writes than one transaction holds.
    #[error("too many writes for one transaction")]
    TooManyWrites,
    /// Two writes of one event touch the same item, which a DynamoDB transaction refuses.
    #[error("{0} writes an item another change of the event also writes")]
    SameItemTwice(&'static str),
}

/// DynamoDB allows 100 items per transaction; one is the marker.
pub const MAX_WRITES_PER_EVENT: usize = 99;

/// The billing table.
pub trait BillingStore: Send + Sync {
    /// Commits `changes` with the event's `marker` in one transaction (with no changes, the marker
    /// alone in one conditional write), dropping `Skip` changes whose guards fail; `Before` if the
    /// marker exists.
    fn apply(
        &self,
        marker: &EventMarker,
        changes: Vec<Change>,
    ) -> impl Future<Output = Result<Applied, BillingError>> + Send;

    /// One item (strongly consistent).
    fn get(
        &self,
        key: &Key,
    ) -> impl Future<Output = Result<Option<Attributes>, BillingError>> + Send;

    /// Every item of a partition, by sort key (strongly consistent).
    fn query(
        &self,
        pk: &str,
    ) -> impl Future<Output = Result<Vec<(String, Attributes)>, BillingError>> + Send;

    /// Claims the sending of a notification for one delivery (`token` identifies it, so a retried
    /// request recognises its own claim).
    fn claim_notification(
        &self,
        event_id: &str,
        channel: &str,
        token: &str,
        now: i64,
    ) -> impl Future<Output = Result<NotifyClaim, BillingError>> + Send;

    /// Ends a claim: records the notification as sent, or (`sent == false`) gives the claim up so the
    /// retried message can send it.
    fn finish_notification(
        &self,
        event_id: &str,
        channel: &str,
        sent: bool,
    ) -> impl Future<Output = Result<(), BillingError>> + Send;
}

/// The result of claiming a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyClaim {
    /// This delivery sends it.
    Claimed,
    /// It was sent already.
    AlreadySent,
    /// Another delivery holds the claim (sending now, or it died and the lease has not run out). The
    /// message must fail so SQS brings it back: acknowledging it would lose the notification if that
    /// other delivery never sends.
    HeldElsewhere,
}

/// How long a notification claim blocks other deliveries of the same event: longer than a send (5 s
/// timeout), short enough that a crashed sender's message, retried by SQS, can send it. It must stay
/// below the event queue's visibility timeout (200 s in the template): a retry that finds the claim
/// held fails again, and each failure spends one of the message's receives before the DLQ.
pub const NOTIFY_LEASE_SECS: i64 = 30;

/// Runs the apply loop shared by both stores: try the marker plus every change; on a cancelled
/// transaction drop the `Skip` changes that failed and try again; fail on a `Retry` change.
/// `commit` returns the indices of writes whose guards failed (index 0 is the marker).
pub(crate) async fn apply_with<F, Fut>(
    marker: Write,
    mut changes: Vec<Change>,
    mut commit: F,
) -> Result<Applied, BillingError>
where
    F: FnMut(Vec<Write>) -> Fut,
    Fut: Future<Output = Result<Vec<usize>, BillingError>>,
{
    if changes.iter().map(|c| c.writes.len()).sum::<usize>() > MAX_WRITES_PER_EVENT {
        return Err(BillingError::TooManyWrites);
    }
    let mut skipped = Vec::new();
    loop {
        let mut writes = vec![marker.clone()];
        let mut owner = vec![usize::MAX];
        let mut keys = std::collections::BTreeSet::from([marker.key.clone()]);
        for (index, change) in changes.iter().enumerate() {
            for write in &change.writes {
                if !keys.insert(write.key.clone()) {
                    return Err(BillingError::SameItemTwice(change.what));
                }
            }
            writes.extend(change.writes.iter().cloned());
            owner.extend(std::iter::repeat_n(index, change.writes.len()));
        }
        let failed = commit(writes).await?;
        if failed.is_empty() {
            return Ok(Applied::Now { skipped });
        }
        if failed.contains(&0) {
            return Ok(Applied::Before);
        }
        let mut drop: Vec<usize> = failed.iter().map(|&i| owner[i]).collect();
        drop.sort_unstable();
        drop.dedup();
        for &index in drop.iter().rev() {
            let change = changes.remove(index);
            if change.on_conflict == OnConflict::Retry {
                return Err(BillingError::Conflict(change.what));
            }
            match change.fallback {
                Some(fallback) => changes.insert(index, *fallback),
                None => skipped.push(change.what),
            }
        }
    }
}

// ---- The read API ----

/// The attribute of `SUB#<sub>#PAID` holding the latest period end a paid invoice covers.
pub const PAID_UNTIL: &str = "paid_until";

/// Statuses in which Stripe considers the current period covered: a trial, or a paid (or, with
/// `send_invoice`, not yet due) invoice. Access runs to the current period's end.
const CURRENT_PERIOD_STATUSES: &[&str] = &["trialing", "active"];
/// `past_due`: Stripe is retrying the renewal. The period it is retrying for was not paid, so access
/// runs only to the end of what paid invoices covered.
const PAID_PERIOD_STATUSES: &[&str] = &["past_due"];

/// What a customer may use right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlement {
    /// Whether the customer has access.
    pub active: bool,
    /// The plan of the subscription granting it.
    pub plan: Option<String>,
    /// That subscription's status.
    pub status: Option<String>,
    /// Until when access is paid for.
    pub access_until: Option<i64>,
    /// Prepaid credits.
    pub credits: i64,
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    /// `sub_...`
    pub id: String,
    /// Stripe's status.
    pub status: String,
    /// Plan (price lookup key or id).
    pub plan: Option<String>,
    /// End of the current period.
    pub current_period_end: Option<i64>,
    /// Ends at period end.
    pub cancel_at_period_end: bool,
    /// The latest period end a paid invoice of this subscription covers.
    pub paid_until: Option<i64>,
}

impl SubscriptionState {
    /// Until when this subscription's access runs, by its status: the current period's end while
    /// `trialing`/`active`, only what paid invoices covered while `past_due`, nothing otherwise
    /// (`incomplete`, `unpaid`, `paused`, `canceled`, `incomplete_expired`, or unknown).
    pub fn access_until(&self) -> Option<i64> {
        let status = self.status.as_str();
        if CURRENT_PERIOD_STATUSES.contains(&status) {
            self.current_period_end.max(self.paid_until)
        } else if PAID_PERIOD_STATUSES.contains(&status) {
            self.paid_until
        } else {
            None
        }
    }

    /// Whether this subscription grants access at `now`.
    pub fn is_entitled(&self, now: i64) -> bool {
        self.access_until().is_some_and(|end| end > now)
    }
}

/// Every subscription of a customer.
pub async fn subscriptions<S: BillingStore>(
    store: &S,
    customer: &str,
) -> Result<Vec<SubscriptionState>, BillingError> {
    let items = store.query(&Key::customer(customer, "").pk).await?;
    let mut subscriptions: BTreeMap<String, SubscriptionState> = BTreeMap::new();
    for (sk, item) in items {
        let Some(rest) = sk.strip_prefix("SUB#") else {
            continue;
        };
        // `SUB#<sub>`, `SUB#<sub>#STATUS`, `SUB#<sub>#PAID` (Stripe ids never contain `#`).
        let (id, part) = rest.split_once('#').unwrap_or((rest, ""));
        let state = subscriptions
            .entry(id.to_owned())
            .or_insert_with(|| SubscriptionState {
                id: id.to_owned(),
                status: "unknown".to_owned(),
                plan: None,
                current_period_end: None,
                cancel_at_period_end: false,
                paid_until: None,
            });
        match part {
            "STATUS" => state.status = item.s("status").unwrap_or("unknown").to_owned(),
            "PAID" => state.paid_until = item.n(PAID_UNTIL),
            "" => {
                state.plan = item.s("plan").map(str::to_owned);
                state.current_period_end = item.n("current_period_end");
                state.cancel_at_period_end = item.flag("cancel_at_period_end");
            }
            _ => {}
        }
    }
    Ok(subscriptions.into_values().collect())
}

/// One subscription of a customer.
pub async fn subscription<S: BillingStore>(
    store: &S,
    customer: &str,
    subscription_id: &str,
) -> Result<Option<SubscriptionState>, BillingError> {
    Ok(subscriptions(store, customer)
        .await?
        .into_iter()
        .find(|s| s.id == subscription_id))
}

/// Whether `customer` has access at `now`: one of its subscriptions grants it
/// ([`SubscriptionState::is_entitled`]: `trialing`/`active` to the current period's end, `past_due`
/// only to the end of what its paid invoices covered). Each subscription stands on its own: one
/// subscription's payment never extends another. With no entitling subscription, the fields describe
/// the customer's first subscription (by id) and `active` is false.
pub async fn entitlement<S: BillingStore>(
    store: &S,
    customer: &str,
    now: i64,
) -> Result<Entitlement, BillingError> {
    let subscriptions = subscriptions(store, customer).await?;
    let chosen = subscriptions
        .iter()
        .find(|s| s.is_entitled(now))
        .or(subscriptions.first());
    Ok(Entitlement {
        active: chosen.is_some_and(|s| s.is_entitled(now)),
        plan: chosen.and_then(|s| s.plan.clone()),
        status: chosen.map(|s| s.status.clone()),
        access_until: chosen.and_then(|s| s.access_until().or(s.paid_until)),
        credits: credit_balance(store, customer).await?,
    })
}

/// A customer's prepaid credit balance.
pub async fn credit_balance<S: BillingStore>(
    store: &S,
    customer: &str,
) -> Result<i64, BillingError> {
    Ok(store
        .get(&Key::customer(customer, "CREDITS"))
        .await?
        .and_then(|i| i.n("balance"))
        .unwrap_or(0))
}

/// A payment as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// `succeeded` or `failed`.
    pub status: String,
    /// Amount.
    pub amount: Money,
    /// The customer, if any.
    pub customer: Option<String>,
    /// Why it failed.
    pub decline_reason: Option<String>,
    /// Whether a charge of the payment was fully refunded.
    pub refunded: bool,
}

/// The payment recorded for a PaymentIntent.
pub async fn payment<S: BillingStore>(
    store: &S,
    payment_intent: &str,
) -> Result<Option<PaymentRecord>, BillingError> {
    let Some(item) = store.get(&Key::object("PAYMENT", payment_intent)).await? else {
        return Ok(None);
    };
    let refunded = refunded(store, payment_intent).await?;
    Ok(Some(PaymentRecord {
        refunded,
        status: item.s("status").unwrap_or_default().to_owned(),
        amount: Money::new(
            item.n("amount").unwrap_or(0),
            item.s("currency").unwrap_or_default(),
        ),
        customer: item.s("customer").map(str::to_owned),
        decline_reason: item.s("decline_reason").map(str::to_owned),
    }))
}

/// Whether an order (PaymentIntent metadata `order_id`) is paid: its payment succeeded and was not
/// fully refunded. (A partial refund leaves it paid: what part of an order it returns is yours to say.)
pub async fn order_paid<S: BillingStore>(store: &S, order_id: &str) -> Result<bool, BillingError> {
    let Some(order) = store.get(&Key::object("ORDER", order_id)).await? else {
        return Ok(false);
    };
    if !order.flag("paid") {
        return Ok(false);
    }
    Ok(match order.s("payment_intent") {
        Some(payment) => !refunded(store, payment).await?,
        None => true,
    })
}

/// Whether a charge of `payment_intent` was fully refunded (`PAYMENT#<pi>` / `REFUND`).
async fn refunded<S: BillingStore>(store: &S, payment_intent: &str) -> Result<bool, BillingError> {
    Ok(store
        .get(&Key::payment_refund(payment_intent))
        .await?
        .is_some_and(|i| i.flag("refunded")))
}

/// An invoice as recorded.
pub async fn invoice<S: BillingStore>(
    store: &S,
    customer: &str,
    invoice_id: &str,
) -> Result<Option<Attributes>, BillingError> {
    store
        .get(&Key::customer(customer, format!("INVOICE#{invoice_id}")))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_time_then_rank_then_id() {
        let a = Version::new(100, 2, "evt_b");
        assert!(Version::new(99, 9, "evt_z") < a);
        assert!(Version::new(100, 1, "evt_z") < a);
        assert!(Version::new(100, 2, "evt_a") < a);
        assert!(Version::new(1_000, 0, "evt_a") > Version::new(999, 9, "evt_z"));
        assert_eq!(Version::new(-5, 0, "e").as_str(), "000000000000:0:e");
    }
}
