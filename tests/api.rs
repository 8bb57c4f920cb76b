//! The REST API over real HTTP on 127.0.0.1: every endpoint, every error status, auth,
//! and a restart after SIGKILL. The server is the real `facestream serve` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-0123456789abcdef";
const READER: &str = "read-key-0123456789abcdef";

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service's config; `api.listen` takes port 0 and the tests read the bound port from
/// the service's log ([`start`]).
fn write_config(dir: &Path, max_body: usize) -> PathBuf {
    write_config_with(dir, max_body, "")
}

fn write_config_with(dir: &Path, max_body: usize, extra: &str) -> PathBuf {
    write_config_full(dir, max_body, "", extra)
}

/// As [`write_config_with`], with `gallery_extra` lines in the `[gallery]` table.
fn write_config_full(dir: &Path, max_body: usize, gallery_extra: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gallery]
database = "{db}"
{gallery_extra}
[api]
listen = "127.0.0.1:0"
max_body_bytes = {max_body}
generated_key_file = "{dir}/unused.key"
keys = [
  {{ name = "ops", key = "{ADMIN}", scope = "admin" }},
  {{ name = "viewer", key = "{READER}", scope = "read" }},
]
[demo]
mode = "off"
[events]
outbox = "{dir}/outbox.db"
{extra}
"#,
            db = dir.join("gallery.db").display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    path
}

fn start(config: &Path) -> Server {
    let log = config.with_file_name(format!("serve-{}.log", uuid::Uuid::now_v7()));
    let child = Command::new(env!("CARGO_BIN_EXE_facestream"))
        .env("FACESTREAM_MODELS_DIR", common::config().models.dir)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Owned by the guard from here on: a failed start still kills and reaps the child.
    let mut server = Server {
        child,
        base: String::new(),
    };
    let port = common::api_port_from_log(&log, Duration::from_secs(60));
    server.base = format!("http://127.0.0.1:{port}/v1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = Client::new().get(format!("{}/ready", server.base)).send() {
            if r.status().is_success() {
                return server;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server on {port} did not become ready");
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(common::fixture(name)).unwrap()
}

struct Api<'a> {
    http: Client,
    base: &'a str,
}

impl Api<'_> {
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Body>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(b)) => req
                .header("content-type", "application/octet-stream")
                .body(b),
            Some(Body::Text(t)) => req.header("content-type", "application/json").body(t),
            None => req,
        };
        let resp = req.send().unwrap();
        let status = resp.status();
        let text = resp.text().unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if let Some(message) = value["error"]["message"].as_str() {
            for leak in ["/tmp", ".cache", "src/", "panicked", "RUST_BACKTRACE"] {
                assert!(
                    !message.contains(leak),
                    "error body leaks `{leak}`: {message}"
                );
            }
        }
        (status, value)
    }
}

enum Body {
    Json(Value),
    Raw(Vec<u8>),
    Text(&'static str),
}

fn blank_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 80])
    });
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

