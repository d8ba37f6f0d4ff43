//! Cold start: read configuration, build the AWS clients and the verifier once, then serve requests.

use lambda_http::{run, service_fn, Error};
use receiver::handler::{handle, App};
use stripe_pipeline::{
    config::{load_aws_config, ReceiverConfig},
    dedup::DynamoDedupStore,
    queue::SqsEventQueue,
    secrets,
    signature::SignatureVerifier,
    telemetry::{self, Metrics},
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = ReceiverConfig::from_env()?;
    let aws = load_aws_config().await;
    let secrets = secrets::resolve(&config.secrets, &aws).await?;
    let app = App {
        verifier: SignatureVerifier::new(secrets, config.tolerance)?,
        store: DynamoDedupStore::new(
            aws_sdk_dynamodb::Client::new(&aws),
            config.dedup_table,
            config.dedup_ttl,
            config.dedup_lease,
        ),
        queue: SqsEventQueue::new(aws_sdk_sqs::Client::new(&aws), config.event_queue_url),
        livemode: config.livemode,
        test_connect_events: config.test_connect_events,
        max_body_bytes: config.max_body_bytes,
        sqs_max_message_bytes: config.sqs_max_message_bytes,
        metrics: Metrics::new(config.metrics_namespace, "receiver"),
    };
    let app = &app;
    run(service_fn(move |request| handle(app, request))).await
}
