//! Shared by the integration tests: the `fds` command run as a user runs it,
//! and for the pipeline tests a small labelled stream, a producer playing the
//! transfer API, a reader of the output topics, and the pipeline run on a
//! thread of the test.

#![allow(dead_code)]

pub mod group;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fds::api::Health;
use fds::engine::Engine;
use fds::event::Event;
use fds::generate::{generate, GeneratorConfig};
use fds::input::order::in_order;
use fds::kafka::pipeline::{self, PipelineOptions, StopFlag, Summary};
use fds::kafka::{Connection, Topics, HEADER_CORRELATION_ID, HEADER_DEADLINE_MS};
use fds::metrics::Metrics;
use fds::rules::RuleSet;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Run the `fds` command from the repository root, as the README does, and
/// wait for it.
pub fn fds(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fds"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fds runs")
}

/// What a command printed, standard output then standard error.
pub fn printed(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The handbook's data set beside the repository, where CI lays it out
/// ([`fds::input::handbook::DATA_PATH`]). On a machine without it the test
/// says so and is skipped; under CI (`CI` set), where it is always there, its
/// absence fails the test with the path it looked at.
pub fn handbook_data() -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(fds::input::handbook::DATA_PATH);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the handbook data set is missing at {}; CI lays it out beside the repository",
        path.display()
    );
    eprintln!("skipped: the handbook data set is not at {} (CI lays it out there)", path.display());
    None
}

/// A day of generated traffic for `accounts` accounts: transfers, context
/// events and labels, in time order.
pub fn stream(accounts: u32) -> Vec<Event> {
    stream_of(accounts, 1)
}

/// `days` of generated traffic for `accounts` accounts, in time order.
pub fn stream_of(accounts: u32, days: u32) -> Vec<Event> {
    let cfg = GeneratorConfig { accounts, days, ..GeneratorConfig::default() };
    let mut out = Vec::new();
    generate(&cfg, &mut out).unwrap();
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| Event::from_json(l).unwrap()).collect()
}

pub fn transfer_ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Transfer(t) => Some(t.bank_tran_id.clone()),
            _ => None,
        })
        .collect()
}

pub fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    Connection::new(brokers)
        .client_config(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "1")])
        .create()
        .unwrap()
}

/// Send events to their topics the way the transfer API and the bank's other
/// systems do: keyed by account, transfers with correlation id and deadline.
pub fn send_events(p: &ThreadedProducer<DefaultProducerContext>, topics: &Topics, events: &[Event], budget_ms: i64) {
    for e in events {
        let json = e.to_json();
        let (topic, key) = match e {
            Event::Transfer(t) => (&topics.transfers, t.fintech_use_num.clone()),
            Event::Label(l) => (&topics.labels, l.payee_key()),
            other => (&topics.context_events, other.account().unwrap_or_default().to_owned()),
        };
        let mut headers = OwnedHeaders::new();
        if let Event::Transfer(t) = e {
            let deadline = (chrono::Utc::now().timestamp_millis() + budget_ms).to_string();
            headers = headers
                .insert(Header { key: HEADER_CORRELATION_ID, value: Some(t.bank_tran_id.as_str()) })
                .insert(Header { key: HEADER_DEADLINE_MS, value: Some(deadline.as_str()) });
        }
        send_raw(p, topic, key.as_bytes(), json.as_bytes(), headers);
    }
}

pub fn send_raw(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: OwnedHeaders,
) {
    let mut headers = Some(headers);
    loop {
        let record = BaseRecord::to(topic).key(key).payload(payload).headers(headers.take().unwrap());
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                headers = r.headers;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// One record read from an output topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(String::as_str)
    }
}

/// Reads a whole topic from the beginning, without a consumer group.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
    pub records: Vec<Record>,
}

impl Reader {
    pub fn new(brokers: &str, topic: &str) -> Reader {
        let consumer: BaseConsumer = Connection::new(brokers)
            .client_config(&[("group.id", "fds-test-reader"), ("enable.auto.commit", "false")])
            .create()
            .unwrap();
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Reader { consumer, topic: topic.to_owned(), records: Vec::new() }
    }

