//! The `stripe-webhooks` CLI against DynamoDB Local, moto's SQS and the project's fake Stripe API, through
//! the library functions the binary calls: backfill (pagination, 429 and 5xx, dedup against events
//! already received), replay and forced replay, the dead-letter queue, status, send, and the local
//! poller feeding the processor.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use aws_sdk_sqs::types::MessageAttributeValue;
use integration_tests::*;
use stripe_pipeline::{
    dedup::{ClaimStore, DynamoDedupStore},
    intake::{self, Admitted},
    queue::{attribute as attr, SqsEventQueue},
    signature::{unix_now, SigningSecret},
};
use stripe_webhooks::{
    backfill::{backfill, BackfillOptions},
    dead_letters,
    fake_stripe::{fixture_events, Fault},
    poll::{PollSettings, Poller, Target},
    progress::hidden,
    replay::{replay, ReplayError, Replayed},
    send::{self, Pacing, SendOptions},
    sqs::Queue,
    status::{status, Intake},
    stripe_api::{EventFilter, StripeApiError},
};

const SQS_MAX: usize = 256 * 1024;

async fn store(resources: &Resources) -> DynamoDedupStore {
    DynamoDedupStore::new(
        dynamodb(&dynamodb_endpoint()).await,
        &resources.dedup_table,
        TTL,
        LEASE,
    )
}

async fn event_queue(resources: &Resources) -> SqsEventQueue {
    SqsEventQueue::new(sqs(&sqs_endpoint()).await, &resources.event_queue_url)
}

fn tag(prefix: &str) -> String {
    format!("{prefix}{:06x}", fastrand::u32(..0x00ff_ffff))
}

fn fake_id(tag: &str, n: usize) -> String {
    format!("evt_{tag}{n:06}")
}

fn since_a_day_ago() -> EventFilter {
    EventFilter {
        created_gte: Some(unix_now() - 86_400),
        ..EventFilter::default()
    }
}

/// The event ids of drained messages, in order.
fn event_ids(messages: &[aws_lambda_events::event::sqs::SqsMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| attribute(m, attr::EVENT_ID).unwrap_or_default().to_owned())
        .collect()
}

/// A poller of the test's event queue running the processor in-process, batches as the template
/// makes them but without waiting for a window.
async fn poller(resources: &Resources, slack: Option<&str>, settings: PollSettings) -> Poller {
    let app = processor_app(resources, slack).await;
    Poller::new(
        Queue::new(sqs(&sqs_endpoint()).await, &resources.event_queue_url),
        Target::InProcess(Arc::new(app)),
        settings,
        REGION,
    )
    .await
    .expect("poller")
}

fn quick() -> PollSettings {
    PollSettings {
        batch_size: 10,
        batching_window: Duration::ZERO,
        wait_secs: 1,
        visibility_timeout_secs: None,
    }
}

