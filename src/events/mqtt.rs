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
    /// MQTT client id (unique per broker).
    #[serde(default = "default_client_id")]
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

fn default_client_id() -> String {
    "facestream".into()
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
        endpoint.client_id.clone(),
        endpoint.host.clone(),
        endpoint.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    if let (Some(u), Some(p)) = (&endpoint.username, &endpoint.password) {
        options.set_credentials(u.clone(), p.clone());
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
