//! `facestream bench`: per-backend inference speed on real faces — detector latency at
//! 640×640, at the streaming pipeline's inputs (the 640×360 downscale of a 16:9 frame and
//! the 320 and 160 px motion tiles), embedding latency at batch 1 and throughput at batch 8 and 32, for each
//! thread count. Timings include the stage's own pre/post-processing (tensor packing,
//! decoding, NMS, normalisation), i.e. what the pipeline pays.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use facestream::config::Config;
use facestream::inference::{self, Precision, SessionOptions};
use facestream::models::ModelStore;
use facestream::stages::align::{self, AlignedFace};
use facestream::stages::detect::{Detect, Detector};
use facestream::stages::embed::{Embed, EmbedConfig};
use facestream::stages::motion::plan::{SMALL_TILE, TILE};
use serde::Serialize;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Backends to measure (repeatable); default: every usable one.
    #[arg(long)]
    backend: Vec<String>,
    /// Thread counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Seconds spent on each measurement (after warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// A photo with faces: the detector input and the source of the face crops
    /// (default: the set-up's group photo fixture t1.jpg).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    backend: String,
    threads: usize,
    /// `None` when the backend cannot run the detector (LiteRT: embedding only).
    detect_640_ms_p50: Option<f64>,
    detect_640_ms_p90: Option<f64>,
    /// The downscale of a 1920×1080 frame (step 3), as the pipeline's whole-frame pass.
    detect_640x360_ms_p50: Option<f64>,
    /// A large motion tile ([`facestream::stages::motion::plan::TILE`]).
    detect_tile320_ms_p50: Option<f64>,
    /// A small tile ([`facestream::stages::motion::plan::SMALL_TILE`]).
    detect_tile160_ms_p50: Option<f64>,
    /// Precision of the embedding model (`f32` or `int8`, from `inference.precision`).
    embed_precision: &'static str,
    embed_b1_ms_p50: f64,
    embed_b8_faces_per_s: f64,
    embed_b32_faces_per_s: f64,
}

/// Run `f` for warm-up then for `budget`; return per-call durations in ms, sorted.
fn measure(
    budget: Duration,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for _ in 0..3 {
        f()?;
    }
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(config: &Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let image_path = args.image.clone().unwrap_or_else(|| {
        std::env::var_os("FACESTREAM_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".cache/fixtures"))
            .join("t1.jpg")
    });
    let photo = facestream::imageio::load_image(&image_path, &config.limits)
        .with_context(|| "bench needs a photo with faces (run `make fixtures` or pass --image)")?;
    let resize =
        |w, h| image::imageops::resize(&photo, w, h, image::imageops::FilterType::Triangle);
    let square = resize(640, 640);
    let wide = resize(640, 360);
    let tile = resize(TILE, TILE);
    let small_tile = resize(SMALL_TILE, SMALL_TILE);
    let store = ModelStore::open(&config.models.dir)?;
    let (yunet, sface) = (
        store.model(facestream::models::DETECTOR)?,
        store.model(facestream::models::EMBEDDER)?,
    );
    let names: Vec<String> = if args.backend.is_empty() {
        inference::survey(&config.inference)
            .into_iter()
            .filter(|s| s.usable)
            .map(|s| s.name.to_string())
            .collect()
    } else {
        args.backend.clone()
    };
    let budget = Duration::from_secs_f64(args.seconds);
    let mut rows = Vec::new();
    println!(
        "{:<22} {:>7} {:>14} {:>14} {:>14} {:>14} {:>14} {:>14} {:>16} {:>16}",
        "backend",
        "threads",
        "detect640 p50",
        "detect640 p90",
        "640x360 p50",
        "tile320 p50",
        "tile160 p50",
        "embed b1 p50",
        "embed b8 faces/s",
        "embed b32 faces/s"
    );
    for name in &names {
        let backend = inference::open(name, &config.inference)?;
        for &threads in &args.threads {
            let options = SessionOptions {
                threads,
                ..SessionOptions::from(&config.inference)
            };
            let detector = inference::for_model(
                inference::open(name, &config.inference)?,
                &yunet,
                &config.inference,
            )?;
            let own_detector = detector.name() == backend.name();
            let mut detect =
                Detect::new(detector.as_ref(), &yunet, &options, config.detect.clone())?;
            let faces = detect.detect(&photo)?;
            let crops: Vec<AlignedFace> = faces
                .iter()
                .filter_map(|f| align::align(&photo, &f.landmarks))
                .collect();
            anyhow::ensure!(
                !crops.is_empty(),
                "no faces found in {}",
                image_path.display()
            );
            let mut detect_at = |image: &image::RgbImage, side: u32| {
                if !own_detector {
                    return Ok(None);
                }
                measure(budget, || {
                    detect.detect_with(image, side)?;
                    Ok(())
                })
                .map(Some)
            };
            let det = detect_at(&square, 640)?;
            let det_wide = detect_at(&wide, 640)?;
            let det_tile = detect_at(&tile, TILE)?;
            let det_small = detect_at(&small_tile, SMALL_TILE)?;
            // The embedding model inference.precision selects on this backend (int8 or f32).
            let (sface, precision) =
                facestream::engine::embedding_model(&sface, backend.name(), &config.inference)?;
            let embed_at = |batch: usize| -> anyhow::Result<Vec<f64>> {
                let mut embed = Embed::new(
                    backend.as_ref(),
                    &sface,
                    &options,
                    &EmbedConfig {
                        batch_size: batch,
                        flip_average: false,
                    },
                )?;
                let batch_crops: Vec<&AlignedFace> = crops.iter().cycle().take(batch).collect();
                measure(budget, || {
                    embed.embed(&batch_crops)?;
                    Ok(())
                })
            };
            let b1 = embed_at(1)?;
            let b8 = embed_at(8)?;
            let b32 = embed_at(32)?;
            let row = Row {
                backend: match precision {
                    Precision::Int8 => format!("{name} int8"),
                    _ => name.clone(),
                },
                embed_precision: precision.as_str(),
                threads,
                detect_640_ms_p50: det.as_ref().map(|d| pct(d, 0.5)),
                detect_640_ms_p90: det.as_ref().map(|d| pct(d, 0.9)),
                detect_640x360_ms_p50: det_wide.as_ref().map(|d| pct(d, 0.5)),
                detect_tile320_ms_p50: det_tile.as_ref().map(|d| pct(d, 0.5)),
                detect_tile160_ms_p50: det_small.as_ref().map(|d| pct(d, 0.5)),
                embed_b1_ms_p50: pct(&b1, 0.5),
                embed_b8_faces_per_s: 8.0 * 1e3 / pct(&b8, 0.5),
                embed_b32_faces_per_s: 32.0 * 1e3 / pct(&b32, 0.5),
            };
            let ms = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2} ms"));
            println!(
                "{:<22} {:>7} {:>14} {:>14} {:>14} {:>14} {:>14} {:>11.2} ms {:>16.0} {:>16.0}",
                row.backend,
                row.threads,
                ms(row.detect_640_ms_p50),
                ms(row.detect_640_ms_p90),
                ms(row.detect_640x360_ms_p50),
                ms(row.detect_tile320_ms_p50),
                ms(row.detect_tile160_ms_p50),
                row.embed_b1_ms_p50,
                row.embed_b8_faces_per_s,
                row.embed_b32_faces_per_s
            );
            rows.push(row);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
