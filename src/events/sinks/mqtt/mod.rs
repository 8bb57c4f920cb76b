//! The MQTT sink: the same outbox rows, published to a broker with QoS 1.
//!
//! Topic layout in the style of the home/NVR ecosystem (Frigate, Home Assistant):
//! `<prefix>/<camera>/identity` (recognised), `<prefix>/<camera>/unknown`,
//! `<prefix>/<camera>/track` (track ended), `<prefix>/<camera>/status` (camera up/down)
//! and `<prefix>/_/test`; `_` stands for events without a camera. The payload is the
//! event JSON, the same as the webhook body. A row is delivered when the broker's PUBACK
//! for it arrives (matched by packet id); a broker outage leaves rows pending and they
//! are retried with the same backoff as webhooks. The connection is polled by its own task
//! for as long as the endpoint runs, so keep-alive pings go out between events.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub mod home_assistant;

use self::home_assistant::Announced;
use super::{Sink, SinkContext};
use crate::events::delivery::{record, EndpointQueue, Retry};
use crate::events::outbox::Outbox;
use crate::events::{Event, EventType};
use crate::shutdown::Shutdown;

/// One MQTT broker (`[[events.mqtt]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Unique endpoint name (shared namespace with webhooks).
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// First topic level.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT client id, unique per broker (a broker disconnects the older of two clients
    /// with one id); empty (the default): `facestream-<host name>-<name>`.
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Event types to publish; empty: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Seconds between keep-alive pings while no event goes out (a broker drops a client
    /// silent for 1.5 × this); at least 1.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u16,
    /// Connect over TLS (MQTT over TLS usually listens on port 8883), verifying the
    /// broker's certificate and host name against the public roots and `ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of certificate authorities trusted for this broker besides the public
    /// roots (a broker with a certificate from a private CA); needs `tls`.
    #[serde(default)]
    pub ca_file: String,
    /// PEM client certificate chain and its private key, for brokers that authenticate
    /// clients by certificate (mutual TLS); both or neither; need `tls`.
    #[serde(default)]
    pub client_cert_file: String,
    #[serde(default)]
    pub client_key_file: String,
    /// Home Assistant MQTT discovery: a "last person" sensor per camera and a "seen"
    /// binary sensor per enrolled identity (`events::home_assistant`).
    #[serde(default)]
    pub home_assistant: bool,
    /// Home Assistant's discovery prefix.
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// An identity's "seen" sensor turns off this long after its last recognition.
    #[serde(default = "default_seen")]
    pub seen_s: u32,
    /// This node's id when it is one node of a cluster (`cluster.camera_leases`), set at
    /// load: it goes into the client id, and Home Assistant discovery is announced under
    /// one cluster-wide name instead of one per node.
    #[serde(skip)]
    pub cluster_node: Option<String>,
}

fn default_discovery_prefix() -> String {
    "homeassistant".into()
}

fn default_seen() -> u32 {
    600
}

fn default_keep_alive() -> u16 {
    30
}

fn default_port() -> u16 {
    1883
}

fn default_prefix() -> String {
    "facestream".into()
}

impl MqttConfig {
    /// The name Home Assistant discovery is announced under (topic level, device and
    /// entity ids): the client id made topic-safe on a lone node; on a cluster one name
    /// every node shares (`<topic_prefix>-cluster`), so each camera and each person
    /// appears once in Home Assistant whichever nodes run, and the live nodes keep every
    /// config current (an erased person's included) also for nodes that are gone.
    pub fn discovery_node(&self) -> String {
        match self.cluster_node {
            Some(_) => home_assistant::slug(&format!("{}-cluster", self.topic_prefix)),
            None => home_assistant::slug(&self.effective_client_id()),
        }
    }

