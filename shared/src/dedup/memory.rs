//! An in-memory dedup table for unit tests: same rules as DynamoDB, no network. Not for production (it
//! forgets everything when the process ends and is not shared between Lambda instances).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};

use super::{
    blocked_by, counters::counter_keys, duplicate_counter_key, is_free, BodyStash, Claim,
    ClaimStatus, ClaimStore, ClaimToken, DedupError, DedupRecord, DuplicateCounter, StashedBody,
    MAX_STASHED_BODY_BYTES,
};

#[derive(Debug)]
struct Entry {
    record: DedupRecord,
    token: ClaimToken,
}

/// The dedup table in memory, with a switch to simulate DynamoDB being down.
#[derive(Debug)]
pub struct MemoryDedupStore {
    ttl: Duration,
    lease: Duration,
    entries: Mutex<HashMap<String, Entry>>,
    bodies: Mutex<HashMap<String, Vec<u8>>>,
    duplicates: Mutex<HashMap<String, u64>>,
    unavailable: AtomicBool,
}

impl MemoryDedupStore {
    /// An empty store.
    pub fn new(ttl: Duration, lease: Duration) -> Self {
        Self {
            ttl,
            lease,
            entries: Mutex::default(),
            bodies: Mutex::default(),
            duplicates: Mutex::default(),
            unavailable: AtomicBool::new(false),
        }
    }

    /// While set, every call fails with [`DedupError::Unavailable`].
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }

    fn entries(&self) -> Result<MutexGuard<'_, HashMap<String, Entry>>, DedupError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(DedupError::Unavailable("memory store switched off".into()));
        }
        self.entries
            .lock()
            .map_err(|_| DedupError::Unavailable("poisoned".into()))
    }

    fn bodies(&self) -> Result<MutexGuard<'_, HashMap<String, Vec<u8>>>, DedupError> {
        drop(self.entries()?);
        self.bodies
            .lock()
            .map_err(|_| DedupError::Unavailable("poisoned".into()))
    }
}

impl ClaimStore for MemoryDedupStore {
    async fn claim(&self, event_id: &str, event_type: &str, now: u64) -> Result<Claim, DedupError> {
        let mut entries = self.entries()?;
        if let Some(entry) = entries.get(event_id) {
            if !is_free(&entry.record, now) {
                return Ok(blocked_by(&entry.record));
            }
        }
        let token = ClaimToken::random();
        let record = DedupRecord {
            status: ClaimStatus::Pending,
            event_type: event_type.to_owned(),
            expires_at: now + self.ttl.as_secs(),
            lease_until: Some(now + self.lease.as_secs()),
        };
        entries.insert(
            event_id.to_owned(),
            Entry {
                record,
                token: token.clone(),
            },
        );
        Ok(Claim::New(token))
    }

