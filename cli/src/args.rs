//! The command line: every subcommand's arguments, with the environment variables they fall back to
//! (the same the functions read).

use super::*;

/// Operate the Stripe webhook pipeline: send signed test events, recover missed events from Stripe's
/// API, replay one event, inspect and redrive the dead-letter queue, see what is known of an event, and
/// feed the event queue to the processor locally.
///
/// Tables and queues are named by the same variables the functions read (DEDUP_TABLE_NAME,
/// EVENT_QUEUE_URL, BILLING_TABLE_NAME) plus DEAD_LETTER_QUEUE_URL; `--env-file .local/dev.env` reads
/// the ones `make dev` wrote. AWS credentials, region and emulator endpoints come from the usual AWS
/// variables. The Stripe API key is read from STRIPE_API_KEY (never a flag: it would land in shell
/// history) or the secret named by STRIPE_API_KEY_SECRET_ARN.
#[derive(Debug, Parser)]
#[command(name = "stripe-webhooks", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Read KEY=VALUE lines into the environment first (e.g. .local/dev.env, written by `make dev`);
    /// they override variables already set.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) env_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    Send(SendArgs),
    Backfill(BackfillArgs),
    Replay(ReplayArgs),
    #[command(subcommand)]
    Dlq(DlqCommand),
    Status(StatusArgs),
    #[command(subcommand)]
    SourceIps(SourceIpsCommand),
    Poll(PollArgs),
    Console(ConsoleArgs),
    #[cfg(feature = "fake-stripe")]
    FakeStripe(FakeStripeArgs),
}

/// Open a local web page of today's payments, failures, disputes and the dead-letter queue.
///
/// Serves on 127.0.0.1 only, from the pipeline's own tables (never Stripe's API), with your own AWS
/// credentials: --profile/--region for a deployed stack (table and queue names from its outputs), or
/// `--env-file .local/dev.env` for the emulators `make dev` runs. Replay and redrive buttons run the
/// same code as the subcommands and need the page's per-run token.
#[derive(Debug, Args)]
pub(crate) struct ConsoleArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8787)]
    pub(crate) port: u16,
    /// "Today" and every time shown are in this IANA zone (Europe/Paris) [default: the system's].
    #[arg(long, env = "CONSOLE_TIME_ZONE")]
    pub(crate) time_zone: Option<String>,
    /// The AWS profile (as AWS_PROFILE).
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// The AWS region (as AWS_REGION).
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// The billing table (its feed index is what the page lists).
    #[arg(long, env = config::BILLING_TABLE_NAME)]
    pub(crate) billing_table: String,
    #[command(flatten)]
    pub(crate) intake: IntakeArgs,
    #[command(flatten)]
    pub(crate) dlq: DlqArgs,
    #[command(flatten)]
    pub(crate) stripe: StripeArgs,
}

/// Sign fixture events with the local secret and post them to a receiver (offline `stripe trigger`).
///
/// Each EVENT is a fixture name (a file of tests/fixtures/stripe/events, e.g. invoice.paid) or a path
/// to an event JSON file. With --count 1 the file is sent byte for byte (so sending it twice gives a
/// duplicate); with more, each copy gets a fresh id.
///
/// With --via eventbridge the events do not go to the receiver: each is wrapped the way Stripe's
/// Amazon EventBridge destination and a rule's SQS target deliver it and put straight on the event
/// queue, to try the second ingress locally (no EventBridge emulator exists).
#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Which ingress to play: Stripe posting to the receiver, or Stripe's EventBridge destination.
    #[arg(long, value_enum, default_value_t = Ingress::Webhook)]
    pub(crate) via: Ingress,
    /// The event queue, for --via eventbridge [default: EVENT_QUEUE_URL, as in .local/dev.env].
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    pub(crate) event_queue_url: Option<String>,
    /// Fixture names or JSON files.
    #[arg(required = true, value_name = "EVENT")]
    pub(crate) events: Vec<String>,
    /// Events per EVENT, each with a fresh id when above 1.
    #[arg(long, default_value_t = 1)]
    pub(crate) count: usize,
    /// Deliver every event twice (the second should answer "duplicate").
    #[arg(long)]
    pub(crate) duplicate: bool,
    /// Deliveries in flight at once (with --duplicate, concurrent copies may answer 409).
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// Deliver in random order, duplicates included.
    #[arg(long)]
    pub(crate) shuffle: bool,
    /// The receiver [default: the `make dev` one, on DEV_PORT or 9000].
    #[arg(long, env = settings::WEBHOOK_URL)]
    pub(crate) url: Option<String>,
    /// Signing secret(s), comma-separated; the first signs [default: .local/webhook-secret].
    #[arg(long, env = config::STRIPE_WEBHOOK_SECRET, hide_env_values = true)]
    pub(crate) secret: Option<String>,
    /// Where fixture names are looked up [default: tests/fixtures/stripe/events of this repository].
    #[arg(long, value_name = "DIR")]
    pub(crate) fixtures: Option<PathBuf>,
}