    /// The client id used: `client_id`, or `facestream-<host name>-<endpoint name>`; on a
    /// node of a cluster, whose nodes share one configuration, the node id is in it either
    /// way (`<client_id>-<node>` or `facestream-<node>-<endpoint name>`), so the nodes do
    /// not knock each other off the broker.
    pub fn effective_client_id(&self) -> String {
        match (&self.cluster_node, self.client_id.is_empty()) {
            (None, false) => return self.client_id.clone(),
            (Some(node), false) => return format!("{}-{node}", self.client_id),
            (Some(node), true) => return format!("facestream-{node}-{}", self.name),
            (None, true) => {}
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        format!("facestream-{host}-{}", self.name)
    }
}

impl MqttConfig {
    /// The TLS client configuration when `tls` is on: public roots plus `ca_file`, and
    /// the client certificate when one is set.
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, String> {
        if !self.tls {
            return Ok(None);
        }
        let at = format!("events.mqtt[{}]", self.name);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !self.ca_file.is_empty() {
            let what = format!("{at}.ca_file");
            for cert in crate::tls::certificates(&what, &self.ca_file).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{what} {}: {e}", self.ca_file))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        if self.client_cert_file.is_empty() {
            return Ok(Some(builder.with_no_client_auth()));
        }
        let certs =
            crate::tls::certificates(&format!("{at}.client_cert_file"), &self.client_cert_file)
                .map_err(|e| e.to_string())?;
        let key = crate::tls::private_key(&format!("{at}.client_key_file"), &self.client_key_file)
            .map_err(|e| e.to_string())?;
        builder
            .with_client_auth_cert(certs, key)
            .map(Some)
            .map_err(|e| {
                format!("{at}.client_cert_file and client_key_file do not make a usable pair: {e}")
            })
    }

    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let at = format!("events.mqtt[{}]", self.name);
        if self.name.is_empty() || self.host.is_empty() {
            problems.push(format!("{at}: name and host are required"));
        }
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['#', '+']) {
            problems.push(format!(
                "{at}.topic_prefix must be non-empty without # or +"
            ));
        }
        if self.discovery_prefix.is_empty() || self.discovery_prefix.contains(['#', '+']) {
            problems.push(format!(
                "{at}.discovery_prefix must be non-empty without # or +"
            ));
        }
        crate::validate::within(problems, &format!("{at}.seen_s"), self.seen_s, 10..=86_400);
        if self.keep_alive_s == 0 {
            problems.push(format!("{at}.keep_alive_s must be at least 1"));
        }
        let tls_files = [&self.ca_file, &self.client_cert_file, &self.client_key_file];
        if !self.tls && tls_files.iter().any(|f| !f.is_empty()) {
            problems.push(format!(
                "{at}: ca_file, client_cert_file and client_key_file need tls = true"
            ));
        } else if self.client_cert_file.is_empty() != self.client_key_file.is_empty() {
            problems.push(format!(
                "{at}: client_cert_file and client_key_file go together"
            ));
        } else if let Err(e) = self.tls_config() {
            problems.push(e);
        }
        if self.password.is_some() && self.username.is_none() {
            problems.push(format!(
                "{at}.password is set without a username (MQTT sends a password only with a username)"
            ));
        }
        for t in &self.types {
            if !EventType::ALL.iter().any(|k| k.as_str() == t) {
                problems.push(format!("{at}.types: unknown event type {t:?}"));
            }
        }
    }

    fn wants(&self, event: &Event) -> bool {
        event.kind.wanted_by(&self.types)
    }

    /// This broker as a sink, announcing `announced` when `home_assistant = true`.
    pub fn sink(&self, announced: Option<Announced>) -> Box<dyn Sink> {
        Box::new(MqttSink {
            endpoint: self.clone(),
            announced,
        })
    }
}

/// A broker and what Home Assistant discovery announces on it.
struct MqttSink {
    endpoint: MqttConfig,
    announced: Option<Announced>,
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn wants(&self, event: &Event) -> bool {
        self.endpoint.wants(event)
    }

    fn spawn(self: Arc<Self>, c: SinkContext) -> tokio::task::JoinHandle<()> {
        tokio::spawn(deliver_loop(
            c.outbox,
            self.endpoint.clone(),
            c.retry,
            c.notify,
            c.shutdown,
            self.announced.clone(),
        ))
    }
}

/// `<prefix>/<camera>/<leaf>`, with `/`, `#` and `+` in the camera id replaced by `_`.
pub fn camera_topic(prefix: &str, camera: &str, leaf: &str) -> String {
    let camera: String = camera
        .chars()
        .map(|c| if matches!(c, '/' | '#' | '+') { '_' } else { c })
        .collect();
    format!("{prefix}/{camera}/{leaf}")
}

/// The topic of an event.
pub fn topic(prefix: &str, event: &Event) -> String {
    let camera = event.camera_id.as_deref().unwrap_or("_");
    let leaf = match event.kind {
        // an update names who the appearance is now: Home Assistant's "last person"
        EventType::IdentityRecognized | EventType::IdentityUpdated => "identity",
        EventType::IdentityUnknown => "unknown",
        EventType::TrackEnded => "track",
        EventType::CameraDown | EventType::CameraUp => "status",
        EventType::Test => "test",
        // no camera: `<prefix>/_/seen_before`
        EventType::IdentitySeenBefore => "seen_before",
    };
    camera_topic(prefix, camera, leaf)
}

