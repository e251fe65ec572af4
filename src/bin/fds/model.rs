//! `fds train` and `fds evaluate`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use fds::config::Config;
use fds::event::DAY_MS;
use fds::input::{self, Format};
use fds::model::dataset;
use fds::model::evaluate::{self, Protocol};
use fds::model::train::{self, Algorithm, Provenance, TrainOptions};

use crate::replay::{open_sources, replay_engine};

/// `fds train`: replay, collect point-in-time rows, fit, write the model directory.
pub(crate) fn train_cmd(
    config: &Config,
    data: &[PathBuf],
    out: &Path,
    rules: Option<PathBuf>,
    warmup_days: f64,
    opts: &TrainOptions,
) -> Result<()> {
    if !(0.0..=3650.0).contains(&warmup_days) {
        bail!("--warmup-days must be between 0 and 3650, got {warmup_days}");
    }
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        bail!("--out must name a directory, e.g. models/NAME");
    };
    let rules_dir = rules.unwrap_or_else(|| config.rules_dir.clone());
    let engine = replay_engine(config, &rules_dir)?;
    let ruleset = engine.rules().load().version().to_owned();
    let mut provenance = Provenance::new(&name, data, &rules_dir.display().to_string(), &ruleset)
        .context("cannot hash the training data")?;
    let selection =
        dataset::Selection { warmup_ms: (warmup_days * DAY_MS as f64) as i64, ..dataset::Selection::default() };
    let collected = dataset::collect(&engine, open_sources(data, config)?, selection)?;
    provenance.labels_in_stream = collected.labels.len();
    provenance.warmup_transfers = collected.transfers - collected.rows.len() as u64;
    let model = train::train(&collected.rows, &collected.targets(), opts, &provenance)
        .with_context(|| format!("nothing written to {}", out.display()))?;
    model.save(out)?;
    println!("wrote {} ({})", out.display(), model.version());
    print!("{}", model.card().render());
    Ok(())
}

/// The split `fds evaluate` was asked for.
pub(crate) struct Split {
    pub(crate) train_start: Option<chrono::NaiveDate>,
    pub(crate) train_days: i64,
    pub(crate) gap_days: i64,
    pub(crate) test_days: i64,
    pub(crate) top_k: usize,
}

/// `fds evaluate`: the handbook protocol, or the same split on another
/// labelled stream; see [`fds::model::evaluate`].
pub(crate) fn evaluate_cmd(
    config: &Config,
    data: &Path,
    split: Split,
    algorithms: &[Algorithm],
    rules: Option<PathBuf>,
    scores_out: Option<PathBuf>,
    opts: &TrainOptions,
) -> Result<()> {
    let rules_dir = rules.unwrap_or_else(|| config.rules_dir.clone());
    let engine = replay_engine(config, &rules_dir)?;
    let ruleset = engine.rules().load().version().to_owned();
    let open = || {
        input::open_within(data, Format::Auto, config.max_event_bytes)
            .with_context(|| format!("cannot read {} (pass --data FILE)", data.display()))
    };
    let mut source = open()?;
    let protocol = if source.format == Format::Handbook {
        let start = split.train_start.unwrap_or_else(evaluate::default_train_start);
        Protocol {
            train_days: split.train_days,
            delay_days: split.gap_days,
            test_days: split.test_days,
            top_k: split.top_k,
            ..Protocol::handbook(start)
        }
    } else {
        let start = match split.train_start {
            Some(d) => d,
            None => {
                // The data's first day, read from its first event; then start over.
                let first = source.events.find_map(|e| e.ok()).map(|(_, e)| e.time());
                source = open()?;
                let Some(first) = first else { bail!("{} holds no event", data.display()) };
                Protocol::kst_date(first) + chrono::Duration::days(2)
            }
        };
        Protocol::holdout(start, split.train_days, split.gap_days, split.test_days, split.top_k)
    };
    let provenance = Provenance {
        name: format!("evaluate-{}", protocol.train_start),
        rules: rules_dir.display().to_string(),
        ruleset_version: ruleset,
        ..Provenance::default()
    };
    let report = evaluate::run(&engine, source, protocol, algorithms, opts, &provenance)?;
    print!("{}", report.render());
    if let (Some(path), Some(first)) = (scores_out, report.evaluations.first()) {
        let mut w = BufWriter::new(File::create(&path).with_context(|| format!("cannot create {}", path.display()))?);
        first
            .write_scores(&mut w)
            .and_then(|()| w.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {} ({} scores)", path.display(), first.test_scores.len());
    }
    Ok(())
}
