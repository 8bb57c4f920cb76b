//! Operations: the demo camera of the embedded default, the Grafana dashboards and the
//! Prometheus configuration checked against the service, and the config reference.

mod common;

use common::Proc;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::receiver::{Mode, Receiver, SECRET};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("config/prometheus"))
        .output()
        .expect("promtool (Debian package prometheus, installed by `make test`)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    // the rules' own unit tests: each alert fires on the series it is meant for
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// `facestream_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("facestream_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_string());
        i = end;
    }
    names
}

/// Every sample name a scrape exposes, with histogram series names for declared
/// histograms (a family without samples yet is still declared by `# TYPE`).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, serde_json::from_str(&text).unwrap()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn service_config(dir: &std::path::Path, events_extra: &str) -> PathBuf {
    common::demo_service_config(dir, events_extra)
}

/// The README's run command in miniature: `facestream serve` on the embedded default
/// (only data paths and ports moved into a temp folder) starts the demo camera, enrols
/// the demo identities and produces identity events within a minute; its /metrics
/// exports every metric the dashboards and alert rules query.
#[test]
fn the_default_demo_camera_produces_events_and_every_dashboard_query_hits_a_real_metric() {
    let dir = common::temp_dir(&format!("operations-{}", uuid::Uuid::now_v7()));
    let receiver = Receiver::start(0, Mode::Accept);
    let config = service_config(
        &dir,
        &format!(
            "[[events.webhooks]]\nname = \"hook\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"{SECRET}\"\n",
            receiver.port
        ),
    );
    let started = Instant::now();
    let _service = Proc(
        Command::new(env!("CARGO_BIN_EXE_facestream"))
            .env("FACESTREAM_MODELS_DIR", common::config().models.dir)
            .args(["--log-format", "json", "--config"])
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Both the API and the demo camera bind port 0; the service says where.
    let api_port = common::api_port_from_log(&dir.join("serve.log"), Duration::from_secs(120));
    let key_file = dir.join("admin.key");
    let recent = |key: &str| -> Vec<Value> {
        reqwest::blocking::Client::new()
            .get(format!(
                "http://127.0.0.1:{api_port}/v1/events/recent?limit=200"
            ))
            .bearer_auth(key)
            .send()
            .and_then(|r| r.json::<Value>())
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut events = Vec::new();
    while Instant::now() < deadline {
        if let Ok(key) = std::fs::read_to_string(&key_file) {
            events = recent(key.trim());
            let seen = |kind: &str| events.iter().any(|e| e["type"] == kind);
            if seen("identity.recognized") && seen("identity.unknown") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    let names: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "identity.recognized")
        .filter_map(|e| e["identity"]["name"].as_str())
        .collect();
    assert!(
        names.contains("Obama") || names.contains("Biden"),
        "no demo identity recognised within {:?}: {events:?}\n{log}",
        started.elapsed()
    );
    assert!(
        events.iter().any(|e| e["type"] == "identity.unknown"),
        "{events:?}"
    );
    assert!(
        names.iter().all(|n| ["Obama", "Biden"].contains(n)),
        "{names:?}"
    );
    // Start-up resolved the backends and verified each model file once (not once per
    // detector worker, embedder and gallery engine, as before).
    let logged = |message: &str, field: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .map(|v| v[field].as_str().unwrap_or("?").to_string())
            .collect()
    };
    let mut verified = logged("model verified", "model");
    verified.sort();
    assert_eq!(verified, ["sface", "yunet"], "{log}");
    let mut resolved = logged("inference backend resolved", "stage");
    resolved.sort();
    assert_eq!(resolved, ["detect", "embed"], "{log}");
    // JSON logs: every line an object
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('{') {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{line}"
            );
        }
    }
    assert!(
        log.lines().any(|l| l.contains("\"message\":\"event\"")),
        "{log}"
    );
    // webhook deliveries happened (delivery metrics have samples)
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && receiver.accepted_ids().is_empty() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let scrape = reqwest::blocking::get(format!("http://127.0.0.1:{api_port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let exported = exported(&scrape);

    let mut queried = BTreeSet::new();
    for (file, d) in dashboards() {
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("facestream-")),
            "{file}"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{file}: no datasource variable"
        );
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 4, "{file}");
        for p in panels {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file}: {}",
                p["title"]
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {} has no query", p["title"]);
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{file}: {expr}");
                for name in names {
                    assert!(
                        exported.contains(&name),
                        "{file}: panel {} queries {name}, which /metrics does not export",
                        p["title"]
                    );
                    queried.insert(name);
                }
            }
        }
    }
    let rules = std::fs::read_to_string(root().join("config/prometheus/alerts.yml")).unwrap();
    for name in metric_names(&rules) {
        assert!(
            exported.contains(&name),
            "alerts.yml queries {name}, not exported"
        );
    }
    // the four dashboards cover cameras, stages, recognition and delivery
    for must in [
        "facestream_camera_up",
        "facestream_stage_latency_seconds_bucket",
        "facestream_stage_queue_depth",
        "facestream_embed_batch_size_bucket",
        "facestream_matches_total",
        "facestream_match_similarity_bucket",
        "facestream_outbox_depth",
        "facestream_events_dead_lettered_total",
        "facestream_faces_rejected_total",
        "facestream_face_interocular_pixels_bucket",
    ] {
        assert!(queried.contains(must), "no dashboard shows {must}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The keys a row of docs/configuration.md documents: its first cell's code spans,
/// where `` `a.b` / `c` `` stands for `a.b` and `a.c`.
fn documented_keys(row: &str) -> Vec<String> {
    let cell = row.split('|').nth(1).unwrap_or("");
    let mut keys = Vec::new();
    let mut section = String::new();
    for (n, span) in cell.split('`').enumerate() {
        if n % 2 == 0 || span.is_empty() {
            continue;
        }
        match span.rsplit_once('.') {
            Some((s, _)) => {
                section = s.to_string();
                keys.push(span.to_string());
            }
            None if !section.is_empty() => keys.push(format!("{section}.{span}")),
            None => keys.push(span.to_string()),
        }
    }
    keys
}

/// The effective default configuration as `section.key` → value (arrays of tables, such
/// as `cameras`, are one key).
fn default_config_keys() -> std::collections::BTreeMap<String, toml::Value> {
    // the embedded default, whatever this shell's FACESTREAM_* variables say
    let config = facestream::config::Config::load_with_env(None, &[]).unwrap();
    let value = toml::Value::try_from(&config).unwrap();
    let mut keys = std::collections::BTreeMap::new();
    fn walk(
        prefix: &str,
        v: &toml::Value,
        out: &mut std::collections::BTreeMap<String, toml::Value>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, out);
                }
            }
            _ => {
                out.insert(prefix.to_string(), v.clone());
            }
        }
    }
    walk("", &value, &mut keys);
    keys
}

