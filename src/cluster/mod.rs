//! Several nodes, one set of cameras: who watches what (`[cluster]`).
//!
//! Cameras are declared once, in the configuration every node loads. With
//! `cluster.camera_leases` each camera is watched by exactly one live node: the one
//! holding its **lease**, a PostgreSQL session-level advisory lock on the gallery of
//! record's database (`pg_try_advisory_lock(CAMERA_CLASS, key(camera))`). Why advisory
//! locks rather than a key-value store with a TTL:
//! - the lease lives exactly as long as the node's database session, with no clock and no
//!   TTL to tune: a node that dies (SIGKILL, crash) drops its connection, PostgreSQL
//!   releases its locks at once, and another node takes its cameras on its next round
//!   (`cluster.lease_round_ms`); a machine that vanishes without closing its connection
//!   is noticed by TCP keepalive (configured on the connection: about a minute);
//! - PostgreSQL is already the gallery of record of a cluster: no second quorum system.
//!
//! Every round a node reads who holds what (`pg_locks` joined with `pg_stat_activity`,
//! whose `application_name` is `facestream node=<id>`), then takes or hands back leases so
//! every live node watches either ⌊C/N⌋ or ⌈C/N⌉ of the C cameras: a node that joins gets
//! its share from the nodes with the most (a node above ⌈C/N⌉ hands back the surplus at
//! once; otherwise the node with the most hands back one camera per round). A node cut off from
//! PostgreSQL keeps the cameras it has (recognition must not stop because the database
//! did), and on reconnecting gives up any that another node took meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::telemetry::{metrics, NodeLabel};

/// Advisory lock classes (first key): camera leases, node ids.
pub const CAMERA_CLASS: i32 = 0x6663;
pub const NODE_CLASS: i32 = 0x666e;
/// `application_name` prefix of a node's lease connection.
const APP_PREFIX: &str = "facestream node=";
/// Longest node id (PostgreSQL keeps 63 bytes of `application_name`).
pub const MAX_NODE_ID: usize = 40;

/// Cluster settings (section `[cluster]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in `GET /v1/cameras`, metrics and logs; empty: the host name.
    pub node_id: String,
    /// Share the configured cameras among the live nodes by leases in PostgreSQL (needs
    /// `gallery.store = "postgres"`); off: this node watches every enabled camera.
    pub camera_leases: bool,
    /// How often a node checks and rebalances its leases (ms); also the bound on how long
    /// a dead node's cameras wait for another node.
    pub lease_round_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            camera_leases: false,
            lease_round_ms: 1000,
        }
    }
}

impl ClusterConfig {
    /// The node id: `node_id`, or the host name.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| {
                h.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                    .take(MAX_NODE_ID)
                    .collect::<String>()
            })
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "facestream".into())
    }

    pub(crate) fn validate(
        &self,
        postgres: bool,
        cameras: &[crate::ingest::CameraConfig],
        problems: &mut Vec<String>,
    ) {
        let id = &self.node_id;
        if id.len() > MAX_NODE_ID
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            problems.push(format!(
                "cluster.node_id = {id:?} must be at most {MAX_NODE_ID} letters, digits, '.', '_' or '-'"
            ));
        }
        if !(100..=60_000).contains(&self.lease_round_ms) {
            problems.push(format!(
                "cluster.lease_round_ms = {} must be within [100, 60000]",
                self.lease_round_ms
            ));
        }
        if self.camera_leases && !postgres {
            problems.push(
                "cluster.camera_leases needs gallery.store = \"postgres\" (the leases live there)"
                    .into(),
            );
        }
        let mut keys: HashMap<i32, &str> = HashMap::new();
        for c in cameras.iter().filter(|c| c.enabled) {
            if let Some(other) = keys.insert(camera_key(&c.id), &c.id) {
                problems.push(format!(
                    "cameras {other:?} and {:?} have the same lease key; rename one",
                    c.id
                ));
            }
        }
    }
}

