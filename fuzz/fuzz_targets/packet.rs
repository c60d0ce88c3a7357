//! Packet framing: scan_message (several size limits) and next_frame; join_payload of every complete span.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    funnel::protocol::fuzzing::packet(data);
});
