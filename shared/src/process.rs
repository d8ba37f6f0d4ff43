//! One queued event, processed end to end: its body read (inline, or stashed in the dedup table), what
//! only Stripe's API can supply fetched (thin events; the objects whose state depends on delivery
//! order), its handler's plan applied to the billing state with the event's marker exactly once, its
//! notifications sent through the [`outbox`], and one decision line logged.
//!
//! Nothing is acknowledged that was not applied: a message succeeds only once its changes committed
//! (now or by an earlier delivery) and its notifications were sent (now or before) — or a channel
//! refused one for good (a configuration error, logged and counted: retrying cannot fix it). Whatever
//! carries the messages (the processor Lambda's SQS batches, the CLI's local poller) retries a failed
//! one.

use std::time::Instant;

use tracing::{error, info, warn};

use crate::{
    billing::{feed::FeedRecord, Applied, BillingError, BillingStore, EventMarker, Key},
    dedup::{BodyStash, DedupError, DuplicateCounter},
    delivery::{parse_delivery, Delivery},
    event::{EventError, EventType, StripeEvent},
    handlers::{self, HandlerError},
    notify::{outbox, About, OutboxError, Router},
    queue::{MessageBody, QueueError, QueueMessage},
    signature::unix_now,
    stripe_api::{OnBehalfOf, StripeApi, StripeApiError},
    telemetry::{error_chain, Metrics, Outcome, DECISION},
};

/// Everything processing needs, built once at cold start.
#[derive(Debug)]
pub struct Processor<S, C, B> {
    /// Where the receiver stashed bodies too large for SQS (the dedup table).
    pub bodies: S,
    /// The dedup table's duplicate counters, for the copies that reach the processor.
    pub duplicates: C,
    /// The billing state.
    pub billing: B,
    /// Where notifications go, by event type; with no channels they are only logged.
    pub notify: Router,
    /// Stripe's API, if a key is configured: ordering-sensitive objects are re-fetched before their
    /// handler runs, and thin events are fetched. Without it thin events cannot be handled.
    pub stripe: Option<StripeApi>,
    /// EMF metrics.
    pub metrics: Metrics,
}

/// One message off the event queue, whatever carried it.
#[derive(Debug, Clone, Copy)]
pub struct QueuedEvent<'a> {
    /// The message body: the event, or a reference to its stashed body.
    pub body: Option<&'a str>,
    /// Its `body_location` attribute ([`QueueMessage::parse_body`]).
    pub body_location: Option<&'a str>,
    /// How many times the queue has handed it out (SQS's `ApproximateReceiveCount`), as the queue
    /// gives it; empty when unknown.
    pub receive_count: &'a str,
}

impl<S: BodyStash, C: DuplicateCounter, B: BillingStore> Processor<S, C, B> {
    /// Processes one message and logs its decision line; an error means the message must be retried.
    /// Stripe API fetches give up at `deadline`, failing only this message.
    pub async fn process(
        &self,
        message: &QueuedEvent<'_>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ProcessError> {
        let started = Instant::now();
        let result = apply(self, message, deadline).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(done) => {
                let outcome = if done.handled {
                    Outcome::Handled
                } else {
                    Outcome::Ignored
                };
                info!(
                    target: DECISION,
                    event_id = %done.event_id,
                    event_type = %done.event_type,
                    outcome = %outcome,
                    reason = done.reason,
                    skipped = ?done.skipped,
                    notified = done.notified,
                    latency_ms,
                    emf = self.metrics.emf(outcome, latency_ms).as_str(),
                    "event processed"
                );
            }
            Err(err) => {
                error!(target: DECISION, outcome = %Outcome::Failed, reason = err.reason(), error = %error_chain(err), latency_ms, receive_count = message.receive_count, emf = self.metrics.emf(Outcome::Failed, latency_ms).as_str(), "message failed; SQS will retry it");
            }
        }
        result.map(|_| ())
    }
}

