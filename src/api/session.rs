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
//! at [`MAX_SESSIONS`] (the oldest goes first). Failed logins are counted per address and
//! key prefix ([`LoginFailures`]): after [`MAX_FAILURES`] with keys that start alike (or
//! [`MAX_ADDRESS_FAILURES`] with any) each further attempt waits, 30 s doubling to 15 min
//! (429, `Retry-After`); others behind the same address (a NAT, a reverse proxy, whose
//! address is the one counted) log in with their own keys meanwhile. A wrong key in
//! an `Authorization: Bearer` header, on any route, counts as a failed login, and a
//! waiting bucket is refused there too: the header is no way around the limit. A request
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

use super::auth::{authorize, authorize_key};
use super::AppState;
use super::{ApiError, JsonObject, Scope};

/// The session cookie's name.
pub const COOKIE: &str = "facestream_session";
/// The header a cookie-authenticated request must carry to change anything.
pub const CONSOLE_HEADER: &str = "x-facestream-console";
/// Most sessions held at once; logging in past this ends the oldest session.
pub const MAX_SESSIONS: usize = 1024;
/// Failed logins one address may make with keys that start alike (the first
/// [`KEY_PREFIX`] characters: the same key mistyped) before each further attempt with
/// such a key waits ([`backoff`]).
pub const MAX_FAILURES: u32 = 10;
/// Failed logins one address may make with any keys (a guesser varying its keys) before
/// every attempt from it waits.
pub const MAX_ADDRESS_FAILURES: u32 = 100;
/// Characters of a presented key that name its bucket.
pub const KEY_PREFIX: usize = 8;
/// The first wait past the free failures; it doubles with each further failure up to
/// [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// A bucket is forgotten this long after its last failure once its wait is over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most buckets remembered (the oldest go first).
const MAX_TRACKED: usize = 10_000;

/// How long the next attempt waits after `failures`, of which `free` cost nothing.
pub fn backoff(failures: u32, free: u32) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let doublings = (failures - free).min(16);
    (FIRST_BACKOFF * (1u32 << doublings)).min(MAX_BACKOFF)
}

/// A failed-login bucket: an address with keys that start alike (`Some(prefix)`), or
/// with any key (`None`).
type Bucket = (IpAddr, Option<String>);

/// Failed logins per client address and key prefix, with backoff. Before, one limit per
/// address locked a whole site behind one NAT out when one person kept mistyping a key;
/// now that person waits, and others behind the same address with their own keys do not
/// (until the address as a whole fails [`MAX_ADDRESS_FAILURES`] times).
#[derive(Default)]
pub struct LoginFailures {
    buckets: Mutex<HashMap<Bucket, (u32, Instant)>>,
}

fn buckets_of(from: IpAddr, presented: &str) -> [(Bucket, u32); 2] {
    let prefix: String = presented.trim().chars().take(KEY_PREFIX).collect();
    [
        ((from, Some(prefix)), MAX_FAILURES),
        ((from, None), MAX_ADDRESS_FAILURES),
    ]
}

/// Whether a bucket's failures are forgotten: its wait and a window after it are over.
fn expired(failures: u32, since: Instant, free: u32) -> bool {
    since.elapsed() >= backoff(failures, free) + FAILURE_WINDOW
}

