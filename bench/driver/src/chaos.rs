//! The chaos suite: Stripe-like deliveries of generated customer histories through receiver → SQS →
//! processor while a fault proxy breaks the functions' connections to DynamoDB and SQS and the
//! processor is killed mid-batch; then checks that nothing was lost or applied twice.
//!
//! - **Stripe** (the sender): every event is delivered until it gets a 2xx, signed afresh per attempt,
//!   retried with exponential backoff on anything else (including a 10 s timeout, as Stripe's). Events
//!   of one customer are spread and shuffled, so they arrive out of order; some are delivered again
//!   after their 2xx (redeliveries, resends), some twice at the same moment (concurrent duplicates).
//! - **The receiver** runs in this process: `receiver::handler::handle`, the function `main.rs` serves,
//!   wired like `main.rs` but with DynamoDB and SQS behind the proxy.
//! - **The event source mapping** is played by the CLI's poller (`stripe_webhooks::poll::Poller`, what
//!   `stripe-webhooks poll` runs), several at once, receiving from the queue directly (the Lambda
//!   service's poller is not behind our network) and calling `processor::handler::handle` in process
//!   (DynamoDB behind the proxy, Slack a fake that sometimes answers 500); it deletes what succeeded
//!   and leaves failures to come back after the visibility timeout, exactly as with
//!   `ReportBatchItemFailures`. A share of batches is **killed**: the invocation is dropped at a
//!   random point, mid-flight requests and all, and nothing of the batch is deleted (the process
//!   died).
//! - **Poison messages** (bodies that are no Stripe event) are put on the queue; they must end in the
//!   DLQ after `MaxReceiveCount` receives, and nothing else may.
//!
//! The check compares each customer's final billing state with the same history applied once, in
//! order, without faults (a reference run on its own tables), the way `tests/processor.rs` does.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use lambda_http::{http, Body, Request};
use stripe_pipeline::{
    queue::attribute,
    signature::{sign, unix_now, SigningSecret},
    testing::{customer_history, slack::FakeSlack},
};
use stripe_webhooks::{
    poll::{PollSettings, Poller, Target},
    sqs::{message_attribute, Queue},
};
use tokio::sync::Semaphore;

use crate::{
    proxy::{FaultPlan, FaultProxy},
    wiring::{self, ProcessorApp, ReceiverApp, SECRET},
    Error,
};

/// Every history starts here (the same for all, so one reference per shape serves every customer).
const T0: i64 = 1_800_000_000;
/// The queue's visibility timeout during the run: how soon a failed or killed message comes back.
const VISIBILITY_SECS: i32 = 3;
/// The notification claim lease during the run: below VISIBILITY_SECS, as 30 s is below 200 s deployed.
const NOTIFY_LEASE_SECS: i64 = 2;
/// How often a sender held back by the backlog cap looks again.
const BACKLOG_POLL: Duration = Duration::from_millis(50);
/// How long Stripe waits for an answer.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one event may take to be acknowledged before it counts as lost.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Customer histories (9 or 8 events each).
    pub customers: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Concurrent processor invocations.
    pub pollers: usize,
    /// Stripe holds back new first deliveries while this many enqueued messages are not yet
    /// processed. Stripe's own pace is set by the team's traffic, not by our queue; the cap keeps
    /// moto, which slows down sharply under a deep queue, answering, without changing what is tested
    /// (retries, redeliveries and duplicates still overlap with processing and faults).
    pub max_backlog: u64,
    /// Poison messages put on the queue.
    pub poison: usize,
    /// Share of deliveries repeated after their 2xx.
    pub redeliver: f64,
    /// Share of deliveries sent twice at once.
    pub concurrent_duplicate: f64,
    /// Share of processor invocations killed mid-batch.
    pub kill: f64,
    /// Share of Slack posts answered 500.
    pub slack_failure: f64,
    /// The proxy's faults.
    pub faults: FaultPlan,
    /// Where to write the JSON summary.
    pub json: Option<String>,
}

