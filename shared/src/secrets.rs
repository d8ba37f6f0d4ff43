//! Fetching the signing secrets from AWS Secrets Manager, once per cold start.
//!
//! The secret's value is the same comma-separated list `STRIPE_WEBHOOK_SECRET` takes, so rotating is
//! "put `new,old`, wait for Stripe to sign with the new one, put `new`" — and each cold start picks up the
//! current list. Warm instances keep what they fetched; see the README's rotation runbook.

use aws_sdk_secretsmanager::{
    error::SdkError, operation::get_secret_value::GetSecretValueError, Client,
};

use crate::{
    config::{OptionalSecret, SecretSource},
    signature::{SignatureError, SigningSecret},
};

/// The signing secrets could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Secrets Manager refused or could not be reached.
    #[error("could not read the signing secret from Secrets Manager")]
    Fetch(#[source] Box<SdkError<GetSecretValueError>>),
    /// The secret has no string value.
    #[error("the signing secret has no SecretString")]
    NotAString,
    /// The value is not a list of non-empty secrets.
    #[error("the signing secret is not a comma-separated list of secrets")]
    Invalid(#[source] SignatureError),
}

/// Turns a [`SecretSource`] into the secrets themselves, calling Secrets Manager when it names an ARN.
pub async fn resolve(
    source: &SecretSource,
    sdk_config: &aws_config::SdkConfig,
) -> Result<Vec<SigningSecret>, SecretsError> {
    match source {
        SecretSource::Inline(secrets) => Ok(secrets.clone()),
        SecretSource::SecretsManager { arn } => fetch(&Client::new(sdk_config), arn).await,
    }
}

/// Reads and parses the secret `arn`.
pub async fn fetch(client: &Client, arn: &str) -> Result<Vec<SigningSecret>, SecretsError> {
    SigningSecret::parse_list(&fetch_string(client, arn).await?).map_err(SecretsError::Invalid)
}

/// Reads a secret's string value (e.g. the Slack webhook URL).
pub async fn fetch_string(client: &Client, arn: &str) -> Result<String, SecretsError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretsError::Fetch(Box::new(e)))?;
    let value = output.secret_string().ok_or(SecretsError::NotAString)?;
    Ok(value.trim().to_owned())
}

/// The value of an optional credential, fetched from Secrets Manager when it names an ARN.
pub async fn resolve_optional(
    source: &OptionalSecret,
    sdk_config: &aws_config::SdkConfig,
) -> Result<Option<String>, SecretsError> {
    match source {
        OptionalSecret::Off => Ok(None),
        OptionalSecret::Value(url) => Ok(Some(url.clone())),
        OptionalSecret::SecretsManager { arn } => {
            Ok(Some(fetch_string(&Client::new(sdk_config), arn).await?))
        }
    }
}
