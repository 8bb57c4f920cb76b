//! A camera simulator: real face photos moving across a scene, encoded to H.264 once and
//! served over RTSP (gstreamer-rtsp-server) in a loop, in real time.
//!
//! Used by the integration tests (in-process), by `facestream simulate-camera` (a
//! separate process the tests stop, restart and freeze) and by the benchmark. The clip
//! is encoded once (x264, Main profile, an IDR every second so a client that joins
//! late decodes within a second); serving it costs no encoding, so the simulated
//! cameras do not steal CPU from the service under test.

pub mod demo;

use std::sync::mpsc;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use image::RgbImage;

/// Errors building or serving a simulated camera.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("GStreamer: {0}")]
    Gstreamer(String),
    #[error("the scene has no frames")]
    Empty,
    #[error("RTSP server cannot listen on {address}:{port}: {reason}")]
    Listen {
        address: String,
        port: u16,
        reason: String,
    },
}

fn gst_err(e: impl std::fmt::Display) -> SimulateError {
    SimulateError::Gstreamer(e.to_string())
}

/// One photo crossing the scene.
#[derive(Clone)]
pub struct Appearance {
    pub photo: Arc<RgbImage>,
    pub start_s: f32,
    pub duration_s: f32,
    /// Top-left corner at the start and at the end, in pixels.
    pub from: [f32; 2],
    pub to: [f32; 2],
    /// Seconds of `duration_s` spent standing still half-way (a person who stops).
    pub hold_s: f32,
    /// `(start, seconds)` after the start during which the person walks on with their
    /// back to the camera (the head is drawn, the face is not).
    pub turned: Option<(f32, f32)>,
    /// The person leaves the frame by its nearest edge, stays out, and comes back.
    pub exit: Option<Exit>,
}

/// A walk out of the frame and back in ([`Appearance::exit`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exit {
    /// Seconds spent out of view.
    pub away_s: f32,
    /// The left edge's x when out of view (wholly outside the frame).
    pub out_x: f32,
}

impl Appearance {
    /// Whether the face can be seen `t` seconds after the start: in the frame and not
    /// turned away.
    pub fn face_visible(&self, t: f32, frame_width: u32) -> bool {
        let turned = self
            .turned
            .is_some_and(|(start, len)| t >= start && t < start + len);
        let x = self.position(t)[0];
        !turned && x + (self.photo.width() as f32) > 0.0 && x < frame_width as f32
    }

    /// Top-left corner `t` seconds after the start.
    pub fn position(&self, t: f32) -> [f32; 2] {
        if let Some(exit) = self.exit {
            return self.exit_position(exit, t);
        }
        let moving = (self.duration_s - self.hold_s).max(1e-3);
        let half = moving / 2.0;
        let k = if t < half {
            t / moving
        } else if t < half + self.hold_s {
            0.5
        } else {
            (t - self.hold_s) / moving
        }
        .clamp(0.0, 1.0);
        [
            self.from[0] + (self.to[0] - self.from[0]) * k,
            self.from[1] + (self.to[1] - self.from[1]) * k,
        ]
    }

    /// From `from` out of the frame at `exit.out_x`, out of view for `exit.away_s`, then
    /// back in to `to`, at one walking speed.
    fn exit_position(&self, exit: Exit, t: f32) -> [f32; 2] {
        let moving = (self.duration_s - exit.away_s).max(1e-3);
        let (out, back) = (
            (self.from[0] - exit.out_x).abs(),
            (self.to[0] - exit.out_x).abs(),
        );
        let leave = moving * out / (out + back).max(1e-3);
        let x = if t < leave {
            self.from[0] + (exit.out_x - self.from[0]) * (t / leave.max(1e-3))
        } else if t < leave + exit.away_s {
            exit.out_x
        } else {
            let k = ((t - leave - exit.away_s) / (moving - leave).max(1e-3)).clamp(0.0, 1.0);
            exit.out_x + (self.to[0] - exit.out_x) * k
        };
        [x, self.from[1]]
    }
}

