//! `/v1/identities` and their faces: create, list, rename, erase (with the person's
//! appearances on request), enrol a photo, the kept crops, and identities whose templates
//! came from another model (`/v1/gallery/stale`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::authorize;
use super::http::{blocking, check_limit, parse_id, private_jpeg, read_body, Page, MAX_PAGE};
use super::{ApiError, AppState, JsonObject, Scope};
use crate::gallery::service::{FaceChoice, ServiceError};
use crate::gallery::{IdentityUpdate, NewIdentity};

pub(super) async fn create_identity(
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

pub(super) async fn list_identities(
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

pub(super) async fn get_identity(
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

pub(super) async fn update_identity(
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
pub(super) struct EraseQuery {
    /// `erase`: also delete the person's appearances (`history.enabled`): those
    /// recognised as them and those their faces match. `keep` (default): they stay, as
    /// unknown appearances.
    #[serde(default)]
    appearances: Option<String>,
}

pub(super) async fn delete_identity(
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
pub(super) struct FaceQuery {
    #[serde(default)]
    source: Option<String>,
    /// Which face of a photo with several: `only` (default: refuse), `largest`, `center`.
    #[serde(default)]
    face: FaceChoice,
}

pub(super) async fn add_face(
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

pub(super) async fn list_faces(
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

pub(super) async fn delete_face(
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

/// `GET /v1/identities/{id}/faces/{face}/crop`: the enrolled face's aligned 112×112 crop
/// (JPEG), kept only with `gallery.keep_crops`.
pub(super) async fn face_crop(
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

pub(super) async fn stale(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Admin)?;
    let service = state.service.clone();
    let items = blocking(move || Ok(service.store().stale_identities(service.model())?)).await?;
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({"model": state.service.model(), "items": items})),
    )
}
