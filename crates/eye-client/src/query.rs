//! The query client: the read path (`eye.v1.QueryService`), following page tokens up to a limit.

use std::time::Duration;

use eye_proto::v1::{
    ErrorFilter, EventError, EventFilter, GetSessionRequest, GetStatsRequest, GetStatsResponse,
    ListErrorsRequest, ListEventsRequest, ReasonCount, ReplayErrorsRequest, ReplayErrorsResponse,
    SessionSummary, StoredEvent, query_service_client::QueryServiceClient,
};
use tonic::{Status, transport::Channel};

use crate::connection::{ConnectError, ConnectOptions, Connection};

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
#[derive(Debug, Clone)]
pub struct QueryClient {
    inner: QueryServiceClient<Channel>,
    connection: Connection,
}

impl QueryClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50052`) now, authenticating with `key`.
    pub async fn connect(endpoint: impl Into<String>, key: &str) -> Result<Self, ConnectError> {
        let options = ConnectOptions::default();
        let connection = Connection::open(&endpoint.into(), &key.into(), &options).await?;
        Ok(Self { inner: QueryServiceClient::new(connection.channel.clone()), connection })
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
                .list_events(self.connection.request(request))
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
                .get_session(self.connection.request(request))
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
                .list_errors(self.connection.request(request))
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
        Ok(self.inner.clone().replay_errors(self.connection.request(request)).await?.into_inner())
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
            .get_stats(self.connection.request(GetStatsRequest { window }))
            .await?
            .into_inner())
    }
}

/// The page size to ask for when `read` of `limit` items are in hand.
fn page_size(limit: usize, read: usize) -> i32 {
    limit.saturating_sub(read).clamp(1, MAX_PAGE_SIZE) as i32
}
