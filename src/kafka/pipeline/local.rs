//! The local copy of the state: written to the state directory
//! (`engine.state_dir`) at a graceful stop, read back at the next start in
//! place of what it covers, when nothing it covers has moved on meanwhile.
//!
//! Why: the changelog (see `changelog`, `restore`) is what every instance
//! shares, and reading it back costs minutes at a million accounts (every
//! record of the topic through librdkafka, twice at start). A restart on the
//! same machine, a deploy, already has the state on its disk. This is Kafka
//! Streams' local store with its checkpoint file of changelog offsets: the
//! copy says where the changelog stood when it was written, and is used only
//! where the changelog still stands there.
//!
//! ## What a copy covers, and when it is used
//!
//! - **With the changelog** ([`ChangelogCover`]): per input partition owned
//!   at the stop, its positions and where its `state` partition ended after
//!   the last checkpoint; and what the shared payee and device tables had
//!   counted (the ledger) with where the observations reader stood. At start
//!   the payees and devices come from the copy when every `observations`
//!   partition still holds, at the offset before the reader's position, the
//!   message the copy saw there (the topic is the one it read, and nothing it
//!   has not counted is gone); the observations after it are then counted as
//!   always, once. A partition's accounts come from the copy when that
//!   partition is assigned here first and its `state` partition still ends
//!   where it did, with the copy's last record there: nobody has written
//!   that partition's state since (another owner in between always writes a
//!   whole checkpoint). Everything else is restored from the changelog, as
//!   without a copy, and accounts of partitions the copy cannot speak for are
//!   dropped.
//! - **Without the changelog** ([`Cover::Offsets`]): the group's committed
//!   offsets of every input partition, when this instance held them all;
//!   used only when the group's offsets are still exactly those, so nothing
//!   between them can be missing or counted twice. A crash leaves no copy
//!   newer than the committed offsets, and the instance starts empty.
//!
//! ## Guarantees
//!
//! - **Never half used, never silently misread.** One file, `state.local`:
//!   a header line (`FDSLOCAL`, a CRC-32 of the manifest, the manifest as
//!   JSON), then the state snapshot (see `crate::state`'s snapshots, record
//!   by record checksummed). A copy that does not read is refused whole,
//!   with the file and the reason logged and counted
//!   (`fds_state_restores_total{result="refused"}`); one that no longer
//!   matches is `stale`.
//! - **A failed write leaves the previous copy whole.** The file is written
//!   under a temporary name, synced and renamed over the old one (one
//!   rename, so the manifest and the snapshot always belong together); a full
//!   disk or a stop cut short leaves the previous copy as it was, and says so
//!   (`fds_state_local_copies_total{result="failed"}`, logged with the
//!   error). Decisions never depend on it: the copy is written after the
//!   last decision is acknowledged.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ledger::{Counted, CountedBy, Ranges};
use super::*;
use crate::input::order::partition_for;
use crate::state::SnapshotStats;

/// The copy, in the state directory.
const FILE: &str = "state.local";

/// How long a read of a partition's message at an offset may take.
const FINGERPRINT_WAIT: Duration = Duration::from_secs(10);

/// The header line's first word.
const MAGIC: &str = "FDSLOCAL";

/// The manifest format (the snapshot after it has its own version).
const FORMAT: u16 = 1;

/// A manifest line longer than this is not one (it holds a few ranges per
/// partition).
const MANIFEST_MAX: u64 = 16 << 20;

/// What the state in a copy covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    format: u16,
    /// The consumer group whose input the state learnt.
    group: String,
    pub(super) cover: Cover,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum Cover {
    /// The group's committed offsets, (topic, partition, offset), of every
    /// input partition.
    Offsets(Vec<(String, i32, i64)>),
    Changelog(ChangelogCover),
}

