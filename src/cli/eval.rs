//! `facestream eval lfw`: the LFW 10-fold verification protocol.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use facestream::config::Config;
use facestream::engine::FaceEngine;
use facestream::eval::degrade::LowQuality;
use facestream::eval::identify::{IdentifyInputs, ReferenceReport, SplitReport, SPLITS};
use facestream::eval::{det, pairs as lfw, roc};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// LFW 1:1 verification: 10-fold accuracy, TAR@FAR, misses, time per image.
    Lfw(LfwArgs),
    /// Open-set 1:N identification on an LFW-style folder: first photo of each person with
    /// several photos enrolled, the rest probe; single-photo people are the strangers.
    /// Three splits by image quality (high/high, low probe/high gallery, low/low).
    LfwIdentify(IdentifyArgs),
    /// Write low-quality copies of an image folder (downscaled, blurred, recompressed),
    /// the probes of `lfw-identify`'s low splits, for facestream and the reference alike.
    Degrade(DegradeArgs),
}

#[derive(clap::Args)]
pub struct IdentifyArgs {
    /// The image folder (`<Name>/<Name>_NNNN.jpg`).
    #[arg(long)]
    images: PathBuf,
    /// The low-quality copies of the same images; written first when the folder is
    /// missing or incomplete (see `eval degrade`).
    #[arg(long)]
    low_images: PathBuf,
    #[command(flatten)]
    low: LowQualityArgs,
    /// Use only the first N people (alphabetical), for quick runs.
    #[arg(long)]
    max_people: Option<usize>,
    /// OpenCV's reference on the same images (`scripts/opencv_identify_reference.py
    /// --report`): printed side by side and drawn dashed on the DET plot.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Also write every embedding (JSON lines) for offline analysis.
    #[arg(long)]
    embeddings: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "eval-lfw-identify.json")]
    report: PathBuf,
    /// Where to write the DET curves (SVG).
    #[arg(long, default_value = "eval-lfw-identify-det.svg")]
    det: PathBuf,
}

/// How the low-quality copies are made.
#[derive(clap::Args)]
pub struct LowQualityArgs {
    /// Downscale factor.
    #[arg(long, default_value_t = LowQuality::default().scale)]
    low_scale: f32,
    /// Gaussian blur sigma at the reduced size, in pixels.
    #[arg(long, default_value_t = LowQuality::default().blur_sigma)]
    low_blur: f32,
    /// JPEG quality of the recompression.
    #[arg(long, default_value_t = LowQuality::default().jpeg_quality)]
    low_jpeg_quality: u8,
}

impl LowQualityArgs {
    fn get(&self) -> LowQuality {
        LowQuality {
            scale: self.low_scale,
            blur_sigma: self.low_blur,
            jpeg_quality: self.low_jpeg_quality,
        }
    }
}

