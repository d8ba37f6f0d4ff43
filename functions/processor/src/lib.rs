//! The processor Lambda: consumes the event queue. `main.rs` wires it up; the work is in [`handler`],
//! exposed as a library so integration tests call the same `handle` the Lambda runs.
#![forbid(unsafe_code)]

pub mod handler;
pub mod init;
pub mod sqs;