#[derive(Debug, Default)]
struct Tally {
    deliveries: AtomicU64,
    retries: AtomicU64,
    redeliveries: AtomicU64,
    concurrent_duplicates: AtomicU64,
    acknowledged: AtomicU64,
    /// Receiver answers "enqueued" (a message put on the queue).
    enqueued: AtomicU64,
    /// Messages the pollers deleted after the processor handled them.
    deleted: AtomicU64,
    lost: AtomicU64,
    invocations: AtomicU64,
    kills: AtomicU64,
    messages_received: AtomicU64,
    message_failures: AtomicU64,
    /// BACKLOG_POLL pauses of the sender while the backlog was over the cap.
    backlog_waits: AtomicU64,
    statuses: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// Messages put on the queue and not yet deleted after processing (a killed or failed message
    /// counts until it is processed).
    fn backlog(&self) -> u64 {
        self.enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(self.deleted.load(Ordering::Relaxed))
    }

    fn status(&self, label: String) {
        if let Ok(mut s) = self.statuses.lock() {
            *s.entry(label).or_default() += 1;
        }
    }
}

/// What the pollers saw, per event id.
#[derive(Debug, Default)]
struct Seen {
    /// How many times a message of the event was received.
    received: HashMap<String, u64>,
    /// Events in a batch whose invocation was killed, or reported failed: the only ones whose
    /// notification may be sent twice (the process stopped, or the record failed, between the
    /// channel's 200 and the `sent` mark).
    interrupted: HashSet<String>,
}

struct Delivery {
    body: Arc<Vec<u8>>,
    /// Deliver a second copy at the same moment.
    twin: bool,
    /// Wait this long before sending (a redelivery comes later).
    after: Duration,
    /// This is the event's first scheduled delivery (the one that counts for "acknowledged").
    first: bool,
}

