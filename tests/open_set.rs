//! Open-set identification with a crowded gallery: enrolled people are recognised from
//! other photos, and faces of people who are not enrolled come out as unknown at the
//! default threshold and margin.
//!
//! The fixtures hold 9 distinct real people, so the gallery is 6 real enrolled people
//! (Obama, Biden and four people from the group photo, each from one photo) plus 50
//! synthetic identities (random unit embeddings) to reach 56; the probes of non-enrolled
//! people are all real (Tom Hanks and the group photo's other two people). The LFW-scale
//! version of this test is `facestream eval lfw-identify` in BENCHMARKS.md.

mod common;

use std::sync::Arc;

use chrono::Utc;
use facestream::engine::{primary_face, FaceEngine};
use facestream::gallery::service::{FaceChoice, GalleryService};
use facestream::gallery::sqlite::SqliteStore;
use facestream::gallery::{GalleryStore, NewIdentity, Template};
use facestream::stages::matching::{Decision, UnknownReason};
use image::RgbImage;
use uuid::Uuid;

use facestream::vectors::random_unit;

/// Crop each face of the group photo (box grown by 60%) into its own image.
fn group_faces(engine: &mut FaceEngine) -> Vec<RgbImage> {
    let group = engine.load(&common::fixture("t1.jpg")).unwrap();
    let (faces, _) = engine.analyze(&group).unwrap();
    let mut faces: Vec<_> = faces.into_iter().map(|f| f.detection.bbox).collect();
    faces.sort_by(|a, b| a.x.total_cmp(&b.x));
    faces
        .iter()
        .map(|b| {
            let (cx, cy) = (b.x + b.w / 2.0, b.y + b.h / 2.0);
            let side = b.w.max(b.h) * 1.6;
            let x0 = (cx - side / 2.0).max(0.0) as u32;
            let y0 = (cy - side / 2.0).max(0.0) as u32;
            let w = (side as u32).min(group.width() - x0);
            let h = (side as u32).min(group.height() - y0);
            image::imageops::crop_imm(&group, x0, y0, w, h).to_image()
        })
        .collect()
}

#[test]
fn strangers_are_unknown_in_a_gallery_of_56_identities() {
    let config = common::config();
    let dir = common::temp_dir("open-set");
    let store: Arc<dyn GalleryStore> = Arc::new(SqliteStore::open(&dir.join("g.db")).unwrap());
    let mut engine = FaceEngine::open(&config.engine()).unwrap();
    let crops = group_faces(&mut engine);
    assert_eq!(crops.len(), 6);
    // Each crop must hold exactly its own face for enrolment.
    for c in &crops {
        assert_eq!(engine.analyze(c).unwrap().0.len(), 1);
    }
    let service = GalleryService::new(
        store.clone(),
        engine,
        config.matching.clone(),
        config.gallery.clone(),
        config.verify.threshold,
    )
    .unwrap();
    let enrol = |name: &str, image: &RgbImage| -> Uuid {
        let id = store
            .create_identity(NewIdentity {
                name: name.into(),
                metadata: None,
            })
            .unwrap()
            .id;
        service.enroll(id, image, name, FaceChoice::Only).unwrap();
        id
    };
    let load = |name: &str| image::open(common::fixture(name)).unwrap().to_rgb8();
    let obama = enrol("Barack Obama", &load("obama.jpg"));
    let biden = enrol("Joe Biden", &load("biden.jpg"));
    let group_ids: Vec<Uuid> = crops[..4]
        .iter()
        .enumerate()
        .map(|(i, c)| enrol(&format!("group {i}"), c))
        .collect();
    for k in 0..50 {
        let id = store
            .create_identity(NewIdentity {
                name: format!("synthetic {k}"),
                metadata: None,
            })
            .unwrap()
            .id;
        let template = Template {
            id: Uuid::now_v7(),
            identity_id: id,
            model: service.model().to_string(),
            embedding: random_unit(k + 1, 128),
            quality: 1.0,
            source: "synthetic".into(),
            created: Utc::now(),
            crop: None,
        };
        service.import_template(&template).unwrap();
    }
    assert_eq!(store.list_identities(0, 1000).unwrap().1, 56);
    assert_eq!(service.templates(), 56);

    let decide = |image: &RgbImage| -> Decision {
        let mut results = service.search(image, 5).unwrap();
        results.sort_by(|a, b| (b.bbox.w * b.bbox.h).total_cmp(&(a.bbox.w * a.bbox.h)));
        results.remove(0).decision
    };
    // Enrolled people, from other photos.
    for probe in [
        "obama2.jpg",
        "obama3.jpg",
        "obama_partial_face.jpg",
        "obama_partial_face2.jpg",
    ] {
        match decide(&load(probe)) {
            Decision::Match { identity, .. } => assert_eq!(identity, obama, "{probe}"),
            other => panic!("{probe}: {other:?}"),
        }
    }
    // The group's enrolled people are found in the full group photo too.
    let full = load("t1.jpg");
    let found: Vec<Uuid> = service
        .search(&full, 5)
        .unwrap()
        .into_iter()
        .filter_map(|f| match f.decision {
            Decision::Match { identity, .. } => Some(identity),
            _ => None,
        })
        .collect();
    for id in &group_ids {
        assert!(
            found.contains(id),
            "group member {id} not matched in t1.jpg"
        );
    }
    assert_eq!(
        found.len(),
        4,
        "the two non-enrolled group members must not match anyone"
    );
    // People who are not enrolled.
    let strangers = [
        load("Tom_Hanks_54745.png"),
        crops[4].clone(),
        crops[5].clone(),
    ];
    for (k, image) in strangers.iter().enumerate() {
        match decide(image) {
            Decision::Unknown { reason, .. } => assert_ne!(reason, UnknownReason::EmptyGallery),
            other => panic!("stranger {k} matched: {other:?}"),
        }
    }
    // Biden is still Biden with 55 others around him.
    assert!(
        matches!(decide(&load("biden.jpg")), Decision::Match { identity, .. } if identity == biden)
    );
    let _ = primary_face;
    let _ = std::fs::remove_dir_all(dir);
}

