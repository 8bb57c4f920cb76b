//! `facestream serve`: the service — cameras through the streaming pipeline, identity
//! events to their endpoints, the REST API. SIGINT/SIGTERM stop it gracefully, in the
//! order [`facestream::shutdown`] describes: the API stops accepting, cameras stop,
//! frames in flight drain, open tracks are decided and their events written, deliveries
//! in flight finish (pending rows stay in the outbox). A second signal exits at once.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use facestream::api::{self, AppState};
use facestream::config::Config;
use facestream::engine::{EngineSetup, FaceEngine};
use facestream::events::bus;
use facestream::events::outbox::Outbox;
use facestream::gallery::postgres::PostgresStore;
use facestream::gallery::service::GalleryService;
use facestream::gallery::sqlite::SqliteStore;
use facestream::gallery::{GalleryStore, StoreKind};
use facestream::pipeline::Pipeline;
use facestream::shutdown::Shutdown;
use facestream::simulate::demo;

/// Open the store and build the gallery service (shared with `enroll`) on the engine
/// start-up resolved.
pub fn gallery_service(config: &Config, setup: &EngineSetup) -> anyhow::Result<GalleryService> {
    let engine = FaceEngine::new(setup)?;
    let store: Arc<dyn GalleryStore> = match config.gallery.store {
        StoreKind::Sqlite => Arc::new(
            SqliteStore::open(Path::new(&config.gallery.database))
                .with_context(|| format!("opening gallery {}", config.gallery.database))?,
        ),
        StoreKind::Postgres => {
            let store = PostgresStore::open(&config.gallery.postgres_url).with_context(|| {
                format!(
                    "opening the PostgreSQL gallery at {}",
                    facestream::redact::secrets(&config.gallery.postgres_url)
                )
            })?;
            tracing::info!(database = store.target(), "gallery of record in PostgreSQL");
            Arc::new(store)
        }
    };
    Ok(GalleryService::new(
        store,
        engine,
        config.matching.clone(),
        config.gallery.clone(),
        config.verify.threshold,
    )?)
}

/// Pick up gallery changes made elsewhere (another node, `facestream enroll`, an erasure
/// while the service runs) as soon as the store announces them and at least every
/// second, until `shutdown` is requested.
fn watch_gallery(service: &Arc<GalleryService>, shutdown: Shutdown) {
    let weak = Arc::downgrade(service);
    let _ = facestream::tasks::thread("gallery-watch", &shutdown.clone(), move || {
        let mut failing = false;
        loop {
            let Some(service) = weak.upgrade().filter(|_| !shutdown.is_requested()) else {
                return;
            };
            service.wait_for_change(std::time::Duration::from_secs(1));
            let refreshed = service.refresh_if_changed();
            // erasures made elsewhere (a failed hook says so itself; an unreachable store
            // is said by the refresh)
            if refreshed.is_ok() {
                let _ = service.follow_erasures();
            }
            match refreshed {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("gallery store reachable again; changes followed");
                }
                Ok(_) => {}
                // said once per outage, not every second
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "following gallery changes made elsewhere");
                }
                Err(_) => {}
            }
        }
    });
}

/// Erasure beyond the gallery: for each erasure of the log (made here, on another node
/// of a cluster, or while this node was down), the events this node holds that name the
/// person lose the identity or go (outbox rows and the recent events of
/// `/v1/events/recent` and stream replays), its event snapshots are deleted, and the
/// appearances recognised as the person are unlinked (kept as unknown) or, when the
/// erasure took the appearances too, deleted. Every step is idempotent: a failed one
/// fails the hook and the erasure is applied again at the next round.
fn forget_erased_identities(
    service: &Arc<GalleryService>,
    events: &facestream::events::bus::EventBus,
    history: Option<Arc<facestream::history::History>>,
    config: &Config,
) {
    let events = events.clone();
    let snapshots = config
        .events
        .snapshots
        .enabled
        .then(|| std::path::PathBuf::from(&config.events.snapshots.dir));
    service.on_erasure(move |erasure| {
        let identity = erasure.identity;
        let scrubbed = events
            .forget_identity(identity)
            .map_err(|e| format!("scrubbing the events naming it: {e}"))?;
        let deleted = match &snapshots {
            Some(dir) => facestream::pipeline::forget_snapshots(dir, identity, &scrubbed)
                .map_err(|e| format!("deleting its snapshots in {}: {e}", dir.display()))?,
            None => 0,
        };
        let (unlinked, erased) = match &history {
            Some(h) if erasure.appearances => (
                0,
                h.erase_recognised(identity)
                    .map_err(|e| format!("erasing its appearances: {e}"))?,
            ),
            Some(h) => (
                h.unlink(identity)
                    .map_err(|e| format!("unlinking its appearances: {e}"))?,
                0,
            ),
            None => (0, 0),
        };
        tracing::info!(
            %identity,
            seq = erasure.seq,
            events = scrubbed.len(),
            snapshots = deleted,
            appearances_unlinked = unlinked,
            appearances_erased = erased,
            "erasure applied on this node: no event, snapshot or appearance kept here names the person"
        );
        Ok(())
    });
}

