//! Still-image input: read and decode JPEG/PNG files safely into 8-bit RGB.
//!
//! Sits before detection for every still-image path (CLI, evaluation, enrolment).
//! Guards, in order: file size limit → header-only dimension probe → pixel-count limit
//! (a decompression bomb is refused before any pixel is decoded) → decode with an
//! allocation cap → EXIF orientation → conversion of gray/RGBA/16-bit to 8-bit RGB.
//! Every failure is an [`ImageError`] naming the input and the limit it broke.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

/// Input limits for still images.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest image file accepted, in bytes.
    pub max_file_bytes: u64,
    /// Largest image accepted, in pixels (width × height), checked from the header before
    /// decoding. 40 MP covers a 8K frame; raise it for panoramas.
    pub max_image_pixels: u64,
    /// Uploaded images decoded and held at once by the API (each up to
    /// `max_image_pixels` × 3 bytes); further requests wait up to 30 s for a slot, then
    /// get 503. Bounds the API's image memory whatever the number of clients.
    #[serde(default = "default_concurrent_decodes")]
    pub max_concurrent_decodes: usize,
}

fn default_concurrent_decodes() -> usize {
    2
}

impl LimitsConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.max_file_bytes == 0 {
            problems.push("limits.max_file_bytes must be > 0".into());
        }
        if self.max_image_pixels == 0 {
            problems.push("limits.max_image_pixels must be > 0".into());
        }
        crate::validate::within(
            problems,
            "limits.max_concurrent_decodes",
            self.max_concurrent_decodes,
            1..=64,
        );
    }
}

/// Why an image could not be used. Each variant names the input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{input}: cannot read file: {source}")]
    Read {
        input: String,
        source: std::io::Error,
    },
    #[error("{input}: file is empty")]
    Empty { input: String },
    #[error(
        "{input}: file is {bytes} bytes, over the limit of {limit} bytes (limits.max_file_bytes)"
    )]
    FileTooLarge {
        input: String,
        bytes: u64,
        limit: u64,
    },
    #[error("{input}: not a supported image (JPEG or PNG expected)")]
    UnknownFormat { input: String },
    #[error("{input}: image is {width}x{height}, which has no pixels")]
    ZeroSize {
        input: String,
        width: u32,
        height: u32,
    },
    #[error("{input}: image is {width}x{height} = {pixels} pixels, over the limit of {limit} (limits.max_image_pixels)")]
    TooManyPixels {
        input: String,
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("{input}: corrupt or truncated image: {message}")]
    Corrupt { input: String, message: String },
}

impl ImageError {
    /// A short machine-readable kind for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            ImageError::Read { .. } => "read",
            ImageError::Empty { .. } => "empty",
            ImageError::FileTooLarge { .. } => "file_too_large",
            ImageError::UnknownFormat { .. } => "unknown_format",
            ImageError::ZeroSize { .. } => "zero_size",
            ImageError::TooManyPixels { .. } => "too_many_pixels",
            ImageError::Corrupt { .. } => "corrupt",
        }
    }
}

/// Read and decode an image file into 8-bit RGB.
pub fn load_image(path: &Path, limits: &LimitsConfig) -> Result<RgbImage, ImageError> {
    let input = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ImageError::Read {
        input: input.clone(),
        source,
    })?;
    if meta.len() > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            input,
            bytes: meta.len(),
            limit: limits.max_file_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| ImageError::Read {
        input: input.clone(),
        source,
    })?;
    decode_image(&bytes, &input, limits)
}

/// Decode image bytes (already in memory, e.g. an upload) into 8-bit RGB.
pub fn decode_image(
    bytes: &[u8],
    input: &str,
    limits: &LimitsConfig,
) -> Result<RgbImage, ImageError> {
    let input = input.to_string();
    if bytes.is_empty() {
        return Err(ImageError::Empty { input });
    }
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(ImageError::FileTooLarge {
            input,
            bytes: bytes.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, ImageError> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| ImageError::Read {
                input: input.clone(),
                source,
            })?;
        match reader.format() {
            Some(image::ImageFormat::Jpeg | image::ImageFormat::Png) => Ok(reader),
            _ => Err(ImageError::UnknownFormat {
                input: input.clone(),
            }),
        }
    };
    // Header only: the pixel limit is enforced before a single pixel is decoded.
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| corrupt(&input, e))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(ImageError::ZeroSize {
            input,
            width,
            height,
        });
    }
    if pixels > limits.max_image_pixels {
        return Err(ImageError::TooManyPixels {
            input,
            width,
            height,
            pixels,
            limit: limits.max_image_pixels,
        });
    }
    let mut reader = reader()?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_end_after_last_scan(bytes) {
        // The JPEG decoder pads a cut-off scan with gray rather than failing; a half-grey
        // face must not be enrolled or matched, so truncation is an error here.
        return Err(ImageError::Corrupt {
            input,
            message: "truncated JPEG: no end-of-image marker after the last scan".into(),
        });
    }
    let mut decoder_limits = image::Limits::default();
    // 8 bytes per pixel covers RGBA16 plus the RGB8 copy we make afterwards.
    decoder_limits.max_alloc = Some(pixels.saturating_mul(8).max(1 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| corrupt(&input, e))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| corrupt(&input, e))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// True when an EOI marker (FF D9) follows the last start-of-scan (FF DA). Entropy-coded
