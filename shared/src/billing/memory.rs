//! The billing table in memory, with the same rules as DynamoDB, for unit and property tests. Not for
//! production.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

use super::{
    apply_with, attributes, Applied, Attributes, BillingError, BillingStore, Change, EventMarker,
    Guard, Key, NotifyClaim, Op, Value, Write,
};

/// The billing table in a `BTreeMap`, with a switch to simulate DynamoDB being down.
#[derive(Debug, Default)]
pub struct MemoryBillingStore {
    items: Mutex<BTreeMap<Key, Attributes>>,
    unavailable: AtomicBool,
    /// `None`: the deployed lease, [`super::NOTIFY_LEASE_SECS`].
    notify_lease_secs: Option<i64>,
}

impl MemoryBillingStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shorter notification claim lease, so a test sees a dead sender's claim run out without
    /// waiting 30 s (as [`super::DynamoBillingStore::with_notify_lease`]).
    pub fn with_notify_lease(mut self, secs: i64) -> Self {
        self.notify_lease_secs = Some(secs);
        self
    }

    /// While set, every call fails with [`BillingError::Unavailable`].
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }

    /// Every item except markers and notification records: the state an event history produced.
    pub fn state(&self) -> BTreeMap<Key, Attributes> {
        self.items
            .lock()
            .map(|items| {
                items
                    .iter()
                    .filter(|(k, _)| !k.pk.starts_with("EVENT#"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn items(&self) -> Result<MutexGuard<'_, BTreeMap<Key, Attributes>>, BillingError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(BillingError::Unavailable(
                "memory store switched off".into(),
            ));
        }
        self.items
            .lock()
            .map_err(|_| BillingError::Unavailable("poisoned".into()))
    }
}

fn holds(guard: &Guard, item: Option<&Attributes>) -> bool {
    match guard {
        Guard::Absent => item.is_none(),
        Guard::Newer(version) => match item.and_then(|i| i.get(super::attr::VERSION)) {
            Some(Value::S(current)) => current.as_str() < version.as_str(),
            _ => true,
        },
        Guard::Below(name, value) => match item.and_then(|i| i.get(*name)) {
            Some(Value::N(current)) => current < value,
            _ => true,
        },
        Guard::Unset(name) => item.and_then(|i| i.get(*name)).is_none(),
        Guard::Equals(name, value) => item.and_then(|i| i.get(*name)) == Some(value),
        Guard::NotIn(name, values) => match item.and_then(|i| i.get(*name)) {
            Some(Value::S(current)) => !values.contains(&current.as_str()),
            _ => true,
        },
    }
}

fn perform(items: &mut BTreeMap<Key, Attributes>, write: &Write) {
    match &write.op {
        Op::Put(attributes) => {
            items.insert(write.key.clone(), attributes.clone());
        }
        Op::Set(attributes) => {
            let item = items.entry(write.key.clone()).or_default();
            item.extend(attributes.clone());
        }
        Op::Add(deltas) => {
            let item = items.entry(write.key.clone()).or_default();
            for (name, delta) in deltas {
                let current = match item.get(*name) {
                    Some(Value::N(n)) => *n,
                    _ => 0,
                };
                item.insert((*name).to_owned(), Value::N(current + delta));
            }
        }
    }
}

impl BillingStore for MemoryBillingStore {
    async fn apply(
        &self,
        marker: &EventMarker,
        changes: Vec<Change>,
    ) -> Result<Applied, BillingError> {
        apply_with(marker.write(0, None), changes, |writes| async move {
            let mut items = self.items()?;
            let failed: Vec<usize> = writes
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.guards.iter().all(|g| holds(g, items.get(&w.key))))
                .map(|(i, _)| i)
                .collect();
            if failed.is_empty() {
                for write in &writes {
                    perform(&mut items, write);
                }
            }
            Ok(failed)
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<Option<Attributes>, BillingError> {
        Ok(self.items()?.get(key).cloned())
    }

    async fn query(&self, pk: &str) -> Result<Vec<(String, Attributes)>, BillingError> {
        Ok(self
            .items()?
            .iter()
            .filter(|(k, _)| k.pk == pk)
            .map(|(k, v)| (k.sk.clone(), v.clone()))
            .collect())
    }

    async fn claim_notification(
        &self,
        event_id: &str,
        channel: &str,
        token: &str,
        now: i64,
    ) -> Result<NotifyClaim, BillingError> {
        let mut items = self.items()?;
        let key = Key::notification(event_id, channel);
        let claim = match items.get(&key) {
            None => NotifyClaim::Claimed,
            Some(item) if matches!(item.get("status"), Some(Value::S(s)) if s == "sent") => {
                NotifyClaim::AlreadySent
            }
            Some(item) => {
                let mine = matches!(item.get("claim_token"), Some(Value::S(t)) if t == token);
                let expired = matches!(item.get("lease_until"), Some(Value::N(l)) if *l < now);
                if mine || expired {
                    NotifyClaim::Claimed
                } else {
                    NotifyClaim::HeldElsewhere
                }
            }
        };
        if claim == NotifyClaim::Claimed {
            items.insert(
                key,
                attributes([
                    ("status", Some("sending".into())),
                    ("claim_token", Some(token.into())),
                    (
                        "lease_until",
                        Some(
                            (now + self.notify_lease_secs.unwrap_or(super::NOTIFY_LEASE_SECS))
                                .into(),
                        ),
                    ),
                ]),
            );
        }
        Ok(claim)
    }

    async fn finish_notification(
        &self,
        event_id: &str,
        channel: &str,
        sent: bool,
    ) -> Result<(), BillingError> {
        let mut items = self.items()?;
        let key = Key::notification(event_id, channel);
        if sent {
            items.insert(key, attributes([("status", Some("sent".into()))]));
        } else {
            items.remove(&key);
        }
        Ok(())
    }
}
