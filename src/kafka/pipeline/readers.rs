//! Topic readers: the partition-count check at start, reading a topic to its
//! end (the decisions tail), and the labels consumer that keeps
//! every instance's fraud reports current.

use super::*;

/// The partition count every keyed topic must share, checked at start:
/// `context-events` (an account's transfers and context events meet on one
/// instance), `observations` (one partition per transfers partition) and,
/// with a changelog, `state` (its partition `j` holds input partition `j`'s
/// accounts and the payees and devices its owner writes). Waits for the
/// brokers up to [`READ_BACK_LIMIT`].
pub(super) fn partition_count_shared(opts: &PipelineOptions, stop: &StopFlag) -> Result<u32, PipelineError> {
    let consumer = reader(opts, "metadata", "metadata reader", &[]).map_err(|source| PipelineError::Client {
        role: "metadata reader",
        brokers: opts.connection.brokers.clone(),
        source,
    })?;
    let topics = &opts.topics;
    let mut keyed = vec![
        (&topics.context_events, "one account's transfers and context events must reach the same instance"),
        (&topics.observations, "each transfers partition publishes its observations to the partition of its number"),
    ];
    if opts.checkpoint_interval.is_some() {
        keyed.push((&topics.state, "each transfers partition checkpoints its state to the partition of its number"));
    }
    let deadline = Instant::now() + READ_BACK_LIMIT;
    let mut said = false;
    loop {
        let counts: Vec<Option<usize>> = std::iter::once(&topics.transfers)
            .chain(keyed.iter().map(|(t, _)| *t))
            .map(|t| partition_count(&consumer, t))
            .collect();
        if let Some(unknown) = counts.iter().position(Option::is_none) {
            let topic = if unknown == 0 { &topics.transfers } else { keyed[unknown - 1].0 };
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                return Err(PipelineError::NoPartitions {
                    topic: topic.clone(),
                    brokers: opts.connection.brokers.clone(),
                    waited: READ_BACK_LIMIT.as_secs(),
                });
            }
            if !said {
                tracing::warn!(%topic, "waiting for the brokers to say how many partitions the topics have");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let transfers = counts[0].expect("known");
        for ((topic, why), n) in keyed.iter().zip(&counts[1..]) {
            let n = n.expect("known");
            if n != transfers {
                return Err(PipelineError::NotCopartitioned {
                    a: topics.transfers.clone(),
                    a_n: transfers,
                    b: (*topic).clone(),
                    b_n: n,
                    why,
                });
            }
        }
        return Ok(transfers as u32);
    }
}

/// How many partitions `topic` has; `None` when the brokers do not say.
pub(super) fn partition_count<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Option<usize> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).ok()?;
    let t = md.topics().first()?;
    (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
}

/// Assign every partition of `topic`, each from `start(partition, low, high)`, waiting
/// for the brokers (retrying) up to `limit`. Returns each partition with the
/// offset it starts from and its end then, or `None` when the brokers never
/// answered.
pub(super) fn assign_all<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    start: impl Fn(i32, i64, i64) -> i64,
    stop: &StopFlag,
    limit: Duration,
) -> Option<Vec<(i32, i64, i64)>> {
    assign_some(consumer, topic, |_| true, start, stop, limit)
}

/// [`assign_all`] of the partitions `which` picks.
pub(super) fn assign_some<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    which: impl Fn(i32) -> bool,
    start: impl Fn(i32, i64, i64) -> i64,
    stop: &StopFlag,
    limit: Duration,
) -> Option<Vec<(i32, i64, i64)>> {
    let began = Instant::now();
    let mut warned = false;
    let mut wait = |what: &str| -> bool {
        if !warned {
            tracing::warn!(%topic, "{what}; waiting");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(500));
        !stop.load(Ordering::Relaxed) && began.elapsed() < limit
    };
    let partitions: Vec<i32> = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) if md.topics().first().is_some_and(|t| t.error().is_none() && !t.partitions().is_empty()) => {
                break md.topics()[0].partitions().iter().map(|p| p.id()).filter(|&p| which(p)).collect();
            }
            Ok(_) if wait("topic not found yet") => {}
            Err(_) if wait("brokers unreachable") => {}
            _ => return None,
        }
    };
    let mut tpl = TopicPartitionList::new();
    let mut assigned = Vec::new();
    for p in partitions {
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok(w) => break w,
                Err(_) if wait("partition watermarks unavailable") => {}
                Err(_) => return None,
            }
        };
        let from = start(p, low, high).clamp(low, high);
        tpl.add_partition_offset(topic, p, Offset::Offset(from)).ok()?;
        assigned.push((p, from, high));
    }
    consumer.assign(&tpl).ok()?;
    Some(assigned)
}

