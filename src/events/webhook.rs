//! The webhook sink: signed, retried, at-least-once delivery of outbox rows.
//!
//! One task per endpoint, so a slow or dead receiver only delays itself: each task takes
//! its due rows, POSTs up to `max_concurrency` at once, marks 2xx as delivered and
//! anything else (status, timeout, refused connection) as failed with the next attempt
//! `retry_initial_ms · 2^attempts` later (capped at `retry_max_ms`, ×[0.5, 1.5) jitter).
//! Rows older than `dead_letter_after_s` go to the dead letters.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::outbox::{now_ms, Outbox, OutboxError, Pending};
use super::{signature, Event, EventsConfig};
use crate::gallery::erasure::Erasures;
use crate::shutdown::Shutdown;

/// One webhook endpoint (`[[events.webhooks]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name (used in the outbox and logs).
    pub name: String,
    /// `http://` or `https://` URL receiving POSTed JSON events.
    pub url: String,
    /// Signing secret, `whsec_` + base64 (Standard Webhooks).
    pub secret: String,
    /// Event types to send (`identity.recognized`, …); empty: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Deliveries in flight at once to this endpoint.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// PEM file of certificate authorities trusted for this endpoint besides the public
    /// roots (a receiver with a certificate from a private CA); `https://` URLs only.
    #[serde(default)]
    pub ca_file: String,
}

impl WebhookConfig {
    /// The extra roots of `ca_file` (none when empty).
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>, String> {
        if self.ca_file.is_empty() {
            return Ok(Vec::new());
        }
        let pem =
            std::fs::read(&self.ca_file).map_err(|e| format!("reading {}: {e}", self.ca_file))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", self.ca_file))?;
        if roots.is_empty() {
            return Err(format!("{} holds no PEM certificate", self.ca_file));
        }
        Ok(roots)
    }
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout() -> u64 {
    5000
}

impl WebhookConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let at = format!("events.webhooks[{}]", self.name);
        if self.name.is_empty() {
            problems.push("events.webhooks: every endpoint needs a name".into());
        }
        if !self.ca_file.is_empty() {
            if !self.url.starts_with("https://") {
                problems.push(format!("{at}.ca_file is set but the url is not https://"));
            }
            if let Err(e) = self.extra_roots() {
                problems.push(format!("{at}.ca_file: {e}"));
            }
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!(
                "{at}.url = {:?} must start with http:// or https://",
                self.url
            ));
        }
        if signature::check_secret(&self.secret).is_err() {
            problems.push(format!("{at}.secret must be `whsec_` followed by base64"));
        }
        for t in &self.types {
            if !super::EventType::ALL.iter().any(|k| k.as_str() == t) {
                problems.push(format!("{at}.types: unknown event type {t:?}"));
            }
        }
        if !(1..=256).contains(&self.max_concurrency) {
            problems.push(format!("{at}.max_concurrency must be within [1, 256]"));
        }
        if self.timeout_ms == 0 {
            problems.push(format!("{at}.timeout_ms must be > 0"));
        }
    }

    fn wants(&self, event: &Event) -> bool {
        event.kind.wanted_by(&self.types)
    }
}

