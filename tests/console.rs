//! The console (`stripe-webhooks console`): its JSON API after a scripted history sent through the
//! receiver and the processor, and the page in a real headless Chromium.

use std::{collections::HashSet, sync::Arc};

use aws_sdk_dynamodb::types::AttributeValue;
use integration_tests::*;
use receiver::handler::handle as receive;
use serde_json::Value;
use stripe_pipeline::{
    billing::{
        self,
        feed::{self, FeedRecord},
        BillingStore, DynamoBillingStore, Key,
    },
    signature::unix_now,
};
use stripe_webhooks::{console::Console, sqs::Queue};

/// A history of today: what each event is, so expectations are computed from it, not typed in.
struct History {
    bodies: Vec<Vec<u8>>,
    due_soon: i64,
}

fn event(fixture_name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut event: Value =
        serde_json::from_slice(&with_event_id(&fixture(fixture_name), &unique_event_id())).unwrap();
    event["created"] = (unix_now() as i64 - 60).into();
    edit(&mut event["data"]["object"]);
    serde_json::to_vec(&event).unwrap()
}

fn history() -> History {
    let now = unix_now() as i64;
    let paid = |amount: i64, currency: &str| {
        let currency = currency.to_owned();
        event("payment_intent.succeeded", move |o| {
            o["amount"] = amount.into();
            o["amount_received"] = amount.into();
            o["currency"] = currency.into();
        })
    };
    let dispute = |due_by: i64| {
        event("charge.dispute.created", move |o| {
            o["id"] = format!("dp_{:016x}", fastrand::u64(..)).into();
            o["evidence_details"]["due_by"] = due_by.into();
        })
    };
    History {
        bodies: vec![
            paid(1000, "usd"),
            paid(2550, "usd"),
            paid(500, "jpy"),
            paid(1500, "kwd"),
            event("payment_intent.payment_failed", |_| {}),
            event("payment_intent.payment_failed", |_| {}),
            event("charge.failed", |_| {}),
            dispute(now + 10 * 86_400),
            dispute(now + 3 * 86_400 + 3600),
            event("customer.subscription.updated", |_| {}),
            event("customer.created", |_| {}),
        ],
        due_soon: now + 3 * 86_400 + 3600,
    }
}

/// Sends the history through the receiver (the first event twice: one duplicate) and processes it.
async fn run_history(resources: &Resources, history: &History) {
    let receiver = receiver_app(resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    for body in history
        .bodies
        .iter()
        .chain(std::iter::once(&history.bodies[0]))
    {
        let status = receive(&receiver, signed_now(body)).await.unwrap().status();
        assert_eq!(status, 200);
    }
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), history.bodies.len());
    let app = processor_app(resources, None).await;
    // One at a time, so the feed's order is the order they were processed in.
    for message in messages {
        assert!(process_batch(&app, vec![message]).await.is_empty());
    }
}

struct RunningConsole {
    base: String,
    token: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningConsole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn console(resources: &Resources) -> RunningConsole {
    console_at(resources, &dynamodb_endpoint(), &sqs_endpoint()).await
}

/// The console on `resources`, its DynamoDB and SQS clients at the given endpoints.
async fn console_at(resources: &Resources, dynamodb_at: &str, sqs_at: &str) -> RunningConsole {
    let dynamodb = dynamodb(dynamodb_at).await;
    let sqs = sqs(sqs_at).await;
    let token = stripe_webhooks::console::new_token();
    let console = Arc::new(Console {
        dedup: stripe_pipeline::dedup::DynamoDedupStore::new(
            dynamodb.clone(),
            &resources.dedup_table,
            TTL,
            LEASE,
        ),
        billing: DynamoBillingStore::new(dynamodb, &resources.billing_table),
        event_queue: Queue::new(sqs.clone(), &resources.event_queue_url),
        dead_letters: Queue::new(sqs, &resources.dead_letter_queue_url),
        stripe: None,
        time_zone: jiff::tz::TimeZone::UTC,
        time_zone_name: "UTC".to_owned(),
        environment: "integration <test>".to_owned(),
        token: token.clone(),
        sqs_max_message_bytes: 256 * 1024,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, stripe_webhooks::console::router(console))
            .await
            .expect("console serves");
    });
    RunningConsole { base, token, task }
}

