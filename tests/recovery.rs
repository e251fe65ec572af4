//! State across `kill -9`: `fds run` checkpoints its state to the `state`
//! changelog topic; killed mid-stream and started again, it restores the
//! state, handles again the input after the checkpoint, and decides every
//! transfer exactly as an engine that never stopped (the replay).

mod support;

use fds::kafka::{EmbeddedBroker, Topics};
use support::*;

fn on_embedded(checkpoint_ms: u64, partitions: i32) -> (usize, usize, usize) {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, partitions).unwrap();
    kill_and_restart(&broker.bootstrap_servers(), &topics, checkpoint_ms, partitions)
}

#[test]
fn killed_mid_stream_it_decides_as_if_it_never_stopped() {
    let (differ, of, _) = on_embedded(50, 1);
    assert_eq!(differ, 0, "{differ} of {of} transfers decided otherwise than by an engine that never stopped");
}

/// Checkpoints far apart: the one restored is from before most of what was
/// decided, so the restarted instance goes back to its positions and the
/// state learns the input again, answering it with the decisions given.
#[test]
fn killed_far_from_its_last_checkpoint_on_four_partitions_it_replays_and_decides_the_same() {
    let (differ, of, again) = on_embedded(2_000, 4);
    assert_eq!(differ, 0, "{differ} of {of} transfers decided otherwise than by an engine that never stopped");
    assert!(again > 0, "the input after the checkpoint was handled again");
}

/// The comparison can fail: without the changelog, and on an observations
/// topic of its own (so the payees and devices are not rebuilt from the
/// first instance's), the restarted instance starts empty and decides part
/// of the rest otherwise. Killed once most of the first backlog (60 %) is
/// decided, so a day of payee history is lost (killed early, the restarted
/// instance rebuilds it from the input before it matters).
#[test]
fn without_the_changelog_a_restart_forgets() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 1).unwrap();
    broker.cluster().create_topic("observations-after", 1, 1).unwrap();
    let after = "[kafka.topics]\nobservations = \"observations-after\"\n";
    let (differ, of, _) = kill_and_restart_with(&broker.bootstrap_servers(), &topics, 0, 1, 55, after);
    assert!(differ > 0, "none of {of} transfers changed: the test could not tell");
}
