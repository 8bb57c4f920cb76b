//! Enrolment and search: the gallery store, its search index and the face engine together.
//!
//! Shared by the REST API and `facestream enroll`. The engine is not thread-safe, so it
//! sits behind a mutex (inference is the bottleneck either way); the index behind a
//! read-write lock (searches in parallel, writes exclusive).
//!
//! Consistency: every write holds the service's write gate across the store commit and
//! the index change, so an erasure cannot slip between an enrolment's commit and its index
//! insert (the erased person would keep matching). Searches never wait for the store: the
//! index's write lock is taken only for the in-memory change, after the commit.
//!
//! Writes made elsewhere are picked up by [`GalleryService::refresh_if_changed`], which
//! `serve` calls whenever the store announces a change and at least every second:
//! - a store with a change feed (PostgreSQL, shared by several nodes): the changes after
//!   the last one applied, in order, so a node that was cut off or started late ends up
//!   exactly where the store is (no enrolment missed, no erasure undone);
//! - SQLite, written by another process (`facestream enroll` while `serve` runs): the
//!   index is rebuilt when the store says another writer committed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use image::RgbImage;
use serde::Serialize;
use uuid::Uuid;

use super::erasure::{Erasure, ErasureCursor, Erasures, MemoryCursor};
use super::index::{IdentityHit, Scan, SearchIndex};
use super::{Change, Changes, GalleryConfig, GalleryError, GalleryStore, Template};
use crate::engine::{primary_face, EngineError, Face, FaceEngine};
use crate::imageio::ImageError;
use crate::stages::embed::cosine;
use crate::stages::matching::{decide, Decision, MatchConfig};
use crate::stages::quality::QualityClass;
use crate::stages::BBox;
use crate::vectors::pooling_weight;

/// Errors from enrolment and search.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("enrolment photo must show exactly one face; found {found} (choose one with face=largest or face=center)")]
    FaceCount { found: usize },
    #[error(
        "face={choice}: {found} faces and no clear choice ({reason}); crop the photo to the person"
    )]
    FaceAmbiguous {
        choice: FaceChoice,
        found: usize,
        reason: String,
    },
    #[error("no face found in image `{0}`")]
    NoFace(&'static str),
    #[error("face engine failed: {0}")]
    Engine(String),
    #[error("busy: {0} images are being decoded (limits.max_concurrent_decodes); retry later")]
    Busy(usize),
    #[error(
        "face quality {quality:.2} is under gallery.min_enroll_quality {limit}; its weakest part is {weakest} ({value:.2}): enrol a larger, sharper, frontal, evenly lit photo"
    )]
    PoorFace {
        quality: f32,
        limit: f32,
        weakest: &'static str,
        value: f32,
    },
    /// Applying the erasure log on this node (a hook or the node's cursor failed).
    #[error("erasure log: {0}")]
    ErasureLog(String),
}

/// An enrolled face and how much it counts.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    #[serde(flatten)]
    pub template: Template,
    /// Its weight in the identity's pooled template (`gallery.pooling = "quality_mean"`):
    /// the quality score, at least [`crate::vectors::MIN_POOLING_WEIGHT`].
    pub weight: f32,
    /// Set when the face is of low quality (under `quality.high_cut`): what limits it.
    pub advice: Option<String>,
}

/// Which face of an enrolment photo is enrolled.
///
/// `Only` (the default) refuses a photo with more than one face: enrolling a bystander
/// under someone's name is the costliest mistake a gallery can make. About one ordinary
/// photo in ten holds a second face in the background; `Largest` and `Center` take the
/// main one, and still refuse when the choice is not clear ([`FaceChoice::pick`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaceChoice {
    #[default]
    Only,
    Largest,
    Center,
}

impl std::fmt::Display for FaceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaceChoice::Only => "only",
            FaceChoice::Largest => "largest",
            FaceChoice::Center => "center",
        })
    }
}

impl std::str::FromStr for FaceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "only" => Ok(FaceChoice::Only),
            "largest" => Ok(FaceChoice::Largest),
            "center" => Ok(FaceChoice::Center),
            other => Err(format!(
                "face choice {other:?} is not one of only, largest, center"
            )),
        }
    }
}

/// `Largest`: the runner-up's box must be under this fraction of the largest's area.
pub const LARGEST_MARGIN: f32 = 0.5;
/// `Center`: the runner-up's centre must be this much farther from the image centre than
/// the chosen face's, as a fraction of the image diagonal.
pub const CENTER_MARGIN: f32 = 0.1;