/// How often a long read of a topic logs how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Assign the partitions of `topic` that `which` picks, each from
/// `start(partition, low, high)`, and read until each reaches the end it had when the
/// call began, handing every message to `f`. It waits for the brokers
/// (retrying) rather than failing, and gives up when `limit` passes without a
/// message (a large topic may take longer than that as a whole, as long as it
/// moves); returns whether it reached the end everywhere.
pub(super) fn read_to_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    which: impl Fn(i32) -> bool,
    start: impl Fn(i32, i64, i64) -> i64,
    stop: &StopFlag,
    limit: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> bool {
    let Some(assigned) = assign_some(consumer, topic, which, start, stop, limit) else { return false };
    let total: i64 = assigned.iter().map(|&(_, from, high)| (high - from).max(0)).sum();
    let (began, mut logged_at) = (Instant::now(), Instant::now());
    let mut ends: HashMap<i32, i64> =
        assigned.into_iter().filter(|&(_, from, high)| high > from).map(|(p, _, high)| (p, high)).collect();
    // Progress (a message of a partition still short of its end) is looked
    // at every so many messages, and whenever a poll comes back empty: a
    // clock read per message showed in a restore's profile. Messages of
    // partitions already through do not count, or a stalled partition
    // beside busy ones would never give up.
    let (mut progress_at, mut read, mut read_then) = (Instant::now(), 0u64, 0u64);
    let mut unchecked = 0u32;
    while !ends.is_empty() {
        if unchecked == 0 {
            // Offsets may be missing at the end (compaction, transaction
            // markers): the position tells when a partition is through.
            if let Ok(pos) = consumer.position() {
                for e in pos.elements_for_topic(topic) {
                    if let Offset::Offset(o) = e.offset() {
                        if ends.get(&e.partition()).is_some_and(|&end| o >= end) {
                            ends.remove(&e.partition());
                        }
                    }
                }
            }
            if ends.is_empty() {
                break;
            }
            if read > read_then {
                (progress_at, read_then) = (Instant::now(), read);
            }
            if stop.load(Ordering::Relaxed) || progress_at.elapsed() > limit {
                tracing::warn!(%topic, partitions = ends.len(), "stopped reading before the end");
                return false;
            }
            // A restore of a large state takes minutes: say how far it is.
            if logged_at.elapsed() >= PROGRESS_EVERY {
                logged_at = Instant::now();
                let percent = read * 100 / total.max(1) as u64;
                let seconds = began.elapsed().as_secs();
                tracing::info!(%topic, read, of = total, percent, seconds, "reading back");
            }
            unchecked = 1024;
        }
        unchecked -= 1;
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                f(&m);
                if let Some(&end) = ends.get(&m.partition()) {
                    read += 1;
                    if m.offset() + 1 >= end {
                        ends.remove(&m.partition());
                    }
                }
            }
            Some(Err(e)) => {
                unchecked = 0;
                tracing::debug!(error = %e, %topic, "reading to the end")
            }
            None => unchecked = 0,
        }
    }
    true
}

/// A consumer of this process's own for reading a topic by assignment, never
/// committing: its own group id (`{group}-{suffix}`), from the earliest
/// offset, then `extra` settings. `role` names it in logs and errors.
pub(super) fn reader(
    opts: &PipelineOptions,
    suffix: &str,
    role: &'static str,
    extra: &[(&str, &str)],
) -> Result<BaseConsumer<Quiet>, KafkaError> {
    let group = format!("{}-{suffix}", opts.group_id);
    let mut settings =
        vec![("group.id", group.as_str()), ("enable.auto.commit", "false"), ("auto.offset.reset", "earliest")];
    settings.extend_from_slice(extra);
    opts.connection.client_config(&settings).create_with_context(Quiet(role))
}