/// How far this node applied the erasure log, kept in its outbox database (the node's own
/// durable state: a restart replays only the erasures it missed).
struct OutboxCursor(Arc<Outbox>);

impl facestream::gallery::erasure::ErasureCursor for OutboxCursor {
    fn position(&self) -> Result<i64, String> {
        Ok(self
            .0
            .erasure_position()
            .map_err(|e| e.to_string())?
            .unwrap_or(0))
    }

    fn advance(&self, seq: i64) -> Result<(), String> {
        self.0.set_erasure_position(seq).map_err(|e| e.to_string())
    }
}

/// Apply the erasure log on this node before it serves: the erasures made while it was
/// down (or since its change feed was pruned). A new outbox starts at the log's head: a
/// node with no outbox of its own holds no event of anyone.
fn replay_erasures(service: &GalleryService, outbox: &Arc<Outbox>) -> anyhow::Result<()> {
    if outbox.erasure_position()?.is_none() {
        outbox.set_erasure_position(service.store().erasure_head()?)?;
    }
    service.set_erasure_cursor(Box::new(OutboxCursor(outbox.clone())));
    match service.follow_erasures() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            erasures = n,
            "erasures made while this node was down applied before serving"
        ),
        // the gallery watcher tries again every round
        Err(e) => {
            tracing::error!(error = %e, "erasures made while this node was down: not all applied yet")
        }
    }
    Ok(())
}

/// The appearance history of `history.enabled`: in the gallery's PostgreSQL database
/// when the gallery is shared (every node writes there; each follows the others), else in
/// `history.database` on this machine.
fn open_history(
    config: &Config,
    service: &GalleryService,
) -> anyhow::Result<facestream::history::History> {
    use facestream::history::{AppearanceStore, History, PgHistory, SqliteHistory};
    let store: Box<dyn AppearanceStore> = match config.gallery.store {
        facestream::gallery::StoreKind::Postgres => Box::new(
            PgHistory::open(&config.gallery.postgres_url)
                .context("opening the appearance history in the gallery's PostgreSQL database")?,
        ),
        _ => Box::new(
            SqliteHistory::open(&config.history.database).with_context(|| {
                format!(
                    "opening the appearance history {}",
                    config.history.database.display()
                )
            })?,
        ),
    };
    Ok(History::with_store(
        store,
        &config.history,
        service.model(),
        service.dim(),
        &config.cluster.node_id(),
    )?)
}