impl FaceChoice {
    /// The index of the face to enrol among `boxes` in a `width`×`height` image.
    pub fn pick(self, boxes: &[BBox], width: u32, height: u32) -> Result<usize, ServiceError> {
        let found = boxes.len();
        if found == 0 {
            return Err(ServiceError::FaceCount { found });
        }
        if found == 1 {
            return Ok(0);
        }
        let ambiguous = |reason: String| ServiceError::FaceAmbiguous {
            choice: self,
            found,
            reason,
        };
        // (score, index) best first: larger area, or nearer the centre
        let mut ranked: Vec<(f32, usize)> = match self {
            FaceChoice::Only => return Err(ServiceError::FaceCount { found }),
            FaceChoice::Largest => boxes.iter().map(|b| -b.area()).zip(0..).collect(),
            FaceChoice::Center => {
                let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
                boxes
                    .iter()
                    .map(|b| {
                        let [x, y] = b.centre();
                        (x - cx).hypot(y - cy)
                    })
                    .zip(0..)
                    .collect()
            }
        };
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ((best, i), (second, _)) = (ranked[0], ranked[1]);
        match self {
            FaceChoice::Largest if -second > LARGEST_MARGIN * -best => Err(ambiguous(format!(
                "the second largest face is {:.0} % of the largest's area; at most {:.0} % leaves a clear choice",
                100.0 * second / best,
                100.0 * LARGEST_MARGIN
            ))),
            FaceChoice::Center
                if second - best < CENTER_MARGIN * (width as f32).hypot(height as f32) =>
            {
                Err(ambiguous(format!(
                    "two faces are about as near the centre ({best:.0} and {second:.0} px); \
                     one must be nearer by {:.0} % of the image diagonal",
                    100.0 * CENTER_MARGIN
                )))
            }
            _ => Ok(i),
        }
    }
}

/// How long a request waits for a decode slot before it is answered 503.
const DECODE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Counting slots for decoded uploads.
struct DecodeSlots {
    used: Mutex<usize>,
    freed: std::sync::Condvar,
    capacity: usize,
}

/// A decoded upload, holding its slot until dropped.
pub struct Decoded<'a> {
    image: RgbImage,
    slots: &'a DecodeSlots,
}

impl std::ops::Deref for Decoded<'_> {
    type Target = RgbImage;
    fn deref(&self) -> &RgbImage {
        &self.image
    }
}

impl Drop for Decoded<'_> {
    fn drop(&mut self) {
        let mut used = self.slots.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= 1;
        self.slots.freed.notify_all();
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Image(i) => ServiceError::Image(i),
            other => ServiceError::Engine(other.to_string()),
        }
    }
}

/// A face found in a search image, with its candidates and the decision.
#[derive(Debug, Clone, Serialize)]
pub struct SearchFace {
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub detector_score: f32,
    pub quality: f32,
    pub decision: Decision,
    pub candidates: Vec<Candidate>,
}

/// One identity in a result.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub identity: Uuid,
    pub name: String,
    pub face: Uuid,
    pub score: f32,
}

/// 1:1 comparison result.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub similarity: f32,
    pub threshold: f32,
    pub same: bool,
    pub faces_a: usize,
    pub faces_b: usize,
}

/// The gallery service.
pub struct GalleryService {
    store: Arc<dyn GalleryStore>,
    index: RwLock<SearchIndex>,
    engine: Mutex<FaceEngine>,
    matching: MatchConfig,
    gallery: GalleryConfig,
    verify_threshold: f32,
    model: String,
    limits: crate::imageio::LimitsConfig,
    /// The write gate, and how far the index follows the store.
    writes: Mutex<Follow>,
    /// Bumped when a local write takes the gate and again when it lets it go: a feed read
    /// made without the gate is applied only if no local write began or ended meanwhile.
    local_writes: std::sync::atomic::AtomicU64,
    /// Called with each erasure of the log, whether erased here or on another node:
    /// what the rest of the service holds about the person goes too.
    erasure_hooks: RwLock<Vec<ErasureHook>>,
    /// The identities erased or being erased, for every writer to check.
    erasures: Arc<Erasures>,
    /// How far this node applied the erasure log; the lock also makes one follower at a
    /// time.
    erasure_cursor: Mutex<Box<dyn ErasureCursor>>,
    decode_slots: DecodeSlots,
}

