//! A fake of Stripe's events API on a local port, so backfill and replay are tested (and can be tried
//! on a laptop) without Stripe: `GET /v1/events` with Stripe's list pagination (`limit`,
//! `starting_after`, `ending_before`, `has_more`) and filters (`created[gte|gt|lte|lt]`, `types[]`,
//! `type` with a trailing `*`, `delivery_success`), `GET /v1/events/{id}`, Stripe's error bodies, a
//! bearer key check, and faults injected on demand: a 429 with `Retry-After`, or any 5xx, answered to
//! the n-th request.
//!
//! It also answers what the processor fetches: `GET /v2/core/events/{id}` (the thin form of an event)
//! and the objects events are about (`GET /v1/subscriptions/{id}`, `/v1/invoices/{id}`, ...), each as
//! the newest event has it, or as a test set it with [`FakeStripe::put_object`] ("Stripe's state now").
//!
//! Every request is recorded with its path, query, status and the `Stripe-Account` / `Stripe-Context`
//! headers, so tests can count what a client asked and on whose behalf.
//!
//! Events are listed newest first (`created` descending, then id descending), as Stripe lists them.
//! `delivery_success=false` selects the events whose `pending_webhooks` is above 0.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::{net::TcpListener, task::JoinHandle};

/// A fault answered instead of the real response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <secs>`.
    RateLimited {
        /// The header's value.
        retry_after_secs: u64,
    },
    /// This 5xx status.
    ServerError(u16),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// 1-based, in arrival order.
    pub number: usize,
    /// The path.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
    /// Its `Stripe-Account` header: the connected account it acts for.
    pub stripe_account: Option<String>,
    /// Its `Stripe-Context` header: the account context of a thin (v2) event.
    pub stripe_context: Option<String>,
}

impl RecordedRequest {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct State {
    /// Newest first.
    events: Vec<Value>,
    api_key: String,
    /// API path (`/v1/subscriptions/sub_1`) → the object as Stripe has it now.
    objects: Mutex<BTreeMap<String, Value>>,
    faults: Mutex<BTreeMap<usize, Fault>>,
    requests: Mutex<Vec<RecordedRequest>>,
    count: AtomicUsize,
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeStripe {
    /// `http://127.0.0.1:<port>`: the value for `STRIPE_API_BASE`.
    pub base_url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeStripe {
    /// Serves `events` on a free port of 127.0.0.1, accepting only `api_key`.
    pub async fn start(events: Vec<Value>, api_key: &str) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), events, api_key).await
    }

    /// Serves `events` on `address`.
    pub async fn start_on(
        address: SocketAddr,
        mut events: Vec<Value>,
        api_key: &str,
    ) -> std::io::Result<Self> {
        events.sort_by(|a, b| {
            let key = |e: &Value| (e["created"].as_i64(), e["id"].as_str().map(str::to_owned));
            key(b).cmp(&key(a))
        });
        let listener = TcpListener::bind(address).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        // Oldest first, so the newest event's copy of each object is the one kept.
        let objects = events
            .iter()
            .rev()
            .filter_map(|event| {
                let object = &event["data"]["object"];
                Some((object_path(object)?, object.clone()))
            })
            .collect();
        let state = Arc::new(State {
            events,
            objects: Mutex::new(objects),
            api_key: api_key.to_owned(),
            faults: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        });
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(state.answer(&request)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            base_url,
            state,
            task,
        })
    }

    /// Answers request number `number` (1-based, counting every request) with `fault`.
    pub fn inject(&self, number: usize, fault: Fault) {
        if let Ok(mut faults) = self.state.faults.lock() {
            faults.insert(number, fault);
        }
    }

    /// Sets what `GET path` answers from now on (`/v1/subscriptions/sub_1`), as if the object changed
    /// in Stripe.
    pub fn put_object(&self, path: &str, object: Value) {
        if let Ok(mut objects) = self.state.objects.lock() {
            objects.insert(path.to_owned(), object);
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// `count` events made from the fixtures in `dir` (cycled in name order): ids `evt_<tag><n>`,
/// `created` one `spacing_secs` apart ending at `newest`, and every `undelivered_every`-th (if not 0)
/// with `pending_webhooks: 1`, the rest 0.
pub fn fixture_events(
    dir: &Path,
    tag: &str,
    count: usize,
    newest: i64,
    spacing_secs: i64,
    undelivered_every: usize,
) -> std::io::Result<Vec<Value>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "index.json")
        })
        .collect();
    paths.sort();
    let fixtures = paths
        .iter()
        .map(|p| {
            let text = std::fs::read(p)?;
            serde_json::from_slice::<Value>(&text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    if fixtures.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no fixture events",
        ));
    }
    Ok((0..count)
        .map(|n| {
            let mut event = fixtures[n % fixtures.len()].clone();
            event["id"] = json!(format!("evt_{tag}{n:06}"));
            event["created"] = json!(newest - spacing_secs * n as i64);
            let undelivered = undelivered_every != 0 && n % undelivered_every == 0;
            event["pending_webhooks"] = json!(u8::from(undelivered));
            event
        })
        .collect())
}