    /// Read until every partition is read to the end it has now, or
    /// `timeout` passes; returns whether it was. What a test takes as the
    /// whole topic (a changelog to tamper with, its size): reading for a
    /// fixed time instead returns only part of it on a busy host.
    pub fn read_to_end(&mut self, timeout: Duration) -> bool {
        let md = self.consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(10)).unwrap();
        let ends: Vec<(i32, i64, i64)> = md.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = self.consumer.fetch_watermarks(&self.topic, p.id(), Duration::from_secs(10)).unwrap();
                (p.id(), low, high)
            })
            .collect();
        let start = Instant::now();
        loop {
            let position = self.consumer.position().unwrap();
            let at_end = ends.iter().all(|&(p, low, end)| {
                low >= end
                    || position
                        .find_partition(&self.topic, p)
                        .and_then(|tp| match tp.offset() {
                            Offset::Offset(o) => Some(o >= end),
                            _ => None,
                        })
                        .unwrap_or(false)
            });
            if at_end {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            let left = timeout.saturating_sub(start.elapsed()).min(Duration::from_millis(500));
            let before = self.records.len();
            self.read_until(left, |r| r.len() > before);
        }
    }

    /// Read until `done(records)` holds or `timeout` passes; returns whether it held.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> bool {
        let start = Instant::now();
        while !done(&self.records) {
            if start.elapsed() > timeout {
                return false;
            }
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        true
    }

    /// Keep reading for `quiet` and return how many more records came.
    pub fn drain(&mut self, quiet: Duration) -> usize {
        let before = self.records.len();
        let start = Instant::now();
        self.read_until(quiet, |_| start.elapsed() >= quiet);
        self.records.len() - before
    }
}

/// The pipeline running on a thread of the test.
pub struct Running {
    pub stop: StopFlag,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub engine: Arc<Engine>,
    thread: Option<JoinHandle<Summary>>,
}

impl Running {
    pub fn start(brokers: &str, group: &str) -> Running {
        Running::start_with(brokers, group, |_| {})
    }

