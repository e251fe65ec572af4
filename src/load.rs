//! Load: the transfer API played against a running `fds run`, end to end.
//!
//! This module owns the benchmark of the whole pipeline. It reads recorded
//! streams (the files and formats of [`crate::replay`]), produces their events
//! to the input topics as the transfer API and the bank's other systems do (the
//! contract in [`crate::kafka`]), reads the decisions topic, and times each
//! transfer from the moment it is handed to the producer to the moment its
//! decision is read back. Replay times the engine alone; this times what a
//! customer waits for: producer batching, brokers, the consumer in `fds run`,
//! the engine, and the decision's way back.
//!
//! Guarantees:
//! - **No decision is missed at the start.** The decisions topic is read from
//!   explicit offsets, each partition's high watermark fetched before the first
//!   transfer is sent, not through a consumer group: no rebalance to wait for,
//!   no offset reset that could skip the first answers.
//! - **The pace does not drift.** With a rate, transfer `n` is due `n / rate`
//!   after the first on the monotonic clock; a late send is not carried into
//!   the next one, and when behind the load sends at once until it catches up.
//! - **Every transfer is accounted for**: answered (in budget or not), never
//!   answered within the drain, or never delivered to a broker. Second answers
//!   and answers to ids never sent are counted apart and kept out of latency.
//! - **The load times the pipeline, not itself.** The input is read and
//!   serialized into memory before the first send (about the size of the
//!   uncompressed file), so file reading and JSON writing do not compete with
//!   `fds run` for the machine while the clock runs.
//! - **Bad input never stops a load**: lines that are not events are counted
//!   and skipped, as in replay.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::input::{self, BadLine, Format, Input, InputError, BAD_LINES_LISTED};
use crate::kafka::{
    Connection, Topics, HEADER_CORRELATION_ID, HEADER_DEADLINE_MS, HEADER_DECISION, HEADER_LATE, HEADER_REDELIVERED,
};
use crate::replay::Latency;

/// The transfer API's usual latency budget.
pub const DEFAULT_BUDGET_MS: u64 = 200;
/// Long enough for a pipeline that is behind to catch up, short enough to wait for.
pub const DEFAULT_DRAIN_SECS: f64 = 10.0;
/// One millisecond of batching: negligible next to the budget, and it keeps the
/// producer from sending one request per transfer at high rates.
pub const DEFAULT_LINGER_MS: u32 = 1;
/// How long the brokers get to answer at the start.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Latencies are recorded in microseconds, up to an hour (anything longer is
/// clamped: such a transfer has failed whatever its exact figure).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How long the decision reader waits for a message before it looks at its
/// notes and the drain deadline again.
const READ_POLL: Duration = Duration::from_millis(20);
/// Answers read back to back before the notes and the drain deadline are
/// looked at again; at 100,000 answers a second, well under a millisecond.
const READ_BURST: usize = 64;
/// Transfers waiting for an answer at most, by default.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 10_000;
/// The decision reader's `fetch.wait.max.ms` (see where it is set).
const FETCH_WAIT_MS: &str = "1";
/// Consumer errors logged one by one before the rest are only counted.
const CONSUMER_ERRORS_LOGGED: u64 = 5;

/// Why a load could not run.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An input file could not be opened or is not in the format asked for.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("the rate must be a positive number of transfers per second, got {0}")]
    InvalidRate(f64),
    #[error("the speed must be a positive factor, and not given with a rate, got {0}")]
    InvalidSpeed(f64),
    /// The metadata request at the start got no answer: nothing was sent.
    #[error("no broker answered at {brokers} within {} s", timeout.as_secs_f64())]
    Unreachable {
        brokers: String,
        timeout: Duration,
        #[source]
        source: KafkaError,
    },
    /// `fds load` creates no topics: a missing one is a deployment mistake that
    /// `fds run` would trip over too.
    #[error("topic {topic:?} ({role}) does not exist on {brokers}, or has no partitions")]
    MissingTopic { topic: String, role: &'static str, brokers: String },
    /// A client could not be created, or a request or a send failed for good.
    #[error("{context}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    /// The thread reading decisions panicked; its counts are lost.
    #[error("the decision reader thread panicked")]
    ReaderPanicked,
    /// The file the decisions are written to could not be created or written.
    #[error("cannot write the decisions to {path}")]
    DecisionsOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LoadError {
    fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> LoadError {
        let context = context.into();
        move |source| LoadError::Kafka { context, source }
    }
}

/// What to load, where, and how fast.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Recorded streams, sent in order.
    pub files: Vec<PathBuf>,
    /// How the files are read.
    pub format: Format,
    /// The brokers and client settings, as `fds run` takes them.
    pub connection: Connection,
    /// Topic names, the same as `fds run`'s.
    pub topics: Topics,
    /// Transfers per second; `None` sends as fast as the producer takes them.
    /// Context events and labels go out as they come and do not count.
    pub rate: Option<f64>,
    /// Instead of a rate: every event at its recorded time, sped up by this
    /// factor (10,000 plays a week in about a minute), so the traffic keeps
    /// its shape: quiet nights, busy paydays, a context event minutes before
    /// its transfer stays minutes / factor before it.
    pub speed: Option<f64>,
    /// Stop after this many transfers.
    pub limit: Option<u64>,
    /// Written into each transfer's `deadline-ms` header (wall clock at send
    /// plus budget); an answer slower than this missed the budget.
    pub budget: Duration,
    /// How long to wait after the last send for the decisions still due.
    pub drain: Duration,
    /// Producer `linger.ms`.
    pub linger_ms: u32,
    /// At most this many transfers waiting for their decision, as a transfer
    /// API with a bounded pool of request handlers has. Sending waits while
    /// the limit is reached, so an unpaced run measures the throughput the
    /// pipeline sustains rather than how big a backlog the broker can hold.
    /// A transfer unanswered for longer than the drain gives up its slot (it
    /// still counts as never answered if no answer comes).
    pub max_in_flight: u64,
    /// How long the brokers get to answer the first metadata request.
    pub connect_timeout: Duration,
    /// Write every decision read back, as sent, one per line, to this file:
    /// a live run to compare transfer by transfer with `fds replay
    /// --decisions-out` of the same file.
    pub decisions_out: Option<PathBuf>,
}

