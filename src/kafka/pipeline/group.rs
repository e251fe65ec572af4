//! Group membership: the rebalance callbacks (in-flight decisions awaited and
//! committed before partitions go, the decision memory read back before new
//! ones are handled) and the orphan watchdog that rejoins when input has no
//! owner.

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
    pub(super) memory: Mutex<DecisionMemory>,
    /// For reading decisions back when partitions are assigned.
    pub(super) options: PipelineOptions,
    pub(super) stop: StopFlag,
    /// How many partitions the last rebalance assigned this member, or
    /// [`NOT_ASSIGNED`] (see [`OrphanWatch`]).
    pub(super) assigned: AtomicUsize,
    /// Revocations so far: the scoring thread drops a burst taken across one
    /// (see the loop in [`run`]).
    pub(super) revocations: std::sync::atomic::AtomicU64,
    /// Partitions just assigned, with the offset each starts from, for the
    /// scoring thread's merge to follow (see [`Merge::follow`]).
    pub(super) starts: Mutex<Vec<(Feed, i32, Option<i64>)>>,
    /// The engine, whose accounts are restored when partitions arrive.
    pub(super) engine: Arc<Engine>,
    /// Partitions of `state`, read once at start: which accounts belong to
    /// a partition being restored.
    pub(super) groups: u32,
    /// The transfers partitions held before the last revocation: one
    /// assigned again still has its accounts here, current.
    pub(super) held: Mutex<Vec<i32>>,
    /// Restores done in the rebalance callback, for the scoring thread to
    /// take up (positions, checkpoint numbers).
    pub(super) restored: Mutex<Vec<Restored>>,
    /// What the local copy restored at start covers, until the first
    /// assignment decides which of its partitions' accounts stand (see
    /// `local::keep_accounts`).
    pub(super) local: Mutex<Option<local::ChangelogCover>>,
}

impl GroupContext {
    pub(super) fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn memory(&self) -> std::sync::MutexGuard<'_, DecisionMemory> {
        self.memory.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The restores done since the last call.
    pub(super) fn take_restored(&self) -> Vec<Restored> {
        std::mem::take(&mut *self.restored.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The partitions assigned since the last call, with their starts.
    pub(super) fn take_starts(&self) -> Vec<(Feed, i32, Option<i64>)> {
        std::mem::take(&mut *self.starts.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
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
                self.revocations.fetch_add(1, Ordering::Relaxed);
                self.assigned.store(NOT_ASSIGNED, Ordering::Relaxed);
                if consumer.assignment_lost() {
                    // Thrown out of the group (no heartbeat for a session
                    // timeout): others may have moved these partitions on
                    // meanwhile, so what is held of them is stale.
                    self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
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

    /// New partitions: before their first message is handed out (this runs
    /// inside `poll`, on the scoring thread), read back the decisions already
    /// given (perhaps by an instance that just died), so a transfer delivered
    /// again gets the same answer. Pausing the partitions instead was measured
    /// to delay the first fetches after resuming by about half a second.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            // Partitions new to this instance bring their accounts, from the
            // changelog, before any of their messages is handled; then they
            // are read again from the checkpoint's positions.
            let assigned: Vec<i32> =
                tpl.elements_for_topic(&self.topics.transfers).iter().map(|e| e.partition()).collect();
            let assigned_now = assigned.len();
            let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let new: Vec<i32> = assigned.iter().copied().filter(|p| !held.contains(p)).collect();
            *held = assigned;
            drop(held);
            // After a start from the local copy, the first partitions assigned
            // keep its accounts where their changelog has not moved since.
            let local = if assigned_now > 0 {
                self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
            } else {
                None
            };
            let kept = match &local {
                Some(cover) => local::keep_accounts(cover, &new, &self.engine, &self.options, &self.metrics),
                None => Vec::new(),
            };
            let new: Vec<i32> = new.into_iter().filter(|p| !kept.contains(p)).collect();
            let mut restored = if self.options.checkpoint_interval.is_some() && !new.is_empty() {
                restore_accounts(
                    &new,
                    self.groups,
                    &self.engine,
                    &self.options,
                    &self.metrics,
                    &self.health,
                    &self.stop,
                )
            } else {
                Restored { partitions: new, ..Restored::default() }
            };
            if let Some(cover) = &local {
                restored.absorb(cover.restored(&kept));
            }
            let rewind = restored.positions();
            self.restored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(restored);
            let starts = start_offsets(consumer, tpl, &self.topics, &rewind);
            *self.starts.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = starts;
            if tpl.count() > 0 {
                self.health.set_caught_up(false);
                let mut memory = self.memory();
                read_back_decisions(&self.options, &mut memory, &self.stop);
                tracing::info!(decisions = memory.len(), "recent decisions read back");
                self.health.set_caught_up(true);
            }
            self.health.set_assigned(tpl.count() > 0);
            self.assigned.store(tpl.count(), Ordering::Relaxed);
        }
    }
}

/// Where each assigned input partition starts: its committed offset or, with
/// none, the beginning (`auto.offset.reset=earliest`); `None` where the
/// brokers do not say (the merge then waits for its first message).
///
/// A partition whose committed offset is past the restored state's position
/// is moved back to that position, so the state learns what it missed.
fn start_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &TopicPartitionList,
    topics: &Topics,
    rewind: &Positions,
) -> Vec<(Feed, i32, Option<i64>)> {
    let committed = consumer.committed_offsets(assigned.clone(), Duration::from_secs(10)).ok();
    assigned
        .elements()
        .iter()
        .map(|e| {
            let feed = feed_of(topics, e.topic());
            let offset =
                committed.as_ref().and_then(|c| c.find_partition(e.topic(), e.partition())).map(|c| c.offset());
            let start = match offset {
                Some(Offset::Offset(o)) => Some(o),
                Some(Offset::Invalid | Offset::Beginning) => consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                    .ok()
                    .map(|(low, _)| low),
                _ => None,
            };
            let back = rewind.get(&(feed, e.partition())).copied();
            let start = match (start, back) {
                (Some(s), Some(b)) if b < s => {
                    match consumer.seek(e.topic(), e.partition(), Offset::Offset(b), Duration::from_secs(10)) {
                        Ok(()) => {
                            tracing::info!(topic = e.topic(), partition = e.partition(), from = b, to = s, "replaying input the restored state has not seen");
                            Some(b)
                        }
                        Err(err) => {
                            tracing::error!(topic = e.topic(), partition = e.partition(), error = %err, "cannot go back to the restored state's position; what it missed stays missed");
                            start
                        }
                    }
                }
                _ => start,
            };
            (feed, e.partition(), start)
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
