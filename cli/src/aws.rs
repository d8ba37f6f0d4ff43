//! The AWS wiring the subcommands share: the clients, built once, and the stores, queues and the Stripe
//! API client their arguments name.

use super::*;

/// The AWS clients: DynamoDB with the functions' own short timeouts, SQS with room for a 20 s long
/// poll.
pub(crate) struct Aws {
    pub(crate) config: aws_config::SdkConfig,
    pub(crate) dynamodb: aws_sdk_dynamodb::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
}

pub(crate) async fn aws() -> Aws {
    let config = load_aws_config().await;
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(70))
        .build();
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .timeout_config(timeouts)
            .build(),
    );
    Aws {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        sqs,
        config,
    }
}

impl IntakeArgs {
    pub(crate) fn store(&self, aws: &Aws) -> DynamoDedupStore {
        DynamoDedupStore::new(
            aws.dynamodb.clone(),
            &self.dedup_table,
            Duration::from_secs(self.dedup_ttl_secs),
            Duration::from_secs(self.dedup_lease_secs),
        )
    }

    pub(crate) fn queue(&self, aws: &Aws) -> SqsEventQueue {
        SqsEventQueue::new(aws.sqs.clone(), &self.event_queue_url)
    }
}

impl StripeArgs {
    pub(crate) async fn api(&self, aws: &Aws) -> Result<StripeApi, CliError> {
        let source = config::stripe_api_key(|var| match var {
            config::STRIPE_API_KEY_SECRET_ARN => self.api_key_secret_arn.clone(),
            _ => std::env::var(var).ok(),
        })?;
        let key = match source {
            config::OptionalSecret::Value(key) => ApiKey::new(key),
            config::OptionalSecret::SecretsManager { arn } => {
                let client = aws_sdk_secretsmanager::Client::new(&aws.config);
                ApiKey::new(secrets::fetch_string(&client, &arn).await?)
            }
            config::OptionalSecret::Off => None,
        }
        .ok_or(CliError::NoApiKey)?;
        let retry = RetryPolicy {
            max_retries: self.max_retries,
            ..RetryPolicy::default()
        };
        Ok(StripeApi::new(&self.api_base, key, self.max_rps, retry)?)
    }
}
