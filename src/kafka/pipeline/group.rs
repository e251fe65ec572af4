//! Group membership: the rebalance callbacks (in-flight decisions awaited and
//! committed before partitions go; new ones paused while their accounts and
//! the recent decisions are read back on a thread of their own) and the
//! orphan watchdog that rejoins when input has no owner.

use super::*;

/// What the scoring thread and the rebalance callbacks share: the offsets in
/// flight and the acknowledgements coming back. Both run on the scoring thread
/// (librdkafka calls the rebalance callbacks inside `poll`), so the lock is
/// never contended; it is there because the callbacks reach it through `&self`.
pub(super) struct Book {
    pub(super) tracker: OffsetTracker,
    pub(super) acks: Receiver<Ack>,
}

impl Book {
    /// Take the acknowledgements that arrived: successes finish their offsets,
    /// failures come back to be produced again. Returns whether any finished.
    pub(super) fn drain(&mut self, metrics: &Metrics, retries: &mut Vec<(Origin, Retry)>) -> bool {
        let mut moved = false;
        while let Ok(ack) = self.acks.try_recv() {
            match ack.retry {
                None => {
                    metrics.ack_latency.observe(ack.produced_at.elapsed().as_secs_f64());
                    self.tracker.finish(ack.source.topic, ack.source.partition, ack.source.offset);
                    moved = true;
                }
                Some(r) => retries.push((ack.source, r)),
            }
        }
        moved
    }
}

pub(super) struct GroupContext {
    pub(super) health: Arc<Health>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) producer: Arc<ThreadedProducer<AckContext>>,
    pub(super) topics: Topics,
    pub(super) book: Mutex<Book>,
    /// Decisions given, by transfer id (see [`DecisionMemory`]).
    pub(super) memory: Arc<Mutex<DecisionMemory>>,
    /// For reading decisions back when partitions are assigned.
    pub(super) options: PipelineOptions,
    /// How many partitions the last rebalance assigned this member, or
    /// [`NOT_ASSIGNED`] (see [`OrphanWatch`]).
    pub(super) assigned: AtomicUsize,
    /// Revocations so far: the scoring thread drops a burst taken across one
    /// (see the loop in [`run`]).
    pub(super) revocations: std::sync::atomic::AtomicU64,
    /// Partitions just assigned, with the offset each starts from, for the
    /// scoring thread's merge to follow (see [`Merge::follow`]).
    pub(super) starts: Mutex<Vec<Start>>,
    /// The engine, whose accounts are restored when partitions arrive.
    pub(super) engine: Arc<Engine>,
    /// Partitions of `state`, read once at start: which accounts belong to
    /// a partition being restored.
    pub(super) groups: u32,
    /// The transfers partitions held before the last revocation: one
    /// assigned again still has its accounts here, current.
    pub(super) held: Mutex<Vec<i32>>,
    /// Restores done for the partitions assigned, for the scoring thread to
    /// take up (positions, checkpoint numbers).
    pub(super) restored: Mutex<Vec<Restored>>,
    /// What the local copy restored at start covers, until the first
    /// assignment decides which of its partitions' accounts stand (see
    /// `local::keep_accounts`).
    pub(super) local: Mutex<Option<local::ChangelogCover>>,
    /// The accounts the changelog's read at start found, until the first
    /// assignment takes those that still stand (see [`StartAccounts`]).
    pub(super) start_accounts: Mutex<Option<StartAccounts>>,
    /// The assignment being prepared, if one is (see [`Preparing`]).
    pub(super) preparing: Mutex<Option<Preparing>>,
    /// Whether one is: the scoring loop drops what the consumer hands it
    /// meanwhile (nothing, the partitions being paused; the seek when the
    /// preparation ends fetches it again).
    pub(super) is_preparing: AtomicBool,
    /// The partitions a message was dropped from meanwhile: they start again
    /// where they should (see `start_offsets`).
    pub(super) dropped: Mutex<Vec<(String, i32)>>,
}

