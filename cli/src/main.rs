//! `stripe-webhooks`: each subcommand's wiring and what it prints. The arguments are in `args.rs`, the
//! AWS clients in `aws.rs`, the errors in `error.rs`; the work of every subcommand is a library
//! function (see `lib.rs`), which the integration tests call directly.

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
    replay::{self, ReplayError},
    send::{self, Pacing, SendError, SendOptions},
    settings::{self, format_time, parse_time, SettingsError},
    sqs::{Queue, SqsError},
    status::{self, StatusError},
    stripe_api::{ApiKey, EventFilter, RetryPolicy, StripeApi, StripeApiError, MAX_PAGE_SIZE},
};

mod args;
mod aws;
mod error;

use args::*;
use aws::aws;
use error::CliError;

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
    let report = send::DeliveryReport { deliveries, target };
    print!("{report}");
    exit(report.all_accepted())
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
    let report = backfill::BackfillReport {
        summary: &summary,
        api: api.stats(),
        took: started.elapsed(),
    };
    print!("{report}");
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
    print!(
        "{}",
        replay::ReplayReport {
            replayed,
            event_id: &event.envelope.id,
            event_type: event.envelope.event_type.as_str(),
        }
    );
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
            print!(
                "{}",
                dead_letters::DeadLetterList {
                    letters: &letters,
                    max: args.max,
                    now_ms,
                }
            );
        }
        DlqCommand::Show(args) => {
            let dlq = Queue::new(aws.sqs.clone(), &args.dlq.dead_letter_queue_url);
            let letter = dead_letters::show(&dlq, &args.id, args.scan)
                .await?
                .ok_or_else(|| CliError::NotInDlq(args.id.clone(), args.scan))?;
            println!("{letter}");
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
            print!("{summary}");
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
