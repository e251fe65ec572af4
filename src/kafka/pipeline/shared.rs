//! The shared payee and device tables on Kafka: this instance's transfers go
//! out as observations, every other instance's come in.
//!
//! ## Design
//!
//! Input is keyed by the sender, so an account's state is partition-local;
//! a payee's and a device's are not (a mule receives from senders on every
//! partition). Each instance keeps the whole payee and device tables, the
//! Kafka Streams GlobalKTable pattern: after scoring a transfer it counts it
//! in its own tables at once and appends an [`Observation`] (payee, device,
//! hashed sender, time, amount, the transfer's offset) to a batch for the
//! `observations` partition of the same number as the transfer's; the batch
//! goes out once per turn of the scoring loop. Every instance reads every
//! partition of `observations` (assigned, never committed, like `labels`)
//! and counts the others' transfers with the same code.
//!
//! Counted once, whoever comes first: per transfers partition the offsets
//! counted here (see `ledger`). An observation of a partition this instance
//! owns, at or past where it started reading it, is skipped: the instance
//! counts those transfers itself as it scores them (its own observations
//! coming back, or the previous owner's of transfers it handles again after
//! a rebalance).
//!
//! Nothing lost when an owner dies: a checkpoint's marker is written only
//! once the observations of the transfers it covers are acknowledged
//! ([`SharedTables::delivered`]), so the instance that takes a partition
//! over from that checkpoint scores exactly what the others have not heard
//! of.
//!
//! Why this over a repartition by payee (a second hop through a topic keyed
//! by payee, Kafka Streams' other way to join): a decision needs the
//! account's, the payee's and the device's state at one moment, so a hop
//! would sit inside every transfer's latency budget, twice (payee, then
//! device), and a slow instance would hold up everyone's decisions. Here
//! nothing waits: the price is freshness (a transfer scored on one instance
//! reaches the others' tables a propagation lag later) and memory (each
//! instance holds every payee and device). `fds replay --instances N
//! --lag-ms L` measures what a lag costs in decisions; README "Scaling out"
//! has the figures.

use std::collections::BTreeSet;

use super::ledger::{CountedBy, Ledger, Ranges};
use super::*;
use crate::event::Transfer;

/// What a restore says about the shared tables: per group of payees and
/// devices (the `state` partition their key hashes to), which transfers its
/// checkpoint had counted, and where to start reading each `observations`
/// partition so nothing after any of those is missed.
#[derive(Debug, Default, Clone)]
pub(super) struct SharedStart {
    /// Per transfers partition, what every group holds (a local snapshot
    /// holds every group as of one moment).
    pub(super) counted: CountedBy,
    /// Group -> per transfers partition, what its checkpoint holds.
    pub(super) floors: HashMap<i32, CountedBy>,
    /// `observations` partition -> offset to read from (from the beginning
    /// where none is given).
    pub(super) read_from: HashMap<i32, i64>,
}

/// This instance's side of the shared tables.
pub(super) struct SharedTables {
    producer: ThreadedProducer<SharedAcks>,
    reader: BaseConsumer<Quiet>,
    topic: String,
    /// What is counted here (see `ledger`).
    ledger: Ledger,
    /// Per `observations` partition, the offset reading started at: its
    /// position until a message is read (librdkafka reports none before).
    started_at: HashMap<i32, i64>,
    /// Observations not yet handed to the producer, per partition, in
    /// batches of at most [`BATCH_MAX`].
    batches: HashMap<i32, VecDeque<Batch>>,
    /// The number the next batch gets: batches are numbered in the order
    /// they are begun.
    next_batch: u64,
    /// Batches handed to the producer and not yet acknowledged.
    in_flight: Arc<Mutex<BTreeSet<u64>>>,
    sent: prometheus::IntCounter,
    applied: prometheus::IntCounter,
    skipped: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    lag: prometheus::Histogram,
}

/// A batch being filled or waiting to go.
struct Batch {
    number: u64,
    bytes: Vec<u8>,
    count: usize,
}

/// Observations per message at most (about 70 KB).
const BATCH_MAX: usize = 1024;

/// The observations producer's `linger.ms`. Measured on the embedded broker,
/// unpaced demo: 1 ms (the decisions' setting) cost a lone instance 7 % of
/// its throughput against not publishing at all.
const LINGER_MS: &str = "10";

/// Observation messages read per turn of the scoring loop, at most.
const READ_PER_TURN: usize = 64;

