//! Page tokens: opaque keyset cursors bound to the request that produced them.
//!
//! A token is `base64url(version, kind, scope, position)`:
//! - `kind` says which listing it continues (events, a session, errors), so a token of one RPC is
//!   refused by another;
//! - `scope` is a fingerprint (8 bytes of SHA-256) of the request's filter, so a token used with
//!   another filter is refused instead of silently paging through the wrong result;
//! - `position` is the sort key of the last item returned: `(occurred_at, event_id)` for events,
//!   the error id for errors. The next page starts strictly after it (keyset pagination), so rows
//!   arriving between pages never shift what the original result returns.
//!
//! Tokens are not signed: editing one can only move the position within the same filter, which
//! any caller with the `read` role may query anyway.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const VERSION: u8 = 1;

/// Which listing a token continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Events = 1,
    Session = 2,
    Errors = 3,
}

/// The fingerprint of a request's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope([u8; 8]);

/// Builds a [`Scope`] from a filter, field by field. Every field is written with its name and
/// either an "absent" marker or its length and bytes, so no two distinct filters write the same
/// input.
pub struct ScopeBuilder(Sha256);

impl std::fmt::Debug for ScopeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeBuilder").finish_non_exhaustive()
    }
}

impl ScopeBuilder {
    pub fn new(kind: Kind) -> Self {
        let mut hasher = Sha256::new();
        hasher.update([VERSION, kind as u8]);
        Self(hasher)
    }

    pub fn field(mut self, name: &str, value: Option<&[u8]>) -> Self {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        match value {
            None => self.0.update([0]),
            Some(bytes) => {
                self.0.update([1]);
                self.0.update((bytes.len() as u64).to_le_bytes());
                self.0.update(bytes);
            }
        }
        self
    }

    pub fn finish(self) -> Scope {
        let digest = self.0.finalize();
        Scope(digest[..8].try_into().expect("8 bytes of a 32-byte digest"))
    }
}

/// Where a page ends: the sort key of its last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Events are ordered by `(occurred_at, event_id)`.
    Event { occurred_at: DateTime<Utc>, event_id: Uuid },
    /// Errors are ordered by descending id.
    Error { id: i64 },
}

/// Why a token was refused. The messages are for clients; they name no internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a page token")]
    Garbled,
    #[error("the token was issued for another request or filter; start again without it")]
    WrongScope,
}

/// The token continuing after `position`.
pub fn encode(kind: Kind, scope: Scope, position: Position) -> String {
    let mut bytes = Vec::with_capacity(34);
    bytes.extend([VERSION, kind as u8]);
    bytes.extend(scope.0);
    match position {
        Position::Event { occurred_at, event_id } => {
            bytes.extend(occurred_at.timestamp_micros().to_be_bytes());
            bytes.extend(event_id.as_bytes());
        }
        Position::Error { id } => bytes.extend(id.to_be_bytes()),
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The position a token continues from, if it was issued for `kind` with this `scope`.
pub fn decode(token: &str, kind: Kind, scope: Scope) -> Result<Position, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Garbled)?;
    let (header, rest) = bytes.split_at_checked(10).ok_or(TokenError::Garbled)?;
    if header[0] != VERSION {
        return Err(TokenError::Garbled);
    }
    if header[1] != kind as u8 || header[2..] != scope.0 {
        return Err(TokenError::WrongScope);
    }
    match kind {
        Kind::Events | Kind::Session => {
            let (micros, id) = rest.split_at_checked(8).ok_or(TokenError::Garbled)?;
            let micros = i64::from_be_bytes(micros.try_into().map_err(|_| TokenError::Garbled)?);
            // Within what filters may name (years 1 to 9999): an edited position outside it is
            // no position of any event, and Postgres could not even compare with it.
            let occurred_at = DateTime::from_timestamp_micros(micros)
                .filter(|at| (1..=9999).contains(&chrono::Datelike::year(at)))
                .ok_or(TokenError::Garbled)?;
            let event_id = Uuid::from_slice(id).map_err(|_| TokenError::Garbled)?;
            Ok(Position::Event { occurred_at, event_id })
        }
        Kind::Errors => {
            let id = i64::from_be_bytes(rest.try_into().map_err(|_| TokenError::Garbled)?);
            Ok(Position::Error { id })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(kind: Kind, session: Option<&str>) -> Scope {
        ScopeBuilder::new(kind).field("session_id", session.map(str::as_bytes)).finish()
    }

    #[test]
    fn tokens_round_trip() {
        let at = DateTime::from_timestamp_micros(1_763_700_000_123_456).unwrap();
        let position = Position::Event { occurred_at: at, event_id: Uuid::now_v7() };
        let s = scope(Kind::Events, Some("a"));
        assert_eq!(decode(&encode(Kind::Events, s, position), Kind::Events, s), Ok(position));
        let s = scope(Kind::Errors, None);
        let position = Position::Error { id: 42 };
        assert_eq!(decode(&encode(Kind::Errors, s, position), Kind::Errors, s), Ok(position));
    }

    #[test]
    fn tokens_are_bound_to_their_filter_and_kind() {
        let position = Position::Error { id: 7 };
        let token = encode(Kind::Errors, scope(Kind::Errors, Some("a")), position);
        let other = scope(Kind::Errors, Some("b"));
        assert_eq!(decode(&token, Kind::Errors, other), Err(TokenError::WrongScope));
        let absent = scope(Kind::Errors, None);
        assert_eq!(decode(&token, Kind::Errors, absent), Err(TokenError::WrongScope));
        let events = scope(Kind::Events, Some("a"));
        assert_eq!(decode(&token, Kind::Events, events), Err(TokenError::WrongScope));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let ab = ScopeBuilder::new(Kind::Events)
            .field("category", Some(b"ab"))
            .field("name", Some(b""))
            .finish();
        let a_b = ScopeBuilder::new(Kind::Events)
            .field("category", Some(b"a"))
            .field("name", Some(b"b"))
            .finish();
        assert_ne!(ab, a_b);
    }

    #[test]
    fn garbage_is_refused() {
        let s = scope(Kind::Events, None);
        for token in ["", "!!!", "AQE", &URL_SAFE_NO_PAD.encode([9u8; 34])] {
            assert_eq!(decode(token, Kind::Events, s), Err(TokenError::Garbled), "{token}");
        }
        let short = &encode(Kind::Events, s, Position::Error { id: 1 });
        assert_eq!(decode(short, Kind::Events, s), Err(TokenError::Garbled));
    }
}
