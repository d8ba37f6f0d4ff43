//! The Stripe event envelope: the few fields the pipeline itself needs to route and deduplicate an event.
//!
//! The receiver never re-serializes what it parses here: the raw bytes Stripe signed are what gets
//! enqueued. Unknown fields and unknown event types always parse (Stripe adds both without notice, and
//! a new API version must not turn deliveries into errors); what an event *means* is the processor's job.

use serde::Deserialize;

/// Longest event id we accept. Stripe's are ~30 characters; the bound keeps the id usable as a DynamoDB
/// key and an SQS attribute whatever a sender puts there.
pub const MAX_EVENT_ID_LEN: usize = 255;

/// The envelope of a Stripe `Event`, as delivered to a webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventEnvelope {
    /// `evt_...`, unique per event and identical across every delivery attempt of it.
    pub id: String,
    /// `payment_intent.succeeded`, ... (unknown types parse as [`EventType::Other`]).
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Unix seconds when Stripe created the event (not when it was delivered).
    #[serde(default)]
    pub created: Option<i64>,
    /// Whether the event comes from live mode; test-mode events must never reach a live stack.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// The API version the payload was rendered with.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The connected account, for Connect events.
    #[serde(default)]
    pub account: Option<String>,
}

/// Why a verified body is not a Stripe event we can route.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or `id`/`type` missing or of the wrong JSON type.
    #[error("body is not a Stripe event")]
    NotAnEvent(#[source] serde_json::Error),
    /// `id` is empty, too long, or has characters Stripe never uses.
    #[error("event id is not a Stripe id")]
    InvalidId,
    /// `type` is empty.
    #[error("event type is empty")]
    EmptyType,
    /// A timestamp is not in the format Stripe uses.
    #[error("event timestamp is malformed")]
    InvalidTimestamp,
}

impl EventEnvelope {
    /// Parses the envelope from the raw body. Only `id` and `type` are required.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let envelope: Self = serde_json::from_slice(body).map_err(EventError::NotAnEvent)?;
        let id_ok = !envelope.id.is_empty()
            && envelope.id.len() <= MAX_EVENT_ID_LEN
            && envelope
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !id_ok {
            return Err(EventError::InvalidId);
        }
        if envelope.event_type.as_str().is_empty() {
            return Err(EventError::EmptyType);
        }
        Ok(envelope)
    }
}

/// A whole Stripe event as the processor reads it: the envelope plus `data`. `data.object` is kept as raw
/// JSON and parsed on demand into the typed object a handler needs ([`StripeEvent::object`]), so an event
/// nobody handles costs no more than its envelope.
#[derive(Debug, Deserialize)]
pub struct StripeEvent {
    /// `evt_...`.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Unix seconds when Stripe created the event: the order in which events are applied.
    pub created: i64,
    /// Live or test mode.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// The API version the payload was rendered with.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The connected account, for Connect events.
    #[serde(default)]
    pub account: Option<String>,
    /// What caused the event (an API request, or none for automatic events).
    #[serde(default)]
    pub request: Option<EventRequest>,
    /// The object and what changed.
    pub data: EventData,
}

/// `request` of an event.
#[derive(Debug, Deserialize)]
pub struct EventRequest {
    /// The API request id, if an API call caused the event.
    #[serde(default)]
    pub id: Option<String>,
    /// Its idempotency key, if any.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `data` of an event.
#[derive(Debug, Deserialize)]
pub struct EventData {
    /// The object as it was when the event happened, unparsed.
    pub object: Box<serde_json::value::RawValue>,
    /// For `*.updated` events, the previous values of the fields that changed.
    #[serde(default)]
    pub previous_attributes: Option<serde_json::Value>,
}

impl StripeEvent {
    /// Parses a whole event. Unknown fields are ignored; unknown types parse as [`EventType::Other`].
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let event: Self = serde_json::from_slice(body).map_err(EventError::NotAnEvent)?;
        if event.id.is_empty() {
            return Err(EventError::InvalidId);
        }
        Ok(event)
    }

    /// `data.object` as the typed object `T`.
    pub fn object<T: serde::de::DeserializeOwned>(&self) -> Result<T, EventError> {
        serde_json::from_str(self.data.object.get()).map_err(EventError::NotAnEvent)
    }
}

