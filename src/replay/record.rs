//! What a replay counts: one [`Recorder`] per engine (or group of
//! instances) takes every event with the decision it got and, at the end,
//! gives the [`ReplayReport`]. A replay has one; a backtest
//! ([`crate::analyst::backtest`]) has one per rule set, fed the same events,
//! so both sides are counted by the same code.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use super::{frac, hex16, tx_key, Latency, Quality, ReplayError, ReplayReport, RuleCount, TypologyQuality};
use crate::engine::{Decision, Scored};
use crate::event::{Event, LabelStatus};
use crate::input::{BadLine, BAD_LINES_LISTED};
use crate::model::ModelHandle;
use crate::rules::{RuleSet, RulesHandle};
use crate::state::MemoryReport;

/// Counts for one engine's side of a replay.
pub(crate) struct Recorder {
    report: ReplayReport,
    hist: hdrhistogram::Histogram<u64>,
    digest: Sha256,
    records: HashMap<u64, TxRecord>,
    labels: HashMap<u64, (LabelStatus, String)>,
    tally: RuleTally,
    keep_outcomes: bool,
    decisions_out: Option<Box<dyn Write + Send>>,
}

impl Recorder {
    /// Counting decisions made with the rules and model in force now (a
    /// reload during the replay is followed decision by decision).
    pub(crate) fn new(
        inputs: Vec<String>,
        rules: &RulesHandle,
        model: &ModelHandle,
        keep_outcomes: bool,
        decisions_out: Option<Box<dyn Write + Send>>,
    ) -> Recorder {
        let report = ReplayReport {
            inputs,
            events: 0,
            transfers: 0,
            context_events: 0,
            labels: 0,
            bad_lines: 0,
            bad_line_samples: Vec::new(),
            warmup_transfers: 0,
            stopped_at_limit: false,
            elapsed_s: 0.0,
            events_per_s: 0.0,
            latency: Latency::default(),
            allow: 0,
            hold: 0,
            holds_by_verification: BTreeMap::new(),
            rules: Vec::new(),
            quality: None,
            state: MemoryReport::default(),
            ruleset_version: rules.load().version().to_owned(),
            model_version: model.load().as_deref().map(|m| m.version().to_owned()),
            ruleset_versions: Vec::new(),
            decisions_digest: String::new(),
            outcomes: HashMap::new(),
            frauds: HashMap::new(),
        };
        Recorder {
            report,
            hist: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            digest: Sha256::new(),
            records: HashMap::new(),
            labels: HashMap::new(),
            tally: RuleTally::new(&rules.load_full()),
            keep_outcomes,
            decisions_out,
        }
    }

    /// Events and bad lines counted so far.
    pub(crate) fn seen(&self) -> u64 {
        self.report.events + self.report.bad_lines
    }

    /// Events counted so far.
    pub(crate) fn events(&self) -> u64 {
        self.report.events
    }

    /// A line that was not an event, or an event the engine refused.
    pub(crate) fn bad_line(&mut self, file: &str, line: u64, reason: String) {
        let r = &mut self.report;
        r.bad_lines += 1;
        if r.bad_line_samples.len() < BAD_LINES_LISTED {
            let reason = crate::event::redact(&reason);
            r.bad_line_samples.push(BadLine { file: file.to_owned(), line, reason });
        }
    }

    /// The replay stopped at its limit.
    pub(crate) fn stopped_at_limit(&mut self) {
        self.report.stopped_at_limit = true;
    }

    /// One event and, for a transfer, what the engine made of it. `counted`
    /// is false during the warm-up.
    pub(crate) fn event(&mut self, event: &Event, scored: Option<&Scored>, counted: bool) -> Result<(), ReplayError> {
        let report = &mut self.report;
        report.events += 1;
        match (event, scored) {
            (Event::Label(l), _) => {
                report.labels += 1;
                self.labels.insert(tx_key(&l.bank_tran_id), (l.status, l.typology.clone()));
            }
            (Event::Transfer(t), Some(scored)) => {
                let d = &scored.decision;
                let _ = self.hist.record(d.latency_ns.max(1));
                let fingerprint = d.fingerprint();
                self.digest.update(fingerprint.as_bytes());
                self.digest.update(b"\n");
                if let Some(out) = self.decisions_out.as_mut() {
                    writeln!(out, "{}", d.to_json()).map_err(ReplayError::Output)?;
                }
                let fired = if counted {
                    report.transfers += 1;
                    count_decision(report, d);
                    self.tally.count(d)
                } else {
                    report.warmup_transfers += 1;
                    SmallVec::new()
                };
                if self.keep_outcomes && counted {
                    report.outcomes.insert(tx_key(&t.bank_tran_id), (d.is_hold(), tx_key(&fingerprint)));
                }
                let r = TxRecord { amount: t.tran_amt.get(), hold: d.is_hold(), fired, counted };
                self.records.insert(tx_key(&t.bank_tran_id), r);
            }
            _ => report.context_events += 1,
        }
        Ok(())
    }

