//! `GET /v1/events/stream`: events as they are published, as server-sent events.
//!
//! For consoles and integrators that want to watch rather than receive webhooks. Each
//! event is one SSE message: `id:` the event id, `event:` its type, `data:` the event JSON
//! (schema v1, one line). A client that reconnects with `Last-Event-ID` gets the events it
//! missed while they are among the last [`RECENT_EVENTS`] held in memory; past that, and
//! when it falls more than [`LIVE_BUFFER`] events behind, it gets an `event: gap` message
//! saying so. The stream is not the durable path: webhooks, MQTT and the outbox are.
//! Filters: `types` (comma-separated event types) and `camera`. A comment line every
//! [`HEARTBEAT`] keeps proxies from closing an idle stream; the stream ends when the
//! service shuts down, and a stream opened with a console session ends when that session
//! is logged out, expires or is evicted.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::sync::broadcast::{error::RecvError, Receiver};
use uuid::Uuid;

use super::auth::authorize;
use super::AppState;
use super::{ApiError, Scope};
use crate::events::bus::{LIVE_BUFFER, RECENT_EVENTS};
use crate::events::{Event, EventType};
use crate::shutdown::Shutdown;

/// Interval of the keep-alive comment.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Reconnection delay suggested to clients (`retry:`), in milliseconds.
const RETRY_MS: u64 = 3000;

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    /// Comma-separated event types; all when absent.
    #[serde(default)]
    types: Option<String>,
    /// Only this camera's events.
    #[serde(default)]
    camera: Option<String>,
}

/// Which events a stream carries.
struct Filter {
    types: Option<Vec<EventType>>,
    camera: Option<String>,
    /// Whether events carrying appearance history reach this client (admin keys).
    history: bool,
}

