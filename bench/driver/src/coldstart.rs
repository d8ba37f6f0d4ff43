//! Cold start: the time from spawning a function binary to its first `GET
//! /2018-06-01/runtime/invocation/next`, against a minimal Runtime API of our own. That span is the
//! function's init (configuration, AWS SDK clients, the verifier; the tokio runtime), what Lambda bills
//! as Init Duration, minus what the sandbox adds (download, unzip, microVM), which no local run sees.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, net::TcpListener, process::Command};

use crate::Error;

/// The first request a Lambda runtime client makes when it is ready for work.
const NEXT: &str = "GET /2018-06-01/runtime/invocation/next";

/// Spawns `binary` `runs` times with the environment Lambda gives a function (plus `env`), and returns
/// the init times in milliseconds, sorted.
pub async fn measure(
    binary: &str,
    env: &[(String, String)],
    runs: usize,
) -> Result<Vec<f64>, Error> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?.to_string();
        let started = Instant::now();
        let mut child = Command::new(binary)
            .env("AWS_LAMBDA_RUNTIME_API", &api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let (mut socket, _) = listener.accept().await?;
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                if String::from_utf8_lossy(&request).starts_with(NEXT) {
                    return Ok::<_, std::io::Error>(started.elapsed());
                }
            }
        })
        .await;
        let _ = child.start_kill();
        let output = child.wait_with_output().await?;
        match waited {
            Ok(Ok(elapsed)) => times.push(elapsed.as_secs_f64() * 1000.0),
            _ => {
                return Err(format!(
                    "{binary} never asked for an invocation: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
                .into())
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}
