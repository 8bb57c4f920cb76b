//! The MQTT sink: the same outbox rows, published to a broker with QoS 1.
//!
//! Topic layout in the style of the home/NVR ecosystem (Frigate, Home Assistant):
//! `<prefix>/<camera>/identity` (recognised), `<prefix>/<camera>/unknown`,
//! `<prefix>/<camera>/track` (track ended), `<prefix>/<camera>/status` (camera up/down)
//! and `<prefix>/_/test`; `_` stands for events without a camera. The payload is the
//! event JSON, the same as the webhook body. A row is delivered when the broker's PUBACK
//! for it arrives; a broker outage leaves rows pending and they are retried with the
//! same backoff as webhooks.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::outbox::Outbox;
use super::{Event, EventType, EventsConfig};

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
}

fn default_port() -> u16 {
    1883
}

fn default_prefix() -> String {
    "facestream".into()
}

impl MqttConfig {
    /// The client id used: `client_id`, or `facestream-<host name>-<endpoint name>`.
    pub fn effective_client_id(&self) -> String {
        if !self.client_id.is_empty() {
            return self.client_id.clone();
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

    pub(crate) fn wants(&self, event: &Event) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event.kind.as_str())
    }
}

/// The topic of an event.
pub fn topic(prefix: &str, event: &Event) -> String {
    let camera: String = event
        .camera_id
        .as_deref()
        .unwrap_or("_")
        .chars()
        .map(|c| if matches!(c, '/' | '#' | '+') { '_' } else { c })
        .collect();
    let leaf = match event.kind {
        EventType::IdentityRecognized => "identity",
        EventType::IdentityUnknown => "unknown",
        EventType::TrackEnded => "track",
        EventType::CameraDown | EventType::CameraUp => "status",
        EventType::Test => "test",
    };
    format!("{prefix}/{camera}/{leaf}")
}

pub(crate) async fn deliver_loop(
    outbox: Arc<Outbox>,
    endpoint: MqttConfig,
    config: EventsConfig,
    notify: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(
        endpoint.effective_client_id(),
        endpoint.host.clone(),
        endpoint.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = &endpoint.username {
        // a username alone is sent with an empty password
        options.set_credentials(u.clone(), endpoint.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    let mut queue = super::webhook::EndpointQueue::new(
        outbox.clone(),
        &endpoint.name,
        &config,
        notify,
        shutdown,
    );
    while let Some(due) = queue.next_batch(32).await {
        for row in due {
            let result = match serde_json::from_str::<Event>(&row.payload) {
                Ok(event) => {
                    publish(
                        &client,
                        &mut eventloop,
                        &topic(&endpoint.topic_prefix, &event),
                        &row.payload,
                    )
                    .await
                }
                Err(e) => Err(format!("stored event is not valid JSON: {e}")),
            };
            super::webhook::record(&outbox, &endpoint.name, &row, result, &config);
        }
    }
}

/// Publish with QoS 1 and wait for the broker's PUBACK of this packet.
async fn publish(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
    payload: &str,
) -> Result<(), String> {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .map_err(|e| format!("queueing the publish: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut pkid = None;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| "no PUBACK within 5 s".to_string())?
            .map_err(|e| format!("broker connection: {e}"))?;
        match event {
            MqttEvent::Outgoing(Outgoing::Publish(id)) if pkid.is_none() => pkid = Some(id),
            MqttEvent::Incoming(Packet::PubAck(ack)) if Some(ack.pkid) == pkid => return Ok(()),
            _ => {}
        }
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
