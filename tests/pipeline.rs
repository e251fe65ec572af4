//! The Kafka pipeline against the embedded broker (librdkafka's mock cluster,
//! a real Kafka-protocol broker on loopback, in this process).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use fds::kafka::{EmbeddedBroker, Topics, HEADER_CORRELATION_ID, HEADER_DECISION};
use rdkafka::message::OwnedHeaders;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn every_transfer_gets_one_decision_in_account_order() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 4).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(300);
    let ids = transfer_ids(&events);
    assert!(ids.len() > 300, "a real stream: {}", ids.len());

    let running = Running::start(&brokers, "every-transfer");
    let p = producer(&brokers);
    send_events(&p, &topics, &events, 60_000);

    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= ids.len()), "only {} of {}", decisions.records.len(), ids.len());
    assert_eq!(decisions.drain(Duration::from_millis(500)), 0, "no decision twice");
    let summary = running.stop();
    assert_eq!(summary.decisions as usize, ids.len());
    assert_eq!(summary.dead_letters, 0);
    assert_eq!(summary.unfinished, 0);

    let by_id = decisions_by_id(&decisions.records);
    for id in &ids {
        assert_eq!(by_id.get(id).map(Vec::len), Some(1), "{id}");
    }
    // One account's decisions are on one partition, in the order its
    // transfers were sent.
    let mut sent_order: HashMap<Vec<u8>, Vec<String>> = HashMap::new();
    for e in &events {
        if let fds::event::Event::Transfer(t) = e {
            sent_order.entry(t.fintech_use_num.as_bytes().to_vec()).or_default().push(t.bank_tran_id.clone());
        }
    }
    let mut seen_order: HashMap<Vec<u8>, Vec<String>> = HashMap::new();
    let mut partitions: HashMap<Vec<u8>, i32> = HashMap::new();
    for r in &decisions.records {
        assert_eq!(*partitions.entry(r.key.clone()).or_insert(r.partition), r.partition, "one account, one partition");
        // Decisions go to their transfer's partition, which the producer
        // chose: the replay's partitioner must agree with it.
        assert_eq!(r.partition, fds::input::order::partition_for(&r.key, 4), "the producer's partition");
        seen_order.entry(r.key.clone()).or_default().push(r.json()["bank_tran_id"].as_str().unwrap().to_owned());
        assert_eq!(r.header(HEADER_CORRELATION_ID), r.json()["bank_tran_id"].as_str());
        assert_eq!(
            r.header(HEADER_DECISION),
            r.json()["decision"].as_str(),
            "the verdict header says what the body says"
        );
    }
    for (account, sent) in &sent_order {
        let mut seen = seen_order[account].clone();
        // Records of one partition come back in offset order.
        seen.dedup();
        assert_eq!(&seen, sent, "decisions of one account out of order");
    }
    let holds = decisions.records.iter().filter(|r| r.json()["decision"] == "hold").count();
    assert!(holds > 0, "the starter rules hold some of a day of generated fraud");
}

#[test]
fn bad_messages_go_to_dead_letter_and_the_partition_moves_on() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 1).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(100);
    let first: Vec<_> =
        events.iter().filter(|e| matches!(e, fds::event::Event::Transfer(_))).take(3).cloned().collect();
    let label = events.iter().find(|e| matches!(e, fds::event::Event::Label(_))).cloned();

    let running = Running::start(&brokers, "dead-letter");
    let p = producer(&brokers);
    send_events(&p, &topics, &first[..1], 60_000);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{not json".to_vec()),
        ("malformed", br#"{"type":"wire_transfer","schema_version":1}"#.to_vec()),
        ("malformed", first[1].to_json().replace("\"tran_amt\":", "\"tran_amt\":-").into_bytes()),
        (
            "invalid",
            first[1].to_json().replace("\"recv_client_bank_code\":\"", "\"recv_client_bank_code\":\"9").into_bytes(),
        ),
    ];
    for (_, payload) in &bad {
        send_raw(&p, &topics.transfers, b"acct", payload, OwnedHeaders::new());
    }
    if let Some(l) = &label {
        send_raw(&p, &topics.transfers, b"acct", l.to_json().as_bytes(), OwnedHeaders::new());
    }
    send_events(&p, &topics, &first[2..3], 60_000);

    let mut dead = Reader::new(&brokers, &topics.dead_letter);
    let expected_dead = bad.len() + usize::from(label.is_some());
    assert!(dead.read_until(WAIT, |r| r.len() >= expected_dead), "{:?}", dead.records.len());
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= 2), "transfers after bad ones are decided");
    running.stop();

    for (r, (kind, payload)) in dead.records.iter().zip(&bad) {
        assert_eq!(&r.payload, payload, "original bytes kept");
        assert_eq!(r.header("fds-error-kind"), Some(*kind), "{:?}", r.headers);
        assert_eq!(r.header("fds-source-topic"), Some("transfers"));
        assert!(r.header("fds-source-offset").unwrap().parse::<i64>().is_ok());
        assert!(!r.header("fds-error").unwrap().is_empty());
    }
    if label.is_some() {
        assert_eq!(dead.records[bad.len()].header("fds-error-kind"), Some("wrong_topic"));
    }
}

