//! Open-set 1:N identification on an LFW-style folder (`<Name>/<Name>_NNNN.jpg`), split by
//! image quality.
//!
//! Gallery: the first photo of every person with at least two photos (one template per
//! identity). Mated probes: their other photos. Non-mated probes: every photo of the
//! people with a single photo (not enrolled; they should come out unknown). On LFW that is
//! 1,680 identities, 7,484 mated and 4,069 non-mated probes.
//!
//! Each image is analysed twice: as it is (*high*) and as its low-quality copy
//! ([`super::degrade`]; downscaled, blurred, recompressed). Three splits:
//! `high_high` (high probes against the high gallery), `low_high` (low probes, high
//! gallery: a camera against enrolment photos) and `low_low` (both low). Per split:
//! - **rank-1**: mated probes whose best identity is the right one (closed set);
//! - **FNIR at FPIR x**: the threshold is set so that at most a share x of non-mated
//!   probes score above it; FNIR is the share of mated probes *not* returned at rank 1
//!   above it (the NIST FRVT definition, rank 1);
//! - the DET curve (FNIR against FPIR), and the decisions at the configured
//!   `match.threshold`/`match.margin` ([`crate::stages::matching`]).
//!
//! Scores are the service's decision score (calibrated against the gallery cohort,
//! [`calibrated_score`]); the same metrics on the raw cosine are reported beside them.
//!
//! Search is exact over [`crate::gallery::index`], as in the service.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::degrade::LowQuality;
use super::pairs::{centre_face, LfwError};
use crate::engine::{FaceEngine, Timings};
use crate::gallery::index::{Scan, SearchIndex};
use crate::stages::matching::{calibrated_score, decide, Decision, MatchConfig};

/// The three splits, in report order: (name, probe variant, gallery variant).
pub const SPLITS: [(&str, Variant, Variant); 3] = [
    ("high_high", Variant::High, Variant::High),
    ("low_high", Variant::Low, Variant::High),
    ("low_low", Variant::Low, Variant::Low),
];

/// Which copy of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    High,
    Low,
}

/// One search as the metrics need it: was the probe enrolled, did rank 1 name the right
/// identity, and the rank-1 similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    pub mated: bool,
    pub correct: bool,
    pub score: f32,
}

/// Decisions at the configured threshold and margin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Mated probes matched to the right person (true positive identification rate).
    pub tpir: f64,
    /// Mated probes matched to the wrong person.
    pub wrong_identity_rate: f64,
    /// Non-mated probes matched to anyone (false positive identification rate).
    pub fpir: f64,
}

/// Metrics of one split. The OpenCV reference script writes the same fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SplitReport {
    pub mated_probes: usize,
    pub non_mated_probes: usize,
    pub rank1: f64,
    pub fnir_at_fpir_1e2: f64,
    pub fnir_at_fpir_1e3: f64,
    /// Rank-1 similarity a probe must exceed for FPIR 1e-2 / 1e-3 on this split.
    pub threshold_at_fpir_1e2: f32,
    pub threshold_at_fpir_1e3: f32,
    /// `(fpir, fnir)` points, FPIR from 1e-4 to 1.
    pub det: Vec<(f64, f64)>,
    /// At the configured `match.threshold`/`match.margin`; absent in the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPoint>,
}

/// The report of `facestream eval lfw-identify`.
#[derive(Debug, Clone, Serialize)]
pub struct IdentifyReport {
    pub gallery_identities: usize,
    pub model: String,
    pub backend: String,
    pub threshold: f32,
    pub margin: f32,
    pub low_quality: LowQuality,
    pub low_images: PathBuf,
    pub detector_misses_high: usize,
    pub detector_misses_low: usize,
    pub seconds_per_image_high: f64,
    pub seconds_per_image_low: f64,
    /// `match.cohort` and the model's impostor scores: the calibration the decisions used.
    pub cohort: usize,
    pub impostors: crate::stages::matching::ImpostorModel,
    /// On the score the service decides on (cohort-calibrated; raw when `match.cohort` is 0).
    pub splits: BTreeMap<String, SplitReport>,
    /// The same searches ranked by the raw rank-1 cosine, for comparison.
    pub splits_raw: BTreeMap<String, SplitReport>,
}

/// Share of `hits` in `of`; NaN when `of` is 0.
fn rate(hits: usize, of: usize) -> f64 {
    if of == 0 {
        f64::NAN
    } else {
        hits as f64 / of as f64
    }
}

/// FNIR at the threshold that lets at most `fpir` of the non-mated probes through, and
/// that threshold (a probe is accepted when its score is strictly above it).
pub fn fnir_at_fpir(searches: &[Search], fpir: f64) -> (f64, f32) {
    let mut non_mated: Vec<f32> = searches
        .iter()
        .filter(|s| !s.mated)
        .map(|s| s.score)
        .collect();
    non_mated.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpir * non_mated.len() as f64).floor() as usize;
    let threshold = non_mated.get(allowed).copied().unwrap_or(f32::NEG_INFINITY);
    (fnir_above(searches, threshold), threshold)
}

