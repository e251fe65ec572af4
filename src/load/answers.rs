//! The answering side of a load: the decisions topic read from explicit
//! offsets, each answer matched to the transfer it answers by correlation id,
//! timed, and counted (in budget, late, twice, never asked for).

use super::*;

/// A consumer assigned every partition of the decisions topic at its current
/// end, after checking that the brokers answer and every topic exists.
pub(super) fn decision_reader(opts: &LoadOptions) -> Result<BaseConsumer, LoadError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    // No group is joined (the partitions are assigned), but librdkafka wants
    // a group id for some calls; a unique one can never disturb a real group.
    let group = format!("fds-load-{}-{nanos}", std::process::id());
    let consumer: BaseConsumer = opts
        .connection
        .client_config(&[
            ("group.id", &group),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "false"),
            // librdkafka's mock cluster (the embedded broker of `fds run`)
            // answers an empty fetch only when its wait is over, even when
            // data arrives meanwhile; a long wait would be measured as
            // latency. Against real brokers a short wait costs only idle
            // fetch requests.
            ("fetch.wait.max.ms", FETCH_WAIT_MS),
        ])
        .create()
        .map_err(LoadError::kafka("cannot create the decisions consumer"))?;
    let timeout = opts.connect_timeout;
    let brokers = &opts.connection.brokers;
    // All topics at once: asking for one by name may create it on brokers
    // that auto-create topics.
    let metadata = consumer.fetch_metadata(None, timeout).map_err(|source| LoadError::Unreachable {
        brokers: brokers.clone(),
        timeout,
        source,
    })?;
    let t = &opts.topics;
    let roles = [
        ("transfers", &t.transfers),
        ("context events", &t.context_events),
        ("labels", &t.labels),
        ("decisions", &t.decisions),
    ];
    let mut decision_partitions = Vec::new();
    for (role, name) in roles {
        let found = metadata.topics().iter().find(|m| m.name() == name.as_str());
        let partitions: Vec<i32> = match found {
            Some(m) if m.error().is_none() => m.partitions().iter().map(|p| p.id()).collect(),
            _ => Vec::new(),
        };
        if partitions.is_empty() {
            return Err(LoadError::MissingTopic { topic: name.clone(), role, brokers: brokers.clone() });
        }
        if role == "decisions" {
            decision_partitions = partitions;
        }
    }
    // Explicit offsets: everything answered from here on is at or past these,
    // whenever the fetching actually starts.
    let mut assignment = TopicPartitionList::new();
    for p in decision_partitions {
        let (_, high) = consumer
            .fetch_watermarks(&t.decisions, p, timeout)
            .map_err(LoadError::kafka(format!("cannot read the end offset of {}/{p}", t.decisions)))?;
        assignment
            .add_partition_offset(&t.decisions, p, Offset::Offset(high))
            .map_err(LoadError::kafka("cannot build the decisions assignment"))?;
    }
    consumer.assign(&assignment).map_err(LoadError::kafka(format!("cannot assign {}", t.decisions)))?;
    Ok(consumer)
}

/// What the decision reader publishes for the producing side, updated as it
/// takes in notes, matches answers and ages transfers out.
#[derive(Debug, Default)]
pub(super) struct ReaderView {
    /// First answers matched, for the progress bar.
    pub(super) answered: AtomicU64,
    /// [`Matcher::settled`]: of the transfers the reader has taken in, those
    /// that no longer hold an in-flight slot. One number rather than the pair
    /// (taken in, outstanding) it is computed from, so the producer can never
    /// read one half of the pair before an update and the other half after.
    pub(super) settled: AtomicU64,
}

impl ReaderView {
    pub(super) fn publish(&self, matcher: &Matcher) {
        self.answered.store(matcher.tally.answered, Ordering::Relaxed);
        self.settled.store(matcher.settled(), Ordering::Relaxed);
    }
}

pub(super) struct ReaderResult {
    pub(super) matcher: Matcher,
    pub(super) consumer_errors: u64,
    /// Whether `--decisions-out` was written whole.
    pub(super) written: Result<(), LoadError>,
}

/// The decision reader's loop: match every decision read until all transfers
/// are answered or the drain after the last send is over.
/// Where `--decisions-out` writes: each decision's bytes and a newline.
pub(super) struct DecisionsOut {
    pub(super) path: PathBuf,
    pub(super) file: std::io::BufWriter<std::fs::File>,
    /// The first error, reported once at the end; writing stops there.
    pub(super) failed: Option<std::io::Error>,
}

impl DecisionsOut {
    pub(super) fn create(path: &std::path::Path) -> Result<Self, LoadError> {
        let file = std::fs::File::create(path)
            .map_err(|source| LoadError::DecisionsOut { path: path.to_path_buf(), source })?;
        Ok(DecisionsOut { path: path.to_path_buf(), file: std::io::BufWriter::new(file), failed: None })
    }

    pub(super) fn write(&mut self, decision: &[u8]) {
        use std::io::Write;
        if self.failed.is_none() {
            if let Err(e) = self.file.write_all(decision).and_then(|()| self.file.write_all(b"\n")) {
                self.failed = Some(e);
            }
        }
    }

