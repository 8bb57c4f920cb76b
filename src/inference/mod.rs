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

#[cfg(feature = "litert")]
pub mod litert;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
#[cfg(feature = "openvino")]
pub mod openvino;
#[cfg(feature = "tract")]
pub mod tract;
// helpers of the native backends: unused in a build without any
#[cfg_attr(
    not(any(
        feature = "openvino",
        feature = "onnxruntime",
        feature = "litert",
        feature = "tract"
    )),
    allow(dead_code)
)]
mod native;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::models::VerifiedModel;

/// Inference settings (section `[inference]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// `auto` picks the best usable backend for this machine (see [`auto_order`]); or name
    /// one: `openvino`, `onnxruntime`, `onnxruntime-cuda`, `onnxruntime-tensorrt`,
    /// `litert`, `tract`. `facestream backends` lists them and what `auto` picks here.
    pub backend: String,
    /// Where the face detector runs: `auto` ([`auto_detect_backend`]: ONNX Runtime where
    /// the models otherwise run on OpenVINO and ONNX Runtime is usable, else the backend
    /// above) or a backend name. Runtimes rank differently per model
    /// (`facestream bench` times both models on each).
    #[serde(default = "default_auto")]
    pub detect_backend: String,
    /// Threads per session. 0: for the streaming pipeline, the cores split evenly between
    /// the detect workers and the embed stage; for one-shot commands, every core.
    pub threads: usize,
    /// Arithmetic precision: `f32` (bit-faithful to the reference), `bf16` or `f16`
    /// (faster on CPUs/GPUs that have the units; small accuracy cost, measure with
    /// `facestream eval lfw`); `int8` runs the post-training-quantized embedding model
    /// (`make models`; OpenVINO or ONNX Runtime on CPU; the detector stays f32); `auto`
    /// is `int8` on CPUs with int8 dot-product instructions (VNNI, AMX) and those
    /// backends, else `f32`. [`Precision::for_embedding`] has the rule.
    pub precision: Precision,
    /// Compiled input shapes kept per session (detection at several image sizes, embedding
    /// at several batch sizes); the least recently used is dropped past this.
    pub max_cached_shapes: usize,
    /// OpenVINO settings.
    pub openvino: OpenVinoConfig,
    /// ONNX Runtime settings.
    pub onnxruntime: OnnxRuntimeConfig,
}

/// Section `[inference.onnxruntime]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeConfig {
    /// Path to `libonnxruntime.so` (CPU or GPU build, ≥ 1.23). Empty:
    /// `FACESTREAM_ONNXRUNTIME_LIB`, then the set-up's `.cache/venv` wheel, then
    /// `ORT_DYLIB_PATH`.
    pub library: String,
    /// CUDA device index for the CUDA and TensorRT providers.
    pub device_id: i32,
    /// Where TensorRT keeps built engines and timing caches (building an engine takes
    /// minutes; the cache makes later starts fast).
    pub tensorrt_cache: String,
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

/// Precision of inference (`inference.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// `int8` where it is faster, else `f32` ([`Precision::for_embedding`]).
    Auto,
    F32,
    Bf16,
    F16,
    /// The int8 variant of the embedding model; its remaining ops and the detector in f32.
    Int8,
}

/// Backends that run the int8 (QDQ) embedding model with int8 kernels on the CPU.
pub const INT8_BACKENDS: [&str; 2] = ["openvino", "onnxruntime"];

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }

    /// What a backend is asked to compute in: an int8 model's remaining ops, and every
    /// model under `auto`, in f32.
    pub fn arithmetic(self) -> Precision {
        match self {
            Precision::Auto | Precision::Int8 => Precision::F32,
            p => p,
        }
    }

    /// The precision the embedding model runs at on `backend`: `auto` is `int8` only on
    /// a CPU backend of [`INT8_BACKENDS`] when `int8_dot_product` (the CPU has VNNI or
    /// AMX: [`cpu_has_int8_dot_product`]); without those instructions int8 convolutions
    /// are slower than f32 (BENCHMARKS.md section 2.1), so it is `f32`.
    pub fn for_embedding(self, backend: &str, int8_dot_product: bool) -> Precision {
        match self {
            Precision::Auto if int8_dot_product && INT8_BACKENDS.contains(&backend) => {
                Precision::Int8
            }
            Precision::Auto => Precision::F32,
            p => p,
        }
    }
}

