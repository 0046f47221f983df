//! Subscriptions: where stored events go out (a webhook, a NATS JetStream server) and which ones.
//!
//! The writer matches every event it stores against the `live` subscriptions in its hand-off
//! transaction and enqueues the keys of the matching ones into the subscription's outbox stage
//! ([`stage::deliver`]); `eye-delivery` delivers them. A subscription created with a start time
//! (`--from`) is `backfilling` first: `eye-delivery` enqueues the events stored since then and
//! turns it `live` when it has caught up (see `eye_delivery::backfill`).
//!
//! Changes reach `eye-delivery` within seconds (a trigger NOTIFYs it); the writer sees them in
//! its next statement.

use base64::Engine;
use chrono::{DateTime, Utc};
use eye_service::pipeline::{delivery, stage};
use rand::RngCore;
use sqlx::{Acquire, PgConnection, Postgres};
use uuid::Uuid;

use crate::AdminError;

/// The prefix of a Standard Webhooks signing secret; the rest is the base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";

/// Where a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// POST signed JSON batches to this URL (`http://` or `https://`).
    Webhook(String),
    /// Publish each event to JetStream on the server at this URL (`nats://` or `tls://`).
    Nats(String),
}

impl Destination {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Nats(_) => "nats",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Webhook(url) | Self::Nats(url) => url,
        }
    }

    fn check(&self) -> Result<(), AdminError> {
        let (schemes, what): (&[&str], _) = match self {
            Self::Webhook(_) => (&["http://", "https://"], "a webhook URL"),
            Self::Nats(_) => (&["nats://", "tls://"], "a NATS server URL"),
        };
        let url = self.url();
        let rest = schemes.iter().find_map(|scheme| url.strip_prefix(scheme));
        match rest {
            Some(rest) if !rest.is_empty() && !url.chars().any(char::is_whitespace) => Ok(()),
            _ => Err(AdminError::Invalid(format!(
                "{url:?} is not {what}: it must start with {}",
                schemes.join(" or ")
            ))),
        }
    }
}

/// Which stored events a subscription takes, as `eye events` filters them. Empty fields match
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// An application's name.
    pub application: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    /// A JSON object the event's `data` must contain (`@>`), e.g. `{"client": "Client_A"}`.
    pub contains: Option<serde_json::Value>,
}

/// What `eye subscriptions create` asks for.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub name: String,
    pub destination: Destination,
    pub filter: Filter,
    /// Backfill the events stored since then before going live; `None`: from now on.
    pub from: Option<DateTime<Utc>>,
    /// Deliver one batch at a time, in storage order, with sequence numbers.
    pub ordered: bool,
}

/// A subscription as `eye-delivery` reads it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub name: String,
    pub destination: String,
    pub url: String,
    /// The webhook signing secret; never printed by `Debug`.
    pub secret: Option<String>,
    pub application_id: Option<Uuid>,
    pub category: Option<String>,
    pub event_name: Option<String>,
    pub contains: Option<serde_json::Value>,
    pub ordered: bool,
    pub state: String,
    pub paused: bool,
    pub backfill_from: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("destination", &self.destination)
            .field("url", &self.url)
            .field("ordered", &self.ordered)
            .field("state", &self.state)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Its outbox stage.
    pub fn stage(&self) -> String {
        stage::deliver(self.id)
    }

    pub fn is_backfilling(&self) -> bool {
        self.state == BACKFILLING
    }
}

const BACKFILLING: &str = "backfilling";
const LIVE: &str = "live";

/// The columns of [`Subscription`].
const COLUMNS: &str = "id, name, destination, url, secret, application_id, category, event_name, \
     contains, ordered, state, paused, backfill_from";

/// A created subscription and, for a webhook, its signing secret: the only time it is shown.
pub struct Created {
    pub subscription: Subscription,
    pub secret: Option<String>,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created").field("subscription", &self.subscription).finish_non_exhaustive()
    }
}