fn fnir_above(searches: &[Search], threshold: f32) -> f64 {
    let mated = searches.iter().filter(|s| s.mated);
    let missed = mated
        .clone()
        .filter(|s| !(s.correct && s.score > threshold))
        .count();
    rate(missed, mated.count())
}

/// The split's metrics from its searches.
pub fn split_metrics(searches: &[Search]) -> SplitReport {
    let mated = searches.iter().filter(|s| s.mated).count();
    let non_mated = searches.len() - mated;
    let correct = searches.iter().filter(|s| s.mated && s.correct).count();
    let (fnir_1e2, t_1e2) = fnir_at_fpir(searches, 1e-2);
    let (fnir_1e3, t_1e3) = fnir_at_fpir(searches, 1e-3);
    let det = (0..=40)
        .map(|k| {
            let target = 10f64.powf(-4.0 + 0.1 * f64::from(k));
            let (fnir, threshold) = fnir_at_fpir(searches, target);
            let through = searches
                .iter()
                .filter(|s| !s.mated && s.score > threshold)
                .count();
            (rate(through, non_mated), fnir)
        })
        .collect();
    SplitReport {
        mated_probes: mated,
        non_mated_probes: non_mated,
        rank1: rate(correct, mated),
        fnir_at_fpir_1e2: fnir_1e2,
        fnir_at_fpir_1e3: fnir_1e3,
        threshold_at_fpir_1e2: t_1e2,
        threshold_at_fpir_1e3: t_1e3,
        det,
        operating_point: None,
    }
}

/// One photo of the protocol.
struct Photo {
    /// Index of the identity when the photo is in the gallery or a mated probe.
    person: Option<usize>,
    gallery: bool,
    high: Vec<f32>,
    low: Vec<f32>,
}

impl Photo {
    fn embedding(&self, v: Variant) -> &[f32] {
        match v {
            Variant::High => &self.high,
            Variant::Low => &self.low,
        }
    }
}

fn list_people(images: &Path) -> Result<Vec<(String, Vec<String>)>, LfwError> {
    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|source| LfwError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut people = Vec::new();
    for entry in read(images)?.flatten() {
        if entry.path().is_dir() {
            let mut photos: Vec<String> = read(&entry.path())?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            photos.sort();
            if !photos.is_empty() {
                people.push((entry.file_name().to_string_lossy().into_owned(), photos));
            }
        }
    }
    people.sort();
    Ok(people)
}

/// Where to read the images and what to write besides the report.
pub struct IdentifyInputs<'a> {
    pub images: &'a Path,
    /// The low-quality copies ([`super::degrade::write_copies`]), same layout.
    pub low_images: &'a Path,
    pub low_quality: LowQuality,
    pub max_people: Option<usize>,
    /// Write every embedding here as JSON lines (`person`, `file`, `variant`, `quality`,
    /// `embedding`) for offline analysis.
    pub embeddings_out: Option<&'a Path>,
}

