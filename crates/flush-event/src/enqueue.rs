//! Enqueueing, always inside the caller's transaction.

use prost::Message;
use sqlx::PgConnection;

use crate::{CHANNEL, Headers};

/// Enqueues one message into `stage`, as part of the transaction `conn` is in.
///
/// The row becomes visible to consumers when that transaction commits; so does the wake-up.
pub async fn flush_event<M: Message>(
    conn: &mut PgConnection,
    stage: &str,
    body: &M,
    headers: &Headers,
) -> Result<(), sqlx::Error> {
    flush_events(conn, stage, [(body, headers)]).await.map(|_| ())
}

/// Enqueues many messages into `stage` in one statement; returns how many rows were written.
pub async fn flush_events<'a, M: Message + 'a>(
    conn: &mut PgConnection,
    stage: &str,
    rows: impl IntoIterator<Item = (&'a M, &'a Headers)>,
) -> Result<u64, sqlx::Error> {
    insert(conn, "outbox", stage, rows, true).await
}

/// [`flush_events`] without the wake-up at commit: the caller sends [`wake`](crate::wake::wake)
/// once its transaction has committed (a hand-off's [`Handler::wake_ups`](crate::Handler)).
///
/// For a pipeline's hot path. A `NOTIFY` inside a transaction makes its commit take Postgres'
/// notify lock, one for the whole server, and hold it through the commit's WAL flush: every
/// notifying transaction then commits one at a time, and group commit cannot share a flush
/// between them. A consumer that misses a wake-up (its process died between the commit and the
/// wake) finds the rows at its next poll.
pub async fn flush_events_unannounced<'a, M: Message + 'a>(
    conn: &mut PgConnection,
    stage: &str,
    rows: impl IntoIterator<Item = (&'a M, &'a Headers)>,
) -> Result<u64, sqlx::Error> {
    insert(conn, "outbox", stage, rows, false).await
}

/// [`flush_events`] into the outbox installed in `schema` of a producer's own database (see
/// [`install`](crate::install)), inside the producer's transaction `conn` is in.
pub async fn flush_events_in<'a, M: Message + 'a>(
    conn: &mut PgConnection,
    schema: &str,
    stage: &str,
    rows: impl IntoIterator<Item = (&'a M, &'a Headers)>,
) -> Result<u64, sqlx::Error> {
    crate::install::check_schema(schema)
        .map_err(|error| sqlx::Error::Configuration(Box::new(error)))?;
    insert(conn, &format!("{schema}.outbox"), stage, rows, true).await
}

async fn insert<'a, M: Message + 'a>(
    conn: &mut PgConnection,
    table: &str,
    stage: &str,
    rows: impl IntoIterator<Item = (&'a M, &'a Headers)>,
    notify: bool,
) -> Result<u64, sqlx::Error> {
    let (bodies, headers): (Vec<Vec<u8>>, Vec<serde_json::Value>) = rows
        .into_iter()
        .map(|(body, headers)| (body.encode_to_vec(), headers_json(headers)))
        .unzip();
    if bodies.is_empty() {
        return Ok(0);
    }
    // One round trip: insert and queue the wake-up (Postgres folds repeated identical NOTIFYs of a
    // transaction into one, delivered at commit).
    let wake = if notify { "FROM pg_notify($4, $1)" } else { "" };
    let sql = format!(
        "WITH inserted AS ( \
             INSERT INTO {table} (stage, body, headers) \
             SELECT $1, body, headers FROM UNNEST($2::bytea[], $3::jsonb[]) AS r(body, headers) \
             RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM inserted) {wake}"
    );
    let query = sqlx::query_as(&sql).bind(stage).bind(&bodies).bind(&headers);
    let query = if notify { query.bind(CHANNEL) } else { query };
    let (inserted,): (i64,) = query.fetch_one(conn).await?;
    Ok(inserted as u64)
}

pub(crate) fn headers_json(headers: &Headers) -> serde_json::Value {
    serde_json::Value::Object(
        headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect(),
    )
}

pub(crate) fn headers_from_json(value: serde_json::Value) -> Headers {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
        _ => Headers::new(),
    }
}
