//! Changes: which entities changed since they were last taken, and one
//! entity at a time in the snapshot's record format, for a changelog that
//! carries single entities rather than whole snapshots.
//!
//! Tracking is off until [`State::track_changes`] turns it on, so a replay or
//! a pipeline without a changelog pays one relaxed load per change. On, each
//! entity carries the checkpoint epoch it last changed in (an [`Epoch`], bumped
//! as each checkpoint begins): a change to an entity already changed in this
//! epoch costs a comparison; only the first one per epoch takes the short,
//! uncontended lock and puts the entity in the dirty set. The set holds each
//! entity at most once however often it changed, which is what makes a
//! changelog carry the entities dirty per checkpoint rather than every update
//! (the Kafka Streams record cache does the same). Measured before the stamp,
//! a lock and a set insert on every change cost 11 % of unpaced throughput.
//! An entity swept by [`State::expire`] is a change too: it is gone, and
//! [`State::entity_record`] then says so.
//!
//! A *whole* checkpoint (every entity, after the partitions owned changed)
//! does not list the state when it begins: that held the scoring thread for
//! 6 ms at 21,000 entities, and would for a third of a second at a million.
//! It walks the maps a shard at a time instead, a few entities per step like
//! the changes, and each entity carries the epoch of the last whole
//! checkpoint that wrote it: the walk skips those already written (changed
//! since, and so written first, as they were), and an entity created during
//! the walk is marked written, for it was not there when the checkpoint
//! began.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use compact_str::CompactString;
use indexmap::IndexSet;

use super::snapshot::{self, Cursor, KIND_ACCOUNT, KIND_DEVICE, KIND_PAYEE};
#[cfg(test)]
use super::ExpiryClocks;
use super::{AccountState, DeviceState, EntityKind, Map, PayeeState, SnapshotError, State};

/// An entity that changed: its kind and key.
pub type Changed = (EntityKind, CompactString);

/// One entity's record for a changelog: `None` when the entity is gone.
pub type EntityRecord = (Changed, Option<Vec<u8>>);

/// A checkpoint epoch: the current one is bumped as each checkpoint begins.
/// Epoch 0 is none: an entity created, or restored, carries it until its
/// first change.
pub(super) type Epoch = u32;

/// What the change tracking keeps on each entity. Not state: never written,
/// nor compared.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Stamps {
    /// The epoch it last changed in.
    changed: Epoch,
    /// The epoch of the last whole checkpoint that wrote it.
    written: Epoch,
}

/// An entity whose changes are tracked: the three kinds, alike.
pub(super) trait Tracked {
    const KIND: EntityKind;
    fn stamps(&self) -> Stamps;
    fn stamps_mut(&mut self) -> &mut Stamps;
    /// The entity's fields in the record format; returns the record kind.
    fn write(&self, payload: &mut Vec<u8>) -> u8;
}

macro_rules! tracked {
    ($entity:ty, $kind:expr, $write:path, $tag:expr) => {
        impl Tracked for $entity {
            const KIND: EntityKind = $kind;
            fn stamps(&self) -> Stamps {
                self.stamps
            }
            fn stamps_mut(&mut self) -> &mut Stamps {
                &mut self.stamps
            }
            fn write(&self, payload: &mut Vec<u8>) -> u8 {
                $write(payload, self);
                $tag
            }
        }
    };
}
tracked!(AccountState, EntityKind::Account, snapshot::write_account, KIND_ACCOUNT);
tracked!(PayeeState, EntityKind::Payee, snapshot::write_payee, KIND_PAYEE);
tracked!(DeviceState, EntityKind::Device, snapshot::write_device, KIND_DEVICE);

/// Which entities a whole checkpoint writes (with several instances, each
/// writes its partitions').
pub type Ours = Box<dyn Fn(EntityKind, &str) -> bool + Send>;

