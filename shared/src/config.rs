//! Settings from the environment, each variable named once here. A missing or bad value fails the cold
//! start with an error naming the variable: a receiver that silently defaults its secret or table is worse
//! than one that does not start.
//!
//! AWS endpoints are not settings of ours: `aws_config` reads `AWS_ENDPOINT_URL` and the per-service
//! `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL_SECRETS_MANAGER`, which is how
//! the local emulators are reached without a "local mode" in our code.

use std::{str::FromStr, time::Duration};

use crate::{
    dedup::MAX_STASHED_BODY_BYTES,
    signature::{SigningSecret, DEFAULT_TOLERANCE_SECS},
};

/// Comma-separated signing secrets, for local runs and tests.
pub const STRIPE_WEBHOOK_SECRET: &str = "STRIPE_WEBHOOK_SECRET";
/// ARN of a Secrets Manager secret holding the comma-separated signing secrets (the deployed path).
pub const STRIPE_WEBHOOK_SECRET_ARN: &str = "STRIPE_WEBHOOK_SECRET_ARN";
/// Allowed clock difference between Stripe's `t=` and now, both directions.
pub const STRIPE_SIGNATURE_TOLERANCE_SECS: &str = "STRIPE_SIGNATURE_TOLERANCE_SECS";
/// `true` or `false`: reject events of the other mode. Unset accepts both.
pub const STRIPE_LIVEMODE: &str = "STRIPE_LIVEMODE";
/// `ignore` (default) or `reject`: what a live endpoint (`STRIPE_LIVEMODE=true`) answers a connected
/// account's test-mode event. See [`TestConnectEvents`].
pub const STRIPE_TEST_CONNECT_EVENTS: &str = "STRIPE_TEST_CONNECT_EVENTS";
/// Name of the SSM parameter holding the allowed source addresses (see [`crate::source_ips`]). Unset or
/// empty: every address may call. Set: the list is read at cold start, and a missing or invalid
/// parameter fails the cold start.
pub const SOURCE_IP_ALLOWLIST_PARAMETER: &str = "SOURCE_IP_ALLOWLIST_PARAMETER";
/// The dedup table.
pub const DEDUP_TABLE_NAME: &str = "DEDUP_TABLE_NAME";
/// How long an event id is remembered.
pub const DEDUP_TTL_SECS: &str = "DEDUP_TTL_SECS";
/// How long a `pending` claim blocks other deliveries of the same event.
pub const DEDUP_LEASE_SECS: &str = "DEDUP_LEASE_SECS";
/// How long the processor's per-event markers (and notification records) are kept; `0` keeps them.
pub const EVENT_MARKER_RETENTION_SECS: &str = "EVENT_MARKER_RETENTION_SECS";
/// The event queue.
pub const EVENT_QUEUE_URL: &str = "EVENT_QUEUE_URL";
/// Largest request body accepted; larger gets 413.
pub const MAX_BODY_BYTES: &str = "MAX_BODY_BYTES";
/// Largest SQS message (body plus attributes) the queue takes; larger bodies are stored in the table.
pub const SQS_MAX_MESSAGE_BYTES: &str = "SQS_MAX_MESSAGE_BYTES";
/// The billing table (processor).
pub const BILLING_TABLE_NAME: &str = "BILLING_TABLE_NAME";
/// A Slack incoming-webhook URL (local runs and tests).
pub const SLACK_WEBHOOK_URL: &str = "SLACK_WEBHOOK_URL";
/// ARN of a Secrets Manager secret holding the Slack incoming-webhook URL (deployed).
pub const SLACK_WEBHOOK_SECRET_ARN: &str = "SLACK_WEBHOOK_SECRET_ARN";
/// A Stripe API key (local runs): turns on refetching and thin-event fetching in the processor.
pub const STRIPE_API_KEY: &str = "STRIPE_API_KEY";
/// The notification routing document, JSON (local; it holds Slack URLs): see [`crate::notify::routes`].
pub const NOTIFICATION_ROUTES: &str = "NOTIFICATION_ROUTES";
/// A Secrets Manager secret holding the routing document (deployed).
pub const NOTIFICATION_ROUTES_SECRET_ARN: &str = "NOTIFICATION_ROUTES_SECRET_ARN";
/// The SES-verified sender of notification emails.
pub const NOTIFICATION_EMAIL_FROM: &str = "NOTIFICATION_EMAIL_FROM";
/// ARN of a Secrets Manager secret holding a Stripe API key (deployed).
pub const STRIPE_API_KEY_SECRET_ARN: &str = "STRIPE_API_KEY_SECRET_ARN";
/// Stripe's API base URL (a local fake in tests).
pub const STRIPE_API_BASE: &str = "STRIPE_API_BASE";
/// Stripe's API.
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
/// CloudWatch namespace of the EMF metrics.
pub const METRICS_NAMESPACE: &str = "METRICS_NAMESPACE";
/// The most processor instances that run at once (the SQS event source's `MaximumConcurrency`): the
/// processor's share of Stripe's read limit is split between them.
pub const PROCESSOR_MAX_CONCURRENCY: &str = "PROCESSOR_MAX_CONCURRENCY";
/// Stripe's read limit of the account, requests per second, if not the documented one of the key's
/// mode (100 live, 25 test): for an account whose limit Stripe raised.
pub const STRIPE_API_ACCOUNT_RPS: &str = "STRIPE_API_ACCOUNT_RPS";

