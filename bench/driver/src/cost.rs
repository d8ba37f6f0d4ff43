//! What one event costs in requests: generated customer histories go through the receiver and the
//! processor (in this process, wired as in `main.rs`) with a counting proxy in front of DynamoDB and
//! SQS, the poller (the event source mapping, billed as SQS requests too) included. Also measured: the
//! receiver's time per request and the processor's per batch against the emulators, and message sizes.
//! `bench/report.py` prices it per million events.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use lambda_http::{http, Body};
use stripe_pipeline::{
    signature::{sign, unix_now, SigningSecret},
    testing::customer_history,
};

use crate::{
    proxy::{FaultPlan, FaultProxy, OperationCount},
    wiring::{self, SECRET},
    Error,
};

fn snapshot(proxy: &FaultProxy) -> BTreeMap<String, OperationCount> {
    proxy.requests.lock().map(|c| c.clone()).unwrap_or_default()
}

fn counts_json(
    before: &BTreeMap<String, OperationCount>,
    after: &BTreeMap<String, OperationCount>,
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (op, a) in after {
        let b = before.get(op).cloned().unwrap_or_default();
        if a.requests > b.requests {
            let by_item: serde_json::Map<String, serde_json::Value> = a
                .write_units_by_item
                .iter()
                .map(|(kind, units)| {
                    let before = b.write_units_by_item.get(kind).copied().unwrap_or(0.0);
                    ((*kind).to_owned(), serde_json::json!(units - before))
                })
                .filter(|(_, units)| units.as_f64().is_some_and(|u| u > 0.0))
                .collect();
            out.insert(
                op.clone(),
                serde_json::json!({
                    "requests": a.requests - b.requests,
                    "body_bytes": a.body_bytes - b.body_bytes,
                    "units": a.units - b.units,
                    "write_units_by_item": by_item,
                }),
            );
        }
    }
    serde_json::Value::Object(out)
}

fn stats(mut values: Vec<f64>) -> serde_json::Value {
    values.sort_by(f64::total_cmp);
    let n = values.len().max(1) as f64;
    let pct = |p: f64| {
        values
            .get(((values.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    serde_json::json!({
        "count": values.len(),
        "mean": values.iter().sum::<f64>() / n,
        "p50": pct(0.5),
        "p99": pct(0.99),
    })
}

/// Runs `customers` histories through both functions; writes `cost.json` into `results`.
pub async fn run(results: &str, customers: usize) -> Result<bool, Error> {
    // Log as the functions do, to stdout (the caller measures the bytes per event).
    stripe_pipeline::telemetry::init();
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    let config = wiring::sdk_config().await;
    let resources = wiring::create_resources(&format!("cost{run_id}"))?;
    let ddb = FaultProxy::start(&wiring::dynamodb_endpoint(), FaultPlan::default(), true).await?;
    let sqs = FaultProxy::start(&wiring::sqs_endpoint(), FaultPlan::default(), true).await?;
    let receiver = wiring::receiver_app(&config, &resources, &ddb.url, &sqs.url).await?;
    let processor = wiring::processor_app(&config, &resources, &ddb.url, None)?;
    let poller = wiring::sqs(&config, &sqs.url);
    let secret = SigningSecret::new(SECRET)?;

    // Customers interleaved (every customer's first event, then every second one, ...), so a batch
    // holds different customers' events as it would in production, not one customer's whole history.
    let histories: Vec<Vec<Vec<u8>>> = (0..customers)
        .map(|c| customer_history(&format!("c{run_id}x{c:05}"), 1_800_000_000, c % 4 != 3).events)
        .collect();
    let bodies: Vec<Vec<u8>> = (0..9)
        .flat_map(|i| histories.iter().filter_map(move |h| h.get(i).cloned()))
        .collect();
    // A message that fails (a transaction conflict) comes back after 2 s rather than the template's
    // 200 s: the requests it costs are counted, the run does not wait.
    wiring::sqs(&config, &wiring::sqs_endpoint())
        .set_queue_attributes()
        .queue_url(&resources.event_queue_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "2",
        )
        .send()
        .await?;
    let events = bodies.len();
    eprintln!("cost: {events} events of {customers} customer histories, each delivered once");

    // Receiver: each event once, 8 at a time.
    let (ddb0, sqs0) = (snapshot(&ddb), snapshot(&sqs));
    let receiver_ms = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(body) = bodies.get(i) else {
                return Ok::<_, Error>(());
            };
            let request = http::Request::builder()
                .method("POST")
                .uri("https://abc.execute-api.us-east-1.amazonaws.com/webhooks/stripe")
                .header("Stripe-Signature", sign(body, &secret, unix_now()))
                .body(Body::Binary(body.clone()))?;
            let started = Instant::now();
            let response = receiver::handler::handle(&receiver, request).await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if response.status() != 200 {
                return Err(format!("receiver answered {}", response.status()).into());
            }
            if let Ok(mut r) = receiver_ms.lock() {
                r.push(ms);
            }
        }
    };
    for result in futures::future::join_all((0..8).map(|_| worker())).await {
        result?;
    }
    let (ddb1, sqs1) = (snapshot(&ddb), snapshot(&sqs));

    // Processor: batches of up to 10 as the event source mapping delivers them.
    let mut processed = 0;
    let mut batch_ms = Vec::new();
    let mut batch_sizes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    let (arn, region) = wiring::event_source(&poller, &resources.event_queue_url);
    while processed < events && Instant::now() < deadline {
        let output = poller
            .receive_message()
            .queue_url(&resources.event_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages: Vec<_> = output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| processor::sqs::lambda_message(&message, &arn, &region))
            .collect();
        if messages.is_empty() {
            continue;
        }
        let receipts: Vec<(String, String)> = messages
            .iter()
            .filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?)))
            .collect();
        let mut batch = SqsEvent::default();
        batch_sizes.push(messages.len() as f64);
        batch.records = messages;
        let started = Instant::now();
        let response = processor::handler::handle(
            &processor,
            lambda_runtime::LambdaEvent::new(batch, lambda_runtime::Context::default()),
        )
        .await?;
        batch_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let failed: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let entries: Vec<_> = receipts
            .iter()
            .filter(|(id, _)| !failed.contains(id))
            .enumerate()
            .filter_map(|(n, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("d{n}"))
                    .receipt_handle(receipt)
                    .build()
                    .ok()
            })
            .collect();
        processed += entries.len();
        if !entries.is_empty() {
            poller
                .delete_message_batch()
                .queue_url(&resources.event_queue_url)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
    }
    let (ddb2, sqs2) = (snapshot(&ddb), snapshot(&sqs));
    let sizes: Vec<f64> = bodies.iter().map(|b| b.len() as f64).collect();
    let result = serde_json::json!({
        "events": events,
        "processed": processed,
        "event_bytes": stats(sizes),
        "receiver": {
            "dynamodb": counts_json(&ddb0, &ddb1),
            "sqs": counts_json(&sqs0, &sqs1),
            "duration_ms": stats(receiver_ms.into_inner().unwrap_or_default()),
        },
        "processor": {
            "dynamodb": counts_json(&ddb1, &ddb2),
            "sqs": counts_json(&sqs1, &sqs2),
            "duration_ms": stats(batch_ms),
            "batch_size": stats(batch_sizes),
        },
    });
    std::fs::write(
        format!("{results}/cost.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    eprintln!("cost: {result}");
    wiring::delete_resources(&resources);
    Ok(processed == events)
}
