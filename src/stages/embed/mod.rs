//! Embedding: SFace turns aligned 112×112 crops into L2-normalised 128-d vectors, in batches.
//!
//! Last per-face stage before matching. Crops are packed into one `N×3×112×112` RGB
//! planar f32 tensor (raw 0–255, as OpenCV's `FaceRecognizerSF` feeds SFace), run in
//! chunks of at most `embed.batch_size`, and each output row is divided by its L2 norm so
//! that cosine similarity is a dot product.

use serde::{Deserialize, Serialize};

use super::align::{AlignedFace, CROP};
use crate::inference::{Backend, InferenceError, Session, SessionOptions};
use crate::models::VerifiedModel;

/// Embedding settings (section `[embed]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Most faces per inference call. Larger batches raise throughput on multi-core CPUs
    /// and GPUs at the cost of latency; 1 gives the lowest single-face latency.
    pub batch_size: usize,
    /// Test-time augmentation: embed each crop and its mirror image, average the two
    /// normalised vectors and normalise again. Twice the embedding work per face.
    #[serde(default)]
    pub flip_average: bool,
}

impl EmbedConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        crate::validate::within(problems, "embed.batch_size", self.batch_size, 1..=256);
    }
}

/// Errors from embedding.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("embedding model returned {got} values for {faces} faces (expected {dim} per face)")]
    BadOutput {
        got: usize,
        faces: usize,
        dim: usize,
    },
}

/// An L2-normalised embedding.
pub type Embedding = Vec<f32>;

/// The embedding stage.
pub struct Embed {
    session: Box<dyn Session>,
    model_id: String,
    calibration: Option<crate::models::Calibration>,
    dim: usize,
    batch_size: usize,
    flip_average: bool,
    input: Vec<f32>,
}

impl Embed {
    pub fn new(
        backend: &dyn Backend,
        model: &VerifiedModel,
        options: &SessionOptions,
        config: &EmbedConfig,
    ) -> Result<Embed, EmbedError> {
        Ok(Embed {
            session: backend.load(model, options)?,
            model_id: model.id.clone(),
            calibration: model.entry.calibration.clone(),
            dim: model.entry.embedding_dim.unwrap_or(128),
            batch_size: config.batch_size,
            flip_average: config.flip_average,
            input: Vec::new(),
        })
    }