/// How the simulated camera's picture is degraded: the `surveillance` look is what a
/// real camera adds to faces at a distance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Look {
    /// A textured background (tiles, a wall pattern) instead of flat grey.
    pub textured: bool,
    /// Sensor noise, uniform ± this many levels, new in every frame.
    pub noise: f32,
    /// Lighting drift: brightness ± this many levels, one cycle a minute.
    pub drift: f32,
    /// Gaussian blur of each shown photo (optics, focus), sigma in pixels.
    pub blur: f32,
}

impl Look {
    /// Textured background, noise ±6, drift ±12, blur 0.8 px.
    pub fn surveillance() -> Look {
        Look {
            textured: true,
            noise: 6.0,
            drift: 12.0,
            blur: 0.8,
        }
    }
}

/// How photos are laid out in a scene.
#[derive(Clone, Debug)]
pub struct SceneSpec {
    /// Heights photos are scaled to, cycled over the photos.
    pub photo_heights: Vec<u32>,
    pub show_s: f32,
    pub gap_s: f32,
    /// Photos on screen at once (horizontal lanes).
    pub lanes: usize,
    /// Every `hold_every`-th photo (0: none) stops half-way for `hold_s` more seconds.
    pub hold_every: usize,
    pub hold_s: f32,
    pub look: Look,
    /// Nobody walks: the photos stand still for the whole clip (`show_s` seconds), spread
    /// over a grid of the frame — people too far away for the downscale pass who never
    /// move, so motion never points at them.
    pub standing: bool,
    /// Every `turn_every`-th photo (0: none) turns its back to the camera for `turn_s`
    /// seconds, a third of the way across.
    pub turn_every: usize,
    pub turn_s: f32,
    /// Every `exit_every`-th photo (0: none) walks out of the frame by its nearest edge,
    /// stays out `exit_s` seconds, and walks back across (it does not also stop).
    pub exit_every: usize,
    pub exit_s: f32,
    /// A pillar in front of everyone: its centre as a fraction of the frame's width, and
    /// its width in pixels.
    pub pillar: Option<(f32, u32)>,
}

impl Default for SceneSpec {
    /// One lane of 300-px photos, each crossing in 3 s with 2 s between them, nobody
    /// stopping, the clean look.
    fn default() -> Self {
        SceneSpec {
            photo_heights: vec![300],
            show_s: 3.0,
            gap_s: 2.0,
            lanes: 1,
            hold_every: 0,
            hold_s: 0.0,
            look: Look::default(),
            standing: false,
            turn_every: 0,
            turn_s: 0.0,
            exit_every: 0,
            exit_s: 0.0,
            pillar: None,
        }
    }
}

/// Whether photo `i` is one of every `every`-th (0: none).
fn every(i: usize, every: usize) -> bool {
    every > 0 && i % every == every - 1
}

/// What the simulated camera sees.
#[derive(Clone)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub duration_s: f32,
    pub appearances: Vec<Appearance>,
    pub look: Look,
    /// Pillars in front of everyone: (left x, width), in pixels.
    pub pillars: Vec<(u32, u32)>,
    background: Arc<RgbImage>,
}

impl Scene {
    /// Photos walk across the scene one after another in `lanes` horizontal lanes, each
    /// for `show_s` seconds, with `gap_s` of empty lane between two. Photos are scaled to
    /// `photo_height` pixels.
    pub fn parade(
        (width, height, fps): (u32, u32, u32),
        photos: &[RgbImage],
        photo_height: u32,
        (show_s, gap_s): (f32, f32),
        lanes: usize,
    ) -> Scene {
        Scene::from_spec(
            (width, height, fps),
            photos,
            &SceneSpec {
                photo_heights: vec![photo_height],
                show_s,
                gap_s,
                lanes,
                ..SceneSpec::default()
            },
        )
    }

    /// `photos` scaled to `photo_height` standing still for `duration_s` seconds (the
    /// whole clip, so the loop shows no change), spread over the frame.
    pub fn standing(
        (width, height, fps): (u32, u32, u32),
        photos: &[RgbImage],
        photo_height: u32,
        duration_s: f32,
        look: Look,
    ) -> Scene {
        Scene::from_spec(
            (width, height, fps),
            photos,
            &SceneSpec {
                photo_heights: vec![photo_height],
                show_s: duration_s,
                gap_s: 0.0,
                look,
                standing: true,
                ..SceneSpec::default()
            },
        )
    }

