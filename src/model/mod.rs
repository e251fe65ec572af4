//! The trained model: loading and checking a model directory, scoring a feature
//! vector in the hot path, and naming the features that raised a score.
//!
//! This module owns the model's on-disk contract and its scoring arithmetic.
//! Training (linfa) lives in [`train`]; scoring never calls linfa. A fitted
//! model is kept as plain arrays: a logistic regression as its per-feature
//! transform, standardisation and weights; a tree ensemble flattened into a
//! struct of arrays (split feature, threshold, left and right child, node
//! value), walked by index, so a score is a few hundred predictable loads
//! with no allocation and no pointer chasing.
//!
//! A model is a directory, `models/NAME/`, holding two files written together:
//! - `model.json`: `format_version`, `algorithm`, the feature names in order,
//!   and the parameters as flat arrays;
//! - `card.toml`: the model card ([`card::Card`]): training data (files with
//!   their SHA-256, rows, fraud rate, time span), algorithm and parameters,
//!   validation metrics, the hold threshold and how it was chosen, date and
//!   engine version, and the SHA-256 of the `model.json` it describes.
//!
//! Guarantees:
//! - [`Model::load`] accepts a directory only if both files parse, the format
//!   version is supported, the feature list is exactly [`features::SCHEMA`](crate::features::SCHEMA)
//!   (names and order) in both, the card names this very `model.json` by its
//!   hash, and every array is consistent (lengths, child indexes pointing
//!   forward, finite numbers). Anything else is a [`ModelError`] naming the
//!   file and what is wrong; there is no partially loaded model.
//! - [`Model::save`] writes both files into a fresh directory beside the
//!   target and renames it into place, so a reader sees the old model or the
//!   new one, never a mix.
//! - Scores are fraud probabilities in [0, 1]: a logistic model's is its
//!   sigmoid, a forest's the mean over trees of the fraud share of the
//!   training transfers that reached the same leaf. A [`Model`] is immutable
//!   and `Send + Sync`: share one `Arc<Model>` across scoring threads.

pub mod card;
pub mod dataset;
pub mod drift;
pub mod evaluate;
pub mod quality;
pub mod train;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::features::{FeatureVector, N_FEATURES, SCHEMA};
use card::Card;

/// The running model, shared between the engine's workers and its watcher;
/// empty when rules alone decide.
pub type ModelHandle = Arc<ArcSwapOption<Model>>;

/// A running watch of a model directory.
pub type ModelWatcher = crate::reload::Watcher<Model>;

/// A handle holding `model`.
pub fn new_handle(model: Model) -> ModelHandle {
    Arc::new(ArcSwapOption::from_pointee(model))
}

/// Keep `handle` up to date with the model directory `dir`: its parent is
/// watched, because [`Model::save`] renames a whole new directory into place.
/// A directory that fails to load (a half-copied model, a card that does not
/// match, features of another build) is logged and counted, and the running
/// model stays.
pub fn watch(dir: &Path, handle: ModelHandle) -> Result<ModelWatcher, crate::reload::WatchError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::reload::watch(dir, parent, handle, crate::reload::WatchOptions::default())
}

impl crate::reload::Reloadable for Model {
    type Error = ModelError;
    const KIND: &'static str = "model";
    fn load(path: &Path) -> Result<Self, ModelError> {
        Model::load(path)
    }
    fn reload_key(&self) -> &str {
        &self.reload_key
    }
}

/// The `model.json` format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The model file inside a model directory.
pub const MODEL_FILE: &str = "model.json";
/// The model card inside a model directory.
pub const CARD_FILE: &str = "card.toml";
/// Marks a leaf in [`Forest::feature`].
pub const LEAF: u16 = u16::MAX;

