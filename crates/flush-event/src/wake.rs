//! Wake-ups: one LISTEN connection per process tells idle consumers that their stage has rows.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{CHANNEL, Error};

/// Fans `NOTIFY flush_event, '<stage>'` out to the consumers of each stage. Cheap to clone.
///
/// A wake-up is a version bump on a `watch` channel, so one that lands between a consumer's empty
/// claim and its wait is not lost. Consumers also poll on a timer, so a notification lost while
/// the LISTEN connection reconnects costs at most one poll interval.
#[derive(Debug, Clone, Default)]
pub struct Waker {
    stages: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Waker {
    /// Starts the LISTEN task; it ends when `shutdown` is cancelled. It never fails: while the
    /// database is unreachable it keeps trying to connect (consumers poll meanwhile), so a consumer
    /// can start during an outage instead of crash-looping.
    pub fn listen(pool: &PgPool, shutdown: CancellationToken) -> Self {
        let waker = Self::default();
        let (pool, task_waker) = (pool.clone(), waker.clone());
        tokio::spawn(async move {
            let mut listener = loop {
                match connect(&pool).await {
                    Ok(listener) => break listener,
                    Err(error) => {
                        tracing::warn!(%error, "outbox listener cannot connect; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            // Rows may have arrived while we were not listening.
            task_waker.wake_all();
            loop {
                let notification = tokio::select! {
                    () = shutdown.cancelled() => return,
                    notification = listener.try_recv() => notification,
                };
                match notification {
                    Ok(Some(notification)) => task_waker.wake(notification.payload()),
                    // The connection was lost and re-established: anything may have been missed.
                    Ok(None) => task_waker.wake_all(),
                    Err(error) => {
                        tracing::warn!(%error, "outbox listener failed; consumers fall back to polling");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        waker
    }

    /// A receiver that changes whenever `stage` is woken.
    pub fn subscribe(&self, stage: &str) -> watch::Receiver<u64> {
        self.sender(stage).subscribe()
    }

    /// Wakes the consumers of `stage` (also usable directly, in-process).
    pub fn wake(&self, stage: &str) {
        self.sender(stage).send_modify(|version| *version += 1);
    }

    fn wake_all(&self) {
        for sender in self.stages.lock().expect("waker lock").values() {
            sender.send_modify(|version| *version += 1);
        }
    }

    fn sender(&self, stage: &str) -> watch::Sender<u64> {
        self.stages
            .lock()
            .expect("waker lock")
            .entry(stage.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

/// Sends `NOTIFY channel, payload` on its own, outside any transaction of the caller's: the
/// wake-up after a commit made with [`flush_events_unannounced`](crate::enqueue::flush_events_unannounced).
/// Its commit does not wait for the disk (`synchronous_commit` off for this statement): a
/// notification is not data, and a lost one costs a consumer at most its poll interval.
pub async fn notify(pool: &PgPool, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// [`notify`] on the outbox's channel: wakes the consumers of `stage`, in every process.
pub async fn wake(pool: &PgPool, stage: &str) -> Result<(), sqlx::Error> {
    notify(pool, CHANNEL, stage).await
}

/// [`notify`] in a task of its own, so that the caller does not wait for it; a failure is
/// logged (consumers poll meanwhile).
pub fn notify_later(pool: &PgPool, channel: &'static str, payload: &'static str) {
    let pool = pool.clone();
    tokio::spawn(async move {
        if let Err(error) = notify(&pool, channel, payload).await {
            tracing::warn!(%error, channel, payload, "wake-up not sent; consumers will poll");
        }
    });
}

async fn connect(pool: &PgPool) -> Result<PgListener, Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
