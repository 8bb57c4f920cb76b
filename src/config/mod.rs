//! Typed configuration: embedded default → `--config` file → environment overrides.
//!
//! Each stage owns its config struct (next to the stage, with a `///` doc on every field);
//! this module only composes them, merges the layers and validates the result. Validation
//! reports **every** problem at once and the process refuses to start on any of them.
//!
//! Environment overrides: `FACESTREAM__<SECTION>__<KEY>=<value>` sets any key (the value is
//! read as TOML, falling back to a plain string), e.g. `FACESTREAM__DETECT__SCORE_THRESHOLD=0.7`.
//! Two short forms exist for the paths set-up writes: `FACESTREAM_MODELS_DIR` and
//! `FACESTREAM_OPENVINO_LIB`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::ApiConfig;
use crate::engine::{EngineConfig, EngineSetup};
use crate::events::config::EventsConfig;
use crate::gallery::GalleryConfig;
use crate::imageio::LimitsConfig;
use crate::inference::InferenceConfig;
use crate::ingest::{CameraConfig, PipelineConfig};
use crate::models::ModelsConfig;
use crate::pipeline::PipelineSetup;
use crate::review::ReviewConfig;
use crate::simulate::demo::DemoConfig;
use crate::stages::detect::DetectConfig;
use crate::stages::embed::EmbedConfig;
use crate::stages::matching::MatchConfig;
use crate::stages::quality::QualityConfig;
use crate::track::TrackConfig;

/// The embedded default configuration (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Errors from loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin} is not valid TOML or has unknown/mistyped keys: {message}")]
    Parse { origin: String, message: String },
    #[error("environment override {name}: {message}")]
    Env { name: String, message: String },
    #[error("invalid configuration ({} problem(s)):\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// 1:1 verification settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Cosine similarity at or above which two faces are called the same person.
    /// 0.363 is OpenCV's published operating point for SFace; `facestream eval lfw`
    /// reports the accuracy-optimal threshold on your data.
    pub threshold: f32,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub models: ModelsConfig,
    pub inference: InferenceConfig,
    pub limits: LimitsConfig,
    pub detect: DetectConfig,
    pub quality: QualityConfig,
    pub embed: EmbedConfig,
    pub verify: VerifyConfig,
    pub gallery: GalleryConfig,
    #[serde(rename = "match")]
    pub matching: MatchConfig,
    pub api: ApiConfig,
    pub events: EventsConfig,
    pub pipeline: PipelineConfig,
    pub track: TrackConfig,
    /// Unknown tracks kept for review (`[review]`, off by default).
    pub review: ReviewConfig,
    /// Decided tracks kept as searchable appearances (`[history]`, off by default).
    #[serde(default)]
    pub history: crate::history::HistoryConfig,
    pub demo: DemoConfig,
    /// Several nodes (`[cluster]`): node id, camera leases.
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
    /// Cameras (`[[cameras]]`); none in the embedded default.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
}

