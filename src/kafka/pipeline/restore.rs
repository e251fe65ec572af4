//! Reading the state back from its changelog (see `changelog` for how it is
//! written): the shared tables at start, a partition's accounts whenever the
//! partition is assigned.
//!
//! Partition `j` of `state` holds the accounts of input partition `j`, the
//! payees and devices whose keys hash to `j` (their group), and the markers
//! of `j`'s checkpoints, all written by `j`'s owner. Per partition, the
//! latest marker is its latest complete checkpoint, and each entity is taken
//! as of it ([`Versions`]): a checkpoint cut short by a crash, or dropped by
//! an instance that lost the partition, is ignored whole.
//!
//! - **At start** every partition is read for its payees and devices: each
//!   instance holds the whole shared tables. Each group comes from its own
//!   owner's checkpoint, so the groups stand at different points of the
//!   input; the marker says where ([`Marker::counted`]), and the shared
//!   tables count a transfer in a payee or device only past its group's
//!   point (`shared::SharedStart`). The accounts read meanwhile are kept
//!   aside ([`StartAccounts`]) for the first assignment.
//! - **When partitions are assigned** (at start, and when another instance
//!   dies or leaves) their accounts are restored before any of their
//!   messages is handled, on a thread of their own while the partitions are
//!   paused (see `group::Preparing`), and the partitions are rewound to the
//!   checkpoint's positions. The first assignment takes them from what the
//!   start read where their partition of `state` has not moved since.
//!
//! Each partition is read from where its writer's last whole checkpoint
//! begins ([`Marker::from`], found by reading the partition's tail first),
//! not from its start: nothing before it counts as of the latest marker,
//! and a topic not compacted yet (Kafka compacts only closed segments;
//! tansu 0.6 never) would otherwise cost every restart the reading of every
//! earlier start's whole checkpoint. Measured on tansu at 100,000 accounts
//! (one partition, restarted again and again): the restore read 350 MB,
//! then 460, 580, 690 and 800 MB, 11 to 32 s a pass, growing with each
//! restart; from the last whole checkpoint, 114 MB and 6-7 s, every time.

use std::collections::HashMap;

use compact_str::CompactString;

use super::changelog::{kind_tag, Marker, HEADER_CHECKPOINT, HEADER_FORMAT, HEADER_WRITER, MARKER_KEY};
use super::ledger::Counted;
use super::*;
use crate::state::{EntityKind, ExpiryClocks, SnapshotError, FORMAT_VERSION};

/// What a read of the changelog found.
#[derive(Debug, Default)]
pub(super) struct Restored {
    /// The input partitions whose accounts this restore is of (none for the
    /// shared tables).
    pub(super) partitions: Vec<i32>,
    /// Per partition, its latest complete checkpoint.
    pub(super) markers: HashMap<i32, Marker>,
    /// Entities put in the state.
    pub(super) entities: u64,
    /// Bytes read.
    pub(super) bytes: u64,
    /// Records refused (see [`read_state`]).
    pub(super) refused: u64,
    /// The highest checkpoint number on a record read.
    pub(super) highest: u64,
    /// Per partition of `state` read, the end it was read to.
    pub(super) ends: HashMap<i32, i64>,
}

/// The accounts of every partition, read at start beside the shared tables
/// (which need every partition read) and not put in the state: the first
/// partitions assigned take theirs from here where their `state` partition
/// has not moved since, instead of reading it a second time. What that
/// costs: each instance holds every partition's account records until its
/// first assignment, about what one partition's accounts take in the state
/// times the partitions, then lets go of the others'.
pub(super) struct StartAccounts {
    versions: VersionsRead,
    markers: HashMap<i32, Marker>,
    ends: HashMap<i32, i64>,
    highest: u64,
}

