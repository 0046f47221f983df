//! `eye schemas`: the registry of event types' JSON Schemas, through `eye_admin::schemas`.

use std::path::Path;

use anyhow::Context;
use eye_admin::schemas;
use serde_json::Value;
use sqlx::PgPool;

use super::format_time;
use crate::{cli::SchemasCommand, database, table};

/// Reads and parses a schema file.
pub fn read(path: &Path) -> anyhow::Result<Value> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    Ok(schemas::parse(&source, &text)?)
}

/// Runs an `eye schemas` command, printing for humans.
pub async fn run(pool: &PgPool, command: SchemasCommand) -> anyhow::Result<()> {
    match command {
        SchemasCommand::Put { category, name, file } => {
            let schema = read(&file)?;
            let registration =
                schemas::put(pool, &category, &name, &schema).await.map_err(database::admin)?;
            println!("{}", schemas::describe(&category, &name, registration));
        }
        SchemasCommand::List => {
            let registered = schemas::list(pool).await.map_err(database::admin)?;
            if registered.is_empty() {
                println!(
                    "no schemas yet; register one with \
                     `eye schemas put --category C --name N FILE.json`"
                );
                return Ok(());
            }
            let rows: Vec<[String; 4]> = registered
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