/// Runs the suite; returns whether every check passed.
pub async fn run(options: ChaosOptions) -> Result<bool, Error> {
    let started = Instant::now();
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    let config = wiring::sdk_config().await;
    let (dynamodb_direct, sqs_direct) = (wiring::dynamodb_endpoint(), wiring::sqs_endpoint());
    let ddb = wiring::dynamodb(&config, &dynamodb_direct);
    let sqs = wiring::sqs(&config, &sqs_direct);

    // The reference: each history shape applied once, in order, without faults.
    eprintln!("chaos: reference run (each history shape once, in order, no faults)");
    let reference_resources = wiring::create_resources(&format!("chaosref{run_id}"))?;
    let reference_slack = FakeSlack::start().await?;
    let reference_app = wiring::processor_app(
        &config,
        &reference_resources,
        &dynamodb_direct,
        Some(&reference_slack.url),
    )?;
    let mut reference = HashMap::new();
    let mut reference_notifications = HashMap::new();
    for refund in [false, true] {
        let notified_before = reference_slack.texts().len();
        let tag = format!("r{run_id}x{}", u8::from(refund));
        let history = customer_history(&tag, T0, refund);
        for (i, body) in history.events.iter().enumerate() {
            let failed = process(&reference_app, vec![message(&format!("ref{i}"), body)]).await?;
            if !failed.is_empty() {
                return Err(format!("reference event {i} failed without faults").into());
            }
        }
        let state =
            stripe_pipeline::testing::billing_state(&ddb, &reference_resources.billing_table)
                .await?;
        reference.insert(refund, customer_state(&state, &tag));
        let required = reference_slack.texts()[notified_before..]
            .iter()
            .filter(|t| !is_order_dependent(t))
            .count();
        reference_notifications.insert(refund, required);
    }
    wiring::delete_resources(&reference_resources);

    // The run's tables and queues, and the proxies in front of the emulators.
    let resources = wiring::create_resources(&format!("chaos{run_id}"))?;
    sqs.set_queue_attributes()
        .queue_url(&resources.event_queue_url)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_SECS.to_string(),
        )
        .send()
        .await?;
    let ddb_proxy = FaultProxy::start(&dynamodb_direct, options.faults, false).await?;
    let sqs_proxy = FaultProxy::start(&sqs_direct, options.faults, false).await?;
    let slack = FakeSlack::failing(options.slack_failure).await?;
    let receiver =
        Arc::new(wiring::receiver_app(&config, &resources, &ddb_proxy.url, &sqs_proxy.url).await?);
    let mut processor =
        wiring::processor_app(&config, &resources, &ddb_proxy.url, Some(&slack.url))?;
    // Time runs faster here (visibility VISIBILITY_SECS, not 200 s): the notification lease shrinks
    // with it, so a retry still outlives a dead sender's claim as it does when deployed.
    processor.billing = processor
        .billing
        .clone()
        .with_notify_lease(NOTIFY_LEASE_SECS);
    let processor = Arc::new(processor);

    // The histories and Stripe's delivery schedule.
    let mut histories = Vec::new();
    let mut schedule: Vec<(f64, Delivery)> = Vec::new();
    for c in 0..options.customers {
        let refund = c % 4 != 3;
        let tag = format!("k{run_id}x{c:05}");
        let history = customer_history(&tag, T0, refund);
        for body in &history.events {
            let body = Arc::new(body.clone());
            // A customer's events are spread over the time of ~4 customers and shuffled within it.
            let at = c as f64 + fastrand::f64() * 4.0;
            schedule.push((
                at,
                Delivery {
                    body: body.clone(),
                    twin: fastrand::f64() < options.concurrent_duplicate,
                    after: Duration::ZERO,
                    first: true,
                },
            ));
            if fastrand::f64() < options.redeliver {
                schedule.push((
                    at + 2.0 + fastrand::f64() * 30.0,
                    Delivery {
                        body,
                        twin: false,
                        after: Duration::from_millis(fastrand::u64(200..3_000)),
                        first: false,
                    },
                ));
            }
        }
        histories.push((tag, refund, history));
    }
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0));
    let events: usize = histories.iter().map(|(_, _, h)| h.events.len()).sum();
    eprintln!(
        "chaos: {} customers, {events} events, {} scheduled deliveries, concurrency {}, {} processor pollers",
        options.customers,
        schedule.len(),
        options.concurrency,
        options.pollers
    );

    // Poison: must end in the DLQ, and be all it holds.
    let mut poison_ids = HashSet::new();
    for p in 0..options.poison {
        let id = format!("evt_poison_{run_id}_{p}");
        let body = match p % 3 {
            0 => format!(
                r#"{{"id":"{id}","type":"invoice.paid","created":1,"data":{{"object":{{"id":5}}}}}}"#
            ),
            1 => format!("not json at all {id}"),
            _ => format!(r#"{{"id":"{id}","type":"charge.refunded"}}"#),
        };
        sqs.send_message()
            .queue_url(&resources.event_queue_url)
            .message_body(body)
            .send()
            .await?;
        poison_ids.insert(id);
    }

    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();

    // Processor pollers (the event source mapping).
    let mut pollers = Vec::new();
    let (_, region) = wiring::event_source(&sqs, &resources.event_queue_url);
    // As the template's event source mapping, less the batching window: each receive is a batch.
    let settings = PollSettings {
        batch_size: 10,
        batching_window: Duration::ZERO,
        wait_secs: 1,
        visibility_timeout_secs: None,
    };
    for _ in 0..options.pollers {
        let poller = Poller::new(
            Queue::new(sqs.clone(), &resources.event_queue_url),
            Target::InProcess(processor.clone()),
            settings,
            &region,
        )
        .await?;
        let (tally, done, received) = (tally.clone(), done.clone(), seen.clone());
        let kill = options.kill;
        pollers.push(tokio::spawn(async move {
            poll(&poller, &tally, &done, kill, &received).await
        }));
    }

    // Progress.
    let progress = {
        let (tally, done, ddb_c, sqs_c) = (
            tally.clone(),
            done.clone(),
            ddb_proxy.counters.clone(),
            sqs_proxy.counters.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "chaos: {:>4}s acknowledged {} / {events}, backlog {}, deliveries {}, retries {}, invocations {} (killed {}), faults {}",
                    started.elapsed().as_secs(),
                    tally.acknowledged.load(Ordering::Relaxed),
                    tally.backlog(),
                    tally.deliveries.load(Ordering::Relaxed),
                    tally.retries.load(Ordering::Relaxed),
                    tally.invocations.load(Ordering::Relaxed),
                    tally.kills.load(Ordering::Relaxed),
                    ddb_c.total() + sqs_c.total(),
                );
            }
        })
    };

    // Stripe.
    let permits = Arc::new(Semaphore::new(options.concurrency));
    let mut senders = Vec::with_capacity(schedule.len());
    for (_, delivery) in schedule {
        if delivery.first {
            // The cap also waits out the retries of a faulty spell (see `Tally::backlog`).
            while tally.backlog() > options.max_backlog {
                tally.backlog_waits.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(BACKLOG_POLL).await;
            }
        }
        let permit = permits.clone().acquire_owned().await?;
        let (receiver, tally, permits) = (receiver.clone(), tally.clone(), permits.clone());
        senders.push(tokio::spawn(async move {
            deliver(&receiver, &tally, delivery, permit, &permits).await;
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let send_secs = started.elapsed().as_secs_f64();
    eprintln!("chaos: every delivery answered after {send_secs:.0}s; draining the queue");

    // Drain: until the queue is empty and every poison message reached the DLQ.
    let drain_deadline = Instant::now() + Duration::from_secs(300);
    let mut quiet = 0;
    while Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let depth = depth(&sqs, &resources.event_queue_url).await?;
        quiet = if depth == 0 { quiet + 1 } else { 0 };
        if quiet >= 3 {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    for poller in pollers {
        poller.await?;
    }
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| "poisoned")?);
    progress.abort();
    ddb_proxy.set_faults(false);
    sqs_proxy.set_faults(false);
    let total_secs = started.elapsed().as_secs_f64();

    // The checks, against the emulators directly.
    eprintln!("chaos: checking");
    let dedup: HashMap<String, String> =
        stripe_pipeline::testing::scan(&ddb, &resources.dedup_table)
            .await?
            .into_iter()
            .filter_map(|item| {
                let id = item.get("event_id")?.as_s().ok()?.clone();
                let status = item.get("status")?.as_s().ok()?.clone();
                Some((id, status))
            })
            .collect();
    let billing = stripe_pipeline::testing::scan(&ddb, &resources.billing_table).await?;
    let markers: HashSet<String> = billing
        .iter()
        .filter(|i| i.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("EVENT"))
        .filter_map(|i| {
            i.get("pk")?
                .as_s()
                .ok()?
                .strip_prefix("EVENT#")
                .map(str::to_owned)
        })
        .collect();
    let state = stripe_pipeline::testing::billing_state(&ddb, &resources.billing_table).await?;
    let mut not_enqueued = 0;
    let mut unmarked = 0;
    let mut not_applied = 0;
    let mut mismatched = Vec::new();
    let mut doubled_credits = 0;
    let mut differing = Vec::new();
    for (tag, refund, history) in &histories {
        for body in &history.events {
            let id = event_id(body);
            // Enqueued = a message of it reached the processor. The dedup item says `enqueued` too,
            // unless the mark after a successful send failed: the receiver still answers 200 (the
            // event is safe on the queue) and a later redelivery may enqueue a second copy.
            if !seen.received.contains_key(&id) {
                not_enqueued += 1;
            }
            if dedup.get(&id).map(String::as_str) != Some("enqueued") {
                unmarked += 1;
            }
            if !markers.contains(&id) {
                not_applied += 1;
            }
        }
        let got = customer_state(&state, tag);
        let want = &reference[refund];
        if &got != want {
            let credits = |s: &Vec<(String, String)>| {
                s.iter()
                    .find(|(k, _)| k.ends_with("|CREDITS"))
                    .map(|(_, v)| v.clone())
            };
            if credits(&got) != credits(want) {
                doubled_credits += 1;
            }
            if mismatched.len() < 3 {
                let differences: Vec<_> = got
                    .iter()
                    .filter(|i| !want.contains(i))
                    .map(|(k, v)| format!("got {k}: {v}"))
                    .chain(
                        want.iter()
                            .filter(|i| !got.contains(i))
                            .map(|(k, v)| format!("want {k}: {v}")),
                    )
                    .collect();
                differing.push(serde_json::json!({ "customer": tag, "differences": differences }));
            }
            mismatched.push(tag.clone());
        }
    }
    let dead: Vec<String> = drain_dlq(&sqs, &resources.dead_letter_queue_url).await?;
    let dead_poison = dead
        .iter()
        .filter(|b| poison_ids.iter().any(|id| b.contains(id.as_str())))
        .count();
    let dead_other = dead.len() - dead_poison;
    let notifications = slack.texts();
    let expected_notifications: usize = histories
        .iter()
        .map(|(_, refund, _)| reference_notifications[refund])
        .sum();
    let mut text_counts: HashMap<&String, usize> = HashMap::new();
    for text in &notifications {
        *text_counts.entry(text).or_default() += 1;
    }
    let doubled_notifications = notifications.len() - text_counts.len();
    let required_sent = text_counts
        .keys()
        .filter(|t| !is_order_dependent(t))
        .count();
    let missing_notifications = expected_notifications.saturating_sub(required_sent);
    let tags: Vec<&str> = histories.iter().map(|(tag, _, _)| tag.as_str()).collect();
    if let Some(text) = text_counts
        .keys()
        .find(|text| !tags.iter().any(|tag| text.contains(tag)))
    {
        return Err(format!("a notification names no customer of the run: {text:?}").into());
    }
    // A second copy is the documented at-least-once window only if one of the customer's events was
    // in a killed or failed invocation; anywhere else it is a bug.
    let doubled_unexplained: usize = text_counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .filter(|(text, _)| {
            !histories.iter().any(|(tag, _, history)| {
                text.contains(tag.as_str())
                    && history
                        .events
                        .iter()
                        .any(|body| seen.interrupted.contains(&event_id(body)))
            })
        })
        .map(|(_, n)| n - 1)
        .sum();
    let redundant_receives: u64 = seen.received.values().map(|n| n.saturating_sub(1)).sum();

    let lost = not_enqueued.max(not_applied) as u64 + tally.lost.load(Ordering::Relaxed);
    let doubled = doubled_credits as u64;
    let ok = lost == 0
        && mismatched.is_empty()
        && dead_other == 0
        && dead_poison == poison_ids.len()
        && missing_notifications == 0
        && doubled_unexplained == 0;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "passed": ok,
        "customers": histories.len(),
        "events_sent": events,
        "deliveries": get(&tally.deliveries),
        "stripe_retries": get(&tally.retries),
        "redeliveries_after_2xx": get(&tally.redeliveries),
        "concurrent_duplicates": get(&tally.concurrent_duplicates),
        "max_backlog": options.max_backlog,
        "sender_paused_secs": get(&tally.backlog_waits) as f64 * BACKLOG_POLL.as_secs_f64(),
        "answers": *tally.statuses.lock().map_err(|_| "poisoned")?,
        "faults": {
            "dynamodb": ddb_proxy.counters.to_json(),
            "sqs": sqs_proxy.counters.to_json(),
            "total": ddb_proxy.counters.total() + sqs_proxy.counters.total(),
            "processor_kills": get(&tally.kills),
            "slack_500s": slack.failed(),
        },
        "processor": {
            "invocations": get(&tally.invocations),
            "messages_received": get(&tally.messages_received),
            "message_failures": get(&tally.message_failures),
            "redundant_receives": redundant_receives,
        },
        "lost": lost,
        "not_enqueued": not_enqueued,
        "enqueued_not_marked": unmarked,
        "not_applied": not_applied,
        "doubled": doubled,
        "customers_not_in_reference_state": mismatched.len(),
        "mismatched_customers_sample": differing,
        "dlq": { "poison_expected": poison_ids.len(), "poison": dead_poison, "other": dead_other },
        "notifications": {
            "expected": expected_notifications,
            "sent": notifications.len(),
            "sent_twice": doubled_notifications,
            "sent_twice_unexplained": doubled_unexplained,
            "missing": missing_notifications,
        },
        "seconds": { "delivering": send_secs, "total": total_secs },
    });
    eprintln!("{}", render(&summary));
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    if ok {
        wiring::delete_resources(&resources);
    } else {
        eprintln!(
            "chaos: tables and queues kept for inspection (prefix {})",
            resources.prefix
        );
    }
    Ok(ok)
}

