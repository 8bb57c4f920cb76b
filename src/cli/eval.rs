//! `facestream eval lfw`: the LFW 10-fold verification protocol.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use facestream::config::Config;
use facestream::engine::FaceEngine;
use facestream::eval::{pairs as lfw, roc};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// LFW 1:1 verification: 10-fold accuracy, TAR@FAR, misses, time per image.
    Lfw(LfwArgs),
    /// Open-set 1:N identification on an LFW-style folder: first photo of each person with
    /// several photos enrolled, the rest probe; single-photo people are the strangers.
    LfwIdentify(IdentifyArgs),
}

#[derive(clap::Args)]
pub struct IdentifyArgs {
    /// The image folder (`<Name>/<Name>_NNNN.jpg`).
    #[arg(long)]
    images: PathBuf,
    /// Use only the first N people (alphabetical), for quick runs.
    #[arg(long)]
    max_people: Option<usize>,
    /// Downscale a deterministic share of the images by this factor (see `eval lfw`).
    #[arg(long, value_parser = parse_scale)]
    degrade_scale: Option<f32>,
    /// Share of images to degrade when --degrade-scale is given.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    degrade_fraction: f64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "eval-lfw-identify.json")]
    report: PathBuf,
}

#[derive(clap::Args)]
pub struct LfwArgs {
    /// The LFW image folder (`<Name>/<Name>_NNNN.jpg`).
    #[arg(long)]
    images: PathBuf,
    /// The protocol file (`pairs.txt`).
    #[arg(long)]
    pairs: PathBuf,
    /// Threads for inference (overrides inference.threads); the reference comparison uses 1.
    #[arg(long)]
    threads: Option<usize>,
    /// Use only the first N pairs of each 300-pair block (quick runs).
    #[arg(long)]
    limit_pairs: Option<usize>,
    /// Downscale a deterministic share of the images by this factor (e.g. 0.25) to
    /// simulate surveillance resolution and populate the low-quality buckets.
    #[arg(long, value_parser = parse_scale)]
    degrade_scale: Option<f32>,
    /// Share of images to degrade when --degrade-scale is given.
    #[arg(long, default_value_t = 0.5, value_parser = parse_fraction)]
    degrade_fraction: f64,
    /// Where to write the JSON report.
    #[arg(long, default_value = "eval-lfw.json")]
    report: PathBuf,
    /// Where to write the ROC curve (SVG).
    #[arg(long, default_value = "eval-lfw-roc.svg")]
    roc: PathBuf,
}

fn parse_scale(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("`{s}` is not a scale in (0, 1]")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a fraction in [0, 1]")),
    }
}

pub fn run(config: &Config, command: EvalCommand) -> anyhow::Result<ExitCode> {
    let args = match command {
        EvalCommand::Lfw(args) => args,
        EvalCommand::LfwIdentify(args) => return identify(config, args),
    };
    let mut config = config.clone();
    if let Some(t) = args.threads {
        config.inference.threads = t;
    }
    let mut pairs = lfw::read_pairs(&args.pairs)?;
    if let Some(n) = args.limit_pairs {
        pairs = lfw::limit_pairs(pairs, n);
    }
    let mut engine = FaceEngine::new(&config)?;
    let bar = images_bar();
    let degrade = args.degrade_scale.map(|scale| lfw::Degrade {
        fraction: args.degrade_fraction,
        scale,
    });
    let report = lfw::evaluate(
        &mut engine,
        &args.images,
        &pairs,
        config.inference.threads,
        degrade,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    write_report(&args.report, &report)?;
    let label = format!(
        "facestream {} ({:.2}%)",
        report.model,
        report.accuracy.mean * 100.0
    );
    let svg = roc::svg(
        "LFW verification ROC",
        &[roc::Curve {
            label: &label,
            points: &report.roc,
            colour: "#1f77b4",
        }],
        1e-4,
    );
    std::fs::write(&args.roc, svg).with_context(|| format!("writing {}", args.roc.display()))?;
    println!(
        "pairs={} images={} detector_misses={} degraded_images={}",
        report.pairs, report.images, report.detector_misses, report.degraded_images
    );
    println!(
        "accuracy_10fold={:.2}% +-{:.2}  TAR@FAR=1e-3: {:.2}%  TAR@FAR=1e-2: {:.2}%  threshold={:.3}",
        report.accuracy.mean * 100.0,
        report.accuracy.std * 100.0,
        report.tar_at_far_1e3 * 100.0,
        report.tar_at_far_1e2 * 100.0,
        report.threshold_mean
    );
    println!(
        "threshold at FAR=1e-3: {:.3}  at FAR=1e-2: {:.3}",
        report.threshold_at_far_1e3, report.threshold_at_far_1e2
    );
    println!(
        "seconds_per_image={:.4} (detect {:.4} + align/quality {:.4} + embed {:.4}; threads={}; {})",
        report.seconds_per_image,
        report.seconds_per_image_detect,
        report.seconds_per_image_align_quality,
        report.seconds_per_image_embed,
        if report.threads == 0 { "all".to_string() } else { report.threads.to_string() },
        report.backend
    );
    for (name, b) in &report.by_quality {
        println!(
            "quality {name}: pairs={} (same {}, different {}) accuracy={:.2}%",
            b.pairs,
            b.same,
            b.different,
            b.accuracy * 100.0
        );
    }
    println!(
        "report: {}  roc: {}",
        args.report.display(),
        args.roc.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn identify(config: &Config, args: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let mut engine = FaceEngine::new(config)?;
    let bar = images_bar();
    let degrade = args.degrade_scale.map(|scale| lfw::Degrade {
        fraction: args.degrade_fraction,
        scale,
    });
    let report = facestream::eval::identify::evaluate(
        &mut engine,
        &args.images,
        &config.matching,
        degrade,
        args.max_people,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    write_report(&args.report, &report)?;
    println!(
        "gallery={} identities  threshold={} margin={}  detector_misses={}",
        report.gallery_identities, report.threshold, report.margin, report.detector_misses
    );
    let line = |name: &str, r: &facestream::eval::identify::Rates| {
        println!(
            "{name:<6} mated={:>5} TPIR={:.2}% wrong-identity={:.2}%   non-mated={:>5} FPIR={:.2}%",
            r.mated_probes,
            r.tpir * 100.0,
            r.wrong_identity_rate * 100.0,
            r.non_mated_probes,
            r.fpir * 100.0
        )
    };
    line("all", &report.all);
    for (k, r) in &report.by_probe_quality {
        line(k, r);
    }
    println!("threshold sweep (margin {}):", report.margin);
    for (t, r) in &report.threshold_sweep {
        line(&format!("{t:.2}"), r);
    }
    println!("report: {}", args.report.display());
    Ok(ExitCode::SUCCESS)
}

fn images_bar() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed} elapsed, eta {eta}")
            .expect("static template"),
    )
}

fn write_report(path: &std::path::Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}