    /// Photos laid out as `spec` says; with no photos, `spec.gap_s` seconds of an empty
    /// scene.
    pub fn from_spec(
        (width, height, fps): (u32, u32, u32),
        photos: &[RgbImage],
        spec: &SceneSpec,
    ) -> Scene {
        if spec.standing {
            return Scene::standing_from_spec((width, height, fps), photos, spec);
        }
        let lanes = spec.lanes.max(1);
        let lane_h = height as f32 / lanes as f32;
        let mut appearances = Vec::new();
        let mut lane_end = vec![0.0f32; lanes];
        for (i, photo) in photos.iter().enumerate() {
            let lane = i % lanes;
            let scaled = scaled_photo(
                photo,
                spec.photo_heights[i % spec.photo_heights.len().max(1)],
                (width, height),
                spec.look.blur,
            );
            let (w, h) = scaled.dimensions();
            let travel = (width as f32 - w as f32).max(0.0);
            let y = (lane as f32 * lane_h + (lane_h - h as f32) / 2.0).max(0.0);
            let start = lane_end[lane]
                + if lane_end[lane] > 0.0 {
                    spec.gap_s
                } else {
                    0.3
                };
            // alternate directions so tracks cross in the benchmark scene
            let (from, to) = if i % 2 == 0 {
                (0.15, 0.85)
            } else {
                (0.85, 0.15)
            };
            let (from, to) = ([travel * from, y], [travel * to, y]);
            let exit = every(i, spec.exit_every).then(|| Exit {
                away_s: spec.exit_s,
                // out by the nearer edge
                out_x: if from[0] + w as f32 / 2.0 < width as f32 / 2.0 {
                    -(w as f32) - 8.0
                } else {
                    width as f32 + 8.0
                },
            });
            let hold_s = if every(i, spec.hold_every) && exit.is_none() {
                spec.hold_s
            } else {
                0.0
            };
            let away_s = exit.map_or(0.0, |e| e.away_s);
            let turned = every(i, spec.turn_every).then_some((spec.show_s / 3.0, spec.turn_s));
            appearances.push(Appearance {
                photo: Arc::new(scaled),
                start_s: start,
                duration_s: spec.show_s + hold_s + away_s,
                from,
                to,
                hold_s,
                turned,
                exit,
            });
            lane_end[lane] = start + spec.show_s + hold_s + away_s;
        }
        let duration_s = lane_end.iter().cloned().fold(0.0, f32::max) + spec.gap_s;
        let pillars = spec
            .pillar
            .map(|(centre, w)| {
                let w = w.min(width);
                let left = (centre.clamp(0.0, 1.0) * width as f32 - w as f32 / 2.0)
                    .clamp(0.0, (width - w) as f32);
                (left as u32, w)
            })
            .into_iter()
            .collect();
        Scene {
            width,
            height,
            fps,
            duration_s,
            appearances,
            background: Arc::new(background(width, height, spec.look.textured)),
            look: spec.look.clone(),
            pillars,
        }
    }

    /// The photos of a `standing` spec, on a grid of about as many columns as rows, each
    /// centred in its cell, in view from the clip's first frame to its last.
    fn standing_from_spec(
        (width, height, fps): (u32, u32, u32),
        photos: &[RgbImage],
        spec: &SceneSpec,
    ) -> Scene {
        let n = photos.len().max(1);
        let columns = (n as f32).sqrt().ceil() as usize;
        let rows = n.div_ceil(columns);
        let (cell_w, cell_h) = (width as f32 / columns as f32, height as f32 / rows as f32);
        let appearances = photos
            .iter()
            .enumerate()
            .map(|(i, photo)| {
                let photo = scaled_photo(
                    photo,
                    spec.photo_heights[i % spec.photo_heights.len().max(1)],
                    (width, height),
                    spec.look.blur,
                );
                let (col, row) = ((i % columns) as f32, (i / columns) as f32);
                let at = [
                    (col * cell_w + (cell_w - photo.width() as f32) / 2.0).max(0.0),
                    (row * cell_h + (cell_h - photo.height() as f32) / 2.0).max(0.0),
                ];
                Appearance {
                    photo: Arc::new(photo),
                    start_s: 0.0,
                    duration_s: spec.show_s,
                    from: at,
                    to: at,
                    hold_s: 0.0,
                    turned: None,
                    exit: None,
                }
            })
            .collect();
        Scene {
            width,
            height,
            fps,
            duration_s: spec.show_s,
            appearances,
            background: Arc::new(background(width, height, spec.look.textured)),
            look: spec.look.clone(),
            pillars: Vec::new(),
        }
    }

