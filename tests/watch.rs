//! The receiver as developers run it: `cargo lambda watch` serving the real binary over HTTP, against
//! the emulators. Also checks what the process logs: JSON lines with the decision fields, and never the
//! secret or the body.

use std::{
    io::Read,
    net::TcpListener,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::*;
use stripe_pipeline::signature::{sign, unix_now, SigningSecret};

/// Stops the whole `cargo lambda watch` process group (it spawns cargo and the function binaries).
struct Watch {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Watch {
    fn start(resources: &Resources, port: u16) -> Self {
        let dir = repo_root().join("target/watch-test");
        std::fs::create_dir_all(&dir).expect("test dir");
        let env_file = dir.join(format!("{}.env", resources.prefix));
        let log = dir.join(format!("{}.log", resources.prefix));
        let mut env = receiver_env(resources);
        env.push(("RUST_LOG", "info".to_owned()));
        let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        std::fs::write(&env_file, lines.join("\n")).expect("env file");
        let mut command = Command::new("cargo");
        command
            .args(["lambda", "watch", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .arg("--env-file")
            .arg(&env_file);
        Self::spawn(
            command,
            log,
            "cargo lambda watch (is cargo-lambda installed? `make setup`)",
        )
    }

    /// Runs `command` from the repository root in its own process group (so dropping it stops
    /// everything it started), no stdin, stdout and stderr into `log`.
    fn spawn(mut command: Command, log: std::path::PathBuf, what: &str) -> Self {
        let output = std::fs::File::create(&log).expect("log file");
        let child = command
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log"))
            .stderr(output)
            .process_group(0)
            .spawn()
            .expect(what);
        Self { child, log }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("read log");
        text
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn the_receiver_under_cargo_lambda_watch_verifies_dedups_and_enqueues_over_http() {
    let resources = create_resources();
    let port = free_port();
    let watch = Watch::start(&resources, port);
    let url = format!("http://127.0.0.1:{port}/lambda-url/receiver/webhooks/stripe");
    // The first request waits for cargo to build the function (seconds when the target dir is warm).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    let secret = SigningSecret::new(SECRET).unwrap();
    let canary = format!("canary-{:016x}", fastrand::u64(..));
    let id = unique_event_id();
    let mut event: serde_json::Value = serde_json::from_slice(&fixture("invoice.paid")).unwrap();
    event["id"] = id.clone().into();
    event["data"]["object"]["description"] = canary.clone().into();
    let body = serde_json::to_vec_pretty(&event).unwrap();
    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut request = http.post(&url).header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        request.body(body).send()
    };

    // The first request waits for cargo to build the function, possibly for minutes on a cold machine:
    // longer than a signature's tolerance. So first wait for an unsigned request to be answered (401
    // from the running receiver), and only then send signed ones.
    let started = Instant::now();
    let mut watch = watch;
    loop {
        if let Ok(Some(status)) = watch.child.try_wait() {
            panic!(
                "cargo lambda watch exited ({status}); is cargo-lambda installed (`make setup`)?\n{}",
                watch.log()
            );
        }
        match post(b"{}".to_vec(), None).await {
            Ok(response) if response.status().as_u16() == 401 => break,
            Ok(response) if started.elapsed() > Duration::from_secs(900) => {
                panic!(
                    "receiver answered {} while warming up\n{}",
                    response.status(),
                    watch.log()
                )
            }
            Err(e) if started.elapsed() > Duration::from_secs(900) => {
                panic!("cargo lambda watch did not answer: {e}\n{}", watch.log())
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    let first = post(body.clone(), Some(sign(&body, &secret, unix_now())))
        .await
        .expect("signed request");
    let first_status = first.status().as_u16();
    let first_body = first.text().await.unwrap();
    assert_eq!(first_status, 200, "{first_body}\n{}", watch.log());
    assert_eq!(first_body, r#"{"status":"enqueued"}"#);

    let again = post(body.clone(), Some(sign(&body, &secret, unix_now() + 1)))
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(again.text().await.unwrap(), r#"{"status":"duplicate"}"#);

    let forged = SigningSecret::new("whsec_forged").unwrap();
    let rejected = post(body.clone(), Some(sign(&body, &forged, unix_now())))
        .await
        .unwrap();
    assert_eq!(rejected.status().as_u16(), 401);
    assert_eq!(
        post(body.clone(), None).await.unwrap().status().as_u16(),
        401
    );
    let get = http.get(&url).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);

    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].body.as_deref().map(str::as_bytes),
        Some(&body[..])
    );

    // One JSON line per decision, with the fixed fields; never the secret or the body.
    let log = watch.log();
    let decisions: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line.get("outcome").is_some())
        .collect();
    let outcomes: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d["outcome"].as_str())
        .collect();
    assert!(
        outcomes.len() >= 5 && outcomes.contains(&"enqueued") && outcomes.contains(&"duplicate"),
        "{log}"
    );
    let enqueued = decisions
        .iter()
        .find(|d| d["outcome"] == "enqueued")
        .unwrap();
    assert_eq!(enqueued["event_id"], id.as_str());
    assert_eq!(enqueued["event_type"], "invoice.paid");
    assert!(enqueued["latency_ms"].is_number());
    let reasons: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"signature_mismatch"), "{log}");
    assert!(reasons.contains(&"no_header"), "{log}");
    assert!(!log.contains(SECRET), "the signing secret reached the logs");
    assert!(!log.contains(&canary), "the event body reached the logs");
    assert!(!log.contains("v1="), "a signature header reached the logs");
}

/// `make dev` (infra/dev.sh) prints the webhook URL only once the functions are built and the receiver
/// answers: a signed event sent the moment the URL appears is enqueued at once, not held for a build
/// (or answered 500 by a runtime that is not up yet).
#[tokio::test]
async fn make_dev_is_ready_when_it_prints_the_webhook_url() {
    let port = free_port();
    let prefix = format!("devt{:06x}", fastrand::u32(..0xffffff));
    let state = repo_root().join("target/dev-test").join(&prefix);
    std::fs::create_dir_all(&state).expect("state dir");
    let log = state.join("dev.log");
    let mut command = Command::new("bash");
    command
        .arg("infra/dev.sh")
        .env("DEV_PORT", port.to_string())
        .env("DEV_PREFIX", &prefix)
        .env("DEV_POLLER", "off")
        .env("DEV_STATE", &state)
        .env("STRIPE_WEBHOOK_SECRET", SECRET);
    let mut dev = Watch::spawn(command, log, "bash infra/dev.sh");
    let started = Instant::now();
    while !dev.log().contains("Webhook URL:") {
        if let Ok(Some(status)) = dev.child.try_wait() {
            panic!(
                "make dev exited ({status}) before printing the URL\n{}",
                dev.log()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "no URL after 20 min\n{}",
            dev.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At once, with a timeout far below a build: the receiver must already be up.
    let url = format!("http://127.0.0.1:{port}/lambda-url/receiver/webhooks/stripe");
    let body = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let secret = SigningSecret::new(SECRET).unwrap();
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
        .post(&url)
        .header("content-type", "application/json")
        .header("Stripe-Signature", sign(&body, &secret, unix_now()))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("the receiver did not answer at once: {e}\n{}", dev.log()));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}\n{}", dev.log());
    assert_eq!(text, r#"{"status":"enqueued"}"#);
}
