//! Floods: what a refused request costs the receiver beside an accepted one. Each case is a kind of
//! request (an accepted event, a redelivery, and what a forger or a scanner sends) handed to
//! `receiver::handler::handle` in this process, wired as `main.rs` wires it against DynamoDB Local and
//! moto, on a current-thread runtime of its own. Measured per case: CPU time of that thread (everything
//! the handler does, the AWS SDK included, runs on it) and wall time, over many requests, and the
//! DynamoDB and SQS requests made, through counting proxies that run on other threads so their work is
//! not counted. A refusal must make none; the run fails if one does, or if a case gets another status.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use lambda_http::{http, Body, Request};
use receiver::handler::with_source_ip;
use stripe_pipeline::signature::{sign, unix_now, SigningSecret};

use crate::{
    proxy::{FaultPlan, FaultProxy, RequestCounts},
    wiring::{self, SECRET},
    Error,
};

/// The bodies and secret the cases build their requests from.
struct Inputs {
    secret: SigningSecret,
    /// A fixture event of about 3 KB; the accepted case gives it a fresh id per request.
    small: serde_json::Value,
    /// The small event, already accepted once: every request of the duplicate case redelivers it.
    delivered: Vec<u8>,
    /// Just under the receiver's body limit.
    near_limit: Vec<u8>,
    /// One byte over it.
    over_limit: Vec<u8>,
    run_id: String,
}

/// One kind of request: its name, what it is, the status the receiver must answer, and how to build
/// its `n`-th request. One more case is one more line of [`CASES`].
struct Case {
    name: &'static str,
    what: &'static str,
    status: u16,
    request: fn(&Inputs, usize) -> Request,
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "accepted", what: "fresh signed event, 3 KB: verify, claim, enqueue, mark", status: 200, request: accepted },
    Case { name: "duplicate", what: "redelivery of an event already enqueued", status: 200, request: duplicate },
    Case { name: "no_signature", what: "no Stripe-Signature header", status: 401, request: |i, _| post(&i.delivered, None) },
    Case { name: "malformed_header", what: "Stripe-Signature that is not t=…,v1=…", status: 401, request: |i, _| post(&i.delivered, Some("sha256=forged".to_owned())) },
    Case { name: "wrong_signature_3kb", what: "valid-shaped header, wrong v1, 3 KB body", status: 401, request: |i, _| post(&i.delivered, Some(forged())) },
    Case { name: "wrong_signature_1mb", what: "valid-shaped header, wrong v1, body just under MAX_BODY_BYTES", status: 401, request: |i, _| post(&i.near_limit, Some(forged())) },
    Case { name: "over_max_body", what: "body one byte over MAX_BODY_BYTES", status: 413, request: |i, _| post(&i.over_limit, Some(forged())) },
    Case { name: "wrong_method", what: "GET on the webhook path", status: 405, request: |_, _| to("GET", WEBHOOK_URL, Vec::new(), None) },
    Case { name: "wrong_path", what: "POST elsewhere", status: 404, request: |i, _| to("POST", "https://abc.execute-api.us-east-1.amazonaws.com/wp-login.php", i.delivered.clone(), None) },
    Case { name: "not_allowed_1mb", what: "from an address not on the allow-list: forged header, body just under MAX_BODY_BYTES", status: 403, request: |i, _| with_source_ip(post(&i.near_limit, Some(forged())), ELSEWHERE) },
];

/// The allow-list the run's receiver has on: one of Stripe's webhook addresses, which every case but
/// `not_allowed_1mb` comes from.
const STRIPE_ADDRESS: &str = "3.18.12.63";
const ELSEWHERE: &str = "198.51.100.7";

const WEBHOOK_URL: &str = "https://abc.execute-api.us-east-1.amazonaws.com/webhooks/stripe";
/// Requests built ahead of each measured batch, so building them (a 1 MB copy) is not measured.
const BATCH: usize = 32;

