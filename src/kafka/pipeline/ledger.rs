//! Counted once: which transfers the shared payee and device tables here
//! already hold, whether this instance scored them or read another's
//! observation of them, and where a restored checkpoint already held them.
//!
//! Pure bookkeeping, no I/O, so every ordering a group can produce is a unit
//! test here. The orderings that matter:
//!
//! - An instance takes over a partition and scores it from the previous
//!   owner's checkpoint while that owner's last observations (of transfers
//!   just below the checkpoint) are still on their way. Both must count: so
//!   what is counted is a set of offsets per partition ([`Counted`]), not a
//!   high-water mark that the first scored transfer would move past them.
//! - A partition this instance owns is counted as it is scored, in input
//!   order, so each decision reads the tables as one instance would have:
//!   an observation of it at or past where this instance started is skipped
//!   (the instance's own coming back, or the previous owner's of transfers
//!   handled again here), without being marked counted.
//! - After a restore, each group of payees and devices (the `state`
//!   partition their key hashes to) stands where its own checkpoint stood
//!   ([`Ledger::floors`]): a transfer counts in a payee or device only where
//!   that group's checkpoint lacks it.

use std::collections::HashMap;

use crate::input::order::partition_for;
use crate::state::SharedCount;

/// Offsets of one transfers partition: sorted, disjoint, non-touching
/// half-open ranges. Counting runs mostly in offset order, so the common
/// case extends the last range in place; a gap opens when a partition is
/// scored ahead of observations still on their way, and closes when they
/// arrive.
///
/// Written by hand: range-set crates keep a tree per set, and this one is
/// hit once per transfer where the append is the whole job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Counted {
    ranges: Vec<(i64, i64)>,
}

/// Ranges a [`Counted`] keeps at most. Past it the two lowest ranges merge:
/// the oldest gap, whose observations were lost (a batch the broker refused
/// for good), is given up rather than growing without bound.
const MAX_RANGES: usize = 64;

impl Counted {
    /// From ranges `[start, end)` in any order, overlapping or not.
    pub(super) fn from_ranges(ranges: impl IntoIterator<Item = (i64, i64)>) -> Self {
        let mut r: Vec<(i64, i64)> = ranges.into_iter().filter(|(s, e)| s < e).collect();
        r.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(r.len());
        for (s, e) in r {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        let mut counted = Counted { ranges: out };
        counted.bound();
        counted
    }

    /// Every offset below `next`.
    pub(super) fn below(next: i64) -> Self {
        Self::from_ranges([(0, next)])
    }

    pub(super) fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

    pub(super) fn contains(&self, offset: i64) -> bool {
        let i = self.ranges.partition_point(|&(s, _)| s <= offset);
        i > 0 && offset < self.ranges[i - 1].1
    }

    /// Add `offset`; `false` when it was there already (or cannot be an
    /// offset: Kafka's are 0 up to `i64::MAX` excluded).
    pub(super) fn insert(&mut self, offset: i64) -> bool {
        let Some(end) = offset.checked_add(1).filter(|_| offset >= 0) else { return false };
        match self.ranges.last_mut() {
            Some(last) if last.1 == offset => {
                last.1 = end;
                return true;
            }
            Some(last) if last.1 < offset => {
                self.ranges.push((offset, end));
                self.bound();
                return true;
            }
            None => {
                self.ranges.push((offset, end));
                return true;
            }
            _ => {}
        }
        let i = self.ranges.partition_point(|&(s, _)| s <= offset);
        if i > 0 && offset < self.ranges[i - 1].1 {
            return false;
        }
        let joins_before = i > 0 && self.ranges[i - 1].1 == offset;
        let joins_after = i < self.ranges.len() && self.ranges[i].0 == end;
        match (joins_before, joins_after) {
            (true, true) => {
                self.ranges[i - 1].1 = self.ranges[i].1;
                self.ranges.remove(i);
            }
            (true, false) => self.ranges[i - 1].1 = end,
            (false, true) => self.ranges[i].0 = offset,
            (false, false) => {
                self.ranges.insert(i, (offset, end));
                self.bound();
            }
        }
        true
    }

    /// The offsets in both.
    pub(super) fn intersect(&self, other: &Counted) -> Counted {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            let (s, e) = (a.0.max(b.0), a.1.min(b.1));
            if s < e {
                out.push((s, e));
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Counted { ranges: out }
    }

    /// The offsets in either.
    pub(super) fn union(&self, other: &Counted) -> Counted {
        Counted::from_ranges(self.ranges.iter().chain(&other.ranges).copied())
    }

    /// Whether every offset of `other` is here.
    pub(super) fn covers(&self, other: &Counted) -> bool {
        other.ranges.iter().all(|&(s, e)| {
            let i = self.ranges.partition_point(|&(rs, _)| rs <= s);
            i > 0 && e <= self.ranges[i - 1].1
        })
    }

    fn bound(&mut self) {
        while self.ranges.len() > MAX_RANGES {
            let end = self.ranges[1].1;
            self.ranges[0].1 = end;
            self.ranges.remove(1);
        }
    }
}

/// Per transfers partition, its [`Counted`] offsets.
pub(super) type CountedBy = HashMap<i32, Counted>;

/// Per transfers partition, offset ranges `[from, to)`, sorted by partition:
/// a [`CountedBy`] as markers and local copies write it.
pub(super) type Ranges = Vec<(i32, Vec<(i64, i64)>)>;

fn ranges_of(by: &CountedBy) -> Ranges {
    let mut v: Ranges = by.iter().map(|(p, c)| (*p, c.ranges().to_vec())).collect();
    v.sort_unstable();
    v
}

/// The bookkeeping of [`super::SharedTables`] (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Per transfers partition, the offsets in the shared tables here (for
    /// every group; see `floors` for the groups' own).
    counted: CountedBy,
    /// After a restore, until `counted` covers them: per group, the offsets
    /// its restored checkpoint already held.
    floors: HashMap<i32, CountedBy>,
    /// Partitions of `state`: the groups payee and device keys hash to.
    groups: u32,
    /// Per partition owned, the first offset this instance counts itself
    /// (`None`: not known until the first transfer is scored).
    owned_from: HashMap<i32, Option<i64>>,
}

impl Ledger {
    /// With `counted` (a local snapshot's, all groups alike) or, after a
    /// changelog restore, each group's `floors`: what every group holds is
    /// counted from the start, so the floors retire once the groups ahead
    /// of the others have been caught up with.
    pub(super) fn new(counted: CountedBy, floors: HashMap<i32, CountedBy>, groups: u32) -> Self {
        let groups = groups.max(1);
        let mut counted = counted;
        if counted.is_empty() && !floors.is_empty() && (0..groups as i32).all(|g| floors.contains_key(&g)) {
            let mut each = floors.values();
            counted = each.next().cloned().unwrap_or_default();
            for f in each {
                counted.retain(|p, c| match f.get(p) {
                    Some(other) => {
                        *c = c.intersect(other);
                        true
                    }
                    None => false,
                });
            }
        }
        Ledger { counted, floors, groups, owned_from: HashMap::new() }
    }

