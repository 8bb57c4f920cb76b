//! LiteRT backend (feature `litert`, off by default): the TFLite path for ARM edge boxes.
//!
//! Runs the `tflite` variant of a model (made by `make models-tflite`, sha256-checked like
//! every model) with the CPU accelerator (XNNPACK). TFLite conversions are NHWC, so the
//! session transposes the stage's NCHW batch on the way in. Models without a `tflite`
//! variant are not supported ([`Backend::supports`]) and run on the next backend in line.
//!
//! Unlike the other native backends, `libLiteRt.so` is linked at build time (the `litert`
//! crate links it; `make build-litert` points it at the `ai-edge-litert` wheel and sets
//! the rpath), so this feature belongs in builds for machines that have the library.

use litert::{
    Accelerators, CompilationOptions, CompiledModel, ElementType, Environment, Model, TensorBuffer,
    TensorShape,
};

use super::native::check_batch;
use super::native::shape_cache::ShapeCache;
use super::{Backend, InferenceError, Session, SessionOptions, Tensor};
use crate::models::VerifiedModel;

const NAME: &str = "litert";
const VARIANT: &str = "tflite";

/// The LiteRT runtime (the library is linked; an environment must come up).
pub struct LiteRtBackend;

impl LiteRtBackend {
    pub fn open() -> Result<LiteRtBackend, InferenceError> {
        let _ = litert::set_global_log_severity(litert::LogSeverity::Error);
        Environment::new().map_err(|e| InferenceError::Unavailable {
            name: NAME.into(),
            reason: format!("cannot create a LiteRT environment: {e}"),
        })?;
        Ok(LiteRtBackend)
    }
}

impl Backend for LiteRtBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        "litert (libLiteRt.so, CPU/XNNPACK; runs models with a tflite variant)".into()
    }

    fn supports(&self, model: &VerifiedModel) -> bool {
        model.has_variant(VARIANT)
    }

    fn load(
        &self,
        model: &VerifiedModel,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, InferenceError> {
        let load_err = |message: String| InferenceError::Load {
            backend: NAME,
            model: model.id.clone(),
            message,
        };
        let (path, variant) = model
            .variant(VARIANT)
            .map_err(|e| load_err(format!("{e} (run `make models-tflite`)")))?;
        if variant.layout.as_deref().unwrap_or("NHWC") != "NHWC" {
            return Err(load_err(format!(
                "unsupported tflite layout {:?}",
                variant.layout
            )));
        }
        let tflite = Model::from_file(&path).map_err(|e| load_err(e.to_string()))?;
        let signature = tflite.signature(0).map_err(|e| load_err(e.to_string()))?;
        let outputs = signature
            .output_count()
            .map_err(|e| load_err(e.to_string()))?;
        let output_shapes = (0..outputs)
            .map(|i| signature.output_shape(i).map(|s| s.dims))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| load_err(e.to_string()))?;
        let environment = Environment::new().map_err(|e| load_err(e.to_string()))?;
        let compilation = CompilationOptions::new()
            .and_then(|o| o.with_accelerators(Accelerators::CPU))
            .map_err(|e| load_err(e.to_string()))?;
        let compiled = CompiledModel::new(environment, tflite, &compilation)
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Box::new(LiteRtSession {
            compiled,
            buffers_env: Environment::new().map_err(|e| load_err(e.to_string()))?,
            model_id: model.id.clone(),
            // TFLite signatures carry no output names here; stages that read outputs by
            // name (the detector) never reach this backend, the embedder reads output 0.
            output_names: (0..outputs).map(|i| format!("output_{i}")).collect(),
            output_shapes,
            buffers: ShapeCache::new(options.max_cached_shapes),
            nhwc: Vec::new(),
        }))
    }
}

struct Buffers {
    input: Vec<TensorBuffer>,
    outputs: Vec<TensorBuffer>,
    output_dims: Vec<Vec<usize>>,
}

struct LiteRtSession {
    compiled: CompiledModel,
    buffers_env: Environment,
    model_id: String,
    output_names: Vec<String>,
    output_shapes: Vec<Vec<i32>>,
    buffers: ShapeCache<Buffers>,
    nhwc: Vec<f32>,
}

impl Session for LiteRtSession {
    fn output_names(&self) -> &[String] {
        &self.output_names
    }

    fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, InferenceError> {
        check_batch(NAME, &self.model_id, shape, data)?;
        let model_id = &self.model_id;
        let err = |e: litert::Error| InferenceError::Run {
            backend: NAME,
            model: model_id.clone(),
            message: e.to_string(),
        };
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        // NCHW -> NHWC
        self.nhwc.resize(data.len(), 0.0);
        for b in 0..n {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        self.nhwc[((b * h + y) * w + x) * c + ch] =
                            data[((b * c + ch) * h + y) * w + x];
                    }
                }
            }
        }
        let env = &self.buffers_env;
        let output_shapes = &self.output_shapes;
        let buffers = self.buffers.get_or_try_insert(shape, || {
            let f32_shape = |dims: Vec<i32>| TensorShape {
                element_type: ElementType::Float32,
                dims,
            };
            let input = vec![TensorBuffer::managed_host(
                env,
                &f32_shape(vec![n as i32, h as i32, w as i32, c as i32]),
            )
            .map_err(err)?];
            let output_dims: Vec<Vec<usize>> = output_shapes
                .iter()
                .map(|dims| {
                    dims.iter()
                        .enumerate()
                        .map(|(k, &d)| {
                            if k == 0 && d <= 1 {
                                n
                            } else {
                                d.max(1) as usize
                            }
                        })
                        .collect()
                })
                .collect();
            let outputs = output_dims
                .iter()
                .map(|dims| {
                    TensorBuffer::managed_host(
                        env,
                        &f32_shape(dims.iter().map(|&d| d as i32).collect()),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            Ok(Buffers {
                input,
                outputs,
                output_dims,
            })
        })?;
        buffers.input[0]
            .lock_for_write::<f32>()
            .map_err(err)?
            .copy_from_slice(&self.nhwc);
        self.compiled
            .run(&mut buffers.input, &mut buffers.outputs)
            .map_err(err)?;
        buffers
            .outputs
            .iter()
            .zip(&buffers.output_dims)
            .map(|(buffer, dims)| {
                let values = buffer.lock_for_read::<f32>().map_err(err)?;
                Ok(Tensor::new(dims.clone(), values.to_vec()))
            })
            .collect()
    }
}