impl Restored {
    /// What the shared tables start from (see [`SharedStart`]), with
    /// `groups` partitions of `state`. A group without a checkpoint holds
    /// nothing, so then every observation still kept is read.
    pub(super) fn shared_start(&self, groups: u32) -> SharedStart {
        let mut start = SharedStart::default();
        for (&group, m) in &self.markers {
            let floors = m.counted.iter().map(|(p, ranges)| (*p, Counted::from_ranges(ranges.iter().copied())));
            start.floors.insert(group, floors.collect());
            for &(p, from) in &m.observed {
                let r = start.read_from.entry(p).or_insert(from);
                *r = (*r).min(from);
            }
        }
        let missing = (0..groups as i32).filter(|g| !self.markers.contains_key(g)).count();
        if missing > 0 && !self.markers.is_empty() {
            tracing::info!(
                missing,
                "some payee and device groups have no checkpoint yet; reading every observation kept"
            );
            start.read_from.clear();
        }
        start
    }

    /// Take in another restore's partitions (accounts from the local copy
    /// beside those read from the changelog).
    pub(super) fn absorb(&mut self, other: Restored) {
        self.partitions.extend(other.partitions);
        self.markers.extend(other.markers);
        self.entities += other.entities;
        self.bytes += other.bytes;
        self.refused += other.refused;
        self.highest = self.highest.max(other.highest);
        self.ends.extend(other.ends);
    }

    /// The input positions the restored accounts cover.
    pub(super) fn positions(&self) -> Positions {
        self.markers.values().flat_map(positions_of).collect()
    }

    /// The highest checkpoint number seen, on a marker or a record: the
    /// next one written must be past it.
    pub(super) fn last_id(&self) -> u64 {
        self.markers.values().map(|m| m.id).max().unwrap_or(0).max(self.highest)
    }
}

/// Read the partitions of `state` that `which` picks to their end and put
/// the entities of the kinds `wanted` picks in the state, as of each
/// partition's latest complete checkpoint.
///
/// Each partition is read from where its writer's last whole checkpoint
/// begins ([`Marker::from`], found in its tail by [`read_starts`]), not from
/// its start: records before it cannot count as of the latest marker. Should
/// the marker the whole read settles on not be the one the tail named (a
/// marker numbered higher further back), the partitions are read again from
/// their start.
///
/// A record that cannot be used (corrupt or cut short, written by another
/// state format version, malformed) is refused on its own: logged with its
/// topic, partition and offset, counted in
/// `fds_state_restore_records_refused_total`, and its entity falls back to
/// the record before it (an older checkpoint of that entity), or to nothing
/// when there is none. A marker that cannot be used leaves its partition at
/// the latest marker that can (none: nothing restored there, its input
/// handled from the committed offset). The rest of the state is restored
/// either way: one bad record costs one entity's recent history, not every
/// account's. `Err` only when the topic cannot be read to its end.
///
/// The records of the kinds `keep` picks are read but returned, not put in
/// the state (see [`StartAccounts`]).
fn read_state(
    opts: &PipelineOptions,
    engine: &Engine,
    metrics: &Metrics,
    stop: &StopFlag,
    which: impl Fn(i32) -> bool,
    wanted: impl Fn(EntityKind) -> bool,
    keep: impl Fn(EntityKind) -> bool,
) -> Result<(Restored, VersionsRead), String> {
    let wanted = |k| wanted(k) || keep(k);
    let mut refusals = Refusals::new(metrics, &opts.topics.state);
    let starts = read_starts(opts, &which, stop)?;
    let (mut restored, mut versions) = read_versions(opts, &mut refusals, stop, &which, &wanted, &starts)?;
    let skipped_too_much =
        starts.iter().any(|(p, &from)| !restored.markers.get(p).is_some_and(|m| m.from.is_some_and(|f| f >= from)));
    if skipped_too_much {
        tracing::warn!(topic = %opts.topics.state, "the latest checkpoint is not the one the tail named; reading from the start");
        (restored, versions) = read_versions(opts, &mut refusals, stop, &which, &wanted, &HashMap::new())?;
    }
    let (kept, versions): (VersionsRead, VersionsRead) = versions.into_iter().partition(|((_, k, _), _)| keep(*k));
    restored.entities += apply(engine, versions, &restored.markers, &mut refusals);
    refusals.finish();
    restored.refused = refusals.count;
    Ok((restored, kept))
}

