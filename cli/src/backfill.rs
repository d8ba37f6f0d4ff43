//! Backfill: page through Stripe's `GET /v1/events` and admit every event through the receiver's own
//! path ([`intake::admit`]: claim in the dedup table, enqueue, mark), so events the receiver already
//! took are skipped and the rest are enqueued exactly once, however often the backfill is rerun.
//!
//! Pages are fetched one after another (the cursor is the previous page's last id); the events of a
//! page are admitted `concurrency` at a time. Stripe lists newest first, so that is the order events
//! reach the queue; the processor applies events in their `created` order whatever order they arrive
//! in, so this does not matter.
//!
//! A failed admit does not stop the run: it is counted and named in the summary, and rerunning picks
//! it up. A failed page (the API still refusing after every retry) stops the run with what was done so
//! far.

use futures::{stream, StreamExt};
use indicatif::ProgressBar;
use stripe_pipeline::{
    dedup::{ClaimStatus, DedupStore},
    intake::{self, Admitted},
    queue::EventQueue,
    signature::unix_now,
};

use crate::stripe_api::{EventFilter, RawEvent, StripeApi, StripeApiError, MAX_PAGE_SIZE};

/// How to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Which events.
    pub filter: EventFilter,
    /// Only look: list the events and check the dedup table, write nothing.
    pub dry_run: bool,
    /// Events admitted at once.
    pub concurrency: usize,
    /// Events per page (at most 100).
    pub page_size: u8,
    /// Events of the other mode are skipped, as the receiver rejects them (`STRIPE_LIVEMODE`).
    pub livemode: Option<bool>,
    /// Bodies larger than this are stashed in the dedup table, as the receiver does.
    pub sqs_max_message_bytes: usize,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        Self {
            filter: EventFilter::default(),
            dry_run: false,
            concurrency: 8,
            page_size: MAX_PAGE_SIZE,
            livemode: None,
            sqs_max_message_bytes: stripe_pipeline::config::DEFAULT_SQS_MAX_MESSAGE_BYTES,
        }
    }
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct BackfillSummary {
    /// Pages fetched.
    pub pages: usize,
    /// Events the API listed.
    pub found: usize,
    /// Events put on the queue now (with `dry_run`: that would be).
    pub enqueued: usize,
    /// Events the dedup table already had as enqueued: skipped.
    pub already_seen: usize,
    /// Events of the other mode: skipped.
    pub other_mode: usize,
    /// Events that could not be admitted, with why. Rerunning retries them.
    pub failed: Vec<(String, String)>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StripeApiError>,
}

impl BackfillSummary {
    /// Whether everything found is on the queue now (or was already).
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.stopped.is_none()
    }

    fn line(&self) -> String {
        format!(
            "page {} · found {} · enqueued {} · already seen {} · failed {}",
            self.pages,
            self.found,
            self.enqueued,
            self.already_seen,
            self.failed.len()
        )
    }
}

/// What became of one event.
enum Fate {
    Enqueued,
    AlreadySeen,
    OtherMode,
    Failed(String),
}

/// Runs a backfill. `progress` shows the running counts (pass `ProgressBar::hidden()` for none).
pub async fn backfill<S: DedupStore, Q: EventQueue>(
    api: &StripeApi,
    store: &S,
    queue: &Q,
    options: &BackfillOptions,
    progress: &ProgressBar,
) -> BackfillSummary {
    let mut summary = BackfillSummary::default();
    let mut cursor: Option<String> = None;
    loop {
        let page = match api
            .list_events(&options.filter, cursor.as_deref(), options.page_size)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                summary.stopped = Some(error);
                break;
            }
        };
        summary.pages += 1;
        summary.found += page.events.len();
        cursor = page.events.last().map(|e| e.envelope.id.clone());
        let fates: Vec<(String, Fate)> = stream::iter(&page.events)
            .map(|event| async move {
                (
                    event.envelope.id.clone(),
                    fate(store, queue, options, event).await,
                )
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        for (id, fate) in fates {
            match fate {
                Fate::Enqueued => summary.enqueued += 1,
                Fate::AlreadySeen => summary.already_seen += 1,
                Fate::OtherMode => summary.other_mode += 1,
                Fate::Failed(reason) => summary.failed.push((id, reason)),
            }
        }
        progress.set_message(summary.line());
        // An empty page with has_more would loop forever on the same cursor.
        if !page.has_more || cursor.is_none() {
            break;
        }
    }
    progress.finish_and_clear();
    summary
}

async fn fate<S: DedupStore, Q: EventQueue>(
    store: &S,
    queue: &Q,
    options: &BackfillOptions,
    event: &RawEvent,
) -> Fate {
    let envelope = &event.envelope;
    if let (Some(expected), Some(actual)) = (options.livemode, envelope.livemode) {
        if expected != actual {
            return Fate::OtherMode;
        }
    }
    if options.dry_run {
        return match store.lookup(&envelope.id).await {
            Ok(Some(record))
                if record.status == ClaimStatus::Enqueued && record.expires_at >= unix_now() =>
            {
                Fate::AlreadySeen
            }
            Ok(_) => Fate::Enqueued,
            Err(error) => Fate::Failed(error.to_string()),
        };
    }
    match intake::admit(
        store,
        queue,
        envelope,
        event.bytes(),
        options.sqs_max_message_bytes,
        // An operator tool: no invocation ends under it, each SDK call is capped on its own.
        None,
    )
    .await
    {
        Ok(Admitted::Enqueued) => Fate::Enqueued,
        Ok(Admitted::Duplicate) => Fate::AlreadySeen,
        Err(error) => Fate::Failed(error.to_string()),
    }
}