/// The two ways Stripe delivers to this pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Ingress {
    /// Signed POSTs to the receiver.
    Webhook,
    /// EventBridge envelopes straight onto the event queue.
    Eventbridge,
}

/// Recover missed events from Stripe's API, enqueueing those not received yet.
///
/// For events Stripe could not deliver (an outage, a wrong secret): pages through Stripe's
/// `GET /v1/events` and enqueues each event through the receiver's own dedup path, so events already
/// received are skipped. Safe to rerun; Stripe keeps events for 30 days.
#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// Events created at or after this: a duration back from now (7d, 36h, 90m), a date (2026-11-20,
    /// UTC), an RFC 3339 time, or unix seconds.
    #[arg(long, value_name = "WHEN")]
    pub(crate) since: String,
    /// Events created before this (same forms as --since) [default: now].
    #[arg(long, value_name = "WHEN")]
    pub(crate) until: Option<String>,
    /// Only events of this type (repeatable, at most 20).
    #[arg(long = "type", value_name = "TYPE")]
    pub(crate) types: Vec<String>,
    /// Only events some webhook endpoint has not acknowledged (`delivery_success=false`).
    #[arg(long)]
    pub(crate) failed_only: bool,
    /// List and check against the dedup table, but enqueue nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Events enqueued at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) concurrency: u16,
    /// Events per API page.
    #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) page_size: u8,
    /// Skip events of the other mode, as the receiver does.
    #[arg(long, env = config::STRIPE_LIVEMODE)]
    pub(crate) livemode: Option<bool>,
    #[command(flatten)]
    pub(crate) stripe: StripeArgs,
    #[command(flatten)]
    pub(crate) intake: IntakeArgs,
}

/// Fetch one event from Stripe's API and enqueue it.
///
/// Without --force an event the dedup table has as enqueued is left alone. --force enqueues it even so (for a message lost after it was enqueued: dead-lettered and expired,
/// or purged). It cannot apply anything twice: the processor keeps a per-event marker and does nothing
/// for an event it already applied.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The event id (evt_…).
    pub(crate) event_id: String,
    /// Enqueue even if the dedup table has seen it.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) stripe: StripeArgs,
    #[command(flatten)]
    pub(crate) intake: IntakeArgs,
}

/// Inspect the dead-letter queue and move messages back to the event queue.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    List(DlqListArgs),
    Show(DlqShowArgs),
    Redrive(DlqRedriveArgs),
}

/// List dead-lettered messages, leaving them in the queue.
///
/// One line each: message id, event id, event type, receives, age.
#[derive(Debug, Args)]
pub(crate) struct DlqListArgs {
    /// Most messages to list.
    #[arg(long, default_value_t = 50)]
    pub(crate) max: usize,
    /// One JSON object per line, bodies included.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) dlq: DlqArgs,
}

