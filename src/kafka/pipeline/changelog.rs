//! The state's changelog: what survives a crash, and what lets another
//! machine carry on.
//!
//! ## Design
//!
//! The only storage every instance shares is Kafka, so the state lives there
//! too, the way Kafka Streams keeps a store: a compacted topic (`state`,
//! partitioned like the inputs) holding the latest record of every entity,
//! keyed by its kind and key. Partition `j` holds the accounts of input
//! partition `j`, the payees and devices whose keys hash to `j`, and `j`'s
//! markers, all written by `j`'s owner (a Kafka Streams task owns its store
//! and changelog partition the same way). The scoring thread is the state's
//! only writer, so between two messages the state is exact as of known input
//! positions, and a checkpoint is taken there, every `checkpoint_interval`
//! (5 s):
//!
//! 1. the entities of the partitions owned that changed since the last
//!    checkpoint began ([`State::begin_checkpoint_of`]: each once, however
//!    often it changed, as the Kafka Streams record cache does; all of them
//!    when the partitions owned changed, since a partition taken over holds
//!    its previous owner's records, walked over a shard at a time rather than
//!    listed when the checkpoint begins) go to the topic as checked records, or as
//!    tombstones for entities swept by expiry, each tagged with the
//!    checkpoint's number (header `fds-checkpoint`). They are encoded a
//!    quarter of a millisecond's worth per turn of the scoring loop
//!    ([`State::checkpoint_step_until`]), so
//!    scoring never pauses for a whole checkpoint; an entity about to change
//!    before its turn is encoded first, as it was, so the checkpoint still
//!    holds the state of one moment;
//! 2. once all of them are acknowledged, *and* every input message before the
//!    checkpoint's positions has its outcome acknowledged (its decision is in
//!    `decisions`, its observation in `observations`: whoever restores from
//!    this checkpoint scores only what comes after, so what came before must
//!    be out for good), a marker record (key `@checkpoint`) per partition owned
//!    says the checkpoint is complete: its number, the partition's input
//!    positions, which transfers of each partition the shared tables had
//!    counted, where the observations reader stood, and the engine's
//!    expiry clocks. The next checkpoint starts after that. A revocation
//!    drops the open checkpoint unfinished ([`Changelog::abandon`]): its
//!    marker would claim partitions another instance now writes.
//!
//! Reading it back is `restore`'s: the shared tables at start, a partition's
//! accounts when it is assigned, each as of its partition's latest complete
//! checkpoint. The consumer then starts each input partition at the covered
//! position (or its committed offset, if that is earlier) and handles
//! everything after it again, through the same merge by event time: the
//! state learns exactly what it had learnt, in the same order, and every
//! transfer already decided is answered from the decision memory (read back
//! from `decisions`) with the bytes first sent, marked redelivered. A
//! transfer message the state already holds (below the covered position) is
//! not fed to it again; the same message beyond it is (see `handle`).
//!
//! Consistency without transactions (neither supported broker has them):
//! entity records are idempotent (the latest wins), the marker is written
//! only after the records and the decisions it covers are acknowledged, and
//! replaying input between the covered position and the crash cannot double
//! count, because the restored state holds nothing past that position. Fraud
//! reports are re-read from the start by every instance and apply
//! idempotently (a report is keyed by its transfer).
//!
//! Why this over the alternatives, measured here: a whole snapshot on Kafka
//! per checkpoint costs 113 MB at 100,000 accounts and stalls scoring for
//! 0.5-0.75 s to write (`examples/snapshot.rs`); the changed entities of a
//! 5 s checkpoint at 5,000 transfers/s are at most 3 x 25,000 records of about
//! 190 bytes, written by the producer's own thread while scoring goes on.
//! Rewinding the inputs (Flink's way) alone would need the whole 30-day
//! history replayed.
//!
//! Not guarded against: a zombie, an instance the group has given up on (a
//! stall longer than the session timeout) that still writes checkpoints of
//! partitions now owned by another. Kafka Streams fences it with
//! transactions, which neither supported broker has; here its records could
//! mix with the new owner's until it notices it lost the partitions.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;

use serde::{Deserialize, Serialize};

use super::*;
use crate::state::{EntityKind, EntityRecord};

