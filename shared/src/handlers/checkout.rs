//! `checkout.session.completed`: activate the subscription it created, or grant the credits it sold.

use super::{version, Plan};
use crate::{
    billing::{attributes, Change, Guard, Key, Op, Value, Write},
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
        changes.push(super::subscription::status_change(
            customer,
            subscription,
            "active",
            v,
        ));
    }
    let credits = session
        .metadata
        .get(CREDITS_METADATA)
        .and_then(|c| c.trim().parse::<i64>().ok())
        .filter(|c| *c > 0);
    if let (Some(customer), Some(credits)) = (customer, credits) {
        // One grant per payment: the grant record is created only if absent, so a redelivery cannot add
        // the credits again. A refund that arrived first left a reversed record with no credits: then the
        // grant only fills in what it would have granted (adding nothing), so the state is the same as
        // grant-then-refund in order.
        let grant = Key::object(
            "GRANT",
            session.payment_intent.as_deref().unwrap_or(&session.id),
        );
        let record = attributes([
            ("customer", Some(customer.into())),
            ("credits", Some(credits.into())),
            ("checkout_session", Some(session.id.as_str().into())),
        ]);
        let balance = Key::customer(customer, "CREDITS");
        let grant_now = Change::skippable(
            "credits.grant",
            vec![
                Write {
                    key: grant.clone(),
                    op: Op::Put(record.clone()),
                    guards: vec![Guard::Absent],
                },
                Write {
                    key: balance.clone(),
                    op: Op::Add(vec![("balance", credits)]),
                    guards: vec![],
                },
            ],
        );
        let after_refund = Change::skippable(
            "credits.grant_after_refund",
            vec![
                Write {
                    key: grant,
                    op: Op::Set(record),
                    guards: vec![
                        Guard::Equals("reversed", Value::Bool(true)),
                        Guard::Unset("credits"),
                    ],
                },
                Write {
                    key: balance,
                    op: Op::Add(vec![("balance", 0)]),
                    guards: vec![],
                },
            ],
        );
        changes.push(grant_now.or_else(after_refund));
    }
    Plan {
        changes,
        notifications: vec![],
    }
}
