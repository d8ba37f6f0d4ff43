//! The settings only the CLI reads, each variable named once here (the functions' variables, the
//! Stripe API key and base URL among them, are named in [`stripe_pipeline::config`] and read from
//! there), `--env-file`, and `--since`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Most Stripe API requests per second the CLI makes.
pub const STRIPE_API_MAX_RPS: &str = "STRIPE_API_MAX_RPS";
/// The dead-letter queue (`resources.py` and the stack output `DeadLetterQueueUrl`).
pub const DEAD_LETTER_QUEUE_URL: &str = "DEAD_LETTER_QUEUE_URL";
/// Where `send` posts (default: the `make dev` receiver on `DEV_PORT`).
pub const WEBHOOK_URL: &str = "WEBHOOK_URL";
/// The port `make dev` serves on.
pub const DEV_PORT: &str = "DEV_PORT";

/// Stripe allows 100 read requests per second in live mode and 25 in test mode, shared with everything
/// else using the account's keys; a backfill needs one request per 100 events, so 10 costs no speed.
pub const DEFAULT_STRIPE_API_MAX_RPS: f64 = 10.0;
/// `GET /v1/events` only returns the last 30 days.
pub const STRIPE_EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A setting the CLI was given is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--env-file` could not be read.
    #[error("cannot read the env file {0}")]
    EnvFile(PathBuf, #[source] std::io::Error),
    /// A line of it is not `KEY=VALUE`.
    #[error("{path}:{line}: expected KEY=VALUE")]
    EnvFileLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// `--since` / `--until` is neither a duration nor a time.
    #[error("{0:?} is neither a duration (7d, 36h) nor a time (2026-11-20, 2026-11-20T08:00:00Z, unix seconds)")]
    Time(String),
}

/// Reads `KEY=VALUE` lines (blank lines, `#` comments, `export ` and single or double quotes around
/// the value allowed), as `make dev` writes `.local/dev.env`.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, SettingsError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| SettingsError::EnvFile(path.to_owned(), e))?;
    parse_env(&text).map_err(|line| SettingsError::EnvFileLine {
        path: path.to_owned(),
        line,
    })
}

fn parse_env(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or(index + 1)?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(index + 1);
        }
        let value = value.trim();
        let unquoted = ['\'', '"']
            .iter()
            .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
            .unwrap_or(value);
        vars.push((key.to_owned(), unquoted.to_owned()));
    }
    Ok(vars)
}

/// The value of `--env-file PATH` or `--env-file=PATH` among `args`, wherever it stands (it is a
/// global option), before `--`.
pub fn env_file_arg(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<PathBuf> {
    let mut args = args.into_iter();
    let mut found = None;
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == "--env-file" {
            found = args.next().map(PathBuf::from);
        } else if let Some(path) = text.strip_prefix("--env-file=") {
            found = Some(PathBuf::from(path));
        }
    }
    found
}

/// Unix seconds for `--since` / `--until`: a duration back from `now` (`7d`, `36h`, `90m`), a date
/// (`2026-11-20`, midnight UTC), an RFC 3339 time, or unix seconds.
pub fn parse_time(text: &str, now: SystemTime) -> Result<u64, SettingsError> {
    let text = text.trim();
    let fail = || SettingsError::Time(text.to_owned());
    let at = if let Ok(seconds) = text.parse::<u64>() {
        UNIX_EPOCH + Duration::from_secs(seconds)
    } else if let Ok(ago) = humantime::parse_duration(text) {
        now.checked_sub(ago).ok_or_else(fail)?
    } else if text.len() == 10 {
        humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")).map_err(|_| fail())?
    } else {
        humantime::parse_rfc3339_weak(text).map_err(|_| fail())?
    };
    Ok(at.duration_since(UNIX_EPOCH).map_err(|_| fail())?.as_secs())
}

/// Unix seconds as an RFC 3339 UTC time, for people.
pub fn format_time(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_secs)).to_string()
}

/// The repository the CLI runs in: the nearest directory up from the current one holding
/// `template.yaml`, else the one this binary was built from. Fixtures and `.local/` are found from it.
pub fn repo_root() -> PathBuf {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    std::env::current_dir()
        .ok()
        .and_then(|cwd| {
            cwd.ancestors()
                .find(|dir| dir.join("template.yaml").is_file() && dir.join("Cargo.toml").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or(built_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_as_make_dev_writes_them_parse() {
        let text = "# comment\nDEDUP_TABLE_NAME=dev-DedupTable\n\nexport EVENT_QUEUE_URL='http://q/1'\nSTRIPE_WEBHOOK_SECRET=\"whsec_a,whsec_b\"\n";
        assert_eq!(
            parse_env(text).unwrap(),
            [
                ("DEDUP_TABLE_NAME".to_owned(), "dev-DedupTable".to_owned()),
                ("EVENT_QUEUE_URL".to_owned(), "http://q/1".to_owned()),
                (
                    "STRIPE_WEBHOOK_SECRET".to_owned(),
                    "whsec_a,whsec_b".to_owned()
                ),
            ]
        );
        assert_eq!(parse_env("A=1\nnot a line\n"), Err(2));
        assert_eq!(parse_env("BAD KEY=1"), Err(1));
    }

    #[test]
    fn the_env_file_option_is_found_wherever_it_stands() {
        let args = |list: &[&str]| {
            list.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            env_file_arg(args(&["--env-file", "a.env", "status", "evt_1"])),
            Some(PathBuf::from("a.env"))
        );
        assert_eq!(
            env_file_arg(args(&["dlq", "list", "--env-file=b.env"])),
            Some(PathBuf::from("b.env"))
        );
        assert_eq!(env_file_arg(args(&["send", "--", "--env-file"])), None);
        assert_eq!(env_file_arg(args(&["status", "evt_1"])), None);
    }

    #[test]
    fn since_takes_durations_dates_times_and_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_time("7d", now).unwrap(), 1_800_000_000 - 7 * 86_400);
        assert_eq!(parse_time("36h", now).unwrap(), 1_800_000_000 - 36 * 3600);
        assert_eq!(parse_time("2026-11-20", now).unwrap(), 1_795_132_800);
        assert_eq!(
            parse_time("2026-11-20T08:00:00Z", now).unwrap(),
            1_795_132_800 + 8 * 3600
        );
        assert_eq!(parse_time("1795132800", now).unwrap(), 1_795_132_800);
        assert!(parse_time("last tuesday", now).is_err());
        assert_eq!(format_time(1_795_132_800), "2026-11-20T00:00:00Z");
    }
}
