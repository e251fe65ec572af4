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
//! Counted once, whoever comes first: per transfers partition the next
//! offset not yet counted here. A transfer or an observation below it is not
//! counted again. An observation of a partition this instance owns, at or
//! past where it started reading it, is skipped: the instance counts those
//! transfers itself as it scores them (its own observations coming back, or
//! the previous owner's of transfers it handles again after a rebalance).
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

use super::*;
use crate::event::Transfer;
use crate::input::order::partition_for;
use crate::state::{Observation, SharedCount};

/// What a restore says about the shared tables: per group of payees and
/// devices (the `state` partition their key hashes to), how far into each
/// transfers partition its checkpoint had counted, and where to start
/// reading each `observations` partition so nothing after any of those is
/// missed.
#[derive(Debug, Default, Clone)]
pub(super) struct SharedStart {
    /// Transfers partition -> next offset every group holds (a local
    /// snapshot holds every group as of one moment).
    pub(super) counted: HashMap<i32, i64>,
    /// Group -> transfers partition -> next offset the checkpoint holds.
    pub(super) floors: HashMap<i32, HashMap<i32, i64>>,
    /// `observations` partition -> offset to read from.
    pub(super) read_from: HashMap<i32, i64>,
}

/// This instance's side of the shared tables.
pub(super) struct SharedTables {
    producer: ThreadedProducer<SharedAcks>,
    reader: BaseConsumer<Quiet>,
    topic: String,
    /// Per transfers partition, the next offset not yet counted here.
    counted: HashMap<i32, i64>,
    /// Per partition owned, the offset this instance started reading it at.
    owned_from: HashMap<i32, i64>,
    /// After a restore, until everything is counted past them: per group of
    /// payees and devices, the offsets its checkpoint already holds (see
    /// [`SharedStart`]). Empty otherwise.
    floors: HashMap<i32, HashMap<i32, i64>>,
    /// Partitions of `state` (the groups payees and devices fall in).
    groups: u32,
    /// Observations not yet handed to the producer, per partition, in
    /// batches of at most [`BATCH_MAX`].
    batches: HashMap<i32, VecDeque<Batch>>,
    /// Held back while this instance owns every partition (see
    /// [`SharedTables::holds_back`]).
    held: Holding,
    sent: prometheus::IntCounter,
    applied: prometheus::IntCounter,
    skipped: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    lag: prometheus::Histogram,
}

/// A batch being filled or waiting to go, and how many observations it holds.
struct Batch {
    bytes: Vec<u8>,
    count: usize,
    /// Closed at a checkpoint's start: later observations go to a new one.
    sealed: bool,
}

/// Observations per message at most (about 70 KB).
const BATCH_MAX: usize = 1024;

/// Observations held back by a sole owner at most (about 35 MB): past this
/// they go out whatever the checkpoints do.
const HOLD_MAX: usize = 500_000;

