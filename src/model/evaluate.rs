//! The handbook's evaluation protocol, run on the engine's own features.
//!
//! This module owns `fds evaluate`: the protocol of Le Borgne et al. (2022,
//! chapter 3, "Baseline fraud detection system") on their simulated card data
//! ([`crate::input::handbook`] maps it onto transfers and labels delivered 7 days
//! late). The whole history streams through the engine, so state is warm
//! from 2018-04-01; then:
//!
//! - train on the transfers of 7 days from `train_start` (labels: the
//!   transactions' fraud flags),
//! - leave a 7-day gap (labels of the last training days are still arriving),
//! - test on the following 7 days, dropping on each test day the customers
//!   already known to be compromised: a fraud on any day from the first
//!   training day up to the test day minus 8 days,
//!
//! and report AUC ROC, average precision and card precision@100 beside the
//! handbook's best published figures for that split.
//!
//! The same protocol runs on any labelled stream of transfers, such as the
//! generated Korean traffic of `fds generate` ([`Protocol::holdout`]): train
//! on a span of days, skip a gap, test on the following days; nothing is left
//! out of the test span, since the known-compromised rule is the handbook's.
//! Every report also breaks the test span down by typology (the `typology` of
//! each transfer's fraud report; the handbook's are its scenarios): AUC,
//! average precision and precision@k of that typology's frauds against all
//! genuine transfers, and the share of them the hold threshold would hold.
//!
//! Guarantees: nothing from the test span reaches training. Training rows
//! come before the test span, their features are point-in-time (the engine
//! computes them as each transfer arrives), and their labels are the reports
//! received before the test span starts: what a model deployed at that moment
//! could have learned from (for the handbook, with its 7-day delay and 7-day
//! gap, that is every label of the training week). The model's
//! hyper-parameters are fixed in [`super::train`] (chosen on other weeks) and
//! its threshold on a validation split inside the training span; the test
//! span only measures.

use std::collections::HashMap;
use std::time::Instant;

use chrono::NaiveDate;

use super::dataset::{self, DatasetError, Row, Selection};
use super::quality::{self, CardScore};
use super::train::{self, Algorithm, Provenance, TrainError, TrainOptions};
use super::Model;
use crate::engine::Engine;
use crate::event::{EventTime, LabelStatus, DAY_MS, KST_OFFSET_MS};
use crate::input::Input;

/// The handbook's best published figures on its default split (train
/// 2018-07-25..31, test 2018-08-08..14): AUC ROC and card precision@100 by
/// logistic regression, average precision by random forest.
pub const HANDBOOK_BEST: [(&str, f64, &str); 3] = [
    ("AUC ROC", 0.871, "logistic regression"),
    ("average precision", 0.658, "random forest"),
    ("card precision@100", 0.291, "logistic regression"),
];

/// The handbook's default first training day.
pub fn default_train_start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2018, 7, 25).expect("a valid date")
}

