//! One handler per Stripe object family. A handler reads the event (and, where it must, the current
//! state) and *plans* [`Change`]s and [`Notification`]s; it never writes. The processor then applies the
//! plan in one transaction with the event's exactly-once marker and sends the notifications, each at
//! most once per channel. Dispatch is a `match` on [`EventType`]: that is the registry.
//!
//! To add a handler: add the type to `event_types!` in `event.rs`, a function here (or a new module)
//! that returns a [`Plan`], and an arm in [`plan`]. Guard each object write with
//! [`Guard::Newer`](crate::billing::Guard::Newer) and a [`Version`] so out-of-order deliveries cannot roll
//! state back.

mod charge;
mod checkout;
mod dispute;
mod invoice;
mod payment_intent;
mod subscription;

pub use dispute::days_left;

use crate::{
    billing::{BillingError, BillingStore, Change, Version},
    event::{EventError, EventType, StripeEvent},
};

/// What an event should do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// State changes, applied atomically with the event's marker.
    pub changes: Vec<Change>,
    /// Messages for people, sent after the changes commit.
    pub notifications: Vec<Notification>,
}

/// Who a notification is for. Routing channels to destinations is configuration; the handler only says
/// what kind of news it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Money came in.
    Payments,
    /// A payment or renewal failed: someone may need to reach out.
    Failures,
    /// A dispute: evidence is due within days.
    Disputes,
    /// Lifecycle news about a customer (trial ending).
    Customers,
}

impl Audience {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payments => "payments",
            Self::Failures => "failures",
            Self::Disputes => "disputes",
            Self::Customers => "customers",
        }
    }
}

/// A message for people about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What kind of news.
    pub audience: Audience,
    /// The text, with amounts formatted for their currency.
    pub text: String,
}