async fn get(console: &RunningConsole, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", console.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn ids(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn event_ids(history: &History) -> Vec<String> {
    history
        .bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<Value>(b).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_api_lists_filters_pages_and_totals_a_scripted_day() {
    let resources = create_resources();
    let history = history();
    run_history(&resources, &history).await;
    // One poisoned message waits in the dead-letter queue.
    sqs(&sqs_endpoint())
        .await
        .send_message()
        .queue_url(&resources.dead_letter_queue_url)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let console = console(&resources).await;

    // Newest first: the order processed, reversed.
    let all = get(&console, "/api/events?limit=100").await;
    let mut expected = event_ids(&history);
    let listed = ids(&all);
    assert_eq!(listed.len(), expected.len());
    let recorded: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["recorded_at"].as_i64().unwrap())
        .collect();
    assert!(recorded.windows(2).all(|w| w[0] >= w[1]), "{recorded:?}");
    expected.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    assert!(all["next_cursor"].is_null());
    let card = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["currency"] == "kwd")
        .unwrap();
    assert_eq!(
        (card["amount_display"].as_str(), card["outcome"].as_str()),
        (Some("1.500 KWD"), Some("succeeded"))
    );

    // Filters.
    let failed = get(&console, "/api/events?outcome=failed").await;
    let types: Vec<&str> = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 3, "{types:?}");
    assert!(types.iter().all(|t| t.ends_with("failed")));
    let disputes = get(&console, "/api/events?type=charge.dispute.created").await;
    assert_eq!(ids(&disputes).len(), 2);
    assert!(disputes["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["outcome"] == "disputed"));
    let unknown = get(&console, "/api/events?outcome=unknown").await;
    assert_eq!(
        ids(&unknown).len(),
        2,
        "subscription.updated and customer.created"
    );

    // Pages of 4: 4, 4, 3, each once, in the same order as the single page.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    let mut sizes = Vec::new();
    loop {
        let page = get(&console, &format!("/api/events?limit=4&cursor={cursor}")).await;
        sizes.push(ids(&page).len());
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.replace('|', "%7C").replace('#', "%23"),
            None => break,
        }
    }
    assert_eq!(sizes, [4, 4, 3]);
    assert_eq!(paged, listed);

    // Today's totals, computed from the history.
    let summary = get(&console, "/api/summary").await;
    let succeeded: HashSet<(String, i64)> = summary["succeeded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["currency"].as_str().unwrap().to_owned(),
                s["amount"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: HashSet<(String, i64)> = [("usd", 3550), ("jpy", 500), ("kwd", 1500)]
        .map(|(c, a)| (c.to_owned(), a))
        .into();
    assert_eq!(succeeded, expected);
    assert_eq!(
        summary["failed"], 2,
        "payment attempts, not each event of one decline"
    );
    assert_eq!(summary["open_disputes"]["count"], 2);
    assert_eq!(summary["open_disputes"]["nearest_due_by"], history.due_soon);
    assert!(summary["open_disputes"]["nearest_display"]
        .as_str()
        .unwrap()
        .ends_with("(3 days left)"));
    assert_eq!(summary["dlq"], 1);
    assert_eq!(
        summary["deduplicated"], 1,
        "the first event was delivered twice"
    );

    // One event's detail: what status says, and the feed record.
    let first = &event_ids(&history)[0];
    let detail = get(&console, &format!("/api/events/{first}")).await;
    assert_eq!(detail["intake"]["state"], "enqueued");
    assert!(detail["applied_display"].is_string());
    assert_eq!(detail["record"]["amount_display"], "10.00 USD");

    // The record is carried by the event's exactly-once marker: no item of its own.
    let billing = DynamoBillingStore::new(
        dynamodb(&dynamodb_endpoint()).await,
        &resources.billing_table,
    );
    let marker = billing.get(&Key::event_marker(first)).await.unwrap();
    assert!(
        marker.is_some_and(|m| m.contains_key(feed::PARTITION)),
        "the marker is in the feed index"
    );
    let own_item = Key::new(format!("FEED#{first}"), "FEED");
    assert_eq!(billing.get(&own_item).await.unwrap(), None);
}

#[tokio::test]
async fn a_record_from_before_markers_carried_it_still_shows() {
    // GIVEN a feed record as an item of its own, as the processor wrote them before markers carried
    // them (such items live on until their TTL)
    let resources = create_resources();
    let console = console(&resources).await;
    let body = event("payment_intent.succeeded", |o| {
        o["amount"] = 4200.into();
        o["amount_received"] = 4200.into();
        o["currency"] = "usd".into();
    });
    let event = stripe_pipeline::event::StripeEvent::parse(&body).unwrap();
    let now = unix_now() as i64;
    let mut put = dynamodb(&dynamodb_endpoint())
        .await
        .put_item()
        .table_name(&resources.billing_table)
        .item("pk", AttributeValue::S(format!("FEED#{}", event.id)))
        .item("sk", AttributeValue::S("FEED".to_owned()));
    for (name, value) in FeedRecord::of(&event).marker_attributes(now) {
        put = put.item(
            name,
            match value {
                billing::Value::S(s) => AttributeValue::S(s),
                billing::Value::N(n) => AttributeValue::N(n.to_string()),
                billing::Value::Bool(b) => AttributeValue::Bool(b),
            },
        );
    }
    put.send().await.unwrap();

    // THEN the feed lists it and its detail shows it
    let listed = get(&console, "/api/events").await;
    assert!(ids(&listed).contains(&event.id), "{listed}");
    let detail = get(&console, &format!("/api/events/{}", event.id)).await;
    assert_eq!(detail["record"]["amount_display"], "42.00 USD");
}

#[tokio::test]
async fn a_won_lost_or_closed_dispute_is_not_open_whatever_the_order() {
    let resources = create_resources();
    let now = unix_now() as i64;
    let news = |event_type: &str, dispute: &str, status: &str, due_by: i64| {
        let (dispute, status) = (dispute.to_owned(), status.to_owned());
        let mut body: Value = serde_json::from_slice(&event("charge.dispute.created", move |o| {
            o["id"] = dispute.into();
            o["status"] = status.into();
            o["evidence_details"]["due_by"] = due_by.into();
        }))
        .unwrap();
        body["type"] = event_type.into();
        serde_json::to_vec(&body).unwrap()
    };
    let day = 86_400;
    let history = History {
        bodies: vec![
            news(
                "charge.dispute.created",
                "dp_open_a",
                "needs_response",
                now + 5 * day,
            ),
            // Won: its closing news arrives before its opening (Stripe does not order deliveries).
            news("charge.dispute.closed", "dp_won_b", "won", now + 2 * day),
            news(
                "charge.dispute.created",
                "dp_won_b",
                "needs_response",
                now + 2 * day,
            ),
            news(
                "charge.dispute.created",
                "dp_open_c",
                "needs_response",
                now + day + 3600,
            ),
            news(
                "charge.dispute.updated",
                "dp_open_c",
                "under_review",
                now + day + 3600,
            ),
            news(
                "charge.dispute.created",
                "dp_lost_d",
                "needs_response",
                now + 4 * day,
            ),
            news("charge.dispute.closed", "dp_lost_d", "lost", now + 4 * day),
            news(
                "charge.dispute.created",
                "dp_inquiry_e",
                "warning_needs_response",
                now + 3600,
            ),
            news(
                "charge.dispute.closed",
                "dp_inquiry_e",
                "warning_closed",
                now + 3600,
            ),
        ],
        due_soon: now + day + 3600,
    };
    run_history(&resources, &history).await;
    let console = console(&resources).await;

    let summary = get(&console, "/api/summary").await;
    assert_eq!(
        summary["open_disputes"]["count"], 2,
        "dp_open_a and dp_open_c: {summary}"
    );
    assert_eq!(summary["open_disputes"]["nearest_due_by"], history.due_soon);
    assert!(summary["open_disputes"]["nearest_display"]
        .as_str()
        .unwrap()
        .ends_with("(1 day left)"));
    // Every piece of dispute news still has its card, with the status it reported.
    let all = get(&console, "/api/events?outcome=disputed&limit=100").await;
    let statuses: HashSet<(String, String)> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["object_id"].as_str().unwrap().to_owned(),
                e["object_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(statuses.len(), history.bodies.len());
    assert!(statuses.contains(&("dp_won_b".to_owned(), "won".to_owned())));
}

#[tokio::test]
async fn a_table_or_queue_that_fails_is_a_502_that_names_it_and_echoes_nothing_of_the_error() {
    // GIVEN a console whose DynamoDB and SQS endpoints refuse every connection
    let resources = create_resources();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let console = console_at(&resources, &closed, &closed).await;
    for (path, names) in [
        ("/api/events", "DynamoDB (the feed index) unavailable"),
        (
            "/api/events/evt_1",
            "DynamoDB (the event's status) unavailable",
        ),
    ] {
        // WHEN the page asks for the feed or an event
        let response = reqwest::get(format!("{}{path}", console.base))
            .await
            .unwrap();
        // THEN it gets a 502 that says what failed, and nothing of the SDK's error (its endpoint,
        // the connector's words)
        assert_eq!(response.status(), 502, "{path}");
        let error = response.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.starts_with(names), "{path}: {error}");
        assert!(!error.contains("127.0.0.1"), "{path}: {error}");
        assert!(
            !error.to_lowercase().contains("dispatch"),
            "{path}: {error}"
        );
    }
    // A bad request still says exactly what was wrong.
    let response = reqwest::get(format!("{}/api/events?outcome=golden", console.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unknown outcome \"golden\""
    );
}

#[tokio::test]
async fn actions_need_the_page_token_and_redrive_moves_the_dead_letters() {
    let resources = create_resources();
    let sqs = sqs(&sqs_endpoint()).await;
    sqs.send_message()
        .queue_url(&resources.dead_letter_queue_url)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let console = console(&resources).await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>| {
        let mut request = http
            .post(format!("{}{path}", console.base))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(token) = token {
            request = request.header("x-console-token", token);
        }
        request.send()
    };
    for path in ["/api/events/evt_1/replay", "/api/events/evt_1/redrive"] {
        assert_eq!(post(path, None).await.unwrap().status(), 403, "{path}");
        assert_eq!(
            post(path, Some("0123")).await.unwrap().status(),
            403,
            "{path}"
        );
    }
    assert_eq!(
        get(&console, "/api/summary").await["dlq"],
        1,
        "nothing moved without the token"
    );
    // The page carries the token; the page itself is served to anyone on 127.0.0.1.
    let page = reqwest::get(&console.base)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&console.token));
    assert!(
        page.contains("integration &lt;test&gt;"),
        "the label is escaped"
    );
    let replay = post("/api/events/evt_1/replay", Some(&console.token))
        .await
        .unwrap();
    assert_eq!(replay.status(), 409, "no Stripe API key: replay says why");
    let redrive = post("/api/events/evt_1/redrive", Some(&console.token))
        .await
        .unwrap();
    assert_eq!(redrive.status(), 200);
    assert!(redrive.text().await.unwrap().contains("moved 1 message"));
    assert_eq!(get(&console, "/api/summary").await["dlq"], 0);
    let moved = drain(&sqs, &resources.event_queue_url).await;
    assert_eq!(moved.len(), 1);
}

/// chromedriver on a free port, stopped when dropped.
struct ChromeDriver {
    process: std::process::Child,
    url: String,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn browser_binaries() -> (String, String) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let driver =
        std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned());
    for path in [&chromium, &driver] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} not found: the console's browser test needs Debian's chromium and chromium-driver \
             (`make setup` installs them with apt; or set CHROMIUM and CHROMEDRIVER)"
        );
    }
    (chromium, driver)
}