/// What a copy taken with the changelog on covers (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangelogCover {
    /// The `state` topic and its partition count.
    pub(super) state_topic: String,
    pub(super) groups: u32,
    /// The writer whose checkpoints the copy's accounts match, and its last
    /// checkpoint number (the next one written goes past it).
    pub(super) writer: u64,
    pub(super) last_id: u64,
    /// The input partitions owned at the stop.
    pub(super) partitions: Vec<PartitionCover>,
    /// The shared tables' ledger: per transfers partition, the offset
    /// ranges counted, and per group what its restored checkpoint held
    /// (floors not yet retired).
    pub(super) counted: Ranges,
    pub(super) floors: Vec<(i32, Ranges)>,
    /// Per `observations` partition, the next offset the reader takes and
    /// the fingerprint of the message before it.
    pub(super) observed: Vec<(i32, Seen)>,
}

/// One input partition's accounts in a copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PartitionCover {
    pub(super) partition: i32,
    /// (topic, partition, next offset not in the state), as in a marker.
    pub(super) positions: Vec<(String, i32, i64)>,
    /// Where the partition's `state` partition ended, with the fingerprint
    /// of its last record.
    pub(super) state: Seen,
}

/// Where a partition of a topic stood: the next offset, and a fingerprint of
/// the message just before it (`None` when there was none). Two topics'
/// partitions with the same offsets are told apart by it: a broker started
/// afresh, or a topic created again, has other messages there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Seen {
    pub(super) next: i64,
    pub(super) last: Option<u32>,
}

/// Why a copy, or part of one, was not used. Each is logged.
#[derive(Debug, thiserror::Error)]
pub(super) enum Skip {
    #[error("no local copy of the state in {0}")]
    Missing(PathBuf),
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("the local copy no longer matches: {0}")]
    Stale(String),
    #[error("the local copy could not be checked against the brokers: {0}")]
    Unchecked(String),
}

impl Skip {
    /// `fds_state_restores_total`'s `result` (`None`: not counted; no copy
    /// is not a restore).
    pub(super) fn result(&self) -> Option<&'static str> {
        match self {
            Skip::Missing(_) => None,
            Skip::Unreadable { .. } | Skip::Unchecked(_) => Some("refused"),
            Skip::Stale(_) => Some("stale"),
        }
    }
}

impl Manifest {
    pub(super) fn new(group: &str, cover: Cover) -> Self {
        Manifest { format: FORMAT, group: group.to_owned(), cover }
    }
}

/// Write the engine's state with what it covers, replacing the previous copy
/// only once the new one is whole on disk.
pub(super) fn write(dir: &Path, engine: &Engine, manifest: &Manifest) -> std::io::Result<SnapshotStats> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        let json = serde_json::to_string(manifest).map_err(std::io::Error::other)?;
        writeln!(out, "{MAGIC} {:08x} {json}", crc32fast::hash(json.as_bytes()))?;
        let stats = engine.write_snapshot(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(stats)
    })();
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, dir.join(FILE))?;
    // The rename itself is durable once the directory is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(stats)
}

/// The copy in `dir`: its manifest, and a reader positioned at its snapshot.
pub(super) fn open(dir: &Path) -> Result<(Manifest, impl Read), Skip> {
    let path = dir.join(FILE);
    let unreadable = |reason: String| Skip::Unreadable { path: path.clone(), reason };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Skip::Missing(dir.to_path_buf())),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    (&mut input).take(MANIFEST_MAX).read_until(b'\n', &mut line).map_err(|e| unreadable(e.to_string()))?;
    let manifest = parse_header(&line).map_err(unreadable)?;
    Ok((manifest, input))
}

fn parse_header(line: &[u8]) -> Result<Manifest, String> {
    let line = line.strip_suffix(b"\n").ok_or("the header line is cut short")?;
    let line = std::str::from_utf8(line).map_err(|_| "the header line is not UTF-8")?;
    let mut parts = line.splitn(3, ' ');
    let (Some(MAGIC), Some(crc), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("not a local copy of the state (no {MAGIC} header)"));
    };
    let crc = u32::from_str_radix(crc, 16).map_err(|_| format!("the header's checksum {crc:?} is not hex"))?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return Err("the manifest's checksum does not match".to_owned());
    }
    let manifest: Manifest = serde_json::from_str(json).map_err(|e| format!("the manifest: {e}"))?;
    if manifest.format != FORMAT {
        return Err(format!("manifest format {}, this build reads {FORMAT}", manifest.format));
    }
    Ok(manifest)
}

