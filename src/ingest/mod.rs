//! Camera ingest: one GStreamer pipeline per camera, decoded frames handed to the
//! analysis pipeline at the camera's detection rate.
//!
//! First stage of the streaming pipeline. A camera's pipeline comes from a template in
//! `pipelines/` (embedded in the binary; `cameras.pipeline` overrides it) and ends in an
//! `appsink` named `frames` delivering I420. The appsink callback runs on GStreamer's
//! streaming thread and must never block: it counts the frame, keeps it only when the
//! camera's detection rate is due ([`RateGate`]), copies the planes and pushes them into a
//! bounded ring ([`FrameRing`]) that drops the **oldest** frame when the analysis falls
//! behind. [`camera::CameraActor`] supervises the pipeline: reconnects with exponential
//! backoff and jitter on errors, end of stream and stalls (a frame watchdog — `rtspsrc`
//! posts nothing when a camera freezes).

pub mod camera;
pub mod frame;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::{Deserialize, Serialize};

pub use frame::{I420Frame, Region};

/// Pipeline templates shipped in `pipelines/`, by name.
pub const TEMPLATES: [(&str, &str); 6] = [
    (
        "rtsp-h264",
        include_str!("../../pipelines/rtsp-h264.pipeline"),
    ),
    (
        "rtsp-h265",
        include_str!("../../pipelines/rtsp-h265.pipeline"),
    ),
    (
        "rtsp-mjpeg",
        include_str!("../../pipelines/rtsp-mjpeg.pipeline"),
    ),
    (
        "http-mjpeg",
        include_str!("../../pipelines/http-mjpeg.pipeline"),
    ),
    ("file", include_str!("../../pipelines/file.pipeline")),
    ("test", include_str!("../../pipelines/test.pipeline")),
];

/// Errors building a camera's pipeline description.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("camera `{camera}`: unknown source `{source_name}` (known: {known})")]
    UnknownSource {
        camera: String,
        source_name: String,
        known: String,
    },
    #[error("camera `{camera}`: cannot build the GStreamer pipeline: {reason}")]
    Pipeline { camera: String, reason: String },
}

/// RTSP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls.
    Tcp,
    /// RTP over UDP: lower overhead on a clean LAN; losses show as corrupt frames.
    Udp,
}

/// One camera (`[[cameras]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Stable identifier used in events, metrics and the API (`[a-z0-9_-]`, ≤ 64).
    pub id: String,
    /// Where the stream is: `rtsp://user:pass@host:554/path`, `http://…`, `file:///…`,
    /// `test://`.
    pub url: String,
    /// Pipeline template from `pipelines/`: rtsp-h264 (default), rtsp-h265, rtsp-mjpeg,
    /// http-mjpeg, file, test.
    #[serde(default = "default_source")]
    pub source: String,
    /// RTSP transport: `tcp` (default) or `udp`.
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// RTSP jitter-buffer latency in milliseconds.
    #[serde(default = "default_latency")]
    pub latency_ms: u32,
    /// Frames analysed per second, independent of the camera's frame rate.
    #[serde(default = "default_fps")]
    pub detect_fps: f32,
    /// A complete gst-launch description ending in `appsink name=frames`, instead of
    /// the template (same placeholders: {url} {transport} {latency_ms}).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Off: configured but not started.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where in this camera's frames faces are searched for (`[cameras.detection]`):
    /// motion-gated full-resolution regions by default, masks, minimum face size.
    #[serde(default)]
    pub detection: crate::stages::motion::CameraDetection,
}

fn default_source() -> String {
    "rtsp-h264".into()
}
fn default_transport() -> Transport {
    Transport::Tcp
}
fn default_latency() -> u32 {
    200
}
fn default_fps() -> f32 {
    5.0
}
fn default_true() -> bool {
    true
}

impl CameraConfig {
    /// The gst-launch description of this camera.
    pub fn description(&self) -> Result<String, IngestError> {
        let template = match &self.pipeline {
            Some(p) => p.clone(),
            None => TEMPLATES
                .iter()
                .find(|(name, _)| *name == self.source)
                .map(|(_, t)| strip_comments(t))
                .ok_or_else(|| IngestError::UnknownSource {
                    camera: self.id.clone(),
                    source_name: self.source.clone(),
                    known: TEMPLATES.map(|(n, _)| n).join(", "),
                })?,
        };
        let transport = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        Ok(template
            .replace("{url}", &self.url.replace('"', "%22"))
            .replace("{transport}", transport)
            .replace("{latency_ms}", &self.latency_ms.to_string()))
    }