/// Read the tail of the decisions topic into the decision memory, so that
/// transfers delivered again (after a restart or a rebalance) get the decision
/// already given. Read once at start, beside the state's restore, then at
/// each assignment only what was written since.
pub(super) fn read_back_decisions(opts: &PipelineOptions, memory: &mut DecisionMemory, stop: &StopFlag) {
    let topic = &opts.topics.decisions;
    let consumer = match reader(
        opts,
        "decisions-readback",
        "decisions read-back",
        &[("enable.auto.offset.store", "false")],
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read back recent decisions; re-delivered transfers will be scored again");
            return;
        }
    };
    let per_partition = opts.dedup_capacity as i64;
    // From the last `dedup_capacity` decisions, or where the last read-back
    // of this process ended; up to each partition's end now.
    let read_to = memory.read_to().clone();
    let ends = std::cell::RefCell::new(Vec::new());
    let complete = read_to_end(
        &consumer,
        topic,
        |_| true,
        |p, _, high| {
            ends.borrow_mut().push((p, high));
            (high - per_partition).max(read_to.get(&p).copied().unwrap_or(i64::MIN))
        },
        stop,
        READ_BACK_LIMIT,
        |m| {
            if let (Some(id), Some(payload)) = (correlation_id(m), m.payload()) {
                let late = header(m, HEADER_LATE) == Some("true");
                let hold = match header(m, HEADER_DECISION) {
                    Some(v) => v == Outcome::Hold.name(),
                    // Decisions written before the header existed.
                    None => serde_json::from_slice::<VerdictOnly<'_>>(payload)
                        .is_ok_and(|b| b.decision == Outcome::Hold.name()),
                };
                let source = header(m, HEADER_SOURCE_PARTITION)
                    .and_then(|p| p.parse().ok())
                    .zip(header(m, HEADER_SOURCE_OFFSET).and_then(|o| o.parse().ok()));
                memory.insert(&id, payload, late, if hold { Outcome::Hold } else { Outcome::Allow }, source);
            }
        },
    );
    if !complete {
        tracing::warn!(%topic, "recent decisions only partly read back");
        return;
    }
    for (p, end) in ends.into_inner() {
        memory.set_read_to(p, end);
    }
}

/// The verdict of a decision read back, from its body.
#[derive(serde::Deserialize)]
pub(super) struct VerdictOnly<'a> {
    #[serde(borrow)]
    pub(super) decision: &'a str,
}

/// How long reading back decisions or catching up labels may take at start.
pub(super) const READ_BACK_LIMIT: Duration = Duration::from_secs(120);

/// The labels consumer and, per partition, the offset it starts from.
pub(super) type LabelsReader = (BaseConsumer<Quiet>, Vec<(i32, i64)>);

/// The fraud-report reader: every instance reads every label, from the start
/// of the topic (fraud reports are few, and each instance needs all of them
/// for payee risk), assigned rather than subscribed (no group membership, a
/// reading position of this process's own). The scoring thread polls it and
/// merges the reports with its partitions by event time, so a report is in
/// the state before any transfer dated after it is scored. Returns the
/// consumer and, per partition, where it starts; no partitions when the
/// topic could not be found in time (logged; reports then go unread).
pub(super) fn labels_reader(opts: &PipelineOptions, stop: &StopFlag) -> Result<LabelsReader, PipelineError> {
    let latency = [("fetch.wait.max.ms", "1"), ("fetch.queue.backoff.ms", "1")];
    let consumer = reader(opts, "labels", "labels consumer", &latency).map_err(|source| PipelineError::Client {
        role: "labels consumer",
        brokers: opts.connection.brokers.clone(),
        source,
    })?;
    let topic = &opts.topics.labels;
    let starts = match assign_all(&consumer, topic, |_, low, _| low, stop, READ_BACK_LIMIT) {
        Some(assigned) => assigned.into_iter().map(|(p, from, _)| (p, from)).collect(),
        None => {
            tracing::error!(%topic, "cannot read the fraud reports; payee risk will miss them");
            Vec::new()
        }
    };
    Ok((consumer, starts))
}
