//! `/v1/search` (who is in this photo: 1:N against the gallery) and `/v1/verify` (are
//! these two photos the same person: 1:1).

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;

use super::auth::authorize;
use super::http::{blocking, read_body};
use super::{ApiError, AppState, JsonObject, Scope};

#[derive(Deserialize)]
pub(super) struct SearchQuery {
    top_k: Option<usize>,
}

pub(super) async fn search(
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
pub(super) struct VerifyBody {
    /// Base64 image bytes.
    a: String,
    b: String,
}

pub(super) async fn verify(
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
