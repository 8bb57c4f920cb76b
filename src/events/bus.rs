//! The event bus: publishes each event into the outbox for the sinks that want it, wakes
//! their delivery tasks, and keeps the recent events and a live feed for the API.
//!
//! [`start`] opens one task per sink that [`EventsConfig::sinks`] lists, plus the outbox's
//! retention purge; the bus knows sinks only through the [`Sink`] trait.

use std::sync::Arc;

use tokio::sync::Notify;

use super::config::EventsConfig;
use super::outbox::{Outbox, OutboxError};
use super::sinks::mqtt::home_assistant::Announced;
use super::sinks::{Sink, SinkContext};
use super::Event;
use crate::gallery::erasure::Erasures;
use crate::shutdown::Shutdown;

/// One delivery endpoint (a sink) as the bus sees it.
struct Endpoint {
    name: String,
    sink: Arc<dyn Sink>,
    notify: Arc<Notify>,
}

/// Publishes events into the outbox and wakes the endpoints' delivery tasks.
#[derive(Clone)]
pub struct EventBus {
    outbox: Arc<Outbox>,
    endpoints: Arc<Vec<Endpoint>>,
    /// The latest events, newest last, for `GET /v1/events/recent` and for resuming
    /// `GET /v1/events/stream` (memory only).
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<Event>>>,
    /// Every event as it is published, for `GET /v1/events/stream` (memory only).
    live: tokio::sync::broadcast::Sender<Event>,
    /// The gallery's erasure register: an event about an erased identity, decided before
    /// the erasure and published after it, loses the identity on the way in (or is not
    /// published, when it only named them).
    erasures: Arc<Erasures>,
}

/// Events a live stream may fall behind by before it is told it missed some.
pub const LIVE_BUFFER: usize = 1024;

/// Events kept for `GET /v1/events/recent`.
pub const RECENT_EVENTS: usize = 200;

impl EventBus {
    /// Durably enqueue `event` for every endpoint that wants it; returns rows written.
    pub fn publish(&self, event: &Event) -> Result<usize, OutboxError> {
        let named = |i: &Option<crate::events::EventIdentity>| {
            i.as_ref().is_some_and(|i| self.is_erased(i.id))
        };
        let erased =
            named(&event.identity) || event.previous.as_ref().is_some_and(|p| named(&p.identity));
        let scrubbed;
        let event = match erased {
            true if event.only_names_identity() => {
                tracing::info!(event = %event.id, r#type = event.kind.as_str(),
                    "event not published: it names an identity erased meanwhile");
                return Ok(0);
            }
            true => {
                let mut e = event.clone();
                e.forget_identity();
                scrubbed = e;
                &scrubbed
            }
            false => event,
        };
        let targets: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.sink.wants(event))
            .collect();
        let names: Vec<&str> = targets.iter().map(|e| e.name.as_str()).collect();
        let written = self.outbox.enqueue(event, &names)?;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
            // Under the same lock, so a stream that subscribes and then reads the recent
            // events sees every event in one or the other. No clone without a subscriber.
            if self.live.receiver_count() > 0 {
                let _ = self.live.send(event.clone());
            }
        }
        let m = crate::telemetry::metrics();
        m.events_published
            .get_or_create(&crate::telemetry::TypeLabel {
                r#type: event.kind.as_str().to_string(),
            })
            .inc();
        for e in targets {
            m.outbox_depth
                .get_or_create(&crate::telemetry::Metrics::endpoint(&e.name))
                .inc();
            e.notify.notify_one();
        }
        Ok(written)
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Whether identity `id` is erased (or being erased).
    pub fn is_erased(&self, id: uuid::Uuid) -> bool {
        self.erasures.is_erased(id)
    }

    /// Erasure of identity `id` from what this node holds of its events: in the outbox
    /// (every row) and in the recent events that `GET /v1/events/recent` and stream
    /// replays serve, an event naming it loses the identity, or goes when it only named it
    /// (a recognition); so does any event about it published from now on (the register
    /// marks it before this runs). Returns the ids of those events (their snapshots go
    /// too). Events already delivered live on at their consumers.
    pub fn forget_identity(&self, id: uuid::Uuid) -> Result<Vec<uuid::Uuid>, OutboxError> {
        let scrubbed = self.outbox.scrub_identity(id)?;
        let m = crate::telemetry::metrics();
        for endpoint in &scrubbed.dropped_pending {
            m.outbox_depth
                .get_or_create(&crate::telemetry::Metrics::endpoint(endpoint))
                .dec();
        }
        let mut events = scrubbed.events;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.retain_mut(|event| {
                if !event.names(id) {
                    return true;
                }
                events.push(event.id);
                if event.only_names_identity() {
                    return false;
                }
                event.forget_identity();
                true
            });
        }
        events.sort();
        events.dedup();
        Ok(events)
    }

    /// Up to `limit` of the latest events, newest first (whether or not any endpoint
    /// subscribed to them).
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit).cloned().collect()
    }

    /// Follow published events: a receiver of every event from now on, and the recent
    /// events after `after` (oldest first) taken at the same instant, so that together
    /// they miss nothing and repeat nothing. The replay is `None` when `after` is not among
    /// the recent events (older than the last [`RECENT_EVENTS`], or unknown).
    pub fn follow(
        &self,
        after: Option<uuid::Uuid>,
    ) -> (tokio::sync::broadcast::Receiver<Event>, Option<Vec<Event>>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.subscribe();
        let replay = match after {
            None => Some(Vec::new()),
            Some(id) => recent
                .iter()
                .position(|e| e.id == id)
                .map(|at| recent.iter().skip(at + 1).cloned().collect()),
        };
        (live, replay)
    }
}