#[test]
fn late_and_redelivered_transfers() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 2).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(100);
    let t: Vec<_> = events.iter().filter(|e| matches!(e, fds::event::Event::Transfer(_))).take(2).cloned().collect();

    let running = Running::start(&brokers, "late");
    let p = producer(&brokers);
    send_events(&p, &topics, &t[..1], -1_000); // deadline already passed
    send_events(&p, &topics, &t[1..2], 60_000);
    send_events(&p, &topics, &t[1..2], 60_000); // the API retries
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= 3));
    running.stop();
    let r = &decisions.records;
    let by_id = |id: &str| r.iter().filter(|x| x.json()["bank_tran_id"] == id).cloned().collect::<Vec<_>>();
    let ids = transfer_ids(&t);
    let late = by_id(&ids[0]);
    assert_eq!(late[0].json()["late"], true);
    assert_eq!(late[0].header("fds-late"), Some("true"));
    let twice = by_id(&ids[1]);
    assert_eq!(twice.len(), 2);
    assert_eq!(twice[0].payload, twice[1].payload, "the same decision, byte for byte");
    assert_eq!(twice[0].json()["late"], false);
    assert_eq!(twice[1].header("fds-redelivered"), Some("true"));
}

#[test]
fn broker_down_then_back_loses_nothing() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 2).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(200);
    let ids = transfer_ids(&events);
    let half = events.len() / 2;

    let running = Running::start(&brokers, "broker-down");
    let p = producer(&brokers);
    send_events(&p, &topics, &events[..half], 600_000);
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| !r.is_empty()));
    assert!(wait_for(WAIT, || running.health.is_ready()), "{:?}", running.health.problems());

    broker.cluster().broker_down(1).unwrap();
    assert!(
        wait_for(WAIT, || running.health.problems().contains(&"broker unreachable")),
        "readiness reports the broker: {:?}",
        running.health.problems()
    );
    send_events(&p, &topics, &events[half..], 600_000);
    std::thread::sleep(Duration::from_secs(2));
    broker.cluster().broker_up(1).unwrap();

    assert!(
        decisions.read_until(WAIT, |r| all_decided(r, ids.len())),
        "after the broker came back: {} of {} decided",
        decisions_by_id(&decisions.records).len(),
        ids.len()
    );
    assert!(wait_for(WAIT, || running.health.is_ready()), "ready again: {:?}", running.health.problems());
    let summary = running.stop();
    assert_eq!(summary.unfinished, 0);
    for (id, ds) in decisions_by_id(&decisions.records) {
        assert!(ds.iter().all(|d| d["decision"] == ds[0]["decision"]), "{id} decided two ways");
    }
}

