//! A TCP proxy between the functions and an emulator that refuses, delays and cuts connections.
//!
//! It knows nothing of HTTP: it decides per accepted connection (refuse) and per chunk read from either
//! side (delay, cut), which is what a flaky network or an overloaded endpoint looks like to an SDK. A cut
//! on the way in loses a request before the service sees it; a cut on the way back loses the answer to a
//! request the service has executed, the ambiguous case that makes a receiver enqueue twice. Outages
//! refuse every new connection and cut every open one for a while.
//!
//! With `counting` on, it also reads the HTTP requests passing through (AWS SDKs send a Content-Length
//! with every body) and counts them per operation with their body sizes, for the cost model.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// How often each fault happens. Probabilities are per connection (`refuse`) or per chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultPlan {
    /// A new connection is accepted and dropped at once.
    pub refuse: f64,
    /// A chunk waits 20–600 ms before it is passed on.
    pub delay: f64,
    /// A chunk waits 2.5 s: longer than the SDK's 2 s attempt timeout.
    pub stall: f64,
    /// The connection is closed instead of passing the chunk on.
    pub cut: f64,
    /// Every `outage_every`, the endpoint is down for `outage_for`.
    pub outage_every: Option<Duration>,
    /// Length of an outage.
    pub outage_for: Duration,
}

/// What the proxy did, for the report.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections dropped on accept.
    pub refused: AtomicU64,
    /// Chunks delayed (20–600 ms).
    pub delayed: AtomicU64,
    /// Chunks stalled past the SDK attempt timeout.
    pub stalled: AtomicU64,
    /// Connections cut before a request chunk reached the emulator.
    pub cut_requests: AtomicU64,
    /// Connections cut before a response chunk reached the function.
    pub cut_responses: AtomicU64,
    /// Outages started.
    pub outages: AtomicU64,
}

impl FaultCounters {
    /// Every fault injected.
    pub fn total(&self) -> u64 {
        [
            &self.refused,
            &self.delayed,
            &self.stalled,
            &self.cut_requests,
            &self.cut_responses,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "connections": get(&self.connections),
            "refused": get(&self.refused),
            "delayed": get(&self.delayed),
            "stalled": get(&self.stalled),
            "cut_requests": get(&self.cut_requests),
            "cut_responses": get(&self.cut_responses),
            "outages": get(&self.outages),
        })
    }
}

/// What a counting proxy saw of one operation.
#[derive(Debug, Clone, Default)]
pub struct OperationCount {
    /// Requests.
    pub requests: u64,
    /// Request body bytes.
    pub body_bytes: u64,
    /// Billed units, estimated from the request: DynamoDB write/read request units, SQS requests (one
    /// per 64 KB chunk). See [`billed_units`].
    pub units: f64,
    /// DynamoDB write units by the kind of item written (and index writes), summing to `units`.
    pub write_units_by_item: BTreeMap<&'static str, f64>,
}

/// Requests seen by a counting proxy, per operation.
pub type RequestCounts = Arc<Mutex<BTreeMap<String, OperationCount>>>;

/// The attributes naming the pipeline's items: the billing table's keys, the dedup table's key.
const PK: &str = "pk";
const SK: &str = "sk";
const DEDUP_KEY: &str = "event_id";
/// The `ByFeed` GSI's key attributes (`stripe_pipeline::billing::feed`): an item carrying both is also written
/// to the index.
const INDEX_KEYS: [&str; 2] = ["feed_partition", "feed_sort"];

