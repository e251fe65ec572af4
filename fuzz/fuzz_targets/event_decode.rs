//! Any bytes as an event message: decoding never panics, and an accepted
//! event survives a round trip through its own JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = fds_fuzz::checks::event_decode(data) {
        panic!("{violation}");
    }
});
