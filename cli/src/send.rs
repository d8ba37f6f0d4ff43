//! `send`: the offline stand-in for `stripe trigger`. Signs Stripe event fixtures the way Stripe does
//! (`Stripe-Signature: t=…,v1=…`, HMAC-SHA256 keyed with the whole `whsec_…`) and posts them to a
//! receiver, optionally many times, twice each, concurrently and shuffled, to watch dedup at work.
//!
//! There is no EventBridge to run locally, so [`put_as_eventbridge`] plays Stripe's EventBridge
//! destination instead: each event wrapped as a rule's SQS target wraps it, put straight on the event
//! queue with no receiver (and no dedup) in front, so `make dev` exercises both ingresses.

use std::path::{Path, PathBuf};

use futures::{stream, StreamExt};
use stripe_pipeline::signature::{sign, unix_now, SigningSecret};

/// Why events could not be prepared or sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Neither a file nor a fixture of that name.
    #[error("no such file or fixture: {0} (fixtures are in {1})")]
    NoSuchEvent(String, PathBuf),
    /// The file could not be read.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The file is not a JSON object with an `id`.
    #[error("{0} is not a Stripe event")]
    NotAnEvent(PathBuf),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// One event to send: a fixture as it is, or a copy under a fresh id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The exact bytes to sign and post.
    pub body: Vec<u8>,
}

/// The fixture directory of this repository.
pub fn fixtures_dir(repo_root: &Path) -> PathBuf {
    repo_root.join("tests/fixtures/stripe/events")
}

/// Reads `spec` — a path to a JSON file, or a fixture name (`invoice.paid`) — and makes `count`
/// events of it: the file as it is when `count` is 1, else copies with fresh ids
/// (`evt_local<16 hex>`), so each is a new event to the dedup table.
pub fn prepare(spec: &str, fixtures: &Path, count: usize) -> Result<Vec<Outgoing>, SendError> {
    let as_path = PathBuf::from(spec);
    let path = if as_path.is_file() {
        as_path
    } else {
        let fixture = fixtures.join(format!("{spec}.json"));
        if !fixture.is_file() {
            return Err(SendError::NoSuchEvent(spec.to_owned(), fixtures.to_owned()));
        }
        fixture
    };
    let raw = std::fs::read(&path).map_err(|e| SendError::Read(path.clone(), e))?;
    let event: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| SendError::NotAnEvent(path.clone()))?;
    let text = |field: &str| event[field].as_str().map(str::to_owned);
    let (Some(id), Some(event_type)) = (text("id"), text("type")) else {
        return Err(SendError::NotAnEvent(path));
    };
    if count == 1 {
        return Ok(vec![Outgoing {
            event_id: id,
            event_type,
            body: raw,
        }]);
    }
    (0..count)
        .map(|_| {
            let mut copy = event.clone();
            let id = format!("evt_local{:016x}", fastrand::u64(..));
            copy["id"] = serde_json::Value::String(id.clone());
            let body = serde_json::to_vec_pretty(&copy)
                .map_err(|_| SendError::NotAnEvent(path.clone()))?;
            Ok(Outgoing {
                event_id: id,
                event_type: event_type.clone(),
                body,
            })
        })
        .collect()
}

/// How to send to a receiver.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The receiver's URL.
    pub url: String,
    /// The secret to sign with.
    pub secret: SigningSecret,
    /// How many times, in what order, how many at once.
    pub pacing: Pacing,
}

/// How many times, in what order and how many at once events are delivered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacing {
    /// Deliver each event twice.
    pub duplicate: bool,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliver in random order (duplicates included), not one event after another.
    pub shuffle: bool,
}

/// The answer to one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The HTTP status, or `None` if the receiver could not be reached.
    pub status: Option<u16>,
    /// The answer's body, or the connection error.
    pub answer: String,
}

impl Delivery {
    /// Whether the receiver took it (200, enqueued or duplicate).
    pub fn accepted(&self) -> bool {
        self.status == Some(200)
    }
}

/// What `send` prints: one line per delivery, then the totals.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryReport<'a> {
    /// The answers, in the order they came.
    pub deliveries: &'a [Delivery],
    /// Where they went (a URL, or the queue for `--via eventbridge`).
    pub target: &'a str,
}

impl DeliveryReport<'_> {
    /// Whether every delivery was accepted: the command's success.
    pub fn all_accepted(&self) -> bool {
        self.deliveries.iter().all(Delivery::accepted)
    }

    /// Accepted deliveries whose answer says `needle`.
    fn accepted_saying(&self, needle: &str) -> usize {
        self.deliveries
            .iter()
            .filter(|d| d.accepted() && d.answer.contains(needle))
            .count()
    }
}

impl std::fmt::Display for DeliveryReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for delivery in self.deliveries {
            let status = delivery
                .status
                .map_or_else(|| "unreachable".to_owned(), |s| s.to_string());
            writeln!(
                f,
                "{} {}: {status} {}",
                delivery.event_id,
                delivery.event_type,
                delivery.answer.trim()
            )?;
        }
        let refused = self.deliveries.iter().filter(|d| !d.accepted()).count();
        writeln!(
            f,
            "{} deliveries to {}: {} enqueued, {} duplicate, {refused} not accepted",
            self.deliveries.len(),
            self.target,
            self.accepted_saying("enqueued") + self.accepted_saying("queued as message"),
            self.accepted_saying("duplicate"),
        )
    }
}

/// An HTTP client for [`send`]; the first request may wait for `cargo lambda watch` to build the
/// receiver, so the timeout is long.
pub fn client() -> Result<reqwest::Client, SendError> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(SendError::Client)
}

