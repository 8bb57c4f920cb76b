//! The demo camera: with no cameras configured (`demo.mode = "auto"`, the embedded
//! default), `facestream serve` serves the face fixtures as a simulated RTSP camera on
//! `demo.listen`, enrols the demo identities (Obama from two photos, Biden from one) if
//! they are missing, and watches that camera like any other — so a first `make run`
//! shows identity events (recognised and unknown) and live metrics within a minute,
//! without hardware. Production configs have `[[cameras]]`, which turns it off; or set
//! `demo.mode = "off"`.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{encode_h264, load_photos, RtspServer, Scene, SimulateError};
use crate::gallery::service::{FaceChoice, GalleryService, ServiceError};
use crate::gallery::{GalleryError, NewIdentity};
use crate::ingest::CameraConfig;

/// When the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoMode {
    /// Only when no `[[cameras]]` are configured and the gallery holds no identity but
    /// the demo's own.
    Auto,
    On,
    Off,
}

/// Demo camera settings (section `[demo]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// `auto` (only without configured cameras), `on` or `off`.
    pub mode: DemoMode,
    /// Address of the simulated RTSP camera.
    pub listen: String,
    /// Folder with the face fixtures (`make fixtures`).
    pub photos: PathBuf,
}

impl DemoConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        match self.listen.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => {}
            Ok(_) => problems.push(format!(
                "demo.listen = {} must be a loopback address",
                self.listen
            )),
            Err(_) => problems.push(format!(
                "demo.listen = {:?} is not an address:port",
                self.listen
            )),
        }
    }

    /// Whether the demo runs with these cameras.
    pub fn wanted(&self, cameras: &[CameraConfig]) -> bool {
        match self.mode {
            DemoMode::On => true,
            DemoMode::Off => false,
            DemoMode::Auto => cameras.is_empty(),
        }
    }
}

/// Errors starting the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo camera needs the face fixtures: {0} is missing (run `make fixtures`, or set demo.mode = \"off\")")]
    Photos(PathBuf),
    #[error("demo enrolment of {name}: {source}")]
    Enroll { name: String, source: ServiceError },
    #[error(transparent)]
    Simulate(#[from] SimulateError),
}

/// Photos shown, in order: an Obama photo not used for enrolment, Biden, a stranger
/// (Tom Hanks) and a group of six strangers.
pub const SHOWN: [&str; 4] = ["obama2.jpg", "biden.jpg", "Tom_Hanks_54745.png", "t1.jpg"];
/// Enrolled identities and their photos.
pub const ENROLLED: [(&str, &[&str]); 2] = [
    ("Obama", &["obama.jpg", "obama3.jpg"]),
    ("Biden", &["biden.jpg"]),
];

/// The running demo camera (stops when dropped).
pub struct Demo {
    pub server: RtspServer,
    pub camera: CameraConfig,
}

/// Whether `auto` may start the demo on this gallery: only if it holds no identity but
/// the demo's own (metadata `{"demo": true}`). A real gallery whose service simply has no
/// cameras yet must not get Obama and Biden enrolled into it.
pub fn gallery_allows_auto(gallery: &GalleryService) -> Result<bool, ServiceError> {
    let mut offset = 0;
    loop {
        let (page, total) = gallery.store().list_identities(offset, 1000)?;
        if page
            .iter()
            .any(|i| i.metadata.get("demo") != Some(&serde_json::Value::Bool(true)))
        {
            return Ok(false);
        }
        offset += page.len();
        if page.is_empty() || offset >= total {
            return Ok(true);
        }
    }
}

/// Enrol the demo identities that are missing, start the simulated camera and return
/// the camera to watch.
pub fn start(config: &DemoConfig, gallery: &GalleryService) -> Result<Demo, DemoError> {
    let path = |name: &str| -> Result<PathBuf, DemoError> {
        let p = config.photos.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(DemoError::Photos(p))
        }
    };
    for (name, photos) in ENROLLED {
        enroll_if_missing(
            gallery,
            name,
            &photos
                .iter()
                .map(|p| path(p))
                .collect::<Result<Vec<_>, _>>()?,
        )?;
    }
    let shown = SHOWN
        .iter()
        .map(|p| path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let scene = Scene::parade((1280, 720, 10), &load_photos(&shown), 360, (3.0, 2.0), 1);
    let clip = Arc::new(encode_h264(&scene)?);
    let (host, port) = config
        .listen
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
        .unwrap_or(("127.0.0.1".into(), 8554));
    let server = RtspServer::start(&host, port, vec![("demo".into(), clip)])?;
    let camera: CameraConfig = toml::from_str(&format!(
        "id = \"demo\"\nurl = \"{}\"\nsource = \"rtsp-h264\"",
        server.url("demo")
    ))
    .expect("a valid camera table");
    tracing::info!(url = %camera.url, "demo camera serving the face fixtures (demo.mode = \"off\" to disable)");
    Ok(Demo { server, camera })
}

fn enroll_if_missing(
    gallery: &GalleryService,
    name: &str,
    photos: &[PathBuf],
) -> Result<(), DemoError> {
    let err = |source: ServiceError| DemoError::Enroll {
        name: name.to_string(),
        source,
    };
    if gallery
        .identities_by_name()
        .map_err(err)?
        .contains_key(name)
    {
        return Ok(());
    }
    let identity = gallery
        .store()
        .create_identity(NewIdentity {
            name: name.to_string(),
            metadata: Some(serde_json::json!({ "demo": true })),
        })
        .map_err(|e: GalleryError| err(e.into()))?;
    for photo in photos {
        gallery
            .enroll_file(identity.id, photo, FaceChoice::Only)
            .map_err(err)?;
    }
    tracing::info!(name, photos = photos.len(), "demo identity enrolled");
    Ok(())
}
