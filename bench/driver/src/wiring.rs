//! The functions wired as their `main.rs` wire them, to endpoints of our choosing (the emulators or a
//! fault proxy in front of them), plus what the Lambda service would do around them: tables and queues
//! made from `template.yaml`. The Slack stand-in is `stripe_pipeline::testing::slack::FakeSlack`.

use std::path::Path;

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

pub use stripe_pipeline::testing::resources::Resources;
use stripe_pipeline::testing::resources::ResourcesPy;

/// Creates one run's tables and queues from template.yaml (`infra/resources.py`, run from the
/// repository root as `make bench` runs, against the emulators the environment names).
pub fn create_resources(prefix: &str) -> Result<Resources, Error> {
    Ok(ResourcesPy::new(Path::new(".")).create(prefix)?)
}

/// Deletes them (best effort).
pub fn delete_resources(resources: &Resources) {
    ResourcesPy::new(Path::new(".")).delete(resources);
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
