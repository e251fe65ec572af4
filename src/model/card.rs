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
//! error, not a silently ignored setting); the threshold is a probability.

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
        let _ = writeln!(w, "\nfeatures ({}, in model order)", self.features.len());
        for (i, f) in self.features.iter().enumerate() {
            let _ = writeln!(w, "  {i:>3}  {f}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
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
}
