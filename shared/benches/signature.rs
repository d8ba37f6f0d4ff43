//! Stripe-Signature verification on a 3 KB and a 100 KB event, beside raw HMAC-SHA256 over the same
//! bytes, so the cost of everything around the MAC (header parsing, hex decoding, the constant-time
//! compare, the envelope parse the receiver does next) is visible.
//!
//! The payloads are Stripe fixture events padded to size: `charge.dispute.created` to 3 KB with
//! metadata, `invoice.paid` to 100 KB with more invoice lines (the shape of a real large event). With
//! `BENCH_PAYLOAD_DIR` set, they are written there (`3kb.json`, `100kb.json`) so that the stripe-python
//! and stripe-node timings of `make bench` (bench/verify/) run on exactly the same bytes.
#![allow(missing_docs)]

use std::{hint::black_box, path::PathBuf, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use stripe_pipeline::{
    event::EventEnvelope,
    signature::{sign, SignatureVerifier, SigningSecret, DEFAULT_TOLERANCE_SECS},
};

/// The secret every implementation in `make bench` signs and verifies with.
const SECRET: &str = "whsec_bench_0123456789abcdefghijklmnopqrstuv";
/// The signed timestamp; verification runs "now" = this, so the tolerance check passes.
const SIGNED_AT: u64 = 1_767_225_600;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/stripe/events")
        .join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// `event` pretty-printed (as Stripe delivers it) and padded with a metadata string to exactly `size`
/// bytes.
fn padded(mut event: Value, size: usize) -> Vec<u8> {
    event["data"]["object"]["metadata"]["bench_padding"] = json!("");
    let base = serde_json::to_vec_pretty(&event).unwrap_or_default().len();
    assert!(base <= size, "fixture is already {base} bytes");
    event["data"]["object"]["metadata"]["bench_padding"] = json!("x".repeat(size - base));
    let body = serde_json::to_vec_pretty(&event).unwrap_or_default();
    assert_eq!(body.len(), size);
    body
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let small = padded(fixture("charge.dispute.created"), 3 * 1024);
    let mut invoice = fixture("invoice.paid");
    let line = invoice["data"]["object"]["lines"]["data"][0].clone();
    let mut lines = Vec::new();
    for n in 0.. {
        let mut l = line.clone();
        l["id"] = json!(format!("il_bench{n:06}"));
        lines.push(l);
        invoice["data"]["object"]["lines"]["data"] = json!(lines);
        if serde_json::to_vec_pretty(&invoice)
            .unwrap_or_default()
            .len()
            > 98 * 1024
        {
            break;
        }
    }
    invoice["data"]["object"]["lines"]["total_count"] = json!(lines.len());
    let large = padded(invoice, 100 * 1024);
    vec![("3kb", small), ("100kb", large)]
}

fn write_payloads(payloads: &[(&str, Vec<u8>)]) {
    let Some(dir) = std::env::var_os("BENCH_PAYLOAD_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    for (name, body) in payloads {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

fn verification(c: &mut Criterion) {
    let payloads = payloads();
    write_payloads(&payloads);
    let secret = SigningSecret::new(SECRET).unwrap_or_else(|e| panic!("{e}"));
    let verifier = SignatureVerifier::new(
        vec![secret.clone()],
        Duration::from_secs(DEFAULT_TOLERANCE_SECS),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("verify");
    for (name, body) in &payloads {
        let header = sign(body, &secret, SIGNED_AT);
        assert_eq!(
            verifier.verify_at(body, Some(&header), SIGNED_AT),
            Ok(SIGNED_AT)
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| verifier.verify_at(black_box(body), black_box(Some(&header)), SIGNED_AT))
        });
    }
    group.finish();

    // What the receiver does before touching DynamoDB: verify, then parse the envelope (id, type,
    // livemode). The counterpart of stripe-python's and stripe-node's construct_event, which verify and
    // then parse the whole JSON.
    let mut group = c.benchmark_group("verify_and_parse");
    for (name, body) in &payloads {
        let header = sign(body, &secret, SIGNED_AT);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| {
                verifier
                    .verify_at(black_box(body), black_box(Some(&header)), SIGNED_AT)
                    .ok()
                    .and_then(|_| EventEnvelope::parse(black_box(body)).ok())
            })
        });
    }
    group.finish();

    // The floor: one HMAC-SHA256 over `<t>.<body>` with the same key, nothing else.
    let mut group = c.benchmark_group("hmac_sha256");
    let signed_prefix = format!("{SIGNED_AT}.");
    for (name, body) in &payloads {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"));
                mac.update(signed_prefix.as_bytes());
                mac.update(black_box(body));
                mac.finalize().into_bytes()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = verification
}
criterion_main!(benches);
