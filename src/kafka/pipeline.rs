//! The consume → score → produce loop behind `fds run`.
//!
//! ## Threads
//!
//! - **The scoring thread** (the caller's) polls one consumer-group member
//!   subscribed to `transfers` and `context-events`, takes what has arrived in
//!   bursts (up to 64 messages), parses a burst, has the state its events will
//!   read fetched into the CPU cache together ([`Engine::prefetch`]), then runs
//!   each message through the [`Engine`] in order and hands the decision (or
//!   dead-letter record) to the producer. It never waits on the network: librdkafka fetches ahead on its
//!   own threads and the producer batches and sends on its own, so consuming,
//!   scoring and producing overlap. One thread keeps one account's events in
//!   order without any locking; the engine itself is lock-free for readers.
//! - **The producer's thread** (librdkafka's, driven by `ThreadedProducer`)
//!   receives the broker's acknowledgements and passes them back to the
//!   scoring thread over a channel.
//! - **The labels thread** reads the whole `labels` topic, from the beginning,
//!   with a reading position of this process's own, so every instance learns
//!   every fraud report (labels are small and few).
//! - **The health thread** asks the brokers for metadata every second and
//!   flips [`Health::set_broker_up`]; `/readyz` and `fds_broker_up` follow it.
//!
//! ## Delivery semantics
//!
//! - **At least once; no decision lost.** Automatic offset *storing* is off: an
//!   offset is stored (and then committed by the periodic auto-commit, and once
//!   more synchronously at shutdown) only when every message before it on its
//!   partition has been *finished*: its decision or dead-letter record
//!   acknowledged by the broker (`acks=all`), or, for a context event, applied.
//!   [`OffsetTracker`] keeps that watermark per partition.
//! - **Idempotent by transfer id.** Every decision given is remembered by its
//!   `bank_tran_id` (bounded, oldest forgotten first); whenever partitions are
//!   assigned (at start, after a rebalance) the tail of the `decisions` topic is
//!   read back into that memory before any of their messages is handled. A transfer delivered again (after a crash between the decision
//!   and the commit, a rebalance, or an API retry) is answered with the same
//!   decision bytes, marked `fds-redelivered: true`, and is not fed to the state
//!   a second time. Neither supported broker has transactions, so this is the
//!   design: at-least-once delivery with an idempotent producer and idempotent
//!   decisions, not exactly-once.
//! - **Bad input never stops a partition.** A message that is not an event, is
//!   invalid, is on the wrong topic or is dated ahead of the clock goes to
//!   `dead-letter` with the original key and bytes and headers naming the
//!   reason and the source topic/partition/offset; its offset then moves on like
//!   any other.
//! - **Broker trouble.** The producer retries forever (`message.timeout.ms=0`)
//!   with back-off, so a decision waits for the broker instead of being
//!   dropped; when its queue is full the scoring thread stops taking new
//!   messages (back-pressure) until it drains. The process stays up, `/readyz`
//!   reports the broker unreachable, and it catches up when the broker returns.
//! - **Rebalances.** Partitions are assigned with `range`, so an instance gets
//!   the same partition numbers of `transfers` and `context-events`: one
//!   account, one instance. Before partitions are given up, their in-flight
//!   decisions are awaited and their offsets committed, so the next owner
//!   starts right after them. An instance left with no partition watches the
//!   group's committed offsets: input that nobody has moved on for a whole
//!   session timeout has no owner, and the instance leaves and joins the group
//!   again so that it gets one. tansu 0.6 can end a rebalance that way, for
//!   good, when an instance restarts before its crashed predecessor's session
//!   has expired (`OrphanWatch` below says how).
//! - **Shutdown** ([`StopFlag`], set on SIGTERM): stop polling, wait for the
//!   acknowledgements of everything in flight, store and commit the offsets,
//!   leave the group.
//! - **Fraud reports first.** The labels already in the topic are read before
//!   the first transfer is consumed.
//! - **Late transfers.** A transfer consumed after its `deadline-ms` header is
//!   still scored (the state must see it) and its decision says `"late": true`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use super::{
    Connection, DeadLetterKind, Topics, HEADER_CORRELATION_ID, HEADER_DEADLINE_MS, HEADER_DECISION, HEADER_ERROR,
    HEADER_ERROR_KIND, HEADER_LATE, HEADER_REDELIVERED, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, HEADER_TRUNCATED_FROM,
};
use crate::api::Health;
use crate::engine::{Engine, EngineError, Outcome};
use crate::event::{mask_account, Event, EventError};
use crate::metrics::Metrics;
use crate::rules::RuleSet;

/// Why the pipeline could not start or had to stop.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot create the Kafka {role} for {brokers}")]
    Client { role: &'static str, brokers: String, source: KafkaError },
    #[error("cannot subscribe to {topics}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("cannot read back the recent decisions from topic {topic}")]
    LoadDecisions { topic: String, source: KafkaError },
    #[error("the decisions producer failed for good ({code:?}: {reason}); stopped after committing what was decided")]
    ProducerFatal { code: RDKafkaErrorCode, reason: String },
    #[error("the {0} thread stopped unexpectedly (see the log above); the pipeline stopped after committing what was decided")]
    ThreadDied(&'static str),
    #[error("topics {a} ({a_n} partitions) and {b} ({b_n} partitions) must have the same partition count, so one account's transfers and context events reach the same instance")]
    NotCopartitioned { a: String, a_n: usize, b: String, b_n: usize },
}

/// Set from a signal handler (or a test) to stop the pipeline gracefully.
pub type StopFlag = Arc<AtomicBool>;

/// How the pipeline runs. [`PipelineOptions::new`] gives the defaults `fds run` uses.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Brokers and client settings.
    pub connection: Connection,
    /// Topic names.
    pub topics: Topics,
    /// The consumer group shared by all instances.
    pub group_id: String,
    /// Decisions remembered by transfer id, to answer re-deliveries the same way.
    pub dedup_capacity: usize,
    /// How often stored offsets are committed.
    pub commit_interval: Duration,
    /// Producer batching delay: the latency/throughput trade-off of the
    /// decisions topic.
    pub linger: Duration,
    /// How long shutdown waits for in-flight decisions to be acknowledged.
    pub shutdown_timeout: Duration,
}