fn render(s: &serde_json::Value) -> String {
    let f = &s["faults"];
    format!(
        "\nchaos: {verdict}\n\
         events sent        {events} ({customers} customers), {deliveries} deliveries: {retries} Stripe retries, {redeliveries} redeliveries after a 2xx, {twins} concurrent duplicates\n\
         answers            {answers}\n\
         faults injected    {faults}: DynamoDB {ddb}, SQS {sqs}; processor killed mid-batch {kills}×; Slack 500 {slack}×\n\
         processor          {invocations} invocations, {received} messages received ({redundant} redundant), {failures} message failures\n\
         lost               {lost} (not enqueued {ne}, not applied {na}; enqueued but the dedup mark failed: {unmarked})\n\
         doubled            {doubled} (customers whose state differs from the in-order history: {mismatch})\n\
         DLQ                {dlq_poison}/{dlq_expected} poison messages, {dlq_other} other\n\
         notifications      {n_sent} sent for {n_expected} expected: {n_missing} missing, {n_twice} sent twice ({n_unexplained} not after a kill or failure)\n\
         time               {secs:.0} s\n",
        verdict = if s["passed"] == true { "PASSED" } else { "FAILED" },
        events = s["events_sent"],
        customers = s["customers"],
        deliveries = s["deliveries"],
        retries = s["stripe_retries"],
        redeliveries = s["redeliveries_after_2xx"],
        twins = s["concurrent_duplicates"],
        answers = s["answers"],
        faults = f["total"],
        ddb = f["dynamodb"],
        sqs = f["sqs"],
        kills = f["processor_kills"],
        slack = f["slack_500s"],
        invocations = s["processor"]["invocations"],
        received = s["processor"]["messages_received"],
        redundant = s["processor"]["redundant_receives"],
        failures = s["processor"]["message_failures"],
        lost = s["lost"],
        ne = s["not_enqueued"],
        na = s["not_applied"],
        unmarked = s["enqueued_not_marked"],
        doubled = s["doubled"],
        mismatch = s["customers_not_in_reference_state"],
        dlq_poison = s["dlq"]["poison"],
        dlq_expected = s["dlq"]["poison_expected"],
        dlq_other = s["dlq"]["other"],
        n_sent = s["notifications"]["sent"],
        n_expected = s["notifications"]["expected"],
        n_twice = s["notifications"]["sent_twice"],
        n_missing = s["notifications"]["missing"],
        n_unexplained = s["notifications"]["sent_twice_unexplained"],
        secs = s["seconds"]["total"].as_f64().unwrap_or_default(),
    )
}

