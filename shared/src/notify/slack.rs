//! Slack incoming webhooks. (If the process dies between Slack's 200 and the processor's "sent" mark,
//! the claim's lease runs out and the retried message sends again: Slack webhooks take no idempotency
//! key, so that window cannot be closed from here.)
//!
//! What Slack answers decides what happens next:
//! - **2xx**: sent.
//! - **429**: Slack's rate limit (about one message per second per webhook). The send waits its
//!   `Retry-After` (1 s if absent) and posts again, as long as the waits add up to at most
//!   [`MAX_RATE_LIMIT_WAIT`]; other sends of this notifier wait too. A longer `Retry-After` fails
//!   with [`NotifyError::RateLimited`]: the message is retried by SQS later rather than holding the
//!   invocation.
//! - **Another 4xx** but 408 (`403 invalid_token` / `action_prohibited`, `404 no_service` /
//!   `channel_not_found`, `410 channel_is_archived`, `400 invalid_payload`…): no retry can fix it, so
//!   it is [`NotifyError::Misconfigured`], which the processor logs and counts without failing the
//!   message.
//! - **5xx, 408, no answer**: [`NotifyError::Rejected`] / [`NotifyError::Unreachable`], retried by SQS.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use tokio::time::Instant;

use super::NotifyError;
use crate::handlers::Notification;

/// The most one send waits for Slack's rate limit, all `Retry-After`s together: enough for a burst
/// of a batch's notifications to the same webhook, short beside the processor's 30 s timeout.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// The wait after a 429 without `Retry-After`: Slack's pace for incoming webhooks.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Posts per send at most (a `Retry-After: 0` must not spin).
const MAX_POSTS: u32 = 4;

/// An incoming-webhook URL. Its `Debug` hides the URL: the path is the credential.
#[derive(Clone)]
pub struct SlackNotifier {
    http: reqwest::Client,
    url: String,
    /// Until when Slack asked this webhook's senders to wait (shared by the notifier's clones).
    paused_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlackNotifier([redacted])")
    }
}

impl SlackNotifier {
    /// A notifier posting to `url`, giving up on one attempt after 5 s (the message is retried).
    pub fn new(url: impl Into<String>) -> Result<Self, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(NotifyError::Unreachable)?;
        Ok(Self {
            http,
            url: url.into(),
            paused_until: Arc::new(Mutex::new(None)),
        })
    }

    /// Posts one message, waiting out a short rate limit.
    pub async fn send(&self, notification: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::json!({ "text": notification.text });
        let mut waited = Duration::ZERO;
        for _ in 0..MAX_POSTS {
            let pause = self.paused_until().map_or(Duration::ZERO, |until| {
                until.saturating_duration_since(Instant::now())
            });
            if !pause.is_zero() {
                waited = wait(waited, pause).await?;
            }
            let response = self
                .http
                .post(&self.url)
                .json(&body)
                .send()
                .await
                .map_err(NotifyError::Unreachable)?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = retry_after(response.headers()).unwrap_or(DEFAULT_RETRY_AFTER);
                self.pause_until(Instant::now() + retry_after);
                waited = wait(waited, retry_after).await?;
                continue;
            }
            if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
                let text = response.text().await.unwrap_or_default();
                return Err(NotifyError::Misconfigured {
                    status: status.as_u16(),
                    code: error_code(&text),
                });
            }
            return Err(NotifyError::Rejected(status.as_u16()));
        }
        Err(NotifyError::RateLimited {
            retry_after_secs: DEFAULT_RETRY_AFTER.as_secs(),
        })
    }

    fn paused_until(&self) -> Option<Instant> {
        self.paused_until.lock().ok().and_then(|until| *until)
    }

    fn pause_until(&self, until: Instant) {
        if let Ok(mut paused) = self.paused_until.lock() {
            *paused = Some(paused.map_or(until, |p| p.max(until)));
        }
    }
}

/// Sleeps `pause` if the send's waits stay within [`MAX_RATE_LIMIT_WAIT`]; else fails at once.
async fn wait(waited: Duration, pause: Duration) -> Result<Duration, NotifyError> {
    let total = waited + pause;
    if total > MAX_RATE_LIMIT_WAIT {
        return Err(NotifyError::RateLimited {
            retry_after_secs: pause.as_secs_f64().ceil() as u64,
        });
    }
    tokio::time::sleep(pause).await;
    Ok(total)
}

/// `Retry-After` in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// Slack's error code from an error body (`no_service`), or `unknown` for anything else: only a
/// short code of lowercase letters and underscores reaches the logs.
fn error_code(body: &str) -> String {
    let code = body.trim();
    let plain = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plain { code } else { "unknown" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_slack_error_codes_reach_the_logs() {
        assert_eq!(error_code("channel_not_found\n"), "channel_not_found");
        assert_eq!(error_code("<html>gone</html>"), "unknown");
        assert_eq!(error_code(""), "unknown");
    }

    #[tokio::test]
    async fn a_wait_beyond_the_budget_fails_at_once_as_rate_limited() {
        let err = wait(Duration::from_secs(4), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            NotifyError::RateLimited {
                retry_after_secs: 2
            }
        ));
        assert!(!err.is_permanent());
        let permanent = NotifyError::Misconfigured {
            status: 404,
            code: "no_service".to_owned(),
        };
        assert!(permanent.is_permanent());
    }
}
