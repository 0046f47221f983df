//! `eye-client`: the Rust client of The Eye's gRPC services, authenticated with an API key. It
//! depends on the generated client stubs (`eye-proto` with feature `client`), tonic and tokio
//! only: no service crate, no database driver.
//!
//! - [`Client`] sends events to `eye.v1.IngestService` and gets one [`EventResult`] per event, in
//!   order;
//! - [`QueryClient`] reads `eye.v1.QueryService` (a key with the `read` role): events, sessions,
//!   quarantined events (and their replay) and stats, following page tokens up to a limit.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use eye_client::{Client, QueryClient, event};
//! use eye_proto::v1::EventFilter;
//!
//! let client = Client::connect("http://127.0.0.1:50051", "eye_...").await?;
//! let session = uuid::Uuid::new_v4();
//! let results = client
//!     .send(vec![event("page interaction", "pageview", r#"{"host":"a.b","path":"/"}"#, session)])
//!     .await?;
//! println!("{:?}", results[0].status());
//!
//! let query = QueryClient::connect("http://127.0.0.1:50052", "eye_...").await?;
//! let filter = EventFilter { session_id: session.to_string(), ..EventFilter::default() };
//! for event in query.list_events(filter, 1_000).await?.items {
//!     println!("{} {}", event.name, event.data_json);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Clients are cheap to clone; clones share one HTTP/2 connection. The key travels as gRPC
//! metadata `authorization: Bearer <key>`, marked sensitive, and never appears in `Debug` output.

use std::time::Duration;

use chrono::{DateTime, Utc};
use eye_proto::v1::{
    ErrorFilter, Event, EventError, EventFilter, EventResult, EventStatus, GetSessionRequest,
    GetStatsRequest, GetStatsResponse, ListErrorsRequest, ListEventsRequest, ReasonCount,
    ReplayErrorsRequest, ReplayErrorsResponse, SendEventsRequest, SessionSummary, StoredEvent,
    ingest_service_client::IngestServiceClient, query_service_client::QueryServiceClient,
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
        let (channel, authorization) = connect(endpoint.into(), key).await?;
        Ok(Self { inner: IngestServiceClient::new(channel), authorization })
    }

    /// Sends `events` in one `SendEvents` call; `results[i]` answers `events[i]`. A batch refused
    /// as a whole (bad key, over the limits, server unavailable) is an `Err`.
    pub async fn send(&self, events: Vec<Event>) -> Result<Vec<EventResult>, Status> {
        let count = events.len();
        let request = SendEventsRequest { events, sent_at: Some(to_timestamp(Utc::now())) };
        let request = authorized(request, &self.authorization);
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

/// Checks the key and opens a channel to `endpoint`.
async fn connect(
    endpoint: String,
    key: &str,
) -> Result<(Channel, MetadataValue<Ascii>), ConnectError> {
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
    Ok((channel, authorization))
}

fn authorized<T>(message: T, authorization: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", authorization.clone());
    request
}

/// Most items the server returns per page.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// Items read by following page tokens, up to a limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// The limit was reached while more items matched.
    pub truncated: bool,
}

/// An authenticated `QueryService` client (the key needs the `read` role).
///
/// The listing methods follow `next_page_token` until `limit` items are read or the result ends,
/// asking for no more than the items still wanted; the server may return fewer per page (it keeps
/// pages under 4 MiB), which only means more round trips.
#[derive(Clone)]
pub struct QueryClient {
    inner: QueryServiceClient<Channel>,
    authorization: MetadataValue<Ascii>,
}

/// Never shows the key.
impl std::fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryClient").finish_non_exhaustive()
    }
}

