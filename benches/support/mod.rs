//! What every bench here shares: its `--name N` arguments, a time as text, and the
//! machine line printed first (figures from the AVX-512 and AVX2 kinds of machine differ,
//! so every run says which it was).

#![allow(dead_code)]

use std::time::Duration;

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `machine: <model>, <n> cores, flags: <avx2 avx512f avx512_vnni, those present>`.
pub fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .map(|l| {
            l.split_whitespace()
                .filter(|f| ["avx2", "avx512f", "avx512_vnni"].contains(f))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "machine: {model}, {} cores, flags: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        flags.join(" ")
    )
}
