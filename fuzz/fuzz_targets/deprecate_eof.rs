//! The CLIENT_DEPRECATE_EOF translation of EOF-framed responses, checked against a tracker with CLIENT_DEPRECATE_EOF; input format of funnel::protocol::fuzzing::tracker.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    funnel::protocol::fuzzing::deprecate_eof(data);
});
