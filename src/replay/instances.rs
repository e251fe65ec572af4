//! Several instances in one process: what scaling out does to the
//! decisions, without a cluster (`fds replay --instances N`).
//!
//! The stream is split as a consumer group of N `fds run` instances splits
//! it: each event to the partition its key hashes to (librdkafka's
//! partitioner, [`partition_for`]), each partition to one instance (Kafka's
//! range assignor: contiguous runs of partitions, the first instances one
//! more when they do not divide evenly). Fraud reports go to every instance,
//! as every instance reads `labels`. Each instance has its own engine and
//! state; a transfer it scores reaches the others' shared tables (payees and
//! devices, [`crate::state`]'s `shared` module) `lag` of event time later, as
//! an [`Observation`] on the `observations` topic does live.
//!
//! With no lag the instances decide exactly as one engine does (the shared
//! tables then hold every earlier transfer, in the same order); what differs
//! with a lag is what the lag costs.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;

use crate::engine::{Engine, EngineError, Scored};
use crate::event::Event;
use crate::input::order::{partition_for, partition_key};
use crate::state::{MemoryReport, Observation, SharedCount};

use super::ReplayReport;

/// N engines fed as N instances of one consumer group.
#[allow(missing_debug_implementations)] // engines and in-flight observations: nothing useful to print
pub struct Instances<'e> {
    engines: &'e [Engine],
    partitions: u32,
    lag_ms: i64,
    in_flight: BinaryHeap<InFlight>,
    /// Per partition, the next offset a transfer gets.
    offsets: Vec<i64>,
    sent: u64,
}

/// An observation on its way from `from` to every other instance.
struct InFlight {
    due_ms: i64,
    seq: u64,
    from: usize,
    observation: Observation,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed: the heap gives the earliest due (then the first sent) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due_ms, other.seq).cmp(&(self.due_ms, self.seq))
    }
}

impl<'e> Instances<'e> {
    /// `engines.len()` instances sharing `partitions` partitions, each
    /// transfer reaching the others `lag_ms` of event time after it.
    pub fn new(engines: &'e [Engine], partitions: u32, lag_ms: i64) -> Self {
        let partitions = partitions.max(1);
        Instances {
            engines,
            partitions,
            lag_ms: lag_ms.max(0),
            in_flight: BinaryHeap::new(),
            offsets: vec![0; partitions as usize],
            sent: 0,
        }
    }

    /// The instance that owns `partition` under the range assignor.
    pub fn owner(&self, partition: i32) -> usize {
        owner(partition as usize, self.partitions as usize, self.engines.len())
    }

    /// Feed one event to the instance (or, for a fraud report, the
    /// instances) that would read it, after delivering the observations due
    /// by its time.
    pub fn process(&mut self, event: &Event) -> Result<Option<Scored>, EngineError> {
        self.deliver(event.time().millis());
        if let Event::Label(_) = event {
            let mut outcome = Ok(None);
            for e in self.engines {
                outcome = e.process(event);
            }
            return outcome;
        }
        let partition = partition_for(partition_key(event).as_bytes(), self.partitions);
        let from = self.owner(partition);
        let outcome = self.engines[from].process(event);
        if let (Ok(Some(_)), Event::Transfer(t)) = (&outcome, event) {
            let offset = &mut self.offsets[partition as usize];
            *offset += 1;
            if self.engines.len() > 1 {
                let observation = Observation::of(t, &t.payee_key(), *offset - 1);
                let due_ms = t.tran_dtime.millis().saturating_add(self.lag_ms);
                self.sent += 1;
                self.in_flight.push(InFlight { due_ms, seq: self.sent, from, observation });
            }
        }
        outcome
    }

    /// Apply every observation due by `now_ms` at every instance but its sender.
    fn deliver(&mut self, now_ms: i64) {
        while self.in_flight.peek().is_some_and(|f| f.due_ms <= now_ms) {
            let f = self.in_flight.pop().expect("peeked");
            for (i, e) in self.engines.iter().enumerate() {
                if i != f.from {
                    e.state().observe_shared(&f.observation, SharedCount::COUNT);
                }
            }
        }
    }

    /// The state of all instances together (payees and devices are counted
    /// once per instance: each holds the whole shared table).
    pub fn memory(&self) -> MemoryReport {
        self.engines.iter().map(|e| e.state().memory()).fold(MemoryReport::default(), |a, b| MemoryReport {
            accounts: a.accounts + b.accounts,
            payees: a.payees + b.payees,
            devices: a.devices + b.devices,
            account_bytes: a.account_bytes + b.account_bytes,
            payee_bytes: a.payee_bytes + b.payee_bytes,
            device_bytes: a.device_bytes + b.device_bytes,
        })
    }

    /// The first instance's engine (its rules and model are everyone's).
    pub fn first(&self) -> &Engine {
        &self.engines[0]
    }
}

