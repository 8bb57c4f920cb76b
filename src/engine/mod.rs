//! The face engine for still images: decode → detect → align → quality → embed.
//!
//! Used by the CLI (`embed`, `verify`), evaluation and enrolment. It owns one session per
//! model; it is not shared between threads (build one engine per worker).

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use crate::config::Config;
use crate::imageio::{self, ImageError};
use crate::inference::{self, InferenceError, Precision, SessionOptions};
use crate::models::{ModelError, ModelStore, VerifiedModel};
use crate::stages::align::{self, AlignedFace};
use crate::stages::detect::{Detect, DetectError};
use crate::stages::embed::{Embed, EmbedError, Embedding};
use crate::stages::quality::{self, Quality, QualityConfig};
use crate::stages::Detection;

/// Errors from building or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(
        "inference.precision = \"int8\" runs on {:?}; the embedding model runs on `{backend}` here",
        inference::INT8_BACKENDS
    )]
    Int8Backend { backend: String },
}

/// One analysed face.
#[derive(Debug, Clone, Serialize)]
pub struct Face {
    #[serde(flatten)]
    pub detection: Detection,
    pub quality: Quality,
    pub embedding: Embedding,
    #[serde(skip)]
    pub aligned: AlignedFace,
}

/// Where the time went for one image.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub detect: Duration,
    pub align_quality: Duration,
    pub embed: Duration,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.detect + self.align_quality + self.embed
    }
}

/// Detector + embedder + quality settings, ready to analyse images.
pub struct FaceEngine {
    detect: Detect,
    embed: Embed,
    quality: QualityConfig,
    limits: imageio::LimitsConfig,
    backend_description: String,
}

impl FaceEngine {
    /// Select the backend, verify and load both models.
    pub fn new(config: &Config) -> Result<FaceEngine, EngineError> {
        let (detect, detector) = build_detect(config)?;
        let (embed, embedder) = build_embed(config)?;
        let backend_description = if detector == embedder {
            embedder
        } else {
            format!("detect: {detector}; embed: {embedder}")
        };
        Ok(FaceEngine {
            detect,
            embed,
            quality: config.quality.clone(),
            limits: config.limits.clone(),
            backend_description,
        })
    }

    pub fn backend_description(&self) -> &str {
        &self.backend_description
    }

    /// `name@version` of the embedding model.
    pub fn model_id(&self) -> &str {
        self.embed.model_id()
    }

    /// `matching` with the embedding model's calibration (manifest) filled in.
    pub fn calibrate(
        &self,
        matching: &crate::stages::matching::MatchConfig,
    ) -> crate::stages::matching::MatchConfig {
        let mut m = matching.clone();
        if let Some(c) = self.embed.calibration() {
            m.impostors = c.impostors;
        }
        m
    }

    pub fn limits(&self) -> &imageio::LimitsConfig {
        &self.limits
    }

    /// Decode an image file with the configured limits.
    pub fn load(&self, path: &Path) -> Result<RgbImage, ImageError> {
        imageio::load_image(path, &self.limits)
    }

    /// Detect faces only.
    pub fn detect(&mut self, image: &RgbImage) -> Result<Vec<Detection>, EngineError> {
        Ok(self.detect.detect(image)?)
    }

    /// Align, score and embed given detections (in one batch).
    pub fn describe(
        &mut self,
        image: &RgbImage,
        detections: Vec<Detection>,
        timings: &mut Timings,
    ) -> Result<Vec<Face>, EngineError> {
        let t = Instant::now();
        let prepared: Vec<(Detection, AlignedFace, Quality)> = detections
            .into_iter()
            .filter_map(|d| {
                let crop = align::align(image, &d.landmarks)?;
                let q = quality::assess(&d, &crop, &self.quality);
                Some((d, crop, q))
            })
            .collect();
        timings.align_quality += t.elapsed();
        let t = Instant::now();
        let crops: Vec<&AlignedFace> = prepared.iter().map(|(_, c, _)| c).collect();
        let embeddings = self.embed.embed(&crops)?;
        timings.embed += t.elapsed();
        Ok(prepared
            .into_iter()
            .zip(embeddings)
            .map(|((detection, aligned, quality), embedding)| Face {
                detection,
                quality,
                embedding,
                aligned,
            })
            .collect())
    }

