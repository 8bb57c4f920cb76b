//! `facestream backends`: every known backend, whether it is compiled in and usable here
//! (and why not), and which one `auto` picks.

use std::process::ExitCode;

use facestream::config::Config;
use facestream::inference;

#[derive(clap::Args)]
pub struct BackendsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: BackendsArgs) -> anyhow::Result<ExitCode> {
    let statuses = inference::survey(&config.inference);
    let auto = inference::auto_order()
        .into_iter()
        .find(|name| statuses.iter().any(|s| s.name == *name && s.usable));
    let configured = match config.inference.backend.as_str() {
        "auto" => auto.map(str::to_string),
        name => statuses
            .iter()
            .find(|s| s.name == name && s.usable)
            .map(|s| s.name.to_string()),
    };
    let usable = |name: &str| statuses.iter().any(|s| s.name == name && s.usable);
    let detector = match config.inference.detect_backend.as_str() {
        "auto" => configured.as_deref().map(|selected| {
            inference::auto_detect_backend(selected)
                .filter(|name| usable(name))
                .unwrap_or(selected)
                .to_string()
        }),
        name => usable(name).then(|| name.to_string()),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backends": statuses,
                "auto_order": inference::auto_order(),
                "auto": auto,
                "configured": config.inference.backend,
                "selected": configured,
                "detector": detector,
                "nvidia_gpu": inference::nvidia_gpu_present(),
                "arch": std::env::consts::ARCH,
            })
        );
    } else {
        println!(
            "{:<22} {:<12} {:<9} {:<7} detail",
            "backend", "feature", "compiled", "usable"
        );
        for s in &statuses {
            println!(
                "{:<22} {:<12} {:<9} {:<7} {}",
                s.name,
                s.feature,
                if s.compiled { "yes" } else { "no" },
                if s.usable { "yes" } else { "no" },
                s.detail
            );
        }
        println!(
            "auto order here ({}, NVIDIA GPU: {}): {}",
            std::env::consts::ARCH,
            if inference::nvidia_gpu_present() {
                "yes"
            } else {
                "no"
            },
            inference::auto_order().join(" → ")
        );
        println!("auto picks: {}", auto.unwrap_or("nothing usable"));
        println!(
            "configured inference.backend = {} → {}",
            config.inference.backend,
            configured.as_deref().unwrap_or("NOT USABLE")
        );
        println!(
            "inference.detect_backend = {} → the detector runs on {}",
            config.inference.detect_backend,
            detector.as_deref().unwrap_or("NOT USABLE")
        );
    }
    Ok(if configured.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
