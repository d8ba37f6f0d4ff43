//! The processor's `handle` (the function the Lambda runs) against DynamoDB Local, moto's SQS and a
//! local HTTP sink standing in for Slack: exactly-once effects, order independence, partial batch
//! failures and the DLQ, notifications retried without re-applying state.

use std::collections::HashSet;

use integration_tests::*;
use receiver::handler::handle as receive;
use stripe_pipeline::{
    billing::{self, BillingStore},
    testing::customer_history,
};

/// Sends `bodies` through the real receiver onto the real queue and returns what the queue delivers.
async fn through_the_queue(
    resources: &Resources,
    bodies: &[Vec<u8>],
) -> Vec<aws_lambda_events::event::sqs::SqsMessage> {
    let receiver = receiver_app(resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    for body in bodies {
        let status = receive(&receiver, signed_now(body)).await.unwrap().status();
        assert_eq!(status, 200);
    }
    drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await
}

/// The reference a test compares with: each event applied once, in order, on its own tables, with
/// its own Slack sink.
async fn applied_once_in_order(events: &[Vec<u8>]) -> (Resources, FakeSlack) {
    let once = create_resources();
    let once_slack = FakeSlack::start().await.expect("fake slack");
    let once_app = processor_app(&once, Some(&once_slack.url)).await;
    for (i, body) in events.iter().enumerate() {
        assert!(
            process_batch(&once_app, vec![message(&format!("o{i}"), body)])
                .await
                .is_empty()
        );
    }
    (once, once_slack)
}

#[tokio::test]
async fn every_fixture_through_receiver_queue_and_processor_gives_the_documented_state() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    let bodies: Vec<Vec<u8>> = fixture_events().into_iter().map(|(_, b)| b).collect();
    let mut messages = through_the_queue(&resources, &bodies).await;
    assert_eq!(messages.len(), 17);
    // In the order Stripe created them, so that what is news is deterministic: the failed invoice
    // (created before the same invoice's payment) notifies; delivered after it, it would not.
    let created = |m: &aws_lambda_events::event::sqs::SqsMessage| {
        serde_json::from_str::<serde_json::Value>(m.body.as_deref().unwrap_or("{}")).unwrap()
            ["created"]
            .as_i64()
    };
    messages.sort_by_key(created);
    for message in messages {
        assert!(process_batch(&app, vec![message]).await.is_empty());
    }
    let customer = "cus_QXg1o8vcGmoR32";
    let payment = billing::payment(&app.billing, "pi_1PgafyB7WZ01zgkWSjxsAJo3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        payment.status, "succeeded",
        "the later of failed/succeeded wins"
    );
    let sub = billing::subscription(&app.billing, customer, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sub.status, "canceled");
    assert!(sub.cancel_at_period_end);
    let invoice = billing::invoice(&app.billing, customer, "in_1Pgc6tB7WZ01zgkWu9fdqL6I")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(billing::AttributesExt::s(&invoice, "status"), Some("paid"));
    // One message per notifying event: payment received, payment failed, renewal failed, trial ending,
    // dispute (with its deadline).
    let texts = slack.texts();
    assert_eq!(texts.len(), 5, "{texts:?}");
    assert!(texts
        .iter()
        .any(|t| t.contains("URGENT dispute") && t.contains("2024-08-14")));
    assert!(texts
        .iter()
        .any(|t| t.contains("Payment received: 10.99 USD")));
}

#[tokio::test]
async fn each_message_twice_and_a_whole_batch_again_change_nothing_and_notify_once() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    let history = customer_history(
        &format!("dup{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        true,
    );
    let messages: Vec<_> = history
        .events
        .iter()
        .enumerate()
        .map(|(i, body)| message(&format!("m{i}"), body))
        .collect();
    let (once, once_slack) = applied_once_in_order(&history.events).await;
    // GIVEN each message delivered twice in one batch, then the whole batch redelivered
    // (a copy gets its own message id, as SQS gives a redelivered duplicate). Messages processed
    // concurrently may conflict and fail; SQS redelivers those, as here.
    let mut doubled = Vec::new();
    for m in &messages {
        doubled.push(m.clone());
        let mut copy = m.clone();
        copy.message_id = m.message_id.as_ref().map(|id| format!("{id}-copy"));
        doubled.push(copy);
    }
    process_until_done(&app, doubled).await;
    let notified = slack.texts().len();
    assert_eq!(process_until_done(&app, messages).await, 1);
    // THEN the state equals applying each event once (notification records aside: which messages
    // were news is checked on Slack below), and nothing was notified twice
    assert_eq!(
        without_notifications(billing_state(&resources).await),
        without_notifications(billing_state(&once).await)
    );
    assert_eq!(slack.texts().len(), notified);
    // The payment is news in any order. The failed renewal only if it was processed before the same
    // invoice's payment (in one concurrent batch, either may go first): at most once, never lost
    // otherwise.
    let ((texts, renewals), (once_texts, once_renewals)) =
        (news(slack.texts()), news(once_slack.texts()));
    assert_eq!(texts, once_texts);
    assert_eq!(once_renewals, 1, "in order, the failure is news");
    assert!(renewals <= 1, "{renewals} renewal messages");
    assert_eq!(
        texts.len(),
        1,
        "the payment for the credits notifies once: {texts:?}"
    );
    assert_eq!(
        billing::credit_balance(&app.billing, &history.customer)
            .await
            .unwrap(),
        0
    );
}

