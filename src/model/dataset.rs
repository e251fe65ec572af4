//! Training rows: the engine's own feature vectors, taken from a replay at the
//! moment each transfer happened, joined with the labels the stream delivered.
//!
//! This module owns the one rule that keeps training honest: a row's features
//! are what the engine computed when the transfer arrived ([`Engine::process`]
//! feeds the state, so a fraud report delivered later cannot leak into the
//! features of the transfer it names), and its label is the stream's final word
//! on that transfer (a `cleared` report withdraws a `fraud` one; the latest
//! report wins). What serving would have seen is what training sees, because
//! the engine is built the way `fds replay` builds it, rules included (the
//! `mins_since_hold` feature depends on the rules' holds).
//!
//! Guarantees: rows come out in stream order; bad lines are counted and
//! skipped as in a replay; a feature that is NaN or infinite is refused with
//! the transfer that produced it, because a model cannot be trained on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::Engine;
use crate::event::{Event, EventTime, LabelStatus};
use crate::features::{FeatureVector, N_FEATURES, SCHEMA};
use crate::input::Input;
use crate::replay::Warmup;

/// Why rows could not be collected.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("transfer {transfer}: feature `{feature}` is {value}, which a model cannot be trained on")]
    NonFinite { transfer: String, feature: &'static str, value: f64 },
    #[error("no transfers in {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))]
    Empty { files: Vec<PathBuf> },
}

/// One transfer as training sees it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The transfer's id.
    pub bank_tran_id: String,
    /// The sender account (the handbook's card).
    pub account: String,
    /// The transfer's time.
    pub time: EventTime,
    /// The features as the engine computed them when the transfer arrived.
    pub features: [f64; N_FEATURES],
}

impl Row {
    /// The day of the transfer on the Korean calendar, as days since 1970-01-01.
    pub fn kst_day(&self) -> i64 {
        self.time.kst_day()
    }
}

/// What a replay yielded for training.
#[derive(Debug, Default)]
pub struct Collected {
    /// Kept transfers, in stream order.
    pub rows: Vec<Row>,
    /// The final label of every reported transfer, by transfer id.
    pub labels: HashMap<String, LabelStatus>,
    /// Every label event read, in stream order: (report time, transfer id,
    /// status), so a protocol can use only what was known at a given time.
    pub label_events: Vec<(EventTime, String, LabelStatus)>,
    /// The typology of each transfer's latest fraud report, by transfer id.
    pub typologies: HashMap<String, String>,
    /// Transfers replayed (kept or not).
    pub transfers: u64,
    /// Lines skipped: not an event, or an event the engine refused (dated too
    /// far ahead of the clock).
    pub bad_lines: u64,
    /// Event time of the first transfer kept.
    pub first: Option<EventTime>,
    /// Event time of the last transfer kept.
    pub last: Option<EventTime>,
}

impl Collected {
    /// Whether the stream's final word on this transfer is fraud.
    pub fn is_fraud(&self, bank_tran_id: &str) -> bool {
        self.labels.get(bank_tran_id) == Some(&LabelStatus::Fraud)
    }

    /// One label per row, in row order.
    pub fn targets(&self) -> Vec<bool> {
        self.rows.iter().map(|r| self.is_fraud(&r.bank_tran_id)).collect()
    }

    /// The labels as they stood just before `cutoff`: what a model trained at
    /// that moment could have learned from (later reports and withdrawals
    /// had not arrived).
    pub fn labels_known_before(&self, cutoff: EventTime) -> HashMap<&str, LabelStatus> {
        let mut known = HashMap::new();
        for (at, id, status) in &self.label_events {
            if *at < cutoff {
                known.insert(id.as_str(), *status);
            }
        }
        known
    }

    /// The typology of a transfer's fraud report; `None` for genuine transfers.
    pub fn typology(&self, bank_tran_id: &str) -> Option<&str> {
        self.is_fraud(bank_tran_id).then(|| self.typologies.get(bank_tran_id).map_or("", String::as_str))
    }
}

/// Which transfers to keep, and when to stop reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection {
    /// Keep transfers at or after this time (earlier ones only build state).
    pub from: Option<EventTime>,
    /// Keep transfers before this time.
    pub until: Option<EventTime>,
    /// Stop reading at the first event at or after this time (labels for the
    /// kept transfers must have arrived by then).
    pub stop_at: Option<EventTime>,
    /// Keep nothing from the first this-many milliseconds of the stream: a new
    /// engine knows no one, and rows from its first days would teach the model
    /// what an empty history looks like.
    pub warmup_ms: i64,
}

impl Selection {
    fn keeps(&self, t: EventTime) -> bool {
        self.from.map_or(true, |f| t >= f) && self.until.map_or(true, |u| t < u)
    }
}

