//! A webhook receiver on a real socket: it verifies every signature, answers as its behaviour
//! says, and records what it saw.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use rand::Rng;
use tokio::sync::Notify;

/// How the receiver answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Behaviour {
    /// Share of calls answered 500 before looking at them.
    pub(crate) fail_rate: f64,
    /// Share of calls that stall this long before answering 200 (past the sender's timeout).
    pub(crate) stall_rate: f64,
    pub(crate) stall: Duration,
    /// A batch holding an event whose data contains this text is answered 400.
    pub(crate) refuse_marker: Option<String>,
    /// Answer every call 410 Gone.
    pub(crate) gone: bool,
    /// Answer the first call 429 with this `Retry-After` (seconds).
    pub(crate) throttle_first: Option<u64>,
}

/// One batch the receiver accepted (answered 2xx, or processed before stalling).
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) webhook_id: String,
    pub(crate) subscription: String,
    pub(crate) events: Vec<serde_json::Value>,
    pub(crate) at: std::time::Instant,
}

#[derive(Default)]
pub(crate) struct Log {
    /// Accepted batches per path, in arrival order.
    pub(crate) seen: HashMap<String, Vec<Seen>>,
    pub(crate) calls: u64,
    pub(crate) refused: u64,
    pub(crate) first_call: Option<std::time::Instant>,
}

#[derive(Clone)]
struct Shared {
    keys: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    log: Arc<Mutex<Log>>,
    changed: Arc<Notify>,
}

/// A running receiver: POST to `{url}/<path>`.
pub(crate) struct Receiver {
    pub(crate) url: String,
    keys: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    log: Arc<Mutex<Log>>,
    changed: Arc<Notify>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver; [`verify_with`](Self::verify_with) gives each path its secret.
    pub(crate) async fn start(behaviour: Behaviour) -> Self {
        let shared = Shared {
            keys: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            log: Arc::default(),
            changed: Arc::new(Notify::new()),
        };
        let app = Router::new().route("/{path}", post(receive)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver");
        });
        Self {
            url,
            keys: shared.keys,
            behaviour: shared.behaviour,
            log: shared.log,
            changed: shared.changed,
            _server: server,
        }
    }

    /// Calls to `path` must be signed with `secret` (`whsec_...`).
    pub(crate) fn verify_with(&self, path: &str, secret: &str) {
        let key = eye_delivery::webhook::secret_key(secret).expect("secret");
        self.keys.lock().unwrap().insert(path.to_owned(), key);
    }

    /// The URL of `path`.
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.url)
    }

    pub(crate) fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub(crate) fn log<T>(&self, read: impl FnOnce(&Log) -> T) -> T {
        read(&self.log.lock().unwrap())
    }

    /// Accepted batches of `path`.
    pub(crate) fn seen(&self, path: &str) -> Vec<Seen> {
        self.log(|log| log.seen.get(path).cloned().unwrap_or_default())
    }

    /// Waits (at most `timeout`) until `check` holds for the log.
    pub(crate) async fn wait(&self, timeout: Duration, what: &str, check: impl Fn(&Log) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.log(&check) {
                return;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "timed out after {timeout:?} waiting for {what}");
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Verifies a Standard Webhooks signature as a receiver would: HMAC-SHA256 over
/// "{id}.{timestamp}.{body}", compared with each `v1,` signature of the header.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<String, &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let id = header("webhook-id").ok_or("no webhook-id")?;
    let timestamp: i64 =
        header("webhook-timestamp").and_then(|t| t.parse().ok()).ok_or("no webhook-timestamp")?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return Err("stale webhook-timestamp");
    }
    let expected = eye_delivery::webhook::sign(key, id, timestamp, body);
    let signatures = header("webhook-signature").ok_or("no webhook-signature")?;
    if signatures.split(' ').any(|signature| signature == expected) {
        Ok(id.to_owned())
    } else {
        Err("bad signature")
    }
}

async fn receive(
    State(shared): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = shared.keys.lock().unwrap().get(&path).cloned().expect("a secret for the path");
    let webhook_id = match verify(&key, &headers, &body) {
        Ok(id) => id,
        Err(why) => panic!("the receiver got an unverifiable call: {why}"),
    };
    let behaviour = shared.behaviour.lock().unwrap().clone();
    let (fail, stall) = {
        let mut rng = rand::rng();
        (rng.random_bool(behaviour.fail_rate), rng.random_bool(behaviour.stall_rate))
    };
    let first = {
        let mut log = shared.log.lock().unwrap();
        log.calls += 1;
        log.first_call.get_or_insert_with(std::time::Instant::now);
        log.calls == 1
    };
    if first && let Some(seconds) = behaviour.throttle_first {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
            "slow down",
        )
            .into_response();
    }
    if behaviour.gone {
        return (StatusCode::GONE, "gone").into_response();
    }
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
    }
    let batch: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
    let events = batch["events"].as_array().expect("events").clone();
    if let Some(marker) = &behaviour.refuse_marker
        && events.iter().any(|event| event["data"].to_string().contains(marker.as_str()))
    {
        shared.log.lock().unwrap().refused += 1;
        shared.changed.notify_waiters();
        return (StatusCode::BAD_REQUEST, format!("refused: field `{marker}` is not allowed"))
            .into_response();
    }
    let seen = Seen {
        webhook_id,
        subscription: batch["subscription"].as_str().expect("subscription").to_owned(),
        events,
        at: std::time::Instant::now(),
    };
    shared.log.lock().unwrap().seen.entry(path).or_default().push(seen);
    shared.changed.notify_waiters();
    if stall {
        // Processed, but answered too late: the sender retries a batch already seen.
        tokio::time::sleep(behaviour.stall).await;
    }
    (StatusCode::OK, "ok").into_response()
}