/// One delivery endpoint (webhook or MQTT broker) as the bus sees it.
struct Endpoint {
    name: String,
    wants: Box<dyn Fn(&Event) -> bool + Send + Sync>,
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
        let erased = event
            .identity
            .as_ref()
            .is_some_and(|i| self.is_erased(i.id));
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
        let targets: Vec<&Endpoint> = self.endpoints.iter().filter(|e| (e.wants)(event)).collect();
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
                if event.identity.as_ref().is_none_or(|i| i.id != id) {
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

/// Start one delivery task per endpoint (webhooks and MQTT brokers) on the current tokio
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
    announced: Option<super::home_assistant::Announced>,
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
    for hook in &config.webhooks {
        let notify = Arc::new(Notify::new());
        handles.push(tokio::spawn(deliver_loop(
            outbox.clone(),
            hook.clone(),
            config.clone(),
            notify.clone(),
            shutdown.clone(),
        )));
        let filter = hook.clone();
        endpoints.push(Endpoint {
            name: hook.name.clone(),
            wants: Box::new(move |e| filter.wants(e)),
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
    for broker in &config.mqtt {
        let notify = Arc::new(Notify::new());
        handles.push(tokio::spawn(super::mqtt::deliver_loop(
            outbox.clone(),
            broker.clone(),
            config.clone(),
            notify.clone(),
            shutdown.clone(),
            announced.clone(),
        )));
        let filter = broker.clone();
        endpoints.push(Endpoint {
            name: broker.name.clone(),
            wants: Box::new(move |e| filter.wants(e)),
            notify,
        });
    }
    for server in &config.nats {
        let notify = Arc::new(Notify::new());
        handles.push(tokio::spawn(super::nats::deliver_loop(
            outbox.clone(),
            server.clone(),
            config.clone(),
            notify.clone(),
            shutdown.clone(),
        )));
        let filter = server.clone();
        endpoints.push(Endpoint {
            name: server.name.clone(),
            wants: Box::new(move |e| filter.wants(e)),
            notify,
        });
    }
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

async fn deliver_loop(
    outbox: Arc<Outbox>,
    endpoint: WebhookConfig,
    config: EventsConfig,
    notify: Arc<Notify>,
    shutdown: Shutdown,
) {
    // Redirects are not followed: a signed event goes to the configured URL or fails
    // (a 3xx is a failed attempt, retried like any other).
    let client = match endpoint.extra_roots().and_then(|roots| {
        roots
            .into_iter()
            .fold(reqwest::Client::builder(), |b, root| {
                b.add_root_certificate(root)
            })
            .timeout(Duration::from_millis(endpoint.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.name, error = %e, "cannot build HTTP client; endpoint disabled");
            return;
        }
    };
    let mut queue = EndpointQueue::new(outbox.clone(), &endpoint.name, &config, notify, shutdown);
    while let Some(due) = queue.next_batch(endpoint.max_concurrency * 8).await {
        futures_util::stream::iter(due)
            .for_each_concurrent(endpoint.max_concurrency, |row| {
                let (client, outbox, endpoint, config) = (&client, &outbox, &endpoint, &config);
                async move {
                    let result = deliver(client, endpoint, &row).await;
                    record(outbox, &endpoint.name, &row, result, config);
                }
            })
            .await;
    }
}

/// One endpoint's view of the outbox: the due rows, waiting (woken by new events, the
/// next retry time or shutdown) when there are none, and ageing rows out to the dead
/// letters at most once a second (a range update over the outbox).
pub(crate) struct EndpointQueue {
    outbox: Arc<Outbox>,
    name: String,
    dead_after_ms: i64,
    last_expiry: std::time::Instant,
    notify: Arc<Notify>,
    shutdown: Shutdown,
}

impl EndpointQueue {
    pub(crate) fn new(
        outbox: Arc<Outbox>,
        name: &str,
        config: &EventsConfig,
        notify: Arc<Notify>,
        shutdown: Shutdown,
    ) -> EndpointQueue {
        if let Ok(depth) = outbox.depth(name) {
            crate::telemetry::metrics()
                .outbox_depth
                .get_or_create(&crate::telemetry::Metrics::endpoint(name))
                .set(depth as i64);
        }
        EndpointQueue {
            outbox,
            name: name.to_string(),
            dead_after_ms: (config.dead_letter_after_s * 1000) as i64,
            last_expiry: std::time::Instant::now() - Duration::from_secs(1),
            notify,
            shutdown,
        }
    }

    /// The next due rows (at most `limit`), or `None` once shutdown is requested.
    pub(crate) async fn next_batch(&mut self, limit: usize) -> Option<Vec<Pending>> {
        loop {
            if self.shutdown.is_requested() {
                return None;
            }
            if self.last_expiry.elapsed() >= Duration::from_secs(1) {
                self.last_expiry = std::time::Instant::now();
                expire(&self.outbox, &self.name, self.dead_after_ms);
            }
            match self.outbox.due(&self.name, now_ms(), limit) {
                Ok(due) if !due.is_empty() => return Some(due),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(endpoint = %self.name, error = %e, "reading the outbox failed")
                }
            }
            let wait = self
                .outbox
                .next_due(&self.name)
                .ok()
                .flatten()
                .map_or(1000, |t| (t - now_ms()).clamp(5, 1000)) as u64;
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = self.shutdown.requested() => {}
            }
        }
    }
}

/// Move `endpoint`'s rows older than the dead-letter age out of the queue (counted).
pub(crate) fn expire(outbox: &Outbox, endpoint: &str, dead_after_ms: i64) {
    match outbox.dead_letter_expired(endpoint, now_ms() - dead_after_ms) {
        Ok(0) => {}
        Ok(n) => {
            let m = crate::telemetry::metrics();
            let label = crate::telemetry::Metrics::endpoint(endpoint);
            m.events_dead_lettered
                .get_or_create(&label)
                .inc_by(n as u64);
            m.outbox_depth.get_or_create(&label).dec_by(n as i64);
            tracing::warn!(endpoint, count = n, "events moved to the dead letters");
        }
        Err(e) => tracing::error!(endpoint, error = %e, "dead-lettering failed"),
    }
}

/// Record one attempt's outcome in the outbox and the metrics; a failure is retried
/// after [`backoff_ms`].
pub(crate) fn record(
    outbox: &Outbox,
    endpoint: &str,
    row: &Pending,
    result: Result<(), String>,
    config: &EventsConfig,
) {
    let m = crate::telemetry::metrics();
    let label = crate::telemetry::Metrics::endpoint(endpoint);
    let delivered = result.is_ok();
    m.event_deliveries
        .get_or_create(&crate::telemetry::Metrics::delivery(endpoint, delivered))
        .inc();
    let recorded = match result {
        Ok(()) => {
            m.outbox_depth.get_or_create(&label).dec();
            m.event_delivery_latency
                .get_or_create(&label)
                .observe((now_ms() - row.created_ms).max(0) as f64 / 1000.0);
            outbox.mark_delivered(row.seq)
        }
        Err(reason) => {
            tracing::warn!(endpoint, event = %row.event_id, attempt = row.attempts + 1, %reason,
                "delivery failed; will retry");
            outbox.mark_failed(
                row.seq,
                &reason,
                now_ms() + backoff_ms(row.attempts, config),
            )
        }
    };
    if let Err(e) = recorded {
        tracing::error!(endpoint, error = %e, "recording a delivery failed");
    }
}

/// `initial · 2^attempts`, capped, ×[0.5, 1.5) jitter so retries of many rows spread out.
pub fn backoff_ms(attempts: u32, config: &EventsConfig) -> i64 {
    crate::backoff::jittered(config.retry_initial_ms, config.retry_max_ms, attempts).as_millis()
        as i64
}

async fn deliver(
    client: &reqwest::Client,
    endpoint: &WebhookConfig,
    row: &Pending,
) -> Result<(), String> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature::sign(
        &endpoint.secret,
        &row.event_id,
        timestamp,
        row.payload.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let response = client
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &row.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.payload.clone())
        .send()
        .await
        // the URL may carry a token: it stays out of logs and dead letters
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_https_and_a_certificate() {
        let dir = std::env::temp_dir().join(format!("fs-ca-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let hook: WebhookConfig = toml::from_str(&format!(
            "name = \"h\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nca_file = \"{}\"\n",
            empty.display()
        ))
        .unwrap();
        let mut problems = Vec::new();
        hook.validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("not https://")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("no PEM certificate")),
            "{problems:?}"
        );
        let missing = WebhookConfig {
            ca_file: dir.join("missing.pem").display().to_string(),
            ..hook
        };
        assert!(missing.extra_roots().unwrap_err().contains("reading"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let config: EventsConfig = toml::from_str(
            "outbox = 'x'\ndead_letter_after_s = 60\nretry_initial_ms = 100\nretry_max_ms = 1000\nthumbnails = false\nretention_s = 604800\nwebhooks = []",
        )
        .unwrap();
        for attempts in 0..3 {
            let b = backoff_ms(attempts, &config);
            let base = 100 * (1 << attempts);
            assert!(b >= base / 2 && b < base * 3 / 2, "{attempts}: {b}");
        }
        assert!(backoff_ms(20, &config) < 1500);
    }
}