/// Partitions just assigned, paused while a thread of their own restores
/// their accounts from the changelog and reads the recent decisions back.
///
/// Why not in the rebalance callback, as before: the callback runs inside
/// `poll`, and a member that does not poll cannot take part in the next
/// rebalance. A restore of seconds to minutes (a million accounts) while the
/// group rebalances again (a dead member's session expiring, another instance
/// joining) lost the partitions on tansu, and on Kafka blocks the whole
/// group's rebalance up to `max.poll.interval.ms`. Kafka Streams restores
/// outside the callback too, its tasks' partitions paused, polling on.
pub(super) struct Preparing {
    /// The whole assignment: every partition of it is paused until the
    /// preparation ends.
    assignment: TopicPartitionList,
    /// The accounts kept from the local copy.
    local: Option<Restored>,
    /// The partitions whose accounts the thread restores: no longer held
    /// if it is cancelled (see [`GroupContext::cancel_preparing`]).
    restoring: Vec<i32>,
    cancel: StopFlag,
    work: JoinHandle<Restored>,
}

impl GroupContext {
    pub(super) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        lock(&self.book)
    }

    pub(super) fn memory(&self) -> std::sync::MutexGuard<'_, DecisionMemory> {
        lock(&self.memory)
    }

    /// A message polled while the assignment is prepared: dropped, and its
    /// partition remembered, to be fetched again from its start.
    pub(super) fn drop_polled(&self, message: &BorrowedMessage<'_>) {
        let mut dropped = lock(&self.dropped);
        if !dropped.iter().any(|(t, p)| t == message.topic() && *p == message.partition()) {
            dropped.push((message.topic().to_owned(), message.partition()));
        }
    }

    /// Stop preparing an assignment that is no longer (a revocation, a
    /// stop) and wait for its thread. Its partitions no longer count as
    /// held: a restore cut short forgets the accounts it had put in the
    /// state, and one that finished is dropped with the positions it
    /// covers, so the next assignment of them restores them again (a
    /// second rebalance during a restore, measured in the kill test: the
    /// partition came back as held, without its accounts).
    pub(super) fn cancel_preparing(&self) {
        let Some(p) = lock(&self.preparing).take() else { return };
        p.cancel.store(true, Ordering::Relaxed);
        let _ = p.work.join();
        lock(&self.held).retain(|h| !p.restoring.contains(h));
        self.is_preparing.store(false, Ordering::Relaxed);
        self.health.set_restoring(false);
        tracing::info!("the partitions' preparation stopped: they were revoked, or fds is stopping");
    }

    /// Once the assignment's preparation is done (called by the scoring
    /// loop, outside any callback): the partitions start where the restored
    /// state stands, or at their committed offsets, and are resumed.
    pub(super) fn finish_preparing(&self, consumer: &BaseConsumer<Self>) {
        let p = {
            let mut slot = lock(&self.preparing);
            if !slot.as_ref().is_some_and(|p| p.work.is_finished()) {
                return;
            }
            slot.take().expect("checked above")
        };
        let mut restored = p.work.join().unwrap_or_else(|_| {
            tracing::error!(
                "the thread preparing the partitions assigned panicked; they start without restored accounts"
            );
            Restored::default()
        });
        if let Some(local) = p.local {
            restored.absorb(local);
        }
        let rewind = restored.positions();
        lock(&self.restored).push(restored);
        // Resumed, then each one sought to its start: the seek wakes the
        // thread that fetches it. Sought first and resumed after, the first
        // fetch waited up to a second (measured: the first answers 0.7 s late).
        if let Err(e) = consumer.resume(&p.assignment) {
            tracing::error!(error = %e, "cannot resume the partitions assigned");
        }
        let dropped = std::mem::take(&mut *lock(&self.dropped));
        let starts = start_offsets(consumer, &p.assignment, &self.topics, &rewind, &dropped);
        *lock(&self.starts) = starts;
        self.is_preparing.store(false, Ordering::Relaxed);
        self.health.set_caught_up(true);
        self.health.set_assigned(true);
        self.assigned.store(p.assignment.count(), Ordering::Relaxed);
        tracing::info!(partitions = p.assignment.count(), "partitions ready");
    }

    /// The restores done since the last call.
    pub(super) fn take_restored(&self) -> Vec<Restored> {
        std::mem::take(&mut *lock(&self.restored))
    }

    /// The partitions assigned since the last call, with their starts.
    pub(super) fn take_starts(&self) -> Vec<Start> {
        std::mem::take(&mut *lock(&self.starts))
    }

    /// Hand the finished positions to the consumer for its next commit.
    pub(super) fn store_offsets(&self, consumer: &BaseConsumer<GroupContext>) {
        let ready = self.book().tracker.take_committable();
        if ready.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, partition, next) in ready {
            let topic = if t == Feed::Transfers { &self.topics.transfers } else { &self.topics.context_events };
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(next));
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            tracing::debug!(error = %e, "offsets not stored");
        }
        self.metrics.offsets_pending.set(self.book().tracker.pending() as i64);
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log("consumer", level, fac, message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error("consumer", Some(&self.health), error, reason)
    }
}

