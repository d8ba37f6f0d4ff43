//! `bench-driver`: the programs behind `make bench` and `make chaos` (see BENCHMARKS.md).
//!
//! ```text
//! bench-driver chaos     [--customers N] [--concurrency N] [--pollers N] [--max-backlog N] [--kill P] [--json FILE] ...
//! bench-driver load      --url URL [--pid PID]... --events N --concurrency N --json FILE
//! bench-driver coldstart --binary NAME=PATH... [--runs N] --json FILE
//! bench-driver cost      --results DIR
//! bench-driver flood     --results DIR [--scale X]
//! ```
//!
//! Run from the repository root with the emulators' environment (`infra/emulators.sh env`). Progress
//! and results go to stderr; stdout carries what the functions print (their EMF metric lines).

use std::{collections::HashMap, time::Duration};

use bench_driver::{chaos, coldstart, cost, flood, load, proxy, Error};

/// `--name value` options, repeatable.
struct Args(HashMap<String, Vec<String>>);

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, Error> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg}"))?;
            let value = args
                .next_if(|v| !v.starts_with("--"))
                .unwrap_or_else(|| "true".to_owned());
            map.entry(name.to_owned()).or_default().push(value);
        }
        Ok(Self(map))
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        match self.0.get(name).and_then(|v| v.last()) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot parse {v}").into()),
        }
    }

    fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).and_then(|v| v.last()).cloned()
    }
}

fn chaos_options(args: &Args) -> Result<chaos::ChaosOptions, Error> {
    Ok(chaos::ChaosOptions {
        customers: args.get("customers", 1_120)?,
        concurrency: args.get("concurrency", 16)?,
        pollers: args.get("pollers", 2)?,
        max_backlog: args.get("max-backlog", 200)?,
        poison: args.get("poison", 6)?,
        redeliver: args.get("redeliver", 0.10)?,
        concurrent_duplicate: args.get("concurrent-duplicate", 0.05)?,
        kill: args.get("kill", 0.05)?,
        slack_failure: args.get("slack-failure", 0.02)?,
        faults: proxy::FaultPlan {
            refuse: args.get("refuse", 0.03)?,
            delay: args.get("delay", 0.03)?,
            stall: args.get("stall", 0.002)?,
            cut: args.get("cut", 0.01)?,
            outage_every: Some(Duration::from_secs(args.get("outage-every-secs", 25)?)),
            outage_for: Duration::from_millis(args.get("outage-ms", 1_500)?),
        },
        json: args.text("json"),
    })
}

fn list(args: &Args, name: &str) -> Vec<String> {
    args.0.get(name).cloned().unwrap_or_default()
}

async fn run_load(args: &Args) -> Result<bool, Error> {
    let options = load::LoadOptions {
        url: args.text("url").ok_or("--url is required")?,
        label: args.text("label").unwrap_or_default(),
        events: args.get("events", 3_000)?,
        redeliver: args.get("redeliver", 0.30)?,
        concurrency: args.get("concurrency", 16)?,
        warmup: args.get("warmup", 300)?,
        processes: list(args, "process"),
        side_processes: list(args, "side-process"),
        json: args.text("json"),
    };
    let result = load::run(options).await?;
    Ok(result["statuses"]
        .as_object()
        .is_some_and(|s| s.keys().all(|k| k.starts_with("200"))))
}

async fn run_coldstart(args: &Args) -> Result<bool, Error> {
    let runs = args.get("runs", 20)?;
    let env: Vec<(String, String)> = list(args, "env")
        .iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let mut results = serde_json::Map::new();
    for binary in list(args, "binary") {
        let (name, path) = binary.split_once('=').ok_or("--binary takes NAME=PATH")?;
        let times = coldstart::measure(path, &env, runs).await?;
        let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let entry = serde_json::json!({
            "runs": times.len(),
            "min_ms": times[0],
            "p50_ms": pct(0.5),
            "p90_ms": pct(0.9),
            "binary_bytes": size,
        });
        eprintln!("coldstart {name}: {entry}");
        results.insert(name.to_owned(), entry);
    }
    if let Some(path) = args.text("json") {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(true)
}

#[tokio::main]
async fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_default();
    let result = match Args::parse(argv) {
        Err(e) => Err(e),
        Ok(args) => match command.as_str() {
            "chaos" => match chaos_options(&args) {
                Ok(options) => chaos::run(options).await,
                Err(e) => Err(e),
            },
            "load" => run_load(&args).await,
            "coldstart" => run_coldstart(&args).await,
            "cost" => match args.get("customers", 100) {
                Ok(customers) => {
                    let results = args.text("results").unwrap_or_else(|| ".".to_owned());
                    cost::run(&results, customers).await
                }
                Err(e) => Err(e),
            },
            "flood" => match args.get("scale", 1.0) {
                Ok(scale) => {
                    let results = args.text("results").unwrap_or_else(|| ".".to_owned());
                    flood::run(&results, scale).await
                }
                Err(e) => Err(e),
            },
            _ => Err(format!(
                "unknown command {command:?}: chaos | load | coldstart | cost | flood"
            )
            .into()),
        },
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bench-driver {command}: {e}");
            std::process::exit(2);
        }
    }
}
