//! Home Assistant MQTT discovery, on an MQTT endpoint with `home_assistant = true`.
//!
//! Announced as retained config messages under `<discovery_prefix>/…/<node>/…/config`
//! (`<node>`: the endpoint's client id made topic-safe; on the nodes of a cluster one
//! shared name, [`MqttConfig::discovery_node`], so that every node announces the same
//! configs and Home Assistant shows each camera and person once), grouped in one device
//! per camera and one for the service:
//!
//! - per camera, a **sensor** "last person": the name in the latest
//!   `<prefix>/<camera>/identity` event (the topic the MQTT sink already publishes), with
//!   identity id, similarity and time as attributes;
//! - per enrolled identity, a **binary sensor** "seen" (occupancy): facestream publishes
//!   `ON` to `<prefix>/people/<identity id>/seen` with each recognition, and Home
//!   Assistant turns it off `seen_s` later (`off_delay`).
//!
//! The identity list is read again every [`REFRESH`]: an enrolment shows up, an erased
//! identity's config is replaced by an empty retained message, which removes the entity
//! (and its name) from Home Assistant. At the first connection the retained configs under
//! this node are read back from the broker first, so an identity erased while facestream
//! was down is removed too. After a reconnection everything is announced again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use uuid::Uuid;

use super::{publish, Link, MqttConfig};
use crate::shutdown::Shutdown;

/// How often the identity list is read again.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long the retained configs of a previous run are collected at the first connection.
const READ_BACK: Duration = Duration::from_secs(2);

/// What discovery announces: the cameras, and a reader of the enrolled identities.
#[derive(Clone)]
pub struct Announced {
    pub cameras: Vec<String>,
    #[allow(clippy::type_complexity)]
    pub identities: Arc<dyn Fn() -> Result<Vec<(Uuid, String)>, String> + Send + Sync>,
    /// How often the identities are read again ([`REFRESH`] in the service).
    pub refresh: Duration,
}

/// `s` with every character outside `[A-Za-z0-9_-]` replaced by `_` (topic levels and
/// Home Assistant object ids).
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The topic recognitions of `identity` turn its "seen" sensor on with.
pub fn seen_topic(topic_prefix: &str, identity: Uuid) -> String {
    format!("{topic_prefix}/people/{identity}/seen")
}

