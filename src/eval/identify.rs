//! Open-set 1:N identification on an LFW-style folder (`<Name>/<Name>_NNNN.jpg`).
//!
//! Gallery: the first photo of every person with at least two photos. Mated probes: their
//! other photos (should match that person). Non-mated probes: every photo of the people
//! with a single photo (not enrolled; should come out unknown). Decisions use the
//! configured threshold and margin ([`crate::stages::matching`]), over the exact search
//! index ([`crate::gallery::index`]). Results are split by probe quality class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use super::pairs::{Degrade, ImageKey, LfwError};
use crate::engine::{FaceEngine, Timings};
use crate::gallery::index::{Scan, SearchIndex};
use crate::stages::matching::{decide, Decision, MatchConfig};
use crate::stages::quality::QualityClass;

/// Rates for one slice of probes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rates {
    pub mated_probes: usize,
    /// Mated probes matched to the right person (true positive identification rate).
    pub tpir: f64,
    /// Mated probes matched to the wrong person.
    pub wrong_identity_rate: f64,
    pub non_mated_probes: usize,
    /// Non-mated probes matched to anyone (false positive identification rate).
    pub fpir: f64,
}

/// The report of `facestream eval lfw-identify`.
#[derive(Debug, Clone, Serialize)]
pub struct IdentifyReport {
    pub gallery_identities: usize,
    pub threshold: f32,
    pub margin: f32,
    pub all: Rates,
    /// By the probe's quality class.
    pub by_probe_quality: BTreeMap<String, Rates>,
    pub degrade: Option<Degrade>,
    pub detector_misses: usize,
    /// The same probes at other thresholds (margin unchanged), to choose an operating point.
    pub threshold_sweep: Vec<(f32, Rates)>,
}

#[derive(Default)]
struct Tally {
    mated: usize,
    correct: usize,
    wrong: usize,
    non_mated: usize,
    false_matches: usize,
}

impl Tally {
    fn rates(&self) -> Rates {
        let rate = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        Rates {
            mated_probes: self.mated,
            tpir: rate(self.correct, self.mated),
            wrong_identity_rate: rate(self.wrong, self.mated),
            non_mated_probes: self.non_mated,
            fpir: rate(self.false_matches, self.non_mated),
        }
    }
}

fn list_people(images: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, LfwError> {
    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| LfwError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut people = Vec::new();
    for entry in read(images)?.flatten() {
        if entry.path().is_dir() {
            let mut photos: Vec<PathBuf> =
                read(&entry.path())?.flatten().map(|e| e.path()).collect();
            photos.sort();
            if !photos.is_empty() {
                people.push((entry.file_name().to_string_lossy().into_owned(), photos));
            }
        }
    }
    people.sort();
    Ok(people)
}

/// Run the protocol; `progress(done, total)` after each image.
pub fn evaluate(
    engine: &mut FaceEngine,
    images: &Path,
    matching: &MatchConfig,
    degrade: Option<Degrade>,
    max_people: Option<usize>,
    mut progress: impl FnMut(usize, usize),
) -> Result<IdentifyReport, LfwError> {
    let mut people = list_people(images)?;
    if let Some(n) = max_people {
        people.truncate(n);
    }
    let total: usize = people.iter().map(|(_, p)| p.len()).sum();
    let mut done = 0;
    let mut misses = 0;
    let mut timings = Timings::default();
    let mut embed = |engine: &mut FaceEngine,
                     key: &ImageKey,
                     path: &Path|
     -> Result<(Vec<f32>, QualityClass), LfwError> {
        let (face, _) =
            super::pairs::centre_face(engine, path, key, degrade, &mut timings, &mut misses)?;
        done += 1;
        progress(done, total);
        Ok((face.embedding, face.quality.class))
    };
    let model = engine.model_id().to_string();
    let mut index = SearchIndex::new(&model, 128);
    let mut identity_of: BTreeMap<String, Uuid> = BTreeMap::new();
    let mut probes: Vec<(Option<Uuid>, Vec<f32>, QualityClass)> = Vec::new();
    for (name, photos) in &people {
        let key = |i: usize| (name.clone(), i as u32 + 1);
        if photos.len() >= 2 {
            let id = Uuid::now_v7();
            identity_of.insert(name.clone(), id);
            let (e, _) = embed(engine, &key(0), &photos[0])?;
            index
                .insert(id, Uuid::now_v7(), &model, &e)
                .map_err(|e| LfwError::Parse {
                    path: photos[0].clone(),
                    line: 0,
                    message: e.to_string(),
                })?;
            for (i, p) in photos.iter().enumerate().skip(1) {
                let (e, q) = embed(engine, &key(i), p)?;
                probes.push((Some(id), e, q));
            }
        } else {
            let (e, q) = embed(engine, &key(0), &photos[0])?;
            probes.push((None, e, q));
        }
    }
    let sweep_thresholds: Vec<f32> = (0..=8).map(|k| 0.30 + 0.05 * k as f32).collect();
    let mut sweep: Vec<Tally> = sweep_thresholds.iter().map(|_| Tally::default()).collect();
    let mut all = Tally::default();
    let mut by_quality: BTreeMap<String, Tally> = BTreeMap::new();
    for (truth, embedding, class) in &probes {
        let hits = index
            .search(embedding, 2, Scan::Exact)
            .map_err(|e| LfwError::Parse {
                path: images.to_path_buf(),
                line: 0,
                message: e.to_string(),
            })?;
        for (t, threshold) in sweep.iter_mut().zip(&sweep_thresholds) {
            let config = MatchConfig {
                threshold: *threshold,
                ..matching.clone()
            };
            tally(t, truth, &decide(&hits, &config));
        }
        let decision = decide(&hits, matching);
        let slice = by_quality
            .entry(
                if *class == QualityClass::High {
                    "high"
                } else {
                    "low"
                }
                .to_string(),
            )
            .or_default();
        for t in [&mut all, slice] {
            tally(t, truth, &decision);
        }
    }
    Ok(IdentifyReport {
        gallery_identities: identity_of.len(),
        threshold: matching.threshold,
        margin: matching.margin,
        all: all.rates(),
        by_probe_quality: by_quality
            .into_iter()
            .map(|(k, v)| (k, v.rates()))
            .collect(),
        degrade,
        detector_misses: misses,
        threshold_sweep: sweep_thresholds
            .into_iter()
            .zip(sweep.iter().map(Tally::rates))
            .collect(),
    })
}

fn tally(t: &mut Tally, truth: &Option<Uuid>, decision: &Decision) {
    match (truth, decision) {
        (Some(id), Decision::Match { identity, .. }) => {
            t.mated += 1;
            if identity == id {
                t.correct += 1;
            } else {
                t.wrong += 1;
            }
        }
        (Some(_), Decision::Unknown { .. }) => t.mated += 1,
        (None, Decision::Match { .. }) => {
            t.non_mated += 1;
            t.false_matches += 1;
        }
        (None, Decision::Unknown { .. }) => t.non_mated += 1,
    }
}
