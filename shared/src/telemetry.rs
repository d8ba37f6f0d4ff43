//! Logs and metrics: one JSON log line per decision, and a CloudWatch EMF metric line per outcome.
//!
//! Log fields are fixed (`event_id`, `event_type`, `outcome`, `reason`, `latency_ms`, `source_ip`) so
//! CloudWatch Logs Insights queries stay stable. Bodies, signature headers and secrets are never logged.
//! Metrics use the Embedded Metric Format: a JSON line on stdout that CloudWatch turns into metrics with
//! no API call (and so no latency or IAM permission) in the request path.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    layer::SubscriberExt,
};

/// What became of one delivery (receiver) or one message (processor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Newly claimed and put on the queue.
    Enqueued,
    /// Already on the queue: acknowledged, nothing sent.
    Duplicate,
    /// Another delivery is enqueueing the same event: Stripe is asked to retry.
    InFlight,
    /// Refused before we knew it came from Stripe: bad or missing signature, too large, wrong method
    /// or path. Mostly noise from the internet, or a wrong secret.
    Rejected,
    /// From an address not on the source-IP allow-list (403), refused before anything else was read.
    /// Apart from [`Outcome::Rejected`] so a wrong list (Stripe's addresses changed) shows at once.
    Blocked,
    /// Correctly signed, and still refused (400): not an event we can read, or of the other mode.
    /// Stripe retries it for 3 days, then drops it, so each one needs a look; kept apart from
    /// [`Outcome::Rejected`] so it cannot hide among unauthenticated requests.
    Refused,
    /// Our side or AWS failed: Stripe is asked to retry.
    Failed,
    /// Processed by a handler.
    Handled,
    /// Acknowledged without action (an event type nothing handles).
    Ignored,
    /// A connected account's test-mode event at a live Connect endpoint: acknowledged (2xx), neither
    /// claimed nor enqueued. Stripe sends them there by design, so this is not a fault.
    IgnoredTestMode,
}

impl Outcome {
    /// The snake_case name used in logs and as the metric dimension.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueued => "enqueued",
            Self::Duplicate => "duplicate",
            Self::InFlight => "in_flight",
            Self::Rejected => "rejected",
            Self::Blocked => "blocked",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Handled => "handled",
            Self::Ignored => "ignored",
            Self::IgnoredTestMode => "ignored_test_mode",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The crates whose logs are ours (their names as `tracing` targets): the library, both functions and
/// the operator CLI. Only these log at the level asked for. A directive matches every target that
/// starts with it, so a test keeps any dependency from sharing one of these prefixes.
pub const OUR_CRATES: [&str; 4] = [
    "stripe_pipeline",
    "receiver",
    "processor",
    "stripe_webhooks",
];

/// The `tracing` target of decision lines: one per request (receiver) or message (processor), each
/// carrying its EMF metrics. [`log_filter`] lets them through at any level, so the metrics never depend
/// on how verbose the logs are set.
pub const DECISION: &str = "decision";

/// The field a decision line carries its EMF document in ([`Metrics::emf`]); [`JsonLine`] writes the
/// document's members at the top of the line, where CloudWatch looks for them.
pub const EMF_FIELD: &str = "emf";

/// Installs the JSON subscriber on stdout. Level from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging
/// config), then `RUST_LOG`, else `info`; see [`log_filter`] for where it applies.
pub fn init() {
    let setting = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let level = setting
        .as_deref()
        .and_then(log_level)
        .unwrap_or(LevelFilter::INFO);
    tracing::subscriber::set_global_default(json_lines(log_filter(level), std::io::stdout))
        .unwrap_or_else(|_| eprintln!("a log subscriber was already installed"));
}

/// Replaces the default panic message on stderr with one JSON line like every other: `outcome`
/// `panicked`, the panic's message and where it happened. Both functions install it at start, after
/// [`init`].
///
/// The functions' release profile is `panic = "abort"` (smaller zips, see `Cargo.toml`), so after this
/// line the process ends: Lambda fails the invocation (`Runtime.ExitError`) and starts a fresh
/// environment for the next one. What that does to a delivery is what a reported error does: the
/// receiver's caller gets a 5xx and Stripe retries; the processor's whole batch returns to the queue,
/// where the exactly-once markers keep the retried events from applying twice.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            outcome = "panicked",
            panic = message,
            location = location.as_str(),
            "the function panicked; the process ends and Lambda starts a new one"
        );
    }));
}

