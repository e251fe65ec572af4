//! The local copy's file: a header line with the checksummed manifest of
//! what the state covers, then the state snapshot; written whole or not at
//! all (see the parent module for when a copy is used).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;
use crate::kafka::pipeline::ledger::{Counted, CountedBy, Ranges};
use crate::state::SnapshotStats;

/// The copy, in the state directory.
const FILE: &str = "state.local";

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
    pub(super) group: String,
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
pub(in crate::kafka::pipeline) struct ChangelogCover {
    /// The `state` topic and its partition count.
    pub(super) state_topic: String,
    pub(super) groups: u32,
    /// The writer whose checkpoints the copy's accounts match, and its last
    /// checkpoint number (the next one written goes past it).
    pub(super) writer: u64,
    pub(in crate::kafka::pipeline) last_id: u64,
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

impl ChangelogCover {
    /// What the shared tables start from: the ledger as it was, the
    /// observations read on from where the reader stood.
    pub(in crate::kafka::pipeline) fn shared_start(&self) -> SharedStart {
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
    pub(in crate::kafka::pipeline) fn restored(&self, partitions: &[i32]) -> Restored {
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
                from: None,
            };
            restored.markers.insert(c.partition, marker);
        }
        restored
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
}
