//! The HTTP/JSON adapter of the ingest core, for web pages and for anything that speaks HTTP
//! but not gRPC: `POST /v1/events`, `GET /healthz`, `GET /openapi.json` (generated from the
//! types and handlers below) and `GET /v1/eye.js` (the browser tracker).
//!
//! It decodes the body into the core's [`Incoming`] events and maps [`IngestError`] to an HTTP
//! answer, here and nowhere else; every rule about keys, limits, envelopes, duplicates and
//! back-pressure is the core's, so an event gets the same answer as over gRPC. What is HTTP's
//! own: the body (JSON; `text/plain` read as JSON, so a page needs no CORS preflight;
//! `Content-Encoding: gzip` or `deflate`, capped once inflated), the key's places (header,
//! body `key`, `?key=`: `navigator.sendBeacon` cannot set headers), CORS, and the single-event
//! form of the body.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use event_model::{Rejection, envelope};
use eye_proto::v1::{self as pb, EventStatus};
use eye_service::database::DatabaseStatus;
use eye_telemetry::{metrics::Metrics, propagation};
use flush_event::Headers;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;
use utoipa::{OpenApi, ToSchema};

use crate::{
    core::{Caller, Incoming, Ingest},
    error::IngestError,
};

/// The browser tracker, minified (`clients/js/build.sh`), served at `GET /v1/eye.js`.
const TRACKER: &str = include_str!("../../../clients/js/eye.min.js");

/// What the HTTP routes share.
#[derive(Debug, Clone)]
pub struct HttpIngest {
    core: Arc<Ingest>,
    metrics: Metrics,
    database: DatabaseStatus,
    shutdown: CancellationToken,
    max_body_bytes: usize,
    trust_forwarded_for: bool,
}

impl HttpIngest {
    pub fn new(
        core: Arc<Ingest>,
        metrics: Metrics,
        database: DatabaseStatus,
        shutdown: CancellationToken,
        settings: &eye_service::settings::IngestSettings,
    ) -> Self {
        Self {
            core,
            metrics,
            database,
            shutdown,
            max_body_bytes: settings.http_max_body_bytes,
            trust_forwarded_for: settings.trust_forwarded_for,
        }
    }

    /// The routes, with CORS: any origin may ask (the answer mirrors it); whether the key may be
    /// used from that origin is the core's decision, made on the request itself.
    pub fn router(self) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_methods([Method::POST, Method::GET])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::HeaderName::from_static("traceparent"),
                header::HeaderName::from_static("tracestate"),
            ])
            .expose_headers([header::RETRY_AFTER])
            // Chrome asks before a public page may call a private address (an intranet ingest).
            .allow_private_network(true)
            .max_age(Duration::from_secs(24 * 60 * 60));
        Router::new()
            .route("/v1/events", post(send_events))
            .route("/healthz", get(healthz))
            .route("/openapi.json", get(openapi))
            .route("/v1/eye.js", get(tracker))
            .with_state(self)
            .layer(cors)
    }
}

/// A batch of events (or, instead of `events`, the fields of one event at the top level).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Read field by field (see `decode_body`); described here for the API doc.
struct EventsRequest {
    /// The events; `results[i]` answers `events[i]`. At most `ingest.max_batch_events`.
    events: Vec<EventBody>,
    /// When the client sent the batch (informational).
    sent_at: Option<String>,
    /// The API key, for browsers that cannot set `Authorization` (`navigator.sendBeacon`);
    /// also accepted as the `key` query parameter.
    key: Option<String>,
}

/// One event.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({
    "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
    "category": "page interaction",
    "name": "pageview",
    "data": {"host": "www.consumeraffairs.com", "path": "/"},
    "timestamp": "2021-01-01 09:15:27.243860"
}))]
struct EventBody {
    /// UUID, the idempotency key; absent: the server assigns a UUIDv7 and returns it.
    #[schema(format = "uuid")]
    event_id: Option<String>,
    #[schema(format = "uuid")]
    session_id: String,
    category: String,
    name: String,
    /// The payload, a JSON object (absent: `{}`).
    data: Option<serde_json::Map<String, serde_json::Value>>,
    /// RFC 3339, or `YYYY-MM-DD HH:MM:SS[.ffffff]` without a zone, taken as UTC.
    timestamp: String,
}

