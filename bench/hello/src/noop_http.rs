//! The smallest `lambda_http` function: answers every request `200 {"received":true}` without looking
//! at it. Served by `cargo lambda watch` in the load stage beside the receiver, it is the floor of
//! what a Rust HTTP Lambda costs in that harness (the runtime client, the event's JSON both ways, the
//! logs of nothing), so the receiver's CPU per webhook is printed as a ratio to it.

use lambda_http::{run, service_fn, Body, Error, Request, Response};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_: Request| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"received":true}"#))
            .map_err(Error::from)
    }))
    .await
}
