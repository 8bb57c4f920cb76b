//! One way to stop: a [`Shutdown`] token that every long-running part of the service
//! watches, in the manner of mini-redis (one broadcast, one drop guard).
//!
//! A token is requested once (by SIGINT/SIGTERM through [`Shutdown::on_signals`], by
//! [`Shutdown::request`], or by dropping the [`ShutdownGuard`] of a part that ended) and
//! every clone sees it: async tasks by awaiting [`Shutdown::requested`] in their
//! `select!`, threads by checking [`Shutdown::is_requested`] between units of work.
//! [`Shutdown::child`] gives a part its own token that also stops with its parent, so a
//! part can be stopped on its own (the pipeline's pumps in a test) or with the service.
//!
//! `serve` stops in this order, each step with a token of this type:
//! 1. the signal requests the service token: the API stops accepting and finishes the
//!    requests in flight, the camera pumps stop handing frames to the stages, and the
//!    gallery watcher ends;
//! 2. the pipeline tears the cameras down, drains the stages, decides open tracks and
//!    writes their events to the outbox;
//! 3. then the deliveries' token is requested: they stop taking rows and finish the
//!    deliveries in flight; rows still pending stay in the outbox for the next start.
//!
//! A second signal while stopping exits at once (exit code 130): nothing accepted is lost,
//! since events are in the outbox and enrolments in the gallery, both committed.

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A stop request shared by clones (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// A token not yet requested.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Ask every holder to stop (idempotent).
    pub fn request(&self) {
        self.0.cancel();
    }

    /// Whether a stop was asked for (for threads, between units of work).
    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once a stop is asked for (for tasks, in a `select!`).
    pub fn requested(&self) -> WaitForCancellationFuture<'_> {
        self.0.cancelled()
    }

    /// A token of its own that is also requested when this one is.
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }

    /// A guard that requests the stop when dropped: whichever way the owner ends (an
    /// error returned early, a panic), the rest of the service stops with it.
    pub fn guard(&self) -> ShutdownGuard {
        ShutdownGuard(Some(self.0.clone().drop_guard()))
    }

    /// Request the stop on SIGINT or SIGTERM; a second signal exits the process at once.
    /// Spawns a task on the current tokio runtime.
    pub fn on_signals(&self) {
        let token = self.clone();
        tokio::spawn(async move {
            let name = next_signal().await;
            tracing::info!(signal = name, "stopping (a second signal exits at once)");
            eprintln!("facestream: {name}: stopping gracefully (send it again to exit at once)");
            token.request();
            let name = next_signal().await;
            tracing::warn!(signal = name, "second signal: exiting without draining");
            std::process::exit(130);
        });
    }
}

/// Requests its [`Shutdown`] when dropped, unless [`ShutdownGuard::disarm`]ed.
#[must_use = "the stop is requested when the guard is dropped"]
pub struct ShutdownGuard(Option<tokio_util::sync::DropGuard>);

impl ShutdownGuard {
    /// Drop the guard without requesting the stop.
    pub fn disarm(mut self) {
        if let Some(g) = self.0.take() {
            g.disarm();
        }
    }
}

/// The name of the next SIGINT or SIGTERM (only SIGINT where there is no SIGTERM).
async fn next_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the service");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_reaches_every_clone_and_child_but_a_child_stops_alone() {
        let root = Shutdown::new();
        let (clone, child) = (root.clone(), root.child());
        child.request();
        assert!(child.is_requested());
        assert!(!root.is_requested() && !clone.is_requested());
        let second_child = root.child();
        root.request();
        assert!(clone.is_requested() && second_child.is_requested());
    }

    #[test]
    fn a_dropped_guard_requests_the_stop_and_a_disarmed_one_does_not() {
        let kept = Shutdown::new();
        kept.guard().disarm();
        assert!(!kept.is_requested());
        let stopped = Shutdown::new();
        {
            let _guard = stopped.guard();
        }
        assert!(stopped.is_requested());
        // a panicking owner requests it too
        let panicked = Shutdown::new();
        let p = panicked.clone();
        let _ = std::thread::spawn(move || {
            let _guard = p.guard();
            panic!("owner failed");
        })
        .join();
        assert!(panicked.is_requested());
    }

    #[tokio::test]
    async fn waiting_tasks_wake_on_the_request() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.requested().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shutdown.request();
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiting task woke")
            .unwrap();
    }
}
