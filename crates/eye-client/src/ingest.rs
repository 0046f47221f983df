//! The raw ingest client: one `SendEvents` call per [`Client::send`], and the small helpers
//! that build events and describe answers.

use chrono::{DateTime, Utc};
use eye_proto::v1::{
    Event, EventResult, EventStatus, SendEventsRequest, SendEventsResponse,
    ingest_service_client::IngestServiceClient,
};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    RetryPolicy,
    connection::{ConnectError, ConnectOptions, Connection},
    retry::{Verdict, verdict},
};

/// Largest answer accepted: results for 1,000 events are far below it.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// The method's path, as the generated client has it.
const SEND_EVENTS: &str = "/eye.v1.IngestService/SendEvents";

/// A `SendEventsRequest` whose events are already encoded (`body`: the `events` fields, field 1,
/// one per event) and whose `sent_at` is set per attempt: it encodes to exactly the bytes of the
/// equivalent `SendEventsRequest`, without building (or copying) the events again.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EncodedRequest {
    pub(crate) body: bytes::Bytes,
    pub(crate) sent_at: Option<prost_types::Timestamp>,
}

impl EncodedRequest {
    /// The body of `events`, each given as its own encoding.
    pub(crate) fn body<'a>(events: impl IntoIterator<Item = &'a bytes::Bytes>) -> bytes::Bytes {
        let mut body = bytes::BytesMut::new();
        for event in events {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut body);
            prost::encoding::encode_varint(event.len() as u64, &mut body);
            body.extend_from_slice(event);
        }
        body.freeze()
    }
}

