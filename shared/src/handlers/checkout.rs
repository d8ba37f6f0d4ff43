//! `checkout.session.completed`: activate the subscription it created, or grant the credits it sold.

use super::{version, Plan};
use crate::{
    billing::{attr, attributes, Change, Guard, Key, OnConflict, Op, Write},
    event::StripeEvent,
    objects::CheckoutSession,
};

/// Below every subscription event of the same second: the session completes as the subscription is
/// created, and the subscription's own events carry the details.
const RANK_ACTIVATE: u8 = 0;

/// Metadata key holding the number of credits a payment-mode session sold.
pub(super) const CREDITS_METADATA: &str = "credits";

pub(super) fn completed(event: &StripeEvent, session: CheckoutSession) -> Plan {
    let customer = session
        .customer
        .as_deref()
        .or(session.client_reference_id.as_deref());
    let mut changes = Vec::new();
    if let (Some(customer), Some(subscription)) = (customer, session.subscription.as_deref()) {
        let v = version(event, RANK_ACTIVATE);
        changes.push(Change {
            what: "subscription.activate",
            writes: vec![Write {
                key: Key::customer(customer, format!("SUB#{subscription}")),
                op: Op::Set(attributes([
                    ("status", Some("active".into())),
                    (attr::VERSION, Some(v.as_str().into())),
                ])),
                guards: vec![Guard::Newer(v)],
            }],
            on_conflict: OnConflict::Skip,
        });
    }
    let credits = session
        .metadata
        .get(CREDITS_METADATA)
        .and_then(|c| c.trim().parse::<i64>().ok())
        .filter(|c| *c > 0);
    if let (Some(customer), Some(credits)) = (customer, credits) {
        // One grant per payment: the grant record is created only if absent, so neither a redelivery
        // nor a refund that arrived first (it leaves a reversed record) can add the credits again.
        let grant = session.payment_intent.as_deref().unwrap_or(&session.id);
        changes.push(Change {
            what: "credits.grant",
            writes: vec![
                Write {
                    key: Key::object("GRANT", grant),
                    op: Op::Put(attributes([
                        ("customer", Some(customer.into())),
                        ("credits", Some(credits.into())),
                        ("checkout_session", Some(session.id.as_str().into())),
                    ])),
                    guards: vec![Guard::Absent],
                },
                Write {
                    key: Key::customer(customer, "CREDITS"),
                    op: Op::Add(vec![("balance", credits)]),
                    guards: vec![],
                },
            ],
            on_conflict: OnConflict::Skip,
        });
    }
    Plan {
        changes,
        notifications: vec![],
    }
}
