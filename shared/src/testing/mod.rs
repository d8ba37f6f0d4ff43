//! Generated Stripe event histories for tests: one customer's subscription, payments, credits and
//! refund, as consistent events built from the fixtures (whose ids do not line up on their own).
//! Shared by the unit property tests and the integration tests so both check the same histories.
//! Also [`LogCapture`], the functions' log lines as a test sees them; [`billing_state`], the billing
//! table as the tests and the chaos suite compare it; [`resources::Resources`], a run's tables and
//! queues made from the template; and [`slack::FakeSlack`], a Slack webhook that records what it
//! accepts.

pub mod resources;
pub mod slack;

use serde_json::{json, Value};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            "../../../tests/fixtures/stripe/events/",
            $name,
            ".json"
        ))
    };
}

/// One customer's events, in the order Stripe created them.
#[derive(Debug, Clone)]
pub struct History {
    /// `cus_...`
    pub customer: String,
    /// `sub_...`
    pub subscription: String,
    /// The payment that bought credits.
    pub payment_intent: String,
    /// Raw event bodies, oldest first (strictly increasing `created`).
    pub events: Vec<Vec<u8>>,
    /// The period end the last paid invoice covers.
    pub paid_until: i64,
    /// Credits the checkout sold.
    pub credits: i64,
}

fn event(template: &str, id: String, created: i64, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut event: Value = serde_json::from_str(template).unwrap_or(Value::Null);
    event["id"] = json!(id);
    event["created"] = json!(created);
    edit(&mut event["data"]["object"]);
    serde_json::to_vec(&event).unwrap_or_default()
}

/// A history for customer `tag` starting at `t0`: subscription created, credits bought (the session and
/// its payment), first invoice paid, plan changed with cancel at period end, a renewal failing and then paid, the credit payment
/// refunded, the subscription deleted. With `refund` false the credit payment is not refunded.
pub fn customer_history(tag: &str, t0: i64, refund: bool) -> History {
    let customer = format!("cus_{tag}");
    let subscription = format!("sub_{tag}");
    let payment_intent = format!("pi_{tag}");
    let (period_1, period_2) = (t0 + 30 * 86_400, t0 + 60 * 86_400);
    let id = |n: u32| format!("evt_{tag}_{n:02}");
    let sub_event =
        |template: &str, n: u32, at: i64, status: &str, plan: &str, cancel: bool, end: i64| {
            let (customer, subscription) = (customer.clone(), subscription.clone());
            let (status, plan) = (status.to_owned(), plan.to_owned());
            event(template, id(n), at, move |o| {
                o["id"] = json!(subscription);
                o["customer"] = json!(customer);
                o["status"] = json!(status);
                o["cancel_at_period_end"] = json!(cancel);
                o["items"]["data"][0]["price"]["id"] = json!(plan);
                o["items"]["data"][0]["current_period_end"] = json!(end);
            })
        };
    let invoice_event = |template: &str, n: u32, at: i64, invoice: &str, status: &str, end: i64| {
        let (customer, subscription) = (customer.clone(), subscription.clone());
        let (invoice, status) = (invoice.to_owned(), status.to_owned());
        event(template, id(n), at, move |o| {
            o["id"] = json!(invoice);
            o["customer"] = json!(customer);
            o["status"] = json!(status);
            o["parent"]["subscription_details"]["subscription"] = json!(subscription);
            o["lines"]["data"][0]["period"]["end"] = json!(end);
        })
    };
    let credits = 100;
    let mut events = vec![
        sub_event(
            fixture!("customer.subscription.created"),
            1,
            t0,
            "active",
            "price_basic",
            false,
            period_1,
        ),
        event(
            fixture!("checkout.session.completed"),
            id(2),
            t0 + 10,
            |o| {
                o["id"] = json!(format!("cs_{tag}"));
                o["customer"] = json!(customer);
                o["mode"] = json!("payment");
                o["payment_intent"] = json!(payment_intent);
                o["metadata"] = json!({ "credits": credits.to_string() });
            },
        ),
        // The credit purchase's payment, as Stripe sends it beside the session: the one message of
        // the history whose sending does not depend on delivery order.
        event(fixture!("payment_intent.succeeded"), id(10), t0 + 11, |o| {
            o["id"] = json!(payment_intent);
            o["customer"] = json!(customer);
        }),
        invoice_event(
            fixture!("invoice.paid"),
            3,
            t0 + 20,
            &format!("in_{tag}_1"),
            "paid",
            period_1,
        ),
        sub_event(
            fixture!("customer.subscription.updated"),
            4,
            t0 + 30,
            "active",
            "price_pro",
            true,
            period_1,
        ),
        invoice_event(
            fixture!("invoice.payment_failed"),
            5,
            t0 + 40,
            &format!("in_{tag}_2"),
            "open",
            period_2,
        ),
        sub_event(
            fixture!("customer.subscription.updated"),
            6,
            t0 + 50,
            "active",
            "price_pro",
            true,
            period_2,
        ),
        invoice_event(
            fixture!("invoice.paid"),
            7,
            t0 + 60,
            &format!("in_{tag}_2"),
            "paid",
            period_2,
        ),
    ];
    if refund {
        events.push(event(fixture!("charge.refunded"), id(8), t0 + 70, |o| {
            o["id"] = json!(format!("ch_{tag}"));
            o["customer"] = json!(customer);
            o["payment_intent"] = json!(payment_intent);
            o["refunded"] = json!(true);
        }));
    }
    events.push(sub_event(
        fixture!("customer.subscription.deleted"),
        9,
        t0 + 80,
        "canceled",
        "price_pro",
        true,
        period_2,
    ));
    History {
        customer,
        subscription,
        payment_intent,
        events,
        paid_until: period_2,
        credits,
    }
}

