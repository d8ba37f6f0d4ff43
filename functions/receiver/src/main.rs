//! Cold start: read configuration, build the AWS clients, the verifier and the allow-list once, then
//! serve requests.

use lambda_http::{run, service_fn, Error};
use receiver::handler::handle;
use stripe_pipeline::{config::load_aws_config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    telemetry::log_panics();
    let aws = load_aws_config().await;
    let app = receiver::init::app(&aws).await?;
    let app = &app;
    run(service_fn(move |request| handle(app, request))).await
}
