//! `/v1/cameras`: each camera's state, the verdict on its faces, and its latest analysed
//! frame.

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::authorize;
use super::http::blocking;
use super::{ApiError, AppState, Scope};

pub(super) async fn cameras(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Scope::Read)?;
    // each camera with the verdict on its faces (`telemetry::faces`): why it does not
    // recognise, with the numbers
    let cameras: Vec<serde_json::Value> = state
        .cameras
        .snapshot()
        .into_iter()
        .map(|c| {
            let faces = crate::telemetry::metrics().camera_verdict(&c.id);
            let mut v = serde_json::to_value(c).unwrap_or_default();
            v["faces"] = serde_json::to_value(faces).unwrap_or_default();
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "node": state.node, "cameras": cameras })))
}

/// Longest side of a camera preview, in pixels.
const PREVIEW_SIDE: u32 = 640;

/// `GET /v1/cameras/{id}/snapshot`: the camera's latest analysed frame (JPEG, shrunk to
/// fit 640 pixels), with `Last-Modified` saying when it was captured.
pub(super) async fn camera_snapshot(
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
