//! `fds load` against a stand-in for `fds run` on librdkafka's mock cluster (a
//! Kafka-protocol broker on loopback, in this process). The stand-in checks
//! the keys and headers of what it is sent and answers every transfer, except
//! that it answers one twice with contradictory decisions, one never, one late,
//! and answers an id the load never sent; the report must count each.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fds::event::build::{context, label, transfer};
use fds::kafka::{Connection, Topics, HEADER_CORRELATION_ID, HEADER_DEADLINE_MS, HEADER_LATE};
use fds::load::{self, LoadOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Transfers in the file; the load stops at [`LIMIT`].
const IN_FILE: usize = 70;
const LIMIT: u64 = 60;
const TWICE: &str = "T0007";
const NEVER: &str = "T0013";
const LATE: &str = "T0021";
const BUDGET: Duration = Duration::from_secs(10);

fn account(i: usize) -> String {
    format!("1202200000000000000000{:02}", i % 7)
}

/// The input: a login before every tenth transfer, a label after some, one
/// line that is not an event.
fn input() -> String {
    let mut s = String::new();
    for i in 0..IN_FILE {
        let acct = account(i);
        let (id, payee) = (format!("T{i:04}"), format!("110-123-4567{i:02}"));
        if i % 10 == 0 {
            s += &context(&acct).at("20261126092900").device("D1").login(true).to_json();
            s.push('\n');
        }
        s += &transfer(&id).account(&acct).at("20261126093000").amount(50_000).payee("088", &payee).device("D1").json();
        s.push('\n');
        if i % 25 == 5 {
            s += &label(&id).at("20261126100000").payee("088", &payee).json();
            s.push('\n');
        }
        if i == 3 {
            // Not an event: the wire format's own business, so written by hand.
            s += "{\"type\":\"teleport\"}\n";
        }
    }
    s
}

/// What the stand-in saw of one message.
#[derive(Debug)]
struct Seen {
    topic: String,
    key: String,
    headers: HashMap<String, String>,
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("broker.address.family", "v4").set("fetch.wait.max.ms", "10");
    c
}

/// A stand-in for `fds run`: reads the three input topics from the start and
/// answers transfers on the decisions topic, until `stop`.
fn responder(brokers: &str, topics: &Topics, partitions: i32, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Seen>> {
    let consumer: BaseConsumer = client(brokers).set("group.id", "stand-in").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (topic, n) in [(&topics.transfers, partitions), (&topics.context_events, partitions), (&topics.labels, 1)] {
        for p in 0..n {
            tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let producer: BaseProducer = client(brokers).set("linger.ms", "0").create().unwrap();
    let (transfers, decisions) = (topics.transfers.clone(), topics.decisions.clone());
    thread::spawn(move || {
        let mut seen = Vec::new();
        let answer = |id: &str, key: &str, decision: &str, late: bool| {
            // A decision as fds writes it, reduced to what `fds load` reads.
            let body = format!(
                r#"{{"schema_version":1,"bank_tran_id":"{id}","decision":"{decision}","verification":null,"late":{late}}}"#
            );
            let headers = OwnedHeaders::new()
                .insert(Header { key: HEADER_CORRELATION_ID, value: Some(id) })
                .insert(Header { key: HEADER_LATE, value: Some(if late { "true" } else { "false" }) });
            producer.send(BaseRecord::to(&decisions).key(key).payload(&body).headers(headers)).unwrap();
        };
        while !stop.load(Ordering::Relaxed) {
            producer.poll(Duration::ZERO);
            let Some(msg) = consumer.poll(Duration::from_millis(20)) else { continue };
            let msg = msg.unwrap();
            let headers: HashMap<String, String> = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
            if msg.topic() == transfers {
                let id = headers[HEADER_CORRELATION_ID].as_str();
                if seen.iter().all(|s: &Seen| s.topic != transfers) {
                    answer("NOT-SENT-BY-LOAD", &key, "allow", false);
                }
                match id {
                    NEVER => {}
                    TWICE => {
                        answer(id, &key, "allow", false);
                        answer(id, &key, "hold", false);
                    }
                    _ => answer(id, &key, "allow", id == LATE),
                }
            }
            seen.push(Seen { topic: msg.topic().to_owned(), key, headers });
        }
        producer.flush(Duration::from_secs(5)).unwrap();
        seen
    })
}

#[test]
fn load_counts_every_kind_of_answer() {
    let topics = Topics::default();
    let partitions = 3;
    let cluster = MockCluster::new(1).unwrap();
    for topic in topics.all() {
        let n = if topic == topics.labels || topic == topics.dead_letter { 1 } else { partitions };
        cluster.create_topic(topic, n, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load.jsonl");
    std::fs::File::create(&path).unwrap().write_all(input().as_bytes()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let stand_in = responder(&brokers, &topics, partitions, stop.clone());

    let mut opts = LoadOptions::new(vec![path], Connection::new(&brokers), topics.clone());
    opts.rate = Some(200.0);
    opts.limit = Some(LIMIT);
    opts.budget = BUDGET;
    opts.drain = Duration::from_secs(1);
    let written = dir.path().join("decisions.jsonl");
    opts.decisions_out = Some(written.clone());
    let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let r = load::run(opts, None).unwrap();
    let ended_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    stop.store(true, Ordering::Relaxed);
    let seen = stand_in.join().unwrap();
    let text = r.render();

    // What was sent: the limit stops at the 61st transfer, after the login
    // just before it; labels follow transfers 5, 30 and 55.
    assert_eq!(r.transfers_sent, LIMIT, "{text}");
    assert!(r.stopped_at_limit);
    assert_eq!((r.context_events_sent, r.labels_sent, r.bad_lines), (7, 3, 1), "{text}");
    assert!(r.bad_line_samples[0].reason.contains("teleport"), "{text}");
    assert_eq!(r.delivery_failures, 0, "{text}");
    // Paced: 59 intervals at 200/s take at least 295 ms.
    assert!(r.send_s >= 0.29 && r.sent_per_s <= 200.5, "{text}");

    // What came back.
    assert_eq!(r.decisions_received, LIMIT - 1, "{text}");
    assert_eq!(r.never_answered, 1, "{NEVER}: {text}");
    assert_eq!((r.duplicates, r.contradictory), (1, 1), "{TWICE}: {text}");
    assert_eq!(r.unknown, 1, "{text}");
    assert_eq!(r.late, 1, "{LATE}: {text}");
    assert_eq!((r.allow, r.hold, r.other_decisions, r.unreadable), (LIMIT - 1, 0, 0, 0), "{text}");
    assert_eq!(r.missed_budget, 0, "{text}");
    let l = &r.latency;
    assert!(l.p50_us > 0.0 && l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us, "{text}");
    assert!(l.max_us < BUDGET.as_micros() as f64, "{text}");
    assert!(r.decisions_per_s > 0.0, "{text}");
    // Every answer read, as sent: the duplicate and the unknown one too.
    let lines = std::fs::read_to_string(&written).unwrap();
    let answers = r.decisions_received + r.duplicates + r.unknown;
    assert_eq!(lines.lines().count() as u64, answers, "{lines}");
    assert!(lines.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{lines}");

    // The contract, as the stand-in saw it.
    let on = |t: &String| seen.iter().filter(|s| &s.topic == t).collect::<Vec<_>>();
    assert_eq!(on(&topics.transfers).len() as u64, LIMIT);
    for s in on(&topics.transfers) {
        let id = &s.headers[HEADER_CORRELATION_ID];
        let i: usize = id[1..].parse().unwrap();
        assert_eq!(s.key, account(i), "{id} keyed by its sender account");
        let deadline: u64 = s.headers[HEADER_DEADLINE_MS].parse().unwrap();
        let budget = BUDGET.as_millis() as u64;
        assert!(deadline >= started_ms + budget && deadline <= ended_ms + budget, "{id}: deadline {deadline}");
    }
    assert_eq!(on(&topics.context_events).len(), 7);
    for s in on(&topics.context_events) {
        assert!(s.key.starts_with("1202200000"), "context events keyed by account: {}", s.key);
    }
    let label_keys: Vec<&str> = on(&topics.labels).into_iter().map(|s| s.key.as_str()).collect();
    assert_eq!(label_keys, ["088-110123456705", "088-110123456730", "088-110123456755"]);
}

#[test]
fn refuses_to_start_without_brokers_or_topics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("load.jsonl");
    std::fs::write(&path, input()).unwrap();
    let topics = Topics::default();

    // Nothing listens on port 1.
    let mut opts = LoadOptions::new(vec![path.clone()], Connection::new("127.0.0.1:1"), topics.clone());
    opts.connect_timeout = Duration::from_secs(1);
    let err = load::run(opts, None).unwrap_err();
    assert!(matches!(err, load::LoadError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let cluster = MockCluster::new(1).unwrap();
    for topic in [&topics.transfers, &topics.context_events, &topics.labels] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let opts = LoadOptions::new(vec![path], Connection::new(cluster.bootstrap_servers()), topics.clone());
    let err = load::run(opts, None).unwrap_err();
    assert!(matches!(&err, load::LoadError::MissingTopic { topic, .. } if *topic == topics.decisions), "{err:?}");

    let missing = LoadOptions::new(vec![dir.path().join("nope.jsonl")], Connection::new("127.0.0.1:1"), topics);
    assert!(matches!(load::run(missing, None), Err(load::LoadError::Input(_))));
}
