//! The face engine on real photos: recognition decisions, the group photo, landmarks,
//! quality ordering, batching and the model checksum gate.

mod common;

use facestream::engine::{primary_face, Face, FaceEngine};
use facestream::inference::Precision;
use facestream::models::ModelError;
use facestream::stages::embed::cosine;
use facestream::stages::quality::QualityClass;
use image::RgbImage;

fn main_face(engine: &mut FaceEngine, name: &str) -> Face {
    let image = engine.load(&common::fixture(name)).unwrap();
    let (faces, _) = engine.analyze(&image).unwrap();
    primary_face(&faces)
        .unwrap_or_else(|| panic!("no face in {name}"))
        .clone()
}

#[test]
fn same_person_scores_above_and_different_people_below_the_threshold() {
    let threshold = common::config().verify.threshold;
    let mut engine = common::engine();
    let obama = main_face(&mut engine, "obama.jpg");
    let same = [
        "obama2.jpg",
        "obama3.jpg",
        "obama_partial_face.jpg",
        "obama_partial_face2.jpg",
    ];
    for name in same {
        let s = cosine(&obama.embedding, &main_face(&mut engine, name).embedding);
        assert!(
            s >= threshold + 0.1,
            "obama vs {name}: {s} not clearly above {threshold}"
        );
    }
    let others = ["biden.jpg", "Tom_Hanks_54745.png"];
    for a in ["obama.jpg", "obama2.jpg", "obama3.jpg"] {
        let fa = main_face(&mut engine, a);
        for b in others {
            let s = cosine(&fa.embedding, &main_face(&mut engine, b).embedding);
            assert!(s < threshold, "{a} vs {b}: {s} not below {threshold}");
        }
    }
    let s = cosine(
        &main_face(&mut engine, "biden.jpg").embedding,
        &main_face(&mut engine, "Tom_Hanks_54745.png").embedding,
    );
    assert!(s < threshold, "biden vs hanks: {s}");
}

#[test]
fn group_photo_has_six_faces_with_landmarks_inside_their_boxes() {
    let mut engine = common::engine();
    let image = engine.load(&common::fixture("t1.jpg")).unwrap();
    let (faces, _) = engine.analyze(&image).unwrap();
    assert_eq!(
        faces.len(),
        6,
        "{:#?}",
        faces.iter().map(|f| f.detection.bbox).collect::<Vec<_>>()
    );
    for f in &faces {
        assert!(f.detection.score >= 0.6);
        for p in f.detection.landmarks {
            assert!(
                f.detection.bbox.contains(p),
                "landmark {p:?} outside {:?}",
                f.detection.bbox
            );
        }
        // Eyes above the nose, nose above the mouth corners.
        let lm = f.detection.landmarks;
        assert!(lm[0][1].max(lm[1][1]) < lm[2][1] && lm[2][1] < lm[3][1].min(lm[4][1]));
        assert!((cosine(&f.embedding, &f.embedding) - 1.0).abs() < 1e-4);
    }
    // Six different people: no two embeddings should pass as the same person.
    let threshold = common::config().verify.threshold;
    for i in 0..faces.len() {
        for j in i + 1..faces.len() {
            let s = cosine(&faces[i].embedding, &faces[j].embedding);
            assert!(s < threshold, "faces {i} and {j} look alike: {s}");
        }
    }
}

#[test]
fn quality_drops_on_blurred_and_downscaled_copies() {
    let mut engine = common::engine();
    let path = common::fixture("obama.jpg");
    let original = engine.load(&path).unwrap();
    let best = |engine: &mut FaceEngine, img: &RgbImage| {
        let (faces, _) = engine.analyze(img).unwrap();
        primary_face(&faces).expect("face still found").clone()
    };
    let sharp = best(&mut engine, &original);
    let blurred = best(&mut engine, &image::imageops::blur(&original, 6.0));
    let (w, h) = original.dimensions();
    let small = image::imageops::resize(
        &original,
        w / 8,
        h / 8,
        image::imageops::FilterType::Triangle,
    );
    let small = best(&mut engine, &small);

    assert_eq!(
        sharp.quality.class,
        QualityClass::High,
        "{:?}",
        sharp.quality
    );
    assert!(blurred.quality.components.sharpness < sharp.quality.components.sharpness * 0.5);
    assert!(
        blurred.quality.score < sharp.quality.score,
        "{:?} vs {:?}",
        blurred.quality,
        sharp.quality
    );
    assert!(small.quality.components.size < sharp.quality.components.size);
    assert!(small.quality.score < sharp.quality.score);
    assert_eq!(
        small.quality.class,
        QualityClass::Low,
        "{:?}",
        small.quality
    );
    // Frontal portrait: small yaw and roll.
    assert!(
        sharp.quality.measures.yaw_deg.abs() < 20.0 && sharp.quality.measures.roll_deg.abs() < 15.0
    );
}

