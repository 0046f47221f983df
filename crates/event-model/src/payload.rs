//! A strict, one-pass check of an event's JSON payload.
//!
//! `serde_json` alone accepts duplicate keys (the last one silently wins), so a payload could mean
//! two things to two readers. This walks the text once, without building a tree, and refuses:
//! anything that is not a JSON object, nesting deeper than [`PayloadLimits::max_depth`], a key
//! repeated in one object, a NUL character (`\u0000`, which Postgres `jsonb` cannot store), and
//! numbers beyond the range of an f64.

use std::{cell::Cell, collections::HashSet, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Bounds on what a payload may look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadLimits {
    /// Deepest nesting of objects and arrays; the payload object itself is depth 1. At most
    /// [`MAX_DEPTH`]: the parser's own recursion guard stops deeper documents.
    pub max_depth: usize,
}

/// The largest supported [`PayloadLimits::max_depth`].
pub const MAX_DEPTH: usize = 120;

impl Default for PayloadLimits {
    fn default() -> Self {
        Self { max_depth: 64 }
    }
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("data_json is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("data_json must be a JSON object")]
    NotObject,
    #[error("data_json nests deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("data_json repeats the key {key:?} in one object")]
    DuplicateKey { key: String },
    #[error("data_json contains a NUL character (\\u0000), which cannot be stored")]
    NulCharacter,
    #[error("data_json has a number beyond the range of a 64-bit float")]
    NumberOutOfRange,
}

impl PayloadError {
    /// The stable reason code returned to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::NotObject => "data_not_object",
            Self::TooDeep { .. } => "payload_too_deep",
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::NulCharacter => "nul_character",
            Self::NumberOutOfRange => "number_out_of_range",
        }
    }
}

/// Checks that `text` is a JSON object within `limits`.
pub fn check(text: &str, limits: &PayloadLimits) -> Result<(), PayloadError> {
    let failure = Cell::new(None);
    let ctx = Ctx { limits, failure: &failure };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let result = Node { ctx: &ctx, depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    match (failure.take(), result) {
        (Some(failure), _) => Err(failure),
        (None, Ok(())) => Ok(()),
        (None, Err(error)) if error.to_string().starts_with("number out of range") => {
            Err(PayloadError::NumberOutOfRange)
        }
        (None, Err(error)) => Err(PayloadError::InvalidJson(error.to_string())),
    }
}

struct Ctx<'a> {
    limits: &'a PayloadLimits,
    failure: &'a Cell<Option<PayloadError>>,
}

impl Ctx<'_> {
    fn fail<E: de::Error>(&self, failure: PayloadError) -> E {
        let message = failure.to_string();
        self.failure.set(Some(failure));
        E::custom(message)
    }

    fn check_str<E: de::Error>(&self, value: &str) -> Result<(), E> {
        if value.contains('\0') { Err(self.fail(PayloadError::NulCharacter)) } else { Ok(()) }
    }
}

/// One JSON value at `depth` (0 = the payload itself).
struct Node<'c, 'a> {
    ctx: &'c Ctx<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Node<'_, '_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.depth == 0 { Err(self.ctx.fail(PayloadError::NotObject)) } else { Ok(()) }
    }

    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > self.ctx.limits.max_depth {
            return Err(self.ctx.fail(PayloadError::TooDeep { limit: self.ctx.limits.max_depth }));
        }
        Ok(depth)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        if !value.is_finite() {
            return Err(self.ctx.fail(PayloadError::NumberOutOfRange));
        }
        self.scalar()
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.ctx.check_str(value)?;
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth == 0 {
            return Err(self.ctx.fail(PayloadError::NotObject));
        }
        let depth = self.enter()?;
        while seq.next_element_seed(Node { ctx: self.ctx, depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key_seed(Key(self.ctx))? {
            if seen.contains(&key) {
                let key = key.into_owned();
                return Err(self.ctx.fail(PayloadError::DuplicateKey { key }));
            }
            seen.insert(key);
            map.next_value_seed(Node { ctx: self.ctx, depth })?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'c, 'a>(&'c Ctx<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        self.0.check_str(value)?;
        Ok(value.into())
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        self.0.check_str(value)?;
        Ok(value.to_owned().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_default(text: &str) -> Result<(), PayloadError> {
        check(text, &PayloadLimits::default())
    }

    #[test]
    fn accepts_objects() {
        assert_eq!(check_default(r#"{}"#), Ok(()));
        assert_eq!(check_default(r#" {"host":"a","n":[1,2.5,{"x":null}],"ok":true} "#), Ok(()));
        // The same key in two different objects is fine.
        assert_eq!(check_default(r#"{"a":{"k":1},"b":{"k":2}}"#), Ok(()));
    }

    #[test]
    fn refuses_non_objects() {
        for text in ["[]", "1", "\"s\"", "null", "true"] {
            assert_eq!(check_default(text), Err(PayloadError::NotObject), "{text}");
        }
    }

    #[test]
    fn refuses_invalid_json() {
        for text in ["", "{", "{\"a\":}", "{} {}", "{'a':1}"] {
            assert!(matches!(check_default(text), Err(PayloadError::InvalidJson(_))), "{text}");
        }
    }

    #[test]
    fn refuses_duplicate_keys_even_when_escaped_differently() {
        assert_eq!(
            check_default(r#"{"a":1,"\u0061":2}"#),
            Err(PayloadError::DuplicateKey { key: "a".into() })
        );
        assert_eq!(
            check_default(r#"{"x":{"k":1,"k":1}}"#),
            Err(PayloadError::DuplicateKey { key: "k".into() })
        );
    }

    #[test]
    fn refuses_nul_in_values_and_keys() {
        assert_eq!(check_default(r#"{"a":"x\u0000y"}"#), Err(PayloadError::NulCharacter));
        assert_eq!(check_default(r#"{"a\u0000":1}"#), Err(PayloadError::NulCharacter));
    }

    #[test]
    fn refuses_numbers_beyond_f64() {
        assert_eq!(check_default(r#"{"a":1e400}"#), Err(PayloadError::NumberOutOfRange));
        assert_eq!(check_default(r#"{"a":-1e400}"#), Err(PayloadError::NumberOutOfRange));
        // Large integers within f64 range are fine (parsed as floats).
        assert_eq!(check_default(r#"{"a":123456789012345678901234567890}"#), Ok(()));
    }

    #[test]
    fn depth_limit_is_exact() {
        let nested = |levels: usize| {
            let mut text = String::from("{\"a\":");
            for _ in 1..levels {
                text.push('[');
            }
            text.push('1');
            for _ in 1..levels {
                text.push(']');
            }
            text.push('}');
            text
        };
        let limits = PayloadLimits { max_depth: 64 };
        assert_eq!(check(&nested(64), &limits), Ok(()));
        assert_eq!(check(&nested(65), &limits), Err(PayloadError::TooDeep { limit: 64 }));
        let deep = PayloadLimits { max_depth: MAX_DEPTH };
        assert_eq!(check(&nested(MAX_DEPTH), &deep), Ok(()));
        assert_eq!(
            check(&nested(MAX_DEPTH + 1), &deep),
            Err(PayloadError::TooDeep { limit: MAX_DEPTH })
        );
    }
}
