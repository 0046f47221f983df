//! API keys: random 256-bit secrets, shown once, stored only as SHA-256 hashes.
//!
//! A request presents `authorization: Bearer <key>` (gRPC metadata or an HTTP header: the
//! transport hands the value over as text, see [`Authenticator::authenticate`]). The server
//! hashes the key and looks the hash
//! up (a unique index); the secret itself is never compared, stored or logged. Lookups are cached
//! for a bounded time (`auth.cache_ttl_ms`, 5 s by default), including unknown keys, so a
//! flood of bad keys costs one query per distinct key per TTL, and a revoked key stops working
//! within that TTL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::rate_limit::Limit;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Send events (IngestService).
    Ingest,
    /// Read events, errors and stats (QueryService, the console).
    Read,
    /// Administer through the console: replay quarantined events, issue and revoke keys.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Read, Role::Admin];

    /// The role's name, as stored in `api_keys.roles`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    /// The role named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Principal {
    pub application_id: Uuid,
    /// The key's own id (`api_keys.id`): what per-key limits are kept by.
    pub key_id: Uuid,
    pub roles: Vec<String>,
    /// A browser key: ingest only, from [`origins`](Self::origins) only.
    pub publishable: bool,
    /// The origins (`scheme://host[:port]`) a publishable key may be used from.
    pub origins: Vec<String>,
    /// The application's own ingest quota (`applications.ingest_rate`, events a second; 0: none),
    /// if it has one; see [`quota`](Self::quota).
    pub quota_rate: Option<f64>,
    /// The burst of the application's own quota (`applications.ingest_burst`).
    pub quota_burst: Option<f64>,
}

impl Principal {
    /// The application's ingest quota: its own (`eye apps quota`) or else `default_rate`
    /// (`ingest.quota_rate`) with `default_burst`; `None`: unlimited (a rate of 0). A burst of
    /// 0 or none means twice the rate.
    pub fn quota(&self, default_rate: f64, default_burst: f64) -> Option<Limit> {
        let (rate, burst) = match self.quota_rate {
            Some(rate) => (rate, self.quota_burst.unwrap_or(0.0)),
            None => (default_rate, default_burst),
        };
        (rate > 0.0).then(|| Limit::new(rate, if burst > 0.0 { burst } else { 2.0 * rate }))
    }

    /// The browser rule, for a request that came with `origin` (its `Origin` header, which
    /// every browser sends with a cross-origin or POST request, and no server client does): a
    /// publishable key only from one of its origins, a secret key never from a browser.
    pub fn check_origin(&self, origin: Option<&str>) -> Result<(), AuthError> {
        match (self.publishable, origin) {
            (false, None) => Ok(()),
            (false, Some(origin)) => Err(AuthError::SecretKeyInBrowser(origin.to_owned())),
            (true, Some(origin))
                if self.origins.iter().any(|allowed| same_origin(allowed, origin)) =>
            {
                Ok(())
            }
            (true, origin) => Err(AuthError::OriginNotAllowed(origin.unwrap_or("none").to_owned())),
        }
    }
}

