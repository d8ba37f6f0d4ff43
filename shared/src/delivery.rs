//! The shapes an event arrives in on the queue, and the one parse that tells them apart.
//!
//! - A **snapshot event** (`"object": "event"`), as a webhook delivers it: the receiver enqueues the
//!   raw body.
//! - The same wrapped by **Amazon EventBridge**, as a rule's SQS target delivers it: `version`, `id`,
//!   `detail-type` (the Stripe event type), `source` (`aws.partner/stripe.com/...`), `time`, `detail`
//!   (the Stripe event).
//! - A **thin event** (`"object": "v2.core.event"`) through either path: small, unversioned, `created`
//!   as an RFC 3339 string, pointing at the changed object through `related_object {id, type, url}`.
//!   It carries no object: the processor fetches it before a handler runs.
//!
//! Handlers never see the difference: everything ends as a [`StripeEvent`].

use serde::Deserialize;

use crate::event::{EventError, EventType, StripeEvent};

/// An event as it came off the queue.
#[derive(Debug)]
pub enum Delivery {
    /// A full event (webhook body or EventBridge `detail`).
    Snapshot {
        /// The event.
        event: StripeEvent,
        /// Whether it came wrapped by EventBridge.
        via_eventbridge: bool,
    },
    /// A thin event: fetch before handling.
    Thin {
        /// The event.
        event: ThinEvent,
        /// Whether it came wrapped by EventBridge.
        via_eventbridge: bool,
    },
}

impl Delivery {
    /// The Stripe event id, whatever the shape.
    pub fn event_id(&self) -> &str {
        match self {
            Self::Snapshot { event, .. } => &event.id,
            Self::Thin { event, .. } => &event.id,
        }
    }

    /// Which ingress it came through, for logs.
    pub fn ingress(&self) -> &'static str {
        match self {
            Self::Snapshot {
                via_eventbridge: true,
                ..
            }
            | Self::Thin {
                via_eventbridge: true,
                ..
            } => "eventbridge",
            _ => "webhook",
        }
    }
}

/// A thin (API v2) event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ThinEvent {
    /// `evt_...`
    pub id: String,
    /// The event type, e.g. `v1.billing.meter.error_report_triggered`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The object the event is about.
    #[serde(default)]
    pub related_object: Option<RelatedObject>,
    /// Live or test mode.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// The connected account or context, if any.
    #[serde(default)]
    pub context: Option<String>,
    /// For the thin form of a v1 event: the id of the snapshot event it mirrors. While an endpoint is
    /// migrated, Stripe sends both (the thin copy with its own id), and both must be one event.
    #[serde(default)]
    pub snapshot_event: Option<String>,
}

/// `related_object` of a thin event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelatedObject {
    /// The object's id.
    pub id: String,
    /// Its type (`subscription`, `v2.billing.meter`, ...).
    #[serde(rename = "type")]
    pub object_type: String,
    /// The API path that retrieves it (`/v1/subscriptions/sub_...`).
    pub url: String,
}

impl ThinEvent {
    /// `created` as unix seconds.
    pub fn created_unix(&self) -> Result<i64, EventError> {
        parse_rfc3339(&self.created).ok_or(EventError::InvalidTimestamp)
    }

    /// The id the event's effects are recorded under: the snapshot event's id when this thin event
    /// mirrors one, so that the two copies share one exactly-once marker and one record per
    /// notification (one effect, one message), else its own.
    pub fn effect_id(&self) -> &str {
        self.snapshot_event
            .as_deref()
            .filter(|id| !id.is_empty())
            .unwrap_or(&self.id)
    }

    /// The snapshot event a handler needs, given the related object as fetched now, under
    /// [`Self::effect_id`]. Thin event types for v1 objects carry a `v1.` prefix
    /// (`v1.customer.subscription.updated`); it is dropped so the same handler runs.
    pub fn into_snapshot(self, object_json: String) -> Result<StripeEvent, EventError> {
        let created = self.created_unix()?;
        let event_type = self
            .event_type
            .strip_prefix("v1.")
            .unwrap_or(&self.event_type);
        let object = serde_json::value::RawValue::from_string(object_json)
            .map_err(EventError::NotAnEvent)?;
        Ok(StripeEvent {
            id: self.effect_id().to_owned(),
            event_type: EventType::from(event_type),
            created,
            livemode: self.livemode,
            api_version: None,
            account: self.context,
            request: None,
            data: crate::event::EventData {
                object,
                previous_attributes: None,
            },
        })
    }
}

/// The fields that tell the shapes apart.
#[derive(Deserialize)]
struct Shape<'a> {
    #[serde(default, rename = "detail-type")]
    detail_type: Option<&'a str>,
    #[serde(default, borrow)]
    detail: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    object: Option<&'a str>,
}

/// Parses a queued body into a [`Delivery`].
pub fn parse_delivery(body: &[u8]) -> Result<Delivery, EventError> {
    parse_shape(body, false)
}

