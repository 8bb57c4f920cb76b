//! `/v1` handlers. Each handler checks the caller's scope, runs the gallery service on the
//! blocking pool (inference and SQLite are synchronous) and maps errors through
//! [`ApiError`].

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::{ApiError, ApiKey, JsonObject, Scope};
use crate::events::bus::EventBus;
use crate::events::{Event, EventType};
use crate::gallery::service::{FaceChoice, GalleryService, ServiceError};
use crate::gallery::{IdentityUpdate, NewIdentity};
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

const OPENAPI: &str = include_str!("openapi.json");

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Prometheus scrapes without a key, by convention; keep the API on a trusted network
    // (or loopback) when that matters.
    cfg.service(resource("/metrics", "GET").route(web::get().to(metrics)));
    cfg.service(
        web::scope("/v1")
            .service(resource("/health", "GET").route(web::get().to(health)))
            .service(resource("/ready", "GET").route(web::get().to(ready)))
            .service(resource("/openapi.json", "GET").route(web::get().to(openapi)))
            .service(
                resource("/session", "GET, POST, DELETE")
                    .route(web::post().to(super::session::login))
                    .route(web::get().to(super::session::current))
                    .route(web::delete().to(super::session::logout)),
            )
            .service(
                resource("/identities", "GET, POST")
                    .route(web::post().to(create_identity))
                    .route(web::get().to(list_identities)),
            )
            .service(
                resource("/identities/{id}", "GET, PATCH, DELETE")
                    .route(web::get().to(get_identity))
                    .route(web::patch().to(update_identity))
                    .route(web::delete().to(delete_identity)),
            )
            .service(
                resource("/identities/{id}/appearances", "GET")
                    .route(web::get().to(super::search::identity_appearances)),
            )
            .service(
                resource("/search/faces", "POST")
                    .route(web::post().to(super::search::search_faces)),
            )
            .service(
                resource("/search/appearances", "DELETE")
                    .route(web::delete().to(super::search::delete_appearance)),
            )
            .service(
                resource("/search/appearances/{id}/shot", "GET")
                    .route(web::get().to(super::search::shot)),
            )
            .service(resource("/search/audit", "GET").route(web::get().to(super::search::audit)))
            .service(
                resource("/identities/{id}/faces", "GET, POST")
                    .route(web::post().to(add_face))
                    .route(web::get().to(list_faces)),
            )
            .service(
                resource("/identities/{id}/faces/{face}", "DELETE")
                    .route(web::delete().to(delete_face)),
            )
            .service(
                resource("/identities/{id}/faces/{face}/crop", "GET")
                    .route(web::get().to(face_crop)),
            )
            .service(resource("/search", "POST").route(web::post().to(search)))
            .service(resource("/verify", "POST").route(web::post().to(verify)))
            .service(resource("/gallery/stale", "GET").route(web::get().to(stale)))
            .service(resource("/cameras", "GET").route(web::get().to(cameras)))
            .service(
                resource("/cameras/{id}/snapshot", "GET").route(web::get().to(camera_snapshot)),
            )
            .service(resource("/events/recent", "GET").route(web::get().to(recent_events)))
            .service(
                resource("/events/stream", "GET").route(web::get().to(super::stream::event_stream)),
            )
            .service(resource("/events/schema", "GET").route(web::get().to(event_schema)))
            .service(resource("/events/test", "POST").route(web::post().to(test_event)))
            .service(resource("/events/dead-letters", "GET").route(web::get().to(dead_letters)))
            .service(
                resource("/events/dead-letters/redeliver", "POST").route(web::post().to(redeliver)),
            )
            .service(resource("/events/{id}/snapshot", "GET").route(web::get().to(snapshot)))
            .service(
                resource("/review/unknowns", "GET").route(web::get().to(super::review::unknowns)),
            )
            .service(
                resource("/review/tracks/{id}/shots/{n}", "GET")
                    .route(web::get().to(super::review::shot)),
            )
            .service(
                resource("/review/enroll", "POST").route(web::post().to(super::review::enroll)),
            )
            .service(
                resource("/review/dismiss", "POST").route(web::post().to(super::review::dismiss)),
            ),
    );
}