/// data byte-stuffs 0xFF, so these two-byte patterns only occur as markers; an embedded
/// EXIF thumbnail's scan and EOI come before the main scan, and trailing data after the
/// main EOI (some cameras append it) is allowed.
fn jpeg_has_end_after_last_scan(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn corrupt(input: &str, e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Unsupported(_) => ImageError::UnknownFormat {
            input: input.to_string(),
        },
        other => ImageError::Corrupt {
            input: input.to_string(),
            message: other.to_string(),
        },
    }
}

/// `image` as a baseline JPEG of `quality` (1–100): snapshots, review shots, thumbnails.
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    image.write_with_encoder(encoder)?;
    Ok(bytes)
}

/// Read a list file: one image path per line, blank lines and `#` comments ignored;
/// relative paths are taken from the list file's folder.
pub fn read_list(list: &Path) -> std::io::Result<Vec<PathBuf>> {
    let base = list.parent().unwrap_or(Path::new("."));
    Ok(std::fs::read_to_string(list)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let p = PathBuf::from(l);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgba};

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_file_bytes: 1 << 20,
            max_image_pixels: 10_000,
            max_concurrent_decodes: 2,
        }
    }

    fn png<P: image::PixelWithColorType, C: std::ops::Deref<Target = [P::Subpixel]>>(
        img: &ImageBuffer<P, C>,
    ) -> Vec<u8>
    where
        [P::Subpixel]: image::EncodableLayout,
    {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn gray_rgba_and_16bit_become_rgb8() {
        let gray = ImageBuffer::from_pixel(4, 3, Luma([200u8]));
        let rgb = decode_image(&png(&gray), "gray", &limits()).unwrap();
        assert_eq!(rgb.dimensions(), (4, 3));
        assert_eq!(rgb.get_pixel(0, 0).0, [200, 200, 200]);

        let rgba = ImageBuffer::from_pixel(2, 2, Rgba([10u8, 20, 30, 0]));
        let rgb = decode_image(&png(&rgba), "rgba", &limits()).unwrap();
        assert_eq!(rgb.get_pixel(1, 1).0, [10, 20, 30]);

        let deep = ImageBuffer::from_pixel(2, 2, Luma([65535u16]));
        let rgb = decode_image(&png(&deep), "gray16", &limits()).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn bad_bytes_give_named_errors() {
        let l = limits();
        assert!(matches!(
            decode_image(b"", "e", &l),
            Err(ImageError::Empty { .. })
        ));
        let err = decode_image(b"hello, not an image", "text.jpg", &l).unwrap_err();
        assert_eq!(err.kind(), "unknown_format");
        assert!(err.to_string().starts_with("text.jpg:"));
        let mut truncated = png(&ImageBuffer::from_pixel(50, 50, Luma([7u8])));
        truncated.truncate(truncated.len() / 2);
        let err = decode_image(&truncated, "half.png", &l).unwrap_err();
        assert_eq!(err.kind(), "corrupt", "{err}");
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        // 200x200 = 40,000 pixels > 10,000: refused with the dimensions and the limit.
        let img = ImageBuffer::from_pixel(200, 200, Luma([0u8]));
        match decode_image(&png(&img), "big.png", &limits()) {
            Err(ImageError::TooManyPixels {
                width: 200,
                height: 200,
                limit: 10_000,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn decompression_bomb_header_is_refused_before_decoding() {
        // A valid PNG whose IHDR claims 100000x100000 (10^10 pixels, ~30 GB decoded).
        let mut bomb = png(&ImageBuffer::from_pixel(1, 1, Luma([0u8])));
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let limits = LimitsConfig {
            max_file_bytes: 1 << 20,
            max_image_pixels: 40_000_000,
            max_concurrent_decodes: 2,
        };
        match decode_image(&bomb, "bomb.png", &limits) {
            Err(ImageError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_jpeg_is_corrupt_but_trailing_bytes_are_fine() {
        let img = ImageBuffer::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let l = limits();
        assert!(decode_image(&jpeg, "ok.jpg", &l).is_ok());
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0u8; 100]);
        assert!(decode_image(&padded, "padded.jpg", &l).is_ok());
        let cut = &jpeg[..jpeg.len() - 40];
        let err = decode_image(cut, "cut.jpg", &l).unwrap_err();
        assert_eq!(err.kind(), "corrupt", "{err}");
    }

    #[test]
    fn file_size_limit() {
        let l = LimitsConfig {
            max_file_bytes: 10,
            max_image_pixels: 10,
            max_concurrent_decodes: 2,
        };
        let err = decode_image(&[0u8; 11], "x", &l).unwrap_err();
        assert_eq!(err.kind(), "file_too_large");
    }
}
