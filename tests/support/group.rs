//! Several `fds run` processes of one consumer group, played like the
//! transfer API, and their decisions compared with one engine's: the
//! scale-out tests on the embedded broker and on tansu.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fds::engine::Engine;
use fds::event::{Event, LabelStatus};
use fds::input::order::in_order;
use fds::kafka::Topics;
use fds::rules::RuleSet;

use super::*;

/// `fds run` processes of one group, each with its own /readyz.
pub struct Group {
    pub instances: Vec<Instance>,
    _configs: Vec<tempfile::NamedTempFile>,
}

pub struct Instance {
    /// Killed when dropped.
    _run: FdsRun,
    listen: std::net::SocketAddr,
}

impl Instance {
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.listen, path)
    }

    pub fn metric(&self, series: &str) -> f64 {
        // `series` is a whole series name with its labels.
        let (_, text) = self.get("/metrics").unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
    }
}

impl Group {
    /// p50 and p99 of `fds_shared_lag_seconds` over all instances, in ms,
    /// read off the histogram's buckets (each quantile is its bucket's bound).
    pub fn lag_quantiles(&self) -> (f64, f64) {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for i in &self.instances {
            let (_, text) = i.get("/metrics").unwrap_or_default();
            for l in text.lines().filter(|l| l.starts_with("fds_shared_lag_seconds_bucket{le=\"")) {
                let rest = &l["fds_shared_lag_seconds_bucket{le=\"".len()..];
                let (le, count) = rest.split_once("\"} ").unwrap();
                let le: f64 = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
                let count: f64 = count.trim().parse().unwrap();
                match buckets.iter_mut().find(|b| b.0 == le) {
                    Some(b) => b.1 += count,
                    None => buckets.push((le, count)),
                }
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last().map_or(0.0, |b| b.1);
        let q = |q: f64| buckets.iter().find(|b| b.1 >= q * total).map_or(f64::NAN, |b| b.0 * 1e3);
        (q(0.5), q(0.99))
    }

    /// `n` instances, started together; returns once every one holds
    /// partitions and is ready.
    pub fn start(brokers: &str, n: usize) -> Group {
        Group::start_with(brokers, n, 0, |_| String::new())
    }

    /// Checkpointing every `checkpoint_ms` (0: no changelog), with
    /// `extra(i)` appended to instance `i`'s settings file.
    pub fn start_with(brokers: &str, n: usize, checkpoint_ms: u64, extra: impl Fn(usize) -> String) -> Group {
        let mut group = Group { instances: Vec::new(), _configs: Vec::new() };
        for i in 0..n {
            group.spawn(brokers, checkpoint_ms, &extra(i));
        }
        group.wait_ready();
        group
    }

    /// One more instance, once it is ready.
    pub fn add(&mut self, brokers: &str, checkpoint_ms: u64, extra: &str) {
        self.spawn(brokers, checkpoint_ms, extra);
        self.wait_ready();
    }

    pub fn spawn(&mut self, brokers: &str, checkpoint_ms: u64, extra: &str) {
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            config.path(),
            format!(
                "[engine]\nuse_model = false\n[kafka]\ncommit_interval_ms = 100\ncheckpoint_interval_ms = {checkpoint_ms}\n{extra}"
            ),
        )
        .unwrap();
        let listen = free_port();
        let run = FdsRun::start_listening(brokers, Some(config.path()), listen);
        self._configs.push(config);
        self.instances.push(Instance { _run: run, listen });
    }

    /// Until every instance holds partitions and is ready.
    pub fn wait_ready(&self) {
        assert!(
            wait_for(Duration::from_secs(90), || self
                .instances
                .iter()
                .all(|i| i.get("/readyz").is_some_and(|r| r.0 == 200))),
            "every instance ready, with partitions"
        );
    }

    /// Play `file` with `fds load --speed` and read every decision; returns
    /// them with the load report.
    pub fn play_with_fds_load(
        &self,
        brokers: &str,
        topics: &Topics,
        file: &Path,
        transfers: usize,
        speed: u32,
    ) -> (Vec<Record>, serde_json::Value) {
        let reader = read_decisions(brokers, topics, transfers);
        let out = fds_load(brokers, file, speed).wait_with_output().unwrap();
        assert!(out.status.success(), "fds load: {}", String::from_utf8_lossy(&out.stderr));
        (reader.join().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Send `events` as the transfer API would, `rate` transfers a second,
    /// and read every decision.
    pub fn play(&self, brokers: &str, topics: &Topics, events: &[Event], rate: u32) -> Vec<Record> {
        let reader = read_decisions(brokers, topics, transfer_ids(events).len());
        let p = producer(brokers);
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        for e in events {
            if matches!(e, Event::Transfer(_)) {
                sent += 1;
                let due = Duration::from_secs_f64(sent as f64 / f64::from(rate));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            send_events(&p, topics, std::slice::from_ref(e), 60_000);
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
        reader.join().unwrap()
    }
}

/// Read `decisions` on a thread of its own until `n` transfers have an
/// answer, while they are being sent: the embedded broker keeps only a few
/// MB per partition.
pub fn read_decisions(brokers: &str, topics: &Topics, n: usize) -> std::thread::JoinHandle<Vec<Record>> {
    read_decisions_counting(brokers, topics, n, Arc::new(AtomicUsize::new(0)))
}

/// [`read_decisions`], saying in `read` how many records it has.
pub fn read_decisions_counting(
    brokers: &str,
    topics: &Topics,
    n: usize,
    read: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<Record>> {
    let (brokers, topic) = (brokers.to_owned(), topics.decisions.clone());
    std::thread::spawn(move || {
        let mut r = Reader::new(&brokers, &topic);
        r.read_until(Duration::from_secs(300), |rs| {
            read.store(rs.len(), Ordering::Relaxed);
            all_decided(rs, n)
        });
        r.drain(Duration::from_secs(2));
        r.records
    })
}

/// `fds load --speed` of `file`, running.
pub fn fds_load(brokers: &str, file: &Path, speed: u32) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_fds"))
        .args(["load", "--brokers", brokers, "--speed", &speed.to_string(), "--json"])
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[derive(Debug)]
pub struct Comparison {
    pub transfers: usize,
    pub unanswered: usize,
    pub answered_twice_differently: usize,
    pub differ: usize,
    /// Of those, the ones where the group gave a reason code one engine did
    /// not: what an instance that lost an account's history does (every
    /// device and payee new to it), where a payee or device table that lags
    /// the others' transfers rather misses a reason.
    pub fired_only_live: usize,
    /// Per typology: held by one engine, held by the group, frauds.
    pub held_by_typology: HashMap<String, (u64, u64, u64)>,
}

/// The group's first answers against one engine fed the events in the order
/// one instance on `partitions` partitions reads them.
pub fn compare_with_one_engine(events: &[Event], live: &[Record], partitions: u32) -> Comparison {
    let engine = Engine::with_rules(RuleSet::load_dir(Path::new("rules")).unwrap());
    let by_id = decisions_by_id(live);
    let frauds: HashMap<String, String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Label(l) => Some((l.bank_tran_id.clone(), l)),
            _ => None,
        })
        .fold(HashMap::new(), |mut m, (id, l)| {
            // The final word on a transfer.
            if l.status == LabelStatus::Fraud {
                m.insert(id, l.typology.clone());
            } else {
                m.remove(&id);
            }
            m
        });
    let mut c = Comparison {
        transfers: 0,
        unanswered: 0,
        answered_twice_differently: 0,
        differ: 0,
        fired_only_live: 0,
        held_by_typology: HashMap::new(),
    };
    let numbered = events.iter().cloned().enumerate().map(|(i, e)| Ok::<_, ()>((i as u64, e)));
    for e in in_order(numbered, partitions) {
        let Some(scored) = engine.process(&e.unwrap().1).unwrap() else { continue };
        let d = &scored.decision;
        c.transfers += 1;
        let Some(given) = by_id.get(&d.bank_tran_id) else {
            c.unanswered += 1;
            continue;
        };
        if given.iter().any(|g| verdict(g) != verdict(&given[0])) {
            c.answered_twice_differently += 1;
        }
        let expected: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        if verdict(&given[0]) != verdict(&expected) {
            c.differ += 1;
            let codes = |j: &serde_json::Value| -> Vec<String> {
                j["reasons"].as_array().into_iter().flatten().map(|r| r["code"].to_string()).collect()
            };
            let expected_codes = codes(&expected);
            if codes(&given[0]).iter().any(|code| !expected_codes.contains(code)) {
                c.fired_only_live += 1;
            }
            // The first few, to see which kind of transfer a change moved.
            if c.differ <= 10 {
                eprintln!(
                    "differs: {} one engine {} {}, live {} {}",
                    d.bank_tran_id,
                    expected["decision"],
                    expected["reasons"],
                    given[0]["decision"],
                    given[0]["reasons"]
                );
            }
        }
        if let Some(typology) = frauds.get(&d.bank_tran_id) {
            let row = c.held_by_typology.entry(typology.clone()).or_default();
            row.0 += u64::from(d.is_hold());
            row.1 += u64::from(given[0]["decision"] == "hold");
            row.2 += 1;
        }
    }
    c
}