/// A whole checkpoint's walk over the maps, a shard at a time.
struct Scan {
    /// The epoch the checkpoint began: an entity last written by a whole
    /// checkpoint before it is still to be written.
    epoch: Epoch,
    /// The map (0 accounts, 1 payees, 2 devices) and shard walked next.
    map: usize,
    shard: usize,
    /// The shard walked last: its kind and entities still to be written.
    kind: EntityKind,
    keys: Vec<CompactString>,
    ours: Ours,
}

#[derive(Default)]
pub(super) struct Tracker {
    on: AtomicBool,
    /// The current epoch: one more than the checkpoints begun since
    /// tracking began (so never 0 while on).
    epoch: AtomicU32,
    /// A checkpoint is being written: `pending` is not empty, or a walk
    /// is on.
    open: AtomicBool,
    sets: Mutex<Sets>,
}

/// A set of entities that also hands them out one by one in O(1): a
/// checkpoint takes its next entities from the end. A `HashSet` iterated
/// from its start each turn scanned the slots emptied by the turns before:
/// 0.5-0.7 ms for 16 entities late in a 68,000-entity checkpoint.
type Entities = IndexSet<Changed, ahash::RandomState>;

#[derive(Default)]
struct Sets {
    /// Changed since the last checkpoint began.
    dirty: Entities,
    /// The open checkpoint's entities not yet encoded.
    pending: Entities,
    /// The open checkpoint's entities encoded on first touch, before the
    /// change that touched them.
    written: Vec<EntityRecord>,
    /// The open whole checkpoint's walk.
    scan: Option<Scan>,
}

