//! The dead-letter queue: what is in it, one message in full, and moving messages back to the event
//! queue once the cause is fixed.
//!
//! SQS has no "peek": reading a message hides it for a while. `list` and `show` therefore receive with
//! a short visibility timeout and make what they saw visible again at once, leaving the queue as it
//! was (each look does count as a receive in `ApproximateReceiveCount`, which on a dead-letter queue
//! without its own redrive policy changes nothing).
//!
//! `redrive` copies each message (body and message attributes, so `event_id` and `body_location` stay)
//! to the event queue and deletes it from the dead-letter queue only once the copy was accepted: a
//! failure in between leaves a message in both queues, never in neither, and the processor's
//! per-event marker makes the extra copy harmless. The copy starts with a receive count of 0, so it gets
//! the full `maxReceiveCount` attempts again.

use std::collections::HashSet;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use indicatif::ProgressBar;
use serde::Serialize;
use stripe_pipeline::queue::attribute;

use crate::sqs::{message_attribute, system_attribute, Queue, SqsError, MAX_BATCH};

/// How long `list`/`show`/`redrive` hide what they received while they work; longer than a run takes,
/// so one run never sees a message twice.
const LOOK_VISIBILITY_SECS: i32 = 60;
/// How long to wait for messages when a short poll comes back empty: SQS's short poll samples only
/// some of its servers, so "empty" is only believed after a long poll.
const CONFIRM_EMPTY_WAIT_SECS: i32 = 2;

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The SQS message id.
    pub message_id: String,
    /// The `event_id` attribute.
    pub event_id: Option<String>,
    /// The `event_type` attribute.
    pub event_type: Option<String>,
    /// `inline`, or `dedup_table` for a stashed body (the body is then a reference).
    pub body_location: Option<String>,
    /// When it was first sent to the event queue, unix milliseconds.
    pub sent_at_ms: Option<u64>,
    /// Receives so far, those on the event queue included.
    pub receive_count: Option<u32>,
    /// The message body.
    pub body: String,
}

impl DeadLetter {
    fn from_message(message: &Message) -> Self {
        let number = |name| system_attribute(message, name).and_then(|v| v.parse().ok());
        Self {
            message_id: message.message_id.clone().unwrap_or_default(),
            event_id: message_attribute(message, attribute::EVENT_ID).map(str::to_owned),
            event_type: message_attribute(message, attribute::EVENT_TYPE).map(str::to_owned),
            body_location: message_attribute(message, attribute::BODY_LOCATION).map(str::to_owned),
            sent_at_ms: number(MessageSystemAttributeName::SentTimestamp),
            receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|n: u64| u32::try_from(n).ok()),
            body: message.body.clone().unwrap_or_default(),
        }
    }

    /// Whether `id` names this message (its SQS message id or its event id).
    pub fn is(&self, id: &str) -> bool {
        self.message_id == id || self.event_id.as_deref() == Some(id)
    }
}

/// What `dlq show` prints: the message's ids, type, body location, receives, when it was first sent,
/// and the body (pretty-printed when it is JSON).
impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "message id:    {}", self.message_id)?;
        writeln!(
            f,
            "event id:      {}",
            self.event_id.as_deref().unwrap_or("-")
        )?;
        writeln!(
            f,
            "event type:    {}",
            self.event_type.as_deref().unwrap_or("-")
        )?;
        writeln!(
            f,
            "body location: {}",
            self.body_location.as_deref().unwrap_or("inline")
        )?;
        match self.receive_count {
            Some(n) => writeln!(f, "receives:      {n}")?,
            None => writeln!(f, "receives:      ?")?,
        }
        if let Some(sent) = self.sent_at_ms {
            writeln!(
                f,
                "first sent:    {}",
                crate::settings::format_time(sent / 1000)
            )?;
        }
        let pretty = serde_json::from_str::<serde_json::Value>(&self.body)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| self.body.clone());
        write!(f, "body:\n{pretty}")
    }
}

/// Receives up to `max` distinct messages and hands them back (visible again) in receive order.
async fn look(dlq: &Queue, max: usize) -> Result<Vec<DeadLetter>, SqsError> {
    let mut seen = HashSet::new();
    let mut held: Vec<Message> = Vec::new();
    let mut letters = Vec::new();
    let result = async {
        while letters.len() < max {
            let batch = receive_or_confirm_empty(dlq, (max - letters.len()).min(MAX_BATCH)).await?;
            if batch.is_empty() {
                break;
            }
            for message in batch {
                if seen.insert(message.message_id.clone()) {
                    letters.push(DeadLetter::from_message(&message));
                }
                held.push(message);
            }
        }
        Ok(())
    }
    .await;
    // Whatever happened, give back what was taken.
    let held: Vec<&Message> = held.iter().collect();
    let released = dlq.set_visibility(&held, 0).await;
    result.and(released).map(|()| letters)
}

async fn receive_or_confirm_empty(dlq: &Queue, max: usize) -> Result<Vec<Message>, SqsError> {
    let batch = dlq.receive(max, 0, Some(LOOK_VISIBILITY_SECS)).await?;
    if !batch.is_empty() {
        return Ok(batch);
    }
    dlq.receive(max, CONFIRM_EMPTY_WAIT_SECS, Some(LOOK_VISIBILITY_SECS))
        .await
}

/// Up to `max` messages of the dead-letter queue, left in place.
pub async fn list(dlq: &Queue, max: usize) -> Result<Vec<DeadLetter>, SqsError> {
    look(dlq, max).await
}