/// `results[i]` answers `events[i]`.
#[derive(Debug, Serialize, ToSchema)]
struct EventsResponse {
    results: Vec<EventResult>,
}

#[derive(Debug, Serialize, ToSchema)]
struct EventResult {
    /// The event's id: as sent, or assigned by the server.
    event_id: String,
    /// `ACCEPTED` (durable), `DUPLICATE` (already sent; a success) or `REJECTED` (see reason).
    #[schema(example = "ACCEPTED")]
    status: &'static str,
    /// For `REJECTED`: `<code>: <message>`, the codes of the gRPC API; else empty.
    reason: String,
}

/// A refused request.
#[derive(Debug, Serialize, ToSchema)]
struct ErrorResponse {
    error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
struct ErrorBody {
    /// A stable code: `invalid_json`, `invalid_body`, `empty_batch`, `too_many_events`,
    /// `batch_too_large`, `body_too_large`, `unsupported_content_type`,
    /// `unsupported_content_encoding`, `missing_key`, `invalid_key`, `forbidden`,
    /// `origin_not_allowed`, `secret_key_in_browser`, `rate_limited`, `quota_exceeded`, `backlogged`,
    /// `database_unavailable`, ...
    code: &'static str,
    /// What is wrong, naming the field.
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `serving`, or `not_serving` while the database does not answer or the server stops.
    status: &'static str,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "The Eye: HTTP ingest", description = "Events over HTTP/JSON; the same answers as \
        `eye.v1.IngestService/SendEvents`. Authenticate with `Authorization: Bearer <key>` (or \
        `key` in the body or the query)."),
    paths(send_events, healthz),
    components(schemas(EventsRequest, EventBody, EventsResponse, EventResult, ErrorResponse, ErrorBody, Health)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The `bearer` security scheme the paths name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// A refusal of the HTTP layer itself, before the core is asked.
#[derive(Debug)]
struct BadRequest {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl BadRequest {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

fn error_response(status: StatusCode, code: &'static str, message: String) -> Response {
    (status, Json(ErrorResponse { error: ErrorBody { code, message } })).into_response()
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error_response(self.status, self.code, self.message)
    }
}

/// The one mapping of [`IngestError`] to an HTTP answer.
impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        use eye_service::auth::AuthError;
        let status = match &self {
            Self::Auth(AuthError::Missing | AuthError::Invalid) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::Unavailable(source)) => {
                tracing::warn!(error = %source, "api key lookup failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Auth(_) => StatusCode::FORBIDDEN,
            Self::EmptyBatch | Self::TooManyEvents { .. } => StatusCode::BAD_REQUEST,
            Self::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. }
            | Self::QuotaExceeded { .. }
            | Self::Overloaded
            | Self::Backlogged { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::DatabaseUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(source) => {
                // The database's text stays in our logs; the client learns only what to do.
                tracing::error!(error = %source, "ingest commit failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let retry_after = self.retry_after();
        let mut response = error_response(status, self.code(), self.to_string());
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Send events.
///
/// Answers only once every accepted event is durable. A malformed body gets 400 (413 past the
/// size limit) naming the problem; one bad event never fails the others: it is answered
/// `REJECTED` with a reason.
#[utoipa::path(
    post,
    path = "/v1/events",
    request_body(content = EventsRequest, content_type = "application/json",
        description = "`{\"events\": [...]}`, or one event's fields at the top level. \
            `text/plain` bodies are read as JSON; `Content-Encoding: gzip` and `deflate` are accepted."),
    params(("key" = Option<String>, Query, description = "The API key, when it cannot be sent as `Authorization: Bearer`")),
    responses(
        (status = 200, description = "`results[i]` answers `events[i]`", body = EventsResponse),
        (status = 400, description = "The body is not a JSON object of events, or breaks a batch limit", body = ErrorResponse),
        (status = 401, description = "No key, or an unknown or revoked one", body = ErrorResponse),
        (status = 403, description = "The key may not ingest, or not from this origin", body = ErrorResponse),
        (status = 413, description = "The body (inflated) or the batch is over its limit", body = ErrorResponse),
        (status = 415, description = "Neither JSON nor text, or an unknown encoding", body = ErrorResponse),
        (status = 429, description = "Rate-limited or back-pressure; see `Retry-After`", body = ErrorResponse),
        (status = 503, description = "Temporarily unavailable; see `Retry-After`", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
async fn send_events(
    State(ingest): State<HttpIngest>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "POST /v1/events",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/events",
        http.response.status_code = tracing::field::Empty,
        events = tracing::field::Empty,
    );
    let trace = trace_context(&headers);
    propagation::set_parent(&span, &trace);
    let response = async {
        let body = read_body(&headers, body, ingest.max_body_bytes).await?;
        let request = decode_body(&body)?;
        tracing::Span::current().record("events", request.events.len());
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.key.or_else(|| query_key(&uri)).map(|key| format!("Bearer {key}")));
        let caller = Caller {
            authorization: authorization.as_deref(),
            origin: headers.get(header::ORIGIN).and_then(|value| value.to_str().ok()),
            address: Some(client_address(&headers, peer, ingest.trust_forwarded_for)),
        };
        let answer = ingest.core.send(caller, trace, request.events).await;
        Ok::<_, BadRequest>(match answer {
            Ok(response) => {
                Json(EventsResponse { results: response.results.into_iter().map(result).collect() })
                    .into_response()
            }
            Err(error) => error.into_response(),
        })
    }
    .instrument(span.clone())
    .await
    .unwrap_or_else(IntoResponse::into_response);
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    ingest.metrics.ingest().observe_http_request(status.as_u16(), started.elapsed());
    response
}

/// Is the server up?
#[utoipa::path(get, path = "/healthz", responses(
    (status = 200, description = "Serving", body = Health),
    (status = 503, description = "The database does not answer, or the server is stopping", body = Health),
))]
async fn healthz(State(ingest): State<HttpIngest>) -> Response {
    if ingest.database.is_up() && !ingest.shutdown.is_cancelled() {
        (StatusCode::OK, Json(Health { status: "serving" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: "not_serving" })).into_response()
    }
}

async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

async fn tracker() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        TRACKER,
    )
        .into_response()
}

/// The W3C trace context a client sent as HTTP headers.
fn trace_context(headers: &HeaderMap) -> Headers {
    propagation::from_request(|name| headers.get(name)?.to_str().ok())
}

fn query_key(uri: &Uri) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, _)| name == "key")
        .map(|(_, key)| key.into_owned())
}