/// Whether this CPU has int8 dot-product instructions (x86-64: AVX-512 VNNI, AVX-VNNI or
/// AMX-INT8), read from `/proc/cpuinfo`; false where that cannot be read.
pub fn cpu_has_int8_dot_product() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| cpuinfo_has_int8_dot_product(&text))
        .unwrap_or(false)
}

fn cpuinfo_has_int8_dot_product(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .is_some_and(|line| {
            line.split_whitespace()
                .any(|flag| matches!(flag, "avx512_vnni" | "avx_vnni" | "amx_int8"))
        })
}

fn default_auto() -> String {
    "auto".into()
}

impl InferenceConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        for (key, value) in [
            ("backend", &self.backend),
            ("detect_backend", &self.detect_backend),
        ] {
            if !BACKEND_NAMES.contains(&value.as_str()) && value != "auto" {
                problems.push(format!(
                    "inference.{key} = {value:?} is not a backend; expected `auto` or one of {BACKEND_NAMES:?}"
                ));
            }
        }
        if self.threads > 1024 {
            problems.push(format!("inference.threads = {} is over 1024", self.threads));
        }
        if self.max_cached_shapes == 0 {
            problems.push("inference.max_cached_shapes must be at least 1".into());
        }
        if self.precision == Precision::Int8
            && self.backend != "auto"
            && !INT8_BACKENDS.contains(&self.backend.as_str())
        {
            problems.push(format!(
                "inference.precision = \"int8\" runs on {INT8_BACKENDS:?}, not on inference.backend = {:?}",
                self.backend
            ));
        }
    }
}

/// Every backend facestream knows, compiled in or not, with the cargo feature that
/// carries it.
pub const BACKENDS: &[(&str, &str)] = &[
    ("onnxruntime-tensorrt", "onnxruntime"),
    ("onnxruntime-cuda", "onnxruntime"),
    ("openvino", "openvino"),
    ("litert", "litert"),
    ("onnxruntime", "onnxruntime"),
    ("tract", "tract"),
];

/// Backend names, for messages.
pub const BACKEND_NAMES: &[&str] = &[
    "onnxruntime-tensorrt",
    "onnxruntime-cuda",
    "openvino",
    "litert",
    "onnxruntime",
    "tract",
];

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
            precision: c.precision.arithmetic(),
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
    /// Whether this backend can run `model` (a backend may need a converted variant,
    /// e.g. LiteRT runs only models with a `tflite` variant).
    fn supports(&self, _model: &VerifiedModel) -> bool {
        true
    }
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

/// The order `auto` tries backends on this machine: NVIDIA GPU → ONNX Runtime with
/// TensorRT, then CUDA; x86-64 → OpenVINO; aarch64 → LiteRT; then ONNX Runtime on CPU;
/// then tract. The first one that is compiled in and usable wins.
pub fn auto_order() -> Vec<&'static str> {
    let mut order = Vec::new();
    if nvidia_gpu_present() {
        order.extend(["onnxruntime-tensorrt", "onnxruntime-cuda"]);
    }
    match std::env::consts::ARCH {
        "x86_64" => order.extend(["openvino", "litert"]),
        "aarch64" => order.extend(["litert", "openvino"]),
        _ => order.extend(["openvino", "litert"]),
    }
    order.extend(["onnxruntime", "tract"]);
    order
}

/// The detector's backend under `inference.detect_backend = "auto"`, given the selected
/// backend: ONNX Runtime's CPU provider when the models otherwise run on OpenVINO (the
/// x86-64 CPU case), else the selected backend itself (`None`). YuNet runs faster on
/// ONNX Runtime on both x86 CPU kinds measured (BENCHMARKS.md §2 and §7: 1.4× with
/// AVX-512, 1.7× with AVX2, one thread), SFace faster on OpenVINO; with four cameras in
/// the streaming pipeline the split spent less time detecting and had a lower p50
/// latency in every run (fewer dropped frames is not proven: BENCHMARKS.md §7). Where
/// ONNX Runtime is not usable the detector stays on the selected backend.
pub fn auto_detect_backend(selected: &str) -> Option<&'static str> {
    (selected == "openvino").then_some("onnxruntime")
}

