//! A node's start-up at 2,000,000 appearances in PostgreSQL: the appearance index built
//! the way `serve` builds it now (keyset pages of [`LOAD_PAGE`] rows, each its own
//! statement) beside the one statement for every row it ran before, under the same
//! statement timeout the service sets on its connections, on the same database in the
//! same run.
//!
//! `cargo bench --bench history_load` (`-- --rows N --repeat R --explain 1`). Starts its own PostgreSQL (Debian's
//! `postgresql`, as the tests do) in a temp folder, fills `appearances` server-side, and
//! has the server log every statement's duration to find the slowest page.
//!
//! "Before" is the same start-up with one page holding every row: one statement,
//! streamed row by row into the index as the old `for_each` did (the statement lasts as
//! long as the client takes to consume it, and the timeout counts all of it).

mod support;

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;
use support::{arg, machine};

use facestream::history::postgres::LOAD_PAGE;
use facestream::history::{History, HistoryConfig, PgHistory};
use facestream::pg::STATEMENT_TIMEOUT_MS;

const MODEL: &str = "sface@2021dec";

fn main() {
    let rows = arg("--rows", 2_000_000);
    println!("{}", machine());
    let dir = common::temp_dir("bench-history-load");
    let pg = common::postgres::Postgres::start(&dir);
    let url = pg.url();
    // the service's migrations create the tables
    drop(PgHistory::open(&url).expect("migrate"));
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // 1,000 distinct unit templates, repeated: the rows' contents do not change the cost
    let t = Instant::now();
    db.batch_execute("CREATE TABLE bench_templates (k int PRIMARY KEY, t bytea NOT NULL)")
        .unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for k in 0..1000i32 {
        let v: Vec<f32> = (0..128).map(|_| next()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let bytes: Vec<u8> = v.iter().flat_map(|x| (x / norm).to_le_bytes()).collect();
        db.execute("INSERT INTO bench_templates VALUES ($1, $2)", &[&k, &bytes])
            .unwrap();
    }
    // rows spread over 30 days, in time order, as a camera writes them
    let span_ms = 30 * 86_400_000i64;
    let t0 = 1_800_000_000_000i64;
    let chunk = 250_000usize;
    for start in (0..rows).step_by(chunk) {
        let end = (start + chunk).min(rows);
        db.execute(
            "INSERT INTO appearances (seq, track_id, camera, node, first_seen_ms, last_seen_ms,
                 model, template, quality, event_id, identity_id, similarity, shot)
             SELECT nextval('appearance_seq'), gen_random_uuid(), 'cam' || (g % 8), 'bench',
                 $1 + g * $2, $1 + g * $2 + 4000, $3, t.t, 0.7, NULL, NULL, NULL, NULL
             FROM generate_series($4::bigint, $5::bigint) g
             JOIN bench_templates t ON t.k = g % 1000",
            &[
                &t0,
                &(span_ms / rows as i64),
                &MODEL,
                &(start as i64),
                &(end as i64 - 1),
            ],
        )
        .unwrap();
    }
    db.batch_execute("VACUUM ANALYZE appearances").unwrap();
    let bytes: i64 = db
        .query_one("SELECT pg_total_relation_size('appearances')", &[])
        .unwrap()
        .get(0);
    println!(
        "{rows} appearances written in {:.1} s ({} MiB with indexes)",
        t.elapsed().as_secs_f64(),
        bytes >> 20
    );
    if arg("--explain", 0) == 1 {
        // the plan of a page from the middle of the history
        let mid = t0 + span_ms / 2;
        for line in db
            .query(
                "EXPLAIN (ANALYZE, BUFFERS) SELECT seq, template FROM appearances
                 WHERE model = $1 AND (first_seen_ms, seq) > ($2, $3)
                 ORDER BY first_seen_ms, seq LIMIT $4",
                &[&MODEL, &mid, &0i64, &(LOAD_PAGE as i64)],
            )
            .unwrap()
        {
            println!("  {}", line.get::<_, String>(0));
        }
    }
    // every statement's duration in the server's log, to find the slowest page
    db.batch_execute("ALTER SYSTEM SET log_min_duration_statement = 0")
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").unwrap();

    let log = dir.join("pg").join("server.log");
    for round in 1..=arg("--repeat", 3) {
        println!("round {round}:");
        load(&url, &log, rows);
    }
}

/// One start-up each way, the old first.
fn load(url: &str, log: &std::path::Path, rows: usize) {
    // before: one statement for every row (the service's own code with a page holding
    // everything: the same statement as before, streamed, bar a keyset condition every
    // row meets), on the service's connection with its statement timeout
    let t = Instant::now();
    let before = History::with_store(
        Box::new(
            PgHistory::open(url)
                .unwrap()
                .with_load_page(i64::MAX as usize),
        ),
        &HistoryConfig::default(),
        MODEL,
        128,
        "bench",
    );
    let before_s = t.elapsed().as_secs_f64();
    match &before {
        Ok(h) => println!(
            "before (one statement): all {} rows indexed in {before_s:.1} s",
            h.len()
        ),
        Err(e) => println!("before (one statement): FAILED after {before_s:.1} s: {e}"),
    }
    drop(before);

    // now: what serve does at start
    let log_from = std::fs::metadata(log).map_or(0, |m| m.len()) as usize;
    let t = Instant::now();
    let history = History::with_store(
        Box::new(PgHistory::open(url).unwrap()),
        &HistoryConfig::default(),
        MODEL,
        128,
        "bench",
    )
    .expect("the index loads");
    let now_s = t.elapsed().as_secs_f64();
    let text = std::fs::read(log).unwrap();
    let pages: Vec<f64> = String::from_utf8_lossy(&text[log_from.min(text.len())..])
        .lines()
        .filter(|l| {
            l.contains("duration:")
                && l.contains("execute")
                && l.contains("template")
                && l.contains("FROM appearances")
        })
        .filter_map(|l| {
            let ms = l.split("duration: ").nth(1)?.split(" ms").next()?;
            ms.trim().parse().ok()
        })
        .collect();
    let slowest = pages.iter().cloned().fold(0.0, f64::max);
    println!(
        "now (pages of {LOAD_PAGE}): {} rows indexed in {now_s:.1} s, {} statements, slowest {:.0} ms (timeout {} ms)",
        history.len(),
        pages.len(),
        slowest,
        STATEMENT_TIMEOUT_MS
    );
    assert_eq!(history.len(), rows, "every row indexed");
}