/// What a sole owner holds back, and since when it may let go of it.
#[derive(Default)]
struct Holding {
    /// A changelog is written, so a newcomer can restore the shared tables
    /// from it (without one, every observation goes out).
    checkpointed: bool,
    /// Observations held back now.
    count: usize,
    /// At the start of the open checkpoint: how many batches each partition
    /// held (the checkpoint has everything in them).
    cut: Option<HashMap<i32, usize>>,
}

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
        let checkpointed = opts.checkpoint_interval.is_some();
        let client = |role: &'static str| {
            move |source| PipelineError::Client { role, brokers: opts.connection.brokers.clone(), source }
        };
        let linger = opts.linger.as_millis().to_string();
        let producer: ThreadedProducer<SharedAcks> = opts
            .connection
            .client_config(&[
                ("acks", "all"),
                ("message.timeout.ms", "0"),
                ("linger.ms", &linger),
                ("retry.backoff.ms", "100"),
                ("retry.backoff.max.ms", "2000"),
            ])
            .create_with_context(SharedAcks { warned: AtomicBool::new(false) })
            .map_err(client("observations producer"))?;
        let latency = [("fetch.wait.max.ms", "1"), ("fetch.queue.backoff.ms", "1")];
        let reader =
            reader(opts, "observations", "observations reader", &latency).map_err(client("observations reader"))?;
        let topic = opts.topics.observations.clone();
        let assigned = assign_all(&reader, &topic, |low, _| low, stop, READ_BACK_LIMIT);
        match assigned {
            None => {
                tracing::error!(%topic, "cannot read the other instances' observations; payees and devices will only know this instance's transfers")
            }
            Some(partitions) => {
                for (p, low, _) in partitions {
                    if let Some(&from) = start.read_from.get(&p).filter(|&&from| from > low) {
                        if let Err(e) = reader.seek(&topic, p, Offset::Offset(from), Duration::from_secs(10)) {
                            tracing::warn!(%topic, partition = p, error = %e, "cannot start at the checkpoint's position; reading from the beginning");
                        }
                    }
                }
            }
        }
        // Nothing below the lowest floor of a partition is counted again.
        let mut counted: HashMap<i32, i64> = start.counted;
        for floors in start.floors.values() {
            for (&p, &o) in floors {
                let c = counted.entry(p).or_insert(o);
                *c = (*c).min(o);
            }
        }
        let outcome = |o: &str| metrics.shared_observations.with_label_values(&[o]);
        Ok(SharedTables {
            producer,
            reader,
            topic,
            counted,
            owned_from: HashMap::new(),
            floors: start.floors,
            groups: groups.max(1),
            batches: HashMap::new(),
            held: Holding { checkpointed, ..Holding::default() },
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
        let next = self.counted.entry(partition).or_insert(0);
        if offset < *next {
            return None;
        }
        *next = offset + 1;
        if self.floors.is_empty() {
            return Some(SharedCount::COUNT);
        }
        Some(SharedCount {
            payee: self.above_floor(&t.payee_key(), partition, offset),
            device: t.device_id.as_deref().is_some_and(|d| self.above_floor(d, partition, offset)),
        })
    }

    /// Whether the restored checkpoint of `key`'s group lacks the transfer
    /// at `offset` of `partition`.
    fn above_floor(&self, key: &str, partition: i32, offset: i64) -> bool {
        above_floor(&self.floors, self.groups, key, partition, offset)
    }

    /// The partitions this instance owns now.
    pub(super) fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.owned_from.keys().copied()
    }

    /// Per transfers partition, the next offset counted here.
    pub(super) fn counted(&self) -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = self.counted.iter().map(|(&p, &o)| (p, o)).collect();
        v.sort_unstable();
        v
    }

    /// Per `observations` partition, the next offset this reader takes.
    pub(super) fn read_positions(&self) -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = match self.reader.position() {
            Ok(tpl) => tpl
                .elements_for_topic(&self.topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort_unstable();
        v
    }

    /// Queue what a transfer this instance just counted teaches the others.
    pub(super) fn publish(&mut self, partition: i32, observation: &Observation) {
        let batches = self.batches.entry(partition).or_default();
        if batches.back().map_or(true, |b| b.sealed || b.count >= BATCH_MAX) {
            let mut bytes = Vec::new();
            Observation::begin_batch(&mut bytes);
            batches.push_back(Batch { bytes, count: 0, sealed: false });
        }
        let batch = batches.back_mut().expect("pushed above");
        observation.encode(&mut batch.bytes);
        batch.count += 1;
        self.held.count += 1;
        self.sent.inc();
    }

    /// Whether the observations stay here for now: while this instance owns
    /// every partition nobody reads them, and a checkpoint soon makes them
    /// unneeded (an instance that joins restores the shared tables from the
    /// changelog). They go out when the group changes (an instance joined:
    /// this one lost partitions), or past [`HOLD_MAX`]. Publishing them was
    /// measured to cost a lone instance 9 % of its unpaced throughput.
    fn holds_back(&self) -> bool {
        self.held.checkpointed && self.held.count < HOLD_MAX && self.owned_from.len() >= self.groups as usize
    }

    /// Hand the queued batches to the producer (unless held back); a batch
    /// the producer's full queue does not take waits for the next turn.
    pub(super) fn flush(&mut self) {
        if self.holds_back() {
            return;
        }
        for (&partition, batches) in self.batches.iter_mut() {
            while let Some(batch) = batches.front() {
                let record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&self.topic).partition(partition).payload(&batch.bytes);
                match self.producer.send(record) {
                    Ok(()) => {
                        self.held.count -= batch.count;
                        batches.pop_front();
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                    Err((e, _)) => {
                        tracing::error!(error = %e, topic = %self.topic, partition, "cannot produce observations; retrying next turn");
                        break;
                    }
                }
            }
        }
        // What went out is no longer the checkpoint's to drop.
        self.held.cut = None;
    }

    /// A checkpoint of the state begins: what is held back now is in it.
    pub(super) fn checkpoint_begun(&mut self) {
        if !self.holds_back() {
            return;
        }
        let cut = self.batches.iter().map(|(&p, b)| (p, b.len())).collect();
        // New observations go to batches of their own, after the cut.
        for b in self.batches.values_mut() {
            if let Some(last) = b.back_mut() {
                last.sealed = true;
            }
        }
        self.held.cut = Some(cut);
    }

    /// The checkpoint begun last is complete: what it holds need not go out.
    pub(super) fn checkpoint_done(&mut self) {
        let Some(cut) = self.held.cut.take() else { return };
        for (p, n) in cut {
            if let Some(b) = self.batches.get_mut(&p) {
                for gone in b.drain(..n.min(b.len())) {
                    self.held.count -= gone.count;
                }
            }
        }
    }

    /// The checkpoint begun last failed: keep everything.
    pub(super) fn checkpoint_failed(&mut self) {
        self.held.cut = None;
    }

    /// This instance now reads `partition` of the inputs from `from`
    /// (`None`: not known; every observation of it is then skipped while
    /// it is owned).
    pub(super) fn own(&mut self, partition: i32, from: Option<i64>) {
        self.owned_from.insert(partition, from.unwrap_or(i64::MIN));
    }

    /// The partitions went to the group's next assignment.
    pub(super) fn disown_all(&mut self) {
        self.owned_from.clear();
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
            let owned_from = self.owned_from.get(&partition).copied();
            let next = self.counted.entry(partition).or_insert(0);
            let mut applied = 0;
            for o in &observations {
                if owned_from.is_some_and(|from| o.offset >= from) || o.offset < *next {
                    continue;
                }
                *next = o.offset + 1;
                let which = if self.floors.is_empty() {
                    SharedCount::COUNT
                } else {
                    SharedCount {
                        payee: above_floor(&self.floors, self.groups, &o.payee, partition, o.offset),
                        device: o
                            .device
                            .as_deref()
                            .is_some_and(|d| above_floor(&self.floors, self.groups, d, partition, o.offset)),
                    }
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

    /// Drop the restore's floors once every partition is counted past them.
    pub(super) fn retire_floors(&mut self) {
        let passed = self.floors.values().all(|f| f.iter().all(|(p, &o)| self.counted.get(p).is_some_and(|&c| c >= o)));
        if passed {
            self.floors.clear();
        }
    }

    /// Wait (up to `timeout`) for the queued observations to be acknowledged.
    pub(super) fn finish(&mut self, timeout: Duration) {
        self.flush();
        let _ = self.producer.flush(timeout);
    }
}

/// [`SharedTables::above_floor`] for a borrow of the floors alone.
fn above_floor(floors: &HashMap<i32, HashMap<i32, i64>>, groups: u32, key: &str, partition: i32, offset: i64) -> bool {
    let group = partition_for(key.as_bytes(), groups);
    floors.get(&group).and_then(|f| f.get(&partition)).map_or(true, |&floor| offset >= floor)
}

/// The observations producer's context: a refused batch is said once.
pub(super) struct SharedAcks {
    warned: AtomicBool,
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
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        // Retried for ever what can be; what comes back failed was refused
        // by the broker, and the other instances miss those transfers.
        if let Err((e, _)) = result {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "observations were refused; the other instances' payees and devices miss them");
            }
        }
    }
}