/// True when an NVIDIA driver is present (device node or the driver's proc entry).
pub fn nvidia_gpu_present() -> bool {
    Path::new("/dev/nvidia0").exists() || Path::new("/proc/driver/nvidia/version").exists()
}

/// One backend as `facestream backends` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub name: &'static str,
    pub feature: &'static str,
    pub compiled: bool,
    pub usable: bool,
    /// The library/device description when usable, else why not.
    pub detail: String,
}

/// Open every known backend and report which are compiled in and usable here.
pub fn survey(config: &InferenceConfig) -> Vec<BackendStatus> {
    BACKENDS
        .iter()
        .map(|&(name, feature)| match open(name, config) {
            Ok(backend) => BackendStatus {
                name,
                feature,
                compiled: true,
                usable: true,
                detail: backend.describe(),
            },
            Err(e) => BackendStatus {
                name,
                feature,
                compiled: !matches!(e, InferenceError::NotCompiled { .. }),
                usable: false,
                detail: e.to_string(),
            },
        })
        .collect()
}

/// The backend to run `model` on: `preferred` when it supports the model, else the first
/// usable backend in [`auto_order`] that does (LiteRT builds carry only the embedding
/// model as TFLite; detection then runs on the next backend in line).
pub fn for_model(
    preferred: Box<dyn Backend>,
    model: &VerifiedModel,
    config: &InferenceConfig,
) -> Result<Box<dyn Backend>, InferenceError> {
    if preferred.supports(model) {
        return Ok(preferred);
    }
    for name in auto_order().into_iter().filter(|n| *n != preferred.name()) {
        if let Ok(backend) = open(name, config) {
            if backend.supports(model) {
                tracing::info!(model = %model.id, backend = name, preferred = preferred.name(),
                    "preferred backend cannot run this model; using the next in line");
                return Ok(backend);
            }
        }
    }
    Err(InferenceError::Unavailable {
        name: preferred.name().to_string(),
        reason: format!("cannot run {} and no other usable backend can", model.id),
    })
}

/// Resolve `inference.backend` into a ready backend.
pub fn select(config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    if config.backend != "auto" {
        return open(&config.backend, config);
    }
    let mut reasons = Vec::new();
    for name in auto_order() {
        match open(name, config) {
            Ok(backend) => return Ok(backend),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(InferenceError::NoneUsable(reasons.join("; ")))
}

/// Open one backend by name.
pub fn open(name: &str, config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    match name {
        "openvino" => open_openvino(config),
        "onnxruntime" | "onnxruntime-cuda" | "onnxruntime-tensorrt" => {
            open_onnxruntime(name, config)
        }
        "litert" => open_litert(),
        "tract" => open_tract(),
        other => Err(InferenceError::Unavailable {
            name: other.to_string(),
            reason: format!("unknown backend; known: {BACKEND_NAMES:?}"),
        }),
    }
}

#[cfg(not(all(
    feature = "openvino",
    feature = "onnxruntime",
    feature = "litert",
    feature = "tract"
)))]
fn not_compiled(name: &str, feature: &'static str) -> InferenceError {
    InferenceError::NotCompiled {
        name: name.to_string(),
        feature,
    }
}

#[cfg(feature = "openvino")]
fn open_openvino(config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    Ok(Box::new(openvino::OpenVinoBackend::open(&config.openvino)?))
}

#[cfg(not(feature = "openvino"))]
fn open_openvino(_config: &InferenceConfig) -> Result<Box<dyn Backend>, InferenceError> {
    Err(not_compiled("openvino", "openvino"))
}

#[cfg(feature = "onnxruntime")]
fn open_onnxruntime(
    name: &str,
    config: &InferenceConfig,
) -> Result<Box<dyn Backend>, InferenceError> {
    use onnxruntime::{OrtBackend, Provider};
    let provider = match name {
        "onnxruntime-cuda" => Provider::Cuda,
        "onnxruntime-tensorrt" => Provider::TensorRt,
        _ => Provider::Cpu,
    };
    Ok(Box::new(OrtBackend::open(&config.onnxruntime, provider)?))
}