#[tokio::test]
async fn backfill_of_250_events_over_3_pages_through_a_429_enqueues_each_once_and_skips_those_seen()
{
    let resources = create_resources();
    let tag = tag("bf");
    let fake = fake_stripe(&tag, 250, 0).await;
    let api = stripe_api(&fake.base_url);
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    // GIVEN 20 of the events already received, through the receiver's own path.
    let seen: Vec<String> = (0..250).step_by(13).map(|n| fake_id(&tag, n)).collect();
    assert_eq!(seen.len(), 20);
    for id in &seen {
        let event = api.event(id).await.unwrap();
        let admitted = intake::admit(
            &store,
            &queue,
            &event.envelope,
            event.bytes(),
            SQS_MAX,
            None,
        )
        .await
        .unwrap();
        assert_eq!(admitted, Admitted::Enqueued);
    }
    // AND Stripe answering the second page 429 (Retry-After: 1) and the third 503, once each.
    let before = fake.requests().len();
    fake.inject(
        before + 2,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    fake.inject(before + 4, Fault::ServerError(503));

    // WHEN backfilling the last day
    let options = BackfillOptions {
        filter: since_a_day_ago(),
        ..BackfillOptions::default()
    };
    let summary = backfill(&api, &store, &queue, &options, &hidden()).await;

    // THEN every page was fetched once it succeeded, after waiting as told.
    assert!(summary.complete(), "{summary:?}");
    assert_eq!(
        (
            summary.pages,
            summary.found,
            summary.enqueued,
            summary.already_seen
        ),
        (3, 250, 230, 20),
        "{summary:?}"
    );
    let requests = &fake.requests()[before..];
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 429, 200, 503, 200]);
    let cursors: Vec<Option<&str>> = requests.iter().map(|r| r.param("starting_after")).collect();
    let (page1_last, page2_last) = (fake_id(&tag, 99), fake_id(&tag, 199));
    assert_eq!(
        cursors,
        [
            None,
            Some(page1_last.as_str()),
            Some(page1_last.as_str()),
            Some(page2_last.as_str()),
            Some(page2_last.as_str())
        ]
    );
    assert!(requests
        .iter()
        .all(|r| r.param("limit") == Some("100") && r.param("created[gte]").is_some()));
    assert!(
        requests[2].at.duration_since(requests[1].at) >= Duration::from_secs(1),
        "Retry-After was not obeyed"
    );
    let stats = api.stats();
    assert_eq!((stats.rate_limited, stats.server_errors), (1, 1));

    // AND the queue holds each of the 250 events exactly once, byte for byte as Stripe served it.
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    let ids = event_ids(&messages);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (250, 250));
    let expected: HashSet<String> = (0..250).map(|n| fake_id(&tag, n)).collect();
    assert_eq!(distinct, expected.iter().collect());
    let sample = fake_id(&tag, 123);
    let served = api.event(&sample).await.unwrap();
    let queued = messages
        .iter()
        .find(|m| attribute(m, attr::EVENT_ID) == Some(sample.as_str()))
        .unwrap();
    assert_eq!(
        queued.body.as_deref().map(str::as_bytes),
        Some(served.bytes())
    );

    // AND running it again enqueues nothing.
    let again = backfill(&api, &store, &queue, &options, &hidden()).await;
    assert_eq!((again.enqueued, again.already_seen), (0, 250));
    assert_eq!(
        queue_depth(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await,
        0
    );
}

#[tokio::test]
async fn backfill_filters_by_type_and_undelivered_and_a_dry_run_writes_nothing() {
    let resources = create_resources();
    let tag = tag("bff");
    let fake = fake_stripe(&tag, 60, 4).await;
    let api = stripe_api(&fake.base_url);
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    let undelivered: HashSet<String> = (0..60).step_by(4).map(|n| fake_id(&tag, n)).collect();

    // WHEN only undelivered events are asked for, as a dry run
    let mut options = BackfillOptions {
        filter: EventFilter {
            delivery_success: Some(false),
            ..since_a_day_ago()
        },
        dry_run: true,
        page_size: 10,
        ..BackfillOptions::default()
    };
    let dry = backfill(&api, &store, &queue, &options, &hidden()).await;
    // THEN they are counted page by page, and nothing is written.
    assert_eq!((dry.pages, dry.found, dry.enqueued), (2, 15, 15), "{dry:?}");
    assert_eq!(
        fake.requests().last().unwrap().param("delivery_success"),
        Some("false")
    );
    let depth = |url: String| async move { queue_depth(&sqs(&sqs_endpoint()).await, &url).await };
    assert_eq!(depth(resources.event_queue_url.clone()).await, 0);
    for id in &undelivered {
        assert_eq!(store.lookup(id).await.unwrap(), None);
    }

    // WHEN it runs for real
    options.dry_run = false;
    let real = backfill(&api, &store, &queue, &options, &hidden()).await;
    assert_eq!((real.found, real.enqueued), (15, 15));
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    let ids: HashSet<String> = event_ids(&messages).into_iter().collect();
    assert_eq!(ids, undelivered);

    // AND by type: exactly the served events of that type, the already enqueued ones skipped.
    let all = fixture_events(
        &repo_root().join("tests/fixtures/stripe/events"),
        &tag,
        60,
        0,
        60,
        4,
    )
    .unwrap();
    let of_type = |t: &str| {
        all.iter()
            .filter(|e| e["type"] == t)
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect::<HashSet<_>>()
    };
    let wanted: HashSet<String> = &of_type("invoice.paid") | &of_type("charge.refunded");
    let by_type = BackfillOptions {
        filter: EventFilter {
            types: vec!["invoice.paid".into(), "charge.refunded".into()],
            ..since_a_day_ago()
        },
        ..BackfillOptions::default()
    };
    let typed = backfill(&api, &store, &queue, &by_type, &hidden()).await;
    let already = wanted.intersection(&undelivered).count();
    assert_eq!(
        (typed.found, typed.enqueued, typed.already_seen),
        (wanted.len(), wanted.len() - already, already)
    );
    let requests = fake.requests();
    let types: Vec<&str> = requests
        .last()
        .unwrap()
        .query
        .iter()
        .filter(|(k, _)| k == "types[]")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(types, ["invoice.paid", "charge.refunded"]);
}

