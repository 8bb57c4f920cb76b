//! A config file's text through the same layers `facestream` reads it with (embedded
//! default, the file, validation): any text must give a config or a typed error naming
//! what is wrong — no panic.
#![no_main]

use facestream::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml_text(text, "fuzz.toml");
    }
});
