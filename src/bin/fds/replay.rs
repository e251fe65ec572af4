//! `fds replay`, `fds demo` and `fds generate`: recorded streams, and the
//! engine as replays build it (shared by training, evaluation and backtests).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;

use fds::config::{Config, ModelConfig};
use fds::engine::Engine;
use fds::generate::{generate, GeneratorConfig};
use fds::input::{self, Format};
use fds::model::Model;
use fds::replay::{self, ReplayOptions};
use fds::rules::RuleSet;

use crate::DEMO_REPLAY;

/// Load the configured model into the engine. Returns the model directory to
/// watch. A model named explicitly must load; the default one may be missing
/// (fds run outside the repository, or before the first training), and the
/// engine then runs on rules alone, says so, and takes the model when it
/// appears.
pub(crate) fn with_model(engine: Engine, model: &ModelConfig) -> Result<(Engine, Option<PathBuf>)> {
    let Some(dir) = &model.dir else {
        tracing::info!("no model: rules alone decide");
        return Ok((engine, None));
    };
    if !model.explicit && !dir.exists() {
        // Watched all the same (when its parent is there), so a model trained
        // into place later is picked up without a restart.
        let parent_exists = dir.parent().is_some_and(|p| p.as_os_str().is_empty() || p.is_dir());
        tracing::warn!(dir = %dir.display(), "the default model is not there: rules alone decide until it is");
        let engine = engine.with_model(Arc::new(arc_swap::ArcSwapOption::empty()), model.verification);
        return Ok((engine, parent_exists.then(|| dir.clone())));
    }
    let loaded = Model::load(dir).with_context(|| format!("the model directory {} was rejected", dir.display()))?;
    tracing::info!(
        version = loaded.version(),
        algorithm = loaded.card().algorithm.as_str(),
        hold_threshold = loaded.hold_threshold(),
        "model loaded"
    );
    let engine = engine.with_model(fds::model::new_handle(loaded), model.verification);
    Ok((engine, Some(dir.clone())))
}

/// The engine as `fds replay` builds it: the config's state settings and the
/// rule directory, so training sees the features serving sees.
pub(crate) fn replay_engine(config: &Config, rules_dir: &Path) -> Result<Engine> {
    let rules = load_rules(rules_dir)?;
    let mut engine = Engine::new(config.state.clone(), Arc::new(ArcSwap::from_pointee(rules)));
    if let Some(skew) = config.max_skew_ms {
        engine = engine.with_wall_clock_guard(skew);
    }
    Ok(engine)
}

pub(crate) fn open_sources(files: &[PathBuf], config: &Config) -> Result<Vec<input::Input>> {
    files
        .iter()
        .map(|f| {
            input::open_within(f, Format::Auto, config.max_event_bytes)
                .with_context(|| format!("cannot read {}", f.display()))
        })
        .collect()
}

pub(crate) fn load_rules(dir: &Path) -> Result<RuleSet> {
    RuleSet::load_dir(dir).with_context(|| format!("rule directory {} was rejected", dir.display()))
}

pub(crate) struct ReplayArgs {
    pub(crate) model: ModelConfig,
    pub(crate) rules: Option<PathBuf>,
    pub(crate) format: Format,
    pub(crate) pace: Option<f64>,
    pub(crate) limit: Option<u64>,
    pub(crate) json: bool,
    pub(crate) decisions_out: Option<PathBuf>,
    pub(crate) warmup_days: f64,
    pub(crate) partitions: u32,
}

