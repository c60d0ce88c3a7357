//! Server responses: decode_ok (with and without CLIENT_SESSION_TRACK), decode_err, decode_eof, decode_stmt_prepare_ok, decode_column_count, session_state_changes, with round trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    funnel::protocol::fuzzing::response(data);
});
