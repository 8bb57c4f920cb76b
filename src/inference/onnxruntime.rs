//! ONNX Runtime backend (feature `onnxruntime`): `libonnxruntime` loaded at run time.
//!
//! One implementation, three registered names by execution provider:
//! `onnxruntime` (CPU), `onnxruntime-cuda` (CUDA) and `onnxruntime-tensorrt` (TensorRT,
//! fp16, engine cache on disk, CUDA then CPU behind it for any unsupported node). The GPU
//! providers exist only in the `onnxruntime-gpu` build of the library and need an NVIDIA
//! driver; [`OrtBackend::open`] checks both and says which is missing. A GPU provider that
//! fails to register is an error, never a silent fall back to CPU.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session as OrtSession;
use ort::value::TensorRef;

use super::native::check_batch;
use super::{
    Backend, InferenceError, OnnxRuntimeConfig, Precision, Session, SessionOptions, Tensor,
};
use crate::models::VerifiedModel;

/// Which execution provider a registered name uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    pub fn backend_name(self) -> &'static str {
        match self {
            Provider::Cpu => "onnxruntime",
            Provider::Cuda => "onnxruntime-cuda",
            Provider::TensorRt => "onnxruntime-tensorrt",
        }
    }
}

type Loaded = Result<(PathBuf, Environment), String>;

static INIT: OnceLock<Loaded> = OnceLock::new();

/// Load the library and create the environment once per process; later calls return the
/// first outcome (the ONNX Runtime library cannot be swapped within a process).
fn init(config: &OnnxRuntimeConfig) -> Result<&'static (PathBuf, Environment), String> {
    INIT.get_or_init(|| {
        let path = find_library(config).ok_or_else(|| {
            "libonnxruntime.so not found: set inference.onnxruntime.library or \
             FACESTREAM_ONNXRUNTIME_LIB (`make setup` installs it from the `onnxruntime` wheel)"
                .to_string()
        })?;
        let environment = ort::init_from(&path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?
            .with_name("facestream")
            .build()
            .map_err(|e| format!("cannot create an environment from {}: {e}", path.display()))?;
        Ok((path, environment))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn find_library(config: &OnnxRuntimeConfig) -> Option<PathBuf> {
    if !config.library.is_empty() {
        return Some(PathBuf::from(&config.library));
    }
    if let Some(p) = std::env::var_os("FACESTREAM_ONNXRUNTIME_LIB").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let found = super::native::find_in_venv("onnxruntime/capi", "libonnxruntime.so");
    found.or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
}

/// ONNX Runtime with one execution provider.
pub struct OrtBackend {
    provider: Provider,
    library: &'static Path,
    environment: &'static Environment,
    config: OnnxRuntimeConfig,
}

impl OrtBackend {
    pub fn open(
        config: &OnnxRuntimeConfig,
        provider: Provider,
    ) -> Result<OrtBackend, InferenceError> {
        let unavailable = |reason: String| InferenceError::Unavailable {
            name: provider.backend_name().into(),
            reason,
        };
        let (library, environment) = init(config).map_err(unavailable)?;
        let compiled_in = |available: ort::Result<bool>, ep: &str| -> Result<(), InferenceError> {
            match available {
                Ok(true) => Ok(()),
                Ok(false) => Err(unavailable(format!(
                    "{} has no {ep} execution provider (install the onnxruntime-gpu build)",
                    library.display()
                ))),
                Err(e) => Err(unavailable(e.to_string())),
            }
        };
        match provider {
            Provider::Cpu => {}
            Provider::Cuda | Provider::TensorRt => {
                if provider == Provider::TensorRt {
                    compiled_in(ep::TensorRT::is_available(), "TensorRT")?;
                }
                compiled_in(ep::CUDA::is_available(), "CUDA")?;
                if !super::nvidia_gpu_present() {
                    return Err(unavailable(
                        "no NVIDIA GPU/driver (/dev/nvidia0 missing)".into(),
                    ));
                }
            }
        }
        Ok(OrtBackend {
            provider,
            library,
            environment,
            config: config.clone(),
        })
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        self.provider.backend_name()
    }

    fn describe(&self) -> String {
        format!(
            "{} ({})",
            self.provider.backend_name(),
            self.library.display()
        )
    }

    fn load(
        &self,
        model: &VerifiedModel,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, InferenceError> {
        let name = self.name();
        let load_err = |message: String| InferenceError::Load {
            backend: name,
            model: model.id.clone(),
            message,
        };
        let mut providers = Vec::new();
        let fp16 = options.precision != Precision::F32;
        match self.provider {
            Provider::Cpu => {}
            Provider::TensorRt => {
                providers.push(
                    ep::TensorRT::default()
                        .with_device_id(self.config.device_id)
                        .with_fp16(fp16 || self.provider == Provider::TensorRt)
                        .with_engine_cache(true)
                        .with_engine_cache_path(&self.config.tensorrt_cache)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&self.config.tensorrt_cache)
                        .build()
                        .error_on_failure(),
                );
                providers.push(
                    ep::CUDA::default()
                        .with_device_id(self.config.device_id)
                        .build()
                        .error_on_failure(),
                );
            }
            Provider::Cuda => {
                providers.push(
                    ep::CUDA::default()
                        .with_device_id(self.config.device_id)
                        .build()
                        .error_on_failure(),
                );
            }
        }
        let err = |e: ort::Error<ort::session::builder::SessionBuilder>| load_err(e.to_string());
        let mut builder = OrtSession::builder(self.environment)
            .map_err(|e| load_err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(err)?;
        if options.threads > 0 {
            builder = builder
                .with_intra_threads(options.threads)
                .map_err(err)?
                .with_inter_threads(1)
                .map_err(err)?;
        }
        if !providers.is_empty() {
            builder = builder.with_execution_providers(providers).map_err(err)?;
        }
        let session = builder
            .commit_from_file(&model.path)
            .map_err(|e| load_err(e.to_string()))?;
        let input_name = session
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .ok_or_else(|| load_err("model has no input".into()))?;
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(Box::new(OrtRun {
            session,
            backend: name,
            model_id: model.id.clone(),
            input_name,
            output_names,
        }))
    }
}

struct OrtRun {
    session: OrtSession,
    backend: &'static str,
    model_id: String,
    input_name: String,
    output_names: Vec<String>,
}

impl Session for OrtRun {
    fn output_names(&self) -> &[String] {
        &self.output_names
    }

    fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, InferenceError> {
        check_batch(self.backend, &self.model_id, shape, data)?;
        let run_err = |e: ort::Error| InferenceError::Run {
            backend: self.backend,
            model: self.model_id.clone(),
            message: e.to_string(),
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let input = TensorRef::from_array_view((dims, data)).map_err(run_err)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(run_err)?;
        self.output_names
            .iter()
            .map(|name| {
                let (shape, values) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(run_err)?;
                Ok(Tensor::new(
                    shape.iter().map(|&d| d as usize).collect(),
                    values.to_vec(),
                ))
            })
            .collect()
    }
}
