//! Console sessions: an API key exchanged once for a session cookie, so the browser never
//! keeps the key itself.
//!
//! `POST /v1/session` with `{"key": "…"}` checks the key like a bearer token and answers
//! with `Set-Cookie: facestream_session=<token>; HttpOnly; SameSite=Strict; Path=/;
//! Max-Age=<api.session_ttl_s>` (plus `Secure` over HTTPS). The session carries the key's
//! name and scope: a read key's session sees, an admin key's session changes. `GET
//! /v1/session` says who is logged in; `DELETE /v1/session` logs out.
//!
//! Sessions live in memory only (a restart logs everyone out), hold a SHA-256 of the
//! token rather than the token, expire after `api.session_ttl_s` from login, and are capped
//! at [`MAX_SESSIONS`] (the oldest goes first). An address that fails [`MAX_FAILURES`]
//! logins within [`FAILURE_WINDOW`] is refused (429, `Retry-After`) until the window
//! ends (behind a reverse proxy, the proxy's address is the one counted). A wrong key in
//! an `Authorization: Bearer` header, on any route, counts as a failed login, and an
//! address over the limit is refused there too: the header is no way around the limit. A request
//! authenticated by the cookie that changes something must also carry
//! `X-Facestream-Console: 1`: a cross-site form cannot add a header, so this closes what
//! SameSite leaves open (a sibling subdomain, an old browser).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::routes::{authorize, authorize_key, AppState};
use super::{ApiError, JsonObject, Scope};

/// The session cookie's name.
pub const COOKIE: &str = "facestream_session";
/// The header a cookie-authenticated request must carry to change anything.
pub const CONSOLE_HEADER: &str = "x-facestream-console";
/// Most sessions held at once; logging in past this ends the oldest session.
pub const MAX_SESSIONS: usize = 1024;
/// Failed logins one address may make within [`FAILURE_WINDOW`]; past them, its logins
/// are refused (429) until the window has passed.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most addresses whose failures are remembered (the oldest windows go first).
const MAX_TRACKED: usize = 10_000;