    /// A transfer this instance scores: where it still has to be counted
    /// (`None`: it is counted already; its payee and device are read as they
    /// are).
    pub(super) fn scored(
        &mut self,
        partition: i32,
        offset: i64,
        payee: &str,
        device: Option<&str>,
    ) -> Option<SharedCount> {
        if let Some(from @ None) = self.owned_from.get_mut(&partition) {
            *from = Some(offset);
        }
        self.first_sight(partition, offset, payee, device)
    }

    /// Another instance's observation of a transfer: where to count it
    /// (`None`: skip it, counted already or to be counted here when scored).
    pub(super) fn observed(
        &mut self,
        partition: i32,
        offset: i64,
        payee: &str,
        device: Option<&str>,
    ) -> Option<SharedCount> {
        if self.owned_from.get(&partition).is_some_and(|&from| from.is_some_and(|from| offset >= from)) {
            return None;
        }
        self.first_sight(partition, offset, payee, device)
    }

    fn first_sight(&mut self, partition: i32, offset: i64, payee: &str, device: Option<&str>) -> Option<SharedCount> {
        if !self.counted.entry(partition).or_default().insert(offset) {
            return None;
        }
        if self.floors.is_empty() {
            return Some(SharedCount::COUNT);
        }
        Some(SharedCount {
            payee: !self.held_by_group(payee, partition, offset),
            device: device.is_some_and(|d| !self.held_by_group(d, partition, offset)),
        })
    }

    /// Whether the restored checkpoint of `key`'s group holds the transfer.
    fn held_by_group(&self, key: &str, partition: i32, offset: i64) -> bool {
        let group = partition_for(key.as_bytes(), self.groups);
        self.floors.get(&group).and_then(|f| f.get(&partition)).is_some_and(|c| c.contains(offset))
    }

    /// This instance now counts `partition` itself from offset `from` on
    /// (`None`: not known; then from the first transfer it scores, and
    /// observations are counted until then).
    pub(super) fn own(&mut self, partition: i32, from: Option<i64>) {
        self.owned_from.insert(partition, from);
    }