/// What kind of pipeline item a key names, for the per-item table of the cost model.
fn item_kind(key: &serde_json::Value) -> &'static str {
    let s = |name: &str| key[name]["S"].as_str().unwrap_or_default();
    // The billing table's keys first: a marker's feed record carries an `event_id` attribute too.
    if key[PK].is_null() && !key[DEDUP_KEY].is_null() {
        let id = s(DEDUP_KEY);
        return if id.starts_with("#body#") {
            "dedup: stashed body chunk"
        } else if id.starts_with("#duplicates#") {
            "dedup: duplicate counter"
        } else {
            "dedup: claim"
        };
    }
    match (s(PK).split('#').next().unwrap_or_default(), s(SK)) {
        ("EVENT", "EVENT") => "billing: event marker (with feed record)",
        ("EVENT", sk) if sk.starts_with("NOTIFY#") => "billing: notification record",
        ("FEED", "FEED") => "billing: feed record (own item)",
        ("FEED", _) => "billing: open-dispute entry",
        _ => "billing: state item",
    }
}

/// DynamoDB's size of an attribute value: strings and binaries by their bytes, numbers ~1 byte per
/// two significant digits plus one, booleans and nulls 1 byte, lists and maps 3 bytes plus 1 per
/// element and their contents (the sizing in DynamoDB's developer guide, "Item sizes and formats").
fn value_size(value: &serde_json::Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        // The wire carries binaries as base64.
        "B" => inner.as_str().map_or(0, |b| b.len() / 4 * 3),
        "N" => {
            let digits = inner
                .as_str()
                .unwrap_or_default()
                .trim_start_matches(['-', '0'])
                .chars()
                .filter(char::is_ascii_digit)
                .count();
            digits.div_ceil(2) + 1
        }
        "BOOL" | "NULL" => 1,
        "M" => inner.as_object().map_or(3, |m| {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }),
        "L" => inner.as_array().map_or(3, |l| {
            3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>()
        }),
        _ => inner.to_string().len(),
    }
}

/// DynamoDB's size of an item: its attribute names and values.
fn item_size(item: &serde_json::Value) -> usize {
    item.as_object().map_or(0, |attributes| {
        attributes
            .iter()
            .map(|(name, value)| name.len() + value_size(value))
            .sum()
    })
}

/// Write units of putting `item`, `factor` per started KB (2 in a transaction), by item kind; an item
/// the feed index holds costs a standard index write too.
fn put_units(item: &serde_json::Value, factor: f64, units: &mut BTreeMap<&'static str, f64>) {
    let kb = (item_size(item) as f64 / 1024.0).ceil().max(1.0);
    *units.entry(item_kind(item)).or_default() += factor * kb;
    if INDEX_KEYS.iter().all(|k| !item[*k].is_null()) {
        *units.entry("billing: ByFeed index entry").or_default() += kb;
    }
}

/// The write units of one DynamoDB write request, by item kind. Updates and deletes are counted as
/// one started KB (every item they touch here is under 1 KB; DynamoDB bills the larger of the item
/// before and after).
fn write_units(operation: &str, json: &serde_json::Value) -> BTreeMap<&'static str, f64> {
    let mut units = BTreeMap::new();
    fn touch(key: &serde_json::Value, factor: f64, units: &mut BTreeMap<&'static str, f64>) {
        *units.entry(item_kind(key)).or_default() += factor;
    }
    match operation {
        "PutItem" => put_units(&json["Item"], 1.0, &mut units),
        "UpdateItem" | "DeleteItem" => touch(&json["Key"], 1.0, &mut units),
        "TransactWriteItems" => {
            for item in json["TransactItems"].as_array().into_iter().flatten() {
                if !item["Put"].is_null() {
                    put_units(&item["Put"]["Item"], 2.0, &mut units);
                } else {
                    let op = ["Update", "Delete", "ConditionCheck"]
                        .into_iter()
                        .find(|op| !item[*op].is_null())
                        .unwrap_or("Update");
                    touch(&item[op]["Key"], 2.0, &mut units);
                }
            }
        }
        "BatchWriteItem" => {
            for requests in json["RequestItems"]
                .as_object()
                .into_iter()
                .flat_map(|t| t.values())
            {
                for request in requests.as_array().into_iter().flatten() {
                    if !request["PutRequest"].is_null() {
                        put_units(&request["PutRequest"]["Item"], 1.0, &mut units);
                    } else {
                        touch(&request["DeleteRequest"]["Key"], 1.0, &mut units);
                    }
                }
            }
        }
        _ => {}
    }
    units
}

