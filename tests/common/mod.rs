//! Shared set-up for the integration tests: the emulators (DynamoDB Local, moto's SQS and Secrets
//! Manager), fresh resources per test created from `template.yaml` by `infra/resources.py` (the same
//! script `make dev` uses), real AWS SDK clients pointed at them, and the Stripe fixtures.
//!
//! The emulators are started by `make test` (`infra/test.sh`); when a test is run on its own with
//! `cargo test`, they are started here if nothing answers on their ports.
#![allow(missing_docs, unreachable_pub)]

pub mod lambda_process;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use lambda_http::{http, Body, Request};
use stripe_pipeline::{
    dedup::{DynamoBodyStash, DynamoDedupStore, DynamoDuplicateCounter},
    queue::SqsEventQueue,
    signature::{sign, unix_now, SigningSecret},
    telemetry::Metrics,
};

pub const REGION: &str = "us-east-1";
pub const SECRET: &str = "whsec_integration_test_secret_0123456789";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub fn dynamodb_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| "http://127.0.0.1:8000".into())
}

pub fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_SQS").unwrap_or_else(|_| "http://127.0.0.1:5050".into())
}

pub fn secrets_manager_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_SECRETS_MANAGER").unwrap_or_else(|_| sqs_endpoint())
}

/// An address where nothing listens: a dependency that is down.
pub const UNREACHABLE: &str = "http://127.0.0.1:9";

fn answers(url: &str) -> bool {
    let address = url.trim_start_matches("http://");
    std::net::TcpStream::connect_timeout(
        &match address.parse() {
            Ok(a) => a,
            Err(_) => return false,
        },
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Starts the emulators once per test process if they are not already running.
pub fn ensure_emulators() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        if answers(&dynamodb_endpoint()) && answers(&sqs_endpoint()) {
            return;
        }
        let status = Command::new("bash")
            .arg(repo_root().join("infra/emulators.sh"))
            .arg("start")
            .status()
            .expect("run infra/emulators.sh start");
        assert!(status.success(), "infra/emulators.sh start failed");
    });
}

pub use stripe_pipeline::testing::resources::Resources;
use stripe_pipeline::testing::resources::ResourcesPy;

/// `infra/resources.py` of this checkout, against the emulators.
fn resources_script() -> ResourcesPy {
    ResourcesPy::new(&repo_root())
        .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint())
        .env("AWS_ENDPOINT_URL_SQS", sqs_endpoint())
}

