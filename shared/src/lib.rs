//! # stripe-pipeline
//!
//! The library both Lambdas of the Stripe webhook pipeline are built on:
//!
//! ```text
//! Stripe ─POST─▶ receiver: signature ─▶ event ─▶ dedup (claim) ─▶ queue (enqueue) ─▶ dedup (mark) ─▶ 200
//! SQS ─▶ processor: process: queue (parse body) ─▶ delivery ─▶ handlers ─▶ billing (apply) ─▶ notify (outbox)
//! ```
//!
//! | module | owns |
//! | --- | --- |
//! | [`signature`] | `Stripe-Signature` verification and signing |
//! | [`event`] | the event envelope and event types |
//! | [`delivery`] | the shapes on the queue (webhook, EventBridge, thin) and the parse that unwraps them |
//! | [`dedup`] | the dedup table: claims (claim, mark, release), the stash for bodies too large for SQS ([`dedup::stash`]), the duplicate counters ([`dedup::counters`]) |
//! | [`queue`] | the event queue and its message format |
//! | [`intake`] | claim → enqueue → mark: the path every event takes onto the queue |
//! | [`objects`] | the Stripe objects handlers read (only the fields used) |
//! | [`handlers`] | one handler per object family: event → planned changes and notifications |
//! | [`process`] | one queued event end to end: read → fetch → plan → apply exactly once → notify → log |
//! | [`billing`] | billing state: exactly-once, order-safe writes, the read API (`entitlement`), and the event feed ([`billing::feed`]) the console reads |
//! | [`notify`] | notification routes, channels (Slack, SES email) and the outbox (claim → send → mark) |
//! | [`money`] | minor-unit amounts and their formatting |
//! | [`stripe_api`] | reading Stripe's API (events, objects) under a rate limit, with retries |
//! | [`config`] | every environment variable, read once at cold start |
//! | [`secrets`] | the signing secrets from Secrets Manager |
//! | [`source_ips`] | the optional allow-list of Stripe's webhook source addresses (SSM) |
//! | [`telemetry`] | JSON logs, outcomes, EMF metrics |
//! | `testing` | (feature `test-util`) generated customer histories, log capture, the billing-state scan and a fake Slack webhook, for the tests, the bench and the chaos suite |
//!
//! Each AWS service is called from its own modules: DynamoDB from `dedup` and `billing`, SQS from
//! `queue`, Secrets Manager from `secrets`, SSM from `source_ips`, SES from `notify`.
#![forbid(unsafe_code)]

pub mod billing;
pub mod config;
pub mod dedup;
pub mod delivery;
pub mod event;
pub mod handlers;
pub mod intake;
pub mod money;
pub mod notify;
pub mod objects;
pub mod process;
pub mod queue;
pub mod secrets;
pub mod signature;
pub mod source_ips;
pub mod stripe_api;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
