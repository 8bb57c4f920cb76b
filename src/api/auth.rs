//! Who is calling: API keys (`Authorization: Bearer`) or a console session cookie, and
//! the scope each handler needs.

use actix_web::HttpRequest;

use super::{ApiError, ApiKey, AppState, Scope};

/// The caller's key, checked against `needed`: from `Authorization: Bearer <key>`, else
/// from a console session cookie ([`super::session`]), which must also carry
/// `X-Facestream-Console` on anything but GET and HEAD.
pub(super) fn authorize<'a>(
    req: &HttpRequest,
    state: &'a AppState,
    needed: Scope,
) -> Result<&'a ApiKey, ApiError> {
    let index = match req.headers().get("authorization") {
        Some(value) => {
            let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "));
            state.sessions.guarded(req, token.unwrap_or_default(), || {
                authorize_key(state, token.ok_or(ApiError::Unauthorized)?)
            })?
        }
        None => {
            let token = super::session::cookie_token(req).ok_or(ApiError::Unauthorized)?;
            let (index, _) = state
                .sessions
                .lookup(&token)
                .ok_or(ApiError::Unauthorized)?;
            let safe = matches!(
                *req.method(),
                actix_web::http::Method::GET | actix_web::http::Method::HEAD
            );
            if !safe && !req.headers().contains_key(super::session::CONSOLE_HEADER) {
                return Err(ApiError::ConsoleHeader);
            }
            index
        }
    };
    let key = &state.keys[index];
    if needed == Scope::Admin && key.scope != Scope::Admin {
        return Err(ApiError::Forbidden);
    }
    Ok(key)
}

/// The number of the key equal to `token`. Every key is compared in full so timing does
/// not reveal a prefix match.
pub(super) fn authorize_key(state: &AppState, token: &str) -> Result<usize, ApiError> {
    state
        .keys
        .iter()
        .enumerate()
        .fold(None, |found, (i, k)| {
            if constant_time_eq(k.key.as_bytes(), token.trim().as_bytes()) {
                Some(i)
            } else {
                found
            }
        })
        .ok_or(ApiError::Unauthorized)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