/// Put each entity of `versions` in the state as of its partition's marker
/// (the record before it where that one is refused); also the expiry clocks
/// of the newest marker, where sweeps go on from. Returns the entities put.
fn apply(engine: &Engine, versions: VersionsRead, markers: &HashMap<i32, Marker>, refusals: &mut Refusals<'_>) -> u64 {
    let state = engine.state();
    let mut entities = 0;
    for ((partition, kind, key), versions) in versions {
        let Some(marker) = markers.get(&partition) else { continue };
        for version in versions.as_of(marker) {
            let Some(record) = &version.record else { break };
            match state.apply_record(record, (kind, &key)) {
                Ok(()) => {
                    entities += 1;
                    break;
                }
                Err(e) => {
                    let reason = match e {
                        SnapshotError::Checksum { .. } | SnapshotError::Truncated { .. } => Refused::Checksum,
                        SnapshotError::Version { .. } => Refused::Format,
                        _ => Refused::Malformed,
                    };
                    refusals.refuse(reason, partition, version.offset, &format!("a {kind:?} record: {e}"));
                }
            }
        }
    }
    if let Some(m) = markers.values().max_by_key(|m| m.id) {
        let clocks = ExpiryClocks { expiry_clock: m.expiry_clock, last_expiry: m.last_expiry };
        if clocks.expiry_clock > engine.expiry_clocks().expiry_clock {
            engine.set_expiry_clocks(clocks);
        }
    }
    entities
}

/// Records read first from the end of a partition of `state` when looking
/// for its latest marker; four times more each time none is there. A
/// checkpoint's records come before its marker: at 5,000 transfers/s a 5 s
/// checkpoint writes up to 75,000, usually far fewer.
const TAIL: i64 = 16_384;

/// Per partition of `state` that `which` picks, where a restore reads from:
/// the [`Marker::from`] of the latest marker in the partition's tail. Absent:
/// from the start (no marker, or one without `from`).
fn read_starts(
    opts: &PipelineOptions,
    which: &impl Fn(i32) -> bool,
    stop: &StopFlag,
) -> Result<HashMap<i32, i64>, String> {
    let topic = &opts.topics.state;
    let format = FORMAT_VERSION.to_string();
    let mut starts = HashMap::new();
    let mut looking: Option<Vec<i32>> = None;
    let (mut tail, mut bytes) = (TAIL, 0u64);
    loop {
        // Per partition read: whether the window held all of it.
        let whole = std::cell::RefCell::new(HashMap::new());
        let mut latest: HashMap<i32, Marker> = HashMap::new();
        // A consumer per read: assigning another set of partitions to one
        // still starting the last trips an assertion in librdkafka 2.12.
        let consumer = restore_consumer(opts)?;
        let complete = read_to_end(
            &consumer,
            topic,
            |p| which(p) && looking.as_ref().map_or(true, |l| l.contains(&p)),
            |p, low, high| {
                let from = (high - tail).max(low);
                whole.borrow_mut().insert(p, from == low);
                from
            },
            stop,
            READ_BACK_LIMIT,
            |m| {
                bytes += m.payload().map_or(0, |p| p.len() as u64);
                if m.key() != Some(MARKER_KEY) || !readable_format(header(m, HEADER_FORMAT), &format) {
                    return;
                }
                if let Some(Ok(found)) = m.payload().map(serde_json::from_slice::<Marker>) {
                    let latest = latest.entry(m.partition()).or_insert_with(|| found.clone());
                    if found.id > latest.id {
                        *latest = found;
                    }
                }
            },
        );
        if !complete {
            return Err(format!("could not read the tail of topic {topic}"));
        }
        let mut still = Vec::new();
        for (p, whole) in whole.into_inner() {
            match latest.get(&p) {
                Some(m) => {
                    if let Some(from) = m.from {
                        starts.insert(p, from);
                    }
                }
                None if whole => {}
                None => still.push(p),
            }
        }
        if still.is_empty() {
            tracing::debug!(%topic, ?starts, bytes, "where the restore reads from, found in the tail");
            return Ok(starts);
        }
        looking = Some(still);
        tail = tail.saturating_mul(4);
    }
}

/// A consumer of `state` for one read.
fn restore_consumer(opts: &PipelineOptions) -> Result<BaseConsumer<Quiet>, String> {
    reader(opts, "state-restore", "state restore", &[]).map_err(|e| format!("cannot create the restore consumer: {e}"))
}