/// The billed units of one request (see [`OperationCount::units`]), with its write units by item kind.
fn billed_units(operation: &str, body: &[u8]) -> (f64, BTreeMap<&'static str, f64>) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let read = |v: &serde_json::Value| {
        if v["ConsistentRead"] == true {
            1.0
        } else {
            0.5
        }
    };
    let writes = write_units(operation, &json);
    if !writes.is_empty() {
        return (writes.values().sum(), writes);
    }
    let units = match operation {
        "GetItem" | "Query" => read(&json),
        "TransactGetItems" => json["TransactItems"]
            .as_array()
            .map_or(0.0, |items| 2.0 * items.len() as f64),
        "SendMessage" => {
            let bytes = json["MessageBody"].as_str().map_or(0, str::len)
                + json["MessageAttributes"].to_string().len();
            (bytes as f64 / 65_536.0).ceil().max(1.0)
        }
        _ => 1.0,
    };
    (units, writes)
}

/// A running proxy.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    /// Where the functions connect instead of the emulator.
    pub url: String,
    /// What it did.
    pub counters: Arc<FaultCounters>,
    /// Requests per operation, when counting.
    pub requests: RequestCounts,
    enabled: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (an `http://host:port` URL).
    pub async fn start(upstream: &str, plan: FaultPlan, counting: bool) -> std::io::Result<Self> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let proxy = Self {
            url,
            counters: Arc::default(),
            requests: Arc::default(),
            enabled: Arc::new(AtomicBool::new(true)),
        };
        let (counters, enabled, requests) = (
            proxy.counters.clone(),
            proxy.enabled.clone(),
            proxy.requests.clone(),
        );
        let started = Instant::now();
        tokio::spawn(async move {
            let mut last_outage = u64::MAX;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let faults = enabled.load(Ordering::Relaxed);
                if faults {
                    if let Some(n) = outage_number(&plan, started) {
                        if n != last_outage {
                            last_outage = n;
                            counters.outages.fetch_add(1, Ordering::Relaxed);
                        }
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                        continue;
                    }
                    if fastrand::f64() < plan.refuse {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        drop(client);
                        continue;
                    }
                }
                let (counters, enabled, requests) =
                    (counters.clone(), enabled.clone(), requests.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let counting = counting.then_some(requests);
                    pump(
                        client, upstream, plan, &counters, &enabled, started, counting,
                    )
                    .await;
                });
            }
        });
        Ok(proxy)
    }

    /// Turns faults on or off (off for the final checks).
    pub fn set_faults(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
}

fn outage_number(plan: &FaultPlan, started: Instant) -> Option<u64> {
    let every = plan.outage_every?.as_millis() as u64;
    let elapsed = started.elapsed().as_millis() as u64;
    // No outage in the first period, so start-up is not what gets tested.
    (elapsed >= every && elapsed % every < plan.outage_for.as_millis() as u64)
        .then_some(elapsed / every)
}

enum Verdict {
    Pass,
    Cut,
}

async fn fault(plan: &FaultPlan, counters: &FaultCounters, started: Instant) -> Verdict {
    if outage_number(plan, started).is_some() {
        return Verdict::Cut;
    }
    let roll = fastrand::f64();
    if roll < plan.cut {
        return Verdict::Cut;
    }
    if roll < plan.cut + plan.stall {
        counters.stalled.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
    } else if roll < plan.cut + plan.stall + plan.delay {
        counters.delayed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..600))).await;
    }
    Verdict::Pass
}

