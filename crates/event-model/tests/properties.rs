//! Property tests: envelope validation and the payload check hold for any input, not only the
//! cases someone thought of.

use event_model::{Limits, PayloadError, PayloadLimits, envelope, payload};
use eye_proto::v1 as pb;
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON values without NUL characters, nested at most a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[^\u{0}]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[^\u{0}]{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[^\u{0}]{0,8}", json_value(), 0..8)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

proptest! {
    #[test]
    fn every_serialized_object_passes_the_payload_check(object in json_object()) {
        let limits = PayloadLimits { max_depth: 16 };
        prop_assert_eq!(payload::check(&object.to_string(), &limits), Ok(()));
        // Pretty printing changes nothing.
        prop_assert_eq!(payload::check(&serde_json::to_string_pretty(&object).unwrap(), &limits), Ok(()));
    }

    #[test]
    fn non_objects_are_refused(value in json_value().prop_filter("not an object", |v| !v.is_object())) {
        prop_assert_eq!(payload::check(&value.to_string(), &PayloadLimits::default()), Err(PayloadError::NotObject));
    }

    #[test]
    fn the_payload_check_never_panics(text in ".{0,200}") {
        let _ = payload::check(&text, &PayloadLimits::default());
    }

    #[test]
    fn validation_never_panics_and_keeps_what_it_accepts(
        event_id in prop_oneof![Just(String::new()), any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()), ".{0,40}"],
        session_id in prop_oneof![any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()), ".{0,40}"],
        category in ".{0,300}",
        name in ".{0,300}",
        data in prop_oneof![json_object().prop_map(|v| v.to_string()), ".{0,100}"],
        seconds in any::<i64>(),
        nanos in any::<i32>(),
        has_timestamp in any::<bool>(),
    ) {
        let event = pb::Event {
            event_id: event_id.clone(),
            session_id: session_id.clone(),
            category: category.clone(),
            name: name.clone(),
            data_json: data.clone(),
            timestamp: has_timestamp.then_some(prost_types::Timestamp { seconds, nanos }),
        };
        match envelope::validate(event, &Limits::default()) {
            Ok(accepted) => {
                prop_assert_eq!(accepted.session_id.to_string(), session_id.to_lowercase());
                if !event_id.is_empty() {
                    prop_assert_eq!(accepted.event_id.0, uuid::Uuid::parse_str(&event_id).unwrap());
                }
                prop_assert_eq!(&accepted.event_type.category, &category);
                prop_assert_eq!(&accepted.event_type.name, &name);
                prop_assert_eq!(&accepted.data_json, &data);
                prop_assert!(!category.trim().is_empty() && category.chars().count() <= 255);
                prop_assert!(has_timestamp);
            }
            Err(rejection) => {
                // Every rejection has a code and a message, and the reason joins them.
                let prefix = format!("{}: ", rejection.code());
                prop_assert!(rejection.reason().starts_with(&prefix));
            }
        }
    }
}