    pub(super) fn finish(mut self) -> Result<(), LoadError> {
        use std::io::Write;
        let flushed = self.file.flush();
        match self.failed.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(source) => Err(LoadError::DecisionsOut { path: self.path, source }),
        }
    }
}

pub(super) fn read_decisions(
    consumer: BaseConsumer,
    notes: Receiver<Note>,
    mut matcher: Matcher,
    drain: Duration,
    view: &ReaderView,
    mut out: Option<DecisionsOut>,
) -> ReaderResult {
    let mut deadline: Option<Instant> = None;
    let mut consumer_errors = 0u64;
    let mut burst = Vec::with_capacity(READ_BURST);
    loop {
        // Wait for one answer, then take what has arrived behind it: the
        // bookkeeping below runs once per burst, not once per answer.
        let mut wait = READ_POLL;
        while burst.len() < READ_BURST {
            match consumer.poll(wait) {
                Some(Ok(msg)) => burst.push(msg),
                Some(Err(e)) => {
                    consumer_errors += 1;
                    if consumer_errors <= CONSUMER_ERRORS_LOGGED {
                        tracing::warn!(error = %e, "error reading decisions");
                    }
                    break;
                }
                None => break,
            }
            wait = Duration::ZERO;
        }
        let now = Instant::now();
        // Take in every transfer sent so far before matching: its note was
        // queued before it was sent, so before its decision could be read.
        loop {
            match notes.try_recv() {
                Ok(Note::Sent { id, at }) => matcher.sent(id, at),
                Ok(Note::Failed { id }) => matcher.retract(&id),
                Ok(Note::Done { last_send }) => deadline = Some(last_send + drain),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    deadline.get_or_insert(now);
                    break;
                }
            }
        }
        matcher.age(now);
        for msg in burst.drain(..) {
            let headers = msg.headers().into_iter().flat_map(|h| h.iter().map(|h| (h.key, h.value)));
            let d = read_decision(headers, msg.payload());
            matcher.answer(d, now);
            if let (Some(out), Some(decision)) = (&mut out, msg.payload()) {
                out.write(decision);
            }
        }
        view.publish(&matcher);
        if let Some(deadline) = deadline {
            if matcher.outstanding == 0 || now >= deadline {
                break;
            }
        }
    }
    let written = out.map_or(Ok(()), DecisionsOut::finish);
    ReaderResult { matcher, consumer_errors, written }
}

/// The `decision` field of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Allow,
    Hold,
    /// Missing (empty) or a value this load does not know.
    Other(Box<str>),
}

/// What a message on the decisions topic says, as far as matching goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReadDecision {
    pub(super) id: Option<String>,
    pub(super) verdict: Verdict,
    pub(super) late: bool,
    pub(super) redelivered: bool,
}

/// The body fields matching needs; the rest of the decision is not looked at.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Body<'a> {
    #[serde(default, borrow)]
    pub(super) bank_tran_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) decision: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(super) late: Option<bool>,
}

/// Read a decision from its headers, as the transfer API would: the
/// correlation-id and `fds-decision` headers carry all that matching needs.
/// The body is parsed only when one is missing (a producer that drops
/// headers); its `bank_tran_id` and `decision` are the fallback.
pub(super) fn read_decision<'h>(
    headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>,
    body: Option<&[u8]>,
) -> ReadDecision {
    let mut id = None;
    let mut decision = None;
    let mut late = false;
    let mut redelivered = false;
    for (key, value) in headers {
        let value = value.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        match key {
            HEADER_CORRELATION_ID if !value.is_empty() => id = Some(value.to_owned()),
            HEADER_DECISION => decision = Some(verdict_of(value)),
            HEADER_LATE => late |= value == "true",
            HEADER_REDELIVERED => redelivered |= value == "true",
            _ => {}
        }
    }
    if let (Some(_), Some(verdict)) = (&id, &decision) {
        return ReadDecision { id, verdict: verdict.clone(), late, redelivered };
    }
    let body: Body<'_> = body.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    let id = id.or(body.bank_tran_id.filter(|s| !s.is_empty()).map(String::from));
    let verdict = decision.unwrap_or_else(|| verdict_of(body.decision.as_deref().unwrap_or("")));
    ReadDecision { id, verdict, late: late || body.late == Some(true), redelivered }
}

pub(super) fn verdict_of(value: &str) -> Verdict {
    match value {
        "allow" => Verdict::Allow,
        "hold" => Verdict::Hold,
        other => Verdict::Other(other.into()),
    }
}

/// Counts kept while matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) answered: u64,
    pub(super) missed_budget: u64,
    pub(super) late: u64,
    pub(super) allow: u64,
    pub(super) hold: u64,
    pub(super) other: u64,
    pub(super) duplicates: u64,
    pub(super) contradictory: u64,
    pub(super) redelivered: u64,
    pub(super) unknown: u64,
    pub(super) unreadable: u64,
    pub(super) repeated_ids: u64,
    pub(super) retracted: u64,
}