    pub fn frames(&self) -> usize {
        (self.duration_s * self.fps as f32).ceil() as usize
    }

    /// The frame at `t` seconds.
    pub fn render(&self, t: f32) -> RgbImage {
        let mut canvas = self.background.as_ref().clone();
        for a in &self.appearances {
            if t < a.start_s || t >= a.start_s + a.duration_s {
                continue;
            }
            let [x, y] = a.position(t - a.start_s);
            image::imageops::overlay(&mut canvas, a.photo.as_ref(), x as i64, y as i64);
            let rel = t - a.start_s;
            if a.turned
                .is_some_and(|(start, len)| rel >= start && rel < start + len)
            {
                back_of_head(&mut canvas, a.photo.dimensions(), [x, y]);
            }
        }
        for &(left, w) in &self.pillars {
            for py in 0..self.height {
                for px in left..(left + w).min(self.width) {
                    // concrete, a little darker towards its edges
                    let edge = ((px - left) as f32 / w.max(1) as f32 - 0.5).abs();
                    let v = 150.0 - 50.0 * edge;
                    canvas.put_pixel(
                        px,
                        py,
                        image::Rgb([v as u8, (v - 3.0) as u8, (v - 8.0) as u8]),
                    );
                }
            }
        }
        let look = &self.look;
        if look.noise > 0.0 || look.drift > 0.0 {
            let shift = look.drift * (t * std::f32::consts::TAU / 60.0).sin();
            // xorshift seeded by the frame time: the same clip every run
            let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (t * 1000.0) as u64;
            let span = 2.0 * look.noise;
            for v in canvas.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * span;
                *v = (*v as f32 + shift + noise).round().clamp(0.0, 255.0) as u8;
            }
        }
        canvas
    }
}

/// A head seen from behind over the face of a `size` photo drawn at `at` (LFW photos
/// centre the face, about 0.42 of the photo): dark hair where the face was.
fn back_of_head(canvas: &mut RgbImage, (w, h): (u32, u32), at: [f32; 2]) {
    let (cx, cy) = (at[0] + w as f32 * 0.5, at[1] + h as f32 * 0.47);
    let (rx, ry) = (w as f32 * 0.27, h as f32 * 0.33);
    let (x0, x1) = (
        (cx - rx).max(0.0) as u32,
        ((cx + rx) as u32).min(canvas.width()),
    );
    let (y0, y1) = (
        (cy - ry).max(0.0) as u32,
        ((cy + ry) as u32).min(canvas.height()),
    );
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
            if dx * dx + dy * dy <= 1.0 {
                // hair: dark, with a strand pattern
                let strand = ((x.wrapping_mul(31) ^ y.wrapping_mul(7)) % 9) as u8;
                canvas.put_pixel(x, y, image::Rgb([40 + strand, 33 + strand, 28 + strand]));
            }
        }
    }
}

/// `photo` scaled to `height` pixels (inside the frame), blurred by `blur` (sigma, px).
fn scaled_photo(photo: &RgbImage, height: u32, frame: (u32, u32), blur: f32) -> RgbImage {
    let scale = height as f32 / photo.height() as f32;
    let (w, h) = (
        ((photo.width() as f32 * scale) as u32).clamp(1, frame.0),
        height.clamp(1, frame.1),
    );
    let scaled = image::imageops::resize(photo, w, h, image::imageops::FilterType::Triangle);
    if blur > 0.0 {
        image::imageops::blur(&scaled, blur)
    } else {
        scaled
    }
}

