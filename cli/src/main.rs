//! `stripe-webhooks`: argument parsing, client wiring and printing. The work of every subcommand is a
//! library function (see `lib.rs`), which the integration tests call directly.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use clap::{Args, Parser, Subcommand};
use stripe_pipeline::{
    billing::DynamoBillingStore,
    config::{
        self, load_aws_config, ConfigError, DEFAULT_DEDUP_LEASE_SECS, DEFAULT_DEDUP_TTL_SECS,
        DEFAULT_SQS_MAX_MESSAGE_BYTES,
    },
    dedup::DynamoDedupStore,
    queue::SqsEventQueue,
    secrets::{self, SecretsError},
    source_ips::{self, SourceIpAllowList, SourceIpError},
    telemetry::{self, error_chain},
};
use stripe_webhooks::{
    backfill::{self, BackfillOptions},
    dead_letters,
    poll::{self, PollError, PollSettings, Poller, Target},
    progress,
    replay::{self, ReplayError, Replayed},
    send::{self, Pacing, SendError, SendOptions},
    settings::{self, format_time, parse_time, SettingsError},
    sqs::{Queue, SqsError},
    status::{self, StatusError},
    stripe_api::{ApiKey, EventFilter, RetryPolicy, StripeApi, StripeApiError, MAX_PAGE_SIZE},
};

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
struct Cli {
    /// Read KEY=VALUE lines into the environment first (e.g. .local/dev.env, written by `make dev`);
    /// they override variables already set.
    #[arg(long, global = true, value_name = "PATH")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
struct ConsoleArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// "Today" and every time shown are in this IANA zone (Europe/Paris) [default: the system's].
    #[arg(long, env = "CONSOLE_TIME_ZONE")]
    time_zone: Option<String>,
    /// The AWS profile (as AWS_PROFILE).
    #[arg(long)]
    profile: Option<String>,
    /// The AWS region (as AWS_REGION).
    #[arg(long)]
    region: Option<String>,
    /// The billing table (its feed index is what the page lists).
    #[arg(long, env = config::BILLING_TABLE_NAME)]
    billing_table: String,
    #[command(flatten)]
    intake: IntakeArgs,
    #[command(flatten)]
    dlq: DlqArgs,
    #[command(flatten)]
    stripe: StripeArgs,
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
struct SendArgs {
    /// Which ingress to play: Stripe posting to the receiver, or Stripe's EventBridge destination.
    #[arg(long, value_enum, default_value_t = Ingress::Webhook)]
    via: Ingress,
    /// The event queue, for --via eventbridge [default: EVENT_QUEUE_URL, as in .local/dev.env].
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    event_queue_url: Option<String>,
    /// Fixture names or JSON files.
    #[arg(required = true, value_name = "EVENT")]
    events: Vec<String>,
    /// Events per EVENT, each with a fresh id when above 1.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Deliver every event twice (the second should answer "duplicate").
    #[arg(long)]
    duplicate: bool,
    /// Deliveries in flight at once (with --duplicate, concurrent copies may answer 409).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Deliver in random order, duplicates included.
    #[arg(long)]
    shuffle: bool,
    /// The receiver [default: the `make dev` one, on DEV_PORT or 9000].
    #[arg(long, env = settings::WEBHOOK_URL)]
    url: Option<String>,
    /// Signing secret(s), comma-separated; the first signs [default: .local/webhook-secret].
    #[arg(long, env = config::STRIPE_WEBHOOK_SECRET, hide_env_values = true)]
    secret: Option<String>,
    /// Where fixture names are looked up [default: tests/fixtures/stripe/events of this repository].
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
}

/// The two ways Stripe delivers to this pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Ingress {
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
struct BackfillArgs {
    /// Events created at or after this: a duration back from now (7d, 36h, 90m), a date (2026-11-20,
    /// UTC), an RFC 3339 time, or unix seconds.
    #[arg(long, value_name = "WHEN")]
    since: String,
    /// Events created before this (same forms as --since) [default: now].
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
    /// Only events of this type (repeatable, at most 20).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Only events some webhook endpoint has not acknowledged (`delivery_success=false`).
    #[arg(long)]
    failed_only: bool,
    /// List and check against the dedup table, but enqueue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Events enqueued at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Events per API page.
    #[arg(long, default_value_t = MAX_PAGE_SIZE, value_parser = clap::value_parser!(u8).range(1..=100))]
    page_size: u8,
    /// Skip events of the other mode, as the receiver does.
    #[arg(long, env = config::STRIPE_LIVEMODE)]
    livemode: Option<bool>,
    #[command(flatten)]
    stripe: StripeArgs,
    #[command(flatten)]
    intake: IntakeArgs,
}

/// Fetch one event from Stripe's API and enqueue it.
///
/// Without --force an event the dedup table has as enqueued is left alone. --force enqueues it even so (for a message lost after it was enqueued: dead-lettered and expired,
/// or purged). It cannot apply anything twice: the processor keeps a per-event marker and does nothing
/// for an event it already applied.
#[derive(Debug, Args)]
struct ReplayArgs {
    /// The event id (evt_…).
    event_id: String,
    /// Enqueue even if the dedup table has seen it.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    stripe: StripeArgs,
    #[command(flatten)]
    intake: IntakeArgs,
}

/// Inspect the dead-letter queue and move messages back to the event queue.
#[derive(Debug, Subcommand)]
enum DlqCommand {
    List(DlqListArgs),
    Show(DlqShowArgs),
    Redrive(DlqRedriveArgs),
}

/// List dead-lettered messages, leaving them in the queue.
///
/// One line each: message id, event id, event type, receives, age.
#[derive(Debug, Args)]
struct DlqListArgs {
    /// Most messages to list.
    #[arg(long, default_value_t = 50)]
    max: usize,
    /// One JSON object per line, bodies included.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dlq: DlqArgs,
}

/// Show one dead-lettered message in full (attributes and body), leaving it in the queue.
#[derive(Debug, Args)]
struct DlqShowArgs {
    /// Its SQS message id or its event id.
    id: String,
    /// Most messages to look through.
    #[arg(long, default_value_t = 1000)]
    scan: usize,
    #[command(flatten)]
    dlq: DlqArgs,
}

/// Move dead-lettered messages back to the event queue.
///
/// Do it after fixing what made them fail. Each is copied, then deleted from the dead-letter queue, so none is lost; each gets MaxReceiveCount new
/// attempts.
#[derive(Debug, Args)]
struct DlqRedriveArgs {
    /// Move at most this many [default: all].
    #[arg(long)]
    max: Option<usize>,
    /// Only say how many messages there are.
    #[arg(long)]
    dry_run: bool,
    /// The event queue to move them to.
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    event_queue_url: String,
    #[command(flatten)]
    dlq: DlqArgs,
}

#[derive(Debug, Args)]
struct DlqArgs {
    /// The dead-letter queue.
    #[arg(long, env = settings::DEAD_LETTER_QUEUE_URL)]
    dead_letter_queue_url: String,
}

/// The receiver's source-IP allow-list (the SSM parameter named by the stack's
/// SourceIpAllowListParameter).
///
/// Download Stripe's list first: `curl -O https://stripe.com/files/ips/ips_webhooks.json`. The
/// receiver reads the parameter at cold start; see the README (Security) for turning it on and for
/// updates.
#[derive(Debug, Subcommand)]
enum SourceIpsCommand {
    Put(SourceIpsPutArgs),
    Show(SourceIpsShowArgs),
}

/// Write the allow-list from Stripe's ips_webhooks.json (or ips_webhooks.txt) to the parameter.
#[derive(Debug, Args)]
struct SourceIpsPutArgs {
    /// The file downloaded from Stripe: ips_webhooks.json (its WEBHOOKS list) or ips_webhooks.txt.
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    #[command(flatten)]
    parameter: SourceIpsParameter,
}

/// Print the addresses the parameter holds, as the receiver will read them.
#[derive(Debug, Args)]
struct SourceIpsShowArgs {
    #[command(flatten)]
    parameter: SourceIpsParameter,
}

#[derive(Debug, Args)]
struct SourceIpsParameter {
    /// The SSM parameter's name, e.g. /stripe-webhooks/prod/source-ips.
    #[arg(long, env = config::SOURCE_IP_ALLOWLIST_PARAMETER)]
    parameter: String,
}

/// Show what the dedup table and the billing state know of an event.
///
/// Received and enqueued (or being enqueued, or expired), applied and when, notifications sent.
#[derive(Debug, Args)]
struct StatusArgs {
    /// The event id (evt_…).
    event_id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The dedup table.
    #[arg(long, env = config::DEDUP_TABLE_NAME)]
    dedup_table: String,
    /// The billing table.
    #[arg(long, env = config::BILLING_TABLE_NAME)]
    billing_table: String,
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
struct PollArgs {
    /// The event queue.
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    event_queue_url: String,
    /// Most messages per batch (the template's ProcessorBatchSize).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    batch_size: u16,
    /// Longest wait to fill a batch (the template's ProcessorBatchingWindowSecs), e.g. 1s, 500ms.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    batching_window: Duration,
    /// Seconds a received message stays hidden, instead of the queue's visibility timeout (200 s in
    /// the template): how soon a failed message is retried.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(i32).range(0..=43_200))]
    visibility_timeout: Option<i32>,
    /// Invoke the processor at this Lambda Invoke API base URL (cargo lambda watch:
    /// http://127.0.0.1:9000) instead of running it in this process.
    #[arg(long, value_name = "URL")]
    invoke: Option<String>,
    /// The function name to invoke.
    #[arg(long, default_value = "processor", requires = "invoke")]
    function: String,
    /// Process one batch (waiting up to 20 s for it) and exit.
    #[arg(long)]
    once: bool,
}

/// Serve a fake Stripe events API made from the fixtures (for trying `backfill` locally).
#[cfg(feature = "fake-stripe")]
#[derive(Debug, Args)]
struct FakeStripeArgs {
    /// The port on 127.0.0.1.
    #[arg(long, default_value_t = 12111)]
    port: u16,
    /// Events to serve, one a minute back from now.
    #[arg(long, default_value_t = 250)]
    events: usize,
    /// The API key it accepts.
    #[arg(long, default_value = "sk_test_fake")]
    api_key: String,
    /// Answer request N with STATUS (429 comes with Retry-After: 1), e.g. --fault 2:429 --fault 3:503.
    #[arg(long, value_name = "N:STATUS")]
    fault: Vec<String>,
    /// Every Nth event has an undelivered webhook (for --failed-only); 0 for none.
    #[arg(long, default_value_t = 10)]
    undelivered_every: usize,
}

#[derive(Debug, Args)]
struct StripeArgs {
    /// A Secrets Manager secret holding the API key, instead of STRIPE_API_KEY.
    #[arg(long, env = config::STRIPE_API_KEY_SECRET_ARN)]
    api_key_secret_arn: Option<String>,
    /// Stripe's API.
    #[arg(long, env = config::STRIPE_API_BASE, default_value = config::DEFAULT_STRIPE_API_BASE)]
    api_base: String,
    /// Most API requests per second (Stripe allows 100 in live mode, 25 in test mode, per account).
    #[arg(long, env = settings::STRIPE_API_MAX_RPS, default_value_t = settings::DEFAULT_STRIPE_API_MAX_RPS)]
    max_rps: f64,
    /// Retries of a request answered 429 or 5xx (or not answered) before giving up.
    #[arg(long, default_value_t = 6)]
    max_retries: u32,
}

#[derive(Debug, Args)]
struct IntakeArgs {
    /// The dedup table.
    #[arg(long, env = config::DEDUP_TABLE_NAME)]
    dedup_table: String,
    /// The event queue.
    #[arg(long, env = config::EVENT_QUEUE_URL)]
    event_queue_url: String,
    /// Bodies larger than this are stashed in the dedup table (as the receiver does).
    #[arg(long, env = config::SQS_MAX_MESSAGE_BYTES, default_value_t = DEFAULT_SQS_MAX_MESSAGE_BYTES)]
    sqs_max_message_bytes: usize,
    /// How long event ids are remembered: keep it equal to the receiver's.
    #[arg(long, env = config::DEDUP_TTL_SECS, default_value_t = DEFAULT_DEDUP_TTL_SECS)]
    dedup_ttl_secs: u64,
    /// How long a claim blocks other deliveries.
    #[arg(long, env = config::DEDUP_LEASE_SECS, default_value_t = DEFAULT_DEDUP_LEASE_SECS)]
    dedup_lease_secs: u64,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
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

fn main() -> ExitCode {
    // --env-file is read before clap parses, so its variables can satisfy required arguments; set
    // while no other thread exists.
    if let Some(path) = settings::env_file_arg(std::env::args_os().skip(1)) {
        match settings::read_env_file(&path) {
            Ok(vars) => {
                for (key, value) in vars {
                    std::env::set_var(key, value);
                }
            }
            Err(error) => return fail(&CliError::from(error)),
        }
    }
    let cli = Cli::parse();
    // The AWS SDK reads these; set while no other thread exists.
    if let Command::Console(args) = &cli.command {
        if let Some(profile) = &args.profile {
            std::env::set_var("AWS_PROFILE", profile);
        }
        if let Some(region) = &args.region {
            std::env::set_var("AWS_REGION", region);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&CliError::Runtime(error)),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => fail(&error),
    }
}

fn fail(error: &CliError) -> ExitCode {
    eprintln!("error: {}", error_chain(error));
    ExitCode::FAILURE
}

fn init_logs(json: bool) {
    if json {
        telemetry::init();
        return;
    }
    // The same rule as the functions' logs: the level is ours alone, the SDK stays at WARN.
    let level = std::env::var("RUST_LOG")
        .ok()
        .as_deref()
        .and_then(telemetry::log_level)
        .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN);
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .finish()
        .with(telemetry::log_filter(level))
        .init();
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    init_logs(matches!(command, Command::Poll(_)));
    match command {
        Command::Send(args) => run_send(args).await,
        Command::Backfill(args) => run_backfill(args).await,
        Command::Replay(args) => run_replay(args).await,
        Command::Dlq(command) => run_dlq(command).await,
        Command::Status(args) => run_status(args).await,
        Command::SourceIps(command) => run_source_ips(command).await,
        Command::Poll(args) => run_poll(args).await,
        Command::Console(args) => run_console(args).await,
        #[cfg(feature = "fake-stripe")]
        Command::FakeStripe(args) => run_fake_stripe(args).await,
    }
}

/// The AWS clients: DynamoDB with the functions' own short timeouts, SQS with room for a 20 s long
/// poll.
struct Aws {
    config: aws_config::SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

async fn aws() -> Aws {
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
    fn store(&self, aws: &Aws) -> DynamoDedupStore {
        DynamoDedupStore::new(
            aws.dynamodb.clone(),
            &self.dedup_table,
            Duration::from_secs(self.dedup_ttl_secs),
            Duration::from_secs(self.dedup_lease_secs),
        )
    }

    fn queue(&self, aws: &Aws) -> SqsEventQueue {
        SqsEventQueue::new(aws.sqs.clone(), &self.event_queue_url)
    }
}

impl StripeArgs {
    async fn api(&self, aws: &Aws) -> Result<StripeApi, CliError> {
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

async fn run_send(args: SendArgs) -> Result<ExitCode, CliError> {
    let root = settings::repo_root();
    let fixtures = args
        .fixtures
        .clone()
        .unwrap_or_else(|| send::fixtures_dir(&root));
    let mut events = Vec::new();
    for spec in &args.events {
        events.extend(send::prepare(spec, &fixtures, args.count.max(1))?);
    }
    let pacing = Pacing {
        duplicate: args.duplicate,
        concurrency: args.concurrency,
        shuffle: args.shuffle,
    };
    if args.via == Ingress::Eventbridge {
        let queue_url = args.event_queue_url.clone().ok_or(CliError::NoEventQueue)?;
        let queue = Queue::new(aws().await.sqs, &queue_url);
        let deliveries = send::put_as_eventbridge(&queue, pacing, &events).await;
        return Ok(report_deliveries(
            &deliveries,
            &format!("{queue_url} (as EventBridge)"),
        ));
    }
    let secret = send::local_secret(args.secret.as_deref(), &root).ok_or(CliError::NoSecret)?;
    let url = args.url.clone().unwrap_or_else(|| {
        let port = std::env::var(settings::DEV_PORT).unwrap_or_else(|_| "9000".to_owned());
        format!("http://127.0.0.1:{port}/lambda-url/receiver/webhooks/stripe")
    });
    let options = SendOptions {
        url,
        secret,
        pacing,
    };
    let deliveries = send::send(&send::client()?, &options, &events).await;
    Ok(report_deliveries(&deliveries, &options.url))
}

/// One line per delivery, then the totals; success when every delivery was accepted.
fn report_deliveries(deliveries: &[send::Delivery], target: &str) -> ExitCode {
    let mut refused = 0;
    for delivery in deliveries {
        let status = delivery
            .status
            .map_or_else(|| "unreachable".to_owned(), |s| s.to_string());
        println!(
            "{} {}: {status} {}",
            delivery.event_id,
            delivery.event_type,
            delivery.answer.trim()
        );
        refused += usize::from(!delivery.accepted());
    }
    let count = |needle: &str| {
        deliveries
            .iter()
            .filter(|d| d.accepted() && d.answer.contains(needle))
            .count()
    };
    println!(
        "{} deliveries to {target}: {} enqueued, {} duplicate, {refused} not accepted",
        deliveries.len(),
        count("enqueued") + count("queued as message"),
        count("duplicate"),
    );
    exit(refused == 0)
}

async fn run_backfill(args: BackfillArgs) -> Result<ExitCode, CliError> {
    if args.types.len() > 20 {
        return Err(CliError::TooManyTypes);
    }
    let now = SystemTime::now();
    let since = parse_time(&args.since, now)?;
    let until = args
        .until
        .as_deref()
        .map(|u| parse_time(u, now))
        .transpose()?;
    if until.is_some_and(|until| until <= since) {
        return Err(CliError::EmptyWindow);
    }
    let now_secs = stripe_pipeline::signature::unix_now();
    if since + settings::STRIPE_EVENT_RETENTION.as_secs() < now_secs {
        eprintln!(
            "note: Stripe keeps events for 30 days; nothing created before {} can be fetched",
            format_time(now_secs - settings::STRIPE_EVENT_RETENTION.as_secs())
        );
    }
    let aws = aws().await;
    let api = args.stripe.api(&aws).await?;
    let options = BackfillOptions {
        filter: EventFilter {
            created_gte: Some(since),
            created_lt: until,
            types: args.types.clone(),
            delivery_success: args.failed_only.then_some(false),
        },
        dry_run: args.dry_run,
        concurrency: usize::from(args.concurrency),
        page_size: args.page_size,
        livemode: args.livemode,
        sqs_max_message_bytes: args.intake.sqs_max_message_bytes,
    };
    eprintln!(
        "Backfilling events created from {} to {}{}{}{}",
        format_time(since),
        until.map_or_else(|| "now".to_owned(), format_time),
        if args.types.is_empty() {
            String::new()
        } else {
            format!(", types {}", args.types.join(", "))
        },
        if args.failed_only {
            ", undelivered only"
        } else {
            ""
        },
        if args.dry_run { " (dry run)" } else { "" },
    );
    let started = Instant::now();
    let bar = progress::spinner();
    let summary = backfill::backfill(
        &api,
        &args.intake.store(&aws),
        &args.intake.queue(&aws),
        &options,
        &bar,
    )
    .await;
    let took = started.elapsed();
    let stats = api.stats();
    let enqueued = if args.dry_run {
        "would enqueue"
    } else {
        "enqueued"
    };
    println!(
        "found         {:>7}  ({} pages)",
        summary.found, summary.pages
    );
    println!("{enqueued:<13} {:>7}", summary.enqueued);
    println!("already seen  {:>7}", summary.already_seen);
    if summary.other_mode > 0 {
        println!("other mode    {:>7}  (skipped)", summary.other_mode);
    }
    println!("failed        {:>7}", summary.failed.len());
    println!(
        "Stripe API: {} requests, {} rate-limited (429), {} server errors or timeouts, {:.1} s waiting; took {:.1} s ({:.0} events/s)",
        stats.requests,
        stats.rate_limited,
        stats.server_errors,
        stats.waited.as_secs_f64(),
        took.as_secs_f64(),
        summary.found as f64 / took.as_secs_f64().max(0.001),
    );
    for (id, reason) in summary.failed.iter().take(20) {
        println!("  failed: {id}: {reason}");
    }
    if summary.failed.len() > 20 {
        println!("  … and {} more", summary.failed.len() - 20);
    }
    if let Some(error) = &summary.stopped {
        println!("stopped early: {}", error_chain(error));
    }
    if !summary.complete() {
        println!("Rerun the same command: events already enqueued are skipped.");
    }
    Ok(exit(summary.complete()))
}

async fn run_replay(args: ReplayArgs) -> Result<ExitCode, CliError> {
    let aws = aws().await;
    let api = args.stripe.api(&aws).await?;
    let (replayed, event) = replay::replay(
        &api,
        &args.intake.store(&aws),
        &args.intake.queue(&aws),
        &args.event_id,
        args.force,
        args.intake.sqs_max_message_bytes,
    )
    .await?;
    let what = format!("{} ({})", event.envelope.id, event.envelope.event_type);
    match replayed {
        Replayed::Enqueued => println!("{what}: enqueued"),
        Replayed::AlreadySeen => println!(
            "{what}: already enqueued earlier, nothing sent (`status {}` shows whether it was applied; --force sends it anyway)",
            event.envelope.id
        ),
        Replayed::Forced => println!(
            "{what}: enqueued again (forced); if it was applied before, the processor skips it"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_dlq(command: DlqCommand) -> Result<ExitCode, CliError> {
    let aws = aws().await;
    match command {
        DlqCommand::List(args) => {
            let dlq = Queue::new(aws.sqs.clone(), &args.dlq.dead_letter_queue_url);
            let letters = dead_letters::list(&dlq, args.max).await?;
            if args.json {
                for letter in &letters {
                    println!("{}", serde_json::to_string(letter).unwrap_or_default());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let now_ms = u64::try_from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(0);
            for letter in &letters {
                let age = letter.sent_at_ms.map_or_else(
                    || "?".to_owned(),
                    |sent| {
                        humantime::format_duration(Duration::from_secs(
                            now_ms.saturating_sub(sent) / 1000,
                        ))
                        .to_string()
                    },
                );
                println!(
                    "{}  {}  {}  receives {}  sent {age} ago",
                    letter.message_id,
                    letter.event_id.as_deref().unwrap_or("-"),
                    letter.event_type.as_deref().unwrap_or("-"),
                    letter
                        .receive_count
                        .map_or_else(|| "?".to_owned(), |n| n.to_string()),
                );
            }
            println!("{} message(s) listed (max {})", letters.len(), args.max);
        }
        DlqCommand::Show(args) => {
            let dlq = Queue::new(aws.sqs.clone(), &args.dlq.dead_letter_queue_url);
            let letter = dead_letters::show(&dlq, &args.id, args.scan)
                .await?
                .ok_or_else(|| CliError::NotInDlq(args.id.clone(), args.scan))?;
            println!("message id:    {}", letter.message_id);
            println!(
                "event id:      {}",
                letter.event_id.as_deref().unwrap_or("-")
            );
            println!(
                "event type:    {}",
                letter.event_type.as_deref().unwrap_or("-")
            );
            println!(
                "body location: {}",
                letter.body_location.as_deref().unwrap_or("inline")
            );
            println!(
                "receives:      {}",
                letter
                    .receive_count
                    .map_or_else(|| "?".to_owned(), |n| n.to_string())
            );
            if let Some(sent) = letter.sent_at_ms {
                println!("first sent:    {}", format_time(sent / 1000));
            }
            let pretty = serde_json::from_str::<serde_json::Value>(&letter.body)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or_else(|_| letter.body.clone());
            println!("body:\n{pretty}");
        }
        DlqCommand::Redrive(args) => {
            let dlq = Queue::new(aws.sqs.clone(), &args.dlq.dead_letter_queue_url);
            let target = Queue::new(aws.sqs.clone(), &args.event_queue_url);
            let waiting = dlq.info().await?.visible;
            if args.dry_run {
                println!(
                    "{waiting} message(s) in the dead-letter queue; would move {}",
                    args.max.map_or(waiting, |max| waiting.min(max as u64))
                );
                return Ok(ExitCode::SUCCESS);
            }
            let bar = progress::bar(args.max.map_or(waiting, |max| waiting.min(max as u64)));
            let summary = dead_letters::redrive(&dlq, &target, args.max, &bar).await?;
            println!(
                "moved {} message(s) to the event queue; {} copied but still in the dead-letter queue; {} not moved",
                summary.moved, summary.left_in_dlq, summary.failed
            );
            return Ok(exit(summary.failed == 0));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_source_ips(command: SourceIpsCommand) -> Result<ExitCode, CliError> {
    let ssm = aws_sdk_ssm::Client::new(&load_aws_config().await);
    match command {
        SourceIpsCommand::Put(args) => {
            let text = std::fs::read_to_string(&args.file)
                .map_err(|e| CliError::ReadFile(args.file.clone(), e))?;
            let list = SourceIpAllowList::from_stripe_file(&text)?;
            let name = &args.parameter.parameter;
            source_ips::store(&ssm, name, &list).await?;
            println!("wrote {} address(es) to {name}", list.len());
            println!("receiver instances started from now on use them; to apply at once, see the README (Security)");
        }
        SourceIpsCommand::Show(args) => {
            let list = source_ips::load(&ssm, &args.parameter.parameter).await?;
            for address in list.to_parameter_value().split(',') {
                println!("{address}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let aws = aws().await;
    let store = DynamoDedupStore::for_reading(aws.dynamodb.clone(), &args.dedup_table);
    let billing = DynamoBillingStore::new(aws.dynamodb.clone(), &args.billing_table);
    let status = status::status(&store, &billing, &args.event_id).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
    } else {
        print!("{status}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_console(args: ConsoleArgs) -> Result<ExitCode, CliError> {
    let aws = aws().await;
    let (time_zone, time_zone_name) = match &args.time_zone {
        Some(name) => (
            jiff::tz::TimeZone::get(name).map_err(|_| CliError::TimeZone(name.clone()))?,
            name.clone(),
        ),
        None => {
            let zone = jiff::tz::TimeZone::system();
            let name = zone.iana_name().unwrap_or("UTC").to_owned();
            (zone, name)
        }
    };
    // Replay needs Stripe's API; without a key the page still works and says so on Replay.
    let stripe = match args.stripe.api(&aws).await {
        Ok(api) => Some(api),
        Err(CliError::NoApiKey) => None,
        Err(error) => return Err(error),
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .unwrap_or_default();
    let environment = match endpoint {
        endpoint if endpoint.contains("127.0.0.1") || endpoint.contains("localhost") => {
            "local emulators".to_owned()
        }
        _ => format!(
            "{}{}",
            args.profile
                .as_deref()
                .map(|p| format!("profile {p}, "))
                .unwrap_or_default(),
            aws.config
                .region()
                .map(ToString::to_string)
                .unwrap_or_else(|| "no region".to_owned())
        ),
    };
    let console = std::sync::Arc::new(stripe_webhooks::console::Console {
        dedup: args.intake.store(&aws),
        billing: DynamoBillingStore::new(aws.dynamodb.clone(), &args.billing_table),
        event_queue: Queue::new(aws.sqs.clone(), &args.intake.event_queue_url),
        dead_letters: Queue::new(aws.sqs.clone(), &args.dlq.dead_letter_queue_url),
        stripe,
        time_zone,
        time_zone_name,
        environment,
        token: stripe_webhooks::console::new_token(),
        sqs_max_message_bytes: args.intake.sqs_max_message_bytes,
    });
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    println!("console: http://{address}/  (Ctrl-C stops; bound to 127.0.0.1 only)");
    stripe_webhooks::console::serve(console, address, shutdown_signal())
        .await
        .map_err(CliError::Console)?;
    Ok(ExitCode::SUCCESS)
}

async fn run_poll(args: PollArgs) -> Result<ExitCode, CliError> {
    let aws = aws().await;
    let target = match &args.invoke {
        Some(base) => Target::invoke(base, &args.function)?,
        None => Target::InProcess(std::sync::Arc::new(
            poll::in_process_app(&aws.config).await?,
        )),
    };
    let settings = PollSettings {
        batch_size: usize::from(args.batch_size),
        batching_window: args.batching_window,
        visibility_timeout_secs: args.visibility_timeout,
        ..PollSettings::default()
    };
    let region = aws
        .config
        .region()
        .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
    let poller = Poller::new(
        Queue::new(aws.sqs.clone(), &args.event_queue_url),
        target,
        settings,
        region,
    )
    .await?;
    poller.wait_until_ready(Duration::from_secs(900)).await?;
    let info = poller.queue_info();
    tracing::info!(
        queue = %args.event_queue_url,
        batch_size = settings.batch_size,
        batching_window_ms = settings.batching_window.as_millis() as u64,
        visibility_timeout_secs = settings
            .visibility_timeout_secs
            .map(i64::from)
            .or(info.visibility_timeout_secs.map(i64::from))
            .unwrap_or(-1),
        max_receive_count = info.max_receive_count.unwrap_or(0),
        processor = args.invoke.as_deref().unwrap_or("in-process"),
        "poller: feeding the event queue to the processor"
    );
    if args.once {
        let report = poller.poll_once().await?;
        return Ok(exit(report.is_none_or(|r| r.failed.is_empty())));
    }
    let totals = poller.run(shutdown_signal()).await;
    tracing::info!(
        batches = totals.batches,
        received = totals.received,
        succeeded = totals.succeeded,
        failed = totals.failed,
        "poller: stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or the TERM `make dev` sends when it stops.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

#[cfg(feature = "fake-stripe")]
async fn run_fake_stripe(args: FakeStripeArgs) -> Result<ExitCode, CliError> {
    use stripe_webhooks::fake_stripe::{fixture_events, FakeStripe, Fault};
    let root = settings::repo_root();
    let now = i64::try_from(stripe_pipeline::signature::unix_now()).unwrap_or(0);
    let tag = format!("fake{:04x}", fastrand::u16(..));
    let events = fixture_events(
        &send::fixtures_dir(&root),
        &tag,
        args.events,
        now,
        60,
        args.undelivered_every,
    )
    .map_err(CliError::Fake)?;
    let fake = FakeStripe::start_on(([127, 0, 0, 1], args.port).into(), events, &args.api_key)
        .await
        .map_err(CliError::Fake)?;
    for spec in &args.fault {
        let bad = || CliError::BadFault(spec.clone());
        let (n, status) = spec.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().map_err(|_| bad())?;
        let fault = match status.parse::<u16>().map_err(|_| bad())? {
            429 => Fault::RateLimited {
                retry_after_secs: 1,
            },
            status @ 500..=599 => Fault::ServerError(status),
            _ => return Err(bad()),
        };
        fake.inject(n, fault);
    }
    println!(
        "Fake Stripe API with {} events (ids evt_{tag}…), Ctrl-C stops it:\n  export STRIPE_API_BASE={} STRIPE_API_KEY={}",
        args.events, fake.base_url, args.api_key
    );
    shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_help() {
        let mut cli = Cli::command();
        for sub in cli.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(help.len() > 100, "{}: {help}", sub.get_name());
        }
    }
}
