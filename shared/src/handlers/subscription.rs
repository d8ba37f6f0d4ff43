//! `customer.subscription.*`: the subscription's status, plan and period; deleted revokes access.

use super::{version, Audience, Notification, Plan};
use crate::{
    billing::{attr, attributes, Change, Guard, Key, Op, Version, Write},
    event::{EventType, StripeEvent},
    objects::Subscription,
};

/// A subscription's lifecycle within one second: created, updated, deleted (terminal, wins ties).
fn rank(event_type: &EventType) -> u8 {
    match event_type {
        EventType::CustomerSubscriptionCreated => 0,
        EventType::CustomerSubscriptionDeleted => 3,
        _ => 1,
    }
}

/// Replaces the subscription's details and its status, each only if this event is newer than the one
/// that last wrote it.
pub(super) fn changed(event: &StripeEvent, sub: Subscription) -> Plan {
    let Some(customer) = sub.customer.as_deref() else {
        return Plan::default();
    };
    let v = version(event, rank(&event.event_type));
    Plan {
        changes: vec![
            Change::skippable(
                "subscription",
                vec![Write {
                    key: Key::customer(customer, format!("SUB#{}", sub.id)),
                    op: Op::Put(attributes([
                        ("plan", sub.plan().map(Into::into)),
                        (
                            "current_period_end",
                            sub.current_period_end().map(Into::into),
                        ),
                        (
                            "cancel_at_period_end",
                            Some(sub.cancel_at_period_end.into()),
                        ),
                        (attr::VERSION, Some(v.as_str().into())),
                    ])),
                    guards: vec![Guard::Newer(v.clone())],
                }],
            ),
            status_change(customer, &sub.id, &sub.status, v),
        ],
        notifications: vec![],
    }
}

/// Statuses a subscription never leaves: Stripe does not reactivate a canceled or expired subscription
/// (a new one is created instead), so no later write may move one back and give access again.
const TERMINAL_STATUSES: &[&str] = &["canceled", "incomplete_expired"];

/// The subscription's status is its own item: besides the subscription's events, a paid checkout
/// (activate) sets it; invoices never do. Each item is only ever replaced whole by a newer event, so the
/// final state is that of the newest event, whatever order they arrive in, and never once terminal.
pub(super) fn status_change(
    customer: &str,
    subscription: &str,
    status: &str,
    v: Version,
) -> Change {
    Change::skippable(
        "subscription.status",
        vec![Write {
            key: Key::customer(customer, format!("SUB#{subscription}#STATUS")),
            op: Op::Put(attributes([
                ("status", Some(status.into())),
                (attr::VERSION, Some(v.as_str().into())),
            ])),
            guards: vec![Guard::Newer(v), Guard::NotIn("status", TERMINAL_STATUSES)],
        }],
    )
}

/// Three days before a trial ends: tell the customers channel (no state change).
pub(super) fn trial_will_end(sub: Subscription) -> Plan {
    let when = sub
        .trial_end
        .map(super::date)
        .unwrap_or_else(|| "soon".to_owned());
    Plan {
        changes: vec![],
        notifications: vec![Notification {
            audience: Audience::Customers,
            text: format!(
                "Trial ending {when}: subscription {} of {}",
                sub.id,
                super::who(sub.customer.as_deref(), None)
            ),
        }],
    }
}