impl PipelineOptions {
    /// The defaults `fds run` uses, for these brokers.
    pub fn new(connection: Connection) -> Self {
        PipelineOptions {
            connection,
            topics: Topics::default(),
            group_id: "fds".into(),
            dedup_capacity: 500_000,
            commit_interval: Duration::from_secs(1),
            linger: Duration::from_millis(1),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// What a run did, for the log line at exit and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages taken from the input topics.
    pub consumed: u64,
    /// Decisions produced (first answers).
    pub decisions: u64,
    /// Decisions sent again for a re-delivered transfer.
    pub redelivered: u64,
    /// Decisions marked late.
    pub late: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Context events applied.
    pub context_events: u64,
    /// Messages consumed whose outcome was still unacknowledged at exit; they
    /// will be delivered again on the next start.
    pub unfinished: u64,
}

// ---------------------------------------------------------------- offsets ---

/// Which offsets of each partition are finished, so the stored offset never
/// passes a message whose decision is not yet safe at the broker.
///
/// Acknowledgements come back out of order (decisions go to other partitions
/// than their transfers came from), so each partition keeps its unfinished
/// offsets in consumption order and the committable position is the first
/// unfinished one.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: HashMap<(u8, i32), PartitionTrack>,
}

#[derive(Debug, Default)]
struct PartitionTrack {
    /// Consumed offsets in order, with whether each is finished.
    inflight: VecDeque<(i64, bool)>,
    /// The next offset to commit once it moves; `None` until one is known.
    committable: Option<i64>,
    /// Whether `committable` moved since the last `take_committable`.
    dirty: bool,
}

impl OffsetTracker {
    /// A message was consumed and its outcome is pending.
    pub fn begin(&mut self, topic: u8, partition: i32, offset: i64) {
        let p = self.parts.entry((topic, partition)).or_default();
        debug_assert!(p.inflight.back().map_or(true, |&(o, _)| o < offset), "offsets go forward");
        p.inflight.push_back((offset, false));
    }

    /// A message's outcome is safe. Unknown offsets (a partition revoked in
    /// the meantime) are ignored.
    pub fn finish(&mut self, topic: u8, partition: i32, offset: i64) {
        let Some(p) = self.parts.get_mut(&(topic, partition)) else { return };
        if let Ok(i) = p.inflight.binary_search_by_key(&offset, |&(o, _)| o) {
            p.inflight[i].1 = true;
        }
        while let Some(&(o, true)) = p.inflight.front() {
            p.inflight.pop_front();
            p.committable = Some(o + 1);
            p.dirty = true;
        }
    }

    /// Messages consumed and not yet finished, over all partitions.
    pub fn pending(&self) -> usize {
        self.parts.values().map(|p| p.inflight.iter().filter(|(_, done)| !done).count()).sum()
    }

    /// The positions that moved since the last call: (topic, partition, next offset).
    pub fn take_committable(&mut self) -> Vec<(u8, i32, i64)> {
        let mut out = Vec::new();
        for (&(t, part), p) in &mut self.parts {
            if p.dirty {
                p.dirty = false;
                if let Some(o) = p.committable {
                    out.push((t, part, o));
                }
            }
        }
        out
    }

    /// Forget a partition (revoked): its unfinished messages will be delivered
    /// to whichever instance gets it next.
    pub fn forget(&mut self, topic: u8, partition: i32) {
        self.parts.remove(&(topic, partition));
    }
}

// ------------------------------------------------------- decision memory ---

/// Decisions already given, by transfer id, bounded: the oldest is forgotten
/// first. Re-deliveries come from the last few seconds before a crash or a
/// rebalance, so a bounded memory of the most recent decisions covers them.
///
/// It sits on the scoring thread's path for every transfer, so each decision
/// is one allocation (id and bytes together) in a table keyed by a hash of
/// the id, not a map of owned strings.
#[allow(missing_debug_implementations)] // thousands of decisions: its length is what a log line could use
pub struct DecisionMemory {
    table: hashbrown::HashTable<Remembered>,
    /// (id hash, sequence number) in the order remembered, to forget the oldest.
    order: VecDeque<(u64, u64)>,
    next: u64,
    hasher: ahash::RandomState,
    capacity: usize,
}

/// One decision given: the transfer id followed by the decision as sent.
#[allow(missing_debug_implementations)] // raw decision bytes; see `decision()`
pub struct Remembered {
    seq: u64,
    hash: u64,
    id_len: u32,
    /// The transfer was scored after its deadline.
    pub late: bool,
    /// The verdict (the `fds-decision` header of a re-sent answer).
    pub outcome: Outcome,
    bytes: Box<[u8]>,
}

impl Remembered {
    /// The decision exactly as it was first sent.
    pub fn decision(&self) -> &[u8] {
        &self.bytes[self.id_len as usize..]
    }

    fn id(&self) -> &[u8] {
        &self.bytes[..self.id_len as usize]
    }
}

impl DecisionMemory {
    /// A memory of the last `capacity` decisions.
    pub fn new(capacity: usize) -> Self {
        DecisionMemory {
            table: hashbrown::HashTable::new(),
            order: VecDeque::new(),
            next: 0,
            hasher: ahash::RandomState::new(),
            capacity: capacity.max(1),
        }
    }

    /// The decision given for `tran_id`, if remembered.
    pub fn get(&self, tran_id: &str) -> Option<&Remembered> {
        let hash = self.hasher.hash_one(tran_id.as_bytes());
        self.table.find(hash, |r| r.id() == tran_id.as_bytes())
    }

    /// Remember a decision; the first one given for an id is the one kept.
    pub fn insert(&mut self, tran_id: &str, decision: &[u8], late: bool, outcome: Outcome) {
        let hash = self.hasher.hash_one(tran_id.as_bytes());
        if self.table.find(hash, |r| r.id() == tran_id.as_bytes()).is_some() {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some((old_hash, old_seq)) = self.order.pop_front() {
                if let Ok(e) = self.table.find_entry(old_hash, |r| r.seq == old_seq) {
                    e.remove();
                }
            }
        }
        let mut bytes = Vec::with_capacity(tran_id.len() + decision.len());
        bytes.extend_from_slice(tran_id.as_bytes());
        bytes.extend_from_slice(decision);
        let seq = self.next;
        self.next += 1;
        let r = Remembered { seq, hash, id_len: tran_id.len() as u32, late, outcome, bytes: bytes.into_boxed_slice() };
        self.table.insert_unique(hash, r, |r| r.hash);
        self.order.push_back((hash, seq));
    }

