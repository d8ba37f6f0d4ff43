//! Notification routing through the real processor: event types to their channels (Slack sinks and
//! SES on moto), what the messages say, and a channel that is down retried alone.

use integration_tests::*;
use stripe_pipeline::{
    notify::{Channel, EmailNotifier, Router, Routes},
    signature::unix_now,
};

const SENDER: &str = "pipeline@example.com";

async fn ses(endpoint: &str) -> aws_sdk_sesv2::Client {
    let config = aws_sdk_sesv2::config::Builder::from(&sdk_config().await)
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sesv2::Client::from_conf(config)
}

/// moto keeps every email it accepted; these are the ones sent to `recipient`: (subject, body).
async fn emails_to(recipient: &str) -> Vec<(String, String)> {
    let data: serde_json::Value = reqwest::get(format!("{}/moto-api/data.json", sqs_endpoint()))
        .await
        .expect("moto data")
        .json()
        .await
        .expect("moto data JSON");
    data["ses"]["Message"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["destinations"]["ToAddresses"]
                .as_array()
                .is_some_and(|to| to.iter().any(|a| a == recipient))
        })
        .map(|m| {
            (
                m["subject"].as_str().unwrap_or_default().to_owned(),
                m["body"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

struct Channels {
    payments: FakeSlack,
    support: FakeSlack,
    urgent: FakeSlack,
    recipient: String,
    routes: Routes,
}

async fn channels() -> Channels {
    let (payments, support, urgent) = (
        FakeSlack::start().await.expect("fake slack"),
        FakeSlack::start().await.expect("fake slack"),
        FakeSlack::start().await.expect("fake slack"),
    );
    let recipient = format!("disputes-{:08x}@example.com", fastrand::u32(..));
    let document = serde_json::json!({
        "channels": {
            "payments": {"type": "slack", "webhook_url": payments.url},
            "support": {"type": "slack", "webhook_url": support.url},
            "urgent": {"type": "slack", "webhook_url": urgent.url},
            "disputes-email": {"type": "email", "to": [recipient]},
        },
        "routes": [
            {"events": ["payment_intent.succeeded"], "channels": ["payments"]},
            {"events": ["invoice.payment_failed", "payment_intent.payment_failed"], "channels": ["support"]},
            {"events": ["charge.dispute.*"], "channels": ["urgent", "disputes-email"]},
        ],
    });
    let routes = Routes::parse(Some(&document.to_string()), None, Some(SENDER)).expect("routes");
    // The sender must be an SES identity, as in AWS (moto refuses unverified senders too).
    ses(&sqs_endpoint())
        .await
        .create_email_identity()
        .email_identity(SENDER)
        .send()
        .await
        .expect("SES identity");
    Channels {
        payments,
        support,
        urgent,
        recipient,
        routes,
    }
}

async fn app_with(resources: &Resources, router: Router) -> ProcessorApp {
    let mut app = processor_app(resources, None).await;
    app.notify = router;
    app
}

/// A fixture under a fresh id with `object` fields replaced.
fn event(fixture_name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&with_event_id(&fixture(fixture_name), &unique_event_id())).unwrap();
    edit(&mut event["data"]["object"]);
    serde_json::to_vec(&event).unwrap()
}

#[tokio::test]
async fn each_event_type_reaches_its_channels_once_with_amounts_and_deadlines_people_can_use() {
    let resources = create_resources();
    let channels = channels().await;
    let router = Router::new(
        channels.routes.clone(),
        Some(ses(&sqs_endpoint()).await),
        Some(SENDER),
    )
    .unwrap();
    let app = app_with(&resources, router).await;
    let due_by = unix_now() as i64 + 6 * 86_400 + 3600;
    let batch = [
        message(
            "yen",
            &event("payment_intent.succeeded", |o| {
                o["amount"] = 500.into();
                o["amount_received"] = 500.into();
                o["currency"] = "jpy".into();
            }),
        ),
        message(
            "dinar",
            &event("payment_intent.succeeded", |o| {
                o["amount"] = 1500.into();
                o["amount_received"] = 1500.into();
                o["currency"] = "kwd".into();
            }),
        ),
        message("declined", &event("payment_intent.payment_failed", |_| {})),
        message(
            "dispute",
            &event("charge.dispute.created", |o| {
                o["amount"] = 4200.into();
                o["currency"] = "usd".into();
                o["reason"] = "fraudulent".into();
                o["evidence_details"]["due_by"] = due_by.into();
            }),
        ),
        message(
            "lifecycle",
            &event("customer.subscription.trial_will_end", |_| {}),
        ),
    ];
    let twice: Vec<_> = batch.iter().cloned().chain(batch.iter().cloned()).collect();
    process_until_done(&app, twice).await;

    let payments = channels.payments.texts();
    assert_eq!(payments.len(), 2, "{payments:?}");
    assert!(
        payments.iter().any(|t| t.contains("500 JPY")),
        "{payments:?}"
    );
    assert!(
        payments.iter().any(|t| t.contains("1.500 KWD")),
        "{payments:?}"
    );
    let support = channels.support.texts();
    assert_eq!(support.len(), 1, "{support:?}");
    assert!(
        support[0].contains("10.99 USD") && support[0].contains("generic_decline"),
        "amount and decline reason: {support:?}"
    );
    let urgent = channels.urgent.texts();
    assert_eq!(urgent.len(), 1, "{urgent:?}");
    let deadline = stripe_pipeline::delivery::format_rfc3339(due_by)[..10].to_owned();
    assert!(
        urgent[0].contains("42.00 USD") && urgent[0].contains("fraudulent"),
        "{urgent:?}"
    );
    assert!(
        urgent[0].contains(&format!("evidence due {deadline} (6 days left)")),
        "{urgent:?}"
    );
    let emails = emails_to(&channels.recipient).await;
    assert_eq!(
        emails.len(),
        1,
        "one email for the dispute, none for the rest: {emails:?}"
    );
    let (subject, body) = &emails[0];
    assert!(
        subject.contains("dispute") && subject.contains("6 days left"),
        "{subject}"
    );
    assert!(
        body.contains("charge.dispute.created") && body.contains("stripe-webhooks status evt_"),
        "{body}"
    );
}

#[tokio::test]
async fn ses_down_retries_the_message_without_resending_slack_or_reapplying_state() {
    let resources = create_resources();
    let channels = channels().await;
    let dispute = event("charge.dispute.created", |o| {
        o["evidence_details"]["due_by"] = (unix_now() as i64 + 3 * 86_400).into();
    });
    // GIVEN SES unreachable (the email channel pointed at a closed port)
    let dead_ses = ses("http://127.0.0.1:9").await;
    let down = Router::new(
        channels.routes.clone(),
        Some(dead_ses.clone()),
        Some(SENDER),
    )
    .unwrap()
    .with_channel(
        "disputes-email",
        Channel::Email(EmailNotifier::new(
            dead_ses,
            SENDER,
            vec![channels.recipient.clone()],
        )),
    );
    let app = app_with(&resources, down).await;
    // WHEN the dispute is processed: Slack hears it, the email fails, so the message fails
    assert_eq!(
        process_batch(&app, vec![message("d", &dispute)]).await,
        ["d"]
    );
    assert_eq!(channels.urgent.texts().len(), 1);
    assert!(emails_to(&channels.recipient).await.is_empty());
    let state = billing_state(&resources).await;
    let without_notifications = |state: std::collections::BTreeMap<(String, String), String>| {
        state
            .into_iter()
            .filter(|((_, sk), _)| !sk.starts_with("NOTIFY#"))
            .collect::<Vec<_>>()
    };
    // THEN its retry, with SES back, sends the email only; the state is what the first attempt wrote
    let up = Router::new(
        channels.routes.clone(),
        Some(ses(&sqs_endpoint()).await),
        Some(SENDER),
    )
    .unwrap();
    let app = app_with(&resources, up).await;
    assert!(process_batch(&app, vec![message("d", &dispute)])
        .await
        .is_empty());
    assert_eq!(channels.urgent.texts().len(), 1, "Slack not re-sent");
    assert_eq!(emails_to(&channels.recipient).await.len(), 1);
    assert_eq!(
        without_notifications(billing_state(&resources).await),
        without_notifications(state),
        "state not applied again"
    );
}

#[test]
fn an_invalid_routing_document_stops_the_cold_start_naming_the_entry() {
    let lookup = |routes: &'static str| {
        move |var: &str| match var {
            "DEDUP_TABLE_NAME" => Some("d".to_owned()),
            "BILLING_TABLE_NAME" => Some("b".to_owned()),
            "NOTIFICATION_ROUTES" => Some(routes.to_owned()),
            _ => None,
        }
    };
    let config = stripe_pipeline::config::ProcessorConfig::from_lookup(lookup(
        r#"{"channels": {"ops": {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T/B/secret"}},
            "routes": [{"events": ["invoice.payment_failed"], "channels": ["opps"]}]}"#,
    ))
    .unwrap();
    let stripe_pipeline::config::OptionalSecret::Value(document) = &config.routes else {
        panic!("inline routes");
    };
    let error = Routes::parse(Some(document), None, None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "notification routes: routes[0].channels[0]: no channel named \"opps\""
    );
}

#[tokio::test]
async fn a_slack_channel_that_is_gone_is_a_configuration_error_and_the_message_is_not_retried() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    // Slack's answers for a webhook that no longer works: revoked or disallowed, removed, archived.
    for (status, body) in [
        (403, "action_prohibited"),
        (404, "no_service"),
        (410, "channel_is_archived"),
    ] {
        let failed = event("invoice.payment_failed", |_| {});
        slack.answer_next(SlackAnswer {
            status,
            retry_after_secs: None,
            body,
        });
        // WHEN the event is processed and Slack refuses the webhook for good
        let posts = slack.posts();
        // THEN the message is acknowledged (the billing effect is applied; retrying cannot fix a
        // configuration), after one post
        assert!(
            process_batch(&app, vec![message("m", &failed)])
                .await
                .is_empty(),
            "{status} {body}"
        );
        assert_eq!(slack.posts(), posts + 1, "{status}: not retried");
        assert!(slack.texts().is_empty());
        let id = serde_json::from_slice::<serde_json::Value>(&failed).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(stripe_pipeline::billing::BillingStore::get(
            &app.billing,
            &stripe_pipeline::billing::Key::event_marker(&id)
        )
        .await
        .unwrap()
        .is_some());
        // AND once the channel is fixed, a replay of the event sends what was not sent
        assert!(process_batch(&app, vec![message("m", &failed)])
            .await
            .is_empty());
        assert_eq!(slack.texts().len(), 1, "{status}");
        slack.clear();
    }
}