impl Tracker {
    /// Only record the change (the expiry sweep, which runs with no
    /// checkpoint open; see [`State::expire`]).
    pub(super) fn touch_dirty(&self, kind: EntityKind, key: &str) {
        if self.on.load(Ordering::Relaxed) {
            self.lock().dirty.insert((kind, CompactString::from(key)));
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Put encoded records back to be handed over by the next step.
    pub(super) fn park(&self, records: Vec<EntityRecord>) {
        self.lock().written.extend(records);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sets> {
        self.sets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// From now on, remember which entities change.
    pub fn track_changes(&self) {
        self.changes.epoch.fetch_max(1, Ordering::Relaxed);
        self.changes.on.store(true, Ordering::Relaxed);
    }

    /// Get an entity for a change, creating it on first sight (the key is
    /// allocated only then). On the entity's first change in the epoch,
    /// while a checkpoint is being written and the entity is still to be
    /// written, it is encoded first, as it was at the checkpoint (gone, if
    /// it is created just now): so the checkpoint is written a little at a
    /// time while scoring goes on (no pause), yet holds every entity as of
    /// one moment.
    #[inline]
    pub(super) fn change<'a, V: Tracked>(
        &self,
        map: &'a Map<V>,
        key: &str,
        new: impl FnOnce() -> V,
    ) -> dashmap::mapref::one::RefMut<'a, CompactString, Box<V>> {
        use dashmap::mapref::entry::Entry;
        let (mut entity, created) = match map.get_mut(key) {
            Some(e) => (e, false),
            None => match map.entry(CompactString::from(key)) {
                Entry::Occupied(e) => (e.into_ref(), false),
                Entry::Vacant(e) => (e.insert(Box::new(new())), true),
            },
        };
        if self.changes.on.load(Ordering::Relaxed) {
            let epoch = self.changes.epoch.load(Ordering::Relaxed);
            if entity.stamps().changed != epoch {
                entity.stamps_mut().changed = epoch;
                self.first_change(key, &mut **entity, created);
            }
        }
        entity
    }

    /// The dirty set (and the open checkpoint) learn of an entity's first
    /// change in the epoch. Invariant: an entity stamped with the current
    /// epoch is in `dirty` and not in `pending` (a checkpoint's `begin` moves
    /// `dirty` to `pending` and bumps the epoch, so it holds again).
    #[inline(never)]
    fn first_change<V: Tracked>(&self, key: &str, entity: &mut V, created: bool) {
        let changed = (V::KIND, CompactString::from(key));
        let mut sets = self.changes.lock();
        let mut write = self.changes.is_open() && sets.pending.swap_remove(&changed);
        if let Some(scan) = &sets.scan {
            let stamps = entity.stamps_mut();
            // Created now: not there when the walk began, not its to write.
            write |= !created && stamps.written < scan.epoch && (scan.ours)(V::KIND, key);
            stamps.written = scan.epoch;
        }
        if write {
            let record = (!created).then(|| record_of(key, entity));
            sets.written.push((changed.clone(), record));
        }
        sets.dirty.insert(changed);
    }

    /// Begin a checkpoint of the entities changed since the last one began
    /// (of every entity when `whole`). Returns how many it holds (when
    /// `whole`, at most). Call it between events; the checkpoint is the state
    /// at that moment.
    pub fn begin_checkpoint(&self, whole: bool) -> usize {
        self.begin_checkpoint_of(whole, Box::new(|_, _| true))
    }

    /// [`State::begin_checkpoint`] where `whole` takes only the entities
    /// `ours` says this writer writes (with several instances, each writes
    /// its partitions'). The changed entities are taken as they are, without
    /// `ours`: sorting them here held the scoring thread for milliseconds at
    /// every checkpoint's start, so the caller drops the others' records as
    /// [`State::checkpoint_step`] hands them over.
    pub fn begin_checkpoint_of(&self, whole: bool, ours: Ours) -> usize {
        let mut sets = self.changes.lock();
        // Every entity changes "for the first time" again, and finds itself
        // in `pending` if it is to be written.
        let epoch = self.changes.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let dirty = std::mem::take(&mut sets.dirty);
        if sets.pending.is_empty() {
            sets.pending = dirty;
        } else {
            sets.pending.extend(dirty);
        }
        let mut n = sets.pending.len() + sets.written.len();
        if whole {
            sets.scan = Some(Scan { epoch, map: 0, shard: 0, kind: EntityKind::Account, keys: Vec::new(), ours });
            n += self.accounts.len() + self.payees.len() + self.devices.len();
        }
        self.changes.open.store(n > 0 || whole, Ordering::Relaxed);
        n
    }

    /// [`State::checkpoint_step`] by time: records are encoded a few at a
    /// time until `until` has passed (at least a few, so a checkpoint always
    /// moves on). The scoring thread calls it between messages, so a
    /// checkpoint costs any one message a bounded wait, however large it is.
    pub fn checkpoint_step_until(&self, until: std::time::Instant, out: &mut Vec<EntityRecord>) -> bool {
        /// Entities encoded between two looks at the clock: most take a few
        /// µs, a payee at its caps tens.
        const CHUNK: usize = 4;
        loop {
            let done = self.checkpoint_step(CHUNK, out);
            if done || std::time::Instant::now() >= until {
                return done;
            }
        }
    }

    /// Hand over the open checkpoint's records: those encoded on first
    /// touch, then up to `max` more. Returns whether it is all handed over.
    pub fn checkpoint_step(&self, max: usize, out: &mut Vec<EntityRecord>) -> bool {
        let (next, pending_done, scan) = {
            let mut sets = self.changes.lock();
            out.append(&mut sets.written);
            let take = max.min(sets.pending.len());
            let next: Vec<Changed> = (0..take).filter_map(|_| sets.pending.pop()).collect();
            (next, sets.pending.is_empty(), sets.scan.take())
        };
        let walk = scan.as_ref().map(|s| s.epoch);
        let mut budget = max - next.len();
        for changed in next {
            let record = match changed.0 {
                EntityKind::Account => take_record(&self.accounts, &changed.1, walk),
                EntityKind::Payee => take_record(&self.payees, &changed.1, walk),
                EntityKind::Device => take_record(&self.devices, &changed.1, walk),
            };
            out.push((changed, record));
        }
        // The walk once the changes are out, so that an entity both changed
        // and walked over is written once.
        let walked = match scan {
            Some(mut scan) if pending_done => {
                let done = self.walk(&mut scan, &mut budget, out);
                if !done {
                    self.changes.lock().scan = Some(scan);
                }
                done
            }
            Some(scan) => {
                self.changes.lock().scan = Some(scan);
                false
            }
            None => true,
        };
        let done = pending_done && walked;
        if done {
            self.changes.open.store(false, Ordering::Relaxed);
        }
        done && self.changes.lock().written.is_empty()
    }

    /// Walk on until `budget` entities are written or the walk ends; returns
    /// whether it did.
    fn walk(&self, scan: &mut Scan, budget: &mut usize, out: &mut Vec<EntityRecord>) -> bool {
        loop {
            while *budget > 0 {
                let Some(key) = scan.keys.pop() else { break };
                let kind = scan.kind;
                let record = match kind {
                    EntityKind::Account => take_unwritten(&self.accounts, &key, scan.epoch),
                    EntityKind::Payee => take_unwritten(&self.payees, &key, scan.epoch),
                    EntityKind::Device => take_unwritten(&self.devices, &key, scan.epoch),
                };
                if let Some(record) = record {
                    out.push(((kind, key), Some(record)));
                    *budget -= 1;
                }
            }
            if *budget == 0 {
                return false;
            }
            let (epoch, ours) = (scan.epoch, &scan.ours);
            let shards = match scan.map {
                0 => unwritten_in_shard(&self.accounts, scan.shard, epoch, ours, &mut scan.keys),
                1 => unwritten_in_shard(&self.payees, scan.shard, epoch, ours, &mut scan.keys),
                2 => unwritten_in_shard(&self.devices, scan.shard, epoch, ours, &mut scan.keys),
                _ => return true,
            };
            scan.kind = [EntityKind::Account, EntityKind::Payee, EntityKind::Device][scan.map];
            scan.shard += 1;
            if scan.shard >= shards {
                scan.map += 1;
                scan.shard = 0;
            }
        }
    }

    /// Drop the open checkpoint unfinished (its writer no longer owns what
    /// it covers): what it had still to write counts as changed again.
    pub fn abandon_checkpoint(&self) {
        let mut sets = self.changes.lock();
        // Changed all the same: back to the next checkpoint's (a swept
        // entity's tombstone among them).
        let pending = std::mem::take(&mut sets.pending);
        let written = std::mem::take(&mut sets.written);
        // The walk's entities were not changed: nothing to keep of it.
        sets.scan = None;
        sets.dirty.extend(pending);
        sets.dirty.extend(written.into_iter().map(|(changed, _)| changed));
        self.changes.open.store(false, Ordering::Relaxed);
    }

    /// Write the entity as one checked record (kind, length, key and
    /// fields, CRC-32) into `out`; `false` when there is no such entity (it
    /// expired, or never was).
    pub fn entity_record(&self, kind: EntityKind, key: &str, out: &mut Vec<u8>) -> bool {
        let record = match kind {
            EntityKind::Account => self.accounts.get(key).map(|a| record_of(key, &**a)),
            EntityKind::Payee => self.payees.get(key).map(|p| record_of(key, &**p)),
            EntityKind::Device => self.devices.get(key).map(|d| record_of(key, &**d)),
        };
        match record {
            Some(r) => {
                *out = r;
                true
            }
            None => {
                out.clear();
                false
            }
        }
    }

    /// Put the entity of a record written by [`State::entity_record`] in
    /// place of the one with its key, when the record reads whole and is of
    /// the entity `expected` (the changelog key it was found under); the
    /// state is left as it was otherwise. An entity written with larger caps
    /// is trimmed to this state's.
    pub fn apply_record(&self, record: &[u8], expected: (EntityKind, &str)) -> Result<(), SnapshotError> {
        let mut payload = Vec::new();
        let kind = snapshot::read_record(&mut snapshot::Offset::new(record), &mut payload)?;
        let malformed = |reason: String| SnapshotError::Malformed { offset: 0, reason };
        let mut r = Cursor::new(&payload);
        let key = r.key().map_err(malformed)?;
        let found = match kind {
            KIND_ACCOUNT => EntityKind::Account,
            KIND_PAYEE => EntityKind::Payee,
            KIND_DEVICE => EntityKind::Device,
            other => return Err(malformed(format!("record kind {other} is not an entity"))),
        };
        if (found, key.as_str()) != expected {
            // The keys themselves stay out of the message: they are account numbers.
            return Err(malformed("a record of another entity than its key names".into()));
        }
        let left_over = || malformed("bytes left over after the entity".into());
        match found {
            EntityKind::Account => {
                let mut a = snapshot::read_account(&mut r).map_err(malformed)?;
                r.is_done().then_some(()).ok_or_else(left_over)?;
                a.trim_to_caps(&self.cfg);
                self.accounts.insert(key, Box::new(a));
            }
            EntityKind::Payee => {
                let mut p = snapshot::read_payee(&mut r).map_err(malformed)?;
                r.is_done().then_some(()).ok_or_else(left_over)?;
                p.trim_to_caps(&self.cfg);
                self.payees.insert(key, Box::new(p));
            }
            EntityKind::Device => {
                let mut d = snapshot::read_device(&mut r).map_err(malformed)?;
                r.is_done().then_some(()).ok_or_else(left_over)?;
                d.trim_to_caps(&self.cfg);
                self.devices.insert(key, Box::new(d));
            }
        }
        Ok(())
    }

    /// Forget the accounts `which` names (a partition's, before its
    /// checkpoint is restored in their place). Returns how many went.
    pub fn forget_accounts(&self, which: impl Fn(&str) -> bool) -> usize {
        let before = self.accounts.len();
        self.accounts.retain(|key, _| !which(key));
        before - self.accounts.len()
    }

    /// Forget an entity (a changelog said it is gone).
    pub fn remove(&self, kind: EntityKind, key: &str) {
        match kind {
            EntityKind::Account => drop(self.accounts.remove(key)),
            EntityKind::Payee => drop(self.payees.remove(key)),
            EntityKind::Device => drop(self.devices.remove(key)),
        }
    }
}

/// One entity as a checked record (kind, length, key and fields, CRC-32).
fn record_of<V: Tracked>(key: &str, entity: &V) -> Vec<u8> {
    let mut payload = Vec::with_capacity(256);
    snapshot::put_key(&mut payload, key);
    let kind = entity.write(&mut payload);
    let mut out = Vec::with_capacity(payload.len() + 16);
    snapshot::write_record(&mut out, kind, &payload).expect("writing to memory cannot fail");
    out
}

/// A changed entity's record for the checkpoint (`None`: gone), marked
/// written for the walk of `walk`, if one is on.
fn take_record<V: Tracked>(map: &Map<V>, key: &str, walk: Option<Epoch>) -> Option<Vec<u8>> {
    let mut entity = map.get_mut(key)?;
    if let Some(epoch) = walk {
        entity.stamps_mut().written = epoch;
    }
    Some(record_of(key, &**entity))
}

/// The record of an entity the walk found, unless it is gone or written
/// since (changed, and written first).
fn take_unwritten<V: Tracked>(map: &Map<V>, key: &str, epoch: Epoch) -> Option<Vec<u8>> {
    let mut entity = map.get_mut(key)?;
    if entity.stamps().written >= epoch {
        return None;
    }
    entity.stamps_mut().written = epoch;
    Some(record_of(key, &**entity))
}

/// The keys of shard `shard`'s entities `ours` takes and not yet written by
/// the walk of `epoch`, into `keys`. Returns the number of shards.
fn unwritten_in_shard<V: Tracked>(
    map: &Map<V>,
    shard: usize,
    epoch: Epoch,
    ours: &Ours,
    keys: &mut Vec<CompactString>,
) -> usize {
    let shards = map.shards();
    let table = shards[shard].read();
    // SAFETY: the shard's read lock is held for the whole walk of its table,
    // so no bucket is freed or moved while it is read.
    for bucket in unsafe { table.iter() } {
        let (key, value) = unsafe { bucket.as_ref() };
        if value.get().stamps().written < epoch && ours(V::KIND, key) {
            keys.push(key.clone());
        }
    }
    shards.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::build;
    use crate::state::StateConfig;

    #[test]
    fn changes_are_taken_once_each_and_records_carry_an_entity_across() {
        let a = State::new(StateConfig::default());
        let t = build::transfer("T1").account("A1").payee("088", "1234").device("D1").at("20261102101010").transfer();
        let seen = a.observe_transfer(&t, &t.payee_key());
        assert!(a.take_changes_vec().is_empty(), "nothing is tracked until asked");
        a.track_changes();
        a.settle_transfer(&t, &seen, false);
        let seen = a.observe_transfer(&t, &t.payee_key());
        a.settle_transfer(&t, &seen, false);
        let mut changed = a.take_changes_vec();
        changed.sort_by_key(|(k, key)| (*k as u8, key.clone()));
        let payee = t.payee_key();
        assert_eq!(
            changed,
            [
                (EntityKind::Account, "A1".into()),
                (EntityKind::Payee, payee.as_str().into()),
                (EntityKind::Device, "D1".into())
            ]
        );
        assert!(a.take_changes_vec().is_empty());

        let b = State::new(StateConfig::default());
        let mut rec = Vec::new();
        for (kind, key) in &changed {
            assert!(a.entity_record(*kind, key, &mut rec));
            b.apply_record(&rec, (*kind, key)).unwrap();
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.write_snapshot(ExpiryClocks::default(), &mut x).unwrap();
        b.write_snapshot(ExpiryClocks::default(), &mut y).unwrap();
        assert_eq!(x, y, "the same state, record for record");

        assert!(!a.entity_record(EntityKind::Account, "nobody", &mut rec));
        b.remove(EntityKind::Device, "D1");
        assert_eq!(b.entities(), (1, 1, 0));
        let mut bad = rec.clone();
        a.entity_record(EntityKind::Account, "A1", &mut bad);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(b.apply_record(&bad, (EntityKind::Account, "A1")), Err(SnapshotError::Checksum { .. })));
        // Under another entity's key: refused, and nothing put in the state.
        a.entity_record(EntityKind::Account, "A1", &mut rec);
        let before = b.entities();
        assert!(matches!(b.apply_record(&rec, (EntityKind::Account, "A9")), Err(SnapshotError::Malformed { .. })));
        assert!(b.apply_record(&rec, (EntityKind::Payee, "A1")).is_err());
        assert_eq!(b.entities(), before);
    }

    impl State {
        fn encode(&self, (kind, key): &Changed) -> Option<Vec<u8>> {
            let mut record = Vec::new();
            self.entity_record(*kind, key, &mut record).then_some(record)
        }

        /// Every entity's kind and key, into `out` (a changelog writing the
        /// whole state again).
        fn all_entities(&self, out: &mut Vec<Changed>) {
            out.extend(self.accounts.iter().map(|e| (EntityKind::Account, e.key().clone())));
            out.extend(self.payees.iter().map(|e| (EntityKind::Payee, e.key().clone())));
            out.extend(self.devices.iter().map(|e| (EntityKind::Device, e.key().clone())));
        }

        fn take_changes_vec(&self) -> Vec<Changed> {
            self.begin_checkpoint(false);
            let mut v = Vec::new();
            assert!(self.checkpoint_step(usize::MAX, &mut v));
            v.into_iter().map(|(c, _)| c).collect()
        }
    }

    /// A checkpoint taken by time hands over each entity once, at least a
    /// few per step, however little time is left.
    #[test]
    fn a_step_by_time_always_moves_and_ends_with_the_checkpoint() {
        let a = State::new(StateConfig::default());
        a.track_changes();
        for i in 0..10 {
            let t = build::transfer(&format!("T{i}")).account(&format!("A{i}")).payee("088", "1234").transfer();
            let seen = a.observe_transfer(&t, &t.payee_key());
            a.settle_transfer(&t, &seen, false);
        }
        // Ten accounts and a payee.
        assert_eq!(a.begin_checkpoint(false), 11);
        let mut records = Vec::new();
        // A deadline already passed still takes a few: a checkpoint always
        // moves on.
        assert!(!a.checkpoint_step_until(std::time::Instant::now(), &mut records));
        assert!(!records.is_empty() && records.len() < 11, "{}", records.len());
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        assert!(a.checkpoint_step_until(later, &mut records), "the rest at once when time allows");
        let keys: std::collections::HashSet<_> = records.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!((records.len(), keys.len()), (11, 11), "each entity once");
        assert_eq!(a.begin_checkpoint(false), 0, "nothing changed since");
    }

    /// A checkpoint is written a little at a time while events go on, yet
    /// holds every entity as it was when it began.
    #[test]
    fn a_checkpoint_written_in_steps_holds_the_state_of_its_start() {
        let a = State::new(StateConfig::default());
        a.track_changes();
        let transfer = |id: &str, account: &str, at: &str| {
            build::transfer(id).account(account).payee("088", "1234").device("D1").at(at).amount(50_000).transfer()
        };
        for (i, account) in ["A1", "A2", "A3"].iter().enumerate() {
            let t = transfer(&format!("T{i}"), account, "20261102101010");
            let seen = a.observe_transfer(&t, &t.payee_key());
            a.settle_transfer(&t, &seen, false);
        }
        let mut everything = Vec::new();
        a.all_entities(&mut everything);
        let at_start: std::collections::HashMap<Changed, Option<Vec<u8>>> =
            everything.iter().map(|c| (c.clone(), a.encode(c))).collect();
        assert_eq!(a.begin_checkpoint(false), 5);

        let mut records = Vec::new();
        assert!(!a.checkpoint_step(1, &mut records), "one at a time: more to come");
        // Events go on between steps: the entities they touch are taken first.
        let t = transfer("T9", "A2", "20261102101500");
        let seen = a.observe_transfer(&t, &t.payee_key());
        a.settle_transfer(&t, &seen, false);
        while !a.checkpoint_step(1, &mut records) {}
        assert_eq!(records.len(), 5);

        let written: std::collections::HashMap<Changed, Option<Vec<u8>>> = records.into_iter().collect();
        assert_eq!(written, at_start, "the checkpoint is the state when it began");
        let (a2, _) = (Changed::from((EntityKind::Account, "A2".into())), ());
        assert_ne!(a.encode(&a2), at_start[&a2], "A2 did change meanwhile");
        // And what changed meanwhile is the next checkpoint's.
        assert_eq!(a.begin_checkpoint(false), 3, "A2, its payee and its device");
    }

    /// An entity swept before a checkpoint began and created again before
    /// its turn is written as gone, as it was when the checkpoint began; the
    /// new one is the next checkpoint's.
    #[test]
    fn an_entity_created_again_while_its_tombstone_is_pending_is_written_gone() {
        let a = State::new(StateConfig::default());
        a.track_changes();
        let transfer = |id: &str, at: &str| build::transfer(id).account("A1").payee("088", "1234").at(at).transfer();
        let t = transfer("T1", "20260102101010");
        let seen = a.observe_transfer(&t, &t.payee_key());
        a.settle_transfer(&t, &seen, false);
        a.take_changes_vec();
        assert!(a.expire(crate::event::EventTime::from_secs(t.tran_dtime.millis() / 1000 + 400 * 86_400)) > 0);
        assert_eq!(a.entities(), (0, 0, 0), "swept");
        assert_eq!(a.begin_checkpoint(false), 2, "the account's and the payee's tombstones");

        let t = transfer("T2", "20270202101010");
        let seen = a.observe_transfer(&t, &t.payee_key());
        a.settle_transfer(&t, &seen, false);
        let mut records = Vec::new();
        assert!(a.checkpoint_step(usize::MAX, &mut records));
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|(_, r)| r.is_none()), "gone, as when the checkpoint began");
        assert_eq!(a.begin_checkpoint(false), 2, "the new ones are the next checkpoint's");
        let mut records = Vec::new();
        assert!(a.checkpoint_step(usize::MAX, &mut records));
        assert!(records.iter().all(|(_, r)| r.is_some()));
    }