/// The four lifecycle events in every order end in the state of the in-order history.
#[tokio::test]
async fn the_subscription_lifecycle_in_every_order_ends_in_the_in_order_state() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let tag = format!("life{:06x}", fastrand::u32(..0xffffff));
    // created, updated, invoice.paid, deleted
    let lifecycle = |run: usize| -> (String, Vec<Vec<u8>>) {
        let h = customer_history(&format!("{tag}r{run}"), 1_800_000_000, false);
        let e = &h.events;
        (
            h.customer.clone(),
            vec![e[0].clone(), e[4].clone(), e[7].clone(), e[8].clone()],
        )
    };
    let snapshot = |customer: String| {
        let billing = &app.billing;
        async move {
            let sub = billing::subscriptions(billing, &customer).await.unwrap();
            let entitlement = billing::entitlement(billing, &customer, 1_800_000_100)
                .await
                .unwrap();
            let invoices: Vec<_> = billing
                .query(&format!("CUSTOMER#{customer}"))
                .await
                .unwrap()
                .into_iter()
                .filter(|(sk, _)| sk.starts_with("INVOICE#"))
                .map(|(sk, mut item)| {
                    // Ids differ per run by construction; everything else must match.
                    item.remove("version");
                    item.remove("subscription");
                    (sk.rsplit('_').next().unwrap_or_default().to_owned(), item)
                })
                .collect();
            let sub: Vec<_> = sub
                .into_iter()
                .map(|s| {
                    (
                        s.status,
                        s.plan,
                        s.current_period_end,
                        s.cancel_at_period_end,
                    )
                })
                .collect();
            format!("{sub:?} {entitlement:?} {invoices:?}")
        }
    };
    let (customer, events) = lifecycle(0);
    for (i, body) in events.iter().enumerate() {
        assert!(process_batch(&app, vec![message(&format!("o{i}"), body)])
            .await
            .is_empty());
    }
    let in_order = snapshot(customer).await;
    assert!(in_order.contains("canceled"), "{in_order}");
    let orders = permutations(4);
    assert_eq!(orders.len(), 24);
    for (run, order) in orders.into_iter().enumerate() {
        let (customer, events) = lifecycle(run + 1);
        for i in order {
            assert!(
                process_batch(&app, vec![message(&format!("p{run}-{i}"), &events[i])])
                    .await
                    .is_empty()
            );
        }
        assert_eq!(snapshot(customer).await, in_order, "run {run}");
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for smaller in permutations(n - 1) {
        for at in 0..=smaller.len() {
            let mut p = smaller.clone();
            p.insert(at, n - 1);
            all.push(p);
        }
    }
    all
}

