//! Image bytes as an API upload or a file passed to `enroll` reach the decoder: any
//! input must come back as an image within the limits or a typed error — no panic, no
//! allocation past the pixel limit, no hang.
#![no_main]

use facestream::imageio::{decode_image, LimitsConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // smaller than the default 40 MP so that a header claiming a large image is
    // refused quickly and each run stays fast; the check is the same
    let limits = LimitsConfig {
        max_file_bytes: 4 << 20,
        max_image_pixels: 4_000_000,
        max_concurrent_decodes: 1,
    };
    if let Ok(image) = decode_image(data, "fuzz", &limits) {
        assert!(u64::from(image.width()) * u64::from(image.height()) <= limits.max_image_pixels);
    }
});
