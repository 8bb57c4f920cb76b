//! LFW runner: `pairs.txt` + image folder → scored pairs → [`LfwReport`].
//!
//! Per image (decode not timed, as in the reference): detect, keep the face whose box
//! centre is nearest the image centre (LFW faces are centred), align, score quality,
//! embed. When the detector finds nothing, the reference's canonical LFW box and
//! landmarks are used and the image counts as a detector miss — both tools treat misses
//! identically so their accuracies compare.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::protocol::{self, KFold};
use crate::engine::{EngineError, Face, FaceEngine, Timings};
use crate::stages::quality::QualityClass;
use crate::stages::{BBox, Detection};

/// Errors reading the LFW protocol.
#[derive(Debug, thiserror::Error)]
pub enum LfwError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("search index: {0}")]
    Index(#[from] crate::gallery::GalleryError),
    #[error("pairs file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("image {path}: {source}")]
    Image { path: PathBuf, source: EngineError },
}

/// `(person, 1-based index)`.
pub type ImageKey = (String, u32);

/// One verification pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub a: ImageKey,
    pub b: ImageKey,
    pub same: bool,
}

/// Parse the standard `pairs.txt` (header line, then `name i j` / `nameA i nameB j`).
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, LfwError> {
    let text = std::fs::read_to_string(path).map_err(|source| LfwError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |line: usize, message: String| LfwError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| parse_err(n + 1, format!("`{s}` is not an image index")))
        };
        match f.len() {
            0 => continue,
            3 => pairs.push(Pair {
                a: (f[0].to_string(), num(f[1])?),
                b: (f[0].to_string(), num(f[2])?),
                same: true,
            }),
            4 => pairs.push(Pair {
                a: (f[0].to_string(), num(f[1])?),
                b: (f[2].to_string(), num(f[3])?),
                same: false,
            }),
            k => {
                return Err(parse_err(
                    n + 1,
                    format!("expected 3 or 4 fields, found {k}"),
                ))
            }
        }
    }
    if pairs.is_empty() {
        return Err(parse_err(1, "no pairs".into()));
    }
    Ok(pairs)
}

/// Keep the first `per_block` pairs of every 300-pair block (the reference's
/// `--limit-pairs`: balanced same/different pairs from every fold).
pub fn limit_pairs(pairs: Vec<Pair>, per_block: usize) -> Vec<Pair> {
    pairs
        .into_iter()
        .enumerate()
        .filter(|(k, _)| k % 300 < per_block)
        .map(|(_, p)| p)
        .collect()
}

/// Path of an LFW image.
pub fn image_path(images: &Path, key: &ImageKey) -> PathBuf {
    images
        .join(&key.0)
        .join(format!("{}_{:04}.jpg", key.0, key.1))
}

/// The reference's fallback for 250×250 LFW images with no detection, scaled to the
/// image actually analysed (LFW is 250×250; a degraded copy is smaller).
pub(crate) fn canonical_lfw_face(width: u32) -> Detection {
    let s = width as f32 / 250.0;
    let lm: [[f32; 2]; 5] = [
        [106.0, 110.0],
        [144.0, 110.0],
        [125.0, 132.0],
        [110.0, 155.0],
        [140.0, 155.0],
    ];
    Detection {
        bbox: BBox {
            x: 68.0 * s,
            y: 68.0 * s,
            w: 114.0 * s,
            h: 114.0 * s,
        },
        landmarks: lm.map(|p| [p[0] * s, p[1] * s]),
        score: 0.0,
    }
}

/// Simulated surveillance resolution: a deterministic share of the images is downscaled
/// before analysis, so the quality split (high/high, low/high, low/low) has all three
/// buckets even on LFW, whose photos are nearly all high quality.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Degrade {
    /// Share of images degraded, in [0, 1].
    pub fraction: f64,
    /// Scale factor applied to their width and height, in (0, 1].
    pub scale: f32,
}

impl Degrade {
    /// Whether `key` is in the degraded share (FNV-1a of the key, so the choice is stable
    /// across runs and machines).
    pub fn applies_to(&self, key: &ImageKey) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.0.bytes().chain(key.1.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        ((h % 10_000) as f64) < self.fraction * 10_000.0
    }
}