/// The empty scene: flat grey, or a floor-and-wall texture.
fn background(width: u32, height: u32, textured: bool) -> RgbImage {
    if !textured {
        return RgbImage::from_pixel(width, height, image::Rgb([96, 100, 104]));
    }
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let wall = 20.0 * (fx / 37.0).sin() * (fy / 23.0).cos();
        let tiles = if (x / 64 + y / 48) % 2 == 0 {
            14.0
        } else {
            -14.0
        };
        let grain = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 17) as f32 - 8.0;
        let v = 105.0 + wall + tiles + grain;
        image::Rgb([
            (v + 6.0).clamp(0.0, 255.0) as u8,
            v.clamp(0.0, 255.0) as u8,
            (v - 8.0).clamp(0.0, 255.0) as u8,
        ])
    })
}

/// An encoded clip: H.264 access units (byte-stream), the first one an IDR.
pub struct Clip {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub units: Vec<gst::Buffer>,
}

impl Clip {
    pub fn duration_s(&self) -> f32 {
        self.units.len() as f32 / self.fps as f32
    }
}

/// Encode `scene` with x264 (Main profile, IDR every second).
pub fn encode_h264(scene: &Scene) -> Result<Clip, SimulateError> {
    gst::init().map_err(gst_err)?;
    let frames = scene.frames();
    if frames == 0 {
        return Err(SimulateError::Empty);
    }
    let description = format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1 \
         ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc speed-preset=veryfast tune=zerolatency key-int-max={fps} bframes=0 \
         ! video/x-h264,profile=main,stream-format=byte-stream,alignment=au \
         ! appsink name=sink sync=false",
        w = scene.width,
        h = scene.height,
        fps = scene.fps
    );
    let (pipeline, src) = launch_with_appsrc(&description)?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| gst_err("no appsink"))?;
    src.set_block(true);
    src.set_max_bytes(scene.width as u64 * scene.height as u64 * 3 * 4);
    pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
    let frame_ns = 1_000_000_000u64 / scene.fps as u64;
    let feeder = {
        let (scene, src) = (scene.clone(), src.clone());
        std::thread::spawn(move || {
            for i in 0..frames {
                let image = scene.render(i as f32 / scene.fps as f32);
                let mut buffer = gst::Buffer::from_mut_slice(image.into_raw());
                {
                    let b = buffer.get_mut().expect("fresh buffer");
                    b.set_pts(gst::ClockTime::from_nseconds(i as u64 * frame_ns));
                    b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
                }
                if src.push_buffer(buffer).is_err() {
                    return;
                }
            }
            let _ = src.end_of_stream();
        })
    };
    let mut units = Vec::with_capacity(frames);
    while let Ok(sample) = sink.pull_sample() {
        if let Some(buffer) = sample.buffer_owned() {
            units.push(buffer);
        }
    }
    let _ = feeder.join();
    let _ = pipeline.set_state(gst::State::Null);
    if units.is_empty() {
        return Err(SimulateError::Empty);
    }
    Ok(Clip {
        width: scene.width,
        height: scene.height,
        fps: scene.fps,
        units,
    })
}

