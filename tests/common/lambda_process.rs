//! A function binary run the way Lambda runs it: built by cargo, spawned with Lambda's environment, and
//! fed invocations by a minimal Runtime API of ours (`/2018-06-01/runtime/invocation/next` hands out the
//! queued events, `.../<id>/response` and `.../<id>/error` collect the answers). For what only the real
//! process shows, such as how `main.rs` sets up its logs.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Path as UrlPath, State},
    http::{HeaderMap, HeaderValue},
    routing::{get, post},
    Router,
};
use tokio::sync::mpsc;

use crate::repo_root;

/// Builds `bin` of `package` with the cargo running the tests (its target dir) and returns the
/// executable.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    // What cargo sets for the test process itself (CARGO_MANIFEST_DIR, CARGO_PKG_NAME...) is not for
    // this build: build scripts that watch those variables (ring's) would rebuild half the tree, here
    // and again in the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if per_package || name == "CARGO_PRIMARY_PACKAGE" || name == "CARGO_TARGET_TMPDIR" {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .current_dir(repo_root())
        .args(["build", "--quiet", "--message-format=json", "-p", package])
        .args(["--bin", bin])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(output.status.success(), "cargo build -p {package} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["target"]["name"] == bin)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build reported no executable for {bin}"))
}

/// What a function answered one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `POST .../<id>/response`: the handler's result.
    Response(serde_json::Value),
    /// `POST .../<id>/error` (or `/runtime/init/error`): the runtime's error document.
    Error(String),
}

#[derive(Clone)]
struct Api {
    events: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    answers: mpsc::UnboundedSender<(String, Answer)>,
}

async fn next(State(api): State<Api>) -> (HeaderMap, String) {
    let queued = api.events.lock().expect("events").pop();
    let Some((id, event)) = queued else {
        // Like Lambda between invocations: the function waits here until it is stopped.
        std::future::pending::<()>().await;
        unreachable!("pending never resolves")
    };
    let deadline = std::time::SystemTime::now() + Duration::from_secs(10);
    let deadline = deadline
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(name, HeaderValue::from_str(value).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", &id);
    set("lambda-runtime-deadline-ms", &deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:test",
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000",
    );
    (headers, event.to_string())
}

async fn response(State(api): State<Api>, UrlPath(id): UrlPath<String>, body: String) {
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    let _ = api.answers.send((id, Answer::Response(value)));
}

async fn error(State(api): State<Api>, id: Option<UrlPath<String>>, body: String) {
    let id = id.map_or_else(|| "init".to_owned(), |UrlPath(id)| id);
    let _ = api.answers.send((id, Answer::Error(body)));
}

/// A function process and the Runtime API it polls. Dropping it kills the process.
pub struct LambdaProcess {
    child: Child,
    output: PathBuf,
    answers: mpsc::UnboundedReceiver<(String, Answer)>,
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LambdaProcess {
    /// Starts `binary` with Lambda's variables plus `env` (and nothing else of the test's log
    /// settings), stdout and stderr into `output`, to be handed `events` (`(request id, event)`) one
    /// by one.
    pub async fn start(
        binary: &Path,
        env: &[(&str, String)],
        events: Vec<(String, serde_json::Value)>,
        output: PathBuf,
    ) -> Self {
        let (answers, received) = mpsc::unbounded_channel();
        let mut queued = events;
        queued.reverse();
        let api = Api {
            events: Arc::new(Mutex::new(queued)),
            answers,
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(error))
            .with_state(api);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind runtime api");
        let address = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        // A file, not a pipe: a chatty process never blocks on a full pipe nobody reads yet.
        let log = std::fs::File::create(&output).expect("output file");
        let child = Command::new(binary)
            .env_remove("RUST_LOG")
            .env_remove("AWS_LAMBDA_LOG_LEVEL")
            .env("AWS_LAMBDA_RUNTIME_API", address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "test")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/test")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("output"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        Self {
            child,
            output,
            answers: received,
        }
    }

    /// The next answer the function posts, with its request id; panics with the output after
    /// `timeout` (a function that hangs or died).
    pub async fn answer(&mut self, timeout: Duration) -> (String, Answer) {
        match tokio::time::timeout(timeout, self.answers.recv()).await {
            Ok(Some(answer)) => answer,
            _ => panic!(
                "no answer from the function within {timeout:?}:\n{}",
                self.output()
            ),
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}
