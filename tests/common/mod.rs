//! Shared helpers for the integration tests: where set-up put the models and the real
//! face fixtures (`make test` fetches both; the tests fail, not skip, when they are absent).

#![allow(dead_code)]

pub mod nats;
pub mod partition;
pub mod postgres;
pub mod receiver;

use std::path::PathBuf;

use facestream::config::Config;
use facestream::engine::FaceEngine;

fn from_env_or(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default))
}

pub fn fixtures() -> PathBuf {
    let dir = from_env_or("FACESTREAM_FIXTURES", ".cache/fixtures");
    assert!(
        dir.join("obama.jpg").exists(),
        "face fixtures missing in {}: run `make test` (or `make fixtures`)",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn config() -> Config {
    let mut config = Config::load(None).expect("default config");
    config.models.dir = from_env_or("FACESTREAM_MODELS_DIR", ".cache/models");
    config
}

pub fn engine() -> FaceEngine {
    FaceEngine::open(&config().engine())
        .expect("engine (run `make test` so models and OpenVINO are installed)")
}

/// A TCP port free on 127.0.0.1 right now. Racy (another process may take it before it
/// is used): only for a peer that cannot bind port 0 itself and report the port
/// (Mosquitto, a camera restarted on its old address). Servers of ours bind port 0.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port held by a socket that is bound but not listening: connections to it
/// are refused (a receiver that is down), no other process can take it, and
/// [`ReservedPort::listen`] turns it into the listener a receiver then serves on — the
/// same address, without the race of closing a port and binding it again.
pub struct ReservedPort {
    socket: socket2::Socket,
    pub port: u16,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        ReservedPort { socket, port }
    }

    /// Start listening on the reserved port.
    pub fn listen(self) -> std::net::TcpListener {
        self.socket.listen(128).unwrap();
        self.socket.into()
    }
}

/// The port `facestream serve` reports on stderr ("API listening on http://ADDR/v1"), read
/// from the log file its stderr goes to: the tests configure `api.listen` with port 0 and
/// let the service bind any free port.
pub fn api_port_from_log(log: &std::path::Path, timeout: std::time::Duration) -> u16 {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text.lines().find_map(|l| {
            let rest = l.split("API listening on http").nth(1)?;
            let rest = rest
                .strip_prefix("s://")
                .or_else(|| rest.strip_prefix("://"))?;
            rest.split('/').next()?.rsplit(':').next()?.parse().ok()
        });
        if let Some(port) = found {
            return port;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no \"API listening\" line in {} within {timeout:?}:\n{text}",
            log.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process killed and reaped when dropped (resumed first, should the test
/// have stopped it with SIGSTOP).
pub struct Proc(pub std::process::Child);

impl Proc {
    /// Send signal `name` (`STOP`, `CONT`, `TERM`, …) to the process.
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `facestream serve --config <config>` logging to `<dir>/serve.log`; returns the
/// process and the API port it reports (configs bind port 0).
pub fn serve(config_file: &std::path::Path, dir: &std::path::Path) -> (Proc, u16) {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let proc = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_facestream"))
            .env("FACESTREAM_MODELS_DIR", config().models.dir)
            .args(["--log", "info", "--config"])
            .arg(config_file)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let port = api_port_from_log(&dir.join("serve.log"), std::time::Duration::from_secs(120));
    (proc, port)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facestream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A valid PNG whose header claims `side`×`side` pixels (a decompression bomb: the pixel
/// data is one pixel's worth), with a correct IHDR checksum.
pub fn bomb_png(side: u32) -> Vec<u8> {
    let mut png = Vec::new();
    image::ImageBuffer::from_pixel(1, 1, image::Luma([0u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&side.to_be_bytes());
    png[20..24].copy_from_slice(&side.to_be_bytes());
    let mut crc = 0xFFFF_FFFFu32;
    for &b in &png[12..29] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    png[29..33].copy_from_slice(&(!crc).to_be_bytes());
    png
}

/// obama.jpg with biden.jpg at a quarter of its size in the upper left corner: a portrait
/// with a bystander.
pub fn portrait_with_bystander() -> Vec<u8> {
    let mut portrait = image::load_from_memory(&std::fs::read(fixture("obama.jpg")).unwrap())
        .unwrap()
        .to_rgb8();
    let other = image::load_from_memory(&std::fs::read(fixture("biden.jpg")).unwrap())
        .unwrap()
        .to_rgb8();
    let small = image::imageops::resize(
        &other,
        other.width() / 4,
        other.height() / 4,
        image::imageops::FilterType::Triangle,
    );
    image::imageops::replace(&mut portrait, &small, 0, 0);
    let mut out = Vec::new();
    portrait
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    out
}

/// The path of a program a Debian package installs (`make setup` installs the package),
/// the first of `paths` that exists.
pub fn installed(paths: &[&'static str], package: &str) -> &'static str {
    paths
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "{package} is not installed: run `make test` (scripts/install_apt.sh installs it)"
            )
        })
}

/// The embedded default with data paths in `dir`, the API and the demo camera on port 0,
/// and `events_extra` appended to `[events]`.
pub fn demo_service_config(dir: &std::path::Path, events_extra: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[gallery]\ndatabase = \"{d}/gallery.db\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             generated_key_file = \"{d}/admin.key\"\n[events]\noutbox = \"{d}/outbox.db\"\n\
             {events_extra}[demo]\nlisten = \"127.0.0.1:0\"\nphotos = \"{}\"\n",
            fixtures().display(),
            d = dir.display()
        ),
    )
    .unwrap();
    config
}

/// A unit-length 128-d template of `model` for `identity`, different for each `seed`.
pub fn synthetic_template(
    identity: uuid::Uuid,
    model: &str,
    seed: u32,
) -> facestream::gallery::Template {
    let mut v: Vec<f32> = (0..128)
        .map(|i| ((i * 7 + seed) % 13) as f32 - 6.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    facestream::gallery::Template {
        id: uuid::Uuid::now_v7(),
        identity_id: identity,
        model: model.to_string(),
        embedding: v,
        quality: 0.8,
        source: format!("synthetic {seed}"),
        created: chrono::Utc::now(),
        crop: None,
    }
}
