//! The appearance history over HTTP (`history.enabled`): `POST /v1/search/faces`,
//! `GET /v1/identities/{id}/appearances`, an appearance's best shot, its deletion and the
//! search audit. Admin scope throughout: searching where people were is surveillance of
//! its own, so every search is also written to the audit table with the key's name.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::authorize;
use super::http::{blocking, check_limit, parse_id, private_jpeg, read_body};
use super::AppState;
use super::{ApiError, Scope};
use crate::gallery::service::{FaceChoice, GalleryService};
use crate::history::{Found, History, Order, Query, Results};
use crate::telemetry::{metrics, SearchKindLabel};

/// Most results one search returns.
pub(super) const MAX_RESULTS: usize = 1000;

/// Filters of a search (the query string).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SearchParams {
    camera: Option<String>,
    /// Appearances overlapping [from, to] (RFC 3339).
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Default: `match.threshold`.
    min_similarity: Option<f32>,
    /// 1 … 1000, default 100.
    limit: Option<usize>,
    /// `newest` (default) or `similarity`.
    order: Option<Order>,
    /// Which face of a photo with several (`only`, the default, `largest`, `center`).
    face: Option<FaceChoice>,
}

impl SearchParams {
    fn query(&self, threshold: f32) -> Result<Query, ApiError> {
        let limit = self.limit.unwrap_or(100);
        check_limit(limit, MAX_RESULTS)?;
        let min_similarity = self.min_similarity.unwrap_or(threshold);
        if !(-1.0..=1.0).contains(&min_similarity) {
            return Err(ApiError::BadRequest(format!(
                "min_similarity = {min_similarity} is outside the cosine range [-1, 1]"
            )));
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            if from > to {
                return Err(ApiError::BadRequest(format!(
                    "from = {} is after to = {}",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                )));
            }
        }
        Ok(Query {
            camera: self.camera.clone(),
            from: self.from,
            to: self.to,
            min_similarity,
            limit,
            order: self.order.unwrap_or_default(),
            only_unknown: false,
        })
    }

    /// The filters, for the audit (never a face).
    fn describe(&self, q: &Query) -> String {
        let mut out = format!(
            "min_similarity={:.3} limit={} order={:?}",
            q.min_similarity, q.limit, q.order
        );
        if let Some(c) = &self.camera {
            out.push_str(&format!(" camera={c}"));
        }
        if let Some(t) = self.from {
            out.push_str(&format!(" from={}", t.to_rfc3339()));
        }
        if let Some(t) = self.to {
            out.push_str(&format!(" to={}", t.to_rfc3339()));
        }
        out
    }
}

/// A JSON probe: exactly one of an enrolled identity, a kept appearance, or a photo.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeBody {
    identity: Option<Uuid>,
    track_id: Option<Uuid>,
    /// Base64 image bytes.
    image: Option<String>,
}

enum Probe {
    Photo(Vec<u8>),
    Identity(Uuid),
    Track(Uuid),
}

impl Probe {
    fn kind(&self) -> &'static str {
        match self {
            Probe::Photo(_) => "photo",
            Probe::Identity(_) => "identity",
            Probe::Track(_) => "track",
        }
    }

    fn describe(&self) -> String {
        match self {
            Probe::Photo(bytes) => format!("photo of {} bytes", bytes.len()),
            Probe::Identity(id) => format!("identity {id}"),
            Probe::Track(id) => format!("track {id}"),
        }
    }
}

pub(super) fn history(state: &AppState) -> Result<&Arc<History>, ApiError> {
    state.history.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "the appearance history is off: appearances are kept only with history.enabled = true"
                .into(),
        )
    })
}

/// An identity's enrolled templates of the current model, as (embedding, quality);
/// 404 for an identity that does not exist.
pub(super) fn identity_templates(
    service: &GalleryService,
    identity: Uuid,
) -> Result<Vec<(Vec<f32>, f32)>, ApiError> {
    service.store().get_identity(identity)?;
    Ok(service
        .store()
        .list_templates(identity)?
        .into_iter()
        .filter(|t| t.model == service.model())
        .map(|t| (t.embedding, t.quality))
        .collect())
}