#[tokio::test]
async fn slack_rate_limiting_is_waited_out_for_its_retry_after_and_the_message_sent_once() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    // GIVEN Slack answering the first post with 429 and Retry-After: 1
    slack.answer_next(SlackAnswer {
        status: 429,
        retry_after_secs: Some(1),
        body: "rate_limited",
    });
    let failed = event("invoice.payment_failed", |_| {});
    // WHEN the event is processed
    // THEN the processor waited and posted again: one message, nothing for SQS to retry
    assert!(process_batch(&app, vec![message("m", &failed)])
        .await
        .is_empty());
    assert_eq!(slack.posts(), 2);
    assert_eq!(slack.texts().len(), 1);
}

#[tokio::test]
async fn a_slack_retry_after_too_long_to_wait_fails_the_message_for_sqs_to_retry() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let app = processor_app(&resources, Some(&slack.url)).await;
    slack.answer_next(SlackAnswer {
        status: 429,
        retry_after_secs: Some(600),
        body: "rate_limited",
    });
    let failed = event("invoice.payment_failed", |_| {});
    // WHEN Slack asks for ten minutes: the message fails now (SQS brings it back after its
    // visibility timeout) rather than holding the invocation
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        process_batch(&app, vec![message("m", &failed)]),
    )
    .await
    .expect("a long Retry-After is not slept");
    assert_eq!(outcome, ["m"]);
    assert_eq!(slack.posts(), 1);
    // THEN SQS's retry, once the wait is over (here: on a fresh instance, as this one holds its posts
    // to that webhook for the ten minutes Slack asked for), sends it once
    let app = processor_app(&resources, Some(&slack.url)).await;
    assert!(process_batch(&app, vec![message("m", &failed)])
        .await
        .is_empty());
    assert_eq!(slack.texts().len(), 1);
}
