//! The dedup table's rules on real DynamoDB (DynamoDB Local): the conditional put, leases, expiry that
//! does not wait for TTL deletion, claim tokens, and stashed bodies.

use integration_tests::*;
use stripe_pipeline::{
    dedup::{Claim, ClaimStatus, DedupStore, DynamoDedupStore, BODY_CHUNK_BYTES},
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
    let resources = Resources::create();
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
    let resources = Resources::create();
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
    let resources = Resources::create();
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
    let resources = Resources::create();
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
