//! `invoice.*`: the invoice record, and the paid period of the subscription a paid invoice belongs to.
//!
//! Invoices never set a subscription's status: Stripe moves the subscription itself (to `past_due`,
//! `unpaid`, `canceled`...) and says so with `customer.subscription.updated`. A failed invoice writing
//! `past_due` would give access back to a canceled subscription (its final invoice failing) or a free
//! period to an incomplete one (its first payment declined).

use super::{version, Audience, HandlerError, Notification, Plan};
use crate::{
    billing::{attr, attributes, AttributesExt, BillingStore, Change, Guard, Key, Op, Write},
    event::StripeEvent,
    money::Money,
    objects::Invoice,
};

/// An invoice's lifecycle within one second: finalized, then failed, then paid.
const RANK_FINALIZED: u8 = 0;
const RANK_FAILED: u8 = 1;
const RANK_PAID: u8 = 2;

fn record(event: &StripeEvent, invoice: &Invoice, customer: &str, rank: u8) -> Change {
    let v = version(event, rank);
    Change::skippable(
        "invoice",
        vec![Write {
            key: Key::customer(customer, format!("INVOICE#{}", invoice.id)),
            op: Op::Put(attributes([
                ("status", invoice.status.as_deref().map(Into::into)),
                ("amount_due", Some(invoice.amount_due.into())),
                ("amount_paid", Some(invoice.amount_paid.into())),
                ("currency", Some(invoice.currency.as_str().into())),
                ("due_date", invoice.due_date.map(Into::into)),
                (
                    "hosted_invoice_url",
                    invoice.hosted_invoice_url.as_deref().map(Into::into),
                ),
                ("subscription", invoice.subscription_id().map(Into::into)),
                (attr::VERSION, Some(v.as_str().into())),
            ])),
            guards: vec![Guard::Newer(v)],
        }],
    )
}

/// Records the invoice (amount due, due date, hosted URL).
pub(super) fn finalized(event: &StripeEvent, invoice: Invoice) -> Plan {
    let changes = invoice
        .customer
        .as_deref()
        .map(|c| vec![record(event, &invoice, c, RANK_FINALIZED)])
        .unwrap_or_default();
    Plan {
        changes,
        notifications: vec![],
    }
}

/// Records the invoice and extends its subscription's paid period to the end of the period it paid
/// for. The paid period is the subscription's own (`SUB#<sub>#PAID`): one subscription's invoice never
/// extends another. It only ever grows (the latest paid period wins), so paid invoices commute. An
/// invoice of no subscription (a one-off) pays for no period.
pub(super) fn paid(event: &StripeEvent, invoice: Invoice) -> Plan {
    let Some(customer) = invoice.customer.as_deref() else {
        return Plan::default();
    };
    let mut changes = vec![record(event, &invoice, customer, RANK_PAID)];
    if let (Some(subscription), Some(until)) = (invoice.subscription_id(), invoice.access_until()) {
        changes.push(Change::skippable(
            "subscription.paid",
            vec![Write {
                key: Key::customer(customer, format!("SUB#{subscription}#PAID")),
                op: Op::Set(attributes([
                    (crate::billing::PAID_UNTIL, Some(until.into())),
                    ("invoice", Some(invoice.id.as_str().into())),
                ])),
                guards: vec![Guard::Below(crate::billing::PAID_UNTIL, until)],
            }],
        ));
    }
    Plan {
        changes,
        notifications: vec![],
    }
}

/// Records the invoice and tells the failures channel, unless the invoice is paid by now: a failure
/// delivered after (or re-planned after) the payment that fixed it is history, not news. Paid is final
/// for an invoice, so one read decides; with a Stripe API key the object itself is current too.
pub(super) async fn payment_failed<S: BillingStore>(
    event: &StripeEvent,
    invoice: Invoice,
    store: &S,
) -> Result<Plan, HandlerError> {
    let Some(customer) = invoice.customer.as_deref() else {
        return Ok(Plan::default());
    };
    let changes = vec![record(event, &invoice, customer, RANK_FAILED)];
    let paid_now = invoice.status.as_deref() == Some("paid")
        || crate::billing::invoice(store, customer, &invoice.id)
            .await?
            .is_some_and(|recorded| recorded.s("status") == Some("paid"));
    if paid_now {
        return Ok(Plan {
            changes,
            notifications: vec![],
        });
    }
    let who = super::who(Some(customer), invoice.customer_email.as_deref());
    let link = invoice
        .hosted_invoice_url
        .as_deref()
        .map(|u| format!(" — {u}"))
        .unwrap_or_default();
    Ok(Plan {
        changes,
        notifications: vec![Notification {
            audience: Audience::Failures,
            text: format!(
                "Renewal failed: invoice {} for {} from {who}{link}",
                invoice.id,
                Money::new(invoice.amount_due, &invoice.currency)
            ),
        }],
    })
}
