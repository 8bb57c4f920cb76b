//! The REST API (actix-web), versioned under `/v1`: identities, enrolment, search, verify,
//! health and readiness, and the OpenAPI document at `/v1/openapi.json`.
//!
//! Security: every endpoint but health, readiness and the OpenAPI document needs
//! `Authorization: Bearer <key>`; keys have a `read` or `admin` scope. With no key
//! configured, an admin key is generated at first start and written (mode 0600) to
//! `api.generated_key_file`; the server refuses to listen on a non-loopback address unless
//! a key is configured explicitly. Request bodies are capped at `api.max_body_bytes` and
//! images at `limits.max_image_pixels`. Error bodies carry a code and a message, never a
//! stack trace or a server path: internal failures are logged and answered with a generic
//! 500.

mod auth;
mod cameras;
mod events;
mod http;
mod identities;
mod recognize;
mod review;
mod routes;
mod search;
pub mod session;
mod state;
mod stream;
mod system;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use serde::{Deserialize, Serialize};

use crate::gallery::service::ServiceError;
use crate::gallery::GalleryError;
use crate::imageio::ImageError;
use crate::shutdown::Shutdown;

pub use state::AppState;

/// API settings (section `[api]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on. Anything but loopback requires an explicit key in `api.keys`.
    pub listen: String,
    /// Largest request body, in bytes (an upload is one body).
    pub max_body_bytes: usize,
    /// API keys. Each: `{ name = "ops", key = "…", scope = "admin" | "read" }`.
    pub keys: Vec<ApiKey>,
    /// Where the generated admin key is written when `api.keys` is empty.
    pub generated_key_file: String,
    /// HTTPS: the server's certificate chain (PEM, leaf first) and its private key
    /// (PEM: PKCS#8, PKCS#1 or SEC1). Both empty (the default): plain HTTP, for loopback
    /// or behind a TLS-terminating proxy. Keys travel as bearer tokens, so anything
    /// beyond loopback wants one or the other.
    #[serde(default)]
    pub tls_cert_file: String,
    #[serde(default)]
    pub tls_key_file: String,
    /// Serve the web console at `/` (its pages use this same API, with the same keys).
    #[serde(default = "default_console")]
    pub console: bool,
    /// How long a console login lasts, in seconds (60 … 2,592,000).
    #[serde(default = "default_session_ttl_s")]
    pub session_ttl_s: u64,
}

fn default_console() -> bool {
    true
}

fn default_session_ttl_s() -> u64 {
    8 * 3600
}

/// Errors from setting up TLS for the API.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] crate::tls::PemError),
    #[error("api.tls_cert_file and api.tls_key_file do not make a usable pair: {0}")]
    Config(#[from] rustls::Error),
}

impl ApiConfig {
    /// The rustls server configuration when `tls_cert_file` and `tls_key_file` are set.
    pub fn tls(&self) -> Result<Option<rustls::ServerConfig>, TlsError> {
        if self.tls_cert_file.is_empty() && self.tls_key_file.is_empty() {
            return Ok(None);
        }
        let certs = crate::tls::certificates("api.tls_cert_file", &self.tls_cert_file)?;
        let key = crate::tls::private_key("api.tls_key_file", &self.tls_key_file)?;
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Some(config))
    }
}

/// One API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who holds it (logged with each erasure).
    pub name: String,
    /// The bearer token (at least 16 characters).
    pub key: String,
    pub scope: Scope,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Search, verify, list and read.
    Read,
    /// Everything, including enrolment and erasure.
    Admin,
}

impl ApiConfig {
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        match self.listen.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_loopback() && self.keys.is_empty() => problems.push(format!(
                "api.listen = {} is not a loopback address and api.keys is empty: configure a key",
                self.listen
            )),
            Ok(_) => {}
            Err(_) => problems.push(format!(
                "api.listen = {:?} is not an address:port",
                self.listen
            )),
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            problems.push(
                "api.tls_cert_file and api.tls_key_file go together: set both (HTTPS) or neither"
                    .into(),
            );
        }
        crate::validate::within_note(
            problems,
            "api.session_ttl_s",
            self.session_ttl_s,
            60..=30 * 86400,
            "(one minute to 30 days)",
        );
        if self.max_body_bytes < 1024 {
            problems.push("api.max_body_bytes must be at least 1024".into());
        }
        for k in &self.keys {
            if k.key.len() < 16 {
                problems.push(format!(
                    "api.keys: key `{}` is shorter than 16 characters",
                    k.name
                ));
            }
        }
    }
}