/// The header on every changelog record: the checkpoint it belongs to.
pub(super) const HEADER_CHECKPOINT: &str = "fds-checkpoint";

/// The header on every changelog record: the state format version it is
/// written in ([`crate::state::FORMAT_VERSION`]); a restore refuses records
/// of another.
pub(super) const HEADER_FORMAT: &str = "fds-state-format";

/// The header on every changelog record: the writer (one number per
/// process, see [`Marker::writer`]).
pub(super) const HEADER_WRITER: &str = "fds-writer";

/// The key of the record that completes a partition's checkpoint.
pub(super) const MARKER_KEY: &[u8] = b"@checkpoint";

/// A complete checkpoint of one partition (the one it is written to): what
/// it covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Marker {
    pub(super) id: u64,
    pub(super) expiry_clock: i64,
    pub(super) last_expiry: i64,
    /// (topic, partition, next offset not in the state): the partition's
    /// transfers and context events.
    pub(super) positions: Vec<(String, i32, i64)>,
    /// Per transfers partition, the offset ranges `[from, to)` the shared
    /// tables had counted: the transfers the payees and devices of this
    /// partition's group hold.
    #[serde(default)]
    pub(super) counted: Vec<(i32, Vec<(i64, i64)>)>,
    /// Per `observations` partition, the next offset the writer had read:
    /// where a restore of this group resumes reading.
    #[serde(default)]
    pub(super) observed: Vec<(i32, i64)>,
    /// The writer's last whole checkpoint (every entity of the partition it
    /// held written again): records numbered below it are of entities it
    /// did not hold (swept, or written by a checkpoint that never completed)
    /// and are not restored.
    #[serde(default)]
    pub(super) since: u64,
    /// The process that wrote the checkpoint (random, drawn at its start;
    /// 0: not said). Checkpoint numbers of two owners can meet (each counts
    /// on from the last marker it saw), so between `since` and `id` only
    /// this writer's records count: a previous owner's unfinished
    /// checkpoint may carry the same numbers.
    #[serde(default)]
    pub(super) writer: u64,
    /// Where in this partition the writer's last whole checkpoint
    /// ([`Marker::since`]) begins: its lowest offset here. Nothing before it
    /// can be restored as of this marker (older checkpoints, other writers),
    /// so a restore that has found this marker in the partition's tail reads
    /// from here, not from the start: without it, a topic that is not (yet)
    /// compacted costs every restart the reading of every earlier one's
    /// whole checkpoint. `None` (no record of that checkpoint went here, or
    /// written by an earlier build): from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) from: Option<i64>,
}

/// The changelog producer's acknowledgements: how many records are still
/// unacknowledged, and whether one failed.
pub(super) struct ChangelogAcks {
    pending: Arc<AtomicI64>,
    failed: Arc<AtomicBool>,
    /// Per partition of `state`, the lowest offset acknowledged since the
    /// last whole checkpoint began (see [`Marker::from`]).
    lowest: Arc<[AtomicI64]>,
}

impl ClientContext for ChangelogAcks {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("changelog producer", level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error("changelog producer", None, error, reason)
    }
}

impl ProducerContext for ChangelogAcks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                if let Some(lowest) = usize::try_from(m.partition()).ok().and_then(|p| self.lowest.get(p)) {
                    lowest.fetch_min(m.offset(), Ordering::Relaxed);
                }
            }
            // The producer retries for ever (`message.timeout.ms=0`) what can
            // be retried; what comes back failed was refused by the broker.
            // Its checkpoint is abandoned (no marker: a restart uses the one
            // before) and the next one writes every entity.
            Err((e, _)) => {
                // Once per checkpoint, not once per record.
                if !self.failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "a changelog record was refused; the next checkpoint writes the whole state");
                }
            }
        }
        self.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long a checkpoint may stay open before `/readyz` calls checkpoints
/// failing: ten intervals, and two minutes more for a whole checkpoint of a
/// large state (6.4 million entities at a million accounts, written a
/// quarter of a millisecond per turn).
fn overdue(interval: Duration) -> Duration {
    interval * 10 + Duration::from_secs(120)
}

