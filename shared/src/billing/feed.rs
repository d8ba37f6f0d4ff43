//! The event feed: one compact record per processed event, so people can see what happened to their
//! money events (the CLI's console) without reading logs or calling Stripe.
//!
//! The record is part of the event's exactly-once marker item (`EVENT#<event id>` / `EVENT`, see
//! [`super::EventMarker`]): one write, and an event is in the feed exactly when its effects
//! are applied. (Before markers carried it, records were items of their own, `FEED#<event id>` /
//! `FEED`; readers fall back to those.) Markers are indexed by the table's `ByFeed` GSI: partition `DAY#<UTC date
//! it was processed>` (one partition per day, queried newest first without a scan), sort key
//! `<processed at, zero-padded>#<event id>`. Processing time, not the event's `created`: the feed is
//! what reached the pipeline, in the order it did (a backfilled or resent event shows up when it
//! arrives; its card still says when Stripe created it). A dispute also gets an entry in the partition `DISPUTES`,
//! sorted by its evidence deadline, so "open disputes, nearest deadline first" is one query (a second
//! item, `FEED#<event id>` / `DISPUTE`). A record lives as long as its marker (90 days by default,
//! three times the window in which Stripe can still resend); a dispute entry until its deadline has
//! passed by a week.
//!
//! What a record says is read from the event's object generically (amount, currency, customer, email,
//! decline reason), so every event type gets a card, including types no handler acts on.

use serde_json::Value as Json;

use super::{attr::EXPIRES_AT, attributes, Attributes, Change, Key, Op, Value, Write};
use crate::event::StripeEvent;

/// The GSI over feed records.
pub const INDEX: &str = "ByFeed";
/// The GSI's partition key attribute.
pub const PARTITION: &str = "feed_partition";
/// The GSI's sort key attribute.
pub const SORT: &str = "feed_sort";
/// The partition of open-dispute entries.
pub const DISPUTES: &str = "DISPUTES";
/// When the processor recorded it (epoch seconds).
pub const RECORDED_AT: &str = "recorded_at";
/// How long a dispute entry outlives its evidence deadline.
const DISPUTE_GRACE_SECS: i64 = 7 * 86_400;

/// How an event went, for people: the colour of its card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedOutcome {
    /// Money came in, or a purchase completed.
    Succeeded,
    /// A payment or renewal failed.
    Failed,
    /// A dispute was opened or changed.
    Disputed,
    /// Anything else (lifecycle, types no handler acts on).
    Unknown,
}

impl FeedOutcome {
    /// Lowercase name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Disputed => "disputed",
            Self::Unknown => "unknown",
        }
    }

    /// The outcome named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Succeeded, Self::Failed, Self::Disputed, Self::Unknown]
            .into_iter()
            .find(|o| o.as_str() == text)
    }

    /// The outcome of an event type.
    pub fn of(event_type: &str) -> Self {
        if event_type.starts_with("charge.dispute.") {
            Self::Disputed
        } else if event_type.ends_with("failed") || event_type.ends_with(".payment_action_required")
        {
            Self::Failed
        } else if event_type.ends_with(".succeeded")
            || event_type.ends_with(".paid")
            || event_type == "checkout.session.completed"
            || event_type == "checkout.session.async_payment_succeeded"
        {
            Self::Succeeded
        } else {
            Self::Unknown
        }
    }
}

/// One processed event, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedRecord {
    /// `evt_…`
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// When Stripe created the event, unix seconds.
    pub created: i64,
    /// Live or test mode.
    pub livemode: Option<bool>,
    /// Minor units of `currency`.
    pub amount: Option<i64>,
    /// Lowercase ISO code.
    pub currency: Option<String>,
    /// `cus_…`
    pub customer: Option<String>,
    /// The customer's (or receipt) email.
    pub customer_email: Option<String>,
    /// The object's id (`pi_…`, `in_…`, `dp_…`).
    pub object_id: Option<String>,
    /// How it went.
    pub outcome: FeedOutcome,
    /// Decline or dispute reason, when there is one.
    pub detail: Option<String>,
    /// A dispute's evidence deadline, unix seconds.
    pub due_by: Option<i64>,
    /// The object's own `status` (`succeeded`, `past_due`, `needs_response`, `won`, …).
    pub object_status: Option<String>,
}