#[tokio::test]
async fn a_page_stripe_keeps_refusing_stops_the_backfill_with_what_was_done() {
    let resources = create_resources();
    let tag = tag("bfs");
    let fake = fake_stripe(&tag, 30, 0).await;
    let api = stripe_api(&fake.base_url);
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    // GIVEN the second page failing on every attempt (the first try plus 4 retries)
    for n in 2..=6 {
        fake.inject(n, Fault::ServerError(500));
    }
    let options = BackfillOptions {
        filter: since_a_day_ago(),
        page_size: 20,
        ..BackfillOptions::default()
    };
    let summary = backfill(&api, &store, &queue, &options, &hidden()).await;
    assert!(matches!(
        summary.stopped,
        Some(StripeApiError::GaveUp {
            status: 500,
            attempts: 5
        })
    ));
    assert_eq!((summary.found, summary.enqueued), (20, 20));
    // A rerun finishes the job without enqueueing the first page again.
    let rerun = backfill(&api, &store, &queue, &options, &hidden()).await;
    assert!(rerun.complete());
    assert_eq!((rerun.enqueued, rerun.already_seen), (10, 20));
}

#[tokio::test]
async fn replay_enqueues_once_and_a_forced_replay_enqueues_again_without_applying_twice() {
    let resources = create_resources();
    let tag = tag("rp");
    let fake = fake_stripe(&tag, 5, 0).await;
    let api = stripe_api(&fake.base_url);
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    // evt_<tag>000002 is made from charge.refunded (fixtures cycle in name order).
    let id = fake_id(&tag, 2);

    let (first, event) = replay(&api, &store, &queue, &id, false, SQS_MAX)
        .await
        .unwrap();
    assert_eq!(first, Replayed::Enqueued);
    assert_eq!(event.envelope.event_type.as_str(), "charge.refunded");
    let (second, _) = replay(&api, &store, &queue, &id, false, SQS_MAX)
        .await
        .unwrap();
    assert_eq!(second, Replayed::AlreadySeen);
    let (forced, _) = replay(&api, &store, &queue, &id, true, SQS_MAX)
        .await
        .unwrap();
    assert_eq!(forced, Replayed::Forced);
    let sqs_client = sqs(&sqs_endpoint()).await;
    assert_eq!(
        queue_depth(&sqs_client, &resources.event_queue_url).await,
        2
    );

    // The processor applies the first copy; the forced copy finds the event's marker and changes
    // nothing.
    let settings = PollSettings {
        batch_size: 1,
        ..quick()
    };
    let poller = poller(&resources, None, settings).await;
    let one = poller.poll_once().await.unwrap().unwrap();
    assert_eq!((one.received, one.succeeded), (1, 1));
    let state = billing_state(&resources).await;
    assert!(!state.is_empty());
    let two = poller.poll_once().await.unwrap().unwrap();
    assert_eq!((two.received, two.succeeded), (1, 1));
    assert_eq!(billing_state(&resources).await, state);
    assert_eq!(
        queue_depth(&sqs_client, &resources.event_queue_url).await,
        0
    );

    // An id Stripe does not know is an error, and nothing is enqueued.
    let missing = replay(&api, &store, &queue, "evt_nosuchevent", false, SQS_MAX).await;
    assert!(matches!(
        missing,
        Err(ReplayError::Api(StripeApiError::NotFound))
    ));
    assert_eq!(
        queue_depth(&sqs_client, &resources.event_queue_url).await,
        0
    );
}