impl prost::Message for EncodedRequest {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.body);
        if let Some(sent_at) = &self.sent_at {
            prost::encoding::message::encode(2, sent_at, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever encoded, by this client.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.body.len()
            + self
                .sent_at
                .as_ref()
                .map_or(0, |sent_at| prost::encoding::message::encoded_len(2, sent_at))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// An authenticated `IngestService` client.
///
/// One call per [`send`](Self::send), no buffering and no retries: the building block of
/// [`EyeClient`](crate::EyeClient), and what `eye send` uses.
#[derive(Debug, Clone)]
pub struct Client {
    connection: Connection,
}

impl Client {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:50051`) now, authenticating with `key`.
    pub async fn connect(endpoint: impl Into<String>, key: &str) -> Result<Self, ConnectError> {
        let options = ConnectOptions::default();
        let connection = Connection::open(&endpoint.into(), &key.into(), &options).await?;
        Ok(Self { connection })
    }

    /// A client of `endpoint` that connects on first use and reconnects after failures: for
    /// long-running senders (a relay, an importer) that start while ingest may be down.
    pub fn lazy(
        endpoint: impl Into<String>,
        key: &str,
        options: &ConnectOptions,
    ) -> Result<Self, ConnectError> {
        let connection = Connection::lazy(&endpoint.into(), &key.into(), options)?;
        Ok(Self { connection })
    }

    /// Sends `events` as one call, retrying what [`RetryPolicy`] retries (the same events, so
    /// a repeat is DUPLICATE; never sooner than the server's `retry-after`) until the server
    /// answers or the policy's retries or budget run out. See [`Delivery`].
    pub async fn send_retrying(&self, events: &[Event], policy: &RetryPolicy) -> Delivery {
        let started = std::time::Instant::now();
        let mut retry = 0;
        loop {
            let status = match self.send(events.to_vec()).await {
                Ok(results) => return Delivery::Answered(results),
                Err(status) => status,
            };
            let at_least = match verdict(&status) {
                Verdict::Retry { at_least } => at_least,
                Verdict::Split => return Delivery::TooLarge(status),
                Verdict::Fail => return Delivery::Refused(status),
            };
            retry += 1;
            let delay = policy.delay(retry, at_least, &mut rand::rng());
            if retry > policy.max_retries || started.elapsed() + delay > policy.budget {
                return Delivery::GaveUp(status);
            }
            tracing::debug!(retry, delay_ms = delay.as_millis() as u64, code = ?status.code(), "retrying a batch");
            tokio::time::sleep(delay).await;
        }
    }

    pub(crate) fn from_connection(connection: Connection) -> Self {
        Self { connection }
    }

    /// Sends `events` in one `SendEvents` call; `results[i]` answers `events[i]`. A batch refused
    /// as a whole (bad key, over the limits, server unavailable) is an `Err`.
    pub async fn send(&self, events: Vec<Event>) -> Result<Vec<EventResult>, Status> {
        let count = events.len();
        let request = SendEventsRequest { events, sent_at: Some(to_timestamp(Utc::now())) };
        let results = self.send_request(request).await?.results;
        if results.len() != count {
            return Err(Status::internal(format!(
                "the server answered {} results for {count} events",
                results.len()
            )));
        }
        Ok(results)
    }

    /// One `SendEvents` call of a pre-encoded batch (see [`EncodedRequest`]): retries resend
    /// the same bytes, with no copy of the events made per attempt.
    pub(crate) async fn send_encoded(
        &self,
        request: EncodedRequest,
    ) -> Result<SendEventsResponse, Status> {
        let mut grpc = tonic::client::Grpc::new(self.connection.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        if let Some(encoding) = self.connection.compression() {
            grpc = grpc.send_compressed(encoding);
        }
        grpc.ready().await.map_err(|error| Status::unavailable(error.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(SEND_EVENTS);
        let codec = tonic_prost::ProstCodec::<EncodedRequest, SendEventsResponse>::default();
        Ok(grpc.unary(self.connection.request(request), path, codec).await?.into_inner())
    }

    /// One `SendEvents` call as it is (its `sent_at` included); the answer unchecked.
    pub async fn send_request(
        &self,
        request: SendEventsRequest,
    ) -> Result<SendEventsResponse, Status> {
        let mut client = IngestServiceClient::new(self.connection.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        if let Some(encoding) = self.connection.compression() {
            client = client.send_compressed(encoding);
        }
        Ok(client.send_events(self.connection.request(request)).await?.into_inner())
    }
}

/// The namespace of [`record_session_id`] (a fixed, random UUID: never change it).
pub const RECORD_SESSION_NAMESPACE: Uuid =
    Uuid::from_u128(0x5d1c_7a4e_3b9f_4e21_9a0d_6c2b_8f47_e315);

/// The session of one record's history: a UUIDv5 of its type and id (`"card"`, `"42"`), the
/// same for every change of that record, from any producer (the relay's producers, `eye
/// import`), so `eye session <id>` tells what happened to that record through its lifetime.
pub fn record_session_id(record_type: &str, record_id: &str) -> Uuid {
    Uuid::new_v5(&RECORD_SESSION_NAMESPACE, format!("{record_type}\0{record_id}").as_bytes())
}

/// What became of a batch sent with [`Client::send_retrying`].
#[derive(Debug)]
pub enum Delivery {
    /// The server answered every event: `results[i]` for `events[i]`.
    Answered(Vec<EventResult>),
    /// The batch as a whole broke a limit (INVALID_ARGUMENT, OUT_OF_RANGE): send smaller ones.
    TooLarge(Status),
    /// Retrying cannot help (a refused key, an unexpected answer): fix the configuration.
    Refused(Status),
    /// Still failing (the server unreachable or overloaded) when the retries ran out: the events
    /// may or may not be stored; send them again later, with the same ids.
    GaveUp(Status),
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
pub(crate) fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
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
    use prost::Message;

    use super::*;

    #[test]
    fn an_encoded_request_is_byte_for_byte_a_send_events_request() {
        let events = vec![
            event("c", "n", "{}", Uuid::new_v4()),
            event("d", "m", r#"{"a":1}"#, Uuid::new_v4()),
        ];
        let sent_at = Some(to_timestamp(Utc::now()));
        let plain = SendEventsRequest { events: events.clone(), sent_at }.encode_to_vec();
        let encoded: Vec<bytes::Bytes> = events.iter().map(|e| e.encode_to_vec().into()).collect();
        let request = EncodedRequest { body: EncodedRequest::body(&encoded), sent_at };
        assert_eq!(request.encode_to_vec(), plain);
        assert_eq!(request.encoded_len(), plain.len());
    }

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
