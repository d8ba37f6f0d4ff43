//! The receiver Lambda: `POST /webhooks/stripe` behind API Gateway. `main.rs` wires it up ([`init`]);
//! the work is in [`handler`], exposed as a library so integration tests call the same `handle` the
//! Lambda runs.
#![forbid(unsafe_code)]

pub mod handler;
pub mod init;
