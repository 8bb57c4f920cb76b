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
//!   (`cluster.lease_round_ms`);
//! - PostgreSQL is already the gallery of record of a cluster: no second quorum system.
//!
//! A session can also outlive its node: a frozen process (SIGSTOP, a stalled VM), a
//! machine that lost power or its network keeps its socket open on the server, and
//! PostgreSQL notices only by its own TCP keepalive (the OS default: two hours). So the
//! lease session is also a **heartbeat**: every round runs queries on it, and each node
//! reads, with the lock holders, how long every other node's session has been silent
//! (`now() - pg_stat_activity.state_change`, on the server's clock: no clock of the nodes
//! is compared). A node silent for over `cluster.lease_timeout_ms` has its session ended
//! (`pg_terminate_backend`), which releases its leases, and the live nodes take its cameras
//! on their next round. The frozen node, once it runs again, finds its session gone,
//! reconnects at once and stops the cameras another node took meanwhile.
//!
//! Nodes may connect as **different roles** (one per node or service account). PostgreSQL
//! then shows another role's session times as NULL, and ending another role's session
//! needs `pg_signal_backend`. So each node also sets `idle_session_timeout` to the lease
//! timeout on its own lease session (PostgreSQL 14+): the server itself ends a session
//! silent that long, whoever can see it. A node whose idle time cannot be read counts as
//! live (unknown is not silence: taking a live node's cameras would watch them twice);
//! its silence is the server's to act on.
//!
//! A **PostgreSQL restart** ends every session at once. So that the first node to
//! reconnect does not take every camera (and the others then stop theirs), a node takes
//! no free camera while the server has been up for less than the lease timeout: in that
//! grace period each node only takes back the leases of the cameras it runs.
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
    /// A node whose lease session has been silent this long (ms: frozen, powered off, cut
    /// off from PostgreSQL) loses its leases to the live nodes; also the grace period
    /// after a PostgreSQL restart in which nodes only take back their own cameras.
    pub lease_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            camera_leases: false,
            lease_round_ms: 1000,
            lease_timeout_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    /// The node id: `node_id`, or one derived from the host name ([`node_id_from_host`]).
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| node_id_from_host(h.trim()))
            .unwrap_or_else(|_| "facestream".into())
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
        crate::validate::within(
            problems,
            "cluster.lease_round_ms",
            self.lease_round_ms,
            100..=60_000,
        );
        if !(2_000..=300_000).contains(&self.lease_timeout_ms)
            || self.lease_timeout_ms < 3 * self.lease_round_ms
        {
            problems.push(format!(
                "cluster.lease_timeout_ms = {} must be within [2000, 300000] and at least three \
                 rounds (3 × cluster.lease_round_ms = {})",
                self.lease_timeout_ms,
                3 * self.lease_round_ms
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

/// The default node id for host name `host`: the name itself when it is a valid id (at
/// most [`MAX_NODE_ID`] of `A-Z a-z 0-9 . _ -`), otherwise a readable prefix of its valid
/// characters, `-`, and 8 hex digits of a hash of the **whole** name. Host names that
/// differ only past the 40th character (StatefulSet pods of a long-named set, FQDNs of
/// one domain) or only in characters an id cannot hold still give different ids.
pub fn node_id_from_host(host: &str) -> String {
    let valid = |c: &char| c.is_ascii_alphanumeric() || "._-".contains(*c);
    if host.is_empty() {
        return "facestream".into();
    }
    if host.len() <= MAX_NODE_ID && host.chars().all(|c| valid(&c)) {
        return host.to_string();
    }
    let prefix: String = host.chars().filter(valid).take(MAX_NODE_ID - 9).collect();
    format!("{prefix}-{:08x}", camera_key(host) as u32)
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
    /// Other nodes whose session has been silent past the lease timeout: (node, backend
    /// pid, seconds silent).
    silent: Vec<(String, i32, f64)>,
    /// Other nodes whose idle time this node's role may not read (NULL in
    /// `pg_stat_activity`): counted live; the server ends their sessions when silent.
    unreadable: usize,
}

/// The lease loop of one node.
pub struct Leases {
    node: String,
    url: String,
    round: Duration,
    /// How long a node's session may be silent before the others end it; also the grace
    /// period after a PostgreSQL restart.
    timeout: Duration,
    /// (camera id, key), in configuration order.
    cameras: Vec<(String, i32)>,
    client: Option<tokio_postgres::Client>,
    /// Cameras whose lease this session holds.
    held: HashSet<String>,
    /// Whether the last round failed (to log an outage once).
    failing: bool,
    /// Whether the grace period after a PostgreSQL restart was logged.
    grace_logged: bool,
    /// Whether a server without `idle_session_timeout` was logged.
    no_idle_timeout_logged: bool,
    /// Whether nodes of other roles (idle time unreadable) were logged.
    unreadable_logged: bool,
}

impl Leases {
    pub fn new(config: &ClusterConfig, postgres_url: &str, cameras: Vec<String>) -> Leases {
        Leases {
            node: config.node_id(),
            url: postgres_url.to_string(),
            round: Duration::from_millis(config.lease_round_ms),
            timeout: Duration::from_millis(config.lease_timeout_ms),
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
            grace_logged: false,
            no_idle_timeout_logged: false,
            unreadable_logged: false,
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
            let had_session = self.client.as_ref().is_some_and(|c| !c.is_closed());
            let mut outcome = self.timed_round(&pipeline).await;
            if outcome.is_err() && had_session {
                // The session broke under this round (ended by the other nodes after this
                // one was frozen, or by a PostgreSQL restart): reconnect at once, so
                // cameras another node took meanwhile stop here within this round.
                self.client = None;
                outcome = self.timed_round(&pipeline).await;
            }
            match outcome {
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

    /// One round, bounded by the lease timeout: a PostgreSQL that stops answering without
    /// closing the connection (a silent partition) fails the round instead of hanging it.
    async fn timed_round(&mut self, pipeline: &Arc<Pipeline>) -> Result<(), String> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.round(pipeline)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.client = None;
                Err(format!(
                    "no answer from PostgreSQL within {} ms",
                    timeout.as_millis()
                ))
            }
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| format!("{e}"))?;
        config.application_name(format!("{APP_PREFIX}{}", self.node));
        crate::pg::harden_async(&mut config);
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
        // The server ends this session by itself once it has been silent past the lease
        // timeout (frozen process, stalled VM): no other node needs the right to read its
        // idle time or to end it, so nodes may connect as different roles. Every round
        // runs queries, so a live node is never idle that long.
        if let Err(e) = client
            .batch_execute(&format!(
                "SET idle_session_timeout = {}",
                self.timeout.as_millis()
            ))
            .await
        {
            if !self.no_idle_timeout_logged {
                self.no_idle_timeout_logged = true;
                tracing::warn!(
                    error = %e,
                    "camera leases: PostgreSQL cannot end a silent lease session by itself \
                     (idle_session_timeout needs PostgreSQL 14); a frozen node is found only \
                     by the other nodes, which need to read and end its session (same role, \
                     or pg_read_all_stats and pg_signal_backend)"
                );
            }
        }
        // a new session holds no leases
        self.held.clear();
        self.client = Some(client);
        Ok(())
    }

    fn client(&self) -> Result<&tokio_postgres::Client, String> {
        self.client.as_ref().ok_or_else(|| "not connected".into())
    }

    async fn try_lock(&self, key: i32) -> Result<bool, String> {
        Ok(self
            .client()?
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&CAMERA_CLASS, &key],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0))
    }

    /// Run `work` (stopping a camera can take seconds) while keeping this node's session
    /// from looking silent to the others.
    async fn beating<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let Some(client) = self.client.as_ref() else {
            return work.await;
        };
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(self.round) => {
                    let _ = client.simple_query("SELECT 1").await;
                }
            }
        }
    }

    /// Stop camera `id` here. The stop runs as a task of its own, so a round cut short by
    /// the lease timeout never leaves a camera half stopped.
    async fn stop_camera(&self, pipeline: &Arc<Pipeline>, id: &str) {
        let (pipeline, id) = (pipeline.clone(), id.to_string());
        let _ = self
            .beating(actix_web::rt::spawn(async move {
                pipeline.stop_camera(&id).await
            }))
            .await;
    }

    async fn view(&self) -> Result<View, String> {
        let rows = self
            .client()?
            .query(
                "SELECT l.classid::int8, l.objid::int8, a.application_name, l.pid,
                        EXTRACT(EPOCH FROM now() - COALESCE(a.state_change, a.backend_start))::float8
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
            silent: Vec::new(),
            unreadable: 0,
        };
        let timeout = self.timeout.as_secs_f64();
        let mut silent_nodes = HashSet::new();
        // Every column read as nullable: PostgreSQL shows the times of another role's
        // session as NULL to a reader without pg_read_all_stats (and a backend can be
        // gone between the join's two sides). A row that cannot be read is skipped, never
        // a panic of the lease task.
        let mut rows: Vec<(i64, i64, String, i32, Option<f64>)> = rows
            .iter()
            .filter_map(|r| {
                let app: Option<String> = r.try_get(2).ok()?;
                let node = app?.strip_prefix(APP_PREFIX)?.to_string();
                Some((
                    r.try_get::<_, Option<i64>>(0).ok()??,
                    r.try_get::<_, Option<i64>>(1).ok()??,
                    node,
                    r.try_get::<_, Option<i32>>(3).ok()??,
                    r.try_get::<_, Option<f64>>(4).ok()?,
                ))
            })
            .collect();
        for (class, _, node, pid, quiet) in &rows {
            // An unknown idle time (another role's session) is not silence: that node is
            // counted live. Its session still ends when it goes silent, by the server
            // itself (idle_session_timeout, set by every node on its own lease session).
            let Some(quiet) = *quiet else {
                if *class == i64::from(NODE_CLASS) && *node != self.node {
                    view.unreadable += 1;
                }
                continue;
            };
            if *class == i64::from(NODE_CLASS) && *node != self.node && quiet > timeout {
                silent_nodes.insert(node.clone());
                view.silent.push((node.clone(), *pid, quiet));
            }
        }
        // a silent node counts neither as live nor as holding its cameras
        rows.retain(|(_, _, node, _, _)| !silent_nodes.contains(node));
        for (class, key, node, _, _) in rows {
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

    /// End the sessions of nodes silent past the lease timeout, releasing their leases.
    async fn end_silent(&self, silent: &[(String, i32, f64)]) -> Result<(), String> {
        for (node, pid, quiet) in silent {
            // a role without the right to end another's session gets an error here:
            // reported, and the round goes on
            match self
                .client()?
                .query_one("SELECT pg_terminate_backend($1)", &[pid])
                .await
            {
                Ok(_) => tracing::warn!(
                    node = %node,
                    silent_s = format!("{quiet:.1}"),
                    "camera leases: node silent past cluster.lease_timeout_ms (frozen, \
                     powered off or cut off); its session is ended and its cameras go to \
                     the live nodes"
                ),
                Err(e) => tracing::error!(
                    node = %node,
                    error = %e,
                    "camera leases: cannot end a silent node's session (a role without \
                     pg_signal_backend); PostgreSQL ends it itself (idle_session_timeout)"
                ),
            }
        }
        Ok(())
    }

    /// Seconds since the PostgreSQL server started.
    async fn server_uptime(&self) -> Result<f64, String> {
        Ok(self
            .client()?
            .query_one(
                "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())::float8",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0))
    }

    async fn round(&mut self, pipeline: &Arc<Pipeline>) -> Result<(), String> {
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
                self.stop_camera(pipeline, &id).await;
            }
        }
        let view = self.view().await?;
        if view.unreadable > 0 && !self.unreadable_logged {
            self.unreadable_logged = true;
            tracing::info!(
                nodes = view.unreadable,
                "camera leases: other nodes connect as roles whose session times this role \
                 cannot read; they count as live, and PostgreSQL ends a silent one's session \
                 itself (idle_session_timeout)"
            );
        }
        self.end_silent(&view.silent).await?;
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
            self.stop_camera(pipeline, &id).await;
            let key = camera_key(&id);
            self.client()?
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
        if !free.is_empty() && self.held.len() < take {
            // Just after a PostgreSQL restart every lease looks free: wait until each node
            // has had the time to take back its own before taking anyone else's.
            let uptime = self.server_uptime().await?;
            if uptime < self.timeout.as_secs_f64() {
                if !self.grace_logged {
                    self.grace_logged = true;
                    tracing::info!(
                        uptime_s = format!("{uptime:.1}"),
                        grace_ms = self.timeout.as_millis() as u64,
                        "camera leases: PostgreSQL started recently; taking only the cameras \
                         running here until the grace period is over"
                    );
                }
                free.clear();
            } else {
                self.grace_logged = false;
            }
        }
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
    fn long_host_names_give_distinct_valid_node_ids() {
        // two pods of a StatefulSet whose names share their first 40 characters
        let a = "facestream-recognition-production-eu-west-1-0";
        let b = "facestream-recognition-production-eu-west-1-1";
        let (ia, ib) = (node_id_from_host(a), node_id_from_host(b));
        assert_ne!(ia, ib, "{ia}");
        for id in [&ia, &ib] {
            assert!(id.len() <= MAX_NODE_ID, "{id}");
            assert!(id.starts_with("facestream-recognition-product"), "{id}");
            let mut problems = Vec::new();
            ClusterConfig {
                node_id: id.to_string(),
                ..ClusterConfig::default()
            }
            .validate(false, &[], &mut problems);
            assert!(problems.is_empty(), "{problems:?}");
        }
        // names that differ only in characters an id cannot hold
        assert_ne!(node_id_from_host("cam+1"), node_id_from_host("cam*1"));
        // a short valid name is kept as it is
        assert_eq!(node_id_from_host("node-a.site"), "node-a.site");
        assert_eq!(node_id_from_host(""), "facestream");
    }

    #[test]
    fn a_lease_timeout_shorter_than_three_rounds_is_refused() {
        let mut problems = Vec::new();
        ClusterConfig {
            lease_round_ms: 5_000,
            lease_timeout_ms: 10_000,
            ..ClusterConfig::default()
        }
        .validate(false, &[], &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("cluster.lease_timeout_ms"),
            "{problems:?}"
        );
    }

    #[test]
    fn camera_keys_are_stable() {
        // FNV-1a 32: the same on every machine and build
        assert_eq!(camera_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(camera_key("a"), 0xe40c_292c_u32 as i32);
        assert_ne!(camera_key("door"), camera_key("gate"));
    }
}
