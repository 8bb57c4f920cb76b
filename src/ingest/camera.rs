//! Camera supervision: one actix actor per camera owns its GStreamer pipeline.
//!
//! States: connecting → live → (error, end of stream or stall) → backing-off → connecting…
//! A pipeline that cannot even be built (a template naming a missing element, a bad
//! custom description) is `failed` and not retried. Every failure is logged with the
//! camera id and the GStreamer message, shown in `GET /v1/cameras` and in the
//! `facestream_camera_*` metrics; one camera's trouble never touches another's pipeline.
//!
//! The watchdog: the appsink callback stamps each frame; a timer checks that a live camera
//! delivered one within `pipeline.stall_timeout_ms` and a connecting one within
//! `pipeline.connect_timeout_ms`. Tearing a pipeline down runs on its own thread, since
//! `rtspsrc` may wait on a frozen server before it lets go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::frame::{ColorMatrix, I420Frame};
use super::{
    CameraConfig, CameraState, CameraStatus, CapturedFrame, FrameRing, PipelineConfig, RateGate,
};
use crate::events::{Event, EventType};
use crate::telemetry::{metrics, CameraStateLabel, Metrics};

const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// Longest a shutdown waits for a camera's pipelines to stop.
const TEARDOWN_WAIT: Duration = Duration::from_secs(5);

/// Written by GStreamer threads, read by the actor.
struct Shared {
    /// Pipeline generation the callbacks belong to; frames of an older one are ignored.
    generation: AtomicU64,
    /// Milliseconds since `epoch` of the last decoded frame of the current generation.
    last_frame_ms: AtomicU64,
    /// Frames decoded in the current generation.
    frames: AtomicU64,
    epoch: Instant,
    size: Mutex<Option<(u32, u32)>>,
}

/// Where a camera's `camera.up` / `camera.down` events go: the pipeline's publish stage,
/// which keeps in memory and retries, in order with the identity events, what the outbox
/// cannot take at the moment (a locked or full disk), instead of dropping it.
pub type CameraEvents = std::sync::Arc<dyn Fn(Event) + Send + Sync>;

/// Supervises one camera.
pub struct CameraActor {
    config: CameraConfig,
    pipeline_config: PipelineConfig,
    status: Arc<Mutex<CameraStatus>>,
    ring: FrameRing,
    events: Option<CameraEvents>,
    shared: Arc<Shared>,
    pipeline: Option<gst::Pipeline>,
    bus_watch: Option<SpawnHandle>,
    retry: Option<SpawnHandle>,
    /// Pipelines being stopped on their own threads (signalled when done).
    teardowns: Vec<std::sync::mpsc::Receiver<()>>,
    attempts: u32,
    connect_started: Instant,
    state: CameraState,
}

/// Stop the camera for good (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The pipeline of `generation` posted an error or end of stream.
#[derive(Message)]
#[rtype(result = "()")]
struct PipelineEnded {
    generation: u64,
    reason: String,
}

impl CameraActor {
    pub fn new(
        config: CameraConfig,
        pipeline_config: PipelineConfig,
        status: Arc<Mutex<CameraStatus>>,
        ring: FrameRing,
        events: Option<CameraEvents>,
    ) -> CameraActor {
        // The camera's series exist from the start, at zero.
        let m = metrics();
        let label = Metrics::camera(&config.id);
        let _ = m.camera_reconnects.get_or_create(&label);
        let _ = m.camera_frames_received.get_or_create(&label);
        let _ = m.camera_frames_decoded.get_or_create(&label);
        let _ = m.camera_frames_sampled.get_or_create(&label);
        let _ = m.camera_frames_dropped.get_or_create(&label);
        let _ = m.faces_detected.get_or_create(&label);
        let _ = m.tracks_started.get_or_create(&label);
        let _ = m.tracks_active.get_or_create(&label);
        m.init_face_series(&config.id);
        for outcome in ["recognized", "unknown", "low_quality", "continued"] {
            let _ = m
                .matches
                .get_or_create(&Metrics::outcome(&config.id, outcome));
        }
        for outcome in ["embedded", "low_quality", "decided_track", "shots_full"] {
            let _ = m
                .embed_faces
                .get_or_create(&Metrics::outcome(&config.id, outcome));
        }
        CameraActor {
            config,
            pipeline_config,
            status,
            ring,
            events,
            shared: Arc::new(Shared {
                generation: AtomicU64::new(0),
                last_frame_ms: AtomicU64::new(0),
                frames: AtomicU64::new(0),
                epoch: Instant::now(),
                size: Mutex::new(None),
            }),
            pipeline: None,
            bus_watch: None,
            retry: None,
            teardowns: Vec::new(),
            attempts: 0,
            connect_started: Instant::now(),
            state: CameraState::Connecting,
        }
    }