/// A path whose other methods are answered 405 with the `Allow` header (not 404: the path
/// exists).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// The caller's key, checked against `needed`: from `Authorization: Bearer <key>`, else
/// from a console session cookie ([`super::session`]), which must also carry
/// `X-Facestream-Console` on anything but GET and HEAD.
pub(super) fn authorize<'a>(
    req: &HttpRequest,
    state: &'a AppState,
    needed: Scope,
) -> Result<&'a ApiKey, ApiError> {
    let index = match req.headers().get("authorization") {
        Some(value) => {
            let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
            state.sessions.guarded(req, token.unwrap_or_default(), || {
                authorize_key(state, token.ok_or(ApiError::Unauthorized)?)
            })?
        }
        None => {
            let token = super::session::cookie_token(req).ok_or(ApiError::Unauthorized)?;
            let (index, _) = state
                .sessions
                .lookup(&token)
                .ok_or(ApiError::Unauthorized)?;
            let safe = matches!(
                *req.method(),
                actix_web::http::Method::GET | actix_web::http::Method::HEAD
            );
            if !safe && !req.headers().contains_key(super::session::CONSOLE_HEADER) {
                return Err(ApiError::ConsoleHeader);
            }
            index
        }
    };
    let key = &state.keys[index];
    if needed == Scope::Admin && key.scope != Scope::Admin {
        return Err(ApiError::Forbidden);
    }
    Ok(key)
}

/// The number of the key equal to `token`. Every key is compared in full so timing does
/// not reveal a prefix match.
pub(super) fn authorize_key(state: &AppState, token: &str) -> Result<usize, ApiError> {
    state
        .keys
        .iter()
        .enumerate()
        .fold(None, |found, (i, k)| {
            if constant_time_eq(k.key.as_bytes(), token.trim().as_bytes()) {
                Some(i)
            } else {
                found
            }
        })
        .ok_or(ApiError::Unauthorized)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Run blocking work on actix's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(|_| ApiError::Internal)?
}

/// Read the body up to the limit, answering 413 with the limit when it is over.
pub(super) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge {
                got: body.len() + chunk.len(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty: send the image bytes".into(),
        ));
    }
    Ok(body)
}

/// `GET /v1/events/{id}/snapshot`: the frame an identity event was decided on (JPEG).
async fn snapshot(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let Some(dir) = state.snapshots.clone() else {
        return Err(ApiError::NotFound(
            "event snapshots are off: they are kept only with events.snapshots.enabled = true"
                .into(),
        ));
    };
    let id = parse_id(&path, "event")?;
    let file = crate::pipeline::snapshot_path(&dir, id);
    let jpeg = blocking(move || match std::fs::read(&file) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::NotFound(format!(
            "no snapshot for event {id}: not an identity event, decided when its track ended \
             (no frame at hand), or past events.snapshots.retention_s"
        ))),
        Err(e) => {
            tracing::error!(event = %id, error = %e, "reading an event snapshot");
            Err(ApiError::Internal)
        }
    })
    .await?;
    Ok(private_jpeg(jpeg))
}

/// A JPEG of a face or a frame: biometric data, kept out of shared caches.
pub(super) fn private_jpeg(jpeg: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("Cache-Control", "private, no-store"))
        .body(jpeg)
}

pub(super) fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("{what} {raw:?} not found")))
}

async fn cameras(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({ "node": state.node, "cameras": state.cameras.snapshot() })))
}

/// Longest side of a camera preview, in pixels.
const PREVIEW_SIDE: u32 = 640;

