//! The dedup table's rules on real DynamoDB (DynamoDB Local): the conditional put, leases, expiry that
//! does not wait for TTL deletion, claim tokens, and stashed bodies.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use integration_tests::*;
use stripe_pipeline::{
    dedup::{BodyStash, Claim, ClaimStatus, ClaimStore, DynamoDedupStore, BODY_CHUNK_BYTES},
    signature::unix_now,
};

async fn store(resources: &Resources) -> DynamoDedupStore {
    DynamoDedupStore::new(
        dynamodb(&dynamodb_endpoint()).await,
        &resources.dedup_table,
        TTL,
        LEASE,
    )
}

#[tokio::test]
async fn a_pending_claim_blocks_until_its_lease_ends_and_its_holder_loses_it_then() {
    let resources = create_resources();
    let store = store(&resources).await;
    let now = unix_now();
    let Claim::New(first) = store.claim("evt_lease", "invoice.paid", now).await.unwrap() else {
        panic!("a new event must be claimable")
    };
    // Within the lease: in flight.
    assert_eq!(
        store
            .claim("evt_lease", "invoice.paid", now + LEASE.as_secs())
            .await
            .unwrap(),
        Claim::InFlight
    );
    // The holder died; after the lease a retry takes over.
    let later = now + LEASE.as_secs() + 1;
    let Claim::New(second) = store
        .claim("evt_lease", "invoice.paid", later)
        .await
        .unwrap()
    else {
        panic!("an expired lease must free the event")
    };
    // The dead holder can neither mark nor release the new claim.
    assert!(!store
        .mark_enqueued("evt_lease", &first, later)
        .await
        .unwrap());
    store.release("evt_lease", &first).await.unwrap();
    let record = store.lookup("evt_lease").await.unwrap().unwrap();
    assert_eq!(record.status, ClaimStatus::Pending);
    assert!(store
        .mark_enqueued("evt_lease", &second, later)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim("evt_lease", "invoice.paid", later + 1)
            .await
            .unwrap(),
        Claim::AlreadyEnqueued
    );
}

#[tokio::test]
async fn an_expired_record_counts_as_absent_even_before_ttl_deletes_it() {
    let resources = create_resources();
    let store = store(&resources).await;
    let now = unix_now();
    let Claim::New(token) = store.claim("evt_ttl", "x", now).await.unwrap() else {
        panic!()
    };
    assert!(store.mark_enqueued("evt_ttl", &token, now).await.unwrap());
    let expiry = store.lookup("evt_ttl").await.unwrap().unwrap().expires_at;
    assert_eq!(expiry, now + TTL.as_secs());
    assert_eq!(
        store.claim("evt_ttl", "x", expiry).await.unwrap(),
        Claim::AlreadyEnqueued
    );
    assert!(matches!(
        store.claim("evt_ttl", "x", expiry + 1).await.unwrap(),
        Claim::New(_)
    ));
}

#[tokio::test]
async fn release_frees_the_event_at_once() {
    let resources = create_resources();
    let store = store(&resources).await;
    let now = unix_now();
    let Claim::New(token) = store.claim("evt_release", "x", now).await.unwrap() else {
        panic!()
    };
    store.release("evt_release", &token).await.unwrap();
    assert_eq!(store.lookup("evt_release").await.unwrap(), None);
    assert!(matches!(
        store.claim("evt_release", "x", now).await.unwrap(),
        Claim::New(_)
    ));
}

#[tokio::test]
async fn a_body_over_several_chunks_is_stored_atomically_and_read_back_exactly() {
    let resources = create_resources();
    let store = store(&resources).await;
    let body: Vec<u8> = (0..(2 * BODY_CHUNK_BYTES + 1234))
        .map(|i| (i % 251) as u8)
        .collect();
    let stashed = store
        .stash_body("evt_big", &body, unix_now())
        .await
        .unwrap();
    assert_eq!(stashed.chunks, 3);
    assert_eq!(store.fetch_body(&stashed).await.unwrap(), body);
    // The claim key space is untouched by the chunks.
    assert_eq!(store.lookup("evt_big").await.unwrap(), None);
    let mut wrong = stashed.clone();
    wrong.bytes -= 1;
    assert!(store.fetch_body(&wrong).await.is_err());
}

/// A TCP relay to DynamoDB that forwards everything but swallows the answer to the first PutItem: the
/// write is applied, the client never hears so (a response lost, or later than the SDK's attempt
/// timeout), and the SDK sends the same request again on a new connection.
async fn relay_losing_the_first_put_answer(upstream: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let armed = Arc::new(AtomicBool::new(true));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, armed) = (upstream.clone(), armed.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let swallow = Arc::new(AtomicBool::new(false));
                let swallowing = swallow.clone();
                let requests = async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buffer).await {
                        let chunk = &buffer[..n];
                        let put = chunk
                            .windows(PUT_ITEM.len())
                            .any(|w| w.eq_ignore_ascii_case(PUT_ITEM));
                        // Decided before the request goes on, so its answer cannot slip through.
                        if put && armed.swap(false, Ordering::SeqCst) {
                            swallowing.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                };
                let answers = async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut buffer).await {
                        if swallow.load(Ordering::SeqCst) {
                            continue;
                        }
                        if to_client.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(requests, answers);
            });
        }
    });
    url
}