/// Why a model directory was refused (or could not be written).
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}", path = path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}", path = path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is corrupt: {reason}", path = path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} has format_version {found}; this build reads format_version {supported}", path = path.display())]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
    #[error(
        "{path} was trained on other features than this engine computes: {detail}; retrain it with this build",
        path = path.display()
    )]
    FeatureMismatch { path: PathBuf, detail: String },
    #[error("{path} is inconsistent: {reason}", path = path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{card} does not describe {model}: {reason}", card = card.display(), model = model.display())]
    CardMismatch { card: PathBuf, model: PathBuf, reason: String },
}

/// A logistic regression: `p = sigmoid(intercept + sum_i weight_i * z_i)`,
/// `z_i = (t_i(x_i) - mean_i) / std_i`, with `t_i` the signed `ln(1 + |x|)`
/// where `log_scale_i` is set (counts, won and minutes span orders of
/// magnitude; their logarithm is what is linear in the log-odds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Whether feature `i` is log-scaled before standardising.
    pub log_scale: Vec<bool>,
    /// Mean of each (transformed) feature on the training rows.
    pub mean: Vec<f64>,
    /// Standard deviation of each (transformed) feature; never 0 (a constant
    /// feature gets 1).
    pub std: Vec<f64>,
    /// Weight of each standardised feature.
    pub weights: Vec<f64>,
    /// The log-odds with every feature at its mean.
    pub intercept: f64,
}

/// A tree ensemble as a struct of arrays. Node `i` splits on
/// `feature[i]` (`x <= threshold[i]` goes to `left[i]`, else `right[i]`) or is
/// a leaf (`feature[i] == LEAF`). `value[i]` is the fraud share of the
/// training transfers that reached node `i`, internal nodes included, which is
/// what [`Model::explain`] credits to each split. Children always come after
/// their parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    /// Each tree's root node.
    pub roots: Vec<u32>,
    /// The feature node `i` splits on, or [`LEAF`].
    pub feature: Vec<u16>,
    /// The split value of node `i`.
    pub threshold: Vec<f64>,
    /// Node `i`'s child for `x <= threshold` (unused for a leaf).
    pub left: Vec<u32>,
    /// Node `i`'s child for `x > threshold` (unused for a leaf).
    pub right: Vec<u32>,
    /// The fraud share of the training rows that reached node `i`, shrunk
    /// toward its parent's when few did; always in [0, 1].
    pub value: Vec<f64>,
}

/// The fitted parameters, tagged by algorithm in `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum Scorer {
    /// Logistic regression.
    Logistic(Logistic),
    /// Bagged decision trees.
    Forest(Forest),
}

impl Scorer {
    /// `logistic` or `forest`, as in the card.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Scorer::Logistic(_) => "logistic",
            Scorer::Forest(_) => "forest",
        }
    }

    /// The fraud probability of one numeric feature vector.
    #[inline]
    pub fn score(&self, x: &[f64; N_FEATURES]) -> f64 {
        match self {
            Scorer::Logistic(m) => sigmoid(m.logit_terms(x).1),
            Scorer::Forest(m) => m.score(x),
        }
    }

    /// Each feature's share of the score, and the base it adds to: log-odds
    /// for logistic (the base is the intercept), probability for a forest
    /// (the base is the mean root value). Base plus shares is the score
    /// (the logit of it, for logistic).
    pub fn contributions(&self, x: &[f64; N_FEATURES]) -> (f64, [f64; N_FEATURES]) {
        match self {
            Scorer::Logistic(m) => {
                let (terms, _) = m.logit_terms(x);
                (m.intercept, terms)
            }
            Scorer::Forest(m) => m.contributions(x),
        }
    }

    /// Check array lengths, indexes and numbers; the reason names the first problem.
    fn check(&self) -> Result<(), String> {
        match self {
            Scorer::Logistic(m) => m.check(),
            Scorer::Forest(m) => m.check(),
        }
    }
}

