//! `eye apps`: applications (trusted clients) and their API keys.
//!
//! A key is issued in the same transaction that creates (or locks) its application, is shown once,
//! and only its SHA-256 is stored (see `eye_service::auth`). Issuing takes a share lock on the
//! application row and revoking updates it, so a key issued while the application is being
//! revoked is either refused or revoked with the others: none escapes.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use eye_service::{
    Settings,
    auth::{Role, generate_key},
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::format_time;
use crate::{cli::AppsCommand, database, table};

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

/// One line of `eye apps list`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApplicationSummary {
    pub name: String,
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub active_keys: i64,
    /// Roles held by at least one active key.
    pub roles: Vec<String>,
}

/// What `revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub was_already_revoked: bool,
    pub keys_revoked: u64,
}

/// Checks an application name: not blank, no surrounding whitespace or control characters.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("the application name is empty");
    }
    if name.trim() != name {
        bail!("the application name {name:?} starts or ends with whitespace");
    }
    if name.chars().any(char::is_control) {
        bail!("the application name {name:?} contains control characters");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        bail!("the application name is longer than {MAX_NAME_CHARS} characters");
    }
    Ok(())
}

/// Creates application `name` with a first key holding `roles`.
pub async fn create(pool: &PgPool, name: &str, roles: &[Role]) -> anyhow::Result<IssuedKey> {
    check_name(name)?;
    let mut tx = pool.begin().await.map_err(database::error)?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO applications (id, name) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database::error)?;
    let Some(id) = id else {
        let revoked: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT revoked_at FROM applications WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(database::error)?
                .flatten();
        match revoked {
            Some(at) => bail!(
                "application `{name}` already exists and was revoked at {}; choose another name",
                format_time(at)
            ),
            None => bail!(
                "application `{name}` already exists; issue another key with `eye apps key {name}`"
            ),
        }
    };
    let issued = insert_key(&mut tx, id, roles).await?;
    tx.commit().await.map_err(database::error)?;
    Ok(issued)
}

/// Issues another key for the existing, non-revoked application `name`.
pub async fn issue_key(pool: &PgPool, name: &str, roles: &[Role]) -> anyhow::Result<IssuedKey> {
    let mut tx = pool.begin().await.map_err(database::error)?;
    let id = lock_active(&mut tx, name).await?;
    let issued = insert_key(&mut tx, id, roles).await?;
    tx.commit().await.map_err(database::error)?;
    Ok(issued)
}

/// Creates application `name` if it does not exist, then issues it a key (what `eye dev` does).
pub async fn ensure_and_issue_key(
    pool: &PgPool,
    name: &str,
    roles: &[Role],
) -> anyhow::Result<IssuedKey> {
    check_name(name)?;
    let mut tx = pool.begin().await.map_err(database::error)?;
    sqlx::query(
        "INSERT INTO applications (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .execute(&mut *tx)
    .await
    .map_err(database::error)?;
    let id = lock_active(&mut tx, name).await?;
    let issued = insert_key(&mut tx, id, roles).await?;
    tx.commit().await.map_err(database::error)?;
    Ok(issued)
}

/// Every application, by name.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<ApplicationSummary>> {
    sqlx::query_as(
        "SELECT a.name, a.id, a.created_at, a.revoked_at, \
             (SELECT count(*) FROM api_keys k \
              WHERE k.application_id = a.id AND k.revoked_at IS NULL) AS active_keys, \
             ARRAY(SELECT DISTINCT r FROM api_keys k, unnest(k.roles) AS r \
                   WHERE k.application_id = a.id AND k.revoked_at IS NULL ORDER BY r) AS roles \
         FROM applications a ORDER BY a.name",
    )
    .fetch_all(pool)
    .await
    .map_err(database::error)
}