/// Failed logins per client address, in fixed windows.
#[derive(Default)]
pub struct LoginFailures {
    by_address: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginFailures {
    /// Refuse a login attempt from `from` while it is over the limit: the seconds left.
    pub fn check(&self, from: IpAddr) -> Result<(), u64> {
        let by = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        match by.get(&from) {
            Some(&(n, since)) if n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW => {
                Err((FAILURE_WINDOW - since.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Count a failed login (or bearer key) from `from`.
    pub fn failed(&self, from: IpAddr) {
        let mut by = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if by.len() >= MAX_TRACKED && !by.contains_key(&from) {
            by.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            // still full of live windows (a guesser with many addresses): the oldest
            // window makes room, so a new address is always counted
            if by.len() >= MAX_TRACKED {
                if let Some(oldest) = by
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(a, _)| *a)
                {
                    by.remove(&oldest);
                }
            }
        }
        let entry = by.entry(from).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

struct Session {
    /// Index into the service's keys.
    key: usize,
    /// Whether the key has the admin scope (read sessions make room first past the cap).
    admin: bool,
    /// Login order (the oldest goes first past the cap).
    serial: u64,
    expires: Instant,
    /// Cancelled when the session ends (logout, expiry, eviction): what was opened with it
    /// (an event stream) ends too.
    ended: tokio_util::sync::CancellationToken,
}

/// What a request's session gives a long-lived response (an event stream) to watch.
pub struct SessionWatch {
    /// Cancelled when the session is logged out or evicted.
    pub ended: tokio_util::sync::CancellationToken,
    /// When the session expires.
    pub expires: Instant,
}

/// The live sessions.
pub struct Sessions {
    ttl: Duration,
    serial: AtomicU64,
    live: Mutex<HashMap<[u8; 32], Session>>,
    failures: LoginFailures,
}

/// The address a request came from (the proxy's, behind a reverse proxy).
fn peer(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            serial: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            failures: LoginFailures::default(),
        }
    }

    /// Check a key presented by `req` with `check`, under the failed-login limit: an
    /// address over it is refused (429) before the check, and a failed check counts.
    pub(super) fn guarded(
        &self,
        req: &HttpRequest,
        check: impl FnOnce() -> Result<usize, ApiError>,
    ) -> Result<usize, ApiError> {
        let from = peer(req);
        if let Err(retry_after_s) = self.failures.check(from) {
            return Err(ApiError::TooManyLogins {
                from: from.to_string(),
                failures: MAX_FAILURES,
                window_s: FAILURE_WINDOW.as_secs(),
                retry_after_s,
            });
        }
        check().inspect_err(|_| {
            self.failures.failed(from);
            tracing::warn!(%from, path = %req.path(), "request with an invalid API key");
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session for key number `key` (an admin key when `admin`); returns its token.
    /// Past [`MAX_SESSIONS`] the oldest read session makes room, and an admin session only
    /// when every session is one: a flood of read-key logins never logs an admin out.
    pub fn create(&self, key: usize, admin: bool) -> String {
        use rand::RngCore;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| {
            let keep = s.expires > now;
            if !keep {
                s.ended.cancel();
            }
            keep
        });
        while live.len() >= MAX_SESSIONS {
            let oldest = |admins: bool| {
                live.iter()
                    .filter(|(_, s)| s.admin == admins)
                    .min_by_key(|(_, s)| s.serial)
                    .map(|(d, _)| *d)
            };
            let Some(evicted) = oldest(false).or_else(|| oldest(true)) else {
                break;
            };
            if let Some(s) = live.remove(&evicted) {
                s.ended.cancel();
            }
        }
        live.insert(
            digest(&token),
            Session {
                key,
                admin,
                serial: self.serial.fetch_add(1, Ordering::Relaxed),
                expires: now + self.ttl,
                ended: tokio_util::sync::CancellationToken::new(),
            },
        );
        token
    }

    /// What ends the live session `token`, for a response that outlives the request.
    pub fn watch(&self, token: &str) -> Option<SessionWatch> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(&digest(token))
            .filter(|s| s.expires > Instant::now())
            .map(|s| SessionWatch {
                ended: s.ended.clone(),
                expires: s.expires,
            })
    }

    /// The key number of a live session, with its remaining time.
    pub fn lookup(&self, token: &str) -> Option<(usize, Duration)> {
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let d = digest(token);
        match live.get(&d) {
            Some(s) if s.expires > now => Some((s.key, s.expires - now)),
            Some(_) => {
                if let Some(s) = live.remove(&d) {
                    s.ended.cancel();
                }
                None
            }
            None => None,
        }
    }

    /// End a session; whether there was one.
    pub fn remove(&self, token: &str) -> bool {
        let removed = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(token));
        if let Some(s) = &removed {
            s.ended.cancel();
        }
        removed.is_some()
    }

    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    key: String,
}

fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn session_cookie(req: &HttpRequest, value: String, max_age: Duration) -> Cookie<'static> {
    Cookie::build(COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(req))
        .max_age(actix_web::cookie::time::Duration::seconds(
            max_age.as_secs() as i64,
        ))
        .finish()
}

fn who(state: &AppState, key: usize, left: Option<Duration>) -> serde_json::Value {
    let k = &state.keys[key];
    serde_json::json!({
        "name": k.name,
        "scope": k.scope,
        "expires_in_s": left.map(|d| d.as_secs()),
    })
}

/// `POST /v1/session`: log in with an API key.
pub(super) async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonObject<Login>,
) -> Result<HttpResponse, ApiError> {
    // a client that keeps guessing is slowed to MAX_FAILURES guesses per window
    let key = state
        .sessions
        .guarded(&req, || authorize_key(&state, &body.key))?;
    let token = state
        .sessions
        .create(key, state.keys[key].scope == Scope::Admin);
    let ttl = state.sessions.ttl();
    tracing::info!(key = %state.keys[key].name, "console login");
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&req, token, ttl))
        .insert_header(("Cache-Control", "no-store"))
        .json(who(&state, key, Some(ttl))))
}

