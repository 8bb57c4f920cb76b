//! The webhook sink: signed, retried, at-least-once delivery of outbox rows over HTTP.
//!
//! One task per endpoint, so a slow or dead receiver only delays itself: each task takes
//! its due rows, POSTs up to `max_concurrency` at once, marks 2xx as delivered and
//! anything else (status, timeout, refused connection) as failed with the next attempt
//! `retry_initial_ms · 2^attempts` later (capped at `retry_max_ms`, ×[0.5, 1.5) jitter).
//! Rows older than `dead_letter_after_s` go to the dead letters.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Sink, SinkContext};
use crate::events::delivery::{record, EndpointQueue, Retry};
use crate::events::outbox::{Outbox, Pending};
use crate::events::{signature, Event, EventType};
use crate::shutdown::Shutdown;

/// One webhook endpoint (`[[events.webhooks]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name (used in the outbox and logs).
    pub name: String,
    /// `http://` or `https://` URL receiving POSTed JSON events.
    pub url: String,
    /// Signing secret, `whsec_` + base64 (Standard Webhooks).
    pub secret: String,
    /// Event types to send (`identity.recognized`, …); empty: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Deliveries in flight at once to this endpoint.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// PEM file of certificate authorities trusted for this endpoint besides the public
    /// roots (a receiver with a certificate from a private CA); `https://` URLs only.
    #[serde(default)]
    pub ca_file: String,
}

impl WebhookConfig {
    /// The extra roots of `ca_file` (none when empty).
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>, String> {
        if self.ca_file.is_empty() {
            return Ok(Vec::new());
        }
        let pem =
            std::fs::read(&self.ca_file).map_err(|e| format!("reading {}: {e}", self.ca_file))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", self.ca_file))?;
        if roots.is_empty() {
            return Err(format!("{} holds no PEM certificate", self.ca_file));
        }
        Ok(roots)
    }
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout() -> u64 {
    5000
}

impl WebhookConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let at = format!("events.webhooks[{}]", self.name);
        if self.name.is_empty() {
            problems.push("events.webhooks: every endpoint needs a name".into());
        }
        if !self.ca_file.is_empty() {
            if !self.url.starts_with("https://") {
                problems.push(format!("{at}.ca_file is set but the url is not https://"));
            }
            if let Err(e) = self.extra_roots() {
                problems.push(format!("{at}.ca_file: {e}"));
            }
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!(
                "{at}.url = {:?} must start with http:// or https://",
                self.url
            ));
        }
        if signature::check_secret(&self.secret).is_err() {
            problems.push(format!("{at}.secret must be `whsec_` followed by base64"));
        }
        for t in &self.types {
            if !EventType::ALL.iter().any(|k| k.as_str() == t) {
                problems.push(format!("{at}.types: unknown event type {t:?}"));
            }
        }
        crate::validate::within(
            problems,
            &format!("{at}.max_concurrency"),
            self.max_concurrency,
            1..=256,
        );
        if self.timeout_ms == 0 {
            problems.push(format!("{at}.timeout_ms must be > 0"));
        }
    }
}

impl Sink for WebhookConfig {
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

async fn deliver_loop(
    outbox: Arc<Outbox>,
    endpoint: WebhookConfig,
    retry: Retry,
    notify: Arc<Notify>,
    shutdown: Shutdown,
) {
    // Redirects are not followed: a signed event goes to the configured URL or fails
    // (a 3xx is a failed attempt, retried like any other).
    let client = match endpoint.extra_roots().and_then(|roots| {
        roots
            .into_iter()
            .fold(reqwest::Client::builder(), |b, root| {
                b.add_root_certificate(root)
            })
            .timeout(Duration::from_millis(endpoint.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %endpoint.name, error = %e, "cannot build HTTP client; endpoint disabled");
            return;
        }
    };
    let mut queue = EndpointQueue::new(outbox.clone(), &endpoint.name, &retry, notify, shutdown);
    while let Some(due) = queue.next_batch(endpoint.max_concurrency * 8).await {
        futures_util::stream::iter(due)
            .for_each_concurrent(endpoint.max_concurrency, |row| {
                let (client, outbox, endpoint, retry) = (&client, &outbox, &endpoint, &retry);
                async move {
                    let result = deliver(client, endpoint, &row).await;
                    record(outbox, &endpoint.name, &row, result, retry);
                }
            })
            .await;
    }
}

async fn deliver(
    client: &reqwest::Client,
    endpoint: &WebhookConfig,
    row: &Pending,
) -> Result<(), String> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signature::sign(
        &endpoint.secret,
        &row.event_id,
        timestamp,
        row.payload.as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let response = client
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &row.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.payload.clone())
        .send()
        .await
        // the URL may carry a token: it stays out of logs and dead letters
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_https_and_a_certificate() {
        let dir = std::env::temp_dir().join(format!("fs-ca-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let hook: WebhookConfig = toml::from_str(&format!(
            "name = \"h\"\nurl = \"http://127.0.0.1:1/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nca_file = \"{}\"\n",
            empty.display()
        ))
        .unwrap();
        let mut problems = Vec::new();
        hook.validate(&mut problems);
        assert!(
            problems.iter().any(|p| p.contains("not https://")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("no PEM certificate")),
            "{problems:?}"
        );
        let missing = WebhookConfig {
            ca_file: dir.join("missing.pem").display().to_string(),
            ..hook
        };
        assert!(missing.extra_roots().unwrap_err().contains("reading"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
