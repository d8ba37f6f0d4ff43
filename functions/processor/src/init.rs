//! Cold start wiring: the processor's [`App`] from the environment, built once. `main.rs` and the CLI's
//! local poller (`stripe-webhooks poll`, in-process mode) both call it, so the local loop runs the
//! processor exactly as deployed.

use stripe_pipeline::{
    billing::DynamoBillingStore,
    config::{ConfigError, ProcessorConfig},
    dedup::DynamoDedupStore,
    notify::{RouteError, Router, Routes},
    secrets::{self, SecretsError},
    stripe_api::{ApiKey, RetryPolicy, StripeApi, StripeApiError},
    telemetry::Metrics,
};

use crate::handler::App;

/// Stripe's read limit is shared by the whole account (25/s in test mode); the processor takes part of
/// it so a burst of events cannot starve the rest of the integration.
pub const STRIPE_READS_PER_SECOND: f64 = 10.0;

/// The processor as deployed: DynamoDB stores, Slack and Stripe's API when configured.
pub type DeployedApp = App<DynamoDedupStore, DynamoBillingStore>;

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
        Some(key) => Some(StripeApi::new(
            &config.stripe_api_base,
            ApiKey::new(key).ok_or(InitError::EmptyApiKey)?,
            STRIPE_READS_PER_SECOND,
            RetryPolicy::default(),
        )?),
        None => None,
    };
    Ok(App {
        bodies: DynamoDedupStore::for_reading(dynamodb.clone(), config.dedup_table),
        billing: DynamoBillingStore::new(dynamodb, config.billing_table).with_marker_retention(
            config
                .marker_retention_secs
                .map(|secs| i64::try_from(secs).unwrap_or(i64::MAX)),
        ),
        notify,
        feed_ttl_secs: i64::try_from(config.feed_ttl_secs).unwrap_or(i64::MAX),
        stripe,
        metrics: Metrics::new(config.metrics_namespace, "processor"),
    })
}
