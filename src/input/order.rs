//! The order events are handled in when they come from several streams, the
//! same live and in replay.
//!
//! Live, events arrive on separate topics and partitions: transfers and context
//! events on one partition per account, fraud reports on a topic of their own.
//! Each partition is in order; between them there is none, because the broker
//! and the consumer fetch each partition on its own schedule. Taken in arrival
//! order, a certificate re-issue could be applied before or after the transfer
//! a second later depending on which fetch came back first, and a replay of
//! the same stream (one file, one order) could not be compared with a live run.
//! Measured before this module: the demo replayed held 1,386 transfers, played
//! live on one partition 1,385 to 1,394.
//!
//! So every input is handled in one canonical order, [`Key`]: event time, then
//! the feed (at the same time, a fraud report, then a context event, then a
//! transfer: a login stamped with the same second as the transfer it opened
//! comes first), then the partition number; within a partition, offset order.
//!
//! - **Live**, [`Merge`] does it the way Kafka Streams' `PartitionGroup` merges
//!   a task's inputs by timestamp: the smallest head among the partitions goes
//!   next, but only while no partition that still has input to deliver is
//!   empty (its next event might come first). A partition that has delivered
//!   everything up to the end the broker last reported is *caught up* and
//!   holds nobody back, so live traffic never waits for a quiet partition. A
//!   partition that stays behind for longer than the caller allows (its
//!   leader unreachable) is given up on until it delivers again, so one sick
//!   partition cannot stop the others.
//! - **Replay**, [`in_order`] sorts each run of events with the same event
//!   time by the same key, as they stream past: for a file sorted by time (the
//!   generator's, any export sorted by time) that is exactly the order the
//!   merge gives a backlog of the same events on the same partitions. Events
//!   are placed on partitions with the producer's own partitioner
//!   ([`partition_for`]), so `fds replay --partitions N` reproduces a live run
//!   on N partitions.
//!
//! The ahead-of-clock guard comes first: an event dated beyond it is refused
//! by the engine whatever its place, so it goes at once (as does a message
//! that is not an event) instead of holding its partition back until the
//! clock reaches its date.

use std::collections::VecDeque;

use crate::event::Event;

/// Which input an event arrives on. The order of the variants is the
/// tie-break at equal event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feed {
    /// Fraud reports (the `labels` topic).
    Labels,
    /// Logins, devices, certificates, phone changes (`context-events`).
    Context,
    /// Transfers (`transfers`).
    Transfers,
}

impl Feed {
    /// Every feed, in tie-break order.
    pub const ALL: [Feed; 3] = [Feed::Labels, Feed::Context, Feed::Transfers];

    /// A short name, for logs and checkpoint markers.
    pub fn name(self) -> &'static str {
        match self {
            Feed::Labels => "labels",
            Feed::Context => "context",
            Feed::Transfers => "transfers",
        }
    }

    /// The feed an event belongs on.
    pub fn of(event: &Event) -> Feed {
        match event {
            Event::Transfer(_) => Feed::Transfers,
            Event::Label(_) => Feed::Labels,
            _ => Feed::Context,
        }
    }
}

/// Where an event goes in the canonical order (smallest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Event time, Unix ms; [`Key::AT_ONCE`] for what goes without waiting.
    pub time_ms: i64,
    /// The tie-break at equal time.
    pub feed: Feed,
    /// The partition, the tie-break between partitions of one feed.
    pub partition: i32,
}

impl Key {
    /// The time of a message handled as soon as it is at the head of its
    /// partition: not an event, or dated beyond the ahead-of-clock guard.
    pub const AT_ONCE: i64 = i64::MIN;
}

/// The partition a producer using librdkafka's default partitioner
/// (`consistent_random`: CRC-32 of the key) puts a keyed record on. Every
/// producer in this project keys by account (labels by payee) and uses it.
pub fn partition_for(key: &[u8], partitions: u32) -> i32 {
    (crc32fast::hash(key) % partitions.max(1)) as i32
}

/// The key an event is placed on partitions by: its account, a report its
/// payee (as the producers key them).
pub fn partition_key(event: &Event) -> std::borrow::Cow<'_, str> {
    match event {
        Event::Label(l) => l.payee_key().into(),
        other => other.account().unwrap_or_default().into(),
    }
}

/// The canonical order of an event read from a file, on `partitions`
/// partitions (labels on one, as `fds topics create` makes them).
pub fn key_of(event: &Event, partitions: u32) -> Key {
    let feed = Feed::of(event);
    let partition = match feed {
        Feed::Labels => 0,
        _ => partition_for(partition_key(event).as_bytes(), partitions),
    };
    Key { time_ms: event.time().millis(), feed, partition }
}