/// Why the protocol could not run.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("training {algorithm}")]
    Train { algorithm: &'static str, source: TrainError },
    #[error("the {part} ({from} to {to}) has no transfers in the data")]
    EmptyPart { part: &'static str, from: NaiveDate, to: NaiveDate },
    #[error("invalid protocol: {0}")]
    Protocol(String),
}

/// The spans of the protocol, in KST days, and how the test span is read.
#[derive(Debug, Clone, Copy)]
pub struct Protocol {
    /// First training day (KST).
    pub train_start: NaiveDate,
    /// Training days.
    pub train_days: i64,
    /// Days skipped between training and test, so the labels of the last
    /// training days have arrived (the handbook's gap equals its 7-day delay).
    pub delay_days: i64,
    /// Test days.
    pub test_days: i64,
    /// Leave out, on each test day, the senders already known defrauded: the
    /// handbook's rule, because its compromised cards keep being defrauded
    /// and a bank would have blocked them.
    pub drop_known_compromised: bool,
    /// Accounts a day for precision@k.
    pub top_k: usize,
    /// The data is the handbook's: compare with its published figures and
    /// read labels only up to 8 days after the test span (its delay is 7).
    pub handbook: bool,
}

impl Protocol {
    /// The handbook's own protocol: 7 training days, a 7-day gap, 7 test days,
    /// known-compromised customers left out, precision@100.
    pub fn handbook(train_start: NaiveDate) -> Self {
        Protocol {
            train_start,
            train_days: 7,
            delay_days: 7,
            test_days: 7,
            drop_known_compromised: true,
            top_k: 100,
            handbook: true,
        }
    }

    /// Train on `train_days` from `train_start`, skip `gap_days`, test on the
    /// next `test_days`, on any labelled stream; every label in the stream is
    /// read (reports may come long after the test span).
    pub fn holdout(train_start: NaiveDate, train_days: i64, gap_days: i64, test_days: i64, top_k: usize) -> Self {
        Protocol {
            train_start,
            train_days,
            delay_days: gap_days,
            test_days,
            drop_known_compromised: false,
            top_k,
            handbook: false,
        }
    }

    /// The KST date of `t`.
    pub fn kst_date(t: EventTime) -> NaiveDate {
        Self::date(t.kst_day())
    }

    fn start_day(&self) -> i64 {
        self.train_start.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
    }

    fn date(day: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(day)
    }

    /// Midnight KST at the start of `day` (days since 1970-01-01, KST).
    fn midnight(day: i64) -> EventTime {
        EventTime(day * DAY_MS - KST_OFFSET_MS)
    }

    /// First test day (KST).
    pub fn test_start(&self) -> NaiveDate {
        Self::date(self.start_day() + self.train_days + self.delay_days)
    }

    /// Last test day (KST).
    pub fn test_end(&self) -> NaiveDate {
        Self::date(self.start_day() + self.train_days + self.delay_days + self.test_days - 1)
    }
}

/// One typology's frauds against every genuine transfer of the test span.
#[derive(Debug, Clone)]
pub struct TypologyScore {
    /// The label's typology string.
    pub typology: String,
    /// Frauds of this typology in the test span.
    pub frauds: usize,
    /// Area under the ROC curve against every genuine transfer.
    pub auc_roc: f64,
    /// Average precision, likewise.
    pub average_precision: f64,
    /// Card precision@k with the other typologies' frauds left out.
    pub precision_at_k: f64,
    /// Share of this typology's frauds scoring at or above the hold threshold.
    pub held: f64,
}

/// One algorithm's result on the test span.
#[derive(Debug)]
pub struct Evaluation {
    /// The algorithm trained.
    pub algorithm: Algorithm,
    /// The model it fitted.
    pub model: Model,
    /// Wall-clock seconds of the fit.
    pub train_seconds: f64,
    /// Area under the ROC curve on the test span.
    pub auc_roc: f64,
    /// Average precision on the test span.
    pub average_precision: f64,
    /// Card precision@k (k = [`Protocol::top_k`]; 100 for the handbook).
    pub card_precision_at_100: f64,
    /// Per typology, in name order.
    pub by_typology: Vec<TypologyScore>,
    /// Test transactions and their scores, in stream order.
    pub test_ids: Vec<String>,
    /// The model's score of each of `test_ids`, in the same order.
    pub test_scores: Vec<f64>,
}

/// The test week and what was measured on it.
#[derive(Debug)]
pub struct Report {
    /// The protocol that was run.
    pub protocol: Protocol,
    /// Training transfers.
    pub train_rows: usize,
    /// Of those, frauds reported before the test span.
    pub train_frauds: usize,
    /// Test transfers scored.
    pub test_rows: usize,
    /// Of those, frauds by the stream's final labels.
    pub test_frauds: usize,
    /// Test transactions left out because their customer was known compromised.
    pub dropped_known: usize,
    /// Card precision@100 of a perfect ranking: a test week with fewer than
    /// 100 compromised cards a day cannot score higher.
    pub card_precision_ceiling: f64,
    /// Seconds the replay that built the rows took.
    pub replay_seconds: f64,
    /// One result per algorithm asked for.
    pub evaluations: Vec<Evaluation>,
}

/// Run the protocol: stream `source` through `engine`, train each of
/// `algorithms` on the training week, score the test week.
pub fn run(
    engine: &Engine,
    source: Input,
    protocol: Protocol,
    algorithms: &[Algorithm],
    opts: &TrainOptions,
    provenance: &Provenance,
) -> Result<Report, EvaluateError> {
    let started = Instant::now();
    if protocol.train_days < 1 || protocol.test_days < 1 || protocol.delay_days < 0 || protocol.top_k == 0 {
        return Err(EvaluateError::Protocol(format!(
            "train and test spans need at least one day, the gap cannot be negative and k must be positive \
             (train {} days, gap {}, test {}, k {})",
            protocol.train_days, protocol.delay_days, protocol.test_days, protocol.top_k
        )));
    }
    let d0 = protocol.start_day();
    let test_from = d0 + protocol.train_days + protocol.delay_days;
    let test_until = test_from + protocol.test_days;
    let selection = Selection {
        from: Some(Protocol::midnight(d0)),
        until: Some(Protocol::midnight(test_until)),
        // The handbook's labels of the last test day arrive 7 days later;
        // other streams are read to the end, for reports however late.
        stop_at: protocol.handbook.then(|| Protocol::midnight(test_until + 8)),
        warmup_ms: 0,
    };
    let data = dataset::collect(engine, vec![source], selection)?;
    let replay_seconds = started.elapsed().as_secs_f64();
    // Training learns only the reports received before the test span.
    let known = data.labels_known_before(Protocol::midnight(test_from));
    let train_rows: Vec<Row> = data.rows.iter().filter(|r| r.kst_day() < d0 + protocol.train_days).cloned().collect();
    let train_y: Vec<bool> =
        train_rows.iter().map(|r| known.get(r.bank_tran_id.as_str()) == Some(&LabelStatus::Fraud)).collect();
    if train_rows.is_empty() {
        return Err(EvaluateError::EmptyPart {
            part: "training week",
            from: protocol.train_start,
            to: Protocol::date(d0 + protocol.train_days - 1),
        });
    }
    // The first day each customer is seen defrauded, from the first training day on.
    let mut first_fraud: HashMap<&str, i64> = HashMap::new();
    for r in &data.rows {
        if data.is_fraud(&r.bank_tran_id) {
            let d = first_fraud.entry(&r.account).or_insert(i64::MAX);
            *d = (*d).min(r.kst_day());
        }
    }
    let mut test: Vec<&Row> = Vec::new();
    let mut dropped_known = 0;
    for r in &data.rows {
        let day = r.kst_day();
        if !(test_from..test_until).contains(&day) {
            continue;
        }
        if protocol.drop_known_compromised && first_fraud.get(r.account.as_str()).is_some_and(|&f| f <= day - 8) {
            dropped_known += 1;
        } else {
            test.push(r);
        }
    }
    if test.is_empty() {
        return Err(EvaluateError::EmptyPart {
            part: "test week",
            from: protocol.test_start(),
            to: protocol.test_end(),
        });
    }
    let test_y: Vec<bool> = test.iter().map(|r| data.is_fraud(&r.bank_tran_id)).collect();
    let perfect: Vec<CardScore<'_>> = test
        .iter()
        .zip(&test_y)
        .map(|(r, &fraud)| CardScore { day: r.kst_day(), card: &r.account, score: f64::from(u8::from(fraud)), fraud })
        .collect();
    let card_precision_ceiling = quality::card_precision_at_k(&perfect, protocol.top_k).unwrap_or(f64::NAN);
    let test_typology: Vec<Option<&str>> = test.iter().map(|r| data.typology(&r.bank_tran_id)).collect();
    let mut typologies: Vec<&str> = test_typology.iter().flatten().copied().collect();
    typologies.sort_unstable();
    typologies.dedup();
    let provenance = &Provenance { labels_in_stream: data.labels.len(), ..provenance.clone() };
    let mut evaluations = Vec::new();
    for &algorithm in algorithms {
        let opts = TrainOptions { algorithm, ..*opts };
        let t = Instant::now();
        let model = train::train(&train_rows, &train_y, &opts, provenance)
            .map_err(|source| EvaluateError::Train { algorithm: algorithm.name(), source })?;
        let train_seconds = t.elapsed().as_secs_f64();
        let scores: Vec<f64> = test.iter().map(|r| model.score_values(&r.features)).collect();
        let cards: Vec<CardScore<'_>> = test
            .iter()
            .zip(&scores)
            .zip(&test_y)
            .map(|((r, &score), &fraud)| CardScore { day: r.kst_day(), card: &r.account, score, fraud })
            .collect();
        let hold = model.hold_threshold();
        let by_typology = typologies
            .iter()
            .map(|&name| {
                // This typology's frauds and the genuine transfers, nothing else.
                let keep: Vec<usize> =
                    (0..test.len()).filter(|&i| test_typology[i].map_or(true, |t| t == name)).collect();
                let s: Vec<f64> = keep.iter().map(|&i| scores[i]).collect();
                let y: Vec<bool> = keep.iter().map(|&i| test_y[i]).collect();
                let c: Vec<CardScore<'_>> = keep.iter().map(|&i| cards[i]).collect();
                let frauds = y.iter().filter(|&&f| f).count();
                let held = keep.iter().filter(|&&i| test_y[i] && scores[i] >= hold).count();
                TypologyScore {
                    typology: name.to_owned(),
                    frauds,
                    auc_roc: quality::auc_roc(&s, &y).unwrap_or(f64::NAN),
                    average_precision: quality::average_precision(&s, &y).unwrap_or(f64::NAN),
                    precision_at_k: quality::card_precision_at_k(&c, protocol.top_k).unwrap_or(f64::NAN),
                    held: held as f64 / frauds.max(1) as f64,
                }
            })
            .collect();
        evaluations.push(Evaluation {
            algorithm,
            train_seconds,
            auc_roc: quality::auc_roc(&scores, &test_y).unwrap_or(f64::NAN),
            average_precision: quality::average_precision(&scores, &test_y).unwrap_or(f64::NAN),
            card_precision_at_100: quality::card_precision_at_k(&cards, protocol.top_k).unwrap_or(f64::NAN),
            by_typology,
            test_ids: test.iter().map(|r| r.bank_tran_id.clone()).collect(),
            test_scores: scores,
            model,
        });
    }
    Ok(Report {
        protocol,
        train_frauds: train_y.iter().filter(|&&f| f).count(),
        train_rows: train_rows.len(),
        test_frauds: test_y.iter().filter(|&&f| f).count(),
        test_rows: test.len(),
        dropped_known,
        card_precision_ceiling,
        replay_seconds,
        evaluations,
    })
}

impl Evaluation {
    /// The test week's scores as `transaction_id,score` CSV, with the
    /// handbook's own transaction ids (the `HB` prefix taken off).
    pub fn write_scores(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "transaction_id,score")?;
        for (id, s) in self.test_ids.iter().zip(&self.test_scores) {
            writeln!(out, "{},{s}", id.strip_prefix("HB").unwrap_or(id))?;
        }
        Ok(())
    }
}