/// `GET /v1/session`: who the request is authenticated as.
pub(super) async fn current(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key = authorize(&req, &state, Scope::Read)?;
    let index = state
        .keys
        .iter()
        .position(|k| std::ptr::eq(k, key))
        .ok_or(ApiError::Internal)?;
    let left = cookie_token(&req)
        .and_then(|t| state.sessions.lookup(&t))
        .map(|(_, left)| left);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(who(&state, index, left)))
}

/// `DELETE /v1/session`: log out (ends the session and clears the cookie).
pub(super) async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = cookie_token(&req) {
        state.sessions.remove(&token);
    }
    let mut gone = session_cookie(&req, String::new(), Duration::ZERO);
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}

/// The session token the request carries, if any.
pub(super) fn cookie_token(req: &HttpRequest) -> Option<String> {
    req.cookie(COOKIE)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_maps_its_token_to_the_key_until_it_ends() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let a = sessions.create(0, false);
        let b = sessions.create(1, true);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.lookup(&a).map(|s| s.0), Some(0));
        assert_eq!(sessions.lookup(&b).map(|s| s.0), Some(1));
        assert!(sessions.lookup("not-a-token").is_none());
        assert!(sessions.remove(&a));
        assert!(sessions.lookup(&a).is_none());
        assert!(!sessions.remove(&a));
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn expired_sessions_are_refused_and_forgotten() {
        let sessions = Sessions::new(Duration::from_millis(1));
        let t = sessions.create(0, false);
        std::thread::sleep(Duration::from_millis(5));
        assert!(sessions.lookup(&t).is_none());
        assert!(sessions.is_empty());
    }

    #[test]
    fn an_address_is_refused_after_too_many_failures_and_others_are_not() {
        let failures = LoginFailures::default();
        let guesser = IpAddr::from([10, 0, 0, 1]);
        let other = IpAddr::from([10, 0, 0, 2]);
        for _ in 0..MAX_FAILURES {
            assert!(failures.check(guesser).is_ok());
            failures.failed(guesser);
        }
        let wait = failures.check(guesser).unwrap_err();
        assert!((1..=FAILURE_WINDOW.as_secs()).contains(&wait), "{wait}");
        assert!(failures.check(other).is_ok());
    }

    #[test]
    fn a_full_table_still_counts_new_addresses() {
        let failures = LoginFailures::default();
        // the table full of live windows (a guesser spread over many addresses)
        for i in 0..MAX_TRACKED as u32 {
            failures.failed(IpAddr::from((0x0b00_0000 + i).to_be_bytes()));
        }
        let guesser = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..MAX_FAILURES {
            failures.failed(guesser);
        }
        assert!(
            failures.check(guesser).is_err(),
            "failures past a full table were not counted"
        );
        assert!(
            failures.by_address.lock().unwrap().len() <= MAX_TRACKED,
            "the table stays bounded"
        );
    }

    #[test]
    fn the_oldest_session_makes_room_past_the_cap() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.create(0, false);
        let watched = sessions.watch(&first).unwrap();
        let second = sessions.create(0, false);
        for _ in 2..MAX_SESSIONS {
            sessions.create(0, false);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let newest = sessions.create(0, false);
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.lookup(&first).is_none());
        assert!(watched.ended.is_cancelled(), "what it opened ends with it");
        assert!(sessions.lookup(&second).is_some());
        assert!(sessions.lookup(&newest).is_some());
    }

    #[test]
    fn a_flood_of_read_logins_never_evicts_an_admin_session() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let admin = sessions.create(1, true);
        for _ in 0..3 * MAX_SESSIONS {
            sessions.create(0, false);
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(
            sessions.lookup(&admin).is_some(),
            "the admin was logged out"
        );
    }

    #[test]
    fn logging_out_ends_what_the_session_opened() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let token = sessions.create(0, true);
        let watch = sessions.watch(&token).unwrap();
        assert!(!watch.ended.is_cancelled());
        assert!(sessions.remove(&token));
        assert!(watch.ended.is_cancelled());
        assert!(sessions.watch(&token).is_none());
    }
}