/// `eval lfw-identify`'s protocol end to end on real faces, in an LFW-style folder:
/// Obama (3 photos) and Biden (his photo and its mirror image) enrolled from their first
/// photo, Tom Hanks the stranger. Low-quality copies are written first and analysed too.
#[test]
fn identify_protocol_scores_three_quality_splits_on_real_faces() {
    use facestream::eval::degrade::{write_copies, LowQuality};
    use facestream::eval::identify::{evaluate, IdentifyInputs};

    let dir = common::temp_dir("identify-protocol");
    let (images, low_dir) = (dir.join("images"), dir.join("low"));
    let put = |person: &str, n: u32, image: image::DynamicImage| {
        let folder = images.join(person);
        std::fs::create_dir_all(&folder).unwrap();
        image
            .save(folder.join(format!("{person}_{n:04}.jpg")))
            .unwrap();
    };
    let open = |name: &str| image::open(common::fixture(name)).unwrap();
    for (n, f) in ["obama.jpg", "obama2.jpg", "obama3.jpg"].iter().enumerate() {
        put("Barack_Obama", n as u32 + 1, open(f));
    }
    put("Joe_Biden", 1, open("biden.jpg"));
    put("Joe_Biden", 2, open("biden.jpg").fliph());
    put(
        "Tom_Hanks",
        1,
        image::DynamicImage::ImageRgb8(open("Tom_Hanks_54745.png").to_rgb8()),
    );

    let low = LowQuality {
        scale: 0.5,
        ..LowQuality::default()
    };
    assert_eq!(write_copies(&images, &low_dir, &low, |_, _| {}).unwrap(), 6);
    let config = common::config();
    let mut engine = FaceEngine::open(&config.engine()).unwrap();
    let dump = dir.join("embeddings.jsonl");
    let mut seen = 0;
    let report = evaluate(
        &mut engine,
        &IdentifyInputs {
            images: &images,
            low_images: &low_dir,
            low_quality: low,
            max_people: None,
            embeddings_out: Some(&dump),
        },
        &config.matching,
        |done, _| seen = done,
    )
    .unwrap();
    assert_eq!(seen, 12, "every photo twice: as it is and its low copy");
    assert_eq!(report.gallery_identities, 2);
    assert_eq!(std::fs::read_to_string(&dump).unwrap().lines().count(), 12);
    assert_eq!(report.splits.len(), 3);
    for (name, split) in &report.splits {
        assert_eq!(
            (split.mated_probes, split.non_mated_probes),
            (3, 1),
            "{name}"
        );
        assert_eq!(split.det.len(), 41, "{name}");
    }
    let hh = &report.splits["high_high"];
    assert_eq!(
        hh.rank1, 1.0,
        "all three mated probes name the right person"
    );
    // One stranger, FPIR 1 %: the threshold is his own score and every mated probe beats it.
    assert_eq!(hh.fnir_at_fpir_1e2, 0.0, "{hh:?}");
    let op = hh.operating_point.as_ref().unwrap();
    assert_eq!((op.tpir, op.wrong_identity_rate, op.fpir), (1.0, 0.0, 0.0));
}
