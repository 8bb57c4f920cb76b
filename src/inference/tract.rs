//! tract backend (feature `tract`, off by default): pure Rust, no native library.
//!
//! For builds that must carry no shared library (static or exotic targets). It is slower
//! than the native runtimes (see BENCHMARKS.md) and single-threaded per session, and its
//! crate takes minutes to compile, hence off by default. The ONNX graph is optimised for
//! each concrete input shape and the plans kept in a [`ShapeCache`].

use tract_onnx::prelude::*;

use super::native::check_batch;
use super::native::shape_cache::ShapeCache;
use super::{Backend, InferenceError, Session, SessionOptions};
use crate::models::VerifiedModel;

const NAME: &str = "tract";

/// The tract runtime (always usable when compiled in).
pub struct TractBackend;

type Plan = TypedSimplePlan<TypedModel>;

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> String {
        "tract (pure Rust, single-threaded, compiled in)".into()
    }

    fn load(
        &self,
        model: &VerifiedModel,
        options: &SessionOptions,
    ) -> Result<Box<dyn Session>, InferenceError> {
        let load_err = |e: TractError| InferenceError::Load {
            backend: NAME,
            model: model.id.clone(),
            message: format!("{e:#}"),
        };
        let graph = tract_onnx::onnx()
            .model_for_path(&model.path)
            .map_err(load_err)?;
        let output_names = graph
            .output_outlets()
            .map_err(load_err)?
            .iter()
            .map(|o| {
                graph
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| graph.node(o.node).name.clone())
            })
            .collect();
        Ok(Box::new(TractSession {
            graph,
            model_id: model.id.clone(),
            output_names,
            plans: ShapeCache::new(options.max_cached_shapes),
        }))
    }
}

struct TractSession {
    graph: InferenceModel,
    model_id: String,
    output_names: Vec<String>,
    plans: ShapeCache<Plan>,
}

impl Session for TractSession {
    fn output_names(&self) -> &[String] {
        &self.output_names
    }

    fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<super::Tensor>, InferenceError> {
        check_batch(NAME, &self.model_id, shape, data)?;
        let model_id = &self.model_id;
        let err = |e: TractError| InferenceError::Run {
            backend: NAME,
            model: model_id.clone(),
            message: format!("{e:#}"),
        };
        let graph = &self.graph;
        let plan = self.plans.get_or_try_insert(shape, || {
            graph
                .clone()
                .with_input_fact(0, f32::fact(shape).into())
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map_err(err)
        })?;
        let input = tract_ndarray::ArrayD::from_shape_vec(shape, data.to_vec())
            .map_err(|e| err(e.into()))?
            .into_tensor();
        let outputs = plan.run(tvec!(input.into())).map_err(err)?;
        outputs
            .iter()
            .map(|t| {
                let view = t.to_array_view::<f32>().map_err(err)?;
                Ok(super::Tensor::new(
                    view.shape().to_vec(),
                    view.iter().copied().collect(),
                ))
            })
            .collect()
    }
}
