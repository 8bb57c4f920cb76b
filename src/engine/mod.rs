//! The face engine for still images: decode → detect → align → quality → embed.
//!
//! Used by the CLI (`embed`, `verify`), evaluation and enrolment. It owns one session per
//! model; it is not shared between threads (build one engine per worker).
//!
//! Start-up resolves the inference backends and verifies the model files **once**
//! ([`EngineSetup::resolve`]): the `auto` backend is chosen, each model file is hashed and
//! the embedding model's precision is settled, each logged once. Every session after that
//! (this engine's, the streaming pipeline's detector workers and embedder) is loaded from
//! the resolved [`EngineSetup`], not from the configuration again.

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use std::sync::Arc;

use crate::imageio::{self, ImageError, LimitsConfig};
use crate::inference::{self, Backend, InferenceConfig, InferenceError, Precision, SessionOptions};
use crate::models::{ModelError, ModelStore, ModelsConfig, VerifiedModel};
use crate::stages::align::{self, AlignedFace};
use crate::stages::detect::{Detect, DetectConfig, DetectError, Detector};
use crate::stages::embed::{Embed, EmbedConfig, EmbedError, Embedding};
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
    detect: Box<dyn Detector>,
    embed: Embed,
    quality: QualityConfig,
    limits: imageio::LimitsConfig,
    backend_description: String,
}

impl FaceEngine {
    /// Resolve the backends, verify the models and load both sessions (one call per
    /// process for a command; a service resolves once and calls [`FaceEngine::new`]).
    pub fn open(config: &EngineConfig) -> Result<FaceEngine, EngineError> {
        FaceEngine::new(&EngineSetup::resolve(config)?)
    }

    /// Load both sessions from what start-up resolved.
    pub fn new(setup: &EngineSetup) -> Result<FaceEngine, EngineError> {
        let (detect, detector) = setup.detector()?;
        let (embed, embedder) = setup.embedder()?;
        let backend_description = if detector == embedder {
            embedder
        } else {
            format!("detect: {detector}; embed: {embedder}")
        };
        Ok(FaceEngine {
            detect,
            embed,
            quality: setup.quality.clone(),
            limits: setup.limits.clone(),
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

/// The sections the face engine is built from (`[models]`, `[inference]`, `[limits]`,
/// `[detect]`, `[quality]`, `[embed]`), handed over by the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub models: ModelsConfig,
    pub inference: InferenceConfig,
    pub limits: LimitsConfig,
    pub detect: DetectConfig,
    pub quality: QualityConfig,
    pub embed: EmbedConfig,
}

/// What start-up resolved: the backend each model runs on (opened once), the verified
/// model files (hashed once) and the embedding precision, with the stage settings.
/// Cloning it shares the backends; sessions are loaded from it at will.
#[derive(Clone)]
pub struct EngineSetup {
    detect_backend: Arc<dyn Backend>,
    detector: VerifiedModel,
    embed_backend: Arc<dyn Backend>,
    embedder: VerifiedModel,
    embed_precision: Precision,
    /// Threads, precision and shape cache of every session (`serve` sets the threads).
    pub options: SessionOptions,
    pub detect: DetectConfig,
    pub embed: EmbedConfig,
    pub quality: QualityConfig,
    pub limits: LimitsConfig,
}

impl EngineSetup {
    /// Choose the backends and verify the model files, once.
    ///
    /// The embedding model runs on `inference.backend` (`auto`: the first usable in
    /// [`inference::auto_order`]). The detector runs on `inference.detect_backend` when it
    /// names a backend; under `auto` on [`inference::auto_detect_backend`]'s pick when that
    /// is usable here, else on the embedding model's backend. A backend that cannot run a
    /// model (LiteRT carries only the embedding model) gives way to the next in line.
    pub fn resolve(config: &EngineConfig) -> Result<EngineSetup, EngineError> {
        let inference = &config.inference;
        let store = ModelStore::open(&config.models.dir)?;
        let sface = store.model(crate::models::EMBEDDER)?;
        let selected = inference::select(inference)?;
        let embed_backend: Arc<dyn Backend> =
            Arc::from(inference::for_model(selected, &sface, inference)?);
        let (embedder, embed_precision) = embedding_model(&sface, embed_backend.name(), inference)?;
        let detector = store.model(crate::models::DETECTOR)?;
        let named = match inference.detect_backend.as_str() {
            "auto" => inference::auto_detect_backend(embed_backend.name()).and_then(|name| {
                inference::open(name, inference)
                    .inspect_err(|e| {
                        tracing::info!(backend = name, reason = %e,
                            "detector stays on the embedding model's backend")
                    })
                    .ok()
            }),
            name => Some(inference::open(name, inference)?),
        };
        let detect_backend: Arc<dyn Backend> = match named {
            Some(backend) => Arc::from(inference::for_model(backend, &detector, inference)?),
            None if embed_backend.supports(&detector) => embed_backend.clone(),
            None => Arc::from(inference::for_model(
                inference::open(embed_backend.name(), inference)?,
                &detector,
                inference,
            )?),
        };
        for (stage, backend, model) in [
            ("detect", &detect_backend, &detector),
            ("embed", &embed_backend, &embedder),
        ] {
            tracing::info!(stage, backend = backend.name(), model = %model.id,
                file = %model.path.display(), "inference backend resolved");
        }
        Ok(EngineSetup {
            detect_backend,
            detector,
            embed_backend,
            embedder,
            embed_precision,
            options: SessionOptions::from(inference),
            detect: config.detect.clone(),
            embed: config.embed.clone(),
            quality: config.quality.clone(),
            limits: config.limits.clone(),
        })
    }

    /// A detector session and its backend's description. The streaming pipeline loads
    /// one per detector worker.
    pub fn detector(&self) -> Result<(Box<dyn Detector>, String), EngineError> {
        let detect = Detect::new(
            self.detect_backend.as_ref(),
            &self.detector,
            &self.options,
            self.detect.clone(),
        )?;
        Ok((Box::new(detect), self.detect_backend.describe()))
    }

    /// An embedding session and its backend's description (with the model's precision
    /// when it is int8).
    pub fn embedder(&self) -> Result<(Embed, String), EngineError> {
        let embed = Embed::new(
            self.embed_backend.as_ref(),
            &self.embedder,
            &self.options,
            &self.embed,
        )?;
        let description = match self.embed_precision {
            Precision::Int8 => format!("{}, int8 embedding model", self.embed_backend.describe()),
            _ => self.embed_backend.describe(),
        };
        Ok((embed, description))
    }

    /// The detector model's name (`yunet`), as metrics label it.
    pub fn detector_name(&self) -> &str {
        &self.detector.name
    }
}

/// The embedding model file for `inference.precision` on `backend` (see
/// [`Precision::for_embedding`]): the int8 variant when that resolves to int8, else the
/// f32 file; with the resolved precision.
pub fn embedding_model(
    sface: &VerifiedModel,
    backend: &str,
    inference: &InferenceConfig,
) -> Result<(VerifiedModel, Precision), EngineError> {
    let precision = inference
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

/// The face to use when an image should show one person: the largest box.
pub fn primary_face(faces: &[Face]) -> Option<&Face> {
    faces
        .iter()
        .max_by(|a, b| a.detection.bbox.area().total_cmp(&b.detection.bbox.area()))
}