#[cfg(not(feature = "onnxruntime"))]
fn open_onnxruntime(
    name: &str,
    _config: &InferenceConfig,
) -> Result<Box<dyn Backend>, InferenceError> {
    Err(not_compiled(name, "onnxruntime"))
}

#[cfg(feature = "litert")]
fn open_litert() -> Result<Box<dyn Backend>, InferenceError> {
    Ok(Box::new(litert::LiteRtBackend::open()?))
}

#[cfg(not(feature = "litert"))]
fn open_litert() -> Result<Box<dyn Backend>, InferenceError> {
    Err(not_compiled("litert", "litert"))
}

#[cfg(feature = "tract")]
fn open_tract() -> Result<Box<dyn Backend>, InferenceError> {
    Ok(Box::new(tract::TractBackend))
}

#[cfg(not(feature = "tract"))]
fn open_tract() -> Result<Box<dyn Backend>, InferenceError> {
    Err(not_compiled("tract", "tract"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_precision_is_int8_only_on_a_cpu_backend_with_int8_dot_products() {
        for backend in INT8_BACKENDS {
            assert_eq!(
                Precision::Auto.for_embedding(backend, true),
                Precision::Int8
            );
            assert_eq!(
                Precision::Auto.for_embedding(backend, false),
                Precision::F32
            );
        }
        for backend in [
            "onnxruntime-cuda",
            "onnxruntime-tensorrt",
            "litert",
            "tract",
        ] {
            assert_eq!(Precision::Auto.for_embedding(backend, true), Precision::F32);
        }
        // An explicit choice is kept; backends are only ever asked for f32/bf16/f16.
        assert_eq!(
            Precision::Int8.for_embedding("openvino", false),
            Precision::Int8
        );
        assert_eq!(
            Precision::Bf16.for_embedding("openvino", true),
            Precision::Bf16
        );
        assert_eq!(Precision::Int8.arithmetic(), Precision::F32);
        assert_eq!(Precision::Auto.arithmetic(), Precision::F32);
        assert_eq!(Precision::F16.arithmetic(), Precision::F16);
    }

    #[test]
    fn int8_dot_products_are_read_from_the_cpu_flags() {
        let flags = |f: &str| format!("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma {f}\n");
        assert!(!cpuinfo_has_int8_dot_product(&flags("avx512f avx512bw")));
        assert!(cpuinfo_has_int8_dot_product(&flags("avx512f avx512_vnni")));
        assert!(cpuinfo_has_int8_dot_product(&flags("avx_vnni")));
        assert!(cpuinfo_has_int8_dot_product(&flags("amx_bf16 amx_int8")));
        assert!(!cpuinfo_has_int8_dot_product("processor\t: 0\n"));
    }

    #[test]
    fn int8_on_a_backend_without_int8_kernels_is_a_config_error() {
        // the embedded default's `[inference]` section
        let default: toml::Table = include_str!("../../config/default.toml").parse().unwrap();
        let mut config: InferenceConfig = default["inference"].clone().try_into().unwrap();
        config.precision = Precision::Int8;
        config.backend = "tract".into();
        let mut problems = Vec::new();
        config.validate(&mut problems);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("int8") && p.contains("tract")),
            "{problems:?}"
        );
        config.backend = "openvino".into();
        problems.clear();
        config.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn the_auto_detector_moves_to_onnxruntime_only_beside_openvino() {
        assert_eq!(auto_detect_backend("openvino"), Some("onnxruntime"));
        for other in [
            "onnxruntime",
            "onnxruntime-cuda",
            "onnxruntime-tensorrt",
            "litert",
        ] {
            assert_eq!(auto_detect_backend(other), None, "{other}");
        }
    }

    #[test]
    fn auto_order_ends_with_the_portable_backends() {
        let order = auto_order();
        assert_eq!(&order[order.len() - 2..], &["onnxruntime", "tract"]);
        assert!(order.iter().all(|n| BACKEND_NAMES.contains(n)));
        if std::env::consts::ARCH == "x86_64" && !nvidia_gpu_present() {
            assert_eq!(order[0], "openvino");
        }
    }
}
