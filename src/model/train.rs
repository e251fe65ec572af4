//! Training: point-in-time rows and their labels in, a checked [`Model`] with
//! its card out.
//!
//! This module owns the fitting (with linfa) and the choices around it: the
//! validation split, the hold threshold, and the translation of linfa's fitted
//! objects into the flat arrays [`crate::model`] scores with.
//!
//! - **Logistic regression** (linfa-logistic, L2-regularised): counts, won and
//!   minutes are put on a signed log scale, every feature is standardised, and
//!   the weights are kept with the standardisation.
//! - **Forest**: balanced bagging of linfa-trees decision trees. Each tree sees
//!   a bootstrap of the frauds, a random sample of genuine transfers
//!   (`negatives_per_fraud` per fraud) and a random subset of the features;
//!   linfa-ensemble samples rows uniformly, which at a fraud rate under 1%
//!   gives trees that hardly see fraud, so the bagging is done here. A linfa
//!   tree predicts a class, but the engine needs a graded score, so every
//!   training row is routed through each fitted tree and each node keeps the
//!   fraud share of the rows that reached it (shrunk toward its parent's when
//!   few did). The forest's score is the mean leaf share over trees.
//!
//! Guarantees: training is deterministic for a seed (trees are fitted on
//! several threads, each from its own seeded generator); the validation split
//! is the most recent part of the training rows by time, so it measures the
//! model on transfers after the ones it learned from, and the threshold is
//! chosen there, never on test data (the card keeps those validation scores,
//! binned, as the reference live scores are compared with:
//! [`ScoreReference`]); bad input (no labels, one class, a
//! validation split without both classes, NaN features) is a [`TrainError`]
//! and nothing is written.

use std::time::Instant;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::card::{Card, DataFile, ScoreReference, Threshold, Training, Validation, CARD_VERSION};
use super::dataset::Row;
use super::quality::{self, CardScore};
use super::{Forest, Logistic, Model, Scorer, LEAF};
use crate::features::{FeatureType, N_FEATURES, SCHEMA};

/// Why no model was trained. Nothing was written.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no labels: the data has {rows} transfers and not one fraud report, so there is nothing to learn")]
    NoLabels { rows: usize },
    #[error("only one class: {frauds} of {rows} transfers are fraud; training needs both fraud and genuine transfers")]
    SingleClass { rows: usize, frauds: usize },
    #[error(
        "the validation split (the last {rows} transfers by time) has {frauds} frauds; it needs both classes \
         to choose the threshold: train on more data or change --validation-fraction"
    )]
    ValidationSplit { rows: usize, frauds: usize },
    #[error("invalid parameter {name}: {reason}")]
    Parameter { name: &'static str, reason: String },
    #[error("{algorithm} training failed: {reason}")]
    Fit { algorithm: &'static str, reason: String },
}

/// The algorithms `fds train` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Logistic regression on signed-log, standardised features.
    Logistic,
    /// Balanced bagging of decision trees.
    Forest,
}

impl Algorithm {
    /// Every algorithm, as the command line offers them.
    pub const ALL: [Algorithm; 2] = [Algorithm::Logistic, Algorithm::Forest];

    /// The name on the command line and in model cards.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Logistic => "logistic",
            Algorithm::Forest => "forest",
        }
    }
}

/// The default algorithm: the forest ranked better than logistic regression
/// on every handbook week it was validated on (see the README's figures).
pub const DEFAULT_ALGORITHM: Algorithm = Algorithm::Forest;

/// Forest hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForestParams {
    /// Trees in the forest.
    pub trees: usize,
    /// Deepest split of a tree.
    pub max_depth: usize,
    /// Genuine transfers sampled per fraud for each tree.
    pub negatives_per_fraud: f64,
    /// Share of the features each tree may split on.
    pub feature_fraction: f64,
    /// Fewest sampled rows in a leaf.
    pub min_leaf: f32,
    /// Pseudo-rows pulling a node's fraud share toward its parent's.
    pub shrinkage: f64,
}