impl LoadOptions {
    /// Options with the defaults above, unpaced and unlimited.
    pub fn new(files: Vec<PathBuf>, connection: Connection, topics: Topics) -> Self {
        LoadOptions {
            files,
            format: Format::Auto,
            connection,
            topics,
            rate: None,
            speed: None,
            limit: None,
            budget: Duration::from_millis(DEFAULT_BUDGET_MS),
            drain: Duration::from_secs_f64(DEFAULT_DRAIN_SECS),
            linger_ms: DEFAULT_LINGER_MS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            decisions_out: None,
        }
    }
}

/// Everything a load measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The files sent.
    pub inputs: Vec<String>,
    /// The bootstrap servers.
    pub brokers: String,
    /// The rate asked for, in transfers per second; `None` for flat out.
    pub target_rate: Option<f64>,
    /// The speed-up of the recorded times asked for, instead of a rate.
    pub speed: Option<f64>,
    /// The answer budget written into `deadline-ms`, in ms.
    pub budget_ms: u64,
    /// How long the load waited for answers after the last send, in seconds.
    pub drain_s: f64,

    /// Transfers handed to the producer.
    pub transfers_sent: u64,
    /// Context events handed to the producer.
    pub context_events_sent: u64,
    /// Fraud reports handed to the producer.
    pub labels_sent: u64,
    /// Input lines that were not events (not sent).
    pub bad_lines: u64,
    /// The first few of them, with file, line and reason.
    pub bad_line_samples: Vec<BadLine>,
    /// Sending stopped at the transfer limit.
    pub stopped_at_limit: bool,
    /// Messages of any kind the producer gave up on, and of those, transfers
    /// (which are then not waited for).
    pub delivery_failures: u64,
    /// See `delivery_failures`.
    pub transfers_not_delivered: u64,
    /// The first producer error, for the report.
    pub first_delivery_error: Option<String>,
    /// Times a send found the producer queue full and waited.
    pub queue_full_waits: u64,
    /// The in-flight limit, and how many sends had to wait for a free slot
    /// (each counted once, however long it waited).
    pub max_in_flight: u64,
    /// See `max_in_flight`.
    pub in_flight_waits: u64,
    /// Transfer ids that came up again in the input: their later decisions
    /// count as duplicates.
    pub repeated_ids: u64,

    /// From the first transfer sent to the last one.
    pub send_s: f64,
    /// Transfers per second achieved while sending.
    pub sent_per_s: f64,
    /// From the first transfer sent to the last decision read (or to the last
    /// send when that is later).
    pub elapsed_s: f64,
    /// Decisions read per second over `elapsed_s`.
    pub decisions_per_s: f64,

    /// Transfers answered (first decisions only).
    pub decisions_received: u64,
    /// End to end: handed to the producer → decision read back.
    pub latency: Latency,
    /// Answered, but later than the budget.
    pub missed_budget: u64,
    /// Sent, delivered, and not answered within the drain.
    pub never_answered: u64,
    /// Answers `fds run` marked late (header `fds-late` or `"late": true`):
    /// it consumed the transfer after its deadline.
    pub late: u64,
    /// First answers that said allow.
    pub allow: u64,
    /// First answers that said hold.
    pub hold: u64,
    /// Answers whose `decision` was missing or neither allow nor hold.
    pub other_decisions: u64,
    /// Second and later answers for one transfer...
    pub duplicates: u64,
    /// ...of which with a different `decision` than the first.
    pub contradictory: u64,
    /// Answers of any rank carrying `fds-redelivered: true`.
    pub redelivered: u64,
    /// Answers for ids this load never sent (another client's, or a previous run's).
    pub unknown: u64,
    /// Messages on the decisions topic with no id in header or body.
    pub unreadable: u64,
    /// Errors the decisions reader saw (broker trouble, not bad messages).
    pub consumer_errors: u64,
}

/// A progress bar for [`run`], drawn on stderr.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} load [{bar:40}] {bytes}/{total_bytes} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

fn sending_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{spinner} load [{bar:40}] {pos}/{len} events {msg}")
        .expect("valid template")
        .progress_chars("=> ")
}