impl FeedRecord {
    /// The record of `event`, read from its object whatever its type.
    pub fn of(event: &StripeEvent) -> Self {
        let object: Json = serde_json::from_str(event.data.object.get()).unwrap_or(Json::Null);
        let text = |value: &Json| value.as_str().map(str::to_owned);
        let first_text =
            |paths: &[&[&str]]| paths.iter().find_map(|path| text(pointer(&object, path)));
        let event_type = event.event_type.as_str();
        // The amount that matters for the type: what was received, what is due, what is disputed. A
        // failed invoice's `amount_paid` and a failed PaymentIntent's `amount_received` are 0: what
        // failed is `amount_due` / `amount`.
        let failed = event_type.ends_with("failed");
        let fields: &[&str] = if failed {
            &["amount_total", "amount", "amount_due"]
        } else {
            &[
                "amount_received",
                "amount_paid",
                "amount_total",
                "amount",
                "amount_due",
            ]
        };
        let amount = fields.iter().find_map(|field| object[*field].as_i64());
        let customer = match &object["customer"] {
            Json::String(id) => Some(id.clone()),
            Json::Object(expanded) => expanded.get("id").and_then(text),
            _ => None,
        };
        let customer_email = first_text(&[
            &["customer_email"],
            &["customer_details", "email"],
            &["receipt_email"],
            &["billing_details", "email"],
            &["customer", "email"],
            &["email"],
        ]);
        let detail = first_text(&[
            &["last_payment_error", "decline_code"],
            &["last_payment_error", "code"],
            &["failure_code"],
            &["reason"],
        ])
        .map(|code| {
            let message = first_text(&[&["last_payment_error", "message"], &["failure_message"]]);
            match message {
                Some(message) if message != code => format!("{code}: {message}"),
                _ => code,
            }
        });
        Self {
            event_id: event.id.clone(),
            event_type: event_type.to_owned(),
            created: event.created,
            livemode: event.livemode,
            amount,
            currency: text(&object["currency"]).map(|c| c.to_lowercase()),
            customer,
            customer_email,
            object_id: text(&object["id"]),
            outcome: FeedOutcome::of(event_type),
            detail,
            due_by: pointer(&object, &["evidence_details", "due_by"]).as_i64(),
            object_status: text(&object["status"]),
        }
    }

    /// What the event's exactly-once marker carries for the feed, processed at `now`: the record and
    /// its place in the `ByFeed` index. No expiry of its own: the marker's retention is the record's
    /// (see [`super::EventMarker`]).
    pub fn marker_attributes(&self, now: i64) -> Attributes {
        let mut item = self.attributes();
        item.insert(PARTITION.to_owned(), Value::S(day_partition(now)));
        item.insert(SORT.to_owned(), Value::S(sort_key(now, &self.event_id)));
        item.insert(RECORDED_AT.to_owned(), Value::N(now));
        item
    }

    /// For a dispute with an evidence deadline, its entry in the open-disputes partition (a second
    /// item, as it sorts by deadline, not by processing time), expiring a week after the deadline.
    pub fn dispute_entry(&self) -> Option<Change> {
        let (FeedOutcome::Disputed, Some(due_by), Some(dispute)) =
            (self.outcome, self.due_by, &self.object_id)
        else {
            return None;
        };
        let mut entry = self.attributes();
        entry.insert(PARTITION.to_owned(), Value::S(DISPUTES.to_owned()));
        entry.insert(SORT.to_owned(), Value::S(sort_key(due_by, dispute)));
        entry.insert(EXPIRES_AT.to_owned(), Value::N(due_by + DISPUTE_GRACE_SECS));
        Some(Change::skippable(
            "feed.dispute",
            vec![Write {
                key: Key::new(format!("FEED#{}", self.event_id), "DISPUTE"),
                op: Op::Put(entry),
                guards: vec![],
            }],
        ))
    }

