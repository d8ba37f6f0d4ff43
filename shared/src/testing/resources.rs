//! The tables and queues of one test or bench run, made from `template.yaml` by `infra/resources.py`
//! (the template's own definitions, so tests and benchmarks run against what `sam deploy` creates).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// One run's tables and queues.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The name prefix they were created with.
    pub prefix: String,
    /// The dedup table.
    pub dedup_table: String,
    /// The billing table.
    pub billing_table: String,
    /// The event queue.
    pub event_queue_url: String,
    /// Its dead-letter queue.
    pub dead_letter_queue_url: String,
}

/// How to run `infra/resources.py`: with which Python, from which checkout, against which endpoints.
#[derive(Debug, Clone)]
pub struct ResourcesPy {
    python: String,
    script: PathBuf,
    env: Vec<(String, String)>,
}

impl ResourcesPy {
    /// The script of the checkout at `repo_root`, run by `$PYTHON` (the venv's, when `make` put it
    /// first) or else `python3`, with the caller's AWS endpoint settings.
    pub fn new(repo_root: &Path) -> Self {
        Self {
            python: std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()),
            script: repo_root.join("infra/resources.py"),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the script (such as `AWS_ENDPOINT_URL_DYNAMODB`).
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// The script with `args`, ready to run.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.python);
        command
            .arg(&self.script)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs the script with `args`; its JSON output (`--json`), or why it failed.
    pub fn run(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let output = self
            .command(args)
            .output()
            .map_err(|e| format!("could not run {}: {e}", self.script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "resources.py {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("resources.py {args:?} printed no JSON: {e}"))
    }

    /// Creates a run's tables and queues under `prefix`.
    pub fn create(&self, prefix: &str) -> Result<Resources, String> {
        let created = self.run(&["create", "--prefix", prefix, "--json"])?;
        let field = |name: &str| {
            created[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{name} missing from resources.py output"))
        };
        Ok(Resources {
            prefix: prefix.to_owned(),
            dedup_table: field("DEDUP_TABLE_NAME")?,
            billing_table: field("BILLING_TABLE_NAME")?,
            event_queue_url: field("EVENT_QUEUE_URL")?,
            dead_letter_queue_url: field("DEAD_LETTER_QUEUE_URL")?,
        })
    }

    /// Deletes them (best effort: a leftover table only costs the emulator memory).
    pub fn delete(&self, resources: &Resources) {
        let _ = self
            .command(&["delete", "--prefix", &resources.prefix])
            .output();
    }
}
