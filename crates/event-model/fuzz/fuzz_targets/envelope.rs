//! Arbitrary bytes as they could arrive on the wire: decoded as a `SendEventsRequest`, each event
//! through the envelope rules; and as text through the payload check. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = eye_proto::v1::SendEventsRequest::decode(data) {
        for event in request.events {
            let _ = event_model::envelope::validate(event, &Default::default());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = event_model::payload::check(text, &Default::default());
    }
});
