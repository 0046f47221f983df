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
        let (listing, ()) = follow(limit, |page_size, page_token| {
            let request = ListEventsRequest { filter: Some(filter.clone()), page_size, page_token };
            let mut inner = self.inner.clone();
            async move {
                let page = inner.list_events(self.connection.request(request)).await?.into_inner();
                Ok((page.events, page.next_page_token, ()))
            }
        })
        .await?;
        Ok(listing)
    }

    /// A session's summary and up to `limit` of its events, in time order. An unknown session is
    /// `NOT_FOUND`.
    pub async fn session(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<(SessionSummary, Listing<StoredEvent>), Status> {
        let (listing, summary) = follow(limit, |page_size, page_token| {
            let session_id = session_id.to_owned();
            let request = GetSessionRequest { session_id, page_size, page_token };
            let mut inner = self.inner.clone();
            async move {
                let page = inner.get_session(self.connection.request(request)).await?.into_inner();
                Ok((page.events, page.next_page_token, page.session.unwrap_or_default()))
            }
        })
        .await?;
        Ok((summary, listing))
    }

    /// Up to `limit` quarantined events matching `filter`, newest first, and the counts per
    /// reason over the whole filter (as counted with the first page).
    pub async fn list_errors(
        &self,
        filter: ErrorFilter,
        limit: usize,
    ) -> Result<(Listing<EventError>, Vec<ReasonCount>), Status> {
        follow(limit, |page_size, page_token| {
            let request = ListErrorsRequest { filter: Some(filter.clone()), page_size, page_token };
            let mut inner = self.inner.clone();
            async move {
                let page = inner.list_errors(self.connection.request(request)).await?.into_inner();
                Ok((page.errors, page.next_page_token, page.counts))
            }
        })
        .await
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

/// Follows page tokens from the first page until `limit` items are read or the pages end;
/// `fetch(page_size, page_token)` reads one page: its items, the next token, and a value of the
/// page's own (a session's summary, the counts per reason), of which the first page's is kept:
/// later pages may count newer rows.
async fn follow<T, V, F, Fut>(limit: usize, mut fetch: F) -> Result<(Listing<T>, V), Status>
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String, V), Status>>,
{
    let mut listing = Listing { items: Vec::new(), truncated: false };
    let mut first = None;
    let mut page_token = String::new();
    loop {
        let (items, next, value) = fetch(page_size(limit, listing.items.len()), page_token).await?;
        listing.items.extend(items);
        first.get_or_insert(value);
        page_token = next;
        if page_token.is_empty() || listing.items.len() >= limit {
            listing.truncated = !page_token.is_empty();
            return Ok((listing, first.expect("a page was read")));
        }
    }
}

/// The page size to ask for when `read` of `limit` items are in hand.
fn page_size(limit: usize, read: usize) -> i32 {
    limit.saturating_sub(read).clamp(1, MAX_PAGE_SIZE) as i32
}
