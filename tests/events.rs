//! Webhook delivery against real HTTP receivers on 127.0.0.1 that verify the Standard
//! Webhooks signature: outage then recovery, crash with pending events then restart,
//! duplicates keep their id, a failing endpoint is retried without delaying another,
//! dead letters and re-delivery; an HTTPS receiver with a private CA.

mod common;

use common::ReservedPort;

use std::sync::Arc;
use std::time::{Duration, Instant};

use facestream::events::bus;
use facestream::events::config::EventsConfig;
use facestream::events::outbox::Outbox;
use facestream::events::sinks::webhook::WebhookConfig;
use facestream::events::{Event, EventType};
use facestream::shutdown::Shutdown;

use common::receiver::{Mode, Receiver, SECRET};

fn config(dir: &std::path::Path, hooks: &[(&str, u16)], dead_after_s: u64) -> EventsConfig {
    EventsConfig {
        outbox: dir.join("outbox.db").display().to_string(),
        dead_letter_after_s: dead_after_s,
        retry_initial_ms: 50,
        retry_max_ms: 400,
        thumbnails: false,
        retention_s: 604_800,
        webhooks: hooks
            .iter()
            .map(|(name, port)| WebhookConfig {
                name: name.to_string(),
                url: format!("http://127.0.0.1:{port}/hook"),
                secret: SECRET.into(),
                types: vec![],
                max_concurrency: 4,
                timeout_ms: 2000,
                ca_file: String::new(),
            })
            .collect(),
        mqtt: vec![],
        nats: vec![],
        snapshots: Default::default(),
    }
}