/// Checkpoints failing (a record refused) or overdue, or written again: a
/// warning on `/readyz` and `fds_state_checkpoint_failing`, which an alert
/// watches (decisions go on, but a restart would re-read the input since the
/// last complete checkpoint, or forget what the input no longer holds).
fn failing(health: &Health, metrics: &Metrics, yes: bool) {
    health.set_checkpoint_failing(yes);
    metrics.state_checkpoint_failing.set(i64::from(yes));
}

/// Where each input partition stands: the next offset whose message the
/// state has not learnt.
pub(super) type Positions = HashMap<(Feed, i32), i64>;

/// The writer: one checkpoint at a time.
pub(super) struct Changelog {
    producer: ThreadedProducer<ChangelogAcks>,
    /// Told when checkpoints fail or are overdue, and when one is written
    /// again (see [`Health::set_checkpoint_failing`]).
    health: Arc<Health>,
    pending: Arc<AtomicI64>,
    failed: Arc<AtomicBool>,
    /// See [`ChangelogAcks::lowest`]: reset when a whole checkpoint begins
    /// (an abandoned checkpoint's records acknowledged after that only make
    /// it lower, which costs a restore some reading, never a record).
    lowest: Arc<[AtomicI64]>,
    /// Per partition of `state`, where the last whole checkpoint completed
    /// begins ([`Marker::from`]).
    from: HashMap<i32, i64>,
    /// The next checkpoint writes every entity, not only the changed ones.
    whole: bool,
    /// The partitions the last checkpoint was of: when they change, the
    /// next writes every entity of the new set (a partition taken over
    /// holds records of its previous owner's checkpoints).
    last_owned: Vec<i32>,
    /// The number of the last whole checkpoint begun (see [`Marker::since`]).
    since: u64,
    /// This process (see [`Marker::writer`]), and as a header value.
    writer: u64,
    writer_header: String,
    topic: String,
    partitions: u32,
    interval: Duration,
    last: Instant,
    next_id: u64,
    /// The last checkpoint that completed (0: none yet).
    completed: u64,
    open: Option<Open>,
    records: Vec<EntityRecord>,
    key: Vec<u8>,
}

/// The time a turn of the scoring loop may spend encoding a checkpoint's
/// entities (the sends to the producer come on top, about 1 µs each).
/// Measured at 5,000 transfers/s on the 100k-account stream, a fixed 128
/// entities per turn took 0.5-1.1 ms; by time, the scoring thread's CPU per
/// turn stays near this (wall time is longer when the host preempts it). The
/// scoring loop turns at least every 5 ms (`IDLE_WAIT`), far more often under
/// load, so a checkpoint still finishes within its interval.
const STEP_BUDGET: Duration = Duration::from_micros(200);

struct Open {
    id: u64,
    /// One marker per partition owned, to that partition.
    markers: Vec<(i32, Marker)>,
    /// Every record handed to the producer.
    handed: bool,
    /// The longest the scoring thread spent on this checkpoint at once.
    longest_turn: Duration,
    /// The same in the thread's own CPU time (see [`thread_cpu`]).
    longest_turn_cpu: Duration,
    /// Positions the decisions must have reached before the marker goes.
    waits_for: Vec<(Feed, i32, i64)>,
    /// The last observations batch the marker waits for (see
    /// [`SharedTables::delivered`]).
    observations: Option<u64>,
    started: Instant,
    marker_sent: bool,
    entities: usize,
    bytes: usize,
}