impl Config {
    /// The face engine's sections (`[models]`, `[inference]`, `[limits]`, `[detect]`,
    /// `[quality]`, `[embed]`), to resolve once with [`EngineSetup::resolve`].
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            models: self.models.clone(),
            inference: self.inference.clone(),
            limits: self.limits.clone(),
            detect: self.detect.clone(),
            quality: self.quality.clone(),
            embed: self.embed.clone(),
        }
    }

    /// What the streaming pipeline is built from: the resolved engine and the sections
    /// of the cameras, the pipeline, tracking, events, review and this node.
    pub fn pipeline_setup(&self, engine: EngineSetup) -> PipelineSetup {
        PipelineSetup {
            engine,
            cameras: self.cameras.clone(),
            pipeline: self.pipeline.clone(),
            track: self.track.clone(),
            events: self.events.clone(),
            review: self.review.clone(),
            top_k: self.matching.top_k,
            node_id: self.cluster.node_id(),
            camera_leases: self.cluster.camera_leases,
        }
    }

    /// Load the embedded default, overlay `file` when given, then the environment,
    /// and validate.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    /// As [`Config::load`], with the environment passed in (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let text = file
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            })
            .transpose()?;
        let origin = file.map(|p| p.display().to_string());
        Self::from_layers(text.as_deref().zip(origin.as_deref()), env)
    }

    /// The embedded default overlaid with `text` (a config file's contents, named
    /// `origin` in errors), validated; no environment. For tests and the fuzz target.
    pub fn from_toml_text(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_layers(Some((text, origin)), &[])
    }

    fn from_layers(
        file: Option<(&str, &str)>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut merged = parse_toml(DEFAULT_TOML, "embedded default")?;
        if let Some((text, origin)) = file {
            merge(&mut merged, parse_toml(text, origin)?);
        }
        apply_env(&mut merged, env)?;
        let mut config: Config =
            merged
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: file.map_or("embedded default".into(), |(_, o)| o.to_string()),
                    message: e.message().to_string(),
                })?;
        config.validate()?;
        if config.cluster.camera_leases {
            let node = config.cluster.node_id();
            for broker in &mut config.events.mqtt {
                broker.cluster_node = Some(node.clone());
            }
        }
        Ok(config)
    }

    /// This configuration with every secret replaced by `***` (API keys, webhook
    /// secrets, MQTT passwords, camera URL credentials): what `facestream config` prints.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for key in &mut c.api.keys {
            key.key = "***".into();
        }
        for hook in &mut c.events.webhooks {
            hook.secret = "***".into();
            hook.url = crate::redact::url(&hook.url);
        }
        for broker in &mut c.events.mqtt {
            if broker.password.is_some() {
                broker.password = Some("***".into());
            }
        }
        for server in &mut c.events.nats {
            server.url = crate::redact::urls_in(&server.url);
            for secret in [&mut server.password, &mut server.token] {
                if secret.is_some() {
                    *secret = Some("***".into());
                }
            }
        }
        c.gallery.postgres_url = crate::redact::secrets(&c.gallery.postgres_url);
        for camera in &mut c.cameras {
            camera.url = crate::redact::url(&camera.url);
            if let Some(p) = &mut camera.pipeline {
                *p = crate::redact::urls_in(p);
            }
        }
        c
    }

    /// Every problem in the configuration, all at once.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.models.dir.as_os_str().is_empty() {
            problems.push("models.dir must not be empty".into());
        }
        self.inference.validate(&mut problems);
        self.limits.validate(&mut problems);
        self.detect.validate(&mut problems);
        self.quality.validate(&mut problems);
        self.embed.validate(&mut problems);
        self.gallery.validate(&mut problems);
        self.cluster.validate(
            self.gallery.store == crate::gallery::StoreKind::Postgres,
            &self.cameras,
            &mut problems,
        );
        self.matching.validate(&mut problems);
        self.api.validate(&mut problems);
        self.events.validate(&mut problems);
        self.pipeline.validate(&mut problems);
        self.track.validate(&mut problems);
        self.review.validate(&mut problems);
        self.history.validate(&mut problems);
        self.demo.validate(&mut problems);
        for camera in &self.cameras {
            camera.validate(&mut problems);
        }
        let mut ids: Vec<&str> = self.cameras.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        for pair in ids.windows(2).filter(|p| p[0] == p[1]) {
            problems.push(format!("cameras.id = {:?} is used twice", pair[0]));
        }
        if !(-1.0..=1.0).contains(&self.verify.threshold) {
            problems.push(format!(
                "verify.threshold = {} is outside the cosine range [-1, 1]",
                self.verify.threshold
            ));
        }
        problems
    }

    /// Fails with [`ConfigError::Invalid`] listing every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<toml::Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.message().to_string(),
        })
}

/// Deep-merge `overlay` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

