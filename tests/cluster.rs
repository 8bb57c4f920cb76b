//! Several `facestream serve` nodes on one gallery of record in PostgreSQL (Debian's
//! `postgresql`, a throw-away server started here): an enrolment on one node becomes
//! searchable on the others and an erasure on any node is gone everywhere; a node started
//! later catches up; with PostgreSQL down, recognition goes on from each node's index and
//! enrolment is answered 503 with the reason, and once it is back the nodes follow the
//! changes they missed.

mod common;

use common::postgres::Postgres;
use common::Proc;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;

const ADMIN: &str = "cluster-admin-key-0123456789";

struct Node {
    _proc: Proc,
    base: String,
    http: Client,
}

fn node_config(dir: &Path, name: &str, pg: &Postgres) -> PathBuf {
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
"#,
            url = pg.url(),
            d = home.display()
        ),
    )
    .unwrap();
    config
}

fn start_node(dir: &Path, name: &str, pg: &Postgres) -> Node {
    let config = node_config(dir, name, pg);
    let (proc, port) = common::serve(&config, &dir.join(name));
    Node {
        _proc: proc,
        base: format!("http://127.0.0.1:{port}/v1"),
        http: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    }
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
