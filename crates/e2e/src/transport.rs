//! One request, either transport: the acceptance tests run over gRPC and over HTTP/JSON with
//! the same expected answers, because both front ends call the same ingest core.

use eye_proto::v1::{EventResult, EventStatus, SendEventsRequest};
use serde_json::json;

use crate::{Pipeline, authorized};

/// How a test reaches ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Grpc, Transport::Http];
}

/// A whole request refused, as either transport says it: the gRPC code (for HTTP, the code its
/// status stands for: see [`grpc_code`]), the HTTP status (HTTP only), the message and the
/// retry hint.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: tonic::Code,
    pub http_status: Option<u16>,
    pub message: String,
    pub retry_after: Option<String>,
}

/// The gRPC code an HTTP ingest status stands for: the contract between the two mappings.
pub fn grpc_code(status: u16) -> tonic::Code {
    use tonic::Code;
    match status {
        // 413: the batch over its byte limit, INVALID_ARGUMENT over gRPC.
        400 | 413 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        other => panic!("HTTP ingest answered {other}, which no gRPC code stands for"),
    }
}

/// `request` as the JSON body of `POST /v1/events`: `data` as the very text of `data_json`
/// (so payload rules see what gRPC would), timestamps in RFC 3339, an absent timestamp left
/// out. Panics for a `data_json` that is not JSON: a JSON body cannot carry it.
pub fn http_body(request: &SendEventsRequest) -> String {
    let events: Vec<String> = request
        .events
        .iter()
        .map(|event| {
            let mut fields = serde_json::Map::new();
            fields.insert("event_id".into(), json!(event.event_id));
            fields.insert("session_id".into(), json!(event.session_id));
            fields.insert("category".into(), json!(event.category));
            fields.insert("name".into(), json!(event.name));
            if let Some(at) = event.timestamp.as_ref().and_then(event_model::envelope::to_datetime)
            {
                fields.insert("timestamp".into(), json!(at.to_rfc3339()));
            }
            let head = serde_json::Value::Object(fields).to_string();
            let data: &serde_json::value::RawValue = serde_json::from_str(&event.data_json)
                .unwrap_or_else(|_| panic!("a JSON body cannot carry data {:?}", event.data_json));
            format!("{},\"data\":{}}}", &head[..head.len() - 1], data.get())
        })
        .collect();
    format!("{{\"events\":[{}]}}", events.join(","))
}

impl Pipeline {
    /// The HTTP ingest base URL.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Sends `request` with `key` (none: no credentials) over `transport`.
    pub async fn send(
        &self,
        transport: Transport,
        key: Option<&str>,
        request: &SendEventsRequest,
    ) -> Result<Vec<EventResult>, Refusal> {
        match transport {
            Transport::Grpc => {
                let mut client = self.client().await;
                let call = match key {
                    Some(key) => authorized(request.clone(), key),
                    None => tonic::Request::new(request.clone()),
                };
                client.send_events(call).await.map(|r| r.into_inner().results).map_err(|status| {
                    Refusal {
                        code: status.code(),
                        http_status: None,
                        message: status.message().to_owned(),
                        retry_after: status
                            .metadata()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned()),
                    }
                })
            }
            Transport::Http => {
                let mut post = reqwest::Client::new()
                    .post(format!("{}/v1/events", self.http_endpoint()))
                    .header("content-type", "application/json")
                    .body(http_body(request));
                if let Some(key) = key {
                    post = post.bearer_auth(key);
                }
                let response = post.send().await.expect("HTTP ingest answers");
                let status = response.status().as_u16();
                let retry_after =
                    response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let body: serde_json::Value = response.json().await.expect("a JSON answer");
                if status != 200 {
                    return Err(Refusal {
                        code: grpc_code(status),
                        http_status: Some(status),
                        message: body["error"]["message"].as_str().unwrap_or_default().to_owned(),
                        retry_after,
                    });
                }
                Ok(body["results"].as_array().expect("results").iter().map(result).collect())
            }
        }
    }
}

/// An HTTP result as the protobuf one.
fn result(result: &serde_json::Value) -> EventResult {
    let status = match result["status"].as_str().expect("a status") {
        "ACCEPTED" => EventStatus::Accepted,
        "DUPLICATE" => EventStatus::Duplicate,
        "REJECTED" => EventStatus::Rejected,
        other => panic!("unknown status {other}"),
    };
    EventResult {
        event_id: result["event_id"].as_str().expect("an event_id").to_owned(),
        status: status.into(),
        reason: result["reason"].as_str().expect("a reason").to_owned(),
    }
}
