//! Gallery behaviour across a model change: templates of another model are never matched,
//! the operator is told who needs re-enrolment, and kept crops are re-embedded.

mod common;

use std::sync::Arc;

use chrono::Utc;
use facestream::engine::{primary_face, FaceEngine};
use facestream::gallery::service::{FaceChoice, GalleryService, ServiceError};
use facestream::gallery::sqlite::SqliteStore;
use facestream::gallery::{GalleryStore, NewIdentity, Template};
use facestream::stages::matching::Decision;
use uuid::Uuid;

#[test]
fn a_model_change_is_reported_and_kept_crops_are_reembedded() {
    let config = common::config();
    let dir = common::temp_dir("gallery-model-change");
    let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(&dir.join("g.db")).unwrap());
    let mut engine = FaceEngine::open(&config.engine()).unwrap();
    let obama = engine.load(&common::fixture("obama.jpg")).unwrap();
    let (faces, _) = engine.analyze(&obama).unwrap();
    let face = primary_face(&faces).unwrap().clone();

    // Two people enrolled under an older model: one kept the crop, one did not.
    let with_crop = store
        .create_identity(NewIdentity {
            name: "Obama".into(),
            metadata: None,
        })
        .unwrap()
        .id;
    let without = store
        .create_identity(NewIdentity {
            name: "No crop".into(),
            metadata: None,
        })
        .unwrap()
        .id;
    for (identity, crop) in [(with_crop, Some(face.aligned.rgb.clone())), (without, None)] {
        store
            .add_template(&Template {
                id: Uuid::now_v7(),
                identity_id: identity,
                model: "oldnet@2019".into(),
                embedding: vec![0.5; 64],
                quality: 0.9,
                source: "photo.jpg".into(),
                created: Utc::now(),
                crop,
            })
            .unwrap();
    }
    let service = GalleryService::new(
        store.clone(),
        engine,
        config.matching.clone(),
        config.gallery.clone(),
        0.363,
    )
    .unwrap();
    // Old-model templates are not in the index: nothing matches yet.
    assert_eq!(service.templates(), 0);
    let probe = image::open(common::fixture("obama2.jpg"))
        .unwrap()
        .to_rgb8();
    assert!(matches!(
        service.search(&probe, 3).unwrap()[0].decision,
        Decision::Unknown { .. }
    ));
    let stale = store.stale_identities(service.model()).unwrap();
    assert_eq!(stale.len(), 2);

    let (done, missing) = service.reembed_stale().unwrap();
    assert_eq!((done, missing), (1, 1));
    assert_eq!(service.templates(), 1);
    match &service.search(&probe, 3).unwrap()[0].decision {
        Decision::Match { identity, .. } => assert_eq!(*identity, with_crop),
        other => panic!("{other:?}"),
    }
    // Idempotent: a second run adds nothing.
    assert_eq!(service.reembed_stale().unwrap(), (0, 1));
    let _ = std::fs::remove_dir_all(dir);
}

/// A gallery service on its own connection to the SQLite file at `db`.
fn service_on(db: &std::path::Path, config: &facestream::config::Config) -> GalleryService {
    let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(db).unwrap());
    GalleryService::new(
        store,
        FaceEngine::open(&config.engine()).unwrap(),
        config.matching.clone(),
        config.gallery.clone(),
        0.363,
    )
    .unwrap()
}

