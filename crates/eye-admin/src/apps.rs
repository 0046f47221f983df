//! Applications (trusted clients) and their API keys.
//!
//! A key is issued in the same transaction that creates (or locks) its application, is shown once,
//! and only its SHA-256 is stored (see `eye_service::auth`). Issuing takes a share lock on the
//! application row and revoking updates it, so a key issued while the application is being
//! revoked is either refused or revoked with the others: none escapes.

use chrono::{DateTime, Utc};
use eye_service::auth::{Role, generate_key, generate_publishable_key};
use sqlx::{Acquire, PgConnection, Postgres};
use uuid::Uuid;

use crate::AdminError;

/// Longest application name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A newly issued API key. `key` is the only copy of the secret: show it once, never log it.
pub struct IssuedKey {
    pub application_id: Uuid,
    pub key_id: Uuid,
    pub key: String,
    pub roles: Vec<String>,
}

/// Never shows the key.
impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("application_id", &self.application_id)
            .field("key_id", &self.key_id)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// One application, as `eye apps list` shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ApplicationSummary {
    pub name: String,
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub active_keys: i64,
    /// Roles held by at least one active key.
    pub roles: Vec<String>,
    /// Its own ingest quota (events a second; 0: exempt), if set; else `ingest.quota_rate`.
    pub ingest_rate: Option<f64>,
    pub ingest_burst: Option<f64>,
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub was_already_revoked: bool,
    pub keys_revoked: u64,
}

/// Checks an application name: not blank, no surrounding whitespace or control characters.
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let invalid = |reason: String| Err(AdminError::Invalid(reason));
    if name.trim().is_empty() {
        return invalid("the application name is empty".into());
    }
    if name.trim() != name {
        return invalid(format!("the application name {name:?} starts or ends with whitespace"));
    }
    if name.chars().any(char::is_control) {
        return invalid(format!("the application name {name:?} contains control characters"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return invalid(format!("the application name is longer than {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

/// Creates application `name` with a first key holding `roles`.
pub async fn create<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    roles: &[Role],
) -> Result<IssuedKey, AdminError> {
    check_name(name)?;
    check_roles(roles)?;
    let mut tx = db.begin().await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO applications (id, name) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        let revoked: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT revoked_at FROM applications WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        let name = name.to_owned();
        return Err(match revoked {
            Some(at) => AdminError::ApplicationExistsRevoked { name, at },
            None => AdminError::ApplicationExists { name },
        });
    };
    let issued = insert_key(&mut tx, id, roles, None).await?;
    tx.commit().await?;
    Ok(issued)
}

/// Checks and normalises a browser origin, `scheme://host[:port]` as a page's `Origin` header
/// has it: http or https, a host, no path (a trailing `/` is dropped), no query, lower case.
pub fn check_origin(origin: &str) -> Result<String, AdminError> {
    let invalid = |why: &str| {
        Err(AdminError::Invalid(format!(
            "origin {origin:?} {why}: give scheme://host[:port], e.g. https://shop.example"
        )))
    };
    let normalised = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, authority)) = normalised.split_once("://") else {
        return invalid("has no scheme");
    };
    if !matches!(scheme, "http" | "https") {
        return invalid("is neither http nor https");
    }
    if authority.is_empty() || authority.starts_with(':') {
        return invalid("has no host");
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return invalid("has a path, query, user or space");
    }
    let port = authority.rsplit_once(':').filter(|_| !authority.ends_with(']'));
    if port.is_some_and(|(_, port)| port.parse::<u16>().is_err()) {
        return invalid("has a port that is not a number up to 65535");
    }
    Ok(normalised)
}

/// Issues a publishable (browser) key for the live application `name`: it may only ingest, and
/// only from `origins` (checked with [`check_origin`]; at least one).
pub async fn issue_publishable_key<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    origins: &[String],
) -> Result<IssuedKey, AdminError> {
    if origins.is_empty() {
        return Err(AdminError::Invalid(
            "a publishable key needs at least one --origin (the site it is used from)".into(),
        ));
    }
    let mut origins =
        origins.iter().map(|origin| check_origin(origin)).collect::<Result<Vec<_>, _>>()?;
    origins.sort();
    origins.dedup();
    let mut tx = db.begin().await?;
    let application_id = lock_active(&mut tx, name).await?;
    let issued = insert_key(&mut tx, application_id, &[Role::Ingest], Some(&origins)).await?;
    tx.commit().await?;
    Ok(issued)
}

/// Issues another key for the existing, non-revoked application `name`.
pub async fn issue_key<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    roles: &[Role],
) -> Result<IssuedKey, AdminError> {
    check_roles(roles)?;
    let mut tx = db.begin().await?;
    let issued = issue_locked(&mut tx, name, roles).await?;
    tx.commit().await?;
    Ok(issued)
}

/// The id of application `name`, created (with no key) if it does not exist: for loaders that
/// write events of named applications directly (benchmarks).
pub async fn ensure<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
) -> Result<Uuid, AdminError> {
    check_name(name)?;
    let mut conn = db.acquire().await?;
    upsert(&mut conn, name).await
}

/// Creates application `name` if it does not exist, then issues it a key (what `eye dev` does).
pub async fn ensure_and_issue_key<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    roles: &[Role],
) -> Result<IssuedKey, AdminError> {
    check_name(name)?;
    check_roles(roles)?;
    let mut tx = db.begin().await?;
    upsert(&mut tx, name).await?;
    let issued = issue_locked(&mut tx, name, roles).await?;
    tx.commit().await?;
    Ok(issued)
}

