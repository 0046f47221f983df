//! Suppressions (`eye delete --suppress`): later events of a deleted subject are refused here,
//! before anything keeps them (not stored, not quarantined; counted as `suppressed` in
//! `eye_validation_errors`). Reread when the table changed, checked at each claimed batch, like
//! the schema registry. A suppression holds digests, not values (`event_model::subject`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use event_model::{Event, subject};
use sqlx::PgConnection;
use uuid::Uuid;

/// One suppression: every part it has must match.
#[derive(Debug, Clone)]
struct Suppression {
    application_id: Option<Uuid>,
    session_digest: Option<String>,
    /// Digests of payload values, by JSON pointer.
    data_digests: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct Suppressions {
    /// What the table looked like when read: its row count and latest creation.
    generation: (i64, Option<DateTime<Utc>>),
    all: Vec<Suppression>,
}

impl Suppressions {
    /// Rereads the suppressions if the table changed.
    pub async fn refresh(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let generation: (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), max(created_at) FROM suppressions")
                .fetch_one(&mut *conn)
                .await?;
        if generation == self.generation {
            return Ok(());
        }
        #[derive(sqlx::FromRow)]
        struct Row {
            application_id: Option<Uuid>,
            session_digest: Option<String>,
            data_digests: sqlx::types::Json<BTreeMap<String, String>>,
        }
        let rows: Vec<Row> =
            sqlx::query_as("SELECT application_id, session_digest, data_digests FROM suppressions")
                .fetch_all(&mut *conn)
                .await?;
        self.all = rows
            .into_iter()
            .map(|row| Suppression {
                application_id: row.application_id,
                session_digest: row.session_digest,
                data_digests: row.data_digests.0.into_iter().collect(),
            })
            .collect();
        self.generation = generation;
        Ok(())
    }

    /// Whether `event` of application `app` matches a suppression.
    pub fn matches(&self, app: Uuid, event: &Event) -> bool {
        if self.all.is_empty() {
            return false;
        }
        let session = subject::session_digest(event.session_id.0);
        let mut data: Option<Option<serde_json::Value>> = None;
        self.all.iter().any(|suppression| {
            suppression.application_id.is_none_or(|id| id == app)
                && suppression.session_digest.as_ref().is_none_or(|digest| *digest == session)
                && suppression.data_digests.iter().all(|(pointer, digest)| {
                    let data =
                        data.get_or_insert_with(|| serde_json::from_str(&event.data_json).ok());
                    data.as_ref()
                        .and_then(|data| data.pointer(pointer))
                        .is_some_and(|value| subject::digest(value) == *digest)
                })
        })
    }
}