    async fn mark_enqueued(
        &self,
        event_id: &str,
        token: &ClaimToken,
        _now: u64,
    ) -> Result<bool, DedupError> {
        let mut entries = self.entries()?;
        match entries.get_mut(event_id) {
            Some(entry) if &entry.token == token => {
                entry.record.status = ClaimStatus::Enqueued;
                entry.record.lease_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, event_id: &str, token: &ClaimToken) -> Result<(), DedupError> {
        let mut entries = self.entries()?;
        if entries.get(event_id).is_some_and(|e| &e.token == token) {
            entries.remove(event_id);
        }
        Ok(())
    }

    async fn lookup(&self, event_id: &str) -> Result<Option<DedupRecord>, DedupError> {
        Ok(self.entries()?.get(event_id).map(|e| e.record.clone()))
    }
}

impl BodyStash for MemoryDedupStore {
    async fn stash_body(
        &self,
        event_id: &str,
        body: &[u8],
        _now: u64,
    ) -> Result<StashedBody, DedupError> {
        if body.len() > MAX_STASHED_BODY_BYTES {
            return Err(DedupError::BodyTooLarge);
        }
        let stashed = StashedBody::describe(event_id, body);
        // Keyed by content, as on DynamoDB.
        self.bodies()?.insert(stashed.sha256.clone(), body.to_vec());
        Ok(stashed)
    }

    async fn fetch_body(&self, stashed: &StashedBody) -> Result<Vec<u8>, DedupError> {
        let body = self
            .bodies()?
            .get(&stashed.sha256)
            .cloned()
            .ok_or(DedupError::CorruptBody)?;
        stashed.check(body)
    }
}

impl DuplicateCounter for MemoryDedupStore {
    async fn count_duplicate(&self, now: u64) -> Result<(), DedupError> {
        drop(self.entries()?);
        let mut counts = self
            .duplicates
            .lock()
            .map_err(|_| DedupError::Unavailable("poisoned".into()))?;
        *counts.entry(duplicate_counter_key(now)).or_default() += 1;
        Ok(())
    }

    async fn duplicates_between(&self, from: u64, to: u64) -> Result<u64, DedupError> {
        drop(self.entries()?);
        let counts = self
            .duplicates
            .lock()
            .map_err(|_| DedupError::Unavailable("poisoned".into()))?;
        Ok(counter_keys(from, to)
            .iter()
            .filter_map(|key| counts.get(key))
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn store() -> MemoryDedupStore {
        MemoryDedupStore::new(Duration::from_secs(1000), Duration::from_secs(30))
    }

    #[tokio::test]
    async fn a_claim_blocks_until_marked_then_reports_enqueued() {
        let store = store();
        let Claim::New(token) = store.claim("evt_1", "x", NOW).await.unwrap() else {
            panic!("first claim must be new")
        };
        assert_eq!(
            store.claim("evt_1", "x", NOW + 1).await.unwrap(),
            Claim::InFlight
        );
        assert!(store.mark_enqueued("evt_1", &token, NOW + 1).await.unwrap());
        assert_eq!(
            store.claim("evt_1", "x", NOW + 2).await.unwrap(),
            Claim::AlreadyEnqueued
        );
    }

    #[tokio::test]
    async fn an_expired_lease_or_record_frees_the_event() {
        let store = store();
        let Claim::New(stale) = store.claim("evt_1", "x", NOW).await.unwrap() else {
            panic!()
        };
        // GIVEN a pending claim whose holder died: after the lease, a new delivery takes over
        let Claim::New(fresh) = store.claim("evt_1", "x", NOW + 31).await.unwrap() else {
            panic!("lease over: must be claimable")
        };
        // THEN the dead holder can neither mark nor release the new claim
        assert!(!store
            .mark_enqueued("evt_1", &stale, NOW + 32)
            .await
            .unwrap());
        store.release("evt_1", &stale).await.unwrap();
        assert!(store
            .mark_enqueued("evt_1", &fresh, NOW + 32)
            .await
            .unwrap());
        // AND an enqueued record frees the event only once expired
        assert_eq!(
            store.claim("evt_1", "x", NOW + 31 + 1000).await.unwrap(),
            Claim::AlreadyEnqueued
        );
        assert!(matches!(
            store.claim("evt_1", "x", NOW + 31 + 1001).await.unwrap(),
            Claim::New(_)
        ));
    }

    #[tokio::test]
    async fn a_second_stash_for_the_same_event_does_not_change_what_the_first_reference_reads() {
        let store = store();
        let queued = store
            .stash_body("evt_1", b"first bytes", NOW)
            .await
            .unwrap();
        // WHEN a takeover, replay or backfill stashes other bytes for the same event
        let later = store
            .stash_body("evt_1", b"other bytes", NOW + 1)
            .await
            .unwrap();
        // THEN each reference reads the bytes it was made for
        assert_eq!(store.fetch_body(&queued).await.unwrap(), b"first bytes");
        assert_eq!(store.fetch_body(&later).await.unwrap(), b"other bytes");
    }

    #[tokio::test]
    async fn stashed_bodies_come_back_checked() {
        let store = store();
        let stashed = store.stash_body("evt_1", b"hello", NOW).await.unwrap();
        assert_eq!(store.fetch_body(&stashed).await.unwrap(), b"hello");
        let mut wrong = stashed.clone();
        wrong.sha256 = "00".repeat(32);
        assert!(matches!(
            store.fetch_body(&wrong).await,
            Err(DedupError::CorruptBody)
        ));
    }
}