macro_rules! event_types {
    ($($variant:ident => $name:literal,)*) => {
        /// A Stripe event type. The named variants are the ones this pipeline's handlers act on; every
        /// other type parses as `Other` and is still enqueued (the processor acknowledges and counts it).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum EventType {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
            /// Any type not named above, kept verbatim.
            Other(String),
        }

        impl EventType {
            /// Every type a handler acts on, as Stripe spells it.
            pub const HANDLED: &'static [&'static str] = &[$($name,)*];

            /// The type exactly as Stripe spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(name) => name,
                }
            }
        }

        impl From<&str> for EventType {
            fn from(name: &str) -> Self {
                match name {
                    $($name => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }
    };
}

event_types! {
    PaymentIntentSucceeded => "payment_intent.succeeded",
    PaymentIntentPaymentFailed => "payment_intent.payment_failed",
    CheckoutSessionCompleted => "checkout.session.completed",
    CheckoutSessionAsyncPaymentSucceeded => "checkout.session.async_payment_succeeded",
    CheckoutSessionAsyncPaymentFailed => "checkout.session.async_payment_failed",
    InvoicePaid => "invoice.paid",
    InvoicePaymentSucceeded => "invoice.payment_succeeded",
    InvoicePaymentFailed => "invoice.payment_failed",
    InvoiceFinalized => "invoice.finalized",
    CustomerSubscriptionCreated => "customer.subscription.created",
    CustomerSubscriptionUpdated => "customer.subscription.updated",
    CustomerSubscriptionDeleted => "customer.subscription.deleted",
    CustomerSubscriptionTrialWillEnd => "customer.subscription.trial_will_end",
    ChargeFailed => "charge.failed",
    ChargeRefunded => "charge.refunded",
    ChargeDisputeCreated => "charge.dispute.created",
    ChargeDisputeUpdated => "charge.dispute.updated",
    ChargeDisputeClosed => "charge.dispute.closed",
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::from(name.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture_files() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/stripe/events"
        );
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "index.json")
            .map(|p| {
                let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
                (stem, std::fs::read(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_fixture_event_parses_with_its_type() {
        let files = fixture_files();
        assert_eq!(files.len(), 17);
        for (name, body) in files {
            let event = EventEnvelope::parse(&body).unwrap();
            assert_eq!(event.event_type.as_str(), name);
            assert!(event.id.starts_with("evt_"), "{name}");
            assert_eq!(event.livemode, Some(false));
            assert_eq!(event.api_version.as_deref(), Some("2026-07-29.dahlia"));
        }
    }

    #[test]
    fn known_and_unknown_types_round_trip_their_names() {
        let known = EventType::from("invoice.paid");
        assert_eq!(known, EventType::InvoicePaid);
        assert_eq!(known.as_str(), "invoice.paid");
        let unknown = EventType::from("apps.install.created");
        assert_eq!(unknown, EventType::Other("apps.install.created".into()));
        assert_eq!(unknown.to_string(), "apps.install.created");
    }

    #[test]
    fn every_published_event_type_parses() {
        let types = include_str!("../../tests/fixtures/stripe/event-types.txt");
        for name in types.lines() {
            let body = format!(r#"{{"id":"evt_1","type":"{name}","future_field":{{"x":1}}}}"#);
            let event = EventEnvelope::parse(body.as_bytes()).unwrap();
            assert_eq!(event.event_type.as_str(), name);
        }
    }

    #[test]
    fn bodies_that_are_not_events_are_rejected() {
        for body in [
            &b"not json"[..],
            b"[]",
            br#"{"type":"invoice.paid"}"#,
            br#"{"id":"evt_1"}"#,
            br#"{"id":1,"type":"invoice.paid"}"#,
        ] {
            assert!(matches!(
                EventEnvelope::parse(body),
                Err(EventError::NotAnEvent(_))
            ));
        }
        assert!(matches!(
            EventEnvelope::parse(br#"{"id":"evt_1#body#0","type":"x"}"#),
            Err(EventError::InvalidId)
        ));
        assert!(matches!(
            EventEnvelope::parse(br#"{"id":"","type":"x"}"#),
            Err(EventError::InvalidId)
        ));
        assert!(matches!(
            EventEnvelope::parse(br#"{"id":"evt_1","type":""}"#),
            Err(EventError::EmptyType)
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = EventEnvelope::parse(&body);
        }

        #[test]
        fn json_shaped_garbage_never_panics(id in ".{0,300}", ty in ".{0,40}", created in any::<i64>()) {
            let body = serde_json::json!({"id": id, "type": ty, "created": created, "livemode": true});
            let _ = EventEnvelope::parse(body.to_string().as_bytes());
        }
    }
}