#[tokio::test]
async fn status_shows_what_the_dedup_table_and_the_billing_state_know() {
    let resources = create_resources();
    let slack = FakeSlack::start().await.expect("fake slack");
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    let app = processor_app(&resources, Some(&slack.url)).await;
    let id = unique_event_id();
    let body = with_event_id(&fixture("payment_intent.succeeded"), &id);

    let unknown = status(&store, &app.billing, &id).await.unwrap();
    assert_eq!(unknown.intake, Intake::Unknown);
    assert_eq!(unknown.applied_at, None);

    let envelope = stripe_pipeline::event::EventEnvelope::parse(&body).unwrap();
    intake::admit(&store, &queue, &envelope, &body, SQS_MAX, None)
        .await
        .unwrap();
    let enqueued = status(&store, &app.billing, &id).await.unwrap();
    assert!(
        matches!(&enqueued.intake, Intake::Enqueued { event_type, expires_at }
            if event_type == "payment_intent.succeeded" && *expires_at > unix_now() + 29 * 86_400),
        "{enqueued:?}"
    );
    assert!(enqueued.to_string().contains("not applied"), "{enqueued}");

    let poller = poller(&resources, Some(&slack.url), quick()).await;
    let report = poller.poll_once().await.unwrap().unwrap();
    assert_eq!(report.succeeded, 1);
    let applied = status(&store, &app.billing, &id).await.unwrap();
    assert!(applied.applied_at.is_some(), "{applied:?}");
    assert_eq!(
        applied.applied_type.as_deref(),
        Some("payment_intent.succeeded")
    );
    assert_eq!(applied.notifications.len(), 1, "{applied:?}");
    assert_eq!(applied.notifications[0].status, "sent");
    assert!(applied.notifications[0].channel.starts_with("slack."));
    let text = applied.to_string();
    assert!(
        text.contains("applied at") && text.contains("sent"),
        "{text}"
    );
}

/// Puts `count` messages straight onto a queue, with event attributes as the receiver sets them.
async fn put_messages(queue_url: &str, count: usize) -> HashMap<String, String> {
    let client = sqs(&sqs_endpoint()).await;
    let mut sent = HashMap::new();
    for _ in 0..count {
        let id = unique_event_id();
        let body = String::from_utf8(with_event_id(&fixture("invoice.paid"), &id)).unwrap();
        let value = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .unwrap()
        };
        client
            .send_message()
            .queue_url(queue_url)
            .message_body(&body)
            .message_attributes(attr::EVENT_ID, value(&id))
            .message_attributes(attr::EVENT_TYPE, value("invoice.paid"))
            .message_attributes(attr::BODY_LOCATION, value("inline"))
            .send()
            .await
            .unwrap();
        sent.insert(id, body);
    }
    sent
}

