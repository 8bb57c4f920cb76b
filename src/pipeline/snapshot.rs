//! Event snapshots (`[events.snapshots]`): the frame an identity event was decided on,
//! shrunk to `max_side` with the face boxed, as `<event id>.jpg` in `dir` (owner-only),
//! deleted after `retention_s`.
//!
//! A stage on its own thread: converting and encoding a frame takes a few milliseconds,
//! once per identity event. A snapshot that cannot be written is logged and counted
//! (`facestream_snapshot_errors_total`); the event itself is unaffected. An event
//! decided when its track ended (no frame at hand then) has no snapshot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use image::{Rgb, RgbImage};
use uuid::Uuid;

use crate::ingest::frame::I420Frame;
use crate::stages::BBox;
use crate::telemetry::metrics;

/// How often old snapshots are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Snapshot the frame of event `event`, boxing `bbox` (full-frame pixels).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct TakeSnapshot {
    pub event: Uuid,
    /// Whose recognition it shows (written into the JPEG for erasure).
    pub identity: Option<Uuid>,
    pub frame: Arc<I420Frame>,
    pub bbox: BBox,
}

/// The file of event `id`'s snapshot in `dir`.
pub fn snapshot_path(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.jpg"))
}

/// The JPEG comment naming whose recognition a snapshot shows, for erasure.
fn identity_comment(identity: Uuid) -> String {
    format!("facestream identity={identity}")
}

/// `jpeg` with a comment segment (COM) right after its start marker.
fn with_comment(jpeg: Vec<u8>, comment: &str) -> Vec<u8> {
    if jpeg.len() < 2 || jpeg[..2] != [0xFF, 0xD8] || comment.len() > 60_000 {
        return jpeg;
    }
    let len = (comment.len() + 2) as u16;
    let mut out = Vec::with_capacity(jpeg.len() + comment.len() + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(comment.as_bytes());
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Erasure of identity `identity`: delete the snapshots of `events` and every snapshot
/// whose comment names it (events this node no longer holds in its outbox); returns how
/// many were deleted. A missing folder is nothing to delete.
pub fn forget_identity(dir: &Path, identity: Uuid, events: &[Uuid]) -> std::io::Result<usize> {
    let mut deleted = 0;
    for id in events {
        match std::fs::remove_file(snapshot_path(dir, *id)) {
            Ok(()) => deleted += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(deleted),
        Err(e) => return Err(e),
    };
    let marker = identity_comment(identity);
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "jpg") {
            continue;
        }
        // the comment is in the first bytes of the file
        let mut head = [0u8; 128];
        let n = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .unwrap_or(0);
        if head[..n]
            .windows(marker.len())
            .any(|w| w == marker.as_bytes())
        {
            std::fs::remove_file(&path)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Delete snapshots in `dir` modified more than `retention` ago; returns how many.
pub fn prune(dir: &Path, retention: Duration) -> std::io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.ends_with(".jpg") || name.ends_with(".jpg.tmp")) {
            continue;
        }
        let old = entry
            .metadata()?
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > retention);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The smallest whole factor that shrinks `frame` to fit `max_side`.
fn shrink_factor(frame: &I420Frame, max_side: u32) -> u32 {
    frame
        .width
        .max(frame.height)
        .div_ceil(max_side.max(1))
        .max(1)
}

/// The whole frame shrunk by the smallest whole factor that fits `max_side` (a camera's
/// latest frame in the console).
pub fn preview(frame: &I420Frame, max_side: u32) -> RgbImage {
    frame.to_rgb(frame.full(), shrink_factor(frame, max_side))
}

/// The frame shrunk by the smallest whole factor that fits `max_side`, with a 2-pixel
/// box around the face.
pub(crate) fn render(frame: &I420Frame, bbox: BBox, max_side: u32) -> RgbImage {
    let step = shrink_factor(frame, max_side);
    let mut rgb = frame.to_rgb(frame.full(), step);
    let s = step as f32;
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    let x0 = (bbox.x / s).round() as i64;
    let y0 = (bbox.y / s).round() as i64;
    let x1 = ((bbox.x + bbox.w) / s).round() as i64;
    let y1 = ((bbox.y + bbox.h) / s).round() as i64;
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            rgb.put_pixel(x as u32, y as u32, Rgb([0, 230, 64]));
        }
    };
    for t in 0..2 {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1 - t);
        }
        for y in y0..=y1 {
            put(x0 + t, y);
            put(x1 - t, y);
        }
    }
    rgb
}

pub(super) struct SnapshotKeeper {
    dir: PathBuf,
    retention: Duration,
    max_side: u32,
    last_prune: Option<std::time::Instant>,
    /// Which identities were erased: a recognition decided before an erasure and
    /// reaching this stage after it leaves no snapshot.
    events: crate::events::bus::EventBus,
}

