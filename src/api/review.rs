//! The review queue (`review.enabled`): unknown tracks grouped by probable person, to
//! enrol ("this unknown is Alice") or dismiss.
//!
//! - `GET /v1/review/unknowns` (read): the kept tracks in groups, each with its best
//!   shots and the nearest enrolled identity (to offer "add to <identity>").
//! - `GET /v1/review/tracks/{id}/shots/{n}` (read): a best shot, JPEG.
//! - `POST /v1/review/enroll` (admin): tracks → a new identity (`name`) or an existing one
//!   (`identity`); each best shot becomes a template whose source names its track and
//!   camera. The tracks then leave the queue.
//! - `POST /v1/review/dismiss` (admin): tracks leave the queue.
//!
//! With review off every route answers 404 naming the setting.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::authorize;
use super::http::{blocking, parse_id, private_jpeg};
use super::AppState;
use super::{ApiError, JsonObject, Scope};
use crate::gallery::service::GalleryService;
use crate::gallery::{NewIdentity, Template};
use crate::review::{Group, ReviewConfig, ReviewError, ReviewStore, TrackSummary};

use crate::telemetry::metrics;

/// Tracks one enrol or dismiss request may name.
pub const MAX_TRACKS_PER_REQUEST: usize = 1000;
/// Best shots listed per group.
const GROUP_SHOTS: usize = 4;

impl From<ReviewError> for ApiError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::NotFound(_) | ReviewError::NoShot { .. } => {
                ApiError::NotFound(e.to_string())
            }
            ReviewError::Storage(_) => {
                tracing::error!(error = %e, "review store");
                ApiError::Internal
            }
        }
    }
}

