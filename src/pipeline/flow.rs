//! Flow control and metering between the stages: per-camera credits (at most
//! `pipeline.max_in_flight` frames of a camera inside the stages), the next stage's
//! mailbox with its queue-depth gauge, and each stage's counters.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::Work;
use crate::telemetry::{metrics, Metrics};

/// A stage's metrics.
pub(crate) struct Meter {
    pub(crate) received: Counter,
    pub(crate) processed: Counter,
    pub(crate) errors: Counter,
    pub(crate) depth: Gauge,
    pub(crate) latency: Histogram,
}

impl Meter {
    pub(crate) fn new(stage: &str) -> Meter {
        let m = metrics();
        let label = Metrics::stage(stage);
        // at 0 from the start, so the first panic is an increase Prometheus sees
        let _ = m.stage_panics.get_or_create(&label);
        Meter {
            received: m.stage_received.get_or_create(&label).clone(),
            processed: m.stage_processed.get_or_create(&label).clone(),
            errors: m.stage_errors.get_or_create(&label).clone(),
            depth: m.stage_queue_depth.get_or_create(&label).clone(),
            latency: m.stage_latency.get_or_create(&label).clone(),
        }
    }

    /// An item left the queue.
    pub(crate) fn take(&self) {
        self.depth.dec();
        self.received.inc();
    }

    pub(crate) fn done(&self, started: Instant) {
        self.latency.observe(started.elapsed().as_secs_f64());
        self.processed.inc();
    }

    pub(crate) fn error(&self) {
        self.errors.inc();
    }
}

/// The next stage: its mailbox and its queue-depth gauge.
#[derive(Clone)]
pub(crate) struct Next {
    recipient: Recipient<Work>,
    depth: Gauge,
}

impl Next {
    pub(crate) fn new(recipient: Recipient<Work>, stage: &str) -> Next {
        Next {
            recipient,
            depth: metrics()
                .stage_queue_depth
                .get_or_create(&Metrics::stage(stage))
                .clone(),
        }
    }

    pub(crate) fn send(&self, work: Work) {
        self.depth.inc();
        // Unbounded in itself; bounded by the per-camera credits.
        self.recipient.do_send(work);
    }
}

/// Frames a camera may have inside the stages.
pub(crate) struct Credits {
    /// Credits available, and when one last came back.
    state: Mutex<(usize, Instant)>,
    returned: Condvar,
    capacity: usize,
}

impl Credits {
    pub(super) fn new(capacity: usize) -> Credits {
        Credits {
            state: Mutex::new((capacity, Instant::now())),
            returned: Condvar::new(),
            capacity,
        }
    }

    /// Take a credit, waiting up to `wait`.
    pub(super) fn acquire(&self, wait: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .returned
            .wait_timeout_while(guard, wait, |s| s.0 == 0)
            .unwrap_or_else(|p| p.into_inner());
        if guard.0 == 0 {
            return false;
        }
        guard.0 -= 1;
        true
    }

    pub(crate) fn release(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 = (guard.0 + 1).min(self.capacity);
        guard.1 = Instant::now();
        self.returned.notify_all();
    }

    pub(super) fn all_returned(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 == self.capacity
    }

    /// Every credit has been out for longer than `after` with none coming back: a stage
    /// lost or is stuck on this camera's frames.
    pub(super) fn stalled(&self, after: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 == 0 && guard.1.elapsed() >= after
    }

    /// Give every credit back (the frames they stood for are given up on).
    pub(super) fn reset(&self) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *guard = (self.capacity, Instant::now());
        self.returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_that_never_come_back_are_a_stall_and_a_reset_restores_them() {
        let credits = Credits::new(2);
        assert!(credits.acquire(Duration::ZERO) && credits.acquire(Duration::ZERO));
        assert!(!credits.acquire(Duration::ZERO));
        assert!(credits.stalled(Duration::ZERO));
        assert!(!credits.stalled(Duration::from_secs(3600)));
        credits.release();
        assert!(!credits.stalled(Duration::ZERO), "one came back");
        assert!(credits.acquire(Duration::ZERO));
        credits.reset();
        assert!(credits.all_returned());
        assert!(!credits.stalled(Duration::ZERO));
    }
}