/// One event's deliveries by Stripe: until a 2xx, with backoff; the twin (if any) at the same moment.
/// A message that is news only in some delivery orders: a failed renewal is not sent once the same
/// invoice's payment was applied (README, handler table), and the shuffled schedule decides which
/// comes first. Such a message may be missing; it is still never sent twice unexplained.
fn is_order_dependent(text: &str) -> bool {
    text.starts_with("Renewal failed")
}

async fn deliver(
    receiver: &ReceiverApp,
    tally: &Tally,
    delivery: Delivery,
    permit: tokio::sync::OwnedSemaphorePermit,
    permits: &Arc<Semaphore>,
) {
    if !delivery.first {
        tally.redeliveries.fetch_add(1, Ordering::Relaxed);
        drop(permit);
        tokio::time::sleep(delivery.after).await;
        let permit = permits.clone().acquire_owned().await;
        until_acknowledged(receiver, tally, &delivery.body).await;
        drop(permit);
        return;
    }
    let acknowledged = if delivery.twin {
        tally.concurrent_duplicates.fetch_add(1, Ordering::Relaxed);
        let (a, b) = futures::future::join(
            until_acknowledged(receiver, tally, &delivery.body),
            until_acknowledged(receiver, tally, &delivery.body),
        )
        .await;
        a || b
    } else {
        until_acknowledged(receiver, tally, &delivery.body).await
    };
    drop(permit);
    if acknowledged {
        tally.acknowledged.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.lost.fetch_add(1, Ordering::Relaxed);
    }
}

