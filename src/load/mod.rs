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
//!
//! Two threads, one room each: `produce` reads, serializes and sends, and
//! notes each transfer just before it is handed to the producer; `answers`
//! reads the decisions topic and matches each answer to its note. This
//! module starts both and turns what they counted into a [`LoadReport`].

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

mod answers;
mod produce;

use answers::*;
use produce::*;

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