pub(crate) fn replay_cmd(files: &[PathBuf], args: ReplayArgs, config: &Config) -> Result<()> {
    let ReplayArgs { rules, format, pace, limit, json, decisions_out, warmup_days, partitions, model } = args;
    if let Some(p) = pace {
        if !(p > 0.0 && p.is_finite()) {
            bail!("--pace must be a positive speed factor, got {p}");
        }
    }
    if !(0.0..=3650.0).contains(&warmup_days) {
        bail!("--warmup-days must be between 0 and 3650, got {warmup_days}");
    }
    let rules_dir = rules.unwrap_or_else(|| config.rules_dir.clone());
    let (engine, model_dir) = with_model(replay_engine(config, &rules_dir)?, &model)?;
    // At the recorded pace a replay runs like live traffic, so analysts' edits
    // to the rules and a retrained model take effect while it runs, as they
    // would in production.
    let _watchers = match pace {
        Some(_) => Some((
            fds::rules::watch(&rules_dir, engine.rules().clone())?,
            model_dir.map(|dir| fds::model::watch(&dir, engine.model().clone())).transpose()?,
        )),
        None => None,
    };
    let sources = files
        .iter()
        .map(|f| {
            input::open_within(f, format, config.max_event_bytes).with_context(|| {
                if f == Path::new(DEMO_REPLAY) {
                    "the demo stream ships in replay-data/; run fds from the repository root".to_owned()
                } else {
                    format!("cannot replay {}", f.display())
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let decisions_out: Option<Box<dyn Write + Send>> = match decisions_out {
        Some(p) => {
            Some(Box::new(BufWriter::new(File::create(&p).with_context(|| format!("cannot create {}", p.display()))?)))
        }
        None => None,
    };
    let opts = ReplayOptions {
        pace,
        limit,
        progress: !json && std::io::stderr().is_terminal(),
        decisions_out,
        warmup: Duration::from_secs_f64(warmup_days * 86_400.0),
        partitions,
        keep_outcomes: false,
    };
    let report = replay::run(&engine, sources, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// `fds replay --instances N`: the stream through one engine, then through
/// N instances sharing payees and devices; the group's report and how its
/// decisions differ from one engine's.
pub(crate) fn scale_out_cmd(
    files: &[PathBuf],
    args: ReplayArgs,
    instances: usize,
    lag_ms: i64,
    config: &Config,
) -> Result<()> {
    if args.pace.is_some() || args.decisions_out.is_some() {
        bail!("--instances compares two unpaced replays; leave out --pace and --decisions-out");
    }
    let rules_dir = args.rules.clone().unwrap_or_else(|| config.rules_dir.clone());
    let engines = (0..=instances)
        .map(|_| with_model(replay_engine(config, &rules_dir)?, &args.model).map(|(e, _)| e))
        .collect::<Result<Vec<_>>>()?;
    let opts = || ReplayOptions {
        limit: args.limit,
        progress: !args.json && std::io::stderr().is_terminal(),
        warmup: Duration::from_secs_f64(args.warmup_days * 86_400.0),
        partitions: args.partitions,
        keep_outcomes: true,
        ..ReplayOptions::default()
    };
    let open = || {
        files
            .iter()
            .map(|f| {
                input::open_within(f, args.format, config.max_event_bytes)
                    .with_context(|| format!("cannot replay {}", f.display()))
            })
            .collect::<Result<Vec<_>>>()
    };
    let one = replay::run(&engines[0], open()?, opts())?;
    let mut group = replay::Instances::new(&engines[1..], args.partitions, lag_ms);
    let many = replay::run_instances(&mut group, open()?, opts())?;
    let comparison = replay::compare(&one, &many, instances, args.partitions, lag_ms);
    if args.json {
        let out = serde_json::json!({ "one": one, "group": many, "comparison": comparison });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", many.render());
        println!();
        print!("{}", comparison.render());
    }
    Ok(())
}

pub(crate) fn generate_cmd(cfg: &GeneratorConfig, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let summary = if out.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
        let s = generate(cfg, &mut gz)?;
        gz.finish()?.flush()?;
        s
    } else {
        let mut w = BufWriter::new(file);
        let s = generate(cfg, &mut w)?;
        w.flush()?;
        s
    };
    println!("wrote {}", out.display());
    println!("{summary:#?}");
    Ok(())
}
