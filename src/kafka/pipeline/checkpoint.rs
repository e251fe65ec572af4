//! The local checkpoint: on a graceful stop the state is written to the state
//! directory with the input offsets it covers; on the next start it is read
//! back if, and only if, the consumer group's committed offsets are still
//! exactly those, so nothing between them can be missing or counted twice.
//!
//! This covers planned restarts (a deploy, a host patch) of one instance that
//! owns every input partition. What it leaves out, on purpose, until state
//! is also kept on Kafka: a crash (`kill -9`) leaves no checkpoint newer than
//! the committed offsets, and an instance that owned only some partitions
//! cannot tell another instance's accounts from its own, so in both cases the
//! offsets do not match and the instance starts empty, as it did before, and
//! says so in its log. A checkpoint is never used half: a state file that
//! does not read is refused whole (see [`crate::state`]'s snapshots).
//!
//! Files, in the state directory: `state.snap` (the snapshot) and
//! `state.offsets` (one `topic partition offset` line per input partition).
//! Both are written to temporary names, synced, and renamed, the offsets
//! last: a stop cut short leaves either the previous pair or offsets that
//! cannot match, never a new snapshot passed off with old offsets.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::state::SnapshotStats;

const SNAPSHOT_FILE: &str = "state.snap";
const OFFSETS_FILE: &str = "state.offsets";

/// Committed offsets by (topic, partition).
pub(super) type Offsets = BTreeMap<(String, i32), i64>;

/// Write the engine's state and the offsets it covers. Called after the
/// final commit, with nothing in flight.
pub(super) fn write(dir: &Path, engine: &Engine, offsets: &Offsets) -> std::io::Result<SnapshotStats> {
    fs::create_dir_all(dir)?;
    let snap_tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut out = BufWriter::new(File::create(&snap_tmp)?);
    let stats = engine.write_snapshot(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    fs::rename(&snap_tmp, dir.join(SNAPSHOT_FILE))?;

    let off_tmp = dir.join(format!("{OFFSETS_FILE}.tmp"));
    let mut text = String::new();
    for ((topic, partition), offset) in offsets {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let mut file = File::create(&off_tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&off_tmp, dir.join(OFFSETS_FILE))?;
    Ok(stats)
}

/// Why a checkpoint was not used. Each is logged; the instance starts empty.
#[derive(Debug, thiserror::Error)]
pub(super) enum Skip {
    #[error("no checkpoint in {0}")]
    Missing(PathBuf),
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the checkpoint covers input up to other offsets than the group has committed \
         ({detail}): the input moved on after it was written (a crash, another instance, or a new \
         broker such as the embedded one, which starts empty)"
    )]
    Stale { detail: String },
}

/// The offsets a checkpoint in `dir` covers.
pub(super) fn offsets(dir: &Path) -> Result<Offsets, Skip> {
    let path = dir.join(OFFSETS_FILE);
    if !path.exists() || !dir.join(SNAPSHOT_FILE).exists() {
        return Err(Skip::Missing(dir.to_path_buf()));
    }
    let unreadable = |reason: String| Skip::Unreadable { path: path.clone(), reason };
    let text = fs::read_to_string(&path).map_err(|e| unreadable(e.to_string()))?;
    let mut out = Offsets::new();
    for (i, line) in text.lines().enumerate() {
        let bad = || unreadable(format!("line {}: expected `topic partition offset`, got {line:?}", i + 1));
        let mut parts = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let partition = partition.parse().map_err(|_| bad())?;
        let offset = offset.parse().map_err(|_| bad())?;
        out.insert((topic.to_owned(), partition), offset);
    }
    Ok(out)
}

/// Restore the engine from the checkpoint in `dir` if `committed` (every input
/// partition's committed offset, now) is exactly what it covers.
pub(super) fn restore(dir: &Path, engine: &Engine, committed: &Offsets) -> Result<SnapshotStats, Skip> {
    let covered = offsets(dir)?;
    if &covered != committed {
        let detail = committed
            .iter()
            .filter(|(k, v)| covered.get(*k) != Some(*v))
            .map(|((t, p), v)| format!("{t}/{p}: committed {v}, checkpoint {:?}", covered.get(&(t.clone(), *p))))
            .chain(
                covered
                    .keys()
                    .filter(|k| !committed.contains_key(*k))
                    .map(|(t, p)| format!("{t}/{p}: in the checkpoint only")),
            )
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Skip::Stale { detail });
    }
    let path = dir.join(SNAPSHOT_FILE);
    let file = File::open(&path).map_err(|e| Skip::Unreadable { path: path.clone(), reason: e.to_string() })?;
    engine.load_snapshot(BufReader::new(file)).map_err(|e| Skip::Unreadable { path, reason: e.to_string() })
}

/// The group's committed offsets on every partition of some topics.
pub(super) struct Committed {
    /// Partitions of the topics, committed or not.
    pub(super) partitions: usize,
    /// Each partition with a committed offset (one with none is left out, so
    /// an empty group matches no checkpoint).
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
