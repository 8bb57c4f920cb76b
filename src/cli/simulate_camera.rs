//! `facestream simulate-camera`: serve real face photos as looping H.264 RTSP cameras.
//!
//! For trying the service without hardware, for the reconnect/watchdog tests (stop,
//! restart or SIGSTOP this process) and for the benchmark (N cameras, 1080p25).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use facestream::simulate::{self, RtspServer, Scene};

#[derive(clap::Args)]
pub struct SimulateCameraArgs {
    /// Photos to show (files, or folders searched recursively for .jpg/.png).
    #[arg(required = true)]
    photos: Vec<PathBuf>,
    /// Use at most this many photos (sorted by path; one per sub-folder with --one-per-folder).
    #[arg(long)]
    limit: Option<usize>,
    /// Take only the first photo of each folder (one per person in an LFW-style tree).
    #[arg(long)]
    one_per_folder: bool,
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// 0 picks a free port (printed).
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// Cameras to serve: rtsp://address:port/cam1 … camN, all the same clip.
    #[arg(long, default_value_t = 1)]
    cameras: usize,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Height photos are scaled to, in pixels.
    #[arg(long, default_value_t = 300)]
    photo_height: u32,
    /// Seconds each photo takes to cross the scene.
    #[arg(long, default_value_t = 3.0)]
    show_seconds: f32,
    /// Seconds between two photos in a lane.
    #[arg(long, default_value_t = 2.0)]
    gap_seconds: f32,
    /// Photos on screen at once (horizontal lanes).
    #[arg(long, default_value_t = 1)]
    lanes: usize,
}

fn collect(paths: &[PathBuf], one_per_folder: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) =
                entries.into_iter().partition(|e| e.is_dir());
            let images: Vec<PathBuf> = files
                .into_iter()
                .filter(|f| {
                    matches!(
                        f.extension()
                            .and_then(|e| e.to_str())
                            .map(str::to_ascii_lowercase)
                            .as_deref(),
                        Some("jpg" | "jpeg" | "png")
                    )
                })
                .collect();
            if one_per_folder {
                out.extend(images.into_iter().take(1));
            } else {
                out.extend(images);
            }
            out.extend(collect(&dirs, one_per_folder)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub fn run(args: SimulateCameraArgs) -> anyhow::Result<ExitCode> {
    let mut paths = collect(&args.photos, args.one_per_folder)?;
    if let Some(limit) = args.limit {
        paths.truncate(limit);
    }
    let photos = simulate::load_photos(&paths);
    anyhow::ensure!(
        !photos.is_empty(),
        "no readable photos among {} path(s)",
        paths.len()
    );
    let scene = Scene::parade(
        (args.width, args.height, args.fps),
        &photos,
        args.photo_height,
        (args.show_seconds, args.gap_seconds),
        args.lanes,
    );
    eprintln!(
        "encoding {} photos into a {:.1} s {}x{}@{} H.264 clip…",
        photos.len(),
        scene.duration_s,
        args.width,
        args.height,
        args.fps
    );
    let clip = Arc::new(simulate::encode_h264(&scene)?);
    let mounts = (1..=args.cameras)
        .map(|i| (format!("cam{i}"), clip.clone()))
        .collect();
    let server = RtspServer::start(&args.address, args.port, mounts)?;
    for i in 1..=args.cameras {
        println!("{}", server.url(&format!("cam{i}")));
    }
    println!("ready");
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