/// Parse `description` into a pipeline and find its `appsrc name=src`.
fn launch_with_appsrc(
    description: &str,
) -> Result<(gst::Pipeline, gst_app::AppSrc), SimulateError> {
    let pipeline = gst::parse::launch(description)
        .map_err(gst_err)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| gst_err("not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| gst_err("no appsrc named src"))?;
    Ok((pipeline, src))
}

/// Write `clip` as an MP4 file (H.264 as encoded, no re-encoding).
pub fn write_mp4(clip: &Clip, path: &std::path::Path) -> Result<(), SimulateError> {
    gst::init().map_err(gst_err)?;
    let (pipeline, src) = launch_with_appsrc(&format!(
        "appsrc name=src format=time ! h264parse ! mp4mux ! filesink location=\"{}\"",
        path.display()
    ))?;
    src.set_caps(Some(
        &gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .field("framerate", gst::Fraction::new(clip.fps as i32, 1))
            .build(),
    ));
    pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
    let frame_ns = 1_000_000_000u64 / clip.fps as u64;
    for (i, unit) in clip.units.iter().enumerate() {
        let mut buffer = unit.copy();
        {
            let b = buffer.get_mut().expect("copied buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        }
        src.push_buffer(buffer).map_err(gst_err)?;
    }
    src.end_of_stream().map_err(gst_err)?;
    let bus = pipeline.bus().ok_or_else(|| gst_err("no bus"))?;
    let outcome = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match outcome.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => Err(gst_err(e.error())),
        _ => Err(gst_err("writing the MP4 did not finish")),
    }
}

/// An RTSP server on its own thread serving clips at `rtsp://address:port/<mount>`.
/// Each client gets the clip from its mount's start (the clip's first frame, or a later
/// IDR frame: [`RtspServer::start_at`]), looped, in real time.
pub struct RtspServer {
    pub address: String,
    pub port: u16,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RtspServer {
    /// Listen on `address:port` (port 0: any free port) and serve `mounts`.
    pub fn start(
        address: &str,
        port: u16,
        mounts: Vec<(String, Arc<Clip>)>,
    ) -> Result<RtspServer, SimulateError> {
        let mounts = mounts.into_iter().map(|(m, c)| (m, c, 0)).collect();
        RtspServer::start_at(address, port, mounts)
    }

    /// As [`RtspServer::start`], each mount's clients starting at access unit `start`
    /// (rounded down to the IDR frame before it: the clip has one every second), so
    /// cameras showing one clip need not show it in step.
    pub fn start_at(
        address: &str,
        port: u16,
        mounts: Vec<(String, Arc<Clip>, usize)>,
    ) -> Result<RtspServer, SimulateError> {
        gst::init().map_err(gst_err)?;
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (address, main_loop) = (address.to_string(), main_loop.clone());
            std::thread::Builder::new()
                .name("rtsp-server".into())
                .spawn(move || {
                    let outcome = context.with_thread_default(|| {
                        let server = rtsp::RTSPServer::new();
                        server.set_address(&address);
                        server.set_service(&port.to_string());
                        let points = server.mount_points().expect("server has mount points");
                        for (mount, clip, start) in mounts {
                            points.add_factory(&format!("/{mount}"), clip_factory(clip, start));
                        }
                        match server.attach(Some(&context)) {
                            Ok(source) => {
                                let _ = ready_tx.send(Ok(server.bound_port() as u16));
                                main_loop.run();
                                // stop listening (the source may already be gone)
                                if let Some(s) = context.find_source_by_id(&source) {
                                    s.destroy();
                                }
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.to_string()));
                            }
                        }
                    });
                    if let Err(e) = outcome {
                        tracing::error!(error = %e, "RTSP server context unavailable");
                    }
                })
                .map_err(gst_err)?
        };
        let listen_err = |reason: String| SimulateError::Listen {
            address: address.to_string(),
            port,
            reason,
        };
        let bound = ready_rx
            .recv()
            .map_err(|_| listen_err("server thread ended".into()))?
            .map_err(listen_err)?;
        Ok(RtspServer {
            address: address.to_string(),
            port: bound,
            main_loop,
            thread: Some(thread),
        })
    }

    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://{}:{}/{mount}", self.address, self.port)
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn clip_factory(clip: Arc<Clip>, start: usize) -> rtsp::RTSPMediaFactory {
    // an IDR every `fps` units (encode_h264), so a decoder can start there
    let start = (start % clip.units.len().max(1)) / clip.fps as usize * clip.fps as usize;
    let factory = rtsp::RTSPMediaFactory::new();
    factory.set_launch(
        "( appsrc name=src format=time ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
    );
    factory.set_shared(false);
    factory.connect_media_configure(move |_, media| {
        let element = media.element();
        let Some(src) = element
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name_recurse_up("src"))
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        else {
            tracing::error!("simulated camera: no appsrc in the media");
            return;
        };
        let caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .field("width", clip.width as i32)
            .field("height", clip.height as i32)
            .field("framerate", gst::Fraction::new(clip.fps as i32, 1))
            .build();
        src.set_caps(Some(&caps));
        let clip = clip.clone();
        let mut index = 0u64;
        let frame_ns = 1_000_000_000u64 / clip.fps as u64;
        let first = start as u64;
        src.set_callbacks(
            gst_app::AppSrcCallbacks::builder()
                .need_data(move |src, _| {
                    let unit = &clip.units[((first + index) % clip.units.len() as u64) as usize];
                    let mut buffer = unit.copy();
                    {
                        let b = buffer.get_mut().expect("copied buffer is writable");
                        b.set_pts(gst::ClockTime::from_nseconds(index * frame_ns));
                        b.set_dts(gst::ClockTime::from_nseconds(index * frame_ns));
                        b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
                    }
                    index += 1;
                    let _ = src.push_buffer(buffer);
                })
                .build(),
        );
    });
    factory
}