/// `GET /v1/cameras/{id}/snapshot`: the camera's latest analysed frame (JPEG, shrunk to
/// fit 640 pixels), with `Last-Modified` saying when it was captured.
async fn camera_snapshot(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let id = path.into_inner();
    let camera = state
        .cameras
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("camera {id:?} not found")))?;
    let (frame, at) = camera.latest_frame.ok_or_else(|| {
        ApiError::NotFound(format!(
            "camera {id:?} has not delivered a frame yet (state: {})",
            camera.state.as_str()
        ))
    })?;
    let jpeg = blocking(move || {
        crate::imageio::encode_jpeg(&crate::pipeline::preview(&frame, PREVIEW_SIDE), 80).map_err(
            |e| {
                tracing::error!(error = %e, "encoding a camera preview");
                ApiError::Internal
            },
        )
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("Cache-Control", "private, no-store"))
        .insert_header((
            "Last-Modified",
            at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        ))
        .body(jpeg))
}

/// `GET /v1/identities/{id}/faces/{face}/crop`: the enrolled face's aligned 112×112 crop
/// (JPEG), kept only with `gallery.keep_crops`.
async fn face_crop(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let (id, face) = path.into_inner();
    let (id, face) = (parse_id(&id, "identity")?, parse_id(&face, "face")?);
    let service = state.service.clone();
    let jpeg = blocking(move || {
        let template = service
            .store()
            .list_templates(id)?
            .into_iter()
            .find(|t| t.id == face)
            .ok_or_else(|| ApiError::NotFound(format!("face {face} of identity {id} not found")))?;
        let crop = template
            .crop
            .and_then(|rgb| image::RgbImage::from_raw(112, 112, rgb))
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "face {face} has no crop: crops are kept only with gallery.keep_crops = true"
                ))
            })?;
        crate::imageio::encode_jpeg(&crop, 90).map_err(|e| {
            tracing::error!(error = %e, "encoding a face crop");
            ApiError::Internal
        })
    })
    .await?;
    Ok(private_jpeg(jpeg))
}

#[derive(Deserialize)]
struct RecentQuery {
    #[serde(default = "default_recent")]
    limit: usize,
}

fn default_recent() -> usize {
    50
}