/// A handler could not plan.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// `data.object` is not the object the event type promises.
    #[error("event object does not parse")]
    Object(#[from] EventError),
    /// A read of the current state failed.
    #[error("billing state unavailable")]
    Billing(#[from] BillingError),
    /// The event is money we cannot account for (credits sold to no one, or a credit count that is not
    /// a number). Marking it applied would drop the money silently; failing it sends it to the DLQ.
    #[error("cannot fulfil: {0}")]
    Unfulfillable(String),
}

/// Plans `event`, or `None` for a type no handler acts on (acknowledged and counted by the processor).
/// `now` is only used in messages (days left until a deadline).
pub async fn plan<S: BillingStore>(
    event: &StripeEvent,
    store: &S,
    now: i64,
) -> Result<Option<Plan>, HandlerError> {
    use EventType::*;
    let plan = match &event.event_type {
        PaymentIntentSucceeded => payment_intent::succeeded(event, event.object()?),
        PaymentIntentPaymentFailed => payment_intent::failed(event, event.object()?),
        CheckoutSessionCompleted => checkout::completed(event, event.object()?)?,
        CheckoutSessionAsyncPaymentSucceeded => {
            checkout::async_payment_succeeded(event, event.object()?)?
        }
        CheckoutSessionAsyncPaymentFailed => checkout::async_payment_failed(event.object()?),
        InvoicePaid | InvoicePaymentSucceeded => invoice::paid(event, event.object()?),
        InvoicePaymentFailed => invoice::payment_failed(event, event.object()?, store).await?,
        InvoiceFinalized => invoice::finalized(event, event.object()?),
        CustomerSubscriptionCreated | CustomerSubscriptionUpdated | CustomerSubscriptionDeleted => {
            subscription::changed(event, event.object()?)
        }
        CustomerSubscriptionTrialWillEnd => subscription::trial_will_end(event.object()?),
        ChargeFailed => charge::failed(event, event.object()?),
        ChargeRefunded => charge::refunded(event, event.object()?, store).await?,
        ChargeDisputeCreated => dispute::created(event, event.object()?, store, now).await?,
        ChargeDisputeUpdated => dispute::updated(event, event.object()?),
        ChargeDisputeClosed => dispute::closed(event, event.object()?),
        Other(_) => return Ok(None),
    };
    Ok(Some(plan))
}

/// An event's version for ordering writes to one object. `rank` orders an object's lifecycle within the
/// same second (e.g. subscription created 0 < updated 1 < deleted 3).
fn version(event: &StripeEvent, rank: u8) -> Version {
    Version::new(event.created, rank, &event.id)
}

/// `2026-11-24` for a unix time (UTC).
pub(crate) fn date(unix: i64) -> String {
    crate::delivery::format_rfc3339(unix)[..10].to_owned()
}

/// `cus_123` or `cus_123 (ana@example.com)`.
pub(crate) fn who(customer: Option<&str>, email: Option<&str>) -> String {
    match (customer, email) {
        (Some(c), Some(e)) => format!("{c} ({e})"),
        (Some(c), None) => c.to_owned(),
        (None, Some(e)) => e.to_owned(),
        (None, None) => "a guest".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{
        self, Applied, AttributesExt, BillingStore, EventMarker, Key, MemoryBillingStore,
    };

    fn fixture_bytes(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../tests/fixtures/stripe/events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).unwrap()
    }

    fn fixture(name: &str) -> StripeEvent {
        StripeEvent::parse(&fixture_bytes(name)).unwrap()
    }

    async fn apply(store: &MemoryBillingStore, event: &StripeEvent) -> Option<Plan> {
        let plan = plan(event, store, 1_723_000_000).await.unwrap()?;
        store
            .apply(
                &EventMarker::new(&event.id, event.event_type.as_str()),
                plan.changes.clone(),
            )
            .await
            .unwrap();
        Some(plan)
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_723_679_999), "2024-08-14");
        assert_eq!(date(951_782_400), "2000-02-29");
    }

    #[tokio::test]
    async fn every_fixture_has_a_documented_effect() {
        let store = MemoryBillingStore::new();
        let customer = "cus_QXg1o8vcGmoR32";
        let handled = [
            "payment_intent.succeeded",
            "payment_intent.payment_failed",
            "checkout.session.completed",
            "invoice.finalized",
            "invoice.paid",
            "invoice.payment_succeeded",
            "invoice.payment_failed",
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.trial_will_end",
            "customer.subscription.deleted",
            "charge.failed",
            "charge.refunded",
            "charge.dispute.created",
        ];
        for name in handled {
            assert!(apply(&store, &fixture(name)).await.is_some(), "{name}");
        }
        for name in ["customer.created", "charge.succeeded", "refund.created"] {
            assert!(
                apply(&store, &fixture(name)).await.is_none(),
                "{name} is not handled"
            );
        }
        // The payment: the later event (succeeded, created 1234568090) wins over the failure (…7990).
        let payment = billing::payment(&store, "pi_1PgafyB7WZ01zgkWSjxsAJo3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payment.status, "succeeded");
        assert_eq!(payment.amount.to_string(), "10.99 USD");
        // The subscription: deleted last, so access is revoked whatever was paid.
        let sub = billing::subscription(&store, customer, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sub.status, "canceled");
        // The invoice fixtures bill a placeholder subscription id ("subscription") of which no
        // subscription event says anything: its paid invoice records the period paid for, but only a
        // subscription event can say the subscription is active, and its failed invoice says nothing
        // about its status. So no access comes from it.
        let placeholder = billing::subscription(&store, customer, "subscription")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(placeholder.status, "unknown");
        assert_eq!(placeholder.paid_until, Some(1_721_954_054));
        let entitlement = billing::entitlement(&store, customer, 1_721_954_000)
            .await
            .unwrap();
        assert!(!entitlement.active, "{entitlement:?}");
        // The invoice: paid (its latest event), with its amount.
        let invoice = billing::invoice(&store, customer, "in_1Pgc6tB7WZ01zgkWu9fdqL6I")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(invoice.s("status"), Some("paid"));
        assert_eq!(invoice.n("amount_due"), Some(1000));
        let dispute = store
            .get(&Key::object("DISPUTE", "dp_1Pgc71B7WZ01zgkWMevJiAUx"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dispute.n("evidence_due_by"), Some(1_723_679_999));
        let charge = store
            .get(&Key::object("CHARGE", "ch_1PgafuB7WZ01zgkWXYmPNZs8"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(charge.s("status"), Some("refunded"));
    }

    #[tokio::test]
    async fn notifications_carry_what_a_person_needs() {
        let store = MemoryBillingStore::new();
        let dispute = apply(&store, &fixture("charge.dispute.created"))
            .await
            .unwrap();
        let text = &dispute.notifications[0].text;
        assert_eq!(dispute.notifications[0].audience, Audience::Disputes);
        assert!(text.contains("10.00 USD"), "{text}");
        assert!(text.contains("general"), "{text}");
        assert!(text.contains("2024-08-14"), "{text}");
        assert!(text.contains("7 days left"), "{text}");
        let failed = apply(&store, &fixture("payment_intent.payment_failed"))
            .await
            .unwrap();
        assert!(failed.notifications[0].text.contains("generic_decline"));
        let trial = apply(&store, &fixture("customer.subscription.trial_will_end"))
            .await
            .unwrap();
        assert_eq!(trial.notifications[0].audience, Audience::Customers);
    }

    /// The dispute fixture as a later event of its lifecycle: same dispute, another type and status.
    fn dispute_news(event_type: &str, status: &str, id: &str) -> StripeEvent {
        let mut event: serde_json::Value =
            serde_json::from_slice(&fixture_bytes("charge.dispute.created")).unwrap();
        event["id"] = id.into();
        event["type"] = event_type.into();
        event["data"]["object"]["status"] = status.into();
        StripeEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_closed_dispute_says_how_it_ended_and_stays_closed_whatever_the_order() {
        let created = fixture("charge.dispute.created");
        let dispute_id = "dp_1Pgc71B7WZ01zgkWMevJiAUx";
        for (status, words) in [
            ("won", "won: 10.00 USD stays with you"),
            ("lost", "lost: 10.00 USD is returned"),
            ("warning_closed", "inquiry closed without a chargeback"),
        ] {
            let updated = dispute_news("charge.dispute.updated", "under_review", "evt_upd");
            let closed = dispute_news("charge.dispute.closed", status, "evt_closed");
            // In Stripe's order and in reverse (all three were created in the same second).
            for (first_is_created, order) in [
                (true, [&created, &updated, &closed]),
                (false, [&closed, &updated, &created]),
            ] {
                let store = MemoryBillingStore::new();
                let mut notified = Vec::new();
                for event in order {
                    let plan = apply(&store, event).await.unwrap();
                    notified.extend(plan.notifications);
                }
                let record = store
                    .get(&Key::object("DISPUTE", dispute_id))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(record.s("status"), Some(status));
                let texts: Vec<&str> = notified.iter().map(|n| n.text.as_str()).collect();
                // Opened and closed, never updated; the URGENT deadline message only while open.
                let urgent = texts.iter().filter(|t| t.starts_with("URGENT")).count();
                assert_eq!(urgent, usize::from(first_is_created), "{texts:?}");
                assert_eq!(texts.len(), 1 + urgent, "{texts:?}");
                assert!(notified.iter().all(|n| n.audience == Audience::Disputes));
                assert!(
                    texts
                        .iter()
                        .any(|t| t.contains(words) && t.contains(dispute_id)),
                    "{texts:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_types_that_notify_are_exactly_those_whose_plans_notify() {
        let store = MemoryBillingStore::new();
        for name in EventType::HANDLED {
            let event = match *name {
                "charge.dispute.updated" => dispute_news(name, "under_review", "evt_u"),
                "charge.dispute.closed" => dispute_news(name, "won", "evt_c"),
                // No fixture of their own: the completed session's, as Stripe sends it for a paid one.
                "checkout.session.async_payment_succeeded"
                | "checkout.session.async_payment_failed" => {
                    edited("checkout.session.completed", "evt_a", 1, |e| {
                        e["type"] = (*name).into()
                    })
                }
                _ => fixture(name),
            };
            let plan = plan(&event, &store, 1_723_000_000).await.unwrap().unwrap();
            assert_eq!(
                !plan.notifications.is_empty(),
                EventType::from(*name).notifies(),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_redelivered_event_changes_nothing_the_second_time() {
        let store = MemoryBillingStore::new();
        let event = fixture("invoice.paid");
        let plan = plan(&event, &store, 0).await.unwrap().unwrap();
        assert!(matches!(
            store
                .apply(
                    &EventMarker::new(&event.id, "invoice.paid"),
                    plan.changes.clone()
                )
                .await
                .unwrap(),
            Applied::Now { .. }
        ));
        let before = store.state();
        assert_eq!(
            store
                .apply(&EventMarker::new(&event.id, "invoice.paid"), plan.changes)
                .await
                .unwrap(),
            Applied::Before
        );
        assert_eq!(store.state(), before);
    }

    /// A fixture as another event: `edit` gets the whole event (id and created already set).
    fn edited(
        name: &str,
        id: &str,
        created: i64,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> StripeEvent {
        let mut event: serde_json::Value = serde_json::from_slice(&fixture_bytes(name)).unwrap();
        event["id"] = id.into();
        event["created"] = created.into();
        edit(&mut event);
        StripeEvent::parse(&serde_json::to_vec(&event).unwrap()).unwrap()
    }

    /// A checkout session of `customer` selling `credits`, as event `event_type`.
    fn credits_checkout(
        event_type: &str,
        id: &str,
        created: i64,
        payment_status: &str,
        customer: Option<&str>,
        credits: &str,
    ) -> StripeEvent {
        edited("checkout.session.completed", id, created, |e| {
            e["type"] = event_type.into();
            let o = &mut e["data"]["object"];
            o["id"] = "cs_credits".into();
            o["payment_intent"] = "pi_credits".into();
            o["customer"] = customer.into();
            o["payment_status"] = payment_status.into();
            o["metadata"] = serde_json::json!({ CREDITS_KEY: credits });
        })
    }

    const CREDITS_KEY: &str = "credits";

    /// A subscription event of customer `cus_money` for `sub`.
    fn sub_event(
        event_type: &str,
        id: &str,
        created: i64,
        sub: &str,
        status: &str,
        period_end: i64,
    ) -> StripeEvent {
        edited("customer.subscription.updated", id, created, |e| {
            e["type"] = event_type.into();
            let o = &mut e["data"]["object"];
            o["id"] = sub.into();
            o["customer"] = "cus_money".into();
            o["status"] = status.into();
            o["items"]["data"][0]["current_period_end"] = period_end.into();
        })
    }

    /// An invoice event of customer `cus_money` for `sub`, paying the period ending `period_end`.
    fn invoice_event(
        name: &str,
        id: &str,
        created: i64,
        invoice: &str,
        sub: &str,
        period_end: i64,
    ) -> StripeEvent {
        edited(name, id, created, |e| {
            let o = &mut e["data"]["object"];
            o["id"] = invoice.into();
            o["customer"] = "cus_money".into();
            o["parent"]["subscription_details"]["subscription"] = sub.into();
            o["lines"]["data"][0]["period"]["end"] = period_end.into();
        })
    }

    async fn status_of(store: &MemoryBillingStore, sub: &str) -> Option<String> {
        billing::subscription(store, "cus_money", sub)
            .await
            .unwrap()
            .map(|s| s.status)
    }

    #[tokio::test]
    async fn a_checkout_awaiting_a_delayed_payment_grants_nothing_until_the_money_arrives() {
        let store = MemoryBillingStore::new();
        let customer = Some("cus_money");
        let completed = credits_checkout(
            "checkout.session.completed",
            "evt_c1",
            100,
            "unpaid",
            customer,
            "50",
        );
        apply(&store, &completed).await.unwrap();
        assert_eq!(
            billing::credit_balance(&store, "cus_money").await.unwrap(),
            0
        );
        // The bank debit clears: the credits arrive, once, whatever else is delivered again.
        let succeeded = credits_checkout(
            "checkout.session.async_payment_succeeded",
            "evt_c2",
            200,
            "paid",
            customer,
            "50",
        );
        assert!(apply(&store, &succeeded).await.is_some(), "handled");
        assert_eq!(
            billing::credit_balance(&store, "cus_money").await.unwrap(),
            50
        );
        let resent = credits_checkout(
            "checkout.session.async_payment_succeeded",
            "evt_c3",
            200,
            "paid",
            customer,
            "50",
        );
        apply(&store, &resent).await.unwrap();
        apply(&store, &completed).await.unwrap();
        assert_eq!(
            billing::credit_balance(&store, "cus_money").await.unwrap(),
            50
        );
    }

    #[tokio::test]
    async fn a_failed_delayed_payment_grants_nothing_and_tells_failures() {
        let store = MemoryBillingStore::new();
        let customer = Some("cus_money");
        for event in [
            credits_checkout(
                "checkout.session.completed",
                "evt_f1",
                100,
                "unpaid",
                customer,
                "50",
            ),
            credits_checkout(
                "checkout.session.async_payment_failed",
                "evt_f2",
                200,
                "unpaid",
                customer,
                "50",
            ),
        ] {
            let plan = apply(&store, &event).await.expect("handled");
            if event.event_type.as_str().ends_with("failed") {
                assert_eq!(plan.notifications.len(), 1);
                assert_eq!(plan.notifications[0].audience, Audience::Failures);
                assert!(plan.notifications[0].text.contains("cs_credits"));
            }
        }
        assert_eq!(
            billing::credit_balance(&store, "cus_money").await.unwrap(),
            0
        );
    }

    /// Applies each event in turn (each must be handled).
    async fn apply_each(store: &MemoryBillingStore, events: &[StripeEvent]) {
        for event in events {
            assert!(apply(store, event).await.is_some(), "{}", event.id);
        }
    }

    async fn active_at(store: &MemoryBillingStore, now: i64) -> bool {
        billing::entitlement(store, "cus_money", now)
            .await
            .unwrap()
            .active
    }

    /// A subscription-mode session of `cus_money` for `sub`, as `event_type`.
    fn subscription_checkout(
        event_type: &str,
        id: &str,
        created: i64,
        sub: &str,
        paid: &str,
    ) -> StripeEvent {
        edited("checkout.session.completed", id, created, |e| {
            e["type"] = event_type.into();
            let o = &mut e["data"]["object"];
            o["mode"] = "subscription".into();
            o["customer"] = "cus_money".into();
            o["subscription"] = sub.into();
            o["payment_status"] = paid.into();
        })
    }

    #[tokio::test]
    async fn an_unpaid_subscription_checkout_does_not_activate_the_subscription() {
        let store = MemoryBillingStore::new();
        let created = "customer.subscription.created";
        apply_each(
            &store,
            &[
                sub_event(created, "evt_s0", 100, "sub_debit", "incomplete", 5_000),
                subscription_checkout(
                    "checkout.session.completed",
                    "evt_s1",
                    101,
                    "sub_debit",
                    "unpaid",
                ),
            ],
        )
        .await;
        assert_eq!(
            status_of(&store, "sub_debit").await.as_deref(),
            Some("incomplete")
        );
        assert!(!active_at(&store, 1_000).await);
        let succeeded = "checkout.session.async_payment_succeeded";
        apply_each(
            &store,
            &[subscription_checkout(
                succeeded,
                "evt_s2",
                300,
                "sub_debit",
                "paid",
            )],
        )
        .await;
        assert_eq!(
            status_of(&store, "sub_debit").await.as_deref(),
            Some("active")
        );
        assert!(active_at(&store, 1_000).await);
    }

    #[tokio::test]
    async fn a_paid_credits_checkout_that_cannot_be_credited_fails_instead_of_applying() {
        let store = MemoryBillingStore::new();
        for (customer, credits) in [
            (None, "50"),
            (Some("cus_money"), "fifty"),
            (Some("cus_money"), "-5"),
            (Some("cus_money"), "0"),
            (Some("cus_money"), ""),
        ] {
            let event = credits_checkout(
                "checkout.session.completed",
                "evt_bad",
                100,
                "paid",
                customer,
                credits,
            );
            let result = plan(&event, &store, 0).await;
            assert!(
                matches!(result, Err(HandlerError::Unfulfillable(_))),
                "{customer:?} {credits:?}: {result:?}"
            );
        }
        // The same with a client_reference_id instead of a customer is fine.
        let mut event = credits_checkout(
            "checkout.session.completed",
            "evt_ref",
            100,
            "paid",
            None,
            "7",
        );
        let mut value: serde_json::Value = serde_json::from_str(event.data.object.get()).unwrap();
        value["client_reference_id"] = "user_42".into();
        event.data.object = serde_json::value::RawValue::from_string(value.to_string()).unwrap();
        apply(&store, &event).await.unwrap();
        assert_eq!(billing::credit_balance(&store, "user_42").await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_failed_invoice_never_sets_the_subscription_status() {
        let store = MemoryBillingStore::new();
        let failed = "invoice.payment_failed";
        apply_each(
            &store,
            &[
                // A failed final invoice after the subscription was deleted does not give access back.
                sub_event(
                    "customer.subscription.deleted",
                    "evt_d",
                    100,
                    "sub_gone",
                    "canceled",
                    5_000,
                ),
                invoice_event(failed, "evt_if", 200, "in_final", "sub_gone", 5_000),
                // A declined first payment leaves the subscription incomplete: no free period.
                sub_event(
                    "customer.subscription.created",
                    "evt_c",
                    100,
                    "sub_new",
                    "incomplete",
                    5_000,
                ),
                invoice_event(failed, "evt_if2", 200, "in_first", "sub_new", 5_000),
            ],
        )
        .await;
        assert_eq!(
            status_of(&store, "sub_gone").await.as_deref(),
            Some("canceled")
        );
        assert_eq!(
            status_of(&store, "sub_new").await.as_deref(),
            Some("incomplete")
        );
        assert!(!active_at(&store, 1_000).await);
    }

    #[tokio::test]
    async fn a_terminal_subscription_status_never_moves_back() {
        let store = MemoryBillingStore::new();
        for terminal in ["canceled", "incomplete_expired"] {
            let sub = format!("sub_{terminal}");
            let id = |n: u8| format!("evt_{terminal}_{n}");
            apply_each(
                &store,
                &[
                    sub_event(
                        "customer.subscription.deleted",
                        &id(1),
                        100,
                        &sub,
                        terminal,
                        5_000,
                    ),
                    // Later events that say otherwise (a stray update, a paid checkout delivered late).
                    sub_event(
                        "customer.subscription.updated",
                        &id(2),
                        200,
                        &sub,
                        "active",
                        5_000,
                    ),
                    subscription_checkout("checkout.session.completed", &id(3), 300, &sub, "paid"),
                ],
            )
            .await;
            assert_eq!(status_of(&store, &sub).await.as_deref(), Some(terminal));
        }
        assert!(!active_at(&store, 1_000).await);
    }

    #[tokio::test]
    async fn a_paid_invoice_extends_only_its_own_subscription() {
        let store = MemoryBillingStore::new();
        let (updated, paid) = ("customer.subscription.updated", "invoice.paid");
        // A is past_due on a period that was never paid; its last paid invoice covered up to 1_000.
        apply_each(
            &store,
            &[
                sub_event(updated, "evt_a", 100, "sub_a", "past_due", 9_000),
                invoice_event(paid, "evt_ia", 50, "in_a", "sub_a", 1_000),
            ],
        )
        .await;
        // A past_due subscription has access only until the end of what was paid, not its period end.
        let e = billing::entitlement(&store, "cus_money", 500)
            .await
            .unwrap();
        assert!(e.active, "{e:?}");
        assert_eq!(e.access_until, Some(1_000));
        assert!(!active_at(&store, 2_000).await);
        // B's paid invoice is B's: it does not extend A.
        apply_each(
            &store,
            &[
                sub_event(updated, "evt_b", 100, "sub_b", "canceled", 50_000),
                invoice_event(paid, "evt_ib", 60, "in_b", "sub_b", 50_000),
            ],
        )
        .await;
        assert!(!active_at(&store, 2_000).await);
    }

    #[tokio::test]
    async fn a_stale_payment_failure_does_not_say_renewal_failed_for_a_paid_invoice() {
        let store = MemoryBillingStore::new();
        let failed = invoice_event(
            "invoice.payment_failed",
            "evt_fail",
            100,
            "in_x",
            "sub_x",
            5_000,
        );
        let paid = invoice_event("invoice.paid", "evt_paid", 200, "in_x", "sub_x", 5_000);
        // Delivered after the paid invoice: recorded, no message.
        apply(&store, &paid).await.unwrap();
        let plan = apply(&store, &failed).await.unwrap();
        assert!(plan.notifications.is_empty(), "{:?}", plan.notifications);
        // In Stripe's order the failure is news.
        let store = MemoryBillingStore::new();
        let plan = apply(&store, &failed).await.unwrap();
        assert_eq!(plan.notifications.len(), 1);
    }

    #[tokio::test]
    async fn a_fully_refunded_order_is_no_longer_paid_in_either_order() {
        let succeeded = edited("payment_intent.succeeded", "evt_pi", 100, |e| {
            let o = &mut e["data"]["object"];
            o["id"] = "pi_order".into();
            o["metadata"] = serde_json::json!({ "order_id": "order_7" });
        });
        let refund = |id: &str, full: bool| {
            edited("charge.refunded", id, 200, |e| {
                let o = &mut e["data"]["object"];
                o["payment_intent"] = "pi_order".into();
                o["refunded"] = full.into();
            })
        };
        // A partial refund leaves the order paid.
        let store = MemoryBillingStore::new();
        apply(&store, &succeeded).await.unwrap();
        apply(&store, &refund("evt_partial", false)).await.unwrap();
        assert!(billing::order_paid(&store, "order_7").await.unwrap());
        for refund_first in [false, true] {
            let store = MemoryBillingStore::new();
            let full = refund("evt_full", true);
            let order: [&StripeEvent; 2] = if refund_first {
                [&full, &succeeded]
            } else {
                [&succeeded, &full]
            };
            for event in order {
                apply(&store, event).await.unwrap();
            }
            assert!(
                !billing::order_paid(&store, "order_7").await.unwrap(),
                "refund first: {refund_first}"
            );
        }
    }

    use proptest::prelude::*;

    async fn apply_all(store: &MemoryBillingStore, bodies: &[&Vec<u8>]) {
        for body in bodies {
            let event = StripeEvent::parse(body).unwrap();
            if let Some(plan) = plan(&event, store, 0).await.unwrap() {
                store
                    .apply(
                        &EventMarker::new(&event.id, event.event_type.as_str()),
                        plan.changes,
                    )
                    .await
                    .unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_generated_history_in_order_ends_in_the_expected_state() {
        let history = crate::testing::customer_history("hist", 1_800_000_000, true);
        let store = MemoryBillingStore::new();
        apply_all(&store, &history.events.iter().collect::<Vec<_>>()).await;
        let sub = billing::subscription(&store, &history.customer, &history.subscription)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sub.status, "canceled");
        assert_eq!(sub.plan.as_deref(), Some("price_pro"));
        assert!(sub.cancel_at_period_end);
        let entitlement = billing::entitlement(&store, &history.customer, 1_800_000_100)
            .await
            .unwrap();
        assert!(!entitlement.active, "deleted revokes access");
        assert_eq!(entitlement.access_until, Some(history.paid_until));
        assert_eq!(entitlement.credits, 0, "the refund took the credits back");
        // Without the refund, the credits stay; before the deletion, access is on.
        let kept = crate::testing::customer_history("kept", 1_800_000_000, false);
        let store = MemoryBillingStore::new();
        let before_delete: Vec<_> = kept.events.iter().take(kept.events.len() - 1).collect();
        apply_all(&store, &before_delete).await;
        let entitlement = billing::entitlement(&store, &kept.customer, 1_800_000_100)
            .await
            .unwrap();
        assert!(entitlement.active);
        assert_eq!(entitlement.plan.as_deref(), Some("price_pro"));
        assert_eq!(entitlement.credits, kept.credits);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Any interleaving of a history, with any events delivered again, ends in the state of the
        /// history applied in order, exactly once.
        #[test]
        fn any_order_and_duplicates_end_in_the_in_order_state(
            refund in any::<bool>(),
            order in Just((0..10usize).collect::<Vec<_>>()).prop_shuffle(),
            duplicates in proptest::collection::vec(0..10usize, 0..6),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let history = crate::testing::customer_history("prop", 1_800_000_000, refund);
                let n = history.events.len();
                let in_order = MemoryBillingStore::new();
                apply_all(&in_order, &history.events.iter().collect::<Vec<_>>()).await;
                let shuffled = MemoryBillingStore::new();
                let mut deliveries: Vec<&Vec<u8>> = order.iter().filter(|i| **i < n).map(|i| &history.events[*i]).collect();
                for (k, d) in duplicates.iter().enumerate() {
                    let at = (k * 3) % (deliveries.len() + 1);
                    deliveries.insert(at, &history.events[d % n]);
                }
                apply_all(&shuffled, &deliveries).await;
                prop_assert_eq!(shuffled.state(), in_order.state());
                Ok(())
            })?;
        }
    }
}
