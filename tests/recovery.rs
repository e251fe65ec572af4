//! State across `kill -9`: `fds run` checkpoints its state to the `state`
//! changelog topic; killed mid-stream and started again, it restores the
//! state, handles again the input after the checkpoint, and decides every
//! transfer exactly as an engine that never stopped (the replay). Stopped
//! gracefully with a state directory, it restarts from its local copy where
//! the changelog has not moved since.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fds::kafka::{EmbeddedBroker, Topics};
use rdkafka::message::{Header, OwnedHeaders};
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
    let (differ, of, again) = kill_and_restart_with(&broker.bootstrap_servers(), &topics, 0, 1, 55, after);
    assert!(differ > 0, "none of {of} transfers changed ({again} answered again): the test could not tell");
}

/// Records of the changelog that cannot be used: a corrupt copy of an
/// account's latest record, a copy written by another state format version,
/// a key that names no entity and a marker that does not read. Each is
/// refused on its own and counted; each account falls back to the record
/// before it (here the good copy of the same checkpoint), so the restarted
/// instance still decides every transfer as one that never stopped.
#[test]
fn bad_changelog_records_are_refused_one_by_one_and_the_rest_restored() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 1).unwrap();
    let brokers = broker.bootstrap_servers();
    let tamper = || {
        let mut state = Reader::new(&brokers, &topics.state);
        assert!(state.read_to_end(Duration::from_secs(60)), "the changelog read to its end");
        let checkpoint = |r: &Record| r.header("fds-checkpoint").and_then(|h| h.parse::<u64>().ok());
        let marker = state.records.iter().rev().find(|r| r.key == b"@checkpoint").expect("a checkpoint was written");
        let marker = marker.json();
        let (id, since) = (marker["id"].as_u64().unwrap(), marker["since"].as_u64().unwrap());
        // Per account, the record a restore takes: the latest of the
        // complete checkpoint's.
        let mut taken: HashMap<Vec<u8>, &Record> = HashMap::new();
        for r in state.records.iter().filter(|r| r.key.first() == Some(&b'a')) {
            if checkpoint(r).is_some_and(|c| (since..=id).contains(&c)) {
                taken.insert(r.key.clone(), r);
            }
        }
        let mut accounts: Vec<&Record> = taken.into_values().filter(|r| !r.payload.is_empty()).collect();
        accounts.sort_by_key(|r| r.key.clone());
        assert!(accounts.len() >= 2, "accounts in the changelog");
        let p = producer(&brokers);
        // A copy names the writer of the record it copies: a marker takes
        // only its own writer's records.
        let headers = |of: &Record, checkpoint: &str, format: &str| {
            OwnedHeaders::new()
                .insert(Header { key: "fds-checkpoint", value: Some(checkpoint) })
                .insert(Header { key: "fds-state-format", value: Some(format) })
                .insert(Header { key: "fds-writer", value: of.header("fds-writer") })
        };
        let format = fds::state::FORMAT_VERSION.to_string();
        let (a, b) = (accounts[0], accounts[1]);
        let mut corrupt = a.payload.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x5a;
        send_raw(&p, &topics.state, &a.key, &corrupt, headers(a, a.header("fds-checkpoint").unwrap(), &format));
        send_raw(&p, &topics.state, &b.key, &b.payload, headers(b, b.header("fds-checkpoint").unwrap(), "99"));
        send_raw(&p, &topics.state, b"xnot-an-entity", b"?", headers(b, &id.to_string(), &format));
        send_raw(&p, &topics.state, b"@checkpoint", b"{not json", headers(b, &(id + 1).to_string(), &format));
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    };
    let r = kill_tamper_restart(&brokers, &topics, 50, 1, 50, "", tamper);
    assert_eq!(
        r.differ, 0,
        "{} of {} transfers decided otherwise than by an engine that never stopped",
        r.differ, r.of
    );
    let refused = |reason: &str| {
        let series = format!("fds_state_restore_records_refused_total{{reason=\"{reason}\"}} ");
        r.metrics.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse::<u64>().ok()).unwrap_or(0)
    };
    assert_eq!((refused("checksum"), refused("format"), refused("malformed")), (1, 1, 2), "{}", r.metrics);
}

