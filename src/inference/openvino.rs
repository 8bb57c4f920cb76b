//! OpenVINO backend (feature `openvino`): `libopenvino_c` loaded at run time.
//!
//! OpenVINO reads the prepared ONNX files directly. Models are kept with dynamic
//! dimensions and compiled per concrete input shape (static shapes run faster on CPU);
//! a small LRU of compiled shapes per session makes repeated sizes free.

use std::path::PathBuf;

use openvino::{Core, DeviceType, ElementType, PartialShape, RwPropertyKey, Shape};

use super::native::check_batch;
use super::native::shape_cache::ShapeCache;
use super::{Backend, InferenceError, Precision, Session, SessionOptions, Tensor};
use crate::inference::OpenVinoConfig;
use crate::models::VerifiedModel;

const NAME: &str = "openvino";

/// The OpenVINO runtime, its library loaded.
pub struct OpenVinoBackend {
    library: Option<PathBuf>,
    device: String,
    version: String,
}

impl OpenVinoBackend {
    /// Find and load `libopenvino_c`, and check that a core can be created.
    pub fn open(config: &OpenVinoConfig) -> Result<OpenVinoBackend, InferenceError> {
        let unavailable = |reason: String| InferenceError::Unavailable {
            name: NAME.into(),
            reason,
        };
        let library = find_library(config);
        match &library {
            Some(path) => openvino_sys::library::load_from(path.clone())
                .map_err(|e| unavailable(format!("cannot load {}: {e}", path.display())))?,
            None => openvino_sys::library::load().map_err(|e| {
                unavailable(format!(
                    "{e}; set inference.openvino.library or FACESTREAM_OPENVINO_LIB to libopenvino_c.so \
                     (`make setup` installs it from the `openvino` wheel)"
                ))
            })?,
        }
        let core = Core::new().map_err(|e| unavailable(format!("cannot create a core: {e}")))?;
        let version = core
            .versions(&config.device)
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| format!("{} {}", v.description, v.build_number))
            .unwrap_or_else(|| "unknown version".into());
        let devices = core
            .available_devices()
            .map_err(|e| unavailable(format!("cannot list devices: {e}")))?;
        let wanted = config
            .device
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        if !devices.iter().any(|d| d.as_ref().starts_with(&wanted)) {
            return Err(unavailable(format!(
                "device {} not present (available: {:?})",
                config.device,
                devices
                    .iter()
                    .map(|d| d.as_ref().to_string())
                    .collect::<Vec<_>>()
            )));
        }
        Ok(OpenVinoBackend {
            library,
            device: config.device.clone(),
            version,
        })
    }
}

/// Explicit path (config or env) first, then the set-up's venv wheel; `None` leaves the
/// search to openvino-finder.
fn find_library(config: &OpenVinoConfig) -> Option<PathBuf> {
    if !config.library.is_empty() {
        return Some(PathBuf::from(&config.library));
    }
    super::native::find_in_venv("openvino/libs", "libopenvino_c.so")
}

impl Backend for OpenVinoBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        format!(
            "openvino {} on {} ({})",
            self.version,
            self.device,
            self.library
                .as_ref()
                .map_or("library found by openvino-finder".into(), |p| p
                    .display()
                    .to_string())
        )
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
        let mut core = Core::new().map_err(|e| load_err(e.to_string()))?;
        let device = DeviceType::from(self.device.as_str()).to_owned();
        if device == DeviceType::CPU {
            let mut properties = vec![
                (RwPropertyKey::HintPerformanceMode, "LATENCY".to_string()),
                (RwPropertyKey::NumStreams, "1".to_string()),
                (
                    RwPropertyKey::HintInferencePrecision,
                    options.precision.as_str().to_string(),
                ),
            ];
            if options.threads > 0 {
                properties.push((
                    RwPropertyKey::InferenceNumThreads,
                    options.threads.to_string(),
                ));
            }
            for (key, value) in properties {
                core.set_property(&device, &key, &value)
                    .map_err(|e| load_err(format!("setting {key:?}={value}: {e}")))?;
            }
        } else if options.precision != Precision::F32 {
            core.set_property(
                &device,
                &RwPropertyKey::HintInferencePrecision,
                options.precision.as_str(),
            )
            .map_err(|e| load_err(e.to_string()))?;
        }
        let path = model
            .path
            .to_str()
            .ok_or_else(|| load_err("path is not UTF-8".into()))?;
        let graph = core
            .read_model_from_file(path, "")
            .map_err(|e| load_err(e.to_string()))?;
        let output_names = (0..graph
            .get_outputs_len()
            .map_err(|e| load_err(e.to_string()))?)
            .map(|i| graph.get_output_by_index(i).and_then(|n| n.get_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| load_err(e.to_string()))?;
        let input_name = graph
            .get_input_by_index(0)
            .and_then(|n| n.get_name())
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Box::new(OpenVinoSession {
            core,
            device,
            graph,
            model_id: model.id.clone(),
            input_name,
            output_names,
            compiled: ShapeCache::new(options.max_cached_shapes),
        }))
    }
}