/// The client's address: the connection's peer, or behind a trusted proxy the first
/// `X-Forwarded-For` entry.
fn client_address(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = || {
        let value = headers.get("x-forwarded-for")?.to_str().ok()?;
        value.split(',').next()?.trim().parse().ok()
    };
    trust_forwarded_for.then(forwarded).flatten().unwrap_or(peer.ip())
}

fn result(result: pb::EventResult) -> EventResult {
    let status = match result.status() {
        EventStatus::Accepted => "ACCEPTED",
        EventStatus::Duplicate => "DUPLICATE",
        EventStatus::Rejected => "REJECTED",
        EventStatus::Unspecified => "UNSPECIFIED",
    };
    EventResult { event_id: result.event_id, status, reason: result.reason }
}

/// The body, inflated, at most `limit` bytes either way.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BadRequest> {
    let too_large = || {
        BadRequest::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over the limit of {limit} bytes (inflated)"),
        )
    };
    let content_type = headers.get(header::CONTENT_TYPE).map(|value| value.to_str().unwrap_or(""));
    if let Some(content_type) = content_type {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !matches!(essence.as_str(), "application/json" | "text/plain" | "") {
            return Err(BadRequest::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
                format!(
                    "content-type {content_type:?} is not supported: send application/json \
                     (or text/plain, read as JSON)"
                ),
            ));
        }
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|error| {
        use std::error::Error;
        if error.source().is_some_and(|source| source.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            BadRequest::invalid("invalid_body", format!("the body could not be read: {error}"))
        }
    })?;
    let inflate = |reader: &mut dyn Read| -> Result<Bytes, BadRequest> {
        let mut inflated = Vec::new();
        reader.take(limit as u64 + 1).read_to_end(&mut inflated).map_err(|error| {
            BadRequest::invalid("invalid_body", format!("the body could not be inflated: {error}"))
        })?;
        if inflated.len() > limit { Err(too_large()) } else { Ok(inflated.into()) }
    };
    match encoding.as_deref() {
        None | Some("identity") => Ok(raw),
        Some("gzip" | "x-gzip") => inflate(&mut flate2::read::MultiGzDecoder::new(&raw[..])),
        // HTTP's `deflate` is zlib (RFC 1950); some clients send raw deflate instead.
        Some("deflate") if raw.first().is_some_and(|byte| byte & 0x0f == 8) => {
            inflate(&mut flate2::read::ZlibDecoder::new(&raw[..]))
        }
        Some("deflate") => inflate(&mut flate2::read::DeflateDecoder::new(&raw[..])),
        Some(other) => Err(BadRequest::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
            format!("content-encoding {other:?} is not supported: use gzip, deflate or none"),
        )),
    }
}

