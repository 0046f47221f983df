//! NATS JetStream: each event is published to `eye.<application>.<category>.<name>` with
//! `Nats-Msg-Id` = its event id, and a batch is acked only once JetStream acknowledged every
//! publish. Within the stream's duplicate window JetStream drops a republished id, so a batch
//! delivered again after a crash stores each event once.
//!
//! Subject tokens are made subject-safe: every character other than ASCII letters, digits, `-`
//! and `_` becomes `_` (NATS reserves `.`, `*`, `>` and whitespace), and an empty token is `_`.
//! The message body is the event's JSON, exactly a webhook batch's element, so a consumer that
//! needs the exact names reads them there.

use std::time::Duration;

use async_nats::{HeaderMap, jetstream};
use futures::future::try_join_all;

use crate::events::DeliveredEvent;

/// The stream `--create-stream` creates, and its subjects.
pub const STREAM: &str = "EYE";
pub const SUBJECTS: &str = "eye.>";
/// The duplicate window `--create-stream` sets: longer than a lease plus a few retries, so a
/// batch redelivered after a crash is deduplicated.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60 * 60);

/// One token of a subject, made subject-safe.
pub fn token(text: &str) -> String {
    if text.is_empty() {
        return "_".into();
    }
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect()
}

/// The subject of an event.
pub fn subject(event: &DeliveredEvent) -> String {
    format!("eye.{}.{}.{}", token(&event.application), token(&event.category), token(&event.name))
}

/// A JetStream destination. Connects in the background and reconnects by itself.
#[derive(Clone)]
pub struct Nats {
    jetstream: jetstream::Context,
    timeout: Duration,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats").finish_non_exhaustive()
    }
}

/// Why publishing failed; the batch is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NatsError(String);

impl Nats {
    /// A client of the server at `url`; it connects in the background (a server down at start-up
    /// is retried, and publishes fail with a timeout meanwhile).
    /// `url` may list several servers of a cluster, separated by commas.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, NatsError> {
        let servers = url
            .split(',')
            .map(|server| server.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| NatsError(format!("{url:?} is not a NATS server list: {error}")))?;
        let client = async_nats::ConnectOptions::new()
            .name("eye-delivery")
            .retry_on_initial_connect()
            .request_timeout(Some(timeout))
            .connect(servers)
            .await
            .map_err(|error| NatsError(format!("cannot connect to {url}: {error}")))?;
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(timeout);
        Ok(Self { jetstream, timeout })
    }

    /// Publishes every event and waits for all acknowledgements.
    pub async fn publish(&self, events: &[DeliveredEvent]) -> Result<(), NatsError> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
            let body = serde_json::to_vec(event).expect("delivered events serialize");
            let ack = self
                .jetstream
                .publish_with_headers(subject(event), headers, body.into())
                .await
                .map_err(|error| NatsError(format!("publish failed: {error}")))?;
            acks.push(ack.into_future());
        }
        let acked = tokio::time::timeout(self.timeout, try_join_all(acks)).await;
        match acked {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(NatsError(format!("JetStream did not acknowledge: {error}"))),
            Err(_) => Err(NatsError(format!(
                "JetStream did not acknowledge within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Creates (or updates) the stream [`STREAM`] on subjects [`SUBJECTS`] with `replicas` and the
    /// [`DUPLICATE_WINDOW`].
    pub async fn create_stream(&self, replicas: usize) -> Result<(), NatsError> {
        let config = jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECTS.into()],
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|error| NatsError(format!("cannot create stream {STREAM}: {error}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe() {
        assert_eq!(token("web shop"), "web_shop");
        assert_eq!(token("page interaction"), "page_interaction");
        assert_eq!(token("a.b*c>d"), "a_b_c_d");
        assert_eq!(token("card-service_2"), "card-service_2");
        assert_eq!(token(""), "_");
        assert_eq!(token("ünï"), "_n_");
    }
}