/// Runs `infra/resources.py` with `args` against the emulators; its JSON output (pass `--json`).
pub fn resources_py(args: &[&str]) -> serde_json::Value {
    resources_script()
        .run(args)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The tables and queues of one test, created from template.yaml with a unique prefix (the
/// emulators started first if they are not running).
pub fn create_resources() -> Resources {
    ensure_emulators();
    let prefix = format!("it{:08x}", fastrand::u32(..));
    resources_script()
        .create(&prefix)
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(stripe_pipeline::config::https_client())
        .region(aws_config::Region::new(REGION))
        .test_credentials()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

pub async fn dynamodb(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk_config().await)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

pub async fn sqs(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::config::Builder::from(&sdk_config().await)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::config::Builder::from(&sdk_config().await)
        .endpoint_url(secrets_manager_endpoint())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// The environment the real receiver binary needs to serve test-mode events with `resources`, against
/// the emulators (what the template gives the function, with local credentials).
pub fn receiver_env(resources: &Resources) -> Vec<(&'static str, String)> {
    vec![
        ("DEDUP_TABLE_NAME", resources.dedup_table.clone()),
        ("EVENT_QUEUE_URL", resources.event_queue_url.clone()),
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("STRIPE_LIVEMODE", "false".to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", sqs_endpoint()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}

pub type ReceiverApp = receiver::handler::App<DynamoDedupStore, SqsEventQueue>;

pub const TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const LEASE: Duration = Duration::from_secs(30);

/// A receiver wired exactly as `main.rs` wires it ([`receiver::init::app_with`]), to the given
/// endpoints: the test's tables and queue, `secrets`, test mode, TTL [`TTL`] and lease [`LEASE`].
pub async fn receiver_app(
    resources: &Resources,
    secrets: &[&str],
    dynamodb_at: &str,
    sqs_at: &str,
) -> ReceiverApp {
    use stripe_pipeline::config as var;
    let env: HashMap<&str, String> = HashMap::from([
        (var::DEDUP_TABLE_NAME, resources.dedup_table.clone()),
        (var::EVENT_QUEUE_URL, resources.event_queue_url.clone()),
        (var::STRIPE_WEBHOOK_SECRET, secrets.join(",")),
        (var::STRIPE_LIVEMODE, "false".to_owned()),
        (var::DEDUP_TTL_SECS, TTL.as_secs().to_string()),
        (var::DEDUP_LEASE_SECS, LEASE.as_secs().to_string()),
        (var::METRICS_NAMESPACE, "IntegrationTest".to_owned()),
    ]);
    let config =
        stripe_pipeline::config::ReceiverConfig::from_lookup(|name| env.get(name).cloned())
            .expect("receiver config");
    receiver::init::app_with(
        config,
        &sdk_config().await,
        dynamodb(dynamodb_at).await,
        sqs(sqs_at).await,
    )
    .await
    .expect("receiver")
}

/// Every Stripe fixture event: (type, raw bytes).
pub fn fixture_events() -> Vec<(String, Vec<u8>)> {
    let dir = repo_root().join("tests/fixtures/stripe/events");
    let mut events: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "index.json"))
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            (name, std::fs::read(&p).expect("fixture"))
        })
        .collect();
    events.sort();
    events
}

pub fn fixture(event_type: &str) -> Vec<u8> {
    std::fs::read(
        repo_root()
            .join("tests/fixtures/stripe/events")
            .join(format!("{event_type}.json")),
    )
    .expect("fixture")
}

/// `body` with its event id replaced, so one fixture can stand for many events.
pub fn with_event_id(body: &[u8], id: &str) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_slice(body).expect("fixture is JSON");
    event["id"] = serde_json::Value::String(id.to_owned());
    serde_json::to_vec_pretty(&event).expect("serialize")
}

pub fn unique_event_id() -> String {
    format!("evt_it{:016x}", fastrand::u64(..))
}

/// A POST as API Gateway hands it to the receiver, signed with `secret` at time `t`.
pub fn signed_request(body: &[u8], secret: &str, t: u64) -> Request {
    let secret = SigningSecret::new(secret).expect("secret");
    request(body, Some(&sign(body, &secret, t)))
}

pub fn signed_now(body: &[u8]) -> Request {
    signed_request(body, SECRET, unix_now())
}

pub fn request(body: &[u8], signature: Option<&str>) -> Request {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("https://abc.execute-api.us-east-1.amazonaws.com/webhooks/stripe")
        .header("content-type", "application/json");
    if let Some(signature) = signature {
        builder = builder.header("Stripe-Signature", signature);
    }
    builder.body(Body::Binary(body.to_vec())).expect("request")
}

/// `request` as API Gateway (HTTP API) hands it over from the client address `source_ip`.
pub fn from_address(request: Request, source_ip: &str) -> Request {
    receiver::handler::with_source_ip(request, source_ip)
}

/// An address that accepts connections and never answers: a dependency that hangs.
pub async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{address}")
}

/// An SDK configuration whose every service is at `endpoint` (for clients built by the functions' own
/// init, e.g. SSM at moto). The per-service endpoint variables (`AWS_ENDPOINT_URL_SSM`, which
/// `make test` exports) would win over `endpoint`, so they are not read.
pub async fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
    let base = sdk_config().await;
    let mut builder = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint);
    builder.set_region(base.region().cloned());
    builder.set_credentials_provider(base.credentials_provider());
    builder.set_timeout_config(base.timeout_config().cloned());
    builder.set_http_client(base.http_client());
    builder.build()
}

/// An SSM client at moto.
pub async fn ssm() -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&sdk_config_at(&sqs_endpoint()).await)
}

