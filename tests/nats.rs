//! The NATS JetStream sink against a real `nats-server -js` (Debian's `nats-server`,
//! started here on a loopback port of its choosing, with its store in a temp folder):
//! events land in the stream once each, on `<prefix>.<camera>.<type>` with `Nats-Msg-Id`
//! = event id; with the server killed in the middle of a burst and started again on the
//! same store, every event is still delivered, none twice, and the outbox empties.

mod common;

use common::nats::{nats_server, stored};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use facestream::events::bus;
use facestream::events::config::EventsConfig;
use facestream::events::outbox::Outbox;
use facestream::events::sinks::nats::NatsConfig;
use facestream::events::{Event, EventIdentity, EventType};
use facestream::shutdown::Shutdown;

fn events_config(dir: &Path, port: u16) -> EventsConfig {
    EventsConfig {
        outbox: dir.join("outbox.db").display().to_string(),
        dead_letter_after_s: 3600,
        retry_initial_ms: 50,
        retry_max_ms: 300,
        thumbnails: false,
        retention_s: 604_800,
        webhooks: vec![],
        snapshots: Default::default(),
        mqtt: vec![],
        nats: vec![toml::from_str(&format!(
            "name = \"bus\"\nurl = \"nats://127.0.0.1:{port}\"\nstream = \"FACESTREAM\"\n"
        ))
        .unwrap()],
    }
}

fn recognition(n: usize) -> Event {
    let mut e = Event::new(EventType::IdentityRecognized);
    e.camera_id = Some("front.door".into());
    e.identity = Some(EventIdentity {
        id: uuid::Uuid::now_v7(),
        name: format!("person {n}"),
        face_id: None,
    });
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_jetstream_once_each_through_a_server_kill_and_restart() {
    let dir = common::temp_dir(&format!("nats-{}", uuid::Uuid::now_v7()));
    let (server, port) = nats_server(&dir, None, "nats-1.log");
    let config = events_config(&dir, port);
    let nats: &NatsConfig = &config.nats[0];
    assert_eq!(nats.subject_prefix, "facestream");
    let outbox = Arc::new(Outbox::open(Path::new(&config.outbox)).unwrap());
    let shutdown = Shutdown::new();
    let (bus, _handles) = bus::start(outbox.clone(), &config, shutdown.clone());

    // a first burst, with the server up: the sink creates the stream and fills it
    let mut published = Vec::new();
    for n in 0..40 {
        let e = recognition(n);
        assert_eq!(bus.publish(&e).unwrap(), 1);
        published.push(e.id.to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(port).await.len() < 40 {
        assert!(
            Instant::now() < deadline,
            "the first burst did not reach the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = stored(port).await;
    assert_eq!(first.len(), 40);
    for m in &first {
        assert_eq!(
            m.subject.as_str(),
            "facestream.front_door.identity.recognized"
        );
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap_or_else(|| panic!("no Nats-Msg-Id in {:?}", m.headers))
            .as_str();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body["id"], id, "the header is the event's id");
    }

    // the server is killed while a second burst is being published, then comes back on
    // its store and port
    for n in 40..60 {
        let e = recognition(n);
        bus.publish(&e).unwrap();
        published.push(e.id.to_string());
    }
    drop(server);
    for n in 60..100 {
        let e = recognition(n);
        bus.publish(&e).unwrap();
        published.push(e.id.to_string());
    }
    let (_server, again) = nats_server(&dir, Some(port), "nats-2.log");
    assert_eq!(again, port);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let depth = outbox.depth("bus").unwrap();
        if depth == 0 && stored(port).await.len() >= 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{depth} events still pending after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = stored(port).await;
    let ids: Vec<String> = all
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 100, "each event once in the stream");
    assert_eq!(distinct.len(), 100);
    for id in &published {
        assert!(distinct.contains(id), "event {id} missing from the stream");
    }

    // a retry of a delivered event (same Nats-Msg-Id) is acknowledged as a duplicate and
    // not stored again
    let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let js = jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, ids[0].as_str());
    let ack = js
        .publish_with_headers(
            "facestream.front_door.identity.recognized",
            headers,
            all[0].payload.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate, "{ack:?}");
    assert_eq!(stored(port).await.len(), 100);
    shutdown.request();
    let _ = std::fs::remove_dir_all(dir);
}
