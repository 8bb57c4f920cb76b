//! facestream: watches cameras and says who is in front of them.
//!
//! The map of the crate, in pipeline order:
//! Layered: a module imports only modules below it (`make cycles` checks it; the layers
//! and what each folder owns are in ARCHITECTURE.md).
//!
//! - [`backoff`]: exponential backoff with jitter (camera reconnects, event retries).
//! - [`vectors`]: what the gallery, the history and the review queue share: SIMD dot
//!   kernels, int8 quantisation, pooled templates, the byte codec.
//! - [`redact`]: credentials out of URLs and connection strings shown anywhere.
//! - [`pg`]: the one PostgreSQL connection (settings, reconnection, the shared schema's
//!   migrations) the gallery store, the history and the camera leases use.
//! - [`validate`]: the range check every config section's validation uses.
//! - [`config`]: typed configuration, embedded default → file → environment, validated;
//!   assembles each part's sections (nothing below it imports `Config`).
//! - [`imageio`]: safe still-image decoding with file-size and pixel limits.
//! - [`models`]: prepared model files and their checksum gate.
//! - [`inference`]: the backend trait and its feature-gated implementations.
//! - [`stages`]: motion (where to look in a camera frame) → detect → align → quality →
//!   embed, plain synchronous code.
//! - [`ingest`]: camera pipelines (GStreamer), supervision, frame watchdog, drop-oldest rings.
//! - [`pipeline`]: the streaming actors (detect → align → quality → embed → decide → publish).
//! - [`track`]: per-camera face tracks, motion model and best shots (streaming pipeline).
//! - [`engine`]: the stages composed for still images (CLI, evaluation, enrolment), and
//!   the backends and models resolved once at start-up (`EngineSetup`).
//! - [`gallery`]: enrolled identities (SQLite, or PostgreSQL shared by several nodes) and
//!   the exact 1:N search index each node keeps.
//! - [`history`]: decided tracks kept as appearances, searchable by face (SQLite or the
//!   shared PostgreSQL).
//! - [`simulate`]: the camera simulator and the demo camera.
//! - [`cluster`]: several nodes: node ids and camera leases in PostgreSQL.
//! - [`events`]: identity events: schema, durable outbox, bus, delivery and the sinks
//!   (signed webhooks, MQTT with Home Assistant, NATS JetStream).
//! - [`review`]: unknown tracks kept for review (off by default), grouped by probable
//!   person, enrolled or dismissed by an operator.
//! - [`service`]: the service's long-running parts `serve` composes: the gallery of
//!   record and its follower, erasure fan-out and replay, the history feed, retention.
//! - [`private_files`]: owner-only creation of the files holding biometric data.
//! - [`tls`]: PEM certificates and keys for rustls (API server, MQTT brokers).
//! - [`tasks`]: background tasks whose death is fatal (logged, counted, not ready, exit 1).
//! - [`shutdown`]: the one stop signal (SIGINT/SIGTERM, drop guards) and `serve`'s stop order.
//! - [`telemetry`]: every Prometheus metric, defined in one place (`GET /metrics`).
//! - [`api`]: the versioned REST API (`/v1`) over the gallery and the engine.
//! - [`console`]: the operator console in the browser (at `/`), over that API.
//! - [`eval`]: LFW verification protocol, ROC and reports.

pub mod api;
pub mod backoff;
pub mod cluster;
pub mod config;
pub mod console;
pub mod engine;
pub mod eval;
pub mod events;
pub mod gallery;
pub mod history;
pub mod imageio;
pub mod inference;
pub mod ingest;
pub mod models;
pub mod pg;
pub mod pipeline;
pub mod private_files;
pub mod redact;
pub mod review;
pub mod service;
pub mod shutdown;
pub mod simulate;
pub mod stages;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod track;
pub mod validate;
pub mod vectors;