/// Whether a record in state format `found` (its header) reads with this
/// build's `format`: records from before the header said it are version 1.
fn readable_format(found: Option<&str>, format: &str) -> bool {
    match found {
        Some(f) => f == format,
        None => format == "1",
    }
}

/// Per (partition, entity kind, key), its records read (see [`Versions`]).
type VersionsRead = HashMap<(i32, EntityKind, CompactString), Versions>;

/// Read the partitions `which` picks, each from `starts` (else its start),
/// to their end: the markers, and the records of the entities `wanted`
/// picks.
fn read_versions(
    opts: &PipelineOptions,
    refusals: &mut Refusals<'_>,
    stop: &StopFlag,
    which: &impl Fn(i32) -> bool,
    wanted: &impl Fn(EntityKind) -> bool,
    starts: &HashMap<i32, i64>,
) -> Result<(Restored, VersionsRead), String> {
    let mut versions: VersionsRead = HashMap::new();
    let mut restored = Restored::default();
    let topic = &opts.topics.state;
    let format = FORMAT_VERSION.to_string();
    // Markers and keys that name no entity are reported by the pass that
    // restores the shared tables, which reads every partition at start; the
    // accounts' passes read the same records again.
    let reports_all = wanted(EntityKind::Payee);
    let ends = std::cell::RefCell::new(HashMap::new());
    let consumer = restore_consumer(opts)?;
    let complete = read_to_end(
        &consumer,
        topic,
        which,
        |p, low, high| {
            ends.borrow_mut().insert(p, high);
            starts.get(&p).copied().unwrap_or(low)
        },
        stop,
        READ_BACK_LIMIT,
        |m| {
            restored.bytes += m.payload().map_or(0, |p| p.len() as u64);
            let (partition, offset) = (m.partition(), m.offset());
            let key = m.key().unwrap_or_default();
            let kind = match key.first() {
                _ if key == MARKER_KEY => None,
                Some(&t) if t == kind_tag(EntityKind::Account) => Some(EntityKind::Account),
                Some(&t) if t == kind_tag(EntityKind::Payee) => Some(EntityKind::Payee),
                Some(&t) if t == kind_tag(EntityKind::Device) => Some(EntityKind::Device),
                _ if reports_all => {
                    return refusals.refuse(Refused::Malformed, partition, offset, "a key that names no entity")
                }
                _ => return,
            };
            if kind.is_some_and(|k| !wanted(k)) {
                return;
            }
            let found = header(m, HEADER_FORMAT);
            if !readable_format(found, &format) {
                if kind.is_none() && !reports_all {
                    return;
                }
                let why = format!("state format {}, this build reads {format}", found.unwrap_or("not given"));
                return refusals.refuse(Refused::Format, partition, offset, &why);
            }
            let Some(kind) = kind else {
                match m.payload().map(serde_json::from_slice::<Marker>) {
                    Some(Ok(found)) => {
                        let latest = restored.markers.entry(partition).or_insert_with(|| found.clone());
                        if found.id > latest.id {
                            *latest = found;
                        }
                    }
                    _ if !reports_all => {}
                    Some(Err(e)) => {
                        refusals.refuse(Refused::Malformed, partition, offset, &format!("a checkpoint marker: {e}"))
                    }
                    None => refusals.refuse(Refused::Malformed, partition, offset, "an empty checkpoint marker"),
                }
                return;
            };
            let Ok(name) = std::str::from_utf8(&key[1..]) else {
                return refusals.refuse(Refused::Malformed, partition, offset, "a key that is not UTF-8");
            };
            let Some(id) = header(m, HEADER_CHECKPOINT).and_then(|h| h.parse::<u64>().ok()) else {
                return refusals.refuse(Refused::Malformed, partition, offset, "no checkpoint header");
            };
            restored.highest = restored.highest.max(id);
            let writer = header(m, HEADER_WRITER).and_then(|h| h.parse::<u64>().ok()).unwrap_or(0);
            let version = Version { checkpoint: id, writer, offset, record: m.payload().map(<[u8]>::to_vec) };
            let settled = restored.markers.get(&partition).map_or(0, |m| m.id);
            match versions.get_mut(&(partition, kind, CompactString::from(name))) {
                Some(v) => v.add(version, settled),
                None => {
                    versions.insert((partition, kind, CompactString::from(name)), Versions::new(version));
                }
            }
        },
    );
    if !complete {
        return Err(format!("could not read topic {topic} to its end"));
    }
    restored.ends = ends.into_inner();
    Ok((restored, versions))
}