fn to(method: &str, url: &str, body: Vec<u8>, signature: Option<String>) -> Request {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(signature) = signature {
        builder = builder.header("Stripe-Signature", signature);
    }
    let request = builder
        .body(Body::Binary(body))
        .unwrap_or_else(|_| Request::default());
    with_source_ip(request, STRIPE_ADDRESS)
}

fn post(body: &[u8], signature: Option<String>) -> Request {
    to("POST", WEBHOOK_URL, body.to_vec(), signature)
}

/// A header of the right shape and a current timestamp whose v1 is not the body's: the receiver has
/// to hash the whole body to find out.
fn forged() -> String {
    format!("t={},v1={}", unix_now(), "0".repeat(64))
}

fn accepted(inputs: &Inputs, n: usize) -> Request {
    let mut event = inputs.small.clone();
    event["id"] = format!("evt_flood{}x{n:07}", inputs.run_id).into();
    let body = serde_json::to_vec_pretty(&event).unwrap_or_default();
    let signature = sign(&body, &inputs.secret, unix_now());
    post(&body, Some(signature))
}

fn duplicate(inputs: &Inputs, _: usize) -> Request {
    let signature = sign(&inputs.delivered, &inputs.secret, unix_now());
    post(&inputs.delivered, Some(signature))
}

/// `event` pretty-printed, padded with a metadata string to `size` bytes.
fn padded(mut event: serde_json::Value, size: usize) -> Vec<u8> {
    let base = serde_json::to_vec_pretty(&event).unwrap_or_default().len() + 20;
    event["data"]["object"]["metadata"]["flood_padding"] =
        "x".repeat(size.saturating_sub(base)).into();
    let mut body = serde_json::to_vec_pretty(&event).unwrap_or_default();
    body.resize(size, b'\n');
    body
}

/// This thread's CPU time (user + system), from `/proc/thread-self/stat`, in clock ticks of 10 ms:
/// coarse, so each case runs long enough for it not to matter.
fn thread_cpu() -> Result<Duration, Error> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime are the
    // 14th and 15th fields of the line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("bad stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
        + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    const TICKS_PER_SEC: u64 = 100; // USER_HZ on Linux
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
}

fn requests(counts: &RequestCounts) -> u64 {
    counts
        .lock()
        .map(|c| c.values().map(|o| o.requests).sum())
        .unwrap_or(0)
}

/// One case measured: at least `min_requests`, and on until `min_cpu` of CPU time (or 4× as long in
/// wall time, for cases that mostly wait on the emulators).
async fn measure(
    app: &wiring::ReceiverApp,
    inputs: &Inputs,
    case: &Case,
    counts: (&RequestCounts, &RequestCounts),
    min_requests: usize,
    min_cpu: Duration,
) -> Result<serde_json::Value, Error> {
    let (ddb0, sqs0) = (requests(counts.0), requests(counts.1));
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut cpu, mut wall, mut n) = (Duration::ZERO, Duration::ZERO, 0);
    while n < min_requests || (cpu < min_cpu && wall < min_cpu * 4) {
        let batch: Vec<Request> = (n..n + BATCH).map(|i| (case.request)(inputs, i)).collect();
        let (cpu0, wall0) = (thread_cpu()?, Instant::now());
        for request in batch {
            let response = receiver::handler::handle(app, request).await?;
            *statuses.entry(response.status().as_u16()).or_default() += 1;
        }
        wall += wall0.elapsed();
        cpu += thread_cpu()?.saturating_sub(cpu0);
        n += BATCH;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let (dynamodb, sqs) = (requests(counts.0) - ddb0, requests(counts.1) - sqs0);
    let entry = serde_json::json!({
        "name": case.name,
        "what": case.what,
        "expected_status": case.status,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "requests": n,
        "cpu_us_per_request": per(cpu),
        "wall_us_per_request": per(wall),
        "dynamodb_requests": dynamodb,
        "sqs_requests": sqs,
    });
    eprintln!("flood {}: {entry}", case.name);
    Ok(entry)
}