impl Changelog {
    /// A writer. Checkpoints are numbered by the wall clock at start (ms),
    /// then one up each: numbers keep growing across restarts without being
    /// read back (a refused restore cannot know the last one).
    pub(super) fn new(
        opts: &PipelineOptions,
        interval: Duration,
        partitions: u32,
        health: Arc<Health>,
    ) -> Result<Self, PipelineError> {
        let next_id = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(1);
        // Random per process (std's hasher keys are drawn from the OS), never 0.
        let writer = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish().max(1)
        };
        let pending = Arc::new(AtomicI64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let lowest: Arc<[AtomicI64]> = (0..partitions).map(|_| AtomicI64::new(i64::MAX)).collect();
        let producer: ThreadedProducer<ChangelogAcks> = opts
            .connection
            // Not the idempotent producer: an entity record written twice
            // changes nothing (the latest wins), and one request in flight
            // per broker keeps a retry from landing after a newer record.
            // tansu 0.6 also panics on an idempotent producer's first write
            // to a partition after the broker restarted, which took the broker
            // down for every client.
            .client_config(&[
                ("enable.idempotence", "false"),
                ("max.in.flight.requests.per.connection", "1"),
                ("acks", "all"),
                ("message.timeout.ms", "0"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
            ])
            .create_with_context(ChangelogAcks {
                pending: pending.clone(),
                failed: failed.clone(),
                lowest: lowest.clone(),
            })
            .map_err(|source| PipelineError::Client {
                role: "changelog producer",
                brokers: opts.connection.brokers.clone(),
                source,
            })?;
        Ok(Changelog {
            producer,
            pending,
            failed,
            lowest,
            from: HashMap::new(),
            health,
            whole: false,
            last_owned: Vec::new(),
            since: 0,
            writer,
            writer_header: writer.to_string(),
            topic: opts.topics.state.clone(),
            partitions,
            interval,
            last: Instant::now(),
            next_id,
            completed: 0,
            open: None,
            records: Vec::new(),
            key: Vec::new(),
        })
    }

    /// Move the checkpoint on: finish the open one when its records and the
    /// decisions it covers are acknowledged, or start the next when it is
    /// due. Called by the scoring thread between messages.
    pub(super) fn tick(
        &mut self,
        engine: &Engine,
        positions: &Positions,
        shared: &SharedTables,
        tracker: &OffsetTracker,
        metrics: &Metrics,
    ) {
        let started = Instant::now();
        let cpu = self.open.as_ref().map(|_| thread_cpu());
        self.turn(engine, positions, shared, tracker, metrics);
        if let Some(open) = &mut self.open {
            open.longest_turn = open.longest_turn.max(started.elapsed());
            if let Some(cpu) = cpu {
                open.longest_turn_cpu = open.longest_turn_cpu.max(thread_cpu().saturating_sub(cpu));
            }
        }
    }

    fn turn(
        &mut self,
        engine: &Engine,
        positions: &Positions,
        shared: &SharedTables,
        tracker: &OffsetTracker,
        metrics: &Metrics,
    ) {
        if let Some(open) = &mut self.open {
            // The producer retries what can be retried for ever, so a broker
            // that keeps failing to store records shows as a checkpoint
            // that never completes rather than as a refusal.
            if open.started.elapsed() > overdue(self.interval) {
                failing(&self.health, metrics, true);
            }
            if !open.handed || !self.records.is_empty() {
                if self.records.is_empty() {
                    let until = Instant::now() + STEP_BUDGET;
                    open.handed = engine.state().checkpoint_step_until(until, &mut self.records);
                    // Other instances' partitions are theirs to write (see
                    // `State::begin_checkpoint_of`).
                    let (owned, partitions) = (&self.last_owned, self.partitions);
                    self.records.retain(|((_, key), _)| owned_key(owned, partitions, key));
                }
                let checkpoint = open.id.to_string();
                let stamp = Stamp { checkpoint: &checkpoint, writer: &self.writer_header };
                let mut done = 0;
                for ((kind, key), value) in &self.records {
                    let partition = crate::input::order::partition_for(key.as_bytes(), self.partitions);
                    self.key.clear();
                    self.key.push(kind_tag(*kind));
                    self.key.extend_from_slice(key.as_bytes());
                    match send(
                        &self.producer,
                        &self.pending,
                        &self.topic,
                        &self.key,
                        value.as_deref(),
                        partition,
                        &stamp,
                    ) {
                        Sent::Full => break,
                        Sent::Refused => self.failed.store(true, Ordering::Relaxed),
                        Sent::Yes => {}
                    }
                    open.bytes += value.as_ref().map_or(0, Vec::len);
                    open.entities += 1;
                    done += 1;
                }
                self.records.drain(..done);
                return;
            }
            if self.pending.load(Ordering::Relaxed) > 0 {
                return;
            }
            if self.failed.swap(false, Ordering::Relaxed) {
                metrics.state_checkpoints.with_label_values(&["failed"]).inc();
                failing(&self.health, metrics, true);
                self.open = None;
                self.whole = true;
                self.last = Instant::now();
                return;
            }
            if !open.marker_sent {
                if !open.waits_for.iter().all(|&(t, p, pos)| tracker.finished_below(t, p, pos))
                    || !shared.delivered(open.observations)
                {
                    return;
                }
                if open.id == self.since {
                    // Every record of the whole checkpoint is acknowledged.
                    self.from = (0..)
                        .zip(self.lowest.iter())
                        .map(|(p, o)| (p, o.load(Ordering::Relaxed)))
                        .filter(|&(_, o)| o < i64::MAX)
                        .collect();
                }
                let id = open.id.to_string();
                let stamp = Stamp { checkpoint: &id, writer: &self.writer_header };
                while let Some((partition, marker)) = open.markers.last_mut() {
                    marker.from = self.from.get(partition).copied();
                    let value = serde_json::to_vec(marker).expect("a marker serializes");
                    match send(&self.producer, &self.pending, &self.topic, MARKER_KEY, Some(&value), *partition, &stamp)
                    {
                        Sent::Full => return,
                        Sent::Refused => self.failed.store(true, Ordering::Relaxed),
                        Sent::Yes => {}
                    }
                    open.markers.pop();
                }
                open.marker_sent = true;
                return;
            }
            metrics.state_checkpoints.with_label_values(&["written"]).inc();
            failing(&self.health, metrics, false);
            metrics.state_checkpoint_pause_seconds.set(open.longest_turn.as_secs_f64());
            tracing::debug!(
                checkpoint = open.id,
                entities = open.entities,
                bytes = open.bytes,
                ms = open.started.elapsed().as_millis() as u64,
                longest_turn_us = open.longest_turn.as_micros() as u64,
                longest_turn_cpu_us = open.longest_turn_cpu.as_micros() as u64,
                "state checkpoint complete"
            );
            self.completed = open.id;
            self.open = None;
            self.last = Instant::now();
            return;
        }
        // Before any partition is assigned there is nothing to cover.
        if self.last.elapsed() < self.interval || shared.owned().next().is_none() {
            return;
        }
        self.begin(engine, positions, shared);
    }

    fn begin(&mut self, engine: &Engine, positions: &Positions, shared: &SharedTables) {
        let id = self.next_id;
        self.next_id += 1;
        let mut owned: Vec<i32> = shared.owned().collect();
        owned.sort_unstable();
        // After a refused record, or when the partitions owned changed:
        // every entity, so none is left at an older version than the state
        // holds.
        let whole = std::mem::take(&mut self.whole) || owned != self.last_owned;
        if whole {
            self.since = id;
            self.from.clear();
            for lowest in self.lowest.iter() {
                lowest.store(i64::MAX, Ordering::Relaxed);
            }
        }
        let partitions = self.partitions;
        let mine = owned.clone();
        engine.state().begin_checkpoint_of(whole, Box::new(move |_, key| owned_key(&mine, partitions, key)));
        let clocks = engine.expiry_clocks();
        let observed = shared.read_positions();
        let mut markers = Vec::new();
        let mut waits_for = Vec::new();
        for &partition in &owned {
            let mut covered: Vec<(String, i32, i64)> = Vec::new();
            for feed in [Feed::Transfers, Feed::Context] {
                if let Some(&next) = positions.get(&(feed, partition)) {
                    covered.push((feed.name().to_owned(), partition, next));
                    waits_for.push((feed, partition, next));
                }
            }
            let marker = Marker {
                id,
                expiry_clock: clocks.expiry_clock,
                last_expiry: clocks.last_expiry,
                positions: covered,
                counted: shared.counted_in(partition),
                observed: observed.clone(),
                since: self.since,
                writer: self.writer,
                from: None,
            };
            markers.push((partition, marker));
        }
        self.last_owned = owned;
        self.open = Some(Open {
            id,
            markers,
            handed: false,
            longest_turn: Duration::ZERO,
            longest_turn_cpu: Duration::ZERO,
            waits_for,
            observations: shared.cut(),
            started: Instant::now(),
            marker_sent: false,
            entities: 0,
            bytes: 0,
        });
    }

    /// The partitions owned changed (a revocation): the open checkpoint, of
    /// the partitions owned before, is dropped unfinished (its marker would
    /// now claim partitions another instance writes), and the next one
    /// writes every entity of the partitions owned then.
    pub(super) fn abandon(&mut self, engine: &Engine) {
        if self.open.take().is_some() {
            engine.state().abandon_checkpoint();
            self.records.clear();
            tracing::debug!("the open state checkpoint is dropped: partitions were revoked");
        }
        self.whole = true;
    }

    /// Number the next checkpoint past `id` (one restored from the changelog:
    /// a partition's checkpoints must keep growing across owners).
    pub(super) fn continue_after(&mut self, id: u64) {
        self.next_id = self.next_id.max(id + 1);
    }

    /// Wait (up to `timeout`) for the open checkpoint to complete, then
    /// write one of everything since, as at a graceful stop after the last
    /// decisions are acknowledged. Returns whether that last one completed.
    #[allow(clippy::too_many_arguments)] // tick's arguments and a deadline
    pub(super) fn finish(
        &mut self,
        engine: &Engine,
        positions: &Positions,
        shared: &SharedTables,
        tracker: &OffsetTracker,
        metrics: &Metrics,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_begun = None;
        loop {
            if self.open.is_none() {
                if let Some(id) = last_begun {
                    return self.completed == id;
                }
                if shared.owned().next().is_none() {
                    return false;
                }
                last_begun = Some(self.next_id);
                self.begin(engine, positions, shared);
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "the last state checkpoint did not complete; the next start replays from the one before"
                );
                return false;
            }
            if self.open.as_ref().is_some_and(|o| o.handed) {
                let _ = self.producer.flush(Duration::from_millis(50));
            }
            self.tick(engine, positions, shared, tracker, metrics);
        }
    }

