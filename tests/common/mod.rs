//! Shared helpers for the integration tests: where set-up put the models and the real
//! face fixtures (`make test` fetches both; the tests fail, not skip, when they are absent).

#![allow(dead_code)]

use std::path::PathBuf;

use facestream::config::Config;
use facestream::engine::FaceEngine;

fn from_env_or(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default))
}

pub fn fixtures() -> PathBuf {
    let dir = from_env_or("FACESTREAM_FIXTURES", ".cache/fixtures");
    assert!(
        dir.join("obama.jpg").exists(),
        "face fixtures missing in {}: run `make test` (or `make fixtures`)",
        dir.display()
    );
    dir
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn config() -> Config {
    let mut config = Config::load(None).expect("default config");
    config.models.dir = from_env_or("FACESTREAM_MODELS_DIR", ".cache/models");
    config
}

pub fn engine() -> FaceEngine {
    FaceEngine::new(&config())
        .expect("engine (run `make test` so models and OpenVINO are installed)")
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facestream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