/// Receives (and deletes) everything on a queue, as aws_lambda_events messages the processor takes.
pub async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<SqsMessage> {
    let mut drained = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(0)
            .send()
            .await
            .expect("receive");
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            return drained;
        }
        for message in messages {
            if let Some(handle) = &message.receipt_handle {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .expect("delete");
            }
            drained.push(processor::sqs::lambda_message(
                &message,
                &processor::sqs::queue_arn(queue_url, REGION),
                REGION,
            ));
        }
    }
}

/// The approximate number of visible messages (no side effects).
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    let output = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("queue attributes");
    output
        .attributes
        .and_then(|a| {
            a.get(&QueueAttributeName::ApproximateNumberOfMessages)
                .cloned()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The attribute of a drained message.
pub fn attribute<'a>(message: &'a SqsMessage, name: &str) -> Option<&'a str> {
    message
        .message_attributes
        .get(name)?
        .string_value
        .as_deref()
}

pub type ProcessorApp = processor::init::DeployedApp;

/// A processor wired as `main.rs` wires it, Slack pointed at `slack_url` if given.
pub async fn processor_app(resources: &Resources, slack_url: Option<&str>) -> ProcessorApp {
    processor_app_with_stripe(resources, slack_url, None).await
}

/// The same, with Stripe's API at `stripe_base` (refetch mode and thin events on).
pub async fn processor_app_with_stripe(
    resources: &Resources,
    slack_url: Option<&str>,
    stripe_base: Option<&str>,
) -> ProcessorApp {
    let client = dynamodb(&dynamodb_endpoint()).await;
    let stripe = stripe_base.map(|base| {
        stripe_pipeline::stripe_api::StripeApi::new(
            base,
            stripe_pipeline::stripe_api::ApiKey::new(FAKE_STRIPE_KEY).expect("key"),
            1000.0,
            stripe_pipeline::stripe_api::RetryPolicy {
                max_retries: 3,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
            },
        )
        .expect("stripe api client")
    });
    stripe_pipeline::process::Processor {
        bodies: DynamoBodyStash::new(client.clone(), &resources.dedup_table, TTL),
        duplicates: DynamoDuplicateCounter::new(client.clone(), &resources.dedup_table, TTL),
        billing: stripe_pipeline::billing::DynamoBillingStore::new(
            client,
            &resources.billing_table,
        ),
        notify: stripe_pipeline::notify::Router::new(
            stripe_pipeline::notify::Routes::parse(None, slack_url, None).expect("routes"),
            None,
            None,
        )
        .expect("router"),
        stripe,
        metrics: Metrics::new("IntegrationTest", "processor"),
    }
}

/// Runs one batch through the processor's `handle`; returns the ids it reported failed.
pub async fn process_batch(app: &ProcessorApp, messages: Vec<SqsMessage>) -> Vec<String> {
    process_batch_in(app, messages, lambda_runtime::Context::default()).await
}

/// The invocation context Lambda gives an invocation that must end `secs` from now.
pub fn context_ending_in(secs: u64) -> lambda_runtime::Context {
    let deadline = std::time::SystemTime::now() + Duration::from_secs(secs);
    let mut context = lambda_runtime::Context::default();
    context.deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    context
}

/// [`process_batch`] in a given invocation context (its deadline).
pub async fn process_batch_in(
    app: &ProcessorApp,
    messages: Vec<SqsMessage>,
    context: lambda_runtime::Context,
) -> Vec<String> {
    let mut batch = aws_lambda_events::event::sqs::SqsEvent::default();
    batch.records = messages;
    let response =
        processor::handler::handle(app, lambda_runtime::LambdaEvent::new(batch, context))
            .await
            .expect("the batch handler never fails as a whole");
    response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect()
}

/// Like the event source mapping: processes the batch, then redelivers the failed messages until none
/// fail (at most 10 rounds). Returns the number of rounds.
pub async fn process_until_done(app: &ProcessorApp, mut messages: Vec<SqsMessage>) -> usize {
    for round in 1..=10 {
        let failed: std::collections::HashSet<String> = process_batch(app, messages.clone())
            .await
            .into_iter()
            .collect();
        if failed.is_empty() {
            return round;
        }
        messages.retain(|m| m.message_id.as_ref().is_some_and(|id| failed.contains(id)));
    }
    panic!("messages still failing after 10 deliveries")
}