#[test]
fn every_endpoint_and_error_status_over_http() {
    let dir = common::temp_dir("api");
    let config = write_config(&dir, 2 * 1024 * 1024);
    let server = start(&config);
    let api = Api {
        http: Client::new(),
        base: &server.base,
    };
    let b64 = |name: &str| base64::engine::general_purpose::STANDARD.encode(photo(name));

    // Health, readiness and the OpenAPI document need no key.
    assert_eq!(api.call("GET", "/health", None, None).0, StatusCode::OK);
    let (s, ready) = api.call("GET", "/ready", None, None);
    assert_eq!(
        (s, ready["model"].as_str()),
        (StatusCode::OK, Some("sface@2021dec"))
    );
    let (s, doc) = api.call("GET", "/openapi.json", None, None);
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/identities",
        "/v1/identities/{id}",
        "/v1/identities/{id}/faces",
        "/v1/identities/{id}/faces/{face}",
        "/v1/search",
        "/v1/verify",
        "/v1/health",
        "/v1/ready",
        "/v1/gallery/stale",
        "/v1/cameras",
        "/v1/events/stream",
        "/v1/review/unknowns",
        "/v1/review/tracks/{id}/shots/{n}",
        "/v1/review/enroll",
        "/v1/review/dismiss",
        "/v1/events/{id}/snapshot",
        "/v1/session",
        "/v1/cameras/{id}/snapshot",
        "/v1/identities/{id}/faces/{face}/crop",
        "/v1/identities/{id}/appearances",
        "/v1/search/faces",
        "/v1/search/appearances",
        "/v1/search/appearances/{id}/shot",
        "/v1/search/audit",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // searching the past is for admin keys, and off until history.enabled
    let probe = || {
        Some(Body::Json(
            serde_json::json!({"track_id": uuid::Uuid::now_v7()}),
        ))
    };
    let (s, _) = api.call("POST", "/search/faces", Some(READER), probe());
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, off) = api.call("POST", "/search/faces", Some(ADMIN), probe());
    assert_eq!(s, StatusCode::NOT_FOUND, "{off}");
    assert!(
        off["error"]["message"]
            .as_str()
            .unwrap()
            .contains("history.enabled = true"),
        "{off}"
    );
    // snapshots and the review queue are off by default, and say which setting turns them on
    let (s, off) = api.call(
        "GET",
        &format!("/events/{}/snapshot", uuid::Uuid::now_v7()),
        Some(READER),
        None,
    );
    assert_eq!(s, StatusCode::NOT_FOUND, "{off}");
    assert!(
        off["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events.snapshots.enabled = true"),
        "{off}"
    );
    let (s, off) = api.call("GET", "/review/unknowns", Some(READER), None);
    assert_eq!(s, StatusCode::NOT_FOUND, "{off}");
    assert!(
        off["error"]["message"]
            .as_str()
            .unwrap()
            .contains("review.enabled = true"),
        "{off}"
    );
    // without cameras configured the list is empty, and it needs a key
    let (s, cams) = api.call("GET", "/cameras", Some(READER), None);
    assert_eq!(
        (s, cams["cameras"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    assert_eq!(
        api.call("GET", "/cameras", None, None).0,
        StatusCode::UNAUTHORIZED
    );

    // Auth: missing, wrong, and read-only keys.
    let new = || {
        Some(Body::Json(
            json!({"name": "Barack Obama", "metadata": {"role": "test"}}),
        ))
    };
    assert_eq!(
        api.call("POST", "/identities", None, new()).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.call("POST", "/identities", Some("wrong-key-0123456789"), new())
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (s, e) = api.call("POST", "/identities", Some(READER), new());
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    assert_eq!(
        api.call("GET", "/identities", None, None).0,
        StatusCode::UNAUTHORIZED
    );

    // Create, with validation errors.
    let (s, obama) = api.call("POST", "/identities", Some(ADMIN), new());
    assert_eq!(s, StatusCode::CREATED, "{obama}");
    let id = obama["id"].as_str().unwrap().to_string();
    assert_eq!(
        api.call(
            "POST",
            "/identities",
            Some(ADMIN),
            Some(Body::Json(json!({"name": "  "})))
        )
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        api.call(
            "POST",
            "/identities",
            Some(ADMIN),
            Some(Body::Json(json!({"name": "x", "metadata": [1]})))
        )
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        api.call(
            "POST",
            "/identities",
            Some(ADMIN),
            Some(Body::Json(json!({"name": "x", "nickname": "y"})))
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.call(
            "POST",
            "/identities",
            Some(ADMIN),
            Some(Body::Text("{not json"))
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    let (_, biden) = api.call(
        "POST",
        "/identities",
        Some(ADMIN),
        Some(Body::Json(json!({"name": "Joe Biden"}))),
    );
    let biden_id = biden["id"].as_str().unwrap().to_string();

    // Read: list, get, pagination limits, unknown ids.
    let (s, list) = api.call("GET", "/identities?limit=10", Some(READER), None);
    assert_eq!((s, list["total"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(
        api.call("GET", "/identities?limit=0", Some(READER), None).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.call("GET", &format!("/identities/{id}"), Some(READER), None)
            .1["name"],
        "Barack Obama"
    );
    let ghost = "01a21f06-0000-7000-8000-000000000000";
    assert_eq!(
        api.call("GET", &format!("/identities/{ghost}"), Some(READER), None)
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("GET", "/identities/not-a-uuid", Some(READER), None)
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("GET", "/no/such/endpoint", Some(READER), None).0,
        StatusCode::NOT_FOUND
    );
    // An existing path with a method it lacks: 405 naming the allowed ones (schemathesis).
    let wrong = api
        .http
        .put(format!("{}/identities/{id}", api.base))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers()["allow"], "GET, PATCH, DELETE");
    // A JSON body must be an object, not the struct's fields as an array (schemathesis).
    let (s, e) = api.call(
        "PATCH",
        &format!("/identities/{id}"),
        Some(ADMIN),
        Some(Body::Text("[null, null]")),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    // Update.
    let (s, updated) = api.call(
        "PATCH",
        &format!("/identities/{id}"),
        Some(ADMIN),
        Some(Body::Json(json!({"metadata": {"role": "president"}}))),
    );
    assert_eq!(
        (
            s,
            updated["metadata"]["role"].as_str(),
            updated["name"].as_str()
        ),
        (StatusCode::OK, Some("president"), Some("Barack Obama"))
    );
    assert_eq!(
        api.call(
            "PATCH",
            &format!("/identities/{ghost}"),
            Some(ADMIN),
            Some(Body::Json(json!({"name": "x"})))
        )
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(
            "PATCH",
            &format!("/identities/{id}"),
            Some(READER),
            Some(Body::Json(json!({"name": "x"})))
        )
        .0,
        StatusCode::FORBIDDEN
    );

    // Enrolment: one face required; bad images; limits.
    let faces = format!("/identities/{id}/faces");
    let (s, face) = api.call(
        "POST",
        &format!("{faces}?source=obama.jpg"),
        Some(ADMIN),
        Some(Body::Raw(photo("obama.jpg"))),
    );
    assert_eq!(s, StatusCode::CREATED, "{face}");
    assert_eq!(face["model"], "sface@2021dec");
    assert_eq!(face["source"], "obama.jpg");
    // What the face counts for in the identity's pooled template; a good photo needs no
    // advice.
    assert_eq!(face["weight"].as_f64(), face["quality"].as_f64(), "{face}");
    assert!(face["advice"].is_null(), "{face}");
    let (s, e) = api.call(
        "POST",
        &faces,
        Some(ADMIN),
        Some(Body::Raw(photo("t1.jpg"))),
    );
    assert_eq!(
        (s, e["error"]["faces_found"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(6)),
        "{e}"
    );
    assert!(e["error"]["message"].as_str().unwrap().contains("found 6"));
    // A face choice: a group of equals has no clear largest face; a portrait with a small
    // bystander in the corner has, and the default still refuses it.
    let (s, e) = api.call(
        "POST",
        &format!("{faces}?face=largest"),
        Some(ADMIN),
        Some(Body::Raw(photo("t1.jpg"))),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no clear choice"),
        "{e}"
    );
    let bystander = common::portrait_with_bystander();
    let (s, e) = api.call(
        "POST",
        &faces,
        Some(ADMIN),
        Some(Body::Raw(bystander.clone())),
    );
    assert_eq!(
        (s, e["error"]["faces_found"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(2)),
        "{e}"
    );
    for choice in ["largest", "center"] {
        let (s, face) = api.call(
            "POST",
            &format!("{faces}?face={choice}&source=bystander-{choice}"),
            Some(ADMIN),
            Some(Body::Raw(bystander.clone())),
        );
        assert_eq!(s, StatusCode::CREATED, "{choice}: {face}");
        assert_eq!(face["source"], format!("bystander-{choice}"));
        // (removed again: the checks below count this identity's faces)
        let id_of_face = face["id"].as_str().unwrap();
        assert_eq!(
            api.call(
                "DELETE",
                &format!("{faces}/{id_of_face}"),
                Some(ADMIN),
                None
            )
            .0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        api.call(
            "POST",
            &format!("{faces}?face=tallest"),
            Some(ADMIN),
            Some(Body::Raw(photo("obama.jpg")))
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    let (s, e) = api.call("POST", &faces, Some(ADMIN), Some(Body::Raw(blank_jpeg())));
    assert_eq!(
        (s, e["error"]["faces_found"].as_u64()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some(0))
    );
    assert_eq!(
        api.call(
            "POST",
            &faces,
            Some(ADMIN),
            Some(Body::Raw(b"not an image".to_vec()))
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.call("POST", &faces, Some(ADMIN), Some(Body::Raw(Vec::new())))
            .0,
        StatusCode::BAD_REQUEST
    );
    let (s, e) = api.call(
        "POST",
        &faces,
        Some(ADMIN),
        Some(Body::Raw(vec![0u8; 3 * 1024 * 1024])),
    );
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_body_bytes"));
    let (s, e) = api.call(
        "POST",
        &faces,
        Some(ADMIN),
        Some(Body::Raw(common::bomb_png(50_000))),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_image_pixels"));
    assert_eq!(
        api.call(
            "POST",
            &format!("/identities/{ghost}/faces"),
            Some(ADMIN),
            Some(Body::Raw(photo("obama2.jpg")))
        )
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(
            "POST",
            &faces,
            Some(READER),
            Some(Body::Raw(photo("obama2.jpg")))
        )
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api.call(
            "POST",
            &format!("/identities/{biden_id}/faces"),
            Some(ADMIN),
            Some(Body::Raw(photo("biden.jpg")))
        )
        .0,
        StatusCode::CREATED
    );
    let (s, listed) = api.call("GET", &faces, Some(READER), None);
    assert_eq!(
        (s, listed["items"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );

    // Search: known, unknown, multi-face, parameter errors.
    let (s, found) = api.call(
        "POST",
        "/search",
        Some(READER),
        Some(Body::Raw(photo("obama2.jpg"))),
    );
    assert_eq!(s, StatusCode::OK);
    let d = &found["faces"][0]["decision"];
    assert_eq!(
        (d["outcome"].as_str(), d["identity"].as_str()),
        (Some("match"), Some(id.as_str())),
        "{found}"
    );
    assert_eq!(found["faces"][0]["candidates"][0]["name"], "Barack Obama");
    let (_, stranger) = api.call(
        "POST",
        "/search",
        Some(READER),
        Some(Body::Raw(photo("Tom_Hanks_54745.png"))),
    );
    assert_eq!(
        stranger["faces"][0]["decision"]["outcome"], "unknown",
        "{stranger}"
    );
    assert_eq!(
        stranger["faces"][0]["decision"]["reason"],
        "below_threshold"
    );
    let (_, group) = api.call(
        "POST",
        "/search?top_k=2",
        Some(READER),
        Some(Body::Raw(photo("t1.jpg"))),
    );
    let group_faces = group["faces"].as_array().unwrap();
    assert_eq!(group_faces.len(), 6);
    assert!(group_faces
        .iter()
        .all(|f| f["decision"]["outcome"] == "unknown"
            && f["candidates"].as_array().unwrap().len() == 2));
    assert_eq!(
        api.call(
            "POST",
            "/search?top_k=0",
            Some(READER),
            Some(Body::Raw(photo("obama2.jpg")))
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.call(
            "POST",
            "/search",
            None,
            Some(Body::Raw(photo("obama2.jpg")))
        )
        .0,
        StatusCode::UNAUTHORIZED
    );

    // Verify (1:1).
    let (s, v) = api.call(
        "POST",
        "/verify",
        Some(READER),
        Some(Body::Json(
            json!({"a": b64("obama.jpg"), "b": b64("obama3.jpg")}),
        )),
    );
    assert_eq!(
        (s, v["same"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{v}"
    );
    let (_, v) = api.call(
        "POST",
        "/verify",
        Some(READER),
        Some(Body::Json(
            json!({"a": b64("obama.jpg"), "b": b64("biden.jpg")}),
        )),
    );
    assert_eq!(v["same"], false);
    assert_eq!(
        api.call(
            "POST",
            "/verify",
            Some(READER),
            Some(Body::Json(json!({"a": "%%%", "b": b64("biden.jpg")})))
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    let blank = base64::engine::general_purpose::STANDARD.encode(blank_jpeg());
    assert_eq!(
        api.call(
            "POST",
            "/verify",
            Some(READER),
            Some(Body::Json(json!({"a": blank, "b": b64("biden.jpg")})))
        )
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Model housekeeping.
    let (s, stale) = api.call("GET", "/gallery/stale", Some(ADMIN), None);
    assert_eq!(
        (s, stale["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    assert_eq!(
        api.call("GET", "/gallery/stale", Some(READER), None).0,
        StatusCode::FORBIDDEN
    );

    // Remove a face, then erase an identity.
    let face_id = face["id"].as_str().unwrap();
    assert_eq!(
        api.call("DELETE", &format!("{faces}/{face_id}"), Some(ADMIN), None)
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.call("DELETE", &format!("{faces}/{face_id}"), Some(ADMIN), None)
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, after) = api.call(
        "POST",
        "/search",
        Some(READER),
        Some(Body::Raw(photo("obama2.jpg"))),
    );
    assert_eq!(after["faces"][0]["decision"]["outcome"], "unknown");
    let (s, erased) = api.call(
        "DELETE",
        &format!("/identities/{biden_id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (s, erased["removed_faces"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    assert_eq!(
        api.call(
            "GET",
            &format!("/identities/{biden_id}"),
            Some(READER),
            None
        )
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/identities/{biden_id}"),
            Some(ADMIN),
            None
        )
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("DELETE", &format!("/identities/{id}"), Some(READER), None)
            .0,
        StatusCode::FORBIDDEN
    );
    let (_, empty) = api.call(
        "POST",
        "/search",
        Some(READER),
        Some(Body::Raw(photo("biden.jpg"))),
    );
    assert_eq!(
        empty["faces"][0]["decision"]["reason"], "empty_gallery",
        "{empty}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_gallery_survives_sigkill_and_restart() {
    let dir = common::temp_dir("api-restart");
    let config = write_config(&dir, 16 * 1024 * 1024);
    let mut server = start(&config);
    let api = Api {
        http: Client::new(),
        base: &server.base.clone(),
    };
    let mut ids = Vec::new();
    for (name, file) in [("Barack Obama", "obama.jpg"), ("Joe Biden", "biden.jpg")] {
        let (_, identity) = api.call(
            "POST",
            "/identities",
            Some(ADMIN),
            Some(Body::Json(json!({"name": name}))),
        );
        let id = identity["id"].as_str().unwrap().to_string();
        let (s, _) = api.call(
            "POST",
            &format!("/identities/{id}/faces"),
            Some(ADMIN),
            Some(Body::Raw(photo(file))),
        );
        assert_eq!(s, StatusCode::CREATED);
        ids.push(id);
    }
    // SIGKILL: no shutdown hook runs.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start(&config);
    let api = Api {
        http: Client::new(),
        base: &server.base,
    };
    let (_, list) = api.call("GET", "/identities", Some(READER), None);
    assert_eq!(list["total"], 2);
    for (id, probe) in ids.iter().zip(["obama3.jpg", "biden.jpg"]) {
        let (_, found) = api.call(
            "POST",
            "/search",
            Some(READER),
            Some(Body::Raw(photo(probe))),
        );
        assert_eq!(
            found["faces"][0]["decision"]["identity"].as_str(),
            Some(id.as_str()),
            "{probe}: {found}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serves_https_with_the_configured_certificate_and_refuses_a_mismatched_key() {
    let dir = common::temp_dir("api-tls");
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.key_pair.serialize_pem()).unwrap();
    let config = |key: &Path| {
        let path = dir.join("tls.toml");
        std::fs::write(
            &path,
            format!(
                "[gallery]\ndatabase = \"{d}/gallery.db\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
                 keys = [{{ name = \"ops\", key = \"{ADMIN}\", scope = \"admin\" }}]\n\
                 tls_cert_file = \"{c}\"\ntls_key_file = \"{k}\"\n[demo]\nmode = \"off\"\n\
                 [events]\noutbox = \"{d}/outbox.db\"\n",
                d = dir.display(),
                c = cert.display(),
                k = key.display()
            ),
        )
        .unwrap();
        path
    };
    let log = dir.join("serve.log");
    let mut server = Server {
        child: Command::new(env!("CARGO_BIN_EXE_facestream"))
            .env("FACESTREAM_MODELS_DIR", common::config().models.dir)
            .arg("--config")
            .arg(config(&key))
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        base: String::new(),
    };
    let port = common::api_port_from_log(&log, Duration::from_secs(60));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains(&format!("API listening on https://127.0.0.1:{port}/v1")),
        "the log names the scheme"
    );
    server.base = format!("https://127.0.0.1:{port}/v1");
    let trusting = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(issued.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        match trusting.get(format!("{}/ready", server.base)).send() {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("no HTTPS answer: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(ready.status(), StatusCode::OK);
    let api = Api {
        http: trusting,
        base: &server.base.clone(),
    };
    let (s, page) = api.call("GET", "/identities", Some(ADMIN), None);
    assert_eq!(s, StatusCode::OK, "{page}");
    // a client that does not trust the certificate, and plain HTTP, get nowhere
    assert!(Client::new()
        .get(format!("{}/health", server.base))
        .send()
        .is_err());
    assert!(Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/health"))
        .send()
        .map_or(true, |r| !r.status().is_success()));
    drop(server);

    // a key that is not the certificate's: refused at start-up, naming the settings
    let other = dir.join("other-key.pem");
    std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facestream"))
        .env("FACESTREAM_MODELS_DIR", common::config().models.dir)
        .arg("--config")
        .arg(config(&other))
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.tls_cert_file and api.tls_key_file"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn refuses_a_public_address_without_a_configured_key() {
    let dir = common::temp_dir("api-public");
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "[api]\nlisten = \"0.0.0.0:18089\"\n[demo]\nmode = \"off\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_facestream"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.listen") && err.contains("not a loopback address"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pending_events_survive_sigkill_of_the_service() {
    use common::receiver::{Mode, Receiver, SECRET};
    let dir = common::temp_dir("api-events");
    // The receiver is down (its port held, nobody listening) until after the crash.
    let reserved = common::ReservedPort::new();
    let hook_port = reserved.port;
    let extra = format!(
        "retry_initial_ms = 50\nretry_max_ms = 300\n[[events.webhooks]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"{SECRET}\"\n"
    );
    let config = write_config_with(&dir, 1 << 20, &extra);
    let mut server = start(&config);
    let api = Api {
        http: Client::new(),
        base: &server.base.clone(),
    };
    // The receiver is down: events queue up in the outbox.
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (s, v) = api.call("POST", "/events/test", Some(ADMIN), None);
        assert_eq!(
            (s, v["endpoints"].as_u64()),
            (StatusCode::ACCEPTED, Some(1)),
            "{v}"
        );
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        api.call("POST", "/events/test", Some(READER), None).0,
        StatusCode::FORBIDDEN
    );
    let (s, schema) = api.call("GET", "/events/schema", None, None);
    assert_eq!(
        (
            s,
            schema["properties"]["type"]["enum"]
                .as_array()
                .map(Vec::len)
        ),
        (
            StatusCode::OK,
            Some(facestream::events::EventType::ALL.len())
        )
    );
    let (s, dead) = api.call("GET", "/events/dead-letters", Some(ADMIN), None);
    assert_eq!(
        (s, dead["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    assert_eq!(
        api.call("GET", "/events/dead-letters?limit=0", Some(ADMIN), None)
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.call(
            "POST",
            "/events/dead-letters/redeliver?seq=999999",
            Some(ADMIN),
            None
        )
        .0,
        StatusCode::NOT_FOUND
    );
    let (s, none) = api.call("POST", "/events/dead-letters/redeliver", Some(ADMIN), None);
    assert_eq!((s, none["redelivered"].as_u64()), (StatusCode::OK, Some(0)));
    // kill -9 with everything pending, then the receiver comes up and the service restarts.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let receiver = Receiver::start_on(reserved.listen(), Mode::Accept);
    let _server = start(&config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && receiver.accepted_ids().len() < ids.len() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got: std::collections::BTreeSet<String> = receiver.accepted_ids().into_iter().collect();
    assert_eq!(
        got, ids,
        "every accepted event is delivered after the crash"
    );
    assert_eq!(receiver.state.lock().unwrap().rejected_signatures, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// Opens `GET /v1/events/stream` and forwards each complete server-sent message (the lines
/// before a blank line) through the returned channel, until the stream ends.
fn open_stream(
    base: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> std::sync::mpsc::Receiver<String> {
    open_stream_as(base, query, last_event_id, None)
}

/// As [`open_stream`], authenticated by the console session `cookie` when given (else the
/// read key as a bearer token).
fn open_stream_as(
    base: &str,
    query: &str,
    last_event_id: Option<&str>,
    cookie: Option<&str>,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let client = Client::builder().timeout(None).build().unwrap();
    let mut req = client.get(format!("{base}/events/stream{query}"));
    req = match cookie {
        Some(c) => req.header("cookie", c),
        None => req.bearer_auth(READER),
    };
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut message = String::new();
        for line in std::io::BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if line.is_empty() {
                if tx.send(std::mem::take(&mut message)).is_err() {
                    break;
                }
            } else {
                message.push_str(&line);
                message.push('\n');
            }
        }
    });
    rx
}

/// The next message that is not a keep-alive comment (generous deadline: a correctness
/// check, not a latency target).
fn next_message(rx: &std::sync::mpsc::Receiver<String>) -> String {
    loop {
        let m = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a server-sent message");
        if !m.starts_with(':') {
            return m;
        }
    }
}

/// `GET /v1/events/stream`: events arrive as they are published, as server-sent events
/// with the event id, type and JSON; a client reconnecting with `Last-Event-ID` gets
/// what it missed, and one whose id is no longer held is told so; bad input is refused.
#[test]
fn the_event_stream_delivers_live_events_and_resumes_after_a_reconnect() {
    let dir = common::temp_dir("api-stream");
    let server = start(&write_config(&dir, 1 << 20));
    let api = Api {
        http: Client::new(),
        base: &server.base,
    };
    assert_eq!(
        api.call("GET", "/events/stream", None, None).0,
        StatusCode::UNAUTHORIZED
    );
    let (s, e) = api.call(
        "GET",
        "/events/stream?types=test,person",
        Some(READER),
        None,
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("identity.recognized"),
        "{e}"
    );
    let bad_resume = api
        .http
        .get(format!("{}/events/stream", server.base))
        .bearer_auth(READER)
        .header("last-event-id", "yesterday")
        .send()
        .unwrap();
    assert_eq!(bad_resume.status(), StatusCode::BAD_REQUEST);

    let all = open_stream(&server.base, "", None);
    let tests_only = open_stream(&server.base, "?types=test", None);
    for rx in [&all, &tests_only] {
        assert_eq!(next_message(rx), "retry: 3000\n");
    }
    let metrics = api
        .http
        .get(server.base.replace("/v1", "/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "facestream_event_streams 2"),
        "two open streams: {}",
        metrics
            .lines()
            .filter(|l| l.contains("event_streams"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let publish = || {
        let (s, v) = api.call("POST", "/events/test", Some(ADMIN), None);
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        v["id"].as_str().unwrap().to_string()
    };
    let first = publish();
    let second = publish();
    for rx in [&all, &tests_only] {
        for id in [&first, &second] {
            let m = next_message(rx);
            let lines: Vec<&str> = m.lines().collect();
            assert_eq!(lines[0], format!("id: {id}"), "{m}");
            assert_eq!(lines[1], "event: test", "{m}");
            let data: Value = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap())
                .unwrap_or_else(|e| panic!("{e}: {m}"));
            assert_eq!(
                (data["id"].as_str(), data["type"].as_str()),
                (Some(id.as_str()), Some("test"))
            );
        }
    }

    // A client that saw `first` and reconnects gets `second` replayed, then live events.
    let resumed = open_stream(&server.base, "", Some(&first));
    assert_eq!(next_message(&resumed), "retry: 3000\n");
    assert!(next_message(&resumed).starts_with(&format!("id: {second}\n")));
    let third = publish();
    assert!(next_message(&resumed).starts_with(&format!("id: {third}\n")));
    assert!(next_message(&all).starts_with(&format!("id: {third}\n")));
    // An id that is not held any more (or never was): a gap, then live events.
    let lost = open_stream(&server.base, "", Some(&uuid::Uuid::now_v7().to_string()));
    assert_eq!(next_message(&lost), "retry: 3000\n");
    let m = next_message(&lost);
    assert!(
        m.starts_with("event: gap\n") && m.contains("last_event_id"),
        "{m}"
    );
    let fourth = publish();
    assert!(next_message(&lost).starts_with(&format!("id: {fourth}\n")));

    // Stopping the service ends open streams instead of waiting for them.
    let mut server = server;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        match all.recv_timeout(Duration::from_secs(60)) {
            Ok(_) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("the stream did not end at shutdown: {e}"),
        }
    }
    assert!(server.child.wait().unwrap().success());
}

#[test]
fn a_console_session_is_an_httponly_cookie_with_the_keys_scope() {
    let dir = common::temp_dir("api-session");
    let config = write_config(&dir, 2 * 1024 * 1024);
    let server = start(&config);
    let http = Client::new();
    let url = |path: &str| format!("{}{path}", server.base);
    let login = |key: &str| {
        http.post(url("/session"))
            .json(&serde_json::json!({ "key": key }))
            .send()
            .unwrap()
    };
    let cookie_of = |r: &reqwest::blocking::Response| -> String {
        r.headers()["set-cookie"].to_str().unwrap().to_string()
    };

    assert_eq!(
        login("not-a-key-of-this-service").status(),
        StatusCode::UNAUTHORIZED
    );
    let read = login(READER);
    assert_eq!(read.status(), StatusCode::OK);
    let set = cookie_of(&read);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let read_cookie = set.split(';').next().unwrap().to_string();
    assert!(read_cookie.starts_with("facestream_session="));
    let who: Value = read.json().unwrap();
    assert_eq!(
        (&who["name"], &who["scope"]),
        (&"viewer".into(), &"read".into())
    );

    let with = |cookie: &str, method: &str, path: &str, header: bool| {
        let mut r = http
            .request(method.parse().unwrap(), url(path))
            .header("cookie", cookie);
        if header {
            r = r.header("x-facestream-console", "1");
        }
        if method == "POST" {
            r = r.json(&serde_json::json!({"name": "via the console"}));
        }
        let response = r.send().unwrap();
        let status = response.status();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    // the cookie authenticates reads with the key's scope
    let (s, me) = with(&read_cookie, "GET", "/session", false);
    assert_eq!((s, &me["scope"]), (StatusCode::OK, &"read".into()));
    assert!(me["expires_in_s"].as_u64().unwrap() <= 28800);
    assert_eq!(
        with(&read_cookie, "GET", "/identities", false).0,
        StatusCode::OK
    );
    // a change needs the console header, then the admin scope
    let (s, e) = with(&read_cookie, "POST", "/identities", false);
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Facestream-Console"),
        "{e}"
    );
    let (s, e) = with(&read_cookie, "POST", "/identities", true);
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("admin"),
        "{e}"
    );

    let admin = login(ADMIN);
    let admin_cookie = cookie_of(&admin).split(';').next().unwrap().to_string();
    let (s, created) = with(&admin_cookie, "POST", "/identities", true);
    assert_eq!(s, StatusCode::CREATED, "{created}");
    // a bearer header is checked on its own: a bad one is not rescued by a good cookie
    let r = http
        .get(url("/identities"))
        .header("cookie", &admin_cookie)
        .bearer_auth("not-a-key-of-this-service")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // an event stream opened with the session ends with it
    let stream = open_stream_as(&server.base, "", None, Some(&admin_cookie));
    assert!(next_message(&stream).starts_with("retry:"));

    // logging out ends the session on the server, not only in the browser
    let out = http
        .delete(url("/session"))
        .header("cookie", &admin_cookie)
        .send()
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert!(cookie_of(&out).contains("Max-Age=0"), "{}", cookie_of(&out));
    assert_eq!(
        with(&admin_cookie, "GET", "/identities", false).0,
        StatusCode::UNAUTHORIZED
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stream.recv_timeout(Duration::from_secs(1)) {
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            // keep-alive comments until it ends
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => assert!(
                Instant::now() < deadline,
                "the event stream of a logged-out session is still open"
            ),
        }
    }
    assert_eq!(
        with(&read_cookie, "GET", "/identities", false).0,
        StatusCode::OK
    );

    // a client that keeps mistyping a key waits: guesses by login and by bearer header on
    // any route count together, and with the bad login and the bad bearer above these
    // eight make ten
    let guess = "not-a-key-of-this-service";
    for _ in 0..4 {
        assert_eq!(login(guess).status(), StatusCode::UNAUTHORIZED);
        let r = http.get(url("/cameras")).bearer_auth(guess).send().unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // the same key, mistyped at its end, waits
    let refused = login("not-a-key-typed-again");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let refused = http
        .get(url("/identities"))
        .bearer_auth(guess)
        .send()
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a bearer request with the waiting key is refused too"
    );
    assert!(refused.headers().contains_key("retry-after"));
    // someone else at the same address (one NAT for a whole site) logs in with their own
    // key, by login and by bearer header (before, the whole address was locked out)
    assert_eq!(login(ADMIN).status(), StatusCode::OK);
    assert_eq!(
        http.get(url("/identities"))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // sessions already open are not affected
    assert_eq!(
        with(&read_cookie, "GET", "/identities", false).0,
        StatusCode::OK
    );

    // the console itself: a page that may only load this origin's script and style
    let root = server.base.trim_end_matches("/v1");
    let page = http.get(format!("{root}/")).send().unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.text().unwrap().contains("/console/console.js"));
    assert_eq!(
        http.head(format!("{root}/")).send().unwrap().status(),
        StatusCode::OK
    );
    let script = http
        .get(format!("{root}/console/console.js"))
        .send()
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.text().unwrap().contains("X-Facestream-Console"));
    let _ = std::fs::remove_dir_all(dir);
}

/// Review enrolment: requests racing for one group enrol it once (the others find its
/// tracks gone: 404), and `gallery.min_enroll_quality` applies to review shots as to
/// photos (a poor shot is left out; a group with only poor shots is refused with 422).
#[test]
fn review_enrolment_is_one_unit_and_keeps_the_enrolment_quality_bar() {
    use facestream::review::{ReviewShot, ReviewStore, UnknownTrack};
    let dir = common::temp_dir(&format!("api-review-enrol-{}", uuid::Uuid::now_v7()));
    let config = write_config_full(
        &dir,
        1 << 20,
        "min_enroll_quality = 0.5",
        &format!(
            "[review]\nenabled = true\ndatabase = \"{}\"\n",
            dir.join("review.db").display()
        ),
    );
    // tracks kept before the service starts: shots of real faces' embeddings
    let model = facestream::gallery::service::GalleryService::new(
        std::sync::Arc::new(
            facestream::gallery::sqlite::SqliteStore::open(&dir.join("probe.db")).unwrap(),
        ),
        common::engine(),
        common::config().matching,
        common::config().gallery,
        0.363,
    )
    .unwrap()
    .model()
    .to_string();
    let store = ReviewStore::open(&dir.join("review.db")).unwrap();
    let shot = |seed: u32, quality: f32| ReviewShot {
        quality,
        embedding: common::synthetic_template(uuid::Uuid::nil(), &model, seed).embedding,
        jpeg: Vec::new(),
    };
    let track = |shots: Vec<ReviewShot>| {
        let t = UnknownTrack {
            id: uuid::Uuid::now_v7(),
            camera: "door".into(),
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            model: model.clone(),
            template: shots[0].embedding.clone(),
            quality: shots[0].quality,
            similarity: None,
            shots,
        };
        store.insert(&t).unwrap();
        t.id
    };
    let raced = track(vec![shot(1, 0.9), shot(2, 0.3)]);
    let poor = track(vec![shot(3, 0.2)]);
    drop(store);
    let server = start(&config);
    let base = server.base.clone();

    // four requests at once for the same track
    let statuses: Vec<(StatusCode, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let base = base.clone();
                s.spawn(move || {
                    let r = Client::new()
                        .post(format!("{base}/review/enroll"))
                        .bearer_auth(ADMIN)
                        .json(&serde_json::json!({ "tracks": [raced], "name": format!("Visitor {i}") }))
                        .send()
                        .unwrap();
                    let status = r.status();
                    (status, r.json::<Value>().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<&Value> = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(created.len(), 1, "enrolled more than once: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::NOT_FOUND),
        "{statuses:?}"
    );
    // the poor shot left out, and said so
    assert_eq!(
        created[0]["faces"].as_array().unwrap().len(),
        1,
        "{}",
        created[0]
    );
    assert_eq!(created[0]["shots_under_min_quality"], 1);
    let api = Api {
        http: Client::new(),
        base: &server.base,
    };
    let (s, list) = api.call("GET", "/identities", Some(ADMIN), None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["total"], 1, "{list}");

    // only poor shots: refused with the reason, and the track stays in the queue
    let (s, e) = api.call(
        "POST",
        "/review/enroll",
        Some(ADMIN),
        Some(Body::Json(
            serde_json::json!({ "tracks": [poor], "name": "Nobody" }),
        )),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gallery.min_enroll_quality"),
        "{e}"
    );
    let (_, unknowns) = api.call("GET", "/review/unknowns", Some(ADMIN), None);
    assert!(
        unknowns.to_string().contains(&poor.to_string()),
        "{unknowns}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Review calls racing each other, round after round: an enrolment and a dismissal of the
/// same track beside listings of the queue while another process stores new tracks.
/// Every call answers (a watchdog: no request may take 30 s), and each raced track is
/// either enrolled or dismissed, never both (before, a dismissal that arrived while the
/// track was being enrolled also succeeded: the person was enrolled from a dismissed
/// track).
#[test]
fn review_calls_racing_each_other_never_hang_and_a_track_is_enrolled_or_dismissed() {
    use facestream::review::{ReviewShot, ReviewStore, UnknownTrack};
    let dir = common::temp_dir(&format!("api-review-race-{}", uuid::Uuid::now_v7()));
    let config = write_config_with(
        &dir,
        1 << 20,
        &format!(
            "[review]\nenabled = true\ndatabase = \"{}\"\n",
            dir.join("review.db").display()
        ),
    );
    let model = common::engine().model_id().to_string();
    let store = ReviewStore::open(&dir.join("review.db")).unwrap();
    let mut seed = 0;
    let mut track = || {
        seed += 1;
        let embedding = common::synthetic_template(uuid::Uuid::nil(), &model, seed).embedding;
        let t = UnknownTrack {
            id: uuid::Uuid::now_v7(),
            camera: "door".into(),
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            model: model.clone(),
            template: embedding.clone(),
            quality: 0.9,
            similarity: None,
            shots: vec![ReviewShot {
                quality: 0.9,
                embedding,
                jpeg: Vec::new(),
            }],
        };
        store.insert(&t).unwrap();
        t.id
    };
    let server = start(&config);
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let call = |path: &str, body: Option<Value>| -> (StatusCode, Value) {
        let url = format!("{}{path}", server.base);
        let r = match body {
            Some(b) => http.post(url).json(&b),
            None => http.get(url),
        }
        .bearer_auth(ADMIN)
        .send()
        .unwrap_or_else(|e| panic!("{path} did not answer within 30 s (a hang?): {e}"));
        let status = r.status();
        (status, r.json().unwrap_or(Value::Null))
    };
    let (mut enrolled, mut dismissed) = (0, 0);
    for round in 0..40 {
        let raced = track();
        // tracks this process stores while the service runs: its listing reads them in
        let others: Vec<uuid::Uuid> = (0..4).map(|_| track()).collect();
        let (enrol, dismiss, _, _) = std::thread::scope(|s| {
            let enrol = s.spawn(|| {
                call(
                    "/review/enroll",
                    Some(json!({ "tracks": [raced], "name": format!("Visitor {round}") })),
                )
            });
            let dismiss = s.spawn(|| call("/review/dismiss", Some(json!({ "tracks": [raced] }))));
            let list = s.spawn(|| call("/review/unknowns", None));
            let clear = s.spawn(|| call("/review/dismiss", Some(json!({ "tracks": others }))));
            (
                enrol.join().unwrap(),
                dismiss.join().unwrap(),
                list.join().unwrap(),
                clear.join().unwrap(),
            )
        });
        let took_enrol = enrol.0 == StatusCode::CREATED;
        let took_dismiss = dismiss.0 == StatusCode::OK && dismiss.1["dismissed"] == 1;
        assert!(
            took_enrol != took_dismiss,
            "round {round}: track {raced} enrolled ({enrol:?}) and dismissed ({dismiss:?})"
        );
        assert!(
            took_enrol || enrol.0 == StatusCode::NOT_FOUND,
            "round {round}: {enrol:?}"
        );
        assert!(
            took_dismiss || dismiss.0 == StatusCode::NOT_FOUND,
            "round {round}: {dismiss:?}"
        );
        enrolled += usize::from(took_enrol);
        dismissed += usize::from(took_dismiss);
    }
    eprintln!("{enrolled} raced tracks enrolled, {dismissed} dismissed");
    let (s, list) = call("/identities?limit=100", None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["total"], enrolled, "{list}");
    let (_, unknowns) = call("/review/unknowns", None);
    assert_eq!(unknowns["tracks_total"], 0, "{unknowns}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Where a person was seen before is history data, which only admin keys may query: the
/// `identity.seen_before` event an enrolment writes reaches admin keys in
/// `GET /v1/events/recent` and the event stream, and never read keys (before, both were
/// given it), nor a webhook that did not list the type.
#[test]
fn where_a_person_was_seen_before_reaches_admin_keys_only() {
    use facestream::history::{Appearance, AppearanceStore, SqliteHistory};
    use std::io::{BufRead, BufReader};
    let dir = common::temp_dir(&format!("api-seen-scope-{}", uuid::Uuid::now_v7()));
    // an unknown appearance of Obama, recorded before the service starts
    let mut engine = common::engine();
    let image = engine.load(&common::fixture("obama2.jpg")).unwrap();
    let (faces, _) = engine.analyze(&image).unwrap();
    let face = facestream::engine::primary_face(&faces).unwrap();
    let now = chrono::Utc::now();
    SqliteHistory::open(&dir.join("history.db"))
        .unwrap()
        .insert(&Appearance {
            track_id: uuid::Uuid::now_v7(),
            camera: "door".into(),
            node: String::new(),
            first_seen: now - chrono::Duration::seconds(60),
            last_seen: now - chrono::Duration::seconds(55),
            model: engine.model_id().to_string(),
            template: face.embedding.clone(),
            quality: 0.8,
            event_id: None,
            identity: None,
            similarity: None,
            shot: None,
            spans: Vec::new(),
        })
        .unwrap();
    let config = write_config_with(
        &dir,
        1 << 20,
        &format!(
            "[history]\nenabled = true\ndatabase = \"{}\"\n",
            dir.join("history.db").display()
        ),
    );
    let server = start(&config);
    let api = Api {
        http: Client::new(),
        base: &server.base,
    };
    // both streams open before the enrolment
    let stream = |key: &str| {
        let r = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .get(format!("{}/events/stream", server.base))
            .bearer_auth(key)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        BufReader::new(r)
    };
    let mut admin_stream = stream(ADMIN);
    let mut read_stream = stream(READER);
    let (s, created) = api.call(
        "POST",
        "/identities",
        Some(ADMIN),
        Some(Body::Json(json!({"name": "Barack Obama"}))),
    );
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (s, enrolled) = api.call(
        "POST",
        &format!("/identities/{id}/faces"),
        Some(ADMIN),
        Some(Body::Raw(photo("obama.jpg"))),
    );
    assert_eq!(s, StatusCode::CREATED, "{enrolled}");
    assert_eq!(
        enrolled["seen_before"].as_array().map(Vec::len),
        Some(1),
        "{enrolled}"
    );
    // then a test event: the read stream must give it without a seen_before before it
    let (s, v) = api.call("POST", "/events/test", Some(ADMIN), None);
    assert!(s.is_success(), "{s} {v}");
    let types_until_test = |reader: &mut BufReader<reqwest::blocking::Response>| {
        let mut types = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
            if let Some(data) = line.strip_prefix("data: ") {
                let e: Value = serde_json::from_str(data.trim()).unwrap();
                let kind = e["type"].as_str().unwrap_or_default().to_string();
                types.push(kind.clone());
                if kind == "test" {
                    return types;
                }
            }
        }
    };
    let admin_types = types_until_test(&mut admin_stream);
    assert!(
        admin_types.iter().any(|t| t == "identity.seen_before"),
        "{admin_types:?}"
    );
    let read_types = types_until_test(&mut read_stream);
    assert!(
        !read_types.iter().any(|t| t == "identity.seen_before"),
        "a read key's stream carried where a person was seen: {read_types:?}"
    );
    let recent = |key: &str| -> Vec<String> {
        let (s, v) = api.call("GET", "/events/recent", Some(key), None);
        assert_eq!(s, StatusCode::OK, "{v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(recent(ADMIN).iter().any(|t| t == "identity.seen_before"));
    let read = recent(READER);
    assert!(read.iter().any(|t| t == "test"), "{read:?}");
    assert!(
        !read.iter().any(|t| t == "identity.seen_before"),
        "a read key's recent events carried where a person was seen: {read:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
