//! The console: server-rendered HTML over the query core ([`crate::core::Query`]) and
//! `eye_admin`, served by `eye-query` on its HTTP port (8081). Nothing here queries or writes on
//! its own account except what only the console shows (the per-minute chart, per-type counts,
//! the live tail's reads, all in [`crate::queries`]).
//!
//! Sign-in exchanges an API key with the `read` role for a session cookie: `eye_session` holds
//! the key's *id* and an expiry, signed (HMAC-SHA256) with `query.console_secret`; it is
//! HTTP-only and `SameSite=Strict`, and every request looks the key up again, so revoking it ends
//! its sessions at once. The key itself never reaches the browser after the sign-in form.
//! State-changing requests carry a CSRF token (an HMAC of the cookie) in a hidden field. Admin
//! actions (replay, keys) need the `admin` role.
//!
//! # Layout
//! - this module: state, routes, sessions, CSRF, the page frame, error pages.
//! - [`views`]: one handler per page.
//! - [`tail`]: the live tail over server-sent events.

mod tail;
mod views;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::Engine;
use chrono::Utc;
use eye_service::auth::{Authenticator, Principal, Role};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::{core::Query, error::QueryError};

const COOKIE: &str = "eye_session";
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    query: Arc<Query>,
    auth: Authenticator,
    secret: Arc<[u8]>,
    session_length: Duration,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// `secret` signs the session cookies (random per process when `None`).
    pub fn new(
        query: Arc<Query>,
        auth: Authenticator,
        secret: Option<&str>,
        session_length: Duration,
    ) -> Self {
        let secret: Arc<[u8]> = match secret {
            Some(secret) => secret.as_bytes().into(),
            None => {
                let mut random = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
                random.into()
            }
        };
        Self { query, auth, secret, session_length }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(views::overview))
            .route("/login", get(views::login_form).post(views::login))
            .route("/logout", post(views::logout))
            .route("/tail", get(views::tail_page))
            .route("/api/tail", get(tail::stream))
            .route("/events", get(views::explorer))
            .route("/sessions/{id}", get(views::session))
            .route("/errors", get(views::errors))
            .route("/errors/replay", post(views::replay))
            .route("/schemas", get(views::schemas))
            .route("/schemas/{category}/{name}", get(views::schema))
            .route("/apps", get(views::apps))
            .route("/apps/{name}/keys", post(views::issue_key))
            .route("/apps/{name}/revoke", post(views::revoke))
            .route("/assets/console.css", get(|| async { asset("text/css", CSS) }))
            .route("/assets/console.js", get(|| async { asset("text/javascript", JS) }))
            .fallback(|| async { Failure::NotFound("no such page".into()).into_response() })
            .with_state(self)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(payload.as_bytes());
        mac
    }

    fn sign(&self, payload: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.mac(payload).finalize().into_bytes())
    }

    /// The cookie value of a session of `key_id`.
    fn session_cookie(&self, key_id: Uuid) -> String {
        let expires = Utc::now().timestamp() + self.session_length.as_secs() as i64;
        let payload = format!("{key_id}.{expires}");
        format!("{payload}.{}", self.sign(&payload))
    }

    /// The key id of a valid, unexpired session cookie.
    fn verify(&self, cookie: &str) -> Option<Uuid> {
        let (payload, signature) = cookie.rsplit_once('.')?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature).ok()?;
        // hmac compares in constant time.
        let same = self.mac(payload).verify_slice(&signature).is_ok();
        let (key_id, expires) = payload.split_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        (same && expires > Utc::now().timestamp()).then(|| key_id.parse().ok()).flatten()
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body)
        .into_response()
}

/// A signed-in user: the key's principal, and the CSRF token of its session.
#[derive(Debug)]
pub struct Signed {
    principal: Principal,
    csrf: String,
}

impl Signed {
    /// What this user's key may read: its own application's data, or everything with `admin`.
    fn readable(&self) -> crate::queries::Readable {
        crate::queries::Readable::of(&self.principal)
    }

    fn is_admin(&self) -> bool {
        self.principal.roles.iter().any(|role| role == Role::Admin.as_str())
    }

    /// Refuses unless the key holds the admin role.
    fn require_admin(&self) -> Result<(), Failure> {
        if self.is_admin() { Ok(()) } else { Err(Failure::Forbidden) }
    }

    /// Refuses an admin form unless the key holds the admin role and the form its CSRF token.
    fn admin_form(&self, token: Option<&str>) -> Result<(), Failure> {
        self.require_admin()?;
        self.check_csrf(token)
    }