/// Kill `fds run` (SIGKILL) mid-stream, start it again: every transfer has a
/// decision, and a transfer decided twice was decided the same way. Then
/// SIGTERM: a graceful stop that exits 0.
#[test]
fn restart_after_a_crash_loses_nothing_and_never_contradicts() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 4).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(400);
    let ids = transfer_ids(&events);

    // Commits once a minute: everything decided before the kill is delivered
    // again after the restart, so the read-back path is surely exercised.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[kafka]\ncommit_interval_ms = 60000\n").unwrap();
    let child = FdsRun::start(&brokers, Some(config.path()));
    let p = producer(&brokers);
    let third = events.len() / 3;
    send_events(&p, &topics, &events[..third], 600_000);
    let first = transfer_ids(&events[..third]).len();
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= first));
    drop(child); // SIGKILL: no commit, no goodbye to the group

    // The rest arrives while no instance runs; the new one must take it all.
    send_events(&p, &topics, &events[third..], 600_000);
    let child = FdsRun::start(&brokers, None);
    assert!(
        decisions.read_until(WAIT, |r| all_decided(r, ids.len())),
        "{} of {} decided after the restart",
        decisions_by_id(&decisions.records).len(),
        ids.len()
    );
    decisions.drain(Duration::from_millis(500));
    for (id, ds) in decisions_by_id(&decisions.records) {
        assert!(ids.contains(&id));
        assert!(ds.iter().all(|d| d == &ds[0]), "{id} decided two ways: {ds:?}");
    }
    let again = decisions.records.iter().filter(|r| r.header("fds-redelivered") == Some("true")).count();
    assert!(again >= first, "the {first} transfers decided before the kill were answered again from the read-back");

    // SIGTERM: stop consuming, finish, commit, exit 0.
    let status = child.terminate();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
}

/// A restarted instance reads the recent decisions back before it consumes:
/// transfers it sees again are answered with the decision already given, not
/// scored again on a state that no longer remembers them.
#[test]
fn decisions_are_read_back_at_start() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 2).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(100);
    let ids = transfer_ids(&events);
    let p = producer(&brokers);
    send_events(&p, &topics, &events, 600_000);

    let first = Running::start(&brokers, "readback-1");
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= ids.len()));
    assert_eq!(first.stop().redelivered, 0);

    // Another group starts from the beginning of the transfers topic, as an
    // instance does when its offsets were never committed.
    let second = Running::start(&brokers, "readback-2");
    assert!(decisions.read_until(WAIT, |r| r.len() >= 2 * ids.len()));
    let summary = second.stop();
    assert_eq!(summary.redelivered as usize, ids.len());
    assert_eq!(summary.decisions, 0, "nothing scored twice");
    let mut by_id: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in &decisions.records {
        by_id.entry(r.json()["bank_tran_id"].as_str().unwrap().to_owned()).or_default().push(r);
    }
    for id in &ids {
        let rs = &by_id[id];
        assert_eq!(rs.len(), 2, "{id}");
        assert_eq!(rs[0].payload, rs[1].payload, "{id}: the same decision, byte for byte");
        assert_eq!(rs.iter().filter(|r| r.header("fds-redelivered") == Some("true")).count(), 1);
    }
}

/// Two instances in one group: each account belongs to exactly one of them
/// (its transfers and its context events go to the same instance), and when one
/// stops, the other takes over its partitions where it left off: every transfer
/// decided exactly once.
#[test]
fn two_instances_share_accounts_and_hand_over_cleanly() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 2).unwrap();
    let brokers = broker.bootstrap_servers();
    let events = stream(300);
    let ids = transfer_ids(&events);
    let half = events.len() / 2;

    let a = Running::start(&brokers, "pair");
    let b = Running::start(&brokers, "pair");
    assert!(
        wait_for(WAIT, || a.health.is_ready() && b.health.is_ready()),
        "both assigned: {:?} {:?}",
        a.health.problems(),
        b.health.problems()
    );
    let p = producer(&brokers);
    send_events(&p, &topics, &events[..half], 600_000);
    let first = transfer_ids(&events[..half]).len();
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= first));

    let accounts: std::collections::HashSet<&str> = events[..half].iter().filter_map(|e| e.account()).collect();
    let (mut on_a, mut on_b) = (0, 0);
    for acct in &accounts {
        let (ka, kb) = (a.engine.state().knows_account(acct), b.engine.state().knows_account(acct));
        assert!(!(ka && kb), "an account's events were split between instances");
        on_a += usize::from(ka);
        on_b += usize::from(kb);
    }
    assert!(on_a > 0 && on_b > 0, "both instances own accounts: {on_a} / {on_b}");

    // B leaves; A takes its partitions from B's last commit.
    let summary_b = b.stop();
    assert_eq!(summary_b.unfinished, 0);
    send_events(&p, &topics, &events[half..], 600_000);
    assert!(
        decisions.read_until(WAIT, |r| all_decided(r, ids.len())),
        "{} of {}",
        decisions_by_id(&decisions.records).len(),
        ids.len()
    );
    decisions.drain(Duration::from_millis(500));
    a.stop();
    // A hand-over may deliver a few transfers again (at least once); they
    // are answered with the decision already given, never another one.
    let mut payloads: HashMap<String, Vec<u8>> = HashMap::new();
    for r in &decisions.records {
        let id = r.json()["bank_tran_id"].as_str().unwrap().to_owned();
        match payloads.get(&id) {
            None => {
                payloads.insert(id, r.payload.clone());
            }
            Some(first) => {
                assert_eq!(first, &r.payload, "{id} decided two ways");
                assert_eq!(r.header("fds-redelivered"), Some("true"), "{id}: a second answer is marked");
            }
        }
    }
}