impl SharedTables {
    /// Connect, and start reading every partition of `observations` where
    /// `start` says (from its beginning when it does not).
    pub(super) fn new(
        opts: &PipelineOptions,
        metrics: &Metrics,
        stop: &StopFlag,
        start: SharedStart,
        groups: u32,
    ) -> Result<Self, PipelineError> {
        let client = |role: &'static str| {
            move |source| PipelineError::Client { role, brokers: opts.connection.brokers.clone(), source }
        };
        let in_flight = Arc::new(Mutex::new(BTreeSet::new()));
        let producer: ThreadedProducer<SharedAcks> = opts
            .connection
            .client_config(&[
                ("acks", "all"),
                ("message.timeout.ms", "0"),
                // Fewer, larger requests: a few ms more lag is nothing
                // against the seconds that change a decision (README
                // "Scaling out"), and each request costs every broker and
                // every reader.
                ("linger.ms", LINGER_MS),
                ("retry.backoff.ms", "100"),
                ("retry.backoff.max.ms", "2000"),
            ])
            .create_with_context(SharedAcks { warned: AtomicBool::new(false), in_flight: in_flight.clone() })
            .map_err(client("observations producer"))?;
        let latency = [("fetch.wait.max.ms", "1"), ("fetch.queue.backoff.ms", "1")];
        let reader =
            reader(opts, "observations", "observations reader", &latency).map_err(client("observations reader"))?;
        let topic = opts.topics.observations.clone();
        let assigned = assign_all(&reader, &topic, |_, low, _| low, stop, READ_BACK_LIMIT);
        let mut started_at = HashMap::new();
        match assigned {
            None => {
                tracing::error!(%topic, "cannot read the other instances' observations; payees and devices will only know this instance's transfers")
            }
            Some(partitions) => {
                for (p, low, _) in partitions {
                    started_at.insert(p, low);
                    if let Some(&from) = start.read_from.get(&p).filter(|&&from| from > low) {
                        match reader.seek(&topic, p, Offset::Offset(from), Duration::from_secs(10)) {
                            Ok(()) => drop(started_at.insert(p, from)),
                            Err(e) => {
                                tracing::warn!(%topic, partition = p, error = %e, "cannot start at the checkpoint's position; reading from the beginning")
                            }
                        }
                    }
                }
            }
        }
        let outcome = |o: &str| metrics.shared_observations.with_label_values(&[o]);
        Ok(SharedTables {
            producer,
            reader,
            topic,
            ledger: Ledger::new(start.counted, start.floors, groups),
            started_at,
            batches: HashMap::new(),
            next_batch: 0,
            in_flight,
            sent: outcome("sent"),
            applied: outcome("applied"),
            skipped: outcome("skipped"),
            refused: outcome("refused"),
            lag: metrics.shared_lag.clone(),
        })
    }

    /// Whether the transfer `t` at `offset` of `partition` is new to the
    /// shared tables here (`None`: counted already) and, if so, where it
    /// still has to be counted; from now on it is.
    pub(super) fn count(&mut self, partition: i32, offset: i64, t: &Transfer) -> Option<SharedCount> {
        self.ledger.scored(partition, offset, &t.payee_key(), t.device_id.as_deref())
    }

    /// The partitions this instance owns now.
    pub(super) fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.ledger.owned()
    }

    /// Per transfers partition, the transfers the payees and devices of
    /// `group` hold here.
    pub(super) fn counted_in(&self, group: i32) -> Vec<(i32, Vec<(i64, i64)>)> {
        self.ledger.counted_in(group)
    }

    /// The ledger as a local copy keeps it: what is counted, and the floors
    /// not yet retired (see `ledger`).
    pub(super) fn ledger_parts(&self) -> (Ranges, Vec<(i32, Ranges)>) {
        self.ledger.parts()
    }

    /// Per `observations` partition, the next offset this reader takes
    /// (where it started, for a partition nothing was read from yet; every
    /// partition assigned is in).
    pub(super) fn read_positions(&self) -> Vec<(i32, i64)> {
        let mut read: HashMap<i32, i64> = HashMap::new();
        if let Ok(tpl) = self.reader.position() {
            for e in tpl.elements_for_topic(&self.topic) {
                if let Offset::Offset(o) = e.offset() {
                    read.insert(e.partition(), o);
                }
            }
        }
        let mut v: Vec<(i32, i64)> =
            self.started_at.iter().map(|(&p, &from)| (p, read.get(&p).copied().unwrap_or(from).max(from))).collect();
        v.sort_unstable();
        v
    }

    /// Queue what a transfer this instance just counted teaches the others.
    pub(super) fn publish(&mut self, partition: i32, observation: &Observation) {
        let batches = self.batches.entry(partition).or_default();
        if batches.back().map_or(true, |b| b.count >= BATCH_MAX) {
            let mut bytes = Vec::new();
            Observation::begin_batch(&mut bytes);
            batches.push_back(Batch { number: self.next_batch, bytes, count: 0 });
            self.next_batch += 1;
        }
        let batch = batches.back_mut().expect("pushed above");
        observation.encode(&mut batch.bytes);
        batch.count += 1;
        self.sent.inc();
    }

    /// Hand the queued batches to the producer; a batch the producer's full
    /// queue does not take waits for the next turn.
    pub(super) fn flush(&mut self) {
        for (&partition, batches) in self.batches.iter_mut() {
            while let Some(batch) = batches.front() {
                let number = batch.number;
                let record: BaseRecord<'_, [u8], [u8], usize> =
                    BaseRecord::with_opaque_to(&self.topic, number as usize).partition(partition).payload(&batch.bytes);
                lock(&self.in_flight).insert(number);
                match self.producer.send(record) {
                    Ok(()) => {
                        batches.pop_front();
                    }
                    Err((e, _)) => {
                        lock(&self.in_flight).remove(&number);
                        if !matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) {
                            tracing::error!(error = %e, topic = %self.topic, partition, "cannot produce observations; retrying next turn");
                        }
                        break;
                    }
                }
            }
        }
    }

    /// The last batch begun so far: a checkpoint beginning now covers the
    /// transfers in it and before it.
    pub(super) fn cut(&self) -> Option<u64> {
        self.next_batch.checked_sub(1)
    }

    /// Whether every batch up to `cut` is acknowledged (or refused for
    /// good). A checkpoint's marker waits for it: an instance that takes a
    /// partition over scores it from the checkpoint's positions, so the
    /// observations of the transfers before them must be out, or the other
    /// instances would never learn those.
    pub(super) fn delivered(&self, cut: Option<u64>) -> bool {
        let Some(cut) = cut else { return true };
        let queued = self.batches.values().filter_map(|b| b.front()).any(|b| b.number <= cut);
        !queued && lock(&self.in_flight).first().map_or(true, |&first| first > cut)
    }

    /// This instance now counts `partition` itself from offset `from` on,
    /// the first its state learns (`None`: not known yet).
    pub(super) fn own(&mut self, partition: i32, from: Option<i64>) {
        self.ledger.own(partition, from);
    }

    /// The partitions went to the group's next assignment.
    pub(super) fn disown_all(&mut self) {
        self.ledger.disown_all();
    }

    /// Count the other instances' transfers that have arrived, a bounded
    /// number of messages per call.
    pub(super) fn read(&mut self, engine: &Engine) {
        for _ in 0..READ_PER_TURN {
            let msg = match self.reader.poll(Duration::ZERO) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "observations reader poll");
                    return;
                }
                None => return,
            };
            let partition = msg.partition();
            let observations = match Observation::decode_batch(msg.payload().unwrap_or_default()) {
                Ok(o) => o,
                Err(e) => {
                    self.refused.inc();
                    tracing::warn!(topic = %self.topic, partition, offset = msg.offset(), error = %e, "observations refused");
                    continue;
                }
            };
            let mut applied = 0;
            for o in &observations {
                let Some(which) = self.ledger.observed(partition, o.offset, &o.payee, o.device.as_deref()) else {
                    continue;
                };
                engine.state().observe_shared(o, which);
                applied += u64::from(which.any());
            }
            self.applied.inc_by(applied);
            self.skipped.inc_by(observations.len() as u64 - applied);
            if applied > 0 {
                if let Some(created) = msg.timestamp().to_millis() {
                    let now = chrono::Utc::now().timestamp_millis();
                    self.lag.observe((now - created).max(0) as f64 * 1e-3);
                }
            }
        }
    }

    /// Drop the restore's floors once everything they hold is counted.
    pub(super) fn retire_floors(&mut self) {
        self.ledger.retire_floors();
    }

    /// Wait (up to `timeout`) for the queued observations to be acknowledged.
    pub(super) fn finish(&mut self, timeout: Duration) {
        self.flush();
        let _ = self.producer.flush(timeout);
    }
}

/// The observations producer's context: a refused batch is said once.
pub(super) struct SharedAcks {
    warned: AtomicBool,
    in_flight: Arc<Mutex<BTreeSet<u64>>>,
}

impl ClientContext for SharedAcks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("observations producer", level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error("observations producer", None, error, reason)
    }
}

impl ProducerContext for SharedAcks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        lock(&self.in_flight).remove(&(batch as u64));
        // Retried for ever what can be; what comes back failed was refused
        // by the broker, and the other instances miss those transfers.
        if let Err((e, _)) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "observations were refused; the other instances' payees and devices miss them");
            }
        }
    }
}
