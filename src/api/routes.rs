//! The `/v1` route table: every path, its methods and the handler of each (the handlers
//! live with their resource: identities, recognise, search of the past, cameras, events,
//! review, session, system). A path's other methods are answered 405 with `Allow`.

use actix_web::{web, HttpResponse};

use super::{
    cameras, events, identities, recognize, review, search, session, stream, system, ApiError,
};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // Prometheus scrapes without a key, by convention; keep the API on a trusted network
    // (or loopback) when that matters.
    cfg.service(resource("/metrics", "GET").route(web::get().to(system::metrics)));
    cfg.service(
        web::scope("/v1")
            .service(resource("/health", "GET").route(web::get().to(system::health)))
            .service(resource("/ready", "GET").route(web::get().to(system::ready)))
            .service(resource("/openapi.json", "GET").route(web::get().to(system::openapi)))
            .service(
                resource("/session", "GET, POST, DELETE")
                    .route(web::post().to(session::login))
                    .route(web::get().to(session::current))
                    .route(web::delete().to(session::logout)),
            )
            .service(
                resource("/identities", "GET, POST")
                    .route(web::post().to(identities::create_identity))
                    .route(web::get().to(identities::list_identities)),
            )
            .service(
                resource("/identities/{id}", "GET, PATCH, DELETE")
                    .route(web::get().to(identities::get_identity))
                    .route(web::patch().to(identities::update_identity))
                    .route(web::delete().to(identities::delete_identity)),
            )
            .service(
                resource("/identities/{id}/appearances", "GET")
                    .route(web::get().to(search::identity_appearances)),
            )
            .service(resource("/search/faces", "POST").route(web::post().to(search::search_faces)))
            .service(
                resource("/search/appearances", "DELETE")
                    .route(web::delete().to(search::delete_appearance)),
            )
            .service(
                resource("/search/appearances/{id}/shot", "GET").route(web::get().to(search::shot)),
            )
            .service(resource("/search/audit", "GET").route(web::get().to(search::audit)))
            .service(
                resource("/identities/{id}/faces", "GET, POST")
                    .route(web::post().to(identities::add_face))
                    .route(web::get().to(identities::list_faces)),
            )
            .service(
                resource("/identities/{id}/faces/{face}", "DELETE")
                    .route(web::delete().to(identities::delete_face)),
            )
            .service(
                resource("/identities/{id}/faces/{face}/crop", "GET")
                    .route(web::get().to(identities::face_crop)),
            )
            .service(resource("/search", "POST").route(web::post().to(recognize::search)))
            .service(resource("/verify", "POST").route(web::post().to(recognize::verify)))
            .service(resource("/gallery/stale", "GET").route(web::get().to(identities::stale)))
            .service(resource("/cameras", "GET").route(web::get().to(cameras::cameras)))
            .service(
                resource("/cameras/{id}/snapshot", "GET")
                    .route(web::get().to(cameras::camera_snapshot)),
            )
            .service(resource("/events/recent", "GET").route(web::get().to(events::recent_events)))
            .service(resource("/events/stream", "GET").route(web::get().to(stream::event_stream)))
            .service(resource("/events/schema", "GET").route(web::get().to(events::event_schema)))
            .service(resource("/events/test", "POST").route(web::post().to(events::test_event)))
            .service(
                resource("/events/dead-letters", "GET").route(web::get().to(events::dead_letters)),
            )
            .service(
                resource("/events/dead-letters/redeliver", "POST")
                    .route(web::post().to(events::redeliver)),
            )
            .service(
                resource("/events/{id}/snapshot", "GET").route(web::get().to(events::snapshot)),
            )
            .service(resource("/review/unknowns", "GET").route(web::get().to(review::unknowns)))
            .service(
                resource("/review/tracks/{id}/shots/{n}", "GET").route(web::get().to(review::shot)),
            )
            .service(resource("/review/enroll", "POST").route(web::post().to(review::enroll)))
            .service(resource("/review/dismiss", "POST").route(web::post().to(review::dismiss))),
    );
}

/// A path whose other methods are answered 405 with the `Allow` header (not 404: the path
/// exists).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}
