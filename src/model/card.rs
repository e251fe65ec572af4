//! The model card: what a model was trained on, how well it did on data it
//! did not see, and where its hold threshold comes from.
//!
//! This module owns `card.toml`, the machine-readable card that sits beside
//! `model.json` (see [`crate::model`]), and its human rendering for
//! `fds model show`. The card is part of the model: [`crate::model::Model::load`]
//! refuses a directory whose card does not name its `model.json` by SHA-256,
//! so the threshold the engine uses is always the one chosen for that model.
//!
//! Guarantees: unknown keys are refused (a typo in a hand-edited card is an
//! error, not a silently ignored setting); the threshold is a probability;
//! the optional score reference ([`ScoreReference`], what
//! `fds_model_score_psi` compares live scores with) has exactly the bins of
//! [`SCORE_BINS`] and at least one score.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModelError;

/// The `card.toml` format this build reads and writes.
pub const CARD_VERSION: u32 = 1;

/// One input file of the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// The path as given to `fds train`.
    pub path: String,
    /// SHA-256 of its bytes, so a card names exactly the data it came from.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl DataFile {
    /// Hash a file as it is on disk.
    pub fn of(path: &Path) -> std::io::Result<DataFile> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let bytes = std::io::copy(&mut file, &mut hasher)?;
        let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(DataFile { path: path.display().to_string(), sha256, bytes })
    }
}

/// What the model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// The streams replayed, in order.
    pub files: Vec<DataFile>,
    /// The rule directory the replay ran with (it shapes `mins_since_hold`).
    pub rules: String,
    /// The rule set's version at the start of the replay.
    pub ruleset_version: String,
    /// Transfers in the training rows, the validation split included.
    pub rows: u64,
    /// Of `rows`, those labelled fraud.
    pub frauds: u64,
    /// `frauds / rows`.
    pub fraud_rate: f64,
    /// First training transfer, KST.
    pub from: String,
    /// Last training transfer, KST.
    pub to: String,
    /// Transfers replayed before `from` only to build state.
    pub warmup_transfers: u64,
    /// Wall-clock seconds of training: the validation fit, the threshold and
    /// the final fit (not the replay).
    pub seconds: f64,
}

/// Quality on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// How the split was made.
    pub method: String,
    /// Transfers in the split.
    pub rows: u64,
    /// Of those, labelled fraud.
    pub frauds: u64,
    /// Area under the ROC curve.
    pub auc_roc: f64,
    /// Average precision (area under the precision-recall curve).
    pub average_precision: f64,
    /// The handbook's card precision@100 over the split's days (accounts as cards).
    pub card_precision_at_100: f64,
    /// Share of the split's transfers held at the threshold that are fraud.
    pub precision_at_threshold: f64,
    /// Share of the split's frauds the threshold holds.
    pub recall_at_threshold: f64,
}

/// The hold threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Hold when the score is at or above this.
    pub hold: f64,
    /// How it was chosen, in words.
    pub chosen_by: String,
    /// The precision on validation the threshold was to reach; `chosen_by`
    /// says whether it did.
    pub target_precision: f64,
}

/// The upper bounds of the score bins: twenty of width 0.05, bin `i`
/// holding the scores `s` with `SCORE_BINS[i - 1] < s <= SCORE_BINS[i]` (the
/// first from 0). The one definition: the buckets of the `fds_model_score`
/// histogram ([`crate::metrics`]) and a card's [`ScoreReference`] are these.
pub const SCORE_BINS: [f64; 20] =
    [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0];

/// The bin of [`SCORE_BINS`] a score falls in (a Prometheus bucket's `le`
/// rule: a score on a bound belongs to the bin below it). Scores outside
/// [0, 1] (never made) go to the first or the last bin.
pub fn score_bin(score: f64) -> usize {
    SCORE_BINS.iter().position(|&upper| score <= upper).unwrap_or(SCORE_BINS.len() - 1)
}

/// The model's scores on the data its threshold was chosen on, binned: the
/// reference live scores are compared with (`fds_model_score_psi`).
///
/// Written by `fds train` from the validation split: the most recent rows,
/// scored by the model fitted on the older ones (the scores the threshold was
/// chosen on), so it is the distribution of out-of-sample scores, which is
/// what live traffic gives. Optional: a card written before it existed loads
/// without it, and no drift is computed for that model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreReference {
    /// Which scores, in words.
    pub data: String,
    /// The bins' upper bounds: always [`SCORE_BINS`].
    pub upper_bounds: Vec<f64>,
    /// How many of the scores fell in each bin.
    pub counts: Vec<u64>,
}

impl ScoreReference {
    /// Bin `scores` (described by `data`).
    pub fn of(data: &str, scores: &[f64]) -> ScoreReference {
        let mut counts = vec![0u64; SCORE_BINS.len()];
        for &s in scores {
            counts[score_bin(s)] += 1;
        }
        ScoreReference { data: data.to_owned(), upper_bounds: SCORE_BINS.to_vec(), counts }
    }

