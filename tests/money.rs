//! Money rules through the processor's `handle` on DynamoDB Local: no credit or access without
//! payment, no money event marked applied while nothing happened, and one effect and one message per
//! event whatever copies of it arrive. Each test is a case of the README's handler table.

use integration_tests::*;
use serde_json::{json, Value};
use stripe_pipeline::billing::{self, BillingStore};

/// A fixture as another event: `edit` gets the whole event, id and `created` already set.
fn event(name: &str, id: &str, created: i64, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(&fixture(name)).expect("fixture JSON");
    event["id"] = json!(id);
    event["created"] = json!(created);
    edit(&mut event);
    serde_json::to_vec(&event).expect("serialize")
}

/// A per-test tag, so ids never meet across runs on the shared emulators.
fn tag() -> String {
    format!("{:08x}", fastrand::u32(..))
}

/// Processes each body as its own batch, in order; returns the ids of the messages that failed.
async fn process_each(app: &ProcessorApp, bodies: &[Vec<u8>]) -> Vec<String> {
    let mut failed = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        failed.extend(process_batch(app, vec![message(&format!("m{i}"), body)]).await);
    }
    failed
}

/// A credits checkout session of `customer` as `event_type`.
fn credits_checkout(
    event_type: &str,
    id: &str,
    created: i64,
    session: &str,
    customer: Option<&str>,
    payment_status: &str,
    credits: &str,
) -> Vec<u8> {
    event("checkout.session.completed", id, created, |e| {
        e["type"] = json!(event_type);
        let o = &mut e["data"]["object"];
        o["id"] = json!(session);
        o["payment_intent"] = json!(format!("pi_{session}"));
        o["customer"] = json!(customer);
        o["payment_status"] = json!(payment_status);
        o["metadata"] = json!({ "credits": credits });
    })
}

fn subscription_event(
    event_type: &str,
    id: &str,
    created: i64,
    customer: &str,
    sub: &str,
    status: &str,
    period_end: i64,
) -> Vec<u8> {
    event("customer.subscription.updated", id, created, |e| {
        e["type"] = json!(event_type);
        let o = &mut e["data"]["object"];
        o["id"] = json!(sub);
        o["customer"] = json!(customer);
        o["status"] = json!(status);
        o["items"]["data"][0]["current_period_end"] = json!(period_end);
    })
}

fn invoice_event(
    name: &str,
    id: &str,
    created: i64,
    customer: &str,
    invoice: &str,
    sub: &str,
    period_end: i64,
) -> Vec<u8> {
    event(name, id, created, |e| {
        let o = &mut e["data"]["object"];
        o["id"] = json!(invoice);
        o["customer"] = json!(customer);
        o["parent"]["subscription_details"]["subscription"] = json!(sub);
        o["lines"]["data"][0]["period"]["end"] = json!(period_end);
    })
}

#[tokio::test]
async fn a_delayed_payment_grants_credits_once_when_it_clears_and_never_when_it_fails() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    let t = tag();
    let (paid, failed) = (format!("cus_paid{t}"), format!("cus_fail{t}"));
    // GIVEN two bank-debit checkouts, completed unpaid; one's debit clears (and Stripe resends that
    // news as a second event), the other's fails
    let bodies = [
        credits_checkout(
            "checkout.session.completed",
            &format!("evt_a1{t}"),
            100,
            &format!("cs_a{t}"),
            Some(&paid),
            "unpaid",
            "40",
        ),
        credits_checkout(
            "checkout.session.completed",
            &format!("evt_b1{t}"),
            100,
            &format!("cs_b{t}"),
            Some(&failed),
            "unpaid",
            "40",
        ),
        credits_checkout(
            "checkout.session.async_payment_succeeded",
            &format!("evt_a2{t}"),
            200,
            &format!("cs_a{t}"),
            Some(&paid),
            "paid",
            "40",
        ),
        credits_checkout(
            "checkout.session.async_payment_succeeded",
            &format!("evt_a3{t}"),
            201,
            &format!("cs_a{t}"),
            Some(&paid),
            "paid",
            "40",
        ),
        credits_checkout(
            "checkout.session.async_payment_failed",
            &format!("evt_b2{t}"),
            200,
            &format!("cs_b{t}"),
            Some(&failed),
            "unpaid",
            "40",
        ),
    ];
    // WHEN each is processed after the completions, and the completions again
    assert!(process_each(&app, &bodies).await.is_empty());
    assert!(process_each(&app, &bodies[..2]).await.is_empty());
    // THEN only the cleared payment granted, once; the failed one told the failures channel
    assert_eq!(
        billing::credit_balance(&app.billing, &paid).await.unwrap(),
        40
    );
    assert_eq!(
        billing::credit_balance(&app.billing, &failed)
            .await
            .unwrap(),
        0
    );
    let texts = slack.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("Delayed payment failed") && texts[0].contains(&format!("cs_b{t}")));
}

