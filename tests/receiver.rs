//! The receiver's `handle` (the function the Lambda runs) against DynamoDB Local and moto's SQS.

use std::collections::HashSet;

use integration_tests::*;
use receiver::handler::handle;
use stripe_pipeline::{
    dedup::{BodyStash, ClaimStatus, ClaimStore},
    queue::attribute,
    signature::{compute_v1, unix_now, SigningSecret},
};

async fn status(app: &ReceiverApp, request: lambda_http::Request) -> u16 {
    handle(app, request)
        .await
        .expect("handle")
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_fixture_event_is_accepted_and_enqueued_exactly_once_with_its_raw_bytes() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let events = fixture_events();
    assert_eq!(events.len(), 17);
    for (_, body) in &events {
        assert_eq!(status(&app, signed_now(body)).await, 200);
    }
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), events.len());
    for (event_type, body) in &events {
        let matching: Vec<_> = messages
            .iter()
            .filter(|m| attribute(m, attribute::EVENT_TYPE) == Some(event_type.as_str()))
            .collect();
        assert_eq!(matching.len(), 1, "{event_type}");
        let message = matching[0];
        assert_eq!(message.body.as_deref().map(str::as_bytes), Some(&body[..]));
        assert_eq!(attribute(message, attribute::LIVEMODE), Some("false"));
        assert_eq!(
            attribute(message, attribute::API_VERSION),
            Some("2026-07-29.dahlia")
        );
        let id = attribute(message, attribute::EVENT_ID).expect("event id");
        let record = app.store.lookup(id).await.unwrap().expect("record");
        assert_eq!(record.status, ClaimStatus::Enqueued);
        assert!(record.expires_at >= unix_now() + TTL.as_secs() - 60);
    }
}

#[tokio::test]
async fn a_redelivery_with_a_fresh_signature_is_200_without_a_second_message() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let body = with_event_id(&fixture("invoice.payment_failed"), &unique_event_id());
    assert_eq!(
        status(&app, signed_request(&body, SECRET, unix_now() - 120)).await,
        200
    );
    // Stripe's retry carries a new t= and so a new signature.
    let response = handle(&app, signed_now(&body)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), br#"{"status":"duplicate"}"#);
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
}

#[tokio::test]
async fn twenty_concurrent_deliveries_enqueue_once_and_every_other_answer_is_retryable() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let body = with_event_id(&fixture("checkout.session.completed"), &unique_event_id());
    let statuses =
        futures::future::join_all((0..20).map(|_| status(&app, signed_now(&body)))).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 1, "{statuses:?}");
    for s in &statuses {
        // 200 (new or duplicate) or 409 (claimed by another attempt): never a 4xx Stripe would give up on.
        assert!(*s == 200 || *s == 409, "{statuses:?}");
    }
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1, "{statuses:?}");
    // Stripe retries the 409s later: they are acknowledged as duplicates, still one message.
    assert_eq!(status(&app, signed_now(&body)).await, 200);
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}

#[tokio::test]
async fn during_rotation_old_and_new_secrets_are_both_accepted() {
    let resources = create_resources();
    let old = "whsec_old_rotation_secret";
    let new = "whsec_new_rotation_secret";
    let app = receiver_app(
        &resources,
        &[new, old],
        &dynamodb_endpoint(),
        &sqs_endpoint(),
    )
    .await;
    let t = unix_now();
    let v1 = |body: &[u8], secret: &str| compute_v1(body, &SigningSecret::new(secret).unwrap(), t);
    // Stripe sends one v1 per active secret while the old one is being rolled.
    let both = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let header = format!("t={t},v1={},v1={}", v1(&both, new), v1(&both, old));
    assert_eq!(status(&app, request(&both, Some(&header))).await, 200);
    // A sender still on the old secret only, and one already on the new one only.
    for secret in [old, new] {
        let body = with_event_id(&fixture("invoice.paid"), &unique_event_id());
        assert_eq!(status(&app, signed_request(&body, secret, t)).await, 200);
    }
    let unknown = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    assert_eq!(
        status(&app, signed_request(&unknown, "whsec_someone_else", t)).await,
        401
    );
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 3);
}

#[tokio::test]
async fn forged_stale_future_and_unsigned_deliveries_are_401_and_leave_no_trace() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let id = unique_event_id();
    let body = with_event_id(&fixture("charge.failed"), &id);
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'1' { b'2' } else { b'1' };
    let secret = SigningSecret::new(SECRET).unwrap();
    let now = unix_now();
    let cases = [
        (
            "tampered body",
            request(
                &tampered,
                Some(&stripe_pipeline::signature::sign(&body, &secret, now)),
            ),
        ),
        ("stale t", signed_request(&body, SECRET, now - 301)),
        ("future t", signed_request(&body, SECRET, now + 301)),
        ("missing header", request(&body, None)),
    ];
    for (case, request) in cases {
        assert_eq!(status(&app, request).await, 401, "{case}");
    }
    assert_eq!(app.store.lookup(&id).await.unwrap(), None);
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}

