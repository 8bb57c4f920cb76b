//! The last stage: events into the durable outbox (delivery is the events module's job).
//! Own thread, since the outbox write is a synchronous SQLite transaction.
//!
//! An event whose outbox write fails (disk full, database locked past its timeout) is not
//! dropped: it waits in an in-memory backlog, in order, with every event after it, and the
//! backlog is retried with backoff (`facestream_publish_backlog` shows its length). Only
//! past [`MAX_BACKLOG`] events is the oldest given up, counted as a publish error and
//! logged; at shutdown a last write is tried and what still fails is logged by count.

use std::collections::VecDeque;
use std::time::Instant;

use actix::prelude::*;

use super::Meter;
use crate::events::bus::EventBus;
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

/// Events kept in memory while the outbox cannot be written.
pub(super) const MAX_BACKLOG: usize = 100_000;

pub(super) struct PublishActor {
    events: EventBus,
    meter: Meter,
    backlog: VecDeque<Publish>,
    failures: u32,
    retry_scheduled: bool,
}

impl PublishActor {
    pub(super) fn new(events: EventBus) -> PublishActor {
        PublishActor {
            events,
            meter: Meter::new("publish"),
            backlog: VecDeque::new(),
            failures: 0,
            retry_scheduled: false,
        }
    }

    /// Write the backlog in order until it is empty or a write fails.
    fn flush(&mut self) -> Result<(), crate::events::outbox::OutboxError> {
        while let Some(msg) = self.backlog.front() {
            let started = Instant::now();
            self.events.publish(&msg.event)?;
            let msg = self.backlog.pop_front().expect("front just seen");
            if self.failures > 0 {
                tracing::info!(
                    event = %msg.event.id,
                    "outbox writable again: backlogged event written"
                );
            }
            log_written(&msg);
            self.meter.done(started);
        }
        Ok(())
    }

    fn flush_or_retry(&mut self, ctx: &mut Context<Self>) {
        match self.flush() {
            Ok(()) => self.failures = 0,
            Err(e) => {
                self.failures += 1;
                self.meter.error();
                tracing::error!(
                    error = %e,
                    backlog = self.backlog.len(),
                    attempt = self.failures,
                    "events not written to the outbox; kept in memory and retried"
                );
                if !self.retry_scheduled {
                    self.retry_scheduled = true;
                    let delay = crate::backoff::jittered(200, 30_000, self.failures - 1);
                    ctx.run_later(delay, |actor, ctx| {
                        actor.retry_scheduled = false;
                        actor.flush_or_retry(ctx);
                    });
                }
            }
        }
        metrics().publish_backlog.set(self.backlog.len() as i64);
    }
}

fn log_written(msg: &Publish) {
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
}

impl Actor for PublishActor {
    type Context = Context<Self>;
}

impl Handler<Publish> for PublishActor {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.meter.received.inc();
        self.backlog.push_back(msg);
        if self.backlog.len() > MAX_BACKLOG {
            let lost = self.backlog.pop_front().expect("over the cap");
            self.meter.error();
            tracing::error!(
                event = %lost.event.id,
                max = MAX_BACKLOG,
                "outbox unwritable for too long: the oldest unwritten event is given up"
            );
        }
        if !self.retry_scheduled {
            self.flush_or_retry(ctx);
        } else {
            metrics().publish_backlog.set(self.backlog.len() as i64);
        }
    }
}

impl Handler<Barrier> for PublishActor {
    type Result = ();

    /// Shutdown: one last try for the backlog.
    fn handle(&mut self, _: Barrier, _: &mut Context<Self>) {
        if let Err(e) = self.flush() {
            tracing::error!(
                error = %e,
                events = self.backlog.len(),
                "outbox still unwritable at shutdown: these events are lost"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::bus;
    use crate::events::config::EventsConfig;
    use crate::events::outbox::Outbox;
    use crate::events::sinks::webhook::WebhookConfig;
    use crate::shutdown::Shutdown;
    use std::sync::Arc;
    use std::time::Duration;

    /// The outbox's table disappears (as good as a full disk for a write), events keep
    /// arriving; once it is back every event is written, in order, none lost.
    #[test]
    fn events_whose_outbox_write_fails_are_kept_and_written_later_in_order() {
        let dir = std::env::temp_dir().join(format!("fs-publish-{}", uuid::Uuid::now_v7()));
        let path = dir.join("outbox.db");
        let system = actix::System::new();
        let ids = system.block_on(async {
            let outbox = Arc::new(Outbox::open(&path).unwrap());
            let config = EventsConfig {
                outbox: path.display().to_string(),
                dead_letter_after_s: 3600,
                retry_initial_ms: 3_600_000,
                retry_max_ms: 3_600_000,
                thumbnails: false,
                retention_s: 604_800,
                webhooks: vec![WebhookConfig {
                    name: "hook".into(),
                    url: "http://127.0.0.1:1/hook".into(),
                    secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                    types: vec![],
                    max_concurrency: 1,
                    timeout_ms: 1000,
                    ca_file: String::new(),
                }],
                mqtt: vec![],
                nats: vec![],
                snapshots: Default::default(),
            };
            let (bus, _handles) = bus::start(outbox.clone(), &config, Shutdown::new());
            let actor = PublishActor::new(bus).start();
            // break the outbox from another connection
            let other = rusqlite::Connection::open(&path).unwrap();
            other
                .execute_batch("ALTER TABLE outbox RENAME TO outbox_away")
                .unwrap();
            let mut ids = Vec::new();
            for _ in 0..5 {
                let event = Event::new(EventType::IdentityUnknown);
                ids.push(event.id.to_string());
                actor
                    .send(Publish {
                        event,
                        captured: None,
                    })
                    .await
                    .unwrap();
            }
            assert_eq!(metrics().publish_backlog.get(), 5);
            // the outbox comes back; the retry (backoff from 200 ms) writes the backlog
            other
                .execute_batch("ALTER TABLE outbox_away RENAME TO outbox")
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while metrics().publish_backlog.get() > 0 {
                assert!(Instant::now() < deadline, "backlog never written");
                actix::clock::sleep(Duration::from_millis(50)).await;
            }
            ids
        });
        let conn = rusqlite::Connection::open(&path).unwrap();
        let written: Vec<String> = conn
            .prepare("SELECT event_id FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(written, ids, "every event, in order");
        let _ = std::fs::remove_dir_all(dir);
    }
}