/// Send `opts.files` to the brokers, read the decisions back, and report.
///
/// Nothing is sent until the brokers have answered, every topic exists and the
/// decision reader is positioned at the end of the decisions topic.
pub fn run(opts: LoadOptions, progress: Option<ProgressBar>) -> Result<LoadReport, LoadError> {
    if let Some(r) = opts.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(LoadError::InvalidRate(r));
        }
    }
    if let Some(f) = opts.speed {
        if !(f > 0.0 && f.is_finite()) || opts.rate.is_some() {
            return Err(LoadError::InvalidSpeed(f));
        }
    }
    let sources = opts.files.iter().map(|f| input::open(f, opts.format)).collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let bar = progress.unwrap_or_else(ProgressBar::hidden);
    bar.set_length(sources.iter().map(|s| s.size).sum());

    let consumer = decision_reader(&opts)?;
    let (notes, notes_rx) = mpsc::channel();
    let delivery = Delivery { notes: notes.clone(), failed: AtomicU64::new(0), first_error: Mutex::new(None) };
    let linger = opts.linger_ms.to_string();
    let producer: ThreadedProducer<Delivery> = opts
        .connection
        .client_config(&[("linger.ms", &linger), ("enable.idempotence", "true"), ("acks", "all")])
        .create_with_context(delivery)
        .map_err(LoadError::kafka("cannot create the producer"))?;

    // Warm the producer: with the topics' partition leaders known and the
    // broker connections up, the first transfers are timed like the rest
    // instead of waiting for the client's start-up.
    for topic in [&opts.topics.transfers, &opts.topics.context_events, &opts.topics.labels] {
        producer
            .client()
            .fetch_metadata(Some(topic), opts.connect_timeout)
            .map_err(LoadError::kafka(format!("cannot read the metadata of {topic}")))?;
    }

    let view = Arc::new(ReaderView::default());
    let matcher = Matcher::new(opts.budget, opts.drain);
    let drain = opts.drain;
    let out = match &opts.decisions_out {
        Some(path) => Some(DecisionsOut::create(path)?),
        None => None,
    };
    let reader = {
        let view = view.clone();
        std::thread::Builder::new()
            .name("fds-load-decisions".into())
            .spawn(move || read_decisions(consumer, notes_rx, matcher, drain, &view, out))
            .expect("spawn the decision reader")
    };

    bar.set_message("reading the input before the first send");
    let mut prepared = prepare(sources, opts.limit.unwrap_or(u64::MAX), &bar);
    bar.set_style(sending_style());
    bar.set_length(prepared.records.len() as u64);
    bar.set_position(0);
    let produced = produce(&producer, &prepared, &opts, &notes, &bar, &view).map(|mut p| {
        p.bad_lines = prepared.bad_lines;
        p.bad_line_samples = std::mem::take(&mut prepared.bad_line_samples);
        p.stopped_at_limit = prepared.stopped_at_limit;
        p
    });
    drop(prepared);
    // Every delivery report is in once the flush returns, so the reader learns
    // of every undelivered transfer before it gives up waiting.
    let flushed = producer.flush(opts.drain);
    let last_send = produced.as_ref().ok().and_then(|p| p.last_send).unwrap_or_else(Instant::now);
    let _ = notes.send(Note::Done { last_send });
    drop(notes);
    let sent = produced.as_ref().map(|p| p.transfers).unwrap_or(0);
    while !reader.is_finished() {
        let got = view.answered.load(Ordering::Relaxed);
        bar.set_message(format!("sent {sent}, answered {got}, draining"));
        std::thread::sleep(Duration::from_millis(50));
    }
    bar.finish_and_clear();
    let mut read = reader.join().map_err(|_| LoadError::ReaderPanicked)?;
    let produced = produced?;
    std::mem::replace(&mut read.written, Ok(()))?;
    if let Err(e) = flushed {
        tracing::warn!(error = %e, "the producer did not deliver everything within the drain");
    }

    let ctx = producer.context();
    let delivery_failures = ctx.failed.load(Ordering::Relaxed);
    let first_delivery_error = ctx.first_error.lock().map(|e| e.clone()).unwrap_or(None);
    Ok(report(&opts, inputs, produced, read, delivery_failures, first_delivery_error))
}

fn report(
    opts: &LoadOptions,
    inputs: Vec<String>,
    p: Produced,
    r: ReaderResult,
    delivery_failures: u64,
    first_delivery_error: Option<String>,
) -> LoadReport {
    let m = r.matcher;
    let t = &m.tally;
    let secs = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let send_s = secs(p.first_send, p.last_send);
    let last = match (p.last_send, m.last_answer) {
        (Some(s), Some(a)) => Some(s.max(a)),
        (s, a) => s.or(a),
    };
    let elapsed_s = secs(p.first_send, last);
    let answered_in = secs(p.first_send, m.last_answer);
    LoadReport {
        inputs,
        brokers: opts.connection.brokers.clone(),
        target_rate: opts.rate,
        speed: opts.speed,
        budget_ms: opts.budget.as_millis() as u64,
        drain_s: opts.drain.as_secs_f64(),
        transfers_sent: p.transfers,
        context_events_sent: p.context_events,
        labels_sent: p.labels,
        bad_lines: p.bad_lines,
        bad_line_samples: p.bad_line_samples,
        stopped_at_limit: p.stopped_at_limit,
        delivery_failures,
        transfers_not_delivered: t.retracted,
        first_delivery_error,
        queue_full_waits: p.queue_full_waits,
        max_in_flight: opts.max_in_flight,
        in_flight_waits: p.in_flight_waits,
        repeated_ids: t.repeated_ids,
        send_s,
        // Intervals between sends, so a paced run reports exactly its rate.
        sent_per_s: if p.transfers > 1 { (p.transfers - 1) as f64 / send_s.max(1e-9) } else { 0.0 },
        elapsed_s,
        decisions_per_s: if t.answered > 0 { t.answered as f64 / answered_in.max(1e-9) } else { 0.0 },
        decisions_received: t.answered,
        latency: latency_summary(&m.hist),
        missed_budget: t.missed_budget,
        never_answered: m.outstanding,
        late: t.late,
        allow: t.allow,
        hold: t.hold,
        other_decisions: t.other,
        duplicates: t.duplicates,
        contradictory: t.contradictory,
        redelivered: t.redelivered,
        unknown: t.unknown,
        unreadable: t.unreadable,
        consumer_errors: r.consumer_errors,
    }
}