/// Reorder a stream read from a file into the canonical order on `partitions`
/// partitions: each run of events with the same event time is sorted by
/// [`Key`], stably (a partition's own events keep their file order). Errors
/// (bad lines) pass through where they are. Holds one run in memory.
pub fn in_order<E>(
    events: impl Iterator<Item = Result<(u64, Event), E>>,
    partitions: u32,
) -> impl Iterator<Item = Result<(u64, Event), E>> {
    let mut events = events.peekable();
    let mut run: VecDeque<(Key, u64, Event)> = VecDeque::new();
    std::iter::from_fn(move || loop {
        if let Some((_, line, event)) = run.pop_front() {
            return Some(Ok((line, event)));
        }
        match events.next()? {
            Err(e) => return Some(Err(e)),
            Ok((line, event)) => {
                let time = event.time().millis();
                run.push_back((key_of(&event, partitions), line, event));
                while let Some(Ok((_, next))) = events.peek() {
                    if next.time().millis() != time {
                        break;
                    }
                    let Some(Ok((line, event))) = events.next() else { unreachable!("peeked") };
                    run.push_back((key_of(&event, partitions), line, event));
                }
                run.make_contiguous().sort_by_key(|(key, _, _)| *key);
            }
        }
    })
}

/// Live: the partitions' buffered messages, merged into the canonical order.
///
/// The caller pushes each message polled (with its offset and its [`Key`]
/// time), tells where each partition starts and, from time to time, where
/// the broker says it ends, and pops. [`Merge::pop`] answers `None` while the
/// next message cannot be known yet.
#[derive(Debug)]
pub struct Merge<T> {
    streams: Vec<Stream<T>>,
    buffered: usize,
}

#[derive(Debug)]
struct Stream<T> {
    feed: Feed,
    partition: i32,
    queue: VecDeque<(Key, T)>,
    /// The offset the next message will have, once known.
    next: Option<i64>,
    /// The end of the partition (high watermark) as last reported.
    end: Option<i64>,
    /// Given up on ([`Merge::give_up_waiting`]) until it delivers again.
    stalled: bool,
}

impl<T> Stream<T> {
    /// Empty, with input still to come: its next message may come first.
    fn blocks(&self) -> bool {
        self.queue.is_empty() && !self.stalled && !matches!((self.next, self.end), (Some(n), Some(e)) if n >= e)
    }
}

impl<T> Default for Merge<T> {
    fn default() -> Self {
        Merge { streams: Vec::new(), buffered: 0 }
    }
}

impl<T> Merge<T> {
    /// An empty merge, following no partition.
    pub fn new() -> Self {
        Self::default()
    }

    fn stream(&mut self, feed: Feed, partition: i32) -> &mut Stream<T> {
        let i = match self.streams.iter().position(|s| s.feed == feed && s.partition == partition) {
            Some(i) => i,
            None => {
                self.streams.push(Stream {
                    feed,
                    partition,
                    queue: VecDeque::new(),
                    next: None,
                    end: None,
                    stalled: false,
                });
                self.streams.len() - 1
            }
        };
        &mut self.streams[i]
    }

    /// Follow a partition whose next message has offset `next` (`None`: not
    /// known; the partition then holds the others back until it delivers or
    /// is given up on).
    pub fn follow(&mut self, feed: Feed, partition: i32, next: Option<i64>) {
        let s = self.stream(feed, partition);
        s.next = next;
    }

    /// The end of a partition (the offset its next message will get), as the
    /// broker last reported it. Ends only grow: one reported earlier than
    /// another (a client's cache, older than an answer just asked for) is
    /// not taken for a partition's end moving back.
    pub fn set_end(&mut self, feed: Feed, partition: i32, end: i64) {
        let s = self.stream(feed, partition);
        s.end = Some(s.end.map_or(end, |e| e.max(end)));
    }

    /// A message polled from a partition, at `offset`, with its event time
    /// (or [`Key::AT_ONCE`]).
    pub fn push(&mut self, feed: Feed, partition: i32, offset: i64, time_ms: i64, item: T) {
        let s = self.stream(feed, partition);
        s.next = Some(offset + 1);
        s.stalled = false;
        s.queue.push_back((Key { time_ms, feed, partition }, item));
        self.buffered += 1;
    }

