//! Subcommands of the `facestream` binary: thin glue over the library.
//!
//! Exit codes: 0 success; 1 a fatal error (bad config, models missing, backend
//! unusable); 2 the command ran but some inputs were rejected (each reported).

pub mod backends;
pub mod bench;
pub mod bench_events;
pub mod bench_history;
pub mod bench_search;
pub mod embed;
pub mod enroll;
pub mod eval;
pub mod reembed;
pub mod serve;
pub mod simulate_camera;
pub mod verify;

use std::path::Path;

use facestream::config::Config;

/// Exit code when some inputs were rejected but the rest were processed.
pub const EXIT_SOME_INPUTS_FAILED: u8 = 2;

/// The gallery service on the engine start-up resolved, from the config's sections
/// (`serve`, `enroll` and `reembed`).
pub fn open_gallery(
    config: &Config,
    setup: &facestream::engine::EngineSetup,
) -> anyhow::Result<facestream::gallery::service::GalleryService> {
    Ok(facestream::service::open_gallery(
        &config.gallery,
        &config.matching,
        config.verify.threshold,
        setup,
    )?)
}

pub fn load_config(file: Option<&Path>) -> anyhow::Result<Config> {
    Ok(Config::load(file)?)
}

/// `facestream validate`: load the layers and report the outcome; never starts anything.
pub fn validate(file: Option<&Path>) -> std::process::ExitCode {
    let source = file.map_or("the embedded default".to_string(), |f| {
        f.display().to_string()
    });
    match Config::load(file) {
        Ok(_) => {
            println!("{source}: valid");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{source}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