async fn recent_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<RecentQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Read)?;
    check_limit(query.limit, crate::events::bus::RECENT_EVENTS)?;
    // where a person was seen before is history data: admin keys only
    let history = key.scope == Scope::Admin;
    let mut items = state.events.recent(query.limit);
    items.retain(|e| history || !e.kind.carries_history());
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// How long after an analysis stall `/v1/ready` reports the service not ready.
const STALL_NOT_READY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Some(f) = crate::tasks::failures().first() {
        return Err(ApiError::Unavailable(format!(
            "background task {} ended ({}): the service is stopping",
            f.task, f.reason
        )));
    }
    let now = chrono::Utc::now();
    if let Some(c) = state.cameras.snapshot().into_iter().find(|c| {
        c.last_analysis_stall
            .is_some_and(|t| now - t < STALL_NOT_READY)
    }) {
        return Err(ApiError::Unavailable(format!(
            "camera {}: frames stuck in the analysis stages (pipeline.stage_timeout_ms) at {}",
            c.id,
            c.last_analysis_stall
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        )));
    }
    let service = state.service.clone();
    let templates = blocking(move || {
        service
            .store()
            .list_identities(0, 1)
            .map_err(|e| ApiError::Unavailable(format!("gallery store: {e}")))?;
        Ok(service.templates())
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "status": "ready", "model": state.service.model(), "templates": templates
    })))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn create_identity(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<NewIdentity>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let service = state.service.clone();
    let identity =
        blocking(move || Ok(service.store().create_identity(body.into_inner())?)).await?;
    Ok(HttpResponse::Created().json(identity))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// Listing page sizes: 1 to 1000.
/// Page sizes: 1 … `max`.
pub(super) fn check_limit(limit: usize, max: usize) -> Result<(), ApiError> {
    if limit == 0 || limit > max {
        return Err(ApiError::BadRequest(format!(
            "limit = {limit} must be within [1, {max}]"
        )));
    }
    Ok(())
}

const MAX_PAGE: usize = 1000;

fn default_limit() -> usize {
    100
}

async fn list_identities(
    req: HttpRequest,
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    check_limit(page.limit, MAX_PAGE)?;
    let service = state.service.clone();
    let (offset, limit) = (page.offset, page.limit);
    let (items, total) =
        blocking(move || Ok(service.store().list_identities(offset, limit)?)).await?;
    Ok(HttpResponse::Ok().json(
        serde_json::json!({"items": items, "total": total, "offset": offset, "limit": limit}),
    ))
}

async fn get_identity(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let id = parse_id(&path, "identity")?;
    let service = state.service.clone();
    let identity = blocking(move || Ok(service.store().get_identity(id)?)).await?;
    Ok(HttpResponse::Ok().json(identity))
}

async fn update_identity(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: JsonObject<IdentityUpdate>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let id = parse_id(&path, "identity")?;
    let service = state.service.clone();
    let identity =
        blocking(move || Ok(service.store().update_identity(id, body.into_inner())?)).await?;
    Ok(HttpResponse::Ok().json(identity))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseQuery {
    /// `erase`: also delete the person's appearances (`history.enabled`): those
    /// recognised as them and those their faces match. `keep` (default): they stay, as
    /// unknown appearances.
    #[serde(default)]
    appearances: Option<String>,
}

async fn delete_identity(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<EraseQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Admin)?.name.clone();
    let id = parse_id(&path, "identity")?;
    let erase_appearances = match query.appearances.as_deref() {
        None | Some("keep") => false,
        Some("erase") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "appearances = {other:?}: expected `erase` or `keep`"
            )))
        }
    };
    let history = match erase_appearances {
        true => Some(super::search::history(&state)?.clone()),
        false => None,
    };
    let service = state.service.clone();
    let audit_key = key.clone();
    let (removed, appearances) = blocking(move || {
        // The person is marked erased first (nothing new matches or names them); their
        // appearances go next, found by their faces; the identity last. If the
        // appearances fail, nothing is erased and the request can be repeated; the other
        // order would leave them behind with no faces left to find them by.
        let mut failed: Option<ApiError> = None;
        let erased = service.erase_identity(id, erase_appearances, || match &history {
            None => Ok(None),
            Some(h) => {
                let run = || -> Result<usize, ApiError> {
                    let templates = super::search::identity_templates(&service, id)?;
                    let n = h.erase(id, &templates, service.match_threshold())?;
                    h.audit(&audit_key, "erase", &format!("identity {id}"), n);
                    Ok(n)
                };
                run().map(Some).map_err(|e| {
                    let said = e.to_string();
                    failed = Some(e);
                    ServiceError::ErasureLog(format!("the appearances were not erased: {said}"))
                })
            }
        });
        match erased {
            Ok(done) => Ok(done),
            Err(e) => Err(failed.take().unwrap_or_else(|| e.into())),
        }
    })
    .await?;
    tracing::info!(identity = %id, removed_faces = removed, removed_appearances = ?appearances, by = %key, "erasure request completed");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": id, "deleted": true, "removed_faces": removed, "removed_appearances": appearances
    })))
}

#[derive(Deserialize)]
struct FaceQuery {
    #[serde(default)]
    source: Option<String>,
    /// Which face of a photo with several: `only` (default: refuse), `largest`, `center`.
    #[serde(default)]
    face: FaceChoice,
}

async fn add_face(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<FaceQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let id = parse_id(&path, "identity")?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let service = state.service.clone();
    let FaceQuery { source, face } = query.into_inner();
    let source = source.unwrap_or_else(|| "api upload".into());
    let history = state.history.clone();
    let (enrolled, seen) = blocking(move || {
        let image = service.decode(&body, "uploaded image")?;
        let enrolled = service.enroll(id, &image, &source, face)?;
        let seen = history
            .as_ref()
            .map(|h| super::search::seen_before(&service, h, id, &enrolled.template.embedding));
        Ok((enrolled, seen))
    })
    .await?;
    let mut body = serde_json::to_value(&enrolled).map_err(|_| ApiError::Internal)?;
    if let Some(seen) = seen {
        seen.report(&state, &mut body).await;
    }
    Ok(HttpResponse::Created().json(body))
}

