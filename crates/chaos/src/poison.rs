//! Poison rows: outbox rows that no retry can fix, planted straight into the outbox, as a foreign
//! producer, an older version or a bug could have queued them. Three kinds, in turn:
//!
//! - stage `write`, an event whose payload is `{"a":"\u0000"}`: ingest refuses it, so it cannot
//!   come in through the front door, and the writer's `::jsonb` cast fails on it every time;
//!   dead-lettered after `max_attempts` claims;
//! - stage `validate`, an `EventBatch` whose application id is not a UUID: the validator refuses
//!   the batch every time; dead-lettered after `max_attempts` claims;
//! - stage `validate`, a body that is not protobuf at all: dead-lettered by the claim itself.
//!
//! Each must end in `outbox_dead_letters` exactly once and hold back none of its batch-mates; no
//! event of theirs may reach `events`. Each holds a single event, so that splitting a failing row
//! (poison isolation) has nothing to split.
//!
//! Each row carries a header naming it, so that the final check can match dead letters to planted
//! rows even if the pipeline re-enqueues (splits) a row under a new id. Planting is idempotent: if
//! the insert's outcome is unknown (Postgres restarting), the retry inserts only if no row with
//! that header exists, in the outbox or among the dead letters.

use eye_service::pipeline::stage;
use std::time::{Duration, Instant};

use chrono::Utc;
use eye_proto::v1::{BatchEvent, EventBatch};
use prost::Message;
use rand::{Rng, rngs::StdRng};
use uuid::Uuid;

use crate::cluster::connect_retry;

/// The header that marks a planted row.
pub(crate) const HEADER: &str = "eye-chaos-poison";
/// A payload `jsonb` refuses.
const POISON_JSON: &str = r#"{"a":"\u0000"}"#;

/// What was planted.
#[derive(Debug, Default)]
pub(crate) struct Planted {
    /// The header value of each planted row.
    pub markers: Vec<String>,
}

/// Plants `count` poison rows at moments drawn from `rng` within the first 85% of `duration`.
pub(crate) async fn plant(
    database_url: String,
    application_id: Uuid,
    count: usize,
    mut rng: StdRng,
    started: Instant,
    duration: Duration,
) -> anyhow::Result<Planted> {
    let mut offsets: Vec<Duration> =
        (0..count).map(|_| duration.mul_f64(rng.random_range(0.05..0.85))).collect();
    offsets.sort_unstable();
    let mut planted = Planted::default();
    for (n, offset) in offsets.into_iter().enumerate() {
        tokio::time::sleep_until((started + offset).into()).await;
        let marker = Uuid::new_v4().to_string();
        let event_id = Uuid::new_v4();
        let mut batch = poison_batch(application_id, event_id);
        let (stage, body) = match n % 3 {
            0 => (stage::WRITE, batch.encode_to_vec()),
            1 => {
                batch.application_id.truncate(3);
                (stage::VALIDATE, batch.encode_to_vec())
            }
            // An incomplete varint: no protobuf decoder accepts it.
            _ => (stage::VALIDATE, vec![0xff, 0xff, 0xff]),
        };
        plant_one(&database_url, stage, &marker, &body).await?;
        planted.markers.push(marker);
    }
    Ok(planted)
}

async fn plant_one(
    database_url: &str,
    stage: &str,
    marker: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let mut conn = connect_retry(database_url, Duration::from_secs(30)).await?;
            sqlx::query(
                "INSERT INTO outbox (stage, body, headers) \
                 SELECT $4, $1, jsonb_build_object($2::text, $3::text) \
                 WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE headers->>$2 = $3) \
                   AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters WHERE headers->>$2 = $3)",
            )
            .bind(body)
            .bind(HEADER)
            .bind(marker)
            .bind(stage)
            .execute(&mut conn)
            .await?;
            anyhow::Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error.context("cannot plant a poison row")),
        }
    }
}

fn poison_batch(application_id: Uuid, event_id: Uuid) -> EventBatch {
    let now = Utc::now();
    let timestamp = prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    };
    EventBatch {
        application_id: application_id.as_bytes().to_vec(),
        received_at: Some(timestamp),
        events: vec![BatchEvent {
            event_id: event_id.as_bytes().to_vec(),
            session_id: Uuid::new_v4().as_bytes().to_vec(),
            category: "page interaction".into(),
            name: "pageview".into(),
            data_json: POISON_JSON.into(),
            occurred_at: Some(timestamp),
            schema_version: 1,
        }],
    }
}
