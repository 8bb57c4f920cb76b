//! The API's shared state: the gallery service, cameras, event bus, sessions, review
//! queue and history each handler reaches through `web::Data<AppState>`.

use std::sync::Arc;

use super::ApiKey;
use crate::events::bus::EventBus;
use crate::gallery::service::GalleryService;
use crate::ingest::CameraRegistry;

/// Shared state of the API.
pub struct AppState {
    pub service: Arc<GalleryService>,
    /// Camera status (empty without cameras).
    pub cameras: Arc<CameraRegistry>,
    /// This node's id (`cluster.node_id`).
    pub node: String,
    pub keys: Vec<ApiKey>,
    pub max_body_bytes: usize,
    pub top_k: usize,
    pub events: EventBus,
    /// Ends long-lived responses (the event stream) when the service stops.
    pub shutdown: crate::shutdown::Shutdown,
    /// Folder of event snapshots (`events.snapshots`; none when off).
    pub snapshots: Option<std::path::PathBuf>,
    /// Console sessions (API keys exchanged for a cookie).
    pub sessions: super::session::Sessions,
    /// The review store and its settings (`review.enabled`; none when off).
    pub review: Option<(Arc<crate::review::ReviewStore>, crate::review::ReviewConfig)>,
    /// The appearance history (`history.enabled`; none when off).
    pub history: Option<Arc<crate::history::History>>,
}