#[test]
fn a_graceful_restart_with_a_state_dir_keeps_the_state() {
    use fds::engine::Engine;
    use fds::event::Event;
    use fds::rules::RuleSet;

    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 1).unwrap();
    let brokers = broker.bootstrap_servers();
    // Transfers only, on one partition: the pipeline reads them in the order
    // sent, so it must decide exactly as one engine fed that order.
    let transfers: Vec<Event> = stream(400).into_iter().filter(|e| matches!(e, Event::Transfer(_))).collect();
    let (first, second) = transfers.split_at(transfers.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    // The local checkpoint is what a run without the changelog uses.
    let with_dir = |o: &mut fds::kafka::pipeline::PipelineOptions| {
        o.state_dir = Some(dir.path().to_path_buf());
        o.checkpoint_interval = None;
    };
    let p = producer(&brokers);
    let mut decisions = Reader::new(&brokers, &topics.decisions);

    let run = Running::start_with(&brokers, "graceful", with_dir);
    send_events(&p, &topics, first, 60_000);
    assert!(decisions.read_until(WAIT, |r| r.len() >= first.len()), "first half decided");
    assert_eq!(run.stop().unfinished, 0);
    assert!(dir.path().join("state.local").exists(), "the local copy is written at the stop");

    let run = Running::start_with(&brokers, "graceful", with_dir);
    let restored = || run.metrics.state_restores.with_label_values(&["local"]).get() == 1;
    assert!(wait_for(WAIT, restored), "the state is restored at start: {}", run.metrics.encode());
    assert!(run.engine.state().entities().0 > 0);
    assert!(run.metrics.state_restore_bytes.get() > 0);
    send_events(&p, &topics, second, 60_000);
    assert!(decisions.read_until(WAIT, |r| r.len() >= transfers.len()), "second half decided");
    run.stop();

    let rules = || RuleSet::load_dir(std::path::Path::new("rules")).unwrap();
    let decide = |engine: &Engine, events: &[Event]| -> Vec<serde_json::Value> {
        events
            .iter()
            .map(|e| verdict(&serde_json::from_str(&engine.process(e).unwrap().unwrap().decision.to_json()).unwrap()))
            .collect()
    };
    let whole = Engine::with_rules(rules());
    decide(&whole, first);
    let expected = decide(&whole, second);
    let by_id = decisions_by_id(&decisions.records);
    let live: Vec<serde_json::Value> = second
        .iter()
        .map(|e| {
            let Event::Transfer(t) = e else { unreachable!() };
            verdict(&by_id[&t.bank_tran_id][0])
        })
        .collect();
    let differ = expected.iter().zip(&live).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{differ} of {} decisions after the restart differ from one engine's", second.len());

    // A restart that forgot the state decides the second half otherwise, so
    // the comparison above can fail.
    let forgetful = decide(&Engine::with_rules(rules()), second);
    assert!(expected.iter().zip(&forgetful).any(|(a, b)| a != b));

    // Once the input has moved past the checkpoint (here an instance without
    // the state dir; in production a crash or another instance), the
    // checkpoint is not used: the next start is empty, not wrong.
    let run = Running::start_with(&brokers, "graceful", |o| o.checkpoint_interval = None);
    send_events(&p, &topics, &first[..3], 60_000); // re-sent: answered again, offsets move on
    assert!(decisions.read_until(WAIT, |r| r.len() >= transfers.len() + 3));
    run.stop();
    let run = Running::start_with(&brokers, "graceful", with_dir);
    assert!(wait_for(WAIT, || run.health.is_ready()), "the instance comes up");
    // No account comes back; payees and devices are rebuilt from the
    // observations topic, as the shared tables always are.
    assert_eq!(run.engine.state().entities().0, 0, "a stale checkpoint is not restored");
    assert_eq!(run.metrics.state_restores.with_label_values(&["stale"]).get(), 1);
    run.stop();
}