fn parse_shape(body: &[u8], via_eventbridge: bool) -> Result<Delivery, EventError> {
    let shape: Shape<'_> = serde_json::from_slice(body).map_err(EventError::NotAnEvent)?;
    match (shape.detail_type, shape.detail, shape.object) {
        // Unwrap once: a detail that is itself wrapped is not something EventBridge sends.
        (Some(_), Some(detail), _) if !via_eventbridge => {
            parse_shape(detail.get().as_bytes(), true)
        }
        (_, _, Some("v2.core.event")) => {
            let event: ThinEvent = serde_json::from_slice(body).map_err(EventError::NotAnEvent)?;
            if event.id.is_empty() {
                return Err(EventError::InvalidId);
            }
            event.created_unix()?;
            Ok(Delivery::Thin {
                event,
                via_eventbridge,
            })
        }
        _ => Ok(Delivery::Snapshot {
            event: StripeEvent::parse(body)?,
            via_eventbridge,
        }),
    }
}

/// Wraps a Stripe event the way an EventBridge rule's SQS target delivers it: the event as `detail`,
/// its type as `detail-type`, the partner source as `source`, the rule's time as `time`. For local
/// runs and tests, which have no EventBridge: the CLI's `send --via eventbridge` and the suites put
/// exactly this on the queue.
pub fn wrap_as_eventbridge(
    event: &[u8],
    partner_source: &str,
    now_unix: i64,
) -> Result<Vec<u8>, EventError> {
    let detail: serde_json::Value =
        serde_json::from_slice(event).map_err(EventError::NotAnEvent)?;
    let Some(detail_type) = detail["type"].as_str().map(str::to_owned) else {
        return Err(EventError::EmptyType);
    };
    let envelope = serde_json::json!({
        "version": "0",
        "id": format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", fastrand::u32(..), fastrand::u16(..),
                      fastrand::u16(..0x1000), fastrand::u16(..0x1000), fastrand::u64(..1 << 48)),
        "detail-type": detail_type,
        "source": partner_source,
        "account": "000000000000",
        "time": format_rfc3339(now_unix),
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    });
    serde_json::to_vec(&envelope).map_err(EventError::NotAnEvent)
}

/// The thin (v2) form of a snapshot event of a v1 object, as an event destination with the thin
/// payload style sends it: the same id, `v1.`-prefixed type, RFC 3339 `created`, and a
/// `related_object` whose `url` retrieves the object (`/v1/subscriptions/sub_...`). `None` when the
/// event's object has no id or no known API path.
pub fn thin_of(event: &[u8]) -> Option<Vec<u8>> {
    let snapshot: serde_json::Value = serde_json::from_slice(event).ok()?;
    let object = &snapshot["data"]["object"];
    let (id, kind) = (object["id"].as_str()?, object["object"].as_str()?);
    let url = format!("/v1/{}/{id}", v1_collection(kind)?);
    let thin = serde_json::json!({
        "id": snapshot["id"],
        "object": "v2.core.event",
        "type": format!("v1.{}", snapshot["type"].as_str()?),
        "livemode": snapshot["livemode"],
        "created": format_rfc3339(snapshot["created"].as_i64()?),
        "related_object": {"id": id, "type": kind, "url": url},
    });
    serde_json::to_vec(&thin).ok()
}

/// The v1 API collection an object type is retrieved from.
pub fn v1_collection(object_type: &str) -> Option<&'static str> {
    Some(match object_type {
        "subscription" => "subscriptions",
        "invoice" => "invoices",
        "payment_intent" => "payment_intents",
        "charge" => "charges",
        "dispute" => "disputes",
        "checkout.session" => "checkout/sessions",
        "customer" => "customers",
        "refund" => "refunds",
        _ => return None,
    })
}

/// Unix seconds → `2026-11-24T10:00:00Z` (UTC, no fraction).
pub fn format_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