/// Origins compare as ASCII case-insensitive text, a trailing `/` ignored.
fn same_origin(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Why a request was not authenticated (or not authorised).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <api key>`")]
    Missing,
    #[error("unknown or revoked api key")]
    Invalid,
    #[error("this api key lacks the `{0}` role")]
    Forbidden(&'static str),
    #[error(
        "this publishable key may not be used from origin {0:?}; add it with \
         `eye apps key NAME --publishable --origin ORIGIN`"
    )]
    OriginNotAllowed(String),
    #[error(
        "a secret api key was sent from a browser (origin {0:?}): it must never be in a web page; \
         revoke it and use a publishable key (`eye apps key NAME --publishable --origin ORIGIN`)"
    )]
    SecretKeyInBrowser(String),
    #[error("cannot check the api key right now")]
    Unavailable(#[source] sqlx::Error),
}

impl AuthError {
    /// A stable name of the refusal, for metrics and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_key",
            Self::Invalid => "invalid_key",
            Self::Forbidden(_) => "forbidden",
            Self::OriginNotAllowed(_) => "origin_not_allowed",
            Self::SecretKeyInBrowser(_) => "secret_key_in_browser",
            Self::Unavailable(_) => "auth_unavailable",
        }
    }
}

/// A new key: `eye_` followed by 64 hex digits (256 random bits). Returns the key and its hash.
pub fn generate_key() -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("eye_{}", hex::encode(secret));
    let hash = hash_key(&key);
    (key, hash)
}

/// A new publishable (browser) key: `eye_pk_` followed by 64 hex digits, so that a reader of a
/// page or a log can tell it from a secret key. Returns the key and its hash.
pub fn generate_publishable_key() -> (String, [u8; 32]) {
    let (secret, _) = generate_key();
    let key = secret.replacen("eye_", "eye_pk_", 1);
    let hash = hash_key(&key);
    (key, hash)
}

/// The SHA-256 of a key, as stored in `api_keys.key_hash`.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The statement reading the [`Principal`] of the live key (of a live application) that
/// `$condition` selects.
macro_rules! live_key {
    ($condition:literal) => {
        concat!(
            "SELECT k.application_id, k.id AS key_id, k.roles, k.publishable, k.origins, \
             a.ingest_rate AS quota_rate, a.ingest_burst AS quota_burst FROM api_keys k JOIN applications a ON a.id = k.application_id WHERE ",
            $condition,
            " AND k.revoked_at IS NULL AND a.revoked_at IS NULL"
        )
    };
}

/// Most cached keys; past it the cache is emptied (a flood of distinct bad keys cannot grow it).
const CACHE_CAPACITY: usize = 10_000;

/// A lookup's answer (`None`: unknown or revoked) and when it was made.
type CacheEntry = (Option<Principal>, Instant);

/// Authenticates requests against `api_keys`, with a bounded TTL cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pool: PgPool,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<[u8; 32], CacheEntry>>>,
}

impl Authenticator {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl, cache: Default::default() }
    }

    /// The principal behind a request's `authorization` value (`Bearer <key>`; `None` when the
    /// request carried none), if its key holds `role`.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        role: Role,
    ) -> Result<Principal, AuthError> {
        let key = authorization.and_then(bearer).ok_or(AuthError::Missing)?;
        let principal = self.lookup(hash_key(key)).await?.ok_or(AuthError::Invalid)?;
        check_role(principal, role)
    }

    /// [`authenticate`](Self::authenticate) from the cache alone, for when the database is known
    /// to be down: `Ok(None)` when the key's answer is not cached.
    pub fn authenticate_cached(
        &self,
        authorization: Option<&str>,
        role: Role,
    ) -> Result<Option<Principal>, AuthError> {
        let key = authorization.and_then(bearer).ok_or(AuthError::Missing)?;
        match self.cached(&hash_key(key), Instant::now()) {
            None => Ok(None),
            Some(None) => Err(AuthError::Invalid),
            Some(Some(principal)) => check_role(principal, role).map(Some),
        }
    }

    /// The principal of the live key with id `key_id` (of a live application), looked up now:
    /// what a console session, which holds the key's id and never the key, re-checks on each
    /// request, so that revoking the key ends its sessions at once.
    pub async fn principal_of_key(&self, key_id: Uuid) -> Result<Option<Principal>, AuthError> {
        sqlx::query_as(live_key!("k.id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(AuthError::Unavailable)
    }

    /// The cached answer for `hash`, if fresh: `Some(None)` for a key known to be unknown.
    fn cached(&self, hash: &[u8; 32], now: Instant) -> Option<Option<Principal>> {
        let cache = self.cache.lock().expect("auth cache");
        let (principal, at) = cache.get(hash)?;
        (now.duration_since(*at) < self.ttl).then(|| principal.clone())
    }

    async fn lookup(&self, hash: [u8; 32]) -> Result<Option<Principal>, AuthError> {
        let now = Instant::now();
        if let Some(principal) = self.cached(&hash, now) {
            return Ok(principal);
        }
        let principal: Option<Principal> = sqlx::query_as(live_key!("k.key_hash = $1"))
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(AuthError::Unavailable)?;
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(hash, (principal.clone(), now));
        Ok(principal)
    }
}

fn check_role(principal: Principal, role: Role) -> Result<Principal, AuthError> {
    if principal.roles.iter().any(|r| r == role.as_str()) {
        Ok(principal)
    } else {
        Err(AuthError::Forbidden(role.as_str()))
    }
}

/// The key of an `authorization` value of the `Bearer` scheme (case-insensitive, surrounding
/// whitespace ignored).
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, key) = authorization.trim().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, hash_a) = generate_key();
        let (b, _) = generate_key();
        assert_ne!(a, b);
        assert!(a.starts_with("eye_") && a.len() == 68, "{a}");
        assert_eq!(hash_key(&a), hash_a);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(""), None);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn origins_are_checked_by_kind_of_key() {
        let key = |publishable: bool| Principal {
            application_id: Uuid::nil(),
            key_id: Uuid::nil(),
            roles: vec!["ingest".into()],
            publishable,
            origins: vec!["https://shop.example".into()],
            quota_rate: None,
            quota_burst: None,
        };
        assert!(key(false).check_origin(None).is_ok());
        let leaked = key(false).check_origin(Some("https://shop.example"));
        assert!(matches!(leaked, Err(AuthError::SecretKeyInBrowser(_))), "{leaked:?}");
        assert!(key(true).check_origin(Some("https://SHOP.example/")).is_ok());
        for origin in [None, Some("https://evil.example"), Some("http://shop.example")] {
            let refused = key(true).check_origin(origin);
            assert!(matches!(refused, Err(AuthError::OriginNotAllowed(_))), "{origin:?}");
        }
    }

    #[test]
    fn an_applications_own_quota_wins_over_the_default() {
        let principal = |rate: Option<f64>, burst: Option<f64>| Principal {
            application_id: Uuid::nil(),
            key_id: Uuid::nil(),
            roles: vec!["ingest".into()],
            publishable: false,
            origins: vec![],
            quota_rate: rate,
            quota_burst: burst,
        };
        assert_eq!(principal(None, None).quota(0.0, 0.0), None, "no quota by default");
        assert_eq!(principal(None, None).quota(100.0, 0.0), Some(Limit::new(100.0, 200.0)));
        assert_eq!(principal(Some(5.0), Some(50.0)).quota(100.0, 0.0), Some(Limit::new(5.0, 50.0)));
        assert_eq!(
            principal(Some(0.0), None).quota(100.0, 10.0),
            None,
            "0 exempts the application"
        );
    }

    #[test]
    fn roles_round_trip_by_name() {
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.as_str()), Some(role));
        }
        assert_eq!(Role::from_name("root"), None);
    }
}