impl SnapshotKeeper {
    pub(super) fn new(
        dir: PathBuf,
        retention_s: u64,
        max_side: u32,
        events: crate::events::bus::EventBus,
    ) -> SnapshotKeeper {
        SnapshotKeeper {
            dir,
            retention: Duration::from_secs(retention_s),
            max_side,
            last_prune: None,
            events,
        }
    }

    fn write(&self, msg: &TakeSnapshot) -> Result<(), String> {
        if msg.identity.is_some_and(|i| self.events.is_erased(i)) {
            return Ok(());
        }
        let rgb = render(&msg.frame, msg.bbox, self.max_side);
        let mut jpeg = crate::imageio::encode_jpeg(&rgb, 80).map_err(|e| e.to_string())?;
        if let Some(identity) = msg.identity {
            jpeg = with_comment(jpeg, &identity_comment(identity));
        }
        crate::private_files::create_dir(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let path = snapshot_path(&self.dir, msg.event);
        let tmp = path.with_extension("jpg.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&tmp)
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        file.write_all(&jpeg)
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("renaming to {}: {e}", path.display()))
    }
}

impl Actor for SnapshotKeeper {
    type Context = SyncContext<Self>;
}

impl Handler<TakeSnapshot> for SnapshotKeeper {
    type Result = ();

    fn handle(&mut self, msg: TakeSnapshot, _: &mut SyncContext<Self>) {
        if let Err(e) = self.write(&msg) {
            metrics().snapshot_errors.inc();
            tracing::error!(event = %msg.event, error = %e, "event snapshot not kept");
        }
        if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            self.last_prune = Some(std::time::Instant::now());
            if let Err(e) = prune(&self.dir, self.retention) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "pruning old snapshots");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_erased_identitys_snapshots_go_and_others_stay() {
        let dir = std::env::temp_dir().join(format!("fs-snap-forget-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let jpeg = crate::imageio::encode_jpeg(&RgbImage::new(16, 16), 80).unwrap();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let write = |identity: Option<Uuid>| {
            let event = Uuid::now_v7();
            let bytes = match identity {
                Some(i) => with_comment(jpeg.clone(), &identity_comment(i)),
                None => jpeg.clone(),
            };
            std::fs::write(snapshot_path(&dir, event), bytes).unwrap();
            event
        };
        let (a1, a2, b, unknown) = (
            write(Some(alice)),
            write(Some(alice)),
            write(Some(bob)),
            write(None),
        );
        // the comment keeps the file a JPEG
        image::load_from_memory(&std::fs::read(snapshot_path(&dir, a1)).unwrap()).unwrap();
        // a1 named by the outbox, a2 found by its comment
        assert_eq!(forget_identity(&dir, alice, &[a1]).unwrap(), 2);
        for (event, kept) in [(a1, false), (a2, false), (b, true), (unknown, true)] {
            assert_eq!(snapshot_path(&dir, event).exists(), kept, "{event}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_snapshot_is_shrunk_to_fit_and_boxes_the_face() {
        let grey = RgbImage::from_pixel(1920, 1080, Rgb([128, 128, 128]));
        let frame = I420Frame::from_rgb(&grey);
        let bbox = BBox {
            x: 900.0,
            y: 300.0,
            w: 60.0,
            h: 75.0,
        };
        let rgb = render(&frame, bbox, 640);
        assert_eq!((rgb.width(), rgb.height()), (640, 360));
        // the box's corner (300, 100) is green, its inside stays grey
        let corner = rgb.get_pixel(300, 100);
        assert!(corner[1] > 200 && corner[0] < 30, "{corner:?}");
        let inside = rgb.get_pixel(310, 112);
        assert!(
            (inside[0] as i32 - inside[1] as i32).abs() < 10,
            "{inside:?}"
        );
        // a frame already small enough is not shrunk
        let small = I420Frame::from_rgb(&RgbImage::new(320, 240));
        assert_eq!(render(&small, bbox, 640).dimensions(), (320, 240));
    }

    #[test]
    fn old_snapshots_are_pruned_and_other_files_left_alone() {
        let dir = std::env::temp_dir().join(format!("facestream-snapshots-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let keep = snapshot_path(&dir, Uuid::now_v7());
        std::fs::write(&keep, b"jpeg").unwrap();
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        assert_eq!(prune(&dir, Duration::from_secs(60)).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(prune(&dir, Duration::from_millis(1)).unwrap(), 1);
        assert!(!keep.exists());
        assert!(dir.join("notes.txt").exists());
        std::fs::remove_dir_all(dir).ok();
    }
}
