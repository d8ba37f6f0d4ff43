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
    /// Unix seconds when Stripe created the event (not when it was delivered). A snapshot event says
    /// unix seconds, a thin (API v2) event an RFC 3339 string: both are read (see [`created_unix`]).
    #[serde(default, deserialize_with = "created_unix")]
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
    /// The connected account (or other context) of a thin event, which names it here, not in
    /// `account`.
    #[serde(default)]
    pub context: Option<String>,
}

/// `created` as unix seconds, from either shape Stripe sends: an integer (snapshot events) or an RFC
/// 3339 string (thin events, `2026-12-06T10:00:00.000Z`). Anything else is not an event Stripe sent.
fn created_unix<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Created<'a> {
        Unix(i64),
        Rfc3339(std::borrow::Cow<'a, str>),
    }
    match Option::<Created<'de>>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Created::Unix(unix)) => Ok(Some(unix)),
        Some(Created::Rfc3339(text)) => crate::delivery::parse_rfc3339(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("created is not an RFC 3339 time")),
    }
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
    /// Parses the envelope from the raw body, a snapshot or a thin event. Only `id` and `type` are
    /// required.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let envelope: Self = serde_json::from_slice(body).map_err(EventError::NotAnEvent)?;
        if !is_stripe_id(&envelope.id) {
            return Err(EventError::InvalidId);
        }
        if envelope.event_type.as_str().is_empty() {
            return Err(EventError::EmptyType);
        }
        Ok(envelope)
    }

    /// The connected account the event belongs to, if any: `account` of a snapshot event, `context`
    /// of a thin one.
    pub fn connected_account(&self) -> Option<&str> {
        self.account.as_deref().or(self.context.as_deref())
    }

    /// The `id` of a body that did not parse as an event, when it has one that looks like a Stripe id:
    /// for the log line of a refused delivery, so it can be looked up in Stripe.
    pub fn readable_id(body: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: Option<serde_json::Value>,
        }
        let value = serde_json::from_slice::<IdOnly>(body).ok()?.id?;
        value
            .as_str()
            .filter(|id| is_stripe_id(id))
            .map(str::to_owned)
    }
}

/// Non-empty, bounded, and only the characters Stripe uses (`evt_1Abc`): usable as a DynamoDB key and
/// an SQS attribute whatever a sender puts there.
fn is_stripe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_EVENT_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl EventError {
    /// What is wrong, for the log: the parser's message with its position, but with every quoted
    /// string left out, since serde quotes the values it did not expect and those are the body's.
    pub fn detail(&self) -> String {
        match self {
            Self::NotAnEvent(source) => without_quoted_strings(&source.to_string()),
            other => other.to_string(),
        }
    }
}

/// `text` with the content of each `"…"` replaced by `…` (escapes inside honoured).
fn without_quoted_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        out.push('…');
        while let Some(inner) = chars.next() {
            match inner {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    out.push('"');
                    break;
                }
                _ => {}
            }
        }
    }
    out
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

/// Whether a row of [`event_types!`] carries `$want` among its flags.
macro_rules! has_flag {
    ($want:ident:) => {
        false
    };
    (notifies: notifies $($rest:ident)*) => {
        true
    };
    (refetched: refetched $($rest:ident)*) => {
        true
    };
    ($want:ident: $other:ident $($rest:ident)*) => {
        has_flag!($want: $($rest)*)
    };
}