/// Results as JSON, with the names of the identities they were recognised as.
fn items(service: &GalleryService, found: &[Found]) -> Result<Vec<serde_json::Value>, ApiError> {
    let ids: Vec<Uuid> = {
        let mut ids: Vec<Uuid> = found
            .iter()
            .filter_map(|f| f.stored.appearance.identity)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let names: HashMap<Uuid, String> = service.store().names(&ids)?.into_iter().collect();
    Ok(found.iter().map(|f| item(f, &names)).collect())
}

pub(super) fn item(f: &Found, names: &HashMap<Uuid, String>) -> serde_json::Value {
    let a = &f.stored.appearance;
    serde_json::json!({
        "track_id": a.track_id,
        "camera": a.camera,
        "node": a.node,
        "first_seen": a.first_seen,
        "last_seen": a.last_seen,
        "spans": a.spans,
        "similarity": f.similarity,
        "quality": a.quality,
        "decision": if a.identity.is_some() { "recognized" } else { "unknown" },
        "identity": a.identity.map(|id| serde_json::json!({
            "id": id, "name": names.get(&id).cloned().unwrap_or_default()
        })),
        "event_id": a.event_id,
        "shot_url": f.stored.has_shot.then(|| format!("/v1/search/appearances/{}/shot", a.track_id)),
    })
}

fn respond(
    service: &GalleryService,
    probe: serde_json::Value,
    query: &Query,
    results: &Results,
) -> Result<serde_json::Value, ApiError> {
    Ok(serde_json::json!({
        "probe": probe,
        "min_similarity": query.min_similarity,
        "order": query.order,
        "items": items(service, &results.items)?,
        "more": results.more,
        "scanned": results.scanned,
    }))
}

fn count_search(kind: &str) {
    metrics()
        .history_searches
        .get_or_create(&SearchKindLabel { kind: kind.into() })
        .inc();
}

/// `POST /v1/search/faces`: the appearances of the face in a photo (the body: image
/// bytes, or JSON `{"image": base64}`), of an enrolled identity (`{"identity": id}`) or
/// of a kept appearance (`{"track_id": id}`).
pub(super) async fn search_faces(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<SearchParams>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Admin)?.name.clone();
    let history = history(&state)?.clone();
    let params = params.into_inner();
    let query = params.query(state.service.match_threshold())?;
    let body = read_body(payload, state.max_body_bytes).await?;
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let probe = if json {
        let b: ProbeBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        match (b.identity, b.track_id, b.image) {
            (Some(id), None, None) => Probe::Identity(id),
            (None, Some(id), None) => Probe::Track(id),
            (None, None, Some(image)) => Probe::Photo(
                base64::engine::general_purpose::STANDARD
                    .decode(image.trim())
                    .map_err(|e| ApiError::BadRequest(format!("`image` is not base64: {e}")))?,
            ),
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of `identity`, `track_id` or `image`".into(),
                ))
            }
        }
    } else {
        Probe::Photo(body)
    };
    let service = state.service.clone();
    let face = params.face.unwrap_or_default();
    let (kind, detail) = (
        probe.kind(),
        format!("{} {}", probe.describe(), params.describe(&query)),
    );
    let out = blocking(move || {
        let (described, results) = match probe {
            Probe::Photo(bytes) => {
                let image = service.decode(&bytes, "uploaded image")?;
                let found = service.embed_one(&image, face)?;
                (
                    serde_json::json!({"kind": "photo", "box": found.detection.bbox,
                                       "quality": found.quality.score}),
                    history.search(&found.embedding, &query)?,
                )
            }
            Probe::Identity(id) => {
                let templates = identity_templates(&service, id)?;
                if templates.is_empty() {
                    return Err(ApiError::Unprocessable {
                        message: format!(
                            "identity {id} has no face enrolled with {}",
                            service.model()
                        ),
                        faces: Some(0),
                    });
                }
                (
                    serde_json::json!({"kind": "identity", "identity": id}),
                    history.appearances_of(id, &templates, &query)?,
                )
            }
            Probe::Track(id) => {
                let stored = history.store().get(id)?;
                let template = &stored.appearance.template;
                if stored.appearance.model != service.model() {
                    return Err(ApiError::Unprocessable {
                        message: format!(
                            "appearance {id} was kept with {}, not the current model {}",
                            stored.appearance.model,
                            service.model()
                        ),
                        faces: None,
                    });
                }
                (
                    serde_json::json!({"kind": "track", "track_id": id}),
                    history.search(template, &query)?,
                )
            }
        };
        history.audit(&key, kind, &detail, results.items.len());
        respond(&service, described, &query, &results)
    })
    .await?;
    count_search(kind);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "private, no-store"))
        .json(out))
}

/// `GET /v1/identities/{id}/appearances`: one enrolled person's timeline — the
/// appearances recognised as them and those their templates match (from before their
/// enrolment too).
pub(super) async fn identity_appearances(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Admin)?.name.clone();
    let history = history(&state)?.clone();
    let id = parse_id(&path, "identity")?;
    let params = params.into_inner();
    let query = params.query(state.service.match_threshold())?;
    let detail = format!("identity {id} {}", params.describe(&query));
    let service = state.service.clone();
    let out = blocking(move || {
        let templates = identity_templates(&service, id)?;
        let results = history.appearances_of(id, &templates, &query)?;
        history.audit(&key, "appearances", &detail, results.items.len());
        respond(
            &service,
            serde_json::json!({"kind": "identity", "identity": id}),
            &query,
            &results,
        )
    })
    .await?;
    count_search("appearances");
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "private, no-store"))
        .json(out))
}

