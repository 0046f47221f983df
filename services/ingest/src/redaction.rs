//! Personal properties (`x-eye-pii` in a type's schema, see `event_model::pii`) redacted before
//! an event is enqueued, so the outbox never holds them in clear either. The annotated places of
//! every type's latest schema are reread whenever the registry changes (polled every
//! `ingest.backlog_check_ms`); the validator applies the same rules again with the schema in
//! force, so an event sent in the moment between a schema's registration and ingest's next look
//! is still redacted before the store and the quarantine (it sat in clear only in the outbox).
//! No event is enqueued before the rules were read once: the first request waits for them.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use event_model::{Event, EventType, pii};
use eye_service::schemas;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// The rules of every type with personal properties, as read at one moment.
#[derive(Debug)]
pub struct Rules<'a> {
    by_type: Arc<HashMap<EventType, pii::Rules>>,
    key: &'a Option<Vec<u8>>,
}

impl Rules<'_> {
    /// Redacts `event`'s payload if its type has personal properties.
    pub fn apply(&self, event: &mut Event) {
        if let Some(rules) = self.by_type.get(&event.event_type) {
            rules.apply(&mut event.data_json, self.key.as_deref());
        }
    }
}

/// The redaction rules by type, and the key of hashed properties.
#[derive(Debug)]
pub struct Redaction {
    pool: PgPool,
    key: Option<Vec<u8>>,
    /// Set once the rules were read.
    loaded: OnceCell<()>,
    /// The registry's generation (its row count: registering only adds versions) and the rules
    /// of the types that have any.
    rules: RwLock<(i64, Arc<HashMap<EventType, pii::Rules>>)>,
}

impl Redaction {
    pub fn new(pool: PgPool, key: Option<Vec<u8>>) -> Self {
        Self { pool, key, loaded: OnceCell::new(), rules: RwLock::default() }
    }

    /// Waits until the rules were read once (at once after that).
    pub async fn ready(&self) -> Result<(), sqlx::Error> {
        self.loaded.get_or_try_init(|| self.refresh()).await.map(|_| ())
    }

    /// The rules as they are now, for one batch.
    pub fn rules(&self) -> Rules<'_> {
        Rules { by_type: self.rules.read().expect("redaction rules").1.clone(), key: &self.key }
    }

    /// Rereads the rules if the registry changed.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let generation = schemas::generation(&self.pool).await?;
        if generation == self.rules.read().expect("redaction rules").0 {
            return Ok(());
        }
        let rules: HashMap<EventType, pii::Rules> = schemas::in_force(&self.pool)
            .await?
            .into_iter()
            .filter_map(|in_force| {
                let rules = pii::Rules::of(&in_force.schema).ok().filter(|r| !r.is_empty())?;
                Some((EventType::new(in_force.category, in_force.name), rules))
            })
            .collect();
        tracing::debug!(types = rules.len(), generation, "redaction rules loaded");
        *self.rules.write().expect("redaction rules") = (generation, Arc::new(rules));
        Ok(())
    }

    /// [`refresh`](Self::refresh) every `interval` until `shutdown`.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            match self.refresh().await {
                Ok(()) => {
                    let _ = self.loaded.set(());
                }
                Err(error) => tracing::warn!(%error, "cannot reread the redaction rules"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