fn apply_env(merged: &mut toml::Value, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let path: Vec<String> = match name.as_str() {
            "FACESTREAM_MODELS_DIR" => vec!["models".into(), "dir".into()],
            "FACESTREAM_OPENVINO_LIB" => {
                vec!["inference".into(), "openvino".into(), "library".into()]
            }
            _ => match name.strip_prefix("FACESTREAM__") {
                Some(rest) => rest.split("__").map(|s| s.to_ascii_lowercase()).collect(),
                None => continue,
            },
        };
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                name: name.clone(),
                message: "empty path segment".into(),
            });
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let mut node = &mut *merged;
        for key in &path[..path.len() - 1] {
            let table = node.as_table_mut().ok_or_else(|| ConfigError::Env {
                name: name.clone(),
                message: format!("`{key}` is not a section"),
            })?;
            node = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()));
        }
        let table = node.as_table_mut().ok_or_else(|| ConfigError::Env {
            name: name.clone(),
            message: "parent is not a section".into(),
        })?;
        table.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_validates() {
        let config = Config::load_with_env(None, &[]).expect("default config");
        assert_eq!(config.embed.batch_size, 16);
        assert!(config.problems().is_empty());
    }

    #[test]
    fn a_config_text_overlays_the_default_and_errors_name_its_origin() {
        let config = Config::from_toml_text("[detect]\nscore_threshold = 0.8\n", "site.toml")
            .expect("valid overlay");
        assert_eq!(config.detect.score_threshold, 0.8);
        assert_eq!(config.embed.batch_size, 16, "the rest from the default");
        let err = Config::from_toml_text("[detect\n", "site.toml").unwrap_err();
        assert!(err.to_string().contains("site.toml"), "{err}");
        let err = Config::from_toml_text("[detect]\nscore_threshold = \"high\"\n", "site.toml")
            .unwrap_err();
        assert!(err.to_string().contains("site.toml"), "{err}");
    }

    #[test]
    fn env_overrides_typed_values_and_short_forms() {
        let env = vec![
            ("FACESTREAM__DETECT__SCORE_THRESHOLD".into(), "0.75".into()),
            ("FACESTREAM_MODELS_DIR".into(), "/opt/models".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let config = Config::load_with_env(None, &env).unwrap();
        assert_eq!(config.detect.score_threshold, 0.75);
        assert_eq!(config.models.dir, PathBuf::from("/opt/models"));
    }

    #[test]
    fn the_printed_configuration_holds_no_secret() {
        let file =
            std::env::temp_dir().join(format!("facestream-redact-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            r#"
[api]
keys = [{ name = "ops", key = "k3y-0123456789abcdef", scope = "admin" }]
[[events.webhooks]]
name = "crm"
url = "https://hooks.example/in?token=t0ken"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[events.mqtt]]
name = "broker"
host = "127.0.0.1"
username = "fs"
password = "mqtt-pa55"
[gallery]
store = "postgres"
postgres_url = "postgresql://fs:pg-pa55@db.internal:5432/facestream"
[[cameras]]
id = "door"
url = "rtsp://admin:cam/pa55@10.0.0.5/ch1"
"#,
        )
        .unwrap();
        let config = Config::load_with_env(Some(&file), &[]).unwrap();
        let _ = std::fs::remove_file(&file);
        let text = toml::to_string_pretty(&config.redacted()).unwrap();
        for secret in [
            "k3y-0123456789abcdef",
            "t0ken",
            "whsec_MfKQ",
            "mqtt-pa55",
            "cam/pa55",
            "pg-pa55",
        ] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(text.contains("rtsp://admin:***@10.0.0.5/ch1"), "{text}");
        assert!(
            text.contains("postgresql://fs:***@db.internal:5432/facestream"),
            "{text}"
        );
        // libpq's key=value form too
        let mut kv = config.clone();
        kv.gallery.postgres_url = "host=db.internal user=fs password='kv pa55' dbname=fs".into();
        let text = toml::to_string_pretty(&kv.redacted()).unwrap();
        assert!(!text.contains("kv pa55"), "{text}");
        assert!(
            text.contains("host=db.internal user=fs password=*** dbname=fs"),
            "{text}"
        );
    }

    #[test]
    fn cluster_settings_are_checked() {
        let load = |extra: &str| {
            let file =
                std::env::temp_dir().join(format!("fs-cluster-{}.toml", uuid::Uuid::now_v7()));
            std::fs::write(&file, extra).unwrap();
            let loaded = Config::load_with_env(Some(&file), &[]);
            let _ = std::fs::remove_file(&file);
            loaded
        };
        let problems = |extra: &str| match load(extra) {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        assert!(problems("[cluster]\ncamera_leases = true\n")
            .contains("cluster.camera_leases needs gallery.store = \"postgres\""));
        assert!(problems("[cluster]\nnode_id = \"node a\"\n").contains("cluster.node_id"));
        assert!(
            problems("[gallery]\nstore = \"postgres\"\npostgres_url = \"http://x\"\n")
                .contains("gallery.postgres_url")
        );
        assert!(problems(
            "[gallery]\nstore = \"postgres\"\npostgres_url = \"postgresql://h/db?sslmode=require\"\n"
        )
        .contains("sslmode=require"));
        let fine = load(
            "[gallery]\nstore = \"postgres\"\npostgres_url = \"postgresql://fs@db/fs\"\n\
             [cluster]\nnode_id = \"node-a\"\ncamera_leases = true\n\
             [[events.mqtt]]\nname = \"ha\"\nhost = \"broker\"\n",
        )
        .unwrap();
        assert_eq!(fine.cluster.node_id(), "node-a");
        // a cluster node's MQTT client id carries its node id
        assert_eq!(
            fine.events.mqtt[0].effective_client_id(),
            "facestream-node-a-ha"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("fs-cfg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[detect]\nscore_treshold = 0.5\n").unwrap();
        let err = Config::load_with_env(Some(&file), &[]).unwrap_err();
        assert!(err.to_string().contains("score_treshold"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let env = vec![
            ("FACESTREAM__DETECT__SCORE_THRESHOLD".into(), "1.5".into()),
            ("FACESTREAM__EMBED__BATCH_SIZE".into(), "0".into()),
            ("FACESTREAM__VERIFY__THRESHOLD".into(), "2.0".into()),
            ("FACESTREAM__LIMITS__MAX_IMAGE_PIXELS".into(), "0".into()),
        ];
        match Config::load_with_env(None, &env) {
            Err(ConfigError::Invalid(problems)) => {
                assert_eq!(problems.len(), 4, "{problems:?}");
                assert!(problems
                    .iter()
                    .any(|p| p.contains("detect.score_threshold")));
                assert!(problems.iter().any(|p| p.contains("embed.batch_size")));
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