/// One subscription with its delivery state, as `eye subscriptions list` and the console show it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SubscriptionStatus {
    pub name: String,
    pub destination: String,
    pub url: String,
    pub application: Option<String>,
    pub category: Option<String>,
    pub event_name: Option<String>,
    pub contains: Option<serde_json::Value>,
    pub ordered: bool,
    pub state: String,
    pub paused: bool,
    pub paused_reason: Option<String>,
    /// Events acknowledged by the destination.
    pub delivered: i64,
    /// Events enqueued and not yet delivered (including retrying ones).
    pub pending: i64,
    /// Of those, events whose last attempt failed and that wait for their retry.
    pub retrying: i64,
    /// Age of the oldest pending batch, in seconds: how far behind storage delivery is.
    pub lag_seconds: f64,
    /// Batches dead-lettered (`eye dlq list --stage deliver/<id>` shows why).
    pub dead_letters: i64,
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// Checks a subscription name: 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter
/// or digit (it appears in metrics labels and webhook bodies).
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let valid = (1..=64).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "the subscription name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-', \
             starting with a letter or digit"
        )))
    }
}

/// A new Standard Webhooks signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// Creates a subscription. Without a start time it is live at once: events stored from the
/// writer's next statement on are delivered. With one, it backfills first.
pub async fn create<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    new: &NewSubscription,
) -> Result<Created, AdminError> {
    check_name(&new.name)?;
    new.destination.check()?;
    if let Some(contains) = new.filter.contains.as_ref().filter(|c| !c.is_object()) {
        return Err(AdminError::Invalid(format!(
            "--contains must be a JSON object, like {{\"client\": \"Client_A\"}}; got {contains}"
        )));
    }
    for (flag, value) in [("--category", &new.filter.category), ("--name", &new.filter.name)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(AdminError::Invalid(format!("{flag} is empty")));
        }
    }
    let mut tx = db.begin().await?;
    let application_id = match &new.filter.application {
        Some(name) => Some(crate::apps::lock_active(&mut tx, name).await?),
        None => None,
    };
    let secret = matches!(new.destination, Destination::Webhook(_)).then(generate_secret);
    let state = if new.from.is_some() { BACKFILLING } else { LIVE };
    let inserted: Option<Subscription> = sqlx::query_as(&format!(
        "INSERT INTO subscriptions (id, name, destination, url, secret, application_id, category, \
             event_name, contains, ordered, state, backfill_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (name) DO NOTHING \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(&new.name)
    .bind(new.destination.kind())
    .bind(new.destination.url())
    .bind(&secret)
    .bind(application_id)
    .bind(&new.filter.category)
    .bind(&new.filter.name)
    .bind(&new.filter.contains)
    .bind(new.ordered)
    .bind(state)
    .bind(new.from)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(subscription) = inserted else {
        return Err(AdminError::Invalid(format!(
            "a subscription named `{}` already exists; delete it first or choose another name",
            new.name
        )));
    };
    tx.commit().await?;
    Ok(Created { subscription, secret })
}

/// Every subscription, for `eye-delivery`.
pub async fn all<'c>(
    db: impl Acquire<'c, Database = Postgres>,
) -> Result<Vec<Subscription>, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM subscriptions ORDER BY name"))
        .fetch_all(&mut *conn)
        .await?)
}

/// One subscription by name.
pub async fn get<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
) -> Result<Subscription, AdminError> {
    let mut conn = db.acquire().await?;
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM subscriptions WHERE name = $1"))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| no_such(name))
}

fn no_such(name: &str) -> AdminError {
    AdminError::Invalid(format!(
        "no subscription named `{name}`; `eye subscriptions list` shows them"
    ))
}

/// Every subscription with its delivery state, by name.
pub async fn list<'c>(
    db: impl Acquire<'c, Database = Postgres>,
) -> Result<Vec<SubscriptionStatus>, AdminError> {
    let mut conn = db.acquire().await?;
    Ok(sqlx::query_as(
        "SELECT s.name, s.destination, s.url, a.name AS application, s.category, s.event_name, \
                s.contains, s.ordered, s.state, s.paused, s.paused_reason, s.delivered, \
                coalesce(o.pending, 0)::int8 AS pending, coalesce(o.retrying, 0)::int8 AS retrying, \
                coalesce(o.lag_seconds, 0)::float8 AS lag_seconds, \
                coalesce(d.dead_letters, 0)::int8 AS dead_letters, s.id, s.created_at \
         FROM subscriptions s \
         LEFT JOIN applications a ON a.id = s.application_id \
         LEFT JOIN LATERAL ( \
             SELECT sum((headers->>$2)::int8) AS pending, \
                    sum((headers->>$2)::int8) FILTER (WHERE last_error IS NOT NULL) AS retrying, \
                    extract(epoch FROM now() - min(created_at)) AS lag_seconds \
             FROM outbox WHERE stage = $1 || s.id::text \
         ) o ON true \
         LEFT JOIN LATERAL ( \
             SELECT count(*) AS dead_letters FROM outbox_dead_letters WHERE stage = $1 || s.id::text \
         ) d ON true \
         ORDER BY s.name",
    )
    .bind(stage::DELIVER_PREFIX)
    .bind(delivery::EVENTS_HEADER)
    .fetch_all(&mut *conn)
    .await?)
}