    /// The final label of a transfer, by [`tx_key`]: its typology when fraud.
    pub(crate) fn fraud_typology(&self, key: u64) -> Option<&str> {
        is_fraud(&self.labels, key)
    }

    /// The report, once every event is in.
    pub(crate) fn finish(mut self, elapsed_s: f64, state: MemoryReport) -> Result<ReplayReport, ReplayError> {
        if let Some(out) = self.decisions_out.as_mut() {
            out.flush().map_err(ReplayError::Output)?;
        }
        let mut report = self.report;
        report.elapsed_s = elapsed_s;
        report.events_per_s = report.events as f64 / elapsed_s.max(1e-9);
        let hist = &self.hist;
        if !hist.is_empty() {
            let us = |v: u64| v as f64 / 1000.0;
            report.latency = Latency {
                p50_us: us(hist.value_at_quantile(0.50)),
                p99_us: us(hist.value_at_quantile(0.99)),
                p999_us: us(hist.value_at_quantile(0.999)),
                max_us: us(hist.max()),
                mean_us: hist.mean() / 1000.0,
            };
        }
        report.decisions_digest = hex16(&self.digest.finalize());
        report.state = state;
        if self.keep_outcomes {
            report.frauds = self
                .labels
                .iter()
                .filter(|(k, (status, _))| *status == LabelStatus::Fraud && report.outcomes.contains_key(k))
                .map(|(k, (_, typology))| (*k, typology.clone()))
                .collect();
        }
        let labels = &self.labels;
        let quality = (!labels.is_empty()).then(|| quality(&self.records, labels, report.transfers));
        let mut tally = self.tally;
        for (k, r) in &self.records {
            if r.counted && is_fraud(labels, *k).is_some() {
                for &g in &r.fired {
                    tally.counts[usize::from(g)].fired_on_fraud += 1;
                }
            }
        }
        report.ruleset_versions = tally.versions;
        report.rules = tally.counts;
        report.quality = quality;
        Ok(report)
    }
}

/// What is kept per transfer until the labels are in.
struct TxRecord {
    amount: i64,
    hold: bool,
    /// Positions in the rule tally of the rules (live or shadow) that fired.
    fired: SmallVec<[u16; 4]>,
    /// False for warm-up transfers, which quality leaves out.
    counted: bool,
}

fn count_decision(report: &mut ReplayReport, d: &Decision) {
    match d.verification {
        Some(v) => {
            report.hold += 1;
            *report.holds_by_verification.entry(v.name().to_owned()).or_default() += 1;
        }
        None => report.allow += 1,
    }
}

fn is_fraud(labels: &HashMap<u64, (LabelStatus, String)>, key: u64) -> Option<&str> {
    match labels.get(&key) {
        Some((LabelStatus::Fraud, typology)) => Some(typology),
        _ => None,
    }
}

/// Rule counts by rule id, so they stay right when rules are reloaded during
/// a paced replay (positions shift when a rule is added or removed).
struct RuleTally {
    counts: Vec<RuleCount>,
    by_id: HashMap<String, u16>,
    /// The rule set last seen, with each of its rules' position in `counts`.
    current: Arc<RuleSet>,
    positions: Vec<u16>,
    versions: Vec<String>,
}

impl RuleTally {
    fn new(set: &Arc<RuleSet>) -> Self {
        let mut t = RuleTally {
            counts: Vec::new(),
            by_id: HashMap::new(),
            current: set.clone(),
            positions: Vec::new(),
            versions: Vec::new(),
        };
        t.switch_to(set);
        t
    }