/// Why a changelog record was refused: the metric's `reason`.
#[derive(Debug, Clone, Copy)]
enum Refused {
    Checksum,
    Format,
    Malformed,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Checksum => "checksum",
            Refused::Format => "format",
            Refused::Malformed => "malformed",
        }
    }
}

/// The records a restore refused: each counted, the first few logged one by
/// one (a changelog written by another version would otherwise log every
/// record), the rest summed up at the end.
struct Refusals<'a> {
    metrics: &'a Metrics,
    topic: &'a str,
    count: u64,
}

/// Refused records logged one by one per restore, at most.
const REFUSALS_LOGGED: u64 = 20;

impl<'a> Refusals<'a> {
    fn new(metrics: &'a Metrics, topic: &'a str) -> Self {
        Refusals { metrics, topic, count: 0 }
    }

    fn refuse(&mut self, reason: Refused, partition: i32, offset: i64, why: &str) {
        self.metrics.state_records_refused.with_label_values(&[reason.label()]).inc();
        self.count += 1;
        if self.count <= REFUSALS_LOGGED {
            tracing::warn!(
                topic = %self.topic, partition, offset, reason = reason.label(),
                "a state record refused: {why}; its entity falls back to its record before"
            );
        }
    }

    fn finish(&self) {
        if self.count > REFUSALS_LOGGED {
            tracing::warn!(
                topic = %self.topic,
                refused = self.count,
                "{} more state records refused (see fds_state_restore_records_refused_total)",
                self.count - REFUSALS_LOGGED
            );
        }
    }
}

/// At start: the payees and devices of every group, before anything is
/// consumed. `/readyz` answers 503 `restoring state` meanwhile. A changelog
/// that does not read leaves the shared tables empty, with the reason logged
/// and counted (`fds_state_restores_total{result="refused"}`).
pub(super) fn restore_shared(
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
    health: &Health,
    stop: &StopFlag,
) -> (Restored, Option<StartAccounts>) {
    health.set_restoring(true);
    let started = Instant::now();
    tracing::info!(topic = %opts.topics.state, "restoring the shared payee and device tables from the changelog");
    let account = |k| k == EntityKind::Account;
    let result = read_state(opts, engine, metrics, stop, |_| true, |k| !account(k), account);
    health.set_restoring(false);
    let (result, accounts) = match result {
        Ok((r, versions)) => {
            let accounts =
                StartAccounts { versions, markers: r.markers.clone(), ends: r.ends.clone(), highest: r.highest };
            (Ok(r), Some(accounts))
        }
        Err(e) => (Err(e), None),
    };
    (finish("shared tables", result, started, engine, opts, metrics).unwrap_or_default(), accounts)
}

/// When partitions are assigned: their accounts, in place of whatever this
/// instance still held of them, before any of their messages is handled;
/// from `at_start` (see [`StartAccounts`]) where they still stand, else read
/// from the changelog.
#[allow(clippy::too_many_arguments)] // the restore's context, and what the read at start holds
pub(super) fn restore_accounts(
    partitions: &[i32],
    groups: u32,
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
    health: &Health,
    stop: &StopFlag,
    at_start: Option<StartAccounts>,
) -> Restored {
    health.set_restoring(true);
    let started = Instant::now();
    let ours = |key: &str| partitions.contains(&crate::input::order::partition_for(key.as_bytes(), groups));
    let forgotten = engine.state().forget_accounts(ours);
    tracing::info!(?partitions, forgotten, "restoring the accounts of the partitions assigned");
    let (mut taken, to_read) = match at_start {
        Some(at_start) => take_from_start(at_start, partitions, engine, opts, metrics),
        None => (Restored::default(), partitions.to_vec()),
    };
    let result = if to_read.is_empty() {
        Ok(taken)
    } else {
        let read = |p| to_read.contains(&p);
        read_state(opts, engine, metrics, stop, read, |k| k == EntityKind::Account, |_| false).map(|(r, _)| {
            taken.absorb(r);
            taken
        })
    };
    health.set_restoring(false);
    let mut restored = match finish("accounts", result, started, engine, opts, metrics) {
        Some(r) => r,
        None => {
            // All or nothing: a partial restore would decide otherwise
            // without saying so.
            engine.state().forget_accounts(ours);
            Restored::default()
        }
    };
    restored.partitions = partitions.to_vec();
    restored
}