/// Start one delivery task per endpoint (every configured sink) on the current tokio
/// runtime. Tasks stop taking new rows once `shutdown` is requested and finish the
/// deliveries in flight.
pub fn start(
    outbox: Arc<Outbox>,
    config: &EventsConfig,
    shutdown: Shutdown,
) -> (EventBus, Vec<tokio::task::JoinHandle<()>>) {
    start_with(outbox, config, shutdown, None, Default::default())
}

/// As [`start`], with what MQTT endpoints with `home_assistant = true` announce and the
/// gallery's erasure register.
pub fn start_with(
    outbox: Arc<Outbox>,
    config: &EventsConfig,
    shutdown: Shutdown,
    announced: Option<Announced>,
    erasures: Arc<Erasures>,
) -> (EventBus, Vec<tokio::task::JoinHandle<()>>) {
    let configured: Vec<&str> = config.endpoint_names().collect();
    match outbox.dead_letter_removed_endpoints(&configured) {
        Ok(moved) => {
            for (endpoint, rows) in moved {
                tracing::warn!(
                    endpoint,
                    rows,
                    "pending events of an endpoint no longer configured moved to the dead letters"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot check the outbox for removed endpoints"),
    }
    let mut endpoints = Vec::new();
    let mut handles = Vec::new();
    let retry = config.retry();
    for sink in config.sinks(announced) {
        let notify = Arc::new(Notify::new());
        let sink: Arc<dyn Sink> = Arc::from(sink);
        handles.push(sink.clone().spawn(SinkContext {
            outbox: outbox.clone(),
            retry,
            notify: notify.clone(),
            shutdown: shutdown.clone(),
        }));
        endpoints.push(Endpoint {
            name: sink.name().to_string(),
            sink,
            notify,
        });
    }
    // Every endpoint's series exist from the start (at zero), so dashboards and
    // `increase()` see them before the first failure.
    let m = crate::telemetry::metrics();
    for name in config.endpoint_names() {
        let label = crate::telemetry::Metrics::endpoint(name);
        let _ = m.events_dead_lettered.get_or_create(&label);
        let _ = m.outbox_depth.get_or_create(&label);
        let _ = m.event_delivery_latency.get_or_create(&label);
        for delivered in [true, false] {
            let _ = m
                .event_deliveries
                .get_or_create(&crate::telemetry::Metrics::delivery(name, delivered));
        }
    }
    handles.push(tokio::spawn(purge_loop(
        outbox.clone(),
        config.retention_s,
        shutdown.clone(),
    )));
    (
        EventBus {
            outbox,
            endpoints: Arc::new(endpoints),
            recent: Default::default(),
            live: tokio::sync::broadcast::channel(LIVE_BUFFER).0,
            erasures,
        },
        handles,
    )
}

/// Delete delivered and dead rows past `events.retention_s`, at start and every 10 min.
async fn purge_loop(outbox: Arc<Outbox>, retention_s: u64, shutdown: Shutdown) {
    loop {
        let cutoff = super::outbox::now_ms() - (retention_s as i64).saturating_mul(1000);
        match outbox.purge(cutoff) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                retention_s,
                "outbox: old delivered/dead rows deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "outbox purge failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            _ = shutdown.requested() => return,
        }
    }
}
