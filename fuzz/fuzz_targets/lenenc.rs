//! lenenc::Reader primitives driven by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    funnel::protocol::fuzzing::lenenc(data);
});