impl LoginFailures {
    /// Refuse an attempt from `from` with key `presented` while its bucket (or its
    /// address) waits: the whole seconds left, and the failures that made it wait.
    pub fn check(&self, from: IpAddr, presented: &str) -> Result<(), (u64, u32)> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for (bucket, free) in buckets_of(from, presented) {
            let Some(&(n, since)) = buckets.get(&bucket) else {
                continue;
            };
            if expired(n, since, free) {
                continue;
            }
            let wait = backoff(n, free).saturating_sub(since.elapsed());
            if !wait.is_zero() {
                return Err((wait.as_secs_f64().ceil() as u64, n));
            }
        }
        Ok(())
    }

    /// Count a failed login (or bearer key) from `from` with key `presented`.
    pub fn failed(&self, from: IpAddr, presented: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for (bucket, free) in buckets_of(from, presented) {
            if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&bucket) {
                buckets.retain(|(_, prefix), (n, since)| {
                    let free = match prefix {
                        Some(_) => MAX_FAILURES,
                        None => MAX_ADDRESS_FAILURES,
                    };
                    !expired(*n, *since, free)
                });
                // still full of live buckets (a guesser with many addresses): the oldest
                // makes room, so a new one is always counted
                if buckets.len() >= MAX_TRACKED {
                    if let Some(oldest) = buckets
                        .iter()
                        .min_by_key(|(_, (_, since))| *since)
                        .map(|(b, _)| b.clone())
                    {
                        buckets.remove(&oldest);
                    }
                }
            }
            let entry = buckets.entry(bucket).or_insert((0, Instant::now()));
            if expired(entry.0, entry.1, free) {
                entry.0 = 0;
            }
            entry.0 += 1;
            entry.1 = Instant::now();
        }
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
        presented: &str,
        check: impl FnOnce() -> Result<usize, ApiError>,
    ) -> Result<usize, ApiError> {
        let from = peer(req);
        if let Err((retry_after_s, failures)) = self.failures.check(from, presented) {
            return Err(ApiError::TooManyLogins {
                from: from.to_string(),
                failures,
                retry_after_s,
            });
        }
        check().inspect_err(|_| {
            self.failures.failed(from, presented);
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
        .guarded(&req, &body.key, || authorize_key(&state, &body.key))?;
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
    fn a_mistyped_key_waits_longer_each_time_and_other_keys_from_its_address_do_not() {
        let failures = LoginFailures::default();
        let site = IpAddr::from([10, 0, 0, 1]);
        let elsewhere = IpAddr::from([10, 0, 0, 2]);
        let (typo, right) = ("fs-admin-key-0123456789-typo", "another-persons-key");
        for _ in 0..MAX_FAILURES {
            assert!(failures.check(site, typo).is_ok());
            failures.failed(site, typo);
        }
        // the same key mistyped otherwise shares the bucket: the first 8 characters
        let (wait, n) = failures.check(site, "fs-admin-other-tail").unwrap_err();
        assert_eq!(n, MAX_FAILURES);
        assert!((1..=FIRST_BACKOFF.as_secs()).contains(&wait), "{wait}");
        // someone else behind the same address (a NAT) is not held up, nor another address
        assert!(failures.check(site, right).is_ok());
        assert!(failures.check(elsewhere, typo).is_ok());
        // backoff, not a wall: each further failure doubles the wait, up to the cap
        assert_eq!(backoff(MAX_FAILURES - 1, MAX_FAILURES), Duration::ZERO);
        assert_eq!(backoff(MAX_FAILURES, MAX_FAILURES), FIRST_BACKOFF);
        assert_eq!(backoff(MAX_FAILURES + 2, MAX_FAILURES), FIRST_BACKOFF * 4);
        assert_eq!(backoff(MAX_FAILURES + 40, MAX_FAILURES), MAX_BACKOFF);
    }

    #[test]
    fn a_guesser_varying_its_keys_is_held_up_by_its_address() {
        let failures = LoginFailures::default();
        let guesser = IpAddr::from([10, 0, 0, 1]);
        for i in 0..MAX_ADDRESS_FAILURES {
            let guess = format!("{i:08}-guess");
            assert!(failures.check(guesser, &guess).is_ok(), "{i}");
            failures.failed(guesser, &guess);
        }
        assert!(failures.check(guesser, "a-fresh-guess").is_err());
        assert!(failures
            .check(IpAddr::from([10, 0, 0, 2]), "a-fresh-guess")
            .is_ok());
    }

    #[test]
    fn a_full_table_still_counts_new_addresses() {
        let failures = LoginFailures::default();
        // the table full of live buckets (a guesser spread over many addresses)
        for i in 0..MAX_TRACKED as u32 {
            failures.failed(IpAddr::from((0x0b00_0000 + i).to_be_bytes()), "k");
        }
        let guesser = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..MAX_FAILURES {
            failures.failed(guesser, "guess");
        }
        assert!(
            failures.check(guesser, "guess").is_err(),
            "failures past a full table were not counted"
        );
        assert!(
            failures.buckets.lock().unwrap().len() <= MAX_TRACKED,
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