    fn set_state(&mut self, state: CameraState, error: Option<String>) {
        let m = metrics();
        for s in CameraState::ALL {
            m.camera_state
                .get_or_create(&CameraStateLabel {
                    camera: self.config.id.clone(),
                    state: s.as_str().to_string(),
                })
                .set(i64::from(s == state));
        }
        m.camera_up
            .get_or_create(&Metrics::camera(&self.config.id))
            .set(i64::from(state == CameraState::Live));
        let was_live = self.state == CameraState::Live;
        self.state = state;
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.state = state;
        status.since = chrono::Utc::now();
        if error.is_some() {
            status.last_error = error;
        }
        if let Some((w, h)) = *self.shared.size.lock().unwrap_or_else(|p| p.into_inner()) {
            status.width = Some(w);
            status.height = Some(h);
        }
        drop(status);
        let kind = match (was_live, state == CameraState::Live) {
            (false, true) => Some(EventType::CameraUp),
            (true, false) => Some(EventType::CameraDown),
            _ => None,
        };
        if let (Some(kind), Some(events)) = (kind, &self.events) {
            let mut event = Event::new(kind);
            event.camera_id = Some(self.config.id.clone());
            events(event);
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.retry = None;
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.frames.store(0, Ordering::SeqCst);
        self.connect_started = Instant::now();
        self.set_state(CameraState::Connecting, None);
        let pipeline = match self.build(generation) {
            Ok(p) => p,
            Err(reason) => {
                let reason = reason.replace(&self.config.url, &self.config.redacted_url());
                tracing::error!(camera = %self.config.id, %reason, "camera pipeline cannot be built; not retrying");
                self.set_state(CameraState::Failed, Some(reason));
                return;
            }
        };
        let Some(bus) = pipeline.bus() else {
            self.set_state(CameraState::Failed, Some("pipeline has no bus".into()));
            return;
        };
        let mut messages = bus.stream();
        let addr = ctx.address();
        let id = self.config.id.clone();
        let source = self.config.source.clone();
        // GStreamer messages may quote the URL: never let its password out.
        let (url, redacted) = (self.config.url.clone(), self.config.redacted_url());
        let watch = async move {
            while let Some(msg) = messages.next().await {
                let reason = match msg.view() {
                    gst::MessageView::Error(e) => {
                        let from = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
                        let debug = e.debug().map(|d| d.to_string()).unwrap_or_default();
                        let mut reason = format!("{from}: {}", e.error());
                        // not-linked: the depayloader refused the stream's RTP caps;
                        // not-negotiated: the decoder refused the stream
                        if debug.contains("not-negotiated") || debug.contains("not-linked") {
                            reason.push_str(&format!(
                                " — the stream's format does not match source `{source}` (check cameras.source)"
                            ));
                        } else if let Some(line) = debug.lines().last().filter(|l| !l.is_empty()) {
                            reason.push_str(&format!(" ({line})"));
                        }
                        reason
                    }
                    gst::MessageView::Eos(_) => "end of stream".to_string(),
                    gst::MessageView::Warning(w) => {
                        tracing::warn!(camera = %id, warning = %w.error(), "camera pipeline warning");
                        continue;
                    }
                    _ => continue,
                };
                let reason = reason.replace(&url, &redacted);
                addr.do_send(PipelineEnded { generation, reason });
                break;
            }
        };
        self.bus_watch = Some(ctx.spawn(actix::fut::wrap_future(watch)));
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            self.pipeline = Some(pipeline);
            self.fail(ctx, format!("cannot start the pipeline: {e}"));
            return;
        }
        self.pipeline = Some(pipeline);
        tracing::info!(camera = %self.config.id, url = %self.config.redacted_url(), "camera connecting");
    }