#[tokio::test]
async fn a_paid_credits_checkout_nobody_can_be_credited_for_fails_its_message_and_marks_nothing() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let t = tag();
    let nobody = credits_checkout(
        "checkout.session.completed",
        &format!("evt_n{t}"),
        100,
        &format!("cs_n{t}"),
        None,
        "paid",
        "40",
    );
    let malformed = credits_checkout(
        "checkout.session.completed",
        &format!("evt_m{t}"),
        100,
        &format!("cs_m{t}"),
        Some("cus_x"),
        "paid",
        "40 credits",
    );
    // WHEN both are processed (beside a good event in the same batch)
    let good = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let failed = process_batch(
        &app,
        vec![
            message("nobody", &nobody),
            message("malformed", &malformed),
            message("good", &good),
        ],
    )
    .await;
    // THEN both fail (SQS retries them, then the DLQ holds them) and neither is marked applied
    assert_eq!(failed, ["nobody", "malformed"]);
    for id in [format!("evt_n{t}"), format!("evt_m{t}")] {
        let marker = app
            .billing
            .get(&billing::Key::event_marker(&id))
            .await
            .unwrap();
        assert!(marker.is_none(), "{id} must not be marked applied");
    }
    assert_eq!(
        billing::credit_balance(&app.billing, "cus_x")
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn invoices_never_set_a_status_and_a_terminal_status_stays_on_dynamodb() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let t = tag();
    let customer = format!("cus_st{t}");
    let bodies = [
        // A canceled subscription whose final invoice then fails, and a stray later update.
        subscription_event(
            "customer.subscription.deleted",
            &format!("evt_1{t}"),
            100,
            &customer,
            "sub_gone",
            "canceled",
            9_000_000_000,
        ),
        invoice_event(
            "invoice.payment_failed",
            &format!("evt_2{t}"),
            200,
            &customer,
            &format!("in_final{t}"),
            "sub_gone",
            9_000_000_000,
        ),
        subscription_event(
            "customer.subscription.updated",
            &format!("evt_3{t}"),
            300,
            &customer,
            "sub_gone",
            "active",
            9_000_000_000,
        ),
        // A subscription whose first payment is declined.
        subscription_event(
            "customer.subscription.created",
            &format!("evt_4{t}"),
            100,
            &customer,
            "sub_new",
            "incomplete",
            9_000_000_000,
        ),
        invoice_event(
            "invoice.payment_failed",
            &format!("evt_5{t}"),
            200,
            &customer,
            &format!("in_first{t}"),
            "sub_new",
            9_000_000_000,
        ),
    ];
    assert!(process_each(&app, &bodies).await.is_empty());
    let status = |sub: &'static str| {
        let (billing, customer) = (&app.billing, customer.clone());
        async move {
            billing::subscription(billing, &customer, sub)
                .await
                .unwrap()
                .unwrap()
                .status
        }
    };
    assert_eq!(status("sub_gone").await, "canceled");
    assert_eq!(status("sub_new").await, "incomplete");
    let entitlement = billing::entitlement(&app.billing, &customer, 1_000)
        .await
        .unwrap();
    assert!(!entitlement.active, "{entitlement:?}");
}

#[tokio::test]
async fn access_is_per_subscription_and_past_due_only_to_what_was_paid_on_dynamodb() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let t = tag();
    let customer = format!("cus_ac{t}");
    // GIVEN subscription A past_due on a period never paid (its last paid invoice covered up to
    // 1_000), and subscription B canceled with an invoice paid far ahead
    let bodies = [
        subscription_event(
            "customer.subscription.updated",
            &format!("evt_1{t}"),
            100,
            &customer,
            "sub_a",
            "past_due",
            9_000,
        ),
        invoice_event(
            "invoice.paid",
            &format!("evt_2{t}"),
            50,
            &customer,
            &format!("in_a{t}"),
            "sub_a",
            1_000,
        ),
        subscription_event(
            "customer.subscription.deleted",
            &format!("evt_3{t}"),
            100,
            &customer,
            "sub_b",
            "canceled",
            50_000,
        ),
        invoice_event(
            "invoice.paid",
            &format!("evt_4{t}"),
            60,
            &customer,
            &format!("in_b{t}"),
            "sub_b",
            50_000,
        ),
    ];
    assert!(process_each(&app, &bodies).await.is_empty());
    // THEN A has access until 1_000, not to its period end, and B's invoice extends nothing
    let at = |now: i64| {
        let (billing, customer) = (&app.billing, customer.clone());
        async move { billing::entitlement(billing, &customer, now).await.unwrap() }
    };
    let before = at(999).await;
    assert!(before.active, "{before:?}");
    assert_eq!(before.access_until, Some(1_000));
    let after = at(1_000).await;
    assert!(!after.active, "{after:?}");
}

