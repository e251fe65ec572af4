//! Replay: recorded event streams through the engine, with a report.
//!
//! This module owns running recorded streams (opened by [`crate::input`])
//! through the engine and measuring what it did with them: throughput, per-transfer engine latency percentiles, decisions, how often each
//! rule fired and, when the stream carries labels, detection quality per fraud
//! typology.
//!
//! Guarantees:
//! - **Bad input never stops a replay.** A malformed line, an unknown event type
//!   or an invalid amount is counted and reported with its file, line number and
//!   reason; the replay goes on. Nothing panics on input.
//! - **Deterministic, and the same as live.** Events are fed on one thread in
//!   the order `fds run` handles them ([`crate::input::order`]): file order,
//!   with each run of equal event time sorted the way the live merge of
//!   partitions sorts it, on as many partitions as [`ReplayOptions::partitions`]
//!   says. The same files give the same decisions, and a live run on a backlog
//!   of the same events gives them too; [`ReplayReport::decisions_digest`]
//!   hashes them (latency excluded) so two runs can be compared at a glance.
//! - **Labels are ground truth, read late.** Detection quality uses each
//!   transfer's *final* label (a report later cleared counts as genuine); the
//!   engine itself sees labels only when they arrive in the stream.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

mod instances;
mod record;

pub use instances::{compare, owner, Instances, ScaleOut, TypologyRecall};
pub(crate) use record::Recorder;

use crate::engine::Engine;
use crate::event::Event;
use crate::input::{BadLine, Input, InputError};
use crate::state::MemoryReport;

/// Why a replay could not run.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input could not be opened.
    #[error(transparent)]
    Input(#[from] InputError),
    /// `--decisions-out` could not be written.
    #[error("cannot write decisions: {0}")]
    Output(std::io::Error),
}

/// How to replay.
#[allow(missing_debug_implementations)] // holds a boxed writer for the decisions: nothing to print
#[derive(Default)]
pub struct ReplayOptions {
    /// Replay at the recorded pace, sped up by this factor (1.0 = real time).
    pub pace: Option<f64>,
    /// Stop after this many events (all inputs together).
    pub limit: Option<u64>,
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Write every decision here as a JSON line.
    pub decisions_out: Option<Box<dyn Write + Send>>,
    /// The first stretch of event time only builds state: those transfers are
    /// scored (and timed) but left out of decision counts and detection quality,
    /// as a bank warms a new engine on history before trusting its numbers.
    pub warmup: Duration,
    /// Order the events as a live run on this many partitions of
    /// `transfers` and `context-events` would (0 is taken as 1).
    pub partitions: u32,
    /// Keep each transfer's decision in [`ReplayReport::outcomes`], to
    /// compare two replays transfer by transfer.
    pub keep_outcomes: bool,
}

/// Engine latency per transfer, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The slowest transfer.
    pub max_us: f64,
    /// The mean.
    pub mean_us: f64,
}

/// How often one rule fired.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCount {
    /// The rule's id.
    pub id: String,
    /// The reason code it gives.
    pub reason: String,
    /// The analysts' label (Korean).
    pub label: String,
    /// Shadow rules are reported, never acted on.
    pub shadow: bool,
    /// Transfers it fired on (warm-up excluded).
    pub fired: u64,
    /// Of those, on transfers labelled fraud (when the stream has labels).
    pub fired_on_fraud: u64,
}

/// Detection on one typology.
#[derive(Debug, Clone, Serialize)]
pub struct TypologyQuality {
    /// The label's typology string.
    pub typology: String,
    /// Fraudulent transfers of this typology.
    pub frauds: u64,
    /// Of those, held.
    pub held: u64,
    /// `held / frauds`.
    pub recall: f64,
    /// Won in those frauds.
    pub fraud_won: i64,
    /// Won in the held ones.
    pub saved_won: i64,
}

/// Detection quality against the stream's labels.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Transfers whose final label is fraud.
    pub frauds: u64,
    /// All other transfers.
    pub genuine: u64,
    /// Frauds held.
    pub held_fraud: u64,
    /// Genuine transfers held.
    pub held_genuine: u64,
    /// Held frauds / all frauds.
    pub recall: f64,
    /// Held frauds / all holds.
    pub precision: f64,
    /// Held genuine transfers / genuine transfers: the friction customers feel.
    pub hold_rate_genuine: f64,
    /// Won in fraudulent transfers, and the part of it held.
    pub fraud_won: i64,
    /// See `fraud_won`.
    pub saved_won: i64,
    /// Won in genuine transfers that were held (delayed for verification).
    pub held_genuine_won: i64,
    /// Labels naming a transfer the replay never saw.
    pub unmatched_labels: u64,
    /// The same, per typology, sorted by name.
    pub by_typology: Vec<TypologyQuality>,
}