/// `GET /v1/search/appearances/{track_id}/shot`: an appearance's best shot (JPEG).
pub(super) async fn shot(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let history = history(&state)?.clone();
    let id = parse_id(&path, "appearance")?;
    let jpeg = blocking(move || {
        history.store().shot(id)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "appearance {id} has no shot (no aligned face was kept)"
            ))
        })
    })
    .await?;
    Ok(private_jpeg(jpeg))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteParams {
    track_id: String,
}

/// `DELETE /v1/search/appearances?track_id=…`: forget one appearance.
pub(super) async fn delete_appearance(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<DeleteParams>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Admin)?.name.clone();
    let history = history(&state)?.clone();
    let id = parse_id(&params.track_id, "appearance")?;
    blocking(move || {
        history.delete(id)?;
        history.audit(&key, "delete", &format!("track {id}"), 1);
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    limit: Option<usize>,
}

/// `GET /v1/search/audit`: the latest searches, deletions and erasures, newest first.
pub(super) async fn audit(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let history = history(&state)?.clone();
    let limit = params.limit.unwrap_or(100);
    check_limit(limit, MAX_RESULTS)?;
    let items = blocking(move || Ok(history.store().audit_log(limit)?)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// Appearances at most one enrolment reports as seen before.
const SEEN_BEFORE: usize = 20;

/// What an enrolment says of where the person was seen before.
pub(super) struct SeenBefore {
    /// The appearances as JSON items, or why they could not be read.
    items: Result<Vec<serde_json::Value>, String>,
    event: Option<crate::events::Event>,
}

impl SeenBefore {
    /// Put `seen_before` into the enrolment's response (null and `seen_before_error` when
    /// the history could not be read: the enrolment itself stands) and write the event.
    pub(super) async fn report(self, state: &AppState, body: &mut serde_json::Value) {
        match self.items {
            Ok(items) => body["seen_before"] = serde_json::Value::Array(items),
            Err(reason) => {
                body["seen_before"] = serde_json::Value::Null;
                body["seen_before_error"] = reason.into();
            }
        }
        if let Some(event) = self.event {
            publish_seen_before(state, event).await;
        }
    }
}

/// Retroactive recognition: the unknown appearances a face just enrolled to `identity`
/// matches at `match.threshold`, and the `identity.seen_before` event for them (none when
/// there are none). A failure is logged and reported, never an enrolment's failure: the
/// face is enrolled by then, and an error would make the client enrol it again.
pub(super) fn seen_before(
    service: &GalleryService,
    history: &History,
    identity: Uuid,
    embedding: &[f32],
) -> SeenBefore {
    match find_seen_before(service, history, identity, embedding) {
        Ok((items, event)) => SeenBefore {
            items: Ok(items),
            event,
        },
        Err(e) => {
            tracing::error!(%identity, error = %e, "enrolled; where the person was seen before could not be read");
            SeenBefore {
                items: Err(e.to_string()),
                event: None,
            }
        }
    }
}

fn find_seen_before(
    service: &GalleryService,
    history: &History,
    identity: Uuid,
    embedding: &[f32],
) -> Result<(Vec<serde_json::Value>, Option<crate::events::Event>), ApiError> {
    let results = history.seen_before(embedding, service.match_threshold(), SEEN_BEFORE)?;
    let items = items(service, &results.items)?;
    if results.items.is_empty() {
        return Ok((items, None));
    }
    let name = service.store().get_identity(identity)?.name;
    let mut event = crate::events::Event::new(crate::events::EventType::IdentitySeenBefore);
    event.identity = Some(crate::events::EventIdentity {
        id: identity,
        name,
        face_id: None,
    });
    event.appearances = Some(
        results
            .items
            .iter()
            .map(|f| {
                let a = &f.stored.appearance;
                crate::events::SeenAppearance {
                    track_id: a.track_id,
                    camera: a.camera.clone(),
                    first_seen: a.first_seen,
                    last_seen: a.last_seen,
                    similarity: f.similarity,
                    event_id: a.event_id,
                }
            })
            .collect(),
    );
    Ok((items, Some(event)))
}

/// Write an `identity.seen_before` event to the outbox (for the endpoints whose `types`
/// list it). A failure is logged: the enrolment stands, and its response says the same.
async fn publish_seen_before(state: &AppState, event: crate::events::Event) {
    let identity = event.identity.as_ref().map(|i| i.id);
    let events = state.events.clone();
    if let Err(e) = blocking(move || Ok(events.publish(&event)?)).await {
        tracing::error!(identity = ?identity, error = %e, "the identity.seen_before event could not be written");
    }
}
