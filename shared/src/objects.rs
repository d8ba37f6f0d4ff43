//! The Stripe objects the handlers read, with only the fields they use.
//!
//! Small serde structs rather than a full Stripe SDK crate: those types cover every field of every
//! object, which costs minutes of build time and megabytes of binary, and break on the API versions they
//! do not know. Here unknown fields are ignored and every field that Stripe may omit or null is optional,
//! so a new API version parses as long as the few fields we use keep their meaning.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};

/// An id field that may also come expanded into the full object (`"cus_1"` or `{"id": "cus_1", ...}`).
fn expandable_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Expandable {
        Id(String),
        Object { id: String },
    }
    Ok(
        Option::<Expandable>::deserialize(deserializer)?.map(|e| match e {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }),
    )
}

/// `metadata`: Stripe allows only string values.
pub type Metadata = HashMap<String, String>;

/// A PaymentIntent.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    /// `pi_...`
    pub id: String,
    /// Amount intended, minor units.
    pub amount: i64,
    /// Amount received, minor units.
    #[serde(default)]
    pub amount_received: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    /// The customer, if any.
    #[serde(default, deserialize_with = "expandable_id")]
    pub customer: Option<String>,
    /// Metadata (`order_id` marks an order paid).
    #[serde(default)]
    pub metadata: Metadata,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
    /// `succeeded`, `requires_payment_method`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// Email for the receipt.
    #[serde(default)]
    pub receipt_email: Option<String>,
}

/// `last_payment_error` of a PaymentIntent.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentError {
    /// `card_declined`, ...
    #[serde(default)]
    pub code: Option<String>,
    /// The issuer's reason, `insufficient_funds`, ...
    #[serde(default)]
    pub decline_code: Option<String>,
    /// A message for people.
    #[serde(default)]
    pub message: Option<String>,
}

impl PaymentError {
    /// The most specific reason available.
    pub fn reason(&self) -> Option<&str> {
        self.decline_code
            .as_deref()
            .or(self.code.as_deref())
            .or(self.message.as_deref())
    }
}

/// A Checkout Session.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    /// `cs_...`
    pub id: String,
    /// `payment`, `subscription` or `setup`.
    #[serde(default)]
    pub mode: Option<String>,
    /// The customer, if any.
    #[serde(default, deserialize_with = "expandable_id")]
    pub customer: Option<String>,
    /// Set by your integration; may name the customer when there is no Stripe customer.
    #[serde(default)]
    pub client_reference_id: Option<String>,
    /// The subscription created, in subscription mode.
    #[serde(default, deserialize_with = "expandable_id")]
    pub subscription: Option<String>,
    /// The payment, in payment mode.
    #[serde(default, deserialize_with = "expandable_id")]
    pub payment_intent: Option<String>,
    /// Metadata (`credits` grants prepaid credits).
    #[serde(default)]
    pub metadata: Metadata,
    /// Total, minor units.
    #[serde(default)]
    pub amount_total: Option<i64>,
    /// Currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// `paid`, `unpaid`, `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
}

/// An Invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    /// `in_...`
    pub id: String,
    /// The customer.
    #[serde(default, deserialize_with = "expandable_id")]
    pub customer: Option<String>,
    /// The customer's email at finalization.
    #[serde(default)]
    pub customer_email: Option<String>,
    /// Amount due, minor units.
    #[serde(default)]
    pub amount_due: i64,
    /// Amount paid, minor units.
    #[serde(default)]
    pub amount_paid: i64,
    /// Currency.
    pub currency: String,
    /// Due date (unix), for invoices sent for manual payment.
    #[serde(default)]
    pub due_date: Option<i64>,
    /// The page where the customer pays.
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    /// `draft`, `open`, `paid`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// End of the billing period the invoice covers (unix).
    #[serde(default)]
    pub period_end: Option<i64>,
    /// Since API 2025-03-31 the subscription is under `parent.subscription_details`.
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    /// Before 2025-03-31, the subscription field on the invoice itself.
    #[serde(default, deserialize_with = "expandable_id")]
    pub subscription: Option<String>,
    /// The line items (first page).
    #[serde(default)]
    pub lines: Option<List<InvoiceLine>>,
}

/// `parent` of an invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceParent {
    /// Present when a subscription billed the invoice.
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

/// `parent.subscription_details` of an invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionDetails {
    /// The subscription.
    #[serde(default, deserialize_with = "expandable_id")]
    pub subscription: Option<String>,
}

/// A Stripe list (`{"data": [...]}`).
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    /// The items of this page.
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// An invoice line item.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLine {
    /// The period it bills.
    #[serde(default)]
    pub period: Option<Period>,
}

/// A start/end pair (unix).
#[derive(Debug, Clone, Deserialize)]
pub struct Period {
    /// Start.
    #[serde(default)]
    pub start: Option<i64>,
    /// End.
    #[serde(default)]
    pub end: Option<i64>,
}

impl Invoice {
    /// The subscription the invoice belongs to, wherever this API version puts it.
    pub fn subscription_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| d.subscription.as_deref())
            .or(self.subscription.as_deref())
    }

    /// Until when this invoice pays for access: the latest line period end, else `period_end`. (For
    /// subscription invoices, `period_end` is the *previous* period's end; the lines carry the period
    /// being paid for.)
    pub fn access_until(&self) -> Option<i64> {
        let lines = self
            .lines
            .as_ref()
            .and_then(|l| l.data.iter().filter_map(|l| l.period.as_ref()?.end).max());
        lines.or(self.period_end)
    }
}