/// `inference.precision = "int8"` runs the quantized SFace that `make models` adds: the
/// same faces embed within quantisation error of f32, so templates enrolled under one
/// precision match probes of the other, and the decisions hold.
#[test]
fn the_int8_model_embeds_like_f32_and_keeps_the_decisions() {
    let threshold = common::config().verify.threshold;
    let mut config = common::config();
    config.inference.precision = Precision::F32;
    let mut full = FaceEngine::open(&config.engine()).unwrap();
    config.inference.precision = Precision::Int8;
    let mut int8 = FaceEngine::open(&config.engine()).unwrap();
    assert!(
        int8.backend_description().contains("int8"),
        "{}",
        int8.backend_description()
    );
    assert_eq!(
        int8.model_id(),
        full.model_id(),
        "templates stay comparable"
    );
    let names = [
        "obama.jpg",
        "obama2.jpg",
        "biden.jpg",
        "Tom_Hanks_54745.png",
    ];
    let f: Vec<Face> = names.iter().map(|n| main_face(&mut full, n)).collect();
    let q: Vec<Face> = names.iter().map(|n| main_face(&mut int8, n)).collect();
    for ((name, a), b) in names.iter().zip(&f).zip(&q) {
        let s = cosine(&a.embedding, &b.embedding);
        assert!(s > 0.95, "{name}: f32 vs int8 cosine {s}");
    }
    // Obama matches Obama and not Biden in int8 alone and across precisions.
    for (a, b) in [(&q[0], &q[1]), (&f[0], &q[1]), (&q[0], &f[1])] {
        let s = cosine(&a.embedding, &b.embedding);
        assert!(s >= threshold + 0.1, "obama vs obama2: {s}");
    }
    for (a, b) in [(&q[0], &q[2]), (&f[0], &q[2]), (&q[1], &q[3])] {
        let s = cosine(&a.embedding, &b.embedding);
        assert!(s < threshold, "different people: {s}");
    }
}

#[test]
fn a_face_embeds_the_same_alone_and_inside_a_batch() {
    let mut config = common::config();
    config.embed.batch_size = 4; // six faces -> batches of 4 and 2
    let mut batched = FaceEngine::open(&config.engine()).unwrap();
    config.embed.batch_size = 1;
    let mut single = FaceEngine::open(&config.engine()).unwrap();
    let image = batched.load(&common::fixture("t1.jpg")).unwrap();
    let (a, _) = batched.analyze(&image).unwrap();
    let (b, _) = single.analyze(&image).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(cosine(&x.embedding, &y.embedding) > 0.9999);
    }
}

#[test]
fn an_image_without_faces_gives_an_empty_list() {
    let mut engine = common::engine();
    let blank = RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let (faces, _) = engine.analyze(&blank).unwrap();
    assert!(faces.is_empty());
    let tiny = RgbImage::new(1, 1);
    assert!(engine.analyze(&tiny).unwrap().0.is_empty());
}

#[test]
fn a_tampered_model_file_is_refused() {
    let src = common::config().models.dir;
    let dir = common::temp_dir("tampered-models");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let file = dir.join(manifest["models"]["sface"]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let mut config = common::config();
    config.models.dir = dir.clone();
    match FaceEngine::open(&config.engine()) {
        Err(facestream::engine::EngineError::Model(ModelError::ChecksumMismatch {
            path, ..
        })) => {
            assert_eq!(path, file)
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("tampered model was loaded"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `embed.flip_average`: a face and its mirror image embed to the same vector (the
/// average is symmetric), which differs from the plain embedding and still recognises.
#[test]
fn flip_averaging_is_mirror_invariant_and_still_recognises() {
    let mut config = common::config();
    config.embed.flip_average = true;
    let mut flip = FaceEngine::open(&config.engine()).unwrap();
    let mut plain = common::engine();
    let face = main_face(&mut plain, "obama.jpg");
    let mut mirrored = face.aligned.clone();
    let side = 112;
    for y in 0..side {
        for x in 0..side {
            let (a, b) = ((y * side + x) * 3, (y * side + side - 1 - x) * 3);
            mirrored.rgb[a..a + 3].copy_from_slice(&face.aligned.rgb[b..b + 3]);
        }
    }
    let e = flip.embed_crops(&[&face.aligned, &mirrored]).unwrap();
    let norm: f32 = e[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
    assert!(cosine(&e[0], &e[1]) > 0.9999, "{}", cosine(&e[0], &e[1]));
    let alone = cosine(&e[0], &face.embedding);
    assert!(
        alone < 0.9999 && alone > 0.8,
        "differs from the plain embedding: {alone}"
    );
    let other = main_face(&mut flip, "obama2.jpg");
    assert!(cosine(&e[0], &other.embedding) > config.verify.threshold);
}