/// What the producing side tells the decision reader, in send order.
#[derive(Debug)]
enum Note {
    /// A transfer is about to be handed to the producer. Sent before the
    /// transfer, so it is always queued before its decision can exist.
    Sent { id: Box<str>, at: Instant },
    /// The producer gave up on this transfer: do not wait for it.
    Failed { id: Box<str> },
    /// No more transfers; wait for the rest until `last_send` plus the drain.
    Done { last_send: Instant },
}

/// The producer's delivery reports: failures are counted, and failed
/// transfers (known by their correlation-id header) are taken off the list of
/// those waited for.
struct Delivery {
    notes: Sender<Note>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((e, msg)) = result else { return };
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                tracing::warn!(topic = msg.topic(), error = %e, "the producer gave up on a message");
                *first = Some(format!("{}: {e}", msg.topic()));
            }
        }
        let id = msg.headers().and_then(|h| {
            h.iter().find(|h| h.key == HEADER_CORRELATION_ID).and_then(|h| h.value).map(String::from_utf8_lossy)
        });
        if let Some(id) = id {
            let _ = self.notes.send(Note::Failed { id: id.into() });
        }
    }
}

/// A consumer assigned every partition of the decisions topic at its current
/// end, after checking that the brokers answer and every topic exists.
fn decision_reader(opts: &LoadOptions) -> Result<BaseConsumer, LoadError> {
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

/// What the producing side did.
#[derive(Debug, Default)]
struct Produced {
    transfers: u64,
    context_events: u64,
    labels: u64,
    bad_lines: u64,
    bad_line_samples: Vec<BadLine>,
    stopped_at_limit: bool,
    queue_full_waits: u64,
    in_flight_waits: u64,
    first_send: Option<Instant>,
    last_send: Option<Instant>,
}

/// What the decision reader publishes for the producing side, updated as it
/// takes in notes, matches answers and ages transfers out.
#[derive(Debug, Default)]
struct ReaderView {
    /// First answers matched, for the progress bar.
    answered: AtomicU64,
    /// [`Matcher::settled`]: of the transfers the reader has taken in, those
    /// that no longer hold an in-flight slot. One number rather than the pair
    /// (taken in, outstanding) it is computed from, so the producer can never
    /// read one half of the pair before an update and the other half after.
    settled: AtomicU64,
}

impl ReaderView {
    fn publish(&self, matcher: &Matcher) {
        self.answered.store(matcher.tally.answered, Ordering::Relaxed);
        self.settled.store(matcher.settled(), Ordering::Relaxed);
    }
}

/// Transfers holding an in-flight slot: the ones the reader has taken in and
/// not settled, plus the ones sent since that it has not taken in yet (they
/// are outstanding by definition). `sent - taken_in + (taken_in - settled)`.
fn in_flight(sent: u64, settled: u64) -> u64 {
    sent.saturating_sub(settled)
}

/// Wait, up to `max_wait`, until fewer than `max` transfers are in flight.
/// Returns whether the send had to wait at all.
///
/// The wait is bounded as a last resort: the reader ages out transfers
/// outstanding longer than the drain, but if it stalls, the load still goes on.
fn wait_for_slot(sent: u64, max: u64, max_wait: Duration, settled: impl Fn() -> u64) -> bool {
    if in_flight(sent, settled()) < max {
        return false;
    }
    let waiting = Instant::now();
    while in_flight(sent, settled()) >= max && waiting.elapsed() < max_wait {
        std::thread::sleep(Duration::from_micros(100));
    }
    true
}

/// Where a prepared event goes.
enum Route {
    /// A transfer, timed: its id is the correlation id the answer comes back under.
    Transfer {
        id: Box<str>,
    },
    Label,
    Context,
}

/// One event read, checked and serialized before the clock starts.
struct Outgoing {
    route: Route,
    /// The event's time, Unix ms (for `--speed`).
    time_ms: i64,
    key: Box<str>,
    /// The payload's bytes in [`Prepared::bytes`].
    payload: std::ops::Range<usize>,
}

/// The whole input, ready to send. Reading and serializing happen before the
/// first send, so the timed part of a load is the pipeline's work and not the
/// load's own file reading, which shares the machine with `fds run` when both
/// run on one host.
#[derive(Default)]
struct Prepared {
    records: Vec<Outgoing>,
    /// Every payload, back to back (one allocation instead of one per event).
    bytes: Vec<u8>,
    bad_lines: u64,
    bad_line_samples: Vec<BadLine>,
    stopped_at_limit: bool,
}

/// Read every source up to the transfer limit.
fn prepare(sources: Vec<Input>, limit: u64, bar: &ProgressBar) -> Prepared {
    let mut p = Prepared::default();
    let mut transfers = 0u64;
    let mut done_bytes = 0u64;
    'sources: for src in sources {
        for item in src.events {
            let event = match item {
                Ok((_, event)) => event,
                Err((line, reason)) => {
                    p.bad_lines += 1;
                    if p.bad_line_samples.len() < BAD_LINES_LISTED {
                        let reason = crate::event::mask_digit_runs(&reason);
                        p.bad_line_samples.push(BadLine { file: src.name.clone(), line, reason });
                    }
                    continue;
                }
            };
            let (route, key): (Route, Box<str>) = match &event {
                Event::Transfer(t) => {
                    if transfers >= limit {
                        p.stopped_at_limit = true;
                        break 'sources;
                    }
                    transfers += 1;
                    (Route::Transfer { id: t.bank_tran_id.as_str().into() }, t.fintech_use_num.as_str().into())
                }
                Event::Label(l) => (Route::Label, l.payee_key().into()),
                other => (Route::Context, other.account().unwrap_or_default().into()),
            };
            let start = p.bytes.len();
            event.write_json(&mut p.bytes);
            let time_ms = event.time().millis();
            p.records.push(Outgoing { route, time_ms, key, payload: start..p.bytes.len() });
            if p.records.len() % 4096 == 0 {
                bar.set_position(done_bytes + src.position.load(Ordering::Relaxed));
            }
        }
        done_bytes += src.size;
        bar.set_position(done_bytes);
    }
    p
}