fn queue(state: &AppState) -> Result<(Arc<ReviewStore>, ReviewConfig), ApiError> {
    state
        .review
        .as_ref()
        .map(|(store, config)| (store.clone(), config.clone()))
        .ok_or_else(|| {
            ApiError::NotFound(
                "the review queue is off: unknown tracks are kept only with review.enabled = true"
                    .into(),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnknownsQuery {
    #[serde(default)]
    camera: Option<String>,
    #[serde(default)]
    since: Option<DateTime<Utc>>,
    #[serde(default = "default_groups")]
    limit: usize,
}

fn default_groups() -> usize {
    50
}

fn track_json(t: &TrackSummary) -> serde_json::Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    v["shot_urls"] = (0..t.shots.len())
        .map(|n| format!("/v1/review/tracks/{}/shots/{n}", t.id))
        .collect();
    v
}

/// The groups as JSON, with each group's nearest enrolled identity (searched for the
/// groups shown only).
fn groups_json(
    tracks: &[TrackSummary],
    groups: &[Group],
    config: &ReviewConfig,
    service: &GalleryService,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let mut out = Vec::new();
    for g in groups.iter().take(limit) {
        let members: Vec<&TrackSummary> = g.members.iter().map(|&i| &tracks[i]).collect();
        let mut shots: Vec<(f32, &TrackSummary, usize)> = members
            .iter()
            .flat_map(|t| t.shots.iter().enumerate().map(move |(n, q)| (*q, *t, n)))
            .collect();
        shots.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut cameras: Vec<&str> = members.iter().map(|t| t.camera.as_str()).collect();
        cameras.sort_unstable();
        cameras.dedup();
        let nearest = if members[0].model == service.model() {
            service.identify(&g.template, 1)?.1.into_iter().next().map(
                |c| serde_json::json!({"id": c.identity, "name": c.name, "similarity": c.score}),
            )
        } else {
            None
        };
        out.push(serde_json::json!({
            "id": members[0].id,
            "size": members.len(),
            "cameras": cameras,
            "first_seen": members.iter().map(|t| t.first_seen).min(),
            "last_seen": members.iter().map(|t| t.last_seen).max(),
            "best_shots": shots.iter().take(GROUP_SHOTS).map(|(q, t, n)| serde_json::json!({
                "track": t.id,
                "shot": n,
                "quality": q,
                "url": format!("/v1/review/tracks/{}/shots/{n}", t.id),
            })).collect::<Vec<_>>(),
            "nearest_identity": nearest,
            "tracks": members.iter().map(|t| track_json(t)).collect::<Vec<_>>(),
        }));
    }
    Ok(serde_json::json!({
        "groups": out,
        "groups_total": groups.len(),
        "tracks_total": tracks.len(),
        "group_similarity": config.group_similarity,
    }))
}

pub(super) async fn unknowns(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<UnknownsQuery>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let (store, config) = queue(&state)?;
    let query = query.into_inner();
    if query.limit == 0 || query.limit > 1000 {
        return Err(ApiError::BadRequest(format!(
            "limit = {} must be within [1, 1000]",
            query.limit
        )));
    }
    let service = state.service.clone();
    let body = blocking(move || {
        store.prune(Utc::now(), config.retention_s, config.max_tracks)?;
        // the groups are kept as tracks come and go: a lookup per track here, not every
        // track compared with every group on every call
        let mut tracks = store.summaries()?;
        let all = tracks.clone();
        tracks.retain(|t| {
            query.since.is_none_or(|since| t.last_seen >= since)
                && query.camera.as_ref().is_none_or(|c| &t.camera == c)
        });
        let groups = store.with_groups(config.group_similarity, &all, |g| g.groups_of(&tracks))?;
        groups_json(&tracks, &groups, &config, &service, query.limit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

pub(super) async fn shot(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    let (store, _) = queue(&state)?;
    let (track, n) = path.into_inner();
    let id = parse_id(&track, "unknown track")?;
    let n: usize = n
        .parse()
        .map_err(|_| ApiError::NotFound(format!("shot {n:?} of track {id} not found")))?;
    let jpeg = blocking(move || Ok(store.shot_jpeg(id, n)?)).await?;
    Ok(private_jpeg(jpeg))
}

/// Track ids of a request: 1 to [`MAX_TRACKS_PER_REQUEST`], no repeats.
fn track_ids(raw: &[String]) -> Result<Vec<Uuid>, ApiError> {
    if raw.is_empty() || raw.len() > MAX_TRACKS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "tracks names {} track(s); it must name 1 to {MAX_TRACKS_PER_REQUEST}",
            raw.len()
        )));
    }
    let mut ids = Vec::with_capacity(raw.len());
    for r in raw {
        let id = Uuid::parse_str(r)
            .map_err(|_| ApiError::BadRequest(format!("tracks: {r:?} is not a track id")))?;
        if ids.contains(&id) {
            return Err(ApiError::BadRequest(format!("tracks: {id} is named twice")));
        }
        ids.push(id);
    }
    Ok(ids)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnrollRequest {
    tracks: Vec<String>,
    /// An existing identity…
    #[serde(default)]
    identity: Option<String>,
    /// …or a new one.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

pub(super) async fn enroll(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<EnrollRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Admin)?.name.clone();
    let (store, _) = queue(&state)?;
    let body = body.into_inner();
    let ids = track_ids(&body.tracks)?;
    let target =
        match (&body.identity, &body.name) {
            (Some(id), None) => Some(parse_id(id, "identity")?),
            (None, Some(_)) => None,
            _ => return Err(ApiError::BadRequest(
                "name exactly one of identity (an enrolled identity's id) or name (a new identity)"
                    .into(),
            )),
        };
    if target.is_some() && body.metadata.is_some() {
        return Err(ApiError::BadRequest(
            "metadata goes with name (a new identity); change an existing identity with PATCH /v1/identities/{id}".into(),
        ));
    }
    let service = state.service.clone();
    let history = state.history.clone();
    let (identity, added, created, refused, seen) = blocking(move || {
        // One decision on tracks at a time, from reading the tracks to removing them from
        // the queue: two requests for one group cannot both enrol it, nor can a dismissal
        // meanwhile take out a track being enrolled (the second finds the tracks gone: 404).
        let _one = store.decision();
        // every track and the identity checked before anything changes
        let tracks = ids
            .iter()
            .map(|&id| store.get(id))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(t) = tracks.iter().find(|t| t.model != service.model()) {
            return Err(ApiError::Unprocessable {
                message: format!(
                    "track {} was embedded with {}, this gallery matches {}: it cannot be enrolled",
                    t.id,
                    t.model,
                    service.model()
                ),
                faces: None,
            });
        }
        let usable = tracks
            .iter()
            .flat_map(|t| &t.shots)
            .filter(|s| s.quality >= service.min_enroll_quality())
            .count();
        if usable == 0 {
            return Err(ApiError::Unprocessable {
                message: format!(
                    "no shot of these tracks reaches gallery.min_enroll_quality {}: nothing to enrol",
                    service.min_enroll_quality()
                ),
                faces: None,
            });
        }
        let (identity, created) = match target {
            Some(id) => (service.store().get_identity(id)?, false),
            None => (
                service.store().create_identity(NewIdentity {
                    name: body.name.clone().unwrap_or_default(),
                    metadata: body.metadata.clone(),
                })?,
                true,
            ),
        };
        let min_quality = service.min_enroll_quality();
        let mut added = Vec::new();
        let mut refused = 0;
        for track in &tracks {
            for shot in &track.shots {
                if shot.quality < min_quality {
                    refused += 1;
                    continue;
                }
                added.push(Template {
                    id: Uuid::now_v7(),
                    identity_id: identity.id,
                    model: track.model.clone(),
                    embedding: shot.embedding.clone(),
                    quality: shot.quality,
                    source: format!("review: track {} on camera {}", track.id, track.camera),
                    created: Utc::now(),
                    crop: service
                        .keeps_crops()
                        .then(|| image::load_from_memory(&shot.jpeg).ok())
                        .flatten()
                        .map(|img| img.to_rgb8().into_raw()),
                });
            }
        }
        // every shot or none: a failure leaves the gallery and the queue as they were
        if let Err(e) = service.import_templates(&added) {
            if created {
                let _ = service.delete_identity(identity.id);
            }
            return Err(e.into());
        }
        store.remove(&ids)?;
        metrics().review_tracks.set(store.count()? as i64);
        let identity = service.store().get_identity(identity.id)?;
        // retroactive recognition, as for an upload: where the person was seen before
        let pooled = crate::history::pooled(
            &added
                .iter()
                .map(|t| (t.embedding.clone(), t.quality))
                .collect::<Vec<_>>(),
        );
        let seen = match (&history, pooled) {
            (Some(h), Some(probe)) => Some(super::search::seen_before(
                &service,
                h,
                identity.id,
                &probe,
            )),
            _ => None,
        };
        Ok((identity, added, created, refused, seen))
    })
    .await?;
    tracing::info!(
        identity = %identity.id,
        name = %identity.name,
        faces = added.len(),
        tracks = body.tracks.len(),
        by = %key,
        "unknown tracks enrolled from the review queue"
    );
    let mut response = serde_json::json!({
        "identity": identity,
        "faces": added,
        "tracks": body.tracks,
        "shots_under_min_quality": refused,
    });
    if let Some(seen) = seen {
        seen.report(&state, &mut response).await;
    }
    Ok(if created {
        HttpResponse::Created().json(response)
    } else {
        HttpResponse::Ok().json(response)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DismissRequest {
    tracks: Vec<String>,
}

pub(super) async fn dismiss(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<DismissRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Admin)?.name.clone();
    let (store, _) = queue(&state)?;
    let ids = track_ids(&body.tracks)?;
    let dismissed = blocking(move || {
        // one unit with enrolment: a track being enrolled is not dismissed meanwhile
        let _one = store.decision();
        for &id in &ids {
            // all named tracks must be there: nothing is removed otherwise
            store.get(id)?;
        }
        let removed = store.remove(&ids)?;
        metrics().review_tracks.set(store.count()? as i64);
        Ok(removed)
    })
    .await?;
    tracing::info!(tracks = dismissed, by = %key, "unknown tracks dismissed from the review queue");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dismissed": dismissed })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_lists_are_bounded_and_free_of_repeats() {
        let id = Uuid::now_v7().to_string();
        assert!(matches!(track_ids(&[]), Err(ApiError::BadRequest(m)) if m.contains("1 to 1000")));
        assert!(
            matches!(track_ids(&[id.clone(), id.clone()]), Err(ApiError::BadRequest(m)) if m.contains("named twice"))
        );
        assert!(
            matches!(track_ids(&["x".into()]), Err(ApiError::BadRequest(m)) if m.contains("\"x\" is not a track id"))
        );
        let many = vec![id.clone(); MAX_TRACKS_PER_REQUEST + 1];
        assert!(
            matches!(track_ids(&many), Err(ApiError::BadRequest(m)) if m.contains("1001 track(s)"))
        );
        assert_eq!(track_ids(std::slice::from_ref(&id)).unwrap().len(), 1);
    }
}
