//! The MQTT sink against a real Mosquitto broker (Debian's `mosquitto`, started here on
//! free loopback ports, chosen again when another process takes one first): events queued during a broker outage are published once it is up,
//! on the documented topics, with the event JSON as payload; an idle connection keeps
//! itself alive; a TLS listener of a private CA is trusted only with its `ca_file`, and a
//! listener that requires client certificates takes the configured one.

mod common;

use common::free_port;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facestream::events::bus;
use facestream::events::config::EventsConfig;
use facestream::events::outbox::Outbox;
use facestream::events::sinks::mqtt::MqttConfig;
use facestream::events::{Event, EventType};
use facestream::shutdown::Shutdown;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto() -> &'static str {
    common::installed(&["/usr/sbin/mosquitto", "/usr/bin/mosquitto"], "mosquitto")
}

/// Start Mosquitto on `config` (its listeners, TLS files, ...; logging to stderr, which
/// goes to `log`) and wait until it runs. Each listener names its address, so a port
/// another process holds makes Mosquitto exit (the default `-p` listener would fall back
/// to IPv6 alone and leave 127.0.0.1 to the other process): that is an `Err` with the log.
fn try_start(config: &str, dir: &std::path::Path, log: &str) -> Result<Broker, String> {
    let conf = dir.join(format!("{log}.conf"));
    let log = dir.join(log);
    std::fs::write(
        &conf,
        format!("log_dest stderr\nlog_type all\nallow_anonymous true\n{config}"),
    )
    .unwrap();
    let child = Command::new(mosquitto())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut broker = Broker(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(" running") {
            return Ok(broker);
        }
        if let Ok(Some(status)) = broker.0.try_wait() {
            return Err(format!("mosquitto exited ({status}):\n{text}"));
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A broker with one listener per port of `config(ports)`, on `N` ports chosen by
/// [`free_port`]; chosen again when another process took one first (the gap between
/// choosing a port and Mosquitto binding it).
fn start_on_free_ports<const N: usize>(
    dir: &std::path::Path,
    log: &str,
    config: impl Fn([u16; N]) -> String,
) -> (Broker, [u16; N]) {
    let mut last = String::new();
    for _ in 0..5 {
        let ports = [(); N].map(|_| free_port());
        match try_start(&config(ports), dir, log) {
            Ok(broker) => return (broker, ports),
            Err(e) => last = e,
        }
    }
    panic!("no free ports for mosquitto after 5 tries; last: {last}")
}

/// A plain listener on 127.0.0.1:`port`.
fn plain_listener(port: u16) -> String {
    format!("listener {port} 127.0.0.1\n")
}

type Messages = Arc<Mutex<Vec<(String, String)>>>;

/// Subscribe to `facestream/#`; returns once the broker acknowledged the subscription.
async fn subscriber(port: u16) -> Messages {
    subscriber_to(port, "facestream/#", "test-subscriber").await
}

/// Messages on `filter` (retained ones first) as a client named `id`.
async fn subscriber_to(port: u16, filter: &str, id: &str) -> Messages {
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 16);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
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
        snapshots: Default::default(),
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
            tls: false,
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            home_assistant: false,
            discovery_prefix: "homeassistant".into(),
            seen_s: 600,
            cluster_node: None,
        }],
        nats: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_during_a_broker_outage_are_published_on_their_topics() {
    let dir = common::temp_dir("mqtt");
    // The broker's port is proven bindable first, then the broker goes down.
    let (broker, [port]) = start_on_free_ports(&dir, "first.log", |[p]| plain_listener(p));
    drop(broker);
    let config = events_config(&dir, port, 30);
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&config.outbox)).unwrap());
    // Broker down: events are accepted, attempts fail, rows stay pending.
    let shutdown = Shutdown::new();
    let (bus, handles) = bus::start(outbox.clone(), &config, shutdown.clone());
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
    shutdown.request();
    for h in handles {
        h.abort();
    }
    // Broker up, a subscriber listening; delivery resumes from the outbox.
    let _broker = try_start(&plain_listener(port), &dir, "mosquitto.log")
        .unwrap_or_else(|e| panic!("restarting the broker on port {port}: {e}"));
    let messages = subscriber(port).await;
    let shutdown = Shutdown::new();
    let (_bus, _handles) = bus::start(outbox.clone(), &config, shutdown.clone());
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
        assert_eq!(
            topic,
            &facestream::events::sinks::mqtt::topic("facestream", e)
        );
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
    let (_broker, [port]) = start_on_free_ports(&dir, "mosquitto.log", |[p]| plain_listener(p));
    let log = dir.join("mosquitto.log");
    let messages = subscriber(port).await;
    let config = events_config(&dir, port, 1);
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&config.outbox)).unwrap());
    let shutdown = Shutdown::new();
    let (bus, _handles) = bus::start(outbox.clone(), &config, shutdown.clone());
    // No event is published: the client must still ping the broker (a broker drops a
    // client silent for 1.5 × its keep-alive). `log_type all` logs every PINGREQ.
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

