//! What every handler shares: the blocking pool, bounded bodies, ids from paths, page
//! sizes and private JPEG answers.

use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::ApiError;

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

#[derive(Deserialize)]
pub(super) struct Page {
    #[serde(default)]
    pub(super) offset: usize,
    #[serde(default = "default_limit")]
    pub(super) limit: usize,
}

/// Page sizes: 1 … `max`.
pub(super) fn check_limit(limit: usize, max: usize) -> Result<(), ApiError> {
    if limit == 0 || limit > max {
        return Err(ApiError::BadRequest(format!(
            "limit = {limit} must be within [1, {max}]"
        )));
    }
    Ok(())
}

pub(super) const MAX_PAGE: usize = 1000;

pub(super) fn default_limit() -> usize {
    100
}
