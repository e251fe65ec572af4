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

/// The checkpoint epoch an entity last changed in. Epoch 0 is none: an
/// entity created, or restored, carries it until its first change.
pub(super) type Epoch = u32;

/// An entity whose changes are tracked: the three kinds, alike.
pub(super) trait Tracked {
    const KIND: EntityKind;
    fn changed(&mut self) -> &mut Epoch;
    /// The entity's fields in the record format; returns the record kind.
    fn write(&self, payload: &mut Vec<u8>) -> u8;
}

impl Tracked for AccountState {
    const KIND: EntityKind = EntityKind::Account;
    fn changed(&mut self) -> &mut Epoch {
        &mut self.changed
    }
    fn write(&self, payload: &mut Vec<u8>) -> u8 {
        snapshot::write_account(payload, self);
        KIND_ACCOUNT
    }
}

impl Tracked for PayeeState {
    const KIND: EntityKind = EntityKind::Payee;
    fn changed(&mut self) -> &mut Epoch {
        &mut self.changed
    }
    fn write(&self, payload: &mut Vec<u8>) -> u8 {
        snapshot::write_payee(payload, self);
        KIND_PAYEE
    }
}

impl Tracked for DeviceState {
    const KIND: EntityKind = EntityKind::Device;
    fn changed(&mut self) -> &mut Epoch {
        &mut self.changed
    }
    fn write(&self, payload: &mut Vec<u8>) -> u8 {
        snapshot::write_device(payload, self);
        KIND_DEVICE
    }
}

#[derive(Default)]
pub(super) struct Tracker {
    on: AtomicBool,
    /// The current epoch: one more than the checkpoints begun since
    /// tracking began (so never 0 while on).
    epoch: AtomicU32,
    /// A checkpoint is being written: `pending` is not empty.
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
            if *entity.changed() != epoch {
                *entity.changed() = epoch;
                self.first_change(key, &**entity, created);
            }
        }
        entity
    }

    /// The dirty set (and the open checkpoint) learn of an entity's first
    /// change in the epoch. Invariant: an entity stamped with the current
    /// epoch is in `dirty` and not in `pending` (a checkpoint's `begin` moves
    /// `dirty` to `pending` and bumps the epoch, so it holds again).
    #[inline(never)]
    fn first_change<V: Tracked>(&self, key: &str, entity: &V, created: bool) {
        let changed = (V::KIND, CompactString::from(key));
        let mut sets = self.changes.lock();
        if self.changes.is_open() && sets.pending.swap_remove(&changed) {
            let record = (!created).then(|| record_of(key, entity));
            sets.written.push((changed.clone(), record));
        }
        sets.dirty.insert(changed);
    }

    /// Begin a checkpoint of the entities changed since the last one began
    /// (of every entity when `whole`). Returns how many it holds. Call it
    /// between events; the checkpoint is the state at that moment.
    pub fn begin_checkpoint(&self, whole: bool) -> usize {
        self.begin_checkpoint_of(whole, |_, _| true)
    }

    /// [`State::begin_checkpoint`] where `whole` takes only the entities
    /// `ours` says this writer writes (with several instances, each writes
    /// its partitions'). The changed entities are taken as they are, without
    /// `ours`: sorting them here held the scoring thread for milliseconds at
    /// every checkpoint's start, so the caller drops the others' records as
    /// [`State::checkpoint_step`] hands them over.
    pub fn begin_checkpoint_of(&self, whole: bool, ours: impl Fn(EntityKind, &str) -> bool) -> usize {
        let mut all = Vec::new();
        if whole {
            self.all_entities(&mut all);
            all.retain(|(kind, key)| ours(*kind, key));
        }
        let mut sets = self.changes.lock();
        // Every entity changes "for the first time" again, and finds itself
        // in `pending` if it is to be written.
        self.changes.epoch.fetch_add(1, Ordering::Relaxed);
        let dirty = std::mem::take(&mut sets.dirty);
        if sets.pending.is_empty() {
            sets.pending = dirty;
        } else {
            sets.pending.extend(dirty);
        }
        sets.pending.extend(all);
        let n = sets.pending.len() + sets.written.len();
        self.changes.open.store(n > 0, Ordering::Relaxed);
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
        let (next, done) = {
            let mut sets = self.changes.lock();
            out.append(&mut sets.written);
            let take = max.min(sets.pending.len());
            let next: Vec<Changed> = (0..take).filter_map(|_| sets.pending.pop()).collect();
            (next, sets.pending.is_empty())
        };
        for changed in next {
            let record = self.encode(&changed);
            out.push((changed, record));
        }
        if done {
            self.changes.open.store(false, Ordering::Relaxed);
        }
        done && self.changes.lock().written.is_empty()
    }

    /// Drop the open checkpoint unfinished (its writer no longer owns what
    /// it covers): what it had still to write counts as changed again.
    pub fn abandon_checkpoint(&self) {
        let mut sets = self.changes.lock();
        // Changed all the same: back to the next checkpoint's (a swept
        // entity's tombstone among them).
        let pending = std::mem::take(&mut sets.pending);
        let written = std::mem::take(&mut sets.written);
        sets.dirty.extend(pending);
        sets.dirty.extend(written.into_iter().map(|(changed, _)| changed));
        self.changes.open.store(false, Ordering::Relaxed);
    }

    fn encode(&self, (kind, key): &Changed) -> Option<Vec<u8>> {
        let mut record = Vec::new();
        self.entity_record(*kind, key, &mut record).then_some(record)
    }

    /// Every entity's kind and key, into `out` (a changelog writing the
    /// whole state again).
    pub fn all_entities(&self, out: &mut Vec<Changed>) {
        out.extend(self.accounts.iter().map(|e| (EntityKind::Account, e.key().clone())));
        out.extend(self.payees.iter().map(|e| (EntityKind::Payee, e.key().clone())));
        out.extend(self.devices.iter().map(|e| (EntityKind::Device, e.key().clone())));
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
    /// state is left as it was otherwise.
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
                let a = snapshot::read_account(&mut r).map_err(malformed)?;
                r.is_done().then_some(()).ok_or_else(left_over)?;
                self.accounts.insert(key, Box::new(a));
            }
            EntityKind::Payee => {
                let p = snapshot::read_payee(&mut r).map_err(malformed)?;
                r.is_done().then_some(()).ok_or_else(left_over)?;
                self.payees.insert(key, Box::new(p));
            }
            EntityKind::Device => {
                let d = snapshot::read_device(&mut r).map_err(malformed)?;
                r.is_done().then_some(()).ok_or_else(left_over)?;
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
}
