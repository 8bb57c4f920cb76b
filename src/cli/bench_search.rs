//! `facestream bench-search`: 1:N search latency and memory on vectors given as files, so
//! FAISS can be measured on exactly the same vectors (scripts/bench_search.py).
//!
//! Files are little-endian f32, row-major, 128 values per row. Each gallery row is its
//! own identity; probes are searched one at a time on one thread.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use facestream::gallery::index::{Pooling, Scan, SearchIndex};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct BenchSearchArgs {
    /// Gallery vectors (f32 LE, 128 per row).
    #[arg(long)]
    gallery: PathBuf,
    /// Probe vectors (f32 LE, 128 per row).
    #[arg(long)]
    probes: PathBuf,
    /// `exact` (f32 scan) or `compact` (int8 scan + exact re-ranking).
    #[arg(long, default_value = "compact")]
    mode: String,
    /// Candidates re-ranked in compact mode.
    #[arg(long, default_value_t = 256)]
    candidates: usize,
    /// Write the top-1 row index of every probe here (one per line).
    #[arg(long)]
    top1: Option<PathBuf>,
}

/// 128-d f32 rows from a little-endian file (also `bench-history`'s input).
pub(crate) fn read_f32(path: &PathBuf) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() % (4 * 128) == 0,
        "{}: not a whole number of 128-d f32 rows",
        path.display()
    );
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// This process's resident memory, KiB.
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn run(args: BenchSearchArgs) -> anyhow::Result<ExitCode> {
    let scan = match args.mode.as_str() {
        "exact" => Scan::Exact,
        "compact" => Scan::Compact {
            candidates: args.candidates,
        },
        other => anyhow::bail!("--mode {other}: expected exact or compact"),
    };
    let gallery = read_f32(&args.gallery)?;
    let probes = read_f32(&args.probes)?;
    let n = gallery.len() / 128;
    let rss_before = rss_kib();
    // One template per identity, as FAISS sees the vectors: the scan over templates
    // (`max`) and over pooled rows (`quality_mean`) are then the same rows and code path;
    // `max` keeps the memory figure to one copy of the vectors.
    let mut index = SearchIndex::with_pooling("bench@1", 128, Pooling::Max);
    // Measure the form asked for at every size (the service itself switches to the f32
    // scan below `COMPACT_FROM` templates, where it is faster).
    index.set_compact_from(0);
    index.reserve(n);
    let mut row_of = std::collections::HashMap::with_capacity(n);
    let t = Instant::now();
    for row in gallery.chunks_exact(128) {
        let template = Uuid::now_v7();
        row_of.insert(template, row_of.len());
        index.insert(Uuid::now_v7(), template, "bench@1", row, 1.0)?;
    }
    let build_s = t.elapsed().as_secs_f64();
    drop(gallery);
    let rss_index = rss_kib().saturating_sub(rss_before);
    let mut times = Vec::new();
    let mut top1 = Vec::new();
    for probe in probes.chunks_exact(128) {
        let t = Instant::now();
        let hits = index.search(probe, 1, scan)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        top1.push(
            hits.first()
                .map(|h| row_of[&h.template])
                .unwrap_or(usize::MAX),
        );
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "{{\"n\": {n}, \"mode\": \"{}\", \"probes\": {}, \"ms_mean\": {mean:.3}, \"ms_p50\": {:.3}, \"ms_p99\": {:.3}, \"index_bytes\": {}, \"rss_growth_kib\": {rss_index}, \"build_s\": {build_s:.2}}}",
        args.mode,
        times.len(),
        times[times.len() / 2],
        times[((times.len() - 1) as f64 * 0.99) as usize],
        index.memory_bytes(),
    );
    if let Some(path) = &args.top1 {
        std::fs::write(
            path,
            top1.iter().map(|i| format!("{i}\n")).collect::<String>(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
