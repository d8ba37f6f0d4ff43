//! Disputes: `charge.dispute.created` writes the dispute record and sends an urgent message with the
//! evidence deadline; `charge.dispute.updated` (evidence submitted, under review…) only updates the
//! record; `charge.dispute.closed` updates it and says how it ended (won, lost, inquiry closed).
//! Each event carries the whole dispute, so the record is that snapshot, ordered by the event's
//! version (created < updated < closed within one second: a closed dispute does not reopen).

use super::{version, Audience, HandlerError, Notification, Plan};
use crate::{
    billing::{attr, attributes, AttributesExt, BillingStore, Change, Guard, Key, Op, Write},
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

pub(super) async fn created<S: BillingStore>(
    event: &StripeEvent,
    dispute: Dispute,
    store: &S,
    now: i64,
) -> Result<Plan, HandlerError> {
    let changes = vec![record(event, &dispute, 0)];
    // Stripe does not order deliveries: if the closing news came first, an URGENT deadline message
    // now would send someone after evidence for a dispute that is over. They heard how it ended.
    let stored = store.get(&Key::object("DISPUTE", &dispute.id)).await?;
    if stored.is_some_and(|r| r.s("status").is_some_and(Dispute::is_closed_status)) {
        return Ok(Plan {
            changes,
            notifications: vec![],
        });
    }
    let due_by = dispute.evidence_details.as_ref().and_then(|e| e.due_by);
    let deadline = match due_by {
        Some(due) => format!(
            "evidence due {} ({})",
            super::date(due),
            days_left(due, now)
        ),
        None => "no evidence deadline given".to_owned(),
    };
    Ok(Plan {
        changes,
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
    })
}

/// Evidence submitted, under review, funds withdrawn: the record follows, nobody is told (the
/// deadline message went out with `created`, the outcome comes with `closed`).
pub(super) fn updated(event: &StripeEvent, dispute: Dispute) -> Plan {
    Plan {
        changes: vec![record(event, &dispute, 1)],
        notifications: vec![],
    }
}

/// How it ended, to the people who heard of it opening.
pub(super) fn closed(event: &StripeEvent, dispute: Dispute) -> Plan {
    let money = Money::new(dispute.amount, &dispute.currency);
    let ending = match dispute.status.as_deref() {
        Some("won") => format!("won: {money} stays with you"),
        Some("lost") => format!("lost: {money} is returned to the cardholder"),
        Some("warning_closed") => format!("inquiry closed without a chargeback ({money})"),
        other => format!("closed ({}): {money}", other.unwrap_or("no status")),
    };
    Plan {
        changes: vec![record(event, &dispute, 2)],
        notifications: vec![Notification {
            audience: Audience::Disputes,
            text: format!(
                "Dispute {} {ending}; reason {}, charge {}",
                dispute.id,
                dispute.reason.as_deref().unwrap_or("unknown"),
                dispute.charge.as_deref().unwrap_or("unknown"),
            ),
        }],
    }
}

/// The dispute record as this event saw it, if it is newer than what is stored.
fn record(event: &StripeEvent, dispute: &Dispute, rank: u8) -> Change {
    let v = version(event, rank);
    let due_by = dispute.evidence_details.as_ref().and_then(|e| e.due_by);
    Change::skippable(
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
    )
}
