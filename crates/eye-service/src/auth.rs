//! API keys: random 256-bit secrets, shown once, stored only as SHA-256 hashes.
//!
//! A request presents `authorization: Bearer <key>`. The server hashes the key and looks the hash
//! up (a unique index); the secret itself is never compared, stored or logged. Lookups are cached
//! for a bounded time (`ingest.auth_cache_ttl_ms`, 5 s by default), including unknown keys, so a
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
use tonic::metadata::MetadataMap;
use uuid::Uuid;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Send events (IngestService).
    Ingest,
    /// Read events, errors and stats (QueryService).
    Read,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
        }
    }
}

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub application_id: Uuid,
    pub roles: Vec<String>,
}

/// Why a request was not authenticated (or not authorised).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing `authorization: Bearer <api key>` metadata")]
    Missing,
    #[error("unknown or revoked api key")]
    Invalid,
    #[error("this api key lacks the `{0}` role")]
    Forbidden(&'static str),
    #[error("cannot check the api key right now")]
    Unavailable(#[source] sqlx::Error),
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid => {
                tonic::Status::unauthenticated(error.to_string())
            }
            AuthError::Forbidden(_) => tonic::Status::permission_denied(error.to_string()),
            AuthError::Unavailable(ref source) => {
                tracing::warn!(error = %source, "api key lookup failed");
                tonic::Status::unavailable(error.to_string())
            }
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

/// The SHA-256 of a key, as stored in `api_keys.key_hash`.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
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

    /// The principal behind the request's bearer key, if it holds `role`.
    pub async fn authenticate(
        &self,
        metadata: &MetadataMap,
        role: Role,
    ) -> Result<Principal, AuthError> {
        let key = bearer(metadata).ok_or(AuthError::Missing)?;
        let principal = self.lookup(hash_key(key)).await?.ok_or(AuthError::Invalid)?;
        if principal.roles.iter().any(|r| r == role.as_str()) {
            Ok(principal)
        } else {
            Err(AuthError::Forbidden(role.as_str()))
        }
    }

    async fn lookup(&self, hash: [u8; 32]) -> Result<Option<Principal>, AuthError> {
        let now = Instant::now();
        if let Some((principal, at)) = self.cache.lock().expect("auth cache").get(&hash)
            && now.duration_since(*at) < self.ttl
        {
            return Ok(principal.clone());
        }
        let row: Option<(Uuid, Vec<String>)> = sqlx::query_as(
            "SELECT k.application_id, k.roles FROM api_keys k \
             JOIN applications a ON a.id = k.application_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.revoked_at IS NULL",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(AuthError::Unavailable)?;
        let principal = row.map(|(application_id, roles)| Principal { application_id, roles });
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(hash, (principal.clone(), now));
        Ok(principal)
    }
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
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
        let mut metadata = MetadataMap::new();
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&metadata), Some("abc"));
        metadata.insert("authorization", "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&metadata), Some("abc"));
        metadata.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&metadata), None);
    }
}