    /// Decisions remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

// -------------------------------------------------------------- contexts ---

/// Which input a message came from, as a small number for the offset tracker.
const TOPIC_TRANSFERS: u8 = 0;
const TOPIC_CONTEXT: u8 = 1;

/// An acknowledgement (or failure) of one produced record, sent from the
/// producer's thread to the scoring thread.
struct Ack {
    source: Origin,
    produced_at: Instant,
    /// On failure: the record to send again.
    retry: Option<Retry>,
}

/// Where a consumed message came from: the offset to finish once its
/// outcome is safe.
#[derive(Debug, Clone, Copy)]
struct Origin {
    topic: u8,
    partition: i32,
    offset: i64,
}

struct Retry {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    error: KafkaError,
}

struct AckContext {
    acks: Mutex<Sender<Ack>>,
    health: Arc<Health>,
}

/// librdkafka reports every failed connection attempt, many a second while a
/// broker is away. The health thread logs the transitions (unreachable,
/// reachable again) once; the client's own chatter goes to debug.
fn client_log(role: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    if (level as i32) <= (RDKafkaLogLevel::Critical as i32) {
        tracing::error!(role, fac, "librdkafka: {message}");
    } else {
        tracing::debug!(role, fac, ?level, "librdkafka: {message}");
    }
}

fn client_error(role: &str, health: Option<&Health>, error: KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if matches!(code, Some(RDKafkaErrorCode::AllBrokersDown)) {
        if let Some(h) = health {
            h.set_broker_up(false);
        }
    }
    if matches!(code, Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)) {
        tracing::debug!(role, %error, reason, "kafka");
    } else {
        tracing::warn!(role, %error, reason, "kafka");
    }
}

/// The context of the helper clients (labels, read-back, health).
struct Quiet(&'static str);

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(self.0, level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(self.0, None, error, reason)
    }
}

impl ConsumerContext for Quiet {}

impl ClientContext for AckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("producer", level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error("producer", Some(&self.health), error, reason)
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<(Origin, Instant)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (source, produced_at) = *opaque;
        let retry = match result {
            Ok(_) => None,
            Err((error, msg)) => Some(Retry {
                topic: msg.topic().to_owned(),
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().unwrap_or_default().to_vec(),
                headers: msg.headers().map(|h| h.detach()),
                error: error.clone(),
            }),
        };
        // The receiver only goes away at the very end of shutdown.
        let _ = self.acks.lock().expect("ack channel lock").send(Ack { source, produced_at, retry });
    }
}

/// What the scoring thread and the rebalance callbacks share: the offsets in
/// flight and the acknowledgements coming back. Both run on the scoring thread
/// (librdkafka calls the rebalance callbacks inside `poll`), so the lock is
/// never contended; it is there because the callbacks reach it through `&self`.
struct Book {
    tracker: OffsetTracker,
    acks: Receiver<Ack>,
}

impl Book {
    /// Take the acknowledgements that arrived: successes finish their offsets,
    /// failures come back to be produced again. Returns whether any finished.
    fn drain(&mut self, metrics: &Metrics, retries: &mut Vec<(Origin, Retry)>) -> bool {
        let mut moved = false;
        while let Ok(ack) = self.acks.try_recv() {
            match ack.retry {
                None => {
                    metrics.ack_latency.observe(ack.produced_at.elapsed().as_secs_f64());
                    self.tracker.finish(ack.source.topic, ack.source.partition, ack.source.offset);
                    moved = true;
                }
                Some(r) => retries.push((ack.source, r)),
            }
        }
        moved
    }
}

struct GroupContext {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    producer: Arc<ThreadedProducer<AckContext>>,
    topics: Topics,
    book: Mutex<Book>,
    /// Decisions given, by transfer id (see [`DecisionMemory`]).
    memory: Mutex<DecisionMemory>,
    /// For reading decisions back when partitions are assigned.
    options: PipelineOptions,
    stop: StopFlag,
    /// How many partitions the last rebalance assigned this member, or
    /// [`NOT_ASSIGNED`] (see [`OrphanWatch`]).
    assigned: AtomicUsize,
    /// Revocations so far: the scoring thread drops a burst taken across one
    /// (see the loop in [`run`]).
    revocations: std::sync::atomic::AtomicU64,
}

impl GroupContext {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, DecisionMemory> {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hand the finished positions to the consumer for its next commit.
    fn store_offsets(&self, consumer: &BaseConsumer<GroupContext>) {
        let ready = self.book().tracker.take_committable();
        if ready.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, partition, next) in ready {
            let topic = if t == TOPIC_TRANSFERS { &self.topics.transfers } else { &self.topics.context_events };
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(next));
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::debug!(error = %e, "offsets not stored");
        }
        self.metrics.offsets_pending.set(self.book().tracker.pending() as i64);
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("consumer", level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error("consumer", Some(&self.health), error, reason)
    }
}

impl ConsumerContext for GroupContext {
    /// Partitions are about to go to another instance: while they are still
    /// ours, wait for the acknowledgements of what was decided, store and
    /// commit those offsets, so the next owner starts exactly after them.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.revocations.fetch_add(1, Ordering::Relaxed);
                self.health.set_assigned(false);
                let pending = self.book().tracker.pending();
                if pending > 0 {
                    let deadline = Instant::now() + REVOKE_GRACE;
                    let mut retries = Vec::new();
                    while self.book().tracker.pending() > 0 && Instant::now() < deadline {
                        let _ = self.producer.flush(Duration::from_millis(100));
                        self.book().drain(&self.metrics, &mut retries);
                    }
                    if !retries.is_empty() {
                        tracing::warn!(
                            records = retries.len(),
                            "deliveries failed during a rebalance; the next owner will decide those transfers"
                        );
                    }
                }
                self.store_offsets(consumer);
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                        tracing::warn!(error = %e, "commit before giving up partitions failed");
                    }
                }
                let left = self.book().tracker.pending();
                for e in tpl.elements() {
                    let t = if e.topic() == self.topics.transfers { TOPIC_TRANSFERS } else { TOPIC_CONTEXT };
                    self.book().tracker.forget(t, e.partition());
                }
                tracing::info!(partitions = tpl.count(), unfinished = left, "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    /// New partitions: before their first message is handed out (this runs
    /// inside `poll`, on the scoring thread), read back the decisions already
    /// given (perhaps by an instance that just died), so a transfer delivered
    /// again gets the same answer. Pausing the partitions instead was measured
    /// to delay the first fetches after resuming by about half a second.
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            if tpl.count() > 0 {
                self.health.set_caught_up(false);
                let mut memory = self.memory();
                read_back_decisions(&self.options, &mut memory, &self.stop);
                tracing::info!(decisions = memory.len(), "recent decisions read back");
                self.health.set_caught_up(true);
            }
            self.health.set_assigned(tpl.count() > 0);
            self.assigned.store(tpl.count(), Ordering::Relaxed);
        }
    }
}

/// How long a rebalance waits for in-flight decisions before it lets go.
const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// The group consumer's `session.timeout.ms`: a crashed instance's partitions
/// move to the others after this long without its heartbeat (librdkafka's
/// default is 45 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// [`GroupContext::assigned`] before the first assignment and while joining again.
const NOT_ASSIGNED: usize = usize::MAX;

/// While this instance holds no partition: is anybody consuming the inputs?
///
/// An instance may rightly hold nothing (more instances than partitions), but
/// then the others move the group's committed offsets on as input arrives.
/// Input waiting above a committed offset that has not moved for a session
/// timeout has no owner, and no rebalance is coming to give it one: a dead
/// owner would have lost it by then. The instance then leaves the group and
/// joins again. Each time that still leaves it with nothing, the next look
/// waits twice as long (up to 32 times), so an owner held up by broker
/// trouble does not set off a rebalance every few seconds.
///
/// tansu 0.6.0 ends rebalances that way. Its JoinGroup answers at once instead
/// of waiting for every member, so an instance restarted within a session
/// timeout of its crash joins as a follower of its dead predecessor, still
/// the leader. The coordinator expires silent members only when a request
/// comes in, and tansu holds a follower's JoinGroup 3 s with the SyncGroup
/// right after it, so it is usually the follower's SyncGroup that finds the
/// leader gone. That SyncGroup carries no assignments, yet tansu completes
/// the generation with it: the follower is made leader, every member gets an
/// empty assignment, and its heartbeats are acknowledged from then on. (When
/// the follower's own membership has expired by then too, its SyncGroup is
/// refused and it joins afresh as leader: the restart then works.) Leaving
/// makes tansu pick a leader afresh at the next JoinGroup. No client setting
/// avoids it short of static membership (`group.instance.id`), which would
/// ask every deployment for a stable, unique id per instance; and tansu's
/// DescribeGroups, which would show the members, fails with its SQLite
/// storage and drops the connection.
#[derive(Default)]
struct OrphanWatch {
    next: Option<Instant>,
    /// The waiting input seen at the last look, if the brokers answered.
    before: Option<HashMap<(String, i32), i64>>,
    /// Times in a row this instance joined again and was given nothing.
    rejoins: u32,
}