/// Errors at the HTTP boundary, each with its status (mapped in one place: [`ApiError::status_code`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("this key's scope does not allow this operation (admin required)")]
    Forbidden,
    #[error(
        "a request authenticated by the session cookie that changes something must carry \
         the header X-Facestream-Console: 1"
    )]
    ConsoleHeader,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is {got} bytes, over the limit of {limit} (api.max_body_bytes)")]
    TooLarge { got: usize, limit: usize },
    #[error("{message}")]
    Unprocessable {
        message: String,
        faces: Option<usize>,
    },
    #[error(
        "{failures} failed logins from {from}: try again in {retry_after_s} s (each wrong key waits longer; other keys from this address are held up only past 100 failures)"
    )]
    TooManyLogins {
        from: String,
        failures: u32,
        retry_after_s: u64,
    },
    #[error("method not allowed here; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("service not ready: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden | ApiError::ConsoleHeader => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Unprocessable { .. } => "unprocessable",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::TooManyLogins { .. } => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Gallery(
                GalleryError::IdentityNotFound(_) | GalleryError::FaceNotFound(_),
            ) => ApiError::NotFound(e.to_string()),
            ServiceError::Gallery(GalleryError::Invalid { .. }) => ApiError::Unprocessable {
                message: e.to_string(),
                faces: None,
            },
            ServiceError::FaceCount { found } | ServiceError::FaceAmbiguous { found, .. } => {
                ApiError::Unprocessable {
                    message: e.to_string(),
                    faces: Some(found),
                }
            }
            ServiceError::PoorFace { .. } => ApiError::Unprocessable {
                message: e.to_string(),
                faces: Some(1),
            },
            ServiceError::NoFace(_) => ApiError::Unprocessable {
                message: e.to_string(),
                faces: Some(0),
            },
            ServiceError::Image(
                ImageError::TooManyPixels { .. } | ImageError::FileTooLarge { .. },
            ) => ApiError::Unprocessable {
                message: e.to_string(),
                faces: None,
            },
            ServiceError::Image(i) => ApiError::BadRequest(i.to_string()),
            ServiceError::Busy(_) | ServiceError::Gallery(GalleryError::Unavailable(_)) => {
                ApiError::Unavailable(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::Internal
            }
        }
    }
}

impl From<crate::events::outbox::OutboxError> for ApiError {
    fn from(e: crate::events::outbox::OutboxError) -> Self {
        tracing::error!(error = %e, "event outbox operation failed");
        ApiError::Internal
    }
}

impl From<crate::history::HistoryError> for ApiError {
    fn from(e: crate::history::HistoryError) -> Self {
        use crate::history::HistoryError;
        match e {
            HistoryError::NotFound(_) => ApiError::NotFound(e.to_string()),
            HistoryError::Dimensions { .. } => ApiError::Unprocessable {
                message: e.to_string(),
                faces: None,
            },
            HistoryError::Unavailable(m) => ApiError::Unavailable(m),
            HistoryError::Storage(_) => {
                tracing::error!(error = %e, "history operation failed");
                ApiError::Internal
            }
        }
    }
}

impl From<GalleryError> for ApiError {
    fn from(e: GalleryError) -> Self {
        ServiceError::Gallery(e).into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::ConsoleHeader => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyLogins { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let ApiError::Unprocessable { faces: Some(n), .. } = self {
            body["error"]["faces_found"] = serde_json::json!(n);
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header(("Allow", *allow));
        }
        if let ApiError::TooManyLogins { retry_after_s, .. } = self {
            response.insert_header(("Retry-After", retry_after_s.to_string()));
        }
        response.json(body)
    }
}

/// A JSON request body that must be an object. (`web::Json` would also build a struct
/// from an array of its fields in order — `[null, null]` as an identity update — which no
/// client means; found by schemathesis, `scripts/fuzz_api.sh`.)
pub(crate) struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonObject<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        // the configured JSON limits and error handler apply to the value
        let value = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let web::Json(value) = value.await?;
            if !value.is_object() {
                return Err(ApiError::BadRequest("the JSON body must be an object".into()).into());
            }
            serde_json::from_value(value)
                .map(JsonObject)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")).into())
        })
    }
}

/// Keys in force: the configured ones, or a generated admin key persisted to a file.
pub fn effective_keys(config: &ApiConfig) -> std::io::Result<Vec<ApiKey>> {
    if !config.keys.is_empty() {
        return Ok(config.keys.clone());
    }
    let path = Path::new(&config.generated_key_file);
    let key = match std::fs::read_to_string(path) {
        Ok(k) if k.trim().len() >= 16 => k.trim().to_string(),
        _ => {
            use rand::Rng;
            let key: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(40)
                .map(char::from)
                .collect();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            write_private(path, &key)?;
            tracing::warn!(file = %path.display(), "no api.keys configured: generated an admin key");
            key
        }
    };
    Ok(vec![ApiKey {
        name: "generated-admin".into(),
        key,
        scope: Scope::Admin,
    }])
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(content.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, content)
    }
}

/// Run the API until `shutdown` is requested, then finish the requests in flight (up to
/// 10 s): HTTPS with `tls` (from [`ApiConfig::tls`], checked before the cameras start),
/// else plain HTTP. Signals are not the server's business: see [`crate::shutdown`].
pub async fn serve(
    state: Arc<AppState>,
    config: &ApiConfig,
    tls: Option<rustls::ServerConfig>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listen = config.listen.clone();
    let max_body = config.max_body_bytes;
    let console = config.console;
    let data = web::Data::from(state);
    let server =
        HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(|e, _| {
                            ApiError::BadRequest(format!("invalid JSON body: {e}")).into()
                        }),
                )
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::BadRequest(format!("invalid query: {e}")).into()
                }))
                .app_data(web::PathConfig::default().error_handler(|e, _| {
                    ApiError::NotFound(format!("invalid id in path: {e}")).into()
                }))
                .configure(routes::configure)
                .configure(|cfg| {
                    if console {
                        crate::console::configure(cfg)
                    }
                })
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::NotFound("no such endpoint".into()))
                }))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(10);
    let (server, scheme) = match tls {
        Some(tls) => (server.bind_rustls_0_23(&listen, tls)?, "https"),
        None => (server.bind(&listen)?, "http"),
    };
    for addr in server.addrs() {
        tracing::info!(%addr, scheme, "API listening");
        eprintln!("facestream: API listening on {scheme}://{addr}/v1");
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.requested().await;
        handle.stop(true).await;
    });
    server.await
}