    /// The partitions went to the group's next assignment.
    pub(super) fn disown_all(&mut self) {
        self.owned_from.clear();
    }

    pub(super) fn owned(&self) -> impl Iterator<Item = i32> + '_ {
        self.owned_from.keys().copied()
    }

    /// What a checkpoint of `group`'s payees and devices records: per
    /// transfers partition, the ranges they hold (counted here, and what the
    /// group's restored checkpoint held already).
    pub(super) fn counted_in(&self, group: i32) -> Vec<(i32, Vec<(i64, i64)>)> {
        let floors = self.floors.get(&group);
        let mut partitions: Vec<i32> =
            self.counted.keys().chain(floors.into_iter().flat_map(|f| f.keys())).copied().collect();
        partitions.sort_unstable();
        partitions.dedup();
        let none = Counted::default();
        partitions
            .into_iter()
            .map(|p| {
                let c = self.counted.get(&p).unwrap_or(&none);
                let held = match floors.and_then(|f| f.get(&p)) {
                    Some(floor) => c.union(floor),
                    None => c.clone(),
                };
                (p, held.ranges().to_vec())
            })
            .collect()
    }

    /// What is counted, and per group the floors not yet retired.
    pub(super) fn parts(&self) -> (Ranges, Vec<(i32, Ranges)>) {
        let mut floors: Vec<(i32, Ranges)> = self.floors.iter().map(|(g, f)| (*g, ranges_of(f))).collect();
        floors.sort_unstable();
        (ranges_of(&self.counted), floors)
    }