const PUT_ITEM: &[u8] = b"DynamoDB_20120810.PutItem";

#[tokio::test]
async fn a_claim_whose_first_put_was_applied_but_unanswered_is_ours_on_the_sdk_retry() {
    let resources = create_resources();
    // GIVEN a store whose SDK gives up on an attempt after 500 ms and retries, as the receiver's does
    // (2 s there), reaching DynamoDB through a relay that loses the first PutItem's answer
    let relay = relay_losing_the_first_put_answer(&dynamodb_endpoint()).await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk_config().await)
        .endpoint_url(relay)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_millis(500))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .build();
    let retrying = DynamoDedupStore::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        &resources.dedup_table,
        TTL,
        LEASE,
    );
    let direct = store(&resources).await;
    let now = unix_now();
    // WHEN the event is claimed: the first attempt writes the claim, the retry finds it
    let claim = retrying
        .claim("evt_retried", "invoice.paid", now)
        .await
        .unwrap();
    // THEN the claim is this delivery's own, not a concurrent one (which would be answered 409)
    let Claim::New(token) = claim else {
        panic!("the retried claim must be ours, got {claim:?}")
    };
    // AND it is the one in the table: its token marks it
    assert!(direct
        .mark_enqueued("evt_retried", &token, now)
        .await
        .unwrap());
    // AND a genuinely concurrent delivery is still kept out
    assert_eq!(
        direct
            .claim("evt_retried", "invoice.paid", now)
            .await
            .unwrap(),
        Claim::AlreadyEnqueued
    );
}

#[tokio::test]
async fn a_second_stash_for_the_same_event_does_not_change_what_the_queued_reference_reads() {
    let resources = create_resources();
    let store = store(&resources).await;
    let now = unix_now();
    // GIVEN a body stashed for a message already queued
    let first: Vec<u8> = (0..(BODY_CHUNK_BYTES + 1234))
        .map(|i| (i % 251) as u8)
        .collect();
    let queued = store.stash_body("evt_restash", &first, now).await.unwrap();
    // WHEN a takeover, replay or backfill stashes other bytes of the same length for the same event
    let other: Vec<u8> = first.iter().map(|b| b ^ 0x5a).collect();
    let later = store
        .stash_body("evt_restash", &other, now + 1)
        .await
        .unwrap();
    // THEN the queued reference still reads its own bytes, and the new one its own
    assert_eq!(store.fetch_body(&queued).await.unwrap(), first);
    assert_eq!(store.fetch_body(&later).await.unwrap(), other);
    // AND stashing the same bytes again changes nothing under either
    store
        .stash_body("evt_restash", &first, now + 2)
        .await
        .unwrap();
    assert_eq!(store.fetch_body(&queued).await.unwrap(), first);
    assert_eq!(store.fetch_body(&later).await.unwrap(), other);
}

#[tokio::test]
async fn a_reference_queued_before_bodies_were_keyed_by_hash_still_reads_its_own_body() {
    use aws_sdk_dynamodb::{primitives::Blob, types::AttributeValue};
    use stripe_pipeline::dedup::MemoryDedupStore;
    let resources = create_resources();
    let store = store(&resources).await;
    let now = unix_now();
    let body = br#"{"id":"evt_legacy","type":"invoice.finalized"}"#.to_vec();
    // GIVEN a reference as a receiver of before queued it (same fields), its chunk under the event id
    let reference = MemoryDedupStore::new(TTL, LEASE)
        .stash_body("evt_legacy", &body, now)
        .await
        .unwrap();
    let store_client = dynamodb(&dynamodb_endpoint()).await;
    let put_legacy = |bytes: Vec<u8>| {
        let client = store_client.clone();
        let table = resources.dedup_table.clone();
        async move {
            client
                .put_item()
                .table_name(table)
                .item("event_id", AttributeValue::S("evt_legacy#body#0".into()))
                .item("body", AttributeValue::B(Blob::new(bytes)))
                .item("expires_at", AttributeValue::N((now + 3600).to_string()))
                .send()
                .await
                .unwrap();
        }
    };
    put_legacy(body.clone()).await;
    // THEN it still reads its body
    assert_eq!(store.fetch_body(&reference).await.unwrap(), body);
    // AND other bytes there are still refused by the checksum
    put_legacy(b"something else entirely".to_vec()).await;
    assert!(store.fetch_body(&reference).await.is_err());
}
