//! # stripe-webhooks
//!
//! The pipeline's command line, for the developer on a laptop and the on-call engineer after an
//! outage. `main.rs` only parses arguments and wires clients; every subcommand's work is a function
//! here, so the integration tests run exactly what the binary runs.
//!
//! | module | owns | subcommand |
//! | --- | --- | --- |
//! | [`send`] | signing fixture events and posting them to a receiver | `send` |
//! | [`stripe_api`] | Stripe's API client (re-exported from the library, which the processor shares) | — |
//! | [`backfill`] | events from the API through the receiver's dedup + enqueue path | `backfill` |
//! | [`replay`] | one event from the API onto the queue, optionally bypassing dedup | `replay` |
//! | [`dead_letters`] | listing, showing and redriving the dead-letter queue | `dlq` |
//! | [`status`] | what the dedup table and the billing state know of an event | `status` |
//! | [`poll`] | the local stand-in for the SQS event source mapping | `poll` |
//! | [`sqs`] | the CLI's own SQS calls (receive, delete, copy, visibility) | — |
//! | [`settings`] | the variables only the CLI reads, `--env-file`, `--since` | — |
//! | [`progress`] | progress bars that stay out of tests and pipes | — |
//! | `fake_stripe` | a fake Stripe events API (feature `fake-stripe`) | `fake-stripe` |
//!
//! Events enter the queue only through [`stripe_pipeline::intake`]: `backfill` and `replay` call
//! [`stripe_pipeline::intake::admit`] like the receiver does, so an event already seen is skipped
//! whichever door it came through; only `replay --force` calls
//! [`stripe_pipeline::intake::enqueue`] directly. The processor's per-event marker in the billing
//! table still keeps a forced replay from applying anything twice.
#![forbid(unsafe_code)]

pub mod backfill;
pub mod console;
pub mod dead_letters;
#[cfg(feature = "fake-stripe")]
pub mod fake_stripe;
pub mod poll;
pub mod progress;
pub mod replay;
pub mod send;
pub mod settings;
pub mod sqs;
pub mod status;
pub use stripe_pipeline::stripe_api;
