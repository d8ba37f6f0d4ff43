//! An in-memory event queue for unit tests. Not for production.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex,
};

use super::{EventQueue, QueueError, QueueMessage};

/// Messages kept in a `Vec`, with a switch to simulate SQS being down.
#[derive(Debug, Default)]
pub struct MemoryEventQueue {
    messages: Mutex<Vec<QueueMessage>>,
    unavailable: AtomicBool,
}

impl MemoryEventQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// While set, every send fails with [`QueueError::Unavailable`].
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }

    /// Every message sent so far, oldest first.
    pub fn messages(&self) -> Vec<QueueMessage> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl EventQueue for MemoryEventQueue {
    async fn enqueue(&self, message: &QueueMessage) -> Result<String, QueueError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(QueueError::Unavailable("memory queue switched off".into()));
        }
        let mut messages = self
            .messages
            .lock()
            .map_err(|_| QueueError::Unavailable("poisoned".into()))?;
        messages.push(message.clone());
        Ok(format!("memory-{}", messages.len()))
    }
}