    /// The share of the scores in each bin (summing to 1).
    pub fn fractions(&self) -> [f64; SCORE_BINS.len()] {
        let total = self.counts.iter().sum::<u64>().max(1) as f64;
        std::array::from_fn(|i| self.counts.get(i).map_or(0.0, |&c| c as f64 / total))
    }

    /// Why the reference cannot be used, if it cannot.
    fn problem(&self) -> Option<String> {
        let same_bins = self.upper_bounds.len() == SCORE_BINS.len()
            && self.upper_bounds.iter().zip(SCORE_BINS).all(|(a, b)| (a - b).abs() < 1e-9);
        if !same_bins {
            return Some(format!(
                "score_reference.upper_bounds must be the {} bins of width 0.05 up to 1.0 that fds_model_score uses",
                SCORE_BINS.len()
            ));
        }
        if self.counts.len() != SCORE_BINS.len() {
            return Some(format!(
                "score_reference.counts has {} entries, one per bin ({}) expected",
                self.counts.len(),
                SCORE_BINS.len()
            ));
        }
        if self.counts.iter().all(|&c| c == 0) {
            return Some("score_reference.counts are all 0".into());
        }
        None
    }
}

/// The whole card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// The card format's version; another is refused.
    pub card_version: u32,
    /// The model's name: its directory's name.
    pub name: String,
    /// SHA-256 of the `model.json` this card describes.
    pub model_sha256: String,
    /// `forest` or `logistic`, as in `model.json`.
    pub algorithm: String,
    /// UTC, RFC 3339.
    pub created: String,
    /// The fds version that trained it.
    pub engine_version: String,
    /// Feature names in model order (must be the engine's schema).
    pub features: Vec<String>,
    /// Training parameters, by name.
    pub parameters: toml::Table,
    /// Where the rows came from.
    pub training: Training,
    /// How it did on held-out rows.
    pub validation: Validation,
    /// When it holds.
    pub threshold: Threshold,
    /// The validation scores, binned (absent from cards written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_reference: Option<ScoreReference>,
}