/// The application name and roles behind `key`, if it is a live key of a live application.
pub async fn key_holder<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    key: &str,
) -> Result<Option<(String, Vec<String>)>, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "SELECT a.name, k.roles FROM api_keys k JOIN applications a ON a.id = k.application_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND a.revoked_at IS NULL",
    )
    .bind(&eye_service::auth::hash_key(key)[..])
    .fetch_optional(&mut *conn)
    .await?)
}

/// Every application, by name.
pub async fn list<'c>(
    db: impl Acquire<'c, Database = Postgres>,
) -> Result<Vec<ApplicationSummary>, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "SELECT a.name, a.id, a.created_at, a.revoked_at, \
             (SELECT count(*) FROM api_keys k \
              WHERE k.application_id = a.id AND k.revoked_at IS NULL) AS active_keys, \
             ARRAY(SELECT DISTINCT r FROM api_keys k, unnest(k.roles) AS r \
                   WHERE k.application_id = a.id AND k.revoked_at IS NULL ORDER BY r) AS roles, \
             a.ingest_rate, a.ingest_burst \
         FROM applications a ORDER BY a.name",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Sets application `name`'s ingest quota: `rate` events a second (0: exempt from
/// `ingest.quota_rate`) with bursts of `burst` (`None`: twice the rate); `None` for `rate`
/// clears it, so the default applies again. Ingest instances see the change once their key cache
/// expires (`auth.cache_ttl_ms`).
pub async fn set_quota<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    rate: Option<f64>,
    burst: Option<f64>,
) -> Result<(), AdminError> {
    let valid = |value: Option<f64>| value.is_none_or(|v| v.is_finite() && v >= 0.0);
    if !valid(rate) || !valid(burst) {
        return Err(AdminError::Invalid("a quota's rate and burst must be 0 or more".into()));
    }
    if rate.is_none() && burst.is_some() {
        return Err(AdminError::Invalid("a burst needs a rate".into()));
    }
    let mut conn = db.acquire().await?;
    let updated = sqlx::query(
        "UPDATE applications SET ingest_rate = $2, ingest_burst = $3 \
         WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .bind(rate)
    .bind(burst)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(AdminError::NoSuchApplication { name: name.to_owned() });
    }
    Ok(())
}

/// Revokes application `name` and all its keys. Revoking twice is harmless.
pub async fn revoke<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
) -> Result<Revocation, AdminError> {
    let mut tx = db.begin().await?;
    let row: Option<(Uuid, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, revoked_at FROM applications WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((id, revoked_at)) = row else {
        return Err(AdminError::NoSuchApplication { name: name.to_owned() });
    };
    if revoked_at.is_none() {
        sqlx::query("UPDATE applications SET revoked_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let keys = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE application_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Revocation { was_already_revoked: revoked_at.is_some(), keys_revoked: keys.rows_affected() })
}

fn check_roles(roles: &[Role]) -> Result<(), AdminError> {
    if roles.is_empty() {
        return Err(AdminError::Invalid("a key needs at least one role".into()));
    }
    Ok(())
}

/// The id of application `name`, inserted if absent.
async fn upsert(conn: &mut PgConnection, name: &str) -> Result<Uuid, AdminError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO applications (id, name) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_one(&mut *conn)
    .await?)
}

/// Issues a key to the live application `name`, locked against revocation until the
/// transaction `conn` is in ends.
async fn issue_locked(
    conn: &mut PgConnection,
    name: &str,
    roles: &[Role],
) -> Result<IssuedKey, AdminError> {
    let id = lock_active(conn, name).await?;
    insert_key(conn, id, roles, None).await
}

/// Locks the row of application `name` against revocation until the transaction ends; fails if
/// it does not exist or is revoked.
/// The id of the live application `name`, share-locked until the transaction ends (so it cannot
/// be revoked meanwhile).
pub(crate) async fn lock_active(conn: &mut PgConnection, name: &str) -> Result<Uuid, AdminError> {
    let row: Option<(Uuid, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, revoked_at FROM applications WHERE name = $1 FOR SHARE")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    match row {
        None => Err(AdminError::NoSuchApplication { name: name.to_owned() }),
        Some((_, Some(at))) => Err(AdminError::ApplicationRevoked { name: name.to_owned(), at }),
        Some((id, None)) => Ok(id),
    }
}

/// Inserts a new key of `application_id` holding `roles`: a secret key, or with `origins` a
/// publishable one usable from those origins only.
async fn insert_key(
    conn: &mut PgConnection,
    application_id: Uuid,
    roles: &[Role],
    origins: Option<&[String]>,
) -> Result<IssuedKey, AdminError> {
    let roles: Vec<String> = roles.iter().map(|role| role.as_str().to_owned()).collect();
    let (key, hash) = if origins.is_some() { generate_publishable_key() } else { generate_key() };
    let key_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, application_id, key_hash, roles, publishable, origins) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key_id)
    .bind(application_id)
    .bind(&hash[..])
    .bind(&roles)
    .bind(origins.is_some())
    .bind(origins.unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    Ok(IssuedKey { application_id, key_id, key, roles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        check_name("web shop").unwrap();
        for bad in ["", "  ", " web", "web\n", "a\u{7}b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn origins_are_checked_and_normalised() {
        assert_eq!(check_origin("https://Shop.example/").unwrap(), "https://shop.example");
        assert_eq!(check_origin("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(check_origin("http://[::1]:3000").unwrap(), "http://[::1]:3000");
        for bad in ["shop.example", "ftp://shop.example", "https://", "https://a/b", "https://a:x"]
        {
            assert!(check_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn issued_keys_do_not_debug_print_the_secret() {
        let issued = IssuedKey {
            application_id: Uuid::nil(),
            key_id: Uuid::nil(),
            key: "eye_secret".into(),
            roles: vec!["ingest".into()],
        };
        assert!(!format!("{issued:?}").contains("eye_secret"));
    }
}
