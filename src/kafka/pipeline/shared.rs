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
use crate::state::{Observation, SharedCount};

/// This instance's side of the shared tables.
pub(super) struct SharedTables {
    producer: ThreadedProducer<SharedAcks>,
    reader: BaseConsumer<Quiet>,
    topic: String,
    /// Per transfers partition, the next offset not yet counted here.
    counted: HashMap<i32, i64>,
    /// Per partition owned, the offset this instance started reading it at.
    owned_from: HashMap<i32, i64>,
    /// Observations waiting to go, per partition.
    batches: HashMap<i32, Vec<u8>>,
    sent: prometheus::IntCounter,
    applied: prometheus::IntCounter,
    skipped: prometheus::IntCounter,
    refused: prometheus::IntCounter,
    lag: prometheus::Histogram,
}

/// Observation messages read per turn of the scoring loop, at most.
const READ_PER_TURN: usize = 64;

impl SharedTables {
    /// Connect, and start reading every partition of `observations` from
    /// its beginning. `restored`: where the restored state stands per input
    /// partition (it holds every transfer before that, counted).
    pub(super) fn new(
        opts: &PipelineOptions,
        metrics: &Metrics,
        stop: &StopFlag,
        restored: &Positions,
    ) -> Result<Self, PipelineError> {
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
        if assign_all(&reader, &topic, |low, _| low, stop, READ_BACK_LIMIT).is_none() {
            tracing::error!(%topic, "cannot read the other instances' observations; payees and devices will only know this instance's transfers");
        }
        let counted =
            restored.iter().filter(|((feed, _), _)| *feed == Feed::Transfers).map(|(&(_, p), &o)| (p, o)).collect();
        let outcome = |o: &str| metrics.shared_observations.with_label_values(&[o]);
        Ok(SharedTables {
            producer,
            reader,
            topic,
            counted,
            owned_from: HashMap::new(),
            batches: HashMap::new(),
            sent: outcome("sent"),
            applied: outcome("applied"),
            skipped: outcome("skipped"),
            refused: outcome("refused"),
            lag: metrics.shared_lag.clone(),
        })
    }

    /// Whether the transfer at `offset` of `partition` still has to be
    /// counted in the shared tables; from now on it is.
    pub(super) fn count(&mut self, partition: i32, offset: i64) -> SharedCount {
        let next = self.counted.entry(partition).or_insert(0);
        if offset < *next {
            return SharedCount::AlreadyCounted;
        }
        *next = offset + 1;
        SharedCount::Count
    }

    /// Queue what a transfer this instance just counted teaches the others.
    pub(super) fn publish(&mut self, partition: i32, observation: &Observation) {
        let batch = self.batches.entry(partition).or_default();
        if batch.is_empty() {
            Observation::begin_batch(batch);
        }
        observation.encode(batch);
        self.sent.inc();
    }

    /// Hand the queued batches to the producer; a batch the producer's full
    /// queue does not take waits for the next turn.
    pub(super) fn flush(&mut self) {
        for (&partition, batch) in self.batches.iter_mut().filter(|(_, b)| !b.is_empty()) {
            let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).partition(partition).payload(batch);
            match self.producer.send(record) {
                Ok(()) => batch.clear(),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                Err((e, _)) => {
                    tracing::error!(error = %e, topic = %self.topic, partition, "cannot produce observations; retrying next turn");
                }
            }
        }
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
                engine.state().observe_shared(o);
                *next = o.offset + 1;
                applied += 1;
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

    /// Wait (up to `timeout`) for the queued observations to be acknowledged.
    pub(super) fn finish(&mut self, timeout: Duration) {
        self.flush();
        let _ = self.producer.flush(timeout);
    }
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