/// Run the protocol; `progress(done, total)` after each analysed image.
pub fn evaluate(
    engine: &mut FaceEngine,
    inputs: &IdentifyInputs<'_>,
    matching: &MatchConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<IdentifyReport, LfwError> {
    let mut people = list_people(inputs.images)?;
    if let Some(n) = inputs.max_people {
        people.truncate(n);
    }
    let total = 2 * people.iter().map(|(_, p)| p.len()).sum::<usize>();
    let dump_err = |source| LfwError::Write {
        path: inputs.embeddings_out.unwrap_or(Path::new("")).to_path_buf(),
        source,
    };
    let mut dump = match inputs.embeddings_out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| LfwError::Write {
                path: path.to_path_buf(),
                source,
            })?,
        )),
        None => None,
    };
    let mut done = 0;
    let (mut misses, mut timings) = ([0usize; 2], [Timings::default(), Timings::default()]);
    let mut photos = Vec::new();
    let mut identities = 0;
    for (name, files) in &people {
        let enrolled = files.len() >= 2;
        for (i, file) in files.iter().enumerate() {
            let mut variant = |slot: usize, root: &Path| -> Result<Vec<f32>, LfwError> {
                let path = root.join(name).join(file);
                let key = (name.clone(), i as u32 + 1);
                let (face, _) = centre_face(
                    engine,
                    &path,
                    &key,
                    None,
                    &mut timings[slot],
                    &mut misses[slot],
                )?;
                done += 1;
                progress(done, total);
                if let Some(out) = dump.as_mut() {
                    let line = serde_json::json!({
                        "person": name, "file": file,
                        "variant": if slot == 0 { "high" } else { "low" },
                        "quality": face.quality.score,
                        "interocular_px": face.quality.measures.interocular_px,
                        "embedding": face.embedding,
                    });
                    writeln!(out, "{line}").map_err(dump_err)?;
                }
                Ok(face.embedding)
            };
            let high = variant(0, inputs.images)?;
            let low = variant(1, inputs.low_images)?;
            photos.push(Photo {
                person: enrolled.then_some(identities),
                gallery: enrolled && i == 0,
                high,
                low,
            });
        }
        identities += usize::from(enrolled);
    }
    if let Some(mut out) = dump {
        out.flush().map_err(dump_err)?;
    }
    let model = engine.model_id().to_string();
    let ids: Vec<Uuid> = (0..identities).map(|_| Uuid::now_v7()).collect();
    let matching = engine.calibrate(matching);
    let (mut splits, mut splits_raw) = (BTreeMap::new(), BTreeMap::new());
    for (split, probe_variant, gallery_variant) in SPLITS {
        let mut index = SearchIndex::new(&model, 128);
        for p in photos.iter().filter(|p| p.gallery) {
            let id = ids[p.person.expect("gallery photos are enrolled")];
            // One photo per identity: its pooled row is that photo whatever its weight.
            index.insert(
                id,
                Uuid::now_v7(),
                &model,
                p.embedding(gallery_variant),
                1.0,
            )?;
        }
        let (mut searches, mut raw) = (Vec::new(), Vec::new());
        let (mut correct, mut wrong, mut false_matches) = (0, 0, 0);
        for p in photos.iter().filter(|p| !p.gallery) {
            let hits = index.search(
                p.embedding(probe_variant),
                matching.hits_needed(2),
                Scan::Exact,
            )?;
            let truth = p.person.map(|k| ids[k]);
            let best = hits.first().expect("the gallery is not empty");
            let search = |score| Search {
                mated: truth.is_some(),
                correct: truth == Some(best.identity),
                score,
            };
            raw.push(search(best.score));
            searches.push(search(
                calibrated_score(&hits, &matching, identities).expect("the gallery is not empty"),
            ));
            if let Decision::Match { identity, .. } = decide(&hits, &matching, identities) {
                match truth {
                    Some(t) if t == identity => correct += 1,
                    Some(_) => wrong += 1,
                    None => false_matches += 1,
                }
            }
        }
        let mut report = split_metrics(&searches);
        report.operating_point = Some(OperatingPoint {
            tpir: rate(correct, report.mated_probes),
            wrong_identity_rate: rate(wrong, report.mated_probes),
            fpir: rate(false_matches, report.non_mated_probes),
        });
        splits.insert(split.to_string(), report);
        splits_raw.insert(split.to_string(), split_metrics(&raw));
    }
    let per_image = |t: &Timings| t.total().as_secs_f64() / photos.len().max(1) as f64;
    Ok(IdentifyReport {
        gallery_identities: identities,
        model,
        backend: engine.backend_description().to_string(),
        threshold: matching.threshold,
        margin: matching.margin,
        low_quality: inputs.low_quality,
        low_images: inputs.low_images.to_path_buf(),
        detector_misses_high: misses[0],
        detector_misses_low: misses[1],
        seconds_per_image_high: per_image(&timings[0]),
        seconds_per_image_low: per_image(&timings[1]),
        cohort: matching.cohort,
        impostors: matching.impostors,
        splits,
        splits_raw,
    })
}

/// What `scripts/opencv_identify_reference.py` writes.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceReport {
    pub splits: BTreeMap<String, SplitReport>,
    pub detector_misses_high: usize,
    pub detector_misses_low: usize,
    pub seconds_per_image: f64,
    pub low_quality: LowQuality,
    /// `--max-people` of the reference run (0: everyone).
    #[serde(default)]
    pub max_people: usize,
    #[serde(default)]
    pub opencv_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(mated: bool, correct: bool, score: f32) -> Search {
        Search {
            mated,
            correct,
            score,
        }
    }

    #[test]
    fn fnir_at_fpir_sets_the_threshold_from_the_strangers() {
        // 10 strangers scoring 0.1..1.0; 4 mated probes.
        let mut v: Vec<Search> = (1..=10).map(|k| s(false, false, k as f32 / 10.0)).collect();
        v.extend([
            s(true, true, 0.95),  // right and above every stranger but one
            s(true, true, 0.75),  // right, mid
            s(true, false, 0.99), // wrong person at rank 1: always a miss
            s(true, true, 0.05),  // right, below every stranger
        ]);
        // FPIR 0.1: one stranger may pass; threshold = the second highest (0.9).
        let (fnir, t) = fnir_at_fpir(&v, 0.1);
        assert_eq!(t, 0.9);
        assert_eq!(fnir, 0.75);
        // FPIR 0.3: three may pass; threshold 0.7.
        let (fnir, t) = fnir_at_fpir(&v, 0.3);
        assert_eq!(t, 0.7);
        assert_eq!(fnir, 0.5);
        // FPIR below 1/10: nobody may pass; threshold = the top stranger.
        assert_eq!(fnir_at_fpir(&v, 0.05).1, 1.0);
        let m = split_metrics(&v);
        assert_eq!((m.mated_probes, m.non_mated_probes), (4, 10));
        assert_eq!(m.rank1, 0.75);
        // DET: FPIR never rises above its target, FNIR never rises with FPIR.
        for w in m.det.windows(2) {
            assert!(w[1].0 >= w[0].0 && w[1].1 <= w[0].1, "{:?}", m.det);
        }
        assert_eq!(
            m.det.last().unwrap().1,
            0.25,
            "at FPIR 1 only the wrong rank-1 misses"
        );
    }
}