#[inline]
fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Signed `ln(1 + |x|)`: order-preserving, and tame on heavy tails.
#[inline]
pub fn signed_log1p(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

impl Logistic {
    /// Per-feature log-odds terms and the full logit.
    #[inline]
    fn logit_terms(&self, x: &[f64; N_FEATURES]) -> ([f64; N_FEATURES], f64) {
        let mut terms = [0.0; N_FEATURES];
        let mut z = self.intercept;
        for i in 0..N_FEATURES {
            let v = if self.log_scale[i] { signed_log1p(x[i]) } else { x[i] };
            terms[i] = self.weights[i] * (v - self.mean[i]) / self.std[i];
            z += terms[i];
        }
        (terms, z)
    }

    fn check(&self) -> Result<(), String> {
        for (name, len) in [
            ("log_scale", self.log_scale.len()),
            ("mean", self.mean.len()),
            ("std", self.std.len()),
            ("weights", self.weights.len()),
        ] {
            if len != N_FEATURES {
                return Err(format!("{name} has {len} entries, expected one per feature ({N_FEATURES})"));
            }
        }
        if let Some(i) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("std of `{}` is {}, expected a positive number", SCHEMA[i].name, self.std[i]));
        }
        if !self.intercept.is_finite() || self.mean.iter().chain(&self.weights).any(|v| !v.is_finite()) {
            return Err("a mean, weight or the intercept is not a finite number".into());
        }
        Ok(())
    }
}

impl Forest {
    /// The leaf `x` reaches from `root`, and the path's nodes through `visit`.
    #[inline]
    fn walk(&self, root: u32, x: &[f64; N_FEATURES], mut visit: impl FnMut(usize, usize)) -> usize {
        let mut n = root as usize;
        loop {
            let f = self.feature[n];
            if f == LEAF {
                return n;
            }
            let next = if x[usize::from(f)] <= self.threshold[n] { self.left[n] } else { self.right[n] } as usize;
            visit(n, next);
            n = next;
        }
    }

    #[inline]
    fn score(&self, x: &[f64; N_FEATURES]) -> f64 {
        let mut sum = 0.0;
        for &root in &self.roots {
            sum += self.value[self.walk(root, x, |_, _| {})];
        }
        sum / self.roots.len() as f64
    }

    /// Saabas path contributions: each split on the way to the leaf credits
    /// its feature with the change in fraud share it made, averaged over trees.
    fn contributions(&self, x: &[f64; N_FEATURES]) -> (f64, [f64; N_FEATURES]) {
        let mut c = [0.0; N_FEATURES];
        let mut base = 0.0;
        for &root in &self.roots {
            base += self.value[root as usize];
            self.walk(root, x, |from, to| {
                c[usize::from(self.feature[from])] += self.value[to] - self.value[from];
            });
        }
        let n = self.roots.len() as f64;
        c.iter_mut().for_each(|v| *v /= n);
        (base / n, c)
    }

    fn check(&self) -> Result<(), String> {
        let n = self.feature.len();
        for (name, len) in [
            ("threshold", self.threshold.len()),
            ("left", self.left.len()),
            ("right", self.right.len()),
            ("value", self.value.len()),
        ] {
            if len != n {
                return Err(format!("{name} has {len} entries, feature has {n}"));
            }
        }
        if self.roots.is_empty() {
            return Err("the forest has no trees".into());
        }
        if let Some(r) = self.roots.iter().find(|&&r| r as usize >= n) {
            return Err(format!("root {r} is past the last node ({n} nodes)"));
        }
        for i in 0..n {
            if !(self.value[i].is_finite() && (0.0..=1.0).contains(&self.value[i])) {
                return Err(format!("node {i}: value {} is not a fraud share in [0, 1]", self.value[i]));
            }
            if self.feature[i] == LEAF {
                continue;
            }
            if usize::from(self.feature[i]) >= N_FEATURES {
                return Err(format!("node {i}: split feature {} does not exist", self.feature[i]));
            }
            if !self.threshold[i].is_finite() {
                return Err(format!("node {i}: threshold is not a finite number"));
            }
            // Children after their parent: every walk moves forward and ends.
            for child in [self.left[i], self.right[i]] {
                if child as usize <= i || child as usize >= n {
                    return Err(format!("node {i}: child {child} is not a later node"));
                }
            }
        }
        Ok(())
    }
}