async fn deliver_loop(
    outbox: Arc<Outbox>,
    endpoint: MqttConfig,
    retry: Retry,
    notify: Arc<Notify>,
    shutdown: Shutdown,
    announced: Option<Announced>,
) {
    let mut options = MqttOptions::new(
        endpoint.effective_client_id(),
        endpoint.host.clone(),
        endpoint.port,
    );
    options.set_keep_alive(Duration::from_secs(endpoint.keep_alive_s.into()));
    match endpoint.tls_config() {
        Ok(Some(tls)) => {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls),
            )));
        }
        Ok(None) => {}
        Err(e) => {
            // checked at start-up; a file that went away since leaves rows pending
            tracing::error!(endpoint = %endpoint.name, error = %e, "MQTT TLS set-up failed: nothing is published to this broker");
            return;
        }
    }
    if let Some(u) = &endpoint.username {
        // a username alone is sent with an empty password
        options.set_credentials(u.clone(), endpoint.password.clone().unwrap_or_default());
    }
    let (client, eventloop) = AsyncClient::new(options, 16);
    let link = Arc::new(Link::default());
    let driver = tokio::spawn(drive(eventloop, link.clone(), retry, shutdown.clone()));
    let announcer = announced
        .filter(|_| endpoint.home_assistant)
        .map(|announced| {
            tokio::spawn(home_assistant::announce_loop(
                client.clone(),
                link.clone(),
                endpoint.clone(),
                announced,
                shutdown.clone(),
            ))
        });
    let mut queue = EndpointQueue::new(outbox.clone(), &endpoint.name, &retry, notify, shutdown);
    while let Some(due) = queue.next_batch(32).await {
        for row in due {
            let result = match serde_json::from_str::<Event>(&row.payload) {
                Ok(event) => {
                    let result = publish(
                        &client,
                        &link,
                        &topic(&endpoint.topic_prefix, &event),
                        &row.payload,
                        false,
                    )
                    .await;
                    if let (true, Ok(()), Some(identity)) =
                        (endpoint.home_assistant, &result, &event.identity)
                    {
                        // Home Assistant's "seen" sensor; it turns itself off (off_delay)
                        let seen = home_assistant::seen_topic(&endpoint.topic_prefix, identity.id);
                        if let Err(e) = publish(&client, &link, &seen, "ON", false).await {
                            tracing::debug!(endpoint = %endpoint.name, error = %e, "seen state not published");
                        }
                    }
                    result
                }
                Err(e) => Err(format!("stored event is not valid JSON: {e}")),
            };
            record(&outbox, &endpoint.name, &row, result, &retry);
        }
    }
    driver.abort();
    if let Some(announcer) = announcer {
        announcer.abort();
    }
}

type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The state the connection's driver shares with the publisher.
#[derive(Default)]
pub(super) struct Link {
    inner: std::sync::Mutex<LinkState>,
    /// Set on CONNACK, cleared when the connection fails.
    connected: tokio::sync::Notify,
}

#[derive(Default)]
struct LinkState {
    connected: bool,
    /// Connections made so far (a new one: the broker may have lost retained state).
    generation: u64,
    /// Topics of retained, non-empty messages received, while collecting.
    retained: Option<Vec<String>>,
    /// Publishes handed to the client, in order, not yet written (their packet id is
    /// assigned when the event loop writes them: `Outgoing::Publish(pkid)`).
    unsent: std::collections::VecDeque<Ack>,
    /// Written publishes by packet id, waiting for their PUBACK.
    unacked: std::collections::HashMap<u16, Ack>,
}

impl Link {
    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for the connection; its generation, or none at shutdown.
    pub(super) async fn wait_connected(&self, shutdown: &Shutdown) -> Option<u64> {
        loop {
            let up = self.connected.notified();
            {
                let state = self.state();
                if state.connected {
                    return Some(state.generation);
                }
            }
            tokio::select! {
                _ = shutdown.requested() => return None,
                _ = up => {}
            }
        }
    }

    /// Start (`true`) or stop collecting retained topics; stopping returns them.
    pub(super) fn collect_retained(&self, on: bool) -> Vec<String> {
        let mut state = self.state();
        let got = state.retained.take().unwrap_or_default();
        if on {
            state.retained = Some(Vec::new());
        }
        got
    }
}

