//! Webhooks, signed per the Standard Webhooks convention (<https://www.standardwebhooks.com>).
//!
//! Each POST carries `webhook-id` (stable across retries: derived from the subscription and the
//! batch's event ids), `webhook-timestamp` (Unix seconds of this attempt) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key
//! is the base64-decoded part of the subscription's `whsec_` secret.
//!
//! What the answer means:
//! - 2xx: delivered;
//! - 408, 429 (waiting `Retry-After` if given), 5xx, a timeout, a connection error: retried
//!   with backoff and jitter;
//! - 410 Gone: the receiver is gone for good; the subscription is paused;
//! - any other answer (3xx: redirects are not followed, 4xx): the receiver refuses these events
//!   for good; they are isolated (the batch is halved until the refused events are alone) and
//!   dead-lettered with the status and the start of the answer's body.

use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, header::HeaderMap};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::events::{DeliveredEvent, WebhookBody};

/// How much of a refusing answer's body a dead letter keeps.
pub const EXCERPT_CHARS: usize = 200;

/// What a webhook answered to one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// Try again later (`after`: the receiver's `Retry-After`).
    Retry {
        reason: &'static str,
        detail: String,
        after: Option<Duration>,
    },
    /// These events are refused for good.
    Refused {
        status: u16,
        excerpt: String,
    },
    /// 410: the endpoint is gone.
    Gone,
}

/// A webhook destination.
#[derive(Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the signing secret is not `whsec_` followed by base64")]
    Secret,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Webhook {
    pub fn new(url: &str, secret: &str, timeout: Duration) -> Result<Self, WebhookError> {
        let key = secret_key(secret).ok_or(WebhookError::Secret)?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("eye-delivery/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, url: url.to_owned(), key })
    }

    /// POSTs `events` as one signed batch of `subscription`.
    pub async fn post(
        &self,
        subscription_id: Uuid,
        subscription: &str,
        events: &[DeliveredEvent],
    ) -> Answer {
        let body = serde_json::to_vec(&WebhookBody { subscription, events })
            .expect("delivered events serialize");
        let id = message_id(subscription_id, events);
        let timestamp = Utc::now().timestamp();
        let signature = sign(&self.key, &id, timestamp, &body);
        let sent = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let reason = if error.is_timeout() { "timeout" } else { "connect" };
                return Answer::Retry { reason, detail: error_chain(&error), after: None };
            }
        };
        let status = response.status();
        if status.is_success() {
            // Read (and drop) the body so the connection can be reused.
            return match response.bytes().await {
                Ok(_) => Answer::Delivered,
                Err(error) => Answer::Retry {
                    reason: if error.is_timeout() { "timeout" } else { "connect" },
                    detail: format!("the answer's body broke off: {}", error_chain(&error)),
                    after: None,
                },
            };
        }
        let after = retry_after(response.headers());
        let excerpt = excerpt(&response.text().await.unwrap_or_default());
        classify(status, excerpt, after)
    }
}

fn classify(status: StatusCode, excerpt: String, after: Option<Duration>) -> Answer {
    let detail = || format!("answered {}: {excerpt}", status.as_u16());
    match status.as_u16() {
        408 => Answer::Retry { reason: "http_408", detail: detail(), after: None },
        429 => Answer::Retry { reason: "http_429", detail: detail(), after },
        410 => Answer::Gone,
        500..=599 => Answer::Retry { reason: "http_5xx", detail: detail(), after },
        code => Answer::Refused { status: code, excerpt },
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The start of an answer's body, on one line.
pub fn excerpt(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}...", &flat[..end]),
        None => flat,
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// The key of a `whsec_` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(eye_admin::subscriptions::SECRET_PREFIX)?;
    base64::engine::general_purpose::STANDARD.decode(encoded).ok().filter(|key| !key.is_empty())
}

/// `webhook-id`: `msg_` and 32 hex digits of SHA-256 over the subscription id and the batch's
/// event ids. The same batch always gets the same id, so a receiver can dedupe on it; a batch
/// of other events never does.
pub fn message_id(subscription: Uuid, events: &[DeliveredEvent]) -> String {
    let mut digest = Sha256::new();
    digest.update(subscription.as_bytes());
    for event in events {
        digest.update(event.application_id.as_bytes());
        digest.update(event.event_id.as_bytes());
    }
    format!("msg_{}", hex::encode(&digest.finalize()[..16]))
}

/// `webhook-signature` for one message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn answers_are_classified() {
        let refused = classify(StatusCode::BAD_REQUEST, "no".into(), None);
        assert_eq!(refused, Answer::Refused { status: 400, excerpt: "no".into() });
        assert_eq!(classify(StatusCode::GONE, String::new(), None), Answer::Gone);
        let wait = Some(Duration::from_secs(7));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, String::new(), wait),
            Answer::Retry { reason: "http_429", after, .. } if after == wait
        ));
        for code in [500, 502, 503] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(matches!(
                classify(status, String::new(), None),
                Answer::Retry { reason: "http_5xx", .. }
            ));
        }
        assert!(matches!(
            classify(StatusCode::REQUEST_TIMEOUT, String::new(), None),
            Answer::Retry { reason: "http_408", .. }
        ));
        assert!(matches!(
            classify(StatusCode::MOVED_PERMANENTLY, String::new(), None),
            Answer::Refused { status: 301, .. }
        ));
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt("bad\n  field"), "bad field");
        let long = "é".repeat(500);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 3);
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "12".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(12)));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }
}