impl Default for ForestParams {
    fn default() -> Self {
        // Chosen on the handbook weeks starting 2018-07-04 and 2018-06-13
        // (never the default test week): 20 negatives per fraud lifted average
        // precision most; 50 trees of depth 12 keep a score near 1 µs.
        // Re-checked on the 54-feature schema on the weeks starting 2018-06-01,
        // 06-13 and 07-04: 10 or 40 negatives, depth 16, 70% of the features
        // or 100 trees each moved the mean figures by 0.01 or less, either way.
        ForestParams {
            trees: 50,
            max_depth: 12,
            negatives_per_fraud: 20.0,
            feature_fraction: 0.5,
            min_leaf: 3.0,
            shrinkage: 5.0,
        }
    }
}

/// Logistic regression hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticParams {
    /// L2 penalty.
    pub alpha: f64,
    /// Iterations of the solver, at most.
    pub max_iterations: u64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams { alpha: 1.0, max_iterations: 300 }
    }
}

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// Which model to fit.
    pub algorithm: Algorithm,
    /// Used when `algorithm` is the forest.
    pub forest: ForestParams,
    /// Used when `algorithm` is logistic.
    pub logistic: LogisticParams,
    /// Seeds sampling: the same rows and seed give the same model.
    pub seed: u64,
    /// The most recent share of the rows, held out to validate and to choose the threshold.
    pub validation_fraction: f64,
    /// The threshold is the lowest score whose holds reach this precision on validation.
    pub target_precision: f64,
    /// Training threads for the forest.
    pub threads: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            algorithm: DEFAULT_ALGORITHM,
            forest: ForestParams::default(),
            logistic: LogisticParams::default(),
            seed: 42,
            validation_fraction: 0.2,
            target_precision: 0.5,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl TrainOptions {
    fn check(&self) -> Result<(), TrainError> {
        let bad = |name, reason: &str| Err(TrainError::Parameter { name, reason: reason.to_owned() });
        let f = &self.forest;
        if f.trees == 0 || f.trees > 10_000 {
            return bad("trees", "must be between 1 and 10000");
        }
        if f.max_depth == 0 || f.max_depth > 40 {
            return bad("max_depth", "must be between 1 and 40");
        }
        if !(f.negatives_per_fraud > 0.0 && f.negatives_per_fraud.is_finite()) {
            return bad("negatives_per_fraud", "must be a positive number");
        }
        if !(f.feature_fraction > 0.0 && f.feature_fraction <= 1.0) {
            return bad("feature_fraction", "must be in (0, 1]");
        }
        if !(f.min_leaf >= 1.0 && f.min_leaf.is_finite() && f.shrinkage >= 0.0 && f.shrinkage.is_finite()) {
            return bad("min_leaf", "min_leaf must be at least 1 and shrinkage a non-negative number");
        }
        if !(self.logistic.alpha >= 0.0 && self.logistic.alpha.is_finite()) || self.logistic.max_iterations == 0 {
            return bad("alpha", "alpha must be a non-negative number and max_iterations positive");
        }
        if !(self.validation_fraction > 0.0 && self.validation_fraction < 1.0) {
            return bad("validation_fraction", "must be in (0, 1)");
        }
        if !(self.target_precision > 0.0 && self.target_precision <= 1.0) {
            return bad("target_precision", "must be in (0, 1]");
        }
        Ok(())
    }

    /// The parameters that shaped the model, for its card.
    pub fn parameters(&self) -> toml::Table {
        use toml::Value::{Float, Integer};
        let mut t = toml::Table::new();
        match self.algorithm {
            Algorithm::Forest => {
                let f = &self.forest;
                t.insert("trees".into(), Integer(f.trees as i64));
                t.insert("max_depth".into(), Integer(f.max_depth as i64));
                t.insert("negatives_per_fraud".into(), Float(f.negatives_per_fraud));
                t.insert("feature_fraction".into(), Float(f.feature_fraction));
                t.insert("min_leaf".into(), Float(f64::from(f.min_leaf)));
                t.insert("shrinkage".into(), Float(f.shrinkage));
                t.insert("split_quality".into(), toml::Value::String("gini".into()));
            }
            Algorithm::Logistic => {
                t.insert("alpha".into(), Float(self.logistic.alpha));
                t.insert("max_iterations".into(), Integer(self.logistic.max_iterations as i64));
                t.insert(
                    "transform".into(),
                    toml::Value::String("signed log1p of non-boolean features, then standardised".into()),
                );
            }
        }
        t.insert("seed".into(), Integer(self.seed as i64));
        t.insert("validation_fraction".into(), Float(self.validation_fraction));
        t
    }
}