impl Card {
    /// Read and check a `card.toml`.
    pub fn read(path: &Path) -> Result<Card, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
        Card::parse(&text, path)
    }

    /// Parse a card's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Card, ModelError> {
        let corrupt = |reason: String| ModelError::Corrupt { path: PathBuf::from(path), reason };
        let card: Card = toml::from_str(text).map_err(|e| corrupt(e.message().to_owned()))?;
        if card.card_version != CARD_VERSION {
            return Err(ModelError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: card.card_version,
                supported: CARD_VERSION,
            });
        }
        let t = card.threshold.hold;
        if !(t.is_finite() && (0.0..=1.0).contains(&t)) {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                reason: format!("threshold.hold = {t} is not a probability in [0, 1]"),
            });
        }
        if let Some(reason) = card.score_reference.as_ref().and_then(ScoreReference::problem) {
            return Err(ModelError::Invalid { path: path.to_path_buf(), reason });
        }
        Ok(card)
    }

    /// The card as written to `card.toml`.
    pub fn to_toml(&self) -> String {
        let header = "# Model card (fds). Written by `fds train`; `fds model show` prints it.\n\
                      # The engine refuses this directory if this card and model.json disagree.\n\n";
        format!("{header}{}", toml::to_string_pretty(self).expect("a card always serializes"))
    }

    /// The card as a person reads it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let t = &self.training;
        let v = &self.validation;
        let _ = writeln!(w, "model {}  ({})", self.name, self.algorithm);
        let _ = writeln!(w, "  created {}  by fds {}", self.created, self.engine_version);
        let _ = writeln!(w, "  model.json SHA-256 {}", self.model_sha256);
        let _ = writeln!(w, "\ntraining data");
        for f in &t.files {
            let _ = writeln!(w, "  {}  ({} bytes, SHA-256 {})", f.path, f.bytes, f.sha256);
        }
        let _ = writeln!(w, "  rules {} ({})", t.rules, t.ruleset_version);
        let _ = writeln!(
            w,
            "  rows {}  frauds {}  fraud rate {:.3}%  from {} to {} KST",
            t.rows,
            t.frauds,
            100.0 * t.fraud_rate,
            t.from,
            t.to
        );
        if t.warmup_transfers > 0 {
            let _ = writeln!(w, "  {} earlier transfers only built state", t.warmup_transfers);
        }
        let _ = writeln!(w, "  trained in {:.1} s", t.seconds);
        let _ = writeln!(w, "\nparameters");
        for (k, val) in &self.parameters {
            let _ = writeln!(w, "  {k} = {val}");
        }
        let _ = writeln!(w, "\nvalidation ({})", v.method);
        let _ = writeln!(w, "  rows {}  frauds {}", v.rows, v.frauds);
        let _ = writeln!(
            w,
            "  AUC ROC {:.3}   average precision {:.3}   card precision@100 {:.3}",
            v.auc_roc, v.average_precision, v.card_precision_at_100
        );
        let _ = writeln!(w, "\nhold threshold {:.6}", self.threshold.hold);
        let _ = writeln!(w, "  {}", self.threshold.chosen_by);
        let _ = writeln!(
            w,
            "  on validation: precision {:.1}%  recall {:.1}%",
            100.0 * v.precision_at_threshold,
            100.0 * v.recall_at_threshold
        );
        if let Some(r) = &self.score_reference {
            let _ = writeln!(w, "\nscore reference ({})", r.data);
            let fractions = r.fractions();
            let _ = writeln!(w, "  {} scores; share per bin:", r.counts.iter().sum::<u64>());
            for (i, (upper, share)) in SCORE_BINS.iter().zip(fractions).enumerate() {
                let lower = if i == 0 { 0.0 } else { SCORE_BINS[i - 1] };
                let _ = writeln!(w, "  {lower:.2}..{upper:.2}  {:>8.4}%  {}", 100.0 * share, r.counts[i]);
            }
        }
        let _ = writeln!(w, "\nfeatures ({}, in model order)", self.features.len());
        for (i, f) in self.features.iter().enumerate() {
            let _ = writeln!(w, "  {i:>3}  {f}");
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Card {
        Card {
            card_version: CARD_VERSION,
            name: "t".into(),
            model_sha256: "00".into(),
            algorithm: "forest".into(),
            created: "2026-01-01T00:00:00Z".into(),
            engine_version: "0.1.0".into(),
            features: vec!["amount".into()],
            parameters: toml::Table::from_iter([("trees".to_owned(), toml::Value::Integer(3))]),
            training: Training {
                files: vec![],
                rules: "rules".into(),
                ruleset_version: "rs-x".into(),
                rows: 10,
                frauds: 1,
                fraud_rate: 0.1,
                from: "a".into(),
                to: "b".into(),
                warmup_transfers: 0,
                seconds: 1.0,
            },
            validation: Validation {
                method: "m".into(),
                rows: 5,
                frauds: 1,
                auc_roc: 0.9,
                average_precision: 0.5,
                card_precision_at_100: 0.01,
                precision_at_threshold: 1.0,
                recall_at_threshold: 1.0,
            },
            threshold: Threshold { hold: 0.5, chosen_by: "x".into(), target_precision: 0.5 },
            score_reference: None,
        }
    }

    #[test]
    fn a_card_round_trips_and_unknown_keys_or_bad_thresholds_are_refused() {
        let card = sample();
        let text = card.to_toml();
        assert_eq!(Card::parse(&text, Path::new("c.toml")).unwrap(), card);
        let typo = text.replace("target_precision", "target_precison");
        assert!(matches!(Card::parse(&typo, Path::new("c.toml")), Err(ModelError::Corrupt { .. })));
        let bad = text.replace("hold = 0.5", "hold = 1.5");
        let e = Card::parse(&bad, Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("threshold.hold = 1.5"), "{e}");
    }

    #[test]
    fn scores_fall_in_bins_by_their_upper_bound() {
        assert_eq!(score_bin(0.0), 0);
        assert_eq!(score_bin(0.05), 0, "a score on a bound is in the bin below it, as Prometheus' le");
        assert_eq!(score_bin(0.050001), 1);
        assert_eq!(score_bin(0.999), 19);
        assert_eq!(score_bin(1.0), 19);
        assert_eq!(score_bin(f64::NAN), 19);
        assert!(SCORE_BINS.windows(2).all(|w| w[0] < w[1]));
        for (i, b) in SCORE_BINS.iter().enumerate() {
            assert!((b - 0.05 * (i + 1) as f64).abs() < 1e-12);
        }
    }

    #[test]
    fn a_score_reference_round_trips_is_optional_and_is_checked() {
        let mut card = sample();
        let without = card.to_toml();
        assert!(!without.contains("score_reference"), "{without}");
        card.score_reference = Some(ScoreReference::of("validation", &[0.01, 0.02, 0.05, 0.3, 1.0]));
        let r = card.score_reference.as_ref().unwrap();
        assert_eq!(r.counts[0], 3);
        assert_eq!((r.counts[5], r.counts[19]), (1, 1));
        assert_eq!(r.fractions()[0], 0.6);
        let text = card.to_toml();
        assert!(text.contains("[score_reference]"), "{text}");
        assert_eq!(Card::parse(&text, Path::new("c.toml")).unwrap(), card);
        assert!(card.render().contains("score reference (validation)"));
        let short = text.replace("1.0,\n]", "]");
        assert_ne!(short, text);
        let e = Card::parse(&short, Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("upper_bounds"), "{e}");
        let mut zero = card.clone();
        zero.score_reference.as_mut().unwrap().counts = vec![0; 20];
        let e = Card::parse(&zero.to_toml(), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("all 0"), "{e}");
    }
}