/// Load the copy's state into the engine (all or nothing).
pub(super) fn load(dir: &Path, engine: &Engine, snapshot: impl Read) -> Result<SnapshotStats, Skip> {
    let path = dir.join(FILE);
    engine.load_snapshot(snapshot).map_err(|e| Skip::Unreadable { path, reason: e.to_string() })
}

/// The committed offsets a copy without the changelog covers, against the
/// group's now: equal, or why not.
pub(super) fn offsets_match(covered: &[(String, i32, i64)], committed: &Offsets) -> Result<(), Skip> {
    let covered: Offsets = covered.iter().map(|(t, p, o)| ((t.clone(), *p), *o)).collect();
    if &covered == committed {
        return Ok(());
    }
    let detail = committed
        .iter()
        .filter(|(k, v)| covered.get(*k) != Some(*v))
        .map(|((t, p), v)| format!("{t}/{p}: committed {v}, copy {:?}", covered.get(&(t.clone(), *p))))
        .chain(
            covered.keys().filter(|k| !committed.contains_key(*k)).map(|(t, p)| format!("{t}/{p}: in the copy only")),
        )
        .collect::<Vec<_>>()
        .join("; ");
    Err(Skip::Stale(format!(
        "it covers input up to other offsets than the group has committed ({detail}): the input moved on after it \
         was written (a crash, another instance, or a new broker such as the embedded one, which starts empty)"
    )))
}

impl ChangelogCover {
    /// What the shared tables start from: the ledger as it was, the
    /// observations read on from where the reader stood.
    pub(super) fn shared_start(&self) -> SharedStart {
        let by = |v: &Ranges| -> CountedBy {
            v.iter().map(|(p, r)| (*p, Counted::from_ranges(r.iter().copied()))).collect()
        };
        SharedStart {
            counted: by(&self.counted),
            floors: self.floors.iter().map(|(g, c)| (*g, by(c))).collect(),
            read_from: self.observed.iter().map(|(p, s)| (*p, s.next)).collect(),
        }
    }

    /// The restore of the accounts of `partitions` (covered here) as a
    /// changelog restore would report it: a marker per partition with its
    /// positions.
    pub(super) fn restored(&self, partitions: &[i32]) -> Restored {
        let mut restored = Restored { partitions: partitions.to_vec(), highest: self.last_id, ..Restored::default() };
        for c in self.partitions.iter().filter(|c| partitions.contains(&c.partition)) {
            let marker = Marker {
                id: self.last_id,
                since: 0,
                writer: self.writer,
                expiry_clock: i64::MIN,
                last_expiry: i64::MIN,
                positions: c.positions.clone(),
                counted: Vec::new(),
                observed: Vec::new(),
            };
            restored.markers.insert(c.partition, marker);
        }
        restored
    }
}

/// Where each of `partitions` of `topic` stands now: its end ([`Seen`]).
pub(super) fn seen<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, Seen>, String> {
    let mut ends = Vec::new();
    for &p in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("{topic}/{p}: no watermarks: {e}"))?;
        ends.push((p, high));
    }
    seen_at(consumer, topic, &ends)
}

/// [`Seen`] of each (partition, next offset) of `topic`: the fingerprint of
/// the message before `next`.
fn seen_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    at: &[(i32, i64)],
) -> Result<HashMap<i32, Seen>, String> {
    let wanted: Vec<(i32, i64)> = at.iter().filter(|(_, next)| *next > 0).map(|&(p, next)| (p, next - 1)).collect();
    let prints = fingerprints(consumer, topic, &wanted)?;
    Ok(at.iter().map(|&(p, next)| (p, Seen { next, last: prints.get(&p).copied() })).collect())
}

