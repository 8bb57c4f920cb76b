//! The web console in a real browser: Debian's Chromium, driven over WebDriver
//! (chromedriver, started here) from Rust (`fantoccini`), against a real `facestream
//! serve` watching a simulated RTSP camera.
//!
//! One walk through what an operator does: log in (a bad key refused, a read key sees and
//! cannot change, the cookie HttpOnly and SameSite=Strict), watch an unknown face arrive
//! live, see the camera, enrol that unknown from the review queue and see their next
//! appearance come out recognised, enrol someone by upload, correct a wrong match,
//! rename, erase. With `FACESTREAM_SCREENSHOTS=<dir>` it also saves a screenshot of each
//! page there (README's are made so).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use common::Proc;
use facestream::simulate::{self, RtspServer, Scene};

/// Each test runs a service, a camera and a browser: one at a time on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN: &str = "console-admin-key-0123456789";
const READER: &str = "console-read-key-0123456789";

/// Poll `check` (an async block giving a bool) every 200 ms until it holds, or fail the
/// test naming `what` after `secs` seconds.
macro_rules! wait_until {
    ($what:expr, $secs:expr, $check:expr) => {{
        let deadline = Instant::now() + Duration::from_secs($secs);
        loop {
            if $check {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not happen within {} s",
                $what,
                $secs
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

fn write_config(dir: &Path, camera_url: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[gallery]
database = "{dir}/gallery.db"
keep_crops = true
[api]
listen = "127.0.0.1:0"
keys = [
  {{ name = "operator", key = "{ADMIN}", scope = "admin" }},
  {{ name = "viewer", key = "{READER}", scope = "read" }},
]
[events]
outbox = "{dir}/outbox.db"
thumbnails = true
[events.snapshots]
enabled = true
dir = "{dir}/snapshots"
[review]
enabled = true
database = "{dir}/review.db"
[history]
enabled = true
database = "{dir}/history.db"
[pipeline]
frame_queue = 300
[[cameras]]
id = "entrance"
url = "{camera_url}"
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    path
}

/// chromedriver on a port of its choosing (it prints it).
fn chromedriver(dir: &Path) -> (Proc, u16) {
    let log = dir.join("chromedriver.log");
    let proc = Proc(
        Command::new("chromedriver")
            .arg("--port=0")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; `make setup` installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .find_map(|l| l.split("started successfully on port ").nth(1))
            .and_then(|p| p.trim_end_matches('.').parse().ok())
        {
            return (proc, port);
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn browser(driver_port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// The API with a bearer key (what the browser did, checked from outside it).
fn call(port: u16, method: &str, path: &str) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = match method {
        "GET" => client.get(url),
        _ => client.delete(url),
    }
    .bearer_auth(ADMIN)
    .send()
    .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn exists(client: &Client, css: &str) -> bool {
    client.find(Locator::Css(css)).await.is_ok()
}

async fn shown(client: &Client, css: &str) -> bool {
    match client.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// Click the element `css` names. A page that re-renders (a listing refreshed after its
/// data arrived) can replace the element between finding and clicking it: then it is
/// found again, for as long as the page keeps replacing it (up to a minute).
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let element = client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        match element.click().await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline && e.to_string().contains("stale element") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

async fn type_into(client: &Client, css: &str, value: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn log_in(client: &Client, key: &str) {
    wait_until!("the login form", 20, shown(client, "#login-key").await);
    type_into(client, "#login-key", key).await;
    click(client, "#login-submit").await;
}

async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("FACESTREAM_SCREENSHOTS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
}

/// Milliseconds since the epoch on the browser's clock (the same machine's).
async fn browser_now(client: &Client) -> f64 {
    client
        .execute("return Date.now();", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap()
}

/// Live rows of `type` for `who` that occurred after `after_ms`.
async fn live_rows(client: &Client, kind: &str, who: &str, after_ms: f64) -> usize {
    client
        .execute(
            "const [kind, who, after] = arguments;
             return [...document.querySelectorAll('#live-events li.event')].filter((row) =>
               row.dataset.type === kind &&
               row.querySelector('.who').textContent === who &&
               Date.parse(row.querySelector('time').dateTime) > after).length;",
            vec![json!(kind), json!(who), json!(after_ms)],
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap() as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_watches_enrols_from_review_corrects_and_erases_in_a_browser() {
    let _one = SERIAL.lock().await;
    let dir = common::temp_dir(&format!("console-{}", uuid::Uuid::now_v7()));
    // one person nobody enrolled, walking past the camera again and again
    let photos = simulate::load_photos(&[common::fixture("Tom_Hanks_54745.png")]);
    assert_eq!(photos.len(), 1);
    // 5 s between passes: more than track.rejoin_within_ms, so each pass is an appearance
    let scene = Scene::parade((960, 540, 10), &photos, 360, (3.0, 5.0), 1);
    let clip = Arc::new(simulate::encode_h264(&scene).unwrap());
    let camera = RtspServer::start("127.0.0.1", 0, vec![("entrance".into(), clip)]).unwrap();
    let config = write_config(&dir, &camera.url("entrance"));
    let (_service, port) = common::serve(&config, &dir);
    let (_driver, driver_port) = chromedriver(&dir);
    let client = browser(driver_port).await;
    let base = format!("http://127.0.0.1:{port}/");

    // -- login: a bad key is refused, a read key sees but cannot change ---------------
    client.goto(&base).await.unwrap();
    log_in(&client, "not-a-key-of-this-service").await;
    wait_until!(
        "the bad key refused",
        20,
        text(&client, "#login-error").await == "That key is not valid."
    );
    assert!(!shown(&client, "#app").await);
    screenshot(&client, "login").await;

    log_in(&client, READER).await;
    wait_until!("the read session", 20, shown(&client, "#app").await);
    assert_eq!(text(&client, "#who").await, "viewer · read");
    let cookies = client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "facestream_session")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true), "{session:?}");
    assert_eq!(
        format!("{:?}", session.same_site()),
        "Some(Strict)",
        "{session:?}"
    );
    // the key is not readable by the page's script (HttpOnly), and not kept anywhere
    let visible: String = client
        .execute(
            "return document.cookie + JSON.stringify(localStorage);",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !visible.contains(READER) && !visible.contains("facestream_session"),
        "{visible}"
    );
    client.goto(&format!("{base}#library")).await.unwrap();
    wait_until!(
        "the library page",
        20,
        shown(&client, "#page-library").await
    );
    assert!(
        !shown(&client, "#new-identity").await,
        "a read session is offered enrolment"
    );
    // what the page hides, the API refuses: the browser's own fetch with its cookie
    let refused = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/identities', {method: 'POST', credentials: 'same-origin',
               headers: {'Content-Type': 'application/json', 'X-Facestream-Console': '1'},
               body: JSON.stringify({name: 'intruder'})}).then((r) => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!(403));
    click(&client, "#logout").await;
    wait_until!("logged out", 20, shown(&client, "#login-key").await);
    assert!(client
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .all(|c| c.name() != "facestream_session" || c.value().is_empty()));

    // -- live: an unknown face arrives while the operator watches ----------------------
    client.goto(&base).await.unwrap();
    log_in(&client, ADMIN).await;
    wait_until!("the admin session", 20, shown(&client, "#page-live").await);
    assert_eq!(text(&client, "#who").await, "operator · admin");
    let watching_since = browser_now(&client).await;
    wait_until!(
        "an unknown face arriving live",
        180,
        live_rows(&client, "identity.unknown", "Unknown", watching_since).await > 0
    );
    assert_eq!(text(&client, "#live-status").await, "connected");

    // -- cameras: state and the latest frame ---------------------------------------
    click(&client, "header nav a[data-page=cameras]").await;
    wait_until!(
        "the camera shown live with its frame",
        30,
        text(&client, ".camera[data-camera=entrance] .state").await == "live"
            && client
                .execute(
                    "const img = document.querySelector('.camera[data-camera=entrance] img.preview');
                     return img !== null && img.complete && img.naturalWidth;",
                    vec![],
                )
                .await
                .unwrap()
                == json!(480) // 960×540 shrunk by 2 to fit 640 pixels
    );
    wait_until!(
        "the frame rates measured",
        30,
        text(&client, ".camera[data-camera=entrance]")
            .await
            .contains(" fps")
    );
    // the verdict on the camera's faces: large and sharp, but nobody enrolled matches
    wait_until!(
        "the camera's verdict: faces good enough, matching no one",
        120,
        client
            .execute(
                "const dd = document.querySelector('.camera[data-camera=entrance] dd.verdict');
                 return dd === null ? null : [dd.dataset.kind, dd.textContent];",
                vec![],
            )
            .await
            .unwrap()
            .as_array()
            .is_some_and(|v| v[0] == "no_match"
                && v[1]
                    .as_str()
                    .unwrap_or("")
                    .contains("match no one enrolled"))
    );
    screenshot(&client, "cameras").await;

    // -- review: the unknown becomes "Tom Hanks" ---------------------------------------
    click(&client, "header nav a[data-page=review]").await;
    wait_until!("a review group", 120, {
        if !exists(&client, "#review-groups .group").await {
            click(&client, "#review-refresh").await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        exists(&client, "#review-groups .group").await
    });
    let shots: Value = client
        .execute(
            "return [...document.querySelectorAll('#review-groups .group .shots img')]
                .map((img) => img.complete ? img.naturalWidth : -1);",
            vec![],
        )
        .await
        .unwrap();
    assert!(!shots.as_array().unwrap().is_empty(), "no best shot shown");
    screenshot(&client, "review").await;
    let groups = client
        .find_all(Locator::Css("#review-groups .group"))
        .await
        .unwrap()
        .len();
    assert_eq!(groups, 1, "one person, one group");
    type_into(&client, "#review-groups .group .new-name", "Tom Hanks").await;
    click(&client, "#review-groups .group .enroll-new").await;
    wait_until!(
        "the group enrolled",
        30,
        text(&client, "#review-message").await == "Enrolled Tom Hanks."
    );
    let enrolled_at = browser_now(&client).await;

    // -- live: their next appearance is recognised ---------------------------------
    click(&client, "header nav a[data-page=live]").await;
    wait_until!(
        "Tom Hanks recognised live",
        120,
        live_rows(&client, "identity.recognized", "Tom Hanks", enrolled_at).await > 0
    );
    screenshot(&client, "live").await;

    // -- library: the enrolled faces, and an enrolment by upload -----------------------
    click(&client, "header nav a[data-page=library]").await;
    let tom = ".identity[data-name='Tom Hanks']";
    wait_until!("Tom Hanks in the library", 20, exists(&client, tom).await);
    let (_, identities) = call(port, "GET", "/v1/identities");
    let tom_id = identities["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "Tom Hanks")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let faces_before = identities["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "Tom Hanks")
        .unwrap()["faces"]
        .as_u64()
        .unwrap();
    wait_until!(
        "the enrolled faces' crops shown",
        20,
        client
            .execute(
                "const imgs = [...document.querySelectorAll(arguments[0] + ' .face img')];
                 return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth === 112)
                   ? imgs.length : 0;",
                vec![json!(tom)],
            )
            .await
            .unwrap()
            .as_u64()
            .unwrap()
            == faces_before
    );
    let sources = text(&client, tom).await;
    assert!(sources.contains("review: track "), "{sources}");

    type_into(&client, "#new-name", "Barack Obama").await;
    client
        .find(Locator::Css("#new-photo"))
        .await
        .unwrap()
        .send_keys(common::fixture("obama.jpg").to_str().unwrap())
        .await
        .unwrap();
    click(&client, "#new-submit").await;
    let obama = ".identity[data-name='Barack Obama']";
    wait_until!(
        "Barack Obama enrolled from an upload",
        60,
        text(&client, &format!("{obama} .count")).await == "1 face"
    );
    assert!(text(&client, obama).await.contains("api upload"));
    screenshot(&client, "library").await;

    // a photo with two faces: the console asks which one, and "the largest" is enrolled
    let two = dir.join("portrait with a bystander.jpg");
    std::fs::write(&two, common::portrait_with_bystander()).unwrap();
    type_into(&client, "#new-name", "Second portrait").await;
    client
        .find(Locator::Css("#new-photo"))
        .await
        .unwrap()
        .send_keys(two.to_str().unwrap())
        .await
        .unwrap();
    click(&client, "#new-submit").await;
    wait_until!(
        "the face choice offered",
        60,
        exists(&client, "#new-choice button[data-face=largest]").await
    );
    assert!(text(&client, "#new-choice")
        .await
        .starts_with("2 faces in "));
    click(&client, "#new-choice button[data-face=largest]").await;
    let second = ".identity[data-name='Second portrait']";
    wait_until!(
        "the largest face enrolled",
        60,
        text(&client, &format!("{second} .count")).await == "1 face"
    );
    // the face kept is the portrait's (Obama), not the bystander's: its crop searches to him
    let search = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/search"))
        .bearer_auth(ADMIN)
        .body(std::fs::read(common::fixture("obama2.jpg")).unwrap())
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap();
    let names: Vec<&str> = search["faces"][0]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Second portrait") && names.contains(&"Barack Obama"),
        "{search}"
    );

    // -- search: where was Tom Hanks seen, before his enrolment and after ---------------
    click(&client, "header nav a[data-page=search]").await;
    wait_until!("the search page", 20, shown(&client, "#page-search").await);
    client
        .find(Locator::Css("#search-photo"))
        .await
        .unwrap()
        .send_keys(common::fixture("Tom_Hanks_54745.png").to_str().unwrap())
        .await
        .unwrap();
    click(&client, "#search-submit").await;
    let found = "#search-results .timeline[data-camera=entrance] li.appearance";
    wait_until!(
        "his appearances found by photo",
        30,
        exists(&client, found).await
    );
    wait_until!(
        "their best shots shown",
        20,
        client
            .execute(
                "return [...document.querySelectorAll('#search-results img.thumb')]
                   .some((i) => i.complete && i.naturalWidth === 112);",
                vec![],
            )
            .await
            .unwrap()
            .as_bool()
            .unwrap()
    );
    assert!(exists(&client, &format!("{found} a.event-link")).await);
    assert!(text(&client, "#search-message")
        .await
        .contains("appearance(s)"));
    // his timeline, from the library's "Where seen": unknown before enrolment, then named
    click(&client, "header nav a[data-page=library]").await;
    wait_until!("Tom Hanks in the library", 20, exists(&client, tom).await);
    click(&client, &format!("{tom} .where-seen")).await;
    wait_until!("his timeline, unknown and recognised", 90, {
        if exists(&client, "#search-results li.appearance.unknown").await
            && !exists(&client, "#search-results li.appearance.recognized").await
        {
            // the recognised appearance is kept when its track ends: look again
            click(&client, "#search-timeline").await;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        exists(&client, "#search-results li.appearance.unknown").await
            && exists(&client, "#search-results li.appearance.recognized").await
    });
    screenshot(&client, "search").await;
    // the searches were audited under the console key's name
    let (status, audit) = call(port, "GET", "/v1/search/audit");
    assert_eq!(status, 200, "{audit}");
    let kinds: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("operator", "photo")), "{audit}");
    assert!(kinds.contains(&("operator", "appearances")), "{audit}");
    let (_, timeline) = call(port, "GET", &format!("/v1/identities/{tom_id}/appearances"));
    let before_erasure: Vec<String> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["track_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!before_erasure.is_empty(), "{timeline}");

    // -- a wrong match, from the review page's recent matches: its face is removed ------
    click(&client, "header nav a[data-page=review]").await;
    let wrong = "#review-matches li.event[data-type='identity.recognized'] .wrong-person";
    wait_until!("a wrong-person button", 20, exists(&client, wrong).await);
    click(&client, wrong).await;
    client.accept_alert().await.unwrap();
    wait_until!(
        "the matching face removed",
        20,
        text(&client, "#review-matches")
            .await
            .contains("matching face removed")
    );
    let (status, after) = call(port, "GET", &format!("/v1/identities/{tom_id}"));
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["faces"].as_u64().unwrap(),
        faces_before - 1,
        "{after}"
    );

    // -- rename and erase --------------------------------------------------------------
    click(&client, "header nav a[data-page=library]").await;
    wait_until!("the library", 20, exists(&client, obama).await);
    click(&client, &format!("{obama} .rename")).await;
    client.send_alert_text("Barack H. Obama").await.unwrap();
    client.accept_alert().await.unwrap();
    wait_until!(
        "the rename",
        20,
        exists(&client, ".identity[data-name='Barack H. Obama']").await
    );
    wait_until!("Tom Hanks listed", 20, exists(&client, tom).await);
    click(&client, &format!("{tom} .erase")).await;
    client.accept_alert().await.unwrap();
    // and where he was seen too
    client.accept_alert().await.unwrap();
    wait_until!(
        "Tom Hanks erased",
        20,
        text(&client, "#library-message").await == "Erased Tom Hanks."
            && !exists(&client, tom).await
    );
    let (status, _) = call(port, "GET", &format!("/v1/identities/{tom_id}"));
    assert_eq!(status, 404, "the erased identity is gone from the API too");
    // none of his kept appearances is found any more (he keeps walking past: any found
    // now are new ones)
    let client_http = reqwest::blocking::Client::new();
    let after: Value = client_http
        .post(format!(
            "http://127.0.0.1:{port}/v1/search/faces?limit=1000"
        ))
        .bearer_auth(ADMIN)
        .body(std::fs::read(common::fixture("Tom_Hanks_54745.png")).unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    for a in after["items"].as_array().unwrap() {
        assert!(
            !before_erasure.contains(&a["track_id"].as_str().unwrap().to_string()),
            "an erased appearance is still found: {a}"
        );
    }

    client.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The demo camera of the embedded default (what `make run` starts): logged in with the
/// generated admin key, the console shows its recognitions as they happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_cameras_recognitions_arrive_live_in_the_console() {
    let _one = SERIAL.lock().await;
    let dir = common::temp_dir(&format!("console-demo-{}", uuid::Uuid::now_v7()));
    let config = common::demo_service_config(&dir, "");
    let (_service, port) = common::serve(&config, &dir);
    let key = std::fs::read_to_string(dir.join("admin.key")).unwrap();
    let (_driver, driver_port) = chromedriver(&dir);
    let client = browser(driver_port).await;
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    log_in(&client, key.trim()).await;
    wait_until!("the admin session", 20, shown(&client, "#page-live").await);
    assert_eq!(text(&client, "#who").await, "generated-admin · admin");
    let since = browser_now(&client).await;
    wait_until!(
        "a demo identity recognised live",
        120,
        live_rows(&client, "identity.recognized", "Obama", since).await
            + live_rows(&client, "identity.recognized", "Biden", since).await
            > 0
    );
    client.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
