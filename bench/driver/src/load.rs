//! Load on a receiver over HTTP: unique signed events plus a share of redeliveries of events already
//! answered, at a fixed concurrency; latency per request at the client, and the CPU time and peak RSS
//! of the server's processes read from `/proc` (so the emulators and this client are excluded).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use stripe_pipeline::signature::{sign, unix_now, SigningSecret};

use crate::{wiring::SECRET, Error};

/// Knobs of one load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The webhook URL.
    pub url: String,
    /// A label for the report.
    pub label: String,
    /// Unique events in the measured phase.
    pub events: usize,
    /// Redeliveries, as a share of `events`.
    pub redeliver: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Unique events sent first and not measured (connections, JIT, lazy init).
    pub warmup: usize,
    /// Processes to measure: those whose command line contains any of these.
    pub processes: Vec<String>,
    /// Other processes to report separately (e.g. cargo lambda watch's runtime emulator).
    pub side_processes: Vec<String>,
    /// Where to write the JSON result.
    pub json: Option<String>,
}

/// CPU ticks and peak RSS of the processes matching a pattern.
#[derive(Debug, Clone, Default)]
struct ProcessSample {
    pids: Vec<u32>,
    cpu_ticks: u64,
    peak_rss_kib: u64,
    max_peak_rss_kib: u64,
}

fn sample(patterns: &[String]) -> ProcessSample {
    let mut out = ProcessSample::default();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !patterns.iter().any(|p| cmdline.contains(p.as_str())) {
            continue;
        }
        // utime and stime: fields 14 and 15, counted after the parenthesised command name.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.cpu_ticks += ticks(11) + ticks(12);
        let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        out.peak_rss_kib += hwm;
        out.max_peak_rss_kib = out.max_peak_rss_kib.max(hwm);
        out.pids.push(pid);
    }
    out.pids.sort_unstable();
    out
}

const TICKS_PER_SEC: f64 = 100.0;

fn fixture_bodies() -> Result<Vec<serde_json::Value>, Error> {
    let mut bodies = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir("tests/fixtures/stripe/events")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "index.json"))
        .collect();
    paths.sort();
    for path in paths {
        bodies.push(serde_json::from_slice(&std::fs::read(path)?)?);
    }
    Ok(bodies)
}

/// Runs the load; returns the result as JSON.
pub async fn run(options: LoadOptions) -> Result<serde_json::Value, Error> {
    let fixtures = fixture_bodies()?;
    let run_id = format!("{:08x}", fastrand::u32(..));
    let body = |n: usize| -> Vec<u8> {
        let mut event = fixtures[n % fixtures.len()].clone();
        event["id"] = serde_json::json!(format!("evt_load{run_id}n{n:07}"));
        serde_json::to_vec_pretty(&event).unwrap_or_default()
    };
    // The measured sequence: each unique event once, and after it (once it has surely been
    // answered: at least 4×concurrency requests later) a redelivery of a random earlier one.
    let mut sequence = Vec::new();
    let total_unique = options.warmup + options.events;
    for n in options.warmup..total_unique {
        sequence.push(n);
        let earlier = n - options.warmup;
        if earlier > 4 * options.concurrency && fastrand::f64() < options.redeliver {
            let back = fastrand::usize(4 * options.concurrency..=earlier);
            sequence.push(n - back);
        }
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let secret = SigningSecret::new(SECRET)?;

    eprintln!(
        "load {}: warm-up {} events, then {} requests ({} unique, {} redeliveries) at concurrency {}",
        options.label,
        options.warmup,
        sequence.len(),
        options.events,
        sequence.len() - options.events,
        options.concurrency
    );
    let warmup: Vec<usize> = (0..options.warmup).collect();
    send_all(&client, &options, &secret, &warmup, &body).await;

    let before = sample(&options.processes);
    let side_before = sample(&options.side_processes);
    let started = Instant::now();
    let (latencies, statuses) = send_all(&client, &options, &secret, &sequence, &body).await;
    let elapsed = started.elapsed().as_secs_f64();
    let after = sample(&options.processes);
    let side_after = sample(&options.side_processes);

    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let requests = sequence.len() as f64;
    let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_SEC;
    let side_cpu =
        side_after.cpu_ticks.saturating_sub(side_before.cpu_ticks) as f64 / TICKS_PER_SEC;
    let result = serde_json::json!({
        "label": options.label,
        "requests": sequence.len(),
        "unique_events": options.events,
        "redeliveries": sequence.len() - options.events,
        "concurrency": options.concurrency,
        "seconds": elapsed,
        "throughput_rps": requests / elapsed,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "statuses": statuses,
        "processes": after.pids.len(),
        "cpu_seconds": cpu,
        "cpu_ms_per_1000": cpu * 1000.0 / requests * 1000.0,
        "peak_rss_mib_total": after.peak_rss_kib as f64 / 1024.0,
        "peak_rss_mib_max_process": after.max_peak_rss_kib as f64 / 1024.0,
        "side_processes": side_after.pids.len(),
        "side_cpu_ms_per_1000": side_cpu * 1000.0 / requests * 1000.0,
        "side_peak_rss_mib_total": side_after.peak_rss_kib as f64 / 1024.0,
    });
    eprintln!("load {}: {result}", options.label);
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(result)
}

async fn send_all(
    client: &reqwest::Client,
    options: &LoadOptions,
    secret: &SigningSecret,
    sequence: &[usize],
    body: &(dyn Fn(usize) -> Vec<u8> + Sync),
) -> (Vec<f64>, BTreeMap<String, u64>) {
    let next = AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(sequence.len()));
    let statuses: Mutex<BTreeMap<String, u64>> = Mutex::default();
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&n) = sequence.get(i) else {
                return;
            };
            let payload = body(n);
            let header = sign(&payload, secret, unix_now());
            let started = Instant::now();
            let answer = client
                .post(&options.url)
                .header("content-type", "application/json")
                .header("Stripe-Signature", header)
                .body(payload)
                .send()
                .await;
            let label = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    match (status, text.contains("duplicate")) {
                        (200, true) => "200 duplicate".to_owned(),
                        (200, false) => "200 enqueued".to_owned(),
                        (s, _) => s.to_string(),
                    }
                }
                Err(_) => "transport error".to_owned(),
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if let Ok(mut l) = latencies.lock() {
                l.push(ms);
            }
            if let Ok(mut s) = statuses.lock() {
                *s.entry(label).or_default() += 1;
            }
        }
    };
    futures::future::join_all((0..options.concurrency).map(|_| worker())).await;
    let latencies = latencies.into_inner().unwrap_or_default();
    let statuses = statuses.into_inner().unwrap_or_default();
    (latencies, statuses)
}
