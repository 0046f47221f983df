//! The write side of the schema registry (`event_schemas`); the validator reads it.
//!
//! Registering only ever adds a version (the validator relies on that: the row count is its
//! cache generation). A put equal (as `jsonb`) to the latest version adds nothing. Puts for the
//! same type are serialised by a transaction-scoped advisory lock, so concurrent puts get
//! consecutive versions instead of a key conflict. A type is registered only if ingest would
//! accept events of it (`event_model::envelope::check_event_type`).

use chrono::{DateTime, Utc};
use event_model::{Limits, envelope};
use serde_json::Value;
use sqlx::{Acquire, Postgres};

use crate::AdminError;

/// The example schemas of the workspace's `schemas/` directory, registered by `eye dev`:
/// (category, name, file name, contents).
pub const EXAMPLES: [(&str, &str, &str, &str); 3] = [
    (
        "page interaction",
        "pageview",
        "page_interaction.pageview.json",
        include_str!("../../../schemas/page_interaction.pageview.json"),
    ),
    (
        "page interaction",
        "cta click",
        "page_interaction.cta_click.json",
        include_str!("../../../schemas/page_interaction.cta_click.json"),
    ),
    (
        "form interaction",
        "submit",
        "form_interaction.submit.json",
        include_str!("../../../schemas/form_interaction.submit.json"),
    ),
];

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// A new version was registered.
    Registered { version: i32 },
    /// The latest version is identical; nothing was added.
    Unchanged { version: i32 },
}

impl Registration {
    /// The version that is now the latest.
    pub fn version(self) -> i32 {
        match self {
            Self::Registered { version } | Self::Unchanged { version } => version,
        }
    }
}

/// The latest version of one registered type, as `eye schemas list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SchemaSummary {
    pub category: String,
    pub name: String,
    pub latest_version: i32,
    pub created_at: DateTime<Utc>,
}

/// Checks that `schema` is a JSON Schema: valid against its meta-schema and compilable.
pub fn check(schema: &Value) -> Result<(), String> {
    let at = |path: String| if path.is_empty() { "/".to_owned() } else { path };
    jsonschema::meta::validate(schema)
        .map_err(|error| format!("{}: {error}", at(error.instance_path().to_string())))?;
    jsonschema::validator_for(schema)
        .map_err(|error| format!("{}: {error}", at(error.instance_path().to_string())))?;
    event_model::pii::Rules::of(schema)?;
    Ok(())
}

/// Parses `text` (from `source`, named in errors) as a JSON Schema.
pub fn parse(source: &str, text: &str) -> Result<Value, AdminError> {
    let schema: Value = serde_json::from_str(text)
        .map_err(|error| AdminError::Invalid(format!("{source} is not valid JSON: {error}")))?;
    check(&schema).map_err(|error| {
        AdminError::Invalid(format!("{source} is not a valid JSON Schema: {error}"))
    })?;
    Ok(schema)
}

/// Registers `schema` for (category, name) unless the latest version is identical.
pub async fn put<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    category: &str,
    name: &str,
    schema: &Value,
) -> Result<Registration, AdminError> {
    envelope::check_event_type(category, name, &Limits::default())
        .map_err(|rejection| AdminError::Invalid(format!("the event type: {rejection}")))?;
    check(schema)
        .map_err(|error| AdminError::Invalid(format!("not a valid JSON Schema: {error}")))?;
    let mut tx = db.begin().await?;
    // Two-key advisory locks live apart from the one-key ones other code takes.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('eye.event_schemas'), hashtext($1))")
        .bind(format!("{category}/{name}"))
        .execute(&mut *tx)
        .await?;
    let latest: Option<(i32, bool)> = sqlx::query_as(
        "SELECT version, schema = $3 FROM event_schemas WHERE category = $1 AND name = $2 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(category)
    .bind(name)
    .bind(schema)
    .fetch_optional(&mut *tx)
    .await?;
    let version = match latest {
        Some((version, true)) => return Ok(Registration::Unchanged { version }),
        Some((version, false)) => version + 1,
        None => 1,
    };
    sqlx::query(
        "INSERT INTO event_schemas (category, name, version, schema) VALUES ($1, $2, $3, $4)",
    )
    .bind(category)
    .bind(name)
    .bind(version)
    .bind(schema)
    .execute(&mut *tx)
    .await
    .map_err(|error| match error.as_database_error() {
        Some(database) if database.is_unique_violation() => {
            AdminError::SchemaRace { category: category.to_owned(), name: name.to_owned(), version }
        }
        _ => AdminError::Database(error),
    })?;
    tx.commit().await?;
    Ok(Registration::Registered { version })
}

/// Registers the [`EXAMPLES`] (unchanged ones are no-ops); returns what each put did.
pub async fn register_examples<'c>(
    db: impl Acquire<'c, Database = Postgres>,
) -> Result<Vec<(&'static str, &'static str, Registration)>, AdminError> {
    let mut conn = db.acquire().await?;
    let mut done = Vec::with_capacity(EXAMPLES.len());
    for (category, name, file, text) in EXAMPLES {
        let schema = parse(&format!("schemas/{file}"), text)?;
        done.push((category, name, put(&mut *conn, category, name, &schema).await?));
    }
    Ok(done)
}

/// The latest version of every registered type.
pub async fn list<'c>(
    db: impl Acquire<'c, Database = Postgres>,
) -> Result<Vec<SchemaSummary>, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (category, name) category, name, version AS latest_version, created_at \
         FROM event_schemas ORDER BY category, name, version DESC",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// One version of a type's schema.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SchemaVersion {
    pub version: i32,
    pub schema: Value,
    pub created_at: DateTime<Utc>,
}

/// Every version of the schema of `category`/`name`, oldest first (empty: not registered).
pub async fn versions<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    category: &str,
    name: &str,
) -> Result<Vec<SchemaVersion>, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "SELECT version, schema, created_at FROM event_schemas \
         WHERE category = $1 AND name = $2 ORDER BY version",
    )
    .bind(category)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?)
}

/// A one-line account of a put.
pub fn describe(category: &str, name: &str, registration: Registration) -> String {
    match registration {
        Registration::Registered { version } => {
            format!("registered {category}/{name} version {version}")
        }
        Registration::Unchanged { version } => {
            format!("{category}/{name} unchanged (version {version})")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_examples_are_valid_schemas() {
        for (_, _, file, text) in EXAMPLES {
            parse(file, text).unwrap();
        }
    }

    #[test]
    fn invalid_schemas_are_refused_with_the_source_named() {
        let error = parse("bad.json", r#"{"type": 12}"#).unwrap_err().to_string();
        assert!(error.contains("bad.json") && error.contains("not a valid JSON Schema"), "{error}");
        let error = parse("text.json", "not json").unwrap_err().to_string();
        assert!(error.contains("text.json is not valid JSON"), "{error}");
        assert!(check(&json!({"type": "object", "pattern": "("})).is_err());
        assert!(check(&json!({"type": "object", "required": ["a"]})).is_ok());
    }
}
