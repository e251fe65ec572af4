//! Any text as a rule's `when` condition: compiling never panics, and a
//! refusal names at least one problem, each inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = fds_fuzz::checks::rule_condition(data) {
        panic!("{violation}");
    }
});