    fn attributes(&self) -> Attributes {
        attributes([
            ("event_id", Some(self.event_id.as_str().into())),
            ("event_type", Some(self.event_type.as_str().into())),
            ("created", Some(self.created.into())),
            ("livemode", self.livemode.map(Value::Bool)),
            ("amount", self.amount.map(Into::into)),
            ("currency", self.currency.as_deref().map(Into::into)),
            ("customer", self.customer.as_deref().map(Into::into)),
            (
                "customer_email",
                self.customer_email.as_deref().map(Into::into),
            ),
            ("object_id", self.object_id.as_deref().map(Into::into)),
            ("outcome", Some(self.outcome.as_str().into())),
            ("detail", self.detail.as_deref().map(Into::into)),
            ("due_by", self.due_by.map(Into::into)),
            (
                "object_status",
                self.object_status.as_deref().map(Into::into),
            ),
        ])
    }

    /// Reads a record back from its item's attributes; `None` if it is not one.
    pub fn from_attributes(item: &Attributes) -> Option<Self> {
        let s = |k: &str| match item.get(k) {
            Some(Value::S(s)) => Some(s.clone()),
            _ => None,
        };
        let n = |k: &str| match item.get(k) {
            Some(Value::N(n)) => Some(*n),
            _ => None,
        };
        Some(Self {
            event_id: s("event_id")?,
            event_type: s("event_type")?,
            created: n("created")?,
            livemode: match item.get("livemode") {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            },
            amount: n("amount"),
            currency: s("currency"),
            customer: s("customer"),
            customer_email: s("customer_email"),
            object_id: s("object_id"),
            outcome: FeedOutcome::parse(&s("outcome")?)?,
            detail: s("detail"),
            due_by: n("due_by"),
            object_status: s("object_status"),
        })
    }

    /// Whether this is news of a dispute that is over (won, lost, or an inquiry closed): its
    /// deadline no longer needs anyone. Dispute statuses do not reopen, so one closing record is
    /// enough, whatever order the events arrived in.
    pub fn closes_dispute(&self) -> bool {
        self.outcome == FeedOutcome::Disputed
            && self
                .object_status
                .as_deref()
                .is_some_and(crate::objects::Dispute::is_closed_status)
    }
}

/// `DAY#2026-11-24`: the feed partition of events created on that UTC day.
pub fn day_partition(unix: i64) -> String {
    format!("DAY#{}", &crate::delivery::format_rfc3339(unix)[..10])
}

/// Sorts by time, then id; zero-padded so string order is time order.
pub fn sort_key(unix: i64, id: &str) -> String {
    format!("{:012}#{id}", unix.max(0))
}

/// One record as a reader gets it: where it sorts in its partition and when the processor recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Its [`SORT`] key ([`sort_key`]).
    pub sort: String,
    /// The record.
    pub record: FeedRecord,
    /// [`RECORDED_AT`], if the item has it.
    pub recorded_at: Option<i64>,
}

impl FeedEntry {
    /// The entry an item (a marker, a dispute entry, an old record of its own) carries; `None` if it
    /// carries no record.
    pub fn from_attributes(item: &Attributes) -> Option<Self> {
        Some(Self {
            sort: match item.get(SORT) {
                Some(Value::S(sort)) => sort.clone(),
                _ => String::new(),
            },
            record: FeedRecord::from_attributes(item)?,
            recorded_at: match item.get(RECORDED_AT) {
                Some(Value::N(at)) => Some(*at),
                _ => None,
            },
        })
    }
}

