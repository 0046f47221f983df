//! The schema registry's read side, as the services read it (the validator to validate, ingest
//! to redact): the schema in force for a type is its highest version, and registering only ever
//! adds a version, so the row count is a generation number that tells, in one cheap query,
//! whether anything changed since the last read. (The write side is `eye_admin::schemas`.)

use sqlx::{PgExecutor, types::JsonValue};

/// The schema in force for one type.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InForce {
    pub category: String,
    pub name: String,
    pub version: i32,
    pub schema: JsonValue,
}

/// The registry's generation: different whenever a version was added.
pub async fn generation<'e>(conn: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM event_schemas").fetch_one(conn).await
}

/// The schema in force for every registered type.
pub async fn in_force<'e>(conn: impl PgExecutor<'e>) -> Result<Vec<InForce>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (category, name) category, name, version, schema \
         FROM event_schemas ORDER BY category, name, version DESC",
    )
    .fetch_all(conn)
    .await
}
