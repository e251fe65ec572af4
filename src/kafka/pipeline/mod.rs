//! The consume → score → produce loop behind `fds run`.
//!
//! ## Threads
//!
//! - **The scoring thread** (the caller's) polls one consumer-group member
//!   subscribed to `transfers` and `context-events`, and a consumer of its own
//!   assigned the whole `labels` topic from the beginning (every instance
//!   learns every fraud report; reports are small and few). It takes what has
//!   arrived in bursts (up to 64 messages), parses a burst, has the state its
//!   events will read fetched into the CPU cache together
//!   ([`Engine::prefetch`]), and puts the messages in the merge by event time
//!   (see *Order* below); then runs each message whose turn has come through
//!   the [`Engine`] and hands the decision (or dead-letter record) to the
//!   producer. It never waits on the network: librdkafka fetches ahead on its
//!   own threads and the producer batches and sends on its own, so consuming,
//!   scoring and producing overlap. One thread keeps one account's events in
//!   order without any locking; the engine itself is lock-free for readers.
//!   The same thread polls the observations reader (every partition of
//!   `observations`, assigned) and counts the other instances' transfers in
//!   the shared payee and device tables before each burst is scored, and
//!   publishes its own (see `shared`).
//! - **The producer's thread** (librdkafka's, driven by `ThreadedProducer`)
//!   receives the broker's acknowledgements and passes them back to the
//!   scoring thread over a channel.
//! - **The health thread** asks the brokers for metadata every second and
//!   flips [`Health::set_broker_up`]; `/readyz` and `fds_broker_up` follow it.
//!
//! ## Where each job lives
//!
//! - `mod.rs`: the options, [`run`] (set-up, the scoring loop, the graceful
//!   stop) and its errors.
//! - `scoring`: one message through the engine to the producer; acks settled,
//!   offsets stored.
//! - [`offsets`](OffsetTracker): which offsets are finished, per partition.
//! - [`memory`](DecisionMemory): decisions given, by transfer id.
//! - `group`: rebalance callbacks and the orphan watchdog.
//! - `clients`: the producer's acknowledgement channel and client logging.
//! - `readers`: the co-partitioning check, reading a topic to its end (the
//!   `decisions` tail into the memory), the labels consumer.
//! - `merge`: the messages polled, waiting for their turn in event-time order.
//! - `shared`: the shared payee and device tables on Kafka (observations out
//!   and in).
//! - `changelog`: checkpoints of the state to the `state` topic; `restore`:
//!   reading them back (shared tables at start, a partition's accounts when
//!   it is assigned); `local`: the local copy of a graceful stop, which a
//!   restart on the same machine reads instead of the changelog.
//! - `health`: the broker health thread.
//! - `lag`: `fds_consumer_lag`, each assigned input partition's messages not
//!   yet decided, measured once a second by the scoring thread.
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
//!   read back into that memory before any of their messages is handled (the
//!   partitions paused meanwhile, see `group`). A transfer delivered again
//!   (after a crash between the decision
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
//! - **Order: live equals replay.** Transfers, context events and fraud reports
//!   are handled in the canonical order of [`crate::input::order`] (event time,
//!   then reports, context, transfers, then partition), merged from the heads
//!   of the partitions as Kafka Streams merges a task's inputs: a message goes
//!   when no partition that still has input to deliver could hold an earlier
//!   one. So a backlog (a restart, a replay of recorded traffic into the
//!   topics) is decided exactly as `fds replay --partitions N` decides the same
//!   events, and a fraud report is in the state before any transfer dated
//!   after it. Caught-up partitions hold nobody back, so live traffic does
//!   not wait for quiet ones; a partition behind its end that delivers nothing
//!   for 5 s while the brokers answer is given up on until it does
//!   (`fds_merge_gave_up_total`).
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
use crate::engine::{Engine, EngineError, Outcome, Scored};
use crate::event::{mask_account, Event, EventError};
use crate::input::order::{Feed, Key, Merge};
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::state::{Observation, SharedCount};

mod changelog;
mod clients;
mod group;
mod health;
mod lag;
mod ledger;
mod local;
mod memory;
mod merge;
mod offsets;
mod readers;
mod restore;
mod scoring;
mod shared;

use changelog::*;
use clients::*;
use group::*;
use health::*;
use lag::*;
use merge::*;
use readers::*;
use restore::*;
use scoring::*;
use shared::*;

pub use memory::{DecisionMemory, Remembered};
pub use offsets::OffsetTracker;