struct Compiled {
    // Field order matters: the request must be dropped before its compiled model.
    request: openvino::InferRequest,
    _model: openvino::CompiledModel,
}

struct OpenVinoSession {
    core: Core,
    device: DeviceType<'static>,
    graph: openvino::Model,
    model_id: String,
    input_name: String,
    output_names: Vec<String>,
    compiled: ShapeCache<Compiled>,
}

impl OpenVinoSession {
    fn run_err(&self, message: impl std::fmt::Display) -> InferenceError {
        InferenceError::Run {
            backend: NAME,
            model: self.model_id.clone(),
            message: message.to_string(),
        }
    }
}

/// Reshape the graph to `shape` and compile it.
fn compile(
    core: &mut Core,
    device: &DeviceType<'static>,
    graph: &mut openvino::Model,
    input_name: &str,
    model_id: &str,
    shape: &[usize],
) -> Result<Compiled, InferenceError> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let shape_err = |message: String| InferenceError::Shape {
        backend: NAME,
        model: model_id.to_string(),
        got: shape.to_vec(),
        expected: format!("a shape the model accepts ({message})"),
    };
    let partial =
        PartialShape::new_static(dims.len() as i64, &dims).map_err(|e| shape_err(e.to_string()))?;
    graph
        .reshape_input_by_name(input_name, &partial)
        .map_err(|e| shape_err(e.to_string()))?;
    let run_err = |message: String| InferenceError::Run {
        backend: NAME,
        model: model_id.to_string(),
        message,
    };
    let mut model = core
        .compile_model(graph, device.to_owned())
        .map_err(|e| run_err(format!("compiling for shape {shape:?}: {e}")))?;
    let request = model
        .create_infer_request()
        .map_err(|e| run_err(e.to_string()))?;
    Ok(Compiled {
        request,
        _model: model,
    })
}

impl Session for OpenVinoSession {
    fn output_names(&self) -> &[String] {
        &self.output_names
    }

    fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Tensor>, InferenceError> {
        check_batch(NAME, &self.model_id, shape, data)?;
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let ov_shape = Shape::new(&dims).map_err(|e| self.run_err(e))?;
        let mut input =
            openvino::Tensor::new(ElementType::F32, &ov_shape).map_err(|e| self.run_err(e))?;
        input
            .get_data_mut::<f32>()
            .map_err(|e| self.run_err(e))?
            .copy_from_slice(data);
        let OpenVinoSession {
            core,
            device,
            graph,
            model_id,
            input_name,
            output_names,
            compiled,
        } = self;
        let entry = compiled.get_or_try_insert(shape, || {
            compile(core, device, graph, input_name, model_id, shape)
        })?;
        let request = &mut entry.request;
        let result = request
            .set_tensor(input_name, &input)
            .and_then(|()| request.infer())
            .and_then(|()| {
                (0..output_names.len())
                    .map(|i| {
                        let t = request.get_output_tensor_by_index(i)?;
                        let shape = t
                            .get_shape()?
                            .get_dimensions()
                            .iter()
                            .map(|&d| d as usize)
                            .collect();
                        Ok(Tensor::new(shape, t.get_data::<f32>()?.to_vec()))
                    })
                    .collect::<Result<Vec<_>, openvino::InferenceError>>()
            });
        result.map_err(|e| self.run_err(e))
    }
}