/// `facestream serve` and `facestream enroll` are two processes on one SQLite gallery:
/// here two services on two connections to the same file. What one writes, the other
/// sees after `refresh_if_changed` (which `serve` runs every second) — an enrolment
/// starts matching, an erasure stops matching.
#[test]
fn another_process_enrolling_or_erasing_is_seen_by_the_running_service() {
    let config = common::config();
    let dir = common::temp_dir("gallery-two-processes");
    let serving = service_on(&dir.join("g.db"), &config);
    let cli = service_on(&dir.join("g.db"), &config);
    let probe = image::open(common::fixture("obama2.jpg"))
        .unwrap()
        .to_rgb8();
    let decision = |s: &GalleryService| s.search(&probe, 3).unwrap()[0].decision.clone();
    assert!(matches!(decision(&serving), Decision::Unknown { .. }));
    assert!(
        !serving.refresh_if_changed().unwrap(),
        "nothing changed yet"
    );

    let obama = cli
        .store()
        .create_identity(NewIdentity {
            name: "Obama".into(),
            metadata: None,
        })
        .unwrap()
        .id;
    cli.enroll_file(obama, &common::fixture("obama.jpg"), FaceChoice::Only)
        .unwrap();
    assert!(serving.refresh_if_changed().unwrap());
    match decision(&serving) {
        Decision::Match { identity, .. } => assert_eq!(identity, obama),
        other => panic!("{other:?}"),
    }
    assert!(!serving.refresh_if_changed().unwrap(), "seen once");
    // its own writes need no refresh
    serving
        .enroll_file(obama, &common::fixture("obama3.jpg"), FaceChoice::Only)
        .unwrap();
    assert_eq!(serving.templates(), 2);

    cli.delete_identity(obama).unwrap();
    assert!(serving.refresh_if_changed().unwrap());
    assert!(matches!(decision(&serving), Decision::Unknown { .. }));
    assert_eq!(serving.templates(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// An erasure marks the person before anything is deleted: while the work before the
/// deletion runs (the appearances' erasure) they already match nobody and the register
/// names them erased. When that work fails, nothing is erased: they match again and the
/// register lets them go. A done erasure is in the log, which a second service on the
/// same file applies (its hook sees it) when it follows the log.
#[test]
fn an_erasure_marks_first_and_undoes_the_mark_when_it_fails() {
    let config = common::config();
    let dir = common::temp_dir("gallery-erasure-mark");
    let service = service_on(&dir.join("g.db"), &config);
    let other = service_on(&dir.join("g.db"), &config);
    let probe = image::open(common::fixture("obama2.jpg"))
        .unwrap()
        .to_rgb8();
    let decision = |s: &GalleryService| s.search(&probe, 3).unwrap()[0].decision.clone();
    let obama = service
        .store()
        .create_identity(NewIdentity {
            name: "Obama".into(),
            metadata: None,
        })
        .unwrap()
        .id;
    service
        .enroll_file(obama, &common::fixture("obama.jpg"), FaceChoice::Only)
        .unwrap();
    assert!(matches!(decision(&service), Decision::Match { .. }));

    let failed = service.erase_identity(obama, true, || {
        assert!(service.erasures().is_erased(obama));
        assert!(matches!(decision(&service), Decision::Unknown { .. }));
        Err::<(), _>(ServiceError::ErasureLog(
            "the appearances could not be erased".into(),
        ))
    });
    assert!(failed.is_err());
    assert!(!service.erasures().is_erased(obama));
    match decision(&service) {
        Decision::Match { identity, .. } => assert_eq!(identity, obama),
        other => panic!("matches again after a failed erasure: {other:?}"),
    }
    assert_eq!(service.store().erasure_head().unwrap(), 0);

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = seen.clone();
    other.on_erasure(move |e| {
        hook.lock().unwrap().push((e.identity, e.appearances));
        Ok(())
    });
    let (removed, ()) = service.erase_identity(obama, true, || Ok(())).unwrap();
    assert_eq!(removed, 1);
    assert!(matches!(decision(&service), Decision::Unknown { .. }));
    assert_eq!(other.follow_erasures().unwrap(), 1);
    assert_eq!(*seen.lock().unwrap(), [(obama, true)]);
    assert_eq!(other.erasures().get(obama), Some(true));
    assert_eq!(other.follow_erasures().unwrap(), 0, "applied once");
    let _ = std::fs::remove_dir_all(dir);
}

/// `facestream enroll` commits while `serve` rebuilds its index: every commit ends up in
/// the index, also one that lands between the rebuild's read of the templates and its
/// read of SQLite's change counter.
#[test]
fn commits_during_a_refresh_are_never_lost() {
    let config = common::config();
    let dir = common::temp_dir("gallery-concurrent-refresh");
    let serving = service_on(&dir.join("g.db"), &config);
    let model = serving.model().to_string();
    let finished = std::sync::atomic::AtomicU32::new(0);
    const WRITERS: u32 = 2;
    const EACH: u32 = 150;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (db, model, finished) = (dir.join("g.db"), model.clone(), &finished);
            s.spawn(move || {
                let store = SqliteStore::open(&db).unwrap();
                let id = store
                    .create_identity(NewIdentity {
                        name: format!("writer {w}"),
                        metadata: None,
                    })
                    .unwrap()
                    .id;
                for n in 0..EACH {
                    store
                        .add_template(&common::synthetic_template(id, &model, w * 1000 + n))
                        .unwrap();
                }
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        // the serving side refreshes as fast as it can while the writers commit
        while finished.load(std::sync::atomic::Ordering::SeqCst) < WRITERS {
            serving.refresh_if_changed().unwrap();
        }
    });
    serving.refresh_if_changed().unwrap();
    assert_eq!(
        serving.templates(),
        (WRITERS * EACH) as usize,
        "commits made during a refresh were never indexed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Uploaded images are decoded in `limits.max_concurrent_decodes` slots: with one slot, a
/// second decode waits until the first image is dropped; a request's several images take
/// their slots together.
#[test]
fn decodes_wait_for_a_free_slot() {
    let mut config = common::config();
    config.limits.max_concurrent_decodes = 1;
    let dir = common::temp_dir("gallery-decode-slots");
    let service = Arc::new(service_on(&dir.join("g.db"), &config));
    let bytes = std::fs::read(common::fixture("obama.jpg")).unwrap();
    let first = service.decode(&bytes, "first").unwrap();
    assert_eq!(service.decodes_in_use(), 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = {
        let (service, bytes) = (service.clone(), bytes.clone());
        std::thread::spawn(move || {
            let second = service.decode(&bytes, "second").unwrap();
            tx.send(second.width()).unwrap();
        })
    };
    // it cannot finish while the only slot is held
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(rx.try_recv().is_err(), "decoded without a free slot");
    let width = first.width();
    drop(first);
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap(),
        width
    );
    waiting.join().unwrap();
    assert_eq!(service.decodes_in_use(), 0);
    // two images of one request, one slot configured: taken together, not deadlocked
    let both = service.decode_all(&[(&bytes, "a"), (&bytes, "b")]).unwrap();
    assert_eq!(service.decodes_in_use(), 2);
    drop(both);
    assert_eq!(service.decodes_in_use(), 0);
    // a bad image gives its slot back
    assert!(service.decode(b"not an image", "junk").is_err());
    assert_eq!(service.decodes_in_use(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A low-quality enrolment face is accepted with a weight and a reason by default, and
/// refused with the limit named when `gallery.min_enroll_quality` is above it; a refusal
/// leaves what was enrolled before untouched.
#[test]
fn poor_enrolment_faces_count_less_or_are_refused_with_the_reason() {
    let mut config = common::config();
    let dir = common::temp_dir("gallery-enrol-quality");
    let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(&dir.join("g.db")).unwrap());
    let photo = image::open(common::fixture("obama.jpg")).unwrap().to_rgb8();
    // The same photo at a surveillance camera's scale: the eyes ~15 px apart.
    let small = image::imageops::resize(
        &photo,
        photo.width() / 9,
        photo.height() / 9,
        image::imageops::FilterType::Triangle,
    );
    let obama = store
        .create_identity(NewIdentity {
            name: "Obama".into(),
            metadata: None,
        })
        .unwrap()
        .id;
    let service = |config: &facestream::config::Config| {
        GalleryService::new(
            store.clone(),
            FaceEngine::open(&config.engine()).unwrap(),
            config.matching.clone(),
            config.gallery.clone(),
            0.363,
        )
        .unwrap()
    };
    let accepting = service(&config);
    let good = accepting
        .enroll(obama, &photo, "obama.jpg", FaceChoice::Only)
        .unwrap();
    assert!(good.advice.is_none(), "{:?}", good.advice);
    assert_eq!(good.weight, good.template.quality.clamp(0.05, 1.0));
    let poor = accepting
        .enroll(obama, &small, "obama-small.jpg", FaceChoice::Only)
        .unwrap();
    assert!(poor.template.quality < good.template.quality);
    assert!(poor.weight < good.weight);
    let advice = poor.advice.unwrap_or_else(|| {
        panic!(
            "a low-quality face comes with advice (quality {} against {})",
            poor.template.quality, good.template.quality
        )
    });
    assert!(
        advice.contains("low quality") && advice.contains("size"),
        "{advice}"
    );

    config.gallery.min_enroll_quality = (poor.template.quality + good.template.quality) / 2.0;
    let strict = service(&config);
    let refused = strict
        .enroll(obama, &small, "obama-small.jpg", FaceChoice::Only)
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("gallery.min_enroll_quality") && message.contains("size"),
        "{message}"
    );
    assert_eq!(strict.templates(), 2, "the refusal removed nothing");
    strict
        .enroll(obama, &photo, "obama.jpg", FaceChoice::Only)
        .unwrap();
    assert_eq!(strict.templates(), 3);
}