/// Whether each partition in `expected` of `topic` still holds, just before
/// `next`, the message it held (`at_end`: and still ends there), each
/// partition's verdict on its own. `Err` when the brokers cannot tell.
pub(super) fn check_each<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    expected: &[(i32, Seen)],
    at_end: bool,
) -> Result<HashMap<i32, Result<(), String>>, String> {
    let mut verdicts = HashMap::new();
    let mut wanted = Vec::new();
    for &(p, seen) in expected {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("{topic}/{p}: no watermarks: {e}"))?;
        let verdict = if at_end && high != seen.next {
            Err(format!("{topic}/{p} ends at {high}, not {} as then: written since", seen.next))
        } else if high < seen.next {
            Err(format!("{topic}/{p} ends at {high}, before {} (a new topic or broker)", seen.next))
        } else if low > seen.next || (seen.last.is_some() && low > seen.next - 1) {
            Err(format!("{topic}/{p} starts at {low}: messages not yet counted are gone"))
        } else {
            // Without a message before `next` (nothing was, or retention had
            // taken it), the bounds are all there is to check.
            if seen.last.is_some() {
                wanted.push((p, seen.next - 1));
            }
            Ok(())
        };
        verdicts.insert(p, verdict);
    }
    let prints = fingerprints(consumer, topic, &wanted)?;
    for &(p, seen) in expected {
        if seen.last.is_some() && verdicts[&p].is_ok() && prints.get(&p).copied() != seen.last {
            let why = format!("{topic}/{p} holds another message at {} (a new topic or broker)", seen.next - 1);
            verdicts.insert(p, Err(why));
        }
    }
    Ok(verdicts)
}

/// [`check_each`], all or nothing: `Err` names the first partition that
/// no longer matches.
fn still<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    expected: &[(i32, Seen)],
    at_end: bool,
) -> Result<(), Skip> {
    let verdicts = check_each(consumer, topic, expected, at_end).map_err(Skip::Unchecked)?;
    let mut failed: Vec<(i32, String)> =
        verdicts.into_iter().filter_map(|(p, v)| v.err().map(|why| (p, why))).collect();
    failed.sort();
    match failed.into_iter().next() {
        Some((_, why)) => Err(Skip::Stale(why)),
        None => Ok(()),
    }
}

/// A fingerprint of the message at each (partition, offset) of `topic`
/// (left out where that offset holds none).
fn fingerprints<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    wanted: &[(i32, i64)],
) -> Result<HashMap<i32, u32>, String> {
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in wanted {
        tpl.add_partition_offset(topic, p, Offset::Offset(o)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("{topic}: cannot read: {e}"))?;
    let mut left: HashMap<i32, i64> = wanted.iter().copied().collect();
    // Short: a broker that never delivers the offset asked for (tansu 0.6's
    // memory storage, for an offset inside a batch) should not hold up a
    // stop or a start for long.
    let deadline = Instant::now() + FINGERPRINT_WAIT;
    while !left.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(&o) = left.get(&m.partition()) else { continue };
                if m.offset() == o {
                    let mut h = crc32fast::Hasher::new();
                    h.update(m.key().unwrap_or_default());
                    h.update(m.payload().unwrap_or_default());
                    h.update(&m.timestamp().to_millis().unwrap_or(0).to_le_bytes());
                    out.insert(m.partition(), h.finalize());
                }
                if m.offset() >= o {
                    left.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, %topic, "reading a partition's last message"),
            None => {}
        }
    }
    let _ = consumer.unassign();
    if left.is_empty() {
        Ok(out)
    } else {
        Err(format!("{topic}: the messages at {left:?} did not arrive within {FINGERPRINT_WAIT:?}"))
    }
}

/// Committed offsets by (topic, partition).
pub(super) type Offsets = std::collections::BTreeMap<(String, i32), i64>;

