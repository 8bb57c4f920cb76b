//! Identity events: the schema, a durable outbox, and the webhook, MQTT and NATS sinks.
//!
//! Last stage of the pipeline. [`webhook::EventBus::publish`] writes an event to the
//! [`outbox::Outbox`] (SQLite, the data directory) — one row per subscribed endpoint —
//! **before** any delivery is tried, so an accepted event survives a crash or `kill -9`.
//! [`webhook::start`] runs one delivery task per endpoint (in `serve`, on a runtime and
//! thread of their own): webhooks ([`webhook`]: signed the Standard Webhooks way, their own
//! concurrency limit), MQTT brokers ([`mqtt`]: QoS 1, settled by PUBACK) and NATS servers
//! ([`nats`]: JetStream, settled by the publish acknowledgement). Each retries
//! with exponential backoff and jitter ([`crate::backoff`]) until the endpoint accepts the
//! row or it is older than `events.dead_letter_after_s`, when it moves to the dead
//! letters. Delivery is at least once; the event id (UUID v7) is the idempotency key
//! consumers deduplicate on.
//!
//! The JSON Schema of the payload is `src/events/event-v1.schema.json` ([`SCHEMA_V1`]).

pub mod home_assistant;
pub mod mqtt;
pub mod nats;
pub mod outbox;
pub mod signature;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::stages::BBox;

/// The JSON Schema (draft 2020-12) of [`Event`], version 1.
pub const SCHEMA_V1: &str = include_str!("event-v1.schema.json");

/// Event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "identity.recognized")]
    IdentityRecognized,
    #[serde(rename = "identity.unknown")]
    IdentityUnknown,
    #[serde(rename = "track.ended")]
    TrackEnded,
    #[serde(rename = "camera.down")]
    CameraDown,
    #[serde(rename = "camera.up")]
    CameraUp,
    /// Sent on request (`POST /v1/events/test`) so operators can check an endpoint.
    #[serde(rename = "test")]
    Test,
    /// A face just enrolled matches appearances kept as unknown (`history.enabled`): the
    /// person was seen before, and where. Opt-in: an endpoint gets it only when its
    /// `types` lists it.
    #[serde(rename = "identity.seen_before")]
    IdentitySeenBefore,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::IdentityRecognized => "identity.recognized",
            EventType::IdentityUnknown => "identity.unknown",
            EventType::TrackEnded => "track.ended",
            EventType::CameraDown => "camera.down",
            EventType::CameraUp => "camera.up",
            EventType::Test => "test",
            EventType::IdentitySeenBefore => "identity.seen_before",
        }
    }

    /// Types an endpoint gets only when its `types` names them (an empty `types` means
    /// every other type).
    pub fn opt_in(self) -> bool {
        matches!(self, EventType::IdentitySeenBefore)
    }

    /// Whether events of this type carry appearance-history data (where a person was
    /// seen), which only admin keys may read: left out of the recent events and the event
    /// stream for read keys, and sent to a sink only when its `types` names the type.
    pub fn carries_history(self) -> bool {
        matches!(self, EventType::IdentitySeenBefore)
    }

    /// Whether an endpoint subscribed to `types` gets events of this type.
    pub fn wanted_by(self, types: &[String]) -> bool {
        if types.is_empty() {
            !self.opt_in()
        } else {
            types.iter().any(|t| t == self.as_str())
        }
    }

    pub const ALL: [EventType; 7] = [
        EventType::IdentityRecognized,
        EventType::IdentityUnknown,
        EventType::TrackEnded,
        EventType::CameraDown,
        EventType::CameraUp,
        EventType::Test,
        EventType::IdentitySeenBefore,
    ];
}

/// Who was recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventIdentity {
    pub id: Uuid,
    pub name: String,
    /// The identity's enrolled face closest to the track (recognitions only): the
    /// template to remove when the match was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_id: Option<Uuid>,
}