/// Show one dead-lettered message in full (attributes and body), leaving it in the queue.
#[derive(Debug, Args)]
pub(crate) struct DlqShowArgs {
    /// Its SQS message id or its event id.
    pub(crate) id: String,
    /// Most messages to look through.
    #[arg(long, default_value_t = 1000)]
    pub(crate) scan: usize,
    #[command(flatten)]
    pub(crate) dlq: DlqArgs,
}

/// Move dead-lettered messages back to the event queue.
///
/// Do it after fixing what made them fail. Each is copied, then deleted from the dead-letter queue, so none is lost; each gets MaxReceiveCount new
/// attempts.
#[derive(Debug, Args)]
pub(crate) struct DlqRedriveArgs {
    /// Move at most this many [default: all].
    #[arg(long)]
    pub(crate) max: Option<usize>,
    /// Only say how many messages there are.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// The event queue to move them to.
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    pub(crate) event_queue_url: String,
    #[command(flatten)]
    pub(crate) dlq: DlqArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DlqArgs {
    /// The dead-letter queue.
    #[arg(long, env = settings::DEAD_LETTER_QUEUE_URL)]
    pub(crate) dead_letter_queue_url: String,
}

/// The receiver's source-IP allow-list (the SSM parameter named by the stack's
/// SourceIpAllowListParameter).
///
/// Download Stripe's list first: `curl -O https://stripe.com/files/ips/ips_webhooks.json`. The
/// receiver reads the parameter at cold start; see the README (Security) for turning it on and for
/// updates.
#[derive(Debug, Subcommand)]
pub(crate) enum SourceIpsCommand {
    Put(SourceIpsPutArgs),
    Show(SourceIpsShowArgs),
}

/// Write the allow-list from Stripe's ips_webhooks.json (or ips_webhooks.txt) to the parameter.
#[derive(Debug, Args)]
pub(crate) struct SourceIpsPutArgs {
    /// The file downloaded from Stripe: ips_webhooks.json (its WEBHOOKS list) or ips_webhooks.txt.
    #[arg(long, value_name = "PATH")]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) parameter: SourceIpsParameter,
}

/// Print the addresses the parameter holds, as the receiver will read them.
#[derive(Debug, Args)]
pub(crate) struct SourceIpsShowArgs {
    #[command(flatten)]
    pub(crate) parameter: SourceIpsParameter,
}

#[derive(Debug, Args)]
pub(crate) struct SourceIpsParameter {
    /// The SSM parameter's name, e.g. /stripe-webhooks/prod/source-ips.
    #[arg(long, env = config::SOURCE_IP_ALLOWLIST_PARAMETER)]
    pub(crate) parameter: String,
}

/// Show what the dedup table and the billing state know of an event.
///
/// Received and enqueued (or being enqueued, or expired), applied and when, notifications sent.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The event id (evt_…).
    pub(crate) event_id: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The dedup table.
    #[arg(long, env = config::DEDUP_TABLE_NAME)]
    pub(crate) dedup_table: String,
    /// The billing table.
    #[arg(long, env = config::BILLING_TABLE_NAME)]
    pub(crate) billing_table: String,
}