#[tokio::test]
async fn dlq_redrive_moves_every_message_once_and_list_and_show_leave_them_in_place() {
    let resources = create_resources();
    let client = sqs(&sqs_endpoint()).await;
    let sent = put_messages(&resources.dead_letter_queue_url, 25).await;
    let dlq = Queue::new(client.clone(), &resources.dead_letter_queue_url);
    let events = Queue::new(client.clone(), &resources.event_queue_url);

    // list and show see the messages and leave them visible.
    let listed = dead_letters::list(&dlq, 100).await.unwrap();
    assert_eq!(listed.len(), 25);
    let listed_ids: HashSet<String> = listed.iter().filter_map(|l| l.event_id.clone()).collect();
    assert_eq!(listed_ids, sent.keys().cloned().collect());
    assert_eq!(
        queue_depth(&client, &resources.dead_letter_queue_url).await,
        25
    );
    let (some_id, some_body) = sent.iter().next().unwrap();
    let shown = dead_letters::show(&dlq, some_id, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&shown.body, some_body);
    assert_eq!(shown.event_type.as_deref(), Some("invoice.paid"));
    assert!(dead_letters::show(&dlq, "evt_not_there", 100)
        .await
        .unwrap()
        .is_none());

    // redrive --max 10, then the rest.
    let first = dead_letters::redrive(&dlq, &events, Some(10), &hidden())
        .await
        .unwrap();
    assert_eq!((first.moved, first.failed), (10, 0));
    assert_eq!(
        queue_depth(&client, &resources.dead_letter_queue_url).await,
        15
    );
    let rest = dead_letters::redrive(&dlq, &events, None, &hidden())
        .await
        .unwrap();
    assert_eq!((rest.moved, rest.left_in_dlq, rest.failed), (15, 0, 0));
    assert_eq!(
        queue_depth(&client, &resources.dead_letter_queue_url).await,
        0
    );

    // Each message is on the event queue exactly once, body and attributes intact.
    let moved = drain(&client, &resources.event_queue_url).await;
    assert_eq!(moved.len(), 25);
    for message in &moved {
        let id = attribute(message, attr::EVENT_ID).unwrap();
        assert_eq!(message.body.as_ref(), sent.get(id));
        assert_eq!(attribute(message, attr::EVENT_TYPE), Some("invoice.paid"));
        assert_eq!(attribute(message, attr::BODY_LOCATION), Some("inline"));
    }
    let distinct: HashSet<String> = event_ids(&moved).into_iter().collect();
    assert_eq!(distinct.len(), 25);
    let again = dead_letters::redrive(&dlq, &events, None, &hidden())
        .await
        .unwrap();
    assert_eq!(again.moved, 0);
}

#[tokio::test]
async fn the_poller_deletes_what_the_processor_handled_and_sqs_dead_letters_a_poisoned_message() {
    let resources = create_resources();
    let client = sqs(&sqs_endpoint()).await;
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    // GIVEN three good events and one message the processor can never handle
    let mut good = HashSet::new();
    for fixture_name in [
        "invoice.paid",
        "charge.refunded",
        "customer.subscription.created",
    ] {
        let id = unique_event_id();
        let body = with_event_id(&fixture(fixture_name), &id);
        let envelope = stripe_pipeline::event::EventEnvelope::parse(&body).unwrap();
        intake::admit(&store, &queue, &envelope, &body, SQS_MAX, None)
            .await
            .unwrap();
        good.insert(id);
    }
    let poison = "{\"id\": \"evt_poison\", \"truncated";
    client
        .send_message()
        .queue_url(&resources.event_queue_url)
        .message_body(poison)
        .send()
        .await
        .unwrap();
    // Failed messages come back at once (the template's 200 s visibility timeout would stall a test).
    let settings = PollSettings {
        visibility_timeout_secs: Some(0),
        wait_secs: 0,
        ..quick()
    };
    let poller = poller(&resources, None, settings).await;
    let max_receives = poller.queue_info().max_receive_count.unwrap();
    assert_eq!(max_receives, 5, "the template's MaxReceiveCount");

    // WHEN one batch is processed
    let first = poller.poll_once().await.unwrap().unwrap();
    // THEN the good ones are applied and deleted, the poisoned one is left for SQS to retry.
    assert_eq!((first.received, first.succeeded), (4, 3), "{first:?}");
    assert_eq!(first.failed.len(), 1);
    assert_eq!(first.failed[0].receive_count, Some(1));
    let billing = processor_app(&resources, None).await.billing;
    for id in &good {
        let known = status(&store, &billing, id).await.unwrap();
        assert!(known.applied_at.is_some(), "{known:?}");
    }

    // AND after maxReceiveCount failed receives SQS moves it to the dead-letter queue.
    let mut counts = vec![1];
    for _ in 0..10 {
        match poller.poll_once().await.unwrap() {
            Some(report) => {
                assert_eq!(report.succeeded, 0);
                counts.extend(report.failed.iter().filter_map(|f| f.receive_count));
            }
            None => break,
        }
    }
    assert_eq!(counts, [1, 2, 3, 4, 5]);
    assert_eq!(queue_depth(&client, &resources.event_queue_url).await, 0);
    let dlq = Queue::new(client.clone(), &resources.dead_letter_queue_url);
    let letters = dead_letters::list(&dlq, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, poison);

    // Once "fixed", a redrive puts it back on the event queue for a fresh set of attempts.
    let events = Queue::new(client.clone(), &resources.event_queue_url);
    let redriven = dead_letters::redrive(&dlq, &events, None, &hidden())
        .await
        .unwrap();
    assert_eq!(redriven.moved, 1);
    let back = drain(&client, &resources.event_queue_url).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body.as_deref(), Some(poison));
}