/// The functions' log subscriber: one [`JsonLine`] per event through `filter`, written to `writer`.
/// [`init`] installs it on stdout; tests capture it with their own writer.
pub fn json_lines<W>(filter: Targets, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // The builder's own level (INFO unless set) would cut below `filter`: `filter` alone decides.
    tracing_subscriber::fmt()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(JsonLine)
        .with_writer(writer)
        .with_max_level(LevelFilter::TRACE)
        .finish()
        .with(filter)
}

/// One JSON object per line: `level`, the event's fields (`message` among them) at the top, the members
/// of an [`EMF_FIELD`] document beside them, and the current span's fields under `span`. No timestamp
/// (CloudWatch stamps each line) and no target (noise).
///
/// The metrics ride on the decision line instead of a line of their own: EMF reads `_aws` and the
/// members it names wherever they are in a JSON log event, so one line per decision serves the logs and
/// the metrics, and half the lines are not ingested.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = serde_json::Map::new();
        line.insert("level".to_owned(), event.metadata().level().as_str().into());
        event.record(&mut JsonVisitor(&mut line));
        if let Some(serde_json::Value::String(document)) = line.remove(EMF_FIELD) {
            if let Ok(serde_json::Value::Object(members)) = serde_json::from_str(&document) {
                line.extend(members);
            }
        }
        if let Some(span) = ctx.lookup_current() {
            let mut fields = span
                .extensions()
                .get::<tracing_subscriber::fmt::FormattedFields<N>>()
                .and_then(|f| serde_json::from_str::<serde_json::Value>(f.as_str()).ok())
                .and_then(|v| match v {
                    serde_json::Value::Object(map) => Some(map),
                    _ => None,
                })
                .unwrap_or_default();
            fields.insert("name".to_owned(), span.name().into());
            line.insert("span".to_owned(), fields.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// An event's fields as JSON values: numbers and booleans as themselves, everything else as text.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}

/// The level a log setting asks for: its bare level (`debug`, `TRACE`, `off`; in a `RUST_LOG` list such
/// as `debug,hyper=trace`, the bare one). `None` when it names none.
///
/// Per-target directives are dropped, not honoured: `hyper=trace` or `aws_smithy_runtime=debug` are
/// precisely what would print request bodies again, and telling "ours" from "theirs" inside a directive
/// (module paths, span and field filters) is easy to get wrong. One knob, the level, is all there is.
pub fn log_level(setting: &str) -> Option<LevelFilter> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty() && !part.contains(['=', '[', '{']))
        .filter_map(|part| part.parse().ok())
        .next_back()
}

/// `level` for [`OUR_CRATES`]; every other crate at WARN, or at `level` if that is stricter.
///
/// At DEBUG and TRACE, `lambda_runtime` / `lambda_http` print each raw invocation event (the webhook
/// body and its `Stripe-Signature` header) and the AWS SDK's HTTP stack prints request bodies (the body
/// we enqueue). Our own crates log decisions, never those, so only they follow the level.
///
/// [`DECISION`] lines pass at INFO whatever the level (and at `level` when it is more verbose): each one
/// carries the request's metrics, which alarms and the dashboard need however quiet the logs are set.
///
/// Targets and levels only, so a [`Targets`] filter (no regex engine in the binaries, unlike `EnvFilter`).
pub fn log_filter(level: LevelFilter) -> Targets {
    Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_targets(OUR_CRATES.map(|krate| (krate, level)))
        .with_target(DECISION, level.max(LevelFilter::INFO))
}

/// Emits EMF metric lines for one function.
#[derive(Debug, Clone)]
pub struct Metrics {
    namespace: String,
    function: &'static str,
}

impl Metrics {
    /// Metrics in `namespace`, dimensioned by `function` (`receiver`, `processor`).
    pub fn new(namespace: impl Into<String>, function: &'static str) -> Self {
        Self {
            namespace: namespace.into(),
            function,
        }
    }

