//! ResponseTracker in every Expect mode, with and without CLIENT_DEPRECATE_EOF; the input is split into packets as described in funnel::protocol::fuzzing::tracker.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    funnel::protocol::fuzzing::tracker(data);
});
