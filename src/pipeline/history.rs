//! Keeps every decided track as an appearance (`history.enabled`): a stage on its own
//! thread, since encoding the best shot and the durable write are slow next to tracking.
//! A write that fails is counted (`facestream_history_errors_total`) and logged; any
//! failure but an unreachable store leaves the appearance out of searches, nothing else
//! affected.
//!
//! **The store unreachable** (PostgreSQL down or partitioned away): the appearance waits
//! in memory, in a backlog of at most `history.backlog` (`facestream_history_backlog`); past
//! that the oldest waiting one is dropped (`facestream_history_dropped_total`, alert
//! `FacestreamHistoryDropping`). While the store fails, writes are tried again every
//! [`RETRY`] on the stage's timer ([`Flush`], sent every second by the pipeline), not on
//! each arrival, so a store that makes each call wait out a timeout does not hold up the
//! mailbox: it drains into the backlog at encoding speed. The mailbox is bounded too
//! ([`MAILBOX`] records in flight, counted drops past it). The backlog is written as soon
//! as the store answers again, with or without new tracks, and once more at a clean
//! shutdown; what still cannot be written then is counted and logged as lost.
//!
//! Erasure ([`crate::gallery::erasure`]): each write asks the erasure register first. An
//! appearance decided as a person erased since (a track that ended during or after the
//! erasure, or waited in the mailbox or the backlog meanwhile) is kept as unknown, naming
//! nobody, or not kept at all when the erasure took the person's appearances too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::gallery::erasure::Erasures;
use crate::history::{Appearance, History, HistoryError};
use crate::stages::align::AlignedFace;
use crate::telemetry::metrics;

/// An ended, decided track and its best aligned face (not yet encoded).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Record {
    pub appearance: Appearance,
    pub best: Option<AlignedFace>,
}

/// Write the backlog if a retry is due (`last`: at shutdown, whatever is due, and say
/// what is lost).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Flush {
    pub last: bool,
}

/// Records sent to the stage and not yet handled, at most (each holds an aligned face).
pub(super) const MAILBOX: usize = 1_000;
/// How long after a failed write the backlog is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);

/// The address of the history stage with its bounded mailbox.
#[derive(Clone)]
pub(super) struct Keeper {
    addr: Addr<HistoryKeeper>,
    in_flight: Arc<AtomicUsize>,
}

impl Keeper {
    pub(super) fn start(history: Arc<History>, erasures: Arc<Erasures>) -> Keeper {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let count = in_flight.clone();
        let addr = SyncArbiter::start(1, move || {
            HistoryKeeper::new(history.clone(), erasures.clone(), count.clone())
        });
        Keeper { addr, in_flight }
    }

    /// Hand `record` to the stage; dropped (counted) when [`MAILBOX`] are waiting.
    pub(super) fn record(&self, record: Record) {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAILBOX {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            metrics().history_dropped.inc();
            tracing::error!(track = %record.appearance.track_id, "history stage behind by {MAILBOX} tracks: appearance dropped");
            return;
        }
        self.addr.do_send(record);
    }

    /// Ask for a write of what waits, if due.
    pub(super) fn flush(&self) {
        self.addr.do_send(Flush { last: false });
    }

    /// The last write before the pipeline stops: what still waits after it is lost.
    pub(super) async fn last_flush(&self) {
        let _ = self.addr.send(Flush { last: true }).await;
    }
}

pub(super) struct HistoryKeeper {
    history: Arc<History>,
    erasures: Arc<Erasures>,
    in_flight: Arc<AtomicUsize>,
    /// Encoded appearances waiting for the store to be reachable again, oldest first.
    backlog: VecDeque<Appearance>,
    /// After a failed write: not before this is it tried again.
    retry_at: Option<Instant>,
}

impl HistoryKeeper {
    fn new(
        history: Arc<History>,
        erasures: Arc<Erasures>,
        in_flight: Arc<AtomicUsize>,
    ) -> HistoryKeeper {
        HistoryKeeper {
            history,
            erasures,
            in_flight,
            backlog: VecDeque::new(),
            retry_at: None,
        }
    }

    /// Queue `appearance` behind the backlog, dropping the oldest past `history.backlog`.
    fn queue(&mut self, appearance: Appearance) {
        self.backlog.push_back(appearance);
        if self.backlog.len() > self.history.config().backlog {
            let dropped = self.backlog.pop_front().map(|a| a.track_id);
            metrics().history_dropped.inc();
            tracing::error!(track = ?dropped, "history backlog full: the oldest waiting appearance is dropped");
        }
    }

    /// Write the backlog, oldest first, unless a retry is not due yet (`force`: it is);
    /// what cannot be written for want of the store stays.
    fn write(&mut self, force: bool) {
        if !force && self.retry_at.is_some_and(|at| Instant::now() < at) {
            metrics().history_backlog.set(self.backlog.len() as i64);
            return;
        }
        let was_waiting = self.retry_at.is_some();
        while let Some(next) = self.backlog.front_mut() {
            let (track, camera) = (next.track_id, next.camera.clone());
            if let Some(erased) = next.identity.and_then(|i| self.erasures.get(i)) {
                if erased {
                    tracing::info!(track = %track, camera = %camera, "appearance not kept: its person was erased with their appearances");
                    self.backlog.pop_front();
                    continue;
                }
                // the recognition event (which named them) is not linked either
                next.identity = None;
                next.similarity = None;
                next.event_id = None;
            }
            match self.history.record(next) {
                Ok(()) => {
                    self.backlog.pop_front();
                }
                Err(HistoryError::Unavailable(reason)) => {
                    metrics().history_errors.inc();
                    self.retry_at = Some(Instant::now() + RETRY);
                    if !was_waiting {
                        tracing::warn!(waiting = self.backlog.len(), %reason, "appearances kept in memory until the history store is back");
                    }
                    metrics().history_backlog.set(self.backlog.len() as i64);
                    return;
                }
                Err(e) => {
                    metrics().history_errors.inc();
                    self.backlog.pop_front();
                    tracing::error!(track = %track, camera = %camera, error = %e, "appearance not kept in the history");
                }
            }
        }
        if was_waiting {
            tracing::info!(
                "history store reachable again: the appearances kept in memory are written"
            );
        }
        self.retry_at = None;
        metrics().history_backlog.set(0);
        metrics().history_appearances.set(self.history.len() as i64);
    }
}

impl Actor for HistoryKeeper {
    type Context = SyncContext<Self>;
}

impl Handler<Record> for HistoryKeeper {
    type Result = ();

    fn handle(&mut self, msg: Record, _: &mut SyncContext<Self>) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut appearance = msg.appearance;
        appearance.shot = msg.best.as_ref().and_then(super::review::jpeg);
        self.queue(appearance);
        self.write(false);
    }
}

impl Handler<Flush> for HistoryKeeper {
    type Result = ();

    fn handle(&mut self, msg: Flush, _: &mut SyncContext<Self>) {
        if self.backlog.is_empty() {
            return;
        }
        self.write(msg.last);
        if msg.last && !self.backlog.is_empty() {
            let lost = self.backlog.len();
            for _ in 0..lost {
                metrics().history_dropped.inc();
            }
            tracing::error!(
                lost,
                "history store unreachable at shutdown: the appearances kept in memory are lost"
            );
            self.backlog.clear();
        }
    }
}