#[tokio::test]
async fn a_poisoned_message_fails_alone_and_ends_in_the_dlq_after_max_receive_count() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let client = sqs(&sqs_endpoint()).await;
    // GIVEN nine good events and one poisoned message on the real queue
    let bodies: Vec<Vec<u8>> = (0..9)
        .map(|_| with_event_id(&fixture("invoice.paid"), &unique_event_id()))
        .collect();
    let receiver = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    for body in &bodies {
        assert_eq!(
            receive(&receiver, signed_now(body)).await.unwrap().status(),
            200
        );
    }
    client
        .send_message()
        .queue_url(&resources.event_queue_url)
        .message_body("{\"id\":\"evt_poison\",\"type\":\"invoice.paid\",\"created\":1,\"data\":{\"object\":{\"id\":5}}}")
        .send()
        .await
        .unwrap();
    // WHEN the event source mapping delivers them: receive, process, delete what succeeded, make the
    // failures visible again (as their visibility timeout would), repeat
    let max_receive_count = 5; // template.yaml's MaxReceiveCount default
    let mut poison_failures = 0;
    for round in 0..=max_receive_count {
        let output = client
            .receive_message()
            .queue_url(&resources.event_queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        let by_id: Vec<_> = messages
            .iter()
            .map(|m| {
                (
                    m.message_id.clone().unwrap_or_default(),
                    m.receipt_handle.clone().unwrap_or_default(),
                    m.body.clone().unwrap_or_default(),
                )
            })
            .collect();
        let converted: Vec<_> = messages
            .into_iter()
            .map(|m| {
                let mut c = message(
                    m.message_id.as_deref().unwrap_or_default(),
                    m.body.as_deref().unwrap_or_default().as_bytes(),
                );
                for (name, value) in m.message_attributes.unwrap_or_default() {
                    let mut a = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
                    a.string_value = value.string_value;
                    c.message_attributes.insert(name, a);
                }
                c
            })
            .collect();
        if round == 0 {
            assert_eq!(converted.len(), 10);
        }
        let failed: HashSet<String> = process_batch(&app, converted).await.into_iter().collect();
        for (id, receipt, body) in by_id {
            if failed.contains(&id) {
                assert!(
                    body.contains("evt_poison"),
                    "only the poisoned message fails"
                );
                poison_failures += 1;
                client
                    .change_message_visibility()
                    .queue_url(&resources.event_queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .unwrap();
            } else {
                client
                    .delete_message()
                    .queue_url(&resources.event_queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
    // THEN it failed once per receive, and SQS moved it to the DLQ after maxReceiveCount receives
    assert_eq!(poison_failures, max_receive_count);
    let dead = drain(&client, &resources.dead_letter_queue_url).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0]
        .body
        .as_deref()
        .unwrap_or_default()
        .contains("evt_poison"));
    assert_eq!(queue_depth(&client, &resources.event_queue_url).await, 0);
}

#[tokio::test]
async fn slack_down_retries_the_message_without_rewriting_state_then_notifies_once() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    let body = with_event_id(&fixture("charge.dispute.created"), &unique_event_id());
    // GIVEN Slack is down
    slack.set_status(500);
    assert_eq!(
        process_batch(&app, vec![message("m1", &body)]).await,
        ["m1"]
    );
    // THEN the dispute is recorded already, and nothing was sent
    let recorded = billing_state(&resources).await;
    assert!(recorded.keys().any(|(pk, _)| pk.starts_with("DISPUTE#")));
    assert!(slack.texts().is_empty());
    // WHEN it is back and SQS redelivers
    slack.set_status(200);
    assert!(process_batch(&app, vec![message("m1", &body)])
        .await
        .is_empty());
    assert!(process_batch(&app, vec![message("m1", &body)])
        .await
        .is_empty());
    // THEN one message, and the state is as it was
    assert_eq!(slack.texts().len(), 1);
    let after: Vec<_> = billing_state(&resources)
        .await
        .into_iter()
        .filter(|((_, sk), _)| !sk.starts_with("NOTIFY#"))
        .collect();
    assert_eq!(after, recorded.into_iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn credits_are_granted_once_and_a_refund_reverses_them_once_in_either_order() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    for (run, refund_first) in [(0, false), (1, true)] {
        let history = customer_history(
            &format!("cr{run}{:06x}", fastrand::u32(..0xffffff)),
            1_800_000_000,
            true,
        );
        let (grant, refund) = (&history.events[1], &history.events[8]);
        let (first, second) = if refund_first {
            (refund, grant)
        } else {
            (grant, refund)
        };
        // Each delivered twice, then the first again after the second.
        for body in [first, first] {
            assert!(process_batch(&app, vec![message("m", body)])
                .await
                .is_empty());
        }
        let expected_between = if refund_first { 0 } else { history.credits };
        assert_eq!(
            billing::credit_balance(&app.billing, &history.customer)
                .await
                .unwrap(),
            expected_between
        );
        for body in [second, second, first] {
            assert!(process_batch(&app, vec![message("m", body)])
                .await
                .is_empty());
        }
        assert_eq!(
            billing::credit_balance(&app.billing, &history.customer)
                .await
                .unwrap(),
            0,
            "refund first: {refund_first}"
        );
    }
    // Granted and never refunded: exactly the credits sold, however often delivered.
    let history = customer_history(
        &format!("keep{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        false,
    );
    for _ in 0..3 {
        assert!(process_batch(&app, vec![message("m", &history.events[1])])
            .await
            .is_empty());
    }
    assert_eq!(
        billing::credit_balance(&app.billing, &history.customer)
            .await
            .unwrap(),
        history.credits
    );
}

/// Random interleavings of a generated history, with random duplicates, applied through DynamoDB
/// Local, end in the state of the same history applied in order.
#[test]
fn any_interleaving_with_duplicates_ends_in_the_in_order_state_on_dynamodb() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let resources = create_resources();
    let app = runtime.block_on(processor_app(&resources, None));
    let state_of = |tag: &str| {
        let state = runtime.block_on(billing_state(&resources));
        state
            .into_iter()
            .filter(|((pk, _), _)| pk.contains(tag))
            .map(|((pk, sk), v)| {
                (
                    pk.replace(tag, "T"),
                    sk.replace(tag, "T"),
                    v.replace(tag, "T"),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(12));
    let strategy = (
        any::<bool>(),
        Just((0..10usize).collect::<Vec<_>>()).prop_shuffle(),
        proptest::collection::vec(0..10usize, 0..5),
    );
    runner
        .run(&strategy, |(refund, order, duplicates)| {
            let base = format!("pb{:08x}", fastrand::u32(..));
            let (reference, shuffled) = (format!("{base}a"), format!("{base}b"));
            let in_order = customer_history(&reference, 1_800_000_000, refund);
            for (i, body) in in_order.events.iter().enumerate() {
                let failed =
                    runtime.block_on(process_batch(&app, vec![message(&format!("r{i}"), body)]));
                prop_assert!(failed.is_empty());
            }
            let history = customer_history(&shuffled, 1_800_000_000, refund);
            let n = history.events.len();
            let mut deliveries: Vec<usize> = order.into_iter().filter(|i| *i < n).collect();
            for (k, d) in duplicates.iter().enumerate() {
                deliveries.insert((k * 3) % (deliveries.len() + 1), d % n);
            }
            for (k, i) in deliveries.into_iter().enumerate() {
                let m = message(&format!("s{k}"), &history.events[i]);
                runtime.block_on(process_until_done(&app, vec![m]));
            }
            prop_assert_eq!(state_of(&shuffled), state_of(&reference));
            Ok(())
        })
        .unwrap();
}

/// A billing state without its notification records: which messages were news depends on the order
/// the events were processed in (a failed renewal is not news once its invoice is paid), so tests
/// that shuffle compare those on Slack with [`news`] instead.
fn without_notifications(
    mut state: std::collections::BTreeMap<(String, String), String>,
) -> std::collections::BTreeMap<(String, String), String> {
    state.retain(|(_, sk), _| !sk.starts_with("NOTIFY#"));
    state
}

/// Slack texts split into those that are news in any order (sorted) and the number of failed-renewal
/// messages, which are news only when the failure was processed before its invoice's payment.
fn news(texts: Vec<String>) -> (Vec<String>, usize) {
    let (renewals, mut rest): (Vec<_>, Vec<_>) = texts
        .into_iter()
        .partition(|t| t.starts_with("Renewal failed"));
    rest.sort();
    (rest, renewals.len())
}

/// How an EventBridge rule's SQS target delivers a Stripe event.
fn eventbridge(event: &[u8]) -> Vec<u8> {
    stripe_pipeline::delivery::wrap_as_eventbridge(
        event,
        "aws.partner/stripe.com/ed_test_61ABCDEF",
        stripe_pipeline::signature::unix_now() as i64,
    )
    .expect("a Stripe event")
}

#[tokio::test]
async fn the_same_event_through_both_ingresses_applies_its_effects_once() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    let history = customer_history(
        &format!("both{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        true,
    );
    // GIVEN every event of a history delivered by webhook (through the receiver and the queue) AND by
    // EventBridge (wrapped, straight onto the queue: no receiver, no dedup in front)
    let via_webhook = through_the_queue(&resources, &history.events).await;
    let via_eventbridge: Vec<_> = history
        .events
        .iter()
        .enumerate()
        .map(|(i, body)| message(&format!("eb{i}"), &eventbridge(body)))
        .collect();
    let mut all: Vec<_> = via_eventbridge.into_iter().chain(via_webhook).collect();
    fastrand::shuffle(&mut all);
    process_until_done(&app, all).await;
    // THEN the state and notifications are those of each event applied once
    let (once, once_slack) = applied_once_in_order(&history.events).await;
    assert_eq!(
        without_notifications(billing_state(&resources).await),
        without_notifications(billing_state(&once).await)
    );
    let ((texts, renewals), (once_texts, _)) = (news(slack.texts()), news(once_slack.texts()));
    assert_eq!(texts, once_texts);
    assert!(renewals <= 1, "{renewals} renewal messages");
    assert_eq!(
        billing::credit_balance(&app.billing, &history.customer)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_unparseable_message_fails_alone_and_the_rest_of_its_batch_is_handled() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let good = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let wrapped = eventbridge(&with_event_id(
        &fixture("charge.failed"),
        &unique_event_id(),
    ));
    let batch = vec![
        message("good", &good),
        message("garbage", b"{\"detail-type\": \"x\", \"detail\": 42}"),
        message("wrapped", &wrapped),
        message("not-json", b"\x00\x01"),
    ];
    assert_eq!(process_batch(&app, batch).await, ["garbage", "not-json"]);
}

/// The project's fake Stripe API (`stripe-webhooks fake-stripe`) serving a history's events, and the
/// objects as the newest of them has each.
async fn fake_stripe_of(history: &[Vec<u8>]) -> stripe_webhooks::fake_stripe::FakeStripe {
    let events = history
        .iter()
        .map(|body| serde_json::from_slice(body).expect("event JSON"))
        .collect();
    stripe_webhooks::fake_stripe::FakeStripe::start(events, FAKE_STRIPE_KEY)
        .await
        .expect("start the fake Stripe API")
}

#[tokio::test]
async fn a_thin_event_is_fetched_through_failures_and_applied_once() {
    use stripe_webhooks::fake_stripe::Fault;
    let resources = create_resources();
    let history = customer_history(
        &format!("thin{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        false,
    );
    let updated = &history.events[4];
    let snapshot: serde_json::Value = serde_json::from_slice(updated).unwrap();
    assert_eq!(snapshot["type"], "customer.subscription.updated");
    let subscription = snapshot["data"]["object"].clone();
    // GIVEN Stripe's API with the subscription as that update left it, failing the first fetch with a
    // 503 and the second with a 429 and Retry-After
    let stripe = fake_stripe_of(&history.events).await;
    let path = format!("/v1/subscriptions/{}", subscription["id"].as_str().unwrap());
    stripe.put_object(&path, subscription.clone());
    stripe.inject(1, Fault::ServerError(503));
    stripe.inject(
        2,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let app = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    // WHEN the thin form of that update arrives by webhook and by EventBridge
    let thin = stripe_pipeline::delivery::thin_of(updated).expect("a thin form");
    let batch = vec![
        message("thin-webhook", &thin),
        message("thin-eventbridge", &eventbridge(&thin)),
    ];
    process_until_done(&app, batch).await;
    // THEN the fetched subscription is the state, written once (the first fetches failed and were retried)
    let sub = billing::subscription(&app.billing, &history.customer, &history.subscription)
        .await
        .unwrap()
        .expect("subscription written");
    assert_eq!(sub.plan.as_deref(), Some("price_pro"));
    assert!(sub.cancel_at_period_end);
    // (The first request reads the whole v2 event, for the snapshot event it mirrors; the faults hit
    // whichever request comes first.)
    let fetches: Vec<u16> = stripe.requests().iter().map(|r| r.status).collect();
    assert_eq!(&fetches[..2], [503, 429], "{fetches:?}");
    assert!(fetches[2..].iter().all(|s| *s == 200), "{fetches:?}");
    assert!(
        stripe
            .requests()
            .iter()
            .any(|r| r.path == path && r.status == 200),
        "the subscription was fetched"
    );
    let state = billing_state(&resources).await;
    let event_id = snapshot["id"].as_str().unwrap();
    assert!(
        state.values().any(|v| v.contains(event_id)),
        "versioned by the thin event"
    );
}

#[tokio::test]
async fn without_an_api_key_a_thin_event_fails_its_message_and_is_not_lost() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let thin = br#"{"id":"evt_thin_2","object":"v2.core.event","type":"v1.invoice.paid","created":"2027-01-15T08:00:00Z","related_object":{"id":"in_1","type":"invoice","url":"/v1/invoices/in_1"}}"#;
    let good = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    assert_eq!(
        process_batch(&app, vec![message("thin", thin), message("good", &good)]).await,
        ["thin"]
    );
}

#[tokio::test]
async fn refetch_mode_writes_the_object_as_stripe_has_it_now() {
    let resources = create_resources();
    let history = customer_history(
        &format!("refe{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        false,
    );
    // Stripe's current state: canceled (the deletion already happened)...
    let stripe = fake_stripe_of(&history.events).await;
    let mut current: serde_json::Value =
        serde_json::from_slice::<serde_json::Value>(history.events.last().unwrap()).unwrap()
            ["data"]["object"]
            .clone();
    current["status"] = "canceled".into();
    stripe.put_object(
        &format!("/v1/subscriptions/{}", history.subscription),
        current,
    );
    let app = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    // ...while the only event delivered so far is the old `created` one, whose snapshot says active.
    assert!(
        process_batch(&app, vec![message("created", &history.events[0])])
            .await
            .is_empty()
    );
    let sub = billing::subscription(&app.billing, &history.customer, &history.subscription)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        sub.status, "canceled",
        "the refetched object, not the stale snapshot"
    );
}

#[tokio::test]
async fn markers_notification_records_and_duplicate_counts_expire_after_the_configured_retention() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let retention: i64 = 45 * 86_400;
    let dedup_ttl: i64 = 40 * 86_400;
    let settings = [
        ("DEDUP_TABLE_NAME", resources.dedup_table.clone()),
        ("BILLING_TABLE_NAME", resources.billing_table.clone()),
        ("SLACK_WEBHOOK_URL", slack.url.clone()),
        ("EVENT_MARKER_RETENTION_SECS", retention.to_string()),
        ("DEDUP_TTL_SECS", dedup_ttl.to_string()),
    ];
    let config = stripe_pipeline::config::ProcessorConfig::from_lookup(|var| {
        settings
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.clone())
    })
    .unwrap();
    // The processor as its cold start builds it, against DynamoDB Local.
    let aws = sdk_config()
        .await
        .into_builder()
        .endpoint_url(dynamodb_endpoint())
        .build();
    let app = processor::init::app_from(config, &aws).await.unwrap();
    let body = with_event_id(&fixture("invoice.payment_failed"), &unique_event_id());
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = stripe_pipeline::signature::unix_now() as i64;
    assert!(process_batch(&app, vec![message("m1", &body)])
        .await
        .is_empty());
    assert_eq!(slack.texts().len(), 1);

    let items = dynamodb(&dynamodb_endpoint())
        .await
        .query()
        .table_name(&resources.billing_table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("EVENT#{id}")),
        )
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let expiry = |sk: &str| -> i64 {
        let item = items
            .iter()
            .find(|i| i["sk"].as_s().is_ok_and(|s| s.starts_with(sk)))
            .unwrap_or_else(|| panic!("no {sk} item in {items:?}"));
        item["expires_at"].as_n().unwrap().parse().unwrap()
    };
    for sk in ["EVENT", "NOTIFY#"] {
        let at = expiry(sk);
        assert!(
            (before + retention..=before + retention + 60).contains(&at),
            "{sk}: expires at {at}, written at ~{before}"
        );
    }
    // The TTL attribute is the one the table's TTL is on.
    let ttl = dynamodb(&dynamodb_endpoint())
        .await
        .describe_time_to_live()
        .table_name(&resources.billing_table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description
            .and_then(|d| d.attribute_name)
            .as_deref(),
        Some("expires_at")
    );
    // Still exactly once: a redelivery finds the marker.
    let redelivered_at = stripe_pipeline::signature::unix_now();
    assert!(process_batch(&app, vec![message("m2", &body)])
        .await
        .is_empty());
    assert_eq!(slack.texts().len(), 1);
    // That redelivery was counted as a duplicate, in a counter kept as long as the receiver keeps
    // event ids (DEDUP_TTL_SECS), not the default 30 days.
    let mut counter = None;
    // The hour it was counted in (or the next, if an hour began while it was processed).
    for at in [redelivered_at, stripe_pipeline::signature::unix_now()] {
        counter = counter.or(dynamodb(&dynamodb_endpoint())
            .await
            .get_item()
            .table_name(&resources.dedup_table)
            .key(
                "event_id",
                aws_sdk_dynamodb::types::AttributeValue::S(
                    stripe_pipeline::dedup::duplicate_counter_key(at),
                ),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item);
    }
    let counter = counter.expect("the hour's duplicate counter");
    assert_eq!(counter["duplicates"].as_n().unwrap(), "1");
    let at: i64 = counter["expires_at"].as_n().unwrap().parse().unwrap();
    assert!(
        (before + dedup_ttl..=before + dedup_ttl + 60).contains(&at),
        "duplicate counter expires at {at}, written at ~{before}"
    );
}

#[tokio::test]
async fn an_event_no_handler_acts_on_is_one_conditional_write_of_its_marker_with_its_feed_record() {
    let resources = create_resources();
    let app = processor_app(&resources, None).await;
    let body = with_event_id(&fixture("customer.created"), &unique_event_id());
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let marker_key = billing::Key::event_marker(&id);

    // WHEN it is processed, THEN its marker carries its feed record and sits in the feed index
    assert!(process_batch(&app, vec![message("m1", &body)])
        .await
        .is_empty());
    let marker = app
        .billing
        .get(&marker_key)
        .await
        .unwrap()
        .expect("a marker");
    use billing::AttributesExt;
    assert_eq!(marker.s("event_type"), Some("customer.created"));
    assert_eq!(marker.s("outcome"), Some("unknown"));
    assert!(marker
        .s(stripe_pipeline::billing::feed::PARTITION)
        .is_some());
    assert!(marker.s(stripe_pipeline::billing::feed::SORT).is_some());
    assert_eq!(
        billing_state(&resources).await,
        Default::default(),
        "nothing but the marker"
    );

    // AND a redelivery is acknowledged without writing it again
    assert!(process_batch(&app, vec![message("m2", &body)])
        .await
        .is_empty());
    assert_eq!(app.billing.get(&marker_key).await.unwrap(), Some(marker));

    // AND the marker written alone is conditional and expires with the configured retention
    let store = billing::DynamoBillingStore::new(
        dynamodb(&dynamodb_endpoint()).await,
        &resources.billing_table,
    )
    .with_marker_retention(Some(3_600));
    let alone = billing::EventMarker::new(unique_event_id(), "customer.updated");
    assert_eq!(
        store.apply(&alone, Vec::new()).await.unwrap(),
        billing::Applied::Now {
            skipped: Vec::new()
        }
    );
    assert_eq!(
        store.apply(&alone, Vec::new()).await.unwrap(),
        billing::Applied::Before
    );
    let written = store
        .get(&billing::Key::event_marker(&alone.event_id))
        .await
        .unwrap()
        .expect("the marker");
    let now = stripe_pipeline::signature::unix_now() as i64;
    assert!(written
        .n(stripe_pipeline::billing::attr::EXPIRES_AT)
        .is_some_and(|at| (now + 3_500..=now + 3_700).contains(&at)));
}

/// A Stripe API that takes connections and never answers them.
async fn stripe_that_never_answers() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    base
}

#[tokio::test]
async fn a_retry_after_longer_than_the_invocation_has_left_fails_that_message_alone_at_once() {
    use stripe_webhooks::fake_stripe::Fault;
    let resources = create_resources();
    let history = customer_history(
        &format!("late{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        false,
    );
    // GIVEN Stripe answering the first fetch with a 429 and `Retry-After: 300`
    let stripe = fake_stripe_of(&history.events).await;
    stripe.inject(
        1,
        Fault::RateLimited {
            retry_after_secs: 300,
        },
    );
    let app = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    let thin = stripe_pipeline::delivery::thin_of(&history.events[4]).expect("a thin form");
    let payment = with_event_id(&fixture("payment_intent.succeeded"), &unique_event_id());
    // WHEN a batch with a thin event and one needing no fetch runs in an invocation with 6 s left
    let (failed, took) = batch_with_seconds_left(
        &app,
        vec![message("thin", &thin), message("payment", &payment)],
        6,
    )
    .await
    .expect("the batch must not wait out a Retry-After beyond its deadline");
    // THEN only the thin event's message fails, before the deadline, and SQS's retry applies it
    // (on a fresh instance: this one holds its requests for the 300 s Stripe asked for)
    assert_eq!(failed, ["thin"]);
    assert!(took < std::time::Duration::from_secs(6));
    let app = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    assert!(process_batch(&app, vec![message("thin", &thin)])
        .await
        .is_empty());
    let sub = billing::subscription(&app.billing, &history.customer, &history.subscription)
        .await
        .unwrap();
    assert!(sub.is_some(), "applied on the retry");
}

/// Runs one batch in an invocation with `secs` left, as Lambda would; the failed ids and how long it
/// took, or `None` if it was still running 30 s later (it ignored its deadline).
async fn batch_with_seconds_left(
    app: &ProcessorApp,
    messages: Vec<aws_lambda_events::event::sqs::SqsMessage>,
    secs: u64,
) -> Option<(Vec<String>, std::time::Duration)> {
    let started = std::time::Instant::now();
    let failed = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        process_batch_in(app, messages, context_ending_in(secs)),
    )
    .await
    .ok()?;
    Some((failed, started.elapsed()))
}

#[tokio::test]
async fn a_stripe_api_that_never_answers_fails_the_fetch_by_the_invocation_deadline() {
    let resources = create_resources();
    let base = stripe_that_never_answers().await;
    let app = processor_app_with_stripe(&resources, None, Some(&base)).await;
    // GIVEN a subscription update (re-fetched in refetch mode) and a payment (not fetched)
    let update = with_event_id(
        &fixture("customer.subscription.updated"),
        &unique_event_id(),
    );
    let payment = with_event_id(&fixture("payment_intent.succeeded"), &unique_event_id());
    // WHEN they run in an invocation with 6 s left
    let (failed, took) = batch_with_seconds_left(
        &app,
        vec![message("update", &update), message("payment", &payment)],
        6,
    )
    .await
    .expect("a hung fetch must end by the invocation's deadline");
    // THEN the fetch gave up in time and failed its message alone
    assert_eq!(failed, ["update"]);
    assert!(took < std::time::Duration::from_secs(6));
}

#[tokio::test]
async fn a_redelivered_event_whose_marker_exists_is_not_fetched_again() {
    let resources = create_resources();
    let history = customer_history(
        &format!("mark{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        false,
    );
    let stripe = fake_stripe_of(&history.events).await;
    let app = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    // GIVEN a re-fetched snapshot event and a thin event, both applied
    let created = &history.events[0];
    let thin = stripe_pipeline::delivery::thin_of(&history.events[4]).expect("a thin form");
    let batch = || vec![message("created", created), message("thin", &thin)];
    assert!(process_batch(&app, batch()).await.is_empty());
    // Objects fetched; the thin event's own v2 event is read too (which snapshot event it mirrors
    // decides under which id it was recorded), and is the only thing read again on a redelivery.
    let object_fetches = || {
        stripe
            .requests()
            .iter()
            .filter(|r| !r.path.starts_with("/v2/core/events/"))
            .count()
    };
    let fetched = object_fetches();
    assert_eq!(fetched, 2, "one fetch each the first time");
    // WHEN SQS (or a replay, or the other ingress) delivers them again
    assert!(process_batch(&app, batch()).await.is_empty());
    // THEN no object is fetched again
    assert_eq!(object_fetches(), fetched, "{:?}", stripe.requests());
}

#[tokio::test]
async fn connected_account_events_are_fetched_on_behalf_of_their_account() {
    let resources = create_resources();
    let history = customer_history(
        &format!("conn{:06x}", fastrand::u32(..0xffffff)),
        1_800_000_000,
        false,
    );
    let stripe = fake_stripe_of(&history.events).await;
    let app = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    // GIVEN a v1 snapshot event of a connected account (top-level `account`), a thin event with a
    // `context`, and a platform event
    let mut connected: serde_json::Value = serde_json::from_slice(&history.events[0]).unwrap();
    connected["account"] = "acct_1Connected".into();
    let connected = serde_json::to_vec(&connected).unwrap();
    let mut thin: serde_json::Value =
        serde_json::from_slice(&stripe_pipeline::delivery::thin_of(&history.events[4]).unwrap())
            .unwrap();
    thin["context"] = "acct_1Context".into();
    let thin = serde_json::to_vec(&thin).unwrap();
    let platform = &history.events[3];
    // WHEN each is processed on its own
    for (id, body) in [
        ("connected", &connected),
        ("thin", &thin),
        ("platform", platform),
    ] {
        assert!(process_batch(&app, vec![message(id, body)])
            .await
            .is_empty());
    }
    // THEN the v1 fetch carried Stripe-Account, the thin one Stripe-Context, the platform's neither
    // (the thin event's own v2 event, read for its snapshot event, in its context too)
    let requests = stripe.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    let on_behalf: Vec<_> = requests
        .iter()
        .map(|r| (r.stripe_account.as_deref(), r.stripe_context.as_deref()))
        .collect();
    assert_eq!(
        on_behalf,
        [
            (Some("acct_1Connected"), None),
            (None, Some("acct_1Context")),
            (None, Some("acct_1Context")),
            (None, None)
        ]
    );
    assert!(requests[1].path.starts_with("/v2/core/events/"));
}

#[test]
fn the_stripe_read_rate_is_the_account_limit_shared_by_every_processor_instance() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rate = |settings: &[(&str, &str)]| {
        let mut all = vec![
            ("DEDUP_TABLE_NAME", "d"),
            ("BILLING_TABLE_NAME", "b"),
            ("STRIPE_API_BASE", "http://127.0.0.1:9"),
        ];
        all.extend_from_slice(settings);
        let config = stripe_pipeline::config::ProcessorConfig::from_lookup(|var| {
            all.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        runtime.block_on(async {
            let app = processor::init::app_from(config, &sdk_config().await)
                .await
                .unwrap();
            app.stripe.expect("a key is configured").max_rps()
        })
    };
    // Half of the account's limit (the rest is headroom for the dashboard, the CLI, other
    // integrations), split between the most instances the event source runs at once.
    let test_key = [
        ("STRIPE_API_KEY", "sk_test_x"),
        ("PROCESSOR_MAX_CONCURRENCY", "5"),
    ];
    assert_eq!(rate(&test_key), 25.0 * 0.5 / 5.0);
    let live_key = [
        ("STRIPE_API_KEY", "rk_live_x"),
        ("PROCESSOR_MAX_CONCURRENCY", "5"),
    ];
    assert_eq!(rate(&live_key), 100.0 * 0.5 / 5.0);
    let raised = [
        ("STRIPE_API_KEY", "sk_live_x"),
        ("PROCESSOR_MAX_CONCURRENCY", "20"),
        ("STRIPE_API_ACCOUNT_RPS", "400"),
    ];
    assert_eq!(rate(&raised), 400.0 * 0.5 / 20.0);
}
