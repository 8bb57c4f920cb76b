//! `facestream reembed`: after a model change, list identities enrolled with another model
//! and re-embed those whose crops were kept (`gallery.keep_crops`).

use std::process::ExitCode;

use facestream::config::Config;

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let service = super::open_gallery(
        config,
        &facestream::engine::EngineSetup::resolve(&config.engine())?,
    )?;
    let stale = service.store().stale_identities(service.model())?;
    if stale.is_empty() {
        println!(
            "every identity has templates of the current model {}",
            service.model()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (done, missing) = service.reembed_stale()?;
    println!("re-embedded {done} stored crops with {}", service.model());
    if missing > 0 {
        println!(
            "{missing} templates kept no crop; these identities need re-enrolment from photos:"
        );
        for s in stale.iter().filter(|s| !s.crops_kept) {
            println!(
                "  {}  {}  (enrolled with {})",
                s.id,
                s.name,
                s.models.join(", ")
            );
        }
        return Ok(ExitCode::from(super::EXIT_SOME_INPUTS_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}
