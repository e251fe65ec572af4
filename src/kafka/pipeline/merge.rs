//! The scoring thread's side of the merge of inputs by event time
//! ([`crate::input::order`]): the messages polled wait in a [`Merge`] until
//! their turn; an empty partition whose consumer has read up to the end the
//! brokers last reported is caught up and holds nobody back; one that stays
//! behind too long is given up on, counted and logged.

use std::ffi::CString;

use rdkafka::bindings as rd;
use rdkafka::client::Client;

use super::*;

/// How long the merge may wait for an input partition that should have more
/// to deliver before going on without it (see [`Merge::give_up_waiting`]).
/// Long enough for the first fetches of a backlog (tansu took more than
/// 500 ms to start delivering some of eight partitions); short enough that a
/// sick partition costs the others one pause, not an outage.
pub(super) const MERGE_WAIT: Duration = Duration::from_secs(5);

/// Messages the merge may hold while waiting for one partition before it goes
/// on without it: bounds memory when one partition lags far behind the rest.
pub(super) const MERGE_MAX_BUFFERED: usize = 200_000;

/// How long a poll waits when nothing is buffered: also the longest another
/// instance's observations wait to be counted while this one is idle (they
/// arrive on a consumer of their own, which that poll does not watch).
pub(super) const IDLE_WAIT: Duration = Duration::from_millis(5);

/// How long a poll waits when the merge is held back by an empty partition.
pub(super) const BLOCKED_WAIT: Duration = Duration::from_millis(1);

/// A message waiting for its turn, parsed.
pub(super) type Waiting<'c> = (BorrowedMessage<'c>, Result<Event, EventError>);

/// The messages polled from both consumers, in the canonical order.
pub(super) struct InputMerge<'c> {
    pub(super) merge: Merge<Waiting<'c>>,
    ends: Ends,
    blocked_since: Option<Instant>,
    empty: Vec<(Feed, i32)>,
}

impl<'c> InputMerge<'c> {
    pub(super) fn new(topics: &Topics, label_starts: &[(i32, i64)]) -> Self {
        let mut merge = Merge::new();
        for &(partition, from) in label_starts {
            merge.follow(Feed::Labels, partition, Some(from));
        }
        InputMerge { merge, ends: Ends::new(topics), blocked_since: None, empty: Vec::new() }
    }

    /// Learn where each empty partition ends, from what the clients last
    /// heard (no request is made).
    pub(super) fn refresh_ends<A: ClientContext, B: ClientContext>(&mut self, inputs: &Client<A>, labels: &Client<B>) {
        self.empty.extend(self.merge.empty());
        for (feed, partition) in self.empty.drain(..) {
            let end = match feed {
                Feed::Labels => self.ends.cached(labels, feed, partition),
                _ => self.ends.cached(inputs, feed, partition),
            };
            if let Some(end) = end {
                self.merge.set_end(feed, partition, end);
            }
        }
    }

    /// Hand every message whose turn has come to the scoring thread. A
    /// partition that keeps the others waiting too long (its leader
    /// unreachable), or while too much piles up, is given up on until it
    /// delivers again.
    ///
    /// While the brokers are unreachable nothing is given up on: waiting for
    /// them is all there is to do, and going on out of order would gain
    /// nothing (the wait starts again when they answer).
    pub(super) fn drain(&mut self, scorer: &mut ScoringThread<'_>, broker_up: bool) {
        loop {
            while let Some((feed, (msg, event))) = self.merge.pop() {
                match feed {
                    Feed::Labels => scorer.handle_label(&msg, event),
                    _ => scorer.handle(&msg, event),
                }
            }
            if self.merge.is_empty() {
                self.blocked_since = None;
                return;
            }
            // Going on is for when a partition holds back transfers or
            // context events that others delivered; fraud reports alone are
            // no reason to let them pass the inputs.
            let inputs_held = self.merge.holds(Feed::Transfers) || self.merge.holds(Feed::Context);
            if !broker_up || !inputs_held {
                self.blocked_since = None;
                return;
            }
            let since = *self.blocked_since.get_or_insert_with(Instant::now);
            if since.elapsed() < MERGE_WAIT && self.merge.len() < MERGE_MAX_BUFFERED {
                return;
            }
            let waiting: Vec<String> = self.merge.waiting_on().map(|(f, p)| format!("{} {p}", f.name())).collect();
            tracing::warn!(
                partitions = %waiting.join(", "),
                waited_ms = since.elapsed().as_millis() as u64,
                buffered = self.merge.len(),
                "input partitions behind their end delivered nothing; going on without them, out of event-time order"
            );
            scorer.metrics.merge_gave_up.inc_by(self.merge.give_up_waiting() as u64);
            self.blocked_since = None;
        }
    }
}

/// The input topics' names as C strings, made once.
pub(super) struct Ends {
    transfers: CString,
    context: CString,
    labels: CString,
}

impl Ends {
    pub(super) fn new(topics: &Topics) -> Self {
        // Topic names come from validated settings: no NUL inside.
        let c = |s: &str| CString::new(s).unwrap_or_default();
        Ends { transfers: c(&topics.transfers), context: c(&topics.context_events), labels: c(&topics.labels) }
    }

    /// The end (high watermark) of a partition as of the client's last fetch
    /// response, without asking the brokers; `None` before the first.
    pub(super) fn cached<C: ClientContext>(&self, client: &Client<C>, feed: Feed, partition: i32) -> Option<i64> {
        let topic = match feed {
            Feed::Transfers => &self.transfers,
            Feed::Context => &self.context,
            Feed::Labels => &self.labels,
        };
        let (mut low, mut high) = (-1i64, -1i64);
        // rust-rdkafka wraps only the variant of this call that asks the
        // brokers (`fetch_watermarks`, a round trip); this one reads what the
        // client already holds. SAFETY: the client pointer is valid for the
        // borrow of `client`, the topic is a NUL-terminated string that
        // outlives the call, and the two out-pointers are to live locals.
        let err = unsafe {
            rd::rd_kafka_get_watermark_offsets(client.native_ptr(), topic.as_ptr(), partition, &mut low, &mut high)
        };
        (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }
}
