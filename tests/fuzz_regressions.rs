//! The fuzz targets' checks, run over their seeds and over every input a
//! fuzzer ever failed on, in the ordinary test suite.
//!
//! `scripts/fuzz` runs the coverage-guided fuzzers (`fuzz/`), which need an
//! instrumented build of their own; this test needs none. It includes the
//! targets' check functions from `fuzz/src/checks.rs` itself, so it holds
//! `fds` to exactly the properties the fuzzers do, and runs them over
//! `fuzz/seeds/<target>/` and `tests/fuzz-regressions/<target>/`, where
//! `scripts/fuzz` saves each crashing input. A bug the fuzzer found thus
//! fails this test until it is fixed, and fails it again if it comes back.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The inputs of one directory, by name; `README*` and hidden files (such as
/// `.gitkeep`) are not inputs. A missing directory has none.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read directory entry").path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            path.is_file() && !name.starts_with('.') && !name.starts_with("README")
        })
        .collect();
    files.sort();
    files
}

/// Run `target`'s check over its seeds and saved regressions; fail naming
/// every input whose check failed or panicked.
fn run_target(target: &str) {
    let (_, check) = checks::TARGETS.iter().find(|(name, _)| *name == target).expect("a target of checks::TARGETS");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = inputs(&root.join("fuzz/seeds").join(target));
    let regressions = inputs(&root.join("tests/fuzz-regressions").join(target));
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{target}/: the check ran on nothing");

    let mut failures = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        match panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Ok(Ok(())) => {}
            Ok(Err(violation)) => failures.push(format!("{}: {violation}", path.display())),
            Err(_) => failures.push(format!("{}: panicked (message above)", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed (reproduce one with `scripts/fuzz {target}` or by running the \
         fuzz binary on the file):\n{}",
        failures.len(),
        seeds.len() + regressions.len(),
        failures.join("\n")
    );
}

#[test]
fn event_decode_seeds_and_regressions() {
    run_target("event_decode");
}

#[test]
fn rule_condition_seeds_and_regressions() {
    run_target("rule_condition");
}

#[test]
fn rule_files_seeds_and_regressions() {
    run_target("rule_files");
}

/// Every target in `checks` has a test above, seeds, and a regression
/// directory for `scripts/fuzz` to save crashes into.
#[test]
fn every_target_is_tested() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, _) in checks::TARGETS {
        assert!(
            ["event_decode", "rule_condition", "rule_files"].contains(&target),
            "target {target} has no test in tests/fuzz_regressions.rs"
        );
        assert!(root.join("fuzz/fuzz_targets").join(format!("{target}.rs")).is_file(), "no fuzz target {target}");
        assert!(root.join("tests/fuzz-regressions").join(target).is_dir(), "no tests/fuzz-regressions/{target}/");
    }
}