/// The configuration reference (docs/configuration.md) and the code cannot drift: every
/// key of the effective configuration has a row, every row names a key that exists, and
/// where a row's default is a plain value (a number or one code span) it is the default
/// the code has.
#[test]
fn the_configuration_reference_matches_the_code() {
    let keys = default_config_keys();
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    let mut documented = std::collections::BTreeSet::new();
    let (mut unknown, mut wrong_default) = (Vec::new(), Vec::new());
    for row in &rows {
        let names = documented_keys(row);
        let defaults: Vec<&str> = row
            .split('|')
            .nth(2)
            .unwrap_or("")
            .split(" / ")
            .map(str::trim)
            .collect();
        for (i, key) in names.iter().enumerate() {
            if let Some(prefix) = key.strip_suffix(".*") {
                let under: Vec<_> = keys
                    .keys()
                    .filter(|k| k.starts_with(&format!("{prefix}.")))
                    .collect();
                if under.is_empty() {
                    unknown.push(key.clone());
                }
                documented.extend(under.into_iter().cloned());
                continue;
            }
            let Some(value) = keys.get(key) else {
                unknown.push(key.clone());
                continue;
            };
            documented.insert(key.clone());
            // a plain default: `literal` or a number (thousands commas allowed)
            let Some(cell) = defaults.get(if defaults.len() == names.len() { i } else { 0 }) else {
                continue;
            };
            let plain = cell
                .strip_prefix('`')
                .and_then(|c| c.strip_suffix('`'))
                .filter(|c| !c.contains('`'))
                .map(str::to_string)
                .or_else(|| {
                    let n = cell.replace(',', "");
                    n.parse::<f64>().is_ok().then_some(n)
                });
            let Some(plain) = plain else { continue };
            let actual = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) if a.is_empty() => "[]".into(),
                other => other.to_string(),
            };
            // f32 settings print as their f64 widening (0.6 → 0.6000000238…)
            let same = actual == plain
                || (actual.is_empty() && plain == "\"\"")
                || matches!((actual.parse::<f64>(), plain.parse::<f64>()),
                    (Ok(a), Ok(b)) if (a - b).abs() <= 1e-6 * b.abs().max(1.0));
            if !same {
                wrong_default.push(format!("{key}: documented {plain}, code {actual}"));
            }
        }
    }
    let missing: Vec<_> = keys.keys().filter(|k| !documented.contains(*k)).collect();
    assert!(keys.len() > 60, "{keys:?}");
    assert!(
        missing.is_empty(),
        "config keys with no row in docs/configuration.md: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/configuration.md rows for keys the code does not have: {unknown:?}"
    );
    assert!(
        wrong_default.is_empty(),
        "docs/configuration.md defaults that are not the code's: {wrong_default:?}"
    );
}

