//! Why a command failed: every error a subcommand can end with, printed with its causes by `fail`.

use super::*;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Api(#[from] StripeApiError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Sqs(#[from] SqsError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Poll(#[from] PollError),
    #[error(transparent)]
    SourceIps(#[from] SourceIpError),
    #[error("could not read {0}")]
    ReadFile(PathBuf, #[source] std::io::Error),
    #[error("no Stripe API key: set STRIPE_API_KEY or STRIPE_API_KEY_SECRET_ARN")]
    NoApiKey,
    #[error("no signing secret: set STRIPE_WEBHOOK_SECRET, pass --secret, or run `make dev` once")]
    NoSecret,
    #[error("no event queue: pass --event-queue-url or set EVENT_QUEUE_URL (`--env-file .local/dev.env` under make dev)")]
    NoEventQueue,
    #[error("Stripe filters by at most 20 types; run one backfill per group of 20")]
    TooManyTypes,
    #[error("--until is not after --since")]
    EmptyWindow,
    #[error("no message {0} among the dead-letter queue's first {1}")]
    NotInDlq(String, usize),
    #[error("could not start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("unknown time zone {0:?} (an IANA name such as Europe/Paris)")]
    TimeZone(String),
    #[error("the console could not serve")]
    Console(#[source] std::io::Error),
    #[cfg(feature = "fake-stripe")]
    #[error("--fault {0}: expected N:STATUS with STATUS 429 or 5xx")]
    BadFault(String),
    #[cfg(feature = "fake-stripe")]
    #[error("could not start the fake Stripe API")]
    Fake(#[source] std::io::Error),
}