/// Why one message could not be processed. Each is retried by SQS, then dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The message has no body.
    #[error("message has no body")]
    EmptyMessage,
    /// The body does not match its `body_location`.
    #[error("malformed message")]
    Malformed(#[from] QueueError),
    /// The stashed body could not be read.
    #[error("stashed body unavailable")]
    StashedBody(#[from] DedupError),
    /// The body is not a Stripe event.
    #[error("not a stripe event")]
    NotAnEvent(#[from] EventError),
    /// The handler could not plan.
    #[error("handler failed")]
    Handler(#[from] HandlerError),
    /// The billing table failed.
    #[error("billing state unavailable")]
    Billing(#[from] BillingError),
    /// A thin event arrived, but no Stripe API key is configured, or it points at nothing.
    #[error("thin event {0} cannot be fetched (no STRIPE_API_KEY, or no related object)")]
    ThinEventNotFetched(String),
    /// A notification was not sent and recorded ([`outbox`]): its claim failed or is held by another
    /// delivery, the channel failed, or its `sent` mark failed after the channel accepted it.
    #[error(transparent)]
    Notification(#[from] OutboxError),
    /// Stripe's API did not answer (after its own retries): the message is retried.
    #[error("Stripe API fetch failed")]
    Fetch(#[from] StripeApiError),
}

impl ProcessError {
    /// The `reason` of the message's log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::EmptyMessage | Self::Malformed(_) | Self::NotAnEvent(_) => "malformed_message",
            Self::StashedBody(_) => "stashed_body_unavailable",
            Self::Handler(HandlerError::Object(_)) => "unexpected_object",
            Self::Handler(HandlerError::Unfulfillable(_)) => "unfulfillable_payment",
            Self::Handler(HandlerError::Billing(_))
            | Self::Billing(_)
            | Self::Notification(OutboxError::Billing(_)) => "billing_unavailable",
            Self::Notification(OutboxError::Send(_)) => "notification_failed",
            Self::Notification(OutboxError::InFlight) => "notification_in_flight",
            Self::Notification(OutboxError::Unrecorded(_)) => "notification_unrecorded",
            Self::ThinEventNotFetched(_) => "thin_event_not_fetched",
            Self::Fetch(StripeApiError::OutOfTime) => "stripe_api_out_of_time",
            Self::Fetch(_) => "stripe_api_unavailable",
        }
    }
}

/// What became of one event, for its log line.
struct Done {
    event_id: String,
    event_type: String,
    handled: bool,
    reason: &'static str,
    skipped: Vec<&'static str>,
    notified: usize,
}

async fn apply<S: BodyStash, C: DuplicateCounter, B: BillingStore>(
    app: &Processor<S, C, B>,
    message: &QueuedEvent<'_>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Done, ProcessError> {
    let event = match read_event(app, message, deadline).await? {
        Read::Event(event) => event,
        Read::AppliedBefore { id, event_type } => {
            count_duplicate(app, message, &id, unix_now() as i64).await;
            return Ok(Done {
                handled: !matches!(EventType::from(event_type.as_str()), EventType::Other(_)),
                event_id: id,
                event_type,
                reason: "applied_before",
                skipped: Vec::new(),
                notified: 0,
            });
        }
    };
    let mut done = Done {
        event_id: event.id.clone(),
        event_type: event.event_type.to_string(),
        handled: false,
        reason: "no_handler",
        skipped: Vec::new(),
        notified: 0,
    };
    let now = unix_now() as i64;
    // Every event gets a feed record, carried by its marker: types no handler acts on too.
    let record = FeedRecord::of(&event);
    let marker = EventMarker::new(&event.id, event.event_type.as_str())
        .recording(record.marker_attributes(now));
    let mut plan = match handlers::plan(&event, &app.billing, now).await? {
        Some(plan) => {
            done.handled = true;
            plan
        }
        None => handlers::Plan {
            changes: Vec::new(),
            notifications: Vec::new(),
        },
    };
    plan.changes.extend(record.dispute_entry());
    match app.billing.apply(&marker, plan.changes).await? {
        Applied::Now { skipped } => {
            done.reason = if skipped.is_empty() {
                "applied"
            } else {
                "applied_older_event"
            };
            done.skipped = skipped;
        }
        Applied::Before => {
            done.reason = "applied_before";
            count_duplicate(app, message, &event.id, now).await;
        }
    }
    if !done.handled {
        done.reason = "no_handler";
    }
    // Notifications go out after the state commits; a redelivery (after a failed send) lands here with
    // `Applied::Before` and sends only what no channel has recorded as sent. Every channel is tried
    // even when one fails, so a channel that is down delays only itself.
    let about = About {
        event_id: &event.id,
        event_type: event.event_type.as_str(),
        livemode: event.livemode,
    };
    let mut failed = None;
    for notification in &plan.notifications {
        let channels = app.notify.channels_for(event.event_type.as_str());
        if channels.is_empty() {
            info!(event_id = %event.id, audience = notification.audience.as_str(), "notification (no channel routed)");
        }
        for (name, channel) in channels {
            match outbox::send_once(&app.billing, about, notification, name, channel, now).await {
                Ok(true) => done.notified += 1,
                Ok(false) => {}
                // The channel refused it for good (a Slack webhook revoked, removed, archived): no
                // retry can deliver it, and failing the message would only walk the money event
                // into the DLQ. Its claim was given up, so a replay sends it once the channel is
                // fixed.
                Err(OutboxError::Send(err)) if err.is_permanent() => {
                    error!(event_id = %event.id, channel = name, kind = channel.kind(), reason = "notification_misconfigured", error = %error_chain(&err), "notification refused for good: fix the channel; not retried");
                    app.metrics.record_misconfigured_channel(name);
                }
                Err(err) => {
                    warn!(event_id = %event.id, channel = name, kind = channel.kind(), error = %error_chain(&err), "notification failed; the message will be retried");
                    failed.get_or_insert(ProcessError::from(err));
                }
            }
        }
    }
    match failed {
        Some(err) => Err(err),
        None => Ok(done),
    }
}

/// Counts a delivery of an event already applied for the console, if it is the message's first receive:
/// that is a duplicate (both ingresses on, or a copy that raced past the receiver); a retried message
/// is not one.
async fn count_duplicate<S: BodyStash, C: DuplicateCounter, B: BillingStore>(
    app: &Processor<S, C, B>,
    message: &QueuedEvent<'_>,
    event_id: &str,
    now: i64,
) {
    if message.receive_count.parse::<u32>().unwrap_or(1) <= 1 {
        if let Err(err) = app.duplicates.count_duplicate(now as u64).await {
            warn!(event_id = %event_id, error = %error_chain(&err), "duplicate not counted");
        }
    }
}

/// What reading a message gave.
enum Read {
    /// The event, ready for its handler.
    Event(StripeEvent),
    /// A thin event applied before, with nothing left to send: not fetched at all.
    AppliedBefore {
        /// `evt_…`
        id: String,
        /// Its type (without the `v1.` prefix).
        event_type: String,
    },
}

async fn read_event<S: BodyStash, C: DuplicateCounter, B: BillingStore>(
    app: &Processor<S, C, B>,
    message: &QueuedEvent<'_>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Read, ProcessError> {
    let body = message.body.ok_or(ProcessError::EmptyMessage)?;
    let bytes = match QueueMessage::parse_body(body, message.body_location)? {
        MessageBody::Inline(text) => text.into_bytes(),
        MessageBody::Stashed(stashed) => app.bodies.fetch_body(&stashed).await?,
    };
    match parse_delivery(&bytes)? {
        Delivery::Snapshot { event, .. } => match &app.stripe {
            Some(stripe) => Ok(Read::Event(refetch(app, stripe, event, deadline).await?)),
            None => Ok(Read::Event(event)),
        },
        Delivery::Thin { mut event, .. } => {
            let Some(stripe) = &app.stripe else {
                return Err(ProcessError::ThinEventNotFetched(event.id));
            };
            if event.related_object.is_none() {
                return Err(ProcessError::ThinEventNotFetched(event.id));
            }
            let on_behalf_of = event
                .context
                .as_deref()
                .map_or(OnBehalfOf::Platform, OnBehalfOf::Context);
            if event.snapshot_event.is_none() && event.event_type.starts_with("v1.") {
                event.snapshot_event =
                    snapshot_event_of(stripe, &event.id, on_behalf_of, deadline).await?;
            }
            let event_type = event
                .event_type
                .strip_prefix("v1.")
                .unwrap_or(&event.event_type);
            if applied_and_notified(app, event.effect_id(), event_type).await? {
                return Ok(Read::AppliedBefore {
                    id: event.effect_id().to_owned(),
                    event_type: event_type.to_owned(),
                });
            }
            let Some(related) = &event.related_object else {
                return Err(ProcessError::ThinEventNotFetched(event.id));
            };
            let object = stripe
                .object_for(&related.url, on_behalf_of, deadline)
                .await?;
            Ok(Read::Event(event.into_snapshot(object)?))
        }
    }
}

/// The snapshot event a thin event of a v1 type mirrors, read from the whole v2 event when the
/// notification did not carry it: Stripe names it there (`snapshot_event`), and while an endpoint
/// migrates both copies arrive, so both must be recorded under that one id. `None` when the thin event
/// mirrors no snapshot event (or Stripe no longer has it: events are kept 30 days).
async fn snapshot_event_of(
    stripe: &StripeApi,
    thin_id: &str,
    on_behalf_of: OnBehalfOf<'_>,
    deadline: Option<tokio::time::Instant>,
) -> Result<Option<String>, ProcessError> {
    #[derive(serde::Deserialize)]
    struct WholeEvent {
        #[serde(default)]
        snapshot_event: Option<String>,
    }
    let path = format!("/v2/core/events/{thin_id}");
    match stripe.object_for(&path, on_behalf_of, deadline).await {
        Ok(body) => Ok(serde_json::from_str::<WholeEvent>(&body)
            .map_err(EventError::NotAnEvent)?
            .snapshot_event
            .filter(|id| !id.is_empty())),
        Err(StripeApiError::NotFound) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Whether the event's marker exists and every channel its type is routed to has recorded its
/// notification as sent: then a redelivery has nothing to do that a fetch could serve. (One query:
/// the marker and the notification records share the event's partition.)
async fn applied_and_notified<S: BodyStash, C: DuplicateCounter, B: BillingStore>(
    app: &Processor<S, C, B>,
    event_id: &str,
    event_type: &str,
) -> Result<bool, BillingError> {
    let marker = Key::event_marker(event_id);
    let items = app.billing.query(&marker.pk).await?;
    if !items.iter().any(|(sk, _)| *sk == marker.sk) {
        return Ok(false);
    }
    if !EventType::from(event_type).notifies() {
        return Ok(true);
    }
    Ok(app
        .notify
        .channels_for(event_type)
        .iter()
        .all(|(name, _)| outbox::sent_on(&items, event_id, name)))
}

/// Refetch mode: the objects whose state depends on delivery order (subscriptions, invoices) are read
/// from Stripe as they are now, so a handler never writes a stale snapshot even when events arrive
/// out of order. The event's own version still orders the write.
///
/// An event whose marker exists is not re-fetched: the marker refuses its changes, so Stripe's current
/// object would go unused (any notification still unsent reads the delivered snapshot). A connected
/// account's event (`account`) is fetched from that account (`Stripe-Account`).
async fn refetch<S: BodyStash, C: DuplicateCounter, B: BillingStore>(
    app: &Processor<S, C, B>,
    stripe: &StripeApi,
    mut event: StripeEvent,
    deadline: Option<tokio::time::Instant>,
) -> Result<StripeEvent, ProcessError> {
    let object_type = match event.event_type.object_type() {
        Some(object_type) if event.event_type.refetched() => object_type,
        _ => return Ok(event),
    };
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let Id { id } = event.object()?;
    if app
        .billing
        .get(&Key::event_marker(&event.id))
        .await?
        .is_some()
    {
        return Ok(event);
    }
    let on_behalf_of = event
        .account
        .as_deref()
        .map_or(OnBehalfOf::Platform, OnBehalfOf::Account);
    let current = stripe
        .current_object(object_type, &id, on_behalf_of, deadline)
        .await?;
    event.data.object =
        serde_json::value::RawValue::from_string(current).map_err(EventError::NotAnEvent)?;
    Ok(event)
}