/// README and docs/ link to files that exist, and to headings that exist.
#[test]
fn the_documentation_links_resolve() {
    let mut pages = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let anchor = |heading: &str| -> String {
        heading
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    };
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !path.exists() {
                broken.push(format!("{}: {target}", page.display()));
                continue;
            }
            if !fragment.is_empty() {
                let headings = std::fs::read_to_string(&path).unwrap_or_default();
                if !headings
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| anchor(l) == fragment)
                {
                    broken.push(format!("{}: {target} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(pages.len() > 8, "{pages:?}");
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// `demo.mode = "auto"` with no cameras but a gallery of real people: the demo is not
/// started and nobody is enrolled into that gallery behind the operator's back.
#[test]
fn the_auto_demo_leaves_a_real_gallery_alone() {
    let dir = common::temp_dir(&format!("operations-demo-off-{}", uuid::Uuid::now_v7()));
    let config = service_config(&dir, "");
    let people = dir.join("people").join("Employee");
    std::fs::create_dir_all(&people).unwrap();
    std::fs::copy(common::fixture("biden.jpg"), people.join("badge.jpg")).unwrap();
    let bin = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_facestream"));
        c.env("FACESTREAM_MODELS_DIR", common::config().models.dir)
            .arg("--config")
            .arg(&config);
        c
    };
    let enrolled = bin()
        .args(["enroll", "--dir"])
        .arg(dir.join("people"))
        .output()
        .unwrap();
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let log = dir.join("serve.log");
    let _service = Proc(
        bin()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let port = common::api_port_from_log(&log, Duration::from_secs(120));
    let key = std::fs::read_to_string(dir.join("admin.key")).unwrap();
    let list: Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/identities"))
        .bearer_auth(key.trim())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["items"][0]["name"], "Employee", "{list}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("the demo camera is not started because the gallery holds real identities"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Kept biometric data expires on schedule while nothing new arrives: an unknown track
/// and an event snapshot that pass their retention while the service runs (no camera, so
/// no new track or snapshot that would have triggered a prune) are deleted by the timer;
/// younger ones stay.
#[test]
fn review_tracks_and_snapshots_expire_on_a_timer_without_new_arrivals() {
    use facestream::review::{ReviewStore, UnknownTrack};
    let dir = common::temp_dir("retention-timer");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[gallery]\ndatabase = \"{d}/gallery.db\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             generated_key_file = \"{d}/admin.key\"\n[demo]\nmode = \"off\"\n\
             [review]\nenabled = true\ndatabase = \"{d}/review.db\"\nretention_s = 3600\n\
             [events]\noutbox = \"{d}/outbox.db\"\n[events.snapshots]\nenabled = true\n\
             dir = \"{d}/snapshots\"\nretention_s = 3600\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let (_service, _port) = common::serve(&config, &dir);

    // put there while the service runs: one track and one snapshot past the hour, one
    // of each well within it
    let store = ReviewStore::open(&dir.join("review.db")).unwrap();
    let track = |hours_ago: i64| {
        let seen = chrono::Utc::now() - chrono::TimeDelta::hours(hours_ago);
        UnknownTrack {
            id: uuid::Uuid::now_v7(),
            camera: "door".into(),
            first_seen: seen,
            last_seen: seen,
            model: "sface@2021dec".into(),
            template: vec![1.0 / (128f32).sqrt(); 128],
            quality: 0.8,
            similarity: None,
            shots: Vec::new(),
        }
    };
    let (old, young) = (track(2), track(0));
    store.insert(&old).unwrap();
    store.insert(&young).unwrap();
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    let snapshot = |age: Duration| {
        let path = facestream::pipeline::snapshot_path(&snapshots, uuid::Uuid::now_v7());
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    };
    let (old_shot, young_shot) = (
        snapshot(Duration::from_secs(7200)),
        snapshot(Duration::from_secs(60)),
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let kept: Vec<uuid::Uuid> = store.list(None).unwrap().iter().map(|t| t.id).collect();
        if kept == vec![young.id] && !old_shot.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired data still kept 120 s later: tracks {kept:?} (old {}), old snapshot there: {}",
            old.id,
            old_shot.exists()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        young_shot.exists(),
        "a snapshot within its retention was deleted"
    );
}

/// Erasing an identity reaches past the gallery: the events this node keeps that name
/// the person (outbox rows, pending for a receiver that is down, and the recent events
/// of `/v1/events/recent` and stream replays) lose the identity, or go when they only
/// named them (recognitions), and the event snapshots of the person's recognitions are
/// deleted; other people's stay. The person is on camera as they are erased: for the 30 s
/// after, no event, outbox row, webhook, snapshot, appearance or streamed message carries
/// their id or name (a track decided before the erasure and ending after it, before,
/// was recorded and reported with their id).
#[test]
fn erasing_an_identity_scrubs_its_events_and_deletes_its_snapshots() {
    let dir = common::temp_dir(&format!("erasure-{}", uuid::Uuid::now_v7()));
    // nothing listens: every event stays pending in the outbox
    let hook = common::ReservedPort::new();
    let snapshots = dir.join("snapshots");
    let config = service_config(
        &dir,
        &format!(
            "thumbnails = true\nretry_max_ms = 1000\n[events.snapshots]\nenabled = true\n\
             dir = \"{}\"\n[[events.webhooks]]\nname = \"hook\"\n\
             url = \"http://127.0.0.1:{}/hook\"\nsecret = \"{SECRET}\"\n\
             [history]\nenabled = true\ndatabase = \"{}\"\n",
            snapshots.display(),
            hook.port,
            dir.join("history.db").display()
        ),
    );
    let (_service, api_port) = common::serve(&config, &dir);
    let key_file = dir.join("admin.key");
    let http = reqwest::blocking::Client::new();
    let key = || {
        std::fs::read_to_string(&key_file)
            .map(|k| k.trim().to_string())
            .unwrap_or_default()
    };
    let recent = || -> Vec<Value> {
        http.get(format!(
            "http://127.0.0.1:{api_port}/v1/events/recent?limit=200"
        ))
        .bearer_auth(key())
        .send()
        .and_then(|r| r.json::<Value>())
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
    };
    let recognitions_of = |events: &[Value], name: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["type"] == "identity.recognized" && e["identity"]["name"] == name)
            .cloned()
            .collect()
    };
    // both demo people recognised, with a snapshot each
    let deadline = Instant::now() + Duration::from_secs(120);
    let (obama, biden) = loop {
        let events = recent();
        let (o, b) = (
            recognitions_of(&events, "Obama"),
            recognitions_of(&events, "Biden"),
        );
        let shot = |e: &Value| {
            facestream::pipeline::snapshot_path(
                &snapshots,
                e["id"].as_str().unwrap().parse().unwrap(),
            )
            .exists()
        };
        if o.iter().any(shot) && b.iter().any(shot) {
            break (o, b);
        }
        assert!(
            Instant::now() < deadline,
            "no recognition of both demo people with snapshots"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let obama_id = obama[0]["identity"]["id"].as_str().unwrap().to_string();
    assert!(obama[0]["thumbnail_jpeg"].is_string());
    let outbox = rusqlite::Connection::open(dir.join("outbox.db")).unwrap();
    let naming_him = |outbox: &rusqlite::Connection| -> Vec<String> {
        outbox
            .prepare("SELECT payload FROM outbox WHERE instr(payload, ?1) > 0")
            .unwrap()
            .query_map([&obama_id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        !naming_him(&outbox).is_empty(),
        "his events are pending in the outbox"
    );

    let erased = http
        .delete(format!(
            "http://127.0.0.1:{api_port}/v1/identities/{obama_id}"
        ))
        .bearer_auth(key())
        .send()
        .unwrap();
    assert_eq!(erased.status(), reqwest::StatusCode::OK);

    // the recent events: none names him any more (his recognitions are gone, his tracks'
    // ends name nobody) nor holds his face
    let after = recent();
    for e in &after {
        let text = e.to_string();
        assert!(
            !text.contains(&obama_id) && !text.contains("Obama"),
            "an event still names him: {text}"
        );
    }
    assert!(
        !recognitions_of(&after, "Biden").is_empty(),
        "other people's events stay"
    );
    // the outbox: no row names him or holds his face
    let rows = naming_him(&outbox);
    assert!(rows.is_empty(), "outbox rows still name him: {rows:?}");
    // the snapshots: his deleted (written after the erasure request began or not), Biden's kept
    for e in &obama {
        let path = facestream::pipeline::snapshot_path(
            &snapshots,
            e["id"].as_str().unwrap().parse().unwrap(),
        );
        assert!(!path.exists(), "{} kept", path.display());
    }
    assert!(biden.iter().any(|e| facestream::pipeline::snapshot_path(
        &snapshots,
        e["id"].as_str().unwrap().parse().unwrap()
    )
    .exists()));

    // He is still on camera: his tracks decided before the erasure end after it, and new
    // ones start. For 30 s nothing names him: no event kept or served, no outbox row (what
    // the webhook gets), no snapshot, no appearance, no message of a stream resumed from
    // before the erasure.
    let names_him = |text: &str| text.contains(&obama_id) || text.contains("Obama");
    let before: BTreeSet<String> = recent()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let resume_from = recognitions_of(&recent(), "Biden")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stream = {
        use std::io::BufRead;
        let resp = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{api_port}/v1/events/stream"))
            .bearer_auth(key())
            .header("last-event-id", &resume_from)
            .send()
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(resp).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let search_by_photo = || -> String {
        http.post(format!(
            "http://127.0.0.1:{api_port}/v1/search/faces?limit=500"
        ))
        .bearer_auth(key())
        .body(std::fs::read(common::fixture("obama.jpg")).unwrap())
        .send()
        .unwrap()
        .text()
        .unwrap()
    };
    // At least 30 s, and until the camera was seen producing events meanwhile (a slow
    // machine takes longer to: waited on as a condition, with a generous cap).
    let watch = Instant::now();
    let mut new_events = 0;
    let mut streamed = 0;
    while watch.elapsed() < Duration::from_secs(30) || new_events == 0 || streamed == 0 {
        assert!(
            watch.elapsed() < Duration::from_secs(300),
            "the camera produced no event in 300 s after the erasure: {new_events} new, {streamed} lines streamed"
        );
        let now = recent();
        for e in &now {
            assert!(!names_him(&e.to_string()), "an event names him: {e}");
        }
        new_events = now
            .iter()
            .filter(|e| !before.contains(e["id"].as_str().unwrap()))
            .count();
        let rows = naming_him(&outbox);
        assert!(rows.is_empty(), "outbox rows name him: {rows:?}");
        for entry in std::fs::read_dir(&snapshots).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes
                    .windows(obama_id.len())
                    .any(|w| w == obama_id.as_bytes()),
                "a snapshot names him: {}",
                path.display()
            );
        }
        let found = search_by_photo();
        assert!(
            !found.contains(&obama_id),
            "an appearance names him: {found}"
        );
        while let Ok(line) = stream.try_recv() {
            streamed += 1;
            assert!(!names_him(&line), "a streamed message names him: {line}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // The webhook receiver comes up: what it gets of the queue names him nowhere.
    let receiver = Receiver::start_on(hook.listen(), Mode::Accept);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending: i64 = outbox
            .query_row(
                "SELECT count(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if pending == 0 && !receiver.accepted_ids().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{pending} rows still pending");
        std::thread::sleep(Duration::from_millis(250));
    }
    for (_, body) in &receiver.state.lock().unwrap().verified {
        assert!(!names_him(body), "a webhook names him: {body}");
    }
}
