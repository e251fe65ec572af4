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
//!   point (`shared::SharedStart`).
//! - **When partitions are assigned** (at start, and when another instance
//!   dies or leaves) their accounts are restored before any of their
//!   messages is handled, in the rebalance callback, and the partitions are
//!   rewound to the checkpoint's positions.

use std::collections::HashMap;

use super::changelog::{kind_tag, Marker, HEADER_CHECKPOINT, MARKER_KEY};
use super::ledger::Counted;
use super::*;
use crate::state::{EntityKind, ExpiryClocks};

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

    /// The input positions the restored accounts cover.
    pub(super) fn positions(&self) -> Positions {
        self.markers.values().flat_map(positions_of).collect()
    }

    /// The highest checkpoint number seen: the next one written must be past it.
    pub(super) fn last_id(&self) -> u64 {
        self.markers.values().map(|m| m.id).max().unwrap_or(0)
    }
}

/// Read the partitions of `state` that `which` picks to their end and put
/// the entities of the kinds `wanted` picks in the state, as of each
/// partition's latest complete checkpoint. All or nothing per call: a record
/// that does not read is reported and nothing more is applied.
pub(super) fn read_state(
    opts: &PipelineOptions,
    engine: &Engine,
    stop: &StopFlag,
    which: impl Fn(i32) -> bool,
    wanted: impl Fn(EntityKind) -> bool,
) -> Result<Restored, String> {
    let consumer = reader(opts, "state-restore", "state restore", &[])
        .map_err(|e| format!("cannot create the restore consumer: {e}"))?;
    // Per (partition, entity), its latest records by checkpoint number (see
    // `Versions`).
    let mut versions: HashMap<(i32, Vec<u8>), Versions> = HashMap::new();
    let mut restored = Restored::default();
    let mut bad: Option<String> = None;
    let topic = &opts.topics.state;
    let complete = read_to_end(
        &consumer,
        topic,
        which,
        |low, _| low,
        stop,
        READ_BACK_LIMIT,
        |m| {
            restored.bytes += m.payload().map_or(0, |p| p.len() as u64);
            let key = m.key().unwrap_or_default();
            let at = || format!("topic {topic} partition {} offset {}", m.partition(), m.offset());
            if key == MARKER_KEY {
                match m.payload().map(serde_json::from_slice::<Marker>) {
                    Some(Ok(found)) => {
                        let latest = restored.markers.entry(m.partition()).or_insert_with(|| found.clone());
                        if found.id > latest.id {
                            *latest = found;
                        }
                    }
                    _ => {
                        bad.get_or_insert_with(|| format!("{}: a bad checkpoint marker", at()));
                    }
                }
                return;
            }
            let kind = match key.first() {
                Some(&t) if t == kind_tag(EntityKind::Account) => EntityKind::Account,
                Some(&t) if t == kind_tag(EntityKind::Payee) => EntityKind::Payee,
                Some(&t) if t == kind_tag(EntityKind::Device) => EntityKind::Device,
                _ => {
                    bad.get_or_insert_with(|| format!("{}: a key that names no entity", at()));
                    return;
                }
            };
            if !wanted(kind) {
                return;
            }
            let Some(id) = header(m, HEADER_CHECKPOINT).and_then(|h| h.parse::<u64>().ok()) else {
                bad.get_or_insert_with(|| format!("{}: no checkpoint header", at()));
                return;
            };
            let version = (id, m.payload().map(<[u8]>::to_vec));
            match versions.get_mut(&(m.partition(), key.to_vec())) {
                Some(v) => v.add(version),
                None => {
                    versions.insert((m.partition(), key.to_vec()), Versions::new(version));
                }
            }
        },
    );
    if !complete {
        return Err(format!("could not read topic {topic} to its end"));
    }
    if let Some(why) = bad {
        return Err(why);
    }
    let state = engine.state();
    for ((partition, key), versions) in versions {
        let Some(marker) = restored.markers.get(&partition) else { continue };
        let record = match versions.at(marker.id) {
            AsOf::Record(record) => record,
            AsOf::Absent => continue,
            AsOf::Lost => {
                return Err(format!(
                    "topic {topic} partition {partition}: an entity written by more unfinished checkpoints after \
                     checkpoint {} than a restore keeps apart; its state as of that checkpoint is unknown",
                    marker.id
                ))
            }
        };
        let (kind, found) = state
            .apply_record(&record)
            .map_err(|e| format!("topic {topic} partition {partition}: an entity record: {e}"))?;
        if key.first() != Some(&kind_tag(kind)) || key[1..] != *found.as_bytes() {
            return Err(format!("topic {topic} partition {partition}: an entity record under another entity's key"));
        }
        restored.entities += 1;
    }
    // The expiry clocks of the newest checkpoint: sweeps go on from there.
    if let Some(m) = restored.markers.values().max_by_key(|m| m.id) {
        let clocks = ExpiryClocks { expiry_clock: m.expiry_clock, last_expiry: m.last_expiry };
        if clocks.expiry_clock > engine.expiry_clocks().expiry_clock {
            engine.set_expiry_clocks(clocks);
        }
    }
    Ok(restored)
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
) -> Restored {
    health.set_restoring(true);
    let started = Instant::now();
    tracing::info!(topic = %opts.topics.state, "restoring the shared payee and device tables from the changelog");
    let result = read_state(opts, engine, stop, |_| true, |k| k != EntityKind::Account);
    health.set_restoring(false);
    finish("shared tables", result, started, engine, opts, metrics).unwrap_or_default()
}

