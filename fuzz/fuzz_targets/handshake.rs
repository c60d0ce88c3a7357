//! Connection phase: HandshakeV10::decode, HandshakeResponse::decode, AuthSwitchRequest::decode, is_ssl_request, with decode/encode round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    funnel::protocol::fuzzing::handshake(data);
});
