//! Fuzz targets for `fds`: the properties they assert live in [`checks`].
//!
//! Each binary under `fuzz_targets/` feeds libFuzzer's inputs to one function
//! of [`checks`] and panics on the violation it returns, which libFuzzer
//! records as a crash. `tests/fuzz_regressions.rs` of the main package runs
//! the same functions over the seeds and every saved crash, so a found bug
//! stays a failing test until it is fixed.

pub mod checks;
