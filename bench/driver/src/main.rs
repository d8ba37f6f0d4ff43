//! `bench-driver`: the programs behind `make bench` and `make chaos` (see BENCHMARKS.md).
//!
//! ```text
//! bench-driver chaos     [--customers N] [--concurrency N] [--pollers N] [--kill P] [--json FILE] ...
//! bench-driver load      --url URL [--pid PID]... --events N --concurrency N --json FILE
//! bench-driver coldstart --binary NAME=PATH... [--runs N] --json FILE
//! bench-driver cost      --results DIR
//! ```
//!
//! Run from the repository root with the emulators' environment (`infra/emulators.sh env`). Progress
//! and results go to stderr; stdout carries what the functions print (their EMF metric lines).

use std::{collections::HashMap, time::Duration};

use bench_driver::{chaos, proxy, Error};

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
            _ => {
                Err(format!("unknown command {command:?}: chaos | load | coldstart | cost").into())
            }
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