/// Replay `sources` through `engine` and keep the feature vectors of the
/// transfers inside `selection`, with every label of the stream.
pub fn collect(engine: &Engine, sources: Vec<Input>, selection: Selection) -> Result<Collected, DatasetError> {
    let files: Vec<PathBuf> = sources.iter().map(|s| PathBuf::from(&s.name)).collect();
    let mut out = Collected::default();
    let mut warmup = Warmup::new(Duration::from_millis(u64::try_from(selection.warmup_ms).unwrap_or(0)));
    'sources: for src in sources {
        // In the order live scoring sees them, as the replay does.
        for item in crate::input::order::in_order(src.events, 1) {
            let Ok((_, event)) = item else {
                out.bad_lines += 1;
                continue;
            };
            if selection.stop_at.is_some_and(|s| event.time() >= s) {
                break 'sources;
            }
            let counted = warmup.counts(&event);
            let scored = match engine.process(&event) {
                Ok(s) => s,
                Err(_) => {
                    out.bad_lines += 1;
                    continue;
                }
            };
            match (event, scored) {
                (Event::Label(l), _) => {
                    if l.status == LabelStatus::Fraud {
                        out.typologies.insert(l.bank_tran_id.clone(), l.typology);
                    }
                    out.label_events.push((l.report_dtime, l.bank_tran_id.clone(), l.status));
                    out.labels.insert(l.bank_tran_id, l.status);
                }
                (Event::Transfer(t), Some(scored)) => {
                    out.transfers += 1;
                    if counted && selection.keeps(t.tran_dtime) {
                        let features = finite(&t.bank_tran_id, &scored.features)?;
                        out.first.get_or_insert(t.tran_dtime);
                        out.last = Some(t.tran_dtime);
                        out.rows.push(Row {
                            bank_tran_id: t.bank_tran_id,
                            account: t.fintech_use_num,
                            time: t.tran_dtime,
                            features,
                        });
                    }
                }
                _ => {}
            }
        }
    }
    if out.rows.is_empty() {
        return Err(DatasetError::Empty { files });
    }
    Ok(out)
}

/// The numeric view of `f`, refused if any value is NaN or infinite.
pub fn finite(transfer: &str, f: &FeatureVector) -> Result<[f64; N_FEATURES], DatasetError> {
    let x = f.to_f64();
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(x),
        Some(i) => Err(DatasetError::NonFinite { transfer: transfer.to_owned(), feature: SCHEMA[i].name, value: x[i] }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DAY_MS, HOUR_MS};
    use crate::features::{Value, F};

    #[test]
    fn korean_days_start_at_midnight_kst() {
        // 2018-08-08 00:00:00 KST is 2018-08-07 15:00 UTC.
        let midnight = EventTime::parse_kst("20180808000000").unwrap();
        assert_eq!(midnight.kst_day(), EventTime(midnight.millis() + DAY_MS - 1).kst_day());
        assert_eq!(EventTime(midnight.millis() - 1).kst_day() + 1, midnight.kst_day());
        assert_eq!(midnight.kst_day(), 17_751); // 2018-08-08 is day 17751 since 1970-01-01.
    }

    /// Labels known before a cutoff are the latest word before it: a report
    /// withdrawn after the cutoff still counts, one arriving after it does not.
    #[test]
    fn labels_known_before_a_cutoff_ignore_later_reports_and_withdrawals() {
        let t = |h: i64| EventTime(h * HOUR_MS);
        let mut c = Collected::default();
        for (at, id, status) in [
            (1, "A", LabelStatus::Fraud),
            (2, "B", LabelStatus::Fraud),
            (3, "B", LabelStatus::Cleared),
            (5, "A", LabelStatus::Cleared),
            (6, "C", LabelStatus::Fraud),
        ] {
            c.label_events.push((t(at), id.to_owned(), status));
            c.labels.insert(id.to_owned(), status);
        }
        c.typologies.insert("C".into(), "loan_fraud".into());
        let known = c.labels_known_before(t(4));
        assert_eq!(known.get("A"), Some(&LabelStatus::Fraud));
        assert_eq!(known.get("B"), Some(&LabelStatus::Cleared));
        assert_eq!(known.get("C"), None);
        assert!(!c.is_fraud("A") && c.is_fraud("C"));
        assert_eq!(c.typology("C"), Some("loan_fraud"));
        assert_eq!(c.typology("A"), None);
    }

    #[test]
    fn non_finite_features_are_refused_by_name() {
        let ok = FeatureVector::zeroed().with(&[(F::AMOUNT_VS_MAX, Value::Float(2.5))]);
        assert_eq!(finite("T1", &ok).unwrap()[F::AMOUNT_VS_MAX as usize], 2.5);
        let bad = FeatureVector::zeroed().with(&[(F::AMOUNT_LOG_ZSCORE, Value::Float(f64::NAN))]);
        let e = finite("T2", &bad).unwrap_err().to_string();
        assert!(e.contains("T2") && e.contains("amount_log_zscore") && e.contains("NaN"), "{e}");
    }
}