impl ConsumerContext for GroupContext {
    /// Partitions are about to go to another instance: while they are still
    /// ours, wait for the acknowledgements of what was decided, store and
    /// commit those offsets, so the next owner starts exactly after them.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.cancel_preparing();
                self.revocations.fetch_add(1, Ordering::Relaxed);
                self.assigned.store(NOT_ASSIGNED, Ordering::Relaxed);
                if consumer.assignment_lost() {
                    // Thrown out of the group (no heartbeat for a session
                    // timeout): others may have moved these partitions on
                    // meanwhile, so what is held of them is stale.
                    lock(&self.held).clear();
                    tracing::warn!(
                        "the assignment was lost; partitions assigned again are restored from the changelog"
                    );
                }
                self.take_starts();
                self.health.set_assigned(false);
                let pending = self.book().tracker.pending();
                if pending > 0 {
                    let deadline = Instant::now() + REVOKE_GRACE;
                    let mut retries = Vec::new();
                    while self.book().tracker.pending() > 0 && Instant::now() < deadline {
                        let _ = self.producer.flush(Duration::from_millis(100));
                        self.book().drain(&self.metrics, &mut retries);
                    }
                    if !retries.is_empty() {
                        tracing::warn!(
                            records = retries.len(),
                            "deliveries failed during a rebalance; the next owner will decide those transfers"
                        );
                    }
                }
                self.store_offsets(consumer);
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                        tracing::warn!(error = %e, "commit before giving up partitions failed");
                    }
                }
                let left = self.book().tracker.pending();
                for e in tpl.elements() {
                    let t = feed_of(&self.topics, e.topic());
                    self.book().tracker.forget(t, e.partition());
                }
                tracing::info!(partitions = tpl.count(), unfinished = left, "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }

    /// New partitions: paused before their first message is handed out,
    /// while a thread restores the accounts of those new to this instance
    /// (from the local copy where it still stands, else from the changelog)
    /// and reads back the decisions already given (perhaps by an instance
    /// that just died), so a transfer delivered again gets the same answer.
    /// The scoring loop polls on meanwhile and resumes them when it is done
    /// (see [`Preparing`]).
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        tracing::info!(partitions = tpl.count(), "partitions assigned");
        self.cancel_preparing();
        lock(&self.dropped).clear();
        let assigned: Vec<i32> = tpl.elements_for_topic(&self.topics.transfers).iter().map(|e| e.partition()).collect();
        let assigned_now = assigned.len();
        let mut held = lock(&self.held);
        let new: Vec<i32> = assigned.iter().copied().filter(|p| !held.contains(p)).collect();
        *held = assigned;
        drop(held);
        // After a start from the local copy, the first partitions assigned
        // keep its accounts where their changelog has not moved since.
        let local = if assigned_now > 0 { lock(&self.local).take() } else { None };
        let at_start = if assigned_now > 0 { lock(&self.start_accounts).take() } else { None };
        let kept = match &local {
            Some(cover) => local::keep_accounts(cover, &new, &self.engine, &self.options, &self.metrics),
            None => Vec::new(),
        };
        let new: Vec<i32> = new.into_iter().filter(|p| !kept.contains(p)).collect();
        if tpl.count() == 0 {
            self.health.set_assigned(false);
            self.assigned.store(0, Ordering::Relaxed);
            return;
        }
        self.health.set_caught_up(false);
        if let Err(e) = consumer.pause(tpl) {
            tracing::error!(error = %e, "cannot pause the partitions assigned while they are prepared");
        }
        let cancel: StopFlag = Arc::new(AtomicBool::new(false));
        let restoring = new.clone();
        let work = {
            let (engine, options, metrics, health) =
                (self.engine.clone(), self.options.clone(), self.metrics.clone(), self.health.clone());
            let (memory, cancel, groups) = (self.memory.clone(), cancel.clone(), self.groups);
            std::thread::Builder::new().name("fds-prepare".into()).spawn(move || {
                // The two reads side by side: each waits on the brokers
                // more than it computes.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        // The read-back begun at start may still hold the
                        // memory: wait for it, but give way to a revocation
                        // at once (it joins this thread inside the callback).
                        let mut memory = loop {
                            match memory.try_lock() {
                                Ok(m) => break m,
                                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                                Err(std::sync::TryLockError::WouldBlock) if cancel.load(Ordering::Relaxed) => return,
                                Err(std::sync::TryLockError::WouldBlock) => {
                                    std::thread::sleep(Duration::from_millis(10))
                                }
                            }
                        };
                        read_back_decisions(&options, &mut memory, &cancel);
                        tracing::info!(decisions = memory.len(), "recent decisions read back");
                    });
                    if options.checkpoint_interval.is_some() && !new.is_empty() {
                        restore_accounts(&new, groups, &engine, &options, &metrics, &health, &cancel, at_start)
                    } else {
                        Restored { partitions: new, ..Restored::default() }
                    }
                })
            })
        };
        match work {
            Ok(work) => {
                let local = local.as_ref().map(|cover| cover.restored(&kept));
                self.is_preparing.store(true, Ordering::Relaxed);
                *lock(&self.preparing) = Some(Preparing { assignment: (*tpl).clone(), local, restoring, cancel, work });
            }
            Err(e) => tracing::error!(error = %e, "cannot start the thread that prepares the partitions assigned"),
        }
    }
}