    /// `name@version` of the model, stored with every embedding.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model's score calibration from its manifest, when it has one.
    pub fn calibration(&self) -> Option<&crate::models::Calibration> {
        self.calibration.as_ref()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embed crops; the result is in input order.
    ///
    /// A batch runs at the next power of two of its size (at most `embed.batch_size`),
    /// padded with zeros: backends that compile per input shape then know five shapes
    /// (1, 2, 4, 8, 16) instead of one per batch size, so a stream of varying batches
    /// never recompiles, and [`Embed::warm_up`] can compile them all before the first
    /// camera frame. Rows are independent: padding changes no embedding.
    pub fn embed(&mut self, faces: &[&AlignedFace]) -> Result<Vec<Embedding>, EmbedError> {
        let copies = if self.flip_average { 2 } else { 1 };
        let per_call = (self.batch_size / copies).max(1);
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(per_call) {
            let rows = chunk.len() * copies;
            let n = padded_batch(rows, self.batch_size.max(rows));
            pack_rgb_planar(chunk, &mut self.input);
            if self.flip_average {
                append_mirrored(chunk, &mut self.input);
            }
            self.input.resize(n * 3 * CROP * CROP, 0.0);
            let shape = [n, 3, CROP, CROP];
            let outputs = self.session.run(&shape, &self.input)?;
            let data = outputs.first().map(|t| t.data.as_slice()).unwrap_or(&[]);
            if data.len() != n * self.dim {
                return Err(EmbedError::BadOutput {
                    got: data.len(),
                    faces: n,
                    dim: self.dim,
                });
            }
            let dim = self.dim;
            if self.flip_average {
                let (plain, mirrored) = data.split_at(chunk.len() * dim);
                out.extend(plain.chunks_exact(dim).zip(mirrored.chunks_exact(dim)).map(
                    |(a, b)| {
                        let (a, b) = (l2_normalised(a), l2_normalised(b));
                        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
                        l2_normalised(&sum)
                    },
                ));
            } else {
                out.extend(data.chunks_exact(dim).take(rows).map(l2_normalised));
            }
        }
        Ok(out)
    }

    /// Run every batch shape up to `max_batch` once (backends compile per shape), so the
    /// first real faces do not wait for a compilation.
    pub fn warm_up(&mut self, max_batch: usize) -> Result<(), EmbedError> {
        let blank = AlignedFace::blank();
        let mut n = 1;
        loop {
            let n_now = padded_batch(n, self.batch_size);
            let faces = vec![&blank; n_now];
            self.embed(&faces)?;
            if n_now >= max_batch.min(self.batch_size) {
                return Ok(());
            }
            n = n_now * 2;
        }
    }
}

/// The batch size a chunk of `n` faces runs at: the next power of two, at most `max`.
pub fn padded_batch(n: usize, max: usize) -> usize {
    n.next_power_of_two().min(max.max(n))
}

/// Pack crops into an `N×3×112×112` RGB planar tensor.
pub fn pack_rgb_planar(faces: &[&AlignedFace], out: &mut Vec<f32>) {
    let plane = CROP * CROP;
    out.clear();
    out.resize(faces.len() * 3 * plane, 0.0);
    for (n, face) in faces.iter().enumerate() {
        let base = n * 3 * plane;
        for (i, px) in face.rgb.chunks_exact(3).enumerate() {
            out[base + i] = px[0] as f32;
            out[base + plane + i] = px[1] as f32;
            out[base + 2 * plane + i] = px[2] as f32;
        }
    }
}

/// Append the crops' mirror images (left-right) to a tensor packed by [`pack_rgb_planar`].
pub fn append_mirrored(faces: &[&AlignedFace], out: &mut Vec<f32>) {
    let plane = CROP * CROP;
    let start = out.len();
    out.resize(start + faces.len() * 3 * plane, 0.0);
    for (n, face) in faces.iter().enumerate() {
        let base = start + n * 3 * plane;
        for (i, px) in face.rgb.chunks_exact(3).enumerate() {
            let (y, x) = (i / CROP, i % CROP);
            let j = y * CROP + (CROP - 1 - x);
            out[base + j] = px[0] as f32;
            out[base + plane + j] = px[1] as f32;
            out[base + 2 * plane + j] = px[2] as f32;
        }
    }
}

/// `v / |v|`; a zero vector stays zero.
pub fn l2_normalised(v: &[f32]) -> Embedding {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// Cosine similarity of two L2-normalised embeddings.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {

    #[test]
    fn mirrored_rows_follow_the_plain_ones_flipped_left_to_right() {
        use super::{append_mirrored, pack_rgb_planar, AlignedFace, CROP};
        let mut face = AlignedFace::blank();
        // A distinct value per pixel and channel.
        for (i, v) in face.rgb.iter_mut().enumerate() {
            *v = (i % 251) as u8;
        }
        let mut t = Vec::new();
        pack_rgb_planar(&[&face], &mut t);
        append_mirrored(&[&face], &mut t);
        let plane = CROP * CROP;
        assert_eq!(t.len(), 2 * 3 * plane);
        for c in 0..3 {
            for y in [0, 57, CROP - 1] {
                for x in [0, 3, CROP - 1] {
                    let plain = t[c * plane + y * CROP + x];
                    let mirrored = t[3 * plane + c * plane + y * CROP + (CROP - 1 - x)];
                    assert_eq!(plain, mirrored, "channel {c} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn batches_run_at_powers_of_two_up_to_the_configured_size() {
        let sizes: Vec<usize> = (1..=16).map(|n| padded_batch(n, 16)).collect();
        assert_eq!(
            sizes,
            [1, 2, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16]
        );
        assert_eq!(padded_batch(5, 6), 6);
        assert_eq!(padded_batch(3, 3), 3);
    }

    use super::*;
    use crate::stages::align::Similarity;

    #[test]
    fn normalises_and_compares() {
        let v = l2_normalised(&[3.0, 4.0]);
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
        assert_eq!(l2_normalised(&[0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn packs_planar_rgb_per_face() {
        let face = |v: u8| AlignedFace {
            rgb: [v, v + 1, v + 2].repeat(CROP * CROP),
            transform: Similarity::IDENTITY,
        };
        let (a, b) = (face(10), face(100));
        let mut out = Vec::new();
        pack_rgb_planar(&[&a, &b], &mut out);
        let plane = CROP * CROP;
        assert_eq!(out.len(), 6 * plane);
        assert_eq!((out[0], out[plane], out[2 * plane]), (10.0, 11.0, 12.0));
        assert_eq!((out[3 * plane], out[5 * plane + 7]), (100.0, 102.0));
    }
}
