//! Background tasks the service depends on, none of which may die silently.
//!
//! The lease loop, the gallery and history feed followers, the retention timer: each is a
//! thread or an async task that runs for the life of the service. One that ends while the
//! service still runs (a panic, an early return) used to end without a word: a lease loop
//! that died left its node watching cameras without leases, so another node watched them
//! too. Every such task is started here instead, and its end, unless a stop was asked for,
//! is **fatal**:
//! - logged (error, with the task's name and the panic's message);
//! - counted (`facestream_background_task_failures_total{task}`);
//! - `GET /v1/ready` answers 503 naming the task from then on;
//! - the service stops gracefully (the stop token is requested) and `serve` exits with
//!   status 1, so the service manager (systemd `Restart=on-failure`, a container runtime)
//!   starts it again fresh. A restart in-process would hide a fault that comes back at
//!   once; a process restart is visible and backs off.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use futures_util::FutureExt;

use crate::shutdown::Shutdown;
use crate::telemetry::{metrics, TaskLabel};

/// A background task that ended: its name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub task: String,
    pub reason: String,
}

static FAILURES: Mutex<Vec<Failure>> = Mutex::new(Vec::new());

/// The background tasks that ended while the service ran, first first.
pub fn failures() -> Vec<Failure> {
    FAILURES.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Record that `task` ended for `reason` while the service ran, and stop the service.
fn died(task: &str, reason: String, shutdown: &Shutdown) {
    tracing::error!(
        task,
        reason = %reason,
        "background task ended while the service runs: stopping the service (exit status 1)"
    );
    metrics()
        .background_task_failures
        .get_or_create(&TaskLabel {
            task: task.to_string(),
        })
        .inc();
    FAILURES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Failure {
            task: task.to_string(),
            reason,
        });
    shutdown.request();
}

/// Run `work` on a thread named `name`; its end before `shutdown` is requested (a panic
/// or a return) is fatal (module docs).
pub fn thread(
    name: &str,
    shutdown: &Shutdown,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (task, shutdown) = (name.to_string(), shutdown.clone());
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
            match outcome {
                Err(payload) => died(&task, panic_message(&*payload), &shutdown),
                Ok(()) if !shutdown.is_requested() => {
                    died(&task, "returned while the service runs".into(), &shutdown)
                }
                Ok(()) => {}
            }
        })
}

/// Spawn `work` on the service's (actix) runtime as task `name`; a panic in it is fatal
/// (module docs), and the handle then yields `None`. (An async task that returns early
/// returns its value: whether that is an end the caller judges.)
pub fn task<T: 'static>(
    name: &str,
    shutdown: &Shutdown,
    work: impl Future<Output = T> + 'static,
) -> tokio::task::JoinHandle<Option<T>> {
    let (task, shutdown) = (name.to_string(), shutdown.clone());
    actix_web::rt::spawn(async move {
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(out) => Some(out),
            Err(payload) => {
                died(&task, panic_message(&*payload), &shutdown);
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(task: &str) -> Option<Failure> {
        failures().into_iter().find(|f| f.task == task)
    }

    #[test]
    fn a_thread_that_panics_or_returns_early_stops_the_service_and_is_counted() {
        let shutdown = Shutdown::new();
        thread("test-panics", &shutdown, || panic!("row 3 was NULL"))
            .unwrap()
            .join()
            .unwrap();
        assert!(shutdown.is_requested());
        assert_eq!(failed("test-panics").unwrap().reason, "row 3 was NULL");
        let text = metrics().encode();
        assert!(
            text.contains("facestream_background_task_failures_total{task=\"test-panics\"} 1"),
            "{text}"
        );

        let shutdown = Shutdown::new();
        thread("test-returns", &shutdown, || {})
            .unwrap()
            .join()
            .unwrap();
        assert!(shutdown.is_requested());
        assert!(failed("test-returns").is_some());

        // asked to stop first: a normal end
        let shutdown = Shutdown::new();
        shutdown.request();
        thread("test-stops", &shutdown, || {})
            .unwrap()
            .join()
            .unwrap();
        assert!(failed("test-stops").is_none());
    }

    #[actix_web::test]
    async fn an_async_task_that_panics_stops_the_service() {
        let shutdown = Shutdown::new();
        // a NULL read as a value, as the lease view once did
        let row: Vec<Option<f64>> = vec![None];
        let out = task("test-async-panics", &shutdown, async move {
            row[0].expect("idle time")
        })
        .await
        .unwrap();
        assert_eq!(out, None);
        assert!(shutdown.is_requested());
        assert_eq!(failed("test-async-panics").unwrap().reason, "idle time");
        let shutdown = Shutdown::new();
        assert_eq!(
            task("test-async-ok", &shutdown, async { 7 }).await.unwrap(),
            Some(7)
        );
        assert!(!shutdown.is_requested());
    }
}