/// One face the LFW way: load, degrade when the key is in the degraded share, detect, keep
/// the face nearest the image centre (LFW faces are centred; with no detection, the
/// reference's canonical box, counted in `misses`), then align, score and embed. Decoding
/// is not timed; the stages are, into `timings`. Returns the face and whether it was
/// degraded.
pub(crate) fn centre_face(
    engine: &mut FaceEngine,
    path: &Path,
    key: &ImageKey,
    degrade: Option<Degrade>,
    timings: &mut Timings,
    misses: &mut usize,
) -> Result<(Face, bool), LfwError> {
    let image_err = |source: EngineError| LfwError::Image {
        path: path.to_path_buf(),
        source,
    };
    let mut image = engine.load(path).map_err(|e| image_err(e.into()))?;
    let degraded = degrade.filter(|d| d.applies_to(key));
    if let Some(d) = degraded {
        let w = ((image.width() as f32 * d.scale).round() as u32).max(1);
        let h = ((image.height() as f32 * d.scale).round() as u32).max(1);
        image = image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle);
    }
    let t = Instant::now();
    let faces = engine.detect(&image).map_err(image_err)?;
    timings.detect += t.elapsed();
    let centre = [image.width() as f32 / 2.0, image.height() as f32 / 2.0];
    let distance = |f: &Detection| {
        let c = f.bbox.centre();
        (c[0] - centre[0]).hypot(c[1] - centre[1])
    };
    let chosen = faces
        .into_iter()
        .min_by(|a, b| distance(a).total_cmp(&distance(b)));
    let detection = chosen.unwrap_or_else(|| {
        *misses += 1;
        canonical_lfw_face(image.width())
    });
    let face = engine
        .describe(&image, vec![detection], timings)
        .map_err(image_err)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            image_err(EngineError::Image(crate::imageio::ImageError::Corrupt {
                input: path.display().to_string(),
                message: "landmarks are degenerate; cannot align".into(),
            }))
        })?;
    Ok((face, degraded.is_some()))
}

/// Accuracy of the pairs in one quality bucket, at the mean 10-fold threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub pairs: usize,
    pub same: usize,
    pub different: usize,
    pub accuracy: f64,
}

/// Everything `facestream eval lfw` reports.
#[derive(Debug, Clone, Serialize)]
pub struct LfwReport {
    pub pairs: usize,
    pub images: usize,
    pub detector_misses: usize,
    pub accuracy: KFold,
    pub threshold_mean: f32,
    pub tar_at_far_1e3: f64,
    pub tar_at_far_1e2: f64,
    /// Impostor score at FAR 1e-3 / 1e-2: the operating thresholds for those rates.
    pub threshold_at_far_1e3: f32,
    pub threshold_at_far_1e2: f32,
    pub seconds_per_image: f64,
    pub seconds_per_image_detect: f64,
    pub seconds_per_image_align_quality: f64,
    pub seconds_per_image_embed: f64,
    /// Pairs split by the quality class of their two faces: `high_high`, `low_high`, `low_low`.
    pub by_quality: std::collections::BTreeMap<String, Bucket>,
    pub backend: String,
    pub model: String,
    pub threads: usize,
    /// Present when images were degraded (`--degrade-scale`).
    pub degrade: Option<Degrade>,
    pub degraded_images: usize,
    #[serde(skip)]
    pub roc: Vec<(f64, f64, f32)>,
}

struct Embedded {
    embedding: Vec<f32>,
    class: QualityClass,
}

