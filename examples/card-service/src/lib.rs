//! A card service that publishes what changed without the dual-write problem: each change of a
//! card and its event commit in one transaction, or neither does.
//!
//! Setup, once: `eye outbox migrate --database-url $CARDS_DATABASE_URL` installs the outbox in
//! schema `eye` of the service's database; `eye relay --source $CARDS_DATABASE_URL` ships it.
//! Per change, in the service's own transaction:
//!
//! ```text
//! BEGIN;
//!   INSERT INTO cards ... ON CONFLICT (id) DO UPDATE ...;        -- the business write
//!   INSERT INTO eye.outbox (stage, body) VALUES ('eye', $event); -- eye.v1.Event, protobuf
//! COMMIT;
//! ```
//!
//! [`change_card`] is that transaction's middle, in Rust, through `flush_event::flush_events_in`.

use chrono::{DateTime, Utc};
use eye_proto::v1::Event;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

/// The schema `eye outbox migrate` installed the outbox in.
pub const OUTBOX_SCHEMA: &str = "eye";
/// The stage the relay ships.
pub const STAGE: &str = "eye";

/// The service's own tables (it would have its own migrations; this is the example's).
pub const SCHEMA_SQL: &str = "\
    CREATE TABLE IF NOT EXISTS cards ( \
        id           bigint      PRIMARY KEY, \
        holder       text        NOT NULL, \
        credit_limit bigint      NOT NULL, \
        status       text        NOT NULL, \
        updated_at   timestamptz NOT NULL \
    ); \
    CREATE TABLE IF NOT EXISTS card_changes ( \
        event_id     uuid        PRIMARY KEY, \
        card_id      bigint      NOT NULL, \
        change       text        NOT NULL, \
        changed_at   timestamptz NOT NULL \
    );";

/// A card as the service keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: i64,
    pub holder: String,
    pub credit_limit: i64,
    pub status: String,
}

/// The event of a card change: category `card`, name `created` or `updated`, the card as data,
/// the session of the card's whole history ([`eye_client::record_session_id`]), and an id
/// assigned here, once: the idempotency key all the way into The Eye.
pub fn card_event(card: &Card, change: &str, at: DateTime<Utc>) -> Event {
    let data = json!({
        "id": card.id, "holder": card.holder, "credit_limit": card.credit_limit,
        "status": card.status,
    });
    let session = eye_client::record_session_id("card", &card.id.to_string());
    let mut event = eye_client::event_at("card", change, &data.to_string(), session, at);
    event.event_id = Uuid::now_v7().to_string();
    event
}

/// Writes `card` (created or updated) and enqueues its event, inside the transaction `conn` is
/// in; returns the event's id. Commit the transaction and both are there; roll it back and
/// neither is.
pub async fn change_card(conn: &mut PgConnection, card: &Card) -> Result<Uuid, sqlx::Error> {
    let at = Utc::now();
    let created: bool = sqlx::query_scalar(
        "INSERT INTO cards (id, holder, credit_limit, status, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET holder = $2, credit_limit = $3, status = $4, updated_at = $5 \
         RETURNING (xmax = 0)",
    )
    .bind(card.id)
    .bind(&card.holder)
    .bind(card.credit_limit)
    .bind(&card.status)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    let change = if created { "created" } else { "updated" };
    let event = card_event(card, change, at);
    let event_id: Uuid = event.event_id.parse().expect("a UUID");
    sqlx::query(
        "INSERT INTO card_changes (event_id, card_id, change, changed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(event_id)
    .bind(card.id)
    .bind(change)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let headers = flush_event::Headers::new();
    flush_event::flush_events_in(conn, OUTBOX_SCHEMA, STAGE, [(&event, &headers)]).await?;
    Ok(event_id)
}
