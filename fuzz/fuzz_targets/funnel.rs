//! The whole funnel (event loop, clients, backends, pools) driven by the
//! input through funnel::server::sim: clients sending anything, a scripted
//! mysqld misbehaving, time passing; the loop's invariants are checked
//! after every turn, and at the end the funnel must settle and serve a new
//! client.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = funnel::server::sim::run_case(data) {
        panic!("{e}");
    }
});
