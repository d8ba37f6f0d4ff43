//! Cold start: read configuration and build the AWS clients once, then process SQS batches.

use lambda_runtime::{run, service_fn, Error};
use processor::handler::{handle, App};
use stripe_pipeline::{
    config::{load_aws_config, ProcessorConfig},
    dedup::DynamoDedupStore,
    telemetry::{self, Metrics},
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = ProcessorConfig::from_env()?;
    let aws = load_aws_config().await;
    let store =
        DynamoDedupStore::for_reading(aws_sdk_dynamodb::Client::new(&aws), config.dedup_table);
    let app = App {
        store,
        metrics: Metrics::new(config.metrics_namespace, "processor"),
    };
    let app = &app;
    run(service_fn(move |event| handle(app, event))).await
}
