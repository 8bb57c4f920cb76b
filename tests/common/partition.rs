//! A silent network partition on loopback: an nftables table of the test's own that
//! drops every packet sent to one port, so connections to a server on that port stay open
//! and get no answer (nothing is refused or reset, as with a cut cable or a firewall that
//! drops). Removed when dropped. Needs root and Debian's `nftables` (`make setup` installs
//! it).

use std::process::Command;

pub struct Partition {
    table: String,
}

fn nft(args: &[&str]) {
    let nft = super::installed(&["/usr/sbin/nft", "/sbin/nft"], "nftables");
    let out = Command::new(nft).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Partition {
    /// Drop everything sent to `port` on loopback from now on.
    pub fn drop_port(port: u16) -> Partition {
        let table = format!("facestream_test_{}_{port}", std::process::id());
        nft(&["add", "table", "inet", &table]);
        nft(&[
            "add",
            "chain",
            "inet",
            &table,
            "input",
            "{ type filter hook input priority -10 ; }",
        ]);
        nft(&[
            "add",
            "rule",
            "inet",
            &table,
            "input",
            "iif",
            "lo",
            "tcp",
            "dport",
            &port.to_string(),
            "drop",
        ]);
        Partition { table }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let nft = super::installed(&["/usr/sbin/nft", "/sbin/nft"], "nftables");
        let _ = Command::new(nft)
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}