    /// This process as a writer (see [`Marker::writer`]).
    pub(super) fn writer(&self) -> u64 {
        self.writer
    }

    /// The number of the last checkpoint begun.
    pub(super) fn last_id(&self) -> u64 {
        self.next_id.saturating_sub(1)
    }

    /// Partitions of `state`.
    pub(super) fn partitions(&self) -> u32 {
        self.partitions
    }
}

/// What became of a record handed to [`send`].
#[derive(PartialEq)]
enum Sent {
    /// Queued (counted in `pending` until acknowledged).
    Yes,
    /// The producer's queue is full (the broker slow or away): try again
    /// next turn, never wait here.
    Full,
    /// Refused for good.
    Refused,
}

/// The headers every record of a checkpoint carries.
struct Stamp<'a> {
    checkpoint: &'a str,
    writer: &'a str,
}

/// Hand one changelog record to the producer, without waiting.
fn send(
    producer: &ThreadedProducer<ChangelogAcks>,
    pending: &AtomicI64,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
    partition: i32,
    stamp: &Stamp<'_>,
) -> Sent {
    let headers = OwnedHeaders::new()
        .insert(Header { key: HEADER_CHECKPOINT, value: Some(stamp.checkpoint) })
        .insert(Header { key: HEADER_WRITER, value: Some(stamp.writer) })
        .insert(Header { key: HEADER_FORMAT, value: Some(FORMAT.as_str()) });
    let mut record: BaseRecord<'_, [u8], [u8], ()> =
        BaseRecord::to(topic).key(key).partition(partition).headers(headers);
    if let Some(v) = value {
        record = record.payload(v);
    }
    pending.fetch_add(1, Ordering::Relaxed);
    match producer.send(record) {
        Ok(()) => Sent::Yes,
        Err((e, _)) => {
            pending.fetch_sub(1, Ordering::Relaxed);
            if let KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) = e {
                return Sent::Full;
            }
            tracing::error!(error = %e, %topic, "cannot write to the state changelog");
            Sent::Refused
        }
    }
}

/// The calling thread's CPU time. A turn's wall time on a busy machine is
/// mostly the host running something else; this is what the turn itself
/// cost the scoring thread.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` only writes the `timespec` it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// [`HEADER_FORMAT`]'s value.
static FORMAT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| crate::state::FORMAT_VERSION.to_string());

pub(super) fn kind_tag(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::Account => b'a',
        EntityKind::Payee => b'p',
        EntityKind::Device => b'd',
    }
}

/// Whether an entity's key falls in one of the partitions `owned` (sorted)
/// of `partitions`: only those are this instance's to write.
fn owned_key(owned: &[i32], partitions: u32, key: &str) -> bool {
    owned.binary_search(&crate::input::order::partition_for(key.as_bytes(), partitions)).is_ok()
}
