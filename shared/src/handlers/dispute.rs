//! `charge.dispute.created`: the dispute record and an urgent message with the evidence deadline.

use super::{version, Audience, Notification, Plan};
use crate::{
    billing::{attr, attributes, Change, Guard, Key, Op, Write},
    event::StripeEvent,
    money::Money,
    objects::Dispute,
};

/// `3 days left`, `1 day left`, `0 days left` (due within the day), `overdue`.
pub fn days_left(due: i64, now: i64) -> String {
    match (due - now).div_euclid(86_400) {
        d if d < 0 => "overdue".to_owned(),
        1 => "1 day left".to_owned(),
        d => format!("{d} days left"),
    }
}

pub(super) fn created(event: &StripeEvent, dispute: Dispute, now: i64) -> Plan {
    let v = version(event, 0);
    let due_by = dispute.evidence_details.as_ref().and_then(|e| e.due_by);
    let deadline = match due_by {
        Some(due) => format!(
            "evidence due {} ({})",
            super::date(due),
            days_left(due, now)
        ),
        None => "no evidence deadline given".to_owned(),
    };
    Plan {
        changes: vec![Change::skippable(
            "dispute",
            vec![Write {
                key: Key::object("DISPUTE", &dispute.id),
                op: Op::Put(attributes([
                    ("amount", Some(dispute.amount.into())),
                    ("currency", Some(dispute.currency.as_str().into())),
                    ("reason", dispute.reason.as_deref().map(Into::into)),
                    ("charge", dispute.charge.as_deref().map(Into::into)),
                    ("status", dispute.status.as_deref().map(Into::into)),
                    ("evidence_due_by", due_by.map(Into::into)),
                    (attr::VERSION, Some(v.as_str().into())),
                ])),
                guards: vec![Guard::Newer(v)],
            }],
        )],
        notifications: vec![Notification {
            audience: Audience::Disputes,
            // The deadline right after the amount: it is what the reader acts on, and it survives an
            // email subject's truncation.
            text: format!(
                "URGENT dispute {}: {}, {deadline}; reason {}, charge {}",
                dispute.id,
                Money::new(dispute.amount, &dispute.currency),
                dispute.reason.as_deref().unwrap_or("unknown"),
                dispute.charge.as_deref().unwrap_or("unknown"),
            ),
        }],
    }
}
