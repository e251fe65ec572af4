//! `fds rules check`, `fds rules test` and `fds backtest`: what an analyst
//! runs before a rule change goes live.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;

use fds::config::{Config, ModelConfig};
use fds::engine::Engine;
use fds::rules::RuleSet;

use crate::replay::{load_rules, open_sources, with_model};

pub(crate) struct BacktestArgs {
    pub(crate) candidate: Option<PathBuf>,
    pub(crate) promote: Vec<String>,
    pub(crate) warmup_days: f64,
    pub(crate) changes_out: Option<PathBuf>,
    pub(crate) partitions: u32,
    pub(crate) limit: Option<u64>,
    pub(crate) json: bool,
}

/// `fds backtest`: the stream once through the baseline's and the
/// candidate's engines (the same state settings and model), compared.
pub(crate) fn backtest_cmd(
    config: &Config,
    files: &[PathBuf],
    baseline_dir: &Path,
    args: BacktestArgs,
    model: &ModelConfig,
) -> Result<()> {
    if !(0.0..=3650.0).contains(&args.warmup_days) {
        bail!("--warmup-days must be between 0 and 3650, got {}", args.warmup_days);
    }
    let candidate_dir = args.candidate.as_deref().unwrap_or(baseline_dir);
    let baseline = load_rules(baseline_dir).context("baseline")?;
    let mut candidate = load_rules(candidate_dir).context("candidate")?;
    if !args.promote.is_empty() {
        candidate = candidate
            .with_promoted(&args.promote)
            .map_err(|problems| anyhow::anyhow!("--promote in {}: {}", candidate_dir.display(), problems.join("; ")))?;
    }
    let engine = |rules: RuleSet| {
        let engine = Engine::new(config.state.clone(), Arc::new(ArcSwap::from_pointee(rules)));
        match config.max_skew_ms {
            Some(skew) => engine.with_wall_clock_guard(skew),
            None => engine,
        }
    };
    let (baseline, _) = with_model(engine(baseline), model)?;
    // One model for both sides: they differ by their rules alone.
    let candidate = engine(candidate).with_model(baseline.model().clone(), model.verification);
    let changes_out: Option<Box<dyn Write + Send>> = match &args.changes_out {
        Some(p) => {
            Some(Box::new(BufWriter::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?)))
        }
        None => None,
    };
    let opts = fds::analyst::backtest::BacktestOptions {
        warmup: Duration::from_secs_f64(args.warmup_days * 86_400.0),
        partitions: args.partitions,
        limit: args.limit,
        progress: !args.json && std::io::stderr().is_terminal(),
        changes_out,
    };
    let report = fds::analyst::backtest::run(&baseline, &candidate, args.promote, open_sources(files, config)?, opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

pub(crate) fn rules_check(dir: &Path) -> Result<()> {
    match RuleSet::load_dir(dir) {
        Ok(set) => {
            let shadow = set.rules().iter().filter(|r| r.shadow()).count();
            println!(
                "{}: {} rules ({} shadow), version {}, read in {:.0} ms: OK",
                dir.display(),
                set.rules().len(),
                shadow,
                set.version(),
                set.load_time().as_secs_f64() * 1000.0
            );
            // Entries are matched by each transfer's event time; "now" here is
            // the wall clock, for pruning and for entries added ahead.
            let now = fds::event::EventTime(chrono::Utc::now().timestamp_millis());
            for (name, c) in set.list_counts_at(now) {
                println!(
                    "  lists/{name}.txt: {} entries; now {} in force, {} expired, {} not yet in force",
                    c.entries, c.in_force, c.expired, c.pending
                );
            }
            Ok(())
        }
        Err(e) => {
            // Each problem on its own line, with the I/O cause when there is one.
            eprintln!("{:#}", anyhow::Error::from(e));
            std::process::exit(1);
        }
    }
}

/// `fds rules test`: exit 1 on a failed case, a case file with problems, or
/// (with `--require-coverage`) a rule without a firing and a near-miss case.
pub(crate) fn rules_test(config: &Config, dir: &Path, require_coverage: bool, junit: Option<&Path>) -> Result<()> {
    use fds::analyst::cases;
    let set = Arc::new(load_rules(dir)?);
    let cases = match cases::load(dir, &set) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("{:#}", anyhow::Error::from(e));
            std::process::exit(1);
        }
    };
    let outcome = cases::run(&set, &cases, &config.state);
    if let Some(path) = junit {
        let rules: Vec<&str> = set.rules().iter().map(|r| r.id()).collect();
        let report = cases::junit::report(&cases, &outcome, &rules, require_coverage);
        std::fs::write(path, report).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for failure in &outcome.failures {
        println!("{failure}");
    }
    let failed = outcome.failures.len();
    println!(
        "{} cases, {} files ({}/{}, rules {}): {} passed, {failed} failed",
        outcome.cases,
        outcome.files,
        dir.display(),
        cases::TESTS_DIR,
        set.version(),
        outcome.cases - failed
    );
    let c = &outcome.coverage;
    if !c.without_firing_case.is_empty() {
        println!("rules without a case that must fire them: {}", c.without_firing_case.join(", "));
    }
    if !c.without_near_miss.is_empty() {
        println!("rules without a near miss (a case that must not fire them): {}", c.without_near_miss.join(", "));
    }
    let uncovered = !c.without_firing_case.is_empty() || !c.without_near_miss.is_empty();
    if failed > 0 || (require_coverage && uncovered) {
        std::process::exit(1);
    }
    Ok(())
}