/// A camera's lease key: FNV-1a of its id (stable across builds and machines).
pub fn camera_key(id: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

/// How many cameras this node should hold: (keep at most, take up to).
///
/// `counts` holds every live node's lease count (this node's included). Each node is
/// meant to hold ⌊C/N⌋ or ⌈C/N⌉. While some node holds fewer than ⌊C/N⌋, only that node
/// takes free cameras, and the node with the most (ties: the greatest id) hands one back
/// per round; otherwise a node takes free cameras up to ⌈C/N⌉.
pub fn share(cameras: usize, me: &str, counts: &HashMap<String, usize>) -> (usize, usize) {
    let n = counts.len().max(1);
    let (floor, ceil) = (cameras / n, cameras.div_ceil(n));
    let mine = counts.get(me).copied().unwrap_or(0);
    let starving = counts.iter().any(|(node, &c)| node != me && c < floor);
    let richest = counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
        .map(|(node, _)| node.as_str());
    let keep = if mine > ceil {
        ceil
    } else if starving && mine > floor && richest == Some(me) {
        mine - 1
    } else {
        mine
    };
    let take = if starving && mine >= floor {
        keep
    } else {
        ceil.max(keep)
    };
    (keep, take)
}

/// Who holds what, as read in one round.
struct View {
    /// camera key → node id
    holders: HashMap<i32, String>,
    /// live node ids
    nodes: Vec<String>,
}

/// The lease loop of one node.
pub struct Leases {
    node: String,
    url: String,
    round: Duration,
    /// (camera id, key), in configuration order.
    cameras: Vec<(String, i32)>,
    client: Option<tokio_postgres::Client>,
    /// Cameras whose lease this session holds.
    held: HashSet<String>,
    /// Whether the last round failed (to log an outage once).
    failing: bool,
}

impl Leases {
    pub fn new(config: &ClusterConfig, postgres_url: &str, cameras: Vec<String>) -> Leases {
        Leases {
            node: config.node_id(),
            url: postgres_url.to_string(),
            round: Duration::from_millis(config.lease_round_ms),
            cameras: cameras
                .into_iter()
                .map(|id| {
                    let key = camera_key(&id);
                    (id, key)
                })
                .collect(),
            client: None,
            held: HashSet::new(),
            failing: false,
        }
    }

    /// Run rounds until `shutdown`; returns the connection so the leases are released only
    /// once the caller has stopped the cameras.
    pub async fn run(
        mut self,
        pipeline: Arc<Pipeline>,
        shutdown: Shutdown,
    ) -> Option<tokio_postgres::Client> {
        metrics()
            .node_info
            .get_or_create(&NodeLabel {
                node: self.node.clone(),
            })
            .set(1);
        tracing::info!(node = %self.node, cameras = self.cameras.len(), "camera leases: joining the cluster");
        loop {
            match self.round(&pipeline).await {
                Ok(()) if self.failing => {
                    self.failing = false;
                    tracing::info!(node = %self.node, "camera leases: PostgreSQL reachable again");
                }
                Ok(()) => {}
                Err(e) => {
                    self.client = None;
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(
                            node = %self.node,
                            error = %e,
                            "camera leases: PostgreSQL unreachable; this node keeps the cameras it watches"
                        );
                    }
                }
            }
            tokio::select! {
                _ = shutdown.requested() => return self.client,
                _ = tokio::time::sleep(self.round) => {}
            }
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| format!("{e}"))?;
        config
            .application_name(format!("{APP_PREFIX}{}", self.node))
            .connect_timeout(crate::gallery::postgres::CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        actix_web::rt::spawn(async move {
            let _ = connection.await;
        });
        let node_key = camera_key(&self.node);
        let unique: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&NODE_CLASS, &node_key],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if !unique {
            return Err(format!(
                "another live node uses cluster.node_id {:?}: give every node its own id",
                self.node
            ));
        }
        // a new session holds no leases
        self.held.clear();
        self.client = Some(client);
        Ok(())
    }

    async fn try_lock(&self, key: i32) -> Result<bool, String> {
        let client = self.client.as_ref().ok_or("not connected")?;
        Ok(client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&CAMERA_CLASS, &key],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0))
    }

    async fn view(&self) -> Result<View, String> {
        let client = self.client.as_ref().ok_or("not connected")?;
        let rows = client
            .query(
                "SELECT l.classid::int8, l.objid::int8, a.application_name
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                   AND l.classid::int8 IN ($1, $2)
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&i64::from(CAMERA_CLASS), &i64::from(NODE_CLASS)],
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut view = View {
            holders: HashMap::new(),
            nodes: Vec::new(),
        };
        for r in rows {
            let (class, key, app): (i64, i64, Option<String>) = (r.get(0), r.get(1), r.get(2));
            let Some(node) = app.and_then(|a| a.strip_prefix(APP_PREFIX).map(str::to_string))
            else {
                continue;
            };
            // objid is the key's bit pattern as an unsigned oid
            let key = key as u32 as i32;
            if class == i64::from(NODE_CLASS) {
                view.nodes.push(node);
            } else {
                view.holders.insert(key, node);
            }
        }
        view.nodes.sort();
        view.nodes.dedup();
        Ok(view)
    }

    async fn round(&mut self, pipeline: &Pipeline) -> Result<(), String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.connect().await?;
        }
        // Cameras still running from before a reconnect: take their leases again, or
        // hand them over to the node that took them meanwhile.
        for id in pipeline.running_cameras() {
            if self.held.contains(&id) {
                continue;
            }
            let Some(&(_, key)) = self.cameras.iter().find(|(c, _)| *c == id) else {
                continue;
            };
            if self.try_lock(key).await? {
                self.held.insert(id);
            } else {
                tracing::info!(camera = %id, "camera leases: another node took this camera meanwhile; stopping it here");
                pipeline.stop_camera(&id).await;
            }
        }
        let view = self.view().await?;
        let mut counts: HashMap<String, usize> =
            view.nodes.iter().map(|n| (n.clone(), 0)).collect();
        counts.insert(self.node.clone(), 0);
        for node in view.holders.values() {
            *counts.entry(node.clone()).or_default() += 1;
        }
        counts.insert(self.node.clone(), self.held.len());
        let (keep, take) = share(self.cameras.len(), &self.node, &counts);
        // Hand back the surplus: stop first, then release, so two nodes never watch it.
        let mut mine: Vec<String> = self.held.iter().cloned().collect();
        mine.sort();
        while self.held.len() > keep {
            let id = mine.pop().expect("more held than kept");
            pipeline.stop_camera(&id).await;
            let key = camera_key(&id);
            let client = self.client.as_ref().ok_or("not connected")?;
            client
                .execute("SELECT pg_advisory_unlock($1, $2)", &[&CAMERA_CLASS, &key])
                .await
                .map_err(|e| e.to_string())?;
            self.held.remove(&id);
            tracing::info!(camera = %id, "camera leases: handed over for balance");
        }
        // Take free cameras up to the share, each node trying them in its own order.
        let mut free: Vec<&(String, i32)> = self
            .cameras
            .iter()
            .filter(|(id, key)| !view.holders.contains_key(key) && !self.held.contains(id))
            .collect();
        free.sort_by_key(|(id, _)| camera_key(&format!("{}/{id}", self.node)));
        let mut taken = Vec::new();
        for (id, key) in free {
            if self.held.len() + taken.len() >= take {
                break;
            }
            if self.try_lock(*key).await? {
                taken.push(id.clone());
            }
        }
        for id in taken {
            pipeline.start_camera(&id);
            tracing::info!(camera = %id, "camera leases: lease taken");
            self.held.insert(id);
        }
        // What every node shows in GET /v1/cameras for the cameras it does not watch.
        for (id, key) in &self.cameras {
            if !self.held.contains(id) {
                pipeline.set_watcher(id, view.holders.get(key).cloned());
            }
        }
        let m = metrics();
        m.cluster_nodes.set(view.nodes.len() as i64);
        m.camera_leases.set(self.held.len() as i64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
        pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    #[test]
    fn a_lone_node_takes_every_camera() {
        assert_eq!(share(5, "a", &counts(&[("a", 0)])), (0, 5));
        assert_eq!(share(5, "a", &counts(&[("a", 5)])), (5, 5));
    }

    #[test]
    fn a_joining_node_gets_its_share_from_the_richest() {
        // a holds all 4, b joins: a hands back one per round, b takes
        let c = counts(&[("a", 4), ("b", 0)]);
        assert_eq!(share(4, "a", &c), (2, 2));
        assert_eq!(share(4, "b", &c), (0, 2));
        // balanced at 2 + 2: nothing moves
        let c = counts(&[("a", 2), ("b", 2)]);
        assert_eq!(share(4, "a", &c), (2, 2));
        // 2 + 2 + 0: only the richest (ties: greatest id) gives, and nobody but c takes
        let c = counts(&[("a", 2), ("b", 2), ("c", 0)]);
        assert_eq!(share(4, "a", &c), (2, 2));
        assert_eq!(share(4, "b", &c), (1, 1));
        assert_eq!(share(4, "c", &c), (0, 2));
    }

    #[test]
    fn survivors_split_a_dead_nodes_cameras() {
        // c died holding 2 of 4; a and b hold 1 each: both may go to 2
        let c = counts(&[("a", 1), ("b", 1)]);
        assert_eq!(share(4, "a", &c), (1, 2));
        assert_eq!(share(4, "b", &c), (1, 2));
    }

    #[test]
    fn camera_keys_are_stable() {
        // FNV-1a 32: the same on every machine and build
        assert_eq!(camera_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(camera_key("a"), 0xe40c_292c_u32 as i32);
        assert_ne!(camera_key("door"), camera_key("gate"));
    }
}