fn produce(
    producer: &ThreadedProducer<Delivery>,
    prepared: &Prepared,
    opts: &LoadOptions,
    notes: &Sender<Note>,
    bar: &ProgressBar,
    view: &ReaderView,
) -> Result<Produced, LoadError> {
    let mut p = Produced::default();
    let pacer = opts.rate.map(|per_second| Pacer { per_second });
    let topics = &opts.topics;
    // With a speed: the first event's time and when it went. What follows
    // the last transfer (fraud reports, dated weeks later) goes at once:
    // nothing waits on it.
    let mut clock: Option<(i64, Instant)> = None;
    let last_transfer = prepared.records.iter().rposition(|r| matches!(r.route, Route::Transfer { .. }));
    for (n, record) in prepared.records.iter().enumerate() {
        let payload = &prepared.bytes[record.payload.clone()];
        if let (Some(factor), true) = (opts.speed, last_transfer.is_some_and(|last| n <= last)) {
            let (first_ms, started) = *clock.get_or_insert((record.time_ms, Instant::now()));
            let due = Duration::try_from_secs_f64((record.time_ms - first_ms).max(0) as f64 / 1e3 / factor)
                .unwrap_or(Duration::MAX);
            if let Some(wait) = due.checked_sub(started.elapsed()).filter(|d| !d.is_zero()) {
                std::thread::sleep(wait);
            }
        }
        match &record.route {
            Route::Transfer { id } => {
                if let (Some(pacer), Some(first)) = (pacer, p.first_send) {
                    if let Some(wait) = pacer.wait(p.transfers, first.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                let settled = || view.settled.load(Ordering::Relaxed);
                p.in_flight_waits += u64::from(wait_for_slot(p.transfers, opts.max_in_flight, opts.drain, settled));
                let deadline_ms = unix_ms() + opts.budget.as_millis() as u64;
                let headers = OwnedHeaders::new_with_capacity(2)
                    .insert(Header { key: HEADER_CORRELATION_ID, value: Some(id.as_ref()) })
                    .insert(Header { key: HEADER_DEADLINE_MS, value: Some(&deadline_ms.to_string()) });
                let at = Instant::now();
                let _ = notes.send(Note::Sent { id: id.clone(), at });
                p.first_send.get_or_insert(at);
                p.last_send = Some(at);
                p.queue_full_waits += send(producer, &topics.transfers, &record.key, payload, Some(headers))?;
                p.transfers += 1;
            }
            Route::Label => {
                p.queue_full_waits += send(producer, &topics.labels, &record.key, payload, None)?;
                p.labels += 1;
            }
            Route::Context => {
                p.queue_full_waits += send(producer, &topics.context_events, &record.key, payload, None)?;
                p.context_events += 1;
            }
        }
        if n % 256 == 0 {
            bar.set_position(n as u64);
            let got = view.answered.load(Ordering::Relaxed);
            bar.set_message(format!("sent {} transfers, answered {got}", p.transfers));
        }
    }
    bar.set_position(prepared.records.len() as u64);
    Ok(p)
}

/// Hand one message to the producer, waiting while its queue is full.
/// Returns how many times it had to wait.
fn send(
    producer: &ThreadedProducer<Delivery>,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<u64, LoadError> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    let mut waits = 0;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(waits),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                waits += 1;
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(LoadError::kafka(format!("cannot produce to {topic}"))(e)),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

struct ReaderResult {
    matcher: Matcher,
    consumer_errors: u64,
    /// Whether `--decisions-out` was written whole.
    written: Result<(), LoadError>,
}

/// The decision reader's loop: match every decision read until all transfers
/// are answered or the drain after the last send is over.
/// Where `--decisions-out` writes: each decision's bytes and a newline.
struct DecisionsOut {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    /// The first error, reported once at the end; writing stops there.
    failed: Option<std::io::Error>,
}

impl DecisionsOut {
    fn create(path: &std::path::Path) -> Result<Self, LoadError> {
        let file = std::fs::File::create(path)
            .map_err(|source| LoadError::DecisionsOut { path: path.to_path_buf(), source })?;
        Ok(DecisionsOut { path: path.to_path_buf(), file: std::io::BufWriter::new(file), failed: None })
    }

    fn write(&mut self, decision: &[u8]) {
        use std::io::Write;
        if self.failed.is_none() {
            if let Err(e) = self.file.write_all(decision).and_then(|()| self.file.write_all(b"\n")) {
                self.failed = Some(e);
            }
        }
    }

    fn finish(mut self) -> Result<(), LoadError> {
        use std::io::Write;
        let flushed = self.file.flush();
        match self.failed.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(source) => Err(LoadError::DecisionsOut { path: self.path, source }),
        }
    }
}

fn read_decisions(
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

/// The send schedule: transfer `n` (from 0) is due `n / per_second` after the
/// first, so one slow send delays nothing after it.
#[derive(Debug, Clone, Copy)]
struct Pacer {
    per_second: f64,
}

impl Pacer {
    fn due(self, n: u64) -> Duration {
        Duration::try_from_secs_f64(n as f64 / self.per_second).unwrap_or(Duration::MAX)
    }

    /// How long to sleep before transfer `n`, `elapsed` after the first;
    /// `None` when it is due or overdue.
    fn wait(self, n: u64, elapsed: Duration) -> Option<Duration> {
        self.due(n).checked_sub(elapsed).filter(|d| !d.is_zero())
    }
}

/// The `decision` field of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Allow,
    Hold,
    /// Missing (empty) or a value this load does not know.
    Other(Box<str>),
}

/// What a message on the decisions topic says, as far as matching goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadDecision {
    id: Option<String>,
    verdict: Verdict,
    late: bool,
    redelivered: bool,
}

/// The body fields matching needs; the rest of the decision is not looked at.
#[derive(Debug, Default, Deserialize)]
struct Body<'a> {
    #[serde(default, borrow)]
    bank_tran_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    decision: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    late: Option<bool>,
}

