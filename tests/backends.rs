//! Backend conformance: every compiled and usable backend must reproduce the OpenVINO
//! reference on real faces — same detections (count, box IoU ≥ 0.95) and the same
//! embeddings (cosine ≥ 0.9999), at batch 1 and in padded/mixed batches.

mod common;

use facestream::inference::{self, Backend, SessionOptions};
use facestream::models::ModelStore;
use facestream::stages::align::{self, AlignedFace};
use facestream::stages::detect::{Detect, Detector};
use facestream::stages::embed::{cosine, Embed, EmbedConfig};
use facestream::stages::Detection;

const IMAGES: &[&str] = &[
    "t1.jpg",
    "obama.jpg",
    "biden.jpg",
    "Tom_Hanks_54745.png",
    "obama_partial_face.jpg",
];

struct Reference {
    detections: Vec<Vec<Detection>>,
    crops: Vec<AlignedFace>,
    embeddings: Vec<Vec<f32>>,
}

fn run_backend(backend: &dyn Backend, batch: usize) -> Reference {
    let config = common::config();
    let store = ModelStore::open(&config.models.dir).unwrap();
    let options = SessionOptions {
        threads: 1,
        ..SessionOptions::from(&config.inference)
    };
    let mut detect = Detect::new(
        backend,
        &store.model("yunet").unwrap(),
        &options,
        config.detect.clone(),
    )
    .unwrap();
    let mut embed = Embed::new(
        backend,
        &store.model("sface").unwrap(),
        &options,
        &EmbedConfig {
            batch_size: batch,
            flip_average: false,
        },
    )
    .unwrap();
    let mut detections = Vec::new();
    let mut crops = Vec::new();
    for name in IMAGES {
        let image =
            facestream::imageio::load_image(&common::fixture(name), &config.limits).unwrap();
        let found = detect.detect(&image).unwrap();
        crops.extend(
            found
                .iter()
                .map(|d| align::align(&image, &d.landmarks).unwrap()),
        );
        detections.push(found);
    }
    let refs: Vec<&AlignedFace> = crops.iter().collect();
    let embeddings = embed.embed(&refs).unwrap();
    Reference {
        detections,
        crops,
        embeddings,
    }
}

fn embed_crops(backend: &dyn Backend, crops: &[AlignedFace], batch: usize) -> Vec<Vec<f32>> {
    let config = common::config();
    let store = ModelStore::open(&config.models.dir).unwrap();
    let options = SessionOptions {
        threads: 1,
        ..SessionOptions::from(&config.inference)
    };
    let mut embed = Embed::new(
        backend,
        &store.model("sface").unwrap(),
        &options,
        &EmbedConfig {
            batch_size: batch,
            flip_average: false,
        },
    )
    .unwrap();
    embed.embed(&crops.iter().collect::<Vec<_>>()).unwrap()
}

fn assert_embeddings_match(backend: &str, reference: &[Vec<f32>], got: &[Vec<f32>]) {
    assert_eq!(reference.len(), got.len());
    for (k, (a, b)) in reference.iter().zip(got).enumerate() {
        let c = cosine(a, b);
        assert!(c >= 0.9999, "{backend}: crop {k} cosine {c}");
    }
}

#[test]
fn every_usable_backend_matches_the_openvino_reference() {
    let config = common::config();
    let statuses = inference::survey(&config.inference);
    for s in &statuses {
        eprintln!(
            "{:<22} compiled={} usable={} {}",
            s.name, s.compiled, s.usable, s.detail
        );
    }
    // The default build carries OpenVINO and ONNX Runtime and set-up installs both
    // libraries: they must be usable here, or this test would check nothing.
    for required in ["openvino", "onnxruntime"] {
        let s = statuses.iter().find(|s| s.name == required).unwrap();
        if s.compiled {
            assert!(
                s.usable,
                "{required} is compiled in but not usable: {}",
                s.detail
            );
        }
    }
    let reference_backend =
        inference::open("openvino", &config.inference).expect("OpenVINO reference");
    let reference = run_backend(reference_backend.as_ref(), 1);
    assert_eq!(reference.detections[0].len(), 6, "group photo");
    let mut checked = 0;
    let store = ModelStore::open(&config.models.dir).unwrap();
    let yunet = store.model("yunet").unwrap();
    for s in statuses.iter().filter(|s| s.usable && s.name != "openvino") {
        let backend = inference::open(s.name, &config.inference).unwrap();
        assert!(
            backend.supports(&store.model("sface").unwrap()),
            "{} cannot embed",
            s.name
        );
        if !backend.supports(&yunet) {
            // LiteRT carries only the embedding model; detection runs on the next backend.
            eprintln!("{}: no detector variant; detection runs elsewhere", s.name);
            let embedded = embed_crops(backend.as_ref(), &reference.crops, 1);
            assert_embeddings_match(s.name, &reference.embeddings, &embedded);
            checked += 1;
            continue;
        }
        let got = run_backend(backend.as_ref(), 1);
        for (i, (a, b)) in reference.detections.iter().zip(&got.detections).enumerate() {
            assert_eq!(
                a.len(),
                b.len(),
                "{}: face count differs on {}",
                s.name,
                IMAGES[i]
            );
            for (x, y) in a.iter().zip(b) {
                let iou = x.bbox.iou(&y.bbox);
                assert!(iou >= 0.95, "{}: box IoU {iou} on {}", s.name, IMAGES[i]);
            }
        }
        // Embeddings on the reference's own crops, so only the embedder is compared.
        let embedded = embed_crops(backend.as_ref(), &reference.crops, 1);
        assert_embeddings_match(s.name, &reference.embeddings, &embedded);
        checked += 1;
    }
    let compiled_usable = statuses.iter().filter(|s| s.usable).count();
    assert_eq!(checked + 1, compiled_usable);
}

#[test]
fn batches_of_any_size_give_the_batch_one_answer_on_every_backend() {
    let config = common::config();
    let openvino = inference::open("openvino", &config.inference).unwrap();
    let crops = run_backend(openvino.as_ref(), 1).crops;
    assert!(crops.len() >= 10, "fixtures give {} crops", crops.len());
    for s in inference::survey(&config.inference)
        .iter()
        .filter(|s| s.usable)
    {
        let backend = inference::open(s.name, &config.inference).unwrap();
        let single = embed_crops(backend.as_ref(), &crops, 1);
        // 4 → batches 4,4,2 (a short last batch); 32 → one batch larger than the input.
        for batch in [4, 32] {
            let batched = embed_crops(backend.as_ref(), &crops, batch);
            assert_eq!(batched.len(), crops.len());
            for (k, (a, b)) in single.iter().zip(&batched).enumerate() {
                let c = cosine(a, b);
                assert!(c >= 0.9999, "{} batch {batch}: crop {k} cosine {c}", s.name);
            }
        }
    }
}

#[test]
fn asking_for_a_missing_backend_names_the_feature_or_library() {
    let mut config = common::config();
    config.inference.backend = "tract".into();
    let err = inference::select(&config.inference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    if cfg!(feature = "tract") {
        assert!(err.is_empty(), "{err}");
    } else {
        assert!(err.contains("--features tract"), "{err}");
    }
    config.inference.backend = "onnxruntime-tensorrt".into();
    if !inference::nvidia_gpu_present() {
        let err = inference::select(&config.inference)
            .err()
            .expect("no GPU here")
            .to_string();
        assert!(
            err.contains("onnxruntime-tensorrt")
                && (err.contains("NVIDIA") || err.contains("TensorRT")),
            "{err}"
        );
    }
}
