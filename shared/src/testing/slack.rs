//! A stand-in for a Slack incoming webhook on a loopback port, for the unit tests, the integration
//! tests and the chaos suite: it records what it accepts, and answers as the test sets it (a status,
//! scripted answers, a share of 500s, a hook run before each answer).

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// One scripted answer of a [`FakeSlack`].
#[derive(Debug, Clone)]
pub struct SlackAnswer {
    /// The HTTP status.
    pub status: u16,
    /// A `Retry-After` header, in seconds.
    pub retry_after_secs: Option<u64>,
    /// The body (Slack answers errors as text: `channel_not_found`, ...).
    pub body: &'static str,
}

/// Run with the number of the post (0 for the first) before it is answered.
type OnPost = Box<dyn Fn(usize) + Send + Sync>;

struct State {
    accepted: Mutex<Vec<String>>,
    status: AtomicU16,
    script: Mutex<VecDeque<SlackAnswer>>,
    failure_rate: f64,
    posts: AtomicUsize,
    failed: AtomicU64,
    on_post: Option<OnPost>,
}

/// A fake Slack incoming webhook. Answers 200 `ok` unless told otherwise; serves each connection until
/// the client closes it (the notifier keeps connections alive).
#[derive(Clone)]
pub struct FakeSlack {
    /// Where to post: a `hooks.slack.com`-shaped path on 127.0.0.1.
    pub url: String,
    state: Arc<State>,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack").field("url", &self.url).finish()
    }
}

impl FakeSlack {
    /// Starts on a free loopback port, answering 200 to every post.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(0.0, None).await
    }

    /// Starts answering 500 to a `failure_rate` share of posts, at random (Slack having a bad moment).
    pub async fn failing(failure_rate: f64) -> std::io::Result<Self> {
        Self::serve(failure_rate, None).await
    }

    /// Starts running `on_post` with each post's number before answering it: a test's way to break
    /// something at the exact moment Slack has accepted a message.
    pub async fn with_hook(
        on_post: impl Fn(usize) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::serve(0.0, Some(Box::new(on_post))).await
    }

    async fn serve(failure_rate: f64, on_post: Option<OnPost>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let state = Arc::new(State {
            accepted: Mutex::default(),
            status: AtomicU16::new(200),
            script: Mutex::default(),
            failure_rate,
            posts: AtomicUsize::new(0),
            failed: AtomicU64::new(0),
            on_post,
        });
        let slack = Self {
            url: format!("http://{}/services/T000/B000/XXXX", listener.local_addr()?),
            state: state.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve_connection(socket, state.clone()));
            }
        });
        Ok(slack)
    }

    /// Answers every post not scripted with `code` from now on (500 plays "Slack is down").
    pub fn set_status(&self, code: u16) {
        self.state.status.store(code, Ordering::SeqCst);
    }

    /// Answers the next post with `answer`, before falling back to the status set.
    pub fn answer_next(&self, answer: SlackAnswer) {
        lock(&self.state.script).push_back(answer);
    }

    /// Forgets the messages accepted so far.
    pub fn clear(&self) {
        lock(&self.state.accepted).clear();
    }

    /// Every post received, whatever was answered.
    pub fn posts(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }

    /// Posts answered 500 by the failure rate.
    pub fn failed(&self) -> u64 {
        self.state.failed.load(Ordering::SeqCst)
    }

    /// The `text` of every message accepted (answered 200) so far, in order.
    pub fn texts(&self) -> Vec<String> {
        lock(&self.state.accepted)
            .iter()
            .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
            .filter_map(|message| message["text"].as_str().map(str::to_owned))
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads requests off one connection (by `Content-Length`) and answers each.
async fn serve_connection(mut socket: TcpStream, state: Arc<State>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        while let Some((head_end, length)) = complete_request(&buffer) {
            let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
            buffer.drain(..head_end + length);
            let response = answer(&state, body);
            if socket.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Where the body of the request at the start of `buffer` begins and how long it is, once all of it
/// has arrived.
fn complete_request(buffer: &[u8]) -> Option<(usize, usize)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buffer.len() >= end + 4 + length).then_some((end + 4, length))
}

/// The response to one post, recording the message if it is accepted.
fn answer(state: &State, body: String) -> String {
    let number = state.posts.fetch_add(1, Ordering::SeqCst);
    if let Some(on_post) = &state.on_post {
        on_post(number);
    }
    let scripted = lock(&state.script).pop_front();
    let (status, retry_after, reply) = match scripted {
        Some(answer) => (answer.status, answer.retry_after_secs, answer.body),
        None if state.failure_rate > 0.0 && fastrand::f64() < state.failure_rate => {
            state.failed.fetch_add(1, Ordering::SeqCst);
            (500, None, "internal_error")
        }
        None => (state.status.load(Ordering::SeqCst), None, "ok"),
    };
    if status == 200 {
        lock(&state.accepted).push(body);
    }
    let retry_after = retry_after
        .map(|secs| format!("Retry-After: {secs}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{retry_after}\r\n{reply}",
        reply.len()
    )
}