async fn pump(
    client: TcpStream,
    upstream: TcpStream,
    plan: FaultPlan,
    counters: &FaultCounters,
    enabled: &AtomicBool,
    started: Instant,
    counting: Option<RequestCounts>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let mut inbound = vec![0u8; 64 * 1024];
    let mut outbound = vec![0u8; 64 * 1024];
    let mut parser = RequestParser::default();
    loop {
        tokio::select! {
            read = client_read.read(&mut inbound) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if let Some(counts) = &counting {
                    parser.feed(&inbound[..n], counts);
                }
                if enabled.load(Ordering::Relaxed) {
                    if let Verdict::Cut = fault(&plan, counters, started).await {
                        counters.cut_requests.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                if upstream_write.write_all(&inbound[..n]).await.is_err() {
                    return;
                }
            }
            read = upstream_read.read(&mut outbound) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if enabled.load(Ordering::Relaxed) {
                    if let Verdict::Cut = fault(&plan, counters, started).await {
                        counters.cut_responses.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                if client_write.write_all(&outbound[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Splits the client's byte stream into HTTP requests (headers, then Content-Length bytes of body) and
/// names each by its operation: `X-Amz-Target` (DynamoDB, SQS JSON protocol) or `Action=` (SQS query).
#[derive(Default)]
struct RequestParser {
    buffer: Vec<u8>,
}

impl RequestParser {
    fn feed(&mut self, bytes: &[u8], counts: &RequestCounts) {
        self.buffer.extend_from_slice(bytes);
        loop {
            let Some(end) = find(&self.buffer, b"\r\n\r\n") else {
                return;
            };
            let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
            };
            let length: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if self.buffer.len() < end + 4 + length {
                return;
            }
            let body = &self.buffer[end + 4..end + 4 + length];
            let operation = header("x-amz-target")
                .map(|t| t.rsplit('.').next().unwrap_or_default().to_owned())
                .or_else(|| {
                    let text = String::from_utf8_lossy(body);
                    text.split('&')
                        .find_map(|p| p.strip_prefix("Action=").map(str::to_owned))
                })
                .unwrap_or_else(|| "unknown".to_owned());
            let (units, by_item) = billed_units(&operation, body);
            if let Ok(mut counts) = counts.lock() {
                let entry = counts.entry(operation).or_default();
                entry.requests += 1;
                entry.body_bytes += length as u64;
                entry.units += units;
                for (kind, units) in by_item {
                    *entry.write_units_by_item.entry(kind).or_default() += units;
                }
            }
            self.buffer.drain(..end + 4 + length);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn items_are_sized_as_dynamodb_sizes_them() {
        // Names and string bytes; a number of 10 significant digits is 6 bytes; a boolean 1.
        let item = json!({
            "pk": {"S": "EVENT#evt_1"},
            "sk": {"S": "EVENT"},
            "applied_at": {"N": "1800000000"},
            "livemode": {"BOOL": false},
        });
        assert_eq!(item_size(&item), (2 + 11) + (2 + 5) + (10 + 6) + (8 + 1));
        assert_eq!(value_size(&json!({"N": "-0.5"})), 2);
        assert_eq!(value_size(&json!({"B": "AAAA"})), 3, "base64 on the wire");
    }

    #[test]
    fn a_transaction_costs_two_units_per_item_and_the_index_one() {
        let marker = json!({
            "pk": {"S": "EVENT#evt_1"}, "sk": {"S": "EVENT"}, "event_id": {"S": "evt_1"},
            "feed_partition": {"S": "DAY#2026-12-07"}, "feed_sort": {"S": "0001796000000#evt_1"},
        });
        let state = json!({"pk": {"S": "CUSTOMER#cus_1"}, "sk": {"S": "CREDITS"}});
        let request = json!({"TransactItems": [
            {"Put": {"Item": marker}},
            {"Update": {"Key": state}},
        ]});
        let units = write_units("TransactWriteItems", &request);
        assert_eq!(units["billing: event marker (with feed record)"], 2.0);
        assert_eq!(units["billing: ByFeed index entry"], 1.0);
        assert_eq!(units["billing: state item"], 2.0);
        // Over 1 KB, each started KB counts.
        let big = json!({"event_id": {"S": "evt_2"}, "body": {"S": "x".repeat(1500)}});
        let units = write_units("PutItem", &json!({ "Item": big }));
        assert_eq!(units["dedup: claim"], 2.0);
    }
}