/// Stripe may resend an event for up to 30 days (dashboard resend, `/v1/events` recovery), so a shorter
/// memory would let a resend through as new.
pub const DEFAULT_DEDUP_TTL_SECS: u64 = 30 * 24 * 3600;
/// 90 days: three times the longest Stripe can resend an event (30 days), so no delivery Stripe,
/// EventBridge (24 h of retries) or SQS (14 days' retention at most) can still make finds the marker
/// gone, while the billing table does not grow by one item per event forever.
pub const DEFAULT_EVENT_MARKER_RETENTION_SECS: u64 = 90 * 24 * 3600;
/// Longer than a receiver invocation can take (its timeout is 10 s), short enough that a delivery whose
/// enqueue died with the process is retried well within Stripe's first retry.
pub const DEFAULT_DEDUP_LEASE_SECS: u64 = 30;
/// Stripe retries a delivery for up to 3 days: a shorter dedup memory would let a late retry of an
/// event already taken in as new.
pub const MIN_DEDUP_TTL_SECS: u64 = 3 * 24 * 3600;
/// Ten years: far beyond any resend, and far below what an expiry timestamp (`now + ttl`) can hold.
pub const MAX_DEDUP_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// The receiver function's `Timeout` in `template.yaml` (a template test keeps the two equal). A claim's
/// lease must outlast the invocation holding it, or a retry could claim the event while the first
/// invocation is still enqueueing it.
pub const RECEIVER_TIMEOUT_SECS: u64 = 10;
/// 1 MiB: Stripe events are a few KB to a few hundred KB; API Gateway would take up to 10 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// SQS's classic limit (256 KiB). Queues now take 1 MiB, but emulators and older queues do not.
pub const DEFAULT_SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Default CloudWatch namespace.
pub const DEFAULT_METRICS_NAMESPACE: &str = "StripeWebhooks";
/// The template's default `ProcessorMaxConcurrency`: where the variable is unset (local runs) the
/// processor assumes as many siblings as a default stack has, never fewer.
pub const DEFAULT_PROCESSOR_MAX_CONCURRENCY: u32 = 5;

/// A setting is missing or unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable is set to something unusable. The value itself is not repeated (it may be a secret).
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Where the signing secrets come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Given directly (`STRIPE_WEBHOOK_SECRET`).
    Inline(Vec<SigningSecret>),
    /// To be fetched once at cold start from Secrets Manager (`STRIPE_WEBHOOK_SECRET_ARN`).
    SecretsManager {
        /// The secret's ARN or name.
        arn: String,
    },
}

