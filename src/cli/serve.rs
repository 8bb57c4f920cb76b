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
use facestream::engine::EngineSetup;
use facestream::events::bus;
use facestream::events::outbox::Outbox;
use facestream::pipeline::Pipeline;
use facestream::service::{self, Retention};
use facestream::shutdown::Shutdown;
use facestream::simulate::demo;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    // The service's one stop token; the guard requests it on every way out of `run`
    // (an error returned early included), so no thread or task outlives the service.
    let shutdown = Shutdown::new();
    let _stop_all = shutdown.guard();
    // backends and models: resolved and verified once, for the gallery and the pipeline
    let setup = EngineSetup::resolve(&config.engine())?;
    let service = Arc::new(super::open_gallery(config, &setup)?);
    service::watch_gallery(&service, shutdown.clone());
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
        let history = service::open_history(
            &config.history,
            &config.gallery,
            &service,
            &config.cluster.node_id(),
        )?;
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
        service::follow_history(h, shutdown.clone());
    }
    let snapshots = config
        .events
        .snapshots
        .enabled
        .then(|| std::path::PathBuf::from(&config.events.snapshots.dir));
    service::keep_retention(
        Retention {
            review: review.clone().map(|store| (store, config.review.clone())),
            history: history.clone(),
            snapshots: snapshots.clone().map(|dir| {
                (
                    dir,
                    std::time::Duration::from_secs(config.events.snapshots.retention_s),
                )
            }),
        },
        shutdown.clone(),
    );
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
        service::forget_erased_identities(&service, &events, history.clone(), snapshots.clone());
        service::replay_erasures(&service, &outbox)?;
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
            snapshots,
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