/// The group's committed offsets on every partition of some topics.
pub(super) struct Committed {
    /// Partitions of the topics, committed or not.
    pub(super) partitions: usize,
    /// Each partition with a committed offset (one with none is left out, so
    /// an empty group matches no copy).
    pub(super) offsets: Offsets,
}

/// The group's committed offsets on every partition of `topics`.
pub(super) fn committed<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[&str],
) -> Result<Committed, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let partitions = tpl.count();
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let offsets = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect();
    Ok(Committed { partitions, offsets })
}

/// At start, with the changelog on: the shared tables (and every account
/// the copy holds, each used only if its partition passes
/// [`keep_accounts`]) from the copy in `dir`, if it still matches; `None`
/// (with the reason logged and counted) to restore from the changelog.
pub(super) fn restore_shared(
    dir: &Path,
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
    health: &Health,
    groups: u32,
) -> Option<ChangelogCover> {
    health.set_restoring(true);
    let started = Instant::now();
    let result = (|| {
        let (manifest, snapshot) = open(dir)?;
        let Cover::Changelog(cover) = manifest.cover else {
            return Err(Skip::Stale("it was written with the changelog off".to_owned()));
        };
        if manifest.group != opts.group_id || cover.state_topic != opts.topics.state || cover.groups != groups {
            return Err(Skip::Stale(format!(
                "it is of group {:?}, topic {:?} with {} partitions; this run has {:?}, {:?} with {groups}",
                manifest.group, cover.state_topic, cover.groups, opts.group_id, opts.topics.state
            )));
        }
        // Every observations partition (as many as `state`'s), or a copy
        // could stand for a topic it never read.
        let mut observed: Vec<i32> = cover.observed.iter().map(|(p, _)| *p).collect();
        observed.sort_unstable();
        if observed != (0..groups as i32).collect::<Vec<_>>() {
            return Err(Skip::Stale(format!(
                "it knows where {} of the {groups} observations partitions were read to",
                observed.len()
            )));
        }
        {
            let reader =
                reader(opts, "state-restore", "local copy check", &[]).map_err(|e| Skip::Unchecked(e.to_string()))?;
            still(&reader, &opts.topics.observations, &cover.observed, false)?;
        }
        let stats = load(dir, engine, snapshot)?;
        // Accounts of partitions it does not speak for (held once, given up
        // before the stop) are not current.
        let covered: Vec<i32> = cover.partitions.iter().map(|c| c.partition).collect();
        engine.state().forget_accounts(|key| !covered.contains(&partition_for(key.as_bytes(), groups)));
        Ok((cover, stats))
    })();
    health.set_restoring(false);
    match result {
        Ok((cover, stats)) => {
            metrics.state_restores.with_label_values(&["local"]).inc();
            metrics.state_restore_seconds.set(started.elapsed().as_secs_f64());
            metrics.state_restore_bytes.set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
            log_snapshot(
                "state restored from the local copy; observations after it are read again",
                dir,
                &stats,
                started,
            );
            Some(cover)
        }
        Err(skip) => {
            skipped(metrics, &skip, "restoring from the changelog");
            None
        }
    }
}