/// A body, decoded: its events (each one decoded alone, so that one bad event fails only
/// itself) and the key it carried, if any.
#[derive(Debug)]
struct DecodedBody {
    events: Vec<Incoming>,
    key: Option<String>,
}

type Fields<'a> = BTreeMap<String, &'a RawValue>;

fn decode_body(body: &[u8]) -> Result<DecodedBody, BadRequest> {
    let text = std::str::from_utf8(body).map_err(|error| {
        BadRequest::invalid("invalid_json", format!("the body is not UTF-8: {error}"))
    })?;
    if text.trim().is_empty() {
        return Err(BadRequest::invalid(
            "invalid_body",
            "the body is empty: send {\"events\": [...]} or one event",
        ));
    }
    let raw: &RawValue = serde_json::from_str(text).map_err(|error| {
        BadRequest::invalid("invalid_json", format!("the body is not JSON: {error}"))
    })?;
    let fields: Fields<'_> = serde_json::from_str(raw.get()).map_err(|_| {
        BadRequest::invalid(
            "invalid_body",
            format!(
                "the body is {}, not an object: send {{\"events\": [...]}} or one event",
                json_kind(raw)
            ),
        )
    })?;
    let key = match fields.get("key") {
        None => None,
        Some(raw) => Some(serde_json::from_str::<String>(raw.get()).map_err(|_| {
            BadRequest::invalid("invalid_body", "key: must be a string (the API key)")
        })?),
    };
    let events = match fields.get("events") {
        // One event, posted as it is.
        None => vec![decode_event(raw)],
        Some(events) => serde_json::from_str::<Vec<&RawValue>>(events.get())
            .map_err(|_| {
                BadRequest::invalid(
                    "invalid_body",
                    format!("events: must be an array of events, not {}", json_kind(events)),
                )
            })?
            .into_iter()
            .map(decode_event)
            .collect(),
    };
    Ok(DecodedBody { events, key })
}