/// The API path an object is retrieved from, if it is of a type the processor fetches.
fn object_path(object: &Value) -> Option<String> {
    let collection = stripe_pipeline::delivery::v1_collection(object["object"].as_str()?)?;
    Some(format!("/v1/{collection}/{}", object["id"].as_str()?))
}

type Answer = Response<Full<Bytes>>;

fn respond(status: u16, body: &Value, headers: &[(&str, String)]) -> Answer {
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn stripe_error(status: u16, kind: &str, message: &str, headers: &[(&str, String)]) -> Answer {
    respond(
        status,
        &json!({ "error": { "type": kind, "message": message } }),
        headers,
    )
}

impl State {
    fn answer(&self, request: &Request<Incoming>) -> Answer {
        let number = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let path = request.uri().path().to_owned();
        let query: Vec<(String, String)> = request
            .uri()
            .query()
            .map(|q| {
                reqwest::Url::parse(&format!("http://fake/?{q}"))
                    .map(|u| u.query_pairs().into_owned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (stripe_account, stripe_context) = (header("stripe-account"), header("stripe-context"));
        let fault = self
            .faults
            .lock()
            .ok()
            .and_then(|mut faults| faults.remove(&number));
        let response = match fault {
            Some(Fault::RateLimited { retry_after_secs }) => stripe_error(
                429,
                "invalid_request_error",
                "Too many requests hit the API too quickly.",
                &[("retry-after", retry_after_secs.to_string())],
            ),
            Some(Fault::ServerError(status)) => stripe_error(
                status,
                "api_error",
                "Something went wrong on Stripe's end.",
                &[],
            ),
            None => self.route(request, &path, &query),
        };
        if let Ok(mut requests) = self.requests.lock() {
            requests.push(RecordedRequest {
                number,
                path,
                query,
                status: response.status().as_u16(),
                at: Instant::now(),
                stripe_account,
                stripe_context,
            });
        }
        response
    }

    fn route(&self, request: &Request<Incoming>, path: &str, query: &[(String, String)]) -> Answer {
        let authorized = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|key| key == self.api_key);
        if !authorized {
            return stripe_error(
                401,
                "invalid_request_error",
                "Invalid API Key provided.",
                &[],
            );
        }
        if request.method() != hyper::Method::GET {
            return stripe_error(405, "invalid_request_error", "Only GET is faked.", &[]);
        }
        if let Some(id) = path.strip_prefix("/v2/core/events/") {
            return self.thin_event(id);
        }
        if !path.starts_with("/v1/events") {
            return self.object(path);
        }
        match path.strip_prefix("/v1/events") {
            Some("") | Some("/") => self.list(query),
            Some(rest) => match rest.strip_prefix('/') {
                Some(id) => match self.events.iter().find(|e| e["id"] == id) {
                    Some(event) => respond(200, event, &[]),
                    None => stripe_error(
                        404,
                        "invalid_request_error",
                        &format!("No such event: '{id}'"),
                        &[],
                    ),
                },
                None => stripe_error(
                    404,
                    "invalid_request_error",
                    "Unrecognized request URL.",
                    &[],
                ),
            },
            None => stripe_error(
                404,
                "invalid_request_error",
                "Unrecognized request URL.",
                &[],
            ),
        }
    }

    fn thin_event(&self, id: &str) -> Answer {
        // A whole v2 event a test set (one with its own `snapshot_event`, say) wins over the derived one.
        let path = format!("/v2/core/events/{id}");
        if let Some(set) = self.objects.lock().ok().and_then(|o| o.get(&path).cloned()) {
            return respond(200, &set, &[]);
        }
        let thin = self
            .events
            .iter()
            .find(|e| e["id"] == id)
            .and_then(|event| serde_json::to_vec(event).ok())
            .and_then(|bytes| stripe_pipeline::delivery::thin_of(&bytes))
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        match thin {
            Some(thin) => respond(200, &thin, &[]),
            None => stripe_error(
                404,
                "invalid_request_error",
                &format!("No such event: '{id}'"),
                &[],
            ),
        }
    }

    fn object(&self, path: &str) -> Answer {
        let found = self
            .objects
            .lock()
            .ok()
            .and_then(|objects| objects.get(path).cloned());
        match found {
            Some(object) => respond(200, &object, &[]),
            None => {
                let id = path.rsplit('/').next().unwrap_or_default();
                stripe_error(
                    404,
                    "invalid_request_error",
                    &format!("No such object: '{id}'"),
                    &[],
                )
            }
        }
    }

    fn list(&self, query: &[(String, String)]) -> Answer {
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let bad = |message: &str| stripe_error(400, "invalid_request_error", message, &[]);
        let limit = match param("limit").map(str::parse::<usize>) {
            None => 10,
            Some(Ok(n)) if (1..=100).contains(&n) => n,
            Some(_) => return bad("Invalid integer: limit must be between 1 and 100"),
        };
        let mut bounds: Vec<(&str, i64)> = Vec::new();
        for op in ["gte", "gt", "lte", "lt"] {
            if let Some(value) = param(&format!("created[{op}]")) {
                match value.parse() {
                    Ok(v) => bounds.push((op, v)),
                    Err(_) => return bad("Invalid timestamp"),
                }
            }
        }
        if let Some(value) = param("created") {
            match value.parse() {
                Ok(v) => bounds.push(("eq", v)),
                Err(_) => return bad("Invalid timestamp"),
            }
        }
        let types: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "types[]")
            .map(|(_, v)| v.as_str())
            .collect();
        if types.len() > 20 {
            return bad("types: at most 20");
        }
        let single_type = param("type");
        let delivery_success = match param("delivery_success") {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => return bad("Invalid boolean: delivery_success"),
        };
        let matches = |event: &Value| {
            let created = event["created"].as_i64().unwrap_or(0);
            let in_range = bounds.iter().all(|(op, v)| match *op {
                "gte" => created >= *v,
                "gt" => created > *v,
                "lte" => created <= *v,
                "lt" => created < *v,
                _ => created == *v,
            });
            let event_type = event["type"].as_str().unwrap_or("");
            let type_ok = (types.is_empty() || types.contains(&event_type))
                && single_type.is_none_or(|t| match t.strip_suffix('*') {
                    Some(prefix) => event_type.starts_with(prefix),
                    None => event_type == t,
                });
            let delivered = event["pending_webhooks"].as_u64().unwrap_or(0) == 0;
            in_range && type_ok && delivery_success.is_none_or(|want| want == delivered)
        };
        // Cursors are positions in the full list, whatever the filter.
        let position = |id: &str| self.events.iter().position(|e| e["id"] == id);
        let window: Box<dyn Iterator<Item = &Value>> =
            match (param("starting_after"), param("ending_before")) {
                (Some(_), Some(_)) => {
                    return bad("starting_after and ending_before cannot both be given")
                }
                (Some(id), None) => match position(id) {
                    Some(at) => Box::new(self.events[at + 1..].iter()),
                    None => return bad(&format!("No such event: '{id}'")),
                },
                (None, Some(id)) => match position(id) {
                    // The page just before the cursor, still listed newest first.
                    Some(at) => {
                        let before: Vec<&Value> =
                            self.events[..at].iter().filter(|e| matches(e)).collect();
                        let start = before.len().saturating_sub(limit);
                        let page: Vec<Value> =
                            before[start..].iter().map(|e| (*e).clone()).collect();
                        return respond(200, &list_body(page, start > 0), &[]);
                    }
                    None => return bad(&format!("No such event: '{id}'")),
                },
                (None, None) => Box::new(self.events.iter()),
            };
        let mut selected = window.filter(|e| matches(e));
        let page: Vec<Value> = selected.by_ref().take(limit).cloned().collect();
        let has_more = selected.next().is_some();
        respond(200, &list_body(page, has_more), &[])
    }
}

fn list_body(data: Vec<Value>, has_more: bool) -> Value {
    json!({ "object": "list", "url": "/v1/events", "has_more": has_more, "data": data })
}