/// Pauses delivery (feeding goes on); `reason` is shown by `list`. False if it was paused already.
pub async fn pause<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    reason: &str,
) -> Result<bool, AdminError> {
    set_paused(db, name, true, Some(reason)).await
}

/// Resumes delivery: what was fed while paused is delivered. False if it was not paused.
pub async fn resume<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
) -> Result<bool, AdminError> {
    set_paused(db, name, false, None).await
}

async fn set_paused<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
    paused: bool,
    reason: Option<&str>,
) -> Result<bool, AdminError> {
    let mut conn = db.acquire().await?;
    let was: Option<bool> = sqlx::query_scalar(
        "UPDATE subscriptions s SET paused = $2, paused_reason = $3, updated_at = now() \
         FROM (SELECT id, paused FROM subscriptions WHERE name = $1 FOR UPDATE) old \
         WHERE s.id = old.id RETURNING old.paused",
    )
    .bind(name)
    .bind(paused)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    match was {
        Some(was) => Ok(was != paused),
        None => Err(no_such(name)),
    }
}

/// Pauses the subscription with this id (a webhook answered 410 Gone): for `eye-delivery`.
pub async fn pause_id(conn: &mut PgConnection, id: Uuid, reason: &str) -> Result<(), AdminError> {
    sqlx::query(
        "UPDATE subscriptions SET paused = true, paused_reason = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`delete`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Events that were enqueued and not delivered.
    pub pending: i64,
    pub dead_letters: u64,
}

/// Deletes a subscription with its pending batches and dead letters.
///
/// It [fences](fence) the writers first, so that no hand-off that matched the subscription can
/// commit its rows after they were deleted.
pub async fn delete<'c>(
    db: impl Acquire<'c, Database = Postgres>,
    name: &str,
) -> Result<Deleted, AdminError> {
    let mut tx = db.begin().await?;
    fence(&mut tx).await?;
    let id: Uuid = sqlx::query_scalar("DELETE FROM subscriptions WHERE name = $1 RETURNING id")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| no_such(name))?;
    let stage = stage::deliver(id);
    let pending: i64 = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM outbox WHERE stage = $1 RETURNING headers) \
         SELECT coalesce(sum((headers->>$2)::int8), 0)::int8 FROM gone",
    )
    .bind(&stage)
    .bind(delivery::EVENTS_HEADER)
    .fetch_one(&mut *tx)
    .await?;
    let dead_letters = sqlx::query("DELETE FROM outbox_dead_letters WHERE stage = $1")
        .bind(&stage)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(Deleted { pending, dead_letters })
}

/// Waits until no writer's hand-off that has read the subscriptions is still open, and keeps new
/// ones from reading them until the caller's transaction ends; returns the clock at that moment.
///
/// Every event stored by a hand-off that committed before the fence has `stored_at` before the
/// returned time; every hand-off after it sees the caller's changes and stores later times (the
/// writer stores `clock_timestamp()`, taken after its statement's locks). Hold it for
/// milliseconds: writers wait meanwhile.
pub async fn fence(conn: &mut PgConnection) -> Result<DateTime<Utc>, AdminError> {
    sqlx::query("LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE").execute(&mut *conn).await?;
    Ok(sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["client-a", "audit.search_index", "A1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn destinations_are_checked() {
        assert!(Destination::Webhook("https://example.com/hook".into()).check().is_ok());
        assert!(Destination::Nats("nats://127.0.0.1:4222".into()).check().is_ok());
        for bad in [
            Destination::Webhook("ftp://x".into()),
            Destination::Webhook("http://".into()),
            Destination::Nats("http://x".into()),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_follow_standard_webhooks() {
        let secret = generate_secret();
        let key = secret.strip_prefix(SECRET_PREFIX).expect("prefix");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(key).expect("base64").len(),
            32
        );
        assert_ne!(secret, generate_secret());
    }
}