/// A message as SQS would hand it to the processor, for events that skip the receiver.
pub fn message(id: &str, body: &[u8]) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.body = Some(String::from_utf8_lossy(body).into_owned());
    message
}

/// The billing state ([`stripe_pipeline::testing::billing_state`]) of the test's billing table.
pub async fn billing_state(
    resources: &Resources,
) -> std::collections::BTreeMap<(String, String), String> {
    let client = dynamodb(&dynamodb_endpoint()).await;
    stripe_pipeline::testing::billing_state(&client, &resources.billing_table)
        .await
        .expect("scan")
}

pub use stripe_pipeline::testing::slack::{FakeSlack, SlackAnswer};

/// The real receiver `handle` behind an HTTP port on 127.0.0.1: for clients that post over HTTP (such
/// as `stripe-webhooks send`) without building the function under `cargo lambda watch`. Stops when
/// dropped.
pub struct ReceiverServer {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReceiverServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReceiverServer {
    pub async fn start(app: ReceiverApp) -> Self {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver server");
        let url = format!(
            "http://{}/webhooks/stripe",
            listener.local_addr().expect("addr")
        );
        let app = std::sync::Arc::new(app);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |incoming: hyper::Request<hyper::body::Incoming>| {
                            let app = app.clone();
                            async move {
                                let (parts, body) = incoming.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                let mut request = http::Request::builder()
                                    .method(parts.method)
                                    .uri(format!("https://localhost{}", parts.uri.path()));
                                for (name, value) in &parts.headers {
                                    request = request.header(name, value);
                                }
                                let request =
                                    request.body(Body::Binary(bytes.to_vec())).expect("request");
                                let response = receiver::handler::handle(&app, request)
                                    .await
                                    .expect("the receiver always answers");
                                let (parts, body) = response.into_parts();
                                let bytes = match body {
                                    Body::Empty => Vec::new(),
                                    Body::Text(text) => text.into_bytes(),
                                    Body::Binary(bytes) => bytes,
                                    _ => Vec::new(),
                                };
                                let mut answer = hyper::Response::builder().status(parts.status);
                                for (name, value) in &parts.headers {
                                    answer = answer.header(name, value);
                                }
                                Ok::<_, std::convert::Infallible>(
                                    answer
                                        .body(http_body_util::Full::new(bytes::Bytes::from(bytes)))
                                        .expect("response"),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, task }
    }
}

/// A fake Stripe events API serving `count` events made from the fixtures (ids `evt_<tag><n>`, one a
/// minute back from now, every `undelivered_every`-th with an undelivered webhook), accepting
/// [`FAKE_STRIPE_KEY`].
pub async fn fake_stripe(
    tag: &str,
    count: usize,
    undelivered_every: usize,
) -> stripe_webhooks::fake_stripe::FakeStripe {
    let events = stripe_webhooks::fake_stripe::fixture_events(
        &repo_root().join("tests/fixtures/stripe/events"),
        tag,
        count,
        unix_now() as i64 - 60,
        60,
        undelivered_every,
    )
    .expect("fixture events");
    stripe_webhooks::fake_stripe::FakeStripe::start(events, FAKE_STRIPE_KEY)
        .await
        .expect("start the fake Stripe API")
}

pub const FAKE_STRIPE_KEY: &str = "sk_test_fake_0123456789";

/// A Stripe API client of the fake, as the CLI builds it, but with short backoffs.
pub fn stripe_api(base_url: &str) -> stripe_webhooks::stripe_api::StripeApi {
    stripe_webhooks::stripe_api::StripeApi::new(
        base_url,
        stripe_webhooks::stripe_api::ApiKey::new(FAKE_STRIPE_KEY).expect("key"),
        1000.0,
        stripe_webhooks::stripe_api::RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
    )
    .expect("stripe api client")
}
