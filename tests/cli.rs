//! The `facestream` binary as a user runs it: `embed` over a batch mixing good and bad
//! inputs, and `verify`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{DynamicImage, ImageBuffer, Luma};

fn facestream() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facestream"));
    cmd.env("FACESTREAM_MODELS_DIR", common::config().models.dir);
    cmd
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn embed_reports_each_bad_input_and_keeps_going() {
    let dir = common::temp_dir("cli-embed");
    let obama = common::fixture("obama.jpg");
    let jpeg = std::fs::read(&obama).unwrap();
    let face = image::open(&obama).unwrap();

    let missing = dir.join("missing.jpg");
    let empty = write(&dir, "empty.jpg", b"");
    let truncated = write(&dir, "truncated.jpg", &jpeg[..jpeg.len() / 3]);
    let text = write(&dir, "notes.jpg", b"this is not an image at all\n");
    let one = dir.join("one.png");
    ImageBuffer::from_pixel(1, 1, Luma([128u8]))
        .save(&one)
        .unwrap();
    let gray16 = dir.join("gray16.png");
    DynamicImage::ImageLuma16(face.to_luma16())
        .save(&gray16)
        .unwrap();
    let rgba = dir.join("rgba.png");
    DynamicImage::ImageRgba8(face.to_rgba8())
        .save(&rgba)
        .unwrap();
    let bomb = common::bomb_png(60_000);
    let bomb = write(&dir, "bomb.png", &bomb);
    let list = write(
        &dir,
        "list.txt",
        format!("# from a list\n{}\n\n", obama.display()).as_bytes(),
    );

    let inputs = [
        &missing, &empty, &truncated, &text, &one, &bomb, &gray16, &rgba, &obama,
    ];
    let out = facestream()
        .arg("embed")
        .args(inputs)
        .arg("--list")
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        inputs.len() + 1,
        "one line per input, list included"
    );
    let kind = |i: usize| lines[i]["error"]["kind"].as_str().unwrap_or("").to_string();
    assert_eq!(kind(0), "read");
    assert_eq!(kind(1), "empty");
    assert_eq!(kind(2), "corrupt");
    assert_eq!(kind(3), "unknown_format");
    assert!(lines[4]["error"].is_null() && lines[4]["faces"].as_array().unwrap().is_empty());
    assert_eq!(kind(5), "too_many_pixels");
    let msg = lines[5]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("bomb.png") && msg.contains("60000x60000") && msg.contains("max_image_pixels"),
        "{msg}"
    );
    for i in [6, 7, 8, 9] {
        let faces = lines[i]["faces"]
            .as_array()
            .unwrap_or_else(|| panic!("line {i}: {}", lines[i]));
        assert_eq!(faces.len(), 1, "line {i}");
        let f = &faces[0];
        assert_eq!(f["embedding"].as_array().unwrap().len(), 128);
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 5);
        for key in ["score", "box", "quality"] {
            assert!(!f[key].is_null(), "{key} missing");
        }
        assert!(f["quality"]["components"]["sharpness"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(lines[8]["width"], face.width());
    assert_eq!(lines[9]["path"].as_str().unwrap(), obama.to_str().unwrap());
    // Gray 16-bit and RGBA copies embed like the original.
    let emb = |i: usize| -> Vec<f64> {
        lines[i]["faces"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(dot(&emb(7), &emb(8)) > 0.999);
    assert!(dot(&emb(6), &emb(8)) > 0.8);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn verify_says_same_and_different() {
    let run = |a: &str, b: &str| -> serde_json::Value {
        let out = facestream()
            .args(["verify", "--json"])
            .arg(common::fixture(a))
            .arg(common::fixture(b))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let same = run("obama.jpg", "obama2.jpg");
    assert_eq!(same["same"], true);
    let different = run("obama.jpg", "biden.jpg");
    assert_eq!(different["same"], false);
    assert!(different["similarity"].as_f64().unwrap() < same["similarity"].as_f64().unwrap());

    let out = facestream()
        .arg("verify")
        .arg(common::fixture("obama.jpg"))
        .arg("/no/such.jpg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such.jpg"));
}

#[test]
fn bad_config_is_refused_with_every_problem_listed() {
    let dir = common::temp_dir("cli-config");
    let cfg = write(
        &dir,
        "bad.toml",
        b"[detect]\nscore_threshold = 2.0\n[embed]\nbatch_size = 0\n",
    );
    let out = facestream()
        .arg("--config")
        .arg(&cfg)
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 problem(s)")
            && err.contains("detect.score_threshold")
            && err.contains("embed.batch_size"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn backends_lists_every_backend_and_refuses_an_unloadable_library() {
    let out = facestream().args(["backends", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for name in [
        "openvino",
        "onnxruntime",
        "onnxruntime-cuda",
        "onnxruntime-tensorrt",
        "litert",
        "tract",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(v["auto"].is_string());
    // the detector follows `inference.detect_backend = "auto"`: ONNX Runtime beside
    // OpenVINO when both are usable (the set-up installs both), else the selected backend
    let usable = |name: &str| {
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == name && b["usable"] == true)
    };
    let expected = match v["selected"].as_str().unwrap() {
        "openvino" if usable("onnxruntime") => "onnxruntime",
        selected => selected,
    };
    assert_eq!(v["detector"], expected, "{v}");

    // Naming a backend whose library cannot be loaded is a start-up error naming it.
    let out = facestream()
        .args(["backends"])
        .env("FACESTREAM__INFERENCE__BACKEND", "openvino")
        .env("FACESTREAM_OPENVINO_LIB", "/nonexistent/libopenvino_c.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/nonexistent/libopenvino_c.so") && text.contains("NOT USABLE"),
        "{text}"
    );
    let out = facestream()
        .arg("verify")
        .arg(common::fixture("obama.jpg"))
        .arg(common::fixture("biden.jpg"))
        .env("FACESTREAM__INFERENCE__BACKEND", "openvino")
        .env("FACESTREAM_OPENVINO_LIB", "/nonexistent/libopenvino_c.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/libopenvino_c.so"));
}

#[test]
fn validate_reports_every_problem_and_accepts_a_good_file() {
    let dir = common::temp_dir("cli-validate");
    let bad = write(
        &dir,
        "bad.toml",
        b"[api]\nlisten = \"0.0.0.0:80\"\n[match]\nmargin = -1.0\n[[events.webhooks]]\nname = \"x\"\nurl = \"ftp://x\"\nsecret = \"nope\"\n",
    );
    let out = facestream()
        .arg("--config")
        .arg(&bad)
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "4 problem(s)",
        "api.listen",
        "match.margin",
        "url",
        "secret",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    let good = write(&dir, "good.toml", b"[detect]\nscore_threshold = 0.7\n");
    let out = facestream()
        .arg("--config")
        .arg(&good)
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    let _ = std::fs::remove_dir_all(dir);
}