    /// The next message in the canonical order, or `None` when nothing is
    /// buffered or an empty partition with input still to come holds the
    /// merge back.
    pub fn pop(&mut self) -> Option<(Feed, T)> {
        if self.streams.iter().any(Stream::blocks) {
            // A message that goes at once does not wait for anyone.
            return self.pop_if(|k| k.time_ms == Key::AT_ONCE);
        }
        self.pop_if(|_| true)
    }

    fn pop_if(&mut self, ok: impl Fn(&Key) -> bool) -> Option<(Feed, T)> {
        let (i, _) = self
            .streams
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.queue.front().map(|(k, _)| (i, *k)))
            .filter(|(_, k)| ok(k))
            .min_by_key(|(_, k)| *k)?;
        let s = &mut self.streams[i];
        let (_, item) = s.queue.pop_front().expect("has a head");
        self.buffered -= 1;
        Some((s.feed, item))
    }

    /// Partitions that hold the merge back: empty, with input still to come.
    pub fn waiting_on(&self) -> impl Iterator<Item = (Feed, i32)> + '_ {
        self.streams.iter().filter(|s| s.blocks()).map(|s| (s.feed, s.partition))
    }

    /// Empty partitions, whose end is worth asking about again.
    pub fn empty(&self) -> impl Iterator<Item = (Feed, i32)> + '_ {
        self.streams.iter().filter(|s| s.queue.is_empty()).map(|s| (s.feed, s.partition))
    }

    /// Stop waiting for the partitions that hold the merge back, until each
    /// delivers a message again. Returns how many there were.
    pub fn give_up_waiting(&mut self) -> usize {
        let mut n = 0;
        for s in self.streams.iter_mut().filter(|s| s.blocks()) {
            s.stalled = true;
            n += 1;
        }
        n
    }

    /// Whether messages of `feed` are waiting (not only others).
    pub fn holds(&self, feed: Feed) -> bool {
        self.streams.iter().any(|s| s.feed == feed && !s.queue.is_empty())
    }

    /// Messages buffered.
    pub fn len(&self) -> usize {
        self.buffered
    }

    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    /// Drop everything buffered and the partitions of `feeds`: after a
    /// rebalance the consumer starts those partitions again from their
    /// committed offsets, so none of it was lost.
    pub fn forget(&mut self, feeds: &[Feed]) -> Vec<T> {
        let mut dropped = Vec::new();
        self.streams.retain_mut(|s| {
            if feeds.contains(&s.feed) {
                dropped.extend(s.queue.drain(..).map(|(_, t)| t));
                false
            } else {
                true
            }
        });
        self.buffered -= dropped.len();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::build;

    const T: Feed = Feed::Transfers;
    const C: Feed = Feed::Context;
    const L: Feed = Feed::Labels;

    fn drain<T>(m: &mut Merge<T>) -> Vec<T> {
        std::iter::from_fn(|| m.pop().map(|(_, t)| t)).collect()
    }

    #[test]
    fn merges_heads_by_time_then_feed_then_partition() {
        let mut m = Merge::new();
        for (feed, p) in [(T, 0), (T, 1), (C, 0), (L, 0)] {
            m.follow(feed, p, Some(0));
            m.set_end(feed, p, 0); // caught up: nothing blocks below
        }
        m.push(T, 0, 0, 10, "t0@10");
        m.push(T, 0, 1, 30, "t0@30");
        m.push(T, 1, 0, 10, "t1@10");
        m.push(C, 0, 0, 10, "c0@10");
        m.push(C, 0, 1, 20, "c0@20");
        m.push(L, 0, 0, 30, "l0@30");
        assert_eq!(drain(&mut m), ["c0@10", "t0@10", "t1@10", "c0@20", "l0@30", "t0@30"]);
        assert!(m.is_empty());
    }

    #[test]
    fn a_partition_keeps_its_own_order_even_when_times_go_back() {
        let mut m = Merge::new();
        m.follow(T, 0, Some(0));
        m.set_end(T, 0, 2);
        m.push(T, 0, 0, 50, "late first");
        m.push(T, 0, 1, 10, "early second");
        assert_eq!(drain(&mut m), ["late first", "early second"]);
    }

    #[test]
    fn an_empty_partition_with_input_to_come_holds_the_others_back() {
        let mut m = Merge::new();
        m.follow(T, 0, Some(0));
        m.follow(C, 0, Some(5));
        m.set_end(C, 0, 6); // one context event not yet fetched
        m.push(T, 0, 0, 100, "transfer");
        assert!(m.pop().is_none());
        assert_eq!(m.waiting_on().collect::<Vec<_>>(), [(C, 0)]);
        m.push(C, 0, 5, 90, "login");
        assert_eq!(drain(&mut m), ["login", "transfer"]);
        // Caught up now (next 6, end 6): it holds nobody back.
        m.push(T, 0, 1, 200, "next transfer");
        assert_eq!(drain(&mut m), ["next transfer"]);
    }

    #[test]
    fn an_unknown_start_or_end_holds_back_until_known() {
        let mut m = Merge::new();
        m.follow(T, 0, Some(0));
        m.follow(C, 0, Some(3)); // end not reported yet
        m.push(T, 0, 0, 100, "transfer");
        assert!(m.pop().is_none());
        m.set_end(C, 0, 3);
        assert_eq!(drain(&mut m), ["transfer"]);

        m.follow(L, 0, None);
        m.set_end(L, 0, 9);
        m.push(T, 0, 1, 110, "second");
        assert!(m.pop().is_none(), "where the reports start is not known");
    }

    /// A partition assigned again: the end asked of the brokers (6) stands
    /// against the client's cached one from before the assignment (3), or
    /// the context events 3-5, not yet fetched, would come after a transfer
    /// dated later.
    #[test]
    fn an_older_end_does_not_move_a_partition_back() {
        let mut m = Merge::new();
        m.follow(T, 0, Some(0));
        m.follow(C, 0, Some(3));
        m.set_end(C, 0, 6);
        m.set_end(C, 0, 3);
        m.push(T, 0, 0, 100, "transfer");
        assert!(m.pop().is_none(), "context events 3-5 may come first");
        m.push(C, 0, 3, 90, "context");
        assert_eq!(drain(&mut m), ["context"]);
    }

    #[test]
    fn what_goes_at_once_is_not_held_back() {
        let mut m = Merge::new();
        m.follow(C, 0, None);
        m.push(T, 0, 0, Key::AT_ONCE, "not an event");
        m.push(T, 0, 1, 100, "transfer");
        assert_eq!(drain(&mut m), ["not an event"]);
    }

    #[test]
    fn a_partition_given_up_on_waits_again_once_it_delivers() {
        let mut m = Merge::new();
        m.follow(T, 0, Some(0));
        m.follow(C, 0, Some(0));
        m.set_end(C, 0, 10);
        m.push(T, 0, 0, 100, "t1");
        assert!(m.pop().is_none());
        assert_eq!(m.give_up_waiting(), 1);
        assert_eq!(drain(&mut m), ["t1"]);
        m.push(C, 0, 0, 50, "c1");
        m.push(T, 0, 1, 200, "t2");
        assert_eq!(drain(&mut m), ["c1"], "c1 is behind its end again: t2 waits for the next context event");
    }

    #[test]
    fn forgetting_a_feed_drops_its_buffer_only() {
        let mut m = Merge::new();
        m.follow(L, 0, Some(0));
        m.set_end(L, 0, 1);
        m.push(T, 0, 0, 100, "t");
        m.push(C, 0, 0, 100, "c");
        m.push(L, 0, 0, 100, "l");
        let mut dropped = m.forget(&[T, C]);
        dropped.sort();
        assert_eq!(dropped, ["c", "t"]);
        assert_eq!(m.len(), 1);
        assert!(m.holds(L) && !m.holds(T) && !m.holds(C));
        assert_eq!(drain(&mut m), ["l"]);
    }

    #[test]
    fn replay_sorts_runs_of_equal_time_by_the_key() {
        let t = |id: &str, secs: u32| build::transfer(id).account("A").at(&format!("20261102000{secs:03}")).build();
        let login = build::context("A").at("20261102000010").login(true);
        let events = vec![t("T1", 5), t("T2", 10), login, t("T3", 11)];
        let input = events.into_iter().enumerate().map(|(i, e)| Ok::<_, ()>((i as u64 + 1, e)));
        let order: Vec<u64> = in_order(input, 4).map(|r| r.unwrap().0).collect();
        assert_eq!(order, [1, 3, 2, 4], "the login at the transfer's second comes first");
    }

    #[test]
    fn partitions_like_the_default_producer() {
        // librdkafka's consistent_random: CRC-32 of the key, modulo the count
        // (the pipeline tests check it against a real producer as well).
        assert_eq!(partition_for(b"", 4), 0);
        assert_eq!(partition_for(b"123456789", 1), 0);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(partition_for(b"123456789", 7), (0xCBF4_3926u32 % 7) as i32);
    }
}