macro_rules! event_types {
    ($($variant:ident => $name:literal on $object:literal $(, $flag:ident)*;)*) => {
        /// A Stripe event type. The named variants are the ones this pipeline's handlers act on; every
        /// other type parses as `Other` and is still enqueued (the processor acknowledges and counts it).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum EventType {
            $(
                #[doc = concat!("`", $name, "` (a `", $object, "`)")]
                $variant,
            )*
            /// Any type not named above, kept verbatim.
            Other(String),
        }

        impl EventType {
            /// Every type a handler acts on, as Stripe spells it.
            pub const HANDLED: &'static [&'static str] = &[$($name,)*];

            /// Every type a handler acts on.
            pub const ALL: &'static [EventType] = &[$(Self::$variant,)*];

            /// The type exactly as Stripe spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(name) => name,
                }
            }

            /// The type of the event's `data.object` (`invoice`, `subscription`, `checkout.session`…);
            /// `None` for a type no handler acts on.
            pub fn object_type(&self) -> Option<&'static str> {
                match self {
                    $(Self::$variant => Some($object),)*
                    Self::Other(_) => None,
                }
            }

            /// Whether its handler sends a notification: the types a notification route may name (a
            /// route naming any other would silently notify no one). A test keeps this true.
            pub fn notifies(&self) -> bool {
                match self {
                    $(Self::$variant => has_flag!(notifies: $($flag)*),)*
                    Self::Other(_) => false,
                }
            }

            /// Whether the state its object carries depends on delivery order (subscriptions,
            /// invoices), so the processor re-reads the object from Stripe's API before the handler
            /// runs, when a key is configured.
            pub fn refetched(&self) -> bool {
                match self {
                    $(Self::$variant => has_flag!(refetched: $($flag)*),)*
                    Self::Other(_) => false,
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

// One row per type a handler acts on: how Stripe spells it, the type of its `data.object`, and what
// the processor does with it beside the handler (`notifies`, `refetched`).
event_types! {
    PaymentIntentSucceeded => "payment_intent.succeeded" on "payment_intent", notifies;
    PaymentIntentPaymentFailed => "payment_intent.payment_failed" on "payment_intent", notifies;
    CheckoutSessionCompleted => "checkout.session.completed" on "checkout.session";
    CheckoutSessionAsyncPaymentSucceeded => "checkout.session.async_payment_succeeded" on "checkout.session";
    CheckoutSessionAsyncPaymentFailed => "checkout.session.async_payment_failed" on "checkout.session", notifies;
    InvoicePaid => "invoice.paid" on "invoice", refetched;
    InvoicePaymentSucceeded => "invoice.payment_succeeded" on "invoice", refetched;
    InvoicePaymentFailed => "invoice.payment_failed" on "invoice", notifies, refetched;
    InvoiceFinalized => "invoice.finalized" on "invoice", refetched;
    CustomerSubscriptionCreated => "customer.subscription.created" on "subscription", refetched;
    CustomerSubscriptionUpdated => "customer.subscription.updated" on "subscription", refetched;
    CustomerSubscriptionDeleted => "customer.subscription.deleted" on "subscription", refetched;
    CustomerSubscriptionTrialWillEnd => "customer.subscription.trial_will_end" on "subscription", notifies;
    ChargeFailed => "charge.failed" on "charge";
    ChargeRefunded => "charge.refunded" on "charge";
    ChargeDisputeCreated => "charge.dispute.created" on "dispute", notifies;
    ChargeDisputeUpdated => "charge.dispute.updated" on "dispute";
    ChargeDisputeClosed => "charge.dispute.closed" on "dispute", notifies;
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
    fn each_type_names_the_object_its_fixture_carries() {
        for (name, body) in fixture_files() {
            let event_type = EventType::from(name.as_str());
            if let EventType::Other(_) = event_type {
                continue;
            }
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                event_type.object_type(),
                event["data"]["object"]["object"].as_str(),
                "{name}"
            );
        }
        assert_eq!(EventType::from("payout.paid").object_type(), None);
    }

    #[test]
    fn only_subscription_and_invoice_state_is_refetched() {
        for event_type in EventType::ALL {
            let order_sensitive =
                matches!(event_type.object_type(), Some("subscription" | "invoice"))
                    && *event_type != EventType::CustomerSubscriptionTrialWillEnd;
            assert_eq!(event_type.refetched(), order_sensitive, "{event_type}");
        }
        assert!(!EventType::from("payout.paid").refetched());
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

    #[test]
    fn a_thin_event_parses_with_its_rfc3339_created_and_its_context() {
        let thin = br#"{"id":"evt_test_65R9Ijk8","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered","created":"2026-12-06T10:00:00.000Z","livemode":false,"context":"acct_1Connected","related_object":{"id":"mtr_1","type":"billing.meter","url":"/v1/billing/meters/mtr_1"},"reason":{"type":"request","request":{"id":"req_1","idempotency_key":null}}}"#;
        let event = EventEnvelope::parse(thin).unwrap();
        assert_eq!(event.id, "evt_test_65R9Ijk8");
        assert_eq!(
            event.event_type.as_str(),
            "v1.billing.meter.error_report_triggered"
        );
        assert_eq!(event.created, Some(1_796_551_200));
        assert_eq!(event.livemode, Some(false));
        assert_eq!(event.connected_account(), Some("acct_1Connected"));
        let snapshot = EventEnvelope::parse(
            br#"{"id":"evt_1","type":"invoice.paid","created":1796551200,"account":"acct_2"}"#,
        )
        .unwrap();
        assert_eq!(snapshot.created, Some(1_796_551_200));
        assert_eq!(snapshot.connected_account(), Some("acct_2"));
        for created in [r#""yesterday""#, "{}", "1.5", "true"] {
            let body = format!(r#"{{"id":"evt_1","type":"x","created":{created}}}"#);
            assert!(
                matches!(
                    EventEnvelope::parse(body.as_bytes()),
                    Err(EventError::NotAnEvent(_))
                ),
                "{created}"
            );
        }
    }

    #[test]
    fn a_refused_body_gives_its_id_if_readable_and_a_detail_without_its_values() {
        assert_eq!(
            EventEnvelope::readable_id(br#"{"id":"evt_1Abc","livemode":"x"}"#).as_deref(),
            Some("evt_1Abc")
        );
        for unreadable in [
            &b"not json"[..],
            br#"{"id":5}"#,
            br#"{"id":"evt 1"}"#,
            b"[1]",
        ] {
            assert_eq!(EventEnvelope::readable_id(unreadable), None);
        }
        let err = EventEnvelope::parse(
            br#"{"id":"evt_1","type":"x","livemode":"jane@example.com \" more"}"#,
        )
        .unwrap_err();
        let detail = err.detail();
        assert!(!detail.contains("jane"), "{detail}");
        assert!(detail.contains("expected a boolean"), "{detail}");
        assert!(detail.contains("line 1 column"), "{detail}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = EventEnvelope::parse(&body);
            let _ = EventEnvelope::readable_id(&body);
        }

        #[test]
        fn quoted_strings_never_reach_the_detail(secret in "[a-z]{12}") {
            let body = format!(r#"{{"id":"evt_1","type":"x","livemode":"{secret}"}}"#);
            let detail = EventEnvelope::parse(body.as_bytes()).unwrap_err().detail();
            prop_assert!(!detail.contains(&secret), "{}", detail);
        }

        #[test]
        fn json_shaped_garbage_never_panics(id in ".{0,300}", ty in ".{0,40}", created in any::<i64>()) {
            let body = serde_json::json!({"id": id, "type": ty, "created": created, "livemode": true});
            let _ = EventEnvelope::parse(body.to_string().as_bytes());
        }
    }
}