/// See [`GalleryService::on_erasure`]: an error leaves the erasure to be applied again
/// (hooks are idempotent).
pub type ErasureHook = Arc<dyn Fn(&Erasure) -> Result<(), String> + Send + Sync>;

/// Erasure-log rows read at once.
const ERASURE_BATCH: usize = 1000;

/// The write gate held by a local write ([`GalleryService::write_gate`]).
struct WriteGate<'a> {
    _follow: std::sync::MutexGuard<'a, Follow>,
    local_writes: &'a std::sync::atomic::AtomicU64,
}

impl Drop for WriteGate<'_> {
    fn drop(&mut self) {
        self.local_writes.fetch_add(1, Ordering::SeqCst);
    }
}

/// How far the index is current with the store's changes made elsewhere.
#[derive(Debug, Clone, Copy)]
enum Follow {
    /// The store's `external_version` when the index was last (re)built.
    Version(Option<i64>),
    /// The last change-feed position applied.
    Feed(i64),
}

/// Changes read from the feed at once.
const FEED_BATCH: usize = 10_000;

impl GalleryService {
    /// Build the index from the store for the engine's model.
    pub fn new(
        store: Arc<dyn GalleryStore>,
        engine: FaceEngine,
        matching: MatchConfig,
        gallery: GalleryConfig,
        verify_threshold: f32,
    ) -> Result<GalleryService, ServiceError> {
        let model = engine.model_id().to_string();
        let matching = engine.calibrate(&matching);
        let limits = engine.limits().clone();
        let limits_capacity = limits.max_concurrent_decodes.max(1);
        let loading = std::time::Instant::now();
        let (templates, follow) = match store.snapshot(&model)? {
            Some((templates, position)) => (templates, Follow::Feed(position)),
            None => {
                let version = store.external_version()?;
                (store.templates_for_model(&model)?, Follow::Version(version))
            }
        };
        let index = SearchIndex::build(&model, 128, gallery.pooling, &templates)?;
        drop(templates);
        let erasure_head = store.erasure_head()?;
        let stale = store.stale_identities(&model)?;
        if !stale.is_empty() {
            tracing::warn!(
                count = stale.len(),
                model = %model,
                "identities enrolled with another model need re-enrolment (GET /v1/gallery/stale)"
            );
        }
        tracing::info!(
            templates = index.len(),
            model = %model,
            seconds = loading.elapsed().as_secs_f32(),
            "gallery index built"
        );
        Ok(GalleryService {
            store,
            index: RwLock::new(index),
            engine: Mutex::new(engine),
            matching,
            gallery,
            verify_threshold,
            model,
            limits,
            writes: Mutex::new(follow),
            local_writes: std::sync::atomic::AtomicU64::new(0),
            erasure_hooks: RwLock::new(Vec::new()),
            erasures: Arc::new(Erasures::default()),
            erasure_cursor: Mutex::new(Box::new(MemoryCursor::at(erasure_head))),
            decode_slots: DecodeSlots {
                used: Mutex::new(0),
                freed: std::sync::Condvar::new(),
                capacity: limits_capacity,
            },
        })
    }