#[tokio::test]
async fn a_validly_signed_body_that_is_not_an_event_is_400() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    assert_eq!(status(&app, signed_now(b"{\"id\": \"evt_1\",")).await, 400);
    assert_eq!(
        status(&app, signed_now(b"{\"object\":\"event\"}")).await,
        400
    );
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}

#[tokio::test]
async fn dynamodb_unreachable_is_5xx_and_nothing_is_enqueued() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], UNREACHABLE, &sqs_endpoint()).await;
    let body = with_event_id(&fixture("payment_intent.succeeded"), &unique_event_id());
    let answer = status(&app, signed_now(&body)).await;
    assert!((500..600).contains(&answer), "{answer}");
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}

#[tokio::test]
async fn sqs_unreachable_is_5xx_and_unmarked_then_a_retry_enqueues_once() {
    let resources = create_resources();
    let id = unique_event_id();
    let body = with_event_id(&fixture("payment_intent.succeeded"), &id);
    // GIVEN SQS is down
    let down = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), UNREACHABLE).await;
    let answer = status(&down, signed_now(&body)).await;
    // THEN Stripe is told to retry, and the event is not remembered as seen
    assert!((500..600).contains(&answer), "{answer}");
    assert_eq!(down.store.lookup(&id).await.unwrap(), None);
    // WHEN SQS is back and Stripe retries (fresh signature)
    let up = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    assert_eq!(status(&up, signed_now(&body)).await, 200);
    // THEN exactly one message, and the event is marked
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        attribute(&messages[0], attribute::EVENT_ID),
        Some(id.as_str())
    );
    assert_eq!(
        up.store.lookup(&id).await.unwrap().map(|r| r.status),
        Some(ClaimStatus::Enqueued)
    );
}

#[tokio::test]
async fn an_event_too_large_for_sqs_is_stashed_and_the_processor_reads_it_back() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    // GIVEN an invoice event of ~700 KB (many line items), beyond SQS's 256 KiB
    let id = unique_event_id();
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("invoice.finalized")).unwrap();
    event["id"] = id.clone().into();
    event["data"]["object"]["description"] = "é".repeat(350_000).into();
    let body = serde_json::to_vec(&event).unwrap();
    assert!(body.len() > 600_000);
    // WHEN it is delivered
    assert_eq!(status(&app, signed_now(&body)).await, 200);
    // THEN the queue carries a reference, and the processor resolves it to the exact bytes
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        attribute(&messages[0], attribute::BODY_LOCATION),
        Some("dedup_table")
    );
    let reference = messages[0].body.clone().unwrap_or_default();
    let processor_app = processor_app(&resources, None).await;
    assert!(process_batch(&processor_app, messages).await.is_empty());
    let reference: stripe_pipeline::dedup::StashedBody =
        serde_json::from_str(&reference).expect("the message body is a reference");
    assert_eq!(reference.event_id, id);
    assert_eq!(
        processor_app.bodies.fetch_body(&reference).await.unwrap(),
        body
    );
}

#[tokio::test]
async fn the_processor_reports_only_poisoned_messages_from_a_real_queue() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let client = sqs(&sqs_endpoint()).await;
    let mut ids = HashSet::new();
    for event_type in ["invoice.paid", "charge.refunded", "customer.created"] {
        let id = unique_event_id();
        ids.insert(id.clone());
        let body = with_event_id(&fixture(event_type), &id);
        assert_eq!(status(&app, signed_now(&body)).await, 200);
    }
    // A message some other tool put on the queue by mistake.
    client
        .send_message()
        .queue_url(&resources.event_queue_url)
        .message_body("this is not a stripe event")
        .send()
        .await
        .unwrap();
    let messages = drain(&client, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 4);
    let poison: Vec<_> = messages
        .iter()
        .filter(|m| m.body.as_deref() == Some("this is not a stripe event"))
        .filter_map(|m| m.message_id.clone())
        .collect();
    let processor_app = processor_app(&resources, None).await;
    let failed = process_batch(&processor_app, messages).await;
    assert_eq!(failed, poison);
}

