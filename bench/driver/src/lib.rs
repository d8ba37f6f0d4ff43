//! The programs behind `make bench` and `make chaos`, as a library for `src/main.rs`.
//!
//! | module | what |
//! | --- | --- |
//! | [`wiring`] | the functions wired as their `main.rs` do, to endpoints of our choosing; resources, Slack sink |
//! | [`proxy`] | the TCP fault proxy (refuse, delay, cut, outages) that also counts requests |
//! | [`load`] | HTTP load on a receiver; CPU time and peak RSS of its processes from `/proc` |
//! | [`coldstart`] | spawn to first Runtime API `next`, against a minimal Runtime API |
//! | [`flood`] | receiver CPU per refused request beside an accepted one, and that refusals call no AWS |
//! | [`cost`] | requests and sizes per event through a counting proxy, priced per million events |
//! | [`chaos`] | Stripe-like deliveries through faults and processor kills, and the checks |

pub mod chaos;
pub mod coldstart;
pub mod cost;
pub mod flood;
pub mod load;
pub mod proxy;
pub mod wiring;

/// Errors of a bench run: reported, and the process exits non-zero.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