/// What the card says about where the rows came from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The model's name (its directory's).
    pub name: String,
    /// The streams replayed, hashed.
    pub files: Vec<DataFile>,
    /// The rule directory the replay ran with.
    pub rules: String,
    /// Its version.
    pub ruleset_version: String,
    /// Transfers replayed only to build state.
    pub warmup_transfers: u64,
    /// Fraud reports the stream carried (to tell "no labels" from "no fraud").
    pub labels_in_stream: usize,
}

impl Provenance {
    /// Hash the input files and name the rules, for a model trained on them.
    pub fn new(name: &str, files: &[std::path::PathBuf], rules: &str, ruleset_version: &str) -> std::io::Result<Self> {
        Ok(Provenance {
            name: name.to_owned(),
            files: files.iter().map(|f| DataFile::of(f)).collect::<std::io::Result<_>>()?,
            rules: rules.to_owned(),
            ruleset_version: ruleset_version.to_owned(),
            warmup_transfers: 0,
            labels_in_stream: 0,
        })
    }
}

/// Fit the chosen algorithm on `x`, `y` (both classes present).
pub fn fit(x: &[[f64; N_FEATURES]], y: &[bool], opts: &TrainOptions) -> Result<Scorer, TrainError> {
    opts.check()?;
    match opts.algorithm {
        Algorithm::Logistic => fit_logistic(x, y, &opts.logistic).map(Scorer::Logistic),
        Algorithm::Forest => fit_forest(x, y, &opts.forest, opts.seed, opts.threads).map(Scorer::Forest),
    }
}

