//! Cold start wiring: the receiver's [`App`] from the environment, built once. `main.rs` calls it; the
//! integration tests and the bench driver build theirs with [`app_with`] (their own endpoints), and
//! call [`app_from`] to check that a cold start fails where it must.

use stripe_pipeline::{
    config::{ConfigError, ReceiverConfig},
    dedup::DynamoDedupStore,
    queue::SqsEventQueue,
    secrets::{self, SecretsError},
    signature::{SignatureError, SignatureVerifier},
    source_ips::{self, SourceIpError},
    telemetry::Metrics,
};
use tracing::info;

use crate::handler::App;

/// The receiver as deployed: the DynamoDB dedup table and the SQS event queue.
pub type DeployedApp = App<DynamoDedupStore, SqsEventQueue>;

/// The receiver could not start. Lambda then answers API Gateway with an error (a 5xx to Stripe,
/// which retries), so a broken setting never turns into accepted-but-unchecked deliveries.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A setting is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing secrets could not be read.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The signing secrets are unusable.
    #[error(transparent)]
    Verifier(#[from] SignatureError),
    /// The source-IP allow-list is on but missing, unreadable or invalid. Never "allow all".
    #[error(transparent)]
    SourceIps(#[from] SourceIpError),
}

/// Reads the configuration and builds every client once.
pub async fn app(aws: &aws_config::SdkConfig) -> Result<DeployedApp, InitError> {
    app_from(ReceiverConfig::from_env()?, aws).await
}

/// Builds every client once from `config` (read by [`app`] from the environment).
pub async fn app_from(
    config: ReceiverConfig,
    aws: &aws_config::SdkConfig,
) -> Result<DeployedApp, InitError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let sqs = aws_sdk_sqs::Client::new(aws);
    app_with(config, aws, dynamodb, sqs).await
}

/// [`app_from`] with the dedup table and the event queue reached through `dynamodb` and `sqs` (the
/// integration tests and the bench point them at the emulators or at a fault proxy in front of them);
/// everything else, built from `config` and `aws` exactly as deployed.
pub async fn app_with(
    config: ReceiverConfig,
    aws: &aws_config::SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
) -> Result<DeployedApp, InitError> {
    let source_ips = match &config.source_ip_allowlist_parameter {
        Some(name) => {
            let list = source_ips::load(&aws_sdk_ssm::Client::new(aws), name).await?;
            info!(
                parameter = %name,
                addresses = list.len(),
                "source-IP allow-list on"
            );
            Some(list)
        }
        None => None,
    };
    let secrets = secrets::resolve(&config.secrets, aws).await?;
    Ok(App {
        source_ips,
        verifier: SignatureVerifier::new(secrets, config.tolerance)?,
        store: DynamoDedupStore::new(
            dynamodb,
            config.dedup_table,
            config.dedup_ttl,
            config.dedup_lease,
        ),
        queue: SqsEventQueue::new(sqs, config.event_queue_url),
        livemode: config.livemode,
        test_connect_events: config.test_connect_events,
        max_body_bytes: config.max_body_bytes,
        sqs_max_message_bytes: config.sqs_max_message_bytes,
        metrics: Metrics::new(config.metrics_namespace, "receiver"),
    })
}