    /// Drop the restore's floors once everything they hold is counted here
    /// too (from then on every group stands at one point).
    pub(super) fn retire_floors(&mut self) {
        if self.floors.is_empty() {
            return;
        }
        let passed = self
            .floors
            .values()
            .all(|f| f.iter().all(|(p, floor)| self.counted.get(p).is_some_and(|c| c.covers(floor))));
        if passed {
            self.floors.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_offsets_merge_into_ranges_in_any_order() {
        let mut c = Counted::default();
        for o in [0, 1, 2, 5, 6, 4, 3, 10] {
            assert!(c.insert(o), "{o} is new");
        }
        assert_eq!(c.ranges(), &[(0, 7), (10, 11)]);
        assert!(!c.insert(4), "counted once");
        assert!(c.contains(6) && !c.contains(7) && c.contains(10) && !c.contains(11));
        assert!(c.insert(8));
        assert_eq!(c.ranges(), &[(0, 7), (8, 9), (10, 11)]);
        assert!(c.insert(9) && c.insert(7));
        assert_eq!(c.ranges(), &[(0, 11)]);
        assert!(!c.insert(-1) && !c.insert(i64::MAX), "not offsets");
        assert_eq!(Counted::from_ranges([(5, 9), (0, 3), (2, 6), (20, 20)]).ranges(), &[(0, 9)]);
        assert!(Counted::below(11).covers(&c) && c.covers(&Counted::below(11)));
        assert!(!c.covers(&Counted::below(12)));
        assert!(Counted::below(3).covers(&Counted::default()));
        let gappy = Counted::from_ranges([(0, 5), (8, 12), (20, 30)]);
        let other = Counted::from_ranges([(3, 9), (11, 25)]);
        assert_eq!(gappy.intersect(&other).ranges(), &[(3, 5), (8, 9), (11, 12), (20, 25)]);
        assert_eq!(gappy.union(&other).ranges(), &[(0, 30)]);
    }

    #[test]
    fn gaps_that_never_close_are_bounded() {
        let mut c = Counted::default();
        for i in 0..(MAX_RANGES as i64 + 10) {
            c.insert(i * 2);
        }
        assert_eq!(c.ranges().len(), MAX_RANGES);
        assert_eq!(c.ranges()[0].0, 0);
        assert!(c.contains(i64::from(MAX_RANGES as i32 + 9) * 2));
    }

    /// The review's case: an instance takes partition 0 from its
    /// checkpoint at offset 100 while the previous owner's observations of
    /// 90..100 are still on their way. Scoring 100.. must not hide them.
    #[test]
    fn a_new_owner_still_counts_the_previous_owners_late_observations() {
        let mut l = Ledger::new(CountedBy::new(), HashMap::new(), 4);
        for o in 0..90 {
            assert_eq!(l.observed(0, o, "p", None), Some(SharedCount::COUNT));
        }
        l.own(0, Some(100));
        for o in 100..120 {
            assert_eq!(l.scored(0, o, "p", None), Some(SharedCount::COUNT), "scored {o}");
        }
        for o in 90..100 {
            assert_eq!(l.observed(0, o, "p", None), Some(SharedCount::COUNT), "late observation {o}");
        }
        // The previous owner's observations of what is scored here now.
        for o in 100..125 {
            assert_eq!(l.observed(0, o, "p", None), None, "owned from 100: {o} is counted when scored");
        }
        assert_eq!(l.scored(0, 120, "p", None), Some(SharedCount::COUNT));
        assert_eq!(l.scored(0, 110, "p", None), None, "handled again: not counted twice");
        assert_eq!(l.counted_in(2), vec![(0, vec![(0, 121)])]);
        // Given up: the next owner's observations of what was scored here are
        // skipped, the rest counted.
        l.disown_all();
        assert_eq!(l.observed(0, 115, "p", None), None);
        assert_eq!(l.observed(0, 121, "p", None), Some(SharedCount::COUNT));
    }

    #[test]
    fn after_a_restore_each_group_counts_only_what_its_checkpoint_lacks() {
        let groups = 8;
        let group = |k: &str| partition_for(k.as_bytes(), groups);
        // Two keys in different groups.
        let a = "088:1";
        let b = (2..100).map(|i| format!("088:{i}")).find(|k| group(k) != group(a)).unwrap();
        // a's group checkpointed partition 0 up to 50, b's up to 30 and
        // also 40..45 (it had scored ahead of a gap).
        let floors = HashMap::from([
            (group(a), CountedBy::from([(0, Counted::below(50))])),
            (group(&b), CountedBy::from([(0, Counted::from_ranges([(0, 30), (40, 45)]))])),
        ]);
        let mut l = Ledger::new(CountedBy::new(), floors, groups);
        let seen = |l: &mut Ledger, o| l.observed(0, o, a, Some(&b)).unwrap();
        assert_eq!(seen(&mut l, 20), SharedCount::ALREADY_COUNTED);
        assert_eq!(seen(&mut l, 35), SharedCount { payee: false, device: true });
        assert_eq!(seen(&mut l, 42), SharedCount { payee: false, device: false });
        assert_eq!(seen(&mut l, 60), SharedCount::COUNT);
        // A checkpoint of b's group records what it holds: its floor too.
        assert_eq!(l.counted_in(group(&b)), vec![(0, vec![(0, 30), (35, 36), (40, 45), (60, 61)])]);
        l.retire_floors();
        assert!(!l.floors.is_empty(), "0..50 not all counted here yet");
        for o in (0..50).filter(|o| ![20, 35, 42].contains(o)) {
            l.observed(0, o, a, None);
        }
        l.retire_floors();
        assert!(l.floors.is_empty());
        assert_eq!(l.scored(0, 61, a, Some(&b)), Some(SharedCount::COUNT));
    }

    /// Every group restored: what all of them hold counts as counted from
    /// the start, and the floors go once the groups ahead are caught up with
    /// (observations of 0..50 are long gone from the topic by then).
    #[test]
    fn what_every_restored_group_holds_is_counted_from_the_start() {
        let floors = HashMap::from([
            (0, CountedBy::from([(0, Counted::below(50)), (1, Counted::below(9))])),
            (1, CountedBy::from([(0, Counted::below(40)), (1, Counted::below(12))])),
        ]);
        let mut l = Ledger::new(CountedBy::new(), floors, 2);
        assert_eq!(l.counted_in(0), vec![(0, vec![(0, 50)]), (1, vec![(0, 9)])]);
        assert_eq!(l.counted_in(1), vec![(0, vec![(0, 40)]), (1, vec![(0, 12)])]);
        assert_eq!(l.observed(0, 39, "p", None), None, "in both groups");
        for o in 40..50 {
            assert!(l.observed(0, o, "p", None).is_some());
        }
        for o in 9..12 {
            assert!(l.observed(1, o, "p", None).is_some());
        }
        l.retire_floors();
        assert!(l.floors.is_empty());
    }

    #[test]
    fn a_partition_owned_from_an_unknown_offset_is_counted_here_from_its_first_transfer() {
        let mut l = Ledger::new(CountedBy::new(), HashMap::new(), 1);
        l.own(3, None);
        assert_eq!(l.observed(3, 0, "p", None), Some(SharedCount::COUNT), "the previous owner's");
        assert_eq!(l.scored(3, 5, "p", None), Some(SharedCount::COUNT));
        assert_eq!(l.observed(3, 6, "p", None), None, "scored here");
        assert_eq!(l.observed(3, 4, "p", None), Some(SharedCount::COUNT), "before the first scored");
        assert_eq!(l.owned().collect::<Vec<_>>(), vec![3]);
    }
}