/// A transfer sent, and its first answer once there is one (kept to tell a
/// repeated answer from a contradictory one).
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) at: Instant,
    pub(super) first: Option<Verdict>,
    /// Unanswered for longer than the slot timeout: still waited for, but no
    /// longer holding an in-flight slot.
    pub(super) aged: bool,
}

/// Decisions matched to the transfers sent, by id.
#[derive(Debug)]
pub(super) struct Matcher {
    pub(super) budget: Duration,
    /// How long an unanswered transfer holds its in-flight slot (the drain:
    /// an answer slower than that would not be waited for at the end either).
    pub(super) slot_timeout: Duration,
    pub(super) sent: ahash::AHashMap<Box<str>, Pending>,
    /// Transfers in send order, by send time and id, for ageing them out. An
    /// entry may outlive its transfer (answered, or retracted and sent again).
    pub(super) by_age: VecDeque<(Instant, Box<str>)>,
    /// Sent notes taken in, repeated ids included.
    pub(super) taken_in: u64,
    /// Sent, delivered, not answered yet.
    pub(super) outstanding: u64,
    /// Of `outstanding`, those past the slot timeout.
    pub(super) aged: u64,
    /// End-to-end latency of first answers, in microseconds.
    pub(super) hist: Histogram<u64>,
    pub(super) tally: Tally,
    pub(super) last_answer: Option<Instant>,
}

impl Matcher {
    pub(super) fn new(budget: Duration, slot_timeout: Duration) -> Self {
        Matcher {
            budget,
            slot_timeout,
            sent: ahash::AHashMap::new(),
            by_age: VecDeque::new(),
            taken_in: 0,
            outstanding: 0,
            aged: 0,
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            tally: Tally::default(),
            last_answer: None,
        }
    }

    /// A transfer was sent. An id sent before keeps its first send time, so
    /// the answer to the repeat counts as a duplicate.
    pub(super) fn sent(&mut self, id: Box<str>, at: Instant) {
        self.taken_in += 1;
        if self.sent.contains_key(&id) {
            self.tally.repeated_ids += 1;
            return;
        }
        self.by_age.push_back((at, id.clone()));
        self.sent.insert(id, Pending { at, first: None, aged: false });
        self.outstanding += 1;
    }

    /// Transfers taken in that hold no in-flight slot: answered, retracted,
    /// repeated ids (the first send holds the slot), and aged out.
    pub(super) fn settled(&self) -> u64 {
        self.taken_in - (self.outstanding - self.aged)
    }

    /// Free the slots of transfers unanswered for longer than the slot
    /// timeout. They still count as never answered if no answer comes, so a
    /// pipeline that drops transfers cannot stall the load for a drain per send.
    pub(super) fn age(&mut self, now: Instant) {
        while let Some((at, id)) = self.by_age.front() {
            // Sent in order: everything behind this one is younger.
            if now.saturating_duration_since(*at) < self.slot_timeout {
                break;
            }
            // The same send (not a later one of a retracted id), unanswered.
            if let Some(p) = self.sent.get_mut(id).filter(|p| p.at == *at && p.first.is_none() && !p.aged) {
                p.aged = true;
                self.aged += 1;
            }
            self.by_age.pop_front();
        }
    }

    /// The transfer never reached a broker: stop waiting for it.
    pub(super) fn retract(&mut self, id: &str) {
        if let Some(p) = self.sent.get(id).filter(|p| p.first.is_none()) {
            self.aged -= u64::from(p.aged);
            self.sent.remove(id);
            self.outstanding -= 1;
            self.tally.retracted += 1;
        }
    }

    pub(super) fn answer(&mut self, d: ReadDecision, at: Instant) {
        let Some(id) = d.id else {
            self.tally.unreadable += 1;
            return;
        };
        let Some(pending) = self.sent.get_mut(id.as_str()) else {
            self.tally.unknown += 1;
            return;
        };
        let t = &mut self.tally;
        t.redelivered += u64::from(d.redelivered);
        if let Some(first) = &pending.first {
            t.duplicates += 1;
            t.contradictory += u64::from(*first != d.verdict);
            return;
        }
        let latency = at.saturating_duration_since(pending.at);
        self.hist.saturating_record((latency.as_micros() as u64).max(1));
        t.answered += 1;
        t.missed_budget += u64::from(latency > self.budget);
        t.late += u64::from(d.late);
        match d.verdict {
            Verdict::Allow => t.allow += 1,
            Verdict::Hold => t.hold += 1,
            Verdict::Other(_) => t.other += 1,
        }
        pending.first = Some(d.verdict);
        self.outstanding -= 1;
        self.aged -= u64::from(pending.aged);
        self.last_answer = Some(at);
    }
}

/// Percentiles of a histogram of microseconds.
pub(super) fn latency_summary(hist: &Histogram<u64>) -> Latency {
    if hist.is_empty() {
        return Latency::default();
    }
    let q = |q: f64| hist.value_at_quantile(q) as f64;
    Latency { p50_us: q(0.50), p99_us: q(0.99), p999_us: q(0.999), max_us: hist.max() as f64, mean_us: hist.mean() }
}