impl OrphanWatch {
    /// Called after each poll while the group holds nothing for this
    /// instance: look at the inputs when due, and join again when input
    /// waits for nobody.
    fn check(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        opts: &PipelineOptions,
        inputs: &[&str],
    ) -> Result<(), PipelineError> {
        if self.next.is_some_and(|next| Instant::now() < next) {
            return Ok(());
        }
        let every = SESSION_TIMEOUT.max(opts.commit_interval * 3) * 2u32.pow(self.rejoins.min(5));
        let now = waiting_input(consumer, &opts.topics);
        self.next = Some(Instant::now() + every);
        let stalled = match (&self.before, &now) {
            (Some(before), Some(now)) => now.iter().any(|(k, o)| before.get(k) == Some(o)),
            _ => false,
        };
        self.before = now;
        if !stalled {
            return Ok(());
        }
        tracing::warn!(
            group = %opts.group_id,
            "this instance holds no partition and input nobody has committed for {} s is waiting; \
             leaving and joining the group again",
            every.as_secs()
        );
        self.rejoins += 1;
        self.next = None;
        self.before = None;
        consumer.context().assigned.store(NOT_ASSIGNED, Ordering::Relaxed);
        consumer.unsubscribe();
        consumer.subscribe(inputs).map_err(|source| PipelineError::Subscribe { topics: inputs.join(", "), source })
    }
}

/// The input partitions with records above the group's committed offset,
/// with that offset (the low watermark when nothing was committed); `None`
/// when the brokers do not answer. Only partitions with more than one record
/// waiting count (see below).
fn waiting_input<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &Topics,
) -> Option<HashMap<(String, i32), i64>> {
    let timeout = Duration::from_secs(2);
    let mut tpl = TopicPartitionList::new();
    for topic in [&topics.transfers, &topics.context_events] {
        let md = consumer.fetch_metadata(Some(topic), timeout).ok()?;
        for p in md.topics().first()?.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout).ok()?;
    let mut waiting = HashMap::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        // One record above the committed offset can be a transactional
        // producer's commit marker, which no consumer ever commits past.
        if high > from + 1 {
            waiting.insert((e.topic().to_owned(), e.partition()), from);
        }
    }
    Some(waiting)
}

// ------------------------------------------------------------------- run ---

