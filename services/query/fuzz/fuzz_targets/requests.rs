//! Arbitrary bytes as a read request could arrive: decoded as `ListEventsRequest` and as
//! `ListErrorsRequest`, then through every check that needs no database (filters, containment
//! documents, page sizes, page tokens). Nothing may panic; every refusal is INVALID_ARGUMENT.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = eye_proto::v1::ListEventsRequest::decode(data) {
        if let Err(error) = eye_query::request::check_list_events_offline(request) {
            assert_eq!(tonic::Status::from(error).code(), tonic::Code::InvalidArgument);
        }
    }
    if let Ok(request) = eye_proto::v1::ListErrorsRequest::decode(data) {
        let _ = eye_query::request::check_list_errors_offline(request);
    }
});