impl Report {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let w = &mut s;
        let p = &self.protocol;
        let k = p.top_k;
        if p.handbook {
            let _ = writeln!(w, "fds evaluate: the handbook protocol on the engine's features");
        } else {
            let _ = writeln!(w, "fds evaluate: train on earlier days, test on later ones, on the engine's features");
        }
        let left_out = if p.drop_known_compromised {
            format!("; {} of known-compromised customers left out", self.dropped_known)
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "  train {} .. {} ({} transactions, {} frauds)   gap {} days   test {} .. {} ({} transactions, {} frauds{left_out})",
            p.train_start,
            Protocol::date(p.start_day() + p.train_days - 1),
            self.train_rows,
            self.train_frauds,
            p.delay_days,
            p.test_start(),
            p.test_end(),
            self.test_rows,
            self.test_frauds,
        );
        let _ = writeln!(
            w,
            "  training labels: the reports received before {}; replay (state warmed from the start of the data) {:.1} s",
            p.test_start(),
            self.replay_seconds
        );
        let _ = write!(w, "\n{:<22}", "");
        for e in &self.evaluations {
            let _ = write!(w, "{:>12}", e.algorithm.name());
        }
        if p.handbook {
            let _ = write!(w, "   handbook best (2018-07-25 split)");
        }
        let _ = writeln!(w);
        let cp = format!("card precision@{k}");
        type Metric = fn(&Evaluation) -> f64;
        let rows: [(&str, Metric); 3] = [
            ("AUC ROC", |e| e.auc_roc),
            ("average precision", |e| e.average_precision),
            (&cp, |e| e.card_precision_at_100),
        ];
        for (i, ((name, get), (_, best, by))) in rows.iter().zip(HANDBOOK_BEST).enumerate() {
            let _ = write!(w, "{name:<22}");
            for e in &self.evaluations {
                let _ = write!(w, "{:>12.3}", get(e));
            }
            if p.handbook {
                let _ = write!(w, "   {best:.3} ({by})");
            }
            if i == 2 {
                let _ = write!(
                    w,
                    "{}a perfect ranking: {:.3}",
                    if p.handbook { "; " } else { "   " },
                    self.card_precision_ceiling
                );
            }
            let _ = writeln!(w);
        }
        let _ = write!(w, "{:<22}", "training time (s)");
        for e in &self.evaluations {
            let _ = write!(w, "{:>12.1}", e.train_seconds);
        }
        let _ = writeln!(w);
        let _ = write!(w, "{:<22}", "hold threshold");
        for e in &self.evaluations {
            let _ = write!(w, "{:>12.4}", e.model.hold_threshold());
        }
        let _ = writeln!(w, "   (chosen on the training span's last 20%)");
        if let Some(first) = self.evaluations.first().filter(|e| !e.by_typology.is_empty()) {
            let _ = writeln!(
                w,
                "\nby typology (its frauds against every genuine transfer of the test span; held: share at or above the hold threshold)"
            );
            let _ = write!(w, "{:<26}{:>7}", "typology", "frauds");
            for e in &self.evaluations {
                let _ = write!(
                    w,
                    "  | {:<9}{:>6}{:>7}{:>7}{:>7}",
                    e.algorithm.name(),
                    "AUC",
                    "AP",
                    format!("P@{k}"),
                    "held"
                );
            }
            let _ = writeln!(w);
            for (i, t) in first.by_typology.iter().enumerate() {
                let _ = write!(w, "{:<26}{:>7}", t.typology, t.frauds);
                for e in &self.evaluations {
                    let r = &e.by_typology[i];
                    let _ = write!(
                        w,
                        "  | {:<9}{:>6.3}{:>7.3}{:>7.3}{:>7.3}",
                        "", r.auc_roc, r.average_precision, r.precision_at_k, r.held
                    );
                }
                let _ = writeln!(w);
            }
        }
        s
    }
}
