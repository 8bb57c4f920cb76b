//! Several `facestream serve` nodes on one gallery of record in PostgreSQL (Debian's
//! `postgresql`, a throw-away server started here): an enrolment on one node becomes
//! searchable on the others and an erasure on any node is gone everywhere; a node started
//! later catches up; with PostgreSQL down, recognition goes on from each node's index and
//! enrolment is answered 503 with the reason, and once it is back the nodes follow the
//! changes they missed.
//!
//! With camera leases, the cameras declared in the one configuration every node loads are
//! shared among the live nodes, each watched by exactly one; SIGKILL of the node watching
//! a camera hands it to another node, identity events resume, and each reaches NATS
//! JetStream once per id, also across a restart of the NATS server.

mod common;

use common::postgres::Postgres;
use common::Proc;
use facestream::engine::FaceEngine;
use facestream::gallery::postgres::PostgresStore;
use facestream::gallery::service::GalleryService;
use facestream::gallery::{GalleryError, GalleryStore, NewIdentity, Template};
use facestream::simulate;
use std::sync::Arc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN: &str = "cluster-admin-key-0123456789";

struct Node {
    proc: Proc,
    base: String,
    http: Client,
}

/// A node's config on the PostgreSQL at `url` (a role of its own, say).
fn node_config_at(dir: &Path, name: &str, url: &str, extra: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gallery]
store = "postgres"
postgres_url = "{url}"
[api]
listen = "127.0.0.1:0"
generated_key_file = "{d}/unused.key"
keys = [{{ name = "ops", key = "{ADMIN}", scope = "admin" }}]
[demo]
mode = "off"
[events]
outbox = "{d}/outbox.db"
{extra}"#,
            d = home.display()
        ),
    )
    .unwrap();
    config
}

fn start_node(dir: &Path, name: &str, pg: &Postgres) -> Node {
    start_node_with(dir, name, pg, "")
}

fn start_node_with(dir: &Path, name: &str, pg: &Postgres, extra: &str) -> Node {
    start_node_at(dir, name, &pg.url(), extra)
}

/// A node on the PostgreSQL at `url` (a role of its own, say).
fn start_node_at(dir: &Path, name: &str, url: &str, extra: &str) -> Node {
    let config = node_config_at(dir, name, url, extra);
    let (proc, port) = common::serve(&config, &dir.join(name));
    Node {
        proc,
        base: format!("http://127.0.0.1:{port}/v1"),
        // An idle pooled connection is dropped here (2 s) before the server drops it
        // (actix's keep-alive, 5 s). Otherwise a node resumed from SIGSTOP closes the
        // connection the test kept from before the freeze just as the test's next request
        // goes out on it (IncompleteMessage: CI saw it once).
        http: Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    }
}

