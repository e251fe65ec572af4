//! Any bytes as a rule file, a list file and a `ruleset.toml`: loading never
//! panics, and every problem of a refusal is positioned inside its file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = fds_fuzz::checks::rule_files(data) {
        panic!("{violation}");
    }
});