/// Read a decision from its headers, as the transfer API would: the
/// correlation-id and `fds-decision` headers carry all that matching needs.
/// The body is parsed only when one is missing (a producer that drops
/// headers); its `bank_tran_id` and `decision` are the fallback.
fn read_decision<'h>(
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

fn verdict_of(value: &str) -> Verdict {
    match value {
        "allow" => Verdict::Allow,
        "hold" => Verdict::Hold,
        other => Verdict::Other(other.into()),
    }
}

/// Counts kept while matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    answered: u64,
    missed_budget: u64,
    late: u64,
    allow: u64,
    hold: u64,
    other: u64,
    duplicates: u64,
    contradictory: u64,
    redelivered: u64,
    unknown: u64,
    unreadable: u64,
    repeated_ids: u64,
    retracted: u64,
}

/// A transfer sent, and its first answer once there is one (kept to tell a
/// repeated answer from a contradictory one).
#[derive(Debug)]
struct Pending {
    at: Instant,
    first: Option<Verdict>,
    /// Unanswered for longer than the slot timeout: still waited for, but no
    /// longer holding an in-flight slot.
    aged: bool,
}

/// Decisions matched to the transfers sent, by id.
#[derive(Debug)]
struct Matcher {
    budget: Duration,
    /// How long an unanswered transfer holds its in-flight slot (the drain:
    /// an answer slower than that would not be waited for at the end either).
    slot_timeout: Duration,
    sent: ahash::AHashMap<Box<str>, Pending>,
    /// Transfers in send order, by send time and id, for ageing them out. An
    /// entry may outlive its transfer (answered, or retracted and sent again).
    by_age: VecDeque<(Instant, Box<str>)>,
    /// Sent notes taken in, repeated ids included.
    taken_in: u64,
    /// Sent, delivered, not answered yet.
    outstanding: u64,
    /// Of `outstanding`, those past the slot timeout.
    aged: u64,
    /// End-to-end latency of first answers, in microseconds.
    hist: Histogram<u64>,
    tally: Tally,
    last_answer: Option<Instant>,
}