/// A shared history: follow the appearances the other nodes record (and their deletions)
/// into this node's index, every second until `shutdown`.
fn follow_history(history: &Arc<facestream::history::History>, shutdown: Shutdown) {
    if !history.is_shared() {
        return;
    }
    let weak = Arc::downgrade(history);
    let _ = facestream::tasks::thread("history-feed", &shutdown.clone(), move || {
        let mut failing = false;
        while !shutdown.is_requested() {
            let Some(history) = weak.upgrade() else {
                return;
            };
            match history.follow() {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("appearance history reachable again; changes followed");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "following the appearances other nodes record");
                }
                Err(_) => {}
            }
            drop(history);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
}

/// How often retention runs while the service is up.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Apply `review.retention_s` (and `review.max_tracks`) and `events.snapshots.retention_s`
/// every [`RETENTION_EVERY`] on a thread of its own, until `shutdown`: kept biometric data
/// expires on schedule also when nothing new arrives (a quiet night, a camera down).
fn keep_retention(
    review: Option<Arc<facestream::review::ReviewStore>>,
    history: Option<Arc<facestream::history::History>>,
    config: &Config,
    shutdown: Shutdown,
) {
    let review = review.map(|store| (store, config.review.clone()));
    let snapshots = config.events.snapshots.enabled.then(|| {
        (
            std::path::PathBuf::from(&config.events.snapshots.dir),
            std::time::Duration::from_secs(config.events.snapshots.retention_s),
        )
    });
    if review.is_none() && snapshots.is_none() && history.is_none() {
        return;
    }
    let _ = facestream::tasks::thread("retention", &shutdown.clone(), move || loop {
        if let Some((store, rc)) = &review {
            match store.prune(chrono::Utc::now(), rc.retention_s, rc.max_tracks) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(tracks = n, "review: tracks past review.retention_s deleted");
                    if let Ok(count) = store.count() {
                        facestream::telemetry::metrics()
                            .review_tracks
                            .set(count as i64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "review: applying retention"),
            }
        }
        if let Some(h) = &history {
            match h.prune(chrono::Utc::now()) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(
                        appearances = n,
                        "history: appearances past history.retention_s deleted"
                    );
                    facestream::telemetry::metrics()
                        .history_appearances
                        .set(h.len() as i64);
                }
                Err(e) => tracing::warn!(error = %e, "history: applying retention"),
            }
        }
        if let Some((dir, retention)) = &snapshots {
            match facestream::pipeline::prune_snapshots(dir, *retention) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    snapshots = n,
                    "event snapshots past events.snapshots.retention_s deleted"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "pruning old snapshots")
                }
            }
        }
        let next = std::time::Instant::now() + RETENTION_EVERY;
        while std::time::Instant::now() < next {
            if shutdown.is_requested() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
}

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    // The service's one stop token; the guard requests it on every way out of `run`
    // (an error returned early included), so no thread or task outlives the service.
    let shutdown = Shutdown::new();
    let _stop_all = shutdown.guard();
    // backends and models: resolved and verified once, for the gallery and the pipeline
    let setup = EngineSetup::resolve(&config.engine())?;
    let service = Arc::new(gallery_service(config, &setup)?);
    watch_gallery(&service, shutdown.clone());
    let mut config = config.clone();
    let demo_wanted = config.demo.wanted(&config.cameras)
        && (config.demo.mode != demo::DemoMode::Auto
            || demo::gallery_allows_auto(&service).context("reading the gallery")?
            || {
                eprintln!(
                    "facestream: no cameras configured; the demo camera is not started because the gallery \
                     holds real identities (set demo.mode = \"on\" to force it)"
                );
                false
            });
    let _demo = if demo_wanted {
        let demo = demo::start(&config.demo, &service).context("starting the demo camera")?;
        eprintln!(
            "facestream: demo camera {} (set demo.mode = \"off\" or configure [[cameras]] to disable)",
            demo.camera.url
        );
        config.cameras.push(demo.camera.clone());
        Some(demo)
    } else {
        None
    };
    let config = &config;
    let keys = api::effective_keys(&config.api).context("preparing API keys")?;
    // a bad certificate or key stops start-up here, before any camera starts
    let tls = config.api.tls().context("preparing HTTPS for the API")?;
    if config.api.keys.is_empty() {
        eprintln!(
            "facestream: no api.keys configured; admin key in {} (send it as `Authorization: Bearer <key>`)",
            config.api.generated_key_file
        );
    }
    let review = if config.review.enabled {
        let store =
            facestream::review::ReviewStore::open(&config.review.database).with_context(|| {
                format!(
                    "opening the review store {}",
                    config.review.database.display()
                )
            })?;
        store
            .prune(
                chrono::Utc::now(),
                config.review.retention_s,
                config.review.max_tracks,
            )
            .context("applying review.retention_s at start")?;
        facestream::telemetry::metrics()
            .review_tracks
            .set(store.count().context("counting kept unknown tracks")? as i64);
        Some(Arc::new(store))
    } else {
        None
    };
    let history = if config.history.enabled {
        let history = open_history(config, &service)?;
        history
            .prune(chrono::Utc::now())
            .context("applying history.retention_s at start")?;
        facestream::telemetry::metrics()
            .history_appearances
            .set(history.len() as i64);
        tracing::info!(
            appearances = history.len(),
            database = %config.history.database.display(),
            "appearance history on"
        );
        Some(Arc::new(history))
    } else {
        None
    };
    if let Some(h) = &history {
        follow_history(h, shutdown.clone());
    }
    keep_retention(review.clone(), history.clone(), config, shutdown.clone());
    if config.events.snapshots.enabled {
        let dir = Path::new(&config.events.snapshots.dir);
        facestream::private_files::create_dir(dir)
            .with_context(|| format!("creating the snapshot folder {}", dir.display()))?;
        let removed = facestream::pipeline::prune_snapshots(
            dir,
            std::time::Duration::from_secs(config.events.snapshots.retention_s),
        )
        .with_context(|| format!("applying events.snapshots.retention_s to {}", dir.display()))?;
        tracing::info!(removed, dir = %dir.display(), "event snapshots past their retention deleted");
    }
    let outbox = Arc::new(
        Outbox::open(Path::new(&config.events.outbox))
            .with_context(|| format!("opening event outbox {}", config.events.outbox))?,
    );
    // Deliveries run on a thread and runtime of their own: their outbox commits and
    // network waits never queue behind (or hold up) the camera actors and the API on
    // actix's System arbiter.
    let delivery = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("event-delivery")
        .enable_all()
        .build()
        .context("starting the event delivery runtime")?;
    actix_web::rt::System::new().block_on(async {
        shutdown.on_signals();
        // Delivery runs beside the API and stops last, once the pipeline has written its
        // last events: it then stops taking rows and finishes the deliveries in flight
        // (pending rows stay in the outbox for the next start).
        let deliveries = Shutdown::new();
        let _stop_deliveries = deliveries.guard();
        let (events, deliverers) = {
            let _on = delivery.enter();
            let store = service.store().clone();
            let announced = facestream::events::sinks::mqtt::home_assistant::Announced {
                cameras: config
                    .cameras
                    .iter()
                    .filter(|c| c.enabled)
                    .map(|c| c.id.clone())
                    .collect(),
                identities: Arc::new(move || {
                    let mut all = Vec::new();
                    loop {
                        let (page, total) = store
                            .list_identities(all.len(), 1000)
                            .map_err(|e| e.to_string())?;
                        let got = page.len();
                        all.extend(page.into_iter().map(|i| (i.id, i.name)));
                        if got == 0 || all.len() >= total {
                            return Ok(all);
                        }
                    }
                }),
                refresh: facestream::events::sinks::mqtt::home_assistant::REFRESH,
            };
            bus::start_with(
                outbox.clone(),
                &config.events,
                deliveries.clone(),
                Some(announced),
                service.erasures().clone(),
            )
        };
        forget_erased_identities(&service, &events, history.clone(), config);
        replay_erasures(&service, &outbox)?;
        let pipeline = if config.cameras.iter().any(|c| c.enabled) {
            Some(Arc::new(
                Pipeline::start(
                    &config.pipeline_setup(setup.clone()),
                    service.clone(),
                    events.clone(),
                    facestream::pipeline::Kept {
                        review: review.clone(),
                        history: history.clone(),
                    },
                    &shutdown,
                )
                .context("starting the streaming pipeline")?,
            ))
        } else {
            tracing::info!("no cameras configured; serving the API only");
            None
        };
        // With camera leases the cluster decides which cameras run here, round by round.
        let leases = match &pipeline {
            Some(pipeline) if config.cluster.camera_leases => {
                let leases = facestream::cluster::Leases::new(
                    &config.cluster,
                    &config.gallery.postgres_url,
                    pipeline.camera_ids(),
                );
                Some(facestream::tasks::task(
                    "camera-leases",
                    &shutdown,
                    leases.run(pipeline.clone(), shutdown.clone()),
                ))
            }
            _ => None,
        };
        facestream::telemetry::metrics()
            .node_info
            .get_or_create(&facestream::telemetry::NodeLabel {
                node: config.cluster.node_id(),
            })
            .set(1);
        let state = Arc::new(AppState {
            cameras: pipeline.as_ref().map(|p| p.registry()).unwrap_or_default(),
            node: config.cluster.node_id(),
            service,
            keys,
            max_body_bytes: config.api.max_body_bytes,
            top_k: config.matching.top_k,
            events,
            shutdown: shutdown.clone(),
            sessions: api::session::Sessions::new(std::time::Duration::from_secs(
                config.api.session_ttl_s,
            )),
            review: review.map(|store| (store, config.review.clone())),
            history,
            snapshots: config
                .events
                .snapshots
                .enabled
                .then(|| std::path::PathBuf::from(&config.events.snapshots.dir)),
        });
        let served = api::serve(state, &config.api, tls, shutdown.clone()).await;
        // the API also ends on its own when it fails: everything else stops with it
        shutdown.request();
        // The lease loop stops first; its connection (and so the leases) goes only once
        // the cameras have stopped, so no other node starts one while it still runs here.
        let lease_connection = match leases {
            Some(task) => task.await.ok().flatten().flatten(),
            None => None,
        };
        if let Some(pipeline) = pipeline {
            match Arc::try_unwrap(pipeline) {
                Ok(pipeline) => pipeline.shutdown(std::time::Duration::from_secs(10)).await,
                Err(_) => tracing::warn!("pipeline still shared at shutdown; not drained"),
            }
        }
        drop(lease_connection);
        deliveries.request();
        let drain = futures_util::future::join_all(deliverers);
        if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            tracing::warn!(
                "event deliveries still in flight after 10 s; they resume at next start"
            );
        }
        served.with_context(|| format!("serving the API on {}", config.api.listen))
    })?;
    delivery.shutdown_timeout(std::time::Duration::from_secs(1));
    // a background task that died stopped the service: say so in the exit status, so the
    // service manager restarts it
    if let Some(f) = facestream::tasks::failures().first() {
        eprintln!(
            "facestream: background task {} ended ({}); the service stopped",
            f.task, f.reason
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