/// Which part of a feed partition a page reads (newest first either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedRange<'a> {
    /// The whole partition.
    All,
    /// Sort keys below this one: what comes after a page that ended there.
    Before(&'a str),
    /// Sort keys from this one on (`DISPUTES` from now on: deadlines not yet passed).
    From(&'a str),
}

/// The feed record of `event_id` as the console shows it: carried by its marker, or, for an event
/// processed before markers carried records, its own item (`FEED#<event id>` / `FEED`).
pub async fn record_of<B: super::BillingStore>(
    store: &B,
    event_id: &str,
) -> Result<Option<FeedEntry>, super::BillingError> {
    for key in [
        Key::event_marker(event_id),
        Key::new(format!("FEED#{event_id}"), "FEED"),
    ] {
        if let Some(entry) = store
            .get(&key)
            .await?
            .and_then(|item| FeedEntry::from_attributes(&item))
        {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

fn pointer<'a>(value: &'a Json, path: &[&str]) -> &'a Json {
    path.iter().fold(value, |v, key| &v[*key])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> FeedRecord {
        let path = format!(
            "{}/../tests/fixtures/stripe/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(path).expect("fixture");
        FeedRecord::of(&StripeEvent::parse(&body).expect("event"))
    }

    #[test]
    fn a_dispute_is_over_when_its_status_says_so() {
        let created = record("charge.dispute.created");
        // The fixture is an inquiry awaiting a response.
        assert_eq!(
            created.object_status.as_deref(),
            Some("warning_needs_response")
        );
        assert!(!created.closes_dispute());
        for (status, over) in [
            ("under_review", false),
            ("warning_needs_response", false),
            ("won", true),
            ("lost", true),
            ("warning_closed", true),
        ] {
            let record = FeedRecord {
                object_status: Some(status.to_owned()),
                ..created.clone()
            };
            assert_eq!(record.closes_dispute(), over, "{status}");
            let back = FeedRecord::from_attributes(&record.attributes()).expect("a record");
            assert_eq!(back, record);
        }
        let paid = record("payment_intent.succeeded");
        assert!(!paid.closes_dispute(), "only disputes close");
    }

    #[test]
    fn outcomes_follow_the_event_type() {
        use FeedOutcome::*;
        for (event_type, outcome) in [
            ("payment_intent.succeeded", Succeeded),
            ("invoice.paid", Succeeded),
            ("checkout.session.completed", Succeeded),
            ("payment_intent.payment_failed", Failed),
            ("invoice.payment_failed", Failed),
            ("charge.failed", Failed),
            ("charge.dispute.created", Disputed),
            ("customer.subscription.updated", Unknown),
            ("invoice.finalized", Unknown),
        ] {
            assert_eq!(FeedOutcome::of(event_type), outcome, "{event_type}");
        }
    }

    #[test]
    fn records_carry_amount_customer_and_reasons_from_the_object() {
        let paid = record("payment_intent.succeeded");
        assert_eq!(paid.outcome, FeedOutcome::Succeeded);
        assert!(paid.amount.is_some_and(|a| a > 0));
        assert!(paid.currency.is_some());
        assert!(paid
            .object_id
            .as_deref()
            .is_some_and(|id| id.starts_with("pi_")));

        let failed = record("payment_intent.payment_failed");
        assert_eq!(failed.outcome, FeedOutcome::Failed);
        assert!(failed.detail.is_some(), "a decline reason: {failed:?}");

        let invoice = record("invoice.payment_failed");
        assert!(
            invoice.amount.is_some_and(|a| a > 0),
            "the amount due: {invoice:?}"
        );
        assert!(invoice.customer.is_some());

        let dispute = record("charge.dispute.created");
        assert_eq!(dispute.outcome, FeedOutcome::Disputed);
        assert!(dispute.due_by.is_some());
        assert!(dispute.detail.is_some(), "the dispute reason");
        let entry = dispute.dispute_entry().expect("an open-dispute entry");
        let Op::Put(item) = &entry.writes[0].op else {
            panic!("a put");
        };
        assert_eq!(item.get(PARTITION), Some(&Value::S(DISPUTES.to_owned())));
        assert_eq!(
            item.get(EXPIRES_AT),
            Some(&Value::N(dispute.due_by.unwrap() + DISPUTE_GRACE_SECS))
        );
        assert!(paid.dispute_entry().is_none(), "only disputes have one");
    }

    #[test]
    fn records_round_trip_through_attributes_and_sort_by_time() {
        let paid = record("invoice.paid");
        let item = paid.marker_attributes(1_795_000_000);
        assert_eq!(FeedRecord::from_attributes(&item), Some(paid));
        assert_eq!(
            item.get(EXPIRES_AT),
            None,
            "the marker's retention is the record's"
        );
        assert_eq!(
            item.get(PARTITION),
            Some(&Value::S("DAY#2026-11-18".to_owned()))
        );
        assert!(sort_key(999, "evt_b") < sort_key(1000, "evt_a"));
        assert_eq!(day_partition(1_795_000_000), "DAY#2026-11-18");
    }
}