/// Load photos for a scene, skipping (and reporting) unreadable ones.
pub fn load_photos(paths: &[std::path::PathBuf]) -> Vec<RgbImage> {
    paths
        .iter()
        .filter_map(|p| match image::open(p) {
            Ok(i) => Some(i.to_rgb8()),
            Err(e) => {
                tracing::warn!(photo = %p.display(), error = %e, "photo skipped");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photos(n: usize) -> Vec<RgbImage> {
        (0..n)
            .map(|_| RgbImage::from_pixel(100, 100, image::Rgb([200, 180, 160])))
            .collect()
    }

    fn spec() -> SceneSpec {
        SceneSpec {
            photo_heights: vec![100],
            show_s: 4.0,
            gap_s: 1.0,
            turn_every: 2,
            turn_s: 1.0,
            exit_every: 3,
            exit_s: 2.0,
            pillar: Some((0.3, 60)),
            ..SceneSpec::default()
        }
    }

    #[test]
    fn a_person_who_leaves_the_frame_is_out_of_view_then_walks_back_across() {
        let scene = Scene::from_spec((640, 360, 10), &photos(3), &spec());
        let a = &scene.appearances[2]; // every third leaves
        let exit = a.exit.expect("the third photo leaves the frame");
        assert_eq!(a.duration_s, 4.0 + 2.0, "the time out of view is added");
        assert!(
            exit.out_x + 100.0 <= 0.0,
            "out by the left edge, wholly: {exit:?}"
        );
        // in view at the start, out of view for about away_s, back in, ending at `to`
        let visible: Vec<bool> = (0..60)
            .map(|k| a.face_visible(k as f32 * 0.1, scene.width))
            .collect();
        assert!(visible[0] && visible[59]);
        let hidden = visible.iter().filter(|v| !**v).count();
        assert!(
            (20..=30).contains(&hidden),
            "{hidden} of 60 tenths out of view"
        );
        let end = a.position(a.duration_s);
        assert!((end[0] - a.to[0]).abs() < 1.0, "{end:?} vs {:?}", a.to);
        // it does not also stop
        assert_eq!(a.hold_s, 0.0);
    }

    #[test]
    fn a_person_who_turns_away_shows_no_face_for_that_second_and_the_pillar_hides_everyone() {
        let scene = Scene::from_spec((640, 360, 10), &photos(2), &spec());
        let a = &scene.appearances[1]; // every second turns
        let (start, len) = a.turned.expect("the second photo turns away");
        assert_eq!(len, 1.0);
        assert!(!a.face_visible(start + 0.5, scene.width));
        assert!(a.face_visible(start - 0.1, scene.width));
        // the face's centre is hair while turned, skin before
        let centre = |t: f32| {
            let [x, y] = a.position(t);
            *scene
                .render(a.start_s + t)
                .get_pixel((x + 50.0) as u32, (y + 47.0) as u32)
        };
        assert_eq!(centre(start - 0.2).0, [200, 180, 160]);
        assert!(centre(start + 0.5).0[0] < 60, "{:?}", centre(start + 0.5));
        // the pillar, 60 px centred at 30 %: in front of everyone
        assert_eq!(scene.pillars, vec![(162, 60)]);
        let frame = scene.render(1.0);
        assert!(frame.get_pixel(192, 180).0[0] >= 140);
    }
}
