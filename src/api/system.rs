//! Health, readiness, the OpenAPI document and `/metrics`: what needs no key.

use actix_web::{web, HttpRequest, HttpResponse};

use super::http::blocking;
use super::{ApiError, AppState};

pub(super) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// How long after an analysis stall `/v1/ready` reports the service not ready.
const STALL_NOT_READY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

pub(super) async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
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

const OPENAPI: &str = include_str!("openapi.json");

pub(super) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic text
/// format 0.0.4 (curl, promtool, older scrapers).
pub(super) async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
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