#[tokio::test]
async fn send_posts_signed_fixtures_that_the_receiver_enqueues_once() {
    let resources = create_resources();
    let receiver = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let server = ReceiverServer::start(receiver).await;
    let fixtures = send::fixtures_dir(&repo_root());
    let mut events = send::prepare("invoice.paid", &fixtures, 3).unwrap();
    events.extend(send::prepare("charge.refunded", &fixtures, 1).unwrap());
    let options = SendOptions {
        url: server.url.clone(),
        secret: SigningSecret::new(SECRET).unwrap(),
        pacing: Pacing {
            duplicate: true,
            concurrency: 1,
            shuffle: false,
        },
    };
    let http = send::client().unwrap();

    // One after another: each event enqueued, then answered as a duplicate.
    let deliveries = send::send(&http, &options, &events).await;
    let answers: Vec<(u16, &str)> = deliveries
        .iter()
        .map(|d| (d.status.unwrap(), d.answer.as_str()))
        .collect();
    let enqueued = (200, r#"{"status":"enqueued"}"#);
    let duplicate = (200, r#"{"status":"duplicate"}"#);
    assert_eq!(answers, [enqueued, duplicate].repeat(4));
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    let ids: HashSet<String> = event_ids(&messages).into_iter().collect();
    let expected: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!((messages.len(), ids), (4, expected));

    // Concurrently and shuffled: still one message per event (a copy racing its twin may get 409,
    // which Stripe would retry).
    let many = send::prepare("customer.subscription.updated", &fixtures, 20).unwrap();
    let racing = SendOptions {
        pacing: Pacing {
            duplicate: true,
            concurrency: 8,
            shuffle: true,
        },
        ..options.clone()
    };
    let deliveries = send::send(&http, &racing, &many).await;
    assert_eq!(deliveries.len(), 40);
    assert!(deliveries
        .iter()
        .all(|d| matches!(d.status, Some(200 | 409))));
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    let ids: Vec<String> = event_ids(&messages);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (20, 20));

    // Signed with another secret: refused.
    let forged = SendOptions {
        secret: SigningSecret::new("whsec_not_the_receivers").unwrap(),
        pacing: Pacing::default(),
        ..options
    };
    let refused = send::send(&http, &forged, &events[..1]).await;
    assert_eq!(refused[0].status, Some(401));
}

#[tokio::test]
async fn send_via_eventbridge_puts_rule_shaped_messages_that_apply_once_beside_the_webhook_copies()
{
    let resources = create_resources();
    let receiver = receiver_app(&resources, &[SECRET], &dynamodb_endpoint(), &sqs_endpoint()).await;
    let server = ReceiverServer::start(receiver).await;
    let fixtures = send::fixtures_dir(&repo_root());
    let events = send::prepare("invoice.paid", &fixtures, 3).unwrap();
    let queue = Queue::new(sqs(&sqs_endpoint()).await, &resources.event_queue_url);
    // GIVEN each event put on the queue twice as an EventBridge rule would (no receiver, no dedup)...
    let twice = Pacing {
        duplicate: true,
        concurrency: 4,
        shuffle: true,
    };
    let put = send::put_as_eventbridge(&queue, twice, &events).await;
    assert_eq!(put.len(), 6);
    assert!(put.iter().all(|d| d.accepted()), "{put:?}");
    let messages = drain(&sqs(&sqs_endpoint()).await, &resources.event_queue_url).await;
    assert_eq!(messages.len(), 6);
    for message in &messages {
        // ...exactly as a rule's target delivers: the envelope as the body, no message attributes.
        assert!(message.message_attributes.is_empty());
        let body = message.body.as_deref().unwrap().as_bytes();
        let delivery = stripe_pipeline::delivery::parse_delivery(body).unwrap();
        assert_eq!(delivery.ingress(), "eventbridge");
        let envelope: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(envelope["source"], send::LOCAL_PARTNER_SOURCE);
        assert_eq!(envelope["detail-type"], "invoice.paid");
    }
    // (checked, and drained; put again for the processor)
    let put = send::put_as_eventbridge(&queue, twice, &events).await;
    assert!(put.iter().all(|d| d.accepted()), "{put:?}");
    // ...AND once more by webhook through the receiver
    let options = SendOptions {
        url: server.url.clone(),
        secret: SigningSecret::new(SECRET).unwrap(),
        pacing: Pacing {
            concurrency: 1,
            ..Pacing::default()
        },
    };
    let posted = send::send(&send::client().unwrap(), &options, &events).await;
    assert!(posted.iter().all(|d| d.accepted()), "{posted:?}");
    // WHEN the processor drains the queue
    let poller = poller(&resources, None, quick()).await;
    let mut succeeded = 0;
    while let Some(batch) = poller.poll_once().await.unwrap() {
        assert!(batch.failed.is_empty(), "{:?}", batch.failed);
        succeeded += batch.succeeded;
    }
    // THEN all nine messages were handled and each event applied once
    assert_eq!(succeeded, 9);
    let (store, app) = (
        store(&resources).await,
        processor_app(&resources, None).await,
    );
    for event in &events {
        let known = status(&store, &app.billing, &event.event_id).await.unwrap();
        assert!(known.applied_at.is_some(), "{known:?}");
        assert_eq!(known.applied_type.as_deref(), Some("invoice.paid"));
    }
}

#[tokio::test]
async fn batches_hold_at_most_batch_size_messages_and_wait_at_most_the_window() {
    let resources = create_resources();
    put_messages(&resources.event_queue_url, 5).await;
    let settings = PollSettings {
        batch_size: 3,
        batching_window: Duration::from_millis(400),
        wait_secs: 1,
        visibility_timeout_secs: None,
    };
    let poller = poller(&resources, None, settings).await;
    let full = poller.poll_once().await.unwrap().unwrap();
    assert_eq!((full.received, full.succeeded), (3, 3));
    // Two left: the batch cannot fill, so it goes when the window has passed.
    let started = std::time::Instant::now();
    let partial = poller.poll_once().await.unwrap().unwrap();
    assert_eq!((partial.received, partial.succeeded), (2, 2));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(poller.poll_once().await.unwrap().is_none());
}

/// Lambda's Invoke API in front of the processor's `handle`, as `cargo lambda watch` serves it, or
/// answering every invocation with a function error when `failing`.
async fn invoke_endpoint(
    app: ProcessorApp,
    failing: bool,
) -> (String, tokio::task::JoinHandle<()>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Arc::new(app);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        async move {
                            assert_eq!(
                                request.uri().path(),
                                "/2015-03-31/functions/processor/invocations"
                            );
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let event: aws_lambda_events::event::sqs::SqsEvent =
                                serde_json::from_slice(&body).unwrap();
                            let answer = if failing && !event.records.is_empty() {
                                serde_json::json!({"errorType": "Panic", "errorMessage": "boom"})
                            } else {
                                let response = processor::handler::handle(
                                    &app,
                                    lambda_runtime::LambdaEvent::new(
                                        event,
                                        lambda_runtime::Context::default(),
                                    ),
                                )
                                .await
                                .unwrap();
                                serde_json::to_value(response).unwrap()
                            };
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(answer.to_string())),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, task)
}

