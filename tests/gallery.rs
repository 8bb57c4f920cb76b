//! Gallery behaviour across a model change: templates of another model are never matched,
//! the operator is told who needs re-enrolment, and kept crops are re-embedded.

mod common;

use std::sync::Arc;

use chrono::Utc;
use facestream::engine::{primary_face, FaceEngine};
use facestream::gallery::service::GalleryService;
use facestream::gallery::sqlite::SqliteStore;
use facestream::gallery::{GalleryStore, NewIdentity, Template};
use facestream::stages::matching::Decision;
use uuid::Uuid;

#[test]
fn a_model_change_is_reported_and_kept_crops_are_reembedded() {
    let config = common::config();
    let dir = common::temp_dir("gallery-model-change");
    let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(&dir.join("g.db")).unwrap());
    let mut engine = FaceEngine::new(&config).unwrap();
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