#[derive(clap::Args)]
pub struct DegradeArgs {
    /// The image folder (`<Name>/<file>`).
    #[arg(long)]
    images: PathBuf,
    /// Where to write the copies (same layout, plus `DEGRADE.json`).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    low: LowQualityArgs,
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
        EvalCommand::Degrade(args) => {
            let written = degrade(&args.images, &args.out, &args.low.get())?;
            println!("{written} copies written to {}", args.out.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut config = config.clone();
    if let Some(t) = args.threads {
        config.inference.threads = t;
    }
    let mut pairs = lfw::read_pairs(&args.pairs)?;
    if let Some(n) = args.limit_pairs {
        pairs = lfw::limit_pairs(pairs, n);
    }
    let mut engine = FaceEngine::open(&config.engine())?;
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

fn degrade(
    images: &std::path::Path,
    out: &std::path::Path,
    low: &LowQuality,
) -> anyhow::Result<usize> {
    let bar = images_bar();
    let written = facestream::eval::degrade::write_copies(images, out, low, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    Ok(written)
}

fn identify(config: &Config, args: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let low = args.low.get();
    let reference: Option<ReferenceReport> = match &args.reference {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the reference report {}", path.display()))?;
            let r: ReferenceReport = serde_json::from_str(&text)
                .with_context(|| format!("parsing the reference report {}", path.display()))?;
            anyhow::ensure!(
                r.max_people == args.max_people.unwrap_or(0),
                "the reference report {} covers --max-people {} (0: all), this run {}: rerun one of them",
                path.display(),
                r.max_people,
                args.max_people.unwrap_or(0)
            );
            anyhow::ensure!(
                r.low_quality == low,
                "the reference report {} was made on copies degraded with {:?}, not {:?}",
                path.display(),
                r.low_quality,
                low
            );
            Some(r)
        }
        None => None,
    };
    let written = degrade(&args.images, &args.low_images, &low)?;
    if written > 0 {
        println!(
            "{written} low-quality copies written to {}",
            args.low_images.display()
        );
    }
    let mut engine = FaceEngine::open(&config.engine())?;
    let bar = images_bar();
    let report = facestream::eval::identify::evaluate(
        &mut engine,
        &IdentifyInputs {
            images: &args.images,
            low_images: &args.low_images,
            low_quality: low,
            max_people: args.max_people,
            embeddings_out: args.embeddings.as_deref(),
        },
        &config.matching,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    write_report(&args.report, &report)?;
    println!(
        "gallery={} identities  model={}  backend={}",
        report.gallery_identities, report.model, report.backend
    );
    println!(
        "low quality: scale {} blur {} jpeg {}  detector misses high={} low={}  seconds/image high={:.4} low={:.4}",
        low.scale,
        low.blur_sigma,
        low.jpeg_quality,
        report.detector_misses_high,
        report.detector_misses_low,
        report.seconds_per_image_high,
        report.seconds_per_image_low
    );
    if let Some(r) = &reference {
        println!(
            "reference (OpenCV {}): detector misses high={} low={}  seconds/image={:.4}",
            r.opencv_version, r.detector_misses_high, r.detector_misses_low, r.seconds_per_image
        );
    }
    let pct = |v: f64| format!("{:6.2}%", v * 100.0);
    println!(
        "{:<10} {:>6} {:>6} | {:>8} {:>9} {:>10} | {}",
        "split",
        "mated",
        "non-m",
        "rank-1",
        "FNIR@1%",
        "FNIR@0.1%",
        if reference.is_some() {
            "reference rank-1 FNIR@1% FNIR@0.1% | FNIR@1% difference"
        } else {
            "at match.threshold/margin: TPIR wrong FPIR"
        }
    );
    if let Some(r) = &reference {
        for (split, _, _) in SPLITS {
            let (ours, theirs) = (&report.splits[split], r.splits.get(split));
            anyhow::ensure!(
                theirs.is_some_and(|t| (t.mated_probes, t.non_mated_probes)
                    == (ours.mated_probes, ours.non_mated_probes)),
                "the reference report's {split} split has other probes than this run: not the same protocol"
            );
        }
    }
    let mut curves = Vec::new();
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c"];
    for ((split, _, _), colour) in SPLITS.iter().zip(colours) {
        let f = &report.splits[*split];
        let tail = match reference.as_ref().and_then(|r| r.splits.get(*split)) {
            Some(r) => {
                curves.push(det::DetCurve {
                    label: format!("{split} OpenCV reference"),
                    points: &r.det,
                    colour,
                    dashed: true,
                });
                format!(
                    "{} {} {} | {:+.2} pt",
                    pct(r.rank1),
                    pct(r.fnir_at_fpir_1e2),
                    pct(r.fnir_at_fpir_1e3),
                    (f.fnir_at_fpir_1e2 - r.fnir_at_fpir_1e2) * 100.0
                )
            }
            None => operating(f),
        };
        curves.push(det::DetCurve {
            label: format!("{split} facestream"),
            points: &f.det,
            colour,
            dashed: false,
        });
        println!("{} | {tail}", split_row(split, f));
    }
    println!(
        "the same searches on the raw cosine (above: calibrated, match.cohort {}, impostor scores mean {} std {}):",
        report.cohort, report.impostors.mean, report.impostors.std
    );
    for (split, _, _) in SPLITS {
        println!("{} |", split_row(split, &report.splits_raw[split]));
    }
    if reference.is_some() {
        println!(
            "at match.threshold {} / margin {}:",
            report.threshold, report.margin
        );
        for (split, _, _) in SPLITS {
            println!("{split:<10} {}", operating(&report.splits[split]));
        }
    }
    std::fs::write(
        &args.det,
        det::svg("LFW open-set identification: DET by quality split", &curves),
    )
    .with_context(|| format!("writing {}", args.det.display()))?;
    println!(
        "report: {}  det: {}",
        args.report.display(),
        args.det.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `split  mated  non-mated | rank-1  FNIR@1%  FNIR@0.1%`.
fn split_row(split: &str, f: &SplitReport) -> String {
    let pct = |v: f64| format!("{:6.2}%", v * 100.0);
    format!(
        "{:<10} {:>6} {:>6} | {} {:>9} {:>10}",
        split,
        f.mated_probes,
        f.non_mated_probes,
        pct(f.rank1),
        pct(f.fnir_at_fpir_1e2),
        pct(f.fnir_at_fpir_1e3)
    )
}

fn operating(f: &SplitReport) -> String {
    match &f.operating_point {
        Some(o) => format!(
            "TPIR {:.2}% wrong {:.2}% FPIR {:.2}%",
            o.tpir * 100.0,
            o.wrong_identity_rate * 100.0,
            o.fpir * 100.0
        ),
        None => String::new(),
    }
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