/// `model.json` as written.
#[derive(Debug, Serialize, Deserialize)]
struct ModelFile {
    format_version: u32,
    features: Vec<String>,
    #[serde(flatten)]
    scorer: Scorer,
}

/// Just enough of `model.json` to check the version and features before the rest.
#[derive(Deserialize)]
struct Header {
    format_version: u32,
    #[serde(default)]
    features: Option<Vec<String>>,
}

/// One feature's part in a score, for reason codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution {
    /// Index into [`features::SCHEMA`](crate::features::SCHEMA).
    pub feature: usize,
    /// Log-odds for a logistic model, probability for a forest.
    pub value: f64,
}

/// A loaded, checked model with its card.
#[derive(Debug, Clone)]
pub struct Model {
    scorer: Scorer,
    card: Card,
    /// The bytes of `model.json`, whose hash the card carries.
    json: String,
    version: String,
    /// What a reload compares: the model and its card.
    reload_key: String,
    reason_codes: Vec<String>,
}

/// The reason code a model reason is published under: `MODEL_` and the
/// feature name in upper case, e.g. `MODEL_AMOUNT_VS_AVG_30D`.
pub fn reason_code(feature: usize) -> String {
    format!("MODEL_{}", SCHEMA[feature].name.to_uppercase())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compare a stored feature list with the schema; the detail names the first difference.
pub fn check_features(names: &[String]) -> Result<(), String> {
    for (i, d) in SCHEMA.iter().enumerate() {
        match names.get(i) {
            Some(n) if n == d.name => {}
            Some(n) => return Err(format!("feature {i} is `{n}`, the engine's is `{}`", d.name)),
            None => {
                return Err(format!(
                    "{} features listed, the engine computes {N_FEATURES} (first missing: `{}`)",
                    names.len(),
                    d.name
                ))
            }
        }
    }
    if names.len() > N_FEATURES {
        return Err(format!(
            "{} features listed, the engine computes {N_FEATURES} (unknown: `{}`)",
            names.len(),
            names[N_FEATURES]
        ));
    }
    Ok(())
}

impl Model {
    /// A model from fitted parameters and its card; the card's `model_sha256`
    /// is set to the hash of the `model.json` this model writes.
    pub fn new(scorer: Scorer, mut card: Card) -> Result<Self, String> {
        scorer.check()?;
        let file = ModelFile {
            format_version: FORMAT_VERSION,
            features: SCHEMA.iter().map(|d| d.name.to_owned()).collect(),
            scorer,
        };
        let json = serde_json::to_string(&file).map_err(|e| e.to_string())?;
        card.model_sha256 = sha256_hex(json.as_bytes());
        card.algorithm = file.scorer.algorithm().to_owned();
        Ok(Self::assemble(file.scorer, card, json))
    }

    fn assemble(scorer: Scorer, card: Card, json: String) -> Self {
        let version = format!("{}-{}", card.name, &card.model_sha256[..12.min(card.model_sha256.len())]);
        // The card can change alone (an analyst moves the threshold): the
        // reload key covers both files.
        let reload_key = format!("{version}/{}", sha256_hex(card.to_toml().as_bytes()));
        Model { scorer, card, json, version, reload_key, reason_codes: (0..N_FEATURES).map(reason_code).collect() }
    }

    /// Load a model directory (or the directory of a `model.json` or
    /// `card.toml` path), checking everything the module promises.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")) } else { path };
        let model_path = dir.join(MODEL_FILE);
        let card_path = dir.join(CARD_FILE);
        let json =
            fs::read_to_string(&model_path).map_err(|source| ModelError::Read { path: model_path.clone(), source })?;
        let corrupt = |e: serde_json::Error| ModelError::Corrupt { path: model_path.clone(), reason: e.to_string() };
        let header: Header = serde_json::from_str(&json).map_err(corrupt)?;
        if header.format_version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedVersion {
                path: model_path,
                found: header.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let Some(features) = header.features else {
            return Err(ModelError::Corrupt { path: model_path, reason: "missing field `features`".into() });
        };
        check_features(&features).map_err(|detail| ModelError::FeatureMismatch { path: model_path.clone(), detail })?;
        let file: ModelFile = serde_json::from_str(&json).map_err(corrupt)?;
        file.scorer.check().map_err(|reason| ModelError::Invalid { path: model_path.clone(), reason })?;

        let card = Card::read(&card_path)?;
        check_features(&card.features)
            .map_err(|detail| ModelError::FeatureMismatch { path: card_path.clone(), detail })?;
        let mismatch =
            |reason: String| ModelError::CardMismatch { card: card_path.clone(), model: model_path.clone(), reason };
        let hash = sha256_hex(json.as_bytes());
        if card.model_sha256 != hash {
            return Err(mismatch(format!(
                "the card is for a model.json with SHA-256 {}, this one has {hash}",
                card.model_sha256
            )));
        }
        if card.algorithm != file.scorer.algorithm() {
            return Err(mismatch(format!(
                "the card says {}, the model is {}",
                card.algorithm,
                file.scorer.algorithm()
            )));
        }
        Ok(Self::assemble(file.scorer, card, json))
    }

    /// Write `model.json` and `card.toml` into `dir`, replacing a model there.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelError::Write { path, source }
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(write_err(parent))?;
        let staging = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir(&staging).map_err(write_err(&staging))?;
        let card_text = self.card.to_toml();
        fs::write(staging.join(MODEL_FILE), &self.json).map_err(write_err(&staging.join(MODEL_FILE)))?;
        fs::write(staging.join(CARD_FILE), card_text).map_err(write_err(&staging.join(CARD_FILE)))?;
        if dir.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(dir, &old).map_err(write_err(dir))?;
            fs::rename(&staging, dir).map_err(write_err(dir))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&staging, dir).map_err(write_err(dir))?;
        }
        Ok(())
    }

    /// The fraud probability of a transfer's features, in [0, 1].
    #[inline]
    pub fn score(&self, f: &FeatureVector) -> f64 {
        self.scorer.score(&f.to_f64())
    }

    /// The same, from the numeric view (training rows).
    #[inline]
    pub fn score_values(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.scorer.score(x)
    }

    /// The `k` features that raised this transfer's score most, largest
    /// first; features that lowered it are never reasons to hold.
    pub fn explain(&self, f: &FeatureVector, k: usize) -> Vec<Contribution> {
        let (_, c) = self.scorer.contributions(&f.to_f64());
        let mut top: Vec<Contribution> = c
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0.0)
            .map(|(feature, &value)| Contribution { feature, value })
            .collect();
        top.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.feature.cmp(&b.feature)));
        top.truncate(k);
        top
    }

    /// The score at or above which the model asks for a hold (chosen on a
    /// validation split, see the card's `[threshold]`).
    pub fn hold_threshold(&self) -> f64 {
        self.card.threshold.hold
    }

    /// `NAME-` and the first 12 hex digits of the model file's SHA-256: what a
    /// decision's `model_version` names.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The model card, as loaded.
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// The fitted parameters.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The reason code of a feature (see [`reason_code`]), without allocating.
    pub fn reason_code(&self, feature: usize) -> &str {
        &self.reason_codes[feature]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::{Value, F};

    /// A one-tree model ([`tiny_forest`]) named `name`, holding at `hold`:
    /// for tests elsewhere in the crate.
    pub(crate) fn tiny_model(name: &str, hold: f64) -> Model {
        let mut card = card::tests::sample();
        card.name = name.into();
        card.threshold.hold = hold;
        card.features = SCHEMA.iter().map(|d| d.name.to_owned()).collect();
        Model::new(Scorer::Forest(tiny_forest()), card).unwrap()
    }

    /// `model` with another card (its hash set to the model's).
    pub(crate) fn with_card(model: &Model, card: Card) -> Model {
        Model::new(model.scorer.clone(), card).unwrap()
    }

    /// One tree: amount <= 100 -> leaf 0.1, else payee_first_seen <= 0.5 -> 0.3 / 0.9.
    pub(crate) fn tiny_forest() -> Forest {
        Forest {
            roots: vec![0],
            feature: vec![F::AMOUNT as u16, LEAF, F::PAYEE_FIRST_SEEN as u16, LEAF, LEAF],
            threshold: vec![100.0, 0.0, 0.5, 0.0, 0.0],
            left: vec![1, 0, 3, 0, 0],
            right: vec![2, 0, 4, 0, 0],
            value: vec![0.2, 0.1, 0.5, 0.3, 0.9],
        }
    }

    #[test]
    fn forest_scores_by_leaf_and_explains_by_path() {
        let s = Scorer::Forest(tiny_forest());
        let small = FeatureVector::zeroed().with(&[(F::AMOUNT, Value::Int(50))]).to_f64();
        let big_new = FeatureVector::zeroed()
            .with(&[(F::AMOUNT, Value::Int(500)), (F::PAYEE_FIRST_SEEN, Value::Bool(true))])
            .to_f64();
        assert_eq!(s.score(&small), 0.1);
        assert_eq!(s.score(&big_new), 0.9);
        let (base, c) = s.contributions(&big_new);
        assert_eq!(base, 0.2);
        assert!((c[F::AMOUNT as usize] - 0.3).abs() < 1e-12);
        assert!((c[F::PAYEE_FIRST_SEEN as usize] - 0.4).abs() < 1e-12);
        assert!((base + c.iter().sum::<f64>() - s.score(&big_new)).abs() < 1e-12);
    }

    #[test]
    fn logistic_contributions_add_up_to_the_logit() {
        let mut weights = vec![0.0; N_FEATURES];
        weights[F::AMOUNT as usize] = 2.0;
        weights[F::IS_NIGHT as usize] = -1.0;
        let m = Logistic {
            log_scale: (0..N_FEATURES).map(|i| i == F::AMOUNT as usize).collect(),
            mean: vec![0.0; N_FEATURES],
            std: vec![1.0; N_FEATURES],
            weights,
            intercept: -3.0,
        };
        let x =
            FeatureVector::zeroed().with(&[(F::AMOUNT, Value::Int(1000)), (F::IS_NIGHT, Value::Bool(true))]).to_f64();
        let s = Scorer::Logistic(m);
        let (base, c) = s.contributions(&x);
        let logit = base + c.iter().sum::<f64>();
        assert!((logit - (-3.0 + 2.0 * 1001f64.ln() - 1.0)).abs() < 1e-9);
        assert!((s.score(&x) - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-12);
    }

    #[test]
    fn inconsistent_forests_are_refused() {
        let mut f = tiny_forest();
        f.left[2] = 1; // points backwards: a walk could loop
        assert!(f.check().unwrap_err().contains("node 2"));
        let mut f = tiny_forest();
        f.value[4] = 1.5;
        assert!(f.check().unwrap_err().contains("fraud share"));
        let mut f = tiny_forest();
        f.threshold.pop();
        assert!(f.check().unwrap_err().contains("threshold"));
    }

    #[test]
    fn feature_lists_must_match_the_schema_by_name_and_order() {
        let mut names: Vec<String> = SCHEMA.iter().map(|d| d.name.to_owned()).collect();
        assert!(check_features(&names).is_ok());
        names.swap(1, 2);
        assert!(check_features(&names).unwrap_err().contains("feature 1 is `is_night`"));
        names.swap(1, 2);
        names.pop();
        assert!(check_features(&names).unwrap_err().contains("first missing"));
    }

    #[test]
    fn reason_codes_are_the_upper_case_feature_names() {
        assert_eq!(reason_code(F::AMOUNT_VS_AVG_30D as usize), "MODEL_AMOUNT_VS_AVG_30D");
    }
}