async fn until_acknowledged(receiver: &ReceiverApp, tally: &Tally, body: &[u8]) -> bool {
    let Ok(secret) = SigningSecret::new(SECRET) else {
        return false;
    };
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let mut attempt: u32 = 0;
    loop {
        tally.deliveries.fetch_add(1, Ordering::Relaxed);
        let request = signed_request(body, &sign(body, &secret, unix_now()));
        let answer =
            tokio::time::timeout(STRIPE_TIMEOUT, receiver::handler::handle(receiver, request))
                .await;
        let status = match answer {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let detail = match response.body() {
                    Body::Text(t) if status == 200 => {
                        if t.contains("duplicate") {
                            " duplicate"
                        } else {
                            tally.enqueued.fetch_add(1, Ordering::Relaxed);
                            " enqueued"
                        }
                    }
                    _ => "",
                };
                tally.status(format!("{status}{detail}"));
                status
            }
            Ok(Err(_)) => {
                tally.status("handler error".to_owned());
                500
            }
            Err(_) => {
                tally.status("timeout".to_owned());
                504
            }
        };
        if (200..300).contains(&status) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        // Stripe's schedule, compressed: exponential from 100 ms, capped at 5 s, with jitter.
        tally.retries.fetch_add(1, Ordering::Relaxed);
        let backoff = (100u64 << attempt.min(6)).min(5_000);
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(
            backoff / 2 + fastrand::u64(0..=backoff),
        ))
        .await;
    }
}

