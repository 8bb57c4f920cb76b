//! Low-quality copies of an image folder, the way a distant surveillance camera sees a
//! face: downscaled, blurred (optics and motion), then recompressed as JPEG.
//!
//! The copies are written once to a folder with the same `<Name>/<file>` layout, so
//! facestream and OpenCV's reference (`scripts/opencv_identify_reference.py`) analyse the
//! very same pixels. A `DEGRADE.json` beside them records the parameters; a folder made
//! with other parameters is refused rather than silently mixed.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageReader};
use serde::{Deserialize, Serialize};

/// How to degrade.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LowQuality {
    /// Scale factor on width and height, in (0, 1].
    pub scale: f32,
    /// Gaussian blur at the reduced size, in pixels (0 = none).
    pub blur_sigma: f32,
    /// JPEG quality of the recompression, 1–100.
    pub jpeg_quality: u8,
}

impl Default for LowQuality {
    /// A 250-px LFW photo becomes 88 px with its face about 14 px between the eyes,
    /// softened and blocky: the faces a 1080p camera gives at 8–10 m.
    fn default() -> Self {
        LowQuality {
            scale: 0.35,
            blur_sigma: 0.8,
            jpeg_quality: 40,
        }
    }
}

/// Errors making or reading the copies.
#[derive(Debug, thiserror::Error)]
pub enum DegradeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error(
        "{path} holds copies made with {found:?}, not the requested {wanted:?}; \
         use another folder or delete it"
    )]
    Mismatch {
        path: PathBuf,
        found: LowQuality,
        wanted: LowQuality,
    },
    #[error("low-quality setting {name} = {value} is outside {range}")]
    Setting {
        name: &'static str,
        value: f32,
        range: &'static str,
    },
}

impl LowQuality {
    /// Check the ranges.
    pub fn validate(&self) -> Result<(), DegradeError> {
        let bad = |name, value, range| Err(DegradeError::Setting { name, value, range });
        if !(self.scale > 0.0 && self.scale <= 1.0) {
            return bad("scale", self.scale, "(0, 1]");
        }
        if !(0.0..=10.0).contains(&self.blur_sigma) {
            return bad("blur_sigma", self.blur_sigma, "[0, 10]");
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad("jpeg_quality", f32::from(self.jpeg_quality), "[1, 100]");
        }
        Ok(())
    }

    /// Degrade one image; grey stays grey. Returns the JPEG bytes.
    pub fn apply(&self, image: &DynamicImage) -> Result<Vec<u8>, image::ImageError> {
        let w = ((image.width() as f32 * self.scale).round() as u32).max(1);
        let h = ((image.height() as f32 * self.scale).round() as u32).max(1);
        let mut small = image.resize_exact(w, h, image::imageops::FilterType::Triangle);
        if self.blur_sigma > 0.0 {
            small = small.blur(self.blur_sigma);
        }
        let small = match small {
            DynamicImage::ImageLuma8(_) => small,
            other => DynamicImage::ImageRgb8(other.to_rgb8()),
        };
        let mut out = Cursor::new(Vec::new());
        small.write_with_encoder(JpegEncoder::new_with_quality(&mut out, self.jpeg_quality))?;
        Ok(out.into_inner())
    }
}

const MANIFEST: &str = "DEGRADE.json";