/// The message whose message id or event id is `id`, left in place; `None` if not found among the
/// first `scan_max` messages.
pub async fn show(dlq: &Queue, id: &str, scan_max: usize) -> Result<Option<DeadLetter>, SqsError> {
    Ok(look(dlq, scan_max)
        .await?
        .into_iter()
        .find(|letter| letter.is(id)))
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveSummary {
    /// Messages copied to the event queue and deleted from the dead-letter queue.
    pub moved: usize,
    /// Copied, but the delete failed: also still in the dead-letter queue (harmless: the processor
    /// skips an event it applied; a later redrive removes it without copying it again in this run).
    pub left_in_dlq: usize,
    /// Not copied (SQS refused): still only in the dead-letter queue.
    pub failed: usize,
}

impl std::fmt::Display for RedriveSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "moved {} message(s) to the event queue; {} copied but still in the dead-letter queue; {} not moved",
            self.moved, self.left_in_dlq, self.failed
        )
    }
}

/// What `dlq list` prints: one line per message (id, event, type, receives, age), then the count.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterList<'a> {
    /// The messages listed.
    pub letters: &'a [DeadLetter],
    /// The most that were asked for.
    pub max: usize,
    /// Now, in unix milliseconds: ages are counted from it.
    pub now_ms: u64,
}

impl std::fmt::Display for DeadLetterList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for letter in self.letters {
            let age = letter.sent_at_ms.map_or_else(
                || "?".to_owned(),
                |sent| {
                    humantime::format_duration(std::time::Duration::from_secs(
                        self.now_ms.saturating_sub(sent) / 1000,
                    ))
                    .to_string()
                },
            );
            writeln!(
                f,
                "{}  {}  {}  receives {}  sent {age} ago",
                letter.message_id,
                letter.event_id.as_deref().unwrap_or("-"),
                letter.event_type.as_deref().unwrap_or("-"),
                letter
                    .receive_count
                    .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            )?;
        }
        writeln!(
            f,
            "{} message(s) listed (max {})",
            self.letters.len(),
            self.max
        )
    }
}

/// Moves up to `max` messages (all if `None`) from `dlq` to `target`, each once.
pub async fn redrive(
    dlq: &Queue,
    target: &Queue,
    max: Option<usize>,
    progress: &ProgressBar,
) -> Result<RedriveSummary, SqsError> {
    let mut summary = RedriveSummary::default();
    let mut moved_ids: HashSet<String> = HashSet::new();
    let limit = max.unwrap_or(usize::MAX);
    while summary.moved + summary.failed < limit {
        let want = (limit - summary.moved - summary.failed).min(MAX_BATCH);
        let batch = receive_or_confirm_empty(dlq, want).await?;
        if batch.is_empty() {
            break;
        }
        // A message copied earlier in this run but whose delete failed comes back: delete it, do not
        // copy it a second time.
        let (again, fresh): (Vec<&Message>, Vec<&Message>) = batch.iter().partition(|m| {
            m.message_id
                .as_ref()
                .is_some_and(|id| moved_ids.contains(id))
        });
        if !again.is_empty() {
            dlq.delete(&again).await?;
        }
        if fresh.is_empty() {
            continue;
        }
        let sent: HashSet<String> = target.send_copies(&fresh).await?.into_iter().collect();
        let (copied, refused): (Vec<&Message>, Vec<&Message>) = fresh
            .into_iter()
            .partition(|m| m.message_id.as_ref().is_some_and(|id| sent.contains(id)));
        let undeleted = dlq.delete(&copied).await?.len();
        summary.moved += copied.len();
        summary.left_in_dlq += undeleted;
        summary.failed += refused.len();
        moved_ids.extend(sent);
        if !refused.is_empty() {
            // Visible again at once, for the next run; this run does not retry them.
            dlq.set_visibility(&refused, 0).await?;
            break;
        }
        progress.set_position(summary.moved as u64);
    }
    progress.finish_and_clear();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_each_letter_its_age_and_marks_what_is_unknown() {
        let letters = [
            DeadLetter {
                message_id: "m-1".to_owned(),
                event_id: Some("evt_1".to_owned()),
                event_type: Some("invoice.paid".to_owned()),
                body_location: None,
                sent_at_ms: Some(1_000_000),
                receive_count: Some(5),
                body: String::new(),
            },
            DeadLetter {
                message_id: "m-2".to_owned(),
                event_id: None,
                event_type: None,
                body_location: None,
                sent_at_ms: None,
                receive_count: None,
                body: String::new(),
            },
        ];
        let listing = DeadLetterList {
            letters: &letters,
            max: 50,
            now_ms: 1_000_000 + 90 * 60 * 1000,
        }
        .to_string();
        assert_eq!(
            listing,
            "m-1  evt_1  invoice.paid  receives 5  sent 1h 30m ago\n\
             m-2  -  -  receives ?  sent ? ago\n\
             2 message(s) listed (max 50)\n"
        );
    }

    #[test]
    fn a_redrive_summary_says_what_moved_and_what_stayed() {
        let summary = RedriveSummary {
            moved: 3,
            left_in_dlq: 1,
            failed: 2,
        };
        assert_eq!(
            summary.to_string(),
            "moved 3 message(s) to the event queue; 1 copied but still in the dead-letter queue; 2 not moved\n"
        );
    }

    #[test]
    fn a_dead_letter_prints_its_attributes_and_its_body_pretty() {
        let letter = DeadLetter {
            message_id: "m-1".to_owned(),
            event_id: Some("evt_1".to_owned()),
            event_type: None,
            body_location: None,
            sent_at_ms: Some(1_795_132_800_000),
            receive_count: Some(4),
            body: r#"{"id":"evt_1"}"#.to_owned(),
        };
        assert_eq!(
            letter.to_string(),
            "message id:    m-1\nevent id:      evt_1\nevent type:    -\nbody location: inline\nreceives:      4\nfirst sent:    2026-11-20T00:00:00Z\nbody:\n{\n  \"id\": \"evt_1\"\n}"
        );
    }
}