    /// Build the pipeline and hook the appsink; errors are permanent.
    fn build(&self, generation: u64) -> Result<gst::Pipeline, String> {
        let description = self.config.description().map_err(|e| e.to_string())?;
        let element = gst::parse::launch(&description).map_err(|e| e.to_string())?;
        let pipeline = element
            .downcast::<gst::Pipeline>()
            .map_err(|_| "the description is not a pipeline".to_string())?;
        let sink = pipeline
            .by_name("frames")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or("the pipeline has no `appsink name=frames`")?;
        let id = self.config.id.clone();
        let label = Metrics::camera(&id);
        let m = metrics();
        if let Some(pad) = pipeline
            .by_name("decoder")
            .and_then(|d| d.static_pad("sink"))
        {
            let received = m.camera_frames_received.get_or_create(&label).clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                received.inc();
                gst::PadProbeReturn::Ok
            });
        }
        let decoded = m.camera_frames_decoded.get_or_create(&label).clone();
        let sampled = m.camera_frames_sampled.get_or_create(&label).clone();
        let dropped = m.camera_frames_dropped.get_or_create(&label).clone();
        let status = self.status.clone();
        let shared = self.shared.clone();
        let ring = self.ring.clone();
        let gate = Mutex::new(RateGate::new(self.config.detect_fps));
        let info: Mutex<Option<(gst::Caps, gst_video::VideoInfo)>> = Mutex::new(None);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if shared.generation.load(Ordering::Relaxed) != generation {
                        return Err(gst::FlowError::Flushing);
                    }
                    decoded.inc();
                    shared.frames.fetch_add(1, Ordering::Relaxed);
                    let now = shared.epoch.elapsed().as_millis() as u64;
                    shared.last_frame_ms.store(now, Ordering::Relaxed);
                    let Some(buffer) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let pts = buffer.pts().map_or(now * 1_000_000, |t| t.nseconds());
                    if !gate.lock().unwrap_or_else(|p| p.into_inner()).admit(pts) {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    let mut cached = info.lock().unwrap_or_else(|p| p.into_inner());
                    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
                    if cached.as_ref().is_none_or(|(c, _)| c != caps) {
                        let vi = gst_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::NotNegotiated)?;
                        *shared.size.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((vi.width(), vi.height()));
                        *cached = Some((caps.to_owned(), vi));
                    }
                    let Some((_, vi)) = cached.as_ref() else {
                        return Err(gst::FlowError::NotNegotiated);
                    };
                    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, vi)
                        .map_err(|_| gst::FlowError::Error)?;
                    let matrix = if vi.colorimetry().matrix() == gst_video::VideoColorMatrix::Bt709
                    {
                        ColorMatrix::Bt709
                    } else {
                        ColorMatrix::Bt601
                    };
                    let strides = frame.plane_stride();
                    let plane = |i: usize| -> Result<(&[u8], usize), gst::FlowError> {
                        Ok((
                            frame
                                .plane_data(i as u32)
                                .map_err(|_| gst::FlowError::Error)?,
                            strides[i] as usize,
                        ))
                    };
                    let copy = I420Frame::from_planes(
                        vi.width(),
                        vi.height(),
                        matrix,
                        [plane(0)?, plane(1)?, plane(2)?],
                    );
                    sampled.inc();
                    let frame = Arc::new(copy);
                    let lost = ring.push(CapturedFrame {
                        frame: frame.clone(),
                        captured_at: SystemTime::now(),
                        captured_instant: Instant::now(),
                    });
                    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
                    s.frames_analysed += 1;
                    s.latest_frame = Some((frame, chrono::Utc::now()));
                    if lost > 0 {
                        dropped.inc_by(lost);
                        s.frames_dropped += lost;
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(pipeline)
    }

    fn teardown(&mut self, ctx: &mut Context<Self>) {
        // callbacks of this generation go quiet at once
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(h) = self.bus_watch.take() {
            ctx.cancel_future(h);
        }
        if let Some(p) = self.pipeline.take() {
            let id = self.config.id.clone();
            let (done, finished) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("teardown-{id}"))
                .spawn(move || {
                    let _ = p.set_state(gst::State::Null);
                    let _ = done.send(());
                });
            if spawned.is_ok() {
                self.teardowns
                    .retain(|t| matches!(t.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)));
                self.teardowns.push(finished);
            }
        }
    }

    fn fail(&mut self, ctx: &mut Context<Self>, reason: String) {
        self.teardown(ctx);
        let delay = self.pipeline_config.backoff(self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        tracing::warn!(
            camera = %self.config.id,
            %reason,
            retry_in_ms = delay.as_millis() as u64,
            "camera down; reconnecting"
        );
        self.set_state(CameraState::BackingOff, Some(reason));
        self.retry = Some(ctx.run_later(delay, |actor, ctx| {
            metrics()
                .camera_reconnects
                .get_or_create(&Metrics::camera(&actor.config.id))
                .inc();
            actor
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reconnects += 1;
            actor.connect(ctx);
        }));
    }

    fn watchdog(&mut self, ctx: &mut Context<Self>) {
        let frames = self.shared.frames.load(Ordering::Relaxed);
        {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            s.frames_decoded = metrics()
                .camera_frames_decoded
                .get_or_create(&Metrics::camera(&self.config.id))
                .get();
        }
        match self.state {
            CameraState::Connecting if frames > 0 => {
                self.attempts = 0;
                tracing::info!(camera = %self.config.id, "camera live");
                self.set_state(CameraState::Live, None);
            }
            CameraState::Connecting
                if self.connect_started.elapsed()
                    > Duration::from_millis(self.pipeline_config.connect_timeout_ms) =>
            {
                let reason = format!(
                    "no frame within {} ms of connecting",
                    self.pipeline_config.connect_timeout_ms
                );
                self.fail(ctx, reason);
            }
            CameraState::Live => {
                let last = self.shared.last_frame_ms.load(Ordering::Relaxed);
                let now = self.shared.epoch.elapsed().as_millis() as u64;
                if now.saturating_sub(last) > self.pipeline_config.stall_timeout_ms {
                    let reason =
                        format!("no frame for {} ms: stream stalled (watchdog)", now - last);
                    self.fail(ctx, reason);
                }
            }
            _ => {}
        }
    }
}

