//! `facestream bench-history`: appearance search at scale on vectors given as a file, so
//! FAISS can be measured on exactly the same vectors (scripts/bench_history.py).
//!
//! The file's rows (little-endian f32, 128 per row) become appearances in time order,
//! spread evenly over `--span-days` and over 8 cameras, written to a fresh history file;
//! the index is then built from the file as `serve` builds it at start. Each probe is
//! searched on one thread: over everything (newest first, and by similarity) and over the
//! last `--window-hours`. Prints one JSON line of figures; `--found` writes, per probe, the
//! row numbers the whole-history search returned (at most `--limit`), for checking them
//! against FAISS's range search.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use facestream::history::{
    Appearance, AppearanceStore, History, HistoryConfig, Order, Query, SqliteHistory,
};
use uuid::Uuid;

use super::bench_search::{read_f32, rss_kib};

#[derive(clap::Args)]
pub struct BenchHistoryArgs {
    /// Appearance templates (f32 LE, 128 per row), in time order.
    #[arg(long)]
    appearances: PathBuf,
    /// Probe vectors (f32 LE, 128 per row).
    #[arg(long)]
    probes: PathBuf,
    /// The history file to create (must not exist).
    #[arg(long)]
    db: PathBuf,
    #[arg(long, default_value_t = 7.0)]
    span_days: f64,
    #[arg(long, default_value_t = 1.0)]
    window_hours: f64,
    #[arg(long, default_value_t = 0.5)]
    min_similarity: f32,
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Write the rows each probe found over the whole history here (one line per probe).
    #[arg(long)]
    found: Option<PathBuf>,
}

/// (mean, p50, p99) in ms.
fn summary(mut times: Vec<f64>) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    (
        mean,
        times[times.len() / 2],
        times[((times.len() - 1) as f64 * 0.99) as usize],
    )
}

pub fn run(args: BenchHistoryArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.db.exists(),
        "{} exists: the benchmark writes a fresh history",
        args.db.display()
    );
    let vectors = read_f32(&args.appearances)?;
    let probes = read_f32(&args.probes)?;
    let n = vectors.len() / 128;
    let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("a valid time");
    let step_ms = args.span_days * 86_400_000.0 / n.max(1) as f64;
    let at = |i: usize| t0 + TimeDelta::milliseconds((i as f64 * step_ms) as i64);
    let config = HistoryConfig {
        enabled: true,
        database: args.db.clone(),
        retention_s: 366 * 86_400,
        ..HistoryConfig::default()
    };
    let t = Instant::now();
    {
        let store = SqliteHistory::open(&args.db)?;
        for (c, chunk) in vectors.chunks(128 * 50_000).enumerate() {
            let batch: Vec<Appearance> = chunk
                .chunks_exact(128)
                .enumerate()
                .map(|(k, v)| {
                    let i = c * 50_000 + k;
                    Appearance {
                        track_id: Uuid::now_v7(),
                        camera: format!("cam{}", i % 8),
                        node: "bench".into(),
                        first_seen: at(i),
                        last_seen: at(i) + TimeDelta::seconds(4),
                        model: "bench@1".into(),
                        template: v.to_vec(),
                        quality: 0.7,
                        event_id: None,
                        identity: None,
                        similarity: None,
                        shot: None,
                        spans: Vec::new(),
                    }
                })
                .collect();
            store.insert_many(&batch)?;
        }
    }
    let write_s = t.elapsed().as_secs_f64();
    drop(vectors);
    let rss_before = rss_kib();
    let t = Instant::now();
    let history = History::open(&config, "bench@1", 128)?;
    let build_s = t.elapsed().as_secs_f64();
    let rss_index = rss_kib().saturating_sub(rss_before);
    let file_bytes = std::fs::metadata(&args.db).map(|m| m.len()).unwrap_or(0);
    let query = |order: Order, window: bool| Query {
        camera: None,
        from: window.then(|| at(n) - TimeDelta::milliseconds((args.window_hours * 3.6e6) as i64)),
        to: None,
        min_similarity: args.min_similarity,
        limit: args.limit,
        order,
        only_unknown: false,
    };
    let mut figures = Vec::new();
    let mut found_lines = String::new();
    for (label, order, window) in [
        ("all_newest", Order::Newest, false),
        ("all_similarity", Order::Similarity, false),
        ("window_newest", Order::Newest, true),
    ] {
        let q = query(order, window);
        let mut times = Vec::new();
        let mut hits = 0usize;
        let mut scanned = 0usize;
        for probe in probes.chunks_exact(128) {
            let t = Instant::now();
            let r = history.search(probe, &q)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            hits += r.items.len();
            scanned = r.scanned;
            if label == "all_newest" {
                let mut rows: Vec<i64> = r.items.iter().map(|f| f.stored.seq - 1).collect();
                rows.sort_unstable();
                found_lines.push_str(
                    &rows
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                found_lines.push('\n');
            }
        }
        let (mean, p50, p99) = summary(times);
        figures.push(format!(
            "\"{label}\": {{\"ms_mean\": {mean:.3}, \"ms_p50\": {p50:.3}, \"ms_p99\": {p99:.3}, \"results\": {hits}, \"scanned\": {scanned}}}"
        ));
    }
    if let Some(path) = &args.found {
        std::fs::write(path, found_lines)?;
    }
    println!(
        "{{\"n\": {n}, \"probes\": {}, \"write_s\": {write_s:.1}, \"build_s\": {build_s:.2}, \"rss_growth_kib\": {rss_index}, \"file_bytes\": {file_bytes}, {}}}",
        probes.len() / 128,
        figures.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
