//! `checkout.session.*`: activate the subscription a session created, or grant the credits it sold,
//! once the session's money has actually arrived.
//!
//! A session `completed` with a delayed payment method (bank debits, vouchers) is `unpaid`: the money
//! arrives with `checkout.session.async_payment_succeeded`, or never
//! (`checkout.session.async_payment_failed`). So a session is fulfilled only when its
//! `payment_status` is `paid` or `no_payment_required`, by whichever of `completed` and
//! `async_payment_succeeded` says so; the grant record makes the two idempotent together.

use super::{version, Audience, HandlerError, Notification, Plan};
use crate::{
    billing::{attributes, Change, Guard, Key, Op, Value, Write},
    event::StripeEvent,
    money::Money,
    objects::CheckoutSession,
};

/// Below every subscription event of the same second: the session completes as the subscription is
/// created, and the subscription's own events carry the details.
const RANK_ACTIVATE: u8 = 0;

/// Metadata key holding the number of credits a payment-mode session sold.
pub(super) const CREDITS_METADATA: &str = "credits";

/// `payment_status` values that mean the session's money is in (or none was due).
const FULFILLABLE: &[&str] = &["paid", "no_payment_required"];

/// `checkout.session.completed`: fulfils the session if it is paid; an unpaid one waits for its
/// delayed payment (nothing is written but the feed record).
pub(super) fn completed(
    event: &StripeEvent,
    session: CheckoutSession,
) -> Result<Plan, HandlerError> {
    if is_paid(&session) {
        fulfil(event, &session)
    } else {
        Ok(Plan::default())
    }
}

/// `checkout.session.async_payment_succeeded`: the delayed payment arrived; fulfil the session.
pub(super) fn async_payment_succeeded(
    event: &StripeEvent,
    session: CheckoutSession,
) -> Result<Plan, HandlerError> {
    if is_paid(&session) {
        fulfil(event, &session)
    } else {
        // Stripe sends this event for a paid session only; anything else is not money.
        Err(HandlerError::Unfulfillable(format!(
            "{} reported async_payment_succeeded with payment_status {:?}",
            session.id, session.payment_status
        )))
    }
}

/// `checkout.session.async_payment_failed`: the delayed payment never came. Nothing was granted, so
/// nothing is taken back; the failures channel hears about it.
pub(super) fn async_payment_failed(session: CheckoutSession) -> Plan {
    let who = super::who(customer_of(&session), None);
    let amount = match (session.amount_total, session.currency.as_deref()) {
        (Some(amount), Some(currency)) => format!(" of {}", Money::new(amount, currency)),
        _ => String::new(),
    };
    Plan {
        changes: vec![],
        notifications: vec![Notification {
            audience: Audience::Failures,
            text: format!(
                "Delayed payment failed: checkout {}{amount} from {who}; nothing was granted",
                session.id
            ),
        }],
    }
}

fn is_paid(session: &CheckoutSession) -> bool {
    session
        .payment_status
        .as_deref()
        .is_some_and(|s| FULFILLABLE.contains(&s))
}

/// Who the session is for: the Stripe customer, else your own `client_reference_id`.
fn customer_of(session: &CheckoutSession) -> Option<&str> {
    session
        .customer
        .as_deref()
        .or(session.client_reference_id.as_deref())
}

/// The credits a session sold: `None` when it sold none (no `metadata.credits`); an error when the
/// metadata is there but is not a positive whole number, which is money taken for credits we cannot
/// count.
fn credits_sold(session: &CheckoutSession) -> Result<Option<i64>, HandlerError> {
    let Some(raw) = session.metadata.get(CREDITS_METADATA) else {
        return Ok(None);
    };
    match raw.trim().parse::<i64>() {
        Ok(credits) if credits > 0 => Ok(Some(credits)),
        _ => Err(HandlerError::Unfulfillable(format!(
            "{}: metadata.credits {raw:?} is not a positive whole number",
            session.id
        ))),
    }
}

/// Activates the subscription and grants the credits of a paid session.
fn fulfil(event: &StripeEvent, session: &CheckoutSession) -> Result<Plan, HandlerError> {
    let customer = customer_of(session);
    let credits = credits_sold(session)?;
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
    if let Some(credits) = credits {
        let Some(customer) = customer else {
            // Paid for credits, but no one to credit: fail the message (it ends in the DLQ, where an
            // operator sees it) rather than mark it applied with nothing granted.
            return Err(HandlerError::Unfulfillable(format!(
                "{} sold {credits} credits but has no customer and no client_reference_id",
                session.id
            )));
        };
        changes.push(grant(session, customer, credits));
    }
    Ok(Plan {
        changes,
        notifications: vec![],
    })
}

/// One grant per payment: the grant record is created only if absent, so a redelivery (or the other of
/// `completed` / `async_payment_succeeded`) cannot add the credits again. A refund that arrived first
/// left a reversed record with no credits: then the grant only fills in what it would have granted
/// (adding nothing), so the state is the same as grant-then-refund in order.
fn grant(session: &CheckoutSession, customer: &str, credits: i64) -> Change {
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
    grant_now.or_else(after_refund)
}
