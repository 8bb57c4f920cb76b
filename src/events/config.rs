//! The `[events]` section: the outbox, retries, snapshots and every sink's endpoints.
//!
//! The sinks own their endpoint settings ([`WebhookConfig`], [`MqttConfig`],
//! [`NatsConfig`]); this section lists them, validates the whole and says which sinks
//! run ([`EventsConfig::sinks`], the one place a new sink is added).

use serde::{Deserialize, Serialize};

use super::delivery::Retry;
use super::sinks::mqtt::{home_assistant::Announced, MqttConfig};
use super::sinks::nats::NatsConfig;
use super::sinks::webhook::WebhookConfig;
use super::sinks::Sink;

/// Event delivery settings (section `[events]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// SQLite outbox file (created if missing).
    pub outbox: String,
    /// Undelivered rows older than this move to the dead letters.
    pub dead_letter_after_s: u64,
    /// First retry delay; doubles per attempt up to `retry_max_ms`, ×[0.5, 1.5) jitter.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Attach a face thumbnail (JPEG, base64) to identity events. Off: privacy first.
    pub thumbnails: bool,
    /// Delivered and dead-lettered rows older than this are deleted from the outbox
    /// (checked every 10 minutes): the outbox is a delivery queue, not an archive.
    pub retention_s: u64,
    /// Event snapshots (`[events.snapshots]`).
    #[serde(default)]
    pub snapshots: SnapshotConfig,
    /// Webhook endpoints.
    pub webhooks: Vec<WebhookConfig>,
    /// MQTT brokers (same outbox, QoS 1).
    #[serde(default)]
    pub mqtt: Vec<MqttConfig>,
    /// NATS JetStream servers (same outbox, settled by the publish acknowledgement).
    #[serde(default)]
    pub nats: Vec<NatsConfig>,
}

impl EventsConfig {
    /// How deliveries are retried and when they become dead letters.
    pub fn retry(&self) -> Retry {
        Retry {
            initial_ms: self.retry_initial_ms,
            max_ms: self.retry_max_ms,
            dead_letter_after_s: self.dead_letter_after_s,
        }
    }

    /// Every configured endpoint as a sink, in the order of the endpoint names: webhooks,
    /// MQTT brokers (with what Home Assistant discovery announces), NATS servers. A new
    /// kind of sink is one file in `sinks/` and one line here.
    pub fn sinks(&self, announced: Option<Announced>) -> Vec<Box<dyn Sink>> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        sinks.extend(
            self.webhooks
                .iter()
                .map(|w| Box::new(w.clone()) as Box<dyn Sink>),
        );
        sinks.extend(self.mqtt.iter().map(|m| m.sink(announced.clone())));
        sinks.extend(
            self.nats
                .iter()
                .map(|n| Box::new(n.clone()) as Box<dyn Sink>),
        );
        sinks
    }

    /// Every endpoint's name: webhooks, MQTT brokers, NATS servers.
    pub fn endpoint_names(&self) -> impl Iterator<Item = &str> {
        self.webhooks
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.mqtt.iter().map(|b| b.name.as_str()))
            .chain(self.nats.iter().map(|n| n.name.as_str()))
    }
}

/// Event snapshots (section `[events.snapshots]`): the frame each identity event was
/// decided on, shrunk, with the face boxed, at `GET /v1/events/{id}/snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Off by default: a full frame shows everyone in view.
    pub enabled: bool,
    /// Folder of the snapshots (created owner-only), one `<event id>.jpg` each.
    pub dir: String,
    /// Snapshots older than this are deleted (checked at start and every minute).
    pub retention_s: u64,
    /// Longer side of a snapshot; the frame is shrunk by the smallest whole factor that
    /// fits it.
    pub max_side: u32,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: false,
            dir: "data/snapshots".into(),
            retention_s: 86_400,
            max_side: 640,
        }
    }
}

impl SnapshotConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.enabled && self.dir.is_empty() {
            problems.push("events.snapshots.dir must not be empty when enabled".into());
        }
        crate::validate::within(
            problems,
            "events.snapshots.retention_s",
            self.retention_s,
            60..=366 * 86_400,
        );
        crate::validate::within(
            problems,
            "events.snapshots.max_side",
            self.max_side,
            64..=4096,
        );
    }
}

impl EventsConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        self.snapshots.validate(problems);
        if self.outbox.is_empty() {
            problems.push("events.outbox must not be empty".into());
        }
        if self.retention_s < 3600 {
            problems.push(format!(
                "events.retention_s = {} must be at least 3600",
                self.retention_s
            ));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            problems.push("events.retry_initial_ms must be > 0 and ≤ events.retry_max_ms".into());
        }
        for w in &self.webhooks {
            w.validate(problems);
        }
        for m in &self.mqtt {
            m.validate(problems);
        }
        for n in &self.nats {
            n.validate(problems);
        }
        let mut names = std::collections::HashSet::new();
        for name in self.endpoint_names() {
            if !names.insert(name) {
                problems.push(format!("events: endpoint name `{name}` is used twice"));
            }
        }
    }
}
