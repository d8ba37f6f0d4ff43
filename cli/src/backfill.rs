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

use crate::stripe_api::{
    ApiStats, EventFilter, RawEvent, StripeApi, StripeApiError, MAX_PAGE_SIZE,
};

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
    /// A dry run: `enqueued` counts what would have been.
    pub dry_run: bool,
}

/// The counts, one per line (`found`, `enqueued` or `would enqueue`, `already seen`, `other mode` when
/// there were any, `failed`); [`BackfillSummary::outcome`] says what failed and what to do.
impl std::fmt::Display for BackfillSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let enqueued = if self.dry_run {
            "would enqueue"
        } else {
            "enqueued"
        };
        writeln!(f, "found         {:>7}  ({} pages)", self.found, self.pages)?;
        writeln!(f, "{enqueued:<13} {:>7}", self.enqueued)?;
        writeln!(f, "already seen  {:>7}", self.already_seen)?;
        if self.other_mode > 0 {
            writeln!(f, "other mode    {:>7}  (skipped)", self.other_mode)?;
        }
        writeln!(f, "failed        {:>7}", self.failed.len())
    }
}

/// The failures (the first 20), why the run stopped early, and whether to rerun.
#[derive(Debug)]
pub struct BackfillOutcome<'a>(&'a BackfillSummary);

impl std::fmt::Display for BackfillOutcome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let summary = self.0;
        for (id, reason) in summary.failed.iter().take(20) {
            writeln!(f, "  failed: {id}: {reason}")?;
        }
        if summary.failed.len() > 20 {
            writeln!(f, "  … and {} more", summary.failed.len() - 20)?;
        }
        if let Some(error) = &summary.stopped {
            writeln!(
                f,
                "stopped early: {}",
                stripe_pipeline::telemetry::error_chain(error)
            )?;
        }
        if !summary.complete() {
            writeln!(
                f,
                "Rerun the same command: events already enqueued are skipped."
            )?;
        }
        Ok(())
    }
}

/// What `backfill` prints at the end: the counts, what the Stripe API took, then the outcome.
#[derive(Debug)]
pub struct BackfillReport<'a> {
    /// What the backfill did.
    pub summary: &'a BackfillSummary,
    /// The Stripe API client's counters over the run.
    pub api: ApiStats,
    /// How long the run took.
    pub took: std::time::Duration,
}

impl std::fmt::Display for BackfillReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (summary, api, took) = (self.summary, self.api, self.took.as_secs_f64());
        write!(f, "{summary}")?;
        writeln!(
            f,
            "Stripe API: {} requests, {} rate-limited (429), {} server errors or timeouts, {:.1} s waiting; took {took:.1} s ({:.0} events/s)",
            api.requests,
            api.rate_limited,
            api.server_errors,
            api.waited.as_secs_f64(),
            summary.found as f64 / took.max(0.001),
        )?;
        write!(f, "{}", summary.outcome())
    }
}

impl BackfillSummary {
    /// Whether everything found is on the queue now (or was already).
    pub fn complete(&self) -> bool {
        self.failed.is_empty() && self.stopped.is_none()
    }

    /// What printing it after the Stripe API's figures says: [`BackfillOutcome`].
    pub fn outcome(&self) -> BackfillOutcome<'_> {
        BackfillOutcome(self)
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
    let mut summary = BackfillSummary {
        dry_run: options.dry_run,
        ..BackfillSummary::default()
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_prints_its_counts_and_the_outcome_what_failed_and_to_rerun() {
        let summary = BackfillSummary {
            pages: 2,
            found: 120,
            enqueued: 100,
            already_seen: 18,
            other_mode: 0,
            failed: vec![("evt_1".to_owned(), "queue unavailable".to_owned())],
            stopped: None,
            dry_run: true,
        };
        assert_eq!(
            summary.to_string(),
            "found             120  (2 pages)\nwould enqueue     100\nalready seen       18\nfailed              1\n"
        );
        assert_eq!(
            summary.outcome().to_string(),
            "  failed: evt_1: queue unavailable\nRerun the same command: events already enqueued are skipped.\n"
        );
        let done = BackfillSummary {
            other_mode: 3,
            ..BackfillSummary::default()
        };
        assert!(done.to_string().contains("enqueued            0\n"));
        assert!(done
            .to_string()
            .contains("other mode          3  (skipped)\n"));
        assert_eq!(done.outcome().to_string(), "");
    }
}