    /// The URL with any password replaced, for logs and the API.
    pub fn redacted_url(&self) -> String {
        crate::redact::url(&self.url)
    }

    /// Append every problem with this camera to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            problems.push(format!(
                "cameras.id = {:?} must be 1-64 characters of a-z, 0-9, - and _",
                self.id
            ));
        }
        if self.detect_fps.is_nan() || self.detect_fps <= 0.0 || self.detect_fps > 60.0 {
            problems.push(format!(
                "cameras[{}].detect_fps = {} must be within (0, 60]",
                self.id, self.detect_fps
            ));
        }
        self.detection.validate(&self.id, problems);
        if self.latency_ms > 10_000 {
            problems.push(format!(
                "cameras[{}].latency_ms = {} must be at most 10000",
                self.id, self.latency_ms
            ));
        }
        match &self.pipeline {
            Some(p) if !p.contains("name=frames") => problems.push(format!(
                "cameras[{}].pipeline must end in `appsink name=frames`",
                self.id
            )),
            Some(_) => {}
            None => {
                if let Err(e) = self.description() {
                    problems.push(e.to_string());
                } else {
                    let scheme = self.url.split("://").next().unwrap_or("");
                    let expected = match self.source.as_str() {
                        s if s.starts_with("rtsp") => &["rtsp", "rtsps"][..],
                        "http-mjpeg" => &["http", "https"][..],
                        "file" => &["file"][..],
                        _ => &["test"][..],
                    };
                    if !expected.contains(&scheme) {
                        problems.push(format!(
                            "cameras[{}].url = {:?}: source `{}` expects a {} URL",
                            self.id,
                            self.redacted_url(),
                            self.source,
                            expected.join("/")
                        ));
                    }
                }
            }
        }
    }
}

