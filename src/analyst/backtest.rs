//! Backtest: what a rule change would have done to recorded traffic.
//!
//! One pass over the stream feeds every event to two engines, the baseline
//! (the rules in force) and the candidate (the draft, or the baseline with a
//! shadow rule promoted). Each keeps its own state, because decisions feed
//! the state back (a held transfer teaches the account no new payee and
//! starts `mins_since_hold`), so each side evolves exactly as it would have
//! live; parsing and ordering are done once for both. Each side is counted by
//! the replay's `Recorder`, so its figures are the ones `fds replay` would
//! print for that rule set alone, and the two decisions of every transfer
//! are compared as they are made.
//!
//! Guarantees: deterministic (event time only); both sides see the same
//! events in the same order ([`crate::input::order`], as `fds run`); the
//! transfers listed as changed are exactly those whose outcome or
//! verification differs, each with the reasons on both sides and, once the
//! stream's fraud reports are in, whether it was fraud.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{Decision, Engine};
use crate::event::Event;
use crate::input::Input;
use crate::replay::{group, tx_key, Recorder, ReplayError, ReplayReport, Warmup};
use crate::rules::RuleChanges;

/// How many changed transfers of each direction the report lists.
pub const SAMPLE_PER_DIRECTION: usize = 10;

/// How to backtest.
#[allow(missing_debug_implementations)] // holds a boxed writer for the changes: nothing to print
#[derive(Default)]
pub struct BacktestOptions {
    /// The first stretch of event time only builds state (see
    /// [`crate::replay::ReplayOptions::warmup`]); its transfers are not compared.
    pub warmup: Duration,
    /// Order the events as a live run on this many partitions would (0 is 1).
    pub partitions: u32,
    /// Stop after this many input records.
    pub limit: Option<u64>,
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Write every changed transfer here as a JSON line.
    pub changes_out: Option<Box<dyn Write + Send>>,
}

/// One side's decision on a changed transfer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verdict {
    /// `allow` or `hold`.
    pub decision: &'static str,
    /// The verification a hold asks for.
    pub verification: Option<&'static str>,
    /// Reason codes of the live rules that fired, then the model's.
    pub reasons: Vec<String>,
    /// The live score rules' total.
    pub score: i32,
}

impl Verdict {
    fn of(d: &Decision) -> Verdict {
        Verdict {
            decision: d.outcome.name(),
            verification: d.verification.map(|v| v.name()),
            reasons: d.reason_codes().map(str::to_owned).collect(),
            score: d.score,
        }
    }
}

/// Which way a transfer's decision moved from baseline to candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Allowed by the baseline, held by the candidate.
    AllowToHold,
    /// Held by the baseline, allowed by the candidate.
    HoldToAllow,
    /// Held by both, with another verification.
    Verification,
}

impl Direction {
    /// Every direction, in the report's order.
    pub const ALL: [Direction; 3] = [Direction::AllowToHold, Direction::HoldToAllow, Direction::Verification];

    /// How the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::AllowToHold => "allow -> hold",
            Direction::HoldToAllow => "hold -> allow",
            Direction::Verification => "hold -> hold, other verification",
        }
    }

    fn of(baseline: &Decision, candidate: &Decision) -> Option<Direction> {
        match (baseline.verification, candidate.verification) {
            (None, Some(_)) => Some(Direction::AllowToHold),
            (Some(_), None) => Some(Direction::HoldToAllow),
            (Some(a), Some(b)) if a != b => Some(Direction::Verification),
            _ => None,
        }
    }
}

/// A transfer the candidate decides differently.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The transfer's id.
    pub bank_tran_id: String,
    /// Its time, KST (`YYYY-MM-DD HH:MM:SS`).
    pub time: String,
    /// Its amount in won.
    pub amount: i64,
    /// Which way the decision moved.
    pub direction: Direction,
    /// The typology of its final fraud report; `None`: genuine.
    pub fraud: Option<String>,
    /// What the baseline decided.
    pub baseline: Verdict,
    /// What the candidate decided.
    pub candidate: Verdict,
}