/// PEM files of a private CA, a broker certificate for 127.0.0.1 and a client
/// certificate, all signed by it, written to `dir`: (ca, server cert, server key,
/// client cert, client key).
fn private_ca_files(dir: &std::path::Path) -> [String; 5] {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "facestream test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    // each certificate its own subject (OpenSSL takes a leaf named like its issuer for
    // a self-signed one)
    let issue = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = issue("127.0.0.1");
    let (client, client_key) = issue("facestream-client");
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server),
        ("server.key", server_key),
        ("client.pem", client),
        ("client.key", client_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_broker_of_a_private_ca_is_trusted_only_with_its_ca_file() {
    let dir = common::temp_dir("mqtt-tls");
    let [ca, server, server_key, client, client_key] = private_ca_files(&dir);
    // one broker: a plain listener for the test's subscriber, a TLS one, and a TLS one
    // that requires a client certificate of the CA
    let (_broker, [plain, tls, mutual]) = start_on_free_ports(
        &dir,
        "mosquitto.log",
        |[plain, tls, mutual]| {
            format!(
                "listener {plain} 127.0.0.1\n\
                 listener {tls} 127.0.0.1\ncafile {ca}\ncertfile {server}\nkeyfile {server_key}\n\
                 listener {mutual} 127.0.0.1\ncafile {ca}\ncertfile {server}\nkeyfile {server_key}\n\
                 require_certificate true\n"
            )
        },
    );
    let messages = subscriber(plain).await;

    let mut config = events_config(&dir, tls, 30);
    let base = config.mqtt.pop().unwrap();
    let endpoint =
        |name: &str, port: u16, ca_file: &str, client: Option<(&str, &str)>| MqttConfig {
            name: name.into(),
            client_id: format!("facestream-{name}"),
            port,
            tls: true,
            ca_file: ca_file.into(),
            client_cert_file: client.map_or(String::new(), |c| c.0.into()),
            client_key_file: client.map_or(String::new(), |c| c.1.into()),
            ..base.clone()
        };
    config.mqtt = vec![
        endpoint("trusting", tls, &ca, None),
        endpoint("untrusting", tls, "", None),
        endpoint("mutual", mutual, &ca, Some((&client, &client_key))),
        endpoint("anonymous", mutual, &ca, None),
    ];
    for m in &config.mqtt {
        assert!(m.tls_config().unwrap().is_some(), "{}", m.name);
    }
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&config.outbox)).unwrap());
    let shutdown = Shutdown::new();
    let (bus, _handles) = bus::start(outbox.clone(), &config, shutdown.clone());
    let sent: Vec<Event> = (0..3)
        .map(|k| {
            let mut e = Event::new(EventType::IdentityRecognized);
            e.camera_id = Some(format!("cam{k}"));
            assert_eq!(bus.publish(&e).unwrap(), 4);
            e
        })
        .collect();
    // with the CA (and, where required, the client certificate): everything, over TLS
    let deadline = Instant::now() + Duration::from_secs(30);
    while (outbox.depth("trusting").unwrap() > 0 || outbox.depth("mutual").unwrap() > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = || std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
    assert_eq!(outbox.depth("trusting").unwrap(), 0, "{}", log());
    assert_eq!(outbox.depth("mutual").unwrap(), 0, "{}", log());
    let deadline = Instant::now() + Duration::from_secs(10);
    while messages.lock().unwrap().len() < 2 * sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = messages.lock().unwrap().clone();
    for e in &sent {
        let copies = got
            .iter()
            .filter(|(_, p)| p.contains(&e.id.to_string()))
            .count();
        assert_eq!(
            copies, 2,
            "event {} once per trusted endpoint: {got:?}",
            e.id
        );
    }
    // without the CA, or without a client certificate where one is required: attempts
    // fail (counted) and the rows stay pending
    for name in ["untrusting", "anonymous"] {
        let failed = facestream::telemetry::metrics()
            .event_deliveries
            .get_or_create(&facestream::telemetry::Metrics::delivery(name, false))
            .clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        while failed.get() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            failed.get() >= 3,
            "{name}: {} failed attempts",
            failed.get()
        );
        assert_eq!(outbox.depth(name).unwrap(), 3, "{name}");
    }
    assert_eq!(messages.lock().unwrap().len(), 2 * sent.len());
    let _ = std::fs::remove_dir_all(dir);
}

