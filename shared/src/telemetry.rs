//! Logs and metrics: one JSON log line per decision, and a CloudWatch EMF metric line per outcome.
//!
//! Log fields are fixed (`event_id`, `event_type`, `outcome`, `reason`, `latency_ms`, `source_ip`) so
//! CloudWatch Logs Insights queries stay stable. Bodies, signature headers and secrets are never logged.
//! Metrics use the Embedded Metric Format: a JSON line on stdout that CloudWatch turns into metrics with
//! no API call (and so no latency or IAM permission) in the request path.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;

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

/// Installs the JSON subscriber. Level from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging config), then
/// `RUST_LOG`, else `info`. No timestamp (CloudWatch stamps each line) and no target (noise).
pub fn init() {
    let filter = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .map(|level| level.to_lowercase())
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .init();
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

    /// Writes one outcome's metric line to stdout, where Lambda ships it to CloudWatch.
    pub fn record(&self, outcome: Outcome, latency_ms: u64) {
        println!("{}", self.document(outcome, latency_ms));
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