    /// A whole checkpoint walks the maps a few entities per step while
    /// events go on, yet holds every entity (of those it takes) once, as it
    /// was when it began: none created since, none at a later version.
    #[test]
    fn a_whole_checkpoint_walked_in_steps_holds_every_entity_of_its_start() {
        let a = State::new(StateConfig::default());
        a.track_changes();
        let pay = |a: &State, id: &str, account: &str, device: &str, at: &str| {
            let t = build::transfer(id).account(account).payee("088", "1234").device(device).at(at).transfer();
            let seen = a.observe_transfer(&t, &t.payee_key());
            a.settle_transfer(&t, &seen, false);
        };
        for i in 0..600 {
            pay(&a, &format!("T{i}"), &format!("A{i}"), &format!("D{}", i % 7), "20261102101010");
        }
        a.take_changes_vec();
        let mut everything = Vec::new();
        a.all_entities(&mut everything);
        let at_start: std::collections::HashMap<Changed, Option<Vec<u8>>> =
            everything.iter().map(|c| (c.clone(), a.encode(c))).collect();
        assert_eq!(at_start.len(), 608, "600 accounts, a payee, 7 devices");

        assert_eq!(a.begin_checkpoint(true), 608);
        let mut records = Vec::new();
        let mut steps = 0;
        loop {
            let before = records.len();
            let done = a.checkpoint_step(5, &mut records);
            steps += 1;
            // Between steps: old accounts change, new ones appear.
            pay(&a, &format!("U{steps}"), &format!("A{}", (steps * 37) % 600), "D1", "20261102111010");
            pay(&a, &format!("N{steps}"), &format!("NEW{steps}"), "D99", "20261102111010");
            assert!(records.len() - before <= 5 + 3, "a step hands over its budget and what was written first");
            if done {
                break;
            }
        }
        assert!(steps > 100, "a few at a time: {steps} steps");
        let keys: std::collections::HashSet<_> = records.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(keys.len(), records.len(), "each entity once");
        let written: std::collections::HashMap<Changed, Option<Vec<u8>>> = records.into_iter().collect();
        let missing: Vec<_> = at_start.keys().filter(|k| !written.contains_key(*k)).collect();
        let extra: Vec<_> = written.keys().filter(|k| !at_start.contains_key(*k)).collect();
        let other: Vec<_> =
            at_start.iter().filter(|(k, v)| written.get(*k).is_some_and(|w| w != *v)).map(|(k, _)| k).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && other.is_empty(),
            "missing {missing:?}, extra {extra:?}, changed {other:?}"
        );
        assert!(a.begin_checkpoint(false) > 2 * steps, "what changed or came meanwhile is the next one's");

        // Only the entities `ours` takes.
        let mut records = Vec::new();
        a.begin_checkpoint_of(true, Box::new(|kind, key| kind == EntityKind::Account && key.starts_with("A1")));
        while !a.checkpoint_step(7, &mut records) {}
        let accounts = records.iter().filter(|((kind, key), _)| *kind == EntityKind::Account && key.starts_with("A1"));
        assert_eq!(accounts.count(), 111, "A1, A10-A19, A100-A199");
    }
}