/// Everything a replay measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The files replayed, in order.
    pub inputs: Vec<String>,
    /// Events read (bad lines excluded).
    pub events: u64,
    /// Transfers scored, warm-up included.
    pub transfers: u64,
    /// Context events applied.
    pub context_events: u64,
    /// Fraud reports applied.
    pub labels: u64,
    /// Lines that were not events.
    pub bad_lines: u64,
    /// The first few of them, with file, line and reason.
    pub bad_line_samples: Vec<BadLine>,
    /// Transfers scored during the warm-up and left out of the counts below.
    pub warmup_transfers: u64,
    /// The replay stopped at `--limit`: labels due after that point never
    /// arrived, so detection quality undercounts fraud.
    pub stopped_at_limit: bool,
    /// Wall-clock seconds for the whole replay.
    pub elapsed_s: f64,
    /// Events per second over `elapsed_s`, parsing included.
    pub events_per_s: f64,
    /// Engine time per transfer.
    pub latency: Latency,
    /// Allowed transfers (after the warm-up).
    pub allow: u64,
    /// Held transfers (after the warm-up).
    pub hold: u64,
    /// Holds by the verification asked for (`ars`, `callback`, `delay`).
    pub holds_by_verification: BTreeMap<String, u64>,
    /// How often each rule fired, in rule-set order.
    pub rules: Vec<RuleCount>,
    /// Detection quality, when the stream carries labels.
    pub quality: Option<Quality>,
    /// The state's size at the end.
    pub state: MemoryReport,
    /// The rule set running at the start.
    pub ruleset_version: String,
    /// The model scoring beside the rules at the start (`None`: rules alone).
    pub model_version: Option<String>,
    /// Every rule set that made decisions, in order (more than one when rules
    /// were reloaded during a paced replay).
    pub ruleset_versions: Vec<String>,
    /// SHA-256 (first 16 hex digits) over every decision without its latency.
    pub decisions_digest: String,
    /// Per transfer (by [`tx_key`]), whether it was held and a hash of its
    /// decision without latency, when [`ReplayOptions::keep_outcomes`] asked.
    #[serde(skip)]
    pub outcomes: HashMap<u64, (bool, u64)>,
    /// Per transfer (by [`tx_key`]), its final label's typology when fraud.
    #[serde(skip)]
    pub frauds: HashMap<u64, String>,
}

/// A 64-bit key for a transfer id: 10M transfers fit in a few hundred MB this
/// way; a collision (odds about 1 in 10^5 at 10M ids) can only misattribute
/// one label in the quality report, never a decision.
pub fn tx_key(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Replay `sources` through `engine`, in order, and report.
pub fn run(engine: &Engine, sources: Vec<Input>, opts: ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let mut one = Instances::new(std::slice::from_ref(engine), opts.partitions, 0);
    run_instances(&mut one, sources, opts)
}

/// Replay `sources` through a group of instances ([`Instances`]), in order,
/// and report on them together.
pub fn run_instances(
    instances: &mut Instances<'_>,
    sources: Vec<Input>,
    mut opts: ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let inputs: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let total_bytes: u64 = sources.iter().map(|s| s.size).sum();
    let bar = progress_bar(opts.progress, total_bytes);
    let first = instances.first();
    let mut recorder =
        Recorder::new(inputs, first.rules(), first.model(), opts.keep_outcomes, opts.decisions_out.take());
    let started = Instant::now();
    let mut first_event_ms: Option<i64> = None;
    let mut warmup = Warmup::new(opts.warmup);
    let mut done_bytes = 0u64;
    let limit = opts.limit.unwrap_or(u64::MAX);

    'sources: for src in sources {
        for item in crate::input::order::in_order(src.events, opts.partitions) {
            if recorder.seen() >= limit {
                recorder.stopped_at_limit();
                break 'sources;
            }
            let (line, event) = match item {
                Ok(numbered) => numbered,
                Err((line, reason)) => {
                    recorder.bad_line(&src.name, line, reason);
                    continue;
                }
            };
            if let Some(speed) = opts.pace {
                pace(&mut first_event_ms, event.time().millis(), started, speed);
            }
            let counted = warmup.counts(&event);
            match instances.process(&event) {
                Ok(scored) => recorder.event(&event, scored.as_ref(), counted)?,
                Err(e) => recorder.bad_line(&src.name, line, e.to_string()),
            }
            if recorder.events() % 4096 == 0 {
                bar.set_position(done_bytes + src.position.load(Ordering::Relaxed));
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{:.0} events/s", recorder.events() as f64 / secs));
            }
        }
        done_bytes += src.size;
    }
    bar.finish_and_clear();
    recorder.finish(started.elapsed().as_secs_f64(), instances.memory())
}

/// The warm-up: the first stretch of event time, from the first event on,
/// whose transfers only build state. Replays, backtests and the training
/// data (`model::dataset`) all count from it alike.
pub(crate) struct Warmup {
    length_ms: i64,
    until_ms: Option<i64>,
}

impl Warmup {
    pub(crate) fn new(length: Duration) -> Warmup {
        Warmup { length_ms: i64::try_from(length.as_millis()).unwrap_or(i64::MAX), until_ms: None }
    }

    /// Whether `event`'s decision counts (it is past the warm-up).
    pub(crate) fn counts(&mut self, event: &Event) -> bool {
        let time = event.time().millis();
        time >= *self.until_ms.get_or_insert(time.saturating_add(self.length_ms))
    }
}