/// What a live endpoint does with a connected account's test-mode event. Stripe sends those to live
/// Connect endpoints too, signed with the live secret; a 4xx makes it retry for 3 days and flag the
/// endpoint as failing, so by default they are acknowledged and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestConnectEvents {
    /// Answer 200 `ignored`; claim and enqueue nothing (outcome `ignored_test_mode`).
    #[default]
    Ignore,
    /// Answer 400 `livemode_mismatch`, as for any event of the other mode.
    Reject,
}

/// Everything the receiver needs, read once at cold start.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Signing secrets, or where to fetch them.
    pub secrets: SecretSource,
    /// Signature timestamp tolerance.
    pub tolerance: Duration,
    /// Expected `livemode`, if enforced.
    pub livemode: Option<bool>,
    /// What a live endpoint does with connected accounts' test-mode events.
    pub test_connect_events: TestConnectEvents,
    /// The SSM parameter of the source-IP allow-list, if the list is on.
    pub source_ip_allowlist_parameter: Option<String>,
    /// Dedup table name.
    pub dedup_table: String,
    /// How long an event id is remembered.
    pub dedup_ttl: Duration,
    /// How long a pending claim blocks concurrent deliveries.
    pub dedup_lease: Duration,
    /// Event queue URL.
    pub event_queue_url: String,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Largest SQS message.
    pub sqs_max_message_bytes: usize,
    /// EMF namespace.
    pub metrics_namespace: String,
}

/// An optional credential (the Slack webhook URL, a Stripe API key): off, given directly in the
/// environment (local runs), or the ARN of a Secrets Manager secret (deployed).
#[derive(Clone, PartialEq, Eq)]
pub enum OptionalSecret {
    /// Not configured: the feature is off.
    Off,
    /// Given directly.
    Value(String),
    /// Fetched once at cold start.
    SecretsManager {
        /// The secret's ARN or name.
        arn: String,
    },
}

impl std::fmt::Debug for OptionalSecret {
    /// The value is a credential: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Off => f.write_str("Off"),
            Self::Value(_) => f.write_str("Value([redacted])"),
            Self::SecretsManager { arn } => write!(f, "SecretsManager({arn})"),
        }
    }
}

/// Everything the processor needs, read once at cold start.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Dedup table name (bodies too large for SQS are read from it).
    pub dedup_table: String,
    /// Billing table name.
    pub billing_table: String,
    /// Slack notifications.
    pub slack: OptionalSecret,
    /// Stripe API key for refetching objects and fetching thin events; `Off` without one.
    pub stripe_api_key: OptionalSecret,
    /// The notification routing document; `Off` without one.
    pub routes: OptionalSecret,
    /// The sender of notification emails.
    pub email_from: Option<String>,
    /// The receiver's dedup memory (`DEDUP_TTL_SECS`), which event markers must outlive.
    pub dedup_ttl_secs: u64,
    /// How long event markers and notification records live; `None`: for ever.
    pub marker_retention_secs: Option<u64>,
    /// Stripe's API base URL.
    pub stripe_api_base: String,
    /// EMF namespace.
    pub metrics_namespace: String,
    /// The most processor instances running at once (at least 1).
    pub max_concurrency: u32,
    /// Stripe's read limit of the account, if overridden; `None`: the key's mode decides.
    pub stripe_account_rps: Option<f64>,
}