/// Changed transfers of one direction.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangeCount {
    /// Transfers.
    pub transfers: u64,
    /// Of those, labelled fraud.
    pub fraud: u64,
    /// Won in them.
    pub won: i64,
    /// Won in the fraudulent ones.
    pub fraud_won: i64,
}

/// Everything a backtest measured.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// The rules in force, as `fds replay` would report them.
    pub baseline: ReplayReport,
    /// The draft.
    pub candidate: ReplayReport,
    /// Shadow rules the candidate runs live.
    pub promoted: Vec<String>,
    /// What differs between the two rule sets, by rule id.
    pub rule_changes: RuleChanges,
    /// Wall-clock seconds for the whole backtest.
    pub elapsed_s: f64,
    /// Events per second over `elapsed_s` (each event through both engines).
    pub events_per_s: f64,
    /// Changed transfers by direction, in [`Direction::ALL`] order (warm-up left out).
    pub changed: Vec<(Direction, ChangeCount)>,
    /// Transfers decided alike but with other reasons (a score rule added or
    /// gone without moving the decision).
    pub reasons_only: u64,
    /// The first [`SAMPLE_PER_DIRECTION`] changes of each direction.
    pub sample: Vec<Change>,
}

impl BacktestReport {
    /// All changed transfers.
    pub fn changed_transfers(&self) -> u64 {
        self.changed.iter().map(|(_, c)| c.transfers).sum()
    }
}

/// Events handed to the candidate's thread at a time: large enough that the
/// hand-over costs nothing per event, small enough to stay in cache.
const BATCH: usize = 2048;

/// One input record as read: an event with its line and whether it counts
/// (past the warm-up), or a bad line's reason.
type Item = (u64, Result<(Event, bool), String>);

/// What one engine made of a batch: per event, the decision (transfers) or
/// why it was refused.
type Decided = Vec<Result<Option<Decision>, String>>;