/// Run the pipeline until `stop` is set. Blocks the calling thread, which
/// becomes the scoring thread.
pub fn run(
    engine: Arc<Engine>,
    opts: PipelineOptions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: StopFlag,
) -> Result<Summary, PipelineError> {
    let brokers = opts.connection.brokers.clone();
    let (ack_tx, ack_rx) = mpsc::channel();
    let linger = opts.linger.as_millis().to_string();
    let producer: ThreadedProducer<AckContext> = opts
        .connection
        .client_config(&[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // Never give up on a decision: wait for the broker to come back.
            ("message.timeout.ms", "0"),
            ("linger.ms", &linger),
            ("retry.backoff.ms", "100"),
            ("retry.backoff.max.ms", "2000"),
        ])
        .create_with_context(AckContext { acks: Mutex::new(ack_tx), health: health.clone() })
        .map_err(|source| PipelineError::Client { role: "producer", brokers: brokers.clone(), source })?;

    let producer = Arc::new(producer);
    // Learn the output topics' leaders now, so the first decision does not
    // wait for the producer's first metadata round trip.
    for topic in [&opts.topics.decisions, &opts.topics.dead_letter] {
        if let Err(e) = producer.client().fetch_metadata(Some(topic), Duration::from_secs(5)) {
            tracing::debug!(error = %e, %topic, "no metadata yet");
        }
    }

    // Fraud reports first: transfers are not scored before every known report
    // is in the state.
    let labels = spawn_labels_reader(engine.clone(), &opts, metrics.clone(), stop.clone())?;
    let watcher = spawn_health_watch(&opts, health.clone(), stop.clone())?;

    let commit_ms = opts.commit_interval.as_millis().max(1).to_string();
    let context = GroupContext {
        health: health.clone(),
        metrics: metrics.clone(),
        producer: producer.clone(),
        topics: opts.topics.clone(),
        book: Mutex::new(Book { tracker: OffsetTracker::default(), acks: ack_rx }),
        memory: Mutex::new(DecisionMemory::new(opts.dedup_capacity)),
        options: opts.clone(),
        stop: stop.clone(),
        assigned: AtomicUsize::new(NOT_ASSIGNED),
        revocations: std::sync::atomic::AtomicU64::new(0),
    };
    let consumer: BaseConsumer<GroupContext> = opts
        .connection
        .client_config(&[
            ("group.id", &opts.group_id),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", &commit_ms),
            // Offsets are stored by hand, only once the outcome is safe.
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            // `range` gives one member the same partition numbers of every
            // topic it reads (the topics have the same counts): an account's
            // transfers and context events meet on one instance.
            ("partition.assignment.strategy", "range"),
            // Latency: hand over what has arrived instead of waiting to fill a
            // batch (the transfer API is waiting for each answer).
            ("fetch.wait.max.ms", "1"),
            ("fetch.queue.backoff.ms", "1"),
            ("fetch.error.backoff.ms", "20"),
            ("session.timeout.ms", &SESSION_TIMEOUT.as_millis().to_string()),
            ("heartbeat.interval.ms", "1000"),
        ])
        .create_with_context(context)
        .map_err(|source| PipelineError::Client { role: "consumer", brokers: brokers.clone(), source })?;
    let transfer_partitions = check_copartitioned(&consumer, &opts.topics)?;
    let same_partitions =
        transfer_partitions.is_some() && partition_count(&consumer, &opts.topics.decisions) == transfer_partitions;
    let inputs = [opts.topics.transfers.as_str(), opts.topics.context_events.as_str()];
    consumer.subscribe(&inputs).map_err(|source| PipelineError::Subscribe { topics: inputs.join(", "), source })?;
    tracing::info!(brokers = %brokers, group = %opts.group_id, "consuming {}", inputs.join(", "));

    let mut scorer = ScoringThread {
        engine: &engine,
        topics: &opts.topics,
        metrics: &metrics,
        producer: &producer,
        consumer: &consumer,
        stop: &stop,
        summary: Summary::default(),
        consumed_transfers: metrics.events_consumed.with_label_values(&[opts.topics.transfers.as_str()]),
        consumed_context: metrics.events_consumed.with_label_values(&[opts.topics.context_events.as_str()]),
        last_store: Instant::now(),
        json: Vec::with_capacity(1024),
        rule_counters: RuleCounters::default(),
        same_partitions,
        burst_wall_ms: 0,
    };

    let mut failure = None;
    let mut orphans = OrphanWatch::default();
    let mut burst = Vec::with_capacity(BURST);
    let mut events = Vec::with_capacity(BURST);
    while !stop.load(Ordering::Relaxed) {
        if labels.is_finished() || watcher.is_finished() {
            // A helper thread ended on its own: a bug. Stop cleanly and say so,
            // rather than run on without fraud reports or health checks.
            failure = Some(PipelineError::ThreadDied(if labels.is_finished() { "labels" } else { "health" }));
            break;
        }
        if let Some((code, reason)) = producer.client().fatal_error() {
            failure = Some(PipelineError::ProducerFatal { code, reason });
            break;
        }
        scorer.settle_acks();
        if scorer.last_store.elapsed() >= STORE_EVERY {
            scorer.store_offsets();
        }
        // Wait for a message, then take what has already arrived behind it
        // without the checks above: under load they ran once per message
        // and showed in the profile.
        let mut wait = Duration::from_millis(50);
        let revocations = consumer.context().revocations.load(Ordering::Relaxed);
        while burst.len() < BURST {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(msg)) => burst.push(msg),
                // Broker trouble shows here as well as in the health thread,
                // which logs it once.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "kafka consumer poll");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        if consumer.context().revocations.load(Ordering::Relaxed) != revocations {
            // Partitions were revoked while the burst was taken (the callback
            // runs inside `poll`). Its messages were polled under the old
            // assignment and never begun, so the offsets committed on revocation
            // come before them: whoever owns the partitions now reads them again.
            // Handling them here could answer a transfer twice, differently.
            burst.clear();
        }
        // Parse the burst, then have the state of all its events fetched from
        // memory at once, before scoring any (see `State::prefetch`).
        events.extend(burst.iter().map(|m| Event::from_json(m.payload().unwrap_or_default())));
        engine.prefetch(events.iter().flatten());
        // One wall-clock read for the burst's ahead-of-clock guard (the guard
        // allows minutes; a burst takes well under a millisecond).
        scorer.burst_wall_ms = chrono::Utc::now().timestamp_millis();
        for (msg, event) in burst.drain(..).zip(events.drain(..)) {
            scorer.handle(&msg, event);
        }
        match consumer.context().assigned.load(Ordering::Relaxed) {
            0 => {
                if let Err(e) = orphans.check(&consumer, &opts, &inputs) {
                    failure = Some(e);
                    break;
                }
            }
            NOT_ASSIGNED => {}
            _ => orphans = OrphanWatch::default(),
        }
    }

    // Graceful stop: no new messages; wait for what is in flight, then commit.
    health.set_stopping();
    let pending = || consumer.context().book().tracker.pending();
    tracing::info!(pending = pending(), "stopping: waiting for in-flight decisions");
    let deadline = Instant::now() + opts.shutdown_timeout;
    while pending() > 0 && Instant::now() < deadline {
        let _ = producer.flush(Duration::from_millis(100));
        scorer.settle_acks();
    }
    scorer.settle_acks();
    scorer.store_offsets();
    scorer.summary.unfinished = pending() as u64;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit is also a "failure" here.
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
            tracing::warn!(error = %e, "final commit failed; the last messages will be delivered again");
        }
    }
    consumer.unsubscribe();
    let summary = scorer.summary.clone();
    drop(scorer);
    stop.store(true, Ordering::Relaxed);
    let _ = labels.join();
    let _ = watcher.join();
    match failure {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// The scoring thread's working set.
struct ScoringThread<'a> {
    engine: &'a Engine,
    topics: &'a Topics,
    metrics: &'a Metrics,
    producer: &'a ThreadedProducer<AckContext>,
    consumer: &'a BaseConsumer<GroupContext>,
    stop: &'a StopFlag,
    summary: Summary,
    consumed_transfers: prometheus::IntCounter,
    consumed_context: prometheus::IntCounter,
    last_store: Instant,
    /// The decision being written (reused: one exact allocation per decision,
    /// the copy kept for redeliveries, instead of a growing buffer each time).
    json: Vec<u8>,
    rule_counters: RuleCounters,
    /// Decisions go to the partition number their transfer came from when the
    /// decisions topic has as many partitions as the transfers topic (checked
    /// at start): the same per-account order as keying, without hashing every
    /// key again in the producer.
    same_partitions: bool,
    /// The wall clock (Unix ms) when the burst being handled was taken.
    burst_wall_ms: i64,
}

/// Dead-letter payloads are cut to this size (Kafka's default record limit is
/// about 1 MB, and the reason headers come on top).
const DEAD_LETTER_MAX_BYTES: usize = 512 * 1024;

/// Messages handled back to back before the loop's checks (acknowledgements,
/// offsets, stop, helper threads) run again. At 100,000 messages a second, 64
/// is well under a millisecond.
const BURST: usize = 64;

/// How often finished offsets are handed to the consumer for its commits.
const STORE_EVERY: Duration = Duration::from_millis(5);

/// Where an output record goes and what it carries.
struct Out<'m> {
    topic: &'m str,
    key: Option<&'m [u8]>,
    payload: &'m [u8],
    headers: OwnedHeaders,
    /// `None`: the producer picks by key.
    partition: Option<i32>,
}

/// The headers every decision carries (a re-sent one adds `fds-redelivered`).
fn decision_headers(tran_id: &str, outcome: Outcome, late: bool) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(4)
        .insert(Header { key: HEADER_CORRELATION_ID, value: Some(tran_id.as_bytes()) })
        .insert(Header { key: HEADER_DECISION, value: Some(outcome.name()) })
        .insert(Header { key: HEADER_LATE, value: Some(if late { "true" } else { "false" }) })
}

/// The `fds_rule_fired_total` counters of one rule set, indexed like its
/// rules (live rules labelled `shadow="false"`, shadow rules `"true"`),
/// resolved once per rule set instead of hashing labels per firing.
#[derive(Default)]
struct RuleCounters {
    rules: Option<Arc<RuleSet>>,
    counters: Vec<prometheus::IntCounter>,
}

impl RuleCounters {
    fn for_rules(&mut self, rules: &Arc<RuleSet>, metrics: &Metrics) -> &[prometheus::IntCounter] {
        if !self.rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, rules)) {
            self.counters = rules
                .rules()
                .iter()
                .map(|r| metrics.rules_fired.with_label_values(&[r.id(), if r.shadow() { "true" } else { "false" }]))
                .collect();
            self.rules = Some(rules.clone());
        }
        &self.counters
    }
}