impl ReceiverConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let secrets = match (
            env.get(STRIPE_WEBHOOK_SECRET),
            env.get(STRIPE_WEBHOOK_SECRET_ARN),
        ) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    var: STRIPE_WEBHOOK_SECRET,
                    reason: "set either it or STRIPE_WEBHOOK_SECRET_ARN, not both",
                })
            }
            (Some(list), None) => {
                SecretSource::Inline(SigningSecret::parse_list(&list).map_err(|_| {
                    ConfigError::Invalid {
                        var: STRIPE_WEBHOOK_SECRET,
                        reason: "expected one or more comma-separated non-empty secrets",
                    }
                })?)
            }
            (None, Some(arn)) => SecretSource::SecretsManager { arn },
            (None, None) => return Err(ConfigError::Missing(STRIPE_WEBHOOK_SECRET)),
        };
        let tolerance = env.parse(STRIPE_SIGNATURE_TOLERANCE_SECS, DEFAULT_TOLERANCE_SECS)?;
        if tolerance == 0 {
            return Err(ConfigError::Invalid {
                var: STRIPE_SIGNATURE_TOLERANCE_SECS,
                reason: "must be at least one second",
            });
        }
        let livemode = match env.get(STRIPE_LIVEMODE).as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: STRIPE_LIVEMODE,
                    reason: "expected true or false",
                })
            }
        };
        let test_connect_events = match env.get(STRIPE_TEST_CONNECT_EVENTS).as_deref() {
            None | Some("ignore") => TestConnectEvents::Ignore,
            Some("reject") => TestConnectEvents::Reject,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: STRIPE_TEST_CONNECT_EVENTS,
                    reason: "expected ignore or reject",
                })
            }
        };
        // Settings that would quietly defeat the delivery guarantees are refused here, at cold start,
        // where a deploy fails loudly, rather than discovered as a lost or doubled event.
        let dedup_lease = env.parse(DEDUP_LEASE_SECS, DEFAULT_DEDUP_LEASE_SECS)?;
        let dedup_ttl = env.parse(DEDUP_TTL_SECS, DEFAULT_DEDUP_TTL_SECS)?;
        if !(MIN_DEDUP_TTL_SECS..=MAX_DEDUP_TTL_SECS).contains(&dedup_ttl) {
            return Err(ConfigError::Invalid {
                var: DEDUP_TTL_SECS,
                reason: "must be at least 259200 (Stripe retries for 3 days) and at most 10 years",
            });
        }
        if dedup_lease <= RECEIVER_TIMEOUT_SECS || dedup_lease >= dedup_ttl {
            return Err(ConfigError::Invalid {
                var: DEDUP_LEASE_SECS,
                reason: "must be longer than the receiver's 10 s timeout and shorter than DEDUP_TTL_SECS",
            });
        }
        let max_body_bytes = env.parse(MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES)?;
        if max_body_bytes == 0 || max_body_bytes > MAX_STASHED_BODY_BYTES {
            return Err(ConfigError::Invalid {
                var: MAX_BODY_BYTES,
                reason: "must be 1 to 3145728: a larger body could be accepted but never stashed",
            });
        }
        Ok(Self {
            secrets,
            tolerance: Duration::from_secs(tolerance),
            livemode,
            test_connect_events,
            source_ip_allowlist_parameter: env.get(SOURCE_IP_ALLOWLIST_PARAMETER),
            dedup_table: env.require(DEDUP_TABLE_NAME)?,
            dedup_ttl: Duration::from_secs(dedup_ttl),
            dedup_lease: Duration::from_secs(dedup_lease),
            event_queue_url: env.require(EVENT_QUEUE_URL)?,
            max_body_bytes,
            sqs_max_message_bytes: env
                .parse(SQS_MAX_MESSAGE_BYTES, DEFAULT_SQS_MAX_MESSAGE_BYTES)?,
            metrics_namespace: env
                .get(METRICS_NAMESPACE)
                .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.to_owned()),
        })
    }
}

