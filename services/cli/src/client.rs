//! A reusable client of `eye.v1.IngestService`: connect once with an API key, send batches, get one
//! [`EventResult`] per event, in order.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use eye_cli::client::{Client, event};
//!
//! let client = Client::connect("http://127.0.0.1:50051", "eye_...").await?;
//! let session = uuid::Uuid::new_v4();
//! let results = client
//!     .send(vec![event("page interaction", "pageview", r#"{"host":"a.b","path":"/"}"#, session)])
//!     .await?;
//! println!("{:?}", results[0].status());
//! # Ok(())
//! # }
//! ```
//!
//! The client is cheap to clone; clones share one HTTP/2 connection. The key travels as gRPC
//! metadata `authorization: Bearer <key>`, marked sensitive, and never appears in `Debug` output.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eye_proto::v1::{
    Event, EventResult, EventStatus, SendEventsRequest, ingest_service_client::IngestServiceClient,
};
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

/// How long connecting may take before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid endpoint {endpoint:?} (expected e.g. http://127.0.0.1:50051): {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("the api key is empty or holds characters not allowed in gRPC metadata")]
    InvalidKey,
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// An authenticated `IngestService` client.
#[derive(Clone)]
pub struct Client {
    inner: IngestServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
}

/// Never shows the key.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`), authenticating with `key`.
    pub async fn connect(endpoint: impl Into<String>, key: &str) -> Result<Self, ConnectError> {
        let endpoint = endpoint.into();
        let key = key.trim();
        if key.is_empty() {
            return Err(ConnectError::InvalidKey);
        }
        let mut authorization: MetadataValue<Ascii> =
            format!("Bearer {key}").parse().map_err(|_| ConnectError::InvalidKey)?;
        authorization.set_sensitive(true);
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|error| ConnectError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                reason: error.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|source| ConnectError::Connect { endpoint, source })?;
        Ok(Self { inner: IngestServiceClient::new(channel), authorization })
    }

    /// Sends `events` in one `SendEvents` call; `results[i]` answers `events[i]`. A batch refused
    /// as a whole (bad key, over the limits, server unavailable) is an `Err`.
    pub async fn send(&self, events: Vec<Event>) -> Result<Vec<EventResult>, Status> {
        let count = events.len();
        let mut request = tonic::Request::new(SendEventsRequest {
            events,
            sent_at: Some(event_model::envelope::to_timestamp(Utc::now())),
        });
        request.metadata_mut().insert("authorization", self.authorization.clone());
        let results = self.inner.clone().send_events(request).await?.into_inner().results;
        if results.len() != count {
            return Err(Status::internal(format!(
                "the server answered {} results for {count} events",
                results.len()
            )));
        }
        Ok(results)
    }
}

/// An event happening now, with a server-assigned event id.
pub fn event(category: &str, name: &str, data_json: &str, session_id: Uuid) -> Event {
    event_at(category, name, data_json, session_id, Utc::now())
}

/// An event happening at `at`, with a server-assigned event id.
pub fn event_at(
    category: &str,
    name: &str,
    data_json: &str,
    session_id: Uuid,
    at: DateTime<Utc>,
) -> Event {
    Event {
        event_id: String::new(),
        session_id: session_id.to_string(),
        category: category.to_owned(),
        name: name.to_owned(),
        data_json: data_json.to_owned(),
        timestamp: Some(event_model::envelope::to_timestamp(at)),
    }
}

/// `ACCEPTED`, `DUPLICATE`, `REJECTED` or `UNSPECIFIED` (also for values this client does not
/// know).
pub fn status_name(status: i32) -> &'static str {
    match EventStatus::try_from(status).unwrap_or(EventStatus::Unspecified) {
        EventStatus::Unspecified => "UNSPECIFIED",
        EventStatus::Accepted => "ACCEPTED",
        EventStatus::Duplicate => "DUPLICATE",
        EventStatus::Rejected => "REJECTED",
    }
}

/// A gRPC status for humans: `unauthenticated: unknown or revoked api key`.
pub fn describe_status(status: &Status) -> String {
    let code = match status.code() {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    };
    if status.message().is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", status.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_well() {
        assert_eq!(status_name(EventStatus::Accepted as i32), "ACCEPTED");
        assert_eq!(status_name(99), "UNSPECIFIED");
        assert_eq!(
            describe_status(&Status::unauthenticated("unknown or revoked api key")),
            "unauthenticated: unknown or revoked api key"
        );
    }

    #[test]
    fn events_carry_their_type_and_time() {
        let session = Uuid::new_v4();
        let at = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let event = event_at("c", "n", "{}", session, at);
        assert_eq!(event.session_id, session.to_string());
        assert!(event.event_id.is_empty());
        let timestamp = event.timestamp.unwrap();
        assert_eq!((timestamp.seconds, timestamp.nanos), (1_700_000_000, 5));
    }

    #[tokio::test]
    async fn bad_keys_and_endpoints_fail_before_connecting() {
        assert!(matches!(
            Client::connect("http://127.0.0.1:1", " ").await,
            Err(ConnectError::InvalidKey)
        ));
        assert!(matches!(
            Client::connect("http://127.0.0.1:1", "eye_\u{1}x").await,
            Err(ConnectError::InvalidKey)
        ));
        assert!(matches!(
            Client::connect("not a url", "eye_x").await,
            Err(ConnectError::InvalidEndpoint { .. })
        ));
    }
}