/// One event, as delivered (schema version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUID v7: unique, time-ordered; the idempotency key.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub schema_version: u32,
    pub occurred_at: DateTime<Utc>,
    pub camera_id: Option<String>,
    pub track_id: Option<String>,
    /// The recognised identity; null for unknown faces and camera events.
    pub identity: Option<EventIdentity>,
    /// Raw cosine similarity to the identity (recognised) or the nearest one (unknown).
    pub similarity: Option<f32>,
    /// The similarity calibrated against the gallery cohort: what `match.threshold` was
    /// applied to (see `stages::matching`). Absent in events written before it existed.
    #[serde(default)]
    pub calibrated_similarity: Option<f32>,
    pub margin: Option<f32>,
    pub quality: Option<f32>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(rename = "box")]
    pub bbox: Option<BBox>,
    /// `model@version` of the embedding the decision used.
    pub model: Option<String>,
    /// Base64 JPEG of the face, only when `events.thumbnails` is on.
    pub thumbnail_jpeg: Option<String>,
    /// `identity.seen_before` only: the appearances the enrolled face matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appearances: Option<Vec<SeenAppearance>>,
}

/// An appearance in an `identity.seen_before` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenAppearance {
    pub track_id: Uuid,
    pub camera: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Cosine between the enrolled face and the appearance's template.
    pub similarity: f32,
    /// The `identity.unknown` event the appearance produced.
    pub event_id: Option<Uuid>,
}

impl Event {
    /// Erasure: whether the event exists only to name its identity (a recognition, or
    /// where the person was seen before). Such an event about an erased identity is not
    /// published, and dropped where it is kept; any other is kept without the identity
    /// ([`Event::forget_identity`]).
    pub fn only_names_identity(&self) -> bool {
        matches!(
            self.kind,
            EventType::IdentityRecognized | EventType::IdentitySeenBefore
        )
    }

    /// Erasure: drop everything the event holds about its identity: the identity (id and
    /// name), how well it matched, the face thumbnail and the appearances. Whether
    /// anything was left to drop.
    pub fn forget_identity(&mut self) -> bool {
        let had = self.identity.is_some()
            || self.thumbnail_jpeg.is_some()
            || self.similarity.is_some()
            || self.appearances.is_some();
        self.identity = None;
        self.similarity = None;
        self.calibrated_similarity = None;
        self.margin = None;
        self.thumbnail_jpeg = None;
        self.appearances = None;
        had
    }

    /// A new event of `kind` now, every optional field empty.
    pub fn new(kind: EventType) -> Event {
        Event {
            id: Uuid::now_v7(),
            kind,
            schema_version: 1,
            occurred_at: Utc::now(),
            camera_id: None,
            track_id: None,
            identity: None,
            similarity: None,
            calibrated_similarity: None,
            margin: None,
            quality: None,
            first_seen: None,
            last_seen: None,
            bbox: None,
            model: None,
            thumbnail_jpeg: None,
            appearances: None,
        }
    }
}

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
    pub webhooks: Vec<webhook::WebhookConfig>,
    /// MQTT brokers (same outbox, QoS 1).
    #[serde(default)]
    pub mqtt: Vec<mqtt::MqttConfig>,
    /// NATS JetStream servers (same outbox, settled by the publish acknowledgement).
    #[serde(default)]
    pub nats: Vec<nats::NatsConfig>,
}

impl EventsConfig {
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
        if !(60..=366 * 86_400).contains(&self.retention_s) {
            problems.push(format!(
                "events.snapshots.retention_s = {} must be within [60, {}]",
                self.retention_s,
                366 * 86_400
            ));
        }
        if !(64..=4096).contains(&self.max_side) {
            problems.push(format!(
                "events.snapshots.max_side = {} must be within [64, 4096]",
                self.max_side
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_serialises_with_the_schema_names() {
        let mut e = Event::new(EventType::IdentityRecognized);
        e.identity = Some(EventIdentity {
            id: Uuid::now_v7(),
            name: "Ada".into(),
            face_id: Some(Uuid::now_v7()),
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "identity.recognized");
        assert_eq!(v["schema_version"], 1);
        assert!(v.get("box").is_some() && v["thumbnail_jpeg"].is_null());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        // The schema file is valid JSON and names every field and type.
        let schema: serde_json::Value = serde_json::from_str(SCHEMA_V1).unwrap();
        for field in serde_json::to_value(&e)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(
                schema["properties"][field].is_object(),
                "schema lacks {field}"
            );
        }
        let types: Vec<&str> = schema["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(types, EventType::ALL.map(EventType::as_str));
        // and the identity's fields
        for field in serde_json::to_value(&e).unwrap()["identity"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(
                schema["properties"]["identity"]["properties"][field].is_object(),
                "schema lacks identity.{field}"
            );
        }
    }
}