impl QueryClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50052`), authenticating with `key`.
    pub async fn connect(endpoint: impl Into<String>, key: &str) -> Result<Self, ConnectError> {
        let (channel, authorization) = connect(endpoint.into(), key).await?;
        Ok(Self { inner: QueryServiceClient::new(channel), authorization })
    }

    /// Up to `limit` stored events matching `filter`, in time order.
    pub async fn list_events(
        &self,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Listing<StoredEvent>, Status> {
        let mut listing = Listing::default();
        let mut page_token = String::new();
        loop {
            let request = ListEventsRequest {
                filter: Some(filter.clone()),
                page_size: page_size(limit, listing.items.len()),
                page_token,
            };
            let page = self
                .inner
                .clone()
                .list_events(authorized(request, &self.authorization))
                .await?
                .into_inner();
            listing.items.extend(page.events);
            page_token = page.next_page_token;
            if page_token.is_empty() || listing.items.len() >= limit {
                listing.truncated = !page_token.is_empty();
                return Ok(listing);
            }
        }
    }

    /// A session's summary and up to `limit` of its events, in time order. An unknown session is
    /// `NOT_FOUND`.
    pub async fn session(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<(SessionSummary, Listing<StoredEvent>), Status> {
        let mut listing = Listing::default();
        let mut page_token = String::new();
        loop {
            let request = GetSessionRequest {
                session_id: session_id.to_owned(),
                page_size: page_size(limit, listing.items.len()),
                page_token,
            };
            let page = self
                .inner
                .clone()
                .get_session(authorized(request, &self.authorization))
                .await?
                .into_inner();
            listing.items.extend(page.events);
            page_token = page.next_page_token;
            if page_token.is_empty() || listing.items.len() >= limit {
                listing.truncated = !page_token.is_empty();
                let summary = page.session.unwrap_or_default();
                return Ok((summary, listing));
            }
        }
    }

    /// Up to `limit` quarantined events matching `filter`, newest first, and the counts per
    /// reason over the whole filter.
    pub async fn list_errors(
        &self,
        filter: ErrorFilter,
        limit: usize,
    ) -> Result<(Listing<EventError>, Vec<ReasonCount>), Status> {
        let mut listing = Listing::default();
        let mut counts = None;
        let mut page_token = String::new();
        loop {
            let request = ListErrorsRequest {
                filter: Some(filter.clone()),
                page_size: page_size(limit, listing.items.len()),
                page_token,
            };
            let page = self
                .inner
                .clone()
                .list_errors(authorized(request, &self.authorization))
                .await?
                .into_inner();
            listing.items.extend(page.errors);
            // Counted with the first page; later pages count again, possibly newer rows.
            counts.get_or_insert(page.counts);
            page_token = page.next_page_token;
            if page_token.is_empty() || listing.items.len() >= limit {
                listing.truncated = !page_token.is_empty();
                return Ok((listing, counts.unwrap_or_default()));
            }
        }
    }

    /// One `ReplayErrors` call (see `ReplayErrorsRequest` for what it selects).
    pub async fn replay_errors(
        &self,
        request: ReplayErrorsRequest,
    ) -> Result<ReplayErrorsResponse, Status> {
        Ok(self
            .inner
            .clone()
            .replay_errors(authorized(request, &self.authorization))
            .await?
            .into_inner())
    }

    /// Pipeline stats over the `window` ending now (the server's default, 1 hour, when `None`).
    pub async fn stats(&self, window: Option<Duration>) -> Result<GetStatsResponse, Status> {
        let window = match window {
            None => None,
            Some(window) => Some(
                prost_types::Duration::try_from(window)
                    .map_err(|_| Status::invalid_argument("window: too long"))?,
            ),
        };
        Ok(self
            .inner
            .clone()
            .get_stats(authorized(GetStatsRequest { window }, &self.authorization))
            .await?
            .into_inner())
    }
}

/// The page size to ask for when `read` of `limit` items are in hand.
fn page_size(limit: usize, read: usize) -> i32 {
    limit.saturating_sub(read).clamp(1, MAX_PAGE_SIZE) as i32
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
        timestamp: Some(to_timestamp(at)),
    }
}

/// A `DateTime` as a protobuf timestamp.
fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
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