async fn list_faces(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let id = parse_id(&path, "identity")?;
    let service = state.service.clone();
    let faces = blocking(move || Ok(service.store().list_templates(id)?)).await?;
    // where the face's crop can be fetched, when one was kept (`gallery.keep_crops`)
    let items: Vec<serde_json::Value> = faces
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["crop_url"] = match t.crop {
                Some(_) => format!("/v1/identities/{id}/faces/{}/crop", t.id).into(),
                None => serde_json::Value::Null,
            };
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"items": items})))
}

async fn delete_face(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let (id, face) = path.into_inner();
    let (id, face) = (parse_id(&id, "identity")?, parse_id(&face, "face")?);
    let service = state.service.clone();
    blocking(move || Ok(service.delete_face(id, face)?)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct SearchQuery {
    top_k: Option<usize>,
}

async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<SearchQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let top_k = query.top_k.unwrap_or(state.top_k);
    if !(1..=100).contains(&top_k) {
        return Err(ApiError::BadRequest(format!(
            "top_k = {top_k} must be within [1, 100]"
        )));
    }
    let body = read_body(payload, state.max_body_bytes).await?;
    let service = state.service.clone();
    let faces = blocking(move || {
        let image = service.decode(&body, "uploaded image")?;
        Ok(service.search(&image, top_k)?)
    })
    .await?;
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({"model": state.service.model(), "faces": faces})),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    /// Base64 image bytes.
    a: String,
    b: String,
}

async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<VerifyBody>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let decode = |field: &str, s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| ApiError::BadRequest(format!("`{field}` is not base64: {e}")))
    };
    let (a, b) = (decode("a", &body.a)?, decode("b", &body.b)?);
    let service = state.service.clone();
    let result = blocking(move || {
        let images = service.decode_all(&[(&a, "image a"), (&b, "image b")])?;
        Ok(service.verify(&images[0], &images[1])?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(result))
}

async fn stale(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let service = state.service.clone();
    let items = blocking(move || Ok(service.store().stale_identities(service.model())?)).await?;
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({"model": state.service.model(), "items": items})),
    )
}

async fn event_schema() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/schema+json")
        .body(crate::events::SCHEMA_V1)
}

/// Publish a `test` event to every endpoint subscribed to it.
async fn test_event(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let events = state.events.clone();
    let event = Event::new(EventType::Test);
    let id = event.id;
    let endpoints = blocking(move || Ok(events.publish(&event)?)).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"id": id, "endpoints": endpoints})))
}

#[derive(Deserialize)]
struct DeadQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

async fn dead_letters(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DeadQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    check_limit(query.limit, MAX_PAGE)?;
    let events = state.events.clone();
    let limit = query.limit;
    let items = blocking(move || Ok(events.outbox().dead_letters(limit)?)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"items": items})))
}

#[derive(Deserialize)]
struct RedeliverQuery {
    seq: Option<i64>,
}

async fn redeliver(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<RedeliverQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let events = state.events.clone();
    let seq = query.seq;
    let n = blocking(move || Ok(events.outbox().redeliver(seq)?)).await?;
    if n == 0 && seq.is_some() {
        return Err(ApiError::NotFound(format!(
            "dead letter {} not found",
            seq.unwrap_or_default()
        )));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"redelivered": n})))
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text
/// format 0.0.4 (curl, promtool, older scrapers).
async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let m = crate::telemetry::metrics();
    m.gallery_templates.set(state.service.templates() as i64);
    let openmetrics = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(m.encode())
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(crate::telemetry::to_text_format(&m.encode()))
    }
}