/// The value of `series` (name and labels) in a /metrics page, 0 if absent.
fn sample(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

/// Three graceful runs over three backlogs, with a state directory. The
/// second starts from the first's local copy (payees, devices and both
/// partitions' accounts, none of it read from the changelog), and stops on a
/// full disk: the copy is not replaced and the previous one stays as it was.
/// The third finds that copy behind the changelog: it takes its payees and
/// devices (the observations after it are read again) but restores the
/// accounts from the changelog. Every transfer is decided as by one engine.
#[test]
fn a_graceful_restart_reads_the_local_copy_and_a_full_disk_leaves_the_previous_one() {
    const WAIT: Duration = Duration::from_secs(120);
    let topics = Topics::default();
    let partitions = 2;
    let broker = EmbeddedBroker::start(&topics, partitions).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream_of(1000, 6);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("state.local");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[engine]\nuse_model = false\nstate_dir = {:?}\n[kafka]\ncommit_interval_ms = 100\n\
             checkpoint_interval_ms = 50\n",
            dir.path()
        ),
    )
    .unwrap();
    let p = producer(&brokers);
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    let third = events.len() / 3;
    // Each backlog is all there before its run starts: one order only.
    let mut run = |backlog: std::ops::Range<usize>, before_stop: &dyn Fn()| -> String {
        let upto = backlog.end;
        send_events(&p, &topics, &events[backlog], 600_000);
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
        let listen = free_port();
        let child = FdsRun::start_listening(&brokers, Some(config.path()), listen);
        let n = transfer_ids(&events[..upto]).len();
        assert!(decisions.read_until(WAIT, |r| all_decided(r, n)), "the backlog up to {upto} decided");
        let metrics = http_get(listen, "/metrics").map(|(_, body)| body).unwrap_or_default();
        before_stop();
        assert!(child.terminate().success());
        metrics
    };
    let restores = |m: &str, result: &str| sample(m, &format!("fds_state_restores_total{{result=\"{result}\"}}"));

    run(0..third, &|| {});
    let first_copy = std::fs::read(&copy).expect("the first run wrote a local copy");

    // A full disk at the next stop: every write to the new copy fails with
    // ENOSPC (`/dev/full`).
    let tmp = dir.path().join("state.local.tmp");
    let m = run(third..2 * third, &|| std::os::unix::fs::symlink("/dev/full", &tmp).unwrap());
    assert_eq!(
        (restores(&m, "local"), restores(&m, "restored")),
        (2, 0),
        "shared tables and accounts from the local copy, nothing from the changelog:\n{m}"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), first_copy, "the previous copy is left as it was");
    assert!(std::fs::symlink_metadata(&tmp).is_err(), "the failed copy was tried and removed");

    // What the changelog holds when the third run starts.
    let mut state = Reader::new(&brokers, &topics.state);
    assert!(state.read_to_end(Duration::from_secs(60)), "the changelog read to its end");
    let in_topic: usize = state.records.iter().map(|r| r.payload.len()).sum();
    let m = run(2 * third..events.len(), &|| {});
    assert_eq!(
        (restores(&m, "local"), restores(&m, "stale"), restores(&m, "restored")),
        (1, 1, 1),
        "payees and devices from the copy; the partitions' accounts found stale, read from the changelog:\n{m}"
    );
    // The accounts were read from where the second run's first checkpoint,
    // a whole one, begins: the first run's records are skipped.
    let read = sample(&m, "fds_state_restore_bytes") as usize;
    assert!(read > 0 && read < in_topic, "{read} bytes restored of {in_topic} in the changelog");
    let differ = differ_from_replay(&events, partitions as u32, &decisions.records);
    let of = transfer_ids(&events).len();
    assert_eq!(differ, 0, "{differ} of {of} transfers decided otherwise than by an engine that never stopped");
}

/// A local copy written against one broker is not used against another
/// that starts afresh (the embedded one does, every run): the observations
/// it counted are not there, so nothing of it is taken, and no account
/// comes back.
#[test]
fn a_local_copy_is_not_used_against_a_new_broker() {
    const WAIT: Duration = Duration::from_secs(120);
    let topics = Topics::default();
    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("[engine]\nuse_model = false\nstate_dir = {:?}\n[kafka]\ncheckpoint_interval_ms = 50\n", dir.path()),
    )
    .unwrap();
    let events = stream_of(200, 2);
    let first = EmbeddedBroker::start(&topics, 1).unwrap();
    let brokers = first.bootstrap_servers();
    let p = producer(&brokers);
    send_events(&p, &topics, &events, 600_000);
    // Dropped unflushed, a producer purges what it has not sent yet.
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    let child = FdsRun::start(&brokers, Some(config.path()));
    let n = transfer_ids(&events).len();
    assert!(decisions.read_until(WAIT, |r| all_decided(r, n)), "the stream decided");
    assert!(child.terminate().success());
    assert!(dir.path().join("state.local").exists());
    drop(first);

    let second = EmbeddedBroker::start(&topics, 1).unwrap();
    let listen = free_port();
    let child = FdsRun::start_listening(&second.bootstrap_servers(), Some(config.path()), listen);
    assert!(wait_for(WAIT, || http_get(listen, "/readyz").is_some_and(|(code, _)| code == 200)));
    let m = http_get(listen, "/metrics").map(|(_, body)| body).unwrap_or_default();
    assert_eq!(sample(&m, "fds_state_restores_total{result=\"stale\"}"), 1, "{m}");
    assert_eq!(sample(&m, "fds_state_restores_total{result=\"local\"}"), 0, "{m}");
    assert_eq!(sample(&m, "fds_state_entities{kind=\"account\"}"), 0, "{m}");
    assert!(child.terminate().success());
}