/// When partitions are first assigned after a start from the copy: which
/// of `new` keep the copy's accounts (their `state` partition unchanged
/// since the copy was written). Every other account is dropped; those
/// partitions are restored from the changelog.
pub(super) fn keep_accounts(
    cover: &ChangelogCover,
    new: &[i32],
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
) -> Vec<i32> {
    let candidates: Vec<(i32, Seen)> =
        cover.partitions.iter().filter(|c| new.contains(&c.partition)).map(|c| (c.partition, c.state)).collect();
    // One check of them all: this runs in the rebalance callback.
    let verdicts = reader(opts, "state-restore", "local copy check", &[])
        .map_err(|e| e.to_string())
        .and_then(|r| check_each(&r, &cover.state_topic, &candidates, true));
    let mut kept = Vec::new();
    match verdicts {
        Ok(verdicts) => {
            let mut stale = Vec::new();
            for (p, verdict) in verdicts {
                match verdict {
                    Ok(()) => kept.push(p),
                    Err(why) => stale.push(why),
                }
            }
            if !stale.is_empty() {
                metrics.state_restores.with_label_values(&["stale"]).inc();
                tracing::info!(
                    "the local copy's accounts of {} partitions are stale ({}); restoring them from the changelog",
                    stale.len(),
                    stale.join("; ")
                );
            }
        }
        Err(e) => {
            metrics.state_restores.with_label_values(&["refused"]).inc();
            tracing::warn!(error = %e, "cannot check the local copy's accounts; restoring them from the changelog");
        }
    }
    kept.sort_unstable();
    let groups = cover.groups;
    let dropped = engine.state().forget_accounts(|key| !kept.contains(&partition_for(key.as_bytes(), groups)));
    if !kept.is_empty() {
        metrics.state_restores.with_label_values(&["local"]).inc();
    }
    let (accounts, _, _) = engine.state().entities();
    tracing::info!(partitions = ?kept, accounts, dropped, "accounts kept from the local copy");
    kept
}

/// At a graceful stop with the changelog on, after its last checkpoint
/// (`complete`: it completed): the copy of the partitions owned.
#[allow(clippy::too_many_arguments)] // each is a distinct part of what the copy covers
pub(super) fn write_changelog_copy(
    dir: &Path,
    complete: bool,
    engine: &Engine,
    changelog: &Changelog,
    positions: &Positions,
    shared: &SharedTables,
    opts: &PipelineOptions,
    metrics: &Metrics,
) {
    let count = |result: &str| metrics.state_local_copies.with_label_values(&[result]).inc();
    let started = Instant::now();
    let mut owned: Vec<i32> = shared.owned().collect();
    owned.sort_unstable();
    if owned.is_empty() {
        tracing::info!(dir = %dir.display(), "no local copy written: this instance holds no partition");
        return count("skipped");
    }
    if !complete {
        tracing::info!(dir = %dir.display(), "no local copy written: the last checkpoint did not complete");
        return count("skipped");
    }
    let cover = (|| {
        let reader = reader(opts, "local-copy", "local copy", &[]).map_err(|e| e.to_string())?;
        let state = seen(&reader, &opts.topics.state, &owned)?;
        let mut observed: Vec<(i32, Seen)> =
            seen_at(&reader, &opts.topics.observations, &shared.read_positions())?.into_iter().collect();
        observed.sort_unstable_by_key(|(p, _)| *p);
        let (counted, floors) = shared.ledger_parts();
        let partitions = owned
            .iter()
            .map(|&p| PartitionCover {
                partition: p,
                positions: [Feed::Transfers, Feed::Context]
                    .into_iter()
                    .filter_map(|f| positions.get(&(f, p)).map(|&o| (f.name().to_owned(), p, o)))
                    .collect(),
                state: state[&p],
            })
            .collect();
        Ok::<_, String>(ChangelogCover {
            state_topic: opts.topics.state.clone(),
            groups: changelog.partitions(),
            writer: changelog.writer(),
            last_id: changelog.last_id(),
            partitions,
            counted,
            floors,
            observed,
        })
    })();
    match cover {
        Ok(cover) => write_copy(dir, engine, &Manifest::new(&opts.group_id, Cover::Changelog(cover)), metrics, started),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no local copy written: cannot tell where the topics stand");
            count("failed");
        }
    }
}

/// At a graceful stop without the changelog: the copy, with the committed
/// offsets, when this instance holds every input partition (otherwise its
/// state is only part of the accounts, and the next owner could not tell
/// which).
pub(super) fn write_offsets_copy(
    dir: &Path,
    engine: &Engine,
    consumer: &BaseConsumer<GroupContext>,
    inputs: &[&str],
    opts: &PipelineOptions,
    metrics: &Metrics,
) {
    let count = |result: &str| metrics.state_local_copies.with_label_values(&[result]).inc();
    let all = match committed(consumer, inputs) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no local copy written: cannot read the committed offsets");
            return count("failed");
        }
    };
    let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    if owned < all.partitions {
        let partitions = all.partitions;
        tracing::info!(owned, partitions, "no local copy written: this instance holds only some input partitions");
        return count("skipped");
    }
    let offsets = all.offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect();
    write_copy(dir, engine, &Manifest::new(&opts.group_id, Cover::Offsets(offsets)), metrics, Instant::now());
}