    /// Bring the index up to the store's changes made elsewhere (another node through the
    /// change feed, another process on the same SQLite file). Returns whether the index
    /// changed.
    pub fn refresh_if_changed(&self) -> Result<bool, ServiceError> {
        let mut follow = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        match *follow {
            Follow::Version(seen) => {
                let Some(now) = self.store.external_version()? else {
                    return Ok(false);
                };
                if seen == Some(now) {
                    return Ok(false);
                }
                // The write gate is held: no write of this process falls between the
                // read and the swap. The version was read before the templates: a commit
                // of another process after it is either in this read or makes the next
                // check differ, never lost between the two reads.
                let templates = self.store.templates_for_model(&self.model)?;
                self.replace_index(&templates)?;
                *follow = Follow::Version(Some(now));
                tracing::info!(
                    templates = templates.len(),
                    "gallery changed by another process: index rebuilt"
                );
                Ok(true)
            }
            Follow::Feed(start) => {
                // The feed is read without the write gate, so enrolments and erasures of
                // this node never wait on the watcher's network round trip (nor on a
                // database that stopped answering). A read is applied under the gate,
                // and only if no local write began or ended while it was made: otherwise
                // it could bring back a face erased here meanwhile, so it is read again.
                drop(follow);
                let mut after = start;
                let mut applied = 0;
                loop {
                    let writes_before = self.local_writes.load(Ordering::SeqCst);
                    let read = self.store.changes_since(after, &self.model, FEED_BATCH)?;
                    let mut follow = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                    let moved = !matches!(*follow, Follow::Feed(p) if p == after);
                    if moved || self.local_writes.load(Ordering::SeqCst) != writes_before {
                        if let Follow::Feed(p) = *follow {
                            after = p;
                        }
                        continue;
                    }
                    match read {
                        Changes::Gap => {
                            let Some((templates, position)) = self.store.snapshot(&self.model)?
                            else {
                                return Ok(false);
                            };
                            self.replace_index(&templates)?;
                            *follow = Follow::Feed(position);
                            tracing::warn!(
                                after,
                                position,
                                templates = templates.len(),
                                "gallery change feed pruned past this node's position: index rebuilt"
                            );
                            return Ok(true);
                        }
                        Changes::Since(changes) => {
                            let Some(&(last, _)) = changes.last() else {
                                break;
                            };
                            applied += self.apply(&changes)?;
                            after = last;
                            *follow = Follow::Feed(after);
                            if changes.len() < FEED_BATCH {
                                break;
                            }
                        }
                    }
                }
                if applied > 0 {
                    tracing::info!(
                        applied,
                        position = after,
                        "gallery changes made elsewhere applied to the index"
                    );
                }
                Ok(applied > 0)
            }
        }
    }

    /// Apply feed changes to the index (idempotent: this node's own writes come back
    /// through the feed too). Returns how many changed it.
    fn apply(&self, changes: &[(i64, Change)]) -> Result<usize, ServiceError> {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let mut applied = 0;
        for (_, change) in changes {
            let changed = match change {
                // a face added elsewhere to a person being erased here stays out
                Change::TemplateAdded(Some(t))
                    if !index.contains_template(t.id)
                        && !self.erasures.is_erased(t.identity_id) =>
                {
                    index.insert(t.identity_id, t.id, &t.model, &t.embedding, t.quality)?;
                    true
                }
                Change::TemplateRemoved(id) => index.remove_template(*id) > 0,
                Change::IdentityRemoved(id) => index.remove_identity(*id) > 0,
                Change::TemplateAdded(_) | Change::IdentityNamed(_) => false,
            };
            applied += usize::from(changed);
        }
        Ok(applied)
    }