    fn switch_to(&mut self, set: &Arc<RuleSet>) {
        self.current = set.clone();
        self.versions.push(set.version().to_owned());
        self.positions = set
            .rules()
            .iter()
            .map(|r| {
                *self.by_id.entry(r.id().to_owned()).or_insert_with(|| {
                    self.counts.push(RuleCount {
                        id: r.id().to_owned(),
                        reason: r.reason().to_owned(),
                        label: r.label().to_owned(),
                        shadow: r.shadow(),
                        fired: 0,
                        fired_on_fraud: 0,
                    });
                    u16::try_from(self.counts.len() - 1).unwrap_or(u16::MAX)
                })
            })
            .collect();
    }

    /// Count the rules that fired on `d`; returns their positions.
    fn count(&mut self, d: &Decision) -> SmallVec<[u16; 4]> {
        if !Arc::ptr_eq(&self.current, &d.rules) {
            self.switch_to(&d.rules);
        }
        let mut fired = SmallVec::new();
        for &i in d.fired.iter().chain(d.shadow_fired.iter()) {
            if let Some(&g) = self.positions.get(usize::from(i)) {
                if let Some(c) = self.counts.get_mut(usize::from(g)) {
                    c.fired += 1;
                    fired.push(g);
                }
            }
        }
        // The model's holds get a row of their own, per model version, so a
        // model reloaded during a paced replay is counted apart.
        if let Some(m) = d.model.as_ref().filter(|m| m.hold) {
            // Keyed by model and card, so a threshold moved during a paced
            // replay gets its own row.
            let key = crate::reload::Reloadable::reload_key(m.model.as_ref());
            let id = m.model.version();
            let g = match self.by_id.get(key) {
                Some(&g) => g,
                None => {
                    self.counts.push(RuleCount {
                        id: id.to_owned(),
                        reason: "MODEL".to_owned(),
                        label: format!("model score at or above its hold threshold {:.4}", m.model.hold_threshold()),
                        shadow: false,
                        fired: 0,
                        fired_on_fraud: 0,
                    });
                    let g = u16::try_from(self.counts.len() - 1).unwrap_or(u16::MAX);
                    self.by_id.insert(key.to_owned(), g);
                    g
                }
            };
            if let Some(c) = self.counts.get_mut(usize::from(g)) {
                c.fired += 1;
                fired.push(g);
            }
        }
        fired
    }
}

fn quality(records: &HashMap<u64, TxRecord>, labels: &HashMap<u64, (LabelStatus, String)>, transfers: u64) -> Quality {
    let mut q = Quality {
        frauds: 0,
        genuine: 0,
        held_fraud: 0,
        held_genuine: 0,
        recall: 0.0,
        precision: 0.0,
        hold_rate_genuine: 0.0,
        fraud_won: 0,
        saved_won: 0,
        held_genuine_won: 0,
        unmatched_labels: 0,
        by_typology: Vec::new(),
    };
    let mut by: BTreeMap<String, TypologyQuality> = BTreeMap::new();
    for (key, (status, typology)) in labels {
        if *status != LabelStatus::Fraud {
            continue;
        }
        let Some(r) = records.get(key) else {
            q.unmatched_labels += 1;
            continue;
        };
        if !r.counted {
            continue;
        }
        let t = by.entry(typology.clone()).or_insert_with(|| TypologyQuality {
            typology: typology.clone(),
            frauds: 0,
            held: 0,
            recall: 0.0,
            fraud_won: 0,
            saved_won: 0,
        });
        q.frauds += 1;
        t.frauds += 1;
        q.fraud_won += r.amount;
        t.fraud_won += r.amount;
        if r.hold {
            q.held_fraud += 1;
            t.held += 1;
            q.saved_won += r.amount;
            t.saved_won += r.amount;
        }
    }
    for (key, r) in records {
        if r.counted && r.hold && is_fraud(labels, *key).is_none() {
            q.held_genuine += 1;
            q.held_genuine_won += r.amount;
        }
    }
    q.genuine = transfers - q.frauds;
    q.recall = frac(q.held_fraud, q.frauds);
    q.precision = frac(q.held_fraud, q.held_fraud + q.held_genuine);
    q.hold_rate_genuine = frac(q.held_genuine, q.genuine);
    q.by_typology = by
        .into_values()
        .map(|mut t| {
            t.recall = frac(t.held, t.frauds);
            t
        })
        .collect();
    q
}
