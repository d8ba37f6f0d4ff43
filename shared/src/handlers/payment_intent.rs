//! `payment_intent.succeeded` / `payment_intent.payment_failed`: the payment record, the order it pays,
//! and a message.

use super::{version, Audience, Notification, Plan};
use crate::{
    billing::{attr, attributes, Change, Guard, Key, Op, Write},
    event::StripeEvent,
    money::Money,
    objects::PaymentIntent,
};

/// Within one second, a success outranks a failure (a retry that worked).
const RANK_FAILED: u8 = 0;
const RANK_SUCCEEDED: u8 = 2;

fn record(event: &StripeEvent, pi: &PaymentIntent, status: &str, rank: u8) -> Change {
    let v = version(event, rank);
    let amount = if status == "succeeded" && pi.amount_received > 0 {
        pi.amount_received
    } else {
        pi.amount
    };
    let decline = pi.last_payment_error.as_ref().and_then(|e| e.reason());
    Change::skippable(
        "payment",
        vec![Write {
            key: Key::object("PAYMENT", &pi.id),
            op: Op::Put(attributes([
                ("status", Some(status.into())),
                ("amount", Some(amount.into())),
                ("currency", Some(pi.currency.as_str().into())),
                ("customer", pi.customer.as_deref().map(Into::into)),
                (
                    "order_id",
                    pi.metadata.get("order_id").map(|o| o.as_str().into()),
                ),
                ("decline_reason", decline.map(Into::into)),
                (attr::VERSION, Some(v.as_str().into())),
            ])),
            guards: vec![Guard::Newer(v)],
        }],
    )
}

/// Records the payment, marks `metadata.order_id` paid, and tells the payments channel.
pub(super) fn succeeded(event: &StripeEvent, pi: PaymentIntent) -> Plan {
    let mut changes = vec![record(event, &pi, "succeeded", RANK_SUCCEEDED)];
    let money = Money::new(
        if pi.amount_received > 0 {
            pi.amount_received
        } else {
            pi.amount
        },
        &pi.currency,
    );
    let order = pi.metadata.get("order_id");
    if let Some(order) = order {
        // Paid is final: no later event un-pays an order (a refund is its own record), so no version.
        changes.push(Change::skippable(
            "order",
            vec![Write {
                key: Key::object("ORDER", order),
                op: Op::Set(attributes([
                    ("paid", Some(true.into())),
                    ("payment_intent", Some(pi.id.as_str().into())),
                    ("amount", Some(money.amount.into())),
                    ("currency", Some(money.currency.as_str().into())),
                ])),
                guards: vec![],
            }],
        ));
    }
    let who = super::who(pi.customer.as_deref(), pi.receipt_email.as_deref());
    let order = order.map(|o| format!(", order {o}")).unwrap_or_default();
    Plan {
        changes,
        notifications: vec![Notification {
            audience: Audience::Payments,
            text: format!("Payment received: {money} from {who}{order} ({})", pi.id),
        }],
    }
}

/// Records the failure with its decline reason, and tells the failures channel.
pub(super) fn failed(event: &StripeEvent, pi: PaymentIntent) -> Plan {
    let reason = pi
        .last_payment_error
        .as_ref()
        .and_then(|e| e.reason())
        .unwrap_or("unknown reason")
        .to_owned();
    let who = super::who(pi.customer.as_deref(), pi.receipt_email.as_deref());
    Plan {
        changes: vec![record(event, &pi, "failed", RANK_FAILED)],
        notifications: vec![Notification {
            audience: Audience::Failures,
            text: format!(
                "Payment failed: {} from {who}: {reason} ({})",
                Money::new(pi.amount, &pi.currency),
                pi.id
            ),
        }],
    }
}