#[tokio::test]
async fn a_signed_thin_event_is_enqueued_once_and_applied_once_from_the_stripe_api() {
    let resources = create_resources();
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    // GIVEN a subscription update, and Stripe's API serving the subscription as it left it
    let snapshot = with_event_id(
        &fixture("customer.subscription.updated"),
        &unique_event_id(),
    );
    let event: serde_json::Value = serde_json::from_slice(&snapshot).unwrap();
    let subscription = event["data"]["object"]["id"].as_str().unwrap().to_owned();
    let customer = event["data"]["object"]["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let stripe =
        stripe_webhooks::fake_stripe::FakeStripe::start(vec![event.clone()], FAKE_STRIPE_KEY)
            .await
            .expect("start the fake Stripe API");
    // WHEN Stripe delivers its thin form (RFC 3339 `created`, no data) by webhook, and retries it
    let thin = stripe_pipeline::delivery::thin_of(&snapshot).expect("a thin form");
    assert!(serde_json::from_slice::<serde_json::Value>(&thin).unwrap()["created"].is_string());
    assert_eq!(status(&app, signed_now(&thin)).await, 200);
    let retry = handle(&app, signed_now(&thin)).await.unwrap();
    assert_eq!(retry.body().as_ref(), br#"{"status":"duplicate"}"#);
    // THEN it is on the queue once, as the bytes Stripe signed
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].body.as_deref().map(str::as_bytes),
        Some(&thin[..])
    );
    assert_eq!(
        attribute(&messages[0], attribute::EVENT_TYPE),
        Some("v1.customer.subscription.updated")
    );
    // AND the processor fetches the subscription and applies it, once even if SQS redelivers it
    let processor = processor_app_with_stripe(&resources, None, Some(&stripe.base_url)).await;
    assert!(process_batch(&processor, messages.clone()).await.is_empty());
    let applied = billing_state(&resources).await;
    assert!(process_batch(&processor, messages).await.is_empty());
    assert_eq!(billing_state(&resources).await, applied);
    let path = format!("/v1/subscriptions/{subscription}");
    assert!(stripe
        .requests()
        .iter()
        .any(|r| r.path == path && r.status == 200));
    let written =
        stripe_pipeline::billing::subscription(&processor.billing, &customer, &subscription)
            .await
            .unwrap()
            .expect("the subscription is written");
    assert_eq!(
        Some(written.cancel_at_period_end),
        event["data"]["object"]["cancel_at_period_end"].as_bool()
    );
}

#[tokio::test]
async fn a_connected_accounts_test_mode_event_at_a_live_endpoint_is_200_and_leaves_no_trace() {
    // GIVEN a live Connect endpoint
    let resources = create_resources();
    let mut app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    app.livemode = Some(true);
    // WHEN Stripe sends it a connected account's test-mode event, signed with the live secret
    let id = unique_event_id();
    let mut event: serde_json::Value =
        serde_json::from_slice(&with_event_id(&fixture("invoice.paid"), &id)).unwrap();
    event["account"] = "acct_1ConnectedTest".into();
    event["livemode"] = false.into();
    let body = serde_json::to_vec(&event).unwrap();
    let response = handle(&app, signed_now(&body)).await.unwrap();
    // THEN Stripe is told it arrived, and nothing was claimed or enqueued
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), br#"{"status":"ignored"}"#);
    assert_eq!(app.store.lookup(&id).await.unwrap(), None);
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}

/// The receiver's settings as the template gives them, with the allow-list read from `parameter`.
fn config_with_allow_list(
    resources: &Resources,
    parameter: &str,
) -> stripe_pipeline::config::ReceiverConfig {
    let env = std::collections::HashMap::from([
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("DEDUP_TABLE_NAME", resources.dedup_table.clone()),
        ("EVENT_QUEUE_URL", resources.event_queue_url.clone()),
        ("SOURCE_IP_ALLOWLIST_PARAMETER", parameter.to_owned()),
    ]);
    stripe_pipeline::config::ReceiverConfig::from_lookup(|var| env.get(var).cloned())
        .expect("config")
}