pub(crate) fn frac(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub(crate) fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Sleep until `event_ms` is due at `speed` times the recorded pace.
fn pace(first: &mut Option<i64>, event_ms: i64, started: Instant, speed: f64) {
    let first_ms = *first.get_or_insert(event_ms);
    let due = Duration::from_secs_f64(((event_ms - first_ms).max(0) as f64 / 1000.0) / speed.max(1e-9));
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
}

pub(crate) fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} replay [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

impl ReplayReport {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        use std::fmt::Write as _;
        let _ = writeln!(w, "fds replay: {}", self.inputs.join(", "));
        let model = self.model_version.as_deref().unwrap_or("none (rules alone)");
        let _ = writeln!(
            w,
            "  rule set {}   model {}   decisions digest {}",
            self.ruleset_version, model, self.decisions_digest
        );
        if self.ruleset_versions.len() > 1 {
            let _ = writeln!(w, "  rules reloaded during the replay: {}", self.ruleset_versions.join(" -> "));
        }
        let _ = writeln!(
            w,
            "  events {} (transfers {}, context {}, labels {}), bad lines {}",
            self.events, self.transfers, self.context_events, self.labels, self.bad_lines
        );
        for b in &self.bad_line_samples {
            let _ = writeln!(w, "    {}:{}: {}", b.file, b.line, b.reason);
        }
        if self.bad_lines as usize > self.bad_line_samples.len() {
            let _ = writeln!(w, "    ... {} more", self.bad_lines as usize - self.bad_line_samples.len());
        }
        if self.warmup_transfers > 0 {
            let _ = writeln!(
                w,
                "  warm-up: the first {} transfers built state and are left out of the counts below",
                self.warmup_transfers
            );
        }
        let _ = writeln!(
            w,
            "\nthroughput  {:.0} events/s over {:.2} s (one thread, parsing included)",
            self.events_per_s, self.elapsed_s
        );
        let l = &self.latency;
        let _ = writeln!(
            w,
            "engine latency per transfer  p50 {:.2} us  p99 {:.2} us  p99.9 {:.2} us  max {:.1} us",
            l.p50_us, l.p99_us, l.p999_us, l.max_us
        );
        let _ = writeln!(
            w,
            "\ndecisions  allow {}  hold {}  ({:.2}% held)",
            self.allow,
            self.hold,
            100.0 * frac(self.hold, self.transfers)
        );
        for (v, n) in &self.holds_by_verification {
            let _ = writeln!(w, "  hold/{v:<9} {n}");
        }
        if !self.rules.is_empty() {
            let _ = writeln!(w, "\nrules (fired / of which fraud)");
            for r in &self.rules {
                let tag = if r.shadow { " [shadow]" } else { "" };
                let _ = writeln!(
                    w,
                    "  {:<8} {:>7} / {:<7} {}{}  {}",
                    r.reason, r.fired, r.fired_on_fraud, r.id, tag, r.label
                );
            }
        }
        if let Some(q) = &self.quality {
            let _ = writeln!(w, "\ndetection quality (against the stream's labels)");
            if self.stopped_at_limit {
                let _ = writeln!(
                    w,
                    "  stopped at --limit: labels due later never arrived, so fraud near the end counts as genuine"
                );
            }
            let _ = writeln!(
                w,
                "  frauds {}  held {}  recall {:.1}%   precision of holds {:.1}%   hold rate on genuine {:.3}%",
                q.frauds,
                q.held_fraud,
                100.0 * q.recall,
                100.0 * q.precision,
                100.0 * q.hold_rate_genuine
            );
            let _ = writeln!(
                w,
                "  money: fraud {} won, saved {} won ({:.1}%); genuine money held for verification {} won",
                group(q.fraud_won),
                group(q.saved_won),
                100.0 * q.saved_won as f64 / q.fraud_won.max(1) as f64,
                group(q.held_genuine_won)
            );
            let _ = writeln!(
                w,
                "  {:<32} {:>7} {:>7} {:>8} {:>18} {:>18}",
                "typology", "frauds", "held", "recall", "fraud won", "saved won"
            );
            for t in &q.by_typology {
                let _ = writeln!(
                    w,
                    "  {:<32} {:>7} {:>7} {:>7.1}% {:>18} {:>18}",
                    t.typology,
                    t.frauds,
                    t.held,
                    100.0 * t.recall,
                    group(t.fraud_won),
                    group(t.saved_won)
                );
            }
            if q.unmatched_labels > 0 {
                let _ = writeln!(w, "  labels naming unseen transfers: {}", q.unmatched_labels);
            }
        }
        let m = &self.state;
        let _ = writeln!(
            w,
            "\nstate  accounts {} ({} B each)  payees {} ({} B each)  devices {} ({} B each)  total {:.1} MiB",
            m.accounts,
            m.bytes_per_account(),
            m.payees,
            m.bytes_per_payee(),
            m.devices,
            m.bytes_per_device(),
            m.total_bytes() as f64 / (1 << 20) as f64
        );
        s
    }
}

/// 1234567 -> "1,234,567".
pub(crate) fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(-1000), "-1,000");
    }
}