    /// Embed already-aligned crops (re-embedding stored crops after a model change).
    pub fn embed_crops(&mut self, crops: &[&AlignedFace]) -> Result<Vec<Embedding>, EngineError> {
        Ok(self.embed.embed(crops)?)
    }

    /// Every face in the image, highest detector score first.
    pub fn analyze(&mut self, image: &RgbImage) -> Result<(Vec<Face>, Timings), EngineError> {
        let mut timings = Timings::default();
        let t = Instant::now();
        let detections = self.detect.detect(image)?;
        timings.detect = t.elapsed();
        let faces = self.describe(image, detections, &mut timings)?;
        Ok((faces, timings))
    }
}

/// The detector session and its backend's description: on `inference.detect_backend`
/// when it names a backend; under `auto` on [`inference::auto_detect_backend`]'s pick
/// when that is usable here, else on the selected backend. The streaming pipeline builds
/// one per detector worker.
pub fn build_detect(config: &Config) -> Result<(Detect, String), EngineError> {
    let backend = match config.inference.detect_backend.as_str() {
        "auto" => {
            let selected = inference::select(&config.inference)?;
            let moved = inference::auto_detect_backend(selected.name()).and_then(|name| {
                inference::open(name, &config.inference)
                    .inspect_err(|e| {
                        tracing::info!(backend = name, reason = %e,
                            "detector stays on the selected backend")
                    })
                    .ok()
            });
            moved.unwrap_or(selected)
        }
        name => inference::open(name, &config.inference)?,
    };
    let store = ModelStore::open(&config.models.dir)?;
    let model = store.model("yunet")?;
    let backend = inference::for_model(backend, &model, &config.inference)?;
    let options = SessionOptions::from(&config.inference);
    let detect = Detect::new(backend.as_ref(), &model, &options, config.detect.clone())?;
    Ok((detect, backend.describe()))
}

/// The embedding session on the selected backend, and that backend's description (with
/// the model's precision when it is int8).
pub fn build_embed(config: &Config) -> Result<(Embed, String), EngineError> {
    let store = ModelStore::open(&config.models.dir)?;
    let model = store.model("sface")?;
    let backend = selected_backend(config, &model)?;
    let (model, precision) = embedding_model(&model, backend.name(), config)?;
    let options = SessionOptions::from(&config.inference);
    let embed = Embed::new(backend.as_ref(), &model, &options, &config.embed)?;
    let description = match precision {
        Precision::Int8 => format!("{}, int8 embedding model", backend.describe()),
        _ => backend.describe(),
    };
    Ok((embed, description))
}

/// The embedding model file for `inference.precision` on `backend` (see
/// [`Precision::for_embedding`]): the int8 variant when that resolves to int8, else the
/// f32 file; with the resolved precision.
pub fn embedding_model(
    sface: &VerifiedModel,
    backend: &str,
    config: &Config,
) -> Result<(VerifiedModel, Precision), EngineError> {
    let precision = config
        .inference
        .precision
        .for_embedding(backend, inference::cpu_has_int8_dot_product());
    if precision != Precision::Int8 {
        return Ok((sface.clone(), precision));
    }
    if !inference::INT8_BACKENDS.contains(&backend) {
        return Err(EngineError::Int8Backend {
            backend: backend.to_string(),
        });
    }
    Ok((sface.with_variant("int8")?, precision))
}

fn selected_backend(
    config: &Config,
    model: &VerifiedModel,
) -> Result<Box<dyn inference::Backend>, EngineError> {
    let preferred = inference::select(&config.inference)?;
    Ok(inference::for_model(preferred, model, &config.inference)?)
}

/// The face to use when an image should show one person: the largest box.
pub fn primary_face(faces: &[Face]) -> Option<&Face> {
    faces
        .iter()
        .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
}
