//! State that survives a restart: an engine restored from a snapshot decides
//! exactly as the one that never stopped.

use std::path::Path;

use fds::engine::Engine;
use fds::event::Event;
use fds::input::{self, Format};
use fds::model::{self, Model};
use fds::rules::{RuleSet, Verification};
use fds::state::SnapshotError;

/// An engine as `fds demo` builds it: the shipped rules and model.
fn demo_engine() -> Engine {
    let rules = RuleSet::load_dir(Path::new("rules")).expect("the shipped rules load");
    let model = Model::load(Path::new("models/default")).expect("the shipped model loads");
    Engine::with_rules(rules).with_model(model::new_handle(model), Verification::Ars)
}

fn demo_events() -> Vec<Event> {
    let input = input::open(Path::new("replay-data/demo.jsonl.gz"), Format::Auto).expect("the demo opens");
    input.events.map(|r| r.expect("the demo has no bad lines").1).collect()
}

/// Feed `events`, returning each decision's fingerprint (latency excluded)
/// and whether it held.
fn decide(engine: &Engine, events: &[Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| engine.process(e).expect("accepted"))
        .map(|s| (s.decision.fingerprint(), s.decision.is_hold()))
        .collect()
}

#[test]
fn a_restored_engine_decides_the_rest_of_the_demo_as_the_uninterrupted_one() {
    let events = demo_events();
    // Cut after day 4 of 7: accounts with history, open reports, devices.
    let cut = events.len() * 4 / 7;
    let uninterrupted = demo_engine();
    decide(&uninterrupted, &events[..cut]);

    let mut snapshot = Vec::new();
    let written = uninterrupted.write_snapshot(&mut snapshot).unwrap();
    assert_eq!(written.bytes, snapshot.len() as u64);
    assert!(written.accounts > 9_000 && written.payees > 10_000 && written.devices > 5_000, "{written:?}");

    let (restored, read) = demo_engine().restore_snapshot(&snapshot[..]).unwrap();
    assert_eq!(read, written);
    let expected = decide(&uninterrupted, &events[cut..]);
    let got = decide(&restored, &events[cut..]);
    assert_eq!(expected.len(), got.len());
    let differing = expected.iter().zip(&got).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} of {} decisions differ after the restore", expected.len());

    // Without the snapshot (what a restart did before), they differ: the
    // comparison can fail.
    let forgetful = decide(&demo_engine(), &events[cut..]);
    let holds = |d: &[(String, bool)]| d.iter().filter(|(_, hold)| *hold).count();
    let flipped = expected.iter().zip(&forgetful).filter(|(a, b)| a.1 != b.1).count();
    eprintln!(
        "snapshot {} bytes ({written:?}); after the cut {} decisions, {} held; from empty state {} held, {flipped} flipped",
        snapshot.len(),
        expected.len(),
        holds(&expected),
        holds(&forgetful),
    );
    assert!(flipped > 50, "{flipped}");
}

#[test]
fn a_corrupt_snapshot_is_refused_and_builds_no_engine() {
    let engine = demo_engine();
    decide(&engine, &demo_events()[..20_000]);
    let mut snapshot = Vec::new();
    engine.write_snapshot(&mut snapshot).unwrap();
    let middle = snapshot.len() / 2;
    snapshot[middle] ^= 0x01;
    match demo_engine().restore_snapshot(&snapshot[..]) {
        Err(e @ (SnapshotError::Checksum { .. } | SnapshotError::Truncated { .. })) => {
            assert!(e.to_string().contains("byte"), "the error names where: {e}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a corrupt snapshot was accepted"),
    }
}