/// Runs every case; writes `flood.json` into `results`. `scale` multiplies the requests and CPU time
/// per case (1.0: at least 200 requests and 2 s of CPU each).
pub async fn run(results: &str, scale: f64) -> Result<bool, Error> {
    // Log as the function does: a refusal's log and metric lines are part of its cost.
    stripe_pipeline::telemetry::init();
    let run_id = format!("{:06x}", fastrand::u32(..0xff_ffff));
    let config = wiring::sdk_config().await;
    let resources = wiring::create_resources(&format!("flood{run_id}"))?;
    let ddb = FaultProxy::start(&wiring::dynamodb_endpoint(), FaultPlan::default(), true).await?;
    let sqs = FaultProxy::start(&wiring::sqs_endpoint(), FaultPlan::default(), true).await?;
    let mut app = wiring::receiver_app(&config, &resources, &ddb.url, &sqs.url).await?;
    app.source_ips = Some(stripe_pipeline::source_ips::SourceIpAllowList::parse(
        STRIPE_ADDRESS,
    )?);
    let fixture = std::fs::read("tests/fixtures/stripe/events/invoice.paid.json")?;
    let small: serde_json::Value = serde_json::from_slice(&fixture)?;
    let mut delivered = small.clone();
    delivered["id"] = format!("evt_flood{run_id}delivered").into();
    let inputs = Inputs {
        secret: SigningSecret::new(SECRET)?,
        delivered: serde_json::to_vec_pretty(&delivered)?,
        near_limit: padded(small.clone(), app.max_body_bytes - 1024),
        over_limit: padded(small.clone(), app.max_body_bytes + 1),
        small,
        run_id,
    };
    let (ddb_counts, sqs_counts) = (ddb.requests.clone(), sqs.requests.clone());
    let max_body_bytes = app.max_body_bytes;
    let body_bytes = serde_json::json!({
        "small": inputs.delivered.len(),
        "near_limit": inputs.near_limit.len(),
        "over_limit": inputs.over_limit.len(),
    });
    let min_requests = (200.0 * scale).max(1.0) as usize;
    let min_cpu = Duration::from_secs_f64(2.0 * scale);

    // The handler on a current-thread runtime of its own thread, as a Lambda instance serves one
    // request at a time; the proxies stay on this runtime's threads.
    let measured = tokio::task::spawn_blocking(move || -> Result<Vec<serde_json::Value>, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            // The redelivered event is accepted once first; then warm the connections up.
            let first = receiver::handler::handle(&app, duplicate(&inputs, 0)).await?;
            if first.status() != 200 {
                return Err(format!("the first delivery was answered {}", first.status()).into());
            }
            for case in CASES {
                measure(
                    &app,
                    &inputs,
                    case,
                    (&ddb_counts, &sqs_counts),
                    BATCH,
                    Duration::ZERO,
                )
                .await?;
            }
            let mut measured = Vec::new();
            for case in CASES {
                let counts = (&ddb_counts, &sqs_counts);
                measured.push(measure(&app, &inputs, case, counts, min_requests, min_cpu).await?);
            }
            Ok(measured)
        })
    })
    .await??;

    let mut passed = true;
    for (case, result) in CASES.iter().zip(&measured) {
        let expected = result["statuses"]
            .as_object()
            .is_some_and(|s| s.len() == 1 && s.contains_key(&case.status.to_string()));
        let refusal = case.status >= 400;
        let touched = result["dynamodb_requests"] != 0 || result["sqs_requests"] != 0;
        if !expected || (refusal && touched) {
            eprintln!(
                "flood {}: FAILED (expected {} and, for a refusal, no AWS call): {result}",
                case.name, case.status
            );
            passed = false;
        }
    }
    let result = serde_json::json!({
        "max_body_bytes": max_body_bytes,
        "body_bytes": body_bytes,
        "cases": measured,
        "passed": passed,
    });
    std::fs::write(
        format!("{results}/flood.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    wiring::delete_resources(&resources);
    Ok(passed)
}
