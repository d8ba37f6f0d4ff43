//! The functions wired as their `main.rs` wire them, to endpoints of our choosing (the emulators or a
//! fault proxy in front of them), plus what the Lambda service would do around them: tables and queues
//! made from `template.yaml`. The Slack stand-in is `stripe_pipeline::testing::slack::FakeSlack`.

use std::process::Command;

use crate::Error;
use stripe_pipeline::{
    billing::DynamoBillingStore,
    dedup::{DynamoBodyStash, DynamoDedupStore, DynamoDuplicateCounter},
    notify::{Router, Routes},
    queue::SqsEventQueue,
    telemetry::Metrics,
};

/// The signing secret of every bench and chaos run.
pub const SECRET: &str = "whsec_bench_0123456789abcdefghijklmnopqrstuv";

/// Endpoint of DynamoDB Local (from `infra/emulators.sh env`).
pub fn dynamodb_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| "http://127.0.0.1:8000".into())
}

/// Endpoint of moto's SQS.
pub fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_SQS").unwrap_or_else(|_| "http://127.0.0.1:5050".into())
}

/// Tables and queues of one run, created from template.yaml by `infra/resources.py`.
#[derive(Debug, Clone)]
pub struct Resources {
    /// Name prefix.
    pub prefix: String,
    /// The dedup table.
    pub dedup_table: String,
    /// The billing table.
    pub billing_table: String,
    /// The event queue.
    pub event_queue_url: String,
    /// Its dead-letter queue.
    pub dead_letter_queue_url: String,
}

impl Resources {
    /// Creates them with `prefix` (run from the repository root).
    pub fn create(prefix: &str) -> Result<Self, Error> {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let output = Command::new(python)
            .args(["infra/resources.py", "create", "--prefix", prefix, "--json"])
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "infra/resources.py create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let field = |name: &str| -> Result<String, Error> {
            created[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} missing from resources.py output").into())
        };
        Ok(Self {
            prefix: prefix.to_owned(),
            dedup_table: field("DEDUP_TABLE_NAME")?,
            billing_table: field("BILLING_TABLE_NAME")?,
            event_queue_url: field("EVENT_QUEUE_URL")?,
            dead_letter_queue_url: field("DEAD_LETTER_QUEUE_URL")?,
        })
    }

    /// Deletes them (best effort).
    pub fn delete(&self) {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let _ = Command::new(python)
            .args(["infra/resources.py", "delete", "--prefix", &self.prefix])
            .output();
    }
}

/// The SDK configuration the functions use (`load_aws_config`: their timeouts and retries).
pub async fn sdk_config() -> aws_config::SdkConfig {
    stripe_pipeline::config::load_aws_config().await
}

/// A DynamoDB client talking to `endpoint`.
pub fn dynamodb(config: &aws_config::SdkConfig, endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(config)
            .endpoint_url(endpoint)
            .build(),
    )
}

/// An SQS client talking to `endpoint`.
pub fn sqs(config: &aws_config::SdkConfig, endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(config)
            .endpoint_url(endpoint)
            .build(),
    )
}

/// The receiver's state.
pub type ReceiverApp = receiver::handler::App<DynamoDedupStore, SqsEventQueue>;
/// The processor's state.
pub type ProcessorApp = processor::init::DeployedApp;

/// The receiver as `functions/receiver/src/main.rs` builds it ([`receiver::init::app_with`],
/// configuration defaults, test mode), talking to DynamoDB and SQS at the given endpoints.
pub async fn receiver_app(
    config: &aws_config::SdkConfig,
    resources: &Resources,
    dynamodb_at: &str,
    sqs_at: &str,
) -> Result<ReceiverApp, Error> {
    use stripe_pipeline::config as var;
    let env: std::collections::HashMap<&str, String> = std::collections::HashMap::from([
        (var::DEDUP_TABLE_NAME, resources.dedup_table.clone()),
        (var::EVENT_QUEUE_URL, resources.event_queue_url.clone()),
        (var::STRIPE_WEBHOOK_SECRET, SECRET.to_owned()),
        (var::STRIPE_LIVEMODE, "false".to_owned()),
        (var::METRICS_NAMESPACE, "Bench".to_owned()),
    ]);
    let receiver =
        stripe_pipeline::config::ReceiverConfig::from_lookup(|name| env.get(name).cloned())?;
    Ok(receiver::init::app_with(
        receiver,
        config,
        dynamodb(config, dynamodb_at),
        sqs(config, sqs_at),
    )
    .await?)
}

/// The processor as `functions/processor/src/main.rs` builds it, DynamoDB at `dynamodb_at`, Slack at
/// `slack_url`.
pub fn processor_app(
    config: &aws_config::SdkConfig,
    resources: &Resources,
    dynamodb_at: &str,
    slack_url: Option<&str>,
) -> Result<ProcessorApp, Error> {
    let client = dynamodb(config, dynamodb_at);
    // The receiver's default dedup TTL, as `receiver_app` is configured.
    let ttl = std::time::Duration::from_secs(stripe_pipeline::config::DEFAULT_DEDUP_TTL_SECS);
    Ok(stripe_pipeline::process::Processor {
        bodies: DynamoBodyStash::new(client.clone(), &resources.dedup_table, ttl),
        duplicates: DynamoDuplicateCounter::new(client.clone(), &resources.dedup_table, ttl),
        billing: DynamoBillingStore::new(client, &resources.billing_table),
        notify: Router::new(Routes::parse(None, slack_url, None)?, None, None)?,
        stripe: None,
        metrics: Metrics::new("Bench", "processor"),
    })
}

/// The queue at `queue_url` as the Lambda event source mapping names it in each record: its ARN and
/// the region `sqs` talks to (for [`processor::sqs::lambda_message`]).
pub fn event_source(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> (String, String) {
    let region = sqs
        .config()
        .region()
        .map(ToString::to_string)
        .unwrap_or_default();
    (processor::sqs::queue_arn(queue_url, &region), region)
}