/// Revokes application `name` and all its keys. Revoking twice is harmless.
pub async fn revoke(pool: &PgPool, name: &str) -> anyhow::Result<Revocation> {
    let mut tx = pool.begin().await.map_err(database::error)?;
    let row: Option<(Uuid, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, revoked_at FROM applications WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(database::error)?;
    let Some((id, revoked_at)) = row else {
        bail!("no application named `{name}` (see `eye apps list`)");
    };
    if revoked_at.is_none() {
        sqlx::query("UPDATE applications SET revoked_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(database::error)?;
    }
    let keys = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE application_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(database::error)?;
    tx.commit().await.map_err(database::error)?;
    Ok(Revocation { was_already_revoked: revoked_at.is_some(), keys_revoked: keys.rows_affected() })
}

/// Locks the row of application `name` against revocation until the transaction ends; fails if
/// it does not exist or is revoked.
async fn lock_active(conn: &mut PgConnection, name: &str) -> anyhow::Result<Uuid> {
    let row: Option<(Uuid, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT id, revoked_at FROM applications WHERE name = $1 FOR SHARE")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
            .map_err(database::error)?;
    match row {
        None => bail!("no application named `{name}`; create it with `eye apps create {name}`"),
        Some((_, Some(at))) => bail!(
            "application `{name}` was revoked at {}; revoked applications get no new keys",
            format_time(at)
        ),
        Some((id, None)) => Ok(id),
    }
}

async fn insert_key(
    conn: &mut PgConnection,
    application_id: Uuid,
    roles: &[Role],
) -> anyhow::Result<IssuedKey> {
    let roles: Vec<String> = roles.iter().map(|role| role.as_str().to_owned()).collect();
    if roles.is_empty() {
        bail!("a key needs at least one role");
    }
    let (key, hash) = generate_key();
    let key_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, application_id, key_hash, roles) VALUES ($1, $2, $3, $4)",
    )
    .bind(key_id)
    .bind(application_id)
    .bind(&hash[..])
    .bind(&roles)
    .execute(&mut *conn)
    .await
    .map_err(database::error)?;
    Ok(IssuedKey { application_id, key_id, key, roles })
}

/// Runs an `eye apps` command, printing for humans (and the key alone on the last line).
pub async fn run(pool: &PgPool, settings: &Settings, command: AppsCommand) -> anyhow::Result<()> {
    match command {
        AppsCommand::Create { name, roles } => {
            let issued = create(pool, &name, &roles.roles()).await?;
            println!("created application `{name}` (id {})", issued.application_id);
            print_key(&issued);
        }
        AppsCommand::Key { name, roles } => {
            let issued = issue_key(pool, &name, &roles.roles()).await?;
            println!("issued a new key for application `{name}` (id {})", issued.application_id);
            print_key(&issued);
        }
        AppsCommand::List => {
            let apps = list(pool).await?;
            if apps.is_empty() {
                println!("no applications yet; create one with `eye apps create NAME`");
                return Ok(());
            }
            let rows: Vec<[String; 6]> = apps
                .into_iter()
                .map(|app| {
                    [
                        app.name,
                        app.id.to_string(),
                        format_time(app.created_at),
                        app.revoked_at.map(format_time).unwrap_or_else(|| "-".into()),
                        app.active_keys.to_string(),
                        if app.roles.is_empty() { "-".into() } else { app.roles.join(",") },
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    ["NAME", "ID", "CREATED_AT", "REVOKED_AT", "ACTIVE_KEYS", "ROLES"],
                    &rows
                )
            );
        }
        AppsCommand::Revoke { name } => {
            let revocation = revoke(pool, &name)
                .await
                .with_context(|| format!("cannot revoke application `{name}`"))?;
            let ttl = settings.ingest.auth_cache_ttl_ms as f64 / 1000.0;
            if revocation.was_already_revoked {
                println!(
                    "application `{name}` was already revoked; {} remaining key(s) revoked now",
                    revocation.keys_revoked
                );
            } else {
                println!(
                    "revoked application `{name}` and its {} active key(s); running servers \
                     refuse them within {ttl} s (ingest.auth_cache_ttl_ms)",
                    revocation.keys_revoked
                );
            }
        }
    }
    Ok(())
}

/// The key comes last, alone on its line: `eye apps create x | tail -1`.
fn print_key(issued: &IssuedKey) {
    println!("api key with role(s) {}, shown only this once:", issued.roles.join(", "));
    println!("{}", issued.key);
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
