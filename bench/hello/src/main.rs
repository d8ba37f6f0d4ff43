//! The smallest `lambda_runtime` function: answers every event with `{"hello":"world"}`. Built with the
//! workspace's release profile like the real functions, it is the baseline their cold start and package
//! size are compared with in BENCHMARKS.md.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({ "hello": "world" }))
    }))
    .await
}