/// Run the protocol. `progress` is called after each image with (done, total).
pub fn evaluate(
    engine: &mut FaceEngine,
    images: &Path,
    pairs: &[Pair],
    threads: usize,
    degrade: Option<Degrade>,
    mut progress: impl FnMut(usize, usize),
) -> Result<LfwReport, LfwError> {
    let mut keys: Vec<&ImageKey> = pairs.iter().flat_map(|p| [&p.a, &p.b]).collect();
    keys.sort();
    keys.dedup();
    let mut cache: HashMap<&ImageKey, Embedded> = HashMap::with_capacity(keys.len());
    let mut timings = Timings::default();
    let mut misses = 0usize;
    let mut degraded = 0usize;
    for (done, key) in keys.iter().enumerate() {
        let path = image_path(images, key);
        let (face, was_degraded) =
            centre_face(engine, &path, key, degrade, &mut timings, &mut misses)?;
        degraded += usize::from(was_degraded);
        cache.insert(
            key,
            Embedded {
                embedding: face.embedding,
                class: face.quality.class,
            },
        );
        progress(done + 1, keys.len());
    }
    let samples: Vec<(f32, bool)> = pairs
        .iter()
        .map(|p| {
            let (a, b) = (&cache[&p.a], &cache[&p.b]);
            (
                crate::stages::embed::cosine(&a.embedding, &b.embedding),
                p.same,
            )
        })
        .collect();
    let accuracy = protocol::kfold_accuracy(&samples, 10);
    let threshold_mean =
        accuracy.fold_thresholds.iter().sum::<f32>() / accuracy.fold_thresholds.len() as f32;
    let mut buckets: HashMap<&'static str, Vec<(f32, bool)>> = HashMap::new();
    for (p, s) in pairs.iter().zip(&samples) {
        let name = match (cache[&p.a].class, cache[&p.b].class) {
            (QualityClass::High, QualityClass::High) => "high_high",
            (QualityClass::Low, QualityClass::Low) => "low_low",
            _ => "low_high",
        };
        buckets.entry(name).or_default().push(*s);
    }
    let by_quality = ["high_high", "low_high", "low_low"]
        .iter()
        .map(|&name| {
            let b = buckets.remove(name).unwrap_or_default();
            (
                name.to_string(),
                Bucket {
                    pairs: b.len(),
                    same: b.iter().filter(|s| s.1).count(),
                    different: b.iter().filter(|s| !s.1).count(),
                    accuracy: protocol::accuracy_at(&b, threshold_mean),
                },
            )
        })
        .collect();
    let n = keys.len().max(1) as f64;
    Ok(LfwReport {
        pairs: pairs.len(),
        images: keys.len(),
        detector_misses: misses,
        tar_at_far_1e3: protocol::tar_at_far(&samples, 1e-3),
        tar_at_far_1e2: protocol::tar_at_far(&samples, 1e-2),
        threshold_at_far_1e3: protocol::threshold_at_far(&samples, 1e-3),
        threshold_at_far_1e2: protocol::threshold_at_far(&samples, 1e-2),
        roc: protocol::roc(&samples),
        accuracy,
        threshold_mean,
        seconds_per_image: timings.total().as_secs_f64() / n,
        seconds_per_image_detect: timings.detect.as_secs_f64() / n,
        seconds_per_image_align_quality: timings.align_quality.as_secs_f64() / n,
        seconds_per_image_embed: timings.embed.as_secs_f64() / n,
        by_quality,
        backend: engine.backend_description().to_string(),
        model: engine.model_id().to_string(),
        threads,
        degrade,
        degraded_images: degraded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_same_and_different_pairs_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(format!("fs-lfw-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pairs.txt");
        std::fs::write(&f, "10\t300\nAbel_Pacheco\t1\t4\nA\t1\tB\t2\n").unwrap();
        let pairs = read_pairs(&f).unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(pairs[0].same && !pairs[1].same);
        assert_eq!(pairs[1].b, ("B".to_string(), 2));
        assert_eq!(
            image_path(Path::new("/i"), &pairs[0].b),
            PathBuf::from("/i/Abel_Pacheco/Abel_Pacheco_0004.jpg")
        );
        std::fs::write(&f, "10\t300\nA\tx\t2\n").unwrap();
        let err = read_pairs(&f).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`x`"), "{err}");
    }

    #[test]
    fn degrade_picks_a_stable_share() {
        let d = Degrade {
            fraction: 0.5,
            scale: 0.25,
        };
        let keys: Vec<ImageKey> = (0..2000).map(|i| (format!("P{}", i % 97), i)).collect();
        let n = keys.iter().filter(|k| d.applies_to(k)).count();
        assert!((900..1100).contains(&n), "{n}");
        assert_eq!(keys.iter().filter(|k| d.applies_to(k)).count(), n);
        assert!(!Degrade {
            fraction: 0.0,
            scale: 0.5
        }
        .applies_to(&keys[0]));
        assert!(Degrade {
            fraction: 1.0,
            scale: 0.5
        }
        .applies_to(&keys[0]));
    }

    #[test]
    fn limit_keeps_the_head_of_each_block() {
        let pairs: Vec<Pair> = (0..600)
            .map(|i| Pair {
                a: ("a".into(), i),
                b: ("b".into(), i),
                same: i < 300,
            })
            .collect();
        let kept = limit_pairs(pairs, 5);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept.iter().filter(|p| p.same).count(), 5);
    }
}