/// The value of the metric line that starts with `name` (labels included), if any.
fn metric(n: &Node, name: &str) -> Option<f64> {
    let text = n
        .http
        .get(n.base.replace("/v1", "/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// A process's resident memory, in KiB.
fn rss_kib(proc: &Proc) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", proc.0.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(common::fixture(name)).unwrap()
}

impl Node {
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            if b.first() == Some(&b'{') {
                req = req.header("content-type", "application/json");
            }
            req = req.body(b);
        }
        let r = req.send().unwrap();
        let status = r.status();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn create(&self, name: &str) -> String {
        let (s, v) = self.call(
            "POST",
            "/identities",
            Some(serde_json::to_vec(&serde_json::json!({ "name": name })).unwrap()),
        );
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    fn enrol(&self, id: &str, file: &str) {
        let (s, v) = self.call(
            "POST",
            &format!("/identities/{id}/faces?source={file}"),
            Some(photo(file)),
        );
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// The decision for the first face of `file`: (outcome, identity, name).
    fn search(&self, file: &str) -> (String, Option<String>, Option<String>) {
        let (s, v) = self.call("POST", "/search", Some(photo(file)));
        assert_eq!(s, StatusCode::OK, "{v}");
        let face = &v["faces"][0];
        (
            face["decision"]["outcome"].as_str().unwrap().to_string(),
            face["decision"]["identity"].as_str().map(str::to_string),
            face["candidates"][0]["name"].as_str().map(str::to_string),
        )
    }

    /// Wait until searching `file` gives `outcome` (and `identity` when a match).
    fn wait_search(&self, file: &str, outcome: &str, identity: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.search(file);
            if got.0 == outcome && got.1.as_deref() == identity {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: searching {file} still gives {got:?}, expected {outcome} {identity:?}",
                self.base
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn nodes_share_one_gallery_of_record_in_postgres() {
    let dir = common::temp_dir("cluster-gallery");
    let mut pg = Postgres::start(&dir);
    let a = start_node(&dir, "a", &pg);
    let b = start_node(&dir, "b", &pg);

    // Enrolled on A: searchable on B, under its name.
    let obama = a.create("Barack Obama");
    a.enrol(&obama, "obama.jpg");
    b.wait_search("obama2.jpg", "match", Some(&obama));
    assert_eq!(b.search("obama2.jpg").2.as_deref(), Some("Barack Obama"));
    // Renamed on B: A's results carry the new name.
    let (s, v) = b.call(
        "PATCH",
        &format!("/identities/{obama}"),
        Some(serde_json::to_vec(&serde_json::json!({ "name": "Barack H. Obama" })).unwrap()),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.search("obama2.jpg").2.as_deref() != Some("Barack H. Obama") {
        assert!(Instant::now() < deadline, "the new name never reached A");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Erased on B: unknown on A, and its faces are gone from the store.
    let (s, v) = b.call("DELETE", &format!("/identities/{obama}"), None);
    assert_eq!(s, StatusCode::OK, "{v}");
    a.wait_search("obama2.jpg", "unknown", None);
    assert_eq!(
        a.call("GET", &format!("/identities/{obama}/faces"), None).0,
        StatusCode::NOT_FOUND
    );

    // Enrolled while C is not running: C starts with it.
    let biden = a.create("Joe Biden");
    a.enrol(&biden, "biden.jpg");
    let c = start_node(&dir, "c", &pg);
    assert_eq!(
        c.search("biden.jpg").1.as_deref(),
        Some(biden.as_str()),
        "a node started later holds the enrolments made before it"
    );
    c.wait_search("obama2.jpg", "unknown", None);

    // PostgreSQL down: recognition goes on from each node's index; enrolment is refused
    // with 503 and the reason.
    pg.stop();
    for node in [&a, &b, &c] {
        assert_eq!(node.search("biden.jpg").1.as_deref(), Some(biden.as_str()));
    }
    let (s, v) = a.call(
        "POST",
        "/identities",
        Some(serde_json::to_vec(&serde_json::json!({ "name": "Tom Hanks" })).unwrap()),
    );
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("PostgreSQL") && message.contains("recognition goes on"),
        "{v}"
    );

    // Back: the first request succeeds, and changes made now reach every node, also those
    // whose connections were cut.
    pg.resume();
    let obama = b.create("Barack Obama");
    b.enrol(&obama, "obama.jpg");
    let (s, v) = c.call("DELETE", &format!("/identities/{biden}"), None);
    assert_eq!(s, StatusCode::OK, "{v}");
    for node in [&a, &b, &c] {
        node.wait_search("obama2.jpg", "match", Some(&obama));
        node.wait_search("biden.jpg", "unknown", None);
    }
}

/// The appearance history shared through PostgreSQL: a person nobody enrolled walks past
/// node b's camera; node c, which watches no camera, finds that appearance by photo; node
/// a's enrolment of the person reports it as seen before; a deletion made on a is gone from
/// c's searches; and the search audit, kept in the database, names each node.
#[test]
fn an_appearance_recorded_on_one_node_is_found_from_another() {
    let dir = common::temp_dir("cluster-history");
    let mut pg = Postgres::start(&dir);
    let photos = simulate::load_photos(&[common::fixture("obama2.jpg")]);
    // 5 s between passes: more than track.rejoin_within_ms, so each pass is an appearance
    let scene = simulate::Scene::parade((960, 540, 10), &photos, 360, (3.0, 5.0), 1);
    let clip = Arc::new(simulate::encode_h264(&scene).unwrap());
    let camera = simulate::RtspServer::start("127.0.0.1", 0, vec![("door".into(), clip)]).unwrap();
    let node = |name: &str, cameras: &str| {
        start_node_with(
            &dir,
            name,
            &pg,
            &format!(
                "[cluster]\nnode_id = \"{name}\"\n[history]\nenabled = true\n\
                 [pipeline]\nframe_queue = 300\n{cameras}"
            ),
        )
    };
    let a = node("a", "");
    let b = node(
        "b",
        &format!(
            "[[cameras]]\nid = \"door\"\nurl = \"{}\"\n",
            camera.url("door")
        ),
    );
    let c = node("c", "");
    // c finds, by a photo the camera never showed, what b recorded
    let found_on = |n: &Node| -> Vec<Value> {
        let (s, v) = n.call("POST", "/search/faces", Some(photo("obama3.jpg")));
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"].as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let items = found_on(&c);
        if !items.is_empty() {
            break items;
        }
        assert!(
            Instant::now() < deadline,
            "node c never found the appearance node b recorded"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for a in &seen {
        assert_eq!(
            (a["node"].as_str(), a["camera"].as_str()),
            (Some("b"), Some("door")),
            "{a}"
        );
        assert_eq!(a["decision"], "unknown", "{a}");
    }
    let track = seen[0]["track_id"].as_str().unwrap().to_string();
    // c also serves the appearance's best shot, read from the shared database
    let shot = c
        .http
        .get(format!("{}/search/appearances/{track}/shot", c.base))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(shot.status(), StatusCode::OK);
    assert!(image::load_from_memory(&shot.bytes().unwrap()).is_ok());
    // enrolled on a: the response names b's appearance as seen before — once a has it
    // too (each node follows the shared history on its own, about once a second)
    let deadline = Instant::now() + Duration::from_secs(30);
    while !found_on(&a).iter().any(|x| x["track_id"] == track.as_str()) {
        assert!(
            Instant::now() < deadline,
            "node a never got the appearance node b recorded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = a.create("Obama");
    let (s, enrolled) = a.call(
        "POST",
        &format!("/identities/{id}/faces"),
        Some(photo("obama.jpg")),
    );
    assert_eq!(s, StatusCode::CREATED, "{enrolled}");
    assert!(
        enrolled["seen_before"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["track_id"] == track.as_str() && x["node"] == "b"),
        "{enrolled}"
    );
    // deleted on a: gone from c's searches (b's camera goes on recording new ones)
    let (s, v) = a.call(
        "DELETE",
        &format!("/search/appearances?track_id={track}"),
        None,
    );
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while found_on(&c).iter().any(|x| x["track_id"] == track.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the appearance deleted on a is still found on c"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (s, missing) = c.call(
        "DELETE",
        &format!("/search/appearances?track_id={track}"),
        None,
    );
    assert_eq!(s, StatusCode::NOT_FOUND, "{missing}");
    // one audit for the cluster, each entry naming the node that served it
    let (s, audit) = b.call("GET", "/search/audit?limit=1000", None);
    assert_eq!(s, StatusCode::OK, "{audit}");
    let entries: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["node"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert!(entries.contains(&("c", "photo")), "{audit}");
    assert!(entries.contains(&("a", "delete")), "{audit}");
    // PostgreSQL down: what b's camera decides meanwhile waits on b, and is written once
    // the database is back, on b's timer: the camera is gone by then and no new track
    // comes to flush it (before, only the next appearance did, so this one never came)
    let history_errors = |n: &Node| metric(n, "facestream_history_errors_total ").unwrap_or(0.0);
    pg.stop();
    let down_at = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while history_errors(&b) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no appearance was decided while PostgreSQL was down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(camera);
    wait_until("b's tracks ended with its camera gone", || {
        metric(&b, "facestream_tracks_active{camera=\"door\"} ").unwrap_or(0.0) == 0.0
    });
    assert!(
        metric(&b, "facestream_history_backlog ").unwrap_or(0.0) > 0.0,
        "the appearances decided while PostgreSQL was down wait in b's backlog"
    );
    pg.resume();
    let up_at = chrono::Utc::now();
    let time = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, v) = c.call(
            "POST",
            "/search/faces?limit=1000",
            Some(photo("obama3.jpg")),
        );
        let during = v["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|x| time(&x["last_seen"]) >= down_at && time(&x["last_seen"]) <= up_at)
        });
        if s == StatusCode::OK && during {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the appearance decided while PostgreSQL was down never reached c: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop((a, b, c));
}

/// A node that is down while a person is erased learns of it before it serves again: the
/// erasure is in a durable log in PostgreSQL that every node replays from where it left
/// off. Node b recognised the person (its outbox holds the events, its receiver being
/// down; the shared history the appearances); b is killed; the person is erased on a with
/// the appearances; b starts again: nothing it holds or finds names the person. Before,
/// b learned of erasures only through the change feed while it ran, and kept their
/// events naming them.
#[test]
fn a_node_down_during_an_erasure_applies_it_before_it_serves() {
    let dir = common::temp_dir("cluster-erasure-log");
    let pg = Postgres::start(&dir);
    let rtsp = door_and_gate();
    let hook = common::ReservedPort::new();
    let node = |name: &str, cameras: &str| {
        start_node_with(
            &dir,
            name,
            &pg,
            &format!(
                "[[events.webhooks]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
                 secret = \"{secret}\"\n[cluster]\nnode_id = \"{name}\"\n[history]\nenabled = true\n\
                 {cameras}",
                port = hook.port,
                secret = common::receiver::SECRET,
            ),
        )
    };
    let a = node("a", "");
    let obama = a.create("Barack Obama");
    a.enrol(&obama, "obama.jpg");
    let b = node(
        "b",
        &format!(
            "[[cameras]]\nid = \"door\"\nurl = \"{}\"\n",
            rtsp.url("door")
        ),
    );
    let naming = |node: &str| -> usize {
        outbox(&dir, node)
            .query_row(
                "SELECT count(*) FROM outbox WHERE instr(payload, ?1) > 0",
                [&obama],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as usize
    };
    let recognised_on = |n: &Node| -> usize {
        let (s, v) = n.call(
            "POST",
            "/search/faces?limit=1000",
            Some(photo("obama2.jpg")),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["identity"]["id"] == obama.as_str())
            .count()
    };
    wait_until("b recorded and reported the person", || {
        naming("b") > 0 && recognised_on(&a) > 0
    });
    drop(b); // SIGKILL
    let (s, v) = a.call(
        "DELETE",
        &format!("/identities/{obama}?appearances=erase"),
        None,
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["removed_appearances"].as_u64().unwrap() > 0, "{v}");

    // back without its camera (nothing new of the person to record)
    let b = node("b", "");
    assert_eq!(naming("b"), 0, "b's outbox still names the erased person");
    let (s, v) = b.call(
        "POST",
        "/search/faces?limit=1000",
        Some(photo("obama2.jpg")),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["items"],
        serde_json::json!([]),
        "b still finds the person"
    );
    assert_eq!(b.search("obama2.jpg").0, "unknown");
    let log = std::fs::read_to_string(dir.join("b").join("serve.log")).unwrap();
    assert!(
        log.contains("erasures made while this node was down applied before serving"),
        "{log}"
    );
    drop((a, b));
}

/// A node builds its appearance index from PostgreSQL in keyset pages, each one statement
/// within the statement timeout (one statement for every row failed start-up at a few
/// million appearances). Small pages here: every row is loaded exactly once across page
/// boundaries, also rows that share a first-seen time, and a search finds them all.
#[test]
fn the_appearance_index_loads_in_pages_and_misses_no_row() {
    use facestream::history::{Appearance, History, HistoryConfig, Order, PgHistory, Query};
    let dir = common::temp_dir("cluster-history-pages");
    let pg = Postgres::start(&dir);
    let writer = PgHistory::open(&pg.url()).unwrap();
    let model = "sface@2021dec";
    let template = common::synthetic_template(uuid::Uuid::now_v7(), model, 1).embedding;
    let base = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    let history = History::with_store(
        Box::new(writer),
        &HistoryConfig::default(),
        model,
        template.len(),
        "w",
    )
    .unwrap();
    for i in 0..25i64 {
        // three rows to each first-seen time: ties cross page boundaries
        let first = base + chrono::TimeDelta::seconds(i / 3);
        history
            .record(&Appearance {
                track_id: uuid::Uuid::now_v7(),
                camera: "door".into(),
                node: "w".into(),
                first_seen: first,
                last_seen: first + chrono::TimeDelta::seconds(2),
                model: model.into(),
                template: template.clone(),
                quality: 0.8,
                event_id: None,
                identity: None,
                similarity: None,
                shot: None,
                spans: Vec::new(),
            })
            .unwrap();
    }
    for page in [1, 7, 25, 1000] {
        let store = PgHistory::open(&pg.url()).unwrap().with_load_page(page);
        let loaded = History::with_store(
            Box::new(store),
            &HistoryConfig::default(),
            model,
            template.len(),
            "r",
        )
        .unwrap();
        assert_eq!(loaded.len(), 25, "pages of {page}");
        let found = loaded
            .search(
                &template,
                &Query {
                    camera: None,
                    from: None,
                    to: None,
                    min_similarity: 0.9,
                    limit: 100,
                    order: Order::Newest,
                    only_unknown: false,
                },
            )
            .unwrap();
        let mut tracks: Vec<_> = found
            .items
            .iter()
            .map(|f| f.stored.appearance.track_id)
            .collect();
        tracks.sort();
        tracks.dedup();
        assert_eq!(tracks.len(), 25, "pages of {page}: each row once");
    }
}

/// A database restart quicker than a second (PostgreSQL without fsync restarts in well
/// under one) between two calls: the connection the first call left looks open to the
/// synchronous driver, and the second call must still succeed, on a new connection.
#[test]
fn the_first_call_after_a_quick_postgres_restart_succeeds() {
    let dir = common::temp_dir("cluster-quick-restart");
    let mut pg = Postgres::start(&dir);
    let store = PostgresStore::open(&pg.url()).unwrap();
    for round in 0..3 {
        store.list_identities(0, 1).unwrap();
        let t = Instant::now();
        pg.stop();
        pg.resume();
        let restart = t.elapsed();
        if let Err(e) = store.list_identities(0, 1) {
            panic!("round {round}: the first call {restart:?} after the last one, across a restart, failed: {e}");
        }
    }
}

/// A silent partition between a node and PostgreSQL (its packets dropped: the connection
/// stays open and nothing answers) is answered within seconds: enrolment, listing and
/// readiness say 503 with the reason instead of hanging for the kernel's ~15 minutes of
/// retransmissions, recognition goes on, and once the network heals writes work again.
#[test]
fn a_silent_partition_from_postgres_is_answered_503_not_hung() {
    let dir = common::temp_dir("cluster-partition");
    let pg = Postgres::start(&dir);
    let a = start_node(&dir, "a", &pg);
    let obama = a.create("Barack Obama");
    a.enrol(&obama, "obama.jpg");
    // the watcher and the API have connections open and in use
    a.wait_search("obama2.jpg", "match", Some(&obama));

    let cut = common::partition::Partition::drop_port(pg.port);
    let started = Instant::now();
    let body = serde_json::to_vec(&serde_json::json!({ "name": "Tom Hanks" })).unwrap();
    for (method, path, body) in [
        ("POST", "/identities", Some(body.clone())),
        ("GET", "/identities", None),
        ("GET", "/ready", None),
    ] {
        let asked = Instant::now();
        let (s, v) = a.call(method, path, body);
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("PostgreSQL") || message.contains("gallery"),
            "{method} {path}: {v}"
        );
        eprintln!(
            "{method} {path}: 503 after {:.1} s of partition",
            asked.elapsed().as_secs_f32()
        );
    }
    eprintln!(
        "three requests answered within {:.1} s",
        started.elapsed().as_secs_f32()
    );
    // recognition goes on from this node's index
    assert_eq!(a.search("obama2.jpg").1.as_deref(), Some(obama.as_str()));

    drop(cut);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, v) = a.call("POST", "/identities", Some(body.clone()));
        if s == StatusCode::CREATED {
            break;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(
            Instant::now() < deadline,
            "enrolment never worked again: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A 60-s silent partition between a node and PostgreSQL with its camera running (the
/// database's packets dropped: each write waits out the connection's timeout): what the
/// camera decides meanwhile waits in memory, never more than `history.backlog` (2 here,
/// so the bound is reached), past that the oldest is dropped and counted; the node's
/// memory stays flat; and once the network heals, what waited is written, with no new
/// track needed. Before, the backlog grew without a bound and was written only when the
/// next track arrived.
#[test]
fn a_partition_from_postgres_keeps_a_bounded_backlog_written_when_it_heals() {
    let dir = common::temp_dir("cluster-history-partition");
    let pg = Postgres::start(&dir);
    let photos = simulate::load_photos(&[common::fixture("obama2.jpg")]);
    // 5 s between passes: more than track.rejoin_within_ms, so each pass is an appearance
    let scene = simulate::Scene::parade((960, 540, 10), &photos, 360, (3.0, 5.0), 1);
    let clip = Arc::new(simulate::encode_h264(&scene).unwrap());
    let camera = simulate::RtspServer::start("127.0.0.1", 0, vec![("door".into(), clip)]).unwrap();
    let a = start_node_with(
        &dir,
        "a",
        &pg,
        &format!(
            "[history]\nenabled = true\nbacklog = 2\n[pipeline]\nframe_queue = 300\n\
             [[cameras]]\nid = \"door\"\nurl = \"{}\"\n",
            camera.url("door")
        ),
    );
    let mut db = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    let mut written_between = |from: i64, to: i64| -> i64 {
        db.query_one(
            "SELECT count(*) FROM appearances WHERE first_seen_ms >= $1 AND last_seen_ms <= $2",
            &[&from, &to],
        )
        .unwrap()
        .get(0)
    };
    // the camera's tracks reach the database before the cut
    let since = chrono::Utc::now().timestamp_millis();
    wait_until("an appearance written before the partition", || {
        written_between(since, i64::MAX) > 0
    });
    let rss_before = rss_kib(&a.proc);
    let dropped = |n: &Node| metric(n, "facestream_history_dropped_total ").unwrap_or(0.0);
    let dropped_before = dropped(&a);

    let cut = common::partition::Partition::drop_port(pg.port);
    let cut_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let (mut most_waiting, mut rss_most) = (0.0f64, rss_before);
    // at least 60 s, and until the bound was reached (the camera's tracks come at its
    // pace, not the test's)
    while started.elapsed() < Duration::from_secs(60) || dropped(&a) == dropped_before {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no appearance dropped past a backlog of 2 in 300 s of partition"
        );
        let waiting = metric(&a, "facestream_history_backlog ").unwrap_or(0.0);
        assert!(
            waiting <= 2.0,
            "backlog of {waiting} past history.backlog = 2"
        );
        most_waiting = most_waiting.max(waiting);
        rss_most = rss_most.max(rss_kib(&a.proc));
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "partition of {:.0} s: at most {most_waiting} waiting, {} dropped, RSS {} MiB before, {} MiB at most",
        started.elapsed().as_secs_f32(),
        dropped(&a) - dropped_before,
        rss_before / 1024,
        rss_most / 1024
    );
    assert!(most_waiting > 0.0, "nothing waited in the backlog");
    // the pipeline's own bounded frame queue (300 decoded 960x540 frames, ~230 MiB) may
    // fill on a slower machine whatever the database does: allowed for, so the bound
    // checked is the history's, not the machine's speed
    let frame_queue_kib = 300 * 960 * 540 * 3 / 2 / 1024;
    assert!(
        rss_most < rss_before + frame_queue_kib + 256 * 1024,
        "the node grew from {} MiB to {} MiB during the partition",
        rss_before / 1024,
        rss_most / 1024
    );
    // the camera goes, then the network heals: what waited is written without a new track
    drop(camera);
    wait_until("a's tracks ended with its camera gone", || {
        metric(&a, "facestream_tracks_active{camera=\"door\"} ").unwrap_or(0.0) == 0.0
    });
    let heal_ms = chrono::Utc::now().timestamp_millis();
    drop(cut);
    wait_until("the backlog written after the partition healed", || {
        metric(&a, "facestream_history_backlog ").unwrap_or(1.0) == 0.0
            && written_between(cut_ms, heal_ms) > 0
    });
    let log = std::fs::read_to_string(dir.join("a").join("serve.log")).unwrap();
    assert!(
        log.contains("history backlog full: the oldest waiting appearance is dropped"),
        "{log}"
    );
}

/// The store used from inside an async runtime (as the Home Assistant announcer reads the
/// identities) while PostgreSQL goes away and comes back: the calls fail and then succeed,
/// and dropping the broken connection never panics the runtime's thread.
#[test]
fn the_store_survives_a_lost_connection_inside_an_async_runtime() {
    let dir = common::temp_dir("cluster-async-drop");
    let mut pg = Postgres::start(&dir);
    let store = Arc::new(PostgresStore::open(&pg.url()).unwrap());
    store
        .create_identity(NewIdentity {
            name: "Barack Obama".into(),
            metadata: None,
        })
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let list = |store: &Arc<PostgresStore>| {
        let store = store.clone();
        rt.block_on(async move {
            // on a runtime thread, like an async task
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                store.list_identities(0, 10).map(|(ids, _)| ids.len())
            }))
        })
        .unwrap_or_else(|_| panic!("a gallery call panicked inside the async runtime"))
    };
    assert_eq!(list(&store).unwrap(), 1);
    pg.stop();
    assert!(matches!(list(&store), Err(GalleryError::Unavailable(_))));
    pg.resume();
    assert_eq!(list(&store).unwrap(), 1);
    // and the store itself is dropped on a runtime thread
    rt.block_on(async move { drop(store) });
}

/// Camera id → the node each node's `GET /v1/cameras` says watches it, with the state.
type CameraView = Vec<(String, Option<String>, String)>;

fn live(nodes: &[Option<Node>]) -> Vec<&Node> {
    nodes.iter().flatten().collect()
}

fn watchers(node: &Node) -> (String, CameraView) {
    let (s, v) = node.call("GET", "/cameras", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut cameras: CameraView = v["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["node"].as_str().map(str::to_string),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    cameras.sort();
    (v["node"].as_str().unwrap().to_string(), cameras)
}

/// Wait until every node in `nodes` sees the cameras watched as `expect` accepts
/// ((camera, node) sorted by camera), each watching node reporting its camera live and
/// the others standing by.
fn wait_watchers(nodes: &[&Node], expect: impl Fn(&[(String, Option<String>)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let views: Vec<_> = nodes.iter().map(|n| watchers(n)).collect();
        let agreed = views.iter().all(|(me, cameras)| {
            let pairs: Vec<(String, Option<String>)> = cameras
                .iter()
                .map(|(c, n, _)| (c.clone(), n.clone()))
                .collect();
            expect(&pairs)
                && cameras.iter().all(|(_, n, state)| {
                    if n.as_deref() == Some(me.as_str()) {
                        state == "live"
                    } else {
                        state == "standby"
                    }
                })
        });
        if agreed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on the camera leases: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two simulated RTSP cameras, `door` and `gate`, past which Obama walks again and again.
fn door_and_gate() -> simulate::RtspServer {
    let photos = simulate::load_photos(&[common::fixture("obama.jpg")]);
    // 5 s between passes: more than track.rejoin_within_ms, so each pass is an appearance
    let scene = simulate::Scene::parade((960, 540, 10), &photos, 360, (3.0, 5.0), 1);
    let clip = std::sync::Arc::new(simulate::encode_h264(&scene).unwrap());
    simulate::RtspServer::start(
        "127.0.0.1",
        0,
        vec![("door".into(), clip.clone()), ("gate".into(), clip)],
    )
    .unwrap()
}

/// The recognitions stored in JetStream: (event id, camera, when).
type Recognition = (String, String, chrono::DateTime<chrono::Utc>);

fn recognitions(rt: &tokio::runtime::Runtime, port: u16) -> Vec<Recognition> {
    rt.block_on(common::nats::stored(port))
        .iter()
        .filter(|m| m.subject.ends_with(".identity.recognized"))
        .map(|m| {
            let e: Value = serde_json::from_slice(&m.payload).unwrap();
            (
                e["id"].as_str().unwrap().to_string(),
                e["camera_id"].as_str().unwrap().to_string(),
                e["occurred_at"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn cameras_are_shared_by_leases_and_taken_over_when_their_node_is_killed() {
    let dir = common::temp_dir("cluster-leases");
    let pg = Postgres::start(&dir);
    let (nats, nats_port) = common::nats::nats_server(&dir, None, "nats.log");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rtsp = door_and_gate();
    let extra = |node: &str| {
        format!(
            "[[events.nats]]\nname = \"bus\"\nurl = \"nats://127.0.0.1:{nats_port}\"\n\
             stream = \"FACESTREAM\"\n[cluster]\nnode_id = \"{node}\"\ncamera_leases = true\n\
             lease_round_ms = 500\n[[cameras]]\nid = \"door\"\nurl = \"{door}\"\n\
             [[cameras]]\nid = \"gate\"\nurl = \"{gate}\"\n",
            door = rtsp.url("door"),
            gate = rtsp.url("gate"),
        )
    };
    // Obama enrolled through the first node, before the others start
    let mut nodes = vec![Some(start_node_with(&dir, "a", &pg, &extra("a")))];
    let a = nodes[0].as_ref().unwrap();
    let obama = a.create("Barack Obama");
    a.enrol(&obama, "obama.jpg");
    nodes.push(Some(start_node_with(&dir, "b", &pg, &extra("b"))));
    nodes.push(Some(start_node_with(&dir, "c", &pg, &extra("c"))));

    // two cameras, three nodes: two nodes watch one camera each, the third stands by
    wait_watchers(&live(&nodes), |cams| {
        cams.len() == 2 && cams.iter().all(|(_, n)| n.is_some()) && cams[0].1 != cams[1].1
    });
    let (_, view) = watchers(nodes[0].as_ref().unwrap());
    let door_node = view[0].1.clone().unwrap();
    let gate_node = view[1].1.clone().unwrap();
    // a node reports camera_up only for the cameras it watches: a camera handed over (a
    // took both before b and c joined) leaves no `camera_up 0` behind to raise an alert
    for (name, node) in ["a", "b", "c"].iter().zip(&nodes) {
        let metrics = node
            .as_ref()
            .unwrap()
            .http
            .get(node.as_ref().unwrap().base.replace("/v1", "/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        for (camera, watcher) in [("door", &door_node), ("gate", &gate_node)] {
            let up = format!("facestream_camera_up{{camera=\"{camera}\"}} 1");
            let series = format!("facestream_camera_up{{camera=\"{camera}\"}}");
            if watcher == name {
                assert!(metrics.contains(&up), "{name} watches {camera}:\n{metrics}");
            } else {
                assert!(
                    !metrics.contains(&series),
                    "{name} does not watch {camera}:\n{metrics}"
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !recognitions(&rt, nats_port)
        .iter()
        .any(|(_, c, _)| c == "door")
    {
        assert!(Instant::now() < deadline, "no recognition from the door");
        std::thread::sleep(Duration::from_millis(300));
    }

    // SIGKILL the node watching the door: another node takes it over, and Obama is
    // recognised at the door again
    let victim = ["a", "b", "c"]
        .iter()
        .position(|n| *n == door_node)
        .unwrap();
    drop(nodes[victim].take());
    let killed_at = chrono::Utc::now();
    wait_watchers(&live(&nodes), |cams| {
        cams[0].1.as_deref().is_some_and(|n| n != door_node)
            && cams[1].1.as_deref() == Some(gate_node.as_str())
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !recognitions(&rt, nats_port)
        .iter()
        .any(|(_, c, t)| c == "door" && *t > killed_at)
    {
        assert!(
            Instant::now() < deadline,
            "no recognition from the door after its node was killed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // NATS killed while both cameras keep producing events, then started again on its
    // store: every event the live nodes wrote, also during the outage, reaches the stream
    // once
    let survivors: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != door_node)
        .collect();
    drop(nats);
    let down_ms = chrono::Utc::now().timestamp_millis();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !survivors.iter().any(|n| {
        outbox_ids(&dir, n, i64::MAX)
            .iter()
            .any(|(_, at)| *at > down_ms)
    }) {
        assert!(
            Instant::now() < deadline,
            "no event written while NATS was down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_nats, again) = common::nats::nats_server(&dir, Some(nats_port), "nats-2.log");
    assert_eq!(again, nats_port);
    let cutoff = chrono::Utc::now().timestamp_millis();
    let written: Vec<String> = survivors
        .iter()
        .flat_map(|n| outbox_ids(&dir, n, cutoff))
        .map(|(id, _)| id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored: std::collections::HashSet<String> =
            stream_ids(&rt, nats_port).into_iter().collect();
        let missing = written.iter().filter(|id| !stored.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events written by the live nodes never reached the stream",
            written.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // every event in the stream once
    let all = stream_ids(&rt, nats_port);
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "an event reached the stream twice"
    );
}

/// The ids of every event in the stream.
fn stream_ids(rt: &tokio::runtime::Runtime, port: u16) -> Vec<String> {
    rt.block_on(common::nats::stored(port))
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(&m.payload).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Node `node`'s outbox, read-only.
fn outbox(dir: &Path, node: &str) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join(node).join("outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// The events node `node` wrote for the `bus` endpoint before `before_ms`, with when.
fn outbox_ids(dir: &Path, node: &str, before_ms: i64) -> Vec<(String, i64)> {
    let db = outbox(dir, node);
    let mut stmt = db
        .prepare(
            "SELECT event_id, created_ms FROM outbox WHERE endpoint = 'bus' AND created_ms < ?1",
        )
        .unwrap();
    stmt.query_map([before_ms], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Two in-process followers of one PostgreSQL gallery, driven by hand.
fn follower(pg: &Postgres) -> GalleryService {
    let config = common::config();
    let store: Arc<dyn GalleryStore> = Arc::new(PostgresStore::open(&pg.url()).unwrap());
    GalleryService::new(
        store,
        FaceEngine::open(&config.engine()).unwrap(),
        config.matching.clone(),
        config.gallery.clone(),
        config.verify.threshold,
    )
    .unwrap()
}

fn synthetic(identity: uuid::Uuid, service: &GalleryService, seed: u32) -> Template {
    common::synthetic_template(identity, service.model(), seed)
}

#[test]
fn followers_apply_changes_in_order_and_rebuild_past_a_pruned_feed() {
    let dir = common::temp_dir("cluster-feed");
    let pg = Postgres::start(&dir);
    let writer = follower(&pg);
    let reader = follower(&pg);
    let new = |name: &str| NewIdentity {
        name: name.into(),
        metadata: None,
    };

    // Writers on four connections at once, then one catch-up: every template arrives.
    let ids: Vec<uuid::Uuid> = (0..4)
        .map(|i| {
            writer
                .store()
                .create_identity(new(&format!("w{i}")))
                .unwrap()
                .id
        })
        .collect();
    std::thread::scope(|s| {
        for (i, id) in ids.iter().enumerate() {
            let url = pg.url();
            let writer = &writer;
            s.spawn(move || {
                let store = PostgresStore::open(&url).unwrap();
                for n in 0..25 {
                    store
                        .add_template(&synthetic(*id, writer, (i * 100 + n) as u32))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(reader.templates(), 0);
    assert!(reader.refresh_if_changed().unwrap());
    assert_eq!(reader.templates(), 100);
    assert!(
        !reader.refresh_if_changed().unwrap(),
        "nothing new: no change"
    );

    // Own writes come back through the feed without doubling the index.
    writer
        .import_template(&synthetic(ids[0], &writer, 999))
        .unwrap();
    writer.refresh_if_changed().unwrap();
    assert_eq!(writer.templates(), 101);

    // An erasure and a face removal reach the reader; the erased identity's templates
    // do not come back from the adds before it.
    writer.delete_identity(ids[1]).unwrap();
    let faces = writer.store().list_templates(ids[2]).unwrap();
    writer.delete_face(ids[2], faces[0].id).unwrap();
    assert!(reader.refresh_if_changed().unwrap());
    assert_eq!(reader.templates(), 101 - 25 - 1);

    // The feed pruned past the reader's position: it rebuilds from a snapshot.
    let mut admin = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    admin
        .execute("UPDATE gallery_feed SET pruned_through = 1000000", &[])
        .unwrap();
    writer
        .import_template(&synthetic(ids[3], &writer, 1234))
        .unwrap();
    assert!(reader.refresh_if_changed().unwrap());
    assert_eq!(reader.templates(), 76);
    let versions: Vec<i32> = admin
        .query("SELECT version FROM facestream_migrations", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4], "each migration is applied once");
}

/// The events node `node` wrote for the `hook` endpoint at or after `since_ms`:
/// (type, camera). A `track.ended` of a track first seen before `since_ms` is left out: a
/// camera that moved to another node before then ends its tracks on the old node about
/// `track.lost_after_ms` after its last frame, whenever that falls, and that says nothing
/// about what happened after `since_ms`.
fn events_since(dir: &Path, node: &str, since_ms: i64) -> Vec<(String, String)> {
    let db = outbox(dir, node);
    let mut stmt = db
        .prepare(
            "SELECT event_type, payload FROM outbox WHERE endpoint = 'hook' AND created_ms >= ?1",
        )
        .unwrap();
    let rows: Vec<(String, Value)> = stmt
        .query_map([since_ms], |r| {
            let payload: String = r.get(1)?;
            Ok((r.get(0)?, serde_json::from_str(&payload).unwrap()))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.into_iter()
        .filter(|(kind, event)| {
            let began_before = event["first_seen"]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .is_some_and(|t| t.timestamp_millis() < since_ms);
            !(kind == "track.ended" && began_before)
        })
        .map(|(kind, event)| {
            let camera = event["camera_id"].as_str().unwrap_or_default().to_string();
            (kind, camera)
        })
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn leases_stay_put_across_a_postgres_restart_and_leave_a_frozen_node() {
    let dir = common::temp_dir("cluster-freeze");
    let mut pg = Postgres::start(&dir);
    let rtsp = door_and_gate();
    // events wait in each node's outbox (nothing listens on the hook's port): the test
    // reads who reported what from there
    let hook = common::ReservedPort::new();
    let extra = |node: &str| {
        format!(
            "[[events.webhooks]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n\
             secret = \"{secret}\"\n[cluster]\nnode_id = \"{node}\"\ncamera_leases = true\n\
             lease_round_ms = 500\nlease_timeout_ms = 6000\n[[cameras]]\nid = \"door\"\n\
             url = \"{door}\"\n[[cameras]]\nid = \"gate\"\nurl = \"{gate}\"\n",
            port = hook.port,
            secret = common::receiver::SECRET,
            door = rtsp.url("door"),
            gate = rtsp.url("gate"),
        )
    };
    let names = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start_node_with(&dir, name, &pg, &extra(name)));
        if name == "a" {
            let obama = nodes[0].create("Barack Obama");
            nodes[0].enrol(&obama, "obama.jpg");
        }
    }
    let all: Vec<&Node> = nodes.iter().collect();
    wait_watchers(&all, |cams| {
        cams.len() == 2 && cams.iter().all(|(_, n)| n.is_some()) && cams[0].1 != cams[1].1
    });
    let (_, view) = watchers(&nodes[0]);
    let door_node = view[0].1.clone().unwrap();
    let gate_node = view[1].1.clone().unwrap();
    let watcher_of = |camera: &str| {
        if camera == "door" {
            door_node.clone()
        } else {
            gate_node.clone()
        }
    };
    wait_until("a recognition at the door", || {
        events_since(&dir, &door_node, 0)
            .iter()
            .any(|(t, c)| t == "identity.recognized" && c == "door")
    });

    // PostgreSQL restarts: every session ends at once. Each node takes back the leases of
    // the cameras it runs; none takes another's in the grace period.
    let restart_ms = chrono::Utc::now().timestamp_millis();
    pg.stop();
    pg.resume();
    let mut admin = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    wait_until("three nodes reconnected and the grace period over", || {
        let row = admin
            .query_one(
                "SELECT (SELECT count(*) FROM pg_stat_activity
                         WHERE application_name LIKE 'facestream node=%'),
                        EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())::float8",
                &[],
            )
            .unwrap();
        row.get::<_, i64>(0) == 3 && row.get::<_, f64>(1) > 8.0
    });
    wait_watchers(&all, |cams| {
        cams[0].1.as_deref() == Some(door_node.as_str())
            && cams[1].1.as_deref() == Some(gate_node.as_str())
    });
    for name in names {
        for (kind, camera) in events_since(&dir, name, restart_ms) {
            assert!(
                !kind.starts_with("camera."),
                "node {name} reported {kind} for {camera} after the PostgreSQL restart: \
                 a camera changed node"
            );
            assert_eq!(
                watcher_of(&camera),
                name,
                "node {name} reported {kind} for {camera}, watched by {}",
                watcher_of(&camera)
            );
        }
    }

    // The door's node freezes (SIGSTOP: its socket stays open, so PostgreSQL alone would
    // not notice for hours). The live nodes end its session after the lease timeout and
    // take the door.
    let victim = names.iter().position(|n| *n == door_node).unwrap();
    nodes[victim].proc.signal("STOP");
    let frozen = Instant::now();
    let others: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    // Waited on as a condition, never a deadline (CI machines differ in speed); the time
    // it took is printed for the README's bound (lease_timeout_ms plus a round).
    wait_until("the door's lease moved off the frozen node", || {
        let (_, view) = watchers(others[0]);
        view[0].1.as_deref().is_some_and(|n| n != door_node)
    });
    eprintln!(
        "door's lease moved {:.1} s after its node froze",
        frozen.elapsed().as_secs_f32()
    );
    wait_watchers(&others, |cams| {
        cams[0].1.as_deref().is_some_and(|n| n != door_node)
            && cams[1].1.as_deref() == Some(gate_node.as_str())
    });
    eprintln!(
        "door taken over {:.1} s after its node froze",
        frozen.elapsed().as_secs_f32()
    );
    let (_, view) = watchers(others[0]);
    let new_door = view[0].1.clone().unwrap();

    // Resumed, the frozen node finds its session gone and stops the door.
    let resumed_ms = chrono::Utc::now().timestamp_millis();
    nodes[victim].proc.signal("CONT");
    let resumed = Instant::now();
    wait_watchers(&all, |cams| {
        cams[0].1.as_deref() == Some(new_door.as_str())
            && cams[1].1.as_deref() == Some(gate_node.as_str())
    });
    eprintln!(
        "the resumed node stood by {:.1} s after SIGCONT",
        resumed.elapsed().as_secs_f32()
    );
    let down: Vec<_> = events_since(&dir, &door_node, resumed_ms);
    assert!(
        down.iter().any(|(t, c)| t == "camera.down" && c == "door"),
        "the resumed node did not report the door down: {down:?}"
    );
    let log = std::fs::read_to_string(dir.join(&door_node).join("serve.log")).unwrap();
    assert!(
        log.contains("another node took this camera meanwhile"),
        "{log}"
    );
}

/// Nodes that connect as different unprivileged roles (one role per node is common
/// practice): PostgreSQL shows each the other's session times as NULL and lets neither
/// end the other's session. Leases still share the cameras (before, the lease task
/// panicked on the NULL, silently, and both nodes ended up watching every camera), and a
/// frozen node's cameras still move: the server ends its silent session itself
/// (`idle_session_timeout`), within the lease timeout plus a round.
#[test]
fn nodes_of_different_roles_share_cameras_and_take_over_from_a_frozen_one() {
    let dir = common::temp_dir("cluster-roles");
    let pg = Postgres::start(&dir);
    let mut admin = ::postgres::Client::connect(&pg.url(), ::postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "CREATE ROLE facestream_nodes NOLOGIN;
             CREATE ROLE node_a LOGIN IN ROLE facestream_nodes;
             CREATE ROLE node_b LOGIN IN ROLE facestream_nodes;
             GRANT USAGE, CREATE ON SCHEMA public TO facestream_nodes;
             ALTER DEFAULT PRIVILEGES FOR ROLE node_a, node_b IN SCHEMA public
                 GRANT ALL ON TABLES TO facestream_nodes;
             ALTER DEFAULT PRIVILEGES FOR ROLE node_a, node_b IN SCHEMA public
                 GRANT ALL ON SEQUENCES TO facestream_nodes;",
        )
        .unwrap();
    let rtsp = door_and_gate();
    let (round_ms, timeout_ms) = (500, 4000);
    let extra = |node: &str| {
        format!(
            "[cluster]\nnode_id = \"{node}\"\ncamera_leases = true\n\
             lease_round_ms = {round_ms}\nlease_timeout_ms = {timeout_ms}\n[[cameras]]\n\
             id = \"door\"\nurl = \"{door}\"\n[[cameras]]\nid = \"gate\"\nurl = \"{gate}\"\n",
            door = rtsp.url("door"),
            gate = rtsp.url("gate"),
        )
    };
    let start = |name: &str| {
        let url = pg.url().replace("facestream@", &format!("node_{name}@"));
        start_node_at(&dir, name, &url, &extra(name))
    };
    let a = start("a");
    let b = start("b");
    wait_watchers(&[&a, &b], |cams| {
        cams.len() == 2 && cams.iter().all(|(_, n)| n.is_some()) && cams[0].1 != cams[1].1
    });
    // each role sees the other's lease session without its times: the case under test
    let hidden: i64 = ::postgres::Client::connect(
        &pg.url().replace("facestream@", "node_a@"),
        ::postgres::NoTls,
    )
    .unwrap()
    .query_one(
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = 'facestream node=b' AND state_change IS NULL",
        &[],
    )
    .unwrap()
    .get(0);
    assert_eq!(hidden, 1, "node_a should not see node b's session times");
    for node in [&a, &b] {
        let (s, v) = node.call("GET", "/ready", None);
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, view) = watchers(&a);
    let door_node = view[0].1.clone().unwrap();
    let (victim, survivor) = if door_node == "a" { (&a, &b) } else { (&b, &a) };

    // the door's node freezes: the server ends its silent session and the other node
    // takes the door (waited on as a condition; the time is printed, not asserted: CI
    // machines differ in speed)
    victim.proc.signal("STOP");
    let frozen = Instant::now();
    wait_until("the door's lease moved off the frozen node", || {
        let (_, view) = watchers(survivor);
        view[0].1.as_deref().is_some_and(|n| n != door_node)
    });
    eprintln!(
        "door's lease taken over {:.1} s after its node froze",
        frozen.elapsed().as_secs_f32()
    );
    victim.proc.signal("CONT");
    wait_watchers(&[&a, &b], |cams| {
        cams[0].1.as_deref().is_some_and(|n| n != door_node)
    });
    let log = std::fs::read_to_string(dir.join(&door_node).join("serve.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("background task ended"), "{log}");
}