/// An input partition assigned: where it starts, and where it ends now.
pub(super) struct Start {
    pub(super) feed: Feed,
    pub(super) partition: i32,
    /// Its committed offset or, with none, the beginning
    /// (`auto.offset.reset=earliest`); `None` where the brokers do not say
    /// (the merge then waits for its first message).
    pub(super) from: Option<i64>,
    /// Its end (high watermark), asked of the brokers when it is assigned.
    /// The client's cached end is as old as its last fetch of the
    /// partition, from before the assignment: trusted by the merge, it
    /// would take the partition for caught up at that old end and let the
    /// other partitions' newer messages go ahead of its own.
    pub(super) end: Option<i64>,
}

/// Where each assigned input partition starts (see [`Start`]). A partition
/// whose committed offset is past the restored state's position is moved
/// back to that position, so the state learns what it missed.
fn start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &TopicPartitionList,
    topics: &Topics,
    rewind: &Positions,
    dropped: &[(String, i32)],
) -> Vec<Start> {
    let committed = consumer.committed_offsets(assigned.clone(), Duration::from_secs(10)).ok();
    assigned
        .elements()
        .iter()
        .map(|e| {
            let feed = feed_of(topics, e.topic());
            let offset =
                committed.as_ref().and_then(|c| c.find_partition(e.topic(), e.partition())).map(|c| c.offset());
            let watermarks = consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10)).ok();
            let start = match offset {
                Some(Offset::Offset(o)) => Some(o),
                Some(Offset::Invalid | Offset::Beginning) => watermarks.map(|(low, _)| low),
                _ => None,
            };
            let back = rewind.get(&(feed, e.partition())).copied();
            let (start, rewound) = match (start, back) {
                (Some(s), Some(b)) if b < s => {
                    tracing::info!(topic = e.topic(), partition = e.partition(), from = b, to = s, "replaying input the restored state has not seen");
                    (Some(b), true)
                }
                _ => (start, false),
            };
            // Rewound, or fetched from while it was being prepared (what was
            // fetched was dropped). Not the others: a seek restarts the
            // partition's fetch, which costs the first messages a fetch
            // round of their own.
            let fetched = dropped.iter().any(|(t, p)| t == e.topic() && *p == e.partition());
            if let (Some(at), true) = (start, rewound || fetched) {
                if let Err(err) = consumer.seek(e.topic(), e.partition(), Offset::Offset(at), Duration::from_secs(10)) {
                    tracing::error!(topic = e.topic(), partition = e.partition(), error = %err, "cannot start the partition where its state stands; it goes on from its committed offset");
                }
            }
            Start { feed, partition: e.partition(), from: start, end: watermarks.map(|(_, high)| high) }
        })
        .collect()
}

/// How long a rebalance waits for in-flight decisions before it lets go.
pub(super) const REVOKE_GRACE: Duration = Duration::from_secs(10);

