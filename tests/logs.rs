//! What the real receiver binary logs at the most verbose level Lambda's logging config offers: its
//! decisions, and never the webhook body, the `Stripe-Signature` header or the signing secret. At TRACE
//! the Lambda runtime prints every raw invocation event and the AWS SDK its request bodies; only
//! `telemetry::init`'s filter keeps them out, and only the real process runs it.

use std::time::Duration;

use integration_tests::{lambda_process::*, *};
use stripe_pipeline::signature::{sign, unix_now, SigningSecret};

/// An API Gateway HTTP API (payload 2.0) event for `POST /webhooks/stripe`, as API Gateway hands it to
/// the function: the body as text, the header as sent.
fn http_api_event(body: &[u8], signature: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "POST /webhooks/stripe",
        "rawPath": "/webhooks/stripe",
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": signature,
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc",
            "http": {
                "method": "POST",
                "path": "/webhooks/stripe",
                "protocol": "HTTP/1.1",
                "sourceIp": "3.18.12.63",
                "userAgent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
            "requestId": "logs-test-request",
            "routeKey": "POST /webhooks/stripe",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1_767_225_600_000_u64,
        },
        "body": String::from_utf8_lossy(body),
        "isBase64Encoded": false,
    })
}

#[tokio::test]
async fn the_receiver_binary_at_trace_logs_its_decision_and_no_body_signature_or_secret() {
    let resources = create_resources();
    let binary = cargo_bin("receiver", "receiver");

    let id = unique_event_id();
    let canary = format!("canary-{:016x}", fastrand::u64(..));
    let mut event: serde_json::Value = serde_json::from_slice(&fixture("invoice.paid")).unwrap();
    event["id"] = id.clone().into();
    event["data"]["object"]["description"] = canary.clone().into();
    let body = serde_json::to_vec_pretty(&event).unwrap();
    let signature = sign(&body, &SigningSecret::new(SECRET).unwrap(), unix_now());
    let v1 = signature
        .split(',')
        .find_map(|part| part.strip_prefix("v1="))
        .expect("a v1 signature")
        .to_owned();

    let mut env = receiver_env(&resources);
    env.push(("AWS_LAMBDA_LOG_LEVEL", "TRACE".to_owned()));
    env.push(("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()));
    let output = std::env::temp_dir().join(format!("{}-receiver.log", resources.prefix));
    let mut function = LambdaProcess::start(
        &binary,
        &env,
        vec![(
            "logs-test-invocation".to_owned(),
            http_api_event(&body, &signature),
        )],
        output,
    )
    .await;

    // The invocation really went through verification, DynamoDB and SQS.
    let (request_id, answer) = function.answer(Duration::from_secs(60)).await;
    let log = function.output();
    assert_eq!(request_id, "logs-test-invocation", "{log}");
    let Answer::Response(response) = answer else {
        panic!("the function reported an error: {answer:?}\n{log}");
    };
    assert_eq!(response["statusCode"], 200, "{response}\n{log}");
    assert_eq!(response["body"], r#"{"status":"enqueued"}"#, "{log}");
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].body.as_deref().map(str::as_bytes),
        Some(&body[..])
    );

    // Our crates log at the level asked for: the decision line is there, with its fields.
    let decision = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["outcome"] == "enqueued")
        .unwrap_or_else(|| panic!("no decision line:\n{log}"));
    assert_eq!(decision["event_id"], id.as_str(), "{log}");
    assert_eq!(decision["event_type"], "invoice.paid");
    // and it is the request's metric too: EMF on the same line, no second line carrying it
    assert_eq!(decision["Outcome"], "enqueued", "{log}");
    assert!(decision["_aws"]["CloudWatchMetrics"].is_array(), "{log}");
    let emf_lines = log.lines().filter(|line| line.contains("\"_aws\"")).count();
    assert_eq!(emf_lines, 1, "{log}");

    // The runtime's raw event and the SDK's request bodies at TRACE would carry all of these.
    assert!(
        !log.contains(&canary),
        "the webhook body reached the logs:\n{log}"
    );
    assert!(!log.contains(&v1), "the signature reached the logs:\n{log}");
    assert!(
        !log.contains("v1="),
        "a signature header reached the logs:\n{log}"
    );
    assert!(
        !log.contains(SECRET),
        "the signing secret reached the logs:\n{log}"
    );
}
