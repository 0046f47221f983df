//! A data subject, as a deletion names it (`eye delete`): a session, an application, a payload
//! containment, or several of these together; and how events are matched against it, in the
//! store (SQL, `data @> ...`) and in flight (here, with the same `jsonb` containment rules).
//!
//! A suppression (`eye delete --suppress`) keeps matching later events without keeping the
//! subject's values: it holds digests ([`digest`]) of the session id and of each value of the
//! containment, by JSON pointer, so no table holds the subject in clear.

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Whether `document` contains `pattern` as Postgres' `jsonb @>` says: an object contains an
/// object whose every key it has with a contained value; an array contains an array whose every
/// element some element of it contains (and a scalar pattern at the top level of an array
/// document); scalars contain equal scalars.
pub fn contains(document: &Value, pattern: &Value) -> bool {
    match (document, pattern) {
        (Value::Object(document), Value::Object(pattern)) => pattern
            .iter()
            .all(|(key, wanted)| document.get(key).is_some_and(|value| contains(value, wanted))),
        (Value::Array(document), Value::Array(pattern)) => pattern.iter().all(|wanted| {
            document.iter().any(|value| match (value, wanted) {
                // Inside arrays, scalars and containers only match their own kind.
                (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
                    contains(value, wanted)
                }
                (Value::Array(_) | Value::Object(_), _)
                | (_, Value::Array(_) | Value::Object(_)) => false,
                _ => scalar_eq(value, wanted),
            })
        }),
        (Value::Array(document), scalar) if !scalar.is_object() => {
            document.iter().any(|value| scalar_eq(value, scalar))
        }
        (document, pattern) => scalar_eq(document, pattern),
    }
}

/// Scalars equal as `jsonb` compares them: numbers by value (`1` is `1.0`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => a.as_f64() == b.as_f64(),
        },
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => false,
        _ => a == b,
    }
}

/// The digest a suppression keeps of `value`: SHA-256 of its JSON text (a whole number as an
/// integer, so that `2` and `2.0` agree, as they do in `jsonb`), domain-separated.
pub fn digest(value: &Value) -> String {
    let text = match value.as_f64() {
        Some(n) if value.is_f64() && n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            (n as i64).to_string()
        }
        _ => value.to_string(),
    };
    let mut hasher = Sha256::new();
    hasher.update(b"eye-suppression\0");
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

/// The digest of a session id, as a suppression keeps it.
pub fn session_digest(session: Uuid) -> String {
    digest(&Value::String(session.to_string()))
}

/// The leaves of a containment pattern, by JSON pointer (`/user/id`), with their digests: what a
/// suppression keeps of it. `Err` for a pattern a suppression cannot keep this way (an array).
pub fn leaf_digests(pattern: &Value) -> Result<Vec<(String, String)>, String> {
    fn walk(value: &Value, at: String, out: &mut Vec<(String, String)>) -> Result<(), String> {
        match value {
            Value::Object(object) => {
                for (key, value) in object {
                    let key = key.replace('~', "~0").replace('/', "~1");
                    walk(value, format!("{at}/{key}"), out)?;
                }
                Ok(())
            }
            Value::Array(_) => Err(format!(
                "{at}: a suppression cannot hold an array; suppress by its elements' own fields"
            )),
            leaf => {
                out.push((at, digest(leaf)));
                Ok(())
            }
        }
    }
    let mut out = Vec::new();
    walk(pattern, String::new(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn containment_follows_jsonb() {
        let document = json!({"user_id": "u1", "cart": {"items": [1, 2, {"sku": "a"}]}, "n": 1});
        for (pattern, expected) in [
            (json!({}), true),
            (json!({"user_id": "u1"}), true),
            (json!({"user_id": "u2"}), false),
            (json!({"cart": {"items": [2]}}), true),
            (json!({"cart": {"items": [{"sku": "a"}]}}), true),
            (json!({"cart": {"items": [3]}}), false),
            (json!({"n": 1.0}), true),
            (json!({"missing": null}), false),
            (json!({"cart": {}}), true),
        ] {
            assert_eq!(contains(&document, &pattern), expected, "{pattern}");
        }
        assert!(contains(&json!(["a", "b"]), &json!("a")));
        assert!(!contains(&json!([["a"]]), &json!(["a"])));
    }

    #[test]
    fn suppressions_keep_digests_only() {
        let leaves = leaf_digests(&json!({"user": {"id": "u1"}, "a/b": 2})).unwrap();
        assert_eq!(
            leaves,
            vec![
                ("/a~1b".to_owned(), digest(&json!(2))),
                ("/user/id".to_owned(), digest(&json!("u1"))),
            ]
        );
        assert!(!leaves.iter().any(|(_, d)| d.contains("u1")));
        assert!(leaf_digests(&json!({"tags": ["x"]})).unwrap_err().contains("/tags"));
        assert_eq!(digest(&json!(2.0)), digest(&json!(2)));
    }
}