    /// The EMF document for one outcome: a count of 1 and the latency, by function and outcome.
    pub fn document(&self, outcome: Outcome, latency_ms: u64) -> serde_json::Value {
        let timestamp = now_millis();
        serde_json::json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function", "Outcome"]],
                    "Metrics": [
                        {"Name": "Events", "Unit": "Count"},
                        {"Name": "LatencyMs", "Unit": "Milliseconds"}
                    ]
                }]
            },
            "Function": self.function,
            "Outcome": outcome.as_str(),
            "Events": 1,
            "LatencyMs": latency_ms,
        })
    }

    /// [`document`](Self::document) as the text a decision line carries in its [`EMF_FIELD`]:
    /// `info!(target: DECISION, emf = metrics.emf(outcome, latency_ms).as_str(), ...)`.
    pub fn emf(&self, outcome: Outcome, latency_ms: u64) -> String {
        self.document(outcome, latency_ms).to_string()
    }

    /// The EMF document for one notification a channel refused for good: `MisconfiguredChannel`
    /// (count) by function and channel name, apart from the outcomes, so it can be alarmed on alone.
    pub fn misconfigured_channel_document(&self, channel: &str) -> serde_json::Value {
        let timestamp = now_millis();
        serde_json::json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function"], ["Function", "Channel"]],
                    "Metrics": [{"Name": "MisconfiguredChannel", "Unit": "Count"}]
                }]
            },
            "Function": self.function,
            "Channel": channel,
            "MisconfiguredChannel": 1,
        })
    }

    /// Writes [`misconfigured_channel_document`](Self::misconfigured_channel_document) to stdout.
    pub fn record_misconfigured_channel(&self, channel: &str) {
        println!("{}", self.misconfigured_channel_document(channel));
    }
}