/// Replay `sources` once through `baseline` and `candidate` and compare.
///
/// The candidate runs on a thread of its own, a batch behind the reader: the
/// main thread reads and orders the events, runs the baseline on them and
/// hands each batch over, so the backtest takes about as long as one replay
/// when a second core is free. Each side is counted on its own thread.
pub fn run(
    baseline: &Engine,
    candidate: &Engine,
    promoted: Vec<String>,
    sources: Vec<Input>,
    mut opts: BacktestOptions,
) -> Result<BacktestReport, ReplayError> {
    let inputs: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let total_bytes: u64 = sources.iter().map(|s| s.size).sum();
    let bar = crate::replay::progress_bar(opts.progress, total_bytes);
    let rule_changes = candidate.rules().load().changes_since(&baseline.rules().load());
    let mut base = Recorder::new(inputs.clone(), baseline.rules(), baseline.model(), false, None);
    let cand = Recorder::new(inputs, candidate.rules(), candidate.model(), false, None);
    let mut changes: Vec<(u64, Change)> = Vec::new();
    let mut reasons_only = 0u64;
    let mut warmup = Warmup::new(opts.warmup);
    let limit = opts.limit.unwrap_or(u64::MAX);
    let started = Instant::now();
    let cand = std::thread::scope(|scope| -> Result<Recorder, ReplayError> {
        // Both ends live in this closure: whichever way it returns (a side's
        // error included), they are dropped before the scope waits for the
        // candidate's thread, so that thread never blocks on a full channel.
        let (to_candidate, batches) = std::sync::mpsc::sync_channel::<(String, Arc<Vec<Item>>)>(2);
        let (to_main, decided) = std::sync::mpsc::sync_channel::<Decided>(2);
        let worker = scope.spawn(move || -> Result<Recorder, ReplayError> {
            let mut cand = cand;
            for (file, batch) in batches {
                let mut out = Vec::with_capacity(batch.len());
                for (line, item) in batch.iter() {
                    out.push(side(candidate, &mut cand, &file, *line, item)?);
                }
                if to_main.send(out).is_err() {
                    break;
                }
            }
            Ok(cand)
        });
        let mut read = 0u64;
        let mut done_bytes = 0u64;
        let mut pending = std::collections::VecDeque::new();
        let mut stopped = false;
        'sources: for src in sources {
            let mut events = crate::input::order::in_order(src.events, opts.partitions);
            loop {
                let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
                for item in events.by_ref().take(BATCH) {
                    if read >= limit {
                        stopped = true;
                        break;
                    }
                    read += 1;
                    batch.push(match item {
                        Ok((line, event)) => {
                            let counted = warmup.counts(&event);
                            (line, Ok((event, counted)))
                        }
                        Err((line, reason)) => (line, Err(reason)),
                    });
                }
                if batch.is_empty() {
                    break;
                }
                let batch = Arc::new(batch);
                if to_candidate.send((src.name.clone(), batch.clone())).is_err() {
                    break 'sources;
                }
                let mut mine = Vec::with_capacity(batch.len());
                for (line, item) in batch.iter() {
                    mine.push(side(baseline, &mut base, &src.name, *line, item)?);
                }
                // The candidate may be a batch or two behind: compare what
                // it has finished, keeping the reader and both engines busy.
                pending.push_back((batch, mine));
                while pending.len() > 2 {
                    let Ok(theirs) = decided.recv() else { break 'sources };
                    let (batch, mine) = pending.pop_front().expect("more than two pending");
                    compare(&batch, &mine, &theirs, &mut changes, &mut reasons_only);
                }
                bar.set_position(done_bytes + src.position.load(Ordering::Relaxed));
                if stopped {
                    break 'sources;
                }
            }
            done_bytes += src.size;
        }
        drop(to_candidate);
        for (batch, mine) in pending {
            // No answer: the candidate's side stopped on an error, which
            // its thread returns below.
            let Ok(theirs) = decided.recv() else { break };
            compare(&batch, &mine, &theirs, &mut changes, &mut reasons_only);
        }
        drop(decided);
        if stopped {
            base.stopped_at_limit();
        }
        let mut cand = worker.join().expect("the candidate's thread does not panic")?;
        if stopped {
            cand.stopped_at_limit();
        }
        Ok(cand)
    })?;
    bar.finish_and_clear();
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut changed: Vec<(Direction, ChangeCount)> =
        Direction::ALL.iter().map(|&d| (d, ChangeCount::default())).collect();
    let mut sample = Vec::new();
    for (key, change) in &mut changes {
        change.fraud = base.fraud_typology(*key).map(str::to_owned);
        let (_, count) = changed.iter_mut().find(|(d, _)| *d == change.direction).expect("every direction listed");
        if count.transfers < SAMPLE_PER_DIRECTION as u64 {
            sample.push(change.clone());
        }
        count.transfers += 1;
        count.won += change.amount;
        if change.fraud.is_some() {
            count.fraud += 1;
            count.fraud_won += change.amount;
        }
        if let Some(out) = opts.changes_out.as_mut() {
            let line = serde_json::to_string(change).expect("changes always serialize");
            writeln!(out, "{line}").map_err(ReplayError::Output)?;
        }
    }
    if let Some(out) = opts.changes_out.as_mut() {
        out.flush().map_err(ReplayError::Output)?;
    }
    let baseline = base.finish(elapsed_s, baseline.state().memory())?;
    let candidate = cand.finish(elapsed_s, candidate.state().memory())?;
    let events_per_s = baseline.events as f64 / elapsed_s.max(1e-9);
    Ok(BacktestReport {
        baseline,
        candidate,
        promoted,
        rule_changes,
        elapsed_s,
        events_per_s,
        changed,
        reasons_only,
        sample,
    })
}

