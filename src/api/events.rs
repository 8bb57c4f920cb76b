//! `/v1/events`: the recent ones, the schema, a test event, dead letters and their
//! redelivery, and the frame an event was decided on (the live stream is in `stream`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::authorize;
use super::http::{blocking, check_limit, default_limit, parse_id, private_jpeg, MAX_PAGE};
use super::{ApiError, AppState, Scope};
use crate::events::{Event, EventType};

#[derive(Deserialize)]
pub(super) struct RecentQuery {
    #[serde(default = "default_recent")]
    limit: usize,
}

fn default_recent() -> usize {
    50
}

pub(super) async fn recent_events(
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

pub(super) async fn event_schema() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/schema+json")
        .body(crate::events::SCHEMA_V1)
}

/// Publish a `test` event to every endpoint subscribed to it.
pub(super) async fn test_event(
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
pub(super) struct DeadQuery {
    #[serde(default = "default_limit")]
    limit: usize,
}

pub(super) async fn dead_letters(
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
pub(super) struct RedeliverQuery {
    seq: Option<i64>,
}

pub(super) async fn redeliver(
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

/// `GET /v1/events/{id}/snapshot`: the frame an identity event was decided on (JPEG).
pub(super) async fn snapshot(
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