impl ScoringThread<'_> {
    fn handle(&mut self, msg: &BorrowedMessage<'_>, event: Result<Event, EventError>) {
        let topic = if msg.topic() == self.topics.transfers { TOPIC_TRANSFERS } else { TOPIC_CONTEXT };
        let source = Origin { topic, partition: msg.partition(), offset: msg.offset() };
        self.consumer.context().book().tracker.begin(topic, source.partition, source.offset);
        self.summary.consumed += 1;
        if topic == TOPIC_TRANSFERS {
            self.consumed_transfers.inc();
        } else {
            self.consumed_context.inc();
        }
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                let kind = match e {
                    EventError::Malformed(_) => DeadLetterKind::Malformed,
                    EventError::Invalid { .. } => DeadLetterKind::Invalid,
                };
                return self.dead_letter(msg, source, kind, &e.to_string());
            }
        };
        let belongs = match &event {
            Event::Transfer(_) => topic == TOPIC_TRANSFERS,
            Event::Label(_) => false,
            _ => topic == TOPIC_CONTEXT,
        };
        if !belongs {
            let reason = format!("a {} event does not belong on topic {}", event.kind(), msg.topic());
            return self.dead_letter(msg, source, DeadLetterKind::WrongTopic, &reason);
        }

        if let Event::Transfer(t) = &event {
            let given = self
                .consumer
                .context()
                .memory()
                .get(&t.bank_tran_id)
                .map(|r| (r.decision().to_vec(), r.late, r.outcome));
            if let Some((given, late, outcome)) = given {
                self.metrics.decisions_redelivered.inc();
                self.summary.redelivered += 1;
                let headers = decision_headers(&t.bank_tran_id, outcome, late)
                    .insert(Header { key: HEADER_REDELIVERED, value: Some("true") });
                let out = Out {
                    topic: &self.topics.decisions,
                    key: msg.key(),
                    payload: &given,
                    headers,
                    partition: self.partition(source),
                };
                return self.produce(out, source);
            }
        }

        match self.engine.process_at(&event, Some(self.burst_wall_ms)) {
            Err(e @ EngineError::AheadOfClock { .. }) => {
                self.dead_letter(msg, source, DeadLetterKind::AheadOfClock, &e.to_string())
            }
            Ok(None) => {
                self.summary.context_events += 1;
                self.consumer.context().book().tracker.finish(source.topic, source.partition, source.offset);
            }
            Ok(Some(scored)) => {
                let d = &scored.decision;
                // Read again: late and the decision's age count the engine's
                // time too (an expiry sweep runs inline).
                let now_ms = chrono::Utc::now().timestamp_millis();
                let late = deadline_ms(msg).is_some_and(|deadline| now_ms > deadline);
                self.json.clear();
                d.write_json_with_late(late, &mut self.json);
                self.consumer.context().memory().insert(&d.bank_tran_id, &self.json, late, d.outcome);
                self.metrics.count_decision(d.outcome, d.verification);
                if d.model.as_ref().is_some_and(|m| m.hold) {
                    self.metrics.model_holds.inc();
                }
                self.metrics.engine_latency.observe(d.latency_ns as f64 * 1e-9);
                if let Some(created) = msg.timestamp().to_millis() {
                    self.metrics.decision_age.observe((now_ms - created).max(0) as f64 * 1e-3);
                }
                if !d.fired.is_empty() || !d.shadow_fired.is_empty() {
                    let counters = self.rule_counters.for_rules(&d.rules, self.metrics);
                    for &i in &d.fired {
                        counters[usize::from(i)].inc();
                    }
                    for &i in &d.shadow_fired {
                        counters[usize::from(i)].inc();
                    }
                }
                if late {
                    self.metrics.decisions_late.inc();
                    self.summary.late += 1;
                }
                self.summary.decisions += 1;
                let headers = decision_headers(&d.bank_tran_id, d.outcome, late);
                let json = std::mem::take(&mut self.json);
                let partition = self.partition(source);
                let out = Out { topic: &self.topics.decisions, key: msg.key(), payload: &json, headers, partition };
                self.produce(out, source);
                self.json = json;
            }
        }
    }

    /// Where a decision for a message from `source` goes (see `same_partitions`).
    fn partition(&self, source: Origin) -> Option<i32> {
        self.same_partitions.then_some(source.partition)
    }

    fn dead_letter(&mut self, msg: &BorrowedMessage<'_>, source: Origin, kind: DeadLetterKind, reason: &str) {
        // The reason may quote the payload; account numbers stay out of logs.
        tracing::warn!(
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset(),
            key = %msg.key().map(|k| mask_account(&String::from_utf8_lossy(k))).unwrap_or_default(),
            kind = kind.name(),
            "dead-lettered: {}",
            crate::event::mask_digit_runs(reason)
        );
        self.metrics.dead_letters.with_label_values(&[kind.name()]).inc();
        self.summary.dead_letters += 1;
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: HEADER_ERROR, value: Some(reason) })
            .insert(Header { key: HEADER_ERROR_KIND, value: Some(kind.name()) })
            .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(msg.topic()) })
            .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(&partition) })
            .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(&offset) });
        // A record near the broker's size limit would not fit with the
        // headers added: keep its head and say how long it was.
        let original = msg.payload().unwrap_or_default();
        let (payload, headers) = if original.len() > DEAD_LETTER_MAX_BYTES {
            let size = original.len().to_string();
            let h = headers.insert(Header { key: HEADER_TRUNCATED_FROM, value: Some(&size) });
            (&original[..DEAD_LETTER_MAX_BYTES], h)
        } else {
            (original, headers)
        };
        let out = Out { topic: &self.topics.dead_letter, key: msg.key(), payload, headers, partition: None };
        self.produce(out, source);
    }

    /// Hand a record to the producer. When its queue is full (the broker is
    /// slow or away) wait here, settling acknowledgements, until there is room:
    /// back-pressure instead of unbounded memory. A stop request ends the wait;
    /// the record's offset then stays unfinished and is delivered again after
    /// the restart.
    fn produce(&mut self, out: Out<'_>, source: Origin) {
        let mut headers = Some(out.headers);
        let mut partition = out.partition;
        while !self.stop.load(Ordering::Relaxed) {
            let mut record = BaseRecord::with_opaque_to(out.topic, Box::new((source, Instant::now())))
                .payload(out.payload)
                .headers(headers.take().expect("headers are put back on retry"));
            if let Some(k) = out.key {
                record = record.key(k);
            }
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self.producer.send(record) {
                Ok(()) => return,
                // The partition number of the transfer is not one the output
                // topic has (its input topic grew since the start): go by key.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition), record))
                    if partition.is_some() =>
                {
                    headers = record.headers;
                    partition = None;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    headers = record.headers;
                    self.settle_acks();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, record)) => {
                    // Not a full queue: a record the client refuses (unknown
                    // topic, a fatal producer state). Retrying is all that
                    // keeps it from being lost; say so loudly and back off.
                    tracing::error!(error = %e, topic = out.topic, "cannot produce; retrying in 1 s");
                    self.metrics.produce_retries.inc();
                    headers = record.headers;
                    self.settle_acks();
                    if self.producer.client().fatal_error().is_some() {
                        return; // the main loop stops on it
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Take the broker's acknowledgements and move the offset watermarks;
    /// produce again what failed, after a back-off.
    fn settle_acks(&mut self) {
        let mut retries = Vec::new();
        self.consumer.context().book().drain(self.metrics, &mut retries);
        if retries.is_empty() {
            return;
        }
        tracing::warn!(records = retries.len(), error = %retries[0].1.error, "deliveries failed; producing again");
        std::thread::sleep(Duration::from_millis(100));
        for (source, r) in retries {
            self.metrics.produce_retries.inc();
            let out = Out {
                topic: &r.topic,
                key: r.key.as_deref(),
                payload: &r.payload,
                headers: r.headers.clone().unwrap_or_default(),
                // By key: a failed record may have failed for its partition.
                partition: None,
            };
            self.produce(out, source);
        }
    }

    /// Store the offsets that became safe. Called every few milliseconds:
    /// storing is a call into the client, and the commit runs each second.
    fn store_offsets(&mut self) {
        self.last_store = Instant::now();
        self.consumer.context().store_offsets(self.consumer);
    }
}

/// The `deadline-ms` header, if the transfer API sent one.
fn deadline_ms(msg: &BorrowedMessage<'_>) -> Option<i64> {
    header(msg, HEADER_DEADLINE_MS)?.trim().parse().ok()
}

fn correlation_id<M: Message>(msg: &M) -> Option<String> {
    header(msg, HEADER_CORRELATION_ID).map(str::to_owned)
}

fn header<'m, M: Message>(msg: &'m M, key: &str) -> Option<&'m str> {
    msg.headers()?.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Transfers and context events of one account must meet on one instance.
/// Returns the transfers topic's partition count, when the brokers say.
fn check_copartitioned<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &Topics,
) -> Result<Option<usize>, PipelineError> {
    // Unknown counts (broker away, topic not yet created) are not an error
    // here: the consumer waits for the topics like any other client.
    let transfers = partition_count(consumer, &topics.transfers);
    if let (Some(a_n), Some(b_n)) = (transfers, partition_count(consumer, &topics.context_events)) {
        if a_n != b_n {
            return Err(PipelineError::NotCopartitioned {
                a: topics.transfers.clone(),
                a_n,
                b: topics.context_events.clone(),
                b_n,
            });
        }
    }
    Ok(transfers)
}

/// How many partitions `topic` has; `None` when the brokers do not say.
fn partition_count<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Option<usize> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).ok()?;
    let t = md.topics().first()?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
}