/// `2024-09-27T13:34:52.123Z` or with an offset (`+02:00`) → unix seconds. Fractions are dropped.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't')
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`] (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/stripe/events/invoice.paid.json");

    /// How a rule's SQS target delivers a Stripe event: the EventBridge envelope with the event as
    /// `detail` and its type as `detail-type`.
    pub(crate) fn eventbridge(detail: &str, detail_type: &str) -> String {
        format!(
            r#"{{"version":"0","id":"6a7e8feb-b491-4cf7-a9f1-bf3703467718","detail-type":"{detail_type}","source":"aws.partner/stripe.com/ed_test_61ABC","account":"123456789012","time":"2026-11-24T10:00:00Z","region":"us-east-1","resources":[],"detail":{detail}}}"#
        )
    }

    const THIN: &str = r#"{"id":"evt_test_65R9Ijk8","object":"v2.core.event","type":"v1.customer.subscription.updated","livemode":false,"created":"2026-11-24T10:00:00.123Z","related_object":{"id":"sub_1","type":"subscription","url":"/v1/subscriptions/sub_1"},"reason":{"type":"request","request":{"id":"req_1","idempotency_key":null}}}"#;

    #[test]
    fn each_shape_parses_to_its_delivery() {
        let Delivery::Snapshot {
            event,
            via_eventbridge: false,
        } = parse_delivery(FIXTURE.as_bytes()).unwrap()
        else {
            panic!("webhook body is a snapshot")
        };
        assert_eq!(event.event_type, EventType::InvoicePaid);
        let wrapped = eventbridge(FIXTURE, "invoice.paid");
        let Delivery::Snapshot {
            event: inner,
            via_eventbridge: true,
        } = parse_delivery(wrapped.as_bytes()).unwrap()
        else {
            panic!("EventBridge envelope is unwrapped")
        };
        assert_eq!(inner.id, event.id);
        assert_eq!(inner.data.object.get(), event.data.object.get());
        for (body, via) in [
            (THIN.to_owned(), false),
            (eventbridge(THIN, "v1.customer.subscription.updated"), true),
        ] {
            let Delivery::Thin {
                event,
                via_eventbridge,
            } = parse_delivery(body.as_bytes()).unwrap()
            else {
                panic!("thin event")
            };
            assert_eq!(via_eventbridge, via);
            assert_eq!(
                event.related_object.as_ref().unwrap().url,
                "/v1/subscriptions/sub_1"
            );
            assert_eq!(event.created_unix().unwrap(), 1_795_514_400);
        }
    }

    #[test]
    fn a_thin_event_becomes_the_snapshot_its_handler_takes() {
        let Delivery::Thin { event, .. } = parse_delivery(THIN.as_bytes()).unwrap() else {
            panic!()
        };
        let snapshot = event
            .into_snapshot(r#"{"id":"sub_1","customer":"cus_1","status":"active"}"#.to_owned())
            .unwrap();
        assert_eq!(snapshot.event_type, EventType::CustomerSubscriptionUpdated);
        assert_eq!(snapshot.created, 1_795_514_400);
        assert_eq!(snapshot.id, "evt_test_65R9Ijk8");
    }

    #[test]
    fn a_thin_copy_of_a_snapshot_event_is_recorded_under_the_snapshot_id() {
        let copy = THIN.replacen(
            r#""object""#,
            r#""snapshot_event": "evt_1SnapshotOfIt", "object""#,
            1,
        );
        let Delivery::Thin { event, .. } = parse_delivery(copy.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(
            event.id, "evt_test_65R9Ijk8",
            "the delivery keeps its own id"
        );
        let snapshot = event
            .into_snapshot(r#"{"id":"sub_1","customer":"cus_1","status":"active"}"#.to_owned())
            .unwrap();
        assert_eq!(snapshot.id, "evt_1SnapshotOfIt");
    }

    #[test]
    fn the_local_eventbridge_wrapper_and_thin_form_parse_back_to_the_same_event() {
        let wrapped = wrap_as_eventbridge(
            FIXTURE.as_bytes(),
            "aws.partner/stripe.com/ed_local",
            1_795_000_000,
        )
        .unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(&wrapped).unwrap();
        assert_eq!(envelope["detail-type"], "invoice.paid");
        assert_eq!(envelope["time"], "2026-11-18T11:06:40Z");
        let Delivery::Snapshot {
            event,
            via_eventbridge: true,
        } = parse_delivery(&wrapped).unwrap()
        else {
            panic!("an EventBridge snapshot");
        };
        let original = StripeEvent::parse(FIXTURE.as_bytes()).unwrap();
        assert_eq!(
            (event.id, event.created),
            (original.id.clone(), original.created)
        );

        let thin = thin_of(FIXTURE.as_bytes()).unwrap();
        let Delivery::Thin {
            event,
            via_eventbridge: false,
        } = parse_delivery(&thin).unwrap()
        else {
            panic!("a thin event");
        };
        assert_eq!(event.event_type, "v1.invoice.paid");
        assert_eq!(event.created_unix().unwrap(), original.created);
        let related = event.related_object.unwrap();
        assert!(
            related.url.starts_with("/v1/invoices/in_"),
            "{}",
            related.url
        );
    }

    proptest! {
        #[test]
        fn formatted_times_parse_back(unix in -62_135_596_800i64..253_402_300_799) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(unix)), Some(unix));
        }
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2000-02-29T12:00:00.5+02:00"),
            Some(951_818_400)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T10:00:00-01:30"),
            Some(1_795_514_400 + 5400)
        );
        for bad in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T10:00:00",
            "2026-11-24T10:00:00.Z",
            "2026-11-24 10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_is_none_of_the_shapes_is_an_error() {
        for body in [
            "",
            "[]",
            r#"{"detail-type":"x","detail":5}"#,
            r#"{"object":"v2.core.event","id":"evt_1","type":"x","created":"yesterday"}"#,
            r#"{"hello":"world"}"#,
        ] {
            assert!(parse_delivery(body.as_bytes()).is_err(), "{body}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_delivery(&body);
        }

        #[test]
        fn arbitrary_times_never_panic(text in ".{0,40}") {
            let _ = parse_rfc3339(&text);
        }
    }
}