/// The accounts of those of `partitions` that the read at start holds and
/// whose `state` partition still ends where it was read to (nobody has
/// written since), put in the state; and the partitions left to read.
fn take_from_start(
    at_start: StartAccounts,
    partitions: &[i32],
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
) -> (Restored, Vec<i32>) {
    let topic = &opts.topics.state;
    let unmoved: Vec<i32> = match restore_consumer(opts) {
        Ok(consumer) => partitions
            .iter()
            .copied()
            .filter(|p| {
                let now = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5)).ok().map(|(_, high)| high);
                now.is_some() && now == at_start.ends.get(p).copied()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let to_read = partitions.iter().copied().filter(|p| !unmoved.contains(p)).collect();
    if unmoved.is_empty() {
        return (Restored::default(), to_read);
    }
    let markers: HashMap<i32, Marker> = at_start.markers.into_iter().filter(|(p, _)| unmoved.contains(p)).collect();
    let versions: VersionsRead = at_start.versions.into_iter().filter(|((p, _, _), _)| unmoved.contains(p)).collect();
    let mut refusals = Refusals::new(metrics, topic);
    let entities = apply(engine, versions, &markers, &mut refusals);
    refusals.finish();
    tracing::info!(partitions = ?unmoved, entities, "accounts taken from the read at start: their changelog has not moved since");
    let ends = at_start.ends.into_iter().filter(|(p, _)| unmoved.contains(p)).collect();
    let taken =
        Restored { markers, entities, refused: refusals.count, highest: at_start.highest, ends, ..Restored::default() };
    (taken, to_read)
}

/// Log and count how a restore went; `None` when it was refused.
fn finish(
    what: &str,
    result: Result<Restored, String>,
    started: Instant,
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
) -> Option<Restored> {
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(r) if r.markers.is_empty() => {
            metrics.state_restores.with_label_values(&["empty"]).inc();
            tracing::info!("no checkpoint of the {what} yet; starting without");
            Some(r)
        }
        Ok(r) => {
            metrics.state_restores.with_label_values(&["restored"]).inc();
            metrics.state_restore_seconds.set(seconds);
            metrics.state_restore_bytes.set(i64::try_from(r.bytes).unwrap_or(i64::MAX));
            let (accounts, payees, devices) = engine.state().entities();
            tracing::info!(
                checkpoints = r.markers.len(),
                entities = r.entities,
                accounts,
                payees,
                devices,
                bytes = r.bytes,
                ms = (seconds * 1e3) as u64,
                "{what} restored; input after the checkpoint is handled again"
            );
            Some(r)
        }
        Err(why) => {
            metrics.state_restores.with_label_values(&["refused"]).inc();
            tracing::error!(topic = %opts.topics.state, "the {what} were not restored: {why}");
            None
        }
    }
}

/// One entity's records in one partition. A restore takes the latest that
/// belongs to the partition's latest complete checkpoint: numbered at most
/// the marker's, and at least the writer's last whole checkpoint
/// ([`Marker::since`]); the one before it when that one is refused.
///
/// Records past the marker are of a checkpoint that never completed (its
/// writer crashed, or lost the partition, before its marker); records below
/// `since` are of entities the writer did not hold when it wrote every
/// entity again (swept, or written by a previous owner's checkpoint that
/// never completed). Read in log order, a record at or below a marker
/// already read is settled: only the two latest of those can still matter
/// (markers only grow), while every record past it is kept until its
/// marker comes, or not.
struct Versions {
    /// Highest checkpoint numbers first.
    kept: Vec<Version>,
}

/// One changelog record of an entity.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    checkpoint: u64,
    /// Its writer ([`Marker::writer`]; 0: not said).
    writer: u64,
    offset: i64,
    /// `None`: a tombstone (the entity was swept).
    record: Option<Vec<u8>>,
}

impl Versions {
    /// Settled records kept per writer: the one to use and the one before it.
    const SETTLED: usize = 2;