/// When partitions are assigned: their accounts, in place of whatever this
/// instance still held of them, before any of their messages is handled.
pub(super) fn restore_accounts(
    partitions: &[i32],
    groups: u32,
    engine: &Engine,
    opts: &PipelineOptions,
    metrics: &Metrics,
    health: &Health,
    stop: &StopFlag,
) -> Restored {
    health.set_restoring(true);
    let started = Instant::now();
    let ours = |key: &str| partitions.contains(&crate::input::order::partition_for(key.as_bytes(), groups));
    let forgotten = engine.state().forget_accounts(ours);
    tracing::info!(?partitions, forgotten, "restoring the accounts of the partitions assigned");
    let result = read_state(opts, engine, stop, |p| partitions.contains(&p), |k| k == EntityKind::Account);
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

/// One entity's records in one partition, the highest checkpoint numbers
/// kept: a restore takes the latest of them that is not past the partition's
/// latest complete checkpoint. Records of a checkpoint that never completed
/// (its writer crashed, or lost the partition, before its marker) are past
/// it; records arrive out of number order when an instance that lost a
/// partition still wrote a few. Each unfinished checkpoint after the last
/// complete one takes a place, so a few are enough; when more than that
/// pushed out the one needed, the restore says so rather than guess.
struct Versions {
    /// Highest numbers first, at most [`Versions::KEPT`].
    kept: Vec<(u64, Option<Vec<u8>>)>,
    /// A lower-numbered record was pushed out.
    dropped: bool,
}

/// What an entity was as of a complete checkpoint.
#[derive(Debug, PartialEq)]
enum AsOf {
    /// Its record then.
    Record(Vec<u8>),
    /// It did not exist then (or was swept).
    Absent,
    /// Not known: the records that would say were pushed out.
    Lost,
}

impl Versions {
    const KEPT: usize = 4;

    fn new(first: (u64, Option<Vec<u8>>)) -> Self {
        Versions { kept: vec![first], dropped: false }
    }

    fn add(&mut self, version: (u64, Option<Vec<u8>>)) {
        // The same checkpoint twice (a retried send): the later one.
        let at = self.kept.partition_point(|k| k.0 > version.0);
        if self.kept.get(at).is_some_and(|k| k.0 == version.0) {
            self.kept[at] = version;
            return;
        }
        self.kept.insert(at, version);
        if self.kept.len() > Self::KEPT {
            self.kept.pop();
            self.dropped = true;
        }
    }

    fn at(self, checkpoint: u64) -> AsOf {
        match self.kept.into_iter().find(|k| k.0 <= checkpoint) {
            Some((_, Some(record))) => AsOf::Record(record),
            Some((_, None)) => AsOf::Absent,
            None if self.dropped => AsOf::Lost,
            None => AsOf::Absent,
        }
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

    #[test]
    fn an_entity_is_taken_as_of_the_last_complete_checkpoint() {
        let record = |s: &str| Some(s.as_bytes().to_vec());
        let of = |written: &[(u64, Option<Vec<u8>>)], checkpoint| {
            let mut v = Versions::new(written[0].clone());
            for w in &written[1..] {
                v.add(w.clone());
            }
            v.at(checkpoint)
        };
        let got = |s: &str| AsOf::Record(s.as_bytes().to_vec());
        // Written in checkpoint 7, then in 9, which never completed: 7 holds.
        assert_eq!(of(&[(7, record("old")), (9, record("new"))], 8), got("old"));
        assert_eq!(of(&[(7, record("old")), (9, record("new"))], 9), got("new"));
        // First written in the incomplete checkpoint: it did not exist yet.
        assert_eq!(of(&[(9, record("new"))], 8), AsOf::Absent);
        assert_eq!(of(&[(3, record("only"))], 8), got("only"));
        // Swept in 5.
        assert_eq!(of(&[(3, record("was")), (5, None)], 6), AsOf::Absent);
        // Two unfinished checkpoints in a row, one written late by an
        // instance that had lost the partition (out of number order).
        assert_eq!(of(&[(7, record("old")), (11, record("b")), (9, record("a"))], 8), got("old"));
        assert_eq!(of(&[(11, record("b")), (7, record("old")), (9, record("a"))], 10), got("a"));
        // More unfinished ones than are kept apart: said, not guessed.
        let many: Vec<_> = (0..6).map(|i| (7 + i, record("x"))).collect();
        assert_eq!(of(&many, 7), AsOf::Lost);
        assert_eq!(of(&many, 12), got("x"));
    }

    #[test]
    fn markers_say_where_each_group_stands_and_where_to_read_from() {
        let marker = |id, counted: Vec<(i32, i64)>, observed: Vec<(i32, i64)>| Marker {
            id,
            expiry_clock: 1,
            last_expiry: 0,
            positions: vec![(Feed::Context.name().into(), 0, 12), (Feed::Transfers.name().into(), 0, 40)],
            counted: counted.into_iter().map(|(p, next)| (p, vec![(0, next)])).collect(),
            observed,
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