/// Write the degraded copy of every `<Name>/<file>.jpg` under `images` to the same place
/// under `out`. Files already there are kept when `out`'s manifest has the same
/// parameters (an interrupted run resumes). Returns how many files were written.
pub fn write_copies(
    images: &Path,
    out: &Path,
    low: &LowQuality,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, DegradeError> {
    low.validate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DegradeError::Io { path, source }
    };
    let manifest = out.join(MANIFEST);
    if let Ok(text) = std::fs::read_to_string(&manifest) {
        let found: LowQuality = serde_json::from_str(&text).map_err(|e| DegradeError::Image {
            path: manifest.clone(),
            message: e.to_string(),
        })?;
        if found != *low {
            return Err(DegradeError::Mismatch {
                path: out.to_path_buf(),
                found,
                wanted: *low,
            });
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    std::fs::write(
        &manifest,
        serde_json::to_string_pretty(low).expect("plain struct"),
    )
    .map_err(io(&manifest))?;
    let mut files = Vec::new();
    for person in std::fs::read_dir(images).map_err(io(images))?.flatten() {
        if person.path().is_dir() {
            for f in std::fs::read_dir(person.path())
                .map_err(io(&person.path()))?
                .flatten()
            {
                files.push((person.file_name(), f.file_name(), f.path()));
            }
        }
    }
    files.sort();
    let mut written = 0;
    for (done, (person, name, path)) in files.iter().enumerate() {
        let dir = out.join(person);
        let target = dir.join(name);
        if !target.exists() {
            let image_err = |message: String| DegradeError::Image {
                path: path.clone(),
                message,
            };
            let image = ImageReader::open(path)
                .map_err(io(path))?
                .with_guessed_format()
                .map_err(io(path))?
                .decode()
                .map_err(|e| image_err(e.to_string()))?;
            let bytes = low.apply(&image).map_err(|e| image_err(e.to_string()))?;
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            // Write then rename, so an interrupted run never leaves a truncated copy.
            let partial = dir.join(format!(".{}.partial", name.to_string_lossy()));
            std::fs::write(&partial, bytes).map_err(io(&partial))?;
            std::fs::rename(&partial, &target).map_err(io(&target))?;
            written += 1;
        }
        progress(done + 1, files.len());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};

    fn textured(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |x, y| {
            Luma([((x * 7 + y * 13) % 256) as u8 ^ if (x / 4 + y / 4) % 2 == 0 { 0 } else { 90 }])
        }))
    }

    fn sharpness(img: &GrayImage) -> f64 {
        let mut sum = 0.0;
        for y in 1..img.height() - 1 {
            for x in 1..img.width() - 1 {
                let c = f64::from(img[(x, y)][0]);
                let lap = f64::from(img[(x - 1, y)][0])
                    + f64::from(img[(x + 1, y)][0])
                    + f64::from(img[(x, y - 1)][0])
                    + f64::from(img[(x, y + 1)][0])
                    - 4.0 * c;
                sum += lap * lap;
            }
        }
        sum / f64::from((img.width() - 2) * (img.height() - 2))
    }

    #[test]
    fn copies_are_smaller_softer_and_stay_grey() {
        let src = textured(250, 250);
        let low = LowQuality::default();
        let bytes = low.apply(&src).unwrap();
        let back = image::load_from_memory(&bytes).unwrap();
        assert_eq!((back.width(), back.height()), (88, 88));
        assert!(
            matches!(back, DynamicImage::ImageLuma8(_)),
            "grey in, grey out"
        );
        let resized_only = src
            .resize_exact(88, 88, image::imageops::FilterType::Triangle)
            .to_luma8();
        assert!(sharpness(&back.to_luma8()) < sharpness(&resized_only));
        // Deterministic: the reference and facestream must see the same pixels.
        assert_eq!(bytes, low.apply(&src).unwrap());
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let bad = LowQuality {
            scale: 0.0,
            ..LowQuality::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("scale = 0"));
        let bad = LowQuality {
            jpeg_quality: 0,
            ..LowQuality::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("jpeg_quality"));
    }

    #[test]
    fn a_folder_made_with_other_settings_is_refused_and_a_rerun_resumes() {
        let root = std::env::temp_dir().join(format!("fs-degrade-{}", uuid::Uuid::now_v7()));
        let (src, out) = (root.join("src"), root.join("low"));
        std::fs::create_dir_all(src.join("A_B")).unwrap();
        textured(100, 80)
            .save(src.join("A_B").join("A_B_0001.jpg"))
            .unwrap();
        let low = LowQuality::default();
        assert_eq!(write_copies(&src, &out, &low, |_, _| {}).unwrap(), 1);
        let copy = image::open(out.join("A_B").join("A_B_0001.jpg")).unwrap();
        assert_eq!((copy.width(), copy.height()), (35, 28));
        assert_eq!(write_copies(&src, &out, &low, |_, _| {}).unwrap(), 0);
        let other = LowQuality { scale: 0.5, ..low };
        let err = write_copies(&src, &out, &other, |_, _| {}).unwrap_err();
        assert!(matches!(err, DegradeError::Mismatch { .. }), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