    /// Refuses a state-changing request whose form lacks this session's CSRF token.
    fn check_csrf(&self, token: Option<&str>) -> Result<(), Failure> {
        if token == Some(self.csrf.as_str()) { Ok(()) } else { Err(Failure::Forbidden) }
    }
}

fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
    })
}

impl FromRequestParts<Console> for Signed {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Failure> {
        let cookie = cookie_of(&parts.headers).ok_or(Failure::SignIn)?;
        let key_id = console.verify(cookie).ok_or(Failure::SignIn)?;
        let principal = console
            .auth
            .principal_of_key(key_id)
            .await
            .map_err(|_| Failure::Unavailable)?
            .filter(|p| p.roles.iter().any(|role| role == Role::Read.as_str()))
            .ok_or(Failure::SignIn)?;
        let csrf = console.sign(&format!("csrf:{cookie}"));
        Ok(Self { principal, csrf })
    }
}

/// Why a page could not be shown: each has its status and a page saying so, never internals.
#[derive(Debug)]
pub enum Failure {
    /// Not signed in (or the session expired, or its key was revoked).
    SignIn,
    Forbidden,
    NotFound(String),
    /// A filter or form field the user can fix.
    Invalid(String),
    Unavailable,
}

impl From<QueryError> for Failure {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::InvalidArgument { .. } | QueryError::PageToken(_) | QueryError::Timeout => {
                Self::Invalid(error.to_string())
            }
            QueryError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            other => {
                tracing::warn!(error = %other, "console query failed");
                Self::Unavailable
            }
        }
    }
}

impl From<eye_admin::AdminError> for Failure {
    fn from(error: eye_admin::AdminError) -> Self {
        match error {
            eye_admin::AdminError::Database(source) => {
                tracing::warn!(error = %source, "console admin action failed");
                Self::Unavailable
            }
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::SignIn => return Redirect::to("/login").into_response(),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "This needs a key with the admin role, or the form expired.".into(),
            ),
            Self::NotFound(what) => (StatusCode::NOT_FOUND, what),
            Self::Invalid(message) => (StatusCode::BAD_REQUEST, message),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is not answering; try again shortly.".into(),
            ),
        };
        let body = format!("<p class=\"error\">{}</p>", esc(&message));
        (status, page(None, status.canonical_reason().unwrap_or("Error"), &body)).into_response()
    }
}

/// HTML-escapes text.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the frame (navigation for `who`, when signed in) around `body`.
fn page(who: Option<&Signed>, title: &str, body: &str) -> Html<String> {
    let nav = match who {
        None => String::new(),
        Some(who) => {
            let apps = if who.is_admin() { "<a href=\"/apps\">Applications</a>" } else { "" };
            format!(
                "<nav><a href=\"/\">Overview</a><a href=\"/tail\">Live tail</a>\
                 <a href=\"/events\">Explorer</a><a href=\"/errors\">Errors</a>\
                 <a href=\"/schemas\">Schemas</a>{apps}\
                 <form id=\"logout\" method=\"post\" action=\"/logout\">{}<button>Sign out</button></form></nav>",
                csrf_field(who)
            )
        }
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · The Eye</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head>\
         <body><header><strong>The Eye</strong>{nav}</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title),
        esc(title)
    ))
}

fn csrf_field(who: &Signed) -> String {
    format!("<input type=\"hidden\" name=\"_csrf\" value=\"{}\">", esc(&who.csrf))
}

/// The `Set-Cookie` of a session (or, with `None`, of signing out).
fn set_cookie(value: Option<&str>, max_age: Duration) -> HeaderValue {
    let cookie = match value {
        Some(value) => format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            max_age.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    HeaderValue::from_str(&cookie).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console() -> Console {
        let pool = sqlx::PgPool::connect_lazy("postgres://localhost/none").unwrap();
        Console::new(
            Arc::new(Query::new(pool.clone())),
            Authenticator::new(pool, Duration::ZERO),
            Some("secret"),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn session_cookies_are_signed_and_expire() {
        let console = console();
        let id = Uuid::now_v7();
        let cookie = console.session_cookie(id);
        assert_eq!(console.verify(&cookie), Some(id));
        let tampered = cookie.replacen(&id.to_string(), &Uuid::now_v7().to_string(), 1);
        assert_eq!(console.verify(&tampered), None);
        let expired = format!("{id}.{}", Utc::now().timestamp() - 1);
        assert_eq!(console.verify(&format!("{expired}.{}", console.sign(&expired))), None);
        assert_eq!(console.verify("garbage"), None);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