impl Filter {
    fn parse(query: StreamQuery) -> Result<Filter, ApiError> {
        let types = match query.types {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        EventType::ALL
                            .into_iter()
                            .find(|k| k.as_str() == t)
                            .ok_or_else(|| {
                                let known: Vec<&str> =
                                    EventType::ALL.iter().map(|k| k.as_str()).collect();
                                ApiError::BadRequest(format!(
                                    "types: `{t}` is not an event type; expected some of {known:?}"
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Filter {
            types,
            history: false,
            camera: query.camera,
        })
    }

    fn wants(&self, event: &Event) -> bool {
        (self.history || !event.kind.carries_history())
            && self.types.as_ref().is_none_or(|t| t.contains(&event.kind))
            && self
                .camera
                .as_ref()
                .is_none_or(|c| event.camera_id.as_deref() == Some(c.as_str()))
    }
}

/// One SSE message for `event`.
fn message(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.id,
        event.kind.as_str()
    ))
}

/// The `event: gap` message: events were missed and are not coming.
fn gap(data: serde_json::Value) -> Bytes {
    Bytes::from(format!("event: gap\ndata: {data}\n\n"))
}

/// Counts itself in `facestream_event_streams` while it lives (until the stream ends or
/// the client goes away).
struct Connected;

impl Connected {
    fn new() -> Connected {
        crate::telemetry::metrics().event_streams.inc();
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        crate::telemetry::metrics().event_streams.dec();
    }
}

struct Stream {
    _connected: Connected,
    pending: VecDeque<Bytes>,
    live: Receiver<Event>,
    /// Ids of replayed events, which the live receiver may deliver again.
    replayed: Vec<Uuid>,
    filter: Filter,
    shutdown: Shutdown,
    heartbeat: tokio::time::Interval,
    /// For a stream opened with a console session: it ends when the session does.
    session: Option<super::session::SessionWatch>,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Bytes, actix_web::Error>, Stream)> {
        if let Some(bytes) = self.pending.pop_front() {
            return Some((Ok(bytes), self));
        }
        let shutdown = self.shutdown.clone();
        let (ended, expires) = match &self.session {
            Some(w) => (
                w.ended.clone(),
                Some(tokio::time::Instant::from_std(w.expires)),
            ),
            None => (tokio_util::sync::CancellationToken::new(), None),
        };
        let expiry = async move {
            match expires {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                _ = shutdown.requested() => return None,
                // the console session it was opened with was logged out, evicted or
                // expired: what it may see ends now
                _ = ended.cancelled() => return None,
                _ = &mut expiry => return None,
                _ = self.heartbeat.tick() => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), self));
                }
                received = self.live.recv() => match received {
                    Ok(event) if self.filter.wants(&event) && !self.replayed.contains(&event.id) => {
                        return Some((Ok(message(&event)), self));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        let bytes = gap(serde_json::json!({
                            "missed": missed,
                            "reason": format!("the client fell more than {LIVE_BUFFER} events behind"),
                        }));
                        return Some((Ok(bytes), self));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

pub(super) async fn event_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Read)?;
    // where a person was seen before is history data: admin keys only
    let history = key.scope == Scope::Admin;
    // authorised by a session cookie (no bearer header): the stream lives no longer than
    // the session
    let session = match req.headers().get("authorization") {
        Some(_) => None,
        None => super::session::cookie_token(&req).and_then(|t| state.sessions.watch(&t)),
    };
    let mut filter = Filter::parse(query.into_inner())?;
    filter.history = history;
    let last = match req.headers().get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| Uuid::parse_str(v.trim()).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be an event id (a UUID)".into())
                })?,
        ),
    };
    let (live, replay) = state.events.follow(last);
    let mut pending = VecDeque::from([Bytes::from(format!("retry: {RETRY_MS}\n\n"))]);
    let mut replayed = Vec::new();
    match replay {
        Some(events) => {
            for event in events.iter().filter(|e| filter.wants(e)) {
                pending.push_back(message(event));
            }
            replayed = events.into_iter().map(|e| e.id).collect();
        }
        None => pending.push_back(gap(serde_json::json!({
            "last_event_id": last,
            "reason": format!("not among the last {RECENT_EVENTS} events kept in memory"),
        }))),
    }
    let heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let stream = Stream {
        _connected: Connected::new(),
        pending,
        live,
        replayed,
        filter,
        shutdown: state.shutdown.clone(),
        heartbeat,
        session,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(futures_util::stream::unfold(stream, Stream::next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(types: Option<&str>, camera: Option<&str>) -> StreamQuery {
        StreamQuery {
            types: types.map(String::from),
            camera: camera.map(String::from),
        }
    }

    #[test]
    fn filters_by_type_and_camera() {
        let mut event = Event::new(EventType::CameraDown);
        event.camera_id = Some("gate".into());
        let wants = |types, camera| Filter::parse(query(types, camera)).unwrap().wants(&event);
        assert!(wants(None, None));
        // where a person was seen before: admin keys only, also when asked for by type
        let seen = Event::new(EventType::IdentitySeenBefore);
        let mut read = Filter::parse(query(Some("identity.seen_before"), None)).unwrap();
        assert!(!read.wants(&seen));
        read.history = true;
        assert!(read.wants(&seen));
        assert!(wants(Some("camera.down, camera.up"), None));
        assert!(!wants(Some("identity.recognized"), None));
        assert!(wants(None, Some("gate")));
        assert!(!wants(None, Some("door")));
        assert!(!wants(Some("camera.down"), Some("door")));
        assert!(Filter::parse(query(Some("camera.dwn"), None)).is_err());
    }

    #[test]
    fn a_message_is_one_sse_event_with_the_id_and_type() {
        let event = Event::new(EventType::Test);
        let text = String::from_utf8(message(&event).to_vec()).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], format!("id: {}", event.id));
        assert_eq!(lines[1], "event: test");
        assert!(lines[2].starts_with("data: {"));
        assert_eq!(&lines[3..], ["", ""], "one message, ended by a blank line");
    }
}