/// One record through one side: the engine, then its recorder. A refused
/// event is a bad line on the side (both refuse the same events: the checks
/// do not depend on the rules).
fn side(
    engine: &Engine,
    recorder: &mut Recorder,
    file: &str,
    line: u64,
    item: &Result<(Event, bool), String>,
) -> Result<Result<Option<Decision>, String>, ReplayError> {
    let (event, counted) = match item {
        Ok(ok) => ok,
        Err(reason) => {
            recorder.bad_line(file, line, reason.clone());
            return Ok(Err(reason.clone()));
        }
    };
    match engine.process(event) {
        Ok(scored) => {
            recorder.event(event, scored.as_ref(), *counted)?;
            Ok(Ok(scored.map(|s| s.decision)))
        }
        Err(e) => {
            recorder.bad_line(file, line, e.to_string());
            Ok(Err(e.to_string()))
        }
    }
}

/// Note each transfer of `batch` the two sides decided differently.
fn compare(batch: &[Item], mine: &Decided, theirs: &Decided, changes: &mut Vec<(u64, Change)>, reasons_only: &mut u64) {
    for (((_, item), b), c) in batch.iter().zip(mine).zip(theirs) {
        if let (Ok((Event::Transfer(t), true)), Ok(Some(b)), Ok(Some(c))) = (item, b, c) {
            match Direction::of(b, c) {
                Some(direction) => changes.push((tx_key(&t.bank_tran_id), change(t, direction, b, c))),
                None if !b.reason_codes().eq(c.reason_codes()) => *reasons_only += 1,
                None => {}
            }
        }
    }
}

fn change(t: &crate::event::Transfer, direction: Direction, b: &Decision, c: &Decision) -> Change {
    Change {
        bank_tran_id: t.bank_tran_id.clone(),
        time: t.tran_dtime.human(),
        amount: t.tran_amt.get(),
        direction,
        fraud: None,
        baseline: Verdict::of(b),
        candidate: Verdict::of(c),
    }
}