/// "an array", "a string", ...: what a JSON value is, for error messages.
fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// One event of the body, as the core takes it. Its `data` is passed on as the text it was
/// sent as, so the envelope's payload rules (duplicate keys, depth, NUL, numbers) see exactly
/// what the client wrote, as they do over gRPC.
fn decode_event(raw: &RawValue) -> Incoming {
    let refused = |event_id: String, rejection| Incoming::Refused { event_id, rejection };
    let Ok(fields) = serde_json::from_str::<Fields<'_>>(raw.get()) else {
        return refused(
            String::new(),
            Rejection::WrongType { field: "event", expected: "a JSON object" },
        );
    };
    let text = |field: &'static str| -> Result<String, Rejection> {
        match fields.get(field) {
            None => Ok(String::new()),
            Some(raw) if raw.get() == "null" => Ok(String::new()),
            Some(raw) => serde_json::from_str(raw.get())
                .map_err(|_| Rejection::WrongType { field, expected: "a string" }),
        }
    };
    let event_id = text("event_id");
    let sent_id = event_id.clone().unwrap_or_default();
    let event = (|| {
        let timestamp = match text("timestamp")? {
            text if text.is_empty() => None,
            text => Some(envelope::to_timestamp(envelope::parse_timestamp(&text)?)),
        };
        let data_json = match fields.get("data") {
            None => "{}".to_owned(),
            Some(raw) if raw.get() == "null" => "{}".to_owned(),
            Some(raw) => raw.get().to_owned(),
        };
        Ok(pb::Event {
            event_id: event_id?,
            session_id: text("session_id")?,
            category: text("category")?,
            name: text("name")?,
            data_json,
            timestamp,
        })
    })();
    match event {
        Ok(event) => Incoming::Event(event),
        Err(rejection) => refused(sent_id, rejection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(body: &str) -> Vec<Result<pb::Event, String>> {
        decode_body(body.as_bytes())
            .unwrap()
            .events
            .into_iter()
            .map(|incoming| match incoming {
                Incoming::Event(event) => Ok(event),
                Incoming::Refused { rejection, .. } => Err(rejection.reason()),
            })
            .collect()
    }

    #[test]
    fn the_requirements_example_decodes_as_posted() {
        let events = decoded(
            r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction",
                "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"},
                "timestamp": "2021-01-01 09:15:27.243860"}"#,
        );
        let event = events[0].as_ref().unwrap();
        assert_eq!(event.event_id, "");
        assert_eq!(event.data_json, r#"{"host": "www.consumeraffairs.com", "path": "/"}"#);
        let at = envelope::to_datetime(event.timestamp.as_ref().unwrap()).unwrap();
        assert_eq!(at.to_rfc3339(), "2021-01-01T09:15:27.243860+00:00");
    }

    #[test]
    fn a_bad_event_fails_alone_with_the_field_named() {
        let events = decoded(
            r#"{"events": [1, {"category": 5}, {"timestamp": "soon"}, {"data": {"a":1,"a":2}}]}"#,
        );
        assert_eq!(events[0].as_ref().unwrap_err(), "invalid_field: event must be a JSON object");
        assert_eq!(events[1].as_ref().unwrap_err(), "invalid_field: category must be a string");
        assert!(events[2].as_ref().unwrap_err().starts_with("invalid_timestamp:"));
        // The payload is passed on as written: the envelope finds the duplicate key.
        assert_eq!(events[3].as_ref().unwrap().data_json, r#"{"a":1,"a":2}"#);
    }

    #[test]
    fn bodies_that_are_not_objects_of_events_are_refused_by_name() {
        for (body, code, says) in [
            ("", "invalid_body", "empty"),
            ("nope", "invalid_json", "not JSON"),
            ("{\"events\": [],}", "invalid_json", "not JSON"),
            ("[{}]", "invalid_body", "an array"),
            ("42", "invalid_body", "a number"),
            ("\"x\"", "invalid_body", "a string"),
            ("{\"events\": {}}", "invalid_body", "events: must be an array"),
            ("{\"events\": [], \"key\": 7}", "invalid_body", "key: must be a string"),
        ] {
            let error = decode_body(body.as_bytes()).unwrap_err();
            assert_eq!((error.code, error.status), (code, StatusCode::BAD_REQUEST), "{body:?}");
            assert!(error.message.contains(says), "{body:?}: {}", error.message);
        }
    }

    #[test]
    fn the_api_document_describes_the_routes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["paths"]["/v1/events"]["post"].is_object(), "{doc}");
        assert!(doc["paths"]["/healthz"]["get"].is_object(), "{doc}");
        assert!(doc["components"]["schemas"]["EventBody"].is_object(), "{doc}");
    }
}
