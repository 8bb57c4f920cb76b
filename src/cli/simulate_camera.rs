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
    /// Also serve staggered1 … staggeredN: the same clip, camera i starting (i-1)/N of
    /// the way into it (at the IDR frame before), so the cameras do not show the same
    /// moment together; prints `offset staggeredI SECONDS` for each.
    #[arg(long)]
    stagger: bool,
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
    /// Heights photos are scaled to, cycled over the photos (e.g. `110,150,300`);
    /// overrides --photo-height.
    #[arg(long, value_delimiter = ',')]
    photo_heights: Vec<u32>,
    /// Every Nth photo stops half-way for --hold-seconds (0: nobody stops).
    #[arg(long, default_value_t = 0)]
    hold_every: usize,
    #[arg(long, default_value_t = 3.0)]
    hold_seconds: f32,
    /// Every Nth photo turns its back to the camera for --turn-seconds, a third of the
    /// way across (0: nobody turns).
    #[arg(long, default_value_t = 0)]
    turn_every: usize,
    #[arg(long, default_value_t = 1.0)]
    turn_seconds: f32,
    /// Every Nth photo walks out of the frame by the nearest edge, stays out for
    /// --exit-seconds and walks back across (0: nobody leaves).
    #[arg(long, default_value_t = 0)]
    exit_every: usize,
    #[arg(long, default_value_t = 2.0)]
    exit_seconds: f32,
    /// A pillar in front of everyone, `CENTRE:WIDTH`: its centre as a fraction of the
    /// frame's width and its width in pixels (e.g. `0.3:150`).
    #[arg(long, value_parser = parse_pillar)]
    pillar: Option<(f32, u32)>,
    /// `clean` (flat grey, sharp photos) or `surveillance` (textured background, sensor
    /// noise every frame, lighting drift, blurred faces).
    #[arg(long, default_value = "clean")]
    look: String,
    /// Nobody walks: the photos stand still for the whole clip of --show-seconds, spread
    /// over a grid of the frame (distant people who never move).
    #[arg(long)]
    standing: bool,
    /// Serve an empty scene of this many seconds (nobody in view) instead of the photos.
    #[arg(long)]
    empty_seconds: Option<f32>,
    /// Write the clip's schedule (who is shown where and when) to this JSON file.
    #[arg(long)]
    schedule: Option<PathBuf>,
}

fn parse_pillar(value: &str) -> Result<(f32, u32), String> {
    let bad = || {
        format!("{value:?}: expected CENTRE:WIDTH, e.g. 0.3:150 (centre 0 to 1, width in pixels)")
    };
    let (centre, width) = value.split_once(':').ok_or_else(bad)?;
    let centre: f32 = centre.trim().parse().map_err(|_| bad())?;
    let width: u32 = width.trim().parse().map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&centre) || width == 0 {
        return Err(bad());
    }
    Ok((centre, width))
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
    let look = match args.look.as_str() {
        "clean" => simulate::Look::default(),
        "surveillance" => simulate::Look::surveillance(),
        other => anyhow::bail!("--look {other:?}: expected clean or surveillance"),
    };
    // keep each photo's path beside it for the schedule
    let (paths, photos): (Vec<PathBuf>, Vec<_>) = paths
        .into_iter()
        .filter_map(|p| {
            let photo = simulate::load_photos(std::slice::from_ref(&p)).pop()?;
            Some((p, photo))
        })
        .unzip();
    let (paths, photos) = match args.empty_seconds {
        Some(_) => (Vec::new(), Vec::new()),
        None => (paths, photos),
    };
    anyhow::ensure!(
        !photos.is_empty() || args.empty_seconds.is_some(),
        "no readable photos among the paths given"
    );
    let spec = simulate::SceneSpec {
        photo_heights: if args.photo_heights.is_empty() {
            vec![args.photo_height]
        } else {
            args.photo_heights.clone()
        },
        show_s: args.show_seconds,
        gap_s: args.empty_seconds.unwrap_or(args.gap_seconds),
        lanes: args.lanes,
        hold_every: args.hold_every,
        hold_s: args.hold_seconds,
        look,
        standing: args.standing,
        turn_every: args.turn_every,
        turn_s: args.turn_seconds,
        exit_every: args.exit_every,
        exit_s: args.exit_seconds,
        pillar: args.pillar,
    };
    let scene = Scene::from_spec((args.width, args.height, args.fps), &photos, &spec);
    if let Some(file) = &args.schedule {
        let appearances: Vec<serde_json::Value> = scene
            .appearances
            .iter()
            .zip(&paths)
            .map(|(a, p)| {
                serde_json::json!({
                    "photo": p.display().to_string(),
                    "start_s": a.start_s,
                    "duration_s": a.duration_s,
                    "hold_s": a.hold_s,
                    "turned": a.turned,
                    "exit_s": a.exit.map(|e| e.away_s),
                    "from": a.from,
                    "to": a.to,
                    "width": a.photo.width(),
                    "height": a.photo.height(),
                })
            })
            .collect();
        let schedule = serde_json::json!({
            "width": scene.width,
            "height": scene.height,
            "fps": scene.fps,
            "duration_s": scene.duration_s,
            "pillars": scene.pillars,
            "appearances": appearances,
        });
        std::fs::write(file, serde_json::to_string_pretty(&schedule)?)
            .with_context(|| format!("writing {}", file.display()))?;
    }
    eprintln!(
        "encoding {} photos into a {:.1} s {}x{}@{} H.264 clip…",
        scene.appearances.len(),
        scene.duration_s,
        args.width,
        args.height,
        args.fps
    );
    let clip = Arc::new(simulate::encode_h264(&scene)?);
    let mut mounts: Vec<(String, Arc<simulate::Clip>, usize)> = (1..=args.cameras)
        .map(|i| (format!("cam{i}"), clip.clone(), 0))
        .collect();
    let fps = clip.fps as usize;
    let staggered: Vec<(String, usize)> = (1..=args.cameras)
        .filter(|_| args.stagger)
        .map(|i| {
            let start = (i - 1) * clip.units.len() / args.cameras / fps * fps;
            (format!("staggered{i}"), start)
        })
        .collect();
    mounts.extend(staggered.iter().map(|(m, s)| (m.clone(), clip.clone(), *s)));
    let server = RtspServer::start_at(&args.address, args.port, mounts)?;
    for i in 1..=args.cameras {
        println!("{}", server.url(&format!("cam{i}")));
    }
    for (mount, start) in &staggered {
        println!("{}", server.url(mount));
        println!("offset {mount} {}", start / fps);
    }
    println!("ready");
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}