/// Kafka's range assignor for one topic: `partitions` split into
/// `instances` contiguous runs, the first `partitions % instances` runs one
/// longer.
pub fn owner(partition: usize, partitions: usize, instances: usize) -> usize {
    let instances = instances.max(1);
    let (per, extra) = (partitions / instances, partitions % instances);
    let long = extra * (per + 1);
    if partition < long {
        partition / (per + 1)
    } else {
        extra + (partition - long) / per.max(1)
    }
}

/// How N instances decided against one engine, on the same stream.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleOut {
    /// Instances in the group.
    pub instances: usize,
    /// Partitions of `transfers` and `context-events`.
    pub partitions: u32,
    /// Event time before an instance's transfer reaches the others' shared tables.
    pub lag_ms: i64,
    /// Transfers compared (after the warm-up).
    pub transfers: u64,
    /// Of those, decided differently in any way (verdict, score, reasons).
    pub differ: u64,
    /// `differ / transfers`.
    pub differ_share: f64,
    /// Held by one engine, allowed by the group.
    pub now_allowed: u64,
    /// Allowed by one engine, held by the group.
    pub now_held: u64,
    /// Recall on all frauds: one engine, then the group.
    pub recall_one: f64,
    /// See `recall_one`.
    pub recall_group: f64,
    /// The same per typology, sorted by name.
    pub by_typology: Vec<TypologyRecall>,
}

/// One typology's recall, one engine against the group.
#[derive(Debug, Clone, Serialize)]
pub struct TypologyRecall {
    /// The label's typology string.
    pub typology: String,
    /// Fraudulent transfers of this typology.
    pub frauds: u64,
    /// Held by one engine.
    pub held_one: u64,
    /// Held by the group.
    pub held_group: u64,
}

/// Compare a group's replay with one engine's, transfer by transfer (both
/// run with [`super::ReplayOptions::keep_outcomes`]).
pub fn compare(one: &ReplayReport, group: &ReplayReport, instances: usize, partitions: u32, lag_ms: i64) -> ScaleOut {
    let (mut differ, mut now_allowed, mut now_held) = (0u64, 0u64, 0u64);
    for (k, &(hold, fingerprint)) in &one.outcomes {
        match group.outcomes.get(k) {
            Some(&(g_hold, g_fingerprint)) => {
                differ += u64::from(g_fingerprint != fingerprint);
                now_allowed += u64::from(hold && !g_hold);
                now_held += u64::from(!hold && g_hold);
            }
            None => differ += 1,
        }
    }
    let mut rows: BTreeMap<&str, TypologyRecall> = BTreeMap::new();
    for (k, typology) in &one.frauds {
        let row = rows.entry(typology).or_insert_with(|| TypologyRecall {
            typology: typology.clone(),
            frauds: 0,
            held_one: 0,
            held_group: 0,
        });
        row.frauds += 1;
        row.held_one += u64::from(one.outcomes.get(k).is_some_and(|o| o.0));
        row.held_group += u64::from(group.outcomes.get(k).is_some_and(|o| o.0));
    }
    let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let frauds = rows.values().map(|r| r.frauds).sum();
    let transfers = one.outcomes.len() as u64;
    ScaleOut {
        instances,
        partitions,
        lag_ms,
        transfers,
        differ,
        differ_share: share(differ, transfers),
        now_allowed,
        now_held,
        recall_one: share(rows.values().map(|r| r.held_one).sum(), frauds),
        recall_group: share(rows.values().map(|r| r.held_group).sum(), frauds),
        by_typology: rows.into_values().collect(),
    }
}

impl ScaleOut {
    /// The comparison as a person reads it.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let pct = |x: f64| 100.0 * x;
        let _ = writeln!(
            s,
            "{} instances on {} partitions, shared tables {} ms behind, against one engine",
            self.instances, self.partitions, self.lag_ms
        );
        let _ = writeln!(
            s,
            "  decisions that differ  {} of {} ({:.3}%): {} held by one engine now allowed, {} allowed now held",
            self.differ,
            self.transfers,
            pct(self.differ_share),
            self.now_allowed,
            self.now_held
        );
        let _ = writeln!(
            s,
            "  recall on all frauds   one engine {:.1}%   {} instances {:.1}%",
            pct(self.recall_one),
            self.instances,
            pct(self.recall_group)
        );
        let _ =
            writeln!(s, "  {:<32} {:>7} {:>10} {:>10} {:>8}", "typology", "frauds", "held (1)", "held (N)", "points");
        for r in &self.by_typology {
            let f = r.frauds.max(1) as f64;
            let _ = writeln!(
                s,
                "  {:<32} {:>7} {:>10} {:>10} {:>+8.1}",
                r.typology,
                r.frauds,
                r.held_one,
                r.held_group,
                100.0 * (r.held_group as f64 - r.held_one as f64) / f
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_assignor_gives_contiguous_runs() {
        let of = |p, n| (0..p).map(|i| owner(i, p, n)).collect::<Vec<_>>();
        assert_eq!(of(4, 4), [0, 1, 2, 3]);
        assert_eq!(of(8, 3), [0, 0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(of(4, 1), [0, 0, 0, 0]);
        // More instances than partitions: the extra ones get none.
        assert_eq!(of(2, 4), [0, 1]);
    }
}
