//! The MQTT sink against a real Mosquitto broker (Debian's `mosquitto`, started here on a
//! free loopback port): events queued during a broker outage are published once it is up,
//! on the documented topics, with the event JSON as payload; an idle connection keeps
//! itself alive.

mod common;

use common::free_port;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facestream::events::mqtt::MqttConfig;
use facestream::events::outbox::Outbox;
use facestream::events::webhook;
use facestream::events::{Event, EventType, EventsConfig};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::watch;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto() -> &'static str {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("mosquitto is not installed: run `make test` (scripts/install_apt.sh installs it)")
}

fn start_broker(port: u16) -> Broker {
    start_broker_logging(port, None)
}

/// A broker whose verbose log (every packet it receives) goes to `log`.
fn start_broker_logging(port: u16, log: Option<&std::path::Path>) -> Broker {
    let mut command = Command::new(mosquitto());
    command
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null());
    match log {
        Some(path) => command
            .arg("-v")
            .stderr(std::fs::File::create(path).unwrap()),
        None => command.stderr(Stdio::null()),
    };
    let child = command.spawn().unwrap();
    let broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

type Messages = Arc<Mutex<Vec<(String, String)>>>;

/// Subscribe to `facestream/#`; returns once the broker acknowledged the subscription.
async fn subscriber(port: u16) -> Messages {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("test-subscriber", "127.0.0.1", port), 16);
    client
        .subscribe("facestream/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let messages: Messages = Arc::default();
    let sink = messages.clone();
    let (ready, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut ready = Some(ready);
        while let Ok(event) = eventloop.poll().await {
            match event {
                MqttEvent::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                MqttEvent::Incoming(Packet::Publish(p)) => {
                    sink.lock().unwrap().push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    ));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .unwrap()
        .unwrap();
    messages
}

fn events_config(dir: &std::path::Path, port: u16, keep_alive_s: u16) -> EventsConfig {
    EventsConfig {
        outbox: dir.join("outbox.db").display().to_string(),
        dead_letter_after_s: 3600,
        retry_initial_ms: 50,
        retry_max_ms: 300,
        thumbnails: false,
        retention_s: 604_800,
        webhooks: vec![],
        mqtt: vec![MqttConfig {
            name: "broker".into(),
            host: "127.0.0.1".into(),
            port,
            topic_prefix: "facestream".into(),
            client_id: "facestream-test".into(),
            username: None,
            password: None,
            types: vec![],
            keep_alive_s,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_during_a_broker_outage_are_published_on_their_topics() {
    let dir = common::temp_dir("mqtt");
    let port = free_port();
    let config = events_config(&dir, port, 30);
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&config.outbox)).unwrap());
    // Broker down: events are accepted, attempts fail, rows stay pending.
    let (stop, shutdown) = watch::channel(false);
    let (bus, handles) = webhook::start(outbox.clone(), &config, shutdown);
    let mut sent = Vec::new();
    for (k, kind) in [
        EventType::IdentityRecognized,
        EventType::IdentityUnknown,
        EventType::CameraDown,
    ]
    .into_iter()
    .cycle()
    .take(6)
    .enumerate()
    {
        let mut e = Event::new(kind);
        e.camera_id = Some(format!("cam{}", k % 2));
        assert_eq!(bus.publish(&e).unwrap(), 1);
        sent.push(e);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outbox.depth("broker").unwrap(), 6);
    let _ = stop.send(true);
    for h in handles {
        h.abort();
    }
    // Broker up, a subscriber listening; delivery resumes from the outbox.
    let _broker = start_broker(port);
    let messages = subscriber(port).await;
    let (_stop, shutdown) = watch::channel(false);
    let (_bus, _handles) = webhook::start(outbox.clone(), &config, shutdown);
    let deadline = Instant::now() + Duration::from_secs(15);
    while messages.lock().unwrap().len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = messages.lock().unwrap().clone();
    assert_eq!(got.len(), 6, "{got:?}");
    for e in &sent {
        let (topic, payload) = got
            .iter()
            .find(|(_, p)| p.contains(&e.id.to_string()))
            .unwrap_or_else(|| panic!("event {} not published", e.id));
        assert_eq!(topic, &facestream::events::mqtt::topic("facestream", e));
        assert_eq!(&serde_json::from_str::<Event>(payload).unwrap(), e);
    }
    assert!(got.iter().any(|(t, _)| t == "facestream/cam0/identity"));
    assert!(got.iter().any(|(t, _)| t.ends_with("/status")));
    let deadline = Instant::now() + Duration::from_secs(5);
    while outbox.depth("broker").unwrap() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        outbox.depth("broker").unwrap(),
        0,
        "rows are marked delivered on PUBACK"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_sends_keep_alive_pings_and_then_still_delivers() {
    let dir = common::temp_dir("mqtt-idle");
    let port = free_port();
    let log = dir.join("mosquitto.log");
    let _broker = start_broker_logging(port, Some(&log));
    let messages = subscriber(port).await;
    let config = events_config(&dir, port, 1);
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&config.outbox)).unwrap());
    let (_stop, shutdown) = watch::channel(false);
    let (bus, _handles) = webhook::start(outbox.clone(), &config, shutdown);
    // No event is published: the client must still ping the broker (a broker drops a
    // client silent for 1.5 × its keep-alive). Mosquitto -v logs every PINGREQ.
    let pings = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Received PINGREQ from facestream-test"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pings() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pings() >= 3,
        "no keep-alive from an idle sink:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // the sink still delivers, each row settled by its own PUBACK. (Whether the broker
    // ever dropped the idle client depends on how promptly a loaded machine schedules
    // the 1 s pings: not asserted; that the pings go out at all is.)
    let sent: Vec<Event> = (0..5)
        .map(|k| {
            let mut e = Event::new(EventType::IdentityUnknown);
            e.camera_id = Some(format!("cam{k}"));
            assert_eq!(bus.publish(&e).unwrap(), 1);
            e
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while (messages.lock().unwrap().len() < sent.len() || outbox.depth("broker").unwrap() > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = messages.lock().unwrap().clone();
    for e in &sent {
        assert!(
            got.iter().any(|(_, p)| p.contains(&e.id.to_string())),
            "event {} not published: {got:?}",
            e.id
        );
    }
    assert_eq!(outbox.depth("broker").unwrap(), 0);
    let _ = std::fs::remove_dir_all(dir);
}
