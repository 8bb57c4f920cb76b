//! A throw-away PostgreSQL server for the tests: Debian's `postgresql` package (`make
//! setup` installs it), `initdb` in a temp folder and `postgres` on a loopback port,
//! stopped and restarted at will. PostgreSQL refuses to run as root, so under root (CI)
//! it runs as the package's `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Proc;

pub struct Postgres {
    server: Option<Proc>,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// (uid, gid) to run as when the tests run as root.
    user: Option<(u32, u32)>,
}

/// The newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.retain(|b| b.join("postgres").exists());
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("postgresql is not installed: run `make test` (scripts/install_apt.sh installs it)")
    })
}

/// The `postgres` account's ids when running as root.
fn run_as() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("no postgres account (the postgresql package creates it)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

impl Postgres {
    /// `initdb` in `dir/pg` (user `facestream`, trust on loopback) and start the server.
    pub fn start(dir: &Path) -> Postgres {
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).unwrap();
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
        }
        let mut pg = Postgres {
            server: None,
            port: super::free_port(),
            bin: bin_dir(),
            data: root.join("data"),
            log: root.join("server.log"),
            user,
        };
        let out = pg
            .command("initdb")
            .args([
                "-U",
                "facestream",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&pg.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.resume();
        pg
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// The connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgresql://facestream@127.0.0.1:{}/postgres", self.port)
    }

    /// Start (again) on the same port and data, once it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .args(["-c", "unix_socket_directories=", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ::postgres::Client::connect(&self.url(), ::postgres::NoTls).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.server.as_mut().map(|s| s.0.try_wait()) {
                panic!(
                    "postgres exited ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within 60 s:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server (fast shutdown: open connections are cut) and wait for it.
    pub fn stop(&mut self) {
        self.stop_server();
    }

    fn stop_server(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &server.0.id().to_string()])
            .status();
        let _ = server.0.wait();
    }
}

impl Drop for Postgres {
    /// A fast shutdown rather than the SIGKILL of [`Proc`]: PostgreSQL then removes its
    /// shared memory and lock files itself.
    fn drop(&mut self) {
        self.stop_server();
    }
}