impl ProcessorConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let slack = env.optional_secret(SLACK_WEBHOOK_URL, SLACK_WEBHOOK_SECRET_ARN)?;
        let stripe_api_key = stripe_api_key(&lookup)?;
        let routes = env.optional_secret(NOTIFICATION_ROUTES, NOTIFICATION_ROUTES_SECRET_ARN)?;
        let dedup_ttl_secs = env.parse(DEDUP_TTL_SECS, DEFAULT_DEDUP_TTL_SECS)?;
        let marker_retention_secs = match env.parse(
            EVENT_MARKER_RETENTION_SECS,
            DEFAULT_EVENT_MARKER_RETENTION_SECS,
        )? {
            0 => None,
            // A marker gone while the receiver still remembers the event would let an EventBridge
            // or redriven delivery of it apply its effects again.
            secs if secs < dedup_ttl_secs => {
                return Err(ConfigError::Invalid {
                    var: EVENT_MARKER_RETENTION_SECS,
                    reason: "must be 0 (keep) or at least DEDUP_TTL_SECS",
                })
            }
            secs => Some(secs),
        };
        let max_concurrency =
            env.parse(PROCESSOR_MAX_CONCURRENCY, DEFAULT_PROCESSOR_MAX_CONCURRENCY)?;
        if max_concurrency == 0 {
            return Err(ConfigError::Invalid {
                var: PROCESSOR_MAX_CONCURRENCY,
                reason: "must be at least 1",
            });
        }
        let stripe_account_rps = match env.get(STRIPE_API_ACCOUNT_RPS) {
            None => None,
            Some(value) => match value.trim().parse::<f64>() {
                Ok(rps) if rps.is_finite() && rps > 0.0 => Some(rps),
                _ => {
                    return Err(ConfigError::Invalid {
                        var: STRIPE_API_ACCOUNT_RPS,
                        reason: "expected a positive number of requests per second",
                    })
                }
            },
        };
        Ok(Self {
            max_concurrency,
            stripe_account_rps,
            dedup_table: env.require(DEDUP_TABLE_NAME)?,
            billing_table: env.require(BILLING_TABLE_NAME)?,
            slack,
            stripe_api_key,
            routes,
            email_from: env.get(NOTIFICATION_EMAIL_FROM),
            dedup_ttl_secs,
            marker_retention_secs,
            stripe_api_base: env
                .get(STRIPE_API_BASE)
                .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.to_owned()),
            metrics_namespace: env
                .get(METRICS_NAMESPACE)
                .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.to_owned()),
        })
    }
}

/// Where the Stripe API key comes from: `STRIPE_API_KEY` or the secret `STRIPE_API_KEY_SECRET_ARN`
/// names, not both (`Off` if neither). The one place that rule lives: the processor's configuration
/// and the CLI (whose `--api-key-secret-arn` stands in for the ARN variable) both read the key here.
pub fn stripe_api_key(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<OptionalSecret, ConfigError> {
    Env(&lookup).optional_secret(STRIPE_API_KEY, STRIPE_API_KEY_SECRET_ARN)
}

/// Loads the AWS SDK configuration with timeouts suited to a webhook receiver: Stripe waits about 10 s
/// for an answer, so a hung connection must become a 5xx (and a retry) long before that.
pub async fn load_aws_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(6))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(timeouts)
        .load()
        .await
}