/// Every config message to announce: topic → JSON payload.
pub fn configs(
    endpoint: &MqttConfig,
    cameras: &[String],
    identities: &[(Uuid, String)],
) -> BTreeMap<String, String> {
    let node = endpoint.discovery_node();
    let dp = &endpoint.discovery_prefix;
    let prefix = &endpoint.topic_prefix;
    let service = serde_json::json!({
        "identifiers": [node],
        "name": "facestream",
        "manufacturer": "facestream",
        "model": "face recognition service",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let mut out = BTreeMap::new();
    for camera in cameras {
        let cam = slug(camera);
        let state = super::camera_topic(prefix, camera, "identity");
        let payload = serde_json::json!({
            "name": "Last person",
            "unique_id": format!("{node}_{cam}_last_person"),
            "state_topic": state,
            "value_template": "{{ value_json.identity.name }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'identity_id': value_json.identity.id, 'similarity': value_json.similarity, 'first_seen': value_json.first_seen} | tojson }}",
            "icon": "mdi:face-recognition",
            "device": {
                "identifiers": [format!("{node}_{cam}")],
                "name": camera,
                "manufacturer": "facestream",
                "model": "camera",
                "via_device": node,
            },
        });
        out.insert(
            format!("{dp}/sensor/{node}/{cam}_last_person/config"),
            payload.to_string(),
        );
    }
    for (id, name) in identities {
        let object = id.simple().to_string();
        let payload = serde_json::json!({
            "name": format!("{name} seen"),
            "unique_id": format!("{node}_{object}_seen"),
            "state_topic": seen_topic(prefix, *id),
            "payload_on": "ON",
            "off_delay": endpoint.seen_s,
            "device_class": "occupancy",
            "device": service,
        });
        out.insert(
            format!("{dp}/binary_sensor/{node}/{object}_seen/config"),
            payload.to_string(),
        );
    }
    out
}

/// Keep the broker's discovery configs equal to [`configs`] for as long as the endpoint
/// runs.
pub(super) async fn announce_loop(
    client: AsyncClient,
    link: Arc<Link>,
    endpoint: MqttConfig,
    announced: Announced,
    shutdown: Shutdown,
) {
    let node = endpoint.discovery_node();
    // topic → payload as the broker holds it (after our last successful publish)
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    let mut generation = 0;
    let mut identities = Vec::new();
    loop {
        let connected = link.wait_connected(&shutdown).await;
        let Some(current) = connected else { return };
        if current != generation {
            // a new connection: the broker may have lost or kept anything
            held.clear();
            if generation == 0 {
                let filter = format!("{}/+/{node}/+/config", endpoint.discovery_prefix);
                for topic in read_back(&client, &link, &filter, &shutdown).await {
                    // not what we would announce: compared, then replaced or removed
                    held.insert(topic, "?".to_string());
                }
            }
            generation = current;
        }
        // a database read: on a blocking thread, never on the event-delivery runtime
        let read = announced.identities.clone();
        let listed = tokio::task::spawn_blocking(move || read())
            .await
            .unwrap_or_else(|e| Err(format!("the identity reader failed: {e}")));
        match listed {
            Ok(list) => identities = list,
            Err(e) => tracing::warn!(endpoint = %endpoint.name, error = %e,
                "Home Assistant discovery: reading the identities failed; the last list stays announced"),
        }
        let want = configs(&endpoint, &announced.cameras, &identities);
        let gone: Vec<String> = held
            .keys()
            .filter(|t| !want.contains_key(*t))
            .cloned()
            .collect();
        let mut failed = false;
        for topic in gone {
            match publish(&client, &link, &topic, "", true).await {
                Ok(()) => {
                    held.remove(&topic);
                }
                Err(_) => failed = true,
            }
        }
        for (topic, payload) in &want {
            if held.get(topic) == Some(payload) {
                continue;
            }
            match publish(&client, &link, topic, payload, true).await {
                Ok(()) => {
                    held.insert(topic.clone(), payload.clone());
                }
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.name, topic, error = %e, "discovery publish failed; retried");
                    failed = true;
                    break;
                }
            }
        }
        let pause = if failed {
            Duration::from_secs(2).min(announced.refresh)
        } else {
            announced.refresh
        };
        tokio::select! {
            _ = shutdown.requested() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Topics with a non-empty retained message under `filter`, collected for [`READ_BACK`]
/// after subscribing (the broker sends retained messages right after the SUBACK).
async fn read_back(
    client: &AsyncClient,
    link: &Link,
    filter: &str,
    shutdown: &Shutdown,
) -> Vec<String> {
    link.collect_retained(true);
    if client.subscribe(filter, QoS::AtLeastOnce).await.is_err() {
        link.collect_retained(false);
        return Vec::new();
    }
    tokio::select! {
        _ = shutdown.requested() => {}
        _ = tokio::time::sleep(READ_BACK) => {}
    }
    let _ = client.unsubscribe(filter).await;
    link.collect_retained(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> MqttConfig {
        toml::from_str(
            "name = \"ha\"\nhost = \"broker\"\nclient_id = \"facestream-nvr.1\"\nhome_assistant = true\n",
        )
        .unwrap()
    }

    #[test]
    fn a_sensor_per_camera_and_a_seen_sensor_per_identity() {
        let alice = Uuid::from_u128(0xA11CE);
        let c = configs(
            &endpoint(),
            &["front door".into()],
            &[(alice, "Alice".into())],
        );
        let topics: Vec<&String> = c.keys().collect();
        assert_eq!(
            topics,
            vec![
                "homeassistant/binary_sensor/facestream-nvr_1/000000000000000000000000000a11ce_seen/config",
                "homeassistant/sensor/facestream-nvr_1/front_door_last_person/config",
            ]
        );
        let camera: serde_json::Value = serde_json::from_str(&c[topics[1]]).unwrap();
        assert_eq!(camera["state_topic"], "facestream/front door/identity");
        assert_eq!(camera["value_template"], "{{ value_json.identity.name }}");
        assert_eq!(camera["device"]["name"], "front door");
        let seen: serde_json::Value = serde_json::from_str(&c[topics[0]]).unwrap();
        assert_eq!(seen["name"], "Alice seen");
        assert_eq!(
            seen["state_topic"],
            format!("facestream/people/{alice}/seen")
        );
        assert_eq!(seen["off_delay"], 600);
        assert_eq!(seen["device_class"], "occupancy");
        assert_eq!(
            seen["unique_id"],
            "facestream-nvr_1_000000000000000000000000000a11ce_seen"
        );
    }

    #[test]
    fn the_nodes_of_a_cluster_have_their_own_client_ids_and_announce_one_set_of_configs() {
        let alice = Uuid::from_u128(0xA11CE);
        let node = |id: &str, client_id: &str| {
            let mut e = endpoint();
            e.client_id = client_id.into();
            e.cluster_node = Some(id.into());
            e
        };
        for client_id in ["", "facestream-nvr.1"] {
            let (a, b) = (node("node-a", client_id), node("node-b", client_id));
            assert_ne!(
                a.effective_client_id(),
                b.effective_client_id(),
                "client_id = {client_id:?}: the broker would drop one node for the other"
            );
            assert!(a.effective_client_id().contains("node-a"));
            let announce =
                |e: &MqttConfig| configs(e, &["door".into()], &[(alice, "Alice".into())]);
            assert_eq!(
                announce(&a),
                announce(&b),
                "Home Assistant would show one copy per node"
            );
            assert!(announce(&a)
                .keys()
                .all(|t| t.contains("/facestream-cluster/")));
        }
        // a lone node is announced as before
        assert_eq!(endpoint().discovery_node(), "facestream-nvr_1");
    }

    #[test]
    fn discovery_settings_out_of_range_are_named() {
        let mut bad = endpoint();
        bad.seen_s = 5;
        bad.discovery_prefix = "home/#".into();
        let mut problems = Vec::new();
        bad.validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("events.mqtt[ha].discovery_prefix"));
        assert!(problems[1].contains("events.mqtt[ha].seen_s = 5 must be within [10, 86400]"));
        let mut none = Vec::new();
        endpoint().validate(&mut none);
        assert!(none.is_empty(), "{none:?}");
    }
}
