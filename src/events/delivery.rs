//! Delivery shared by every sink: an endpoint's queue over the outbox, retries with
//! backoff, dead letters, and the metrics of each attempt.
//!
//! A sink takes its due rows from its [`EndpointQueue`] (woken by new events, the next
//! retry time or shutdown), tries them its own way, and hands each outcome to
//! [`record`]: delivered rows are marked, failed ones retried
//! `initial_ms · 2^attempts` later (capped at `max_ms`, ×[0.5, 1.5) jitter), and rows
//! older than `dead_letter_after_s` move to the dead letters ([`expire`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::outbox::{now_ms, Outbox, Pending};
use crate::shutdown::Shutdown;

/// How a failed delivery is retried (from `[events]`: `retry_initial_ms`,
/// `retry_max_ms`, `dead_letter_after_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub dead_letter_after_s: u64,
}

/// One endpoint's view of the outbox: the due rows, waiting (woken by new events, the
/// next retry time or shutdown) when there are none, and ageing rows out to the dead
/// letters at most once a second (a range update over the outbox).
pub struct EndpointQueue {
    outbox: Arc<Outbox>,
    name: String,
    dead_after_ms: i64,
    last_expiry: std::time::Instant,
    notify: Arc<Notify>,
    shutdown: Shutdown,
}

impl EndpointQueue {
    pub fn new(
        outbox: Arc<Outbox>,
        name: &str,
        retry: &Retry,
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
            dead_after_ms: (retry.dead_letter_after_s * 1000) as i64,
            last_expiry: std::time::Instant::now() - Duration::from_secs(1),
            notify,
            shutdown,
        }
    }

    /// The next due rows (at most `limit`), or `None` once shutdown is requested.
    pub async fn next_batch(&mut self, limit: usize) -> Option<Vec<Pending>> {
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
pub fn expire(outbox: &Outbox, endpoint: &str, dead_after_ms: i64) {
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
pub fn record(
    outbox: &Outbox,
    endpoint: &str,
    row: &Pending,
    result: Result<(), String>,
    retry: &Retry,
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
            outbox.mark_failed(row.seq, &reason, now_ms() + backoff_ms(row.attempts, retry))
        }
    };
    if let Err(e) = recorded {
        tracing::error!(endpoint, error = %e, "recording a delivery failed");
    }
}

/// `initial · 2^attempts`, capped, ×[0.5, 1.5) jitter so retries of many rows spread out.
pub fn backoff_ms(attempts: u32, retry: &Retry) -> i64 {
    crate::backoff::jittered(retry.initial_ms, retry.max_ms, attempts).as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let retry = Retry {
            initial_ms: 100,
            max_ms: 1000,
            dead_letter_after_s: 60,
        };
        for attempts in 0..3 {
            let b = backoff_ms(attempts, &retry);
            let base = 100 * (1 << attempts);
            assert!(b >= base / 2 && b < base * 3 / 2, "{attempts}: {b}");
        }
        assert!(backoff_ms(20, &retry) < 1500);
    }
}
