//! Cold start wiring: the processor's [`Processor`] from the environment, built once. `main.rs` and the CLI's
//! local poller (`stripe-webhooks poll`, in-process mode) both call it, so the local loop runs the
//! processor exactly as deployed.

use stripe_pipeline::{
    billing::DynamoBillingStore,
    config::{ConfigError, ProcessorConfig},
    dedup::{DynamoBodyStash, DynamoDuplicateCounter},
    notify::{RouteError, Router, Routes},
    secrets::{self, SecretsError},
    stripe_api::{ApiKey, RetryPolicy, StripeApi, StripeApiError},
    telemetry::Metrics,
};

use std::time::Duration;

use stripe_pipeline::process::Processor;

/// The part of the account's Stripe read limit the processor takes, all instances together. The limit
/// is per account, shared by every client of every key (the dashboard, the CLI's backfill at
/// 10 requests/s, your application), and a 429 costs a message its budget; half leaves them room.
pub const STRIPE_LIMIT_SHARE: f64 = 0.5;

/// Requests per second one processor instance may send: its share of the account's limit. Instances
/// do not talk to each other, so each assumes all `max_instances` are busy at once; with the defaults
/// that is 25 × 0.5 / 5 = 2.5/s in test mode and 10/s in live mode, each instance's batch sharing it.
pub fn stripe_reads_per_second(account_rps: f64, max_instances: u32) -> f64 {
    account_rps * STRIPE_LIMIT_SHARE / f64::from(max_instances.max(1))
}

/// The processor as deployed: DynamoDB stores, Slack and Stripe's API when configured.
pub type DeployedApp = Processor<DynamoBodyStash, DynamoDuplicateCounter, DynamoBillingStore>;

/// The processor could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A setting is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A secret could not be read.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The notification routes are invalid (the error names the entry).
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// The Stripe API client could not be built.
    #[error(transparent)]
    StripeApi(#[from] StripeApiError),
    /// The Stripe API key is empty.
    #[error("the Stripe API key is empty")]
    EmptyApiKey,
}

/// Reads the configuration and builds every client once.
pub async fn app(aws: &aws_config::SdkConfig) -> Result<DeployedApp, InitError> {
    app_from(ProcessorConfig::from_env()?, aws).await
}

/// Builds every client once from `config` (read by [`app`] from the environment).
pub async fn app_from(
    config: ProcessorConfig,
    aws: &aws_config::SdkConfig,
) -> Result<DeployedApp, InitError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let slack = secrets::resolve_optional(&config.slack, aws).await?;
    let document = secrets::resolve_optional(&config.routes, aws).await?;
    let email_from = config.email_from.as_deref();
    let routes = Routes::parse(document.as_deref(), slack.as_deref(), email_from)?;
    let ses = routes.has_email().then(|| aws_sdk_sesv2::Client::new(aws));
    let notify = Router::new(routes, ses, email_from)?;
    let stripe = match secrets::resolve_optional(&config.stripe_api_key, aws).await? {
        Some(key) => {
            let key = ApiKey::new(key).ok_or(InitError::EmptyApiKey)?;
            let account_rps = config
                .stripe_account_rps
                .unwrap_or_else(|| key.account_reads_per_second());
            Some(StripeApi::new(
                &config.stripe_api_base,
                key,
                stripe_reads_per_second(account_rps, config.max_concurrency),
                RetryPolicy::default(),
            )?)
        }
        None => None,
    };
    // The receiver's dedup TTL: the processor's duplicate counts are kept as long as the receiver's.
    let dedup_ttl = Duration::from_secs(config.dedup_ttl_secs);
    Ok(Processor {
        bodies: DynamoBodyStash::new(dynamodb.clone(), &config.dedup_table, dedup_ttl),
        duplicates: DynamoDuplicateCounter::new(dynamodb.clone(), config.dedup_table, dedup_ttl),
        billing: DynamoBillingStore::new(dynamodb, config.billing_table).with_marker_retention(
            config
                .marker_retention_secs
                .map(|secs| i64::try_from(secs).unwrap_or(i64::MAX)),
        ),
        notify,
        stripe,
        metrics: Metrics::new(config.metrics_namespace, "processor"),
    })
}