fn event(k: usize) -> Event {
    let mut e = Event::new(if k.is_multiple_of(2) {
        EventType::IdentityRecognized
    } else {
        EventType::IdentityUnknown
    });
    e.camera_id = Some(format!("cam-{k}"));
    e
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

fn unique(ids: &[String]) -> std::collections::BTreeSet<String> {
    ids.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_then_recovery_loses_nothing_and_a_crash_keeps_pending_events() {
    let dir = common::temp_dir("events-outage");
    // Down: the port is held but nobody listens (connections refused).
    let reserved = ReservedPort::new();
    let port = reserved.port;
    let cfg = config(&dir, &[("primary", port)], 3600);
    // Receiver down: publish 30 events.
    let shutdown = Shutdown::new();
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&cfg.outbox)).unwrap());
    let (bus, handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    let mut sent = Vec::new();
    for k in 0..30 {
        let e = event(k);
        assert_eq!(bus.publish(&e).unwrap(), 1);
        sent.push(e.id.to_string());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        outbox.depth("primary").unwrap(),
        30,
        "nothing delivered while the receiver is down"
    );
    // Crash: the delivery tasks vanish without any shutdown work.
    for h in handles {
        h.abort();
    }
    drop((bus, outbox, shutdown));
    // Restart with the receiver back on the same address.
    let receiver = Receiver::start_on(reserved.listen(), Mode::Accept);
    let shutdown = Shutdown::new();
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&cfg.outbox)).unwrap());
    let (_bus, _handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    let all = wait_until(Duration::from_secs(20), || {
        unique(&receiver.accepted_ids()).len() == 30
    })
    .await;
    assert!(
        all,
        "delivered {} of 30",
        unique(&receiver.accepted_ids()).len()
    );
    assert_eq!(
        unique(&receiver.accepted_ids()),
        sent.iter().cloned().collect()
    );
    assert_eq!(receiver.state.lock().unwrap().rejected_signatures, 0);
    assert!(
        wait_until(Duration::from_secs(5), || outbox.depth("primary").unwrap()
            == 0)
        .await
    );
    // Bodies are the events, ids match.
    let verified = receiver.state.lock().unwrap().verified.clone();
    for (id, body) in &verified {
        let e: Event = serde_json::from_str(body).unwrap();
        assert_eq!(&e.id.to_string(), id);
    }
    receiver.server.stop(false).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_without_delaying_a_healthy_one() {
    let dir = common::temp_dir("events-isolation");
    let broken = Receiver::start(0, Mode::Fail500);
    let flaky = Receiver::start(0, Mode::FailFirst);
    let slow = Receiver::start(0, Mode::Slow);
    let healthy = Receiver::start(0, Mode::Accept);
    let mut cfg = config(
        &dir,
        &[
            ("broken", broken.port),
            ("flaky", flaky.port),
            ("slow", slow.port),
            ("healthy", healthy.port),
        ],
        3600,
    );
    cfg.webhooks[2].timeout_ms = 300;
    let shutdown = Shutdown::new();
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&cfg.outbox)).unwrap());
    let (bus, _handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    for k in 0..10 {
        assert_eq!(bus.publish(&event(k)).unwrap(), 4);
    }
    // The healthy endpoint gets everything while the broken and the slow ones cannot
    // deliver anything at all: no endpoint waits behind another's retries. (How fast is
    // a benchmark's business, not a test's.)
    assert!(
        wait_until(Duration::from_secs(60), || healthy.accepted_ids().len()
            == 10)
        .await,
        "healthy endpoint got {} of 10",
        healthy.accepted_ids().len()
    );
    assert_eq!(outbox.depth("healthy").unwrap(), 0);
    assert_eq!(outbox.depth("broken").unwrap(), 10);
    assert_eq!(outbox.depth("slow").unwrap(), 10);
    // Flaky: every event arrives twice with the same id (at least once, deduplicable).
    assert!(
        wait_until(Duration::from_secs(10), || outbox.depth("flaky").unwrap()
            == 0)
        .await
    );
    let flaky_ids = flaky.accepted_ids();
    assert_eq!(flaky_ids.len(), 20);
    for id in unique(&flaky_ids) {
        let bodies: Vec<String> = {
            let s = flaky.state.lock().unwrap();
            s.verified
                .iter()
                .filter(|(i, _)| *i == id)
                .map(|(_, b)| b.clone())
                .collect()
        };
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0], bodies[1], "a retry carries the same body");
    }
    // Broken: every event is retried (the backoff schedule itself is unit-tested in
    // `events::webhook`), still pending, nothing lost.
    let attempts = || -> Vec<usize> {
        broken
            .state
            .lock()
            .unwrap()
            .attempts
            .values()
            .copied()
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            let a = attempts();
            a.len() == 10 && a.iter().all(|&n| n >= 2)
        })
        .await,
        "attempts per event: {:?}",
        attempts()
    );
    assert_eq!(outbox.depth("broken").unwrap(), 10);
    // Slow: every attempt times out (300 ms < 2 s) and is retried; still pending.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let rows = outbox.due("slow", i64::MAX, 100).unwrap();
            rows.len() == 10 && rows.iter().all(|r| r.attempts >= 1)
        })
        .await,
        "every slow row was attempted and timed out"
    );
    assert_eq!(outbox.depth("slow").unwrap(), 10);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_events_are_dead_lettered_and_can_be_redelivered() {
    let dir = common::temp_dir("events-dead");
    let reserved = ReservedPort::new();
    let port = reserved.port;
    let cfg = config(&dir, &[("gone", port)], 1);
    let shutdown = Shutdown::new();
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&cfg.outbox)).unwrap());
    let (bus, handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    for k in 0..5 {
        bus.publish(&event(k)).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || outbox
            .dead_letters(100)
            .unwrap()
            .len()
            == 5)
        .await
    );
    let dead = outbox.dead_letters(100).unwrap();
    assert!(dead
        .iter()
        .all(|d| d.attempts >= 1 && d.last_error.is_some()));
    // Shut down cleanly, bring the receiver up, re-deliver the dead letters.
    shutdown.request();
    for h in handles {
        h.await.unwrap();
    }
    let receiver = Receiver::start_on(reserved.listen(), Mode::Accept);
    let cfg = config(&dir, &[("gone", port)], 3600);
    assert_eq!(outbox.redeliver(None).unwrap(), 5);
    let shutdown = Shutdown::new();
    let (_bus, _handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    assert!(
        wait_until(Duration::from_secs(10), || receiver.accepted_ids().len()
            == 5)
        .await
    );
    assert!(outbox.dead_letters(100).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_not_followed_and_the_event_stays_pending() {
    let dir = common::temp_dir("events-redirect");
    let elsewhere = Receiver::start(0, Mode::Accept);
    let redirecting = Receiver::start(0, Mode::RedirectTo(elsewhere.port));
    let cfg = config(&dir, &[("hook", redirecting.port)], 3600);
    let shutdown = Shutdown::new();
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&cfg.outbox)).unwrap());
    let (bus, _handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    let event = event(0);
    bus.publish(&event).unwrap();
    // retried (a 307 is a failed attempt), never delivered to where it points
    let attempts = || {
        redirecting
            .state
            .lock()
            .unwrap()
            .attempts
            .get(&event.id.to_string())
            .copied()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(60), || attempts() >= 2).await,
        "attempts: {}",
        attempts()
    );
    assert!(elsewhere.accepted_ids().is_empty());
    assert!(elsewhere.state.lock().unwrap().attempts.is_empty());
    assert_eq!(outbox.depth("hook").unwrap(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// A certificate authority and a server certificate for 127.0.0.1 it signed: the CA's
/// PEM and the server's rustls configuration.
fn private_ca() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
    )
    .unwrap();
    (ca.pem(), tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_of_a_private_ca_is_trusted_only_with_its_ca_file() {
    let dir = common::temp_dir("events-tls");
    let (ca_pem, tls) = private_ca();
    let receiver = Receiver::start_tls(tls, Mode::Accept);
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let mut cfg = config(
        &dir,
        &[("trusting", receiver.port), ("default", receiver.port)],
        3600,
    );
    for hook in &mut cfg.webhooks {
        hook.url = format!("https://127.0.0.1:{}/hook", receiver.port);
    }
    cfg.webhooks[0].ca_file = ca_file.display().to_string();
    assert_eq!(cfg.webhooks[0].extra_roots().unwrap().len(), 1);
    let shutdown = Shutdown::new();
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&cfg.outbox)).unwrap());
    let (bus, _handles) = bus::start(outbox.clone(), &cfg, shutdown.clone());
    for k in 0..3 {
        assert_eq!(bus.publish(&event(k)).unwrap(), 2);
    }
    // the endpoint with the CA delivers everything over HTTPS
    assert!(
        wait_until(Duration::from_secs(30), || outbox
            .depth("trusting")
            .unwrap()
            == 0)
        .await,
        "trusting endpoint still holds {}",
        outbox.depth("trusting").unwrap()
    );
    assert_eq!(unique(&receiver.accepted_ids()).len(), 3);
    // the one without it tries (failed attempts counted), and keeps its rows: the
    // certificate is not trusted
    let failed = facestream::telemetry::metrics()
        .event_deliveries
        .get_or_create(&facestream::telemetry::Metrics::delivery("default", false))
        .clone();
    assert!(wait_until(Duration::from_secs(30), || failed.get() >= 3).await);
    assert_eq!(outbox.depth("default").unwrap(), 3);
    assert_eq!(
        receiver.accepted_ids().len(),
        3,
        "nothing arrived without the CA"
    );
    let _ = std::fs::remove_dir_all(dir);
}
