//! The decision memory: every decision given, by transfer id, bounded, so a
//! re-delivered transfer is answered with the same bytes and not fed to the
//! state twice.

use super::*;

/// Decisions already given, by transfer id, bounded: the oldest is forgotten
/// first. Re-deliveries come from the last few seconds before a crash or a
/// rebalance, so a bounded memory of the most recent decisions covers them.
///
/// It sits on the scoring thread's path for every transfer, so each decision
/// is one allocation (id and bytes together) in a table keyed by a hash of
/// the id, not a map of owned strings.
pub struct DecisionMemory {
    table: hashbrown::HashTable<Remembered>,
    /// (id hash, sequence number) in the order remembered, to forget the oldest.
    order: VecDeque<(u64, u64)>,
    next: u64,
    hasher: ahash::RandomState,
    capacity: usize,
    /// Per partition of `decisions`, how far the topic has been read back
    /// into the memory: a later read-back (at the next assignment) goes on
    /// from there, since what came before is in it already.
    read_to: HashMap<i32, i64>,
}

/// One decision given: the transfer id followed by the decision as sent.
pub struct Remembered {
    seq: u64,
    hash: u64,
    id_len: u32,
    /// The transfer was scored after its deadline.
    pub late: bool,
    /// The verdict (the `fds-decision` header of a re-sent answer).
    pub outcome: Outcome,
    /// The transfer message it answered (partition, offset), when known:
    /// the same message delivered again, rather than the same transfer sent
    /// again, is what a restored state may still need to learn.
    pub source: Option<(i32, i64)>,
    bytes: Box<[u8]>,
}

impl Remembered {
    /// The decision exactly as it was first sent.
    pub fn decision(&self) -> &[u8] {
        &self.bytes[self.id_len as usize..]
    }

    pub(super) fn id(&self) -> &[u8] {
        &self.bytes[..self.id_len as usize]
    }
}

/// By hand: hundreds of thousands of decisions; their count is what a log
/// line can use.
impl std::fmt::Debug for DecisionMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionMemory")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// By hand: the id and verdict, not the decision's raw bytes (see [`Remembered::decision`]).
impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remembered")
            .field("id", &String::from_utf8_lossy(self.id()))
            .field("late", &self.late)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl DecisionMemory {
    /// A memory of the last `capacity` decisions (at least one).
    pub fn new(capacity: usize) -> Self {
        DecisionMemory {
            table: hashbrown::HashTable::new(),
            order: VecDeque::new(),
            next: 0,
            hasher: ahash::RandomState::new(),
            capacity: capacity.max(1),
            read_to: HashMap::new(),
        }
    }

    /// The decision given for `tran_id`, if remembered.
    pub fn get(&self, tran_id: &str) -> Option<&Remembered> {
        let hash = self.hasher.hash_one(tran_id.as_bytes());
        self.table.find(hash, |r| r.id() == tran_id.as_bytes())
    }

    /// Remember a decision; the first one given for an id is the one kept.
    pub fn insert(&mut self, tran_id: &str, decision: &[u8], late: bool, outcome: Outcome, source: Option<(i32, i64)>) {
        let hash = self.hasher.hash_one(tran_id.as_bytes());
        if self.table.find(hash, |r| r.id() == tran_id.as_bytes()).is_some() {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some((old_hash, old_seq)) = self.order.pop_front() {
                if let Ok(e) = self.table.find_entry(old_hash, |r| r.seq == old_seq) {
                    e.remove();
                }
            }
        }
        let mut bytes = Vec::with_capacity(tran_id.len() + decision.len());
        bytes.extend_from_slice(tran_id.as_bytes());
        bytes.extend_from_slice(decision);
        let seq = self.next;
        self.next += 1;
        let r = Remembered {
            seq,
            hash,
            id_len: tran_id.len() as u32,
            late,
            outcome,
            source,
            bytes: bytes.into_boxed_slice(),
        };
        self.table.insert_unique(hash, r, |r| r.hash);
        self.order.push_back((hash, seq));
    }

    /// See [`DecisionMemory::read_to`].
    pub(super) fn read_to(&self) -> &HashMap<i32, i64> {
        &self.read_to
    }

    /// `decisions` partition `partition` is read back up to `end`.
    pub(super) fn set_read_to(&mut self, partition: i32, end: i64) {
        self.read_to.insert(partition, end);
    }

    /// Decisions remembered.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_memory_keeps_the_first_answer_and_forgets_the_oldest() {
        let mut m = DecisionMemory::new(2);
        m.insert("a", b"allow", false, Outcome::Allow, None);
        m.insert("a", b"hold", true, Outcome::Hold, None);
        let a = m.get("a").unwrap();
        assert_eq!(a.decision(), b"allow", "a second answer never replaces the first");
        assert!(!a.late && a.outcome == Outcome::Allow);
        m.insert("b", b"x", false, Outcome::Hold, None);
        m.insert("c", b"y", true, Outcome::Allow, None);
        assert!(m.get("a").is_none(), "oldest forgotten at capacity");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("b").unwrap().decision(), b"x");
        assert_eq!(m.get("b").unwrap().outcome, Outcome::Hold);
        assert!(m.get("c").unwrap().late);
        // An id that is a prefix of another's bytes is still its own entry.
        m.insert("cy", b"z", false, Outcome::Allow, None);
        assert_eq!(m.get("c").unwrap().decision(), b"y");
        assert_eq!(m.get("cy").unwrap().decision(), b"z");
        assert!(m.get("b").is_none());
    }

    /// Forgetting follows the order remembered exactly, over many times the
    /// capacity, with nothing else lost.
    #[test]
    fn decision_memory_holds_exactly_the_last_capacity_ids() {
        let mut m = DecisionMemory::new(100);
        for i in 0..1000 {
            let outcome = if i % 2 == 0 { Outcome::Hold } else { Outcome::Allow };
            m.insert(&format!("T{i}"), format!("d{i}").as_bytes(), false, outcome, None);
        }
        assert_eq!(m.len(), 100);
        for i in 0..1000 {
            let got = m.get(&format!("T{i}")).map(|r| r.decision().to_vec());
            assert_eq!(got, (i >= 900).then(|| format!("d{i}").into_bytes()), "T{i}");
        }
    }
}