/// A mutex's guard, poisoned or not: every lock here guards data a panic
/// elsewhere leaves whole (a list, a slot, a memory), so a panicking thread
/// must not take the pipeline down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    #[error("topics {a} ({a_n} partitions) and {b} ({b_n} partitions) must have the same partition count: {why}")]
    NotCopartitioned { a: String, a_n: usize, b: String, b_n: usize, why: &'static str },
    #[error("the brokers at {brokers} did not say within {waited} s how many partitions topic {topic} has: are they up, and the topics created (`fds topics create`)?")]
    NoPartitions { topic: String, brokers: String, waited: u64 },
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
    /// How often the state's changes are checkpointed to the changelog
    /// (see the `changelog` module); `None`: no changelog.
    pub checkpoint_interval: Option<Duration>,
    /// The group consumer's `session.timeout.ms`: a crashed instance's
    /// partitions move to the others after this long without its heartbeat
    /// (librdkafka's default is 45 s). Shorter moves them sooner, and takes
    /// a long pause (GC-free as fds is, a stalled host) for a crash.
    pub session_timeout: Duration,
    /// Producer batching delay: the latency/throughput trade-off of the
    /// decisions topic.
    pub linger: Duration,
    /// How long shutdown waits for in-flight decisions to be acknowledged.
    pub shutdown_timeout: Duration,
    /// Where the state is checkpointed on a graceful stop and restored from
    /// at start (see the `checkpoint` module); `None`: in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// Messages longer than this are dead-lettered unread (`too_large`).
    pub max_event_bytes: usize,
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
            checkpoint_interval: Some(Duration::from_secs(5)),
            session_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(1),
            shutdown_timeout: Duration::from_secs(30),
            state_dir: None,
            max_event_bytes: crate::event::MAX_EVENT_BYTES,
        }
    }
}

