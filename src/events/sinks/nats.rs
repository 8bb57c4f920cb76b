//! The NATS JetStream sink: the same outbox rows, published to JetStream, each settled by
//! the stream's publish acknowledgement.
//!
//! Subjects: `<subject_prefix>.<camera>.<event type>`, e.g.
//! `facestream.front-door.identity.recognized`; `_` stands for events without a camera,
//! and `.`, `*`, `>` and white space in a camera id become `_`. The payload is the event
//! JSON (the webhook body), with the header `Nats-Msg-Id: <event id>`, so JetStream drops
//! the copy a retry sends inside the stream's duplicate window (2 minutes by default): a
//! publish whose acknowledgement was lost is retried from the outbox without a second
//! message. Past the window a consumer still de-duplicates by the event id.
//!
//! A row is delivered when JetStream acknowledges it (it is then stored by the stream's
//! replicas); a server outage, or a subject no stream captures, leaves rows pending, and
//! they are retried with the same backoff as webhooks. With `stream` set, the stream is
//! created at the first connection if it does not exist (subjects `<prefix>.>`, file
//! storage); otherwise the operator creates it (docs/events.md, NATS).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Sink, SinkContext};
use crate::events::delivery::{record, EndpointQueue, Retry};
use crate::events::outbox::Outbox;
use crate::events::{Event, EventType};
use crate::shutdown::Shutdown;

/// How long a publish waits for its acknowledgement before the row is retried.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows published before their acknowledgements are awaited.
const BATCH: usize = 64;

/// One NATS server or cluster (`[[events.nats]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Unique endpoint name (shared namespace with webhooks and MQTT brokers).
    pub name: String,
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    pub url: String,
    /// First subject token.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// User and password, or a token, when the server asks for them.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    /// A JetStream stream to create (subjects `<subject_prefix>.>`, file storage) when
    /// it does not exist; empty (the default): the operator creates it.
    #[serde(default)]
    pub stream: String,
    /// Event types to publish; empty: all.
    #[serde(default)]
    pub types: Vec<String>,
}

fn default_prefix() -> String {
    "facestream".into()
}

impl NatsConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let at = format!("events.nats[{}]", self.name);
        if self.name.is_empty() || self.url.is_empty() {
            problems.push(format!("{at}: name and url are required"));
        }
        for url in self.url.split(',').map(str::trim) {
            let scheme = url.split("://").next().unwrap_or_default();
            if !url.contains("://") || !matches!(scheme, "nats" | "tls") {
                problems.push(format!(
                    "{at}.url: {:?} is not a nats:// or tls:// URL",
                    crate::redact::url(url)
                ));
            }
        }
        if !valid_prefix(&self.subject_prefix) {
            problems.push(format!(
                "{at}.subject_prefix = {:?} must be non-empty tokens without spaces, * or >",
                self.subject_prefix
            ));
        }
        if !self.stream.is_empty()
            && !self
                .stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!(
                "{at}.stream = {:?} may hold only letters, digits, - and _",
                self.stream
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            problems.push(format!("{at}: user and password go together"));
        }
        if self.token.is_some() && self.user.is_some() {
            problems.push(format!("{at}: set a token or a user, not both"));
        }
        for t in &self.types {
            if !EventType::ALL.iter().any(|k| k.as_str() == t) {
                problems.push(format!("{at}.types: unknown event type {t:?}"));
            }
        }
    }
}

impl Sink for NatsConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants(&self, event: &Event) -> bool {
        event.kind.wanted_by(&self.types)
    }

    fn spawn(self: Arc<Self>, c: SinkContext) -> tokio::task::JoinHandle<()> {
        tokio::spawn(deliver_loop(
            c.outbox,
            (*self).clone(),
            c.retry,
            c.notify,
            c.shutdown,
        ))
    }
}

/// Whether `s` is usable as leading subject tokens: non-empty tokens separated by `.`,
/// without white space or wildcards.
fn valid_prefix(s: &str) -> bool {
    s.split('.')
        .all(|t| !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>'))
}

/// The subject of an event: `<prefix>.<camera>.<type>`.
pub fn subject(prefix: &str, event: &Event) -> String {
    let camera: String = event
        .camera_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .unwrap_or("_")
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{prefix}.{camera}.{}", event.kind.as_str())
}

async fn connect(endpoint: &NatsConfig) -> Result<async_nats::Client, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("facestream-{}", endpoint.name))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    if let (Some(user), Some(password)) = (&endpoint.user, &endpoint.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &endpoint.token {
        options = options.token(token.clone());
    }
    let urls: Vec<&str> = endpoint.url.split(',').map(str::trim).collect();
    options
        .connect(urls.as_slice())
        .await
        .map_err(|e| e.to_string())
}