/// A Subscription.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    /// `sub_...`
    pub id: String,
    /// The customer.
    #[serde(default, deserialize_with = "expandable_id")]
    pub customer: Option<String>,
    /// `trialing`, `active`, `past_due`, `canceled`, `unpaid`, `incomplete`, ...
    pub status: String,
    /// Whether it ends at the end of the current period.
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// End of the trial (unix).
    #[serde(default)]
    pub trial_end: Option<i64>,
    /// Since API 2025-03-31 the period lives on each item.
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
    /// Before 2025-03-31, the period end on the subscription itself.
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A subscription item.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    /// The price subscribed to.
    #[serde(default)]
    pub price: Option<Price>,
    /// End of this item's current period (unix).
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A price.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    /// `price_...`
    pub id: String,
    /// Your lookup key, if set (a stable plan name).
    #[serde(default)]
    pub lookup_key: Option<String>,
}

impl Subscription {
    /// The plan: the first item's price lookup key, else its price id.
    pub fn plan(&self) -> Option<String> {
        let price = self.items.as_ref()?.data.first()?.price.as_ref()?;
        Some(price.lookup_key.clone().unwrap_or_else(|| price.id.clone()))
    }

    /// End of the current period, wherever this API version puts it.
    pub fn current_period_end(&self) -> Option<i64> {
        let items = self
            .items
            .as_ref()
            .and_then(|l| l.data.iter().filter_map(|i| i.current_period_end).max());
        items.or(self.current_period_end)
    }
}

/// A Charge.
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    /// `ch_...`
    pub id: String,
    /// Amount, minor units.
    pub amount: i64,
    /// Amount refunded so far, minor units.
    #[serde(default)]
    pub amount_refunded: i64,
    /// Currency.
    pub currency: String,
    /// The customer.
    #[serde(default, deserialize_with = "expandable_id")]
    pub customer: Option<String>,
    /// The PaymentIntent it belongs to.
    #[serde(default, deserialize_with = "expandable_id")]
    pub payment_intent: Option<String>,
    /// Whether it is fully refunded.
    #[serde(default)]
    pub refunded: bool,
    /// Why it failed.
    #[serde(default)]
    pub failure_code: Option<String>,
    /// Why it failed, for people.
    #[serde(default)]
    pub failure_message: Option<String>,
    /// The email on the receipt.
    #[serde(default)]
    pub receipt_email: Option<String>,
    /// Billing details.
    #[serde(default)]
    pub billing_details: Option<BillingDetails>,
}

/// `billing_details` of a charge.
#[derive(Debug, Clone, Deserialize)]
pub struct BillingDetails {
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
}

/// A Dispute.
#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    /// `dp_...`
    pub id: String,
    /// Amount disputed, minor units.
    pub amount: i64,
    /// Currency.
    pub currency: String,
    /// The disputed charge.
    #[serde(default, deserialize_with = "expandable_id")]
    pub charge: Option<String>,
    /// `fraudulent`, `product_not_received`, `general`, ...
    #[serde(default)]
    pub reason: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: Option<String>,
    /// Evidence deadline.
    #[serde(default)]
    pub evidence_details: Option<EvidenceDetails>,
}

impl Dispute {
    /// Whether a dispute status means it is over (won, lost, an inquiry closed, prevented). None of
    /// them reopens, so one record saying so settles it whatever order events arrive in.
    pub fn is_closed_status(status: &str) -> bool {
        matches!(status, "won" | "lost" | "warning_closed" | "prevented")
    }
}

/// `evidence_details` of a dispute.
#[derive(Debug, Clone, Deserialize)]
pub struct EvidenceDetails {
    /// Deadline to submit evidence (unix).
    #[serde(default)]
    pub due_by: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StripeEvent;

    fn object<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!(
            "{}/../tests/fixtures/stripe/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(path).unwrap();
        StripeEvent::parse(&body).unwrap().object().unwrap()
    }

    #[test]
    fn fixture_objects_parse_into_the_fields_handlers_use() {
        let pi: PaymentIntent = object("payment_intent.payment_failed");
        assert_eq!(
            pi.last_payment_error.unwrap().reason(),
            Some("generic_decline")
        );
        let invoice: Invoice = object("invoice.paid");
        assert_eq!(invoice.subscription_id(), Some("subscription"));
        assert_eq!(invoice.access_until(), Some(1_721_954_054));
        let sub: Subscription = object("customer.subscription.updated");
        assert!(sub.cancel_at_period_end);
        assert_eq!(
            sub.plan().as_deref(),
            Some("price_1PgafmB7WZ01zgkW6dKueIc5")
        );
        assert_eq!(sub.current_period_end(), Some(976_287_773));
        let dispute: Dispute = object("charge.dispute.created");
        assert_eq!(
            dispute.evidence_details.unwrap().due_by,
            Some(1_723_679_999)
        );
        let charge: Charge = object("charge.refunded");
        assert!(charge.refunded);
        let session: CheckoutSession = object("checkout.session.completed");
        assert_eq!(
            session.payment_intent.as_deref(),
            Some("pi_1PgafyB7WZ01zgkWSjxsAJo3")
        );
    }

    #[test]
    fn expanded_ids_and_older_api_shapes_parse() {
        let sub: Subscription = serde_json::from_str(
            r#"{"id":"sub_1","customer":{"id":"cus_9","object":"customer"},"status":"active","current_period_end":77}"#,
        )
        .unwrap();
        assert_eq!(sub.customer.as_deref(), Some("cus_9"));
        assert_eq!(sub.current_period_end(), Some(77));
        let invoice: Invoice = serde_json::from_str(
            r#"{"id":"in_1","currency":"usd","subscription":"sub_1","period_end":5}"#,
        )
        .unwrap();
        assert_eq!(invoice.subscription_id(), Some("sub_1"));
        assert_eq!(invoice.access_until(), Some(5));
    }
}