impl Actor for CameraActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(WATCHDOG_TICK, |actor, ctx| actor.watchdog(ctx));
        self.connect(ctx);
    }
}

impl Handler<PipelineEnded> for CameraActor {
    type Result = ();

    fn handle(&mut self, msg: PipelineEnded, ctx: &mut Context<Self>) {
        let current = self.shared.generation.load(Ordering::SeqCst);
        if msg.generation == current
            && matches!(self.state, CameraState::Connecting | CameraState::Live)
        {
            self.fail(ctx, msg.reason);
        }
    }
}

impl Handler<Stop> for CameraActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        self.teardown(ctx);
        // Shutdown waits (boundedly) until every pipeline of this camera is in NULL:
        // GStreamer threads still streaming while the process exits can crash it. The
        // wait runs on a blocking thread, not on the arbiter the other cameras and the
        // API share; the answer to `Stop` comes when it is over.
        let teardowns: Vec<_> = self.teardowns.drain(..).collect();
        let camera = self.config.id.clone();
        let wait = actix_web::rt::task::spawn_blocking(move || {
            let deadline = Instant::now() + TEARDOWN_WAIT;
            for t in teardowns {
                let left = deadline.saturating_duration_since(Instant::now());
                if t.recv_timeout(left).is_err() {
                    tracing::warn!(camera = %camera, "camera pipeline did not stop in time");
                }
            }
        });
        Box::pin(actix::fut::wrap_future::<_, Self>(wait).map(|_, act, ctx| {
            act.set_state(CameraState::Stopped, None);
            ctx.stop();
        }))
    }
}
