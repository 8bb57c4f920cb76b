//! `facestream enroll --dir DIR`: bulk enrolment, one sub-folder per person (the folder
//! name is the display name; an existing identity of that name gets the new faces).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use facestream::config::Config;
use facestream::gallery::service::{FaceChoice, ServiceError};
use facestream::gallery::NewIdentity;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct EnrollArgs {
    /// Folder with one sub-folder of photos per person.
    #[arg(long)]
    dir: PathBuf,
    /// Which face of a photo with several: `only` (refuse it), `largest` or `center`
    /// (the main face, when the choice is clear).
    #[arg(long, default_value = "only")]
    face: FaceChoice,
    /// Also write the summary as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub fn run(config: &Config, args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for entry in
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?
    {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let mut photos: Vec<PathBuf> = std::fs::read_dir(entry.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        photos.sort();
        people.push((entry.file_name().to_string_lossy().into_owned(), photos));
    }
    people.sort();
    anyhow::ensure!(
        !people.is_empty(),
        "{} has no sub-folders (one per person expected)",
        args.dir.display()
    );
    let service = super::open_gallery(
        config,
        &facestream::engine::EngineSetup::resolve(&config.engine())?,
    )?;
    let store = service.store().clone();
    let mut existing = service.identities_by_name()?;
    let total: usize = people.iter().map(|(_, p)| p.len()).sum();
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} photos  {elapsed} elapsed, eta {eta}  {msg}",
        )
        .expect("static template"),
    );
    let (mut enrolled, mut created) = (0usize, 0usize);
    let mut rejected: Vec<(String, String)> = Vec::new();
    // Enrolled, but of low quality: they count less in their identity's template.
    let mut low_quality: Vec<(String, String)> = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (name, photos) in &people {
        bar.set_message(name.clone());
        let id = match existing.get(name) {
            Some(id) => *id,
            None => match store.create_identity(NewIdentity {
                name: name.clone(),
                metadata: None,
            }) {
                Ok(identity) => {
                    created += 1;
                    existing.insert(name.clone(), identity.id);
                    identity.id
                }
                Err(e) => {
                    for p in photos {
                        rejected.push((p.display().to_string(), e.to_string()));
                    }
                    *reasons.entry("invalid identity".into()).or_default() += photos.len();
                    bar.inc(photos.len() as u64);
                    continue;
                }
            },
        };
        for photo in photos {
            let result = service.enroll_file(id, photo, args.face);
            match result {
                Ok(done) => {
                    enrolled += 1;
                    if let Some(advice) = done.advice {
                        low_quality.push((photo.display().to_string(), advice));
                    }
                }
                Err(e) => {
                    let reason = match &e {
                        ServiceError::FaceCount { found: 0 } => "no face".to_string(),
                        ServiceError::PoorFace { .. } => {
                            "quality under gallery.min_enroll_quality".to_string()
                        }
                        ServiceError::FaceCount { .. } => "several faces".to_string(),
                        ServiceError::Image(i) => format!("bad image ({})", i.kind()),
                        other => other.to_string(),
                    };
                    *reasons.entry(reason).or_default() += 1;
                    rejected.push((photo.display().to_string(), e.to_string()));
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    println!(
        "enrolled {enrolled} of {total} photos for {} people ({created} new identities); rejected {}",
        people.len(),
        rejected.len()
    );
    for (reason, count) in &reasons {
        println!("  {count:>5}  {reason}");
    }
    for (photo, why) in &rejected {
        println!("  rejected {photo}: {why}");
    }
    if !low_quality.is_empty() {
        println!(
            "{} enrolled photos are of low quality and count less:",
            low_quality.len()
        );
        for (photo, advice) in &low_quality {
            println!("  {photo}: {advice}");
        }
    }
    if let Some(path) = &args.report {
        let report = serde_json::json!({
            "photos": total, "enrolled": enrolled, "people": people.len(), "new_identities": created,
            "rejected": rejected.iter().map(|(p, w)| serde_json::json!({"photo": p, "reason": w})).collect::<Vec<_>>(),
            "low_quality": low_quality.iter().map(|(p, a)| serde_json::json!({"photo": p, "advice": a})).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_SOME_INPUTS_FAILED)
    })
}
