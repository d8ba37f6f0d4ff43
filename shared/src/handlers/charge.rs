//! `charge.failed` / `charge.refunded`: the charge record; a full refund takes back the credits its
//! payment granted and un-pays the order it paid.

use super::{version, HandlerError, Plan};
use crate::{
    billing::{
        attr, attributes, AttributesExt, BillingStore, Change, Guard, Key, Op, Value, Write,
    },
    event::StripeEvent,
    objects::Charge,
};

const RANK_FAILED: u8 = 0;
const RANK_REFUNDED: u8 = 2;

fn record(event: &StripeEvent, charge: &Charge, status: &str, rank: u8) -> Change {
    let v = version(event, rank);
    Change::skippable(
        "charge",
        vec![Write {
            key: Key::object("CHARGE", &charge.id),
            op: Op::Put(attributes([
                ("status", Some(status.into())),
                ("amount", Some(charge.amount.into())),
                ("amount_refunded", Some(charge.amount_refunded.into())),
                ("currency", Some(charge.currency.as_str().into())),
                ("customer", charge.customer.as_deref().map(Into::into)),
                (
                    "payment_intent",
                    charge.payment_intent.as_deref().map(Into::into),
                ),
                (
                    "failure_code",
                    charge.failure_code.as_deref().map(Into::into),
                ),
                (attr::VERSION, Some(v.as_str().into())),
            ])),
            guards: vec![Guard::Newer(v)],
        }],
    )
}

/// Records the failed charge.
pub(super) fn failed(event: &StripeEvent, charge: Charge) -> Plan {
    Plan {
        changes: vec![record(event, &charge, "failed", RANK_FAILED)],
        notifications: vec![],
    }
}

/// Records the refund; when the charge is fully refunded, reverses the credits its payment granted.
///
/// Reversal reads the grant first, then writes guarded by what it read (`OnConflict::Retry`: if the grant
/// changed in between, the message is retried and re-planned). A refund that arrives before its grant
/// leaves a reversed grant record, so the late grant is never applied. Partial refunds are recorded but
/// take nothing back: how many credits a partial refund is worth is a business decision.
pub(super) async fn refunded<S: BillingStore>(
    event: &StripeEvent,
    charge: Charge,
    store: &S,
) -> Result<Plan, HandlerError> {
    let mut changes = vec![record(event, &charge, "refunded", RANK_REFUNDED)];
    if let (true, Some(payment)) = (charge.refunded, charge.payment_intent.as_deref()) {
        // The payment's refund is its own item beside the payment record (which payment events replace
        // whole): an order paid by a fully refunded payment is not paid, whichever event came first.
        changes.push(Change::skippable(
            "payment.refunded",
            vec![Write {
                key: Key::payment_refund(payment),
                op: Op::Set(attributes([
                    ("refunded", Some(true.into())),
                    ("charge", Some(charge.id.as_str().into())),
                    ("amount_refunded", Some(charge.amount_refunded.into())),
                ])),
                guards: vec![],
            }],
        ));
        let key = Key::object("GRANT", payment);
        match store.get(&key).await? {
            None => changes.push(Change::retryable(
                "credits.reverse",
                vec![Write {
                    key,
                    op: Op::Put(attributes([("reversed", Some(true.into()))])),
                    guards: vec![Guard::Absent],
                }],
            )),
            Some(grant) if grant.flag("reversed") => {}
            Some(grant) => {
                let credits = grant.n("credits").unwrap_or(0);
                let mut writes = vec![Write {
                    key,
                    op: Op::Set(attributes([("reversed", Some(true.into()))])),
                    guards: vec![
                        Guard::Unset("reversed"),
                        Guard::Equals("credits", Value::N(credits)),
                    ],
                }];
                if let Some(customer) = grant.s("customer") {
                    writes.push(Write {
                        key: Key::customer(customer, "CREDITS"),
                        op: Op::Add(vec![("balance", -credits)]),
                        guards: vec![],
                    });
                }
                changes.push(Change::retryable("credits.reverse", writes));
            }
        }
    }
    Ok(Plan {
        changes,
        notifications: vec![],
    })
}
