//! `facestream verify A B`: 1:1 comparison of the main (largest) face in each image.

use std::path::PathBuf;
use std::process::ExitCode;

use facestream::config::Config;
use facestream::engine::{primary_face, FaceEngine};
use facestream::stages::embed::cosine;
use serde_json::json;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// First image.
    a: PathBuf,
    /// Second image.
    b: PathBuf,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut engine = FaceEngine::open(&config.engine())?;
    let mut faces = Vec::new();
    for path in [&args.a, &args.b] {
        let image = match engine.load(path) {
            Ok(image) => image,
            Err(e) => {
                eprintln!("facestream: {e}");
                return Ok(ExitCode::from(super::EXIT_SOME_INPUTS_FAILED));
            }
        };
        let (found, _) = engine.analyze(&image)?;
        let Some(face) = primary_face(&found).cloned() else {
            eprintln!("facestream: {}: no face found", path.display());
            return Ok(ExitCode::from(super::EXIT_SOME_INPUTS_FAILED));
        };
        faces.push((found.len(), face));
    }
    let similarity = cosine(&faces[0].1.embedding, &faces[1].1.embedding);
    let threshold = config.verify.threshold;
    let same = similarity >= threshold;
    if args.json {
        println!(
            "{}",
            json!({
                "a": args.a, "b": args.b,
                "faces_a": faces[0].0, "faces_b": faces[1].0,
                "quality_a": faces[0].1.quality.score, "quality_b": faces[1].1.quality.score,
                "similarity": similarity, "threshold": threshold, "same": same,
                "model": engine.model_id(),
            })
        );
    } else {
        println!(
            "{}: similarity {similarity:.4} {} threshold {threshold}",
            if same {
                "same person"
            } else {
                "different people"
            },
            if same { ">=" } else { "<" },
        );
    }
    Ok(ExitCode::SUCCESS)
}