    fn new(first: Version) -> Self {
        Versions { kept: vec![first] }
    }

    /// Add a record read after the partition's markers up to `settled`.
    fn add(&mut self, version: Version, settled: u64) {
        // The same checkpoint twice (a retried send): the later one first,
        // the other should it be refused.
        let at = self.kept.partition_point(|k| k.checkpoint > version.checkpoint);
        self.kept.insert(at, version);
        // Per writer: a marker only takes its own writer's records.
        let mut below: Vec<(u64, usize)> = Vec::new();
        self.kept.retain(|k| {
            if k.checkpoint > settled {
                return true;
            }
            let n = match below.iter_mut().find(|(w, _)| *w == k.writer) {
                Some((_, n)) => n,
                None => {
                    below.push((k.writer, 0));
                    &mut below.last_mut().expect("pushed").1
                }
            };
            *n += 1;
            *n <= Self::SETTLED
        });
    }

    /// The records that may stand for the entity as of `marker`'s
    /// checkpoint, the one to use first; empty when it did not exist then.
    /// Between `since` and the marker only the marker's writer's records
    /// count (see [`Marker::writer`]); should all of those be refused, the
    /// latest record from before `since` is the last resort (the entity did
    /// exist then).
    fn as_of(&self, marker: &Marker) -> Vec<&Version> {
        let ours = |k: &&Version| marker.writer == 0 || k.writer == marker.writer;
        let window = marker.since..=marker.id;
        let mut candidates: Vec<&Version> =
            self.kept.iter().filter(|k| window.contains(&k.checkpoint)).filter(ours).collect();
        if !candidates.is_empty() {
            candidates.extend(self.kept.iter().find(|k| k.checkpoint < marker.since));
        }
        candidates
    }
}