/// Streaming-pipeline settings (section `[pipeline]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Frames waiting per camera between ingest and detection; when full, the oldest is
    /// dropped (and counted), so memory and latency stay bounded.
    pub frame_queue: usize,
    /// Frames per camera inside the analysis stages at once (credit-based flow control:
    /// every stage's queue is bounded by cameras × this).
    pub max_in_flight: usize,
    /// Detector workers (each its own inference session).
    pub detect_workers: usize,
    /// Largest embedding batch, across cameras.
    pub embed_max_batch: usize,
    /// Longest a face waits for its batch to fill.
    pub embed_max_wait_ms: u64,
    /// A live camera that delivers no frame for this long is restarted (watchdog).
    pub stall_timeout_ms: u64,
    /// A camera whose frames have all been inside the analysis stages this long without
    /// one coming out has a dead or stuck stage: counted
    /// (`facestream_pipeline_stalls_total`), logged, reported by `/v1/ready` for a
    /// minute, and the camera's flow-control credits are reset so it keeps going.
    #[serde(default = "default_stage_timeout")]
    pub stage_timeout_ms: u64,
    /// A (re)connecting camera must deliver its first frame within this.
    pub connect_timeout_ms: u64,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max_ms`,
    /// ×[0.5, 1.5) jitter so cameras behind one switch do not reconnect in lockstep.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

fn default_stage_timeout() -> u64 {
    30_000
}

impl PipelineConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let ranges: [(&str, u64, u64, u64); 10] = [
            ("frame_queue", self.frame_queue as u64, 1, 1000),
            ("max_in_flight", self.max_in_flight as u64, 1, 64),
            ("detect_workers", self.detect_workers as u64, 1, 64),
            ("embed_max_batch", self.embed_max_batch as u64, 1, 256),
            ("embed_max_wait_ms", self.embed_max_wait_ms, 0, 10_000),
            ("stall_timeout_ms", self.stall_timeout_ms, 500, 600_000),
            ("stage_timeout_ms", self.stage_timeout_ms, 1_000, 600_000),
            ("connect_timeout_ms", self.connect_timeout_ms, 500, 600_000),
            ("backoff_initial_ms", self.backoff_initial_ms, 10, 600_000),
            ("backoff_max_ms", self.backoff_max_ms, 10, 3_600_000),
        ];
        for (name, value, lo, hi) in ranges {
            crate::validate::within(problems, &format!("pipeline.{name}"), value, lo..=hi);
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            problems.push("pipeline.backoff_max_ms must be >= pipeline.backoff_initial_ms".into());
        }
    }

    /// Reconnect delay after `attempts` failures in a row, jittered.
    pub fn backoff(&self, attempts: u32) -> Duration {
        crate::backoff::jittered(self.backoff_initial_ms, self.backoff_max_ms, attempts)
    }
}

fn strip_comments(template: &str) -> String {
    template
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}

/// Picks frames at a fixed rate from a stream of timestamps (nanoseconds).
#[derive(Debug)]
pub struct RateGate {
    interval_ns: u64,
    next_due: Option<u64>,
}

impl RateGate {
    pub fn new(fps: f32) -> RateGate {
        RateGate {
            interval_ns: (1e9 / fps as f64) as u64,
            next_due: None,
        }
    }

    /// Whether the frame at `pts_ns` should be analysed.
    pub fn admit(&mut self, pts_ns: u64) -> bool {
        match self.next_due {
            Some(due) if pts_ns < due && due - pts_ns <= 10 * self.interval_ns => false,
            Some(due) if pts_ns >= due && pts_ns - due < self.interval_ns => {
                self.next_due = Some(due + self.interval_ns);
                true
            }
            // first frame, a gap longer than one interval, or timestamps that went back
            // (a reconnect): restart the schedule at this frame
            _ => {
                self.next_due = Some(pts_ns + self.interval_ns);
                true
            }
        }
    }
}

/// A frame on its way from ingest to detection.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    pub frame: Arc<I420Frame>,
    /// When the frame left the decoder (the start of end-to-end latency).
    pub captured_at: SystemTime,
    pub captured_instant: std::time::Instant,
}

/// Bounded frame queue between a camera and the analysis that drops the oldest frame
/// when full. Never blocks the pushing (GStreamer) thread.
#[derive(Clone)]
pub struct FrameRing {
    tx: Sender<CapturedFrame>,
    rx: Receiver<CapturedFrame>,
    dropped: Arc<AtomicU64>,
}

impl FrameRing {
    pub fn new(capacity: usize) -> FrameRing {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        FrameRing {
            tx,
            rx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queue `frame`; returns how many older frames were dropped to make room.
    pub fn push(&self, mut frame: CapturedFrame) -> u64 {
        let mut dropped = 0;
        loop {
            match self.tx.try_send(frame) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    frame = back;
                    if self.rx.try_recv().is_ok() {
                        dropped += 1;
                    }
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        dropped
    }

    pub fn receiver(&self) -> &Receiver<CapturedFrame> {
        &self.rx
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Camera lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraState {
    Connecting,
    Live,
    BackingOff,
    /// Not retried: the pipeline cannot be built (missing element, bad description).
    Failed,
    Stopped,
    /// Not watched by this node: another node of the cluster holds its lease, or none
    /// does yet (`cluster.camera_leases`).
    Standby,
}

impl CameraState {
    pub const ALL: [CameraState; 6] = [
        CameraState::Connecting,
        CameraState::Live,
        CameraState::BackingOff,
        CameraState::Failed,
        CameraState::Stopped,
        CameraState::Standby,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Live => "live",
            CameraState::BackingOff => "backing-off",
            CameraState::Failed => "failed",
            CameraState::Stopped => "stopped",
            CameraState::Standby => "standby",
        }
    }
}

/// What the API shows about a camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub id: String,
    pub url: String,
    pub source: String,
    pub state: CameraState,
    pub since: chrono::DateTime<chrono::Utc>,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub frames_decoded: u64,
    pub frames_analysed: u64,
    pub frames_dropped: u64,
    /// Times this camera's frames got stuck in the analysis stages (see
    /// `pipeline.stage_timeout_ms`), and the last time.
    pub analysis_stalls: u64,
    pub last_analysis_stall: Option<chrono::DateTime<chrono::Utc>>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The latest frame handed to analysis and when (the console's camera view,
    /// `GET /v1/cameras/{id}/snapshot`); shared with the pipeline, not copied.
    #[serde(skip)]
    pub latest_frame: Option<(Arc<I420Frame>, chrono::DateTime<chrono::Utc>)>,
    /// The node watching it (`cluster.node_id`); absent while no node does.
    pub node: Option<String>,
}

/// Every camera's status, shared between the camera actors and the API.
#[derive(Default)]
pub struct CameraRegistry {
    cameras: Mutex<Vec<Arc<Mutex<CameraStatus>>>>,
}

impl CameraRegistry {
    pub fn add(&self, status: CameraStatus) -> Arc<Mutex<CameraStatus>> {
        let entry = Arc::new(Mutex::new(status));
        self.cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry.clone());
        entry
    }

    /// One camera's shared status entry.
    pub fn entry(&self, id: &str) -> Option<Arc<Mutex<CameraStatus>>> {
        self.cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|c| c.lock().unwrap_or_else(|p| p.into_inner()).id == id)
            .cloned()
    }

    /// One camera's status.
    pub fn get(&self, id: &str) -> Option<CameraStatus> {
        self.cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()))
            .find(|c| c.id == id)
            .map(|c| c.clone())
    }

    pub fn snapshot(&self) -> Vec<CameraStatus> {
        self.cameras
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(source: &str, url: &str) -> CameraConfig {
        toml::from_str(&format!(
            "id = \"door\"\nurl = \"{url}\"\nsource = \"{source}\""
        ))
        .unwrap()
    }

    #[test]
    fn templates_fill_placeholders_and_end_in_the_appsink() {
        let c = camera(
            "rtsp-h264",
            "rtsp://u:p@10.0.0.5:554/Streaming/Channels/101",
        );
        let d = c.description().unwrap();
        assert!(d.starts_with("rtspsrc location=\"rtsp://u:p@10.0.0.5:554/Streaming/Channels/101\" protocols=tcp latency=200"), "{d}");
        assert!(d.contains("avdec_h264") && d.ends_with("drop=true"), "{d}");
        assert!(!d.contains('#') && !d.contains('{'), "{d}");
        for (name, template) in TEMPLATES {
            assert!(template.contains("appsink name=frames"), "{name}");
        }
        assert_eq!(
            c.redacted_url(),
            "rtsp://u:***@10.0.0.5:554/Streaming/Channels/101"
        );
    }

    #[test]
    fn validation_names_the_camera_and_the_problem() {
        let mut problems = Vec::new();
        camera("rtsp-h266", "rtsp://x/y").validate(&mut problems);
        camera("rtsp-h264", "http://x/y").validate(&mut problems);
        let text = problems.join("\n");
        assert!(text.contains("unknown source `rtsp-h266`"), "{text}");
        assert!(text.contains("expects a rtsp/rtsps URL"), "{text}");
    }

    #[test]
    fn rate_gate_keeps_the_detection_rate_whatever_the_camera_rate() {
        let mut gate = RateGate::new(5.0);
        let frame_ns = 40_000_000; // 25 fps
        let admitted = (0..250).filter(|i| gate.admit(i * frame_ns)).count();
        assert_eq!(admitted, 50); // 10 s at 5/s
                                  // a reconnect restarts timestamps at zero: admitted at once, then at the rate
        assert!(gate.admit(0));
        assert!(!gate.admit(frame_ns));
    }

    #[test]
    fn ring_drops_the_oldest_frame_when_full() {
        let ring = FrameRing::new(2);
        let frame = |w| CapturedFrame {
            frame: Arc::new(I420Frame::from_rgb(&image::RgbImage::new(w, 2))),
            captured_at: SystemTime::now(),
            captured_instant: std::time::Instant::now(),
        };
        for w in 1..=5 {
            ring.push(frame(w * 2));
        }
        assert_eq!(ring.dropped(), 3);
        let widths: Vec<u32> = ring.receiver().try_iter().map(|f| f.frame.width).collect();
        assert_eq!(widths, vec![8, 10]);
    }
}
