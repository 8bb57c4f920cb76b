//! Erasing people from the appearance index at 1,000,000 appearances: what an erasure
//! does to the index now (each of the person's rows found by binary search and left as a
//! tombstone, a compaction once a quarter is dead: [`AppearanceIndex::remove_one`]) beside
//! what it did before (one pass over every row per erasure, moving every row after the
//! first removed one, as `Vec::retain`-style compaction did; and one `Vec::remove` of rows
//! and codes per row, as `remove_one` did for the feed), on copies of one index in the
//! same run. The store's own delete is the same in both and left out.
//!
//! `cargo bench --bench history_erase` (`-- --rows N --people P --per-person K`).

mod support;

use std::time::Instant;
use support::{arg, machine, ms};

use facestream::history::index::{AppearanceIndex, Filter};

/// The removal before this change, on plain vectors: rows of (seq, first_ms) and codes.
struct Before {
    rows: Vec<(i64, i64)>,
    codes: Vec<i8>,
    dim: usize,
}

impl Before {
    /// One erasure: a pass over every row, moving each kept row after the first removed.
    fn erase(&mut self, gone: &std::collections::HashSet<i64>) {
        let dim = self.dim;
        let mut kept = 0;
        for i in 0..self.rows.len() {
            if gone.contains(&self.rows[i].0) {
                continue;
            }
            if kept != i {
                self.rows[kept] = self.rows[i];
                self.codes.copy_within(i * dim..(i + 1) * dim, kept * dim);
            }
            kept += 1;
        }
        self.rows.truncate(kept);
        self.codes.truncate(kept * dim);
    }

    /// One feed removal: `Vec::remove` of the row and a drain of its codes.
    fn remove_one(&mut self, seq: i64, first_ms: i64) {
        let at = self.rows.partition_point(|r| (r.1, r.0) < (first_ms, seq));
        if self.rows.get(at).is_some_and(|r| r.0 == seq) {
            self.rows.remove(at);
            self.codes.drain(at * self.dim..(at + 1) * self.dim);
        }
    }
}

fn main() {
    let rows = arg("--rows", 1_000_000);
    let people = arg("--people", 100);
    let per_person = arg("--per-person", 20);
    println!("{}", machine());
    let dim = 128;
    // one template for every row: the cost measured is the removal, not the vectors
    let template = facestream::vectors::random_unit(1, dim);
    let mut index = AppearanceIndex::new(dim);
    index.reserve(rows);
    for seq in 0..rows as i64 {
        index.insert(seq, seq * 100, seq * 100 + 5000, "cam", false, &template);
    }
    let mut before = Before {
        rows: (0..rows as i64).map(|s| (s, s * 100)).collect(),
        codes: vec![1; rows * dim],
        dim,
    };
    // each person's rows spread over the whole history
    let victims: Vec<Vec<i64>> = (0..people)
        .map(|p| {
            (0..per_person)
                .map(|k| ((p * 7919 + k * 104_729) % rows) as i64)
                .collect()
        })
        .collect();
    println!(
        "index: {rows} appearances ({} MB), erasing {people} people of {per_person} appearances each",
        index.memory_bytes() / 1_000_000
    );

    let t = Instant::now();
    for person in &victims {
        for &seq in person {
            index.remove_one(seq, seq * 100);
        }
    }
    let now = t.elapsed();
    let probe_ok = index.len()
        == rows
            - victims
                .iter()
                .flatten()
                .collect::<std::collections::HashSet<_>>()
                .len();

    let t = Instant::now();
    for person in &victims {
        before.erase(&person.iter().copied().collect());
    }
    let pass = t.elapsed();
    assert_eq!(before.rows.len(), index.len());

    // the feed's removals, one row at a time (another node's erasure), on a fresh copy
    let mut feed = Before {
        rows: (0..rows as i64).map(|s| (s, s * 100)).collect(),
        codes: vec![1; rows * dim],
        dim,
    };
    let t = Instant::now();
    for person in &victims {
        for &seq in person {
            feed.remove_one(seq, seq * 100);
        }
    }
    let one_by_one = t.elapsed();
    let scan = index.scanned(&Filter::default());
    println!("now (tombstones, binary search):      {:>10}  ({} left, {} tombstones, consistent: {probe_ok})", ms(now), index.len(), index.tombstones());
    println!(
        "before, one pass per erasure:         {:>10}  ({:.0}x)",
        ms(pass),
        pass.as_secs_f64() / now.as_secs_f64()
    );
    println!(
        "before, Vec::remove per row (feed):   {:>10}  ({:.0}x)",
        ms(one_by_one),
        one_by_one.as_secs_f64() / now.as_secs_f64()
    );
    println!("rows a full search scans now: {scan}");
}