/// The positions a marker covers, by feed and partition.
pub(super) fn positions_of(marker: &Marker) -> Positions {
    marker
        .positions
        .iter()
        .filter_map(|(name, p, o)| Feed::ALL.into_iter().find(|f| f.name() == name).map(|f| ((f, *p), *o)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(id: u64, since: u64) -> Marker {
        Marker {
            id,
            since,
            writer: 0,
            expiry_clock: 0,
            last_expiry: 0,
            positions: vec![],
            counted: vec![],
            observed: vec![],
            from: None,
        }
    }

    #[test]
    fn an_entity_is_taken_as_of_the_last_complete_checkpoint() {
        let v = |checkpoint, s: Option<&str>| Version {
            checkpoint,
            writer: 0,
            offset: 0,
            record: s.map(|s| s.as_bytes().to_vec()),
        };
        // (record, markers read before it)
        let first = |written: &[(Version, u64)], m: Marker| {
            let mut versions = Versions::new(written[0].0.clone());
            for (w, settled) in &written[1..] {
                versions.add(w.clone(), *settled);
            }
            versions.as_of(&m).first().map(|c| c.record.clone())
        };
        let got = |s: &str| Some(Some(s.as_bytes().to_vec()));
        // Written in checkpoint 7, then in 9, which never completed: 7 holds.
        let old_new = [(v(7, Some("old")), 0), (v(9, Some("new")), 7)];
        assert_eq!(first(&old_new, marker(8, 0)), got("old"));
        assert_eq!(first(&old_new, marker(9, 0)), got("new"));
        // First written in the incomplete checkpoint: it did not exist yet.
        assert_eq!(first(&[(v(9, Some("new")), 0)], marker(8, 0)), None);
        assert_eq!(first(&[(v(3, Some("only")), 0)], marker(8, 0)), got("only"));
        // Swept in 5.
        assert_eq!(first(&[(v(3, Some("was")), 0), (v(5, None), 3)], marker(6, 0)), Some(None));
        // Unfinished checkpoints in a row, one written late by an instance
        // that had lost the partition (out of number order): as many as
        // there were.
        let mut many = vec![(v(7, Some("old")), 7)];
        many.extend((0..6).map(|i| (v(20 - i, Some("x")), 7)));
        assert_eq!(first(&many, marker(8, 0)), got("old"));
        assert_eq!(first(&many, marker(16, 0)), got("x"));
        // Written by a previous owner's checkpoint 9 that never completed;
        // the next owner went on from 8 and wrote all it held in 12, which
        // did not include this entity: it is not restored.
        assert_eq!(first(&[(v(9, Some("orphan")), 8)], marker(14, 12)), None);
        assert_eq!(first(&[(v(9, Some("orphan")), 8), (v(13, Some("again")), 12)], marker(14, 12)), got("again"));
        // The one before comes next, should the latest be refused.
        let mut versions = Versions::new(v(3, Some("older")));
        versions.add(v(6, Some("latest")), 3);
        let order: Vec<_> = versions.as_of(&marker(8, 0)).into_iter().map(|c| c.checkpoint).collect();
        assert_eq!(order, vec![6, 3]);
        // Settled records beyond the two latest are let go while reading.
        for id in [7, 8, 9] {
            versions.add(v(id, Some("x")), 10);
        }
        assert_eq!(versions.kept.len(), 2);
    }

    /// Two owners' checkpoint numbers meet: A's unfinished 1002 after B took
    /// over at 1000 and numbered on from there. B's marker takes B's records.
    #[test]
    fn a_marker_takes_only_its_own_writers_records_since_its_whole_checkpoint() {
        let v = |checkpoint, writer, s: &str| Version {
            checkpoint,
            writer,
            offset: 0,
            record: Some(s.as_bytes().to_vec()),
        };
        let (a, b) = (7, 9);
        let mut x = Versions::new(v(1000, a, "a-1000"));
        x.add(v(1002, a, "a-unfinished"), 1000);
        x.add(v(1001, b, "b-whole"), 1000);
        let m = Marker { writer: b, ..marker(1002, 1001) };
        let taken =
            |x: &Versions| -> Vec<Vec<u8>> { x.as_of(&m).into_iter().map(|c| c.record.clone().unwrap()).collect() };
        // B's, and as the last resort, should it be refused, the record from
        // before B's whole checkpoint.
        assert_eq!(taken(&x), vec![b"b-whole".to_vec(), b"a-1000".to_vec()]);
        // More of A's records settle around it: B's stays.
        x.add(v(1002, a, "a-zombie"), 1002);
        x.add(v(1001, a, "a-zombie"), 1002);
        assert_eq!(taken(&x)[0], b"b-whole".to_vec());
        // An entity only A's unfinished checkpoint wrote: not B's.
        let orphan = Versions::new(v(1002, a, "a-unfinished"));
        assert!(orphan.as_of(&m).is_empty());
        // Nor one whose record names no writer (written before records
        // named theirs): B's marker names B.
        let unnamed = Versions::new(v(1002, 0, "unnamed"));
        assert!(unnamed.as_of(&m).is_empty());
    }

    #[test]
    fn markers_say_where_each_group_stands_and_where_to_read_from() {
        let marker = |id, counted: Vec<(i32, i64)>, observed: Vec<(i32, i64)>| Marker {
            id,
            since: 0,
            writer: 0,
            expiry_clock: 1,
            last_expiry: 0,
            positions: vec![(Feed::Context.name().into(), 0, 12), (Feed::Transfers.name().into(), 0, 40)],
            counted: counted.into_iter().map(|(p, next)| (p, vec![(0, next)])).collect(),
            observed,
            from: None,
        };
        let back: Marker =
            serde_json::from_slice(&serde_json::to_vec(&marker(5, vec![(0, 40)], vec![(0, 3)])).unwrap()).unwrap();
        assert_eq!(positions_of(&back).get(&(Feed::Transfers, 0)), Some(&40));
        let r = Restored {
            markers: HashMap::from([
                (0, marker(5, vec![(0, 40), (1, 7)], vec![(0, 30), (1, 9)])),
                (1, marker(6, vec![(0, 35), (1, 8)], vec![(0, 25), (1, 11)])),
            ]),
            ..Restored::default()
        };
        let start = r.shared_start(2);
        assert_eq!(start.floors[&1][&0], Counted::below(35));
        assert_eq!(start.read_from, HashMap::from([(0, 25), (1, 9)]), "the earliest any group needs");
        assert_eq!(r.last_id(), 6);
        // A third group without a checkpoint holds nothing: read everything.
        assert!(r.shared_start(3).read_from.is_empty());
    }
}