#[tokio::test]
async fn a_stale_renewal_failure_is_not_news_and_a_full_refund_unpays_the_order() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    let t = tag();
    let customer = format!("cus_rf{t}");
    let invoice = format!("in_rf{t}");
    let (order, payment) = (format!("order_{t}"), format!("pi_rf{t}"));
    let bodies = [
        // The invoice's payment arrives before the failure of its earlier attempt.
        invoice_event(
            "invoice.paid",
            &format!("evt_1{t}"),
            200,
            &customer,
            &invoice,
            "sub_rf",
            5_000,
        ),
        invoice_event(
            "invoice.payment_failed",
            &format!("evt_2{t}"),
            100,
            &customer,
            &invoice,
            "sub_rf",
            5_000,
        ),
        // The order's refund arrives before its payment.
        event("charge.refunded", &format!("evt_3{t}"), 300, |e| {
            e["data"]["object"]["payment_intent"] = json!(payment);
            e["data"]["object"]["refunded"] = json!(true);
        }),
        event("payment_intent.succeeded", &format!("evt_4{t}"), 250, |e| {
            e["data"]["object"]["id"] = json!(payment);
            e["data"]["object"]["metadata"] = json!({ "order_id": order });
        }),
    ];
    assert!(process_each(&app, &bodies).await.is_empty());
    let texts = slack.texts();
    assert!(
        !texts.iter().any(|t| t.contains("Renewal failed")),
        "{texts:?}"
    );
    assert_eq!(texts.len(), 1, "only the payment is news: {texts:?}");
    assert!(!billing::order_paid(&app.billing, &order).await.unwrap());
    let record = billing::payment(&app.billing, &payment)
        .await
        .unwrap()
        .unwrap();
    assert!(record.refunded);
}

/// One run of the migration case: `carried` says whether the thin notification names its snapshot
/// event itself, or only the whole v2 event (retrieved from Stripe) does.
async fn thin_and_snapshot_copies(carried: bool) {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let t = tag();
    let (snapshot_id, thin_id) = (format!("evt_snap{t}"), format!("evt_thin{t}"));
    let payment = format!("pi_thin{t}");
    let snapshot = event(
        "payment_intent.succeeded",
        &snapshot_id,
        1_800_000_000,
        |e| {
            e["data"]["object"]["id"] = json!(payment);
            e["data"]["object"]["metadata"] = json!({ "order_id": format!("order_thin{t}") });
        },
    );
    let snapshot_json: Value = serde_json::from_slice(&snapshot).unwrap();
    // GIVEN Stripe's API serving the payment and the whole thin event, and an endpoint mid-migration
    // receiving both copies
    let stripe = stripe_webhooks::fake_stripe::FakeStripe::start(vec![], FAKE_STRIPE_KEY)
        .await
        .expect("fake Stripe");
    let path = format!("/v1/payment_intents/{payment}");
    stripe.put_object(&path, snapshot_json["data"]["object"].clone());
    let mut thin = json!({
        "id": thin_id,
        "object": "v2.core.event",
        "type": "v1.payment_intent.succeeded",
        "livemode": false,
        "created": "2027-01-15T08:00:00.000Z",
        "related_object": {"id": payment, "type": "payment_intent", "url": path},
    });
    let mut whole = thin.clone();
    whole["snapshot_event"] = json!(snapshot_id);
    stripe.put_object(&format!("/v2/core/events/{thin_id}"), whole);
    if carried {
        thin["snapshot_event"] = json!(snapshot_id);
    }
    let thin = serde_json::to_vec(&thin).unwrap();
    let app = processor_app_with_stripe(&resources, Some(&slack.url), Some(&stripe.base_url)).await;
    // WHEN the thin copy arrives first, then the snapshot, then the thin copy again
    assert!(process_each(&app, &[thin.clone(), snapshot, thin])
        .await
        .is_empty());
    // THEN one message and one marker, the snapshot's
    let texts = slack.texts();
    assert_eq!(texts.len(), 1, "carried {carried}: {texts:?}");
    assert!(texts[0].contains(&payment));
    let marker = |id: String| {
        let billing = &app.billing;
        async move { billing.get(&billing::Key::event_marker(&id)).await.unwrap() }
    };
    assert!(marker(snapshot_id.clone()).await.is_some());
    assert!(marker(thin_id.clone()).await.is_none());
    assert!(billing::order_paid(&app.billing, &format!("order_thin{t}"))
        .await
        .unwrap());
    // The whole event is read only when the notification does not name the snapshot.
    let lookups = stripe
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/core/events/"))
        .count();
    assert_eq!(
        lookups > 0,
        !carried,
        "carried {carried}: {lookups} lookups"
    );
}

#[tokio::test]
async fn a_thin_copy_and_its_snapshot_event_make_one_effect_and_one_message() {
    thin_and_snapshot_copies(true).await;
}

#[tokio::test]
async fn a_thin_copy_that_names_its_snapshot_only_in_the_whole_event_is_still_one_event() {
    thin_and_snapshot_copies(false).await;
}