fn signed_request(body: &[u8], signature: &str) -> Request {
    let request = http::Request::builder()
        .method("POST")
        .uri("https://abc.execute-api.us-east-1.amazonaws.com/webhooks/stripe")
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(Body::Binary(body.to_vec()));
    request.unwrap_or_default()
}

/// The event source mapping: the CLI's poller (`stripe-webhooks poll`, in-process) receiving and
/// deleting, with a share of its invocations killed mid-batch (nothing of a killed batch is deleted
/// unless it got that far).
async fn poll(poller: &Poller, tally: &Tally, done: &AtomicBool, kill: f64, seen: &Mutex<Seen>) {
    while !done.load(Ordering::Relaxed) {
        let Ok(messages) = poller.gather().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if messages.is_empty() {
            continue;
        }
        tally.invocations.fetch_add(1, Ordering::Relaxed);
        tally
            .messages_received
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        // Webhook messages carry their event id as an attribute; poison ones may not.
        let event_ids: Vec<String> = messages
            .iter()
            .filter_map(|m| message_attribute(m, attribute::EVENT_ID).map(str::to_owned))
            .collect();
        if let Ok(mut seen) = seen.lock() {
            for id in &event_ids {
                *seen.received.entry(id.clone()).or_default() += 1;
            }
        }
        let interrupted = |ids: &mut dyn Iterator<Item = &String>| {
            if let Ok(mut seen) = seen.lock() {
                seen.interrupted.extend(ids.cloned());
            }
        };
        let batch = poller.process(messages);
        let report = if fastrand::f64() < kill {
            // Killed: the invocation stops wherever it is (the poller aborts its task).
            let after = Duration::from_millis(fastrand::u64(1..200));
            match tokio::time::timeout(after, batch).await {
                Ok(report) => report,
                Err(_) => {
                    tally.kills.fetch_add(1, Ordering::Relaxed);
                    interrupted(&mut event_ids.iter());
                    continue;
                }
            }
        } else {
            batch.await
        };
        // The delete failed: processed or not, each message comes back.
        let Ok(report) = report else {
            interrupted(&mut event_ids.iter());
            continue;
        };
        interrupted(&mut report.failed.iter().filter_map(|f| f.event_id.as_ref()));
        tally
            .message_failures
            .fetch_add(report.failed.len() as u64, Ordering::Relaxed);
        tally
            .deleted
            .fetch_add(report.succeeded as u64, Ordering::Relaxed);
    }
}

/// One processor invocation on `messages`; the ids it reported failed.
async fn process(
    app: &ProcessorApp,
    messages: Vec<aws_lambda_events::event::sqs::SqsMessage>,
) -> Result<HashSet<String>, Error> {
    let mut batch = SqsEvent::default();
    batch.records = messages;
    let response = processor::handler::handle(
        app,
        lambda_runtime::LambdaEvent::new(batch, lambda_runtime::Context::default()),
    )
    .await?;
    Ok(response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect())
}

fn message(id: &str, body: &[u8]) -> aws_lambda_events::event::sqs::SqsMessage {
    let mut message = aws_lambda_events::event::sqs::SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.body = Some(String::from_utf8_lossy(body).into_owned());
    message
}

fn event_id(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The items of one customer's history, its tag replaced so histories can be compared.
/// Notification records (`NOTIFY#`) are left out: notifications are checked against what Slack
/// received, so a lost or repeated message is reported as such rather than as a state difference.
fn customer_state(state: &BTreeMap<(String, String), String>, tag: &str) -> Vec<(String, String)> {
    let mut items: Vec<(String, String)> = state
        .iter()
        .map(|((pk, sk), v)| (format!("{pk}|{sk}"), v))
        .filter(|(k, _)| k.contains(tag) && !k.contains("|NOTIFY#"))
        .map(|(k, v)| (k.replace(tag, "T"), v.replace(tag, "T")))
        .collect();
    items.sort();
    items
}

async fn depth(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<u64, Error> {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await?;
    Ok(output
        .attributes
        .unwrap_or_default()
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum())
}

async fn drain_dlq(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<Vec<String>, Error> {
    let mut bodies = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .visibility_timeout(60)
            .send()
            .await?;
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(bodies);
        }
        bodies.extend(messages.into_iter().filter_map(|m| m.body));
    }
}