/// Poll the connection for as long as the endpoint runs, so keep-alive pings go out while
/// no event does, and match each PUBACK to its publish by packet id. When the connection
/// fails, every publish in flight fails (its row is retried from the outbox) and whatever
/// the client still buffered is dropped under the same lock that publishing takes, so no
/// stale publish can be taken for a later one; reconnection backs off like deliveries.
async fn drive(mut eventloop: EventLoop, link: Arc<Link>, retry: Retry, shutdown: Shutdown) {
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            _ = shutdown.requested() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                {
                    let mut state = link.state();
                    state.connected = true;
                    state.generation += 1;
                }
                link.connected.notify_waiters();
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if p.retain && !p.payload.is_empty() {
                    if let Some(topics) = link.state().retained.as_mut() {
                        topics.push(p.topic.clone());
                    }
                }
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                let mut state = link.state();
                if let Some(ack) = state.unsent.pop_front() {
                    state.unacked.insert(pkid, ack);
                }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = link.state().unacked.remove(&ack.pkid) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                {
                    let mut state = link.state();
                    state.connected = false;
                    eventloop.clean();
                    eventloop.pending.clear();
                    let reason = format!("broker connection: {e}");
                    for waiter in state.unsent.drain(..) {
                        let _ = waiter.send(Err(reason.clone()));
                    }
                    for (_, waiter) in state.unacked.drain() {
                        let _ = waiter.send(Err(reason.clone()));
                    }
                }
                failures = failures.saturating_add(1);
                let pause = crate::backoff::jittered(retry.initial_ms, retry.max_ms, failures);
                tokio::select! {
                    _ = shutdown.requested() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// How long a publish waits for the connection to come up, then for its PUBACK.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
const PUBACK_WAIT: Duration = Duration::from_secs(10);

/// Publish with QoS 1 and wait for the broker's PUBACK of this packet.
pub(super) async fn publish(
    client: &AsyncClient,
    link: &Link,
    topic: &str,
    payload: &str,
    retain: bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    let acked = loop {
        let up = link.connected.notified();
        {
            let mut state = link.state();
            if state.connected {
                client
                    .try_publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
                    .map_err(|e| format!("queueing the publish: {e}"))?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                state.unsent.push_back(tx);
                break rx;
            }
        }
        if tokio::time::timeout_at(deadline, up).await.is_err() {
            return Err(format!(
                "not connected to the broker within {} s",
                CONNECT_WAIT.as_secs()
            ));
        }
    };
    match tokio::time::timeout(PUBACK_WAIT, acked).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the broker connection ended before the PUBACK".into()),
        Err(_) => Err(format!("no PUBACK within {} s", PUBACK_WAIT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(toml_text: &str) -> MqttConfig {
        toml::from_str(&format!("name = \"b\"\nhost = \"127.0.0.1\"\n{toml_text}")).unwrap()
    }

    #[test]
    fn client_ids_differ_between_endpoints_and_credentials_are_checked() {
        let (a, b) = (broker(""), {
            let mut c = broker("");
            c.name = "other".into();
            c
        });
        assert!(a.effective_client_id().starts_with("facestream-"));
        assert_ne!(a.effective_client_id(), b.effective_client_id());
        assert_eq!(
            broker("client_id = \"cam-gw\"").effective_client_id(),
            "cam-gw"
        );
        let mut problems = Vec::new();
        broker("password = \"x\"").validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("without a username")),
            "{problems:?}"
        );
        let mut problems = Vec::new();
        broker("username = \"fs\"").validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn tls_settings_are_checked_at_start_up() {
        let problems = |extra: &str| {
            let mut p = Vec::new();
            broker(extra).validate(&mut p);
            p
        };
        assert!(problems("tls = true").is_empty(), "public roots only");
        assert!(problems("ca_file = \"/etc/ssl/certs/ca-certificates.crt\"")
            .iter()
            .any(|p| p.contains("need tls = true")));
        assert!(problems("tls = true\nclient_cert_file = \"c.pem\"")
            .iter()
            .any(|p| p.contains("go together")));
        let missing = problems("tls = true\nca_file = \"/nonexistent/ca.pem\"");
        assert!(
            missing
                .iter()
                .any(|p| p.contains("ca_file") && p.contains("/nonexistent/ca.pem")),
            "{missing:?}"
        );
    }

    #[test]
    fn topics_follow_the_camera_and_event_kind() {
        let mut e = Event::new(EventType::IdentityRecognized);
        e.camera_id = Some("front/door".into());
        assert_eq!(topic("facestream", &e), "facestream/front_door/identity");
        let test = Event::new(EventType::Test);
        assert_eq!(topic("fs", &test), "fs/_/test");
        let mut down = Event::new(EventType::CameraDown);
        down.camera_id = Some("lobby".into());
        assert_eq!(topic("fs", &down), "fs/lobby/status");
    }
}