fn write_copy(dir: &Path, engine: &Engine, manifest: &Manifest, metrics: &Metrics, started: Instant) {
    let result = write(dir, engine, manifest);
    metrics.state_local_copies.with_label_values(&[if result.is_ok() { "written" } else { "failed" }]).inc();
    match result {
        Ok(stats) => log_snapshot("local copy of the state written", dir, &stats, started),
        Err(e) => tracing::warn!(
            dir = %dir.display(), error = %e,
            "no local copy written; the previous one, if any, is left as it was (the next start checks it \
             against the brokers)"
        ),
    }
}

/// At start without the changelog: the state from the copy when it covers
/// exactly the group's committed offsets; otherwise say why and start
/// empty. Returns the input positions the restored state covers.
pub(super) fn restore_offsets(dir: &Path, engine: &Engine, opts: &PipelineOptions, metrics: &Metrics) -> Positions {
    let started = Instant::now();
    let result = (|| {
        let (manifest, snapshot) = open(dir)?;
        let Cover::Offsets(covered) = &manifest.cover else {
            return Err(Skip::Stale("it was written with the changelog on; this run has it off".to_owned()));
        };
        if manifest.group != opts.group_id {
            return Err(Skip::Stale(format!("it is of group {:?}, not {:?}", manifest.group, opts.group_id)));
        }
        // The consumer is closed before the load (closing takes a moment).
        let committed = {
            let consumer: BaseConsumer<Quiet> = opts
                .connection
                .client_config(&[("group.id", &opts.group_id), ("enable.auto.commit", "false")])
                .create_with_context(Quiet("local copy offsets"))
                .map_err(|e| Skip::Unchecked(format!("cannot read the committed offsets: {e}")))?;
            let inputs = [opts.topics.transfers.as_str(), opts.topics.context_events.as_str()];
            committed(&consumer, &inputs)
                .map_err(|e| Skip::Unchecked(format!("cannot read the committed offsets: {e}")))?
        };
        offsets_match(covered, &committed.offsets)?;
        let stats = load(dir, engine, snapshot)?;
        Ok((committed.offsets, stats))
    })();
    match result {
        Ok((offsets, stats)) => {
            metrics.state_restores.with_label_values(&["local"]).inc();
            metrics.state_restore_seconds.set(started.elapsed().as_secs_f64());
            metrics.state_restore_bytes.set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
            log_snapshot("state restored from the local copy", dir, &stats, started);
            offsets
                .iter()
                .map(|((topic, partition), &next)| ((feed_of(&opts.topics, topic), *partition), next))
                .collect()
        }
        Err(skip) => {
            skipped(metrics, &skip, "starting with empty state");
            Positions::new()
        }
    }
}

/// Log and count a copy not used.
fn skipped(metrics: &Metrics, skip: &Skip, instead: &str) {
    if let Some(result) = skip.result() {
        metrics.state_restores.with_label_values(&[result]).inc();
    }
    match skip {
        Skip::Missing(_) => tracing::info!("{skip}; {instead}"),
        _ => tracing::warn!("{skip}; {instead}"),
    }
}