/// Create the configured stream when it is missing (once per connection of the sink).
async fn ensure_stream(js: &jetstream::Context, endpoint: &NatsConfig) -> Result<(), String> {
    if endpoint.stream.is_empty() {
        return Ok(());
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: endpoint.stream.clone(),
        subjects: vec![format!("{}.>", endpoint.subject_prefix)],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("creating stream {}: {e}", endpoint.stream))
}

async fn deliver_loop(
    outbox: Arc<Outbox>,
    endpoint: NatsConfig,
    retry: Retry,
    notify: Arc<Notify>,
    shutdown: Shutdown,
) {
    // the client reconnects on its own from here on, buffering while it does
    let client = tokio::select! {
        _ = shutdown.requested() => return,
        client = connect(&endpoint) => match client {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(endpoint = %endpoint.name, error = %e, "NATS client set-up failed: nothing is published to this server");
                return;
            }
        },
    };
    let js = jetstream::new(client);
    let mut stream_ready = endpoint.stream.is_empty();
    let mut queue = EndpointQueue::new(outbox.clone(), &endpoint.name, &retry, notify, shutdown);
    while let Some(due) = queue.next_batch(BATCH).await {
        if !stream_ready {
            match ensure_stream(&js, &endpoint).await {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    for row in &due {
                        record(&outbox, &endpoint.name, row, Err(e.clone()), &retry);
                    }
                    continue;
                }
            }
        }
        // publish the whole batch, then collect its acknowledgements
        let mut pending = Vec::with_capacity(due.len());
        for row in &due {
            let sent = match serde_json::from_str::<Event>(&row.payload) {
                Ok(event) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, row.event_id.as_str());
                    js.publish_with_headers(
                        subject(&endpoint.subject_prefix, &event),
                        headers,
                        row.payload.clone().into(),
                    )
                    .await
                    .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("stored event is not valid JSON: {e}")),
            };
            pending.push(sent);
        }
        // one deadline for the whole batch: acknowledgements lost with a server that died
        // time out together, not one after another
        let acks = pending.into_iter().map(|sent| async {
            match sent {
                Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(describe(&e.to_string(), &endpoint)),
                    Err(_) => Err(format!(
                        "no JetStream acknowledgement within {} s",
                        ACK_TIMEOUT.as_secs()
                    )),
                },
                Err(e) => Err(e),
            }
        });
        let results = futures_util::future::join_all(acks).await;
        for (row, result) in due.iter().zip(results) {
            record(&outbox, &endpoint.name, row, result, &retry);
        }
    }
}

/// A publish error, with what to do when no stream captures the subject.
fn describe(error: &str, endpoint: &NatsConfig) -> String {
    if error.contains("no responders") {
        format!(
            "{error}: no JetStream stream captures {}.> (create one, or set events.nats.stream)",
            endpoint.subject_prefix
        )
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> NatsConfig {
        toml::from_str(&format!(
            "name = \"bus\"\nurl = \"nats://127.0.0.1:4222\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn subjects_name_camera_and_type_and_keep_wildcards_out() {
        let mut e = Event::new(EventType::IdentityRecognized);
        assert_eq!(
            subject("facestream", &e),
            "facestream._.identity.recognized"
        );
        e.camera_id = Some("front.door *1 >".into());
        assert_eq!(
            subject("site1.facestream", &e),
            "site1.facestream.front_door__1__.identity.recognized"
        );
        e.kind = EventType::CameraDown;
        e.camera_id = Some("lobby".into());
        assert_eq!(subject("fs", &e), "fs.lobby.camera.down");
    }

    #[test]
    fn settings_are_checked() {
        let mut problems = Vec::new();
        config("").validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        for (extra, says) in [
            ("subject_prefix = \"a.>\"", "subject_prefix"),
            ("subject_prefix = \"\"", "subject_prefix"),
            ("stream = \"a b\"", "stream"),
            ("user = \"u\"", "user and password"),
            (
                "token = \"t\"\nuser = \"u\"\npassword = \"p\"",
                "a token or a user",
            ),
            ("types = [\"identity.maybe\"]", "unknown event type"),
        ] {
            let mut problems = Vec::new();
            config(extra).validate(&mut problems);
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{extra}: {problems:?}"
            );
        }
        let mut problems = Vec::new();
        let mut bad = config("");
        bad.url = "http://user:secret@host:4222".into();
        bad.validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("nats://")),
            "{problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("secret")),
            "{problems:?}"
        );
    }
}