/// What a run did, for the log line at exit and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages taken from the transfers and context-events topics (fraud
    /// reports, read by every instance, are not counted).
    pub consumed: u64,
    /// Decisions produced (first answers).
    pub decisions: u64,
    /// Decisions sent again for a re-delivered transfer.
    pub redelivered: u64,
    /// Decisions made after the transfer's `deadline-ms` header had passed;
    /// still sent, with `fds-late: true`.
    pub late: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Context events applied.
    pub context_events: u64,
    /// Messages consumed whose outcome was still unacknowledged at exit; they
    /// will be delivered again on the next start.
    pub unfinished: u64,
}

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

    // The decisions' tail is read back meanwhile, on a thread of its own:
    // like the state, it is waited for before any partition's messages are
    // handled (see `GroupContext::post_rebalance`), and a restore of either
    // waits on the brokers more than it computes.
    let memory = Arc::new(Mutex::new(DecisionMemory::new(opts.dedup_capacity)));
    let reading_back = {
        let (memory, opts, stop) = (memory.clone(), opts.clone(), stop.clone());
        std::thread::Builder::new().name("fds-readback".into()).spawn(move || {
            let mut memory = lock(&memory);
            read_back_decisions(&opts, &mut memory, &stop);
            tracing::info!(decisions = memory.len(), "recent decisions read back");
        })
    };

    // The state first: the shared payee and device tables restored before
    // anything is consumed (each partition's accounts follow when it is
    // assigned), from the local copy where it still matches, else from the
    // changelog; without a changelog, everything from the local copy.
    let groups = partition_count_shared(&opts, &stop)?;
    let mut positions = Positions::new();
    let mut changelog = None;
    let mut start = SharedStart::default();
    let mut local_accounts = None;
    let mut start_accounts = None;
    if let Some(interval) = opts.checkpoint_interval {
        let copy = opts
            .state_dir
            .as_deref()
            .and_then(|dir| local::restore_shared(dir, &engine, &opts, &metrics, &health, groups));
        let last_id = match &copy {
            Some(cover) => {
                start = cover.shared_start();
                cover.last_id
            }
            None => {
                let (restored, accounts) = restore_shared(&engine, &opts, &metrics, &health, &stop);
                start_accounts = accounts;
                start = restored.shared_start(groups);
                restored.last_id()
            }
        };
        local_accounts = copy;
        engine.state().track_changes();
        let mut c = Changelog::new(&opts, interval, groups, health.clone())?;
        c.continue_after(last_id);
        changelog = Some(c);
    } else if let Some(dir) = &opts.state_dir {
        positions = local::restore_offsets(dir, &engine, &opts, &metrics);
        start.counted = positions
            .iter()
            .filter(|((feed, _), _)| *feed == Feed::Transfers)
            .map(|(&(_, p), &o)| (p, ledger::Counted::below(o)))
            .collect();
    }
    let (labels, label_starts) = labels_reader(&opts, &stop)?;
    let shared = SharedTables::new(&opts, &metrics, &stop, start, groups)?;
    let watcher = spawn_health_watch(&opts, health.clone(), stop.clone())?;

    let commit_ms = opts.commit_interval.as_millis().max(1).to_string();
    let context = GroupContext {
        health: health.clone(),
        metrics: metrics.clone(),
        producer: producer.clone(),
        topics: opts.topics.clone(),
        book: Mutex::new(Book { tracker: OffsetTracker::default(), acks: ack_rx }),
        memory,
        options: opts.clone(),
        assigned: AtomicUsize::new(NOT_ASSIGNED),
        revocations: std::sync::atomic::AtomicU64::new(0),
        starts: Mutex::new(Vec::new()),
        engine: engine.clone(),
        groups,
        held: Mutex::new(Vec::new()),
        restored: Mutex::new(Vec::new()),
        local: Mutex::new(local_accounts),
        start_accounts: Mutex::new(start_accounts),
        preparing: Mutex::new(None),
        is_preparing: AtomicBool::new(false),
        dropped: Mutex::new(Vec::new()),
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
            ("session.timeout.ms", &opts.session_timeout.as_millis().to_string()),
            ("heartbeat.interval.ms", "1000"),
        ])
        .create_with_context(context)
        .map_err(|source| PipelineError::Client { role: "consumer", brokers: brokers.clone(), source })?;
    let same_partitions = partition_count(&consumer, &opts.topics.decisions) == Some(groups as usize);
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
        consumed_labels: metrics.events_consumed.with_label_values(&[opts.topics.labels.as_str()]),
        last_store: Instant::now(),
        json: Vec::with_capacity(1024),
        rule_counters: RuleCounters::default(),
        same_partitions,
        burst_wall_ms: 0,
        positions,
        shared,
    };

    // Every input in the canonical order (see `input::order`): the fraud
    // reports from their own reader, transfers and context events from the
    // group's partitions, merged by event time.
    let mut ordered = InputMerge::new(&opts.topics, &label_starts);
    let mut lag = ConsumerLag::new(&opts.topics);
    let mut failure = None;
    let mut orphans = OrphanWatch::default();
    let mut burst = Vec::with_capacity(2 * BURST);
    let mut events = Vec::with_capacity(2 * BURST);
    while !stop.load(Ordering::Relaxed) {
        if watcher.is_finished() {
            // The health thread ended on its own: a bug. Stop cleanly and say
            // so, rather than run on without health checks.
            failure = Some(PipelineError::ThreadDied("health"));
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
        // Wait for a message (briefly when the merge is waiting for one
        // partition), then take what has already arrived behind it without
        // the checks above: under load they ran once per message and showed
        // in the profile.
        let mut wait = if ordered.merge.is_empty() { IDLE_WAIT } else { BLOCKED_WAIT };
        let mut revocations = consumer.context().revocations.load(Ordering::Relaxed);
        while burst.len() < BURST {
            let polled = consumer.poll(wait);
            let now = consumer.context().revocations.load(Ordering::Relaxed);
            if now != revocations {
                // Partitions were revoked inside that poll (the callbacks run
                // there). The messages taken before, and those the merge
                // holds, were polled under the old assignment and never
                // begun, so the offsets committed on revocation come before
                // them: whoever owns the partitions now reads them again.
                // Handling them here could answer a transfer twice,
                // differently. The message the poll returned, if any, came
                // after the new assignment and stays.
                revocations = now;
                burst.clear();
                lag.revoked(&metrics);
                scorer.shared.disown_all();
                if let Some(c) = &mut changelog {
                    c.abandon(&engine);
                }
                ordered.merge.forget(&[Feed::Transfers, Feed::Context]);
            }
            match polled {
                None => break,
                // Partitions being prepared are paused; anything fetched
                // before is fetched again from where they start.
                Some(Ok(msg)) if consumer.context().is_preparing.load(Ordering::Relaxed) => {
                    consumer.context().drop_polled(&msg)
                }
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
        consumer.context().finish_preparing(&consumer);
        for restored in consumer.context().take_restored() {
            // The accounts of partitions just taken, as of their checkpoint:
            // the state holds their input up to its positions (and nothing
            // of a partition without one, whatever it once held).
            for &p in &restored.partitions {
                scorer.positions.remove(&(Feed::Transfers, p));
                scorer.positions.remove(&(Feed::Context, p));
            }
            scorer.positions.extend(restored.positions());
            if let Some(c) = &mut changelog {
                c.continue_after(restored.last_id());
            }
        }
        for Start { feed, partition, from, end } in consumer.context().take_starts() {
            lag.assigned(feed, partition, from, end);
            ordered.merge.follow(feed, partition, from);
            if let Some(end) = end {
                ordered.merge.set_end(feed, partition, end);
            }
            // The state has learnt nothing of this partition before where it
            // starts here (unless restored past it): a checkpoint says so.
            if let Some(from) = from {
                scorer.positions.entry((feed, partition)).or_insert(from);
            }
            if feed == Feed::Transfers {
                // Counted here from the first transfer the state learns
                // (messages below the restored position are answered, not
                // learnt again); what comes before it comes from the
                // previous owner's observations.
                let learns_from = scorer.positions.get(&(feed, partition)).copied().or(from);
                scorer.shared.own(partition, learns_from);
            }
        }
        while burst.len() < 2 * BURST {
            match labels.poll(Duration::ZERO) {
                Some(Ok(msg)) => burst.push(msg),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "labels consumer poll");
                    break;
                }
                None => break,
            }
        }
        // Parse the burst, then have the state of all its events fetched from
        // memory at once, before scoring any (see `State::prefetch`).
        events.extend(
            burst.iter().map(|m| Event::from_json_within(m.payload().unwrap_or_default(), opts.max_event_bytes)),
        );
        engine.prefetch(events.iter().flatten());
        // One wall-clock read for the burst's ahead-of-clock guard (the guard
        // allows minutes; a burst takes well under a millisecond).
        scorer.burst_wall_ms = chrono::Utc::now().timestamp_millis();
        for (msg, event) in burst.drain(..).zip(events.drain(..)) {
            let feed = feed_of(&opts.topics, msg.topic());
            let time = match &event {
                Ok(e) if !engine.is_ahead_of_clock(e.time().millis(), scorer.burst_wall_ms) => e.time().millis(),
                _ => Key::AT_ONCE,
            };
            ordered.merge.push(feed, msg.partition(), msg.offset(), time, (msg, event));
        }
        ordered.refresh_ends(consumer.client(), labels.client());
        // Until the group has given this instance partitions, the reports
        // wait too: they would otherwise go ahead of a backlog of transfers
        // dated before them (tansu can hand out an empty assignment first).
        // An instance left without partitions keeps at most a bounded pile.
        let assigned = consumer.context().assigned.load(Ordering::Relaxed);
        // The other instances' transfers that have arrived, before this
        // burst is scored (once this instance knows which partitions it
        // counts itself).
        if assigned != NOT_ASSIGNED {
            scorer.shared.read(&engine);
        }
        if (assigned != NOT_ASSIGNED && assigned > 0) || ordered.merge.len() >= MERGE_MAX_BUFFERED {
            ordered.drain(&mut scorer, health.is_broker_up());
        }
        scorer.shared.flush();
        if let Some(c) = &mut changelog {
            c.tick(&engine, &scorer.positions, &scorer.shared, &consumer.context().book().tracker, &metrics);
        }
        scorer.shared.retire_floors();
        lag.tick(&consumer, &opts.topics, &metrics);
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
    consumer.context().cancel_preparing();
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
    scorer.shared.finish(Duration::from_secs(5));
    scorer.summary.unfinished = pending() as u64;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit is also a "failure" here.
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
            tracing::warn!(error = %e, "final commit failed; the last messages will be delivered again");
        }
    }
    if let (Some(c), None, 0) = (&mut changelog, &failure, scorer.summary.unfinished) {
        let complete = {
            // The book's lock is let go before the revocation below takes it.
            let book = consumer.context().book();
            c.finish(&engine, &scorer.positions, &scorer.shared, &book.tracker, &metrics, opts.shutdown_timeout)
        };
        // The partitions go to the others first (the revocation is served
        // inside `poll`): the copy takes seconds at a million accounts, and
        // needs no partition.
        consumer.unsubscribe();
        let until = Instant::now() + Duration::from_secs(1);
        while consumer.context().assigned.load(Ordering::Relaxed) != NOT_ASSIGNED && Instant::now() < until {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        if let Some(dir) = &opts.state_dir {
            local::write_changelog_copy(dir, complete, &engine, c, &scorer.positions, &scorer.shared, &opts, &metrics);
        }
    } else if let (Some(dir), None, 0) = (&opts.state_dir, &failure, scorer.summary.unfinished) {
        local::write_offsets_copy(dir, &engine, &consumer, &inputs, &opts, &metrics);
    }
    consumer.unsubscribe();
    lag.revoked(&metrics);
    let summary = scorer.summary.clone();
    drop(scorer);
    stop.store(true, Ordering::Relaxed);
    drop(ordered);
    drop(labels);
    let _ = watcher.join();
    if let Ok(reading_back) = reading_back {
        let _ = reading_back.join();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// The feed a message of `topic` (one of the three inputs) arrives on.
fn feed_of(topics: &Topics, topic: &str) -> Feed {
    if topic == topics.transfers {
        Feed::Transfers
    } else if topic == topics.context_events {
        Feed::Context
    } else {
        Feed::Labels
    }
}