/// [`GroupContext::assigned`] before the first assignment and while joining again.
pub(super) const NOT_ASSIGNED: usize = usize::MAX;

/// While this instance holds no partition: is anybody consuming the inputs?
///
/// An instance may rightly hold nothing (more instances than partitions), but
/// then the others move the group's committed offsets on as input arrives.
/// Input waiting above a committed offset that has not moved for a session
/// timeout has no owner, and no rebalance is coming to give it one: a dead
/// owner would have lost it by then. The instance then leaves the group and
/// joins again. Each time that still leaves it with nothing, the next look
/// waits twice as long (up to 32 times), so an owner held up by broker
/// trouble does not set off a rebalance every few seconds.
///
/// tansu 0.6.0 ends rebalances that way. Its JoinGroup answers at once instead
/// of waiting for every member, so an instance restarted within a session
/// timeout of its crash joins as a follower of its dead predecessor, still
/// the leader. The coordinator expires silent members only when a request
/// comes in, and tansu holds a follower's JoinGroup 3 s with the SyncGroup
/// right after it, so it is usually the follower's SyncGroup that finds the
/// leader gone. That SyncGroup carries no assignments, yet tansu completes
/// the generation with it: the follower is made leader, every member gets an
/// empty assignment, and its heartbeats are acknowledged from then on. (When
/// the follower's own membership has expired by then too, its SyncGroup is
/// refused and it joins afresh as leader: the restart then works.) Leaving
/// makes tansu pick a leader afresh at the next JoinGroup. No client setting
/// avoids it short of static membership (`group.instance.id`), which would
/// ask every deployment for a stable, unique id per instance; and tansu's
/// DescribeGroups, which would show the members, fails with its SQLite
/// storage and drops the connection.
#[derive(Default)]
pub(super) struct OrphanWatch {
    pub(super) next: Option<Instant>,
    /// The waiting input seen at the last look, if the brokers answered.
    pub(super) before: Option<HashMap<(String, i32), i64>>,
    /// Times in a row this instance joined again and was given nothing.
    pub(super) rejoins: u32,
}

impl OrphanWatch {
    /// Called after each poll while the group holds nothing for this
    /// instance: look at the inputs when due, and join again when input
    /// waits for nobody.
    pub(super) fn check(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        opts: &PipelineOptions,
        inputs: &[&str],
    ) -> Result<(), PipelineError> {
        if self.next.is_some_and(|next| Instant::now() < next) {
            return Ok(());
        }
        let every = opts.session_timeout.max(opts.commit_interval * 3) * 2u32.pow(self.rejoins.min(5));
        let now = waiting_input(consumer, &opts.topics);
        self.next = Some(Instant::now() + every);
        let stalled = match (&self.before, &now) {
            (Some(before), Some(now)) => now.iter().any(|(k, o)| before.get(k) == Some(o)),
            _ => false,
        };
        self.before = now;
        if !stalled {
            return Ok(());
        }
        tracing::warn!(
            group = %opts.group_id,
            "this instance holds no partition and input nobody has committed for {} s is waiting; \
             leaving and joining the group again",
            every.as_secs()
        );
        self.rejoins += 1;
        self.next = None;
        self.before = None;
        consumer.context().assigned.store(NOT_ASSIGNED, Ordering::Relaxed);
        consumer.unsubscribe();
        consumer.subscribe(inputs).map_err(|source| PipelineError::Subscribe { topics: inputs.join(", "), source })
    }
}

/// The input partitions with records above the group's committed offset,
/// with that offset (the low watermark when nothing was committed); `None`
/// when the brokers do not answer. Only partitions with more than one record
/// waiting count (see below).
pub(super) fn waiting_input<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &Topics,
) -> Option<HashMap<(String, i32), i64>> {
    let timeout = Duration::from_secs(2);
    let mut tpl = TopicPartitionList::new();
    for topic in [&topics.transfers, &topics.context_events] {
        let md = consumer.fetch_metadata(Some(topic), timeout).ok()?;
        for p in md.topics().first()?.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout).ok()?;
    let mut waiting = HashMap::new();
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), timeout).ok()?;
        let from = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        // One record above the committed offset can be a transactional
        // producer's commit marker, which no consumer ever commits past.
        if high > from + 1 {
            waiting.insert((e.topic().to_owned(), e.partition()), from);
        }
    }
    Some(waiting)
}