#[tokio::test]
async fn an_invoked_processor_gets_the_batch_as_lambda_sends_it_and_a_function_error_fails_it_all()
{
    let resources = create_resources();
    let (store, queue) = (store(&resources).await, event_queue(&resources).await);
    let id = unique_event_id();
    let body = with_event_id(&fixture("invoice.paid"), &id);
    let envelope = stripe_pipeline::event::EventEnvelope::parse(&body).unwrap();
    intake::admit(&store, &queue, &envelope, &body, SQS_MAX, None)
        .await
        .unwrap();
    let client = sqs(&sqs_endpoint()).await;
    let settings = PollSettings {
        visibility_timeout_secs: Some(0),
        ..quick()
    };

    // A function error: the whole batch stays on the queue.
    let (failing, failing_task) =
        invoke_endpoint(processor_app(&resources, None).await, true).await;
    let poller = Poller::new(
        Queue::new(client.clone(), &resources.event_queue_url),
        Target::invoke(&failing, "processor").unwrap(),
        settings,
        REGION,
    )
    .await
    .unwrap();
    poller
        .wait_until_ready(Duration::from_secs(10))
        .await
        .unwrap();
    let report = poller.poll_once().await.unwrap().unwrap();
    assert_eq!((report.received, report.succeeded), (1, 0));
    assert!(report.batch_error.unwrap().contains("boom"));
    failing_task.abort();

    // Through the Invoke API the processor sees the message attributes and the body as SQS holds
    // them, and applies the event.
    let (working, working_task) =
        invoke_endpoint(processor_app(&resources, None).await, false).await;
    let poller = Poller::new(
        Queue::new(client.clone(), &resources.event_queue_url),
        Target::invoke(&working, "processor").unwrap(),
        settings,
        REGION,
    )
    .await
    .unwrap();
    let report = poller.poll_once().await.unwrap().unwrap();
    assert_eq!((report.received, report.succeeded), (1, 1), "{report:?}");
    let billing = processor_app(&resources, None).await.billing;
    let known = status(&store, &billing, &id).await.unwrap();
    assert_eq!(known.applied_type.as_deref(), Some("invoice.paid"));
    assert_eq!(queue_depth(&client, &resources.event_queue_url).await, 0);
    working_task.abort();
}

