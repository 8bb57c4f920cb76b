//! Inference backends behind one trait, chosen once at start-up.
//!
//! Stages never talk to a runtime directly: they hand an `N×C×H×W` f32 batch to a
//! [`Session`] and get the model's outputs back in graph order. A [`Backend`] knows
//! whether its runtime library is present ([`Backend::probe`]) and turns a verified model
//! file into a session. Backends sit behind cargo features and load their native library
//! at run time, so one binary runs wherever the library exists; [`select`] resolves
//! `inference.backend` (`auto` or a name) and fails with the missing feature or library
//! named.
//!
//! Sessions are not shared between threads: each stage worker loads its own, which is what
//! lets thread count and batch size be set per stage.

#[cfg(feature = "openvino")]
pub mod openvino;

use serde::{Deserialize, Serialize};

use crate::models::VerifiedModel;

/// Inference settings (section `[inference]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// `auto` picks the best usable backend for this machine; or name one: `openvino`.
    pub backend: String,
    /// Threads per session; 0 lets the runtime use every core.
    pub threads: usize,
    /// Arithmetic precision: `f32` (bit-faithful to the reference), `bf16` or `f16`
    /// (faster on CPUs/GPUs that have the units; small accuracy cost, measure with
    /// `facestream eval lfw`).
    pub precision: Precision,
    /// Compiled input shapes kept per session (detection at several image sizes, embedding
    /// at several batch sizes); the least recently used is dropped past this.
    pub max_cached_shapes: usize,
    /// OpenVINO settings.
    pub openvino: OpenVinoConfig,
}

/// Section `[inference.openvino]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenVinoConfig {
    /// Path to `libopenvino_c.so` (or its folder). Empty: `FACESTREAM_OPENVINO_LIB`, then
    /// the set-up's `.cache/venv` wheel, then OpenVINO's own search (`OPENVINO_INSTALL_DIR`,
    /// `LD_LIBRARY_PATH`, default install paths).
    pub library: String,
    /// OpenVINO device: `CPU`, `GPU` (Intel graphics) or any device string OpenVINO accepts.
    pub device: String,
}

/// Arithmetic precision requested from the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }
}

impl InferenceConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if !BACKEND_NAMES.contains(&self.backend.as_str()) && self.backend != "auto" {
            problems.push(format!(
                "inference.backend = {:?} is not a backend; expected `auto` or one of {:?}",
                self.backend, BACKEND_NAMES
            ));
        }
        if self.threads > 1024 {
            problems.push(format!("inference.threads = {} is over 1024", self.threads));
        }
        if self.max_cached_shapes == 0 {
            problems.push("inference.max_cached_shapes must be at least 1".into());
        }
    }
}

/// Every backend facestream knows, compiled in or not.
pub const BACKEND_NAMES: &[&str] = &["openvino"];

/// Errors at the inference boundary.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "backend `{name}` is not compiled into this binary: rebuild with `--features {feature}`"
    )]
    NotCompiled { name: String, feature: &'static str },
    #[error("backend `{name}` is not usable here: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("no usable inference backend: {0}")]
    NoneUsable(String),
    #[error("{backend}: cannot load model {model}: {message}")]
    Load {
        backend: &'static str,
        model: String,
        message: String,
    },
    #[error("{backend}: input shape {got:?} does not fit model {model} (expected {expected})")]
    Shape {
        backend: &'static str,
        model: String,
        got: Vec<usize>,
        expected: String,
    },
    #[error("{backend}: inference failed on model {model}: {message}")]
    Run {
        backend: &'static str,
        model: String,
        message: String,
    },
}

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }
}

/// Per-session options.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub threads: usize,
    pub precision: Precision,
    pub max_cached_shapes: usize,
}

impl From<&InferenceConfig> for SessionOptions {
    fn from(c: &InferenceConfig) -> Self {
        SessionOptions {
            threads: c.threads,
            precision: c.precision,
            max_cached_shapes: c.max_cached_shapes,
        }
    }
}

/// A runtime that can load models.
pub trait Backend: Send + Sync {
    /// Short name, as used in `inference.backend`.
    fn name(&self) -> &'static str;
    /// Library, version and device in one line, for logs and reports.
    fn describe(&self) -> String;
    /// Load `model` into a session ready to run batches.
    fn load(
        &self,
        model: &VerifiedModel,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, InferenceError>;
}

/// One loaded model. Input is `N×C×H×W`; `N` is the batch.
pub trait Session: Send {
    /// The model's output names, in the order [`Session::run`] returns them.
    fn output_names(&self) -> &[String];
    /// Run one batch.
    fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, InferenceError>;
}

/// Resolve `inference.backend` into a ready backend.
pub fn select(config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    match config.backend.as_str() {
        "openvino" => open_openvino(config),
        "auto" => {
            // x86 CPU servers: OpenVINO. Later backends (ONNX Runtime+TensorRT on NVIDIA,
            // LiteRT on ARM) slot in ahead of or after it here, in order of preference.
            let mut reasons = Vec::new();
            match open_openvino(config) {
                Ok(backend) => return Ok(backend),
                Err(e) => reasons.push(e.to_string()),
            }
            Err(InferenceError::NoneUsable(reasons.join("; ")))
        }
        other => Err(InferenceError::Unavailable {
            name: other.to_string(),
            reason: format!("unknown backend; known: {BACKEND_NAMES:?}"),
        }),
    }
}

#[cfg(feature = "openvino")]
fn open_openvino(config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    Ok(Box::new(openvino::OpenVinoBackend::open(&config.openvino)?))
}

#[cfg(not(feature = "openvino"))]
fn open_openvino(_config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    Err(InferenceError::NotCompiled {
        name: "openvino".into(),
        feature: "openvino",
    })
}
