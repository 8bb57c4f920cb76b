//! A throw-away `nats-server -js` (Debian's `nats-server`, `make setup` installs it) with
//! its store in a temp folder, and the messages of its `FACESTREAM` stream.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::Proc;

/// `nats-server -js` with its store in `dir/js`, on `port` (`None`: one it chooses);
/// returns once it is ready, with its port.
pub fn nats_server(dir: &Path, port: Option<u16>, log: &str) -> (Proc, u16) {
    let log = dir.join(log);
    let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
    let child = Command::new(super::installed(
        &["/usr/sbin/nats-server", "/usr/bin/nats-server"],
        "nats-server",
    ))
    .args(["-js", "-a", "127.0.0.1", "-p", &port_arg, "-sd"])
    .arg(dir.join("js"))
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap())
    .spawn()
    .unwrap();
    let mut server = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let listening = text.lines().find_map(|l| {
            l.split("Listening for client connections on ")
                .nth(1)?
                .rsplit(':')
                .next()?
                .trim()
                .parse::<u16>()
                .ok()
        });
        if let (Some(p), true) = (listening, text.contains("Server is ready")) {
            return (server, p);
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("nats-server exited ({status}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stream's messages, in order (a fresh connection each time: the server restarts).
pub async fn stored(port: u16) -> Vec<jetstream::message::StreamMessage> {
    let Ok(client) = async_nats::connect(format!("nats://127.0.0.1:{port}")).await else {
        return Vec::new();
    };
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream("FACESTREAM").await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}