#[tokio::test]
async fn the_allow_list_written_from_stripes_file_is_read_at_cold_start_and_enforced() {
    use stripe_pipeline::source_ips::{self, SourceIpAllowList};
    let resources = create_resources();
    // GIVEN Stripe's ips_webhooks.json, written to the parameter as `stripe-webhooks source-ips put`
    // does
    let parameter = format!("/{}/source-ips", resources.prefix);
    let file = r#"{"WEBHOOKS": ["3.18.12.63", "3.130.192.231", "13.235.14.237"]}"#;
    let list = SourceIpAllowList::from_stripe_file(file).unwrap();
    source_ips::store(&ssm().await, &parameter, &list)
        .await
        .unwrap();
    // WHEN the receiver cold-starts with the stack's parameter name
    let deployed = receiver::init::app_from(
        config_with_allow_list(&resources, &parameter),
        &sdk_config_at(&sqs_endpoint()).await,
    )
    .await
    .expect("cold start");
    // THEN it holds Stripe's addresses
    assert_eq!(deployed.source_ips, Some(list));
    // AND serves them, on the real table and queue, while any other address gets 403 with nothing
    // claimed or sent
    let mut app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    app.source_ips = deployed.source_ips;
    let from_stripe = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let from_elsewhere = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    assert_eq!(
        status(
            &app,
            from_address(signed_now(&from_stripe), "13.235.14.237")
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &app,
            from_address(signed_now(&from_elsewhere), "198.51.100.7")
        )
        .await,
        403
    );
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].body.as_deref().map(str::as_bytes),
        Some(&from_stripe[..])
    );
    let elsewhere_id = stripe_pipeline::event::EventEnvelope::parse(&from_elsewhere)
        .unwrap()
        .id;
    assert_eq!(app.store.lookup(&elsewhere_id).await.unwrap(), None);
}

#[tokio::test]
async fn a_missing_or_invalid_allow_list_fails_the_cold_start_never_allows_all() {
    use receiver::init::{app_from, InitError};
    use stripe_pipeline::source_ips::SourceIpError;
    let resources = create_resources();
    let aws = sdk_config_at(&sqs_endpoint()).await;
    // A parameter that was never written
    let missing = format!("/{}/never-written", resources.prefix);
    let err = app_from(config_with_allow_list(&resources, &missing), &aws)
        .await
        .expect_err("a missing parameter must fail the cold start");
    assert!(
        matches!(err, InitError::SourceIps(SourceIpError::Fetch { .. })),
        "{err}"
    );
    assert!(
        stripe_pipeline::telemetry::error_chain(&err).contains("ParameterNotFound"),
        "{}",
        stripe_pipeline::telemetry::error_chain(&err)
    );
    // A parameter holding something that is not a list of addresses
    let garbled = format!("/{}/garbled", resources.prefix);
    ssm()
        .await
        .put_parameter()
        .name(&garbled)
        .value("3.18.12.63,stripe.com")
        .r#type(aws_sdk_ssm::types::ParameterType::StringList)
        .send()
        .await
        .unwrap();
    let err = app_from(config_with_allow_list(&resources, &garbled), &aws)
        .await
        .expect_err("an invalid list must fail the cold start");
    assert!(
        matches!(&err, InitError::SourceIps(SourceIpError::InvalidAddress(a)) if a == "stripe.com"),
        "{err}"
    );
    // SSM unreachable
    let err = app_from(
        config_with_allow_list(&resources, &garbled),
        &sdk_config_at(UNREACHABLE).await,
    )
    .await
    .expect_err("an unreadable parameter must fail the cold start");
    assert!(
        matches!(err, InitError::SourceIps(SourceIpError::Fetch { .. })),
        "{err}"
    );
}

/// A request whose invocation ends `secs` from now, as Lambda hands it to the function.
fn ending_in(request: lambda_http::Request, secs: u64) -> lambda_http::Request {
    use lambda_http::RequestExt;
    request.with_lambda_context(context_ending_in(secs))
}

#[tokio::test]
async fn a_queue_that_hangs_past_the_deadline_gets_503_and_the_claim_is_released() {
    let resources = create_resources();
    // GIVEN an SQS endpoint that accepts connections and never answers (the SDK's own timeout, 10 s
    // here, is longer than the invocation)
    let hung = black_hole().await;
    let app = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &hung).await;
    let body = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let id = stripe_pipeline::event::EventEnvelope::parse(&body)
        .unwrap()
        .id;
    // WHEN a delivery arrives in an invocation with 3 s left
    let response = handle(&app, ending_in(signed_now(&body), 3)).await.unwrap();
    // THEN the answer is a retryable 503 naming the deadline, sent before Lambda would end it
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.body().as_ref(),
        br#"{"error":"deadline exceeded"}"#
    );
    // AND the claim was given back, so Stripe's retry is enqueued at once, not 409'd for the lease
    assert_eq!(app.store.lookup(&id).await.unwrap(), None);
    let healthy = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    assert_eq!(status(&healthy, signed_now(&body)).await, 200);
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
}

#[tokio::test]
async fn a_dedup_table_that_hangs_past_the_deadline_gets_503_and_nothing_is_sent() {
    let resources = create_resources();
    let hung = black_hole().await;
    let app = receiver_app(&resources, &[SECRET], &hung, &sqs_endpoint()).await;
    let body = with_event_id(&fixture("invoice.paid"), &unique_event_id());
    let response = handle(&app, ending_in(signed_now(&body), 3)).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.body().as_ref(),
        br#"{"error":"deadline exceeded"}"#
    );
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}
