//! Where events go: one [`Sink`] per configured endpoint, each delivering the outbox rows
//! addressed to it in its own task.
//!
//! A sink knows its endpoint (settings, connection, protocol) and nothing of the others:
//! it takes due rows from a [`delivery::EndpointQueue`](super::delivery::EndpointQueue),
//! tries them, and records each outcome with [`delivery::record`](super::delivery::record).
//! The bus ([`super::bus`]) sees only this trait; `EventsConfig::sinks` lists them.

pub mod mqtt;
pub mod nats;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::Notify;

use super::delivery::Retry;
use super::outbox::Outbox;
use super::Event;
use crate::shutdown::Shutdown;

/// What a sink's delivery task is given: the outbox, the retry policy, the bell the bus
/// rings when an event for this endpoint is written, and the service's shutdown.
pub struct SinkContext {
    pub outbox: Arc<Outbox>,
    pub retry: Retry,
    pub notify: Arc<Notify>,
    pub shutdown: Shutdown,
}

/// One delivery endpoint.
pub trait Sink: Send + Sync {
    /// The endpoint's unique name (its outbox rows and metrics carry it).
    fn name(&self) -> &str;
    /// Whether this endpoint subscribed to `event` (its `types`).
    fn wants(&self, event: &Event) -> bool;
    /// Start delivering on the current tokio runtime; the task ends after shutdown, once
    /// the deliveries in flight are done.
    fn spawn(self: Arc<Self>, context: SinkContext) -> tokio::task::JoinHandle<()>;
}
