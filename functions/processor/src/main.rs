//! Cold start: read configuration, build the AWS clients and the Slack notifier once, then process SQS
//! batches.

use lambda_runtime::{run, service_fn, Error};
use processor::handler::{handle, App};
use stripe_pipeline::{
    billing::DynamoBillingStore,
    config::{load_aws_config, ProcessorConfig},
    dedup::DynamoDedupStore,
    notify::SlackNotifier,
    secrets,
    telemetry::{self, Metrics},
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = ProcessorConfig::from_env()?;
    let aws = load_aws_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let slack = match secrets::resolve_slack(&config.slack, &aws).await? {
        Some(url) => Some(SlackNotifier::new(url)?),
        None => None,
    };
    let app = App {
        bodies: DynamoDedupStore::for_reading(dynamodb.clone(), config.dedup_table),
        billing: DynamoBillingStore::new(dynamodb, config.billing_table),
        slack,
        metrics: Metrics::new(config.metrics_namespace, "processor"),
    };
    let app = &app;
    run(service_fn(move |event| handle(app, event))).await
}