impl Matcher {
    fn new(budget: Duration, slot_timeout: Duration) -> Self {
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
    fn sent(&mut self, id: Box<str>, at: Instant) {
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
    fn settled(&self) -> u64 {
        self.taken_in - (self.outstanding - self.aged)
    }

    /// Free the slots of transfers unanswered for longer than the slot
    /// timeout. They still count as never answered if no answer comes, so a
    /// pipeline that drops transfers cannot stall the load for a drain per send.
    fn age(&mut self, now: Instant) {
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
    fn retract(&mut self, id: &str) {
        if let Some(p) = self.sent.get(id).filter(|p| p.first.is_none()) {
            self.aged -= u64::from(p.aged);
            self.sent.remove(id);
            self.outstanding -= 1;
            self.tally.retracted += 1;
        }
    }

    fn answer(&mut self, d: ReadDecision, at: Instant) {
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
fn latency_summary(hist: &Histogram<u64>) -> Latency {
    if hist.is_empty() {
        return Latency::default();
    }
    let q = |q: f64| hist.value_at_quantile(q) as f64;
    Latency { p50_us: q(0.50), p99_us: q(0.99), p999_us: q(0.999), max_us: hist.max() as f64, mean_us: hist.mean() }
}

impl LoadReport {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let w = &mut s;
        let pace = match (self.target_rate, self.speed) {
            (Some(r), _) => format!("{r} transfers/s"),
            (None, Some(f)) => format!("recorded times sped up {f}x"),
            (None, None) => "as fast as possible".to_owned(),
        };
        let _ = writeln!(w, "fds load: {} -> {}", self.inputs.join(", "), self.brokers);
        let _ = writeln!(w, "  pace {pace}, budget {} ms, drain {} s", self.budget_ms, self.drain_s);
        let _ = writeln!(
            w,
            "  sent transfers {}, context events {}, labels {}; bad lines {}",
            self.transfers_sent, self.context_events_sent, self.labels_sent, self.bad_lines
        );
        for b in &self.bad_line_samples {
            let _ = writeln!(w, "    {}:{}: {}", b.file, b.line, b.reason);
        }
        if self.bad_lines as usize > self.bad_line_samples.len() {
            let _ = writeln!(w, "    ... {} more", self.bad_lines as usize - self.bad_line_samples.len());
        }
        if self.stopped_at_limit {
            let _ = writeln!(w, "  stopped at the transfer limit");
        }
        if self.delivery_failures > 0 {
            let _ = writeln!(
                w,
                "  NOT DELIVERED: {} messages ({} transfers, not waited for); first: {}",
                self.delivery_failures,
                self.transfers_not_delivered,
                self.first_delivery_error.as_deref().unwrap_or("?")
            );
        }
        if self.in_flight_waits > 0 {
            let _ = writeln!(
                w,
                "  in flight: at most {} transfers awaiting an answer; sends waited {} times",
                self.max_in_flight, self.in_flight_waits
            );
        }
        if self.queue_full_waits > 0 {
            let _ = writeln!(w, "  producer queue full: waited {} times", self.queue_full_waits);
        }
        if self.repeated_ids > 0 {
            let _ = writeln!(w, "  transfer ids repeated in the input: {}", self.repeated_ids);
        }
        let _ = writeln!(w, "\nsending     {:.0} transfers/s over {:.2} s", self.sent_per_s, self.send_s);
        let _ = writeln!(
            w,
            "decisions   {} of {} transfers, {:.0} decisions/s over {:.2} s",
            self.decisions_received, self.transfers_sent, self.decisions_per_s, self.elapsed_s
        );
        let l = &self.latency;
        let ms = |us: f64| us / 1000.0;
        let _ = writeln!(
            w,
            "end to end  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (mean {:.2} ms)",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            ms(l.mean_us)
        );
        let _ = writeln!(
            w,
            "budget      missed by {} answers ({:.2}%), marked late by fds {}, never answered within the drain {}",
            self.missed_budget,
            100.0 * self.missed_budget as f64 / self.decisions_received.max(1) as f64,
            self.late,
            self.never_answered
        );
        let _ = writeln!(w, "answers     allow {}  hold {}  other {}", self.allow, self.hold, self.other_decisions);
        let _ = writeln!(
            w,
            "anomalies   duplicates {} (contradictory {}), redelivered {}, unknown ids {}, unreadable {}",
            self.duplicates, self.contradictory, self.redelivered, self.unknown, self.unreadable
        );
        if self.consumer_errors > 0 {
            let _ = writeln!(w, "  errors reading decisions: {}", self.consumer_errors);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(id: &str, verdict: &str) -> ReadDecision {
        let body = format!(r#"{{"schema_version":1,"bank_tran_id":"{id}","decision":"{verdict}","late":false}}"#);
        read_decision([], Some(body.as_bytes()))
    }

    #[test]
    fn pacing_follows_the_schedule_without_drift() {
        let p = Pacer { per_second: 1000.0 };
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(1500), Duration::from_millis(1500));
        // Ahead of schedule: sleep the difference.
        assert_eq!(p.wait(10, Duration::from_millis(4)), Some(Duration::from_millis(6)));
        // Behind: send at once, and the next transfer is still due on the
        // original schedule, not one interval after the late send.
        assert_eq!(p.wait(10, Duration::from_millis(25)), None);
        assert_eq!(p.wait(30, Duration::from_millis(25)), Some(Duration::from_millis(5)));
        assert_eq!(p.wait(10, Duration::from_millis(10)), None);
    }

    #[test]
    fn reads_the_header_first_and_falls_back_to_the_body() {
        let body = br#"{"schema_version":1,"bank_tran_id":"B1","decision":"hold","late":true,"score":3}"#;
        let d = read_decision([("correlation-id", Some(&b"H1"[..]))], Some(&body[..]));
        assert_eq!(d, ReadDecision { id: Some("H1".into()), verdict: Verdict::Hold, late: true, redelivered: false });
        let d = read_decision([("fds-late", Some(&b"true"[..])), ("fds-redelivered", Some(&b"true"[..]))], None);
        assert_eq!(d.id, None);
        assert!(d.late && d.redelivered);
        assert_eq!(d.verdict, Verdict::Other("".into()));
        let d = read_decision([("correlation-id", Some(&b""[..]))], Some(&br#"{"bank_tran_id":"B2"}"#[..]));
        assert_eq!(d.id.as_deref(), Some("B2"));
        assert_eq!(read_decision([], Some(&b"not json"[..])).id, None);
        // With the correlation id and the verdict in headers the body is not read.
        let both = [("correlation-id", Some(&b"H3"[..])), ("fds-decision", Some(&b"hold"[..]))];
        let d = read_decision(both, Some(&b"not json"[..]));
        assert_eq!(d, ReadDecision { id: Some("H3".into()), verdict: Verdict::Hold, late: false, redelivered: false });
        let d = read_decision([("fds-decision", Some(&b"allow"[..]))], Some(&body[..]));
        assert_eq!((d.id.as_deref(), d.verdict), (Some("B1"), Verdict::Allow), "the header's verdict wins");
    }

    #[test]
    fn matches_first_answers_and_counts_duplicates_apart() {
        let t0 = Instant::now();
        let mut m = Matcher::new(Duration::from_millis(200), Duration::from_secs(10));
        for id in ["A", "B", "C", "D"] {
            m.sent(id.into(), t0);
        }
        m.sent("A".into(), t0 + Duration::from_secs(1));
        assert_eq!(m.tally.repeated_ids, 1);
        assert_eq!(m.outstanding, 4);

        m.answer(decision("A", "allow"), t0 + Duration::from_millis(5));
        m.answer(decision("B", "hold"), t0 + Duration::from_millis(300));
        m.answer(decision("A", "allow"), t0 + Duration::from_millis(6));
        m.answer(decision("B", "allow"), t0 + Duration::from_millis(7));
        m.answer(decision("Z", "allow"), t0 + Duration::from_millis(8));
        m.answer(read_decision([], Some(&b"{}"[..])), t0);
        m.retract("D");
        m.retract("A"); // answered already: not retracted

        let t = &m.tally;
        assert_eq!((t.answered, t.allow, t.hold), (2, 1, 1));
        assert_eq!((t.duplicates, t.contradictory), (2, 1));
        assert_eq!((t.unknown, t.unreadable, t.retracted), (1, 1, 1));
        assert_eq!(t.missed_budget, 1);
        assert_eq!(m.outstanding, 1, "C never answered");
        assert_eq!(m.hist.len(), 2, "duplicates and unknown ids stay out of latency");
        assert_eq!(m.last_answer, Some(t0 + Duration::from_millis(300)));
    }

    #[test]
    fn in_flight_counts_only_transfers_still_waited_for() {
        let t0 = Instant::now();
        let mut m = Matcher::new(Duration::from_millis(200), Duration::from_secs(10));
        for id in ["A", "B", "C", "D"] {
            m.sent(id.into(), t0);
        }
        m.sent("A".into(), t0); // a repeated id holds no second slot
        m.retract("D"); // never delivered: not waited for
        m.answer(decision("A", "allow"), t0);
        // Seven sent, five of them taken in by the reader: B and C are
        // outstanding, the two not taken in yet are in flight too. Counting
        // sent minus answered would say 6.
        assert_eq!(in_flight(7, m.settled()), 4);
        assert_eq!(m.outstanding, 2);
        m.answer(decision("B", "hold"), t0);
        m.answer(decision("B", "hold"), t0); // a duplicate frees nothing more
        assert_eq!(in_flight(7, m.settled()), 3);
    }

    #[test]
    fn transfers_unanswered_past_the_drain_free_their_slot() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut m = Matcher::new(ms(200), Duration::from_secs(1));
        m.sent("A".into(), t0);
        m.sent("B".into(), t0 + ms(100));
        m.age(t0 + ms(999));
        assert_eq!(m.settled(), 0);
        m.age(t0 + ms(1000));
        assert_eq!((m.settled(), m.outstanding), (1, 2), "A aged out, still waited for");
        m.age(t0 + ms(1100));
        assert_eq!(m.settled(), 2);
        // A late answer or a failed delivery frees nothing twice.
        m.answer(decision("A", "allow"), t0 + ms(1200));
        m.retract("B");
        assert_eq!((m.settled(), m.outstanding, m.aged), (2, 0, 0));
        assert_eq!(m.tally.answered, 1);

        // Retracted, then sent again: the new send ages from its own time.
        m.sent("C".into(), t0);
        m.retract("C");
        m.sent("C".into(), t0 + ms(900));
        m.age(t0 + ms(1500));
        assert_eq!(m.aged, 0);
        m.age(t0 + ms(1900));
        assert_eq!(m.aged, 1);
    }

    #[test]
    fn a_send_that_waits_for_a_slot_counts_once() {
        assert!(!wait_for_slot(9, 10, Duration::from_secs(10), || 0), "a free slot: no wait");
        // The slot frees after a few checks: one wait, however many checks.
        let checks = std::cell::Cell::new(0);
        let settled = || {
            checks.set(checks.get() + 1);
            if checks.get() > 5 {
                1
            } else {
                0
            }
        };
        assert!(wait_for_slot(10, 10, Duration::from_secs(10), settled));
        assert_eq!(checks.get(), 6);
        // No slot ever frees: the wait ends after `max_wait`.
        let start = Instant::now();
        assert!(wait_for_slot(10, 10, Duration::from_millis(20), || 0));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn summarizes_microsecond_percentiles() {
        assert_eq!(latency_summary(&Histogram::new(3).unwrap()).p99_us, 0.0);
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
        for us in 1..=1000 {
            h.record(us * 1000).unwrap();
        }
        let l = latency_summary(&h);
        let near = |got: f64, want: f64| (got - want).abs() / want < 0.002;
        assert!(near(l.p50_us, 500_000.0), "{l:?}");
        assert!(near(l.p99_us, 990_000.0), "{l:?}");
        assert!(near(l.p999_us, 999_000.0), "{l:?}");
        assert!(near(l.max_us, 1_000_000.0), "{l:?}");
        assert!(near(l.mean_us, 500_500.0), "{l:?}");
    }

    #[test]
    fn renders_a_report() {
        let opts = LoadOptions::new(vec![], Connection::new("127.0.0.1:9092"), Topics::default());
        let r = report(
            &opts,
            vec!["x.jsonl".into()],
            Produced { transfers: 2, ..Produced::default() },
            ReaderResult { matcher: Matcher::new(opts.budget, opts.drain), consumer_errors: 0, written: Ok(()) },
            0,
            None,
        );
        let text = r.render();
        assert!(text.contains("decisions   0 of 2 transfers"), "{text}");
        assert!(text.contains("as fast as possible"), "{text}");
    }
}