/// Assign every partition of `topic`, each from `start(low, high)`, and read
/// until each reaches the end it had when the call began, handing every message
/// to `f`. It waits for the brokers (retrying) rather than failing, and gives
/// up after `limit`; returns whether it reached the end everywhere. The
/// assignment stays, so the caller may go on reading.
fn read_to_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    start: impl Fn(i64, i64) -> i64,
    stop: &StopFlag,
    limit: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> bool {
    let began = Instant::now();
    let mut warned = false;
    let mut wait = |what: &str| -> bool {
        if !warned {
            tracing::warn!(%topic, "{what}; waiting");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(500));
        !stop.load(Ordering::Relaxed) && began.elapsed() < limit
    };
    let partitions: Vec<i32> = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) if md.topics().first().is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()) => {
                break md.topics()[0].partitions().iter().map(|p| p.id()).collect();
            }
            Ok(_) if wait("topic not found yet") => {}
            Err(_) if wait("brokers unreachable") => {}
            _ => return false,
        }
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in partitions {
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(_) if wait("partition watermarks unavailable") => {}
                Err(_) => return false,
            }
        };
        let from = start(low, high).clamp(low, high);
        if tpl.add_partition_offset(topic, p, Offset::Offset(from)).is_err() {
            return false;
        }
        if high > from {
            ends.insert(p, high);
        }
    }
    if consumer.assign(&tpl).is_err() {
        return false;
    }
    while !ends.is_empty() {
        if stop.load(Ordering::Relaxed) || began.elapsed() > limit {
            tracing::warn!(%topic, partitions = ends.len(), "stopped reading before the end");
            return false;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                f(&m);
                if ends.get(&m.partition()).is_some_and(|&end| m.offset() + 1 >= end) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, %topic, "reading to the end"),
            None => {
                // Offsets may be missing at the end (compaction): the position
                // tells when a partition is through.
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements_for_topic(topic) {
                        if let Offset::Offset(o) = e.offset() {
                            if ends.get(&e.partition()).is_some_and(|&end| o >= end) {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
            }
        }
    }
    true
}

/// Read the tail of the decisions topic into the decision memory, so that
/// transfers delivered again (after a restart or a rebalance) get the decision
/// already given.
fn read_back_decisions(opts: &PipelineOptions, memory: &mut DecisionMemory, stop: &StopFlag) {
    let topic = &opts.topics.decisions;
    let consumer: BaseConsumer<Quiet> = match opts
        .connection
        .client_config(&[
            ("group.id", &format!("{}-decisions-readback", opts.group_id)),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .create_with_context(Quiet("decisions read-back"))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read back recent decisions; re-delivered transfers will be scored again");
            return;
        }
    };
    let per_partition = opts.dedup_capacity as i64;
    let complete = read_to_end(
        &consumer,
        topic,
        |_, high| high - per_partition,
        stop,
        READ_BACK_LIMIT,
        |m| {
            if let (Some(id), Some(payload)) = (correlation_id(m), m.payload()) {
                let late = header(m, HEADER_LATE) == Some("true");
                let hold = match header(m, HEADER_DECISION) {
                    Some(v) => v == Outcome::Hold.name(),
                    // Decisions written before the header existed.
                    None => serde_json::from_slice::<VerdictOnly<'_>>(payload)
                        .is_ok_and(|b| b.decision == Outcome::Hold.name()),
                };
                memory.insert(&id, payload, late, if hold { Outcome::Hold } else { Outcome::Allow });
            }
        },
    );
    if !complete {
        tracing::warn!(%topic, "recent decisions only partly read back");
    }
}

/// The verdict of a decision read back, from its body.
#[derive(serde::Deserialize)]
struct VerdictOnly<'a> {
    #[serde(borrow)]
    decision: &'a str,
}

/// How long reading back decisions or catching up labels may take at start.
const READ_BACK_LIMIT: Duration = Duration::from_secs(120);