    pub fn start_with(brokers: &str, group: &str, tweak: impl FnOnce(&mut PipelineOptions)) -> Running {
        let rules = RuleSet::load_dir(std::path::Path::new("rules")).unwrap();
        let engine = Arc::new(Engine::with_rules(rules));
        let mut opts = PipelineOptions::new(Connection::new(brokers));
        opts.group_id = group.to_owned();
        opts.commit_interval = Duration::from_millis(100);
        tweak(&mut opts);
        let stop: StopFlag = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new());
        let thread = {
            let (engine, metrics, health, stop) = (engine.clone(), metrics.clone(), health.clone(), stop.clone());
            std::thread::spawn(move || pipeline::run(engine, opts, metrics, health, stop).unwrap())
        };
        Running { stop, metrics, health, engine, thread: Some(thread) }
    }

    pub fn stop(mut self) -> Summary {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether every one of `n` transfers has an answer among `records`: cheap
/// enough to be asked after every record read (no JSON parsed).
pub fn all_decided(records: &[Record], n: usize) -> bool {
    records.len() >= n
        && records
            .iter()
            .filter_map(|r| r.header(HEADER_CORRELATION_ID))
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= n
}

/// Decisions by transfer id, in the order they were read.
pub fn decisions_by_id(records: &[Record]) -> HashMap<String, Vec<serde_json::Value>> {
    let mut by_id: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for r in records {
        let j = r.json();
        by_id.entry(j["bank_tran_id"].as_str().unwrap().to_owned()).or_default().push(j);
    }
    by_id
}

/// `fds run` as a child process, killed (SIGKILL) when dropped, so a failing
/// test leaves no process behind.
pub struct FdsRun(std::process::Child);

impl FdsRun {
    pub fn start(brokers: &str, config: Option<&std::path::Path>) -> FdsRun {
        FdsRun::start_listening(brokers, config, "127.0.0.1:0".parse().unwrap())
    }

    /// With its HTTP endpoints (/readyz, /metrics) on `listen`.
    pub fn start_listening(brokers: &str, config: Option<&std::path::Path>, listen: std::net::SocketAddr) -> FdsRun {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fds"));
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.args(["run", "--brokers", brokers, "--listen", &listen.to_string()])
            .env("RUST_LOG", std::env::var("FDS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(std::process::Stdio::null());
        FdsRun(cmd.spawn().unwrap())
    }

    /// Logging at `info` into `log`, for tests that read what it logged.
    pub fn start_logging(brokers: &str, log: &std::path::Path) -> FdsRun {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fds"));
        cmd.args(["run", "--brokers", brokers, "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        FdsRun(cmd.spawn().unwrap())
    }

    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and how the process ended.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.0.wait().unwrap()
    }
}

impl Drop for FdsRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The offsets `group` has committed on `topic`, summed over its partitions.
pub fn committed_total(brokers: &str, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = Connection::new(brokers)
        .client_config(&[("group.id", group), ("enable.auto.commit", "false")])
        .create()
        .unwrap();
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else { return 0 };
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition(topic, p.id());
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else { return 0 };
    committed.elements().iter().filter_map(|e| if let Offset::Offset(o) = e.offset() { Some(o) } else { None }).sum()
}

/// `events` as a JSON-lines file, for `fds load`.
pub fn stream_file(events: &[Event]) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".jsonl").tempfile().unwrap();
    let lines: Vec<String> = events.iter().map(Event::to_json).collect();
    std::fs::write(file.path(), lines.join("\n") + "\n").unwrap();
    file
}

/// A loopback address with a port nobody listens on (free when asked).
pub fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// GET `path` from `addr`: the status and the body, `None` when nothing answers.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// What a decision says, without when it was made.
pub fn verdict(j: &serde_json::Value) -> serde_json::Value {
    serde_json::json!([j["decision"], j["verification"], j["score"], j["reasons"]])
}

/// Kill `fds run` (SIGKILL) mid-stream, start it again, and
/// count the first answers that differ from the replay's.
/// `checkpoint_ms`: 0 for no changelog. Returns the transfers decided
/// otherwise than by the replay, of how many, and how many answers were
/// given again (the input the restored state had not seen, handled again).
pub fn kill_and_restart(brokers: &str, topics: &Topics, checkpoint_ms: u64, partitions: i32) -> (usize, usize, usize) {
    kill_and_restart_with(brokers, topics, checkpoint_ms, partitions, 10, "")
}

/// [`kill_and_restart`], killed once `kill_at_percent` of the transfers are
/// seen decided, the restarted instance's settings file ending with `after`.
pub fn kill_and_restart_with(
    brokers: &str,
    topics: &Topics,
    checkpoint_ms: u64,
    partitions: i32,
    kill_at_percent: usize,
    after: &str,
) -> (usize, usize, usize) {
    let r = kill_tamper_restart(brokers, topics, checkpoint_ms, partitions, kill_at_percent, after, || {});
    (r.differ, r.of, r.again)
}

/// What [`kill_tamper_restart`] saw.
pub struct Restarted {
    /// Transfers decided otherwise than by an engine that never stopped.
    pub differ: usize,
    /// Transfers.
    pub of: usize,
    /// Decisions marked redelivered.
    pub again: usize,
    /// The restarted instance's /metrics once everything was decided.
    pub metrics: String,
}

/// [`kill_and_restart_with`], with `tamper` run while no instance runs
/// (before the rest of the input arrives).
pub fn kill_tamper_restart(
    brokers: &str,
    topics: &Topics,
    checkpoint_ms: u64,
    partitions: i32,
    kill_at_percent: usize,
    after: &str,
    tamper: impl FnOnce(),
) -> Restarted {
    // About 3 MB of transfers: the embedded broker keeps a few MB per
    // partition and drops older records, and the whole backlog must stay.
    let events = stream_of(1000, 6);
    kill_tamper_restart_of(brokers, topics, &events, checkpoint_ms, partitions, kill_at_percent, after, tamper)
}

/// [`kill_tamper_restart`] of `events`.
#[allow(clippy::too_many_arguments)]
pub fn kill_tamper_restart_of(
    brokers: &str,
    topics: &Topics,
    events: &[Event],
    checkpoint_ms: u64,
    partitions: i32,
    kill_at_percent: usize,
    after: &str,
    tamper: impl FnOnce(),
) -> Restarted {
    const WAIT: Duration = Duration::from_secs(120);
    let brokers = brokers.to_owned();
    let ids = transfer_ids(events);

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
    // `kill_at_percent` of the transfers are seen decided. The rest arrives while no
    // instance runs; the next one restores and carries on.
    let (first, rest) = events.split_at(events.len() * 6 / 10);
    let p = producer(&brokers);
    send_events(&p, topics, first, 600_000);
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    let child = FdsRun::start(&brokers, Some(config.path()));
    let at = ids.len() * kill_at_percent / 100;
    assert!(decisions.read_until(WAIT, |r| r.len() >= at));
    // And once the group has committed nearly as far: killed before its
    // first commit, the next instance would start from the beginning and
    // rebuild everything, whatever the changelog does; killed with its
    // commits far behind (half as far was allowed once; the backlog is
    // decided within one 100 ms commit interval), the next instance learns
    // most of the history again from the input and the test without the
    // changelog found nothing changed.
    assert!(wait_for(WAIT, || committed_total(&brokers, "fds", &topics.transfers) >= at as i64 * 9 / 10));
    drop(child);
    tamper();
    send_events(&p, topics, rest, 600_000);
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    let mut settings = std::fs::read_to_string(config.path()).unwrap();
    settings.push_str(after);
    std::fs::write(config.path(), settings).unwrap();
    let listen = free_port();
    let child = FdsRun::start_listening(&brokers, Some(config.path()), listen);
    assert!(
        decisions.read_until(WAIT, |r| all_decided(r, ids.len())),
        "{} of {} decided after the restart",
        decisions_by_id(&decisions.records).len(),
        ids.len()
    );
    let metrics = http_get(listen, "/metrics").map(|(_, body)| body).unwrap_or_default();
    assert!(child.terminate().success());

    let differ = differ_from_replay(events, partitions as u32, &decisions.records);
    let again = decisions.records.iter().filter(|r| r.header("fds-redelivered") == Some("true")).count();
    Restarted { differ, of: ids.len(), again, metrics }
}

/// How many transfers of `events` were first answered (in `records`, the
/// decisions topic) otherwise than by one engine fed the events in the
/// canonical order over `partitions` partitions (`fds replay`); every
/// answer for a transfer must be the first one, byte for byte.
pub fn differ_from_replay(events: &[Event], partitions: u32, records: &[Record]) -> usize {
    let engine = Engine::with_rules(RuleSet::load_dir(std::path::Path::new("rules")).unwrap());
    let numbered = events.iter().cloned().enumerate().map(|(i, e)| Ok::<_, ()>((i as u64, e)));
    let live = decisions_by_id(records);
    let mut differ = 0;
    for e in in_order(numbered, partitions) {
        let Some(scored) = engine.process(&e.unwrap().1).unwrap() else { continue };
        let expected: serde_json::Value = serde_json::from_str(&scored.decision.to_json()).unwrap();
        let given = &live[&scored.decision.bank_tran_id];
        // Every answer for a transfer is the first one, byte for byte.
        assert!(given.iter().all(|d| d == &given[0]), "{} decided two ways", scored.decision.bank_tran_id);
        if verdict(&given[0]) != verdict(&expected) {
            differ += 1;
            if differ <= 3 {
                eprintln!(
                    "{}: given {} ({} answers), an engine that never stopped: {}",
                    scored.decision.bank_tran_id,
                    verdict(&given[0]),
                    given.len(),
                    verdict(&expected)
                );
            }
        }
    }
    differ
}