/// The retained messages under `filter` as a fresh client sees them, once at least
/// `expected` have arrived (the broker sends them together, right after the SUBACK).
async fn retained(port: u16, filter: &str, id: &str, expected: usize) -> Vec<(String, String)> {
    let messages = subscriber_to(port, filter, id).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while messages.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = messages.lock().unwrap().clone();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_discovery_follows_cameras_identities_and_erasures() {
    use facestream::events::sinks::mqtt::home_assistant::{seen_topic, Announced};
    use facestream::events::EventIdentity;
    let dir = common::temp_dir("mqtt-ha");
    let (_broker, [port]) = start_on_free_ports(&dir, "mosquitto.log", |[p]| plain_listener(p));
    let node = "facestream-test";
    let (alice, bob, erased) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let config_topic = |id: uuid::Uuid| {
        format!(
            "homeassistant/binary_sensor/{node}/{}_seen/config",
            id.simple()
        )
    };
    // a previous run announced someone who was erased while the service was down
    {
        let (client, mut eventloop) =
            AsyncClient::new(MqttOptions::new("leftover", "127.0.0.1", port), 16);
        client
            .publish(
                config_topic(erased),
                QoS::AtLeastOnce,
                true,
                "{\"name\":\"Eve seen\"}",
            )
            .await
            .unwrap();
        loop {
            if let Ok(MqttEvent::Incoming(Packet::PubAck(_))) = eventloop.poll().await {
                break;
            }
        }
    }
    let live = subscriber_to(port, "homeassistant/#", "ha-live").await;
    let people = Arc::new(Mutex::new(vec![
        (alice, "Alice".to_string()),
        (bob, "Bob".to_string()),
    ]));
    let list = people.clone();
    let announced = Announced {
        cameras: vec!["front door".into()],
        identities: Arc::new(move || Ok(list.lock().unwrap().clone())),
        refresh: Duration::from_millis(300),
    };
    let mut config = events_config(&dir, port, 30);
    config.mqtt[0].home_assistant = true;
    config.mqtt[0].seen_s = 120;
    let outbox = Arc::new(Outbox::open(std::path::Path::new(&config.outbox)).unwrap());
    let shutdown = Shutdown::new();
    let (bus, _handles) = bus::start_with(
        outbox.clone(),
        &config,
        shutdown.clone(),
        Some(announced),
        Default::default(),
    );
    let last = |topic: &str| -> Option<String> {
        live.lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
    };
    let camera_topic = format!("homeassistant/sensor/{node}/front_door_last_person/config");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(last(&config_topic(alice)).is_some_and(|p| !p.is_empty())
        && last(&config_topic(bob)).is_some_and(|p| !p.is_empty())
        && last(&camera_topic).is_some()
        && last(&config_topic(erased)).as_deref() == Some(""))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let camera: serde_json::Value =
        serde_json::from_str(&last(&camera_topic).expect("camera sensor announced")).unwrap();
    assert_eq!(camera["state_topic"], "facestream/front door/identity");
    assert_eq!(camera["value_template"], "{{ value_json.identity.name }}");
    let a: serde_json::Value =
        serde_json::from_str(&last(&config_topic(alice)).expect("Alice announced")).unwrap();
    assert_eq!(a["name"], "Alice seen");
    assert_eq!(a["off_delay"], 120);
    assert_eq!(a["state_topic"], seen_topic("facestream", alice));
    assert_eq!(
        last(&config_topic(erased)).as_deref(),
        Some(""),
        "the identity erased while the service was down is removed"
    );

    // a recognition turns Alice's sensor on (Home Assistant turns it off after off_delay)
    let seen = subscriber_to(port, "facestream/people/#", "ha-seen").await;
    let mut e = Event::new(EventType::IdentityRecognized);
    e.camera_id = Some("front door".into());
    e.identity = Some(EventIdentity {
        id: alice,
        name: "Alice".into(),
        face_id: None,
    });
    bus.publish(&e).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(seen_topic("facestream", alice), "ON".to_string())]
    );

    // Bob is erased: his config is replaced by an empty retained message
    people.lock().unwrap().retain(|(id, _)| *id != bob);
    let deadline = Instant::now() + Duration::from_secs(15);
    while last(&config_topic(bob)).as_deref() != Some("") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last(&config_topic(bob)).as_deref(), Some(""));
    // what a Home Assistant starting now would find: the camera and Alice, nobody else
    let mut now: Vec<String> = retained(port, "homeassistant/#", "ha-fresh", 2)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    now.sort();
    let mut expected = vec![config_topic(alice), camera_topic];
    expected.sort();
    assert_eq!(now, expected);
    shutdown.request();
    let _ = std::fs::remove_dir_all(dir);
}
