//! State across `kill -9`: `fds run` checkpoints its state to the `state`
//! changelog topic; killed mid-stream and started again, it restores the
//! state, handles again the input after the checkpoint, and decides every
//! transfer exactly as an engine that never stopped (the replay).

mod support;

use std::time::Duration;

use fds::engine::Engine;
use fds::input::order::in_order;
use fds::kafka::{EmbeddedBroker, Topics};
use fds::rules::RuleSet;
use support::*;

const WAIT: Duration = Duration::from_secs(120);

/// What a decision says, without when it was made.
fn verdict(j: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([j["decision"], j["verification"], j["score"], j["reasons"]])
}

/// Kill `fds run` once half the transfers are decided, start it again, and
/// count the first answers that differ from the replay's.
/// `checkpoint_ms`: 0 for no changelog. Returns the transfers decided
/// otherwise than by the replay, of how many, and how many answers were
/// given again (the input the restored state had not seen, handled again).
fn kill_and_restart(checkpoint_ms: u64, partitions: i32) -> (usize, usize, usize) {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, partitions).unwrap();
    let brokers = broker.bootstrap_servers();
    // About 3 MB of transfers: the embedded broker keeps a few MB per
    // partition and drops older records, and the whole backlog must stay.
    let events = stream_of(1000, 6);
    let ids = transfer_ids(&events);

    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[engine]\nuse_model = false\n[kafka]\ncommit_interval_ms = 100\ncheckpoint_interval_ms = {checkpoint_ms}\n"
        ),
    )
    .unwrap();
    // Input is decided in one order only when it is all there before fds
    // reads it (see tests/order.rs), so it comes in two backlogs. The first
    // 60 % is there at the start; fds works through it, checkpointing every
    // 50 ms, and is killed (SIGKILL, decisions in flight included) as soon as
    // a tenth of the transfers are seen decided. The rest arrives while no
    // instance runs; the next one restores and carries on.
    let (first, rest) = events.split_at(events.len() * 6 / 10);
    let p = producer(&brokers);
    send_events(&p, &topics, first, 600_000);
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    let child = FdsRun::start(&brokers, Some(config.path()));
    assert!(decisions.read_until(WAIT, |r| r.len() >= ids.len() / 10));
    drop(child);
    send_events(&p, &topics, rest, 600_000);
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    let child = FdsRun::start(&brokers, Some(config.path()));
    assert!(
        decisions.read_until(WAIT, |r| all_decided(r, ids.len())),
        "{} of {} decided after the restart",
        decisions_by_id(&decisions.records).len(),
        ids.len()
    );
    assert!(child.terminate().success());

    let engine = Engine::with_rules(RuleSet::load_dir(std::path::Path::new("rules")).unwrap());
    let numbered = events.iter().cloned().enumerate().map(|(i, e)| Ok::<_, ()>((i as u64, e)));
    let live = decisions_by_id(&decisions.records);
    let mut differ = 0;
    for e in in_order(numbered, partitions as u32) {
        let Some(scored) = engine.process(&e.unwrap().1).unwrap() else { continue };
        let expected: serde_json::Value = serde_json::from_str(&scored.decision.to_json()).unwrap();
        let given = &live[&scored.decision.bank_tran_id];
        // Every answer for a transfer is the first one, byte for byte.
        assert!(given.iter().all(|d| d == &given[0]), "{} decided two ways", scored.decision.bank_tran_id);
        differ += usize::from(verdict(&given[0]) != verdict(&expected));
    }
    let again = decisions.records.iter().filter(|r| r.header("fds-redelivered") == Some("true")).count();
    (differ, ids.len(), again)
}

#[test]
fn killed_mid_stream_it_decides_as_if_it_never_stopped() {
    let (differ, of, _) = kill_and_restart(50, 1);
    assert_eq!(differ, 0, "{differ} of {of} transfers decided otherwise than by an engine that never stopped");
}

/// Checkpoints far apart: the one restored is from before most of what was
/// decided, so the restarted instance goes back to its positions and the
/// state learns the input again, answering it with the decisions given.
#[test]
fn killed_far_from_its_last_checkpoint_on_four_partitions_it_replays_and_decides_the_same() {
    let (differ, of, again) = kill_and_restart(2_000, 4);
    assert_eq!(differ, 0, "{differ} of {of} transfers decided otherwise than by an engine that never stopped");
    assert!(again > 0, "the input after the checkpoint was handled again");
}

/// The comparison can fail: without the changelog the restarted instance
/// starts empty and decides part of the rest otherwise.
#[test]
fn without_the_changelog_a_restart_forgets() {
    let (differ, of, _) = kill_and_restart(0, 1);
    assert!(differ > 0, "none of {of} transfers changed: the test could not tell");
}