#[tokio::test]
async fn the_fake_stripe_api_serves_thin_events_and_the_objects_events_are_about() {
    let tag = tag("obj");
    let fake = fake_stripe(&tag, 30, 0).await;
    let api = stripe_api(&fake.base_url);
    let first = api.event(&fake_id(&tag, 0)).await.unwrap();
    let snapshot: serde_json::Value = serde_json::from_str(first.body.get()).unwrap();
    // GET /v2/core/events/{id}: the thin form, which the processor's parse takes as a thin event
    let thin = api
        .object(&format!("/v2/core/events/{}", fake_id(&tag, 0)))
        .await
        .unwrap();
    let stripe_pipeline::delivery::Delivery::Thin { event, .. } =
        stripe_pipeline::delivery::parse_delivery(thin.as_bytes()).unwrap()
    else {
        panic!("not a thin event: {thin}");
    };
    assert_eq!(
        event.event_type,
        format!("v1.{}", snapshot["type"].as_str().unwrap())
    );
    // ...whose related object is served at its url, as the events have it
    let related = event.related_object.expect("related object");
    let object: serde_json::Value =
        serde_json::from_str(&api.object(&related.url).await.unwrap()).unwrap();
    assert_eq!(object["id"], snapshot["data"]["object"]["id"]);
    // put_object changes what Stripe "has now"; unknown objects are 404
    fake.put_object(
        &related.url,
        serde_json::json!({"id": related.id, "status": "changed"}),
    );
    let changed: serde_json::Value =
        serde_json::from_str(&api.object(&related.url).await.unwrap()).unwrap();
    assert_eq!(changed["status"], "changed");
    assert!(matches!(
        api.object("/v1/subscriptions/sub_nope").await,
        Err(StripeApiError::NotFound)
    ));
}