/// Every instance reads every label, from the start of the topic: fraud
/// reports are few, and each instance needs all of them for payee risk. The
/// reports already there are read before this returns, so no transfer is
/// scored without them.
fn spawn_labels_reader(
    engine: Arc<Engine>,
    opts: &PipelineOptions,
    metrics: Arc<Metrics>,
    stop: StopFlag,
) -> Result<JoinHandle<()>, PipelineError> {
    let topic = opts.topics.labels.clone();
    // Assigned, not subscribed: no group membership, a reading position of
    // this process's own.
    let consumer: BaseConsumer<Quiet> = opts
        .connection
        .client_config(&[
            ("group.id", &format!("{}-labels", opts.group_id)),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "100"),
        ])
        .create_with_context(Quiet("labels consumer"))
        .map_err(|source| PipelineError::Client {
            role: "labels consumer",
            brokers: opts.connection.brokers.clone(),
            source,
        })?;
    let counter = metrics.events_consumed.with_label_values(&[topic.as_str()]);
    let dead = metrics.dead_letters.clone();
    let apply = move |msg: &BorrowedMessage<'_>| {
        counter.inc();
        match Event::from_json(msg.payload().unwrap_or_default()) {
            Ok(e @ Event::Label(_)) => {
                if let Err(err) = engine.process(&e) {
                    tracing::warn!(error = %err, offset = msg.offset(), "label refused");
                }
            }
            // Labels are read by every instance, so a bad one is reported
            // (log, metric) but not dead-lettered: N instances would write N
            // copies.
            Ok(other) => {
                dead.with_label_values(&[DeadLetterKind::WrongTopic.name()]).inc();
                tracing::warn!(kind = other.kind(), offset = msg.offset(), "not a label on the labels topic");
            }
            Err(e) => {
                dead.with_label_values(&[DeadLetterKind::Malformed.name()]).inc();
                tracing::warn!(offset = msg.offset(), "bad label: {}", crate::event::mask_digit_runs(&e.to_string()));
            }
        }
    };
    let started = Instant::now();
    let mut read = 0u64;
    let complete = read_to_end(
        &consumer,
        &topic,
        |low, _| low,
        &stop,
        READ_BACK_LIMIT,
        |m| {
            read += 1;
            apply(m)
        },
    );
    tracing::info!(labels = read, complete, ms = started.elapsed().as_millis() as u64, "fraud reports read");
    Ok(std::thread::Builder::new()
        .name("fds-labels".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => apply(&m),
                    Some(Err(e)) => tracing::debug!(error = %e, "labels consumer"),
                    None => {}
                }
            }
        })
        .expect("spawn labels thread"))
}

/// Ask the brokers for metadata every second: the truth behind `/readyz`.
fn spawn_health_watch(
    opts: &PipelineOptions,
    health: Arc<Health>,
    stop: StopFlag,
) -> Result<JoinHandle<()>, PipelineError> {
    let client: BaseConsumer =
        opts.connection.client_config(&[("group.id", "fds-health")]).create().map_err(|source| {
            PipelineError::Client { role: "health client", brokers: opts.connection.brokers.clone(), source }
        })?;
    let topic = opts.topics.decisions.clone();
    Ok(std::thread::Builder::new()
        .name("fds-health".into())
        .spawn(move || {
            let mut was_up = None;
            while !stop.load(Ordering::Relaxed) {
                let up = client.fetch_metadata(Some(&topic), Duration::from_secs(2)).is_ok();
                if was_up != Some(up) {
                    if up {
                        tracing::info!("brokers reachable");
                    } else {
                        tracing::error!("brokers unreachable; decisions wait in the producer and are retried");
                    }
                    was_up = Some(up);
                }
                // The gauges follow the flags at each scrape (`Health::publish`).
                health.set_broker_up(up);
                for _ in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .expect("spawn health thread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_move_only_past_finished_messages() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.begin(TOPIC_TRANSFERS, 0, o);
        }
        t.finish(TOPIC_TRANSFERS, 0, 12);
        t.finish(TOPIC_TRANSFERS, 0, 11);
        assert!(t.take_committable().is_empty(), "10 is not finished, nothing may be stored");
        assert_eq!(t.pending(), 3);
        t.finish(TOPIC_TRANSFERS, 0, 10);
        assert_eq!(t.take_committable(), vec![(TOPIC_TRANSFERS, 0, 13)]);
        assert!(t.take_committable().is_empty(), "reported once");
        t.finish(TOPIC_TRANSFERS, 0, 14);
        assert!(t.take_committable().is_empty(), "13 still open");
        t.finish(TOPIC_TRANSFERS, 0, 13);
        assert_eq!(t.take_committable(), vec![(TOPIC_TRANSFERS, 0, 15)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn partitions_are_tracked_apart_and_forgotten_on_revoke() {
        let mut t = OffsetTracker::default();
        t.begin(TOPIC_TRANSFERS, 0, 5);
        t.begin(TOPIC_TRANSFERS, 1, 5);
        t.begin(TOPIC_CONTEXT, 0, 7);
        t.finish(TOPIC_TRANSFERS, 1, 5);
        t.finish(TOPIC_CONTEXT, 0, 7);
        let mut c = t.take_committable();
        c.sort();
        assert_eq!(c, vec![(TOPIC_TRANSFERS, 1, 6), (TOPIC_CONTEXT, 0, 8)]);
        t.forget(TOPIC_TRANSFERS, 0);
        t.finish(TOPIC_TRANSFERS, 0, 5); // a late ack for a revoked partition
        assert!(t.take_committable().is_empty());
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn decision_memory_keeps_the_first_answer_and_forgets_the_oldest() {
        let mut m = DecisionMemory::new(2);
        m.insert("a", b"allow", false, Outcome::Allow);
        m.insert("a", b"hold", true, Outcome::Hold);
        let a = m.get("a").unwrap();
        assert_eq!(a.decision(), b"allow", "a second answer never replaces the first");
        assert!(!a.late && a.outcome == Outcome::Allow);
        m.insert("b", b"x", false, Outcome::Hold);
        m.insert("c", b"y", true, Outcome::Allow);
        assert!(m.get("a").is_none(), "oldest forgotten at capacity");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b").unwrap().decision(), b"x");
        assert_eq!(m.get("b").unwrap().outcome, Outcome::Hold);
        assert!(m.get("c").unwrap().late);
        // An id that is a prefix of another's bytes is still its own entry.
        m.insert("cy", b"z", false, Outcome::Allow);
        assert_eq!(m.get("c").unwrap().decision(), b"y");
        assert_eq!(m.get("cy").unwrap().decision(), b"z");
        assert!(m.get("b").is_none());
    }

    /// Forgetting follows the order remembered exactly, over many times the
    /// capacity, with nothing else lost.
    #[test]
    fn decision_memory_holds_exactly_the_last_capacity_ids() {
        let mut m = DecisionMemory::new(100);
        for i in 0..1000 {
            let outcome = if i % 2 == 0 { Outcome::Hold } else { Outcome::Allow };
            m.insert(&format!("T{i}"), format!("d{i}").as_bytes(), false, outcome);
        }
        assert_eq!(m.len(), 100);
        for i in 0..1000 {
            let got = m.get(&format!("T{i}")).map(|r| r.decision().to_vec());
            assert_eq!(got, (i >= 900).then(|| format!("d{i}").into_bytes()), "T{i}");
        }
    }
}
