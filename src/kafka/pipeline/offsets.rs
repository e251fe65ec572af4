//! Offsets: which consumed offsets are finished, per partition, so the
//! offset stored for commit never passes a message whose outcome is not yet
//! safe (acknowledgements come back out of order).

use super::*;

/// Which offsets of each partition are finished, so the stored offset never
/// passes a message whose decision is not yet safe at the broker.
///
/// Acknowledgements come back out of order (decisions go to other partitions
/// than their transfers came from), so each partition keeps its unfinished
/// offsets in consumption order and the committable position is the first
/// unfinished one.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: HashMap<(Feed, i32), PartitionTrack>,
}

#[derive(Debug, Default)]
pub(super) struct PartitionTrack {
    /// Consumed offsets in order, with whether each is finished.
    pub(super) inflight: VecDeque<(i64, bool)>,
    /// The next offset to commit once it moves; `None` until one is known.
    pub(super) committable: Option<i64>,
    /// Whether `committable` moved since the last `take_committable`.
    pub(super) dirty: bool,
}

impl OffsetTracker {
    /// A message was consumed and its outcome is pending.
    pub fn begin(&mut self, topic: Feed, partition: i32, offset: i64) {
        let p = self.parts.entry((topic, partition)).or_default();
        debug_assert!(p.inflight.back().map_or(true, |&(o, _)| o < offset), "offsets go forward");
        p.inflight.push_back((offset, false));
    }

    /// A message's outcome is safe. Unknown offsets (a partition revoked in
    /// the meantime) are ignored.
    pub fn finish(&mut self, topic: Feed, partition: i32, offset: i64) {
        let Some(p) = self.parts.get_mut(&(topic, partition)) else { return };
        if let Ok(i) = p.inflight.binary_search_by_key(&offset, |&(o, _)| o) {
            p.inflight[i].1 = true;
        }
        while let Some(&(o, true)) = p.inflight.front() {
            p.inflight.pop_front();
            p.committable = Some(o + 1);
            p.dirty = true;
        }
    }

    /// Whether every message of the partition before `position` that was
    /// consumed here is finished.
    pub fn finished_below(&self, topic: Feed, partition: i32, position: i64) -> bool {
        self.parts.get(&(topic, partition)).map_or(true, |p| p.inflight.front().map_or(true, |&(o, _)| o >= position))
    }

    /// The first offset of the partition whose outcome is not yet safe: the
    /// oldest consumed and unfinished one, else the one after the last
    /// finished; `None` when nothing of it was consumed here (since it was
    /// assigned). Everything below it is decided (or applied) and
    /// acknowledged.
    pub fn undecided_from(&self, topic: Feed, partition: i32) -> Option<i64> {
        let p = self.parts.get(&(topic, partition))?;
        // The front is never finished: `finish` pops finished fronts.
        p.inflight.front().map(|&(o, _)| o).or(p.committable)
    }

    /// Messages consumed and not yet finished, over all partitions.
    pub fn pending(&self) -> usize {
        self.parts.values().map(|p| p.inflight.iter().filter(|(_, done)| !done).count()).sum()
    }

    /// The positions that moved since the last call: (topic, partition, next offset).
    pub fn take_committable(&mut self) -> Vec<(Feed, i32, i64)> {
        let mut out = Vec::new();
        for (&(t, part), p) in &mut self.parts {
            if p.dirty {
                p.dirty = false;
                if let Some(o) = p.committable {
                    out.push((t, part, o));
                }
            }
        }
        out
    }

    /// Forget a partition (revoked): its unfinished messages will be delivered
    /// to whichever instance gets it next.
    pub fn forget(&mut self, topic: Feed, partition: i32) {
        self.parts.remove(&(topic, partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_move_only_past_finished_messages() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.begin(Feed::Transfers, 0, o);
        }
        t.finish(Feed::Transfers, 0, 12);
        t.finish(Feed::Transfers, 0, 11);
        assert!(t.take_committable().is_empty(), "10 is not finished, nothing may be stored");
        assert_eq!(t.pending(), 3);
        assert_eq!(t.undecided_from(Feed::Transfers, 0), Some(10));
        assert_eq!(t.undecided_from(Feed::Transfers, 1), None, "nothing consumed there");
        t.finish(Feed::Transfers, 0, 10);
        assert_eq!(t.undecided_from(Feed::Transfers, 0), Some(13));
        assert_eq!(t.take_committable(), vec![(Feed::Transfers, 0, 13)]);
        assert_eq!(t.undecided_from(Feed::Transfers, 0), Some(13), "stored or not, 13 is next");
        assert!(t.take_committable().is_empty(), "reported once");
        t.finish(Feed::Transfers, 0, 14);
        assert!(t.take_committable().is_empty(), "13 still open");
        t.finish(Feed::Transfers, 0, 13);
        assert_eq!(t.take_committable(), vec![(Feed::Transfers, 0, 15)]);
        assert_eq!(t.undecided_from(Feed::Transfers, 0), Some(15), "all finished: the next to come");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn partitions_are_tracked_apart_and_forgotten_on_revoke() {
        let mut t = OffsetTracker::default();
        t.begin(Feed::Transfers, 0, 5);
        t.begin(Feed::Transfers, 1, 5);
        t.begin(Feed::Context, 0, 7);
        t.finish(Feed::Transfers, 1, 5);
        t.finish(Feed::Context, 0, 7);
        let mut c = t.take_committable();
        c.sort();
        assert_eq!(c, vec![(Feed::Context, 0, 8), (Feed::Transfers, 1, 6)]);
        t.forget(Feed::Transfers, 0);
        t.finish(Feed::Transfers, 0, 5); // a late ack for a revoked partition
        assert!(t.take_committable().is_empty());
        assert_eq!(t.pending(), 0);
    }
}
