//! Redaction of personal fields, as a type's JSON Schema annotates them: a property with
//! `"x-eye-pii": "hash"` is replaced by a keyed hash of its value (HMAC-SHA256, `privacy.pii_key`),
//! one with `"x-eye-pii": "redact"` by a marker. Ingest applies it before the outbox, the
//! validator again before the store and the quarantine (so a schema registered a moment ago is
//! honoured too); applying it twice changes nothing, since a redacted value is left alone.
//!
//! Annotations are found where a schema describes a part of the payload: `properties`, `items`
//! and `prefixItems` (every element), and the branches of `allOf`, `anyOf`, `oneOf`, `then`,
//! `else`. A `$ref` is not followed: annotate the property where it is used. The validator checks
//! the payload against the schema with each annotated property's own schema relaxed to `true`,
//! since it only ever sees the redacted value ([`relaxed`]).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The annotation's keyword.
pub const KEYWORD: &str = "x-eye-pii";
/// What a `redact` property becomes.
pub const MARKER: &str = "[redacted]";
/// The prefix of a hashed value: `hmac-sha256:` and 64 hex digits.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// What becomes of an annotated property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A keyed hash of the value: equal values stay equal (counts, joins) and cannot be read back.
    Hash,
    /// The marker [`MARKER`].
    Redact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    /// Every element of an array.
    Items,
}

/// The annotated places of one schema. Empty for most schemas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Vec<(Vec<Step>, Action)>);

impl Rules {
    /// The annotations of `schema`, or what is wrong with one (its place and value).
    pub fn of(schema: &Value) -> Result<Self, String> {
        let mut rules = Vec::new();
        collect(schema, &mut Vec::new(), "", &mut rules)?;
        Ok(Self(rules))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Redacts `payload` (a JSON object as text) in place; `false` when nothing changed (no
    /// annotated property present, or all already redacted). A payload that is not JSON is left
    /// as it is: the envelope rules refuse it before this runs.
    pub fn apply(&self, payload: &mut String, key: Option<&[u8]>) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(payload) else { return false };
        let mut changed = false;
        for (steps, action) in &self.0 {
            changed |= replace(&mut value, steps, *action, key);
        }
        if changed {
            *payload = value.to_string();
        }
        changed
    }
}

/// `schema` with every annotated subschema replaced by `true`: what the validator checks a
/// redacted payload against.
pub fn relaxed(schema: &Value) -> Value {
    let mut schema = schema.clone();
    relax(&mut schema);
    schema
}

fn relax(schema: &mut Value) {
    if schema.get(KEYWORD).is_some() {
        *schema = Value::Bool(true);
        return;
    }
    let Some(object) = schema.as_object_mut() else { return };
    for (keyword, sub) in object.iter_mut() {
        match (keyword.as_str(), sub) {
            ("properties", Value::Object(properties)) => properties.values_mut().for_each(relax),
            ("items" | "then" | "else", sub) => relax(sub),
            ("prefixItems" | "allOf" | "anyOf" | "oneOf", Value::Array(subs)) => {
                subs.iter_mut().for_each(relax)
            }
            _ => {}
        }
    }
}

fn collect(
    schema: &Value,
    path: &mut Vec<Step>,
    at: &str,
    rules: &mut Vec<(Vec<Step>, Action)>,
) -> Result<(), String> {
    let Some(object) = schema.as_object() else { return Ok(()) };
    if let Some(annotation) = object.get(KEYWORD) {
        let action = match annotation.as_str() {
            Some("hash") => Action::Hash,
            Some("redact") => Action::Redact,
            _ => {
                return Err(format!(
                    "{}/{KEYWORD}: must be \"hash\" or \"redact\", not {annotation}",
                    if at.is_empty() { "" } else { at }
                ));
            }
        };
        if path.is_empty() {
            return Err(format!("/{KEYWORD}: annotate properties, not the whole payload"));
        }
        rules.push((path.clone(), action));
        return Ok(());
    }
    for (keyword, sub) in object {
        match (keyword.as_str(), sub) {
            ("properties", Value::Object(properties)) => {
                for (name, sub) in properties {
                    path.push(Step::Key(name.clone()));
                    collect(sub, path, &format!("{at}/properties/{name}"), rules)?;
                    path.pop();
                }
            }
            ("items", sub) => {
                path.push(Step::Items);
                collect(sub, path, &format!("{at}/items"), rules)?;
                path.pop();
            }
            ("prefixItems", Value::Array(subs)) => {
                path.push(Step::Items);
                for (i, sub) in subs.iter().enumerate() {
                    collect(sub, path, &format!("{at}/prefixItems/{i}"), rules)?;
                }
                path.pop();
            }
            ("allOf" | "anyOf" | "oneOf", Value::Array(subs)) => {
                for (i, sub) in subs.iter().enumerate() {
                    collect(sub, path, &format!("{at}/{keyword}/{i}"), rules)?;
                }
            }
            ("then" | "else", sub) => collect(sub, path, &format!("{at}/{keyword}"), rules)?,
            _ => {}
        }
    }
    Ok(())
}

/// Replaces what `steps` reach in `value`; `true` if anything changed.
fn replace(value: &mut Value, steps: &[Step], action: Action, key: Option<&[u8]>) -> bool {
    match steps.split_first() {
        None => {
            let redacted = redacted(value, action, key);
            let changed = redacted.as_ref().is_some_and(|new| new != value);
            if let Some(new) = redacted {
                *value = new;
            }
            changed
        }
        Some((Step::Key(name), rest)) => {
            match value.as_object_mut().and_then(|o| o.get_mut(name)) {
                Some(child) => replace(child, rest, action, key),
                None => false,
            }
        }
        Some((Step::Items, rest)) => match value.as_array_mut() {
            Some(items) => items
                .iter_mut()
                .fold(false, |changed, item| replace(item, rest, action, key) | changed),
            None => false,
        },
    }
}

/// What `value` becomes; `None` to leave it: `null`, or already redacted.
fn redacted(value: &Value, action: Action, key: Option<&[u8]>) -> Option<Value> {
    match value {
        Value::Null => return None,
        Value::String(text) if text == MARKER || is_hash(text) => return None,
        _ => {}
    }
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Some(Value::String(match (action, key) {
        (Action::Hash, Some(key)) => hash(key, &text),
        // No key configured: never store the value; the marker is the safe answer.
        (Action::Hash, None) | (Action::Redact, _) => MARKER.to_owned(),
    }))
}

/// The keyed hash of `text` (its UTF-8 bytes; a non-string value is hashed as its JSON text), as
/// stored: `hmac-sha256:` and 64 hex digits. Compute it for a known value to find its events.
pub fn hash(key: &[u8], text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

fn is_hash(text: &str) -> bool {
    text.strip_prefix(HASH_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn form_schema() -> Value {
        json!({
            "type": "object",
            "required": ["form"],
            "properties": {
                "path": {"type": "string"},
                "form": {
                    "type": "object",
                    "properties": {
                        "email": {"type": "string", "format": "email", "x-eye-pii": "hash"},
                        "phone": {"type": "string", "maxLength": 5, "x-eye-pii": "redact"},
                        "children": {"type": "array", "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string", "x-eye-pii": "redact"}}
                        }}
                    }
                }
            }
        })
    }