/// An error and its sources on one line, for logs (SDK errors keep the useful part in their sources).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// EMF's `Timestamp`: milliseconds since the epoch (0 if the clock is before it).
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a subscriber with `filter` records an event of `target` at `level` (both literals:
    /// `enabled!` builds a callsite from them).
    macro_rules! records {
        ($filter:expr, $target:literal, $level:ident) => {{
            let subscriber = tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .with_max_level(LevelFilter::TRACE)
                .finish()
                .with($filter);
            tracing::subscriber::with_default(subscriber, || {
                tracing::enabled!(target: $target, tracing::Level::$level)
            })
        }};
    }

    #[test]
    fn decision_lines_pass_at_every_level_so_their_metrics_always_do() {
        assert_eq!(DECISION, "decision");
        for level in [LevelFilter::OFF, LevelFilter::ERROR, LevelFilter::WARN] {
            assert!(records!(log_filter(level), "decision", INFO), "{level}");
            assert!(!records!(log_filter(level), "decision", DEBUG), "{level}");
        }
        assert!(records!(log_filter(LevelFilter::DEBUG), "decision", DEBUG));
        // and only decisions: the rest of our crates follow the level
        assert!(!records!(log_filter(LevelFilter::WARN), "receiver", INFO));
    }

    /// The lines `json_lines` writes while `f` runs.
    fn lines_of(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let capture = crate::testing::LogCapture::start();
        f();
        capture.lines()
    }

    #[test]
    fn a_panic_is_one_json_line_with_its_message_and_where_it_happened() {
        let lines = lines_of(|| {
            log_panics();
            let caught = std::panic::catch_unwind(|| {
                let n = std::hint::black_box(3);
                panic!("ledger out of balance by {n} cents");
            });
            // Back to the default hook before anything else can panic in this test binary.
            let _ = std::panic::take_hook();
            assert!(caught.is_err());
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["outcome"], "panicked");
        assert_eq!(line["panic"], "ledger out of balance by 3 cents");
        let location = line["location"].as_str().unwrap_or_default();
        assert!(
            location.starts_with("shared/src/telemetry.rs:"),
            "{location}"
        );
    }

    #[test]
    fn a_decision_line_is_also_its_metric_line() {
        let metrics = Metrics::new("Ns", "processor");
        let lines = lines_of(|| {
            let span = tracing::info_span!("message", message_id = "m-1");
            let _entered = span.enter();
            tracing::info!(
                target: "decision",
                event_id = "evt_1",
                outcome = %Outcome::Handled,
                latency_ms = 7u64,
                notified = true,
                emf = metrics.emf(Outcome::Handled, 7).as_str(),
                "event processed"
            );
        });
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        let line = &lines[0];
        // The log fields, as before
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "event processed");
        assert_eq!(line["event_id"], "evt_1");
        assert_eq!(line["outcome"], "handled");
        assert_eq!(line["latency_ms"], 7);
        assert_eq!(line["notified"], true);
        assert_eq!(line["span"]["message_id"], "m-1");
        assert_eq!(line["span"]["name"], "message");
        // The EMF document's members at the top, where CloudWatch reads them, and no text copy of it
        assert!(line.get(EMF_FIELD).is_none(), "{line}");
        let declared = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "Ns");
        for metric in declared["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(
                line[name].is_number(),
                "{name} declared but not on the line"
            );
        }
        for dimension in declared["Dimensions"][0].as_array().unwrap() {
            assert!(line[dimension.as_str().unwrap()].is_string());
        }
        assert_eq!(line["Outcome"], "handled");
        assert_eq!(line["Function"], "processor");
    }

    #[test]
    fn at_trace_our_crates_trace_and_the_runtime_and_sdk_stay_at_warn() {
        let filter = || log_filter(LevelFilter::TRACE);
        assert!(records!(filter(), "receiver", TRACE));
        assert!(records!(filter(), "stripe_pipeline::intake", TRACE));
        assert!(records!(filter(), "processor::handler", DEBUG));
        assert!(records!(filter(), "stripe_webhooks::poll", TRACE));
        // These print the raw invocation event and the SDK's request bodies below WARN.
        assert!(!records!(
            filter(),
            "lambda_runtime::layers::api_response",
            DEBUG
        ));
        assert!(!records!(filter(), "lambda_http", INFO));
        assert!(!records!(
            filter(),
            "aws_smithy_runtime::client::http",
            TRACE
        ));
        assert!(!records!(filter(), "hyper::proto::h1", DEBUG));
        assert!(records!(filter(), "lambda_runtime", WARN));
        assert!(records!(filter(), "aws_smithy_runtime", ERROR));
    }

    #[test]
    fn a_stricter_level_than_warn_applies_to_every_crate() {
        assert!(!records!(log_filter(LevelFilter::ERROR), "receiver", WARN));
        assert!(records!(log_filter(LevelFilter::ERROR), "receiver", ERROR));
        assert!(!records!(log_filter(LevelFilter::ERROR), "hyper", WARN));
        assert!(records!(log_filter(LevelFilter::ERROR), "hyper", ERROR));
        assert!(!records!(log_filter(LevelFilter::OFF), "receiver", ERROR));
        assert!(!records!(log_filter(LevelFilter::OFF), "hyper", ERROR));
    }

    #[test]
    fn the_default_info_keeps_our_decisions_and_hides_their_info() {
        assert!(records!(
            log_filter(LevelFilter::INFO),
            "receiver::handler",
            INFO
        ));
        assert!(!records!(
            log_filter(LevelFilter::INFO),
            "receiver::handler",
            DEBUG
        ));
        assert!(!records!(log_filter(LevelFilter::INFO), "aws_config", INFO));
    }

    #[test]
    fn a_log_setting_yields_its_bare_level_and_never_a_per_target_one() {
        assert_eq!(log_level("TRACE"), Some(LevelFilter::TRACE));
        assert_eq!(log_level("debug"), Some(LevelFilter::DEBUG));
        assert_eq!(log_level(" warn "), Some(LevelFilter::WARN));
        assert_eq!(log_level("off"), Some(LevelFilter::OFF));
        assert_eq!(log_level("hyper=trace,info"), Some(LevelFilter::INFO));
        assert_eq!(
            log_level("debug,aws_smithy_runtime=trace"),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(log_level("receiver=debug"), None);
        assert_eq!(log_level("[{body}]=trace"), None);
        assert_eq!(log_level(""), None);
        assert_eq!(log_level("loud"), None);
    }

    #[test]
    fn no_dependency_shares_a_prefix_with_our_crates() {
        // A directive `receiver=trace` also matches a crate named `receiver_foo`: such a dependency
        // would log at our level.
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
            .expect("Cargo.lock");
        let names = lock
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .map(|n| n.trim_end_matches('"').replace('-', "_"));
        for name in names {
            if let Some(ours) = OUR_CRATES.iter().find(|ours| name.starts_with(**ours)) {
                assert_eq!(&name, ours, "{name} would log at our crates' level");
            }
        }
    }

    #[test]
    fn emf_document_declares_the_metrics_it_carries() {
        let doc = Metrics::new("Ns", "receiver").document(Outcome::InFlight, 12);
        let declared = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "Ns");
        for metric in declared["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name} declared but not present");
        }
        for dimension in declared["Dimensions"][0].as_array().unwrap() {
            assert!(doc[dimension.as_str().unwrap()].is_string());
        }
        assert_eq!(doc["Outcome"], "in_flight");
    }

    #[test]
    fn a_misconfigured_channel_is_its_own_metric_by_channel_name() {
        let doc = Metrics::new("Ns", "processor").misconfigured_channel_document("support");
        let declared = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Metrics"][0]["Name"], "MisconfiguredChannel");
        assert_eq!(doc["MisconfiguredChannel"], 1);
        assert_eq!(doc["Channel"], "support");
        assert!(doc.get("Outcome").is_none(), "not one of the outcomes");
        for set in declared["Dimensions"].as_array().unwrap() {
            for dimension in set.as_array().unwrap() {
                assert!(doc[dimension.as_str().unwrap()].is_string());
            }
        }
    }
}