/// The JSON lines the functions' own subscriber ([`crate::telemetry::json_lines`] with
/// [`crate::telemetry::log_filter`] at INFO) writes on this thread while the capture lives.
#[derive(Debug)]
pub struct LogCapture {
    buffer: SharedBuffer,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Debug, Clone, Default)]
struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Starts capturing. A single-threaded test runtime (tokio's default for `#[tokio::test]`) keeps
    /// every line of the code under test on this thread.
    pub fn start() -> Self {
        use crate::telemetry::{json_lines, log_filter};
        let buffer = SharedBuffer::default();
        let writer = buffer.clone();
        let subscriber = json_lines(
            log_filter(tracing::level_filters::LevelFilter::INFO),
            move || writer.clone(),
        );
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every line so far, each parsed as the one JSON object it must be.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.buffer.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect()
    }
}

/// The billing state in `table`: every item except what is not state (exactly-once markers, which
/// carry the feed records, and dispute entries), keyed by `(pk, sk)`, each as its other attributes in
/// sorted `name=value` text (`sent_at` left out: it is a clock). Read with consistent scans.
pub async fn billing_state(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<std::collections::BTreeMap<(String, String), String>, aws_sdk_dynamodb::Error> {
    let mut state = std::collections::BTreeMap::new();
    for item in scan(client, table).await? {
        let text = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        let (pk, sk) = (text("pk"), text("sk"));
        if sk == "EVENT" || pk.starts_with("FEED#") {
            continue;
        }
        let mut fields: Vec<String> = item
            .iter()
            .filter(|(k, _)| *k != "pk" && *k != "sk" && *k != "sent_at")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        fields.sort();
        state.insert((pk, sk), fields.join(","));
    }
    Ok(state)
}

/// Every item of `table`, read with consistent scans, page after page.
pub async fn scan(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<
    Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    aws_sdk_dynamodb::Error,
> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let output = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await?;
        items.extend(output.items.unwrap_or_default());
        start = output.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}