/// Signs (at the moment of sending) and posts every event, returning the answers in the order the
/// deliveries were made.
pub async fn send(
    http: &reqwest::Client,
    options: &SendOptions,
    events: &[Outgoing],
) -> Vec<Delivery> {
    stream::iter(deliveries(options.pacing, events))
        .map(|event| deliver(http, options, event))
        .buffered(options.pacing.concurrency.max(1))
        .collect()
        .await
}

async fn deliver(http: &reqwest::Client, options: &SendOptions, event: &Outgoing) -> Delivery {
    let signature = sign(&event.body, &options.secret, unix_now());
    let result = http
        .post(&options.url)
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(event.body.clone())
        .send()
        .await;
    let (status, answer) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            (Some(status), response.text().await.unwrap_or_default())
        }
        Err(error) => (None, error.to_string()),
    };
    Delivery {
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        status,
        answer,
    }
}

/// The partner event source `send --via eventbridge` names in its envelopes.
pub const LOCAL_PARTNER_SOURCE: &str = "aws.partner/stripe.com/ed_local_dev";

/// Puts every event (twice with `duplicate`, in random order with `shuffle`) on the event queue wrapped
/// the way an EventBridge rule's SQS target delivers it. A delivery's status is 200 when SQS took the
/// message, `None` when it could not be sent.
pub async fn put_as_eventbridge(
    queue: &crate::sqs::Queue,
    pacing: Pacing,
    events: &[Outgoing],
) -> Vec<Delivery> {
    stream::iter(deliveries(pacing, events))
        .map(|event| async move {
            let wrapped = stripe_pipeline::delivery::wrap_as_eventbridge(
                &event.body,
                LOCAL_PARTNER_SOURCE,
                unix_now() as i64,
            )
            .map(|body| String::from_utf8_lossy(&body).into_owned());
            let result = match wrapped {
                Ok(body) => queue.send_body(body).await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            let (status, answer) = match result {
                Ok(message_id) => (Some(200), format!("queued as message {message_id}")),
                Err(error) => (None, error),
            };
            Delivery {
                event_id: event.event_id.clone(),
                event_type: event.event_type.clone(),
                status,
                answer,
            }
        })
        .buffered(pacing.concurrency.max(1))
        .collect()
        .await
}

/// Each event once (twice with `duplicate`), shuffled if asked.
fn deliveries(pacing: Pacing, events: &[Outgoing]) -> Vec<&Outgoing> {
    let copies = if pacing.duplicate { 2 } else { 1 };
    let mut deliveries: Vec<&Outgoing> = events
        .iter()
        .flat_map(|e| std::iter::repeat_n(e, copies))
        .collect();
    if pacing.shuffle {
        fastrand::shuffle(&mut deliveries);
    }
    deliveries
}

/// The secret `make dev` uses: the first of `STRIPE_WEBHOOK_SECRET`, else `.local/webhook-secret`.
pub fn local_secret(from_env: Option<&str>, repo_root: &Path) -> Option<SigningSecret> {
    let first = from_env
        .and_then(|list| list.split(',').map(str::trim).find(|s| !s.is_empty()))
        .map(str::to_owned)
        .or_else(|| {
            std::fs::read_to_string(repo_root.join(".local/webhook-secret"))
                .ok()
                .map(|s| s.trim().to_owned())
        })?;
    SigningSecret::new(first).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_report_lists_each_answer_and_counts_only_accepted_ones() {
        let delivery = |id: &str, status: Option<u16>, answer: &str| Delivery {
            event_id: id.to_owned(),
            event_type: "invoice.paid".to_owned(),
            status,
            answer: answer.to_owned(),
        };
        let deliveries = [
            delivery("evt_1", Some(200), "enqueued\n"),
            delivery("evt_2", Some(200), "duplicate"),
            delivery("evt_3", Some(400), "bad signature: no v1"),
            delivery("evt_4", None, "connection refused"),
        ];
        let report = DeliveryReport {
            deliveries: &deliveries,
            target: "http://127.0.0.1:9000",
        };
        assert_eq!(
            report.to_string(),
            "evt_1 invoice.paid: 200 enqueued\n\
             evt_2 invoice.paid: 200 duplicate\n\
             evt_3 invoice.paid: 400 bad signature: no v1\n\
             evt_4 invoice.paid: unreachable connection refused\n\
             4 deliveries to http://127.0.0.1:9000: 1 enqueued, 1 duplicate, 2 not accepted\n"
        );
        assert!(!report.all_accepted());
        assert!(DeliveryReport {
            deliveries: &deliveries[..2],
            target: "x",
        }
        .all_accepted());
    }

    fn fixtures() -> PathBuf {
        fixtures_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
    }

    #[test]
    fn one_copy_is_the_fixture_byte_for_byte_and_more_get_fresh_ids() {
        let one = prepare("invoice.paid", &fixtures(), 1).unwrap();
        assert_eq!(
            one[0].body,
            std::fs::read(fixtures().join("invoice.paid.json")).unwrap()
        );
        assert_eq!(one[0].event_type, "invoice.paid");
        let three = prepare("invoice.paid", &fixtures(), 3).unwrap();
        let ids: std::collections::HashSet<_> = three.iter().map(|o| &o.event_id).collect();
        assert_eq!(ids.len(), 3);
        assert!(three.iter().all(|o| o.event_id.starts_with("evt_local")));
        assert!(matches!(
            prepare("no.such.type", &fixtures(), 1),
            Err(SendError::NoSuchEvent(..))
        ));
    }
}