fn log_snapshot(what: &str, dir: &Path, stats: &SnapshotStats, started: Instant) {
    tracing::info!(
        dir = %dir.display(),
        accounts = stats.accounts,
        payees = stats.payees,
        devices = stats.devices,
        bytes = stats.bytes,
        ms = started.elapsed().as_millis() as u64,
        "{what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let seen = Seen { next: 40, last: Some(7) };
        Manifest::new(
            "fds",
            Cover::Changelog(ChangelogCover {
                state_topic: "state".into(),
                groups: 2,
                writer: 9,
                last_id: 12,
                partitions: vec![PartitionCover {
                    partition: 1,
                    positions: vec![("transfers".into(), 1, 40)],
                    state: seen,
                }],
                counted: vec![(0, vec![(0, 40)]), (1, vec![(0, 10), (12, 30)])],
                floors: vec![(1, vec![(0, vec![(0, 35)])])],
                observed: vec![(0, seen), (1, Seen { next: 0, last: None })],
            }),
        )
    }

    #[test]
    fn a_copy_reads_back_whole_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::with_rules(crate::rules::RuleSet::empty());
        write(dir.path(), &engine, &manifest()).unwrap();
        let (back, snapshot) = open(dir.path()).unwrap();
        assert_eq!(back, manifest());
        load(dir.path(), &engine, snapshot).unwrap();
        let Cover::Changelog(c) = &back.cover else { unreachable!() };
        let start = c.shared_start();
        assert_eq!(start.counted[&1], Counted::from_ranges([(0, 10), (12, 30)]));
        assert_eq!(start.floors[&1][&0], Counted::below(35));
        assert_eq!(start.read_from, HashMap::from([(0, 40), (1, 0)]));
        let restored = c.restored(&[1]);
        assert_eq!(restored.positions().get(&(Feed::Transfers, 1)), Some(&40));
        assert_eq!(restored.last_id(), 12);

        let bytes = fs::read(dir.path().join(FILE)).unwrap();
        let header = bytes.iter().position(|&b| b == b'\n').unwrap();
        // A flipped bit in the manifest, a header cut short, another magic.
        for (at, why) in [(header - 3, "checksum"), (0, "no FDSLOCAL header")] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            fs::write(dir.path().join(FILE), &bad).unwrap();
            let Err(Skip::Unreadable { reason, .. }) = open(dir.path()) else { panic!("{why}: read") };
            assert!(reason.contains(why), "{why}: {reason}");
        }
        fs::write(dir.path().join(FILE), &bytes[..header]).unwrap();
        assert!(matches!(open(dir.path()), Err(Skip::Unreadable { .. })));
        // The snapshot after the manifest cut short: refused whole.
        fs::write(dir.path().join(FILE), &bytes[..bytes.len() - 3]).unwrap();
        let (_, snapshot) = open(dir.path()).unwrap();
        assert!(matches!(load(dir.path(), &engine, snapshot), Err(Skip::Unreadable { .. })));
        assert!(matches!(open(&dir.path().join("nothing")), Err(Skip::Missing(_))));
    }

    /// A full disk: the write fails, the previous copy stays as it was, and
    /// no temporary file is left behind.
    #[test]
    fn a_write_that_fails_leaves_the_previous_copy() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::with_rules(crate::rules::RuleSet::empty());
        write(dir.path(), &engine, &manifest()).unwrap();
        let before = fs::read(dir.path().join(FILE)).unwrap();
        // `/dev/full` answers every write with ENOSPC, as a full disk does.
        let tmp = dir.path().join(format!("{FILE}.tmp"));
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let mut other = manifest();
        other.group = "another".into();
        let err = write(dir.path(), &engine, &other).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
        assert_eq!(fs::read(dir.path().join(FILE)).unwrap(), before);
        assert!(!tmp.exists() && fs::symlink_metadata(&tmp).is_err());
    }

    #[test]
    fn offsets_must_be_the_ones_committed() {
        let committed: Offsets = [(("transfers".to_owned(), 0), 10)].into();
        assert!(offsets_match(&[("transfers".into(), 0, 10)], &committed).is_ok());
        let Err(Skip::Stale(why)) = offsets_match(&[("transfers".into(), 0, 9)], &committed) else { panic!() };
        assert!(why.contains("transfers/0: committed 10"), "{why}");
    }
}
