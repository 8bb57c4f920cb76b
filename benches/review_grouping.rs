//! `GET /v1/review/unknowns` at 10,000 kept tracks: the groups kept as tracks come and go
//! (`ReviewStore::with_groups`, what the API does now) beside grouping every track on
//! every call (`ReviewStore::list` + `review::group`, what it did before), on the same
//! SQLite store in the same run. The nearest-identity search of the groups shown is the
//! same in both and left out.
//!
//! `cargo bench --bench review_grouping` (`-- --tracks N --people P` to change the queue).

mod support;

use std::time::{Duration, Instant};
use support::{arg, machine, ms};

use facestream::review::{group, ReviewShot, ReviewStore, UnknownTrack};
use uuid::Uuid;

fn unit(seed: u64) -> Vec<f32> {
    facestream::vectors::random_unit(seed, 128)
}

/// `base` moved towards noise (cosine to it about 0.86).
fn near(base: &[f32], seed: u64) -> Vec<f32> {
    let noise = unit(seed);
    let v: Vec<f32> = base.iter().zip(&noise).map(|(b, n)| b + 0.6 * n).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let tracks = arg("--tracks", 10_000);
    let people = arg("--people", 2_500);
    println!("{}", machine());
    let dir = std::env::temp_dir().join(format!("facestream-bench-review-{}", Uuid::now_v7()));
    let store = ReviewStore::open(&dir.join("review.db")).unwrap();
    let faces: Vec<Vec<f32>> = (0..people as u64).map(|p| unit(1 + p)).collect();
    let now = chrono::Utc::now();
    let track = |n: usize| {
        let template = near(&faces[n % people], 1_000_000 + n as u64);
        let seen = now - chrono::TimeDelta::seconds((tracks - n) as i64);
        UnknownTrack {
            id: Uuid::now_v7(),
            camera: format!("cam{}", n % 4),
            first_seen: seen,
            last_seen: seen,
            model: "sface@2021dec".into(),
            template: template.clone(),
            quality: 0.4 + (n % 6) as f32 / 10.0,
            similarity: None,
            shots: vec![ReviewShot {
                quality: 0.7,
                embedding: template,
                jpeg: vec![0u8; 1024],
            }],
        }
    };
    for n in 0..tracks {
        store.insert(&track(n)).unwrap();
    }
    println!("{tracks} tracks of {people} people in the store");

    // before: every track read with its template and compared with every group, per call
    let mut before = Vec::new();
    let mut before_groups = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let all = store.list(None).unwrap();
        before_groups = group(&all, 0.5).len();
        before.push(t.elapsed());
    }
    // now: the first call builds the groups, later calls look each track up
    let page = || {
        let all = store.summaries().unwrap();
        store
            .with_groups(0.5, &all, |g| g.groups_of(&all).len())
            .unwrap()
    };
    let t = Instant::now();
    let first_groups = page();
    let build = t.elapsed();
    let mut after = Vec::new();
    let mut after_groups = 0;
    for _ in 0..10 {
        let t = Instant::now();
        after_groups = page();
        after.push(t.elapsed());
    }
    let t = Instant::now();
    let all = store.summaries().unwrap();
    let read = t.elapsed();
    let t = Instant::now();
    store
        .with_groups(0.5, &all, |g| g.groups_of(&all).len())
        .unwrap();
    println!(
        "of a page: reading the tracks {}, their groups {}",
        ms(read),
        ms(t.elapsed())
    );
    // a new track stored (joins its group as it is stored), then a page
    let t = Instant::now();
    store.insert(&track(tracks)).unwrap();
    let stored = t.elapsed();
    let t = Instant::now();
    page();
    let next_page = t.elapsed();
    let (before, after) = (median(before), median(after));
    println!(
        "grouping every call (before): {} per page, {before_groups} groups (median of 3)",
        ms(before)
    );
    println!(
        "kept groups (now):            {} per page, {after_groups} groups (median of 10); \
         first page {} ({first_groups} groups, builds them once); storing a track {}, \
         the page after it {}",
        ms(after),
        ms(build),
        ms(stored),
        ms(next_page)
    );
    println!(
        "per page: {:.0}x faster",
        before.as_secs_f64() / after.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}