    #[test]
    fn annotated_properties_are_hashed_or_redacted_and_the_rest_is_kept() {
        let rules = Rules::of(&form_schema()).unwrap();
        let mut payload = json!({
            "path": "/checkout",
            "form": {"email": "a@b.c", "phone": "+33 6 12 34 56 78",
                     "children": [{"name": "Ann", "age": 4}, {"age": 2}]}
        })
        .to_string();
        assert!(rules.apply(&mut payload, Some(b"secret")));
        let value: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["path"], "/checkout");
        assert_eq!(value["form"]["email"], hash(b"secret", "a@b.c"));
        assert_eq!(value["form"]["phone"], MARKER);
        assert_eq!(value["form"]["children"], json!([{"name": MARKER, "age": 4}, {"age": 2}]));
        assert!(
            !payload.contains("a@b.c") && !payload.contains("Ann") && !payload.contains("12 34")
        );

        // Applying again changes nothing: ingest and the validator both apply the rules.
        let once = payload.clone();
        assert!(!rules.apply(&mut payload, Some(b"secret")));
        assert_eq!(payload, once);
    }

    #[test]
    fn hashes_are_keyed_and_stable_and_without_a_key_the_marker_is_stored() {
        assert_eq!(hash(b"k", "a@b.c"), hash(b"k", "a@b.c"));
        assert_ne!(hash(b"k", "a@b.c"), hash(b"other", "a@b.c"));
        assert!(is_hash(&hash(b"k", "x")));
        let rules = Rules::of(&form_schema()).unwrap();
        let mut payload = json!({"form": {"email": "a@b.c", "phone": null}}).to_string();
        assert!(rules.apply(&mut payload, None));
        assert_eq!(payload, json!({"form": {"email": MARKER, "phone": null}}).to_string());
    }

    #[test]
    fn annotations_are_checked() {
        assert!(Rules::of(&json!({"type": "object"})).unwrap().is_empty());
        let bad = Rules::of(&json!({"properties": {"a": {"x-eye-pii": "encrypt"}}})).unwrap_err();
        assert!(bad.contains("/properties/a/x-eye-pii") && bad.contains("encrypt"), "{bad}");
        let root = Rules::of(&json!({"x-eye-pii": "redact"})).unwrap_err();
        assert!(root.contains("whole payload"), "{root}");
        let nested = json!({"allOf": [{"properties": {"card": {"x-eye-pii": "redact"}}}]});
        let mut payload = json!({"card": 4111111111111111u64}).to_string();
        assert!(Rules::of(&nested).unwrap().apply(&mut payload, None));
        assert_eq!(payload, json!({"card": MARKER}).to_string());
    }

    #[test]
    fn the_relaxed_schema_accepts_what_redaction_leaves() {
        let relaxed = relaxed(&form_schema());
        assert_eq!(relaxed["properties"]["form"]["properties"]["email"], json!(true));
        assert_eq!(relaxed["properties"]["path"], json!({"type": "string"}));
        assert_eq!(
            relaxed["properties"]["form"]["properties"]["children"]["items"]["properties"]["name"],
            json!(true)
        );
        assert_eq!(relaxed["required"], json!(["form"]));
    }
}
