//! `eye schemas`: the registry of event types' JSON Schemas (`event_schemas`).
//!
//! Registering only ever adds a version (the validator relies on that: the row count is its
//! cache generation). A put equal (as `jsonb`) to the latest version adds nothing. Puts for the
//! same type are serialised by a transaction-scoped advisory lock, so concurrent puts get
//! consecutive versions instead of a key conflict.

use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use super::format_time;
use crate::{cli::SchemasCommand, database, table};

/// The example schemas of the workspace's `schemas/` directory, registered by `eye dev`:
/// (category, name, file name, contents).
pub const EXAMPLES: [(&str, &str, &str, &str); 3] = [
    (
        "page interaction",
        "pageview",
        "page_interaction.pageview.json",
        include_str!("../../../../schemas/page_interaction.pageview.json"),
    ),
    (
        "page interaction",
        "cta click",
        "page_interaction.cta_click.json",
        include_str!("../../../../schemas/page_interaction.cta_click.json"),
    ),
    (
        "form interaction",
        "submit",
        "form_interaction.submit.json",
        include_str!("../../../../schemas/form_interaction.submit.json"),
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

/// One line of `eye schemas list`.
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
    Ok(())
}

/// Parses `text` (from `source`, named in errors) as a JSON Schema.
pub fn parse(source: &str, text: &str) -> anyhow::Result<Value> {
    let schema: Value =
        serde_json::from_str(text).with_context(|| format!("{source} is not valid JSON"))?;
    check(&schema)
        .map_err(|error| anyhow::anyhow!("{source} is not a valid JSON Schema: {error}"))?;
    Ok(schema)
}

/// Reads and parses a schema file.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    parse(&source, &text)
}

/// Checks an event type's category or name the way ingest does (not blank, at most
/// `max_type_chars` characters), so a registered type can be sent.
pub fn check_type_part(what: &str, value: &str) -> anyhow::Result<()> {
    let limit = event_model::Limits::default().max_type_chars;
    if value.trim().is_empty() {
        bail!("the {what} is empty");
    }
    if value.chars().count() > limit {
        bail!("the {what} is longer than {limit} characters");
    }
    Ok(())
}

/// Registers `schema` for (category, name) unless the latest version is identical.
pub async fn put(
    pool: &PgPool,
    category: &str,
    name: &str,
    schema: &Value,
) -> anyhow::Result<Registration> {
    check_type_part("category", category)?;
    check_type_part("name", name)?;
    let mut tx = pool.begin().await.map_err(database::error)?;
    // Two-key advisory locks live apart from the one-key ones other code takes.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('eye.event_schemas'), hashtext($1))")
        .bind(format!("{category}/{name}"))
        .execute(&mut *tx)
        .await
        .map_err(database::error)?;
    let latest: Option<(i32, bool)> = sqlx::query_as(
        "SELECT version, schema = $3 FROM event_schemas WHERE category = $1 AND name = $2 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(category)
    .bind(name)
    .bind(schema)
    .fetch_optional(&mut *tx)
    .await
    .map_err(database::error)?;
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
    .map_err(|error| {
        if database::is_unique_violation(&error) {
            anyhow::anyhow!(
                "another registration of {category}/{name} version {version} won the race; retry"
            )
        } else {
            database::error(error)
        }
    })?;
    tx.commit().await.map_err(database::error)?;
    Ok(Registration::Registered { version })
}

/// Registers the [`EXAMPLES`] (unchanged ones are no-ops); returns what each put did.
pub async fn register_examples(
    pool: &PgPool,
) -> anyhow::Result<Vec<(&'static str, &'static str, Registration)>> {
    let mut done = Vec::with_capacity(EXAMPLES.len());
    for (category, name, file, text) in EXAMPLES {
        let schema = parse(&format!("schemas/{file}"), text)?;
        done.push((category, name, put(pool, category, name, &schema).await?));
    }
    Ok(done)
}

/// The latest version of every registered type.
pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<SchemaSummary>> {
    sqlx::query_as(
        "SELECT DISTINCT ON (category, name) category, name, version AS latest_version, created_at \
         FROM event_schemas ORDER BY category, name, version DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(database::error)
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

/// Runs an `eye schemas` command, printing for humans.
pub async fn run(pool: &PgPool, command: SchemasCommand) -> anyhow::Result<()> {
    match command {
        SchemasCommand::Put { category, name, file } => {
            let schema = read(&file)?;
            let registration = put(pool, &category, &name, &schema).await?;
            println!("{}", describe(&category, &name, registration));
        }
        SchemasCommand::List => {
            let schemas = list(pool).await?;
            if schemas.is_empty() {
                println!(
                    "no schemas yet; register one with \
                     `eye schemas put --category C --name N FILE.json`"
                );
                return Ok(());
            }
            let rows: Vec<[String; 4]> = schemas
                .into_iter()
                .map(|schema| {
                    [
                        schema.category,
                        schema.name,
                        schema.latest_version.to_string(),
                        format_time(schema.created_at),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(["CATEGORY", "NAME", "LATEST_VERSION", "CREATED_AT"], &rows)
            );
        }
    }
    Ok(())
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
        let error = format!("{:#}", parse("text.json", "not json").unwrap_err());
        assert!(error.contains("text.json is not valid JSON"), "{error}");
        assert!(check(&json!({"type": "object", "pattern": "("})).is_err());
        assert!(check(&json!({"type": "object", "required": ["a"]})).is_ok());
    }

    #[test]
    fn type_parts_follow_the_ingest_rules() {
        check_type_part("name", "pageview").unwrap();
        assert!(check_type_part("name", " ").is_err());
        assert!(check_type_part("name", &"x".repeat(256)).is_err());
    }
}
