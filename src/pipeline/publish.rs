//! The last stage: events into the durable outbox (delivery is the events module's job).
//! Own thread, since the outbox write is a synchronous SQLite transaction.

use std::time::Instant;

use actix::prelude::*;

use super::Meter;
use crate::events::webhook::EventBus;
use crate::events::{Event, EventType};
use crate::telemetry::metrics;

/// Write `event`; `captured` is when its frame left the decoder (end-to-end latency).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Publish {
    pub event: Event,
    pub captured: Option<Instant>,
}

/// Answered once every earlier message is handled (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Barrier;

pub(super) struct PublishActor {
    events: EventBus,
    meter: Meter,
}

impl PublishActor {
    pub(super) fn new(events: EventBus) -> PublishActor {
        PublishActor {
            events,
            meter: Meter::new("publish"),
        }
    }
}

impl Actor for PublishActor {
    type Context = Context<Self>;
}

impl Handler<Publish> for PublishActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        self.meter.received.inc();
        let started = Instant::now();
        match self.events.publish(&msg.event) {
            Ok(_) => {
                let identity = matches!(
                    msg.event.kind,
                    EventType::IdentityRecognized | EventType::IdentityUnknown
                );
                if let (true, Some(captured)) = (identity, msg.captured) {
                    metrics()
                        .end_to_end_latency
                        .observe(captured.elapsed().as_secs_f64());
                }
                tracing::info!(
                    event = msg.event.kind.as_str(),
                    camera = msg.event.camera_id.as_deref().unwrap_or(""),
                    identity = msg.event.identity.as_ref().map_or("", |i| i.name.as_str()),
                    similarity = msg.event.similarity.unwrap_or(f32::NAN),
                    "event"
                );
                self.meter.done(started);
            }
            Err(e) => {
                self.meter.error();
                tracing::error!(error = %e, event = %msg.event.id, "event not written to the outbox");
            }
        }
    }
}

impl Handler<Barrier> for PublishActor {
    type Result = ();

    fn handle(&mut self, _: Barrier, _: &mut Context<Self>) {}
}
