//! The operator console: a few pages in the browser over this same API, served at `/`
//! by `facestream serve` (`api.console`, on by default).
//!
//! The assets (one HTML page, one script, one stylesheet; no framework, nothing fetched
//! from elsewhere) are compiled into the binary. The page logs in with an API key, which
//! is exchanged for an HttpOnly session cookie ([`crate::api::session`]); from then on the
//! browser sends the cookie and the script never holds the key. Pages:
//! - **Live**: identity events as they happen (`GET /v1/events/stream`), with thumbnail,
//!   camera, similarity and quality; "wrong person" on a recognition removes the enrolled
//!   face that matched.
//! - **Cameras**: state, last error, frame rates, drops and the latest frame.
//! - **Face library**: identities and their faces; enrol by upload (choosing the face when
//!   a photo holds several), rename, erase.
//! - **Review queue**: unknown tracks grouped by probable person, each with its best
//!   shots: new identity, add to an identity, dismiss.
//!
//! A read key's session sees everything and changes nothing: the buttons that change
//! something are not shown, and the API refuses them anyway.

use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Only this origin's script, styles and images (and `data:` thumbnails); no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Register the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| asset("text/html; charset=utf-8", INDEX)),
    )
    .route(
        "/",
        web::head().to(|| asset("text/html; charset=utf-8", INDEX)),
    )
    .route(
        "/console/console.js",
        web::get().to(|| asset("text/javascript; charset=utf-8", SCRIPT)),
    )
    .route(
        "/console/console.css",
        web::get().to(|| asset("text/css; charset=utf-8", STYLE)),
    );
}

async fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        // the same binary serves the same assets: revalidation is cheap, staleness is not
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}