// The child is killed and waited for by ChromeDriver's Drop, also when the test panics.
#[allow(clippy::zombie_processes)]
async fn chromedriver(binary: &str) -> ChromeDriver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = std::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            return ChromeDriver { process, url };
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {url}");
}

/// Polls `check` until it holds (the page polls its API every 500 ms here), up to 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, fantoccini::error::CmdError>>,
{
    for _ in 0..200 {
        if check().await.unwrap_or(false) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the page never showed {what}");
}

#[tokio::test]
async fn the_page_in_headless_chromium_shows_cards_colours_summary_and_filters() {
    use fantoccini::Locator;
    let (chromium, driver_binary) = browser_binaries();
    let resources = create_resources();
    let history = history();
    run_history(&resources, &history).await;
    let console = console(&resources).await;
    let driver = chromedriver(&driver_binary).await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        }),
    );
    // chromedriver speaks plain HTTP on 127.0.0.1: no TLS client needed.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    browser
        .goto(&format!("{}/?poll=500", console.base))
        .await
        .unwrap();

    // A card per event, newest first.
    let count = history.bodies.len();
    eventually("every card", || async {
        Ok(browser.find_all(Locator::Css("article.card")).await?.len() == count)
    })
    .await;
    let shown: Vec<String> = {
        let mut ids = Vec::new();
        for card in browser
            .find_all(Locator::Css("article.card"))
            .await
            .unwrap()
        {
            ids.push(card.attr("data-event-id").await.unwrap().unwrap());
        }
        ids
    };
    let api = get(&console, "/api/events?limit=100").await;
    assert_eq!(shown, ids(&api), "the page's order is the API's");

    // Colour-coded by outcome (WebDriver reports computed colours as rgba).
    for (outcome, colour) in [
        ("succeeded", "rgba(22, 163, 74, 1)"),
        ("failed", "rgba(220, 38, 38, 1)"),
        ("disputed", "rgba(234, 88, 12, 1)"),
        ("unknown", "rgba(107, 114, 128, 1)"),
    ] {
        let card = browser
            .find(Locator::Css(&format!(
                "article.card[data-outcome='{outcome}']"
            )))
            .await
            .unwrap();
        assert_eq!(
            card.css_value("border-left-color").await.unwrap(),
            colour,
            "{outcome}"
        );
    }

    // Today's summary, as computed from the history.
    let value = |selector: &'static str| {
        let browser = browser.clone();
        async move {
            browser
                .find(Locator::Css(selector))
                .await?
                .attr("data-value")
                .await
                .map(Option::unwrap_or_default)
        }
    };
    eventually("the summary", || async {
        Ok(value("#summary-failed").await? == "2")
    })
    .await;
    assert_eq!(
        value("#summary-succeeded .amount[data-currency='usd']")
            .await
            .unwrap(),
        "3550"
    );
    assert_eq!(
        value("#summary-succeeded .amount[data-currency='jpy']")
            .await
            .unwrap(),
        "500"
    );
    assert_eq!(value("#summary-disputes").await.unwrap(), "2");
    assert_eq!(value("#summary-dlq").await.unwrap(), "0");
    assert_eq!(value("#summary-deduplicated").await.unwrap(), "1");
    let usd = browser
        .find(Locator::Css(
            "#summary-succeeded .amount[data-currency='usd']",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(usd.contains("35.50 USD"), "{usd}");

    // The screenshot the README shows (written under target/, copied to docs/ by hand).
    let screenshot = browser.screenshot().await.unwrap();
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let _ = std::fs::write(format!("{target}/console.png"), screenshot);

    // Filter by outcome: only the failures remain.
    browser
        .find(Locator::Css("#filter-outcome"))
        .await
        .unwrap()
        .select_by_value("failed")
        .await
        .unwrap();
    eventually("only failures", || async {
        let cards = browser.find_all(Locator::Css("article.card")).await?;
        let mut outcomes = Vec::new();
        for card in &cards {
            outcomes.push(card.attr("data-outcome").await?.unwrap_or_default());
        }
        Ok(outcomes.len() == 3 && outcomes.iter().all(|o| o == "failed"))
    })
    .await;
    browser.close().await.unwrap();
}