/// The HTTPS client every AWS SDK client here uses: rustls on ring, the TLS stack reqwest (Stripe API,
/// Slack) already links, so a binary carries one TLS implementation instead of two. The SDK's own
/// default would be rustls on aws-lc-rs. Trusted roots are the system's, loaded when the first
/// connection is made.
pub fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// A value given inline (`var`) or as a Secrets Manager ARN (`arn_var`), not both; `Off` if neither.
    fn optional_secret(
        &self,
        var: &'static str,
        arn_var: &'static str,
    ) -> Result<OptionalSecret, ConfigError> {
        match (self.get(var), self.get(arn_var)) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                var,
                reason: "set either it or its _SECRET_ARN variable, not both",
            }),
            (Some(value), None) => Ok(OptionalSecret::Value(value)),
            (None, Some(arn)) => Ok(OptionalSecret::SecretsManager { arn }),
            (None, None) => Ok(OptionalSecret::Off),
        }
    }

    /// A variable's value; set-but-empty counts as unset, as in a SAM template's optional parameter.
    fn get(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.is_empty())
    }

    fn require(&self, var: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing(var))
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
                var,
                reason: "expected a non-negative integer",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn environment(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn receiver(vars: &[(&str, &str)]) -> Result<ReceiverConfig, ConfigError> {
        let map = environment(vars);
        ReceiverConfig::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [(DEDUP_TABLE_NAME, "t"), (EVENT_QUEUE_URL, "http://q")];

    #[test]
    fn the_stripe_api_key_is_inline_or_a_secret_never_both() {
        let key = |vars: &[(&str, &str)]| {
            let map = environment(vars);
            stripe_api_key(|k| map.get(k).cloned())
        };
        assert_eq!(key(&[]).unwrap(), OptionalSecret::Off);
        assert_eq!(
            key(&[(STRIPE_API_KEY, "rk_test_1")]).unwrap(),
            OptionalSecret::Value("rk_test_1".to_owned())
        );
        assert_eq!(
            key(&[(STRIPE_API_KEY_SECRET_ARN, "arn:key")]).unwrap(),
            OptionalSecret::SecretsManager {
                arn: "arn:key".to_owned()
            }
        );
        let both = key(&[
            (STRIPE_API_KEY, "rk_test_1"),
            (STRIPE_API_KEY_SECRET_ARN, "arn:key"),
        ]);
        assert!(
            matches!(
                both,
                Err(ConfigError::Invalid {
                    var: STRIPE_API_KEY,
                    ..
                })
            ),
            "{both:?}"
        );
        // Set but empty is unset, as a SAM template's optional parameter leaves it.
        assert_eq!(key(&[(STRIPE_API_KEY, "")]).unwrap(), OptionalSecret::Off);
    }

    #[test]
    fn defaults_apply_when_only_the_required_settings_are_given() {
        let mut vars = BASE.to_vec();
        vars.push((STRIPE_WEBHOOK_SECRET, "whsec_a,whsec_b"));
        let config = receiver(&vars).unwrap();
        assert!(matches!(&config.secrets, SecretSource::Inline(s) if s.len() == 2));
        assert_eq!(config.tolerance, Duration::from_secs(300));
        assert_eq!(config.dedup_ttl, Duration::from_secs(2_592_000));
        assert_eq!(config.livemode, None);
        assert_eq!(config.test_connect_events, TestConnectEvents::Ignore);
        assert!(!format!("{config:?}").contains("whsec_a"));
    }

    #[test]
    fn settings_that_defeat_the_guarantees_are_refused_at_cold_start() {
        let three_days = (3 * 86_400).to_string();
        let cases = [
            // A body above what the dedup table's stash can hold would be accepted, then never queued.
            (MAX_BODY_BYTES, (MAX_STASHED_BODY_BYTES + 1).to_string()),
            (MAX_BODY_BYTES, "0".to_owned()),
            // Forgetting an id before Stripe's retries end lets a late retry in as new.
            (DEDUP_TTL_SECS, (3 * 86_400 - 1).to_string()),
            (DEDUP_TTL_SECS, "86400".to_owned()),
            // Expiry times past what a timestamp holds.
            (DEDUP_TTL_SECS, u64::MAX.to_string()),
            (DEDUP_LEASE_SECS, u64::MAX.to_string()),
            // A lease that ends while the invocation holding it may still enqueue lets a retry in.
            (DEDUP_LEASE_SECS, RECEIVER_TIMEOUT_SECS.to_string()),
            (DEDUP_LEASE_SECS, "5".to_owned()),
        ];
        for (var, value) in &cases {
            let mut vars = BASE.to_vec();
            vars.push((STRIPE_WEBHOOK_SECRET, "whsec_a"));
            vars.push((var, value));
            let err = receiver(&vars).expect_err(&format!("{var}={value} must be refused"));
            assert!(err.to_string().contains(var), "{var}={value}: {err}");
        }
        // The edges that are safe pass.
        let mut vars = BASE.to_vec();
        vars.push((STRIPE_WEBHOOK_SECRET, "whsec_a"));
        let stash = MAX_STASHED_BODY_BYTES.to_string();
        let lease = (RECEIVER_TIMEOUT_SECS + 1).to_string();
        vars.extend([
            (MAX_BODY_BYTES, stash.as_str()),
            (DEDUP_TTL_SECS, three_days.as_str()),
            (DEDUP_LEASE_SECS, lease.as_str()),
        ]);
        let config = receiver(&vars).unwrap();
        assert_eq!(config.max_body_bytes, MAX_STASHED_BODY_BYTES);
    }

    #[test]
    fn missing_and_invalid_settings_name_the_variable() {
        assert_eq!(
            receiver(&BASE).unwrap_err(),
            ConfigError::Missing(STRIPE_WEBHOOK_SECRET)
        );
        let cases = [
            (STRIPE_LIVEMODE, "yes"),
            (STRIPE_TEST_CONNECT_EVENTS, "drop"),
            (STRIPE_SIGNATURE_TOLERANCE_SECS, "0"),
            (STRIPE_SIGNATURE_TOLERANCE_SECS, "-5"),
            (MAX_BODY_BYTES, "lots"),
            (STRIPE_WEBHOOK_SECRET_ARN, "arn:aws:secretsmanager:x"),
        ];
        for (var, value) in cases {
            let mut vars = BASE.to_vec();
            vars.push((STRIPE_WEBHOOK_SECRET, "whsec_a"));
            vars.push((var, value));
            let err = receiver(&vars).unwrap_err();
            assert!(
                err.to_string().contains(var) || err.to_string().contains(STRIPE_WEBHOOK_SECRET),
                "{err}"
            );
            assert!(!err.to_string().contains(value), "{err} repeats the value");
        }
        let err = receiver(&[(STRIPE_WEBHOOK_SECRET, "whsec_a")]).unwrap_err();
        assert_eq!(err, ConfigError::Missing(DEDUP_TABLE_NAME));
    }

    #[test]
    fn event_markers_are_kept_90_days_unless_told_otherwise_and_never_shorter_than_dedup() {
        let processor = |vars: &[(&str, &str)]| {
            let mut map = environment(&[(DEDUP_TABLE_NAME, "d"), (BILLING_TABLE_NAME, "b")]);
            map.extend(environment(vars));
            ProcessorConfig::from_lookup(|k| map.get(k).cloned())
        };
        let default = processor(&[]).unwrap();
        assert_eq!(default.marker_retention_secs, Some(7_776_000));
        assert_eq!(default.dedup_ttl_secs, 2_592_000);
        let keep = processor(&[(EVENT_MARKER_RETENTION_SECS, "0")]).unwrap();
        assert_eq!(keep.marker_retention_secs, None);
        let year = processor(&[(EVENT_MARKER_RETENTION_SECS, "31536000")]).unwrap();
        assert_eq!(year.marker_retention_secs, Some(31_536_000));
        // Shorter than the dedup table's memory: refused, naming the variable.
        let err = processor(&[(EVENT_MARKER_RETENTION_SECS, "86400")]).unwrap_err();
        assert!(
            err.to_string().contains(EVENT_MARKER_RETENTION_SECS),
            "{err}"
        );
        let short_dedup = processor(&[
            (DEDUP_TTL_SECS, "3600"),
            (EVENT_MARKER_RETENTION_SECS, "86400"),
        ])
        .unwrap();
        assert_eq!(short_dedup.marker_retention_secs, Some(86_400));
    }

    #[test]
    fn an_arn_selects_secrets_manager() {
        let mut vars = BASE.to_vec();
        vars.push((
            STRIPE_WEBHOOK_SECRET_ARN,
            "arn:aws:secretsmanager:us-east-1:1:secret:x",
        ));
        vars.push((STRIPE_LIVEMODE, "true"));
        vars.push((STRIPE_TEST_CONNECT_EVENTS, "reject"));
        let config = receiver(&vars).unwrap();
        assert_eq!(config.test_connect_events, TestConnectEvents::Reject);
        assert!(matches!(
            config.secrets,
            SecretSource::SecretsManager { .. }
        ));
        assert_eq!(config.livemode, Some(true));
    }
}