impl BacktestReport {
    /// The report as an analyst reads it: the two sides in columns, then the
    /// changed transfers.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let (b, c) = (&self.baseline, &self.candidate);
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "fds backtest: {}", b.inputs.join(", "));
        let model = b.model_version.as_deref().unwrap_or("none (rules alone)");
        let _ = writeln!(w, "  baseline  {}   candidate  {}   model {model}", b.ruleset_version, c.ruleset_version);
        if !self.promoted.is_empty() {
            let _ = writeln!(w, "  promoted from shadow to live: {}", self.promoted.join(", "));
        }
        let _ = writeln!(w, "  candidate against baseline: {}", self.rule_changes);
        let _ = writeln!(
            w,
            "  events {} (transfers {}, context {}, labels {}), bad lines {}; {:.2} s, {:.0} events/s through both",
            b.events, b.transfers, b.context_events, b.labels, b.bad_lines, self.elapsed_s, self.events_per_s
        );
        if b.warmup_transfers > 0 {
            let _ =
                writeln!(w, "  warm-up: the first {} transfers built state and are not compared", b.warmup_transfers);
        }
        let _ = writeln!(w, "\n  {:<34} {:>18} {:>18} {:>14}", "", "baseline", "candidate", "change");
        let row = |w: &mut String, name: &str, a: String, b: String, d: String| {
            let _ = writeln!(w, "  {name:<34} {a:>18} {b:>18} {d:>14}");
        };
        let count = |w: &mut String, name: &str, x: u64, y: u64| {
            row(w, name, group(x as i64), group(y as i64), signed(y as i64 - x as i64))
        };
        count(w, "holds", b.hold, c.hold);
        match (&b.quality, &c.quality) {
            (Some(qb), Some(qc)) => {
                let pct = |w: &mut String, name: &str, x: f64, y: f64, digits: usize| {
                    row(
                        w,
                        name,
                        format!("{:.digits$}%", 100.0 * x),
                        format!("{:.digits$}%", 100.0 * y),
                        format!("{:+.digits$} pp", 100.0 * (y - x)),
                    )
                };
                count(w, "holds on genuine transfers", qb.held_genuine, qc.held_genuine);
                pct(w, "hold rate on genuine", qb.hold_rate_genuine, qc.hold_rate_genuine, 3);
                count(w, "frauds held", qb.held_fraud, qc.held_fraud);
                pct(w, "recall", qb.recall, qc.recall, 1);
                pct(w, "precision of holds", qb.precision, qc.precision, 1);
                let won = |w: &mut String, name: &str, x: i64, y: i64| row(w, name, group(x), group(y), signed(y - x));
                won(w, "money saved (won)", qb.saved_won, qc.saved_won);
                won(w, "genuine money held (won)", qb.held_genuine_won, qc.held_genuine_won);
                let _ = writeln!(w, "\n  recall by typology ({} frauds)", qb.frauds);
                for tb in &qb.by_typology {
                    let tc = qc.by_typology.iter().find(|t| t.typology == tb.typology);
                    let (held, recall) = tc.map_or((0, 0.0), |t| (t.held, t.recall));
                    row(
                        w,
                        &format!("{} ({})", tb.typology, tb.frauds),
                        format!("{} {:.1}%", tb.held, 100.0 * tb.recall),
                        format!("{held} {:.1}%", 100.0 * recall),
                        signed(held as i64 - tb.held as i64),
                    );
                }
            }
            _ => {
                let _ = writeln!(w, "  (no fraud reports in the stream: no recall, precision or money figures)");
            }
        }
        let _ = writeln!(w, "\n  rules: fired (of which fraud)");
        let mut ids: Vec<&str> = b.rules.iter().map(|r| r.id.as_str()).collect();
        ids.extend(c.rules.iter().map(|r| r.id.as_str()).filter(|id| !b.rules.iter().any(|r| r.id == *id)));
        for id in ids {
            let find = |r: &ReplayReport| r.rules.iter().find(|x| x.id == id).cloned();
            let (rb, rc) = (find(b), find(c));
            let cell = |r: &Option<crate::replay::RuleCount>| match r {
                Some(r) => {
                    format!("{}{} ({})", if r.shadow { "shadow " } else { "" }, group(r.fired as i64), r.fired_on_fraud)
                }
                None => "-".to_owned(),
            };
            let d = rc.as_ref().map_or(0, |r| r.fired as i64) - rb.as_ref().map_or(0, |r| r.fired as i64);
            let is_model = rb.as_ref().or(rc.as_ref()).is_some_and(|r| r.reason == "MODEL");
            let name = if is_model { format!("model {id}") } else { id.to_owned() };
            row(w, &name, cell(&rb), cell(&rc), signed(d));
        }
        let _ = writeln!(w, "\n  changed decisions: {}", group(self.changed_transfers() as i64));
        for (d, n) in &self.changed {
            let _ = writeln!(
                w,
                "    {:<34} {:>8}   fraud {} ({} won), genuine {} ({} won)",
                d.name(),
                group(n.transfers as i64),
                group(n.fraud as i64),
                group(n.fraud_won),
                group((n.transfers - n.fraud) as i64),
                group(n.won - n.fraud_won)
            );
        }
        if self.reasons_only > 0 {
            let _ = writeln!(w, "    same decision, other reasons       {:>8}", group(self.reasons_only as i64));
        }
        if !self.sample.is_empty() {
            let _ =
                writeln!(w, "\n  sample (first {SAMPLE_PER_DIRECTION} of each direction; --changes-out FILE for all)");
        }
        for ch in &self.sample {
            let verdict = |v: &Verdict| {
                let how = v.verification.map_or(String::new(), |x| format!("/{x}"));
                format!("{}{how} [{}]", v.decision, v.reasons.join(" "))
            };
            let _ = writeln!(
                w,
                "    {} {} {:>13} won  {:<16} {} -> {}",
                ch.bank_tran_id,
                ch.time,
                group(ch.amount),
                ch.fraud.as_deref().map_or("genuine".to_owned(), |t| format!("fraud:{t}")),
                verdict(&ch.baseline),
                verdict(&ch.candidate)
            );
        }
        s
    }
}

fn signed(n: i64) -> String {
    match n {
        0 => "0".to_owned(),
        n if n > 0 => format!("+{}", group(n)),
        n => group(n),
    }
}
