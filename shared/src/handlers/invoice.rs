//! `invoice.*`: the invoice record, access extended by paid invoices, past_due on a failed renewal.

use super::{version, Audience, Notification, Plan};
use crate::{
    billing::{attr, attributes, Change, Guard, Key, Op, Write},
    event::StripeEvent,
    money::Money,
    objects::Invoice,
};

/// An invoice's lifecycle within one second: finalized, then failed, then paid.
const RANK_FINALIZED: u8 = 0;
const RANK_FAILED: u8 = 1;
const RANK_PAID: u8 = 2;
/// A failed payment marks the subscription past_due at the rank of a subscription update.
const RANK_PAST_DUE: u8 = 1;

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

/// Records the invoice and extends access to the end of the period it paid for. Access only ever grows
/// (the latest paid period wins), so paid invoices commute.
pub(super) fn paid(event: &StripeEvent, invoice: Invoice) -> Plan {
    let Some(customer) = invoice.customer.as_deref() else {
        return Plan::default();
    };
    let mut changes = vec![record(event, &invoice, customer, RANK_PAID)];
    if let Some(until) = invoice.access_until() {
        changes.push(Change::skippable(
            "access",
            vec![Write {
                key: Key::customer(customer, "ACCESS"),
                op: Op::Set(attributes([
                    ("access_until", Some(until.into())),
                    ("invoice", Some(invoice.id.as_str().into())),
                ])),
                guards: vec![Guard::Below("access_until", until)],
            }],
        ));
    }
    Plan {
        changes,
        notifications: vec![],
    }
}

/// Records the invoice, marks its subscription past_due, and tells the failures channel.
pub(super) fn payment_failed(event: &StripeEvent, invoice: Invoice) -> Plan {
    let Some(customer) = invoice.customer.as_deref() else {
        return Plan::default();
    };
    let mut changes = vec![record(event, &invoice, customer, RANK_FAILED)];
    if let Some(subscription) = invoice.subscription_id() {
        let v = version(event, RANK_PAST_DUE);
        changes.push(super::subscription::status_change(
            customer,
            subscription,
            "past_due",
            v,
        ));
    }
    let who = super::who(Some(customer), invoice.customer_email.as_deref());
    let link = invoice
        .hosted_invoice_url
        .as_deref()
        .map(|u| format!(" — {u}"))
        .unwrap_or_default();
    Plan {
        changes,
        notifications: vec![Notification {
            audience: Audience::Failures,
            text: format!(
                "Renewal failed: invoice {} for {} from {who}{link}",
                invoice.id,
                Money::new(invoice.amount_due, &invoice.currency)
            ),
        }],
    }
}