/// Feed the event queue to the processor, as Lambda's SQS event source mapping does.
///
/// Batches by size and window; failed messages are left for SQS to redeliver after the visibility
/// timeout and to dead-letter after maxReceiveCount. `make dev` runs it.
///
/// By default the processor runs in this process, wired from the processor's own variables
/// (DEDUP_TABLE_NAME, BILLING_TABLE_NAME, SLACK_WEBHOOK_URL…). With --invoke it is invoked through
/// Lambda's Invoke API, e.g. the one `cargo lambda watch` serves, which rebuilds it on every change.
#[derive(Debug, Args)]
pub(crate) struct PollArgs {
    /// The event queue.
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    pub(crate) event_queue_url: String,
    /// Most messages per batch (the template's ProcessorBatchSize).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub(crate) batch_size: u16,
    /// Longest wait to fill a batch (the template's ProcessorBatchingWindowSecs), e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) batching_window: Duration,
    /// Seconds a received message stays hidden, instead of the queue's visibility timeout (200 s in
    /// the template): how soon a failed message is retried.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(i32).range(0..=43_200))]
    pub(crate) visibility_timeout: Option<i32>,
    /// Invoke the processor at this Lambda Invoke API base URL (cargo lambda watch:
    /// http://127.0.0.1:9000) instead of running it in this process.
    #[arg(long, value_name = "URL")]
    pub(crate) invoke: Option<String>,
    /// The function name to invoke.
    #[arg(long, default_value = "processor", requires = "invoke")]
    pub(crate) function: String,
    /// Process one batch (waiting up to 20 s for it) and exit.
    #[arg(long)]
    pub(crate) once: bool,
}

/// Serve a fake Stripe events API made from the fixtures (for trying `backfill` locally).
#[cfg(feature = "fake-stripe")]
#[derive(Debug, Args)]
pub(crate) struct FakeStripeArgs {
    /// The port on 127.0.0.1.
    #[arg(long, default_value_t = 12111)]
    pub(crate) port: u16,
    /// Events to serve, one a minute back from now.
    #[arg(long, default_value_t = 250)]
    pub(crate) events: usize,
    /// The API key it accepts.
    #[arg(long, default_value = "sk_test_fake")]
    pub(crate) api_key: String,
    /// Answer request N with STATUS (429 comes with Retry-After: 1), e.g. --fault 2:429 --fault 3:503.
    #[arg(long, value_name = "N:STATUS")]
    pub(crate) fault: Vec<String>,
    /// Every Nth event has an undelivered webhook (for --failed-only); 0 for none.
    #[arg(long, default_value_t = 10)]
    pub(crate) undelivered_every: usize,
}

#[derive(Debug, Args)]
pub(crate) struct StripeArgs {
    /// A Secrets Manager secret holding the API key, instead of STRIPE_API_KEY.
    #[arg(long, env = config::STRIPE_API_KEY_SECRET_ARN)]
    pub(crate) api_key_secret_arn: Option<String>,
    /// Stripe's API.
    #[arg(long, env = config::STRIPE_API_BASE, default_value = config::DEFAULT_STRIPE_API_BASE)]
    pub(crate) api_base: String,
    /// Most API requests per second (Stripe allows 100 in live mode, 25 in test mode, per account).
    #[arg(long, env = settings::STRIPE_API_MAX_RPS, default_value_t = settings::DEFAULT_STRIPE_API_MAX_RPS)]
    pub(crate) max_rps: f64,
    /// Retries of a request answered 429 or 5xx (or not answered) before giving up.
    #[arg(long, default_value_t = 6)]
    pub(crate) max_retries: u32,
}

#[derive(Debug, Args)]
pub(crate) struct IntakeArgs {
    /// The dedup table.
    #[arg(long, env = config::DEDUP_TABLE_NAME)]
    pub(crate) dedup_table: String,
    /// The event queue.
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    pub(crate) event_queue_url: String,
    /// Bodies larger than this are stashed in the dedup table (as the receiver does).
    #[arg(long, env = config::SQS_MAX_MESSAGE_BYTES, default_value_t = DEFAULT_SQS_MAX_MESSAGE_BYTES)]
    pub(crate) sqs_max_message_bytes: usize,
    /// How long event ids are remembered: keep it equal to the receiver's.
    #[arg(long, env = config::DEDUP_TTL_SECS, default_value_t = DEFAULT_DEDUP_TTL_SECS)]
    pub(crate) dedup_ttl_secs: u64,
    /// How long a claim blocks other deliveries.
    #[arg(long, env = config::DEDUP_LEASE_SECS, default_value_t = DEFAULT_DEDUP_LEASE_SECS)]
    pub(crate) dedup_lease_secs: u64,
}