/// Train on `rows` (in time order) with labels `y`: fit on the older part,
/// validate and choose the threshold on the most recent part, then refit on
/// all rows with the same parameters and keep that threshold.
pub fn train(rows: &[Row], y: &[bool], opts: &TrainOptions, from: &Provenance) -> Result<Model, TrainError> {
    assert_eq!(rows.len(), y.len(), "one label per row");
    opts.check()?;
    let started = Instant::now();
    let frauds = y.iter().filter(|&&f| f).count();
    if frauds == 0 && from.labels_in_stream == 0 {
        return Err(TrainError::NoLabels { rows: rows.len() });
    }
    if frauds == 0 || frauds == rows.len() {
        return Err(TrainError::SingleClass { rows: rows.len(), frauds });
    }
    let x: Vec<[f64; N_FEATURES]> = rows.iter().map(|r| r.features).collect();
    let cut = ((rows.len() as f64) * (1.0 - opts.validation_fraction)).round() as usize;
    let (fit_y, val_y) = y.split_at(cut);
    let val_frauds = val_y.iter().filter(|&&f| f).count();
    if val_frauds == 0 || val_frauds == val_y.len() {
        return Err(TrainError::ValidationSplit { rows: val_y.len(), frauds: val_frauds });
    }
    let fit_frauds = fit_y.iter().filter(|&&f| f).count();
    if fit_frauds == 0 || fit_frauds == fit_y.len() {
        return Err(TrainError::SingleClass { rows: fit_y.len(), frauds: fit_frauds });
    }
    let held_out = fit(&x[..cut], fit_y, opts)?;
    let val_scores: Vec<f64> = x[cut..].iter().map(|r| held_out.score(r)).collect();
    let cards: Vec<CardScore<'_>> = rows[cut..]
        .iter()
        .zip(&val_scores)
        .zip(val_y)
        .map(|((r, &score), &fraud)| CardScore { day: r.kst_day(), card: &r.account, score, fraud })
        .collect();
    let (hold, chosen_by) = match quality::threshold_for_precision(&val_scores, val_y, opts.target_precision) {
        Some(t) => (
            t,
            format!(
                "the lowest validation score whose holds reach {:.0}% precision (highest recall at that precision)",
                100.0 * opts.target_precision
            ),
        ),
        None => {
            let t = top_share_threshold(&val_scores, 0.005);
            (t, format!("no threshold reached {:.0}% precision on validation; the score of the top 0.5% of validation transfers (alert budget)", 100.0 * opts.target_precision))
        }
    };
    let (precision, recall) = quality::precision_recall_at(&val_scores, val_y, hold);
    let validation = Validation {
        method: format!(
            "the most recent {:.0}% of the training rows by time, scored by a model fitted on the older {:.0}% \
             with the same parameters",
            100.0 * opts.validation_fraction,
            100.0 * (1.0 - opts.validation_fraction)
        ),
        rows: val_y.len() as u64,
        frauds: val_frauds as u64,
        auc_roc: quality::auc_roc(&val_scores, val_y).unwrap_or(f64::NAN),
        average_precision: quality::average_precision(&val_scores, val_y).unwrap_or(f64::NAN),
        card_precision_at_100: quality::card_precision_at_k(&cards, 100).unwrap_or(0.0),
        precision_at_threshold: precision,
        recall_at_threshold: recall,
    };
    // The scores the threshold was chosen on, binned: what live scores are
    // compared with (`fds_model_score_psi`).
    let score_reference = ScoreReference::of(
        &format!(
            "the validation split ({} rows), scored by the model fitted on the older {:.0}% of the rows: \
             the scores the threshold was chosen on",
            val_y.len(),
            100.0 * (1.0 - opts.validation_fraction)
        ),
        &val_scores,
    );
    let scorer = fit(&x, y, opts)?;
    let card = Card {
        card_version: CARD_VERSION,
        name: from.name.clone(),
        model_sha256: String::new(),
        algorithm: opts.algorithm.name().to_owned(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        engine_version: env!("CARGO_PKG_VERSION").to_owned(),
        features: SCHEMA.iter().map(|d| d.name.to_owned()).collect(),
        parameters: opts.parameters(),
        training: Training {
            files: from.files.clone(),
            rules: from.rules.clone(),
            ruleset_version: from.ruleset_version.clone(),
            rows: rows.len() as u64,
            frauds: frauds as u64,
            fraud_rate: frauds as f64 / rows.len() as f64,
            from: rows.first().map(|r| r.time.human()).unwrap_or_default(),
            to: rows.last().map(|r| r.time.human()).unwrap_or_default(),
            warmup_transfers: from.warmup_transfers,
            seconds: started.elapsed().as_secs_f64(),
        },
        validation,
        threshold: Threshold { hold, chosen_by, target_precision: opts.target_precision },
        score_reference: Some(score_reference),
    };
    Model::new(scorer, card).map_err(|reason| TrainError::Fit { algorithm: opts.algorithm.name(), reason })
}

/// The score above which the top `share` of `scores` lie.
fn top_share_threshold(scores: &[f64], share: f64) -> f64 {
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let k = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

fn fit_logistic(x: &[[f64; N_FEATURES]], y: &[bool], p: &LogisticParams) -> Result<Logistic, TrainError> {
    let log_scale: Vec<bool> = SCHEMA.iter().map(|d| d.kind != FeatureType::Bool).collect();
    let n = x.len() as f64;
    let t = |i: usize, v: f64| if log_scale[i] { super::signed_log1p(v) } else { v };
    let mut mean = vec![0.0; N_FEATURES];
    let mut std = vec![0.0; N_FEATURES];
    for row in x {
        for i in 0..N_FEATURES {
            mean[i] += t(i, row[i]) / n;
        }
    }
    for row in x {
        for i in 0..N_FEATURES {
            std[i] += (t(i, row[i]) - mean[i]).powi(2) / n;
        }
    }
    // A constant feature carries nothing; scale 1 keeps its (zero) term finite.
    std.iter_mut().for_each(|s| *s = if *s > 1e-12 { s.sqrt() } else { 1.0 });
    let z = Array2::from_shape_fn((x.len(), N_FEATURES), |(r, i)| (t(i, x[r][i]) - mean[i]) / std[i]);
    let data = Dataset::new(z, Array1::from(y.to_vec()));
    let fitted = LogisticRegression::default()
        .alpha(p.alpha)
        .max_iterations(p.max_iterations)
        .fit(&data)
        .map_err(|e| TrainError::Fit { algorithm: "logistic", reason: e.to_string() })?;
    // linfa's positive class is whichever label is more frequent: genuine here.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let weights: Vec<f64> = fitted.params().iter().map(|w| sign * w).collect();
    let intercept = sign * fitted.intercept();
    if !intercept.is_finite() || weights.iter().any(|w| !w.is_finite()) {
        return Err(TrainError::Fit { algorithm: "logistic", reason: "the fit diverged (non-finite weights)".into() });
    }
    Ok(Logistic { log_scale, mean, std, weights, intercept })
}

/// One tree before it joins the forest: nodes in pre-order, children after parents.
#[derive(Debug, Default)]
struct FlatTree {
    feature: Vec<u16>,
    threshold: Vec<f64>,
    left: Vec<u32>,
    right: Vec<u32>,
    value: Vec<f64>,
}

impl FlatTree {
    /// Append `node` and its subtree; `columns` maps the tree's feature
    /// indexes (into its feature subset) to schema indexes.
    fn push(&mut self, node: &TreeNode<f64, bool>, columns: &[usize]) -> u32 {
        let id = self.feature.len();
        self.feature.push(LEAF);
        self.threshold.push(0.0);
        self.left.push(0);
        self.right.push(0);
        self.value.push(0.0);
        let children = node.children();
        if let (false, Some(l), Some(r)) = (node.is_leaf(), children[0].as_deref(), children[1].as_deref()) {
            let (f, threshold, _) = node.split();
            self.feature[id] = columns[f] as u16;
            self.threshold[id] = threshold;
            self.left[id] = self.push(l, columns);
            self.right[id] = self.push(r, columns);
        }
        id as u32
    }

    fn leaf_of(&self, x: &[f64; N_FEATURES], visit: &mut impl FnMut(usize)) {
        let mut n = 0usize;
        loop {
            visit(n);
            if self.feature[n] == LEAF {
                return;
            }
            n = if x[usize::from(self.feature[n])] <= self.threshold[n] { self.left[n] } else { self.right[n] }
                as usize;
        }
    }

    /// Each node's fraud share among the rows that reach it, shrunk toward
    /// its parent's by `shrinkage` pseudo-rows.
    fn set_values(&mut self, x: &[[f64; N_FEATURES]], y: &[bool], shrinkage: f64) {
        let mut reached = vec![0.0f64; self.feature.len()];
        let mut fraud = vec![0.0f64; self.feature.len()];
        for (row, &label) in x.iter().zip(y) {
            self.leaf_of(row, &mut |n| {
                reached[n] += 1.0;
                if label {
                    fraud[n] += 1.0;
                }
            });
        }
        let prior = fraud[0] / reached[0].max(1.0);
        let mut parent_value = vec![prior; self.feature.len()];
        for n in 0..self.feature.len() {
            let v = (fraud[n] + shrinkage * parent_value[n]) / (reached[n] + shrinkage).max(f64::MIN_POSITIVE);
            self.value[n] = if reached[n] + shrinkage > 0.0 { v } else { parent_value[n] };
            if self.feature[n] != LEAF {
                parent_value[self.left[n] as usize] = self.value[n];
                parent_value[self.right[n] as usize] = self.value[n];
            }
        }
    }
}

/// One tree of the forest: its own balanced sample and feature subset.
fn fit_tree(
    x: &[[f64; N_FEATURES]],
    y: &[bool],
    frauds: &[usize],
    genuine: &[usize],
    p: &ForestParams,
    seed: u64,
) -> Result<FlatTree, TrainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_features = ((N_FEATURES as f64 * p.feature_fraction).ceil() as usize).clamp(1, N_FEATURES);
    let mut columns = sample(&mut rng, N_FEATURES, n_features).into_vec();
    columns.sort_unstable();
    let n_genuine = ((frauds.len() as f64 * p.negatives_per_fraud).round() as usize).max(1);
    let mut picked: Vec<usize> = (0..frauds.len()).map(|_| frauds[rng.gen_range(0..frauds.len())]).collect();
    picked.extend((0..n_genuine).map(|_| genuine[rng.gen_range(0..genuine.len())]));
    let records = Array2::from_shape_fn((picked.len(), columns.len()), |(r, c)| x[picked[r]][columns[c]]);
    let targets = Array1::from_iter(picked.iter().map(|&r| y[r]));
    // linfa counts classes in a HashMap, so a node with as much fraud as
    // genuine weight would take whichever class it iterates first, and the
    // tree would differ from run to run. Genuine rows weigh a hair more:
    // no ties, the same tree every time.
    let weights = Array1::from_iter(picked.iter().map(|&r| if y[r] { 1.0f32 } else { 1.0 + 1e-4 }));
    let tree = DecisionTree::params()
        .max_depth(Some(p.max_depth))
        .min_weight_leaf(p.min_leaf)
        .min_weight_split(2.0 * p.min_leaf)
        .fit(&Dataset::new(records, targets).with_weights(weights))
        .map_err(|e| TrainError::Fit { algorithm: "forest", reason: e.to_string() })?;
    let mut flat = FlatTree::default();
    flat.push(tree.root_node(), &columns);
    flat.set_values(x, y, p.shrinkage);
    Ok(flat)
}

fn fit_forest(
    x: &[[f64; N_FEATURES]],
    y: &[bool],
    p: &ForestParams,
    seed: u64,
    threads: usize,
) -> Result<Forest, TrainError> {
    let frauds: Vec<usize> = (0..y.len()).filter(|&i| y[i]).collect();
    let genuine: Vec<usize> = (0..y.len()).filter(|&i| !y[i]).collect();
    let seeds: Vec<u64> = {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..p.trees).map(|_| rng.gen()).collect()
    };
    let threads = threads.clamp(1, p.trees);
    let mut trees: Vec<Option<Result<FlatTree, TrainError>>> = (0..p.trees).map(|_| None).collect();
    std::thread::scope(|s| {
        let chunk = p.trees.div_ceil(threads);
        for (slots, seeds) in trees.chunks_mut(chunk).zip(seeds.chunks(chunk)) {
            let (frauds, genuine) = (&frauds, &genuine);
            s.spawn(move || {
                for (slot, &seed) in slots.iter_mut().zip(seeds) {
                    *slot = Some(fit_tree(x, y, frauds, genuine, p, seed));
                }
            });
        }
    });
    let mut forest =
        Forest { roots: vec![], feature: vec![], threshold: vec![], left: vec![], right: vec![], value: vec![] };
    for tree in trees {
        let tree = tree.expect("every tree was fitted")?;
        let offset = forest.feature.len() as u32;
        forest.roots.push(offset);
        for n in 0..tree.feature.len() {
            let leaf = tree.feature[n] == LEAF;
            forest.feature.push(tree.feature[n]);
            forest.threshold.push(tree.threshold[n]);
            forest.left.push(if leaf { 0 } else { tree.left[n] + offset });
            forest.right.push(if leaf { 0 } else { tree.right[n] + offset });
            forest.value.push(tree.value[n]);
        }
    }
    Ok(forest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use crate::features::F;

    /// Rows where fraud is likelier the larger `amount_vs_avg_30d` is, with noise.
    fn synthetic(n: usize, seed: u64) -> (Vec<Row>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rows = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let mut features = [0.0; N_FEATURES];
            let ratio: f64 = rng.gen_range(0.0..10.0);
            features[F::AMOUNT_VS_AVG_30D as usize] = ratio;
            features[F::AMOUNT as usize] = rng.gen_range(1_000.0..1_000_000.0);
            features[F::HOUR_KST as usize] = f64::from(rng.gen_range(0u8..24));
            let p = 1.0 / (1.0 + (-(ratio - 8.0) * 1.5).exp());
            y.push(rng.gen_bool(p));
            rows.push(Row {
                bank_tran_id: format!("T{i}"),
                account: format!("A{}", i % 500),
                time: EventTime(1_700_000_000_000 + i as i64 * 60_000),
                features,
            });
        }
        (rows, y)
    }

    fn opts(algorithm: Algorithm) -> TrainOptions {
        let forest = ForestParams { trees: 20, max_depth: 6, ..ForestParams::default() };
        TrainOptions { algorithm, forest, threads: 2, ..TrainOptions::default() }
    }

    /// Held-out fraud rate per fifth of the rows ranked by score: (mean score, fraud rate).
    fn score_bins(scorer: &Scorer) -> Vec<(f64, f64)> {
        let (rows, y) = synthetic(20_000, 2);
        let mut scored: Vec<(f64, bool)> = rows.iter().zip(&y).map(|(r, &l)| (scorer.score(&r.features), l)).collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored
            .chunks(scored.len() / 5)
            .map(|c| {
                let mean = c.iter().map(|s| s.0).sum::<f64>() / c.len() as f64;
                let rate = c.iter().filter(|s| s.1).count() as f64 / c.len() as f64;
                (mean, rate)
            })
            .collect()
    }

    /// The forest's score ranks like the probability it stands for: on
    /// held-out rows, each fifth by score holds more fraud than the one below.
    /// With every feature open to every tree, each bin's fraud rate is also
    /// close to its mean score; random feature subsets pull scores toward
    /// the base rate (trees blind to the signal vote it), which keeps the
    /// ranking but not the scale, so the threshold is chosen on scores.
    #[test]
    fn forest_scores_rank_like_probabilities_on_held_out_rows() {
        let (rows, y) = synthetic(20_000, 1);
        let x: Vec<_> = rows.iter().map(|r| r.features).collect();
        for feature_fraction in [0.5, 1.0] {
            let mut o = opts(Algorithm::Forest);
            o.forest.feature_fraction = feature_fraction;
            let bins = score_bins(&fit(&x, &y, &o).unwrap());
            for w in bins.windows(2) {
                // Bins of equal score (rows sharing leaves) may come in any order.
                let tied = w[1].0 - w[0].0 < 1e-12;
                assert!(w[1].0 >= w[0].0 && (tied || w[1].1 > w[0].1), "fraud rate falls between score bins: {bins:?}");
            }
            assert!(bins[4].1 > 0.7 && bins[0].1 < 0.01, "{bins:?}");
            if feature_fraction == 1.0 {
                for (mean, rate) in &bins {
                    assert!(
                        (mean - rate).abs() < 0.05,
                        "score {mean:.3} stands for a fraud rate of {rate:.3}: {bins:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn logistic_learns_the_direction_of_the_signal() {
        let (rows, y) = synthetic(10_000, 3);
        let x: Vec<_> = rows.iter().map(|r| r.features).collect();
        let Scorer::Logistic(m) = fit(&x, &y, &opts(Algorithm::Logistic)).unwrap() else { panic!() };
        assert!(m.weights[F::AMOUNT_VS_AVG_30D as usize] > 1.0, "{:?}", m.weights);
        assert!(m.weights[F::HOUR_KST as usize].abs() < 0.3, "{:?}", m.weights);
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let (rows, y) = synthetic(3_000, 4);
        let x: Vec<_> = rows.iter().map(|r| r.features).collect();
        let mut o = opts(Algorithm::Forest);
        let a = fit(&x, &y, &o).unwrap();
        o.threads = 1;
        assert_eq!(a, fit(&x, &y, &o).unwrap());
    }

    #[test]
    fn single_class_and_unlabelled_data_are_refused() {
        let (rows, _) = synthetic(500, 5);
        let none = vec![false; rows.len()];
        let from = Provenance::default();
        assert!(matches!(train(&rows, &none, &opts(Algorithm::Forest), &from), Err(TrainError::NoLabels { .. })));
        let from = Provenance { labels_in_stream: 3, ..Provenance::default() };
        let e = train(&rows, &none, &opts(Algorithm::Logistic), &from).unwrap_err();
        assert!(matches!(e, TrainError::SingleClass { frauds: 0, .. }), "{e}");
    }

    #[test]
    fn the_card_carries_a_threshold_chosen_on_validation() {
        let (rows, y) = synthetic(10_000, 6);
        let from = Provenance { name: "t".into(), labels_in_stream: 1, ..Provenance::default() };
        let m = train(&rows, &y, &opts(Algorithm::Forest), &from).unwrap();
        let c = m.card();
        assert_eq!(c.validation.rows, 2_000);
        assert!(c.validation.precision_at_threshold >= 0.5, "{c:?}");
        assert!(c.validation.auc_roc > 0.85);
        assert!(c.threshold.hold > 0.0 && c.threshold.hold < 1.0);
        assert_eq!(c.training.rows, 10_000);
    }
}