    /// Build a new index from `templates` and put it in place of the current one
    /// (searches go on with the old one meanwhile).
    fn replace_index(&self, templates: &[Template]) -> Result<(), ServiceError> {
        let (dim, pooling) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            (index.dim(), index.pooling())
        };
        let fresh = SearchIndex::build(&self.model, dim, pooling, templates)?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Run `hook` with every erasure of the log this node applies from now on
    /// ([`GalleryService::follow_erasures`]): made here or on another node, while this
    /// one ran or before it started. It runs outside every gallery lock.
    pub fn on_erasure(
        &self,
        hook: impl Fn(&Erasure) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.erasure_hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(hook));
    }

    /// The identities erased or being erased: every writer downstream of recognition
    /// checks it.
    pub fn erasures(&self) -> &Arc<Erasures> {
        &self.erasures
    }

    /// Keep how far this node applied the erasure log in `cursor` (durable, for a
    /// service), instead of in memory from the log's head at open.
    pub fn set_erasure_cursor(&self, cursor: Box<dyn ErasureCursor>) {
        *self
            .erasure_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = cursor;
    }

    /// Apply the erasure log past this node's cursor, oldest first: each identity is
    /// marked erased, taken out of the index, and handed to every erasure hook; the
    /// cursor moves past it once every hook succeeded. A hook that fails stops here (it
    /// is logged): the next call applies that erasure again. How many were applied.
    pub fn follow_erasures(&self) -> Result<usize, ServiceError> {
        let cursor = self
            .erasure_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut at = cursor.position().map_err(ServiceError::ErasureLog)?;
        let mut applied = 0;
        loop {
            let batch = self.store.erasures_since(at, ERASURE_BATCH)?;
            let n = batch.len();
            for erasure in batch {
                self.erasures.mark(erasure.identity, erasure.appearances);
                self.index
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove_identity(erasure.identity);
                let hooks = self
                    .erasure_hooks
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                for hook in &hooks {
                    if let Err(e) = hook(&erasure) {
                        tracing::error!(identity = %erasure.identity, seq = erasure.seq, error = %e,
                            "erasure not yet applied on this node; tried again at the next round");
                        return Err(ServiceError::ErasureLog(e));
                    }
                }
                cursor
                    .advance(erasure.seq)
                    .map_err(ServiceError::ErasureLog)?;
                at = erasure.seq;
                applied += 1;
            }
            if n < ERASURE_BATCH {
                return Ok(applied);
            }
        }
    }

    /// Take the write gate: held across a store commit and the index change that follows.
    fn write_gate(&self) -> WriteGate<'_> {
        let follow = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        self.local_writes.fetch_add(1, Ordering::SeqCst);
        WriteGate {
            _follow: follow,
            local_writes: &self.local_writes,
        }
    }

    /// Block until the store announces a change or `timeout` passes.
    pub fn wait_for_change(&self, timeout: std::time::Duration) {
        self.store.wait_for_change(timeout);
    }

    pub fn store(&self) -> &Arc<dyn GalleryStore> {
        &self.store
    }

    /// Whether enrolled faces keep their aligned crop (`gallery.keep_crops`).
    pub fn keeps_crops(&self) -> bool {
        self.gallery.keep_crops
    }

    /// `gallery.min_enroll_quality`: faces under it are not enrolled, wherever they come
    /// from (a photo, the review queue).
    pub fn min_enroll_quality(&self) -> f32 {
        self.gallery.min_enroll_quality
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn templates(&self) -> usize {
        self.index.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn analyze(&self, image: &RgbImage) -> Result<Vec<Face>, ServiceError> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        Ok(engine.analyze(image)?.0)
    }

    /// Decode an uploaded image with the engine's limits, in one of
    /// `limits.max_concurrent_decodes` slots (held until the result is dropped; waits up
    /// to 30 s for one, then [`ServiceError::Busy`]).
    pub fn decode(&self, bytes: &[u8], label: &str) -> Result<Decoded<'_>, ServiceError> {
        Ok(self
            .decode_all(&[(bytes, label)])?
            .pop()
            .expect("one image in, one out"))
    }

    /// Decode several uploads of one request, their slots taken at once (two requests
    /// that each need two slots cannot hold one each and wait for each other).
    pub fn decode_all(&self, uploads: &[(&[u8], &str)]) -> Result<Vec<Decoded<'_>>, ServiceError> {
        let slots = &self.decode_slots;
        let n = uploads.len();
        {
            let capacity = slots.capacity.max(n);
            let used = slots.used.lock().unwrap_or_else(|p| p.into_inner());
            let (mut used, _) = slots
                .freed
                .wait_timeout_while(used, DECODE_WAIT, |u| *u + n > capacity)
                .unwrap_or_else(|p| p.into_inner());
            if *used + n > capacity {
                return Err(ServiceError::Busy(slots.capacity));
            }
            *used += n;
        }
        // From here each slot is released by its `Decoded`'s drop, also on error.
        let mut out: Vec<Decoded<'_>> = (0..n)
            .map(|_| Decoded {
                image: RgbImage::new(0, 0),
                slots,
            })
            .collect();
        for (decoded, (bytes, label)) in out.iter_mut().zip(uploads) {
            // Limits are copied at construction: decoding never waits for the engine lock.
            decoded.image = crate::imageio::decode_image(bytes, label, &self.limits)?;
        }
        Ok(out)
    }

    /// Decode slots in use now.
    pub fn decodes_in_use(&self) -> usize {
        *self
            .decode_slots
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Enrol the face of `image` that `choice` names to `identity`: store first, then
    /// index.
    pub fn enroll(
        &self,
        identity: Uuid,
        image: &RgbImage,
        source: &str,
        choice: FaceChoice,
    ) -> Result<Enrolled, ServiceError> {
        self.store.get_identity(identity)?;
        let faces = self.analyze(image)?;
        let boxes: Vec<BBox> = faces.iter().map(|f| f.detection.bbox).collect();
        let face = &faces[choice.pick(&boxes, image.width(), image.height())?];
        let (weakest, value) = face.quality.components.weakest();
        if face.quality.score < self.gallery.min_enroll_quality {
            return Err(ServiceError::PoorFace {
                quality: face.quality.score,
                limit: self.gallery.min_enroll_quality,
                weakest,
                value,
            });
        }
        let advice = (face.quality.class == QualityClass::Low).then(|| {
            format!(
                "low quality ({:.2}; weakest part: {weakest} {value:.2}): this face counts less in the identity's template; a larger, sharper, frontal photo would count fully",
                face.quality.score
            )
        });
        let template = Template {
            id: Uuid::now_v7(),
            identity_id: identity,
            model: self.model.clone(),
            embedding: face.embedding.clone(),
            quality: face.quality.score,
            source: source.chars().take(200).collect(),
            created: Utc::now(),
            crop: self.gallery.keep_crops.then(|| face.aligned.rgb.clone()),
        };
        let _gate = self.write_gate();
        self.store.add_template(&template)?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.insert(
            identity,
            template.id,
            &template.model,
            &template.embedding,
            template.quality,
        )?;
        Ok(Enrolled {
            weight: pooling_weight(template.quality),
            template,
            advice,
        })
    }

    /// Enrol the chosen face of the photo at `path` (read with the configured limits;
    /// the path is the template's source label).
    pub fn enroll_file(
        &self,
        identity: Uuid,
        path: &std::path::Path,
        choice: FaceChoice,
    ) -> Result<Enrolled, ServiceError> {
        let image = crate::imageio::load_image(path, &self.limits)?;
        self.enroll(identity, &image, &path.display().to_string(), choice)
    }

    /// Every identity's id by name, read page by page.
    pub fn identities_by_name(
        &self,
    ) -> Result<std::collections::HashMap<String, Uuid>, ServiceError> {
        let mut names = std::collections::HashMap::new();
        let mut offset = 0;
        loop {
            let (page, total) = self.store.list_identities(offset, 1000)?;
            let got = page.len();
            offset += got;
            names.extend(page.into_iter().map(|i| (i.name, i.id)));
            if got == 0 || offset >= total {
                return Ok(names);
            }
        }
    }

    /// Add a template made elsewhere (a migration, another node): it must be of this
    /// gallery's model and dimension.
    pub fn import_template(&self, template: &Template) -> Result<(), ServiceError> {
        self.import_templates(std::slice::from_ref(template))
    }

    /// Add templates made elsewhere, all or none: each must be of this gallery's model
    /// and dimension; they are stored in one transaction, then indexed.
    pub fn import_templates(&self, templates: &[Template]) -> Result<(), ServiceError> {
        let _gate = self.write_gate();
        let dim = self.index.read().unwrap_or_else(|p| p.into_inner()).dim();
        for template in templates {
            self.check_importable(template, dim)?;
        }
        self.store.add_templates(templates)?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for template in templates {
            index.insert(
                template.identity_id,
                template.id,
                &template.model,
                &template.embedding,
                template.quality,
            )?;
        }
        Ok(())
    }

    fn check_importable(&self, template: &Template, dim: usize) -> Result<(), ServiceError> {
        if template.model != self.model {
            return Err(GalleryError::Invalid {
                field: "model",
                message: format!(
                    "template is from {}, this gallery matches {}",
                    template.model, self.model
                ),
            }
            .into());
        }
        if template.embedding.len() != dim {
            return Err(GalleryError::Dimension {
                model: self.model.clone(),
                expected: dim,
                got: template.embedding.len(),
            }
            .into());
        }
        Ok(())
    }

    /// After a model change: embed the kept crops of every template made with another
    /// model and add them as templates of the current model (the old ones stay, unused,
    /// until their identity is re-enrolled or erased). Returns (re-embedded, without crop).
    pub fn reembed_stale(&self) -> Result<(usize, usize), ServiceError> {
        let (mut done, mut missing) = (0, 0);
        for stale in self.store.stale_identities(&self.model)? {
            let templates = self.store.list_templates(stale.id)?;
            let current: Vec<&Template> =
                templates.iter().filter(|t| t.model == self.model).collect();
            for old in templates.iter().filter(|t| t.model != self.model) {
                let Some(rgb) = old.crop.clone().filter(|c| c.len() == 112 * 112 * 3) else {
                    missing += 1;
                    continue;
                };
                if current.iter().any(|t| t.source == old.source) {
                    continue; // already re-embedded
                }
                let crop = crate::stages::align::AlignedFace {
                    rgb,
                    transform: crate::stages::align::Similarity::IDENTITY,
                };
                let embedding = {
                    let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
                    engine.embed_crops(&[&crop])?.remove(0)
                };
                let template = Template {
                    id: Uuid::now_v7(),
                    identity_id: stale.id,
                    model: self.model.clone(),
                    embedding,
                    quality: old.quality,
                    source: old.source.clone(),
                    created: Utc::now(),
                    crop: Some(crop.rgb),
                };
                self.import_template(&template)?;
                done += 1;
            }
        }
        Ok((done, missing))
    }

    /// Erase an identity and all its templates (right to erasure); logged.
    pub fn delete_identity(&self, identity: Uuid) -> Result<usize, ServiceError> {
        self.erase_identity(identity, false, || Ok(()))
            .map(|(removed, ())| removed)
    }

    /// Erase an identity: first marked erased and taken out of the index, so nothing new
    /// matches it and no writer names it from here on; then `before` runs (the erasure of
    /// its appearances, which needs its templates); then the identity and its templates
    /// are deleted with the erasure written to the log, in one transaction; then this
    /// node applies the log (its hooks scrub what it keeps). When `before` or the
    /// deletion fails, the mark is lifted and the templates are indexed again: nothing is
    /// erased and the request can be repeated. `appearances`: the log tells every node to
    /// delete what it recorded as the person instead of keeping it as unknown.
    pub fn erase_identity<T>(
        &self,
        identity: Uuid,
        appearances: bool,
        before: impl FnOnce() -> Result<T, ServiceError>,
    ) -> Result<(usize, T), ServiceError> {
        let was = self.erasures.get(identity);
        {
            let _gate = self.write_gate();
            self.erasures.mark(identity, appearances);
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove_identity(identity);
        }
        let done = before().and_then(|out| {
            let _gate = self.write_gate();
            Ok((self.store.delete_identity(identity, appearances)?, out))
        });
        let (removed, out) = match done {
            Ok(done) => done,
            Err(e) => {
                if was.is_none() {
                    self.erasures.lift(identity);
                    if let Err(back) = self.index_again(identity) {
                        tracing::error!(%identity, error = %back, "an erasure failed and the identity's faces could not be indexed again; they match again after the next restart");
                    }
                }
                return Err(e);
            }
        };
        tracing::info!(identity = %identity, templates = removed, "identity erased with all its templates");
        if let Err(e) = self.follow_erasures() {
            tracing::error!(identity = %identity, error = %e, "erasure: applying the erasure log on this node");
        }
        Ok((removed, out))
    }

    /// Put the templates of `identity` (current model) back into the index.
    fn index_again(&self, identity: Uuid) -> Result<(), ServiceError> {
        let _gate = self.write_gate();
        let templates = self.store.list_templates(identity)?;
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for t in templates.iter().filter(|t| t.model == self.model) {
            if !index.contains_template(t.id) {
                index.insert(t.identity_id, t.id, &t.model, &t.embedding, t.quality)?;
            }
        }
        Ok(())
    }

    pub fn delete_face(&self, identity: Uuid, face: Uuid) -> Result<(), ServiceError> {
        let _gate = self.write_gate();
        self.store.delete_template(identity, face)?;
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove_template(face);
        Ok(())
    }

    /// The embedded face of `image` that `choice` names (a search probe).
    pub fn embed_one(&self, image: &RgbImage, choice: FaceChoice) -> Result<Face, ServiceError> {
        let mut faces = self.analyze(image)?;
        let boxes: Vec<BBox> = faces.iter().map(|f| f.detection.bbox).collect();
        let i = choice.pick(&boxes, image.width(), image.height())?;
        Ok(faces.swap_remove(i))
    }

    /// Dimensions of the model's embeddings.
    pub fn dim(&self) -> usize {
        self.index.read().unwrap_or_else(|p| p.into_inner()).dim()
    }

    /// The open-set bar of `match.threshold` (raw cosine).
    pub fn match_threshold(&self) -> f32 {
        self.matching.threshold
    }

    /// Search every face of `image` against the gallery.
    pub fn search(&self, image: &RgbImage, top_k: usize) -> Result<Vec<SearchFace>, ServiceError> {
        let faces = self.analyze(image)?;
        faces
            .iter()
            .map(|f| self.search_embedding(f, top_k))
            .collect()
    }

    /// Search one embedded face.
    pub fn search_embedding(&self, face: &Face, top_k: usize) -> Result<SearchFace, ServiceError> {
        let (decision, candidates) = self.identify(&face.embedding, top_k)?;
        Ok(SearchFace {
            bbox: face.detection.bbox,
            detector_score: face.detection.score,
            quality: face.quality.score,
            decision,
            candidates,
        })
    }

    /// The open-set decision for one embedding (a face, or a track's pooled template),
    /// with the best `top_k` identities.
    pub fn identify(
        &self,
        embedding: &[f32],
        top_k: usize,
    ) -> Result<(Decision, Vec<Candidate>), ServiceError> {
        let (hits, identities): (Vec<IdentityHit>, usize) = {
            let index = self.index.read().unwrap_or_else(|p| p.into_inner());
            let scan = if self.matching.compact {
                Scan::Compact {
                    candidates: self.gallery.rerank_candidates,
                }
            } else {
                Scan::Exact
            };
            // The runner-up for the margin and the cohort for calibration too.
            (
                index.search(embedding, self.matching.hits_needed(top_k), scan)?,
                index.identities(),
            )
        };
        let decision = decide(&hits, &self.matching, identities);
        let names = self.store.names(
            &hits
                .iter()
                .take(top_k)
                .map(|h| h.identity)
                .collect::<Vec<_>>(),
        )?;
        let candidates = hits
            .iter()
            .take(top_k)
            .zip(names)
            .map(|(h, (_, name))| Candidate {
                identity: h.identity,
                name,
                face: h.template,
                score: h.score,
            })
            .collect();
        Ok((decision, candidates))
    }

    /// 1:1: the largest face of each image.
    pub fn verify(&self, a: &RgbImage, b: &RgbImage) -> Result<Verification, ServiceError> {
        let fa = self.analyze(a)?;
        let fb = self.analyze(b)?;
        let pa = primary_face(&fa).ok_or(ServiceError::NoFace("a"))?;
        let pb = primary_face(&fb).ok_or(ServiceError::NoFace("b"))?;
        let similarity = cosine(&pa.embedding, &pb.embedding);
        Ok(Verification {
            similarity,
            threshold: self.verify_threshold,
            same: similarity >= self.verify_threshold,
            faces_a: fa.len(),
            faces_b: fb.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f32, y: f32, side: f32) -> BBox {
        BBox {
            x,
            y,
            w: side,
            h: side,
        }
    }

    #[test]
    fn only_takes_a_single_face_and_refuses_several() {
        assert_eq!(
            FaceChoice::Only.pick(&[b(0., 0., 50.)], 640, 480).unwrap(),
            0
        );
        let two = [b(0., 0., 50.), b(300., 200., 200.)];
        assert!(matches!(
            FaceChoice::Only.pick(&two, 640, 480),
            Err(ServiceError::FaceCount { found: 2 })
        ));
        for choice in [FaceChoice::Only, FaceChoice::Largest, FaceChoice::Center] {
            assert!(matches!(
                choice.pick(&[], 640, 480),
                Err(ServiceError::FaceCount { found: 0 })
            ));
        }
    }

    #[test]
    fn largest_needs_a_clear_margin() {
        // runner-up at 25 % of the area: clear
        let clear = [b(0., 0., 50.), b(300., 200., 100.)];
        assert_eq!(FaceChoice::Largest.pick(&clear, 640, 480).unwrap(), 1);
        // 81 %: two people of about the same size, refused with the reason
        let close = [b(0., 0., 90.), b(300., 200., 100.)];
        match FaceChoice::Largest.pick(&close, 640, 480) {
            Err(e @ ServiceError::FaceAmbiguous { found: 2, .. }) => {
                assert!(e.to_string().contains("81 %"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn center_needs_one_face_clearly_nearest() {
        // a face at the centre and one in a corner
        let clear = [b(10., 10., 60.), b(290., 210., 60.)];
        assert_eq!(FaceChoice::Center.pick(&clear, 640, 480).unwrap(), 1);
        // two faces either side of the centre
        let split = [b(240., 210., 60.), b(340., 210., 60.)];
        assert!(matches!(
            FaceChoice::Center.pick(&split, 640, 480),
            Err(ServiceError::FaceAmbiguous { found: 2, .. })
        ));
    }

    #[test]
    fn choices_parse_from_their_names() {
        for c in [FaceChoice::Only, FaceChoice::Largest, FaceChoice::Center] {
            assert_eq!(c.to_string().parse::<FaceChoice>().unwrap(), c);
        }
        assert!("tallest".parse::<FaceChoice>().is_err());
    }
}
