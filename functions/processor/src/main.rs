//! Cold start: read configuration, build the AWS clients, Slack and Stripe's API once, then process SQS
//! batches.

use lambda_runtime::{run, service_fn, Error};
use processor::handler::handle;
use stripe_pipeline::{config::load_aws_config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    telemetry::log_panics();
    let aws = load_aws_config().await;
    let app = processor::init::app(&aws).await?;
    let app = &app;
    run(service_fn(move |event| handle(app, event))).await
}
