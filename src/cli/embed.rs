//! `facestream embed IMAGE... [--list FILE]`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use facestream::config::Config;
use facestream::engine::{EngineError, FaceEngine};
use facestream::imageio;
use serde_json::json;

#[derive(clap::Args)]
pub struct EmbedArgs {
    /// Image files (JPEG or PNG).
    images: Vec<PathBuf>,
    /// A file with one image path per line (relative paths are from the list's folder).
    #[arg(long)]
    list: Option<PathBuf>,
}

pub fn run(config: &Config, args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut paths = args.images;
    if let Some(list) = &args.list {
        paths.extend(
            imageio::read_list(list)
                .with_context(|| format!("reading --list {}", list.display()))?,
        );
    }
    anyhow::ensure!(
        !paths.is_empty(),
        "no images given (pass paths or --list FILE)"
    );
    let mut engine = FaceEngine::open(&config.engine())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for path in &paths {
        let line = match describe(&mut engine, path) {
            Ok(value) => value,
            Err(e) => {
                failed += 1;
                let kind = match &e {
                    EngineError::Image(i) => i.kind(),
                    _ => "inference",
                };
                json!({"path": path, "error": {"kind": kind, "message": e.to_string()}})
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_SOME_INPUTS_FAILED)
    })
}

fn describe(
    engine: &mut FaceEngine,
    path: &std::path::Path,
) -> Result<serde_json::Value, EngineError> {
    let image = engine.load(path)?;
    let (faces, _) = engine.analyze(&image)?;
    Ok(json!({
        "path": path,
        "width": image.width(),
        "height": image.height(),
        "model": engine.model_id(),
        "faces": faces,
    }))
}
