//! `fds_consumer_lag{topic, partition}`: for each input partition assigned
//! to this instance, how many of its messages are not yet decided.
//!
//! The lag of a partition is its end (high watermark) minus the first offset
//! whose outcome is not yet safe ([`OffsetTracker::undecided_from`]): the
//! oldest message consumed and not yet finished (its decision or dead-letter
//! record not yet acknowledged by the broker, a context event not yet
//! applied), else the one after the last finished, else, when nothing of it
//! has been consumed since it was assigned, where it started (its committed
//! offset, or where the restored state stands). So it counts every message
//! the transfer API is still waiting on here: not yet fetched, fetched and
//! waiting in the merge for its turn, or decided and waiting for the
//! broker's acknowledgement. It is the position offsets are stored from,
//! ahead of the committed offset by at most a commit interval, and 0 when
//! every message there is decided and acknowledged.
//!
//! Why this and not librdkafka's statistics (`statistics.interval.ms`, the
//! per-partition `consumer_lag` of the JSON `ClientContext::stats` gets):
//! those are served inside the consumer's `poll`, on the scoring thread,
//! which would parse the client's whole statistics document (every broker,
//! topic and partition) each interval between two transfers, and their lag
//! is measured from the *committed* offset (`consumer_lag`) or the stored
//! one (`consumer_lag_stored`), which trail the decisions. Here the end is
//! the one the client already holds from its last fetch response
//! (`rd_kafka_get_watermark_offsets`, no request; the merge reads it too),
//! and the position is the tracker's, both read once a second: a few
//! hundred nanoseconds per partition.
//!
//! A partition's series appears once it is ready (its accounts restored,
//! its start known: within a second of `partitions ready`), and is removed
//! when it is revoked, in the same turn of the loop as the revocation, so an
//! alert on it does not fire for a partition that moved to another
//! instance. The `labels` topic, which every instance reads whole outside
//! the group, has no series.

use super::*;

/// How often the lag is measured.
pub(super) const LAG_EVERY: Duration = Duration::from_secs(1);

/// The series the pipeline keeps, and what it needs to keep them.
pub(super) struct ConsumerLag {
    ends: Ends,
    /// The input partitions ready here, with where each started and its end
    /// when it was assigned.
    assigned: HashMap<(Feed, i32), (Option<i64>, Option<i64>)>,
    /// The series set: topic and partition labels.
    shown: Vec<(String, String)>,
    next: Instant,
}

impl ConsumerLag {
    pub(super) fn new(topics: &Topics) -> Self {
        ConsumerLag { ends: Ends::new(topics), assigned: HashMap::new(), shown: Vec::new(), next: Instant::now() }
    }

    /// A partition assigned and ready: it starts at `from`, ended at `end`.
    pub(super) fn assigned(&mut self, feed: Feed, partition: i32, from: Option<i64>, end: Option<i64>) {
        self.assigned.insert((feed, partition), (from, end));
        // Shown at the next turn of the loop.
        self.next = Instant::now();
    }

    /// Every partition revoked: their series go at once.
    pub(super) fn revoked(&mut self, metrics: &Metrics) {
        self.assigned.clear();
        for (topic, partition) in self.shown.drain(..) {
            let _ = metrics.consumer_lag.remove_label_values(&[&topic, &partition]);
        }
    }

    /// Measure every partition's lag, when a second has passed.
    pub(super) fn tick(&mut self, consumer: &BaseConsumer<GroupContext>, topics: &Topics, metrics: &Metrics) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + LAG_EVERY;
        let book = consumer.context().book();
        for (&(feed, partition), &(from, end_at_start)) in &self.assigned {
            let Some(position) = book.tracker.undecided_from(feed, partition).or(from) else { continue };
            let cached = self.ends.cached(consumer.client(), feed, partition);
            let Some(end) = cached.max(end_at_start) else { continue };
            let topic = if feed == Feed::Transfers { &topics.transfers } else { &topics.context_events };
            let partition = partition.to_string();
            metrics.consumer_lag.with_label_values(&[topic, &partition]).set((end - position).max(0));
            if !self.shown.iter().any(|(t, p)| t == topic && *p == partition) {
                self.shown.push((topic.clone(), partition));
            }
        }
    }
}
