//! Identity events: the schema every sink delivers, and the parts that deliver it.
//!
//! Last stage of the pipeline. This file is the schema ([`Event`], [`EventType`]; the JSON
//! Schema is `src/events/event-v1.schema.json`, [`SCHEMA_V1`]) and imports none of its
//! neighbours. [`bus::EventBus::publish`] writes an event to the [`outbox::Outbox`]
//! (SQLite, the data directory) — one row per subscribed endpoint — **before** any
//! delivery is tried, so an accepted event survives a crash or `kill -9`. [`bus::start`]
//! runs one delivery task per configured [`sinks::Sink`] (in `serve`, on a runtime and
//! thread of their own): webhooks ([`sinks::webhook`]: signed the Standard Webhooks way
//! ([`signature`]), their own concurrency limit), MQTT brokers ([`sinks::mqtt`]: QoS 1,
//! settled by PUBACK, with Home Assistant discovery) and NATS servers ([`sinks::nats`]:
//! JetStream, settled by the publish acknowledgement). Each retries ([`delivery`]) with
//! exponential backoff and jitter ([`crate::backoff`]) until the endpoint accepts the row
//! or it is older than `events.dead_letter_after_s`, when it moves to the dead letters.
//! Delivery is at least once; the event id (UUID v7) is the idempotency key consumers
//! deduplicate on. The `[events]` section is [`config::EventsConfig`].
//!
//! What may import what, inside: `sinks` use `delivery`, `outbox` and this schema;
//! `config` lists the sinks' settings; `bus` starts the sinks `config` lists. Nothing
//! here imports `bus` or `config` but the top.

pub mod bus;
pub mod config;
pub mod delivery;
pub mod outbox;
pub mod signature;
pub mod sinks;

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
    /// A later part of an appearance already reported changed its decision: it resolved
    /// an unknown, or showed the same person markedly better (`reason`); `previous` is
    /// what the appearance's earlier event said. Same `track_id` (the appearance).
    #[serde(rename = "identity.updated")]
    IdentityUpdated,
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
            EventType::IdentityUpdated => "identity.updated",
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

    pub const ALL: [EventType; 8] = [
        EventType::IdentityRecognized,
        EventType::IdentityUnknown,
        EventType::TrackEnded,
        EventType::CameraDown,
        EventType::CameraUp,
        EventType::Test,
        EventType::IdentitySeenBefore,
        EventType::IdentityUpdated,
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

/// Why an appearance's decision changed (`identity.updated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeReason {
    /// The appearance was reported unknown; a later part of it matched someone.
    Resolved,
    /// The same identity, seen later in the appearance with a markedly better face
    /// (best quality up by `track.update_quality_gain` or more).
    BetterQuality,
}

/// What an appearance's earlier event said, in an event that changes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousDecision {
    /// The event that said it (`identity.recognized`, `identity.unknown` or an earlier
    /// `identity.updated`).
    pub event_id: Option<Uuid>,
    /// The identity it named; null for unknown.
    pub identity: Option<EventIdentity>,
    pub similarity: Option<f32>,
    pub quality: Option<f32>,
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
    /// `identity.updated` only: why the appearance's decision changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ChangeReason>,
    /// `identity.updated` only: what the appearance's earlier event said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousDecision>,
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
            EventType::IdentityRecognized
                | EventType::IdentitySeenBefore
                | EventType::IdentityUpdated
        )
    }

    /// Whether the event names identity `id`: as its identity, or as what an appearance
    /// was before (`previous`).
    pub fn names(&self, id: Uuid) -> bool {
        let named = |i: &Option<EventIdentity>| i.as_ref().is_some_and(|i| i.id == id);
        named(&self.identity) || self.previous.as_ref().is_some_and(|p| named(&p.identity))
    }

    /// Erasure: drop everything the event holds about its identity: the identity (id and
    /// name), how well it matched, the face thumbnail and the appearances. Whether
    /// anything was left to drop.
    pub fn forget_identity(&mut self) -> bool {
        let had = self.identity.is_some()
            || self.thumbnail_jpeg.is_some()
            || self.similarity.is_some()
            || self.appearances.is_some()
            || self.previous.is_some();
        self.identity = None;
        self.similarity = None;
        self.calibrated_similarity = None;
        self.margin = None;
        self.thumbnail_jpeg = None;
        self.appearances = None;
        self.previous = None;
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
            reason: None,
            previous: None,
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
        // an update's reason and previous decision, with their fields
        let mut updated = e.clone();
        updated.kind = EventType::IdentityUpdated;
        updated.reason = Some(ChangeReason::Resolved);
        updated.previous = Some(PreviousDecision {
            event_id: Some(Uuid::now_v7()),
            identity: None,
            similarity: Some(0.3),
            quality: Some(0.5),
        });
        let v = serde_json::to_value(&updated).unwrap();
        assert_eq!(v["type"], "identity.updated");
        assert_eq!(v["reason"], "resolved");
        let reasons = schema["properties"]["reason"]["enum"].as_array().unwrap();
        assert!(reasons.contains(&v["reason"]), "{reasons:?}");
        for field in v["previous"].as_object().unwrap().keys() {
            assert!(
                schema["properties"]["previous"]["properties"][field].is_object(),
                "schema lacks previous.{field}"
            );
        }
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), updated);
        // an erasure finds the identity an update names as what the appearance was
        let alice = e.identity.as_ref().unwrap().id;
        let mut was_alice = Event::new(EventType::IdentityUpdated);
        was_alice.previous = Some(PreviousDecision {
            event_id: None,
            identity: e.identity.clone(),
            similarity: None,
            quality: None,
        });
        assert!(was_alice.names(alice) && !was_alice.names(Uuid::now_v7()));
        assert!(was_alice.forget_identity() && was_alice.previous.is_none());
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
