//! The `fds` command: replay, generate, check rules, list features.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};

use fds::config::Config;
use fds::engine::Engine;
use fds::generate::{generate, GeneratorConfig};
use fds::replay::{self, Format};
use fds::rules::RuleSet;

/// The demo stream that ships with the repository.
const DEMO_REPLAY: &str = "replay-data/demo.jsonl.gz";
/// The demo's engine starts empty; its first days only build state.
const DEMO_WARMUP_DAYS: f64 = 2.0;

#[derive(Parser)]
#[command(name = "fds", version, about = "Real-time fraud detection for money transfers")]
struct Cli {
    /// Settings file (see fds.example.toml); defaults apply without one.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run recorded streams through the engine and report throughput, latency,
    /// decisions and (for labelled data) detection quality per typology.
    Replay {
        /// Files to replay in order: JSON lines (.jsonl, .jsonl.gz) or the
        /// handbook's transactions.csv.gz (or its directory).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rule directory [default: the config's engine.rules_dir, else rules].
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Auto)]
        format: Format,
        /// Replay at the recorded pace, sped up by this factor (1 = real time).
        #[arg(long, value_name = "SPEED")]
        pace: Option<f64>,
        /// Stop after this many input records.
        #[arg(long)]
        limit: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Write every decision as a JSON line to this file.
        #[arg(long, value_name = "FILE")]
        decisions_out: Option<PathBuf>,
        /// Days of event time at the start that only build state: scored, but
        /// left out of decision counts and detection quality.
        #[arg(long, default_value_t = 0.0, value_name = "DAYS")]
        warmup_days: f64,
    },
    /// Replay the shipped demo stream (replay-data/demo.jsonl.gz: 7 days of
    /// generated traffic; the first 2 days build state) through rules/.
    Demo {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a deterministic, labelled stream of Korean transfer traffic.
    Generate {
        /// Output file; `.gz` is compressed.
        #[arg(long, default_value = "replay-data/generated.jsonl.gz")]
        out: PathBuf,
        #[arg(long, default_value_t = GeneratorConfig::default().seed)]
        seed: u64,
        #[arg(long, default_value_t = GeneratorConfig::default().accounts)]
        accounts: u32,
        #[arg(long, default_value_t = GeneratorConfig::default().days)]
        days: u32,
        /// First day (YYYY-MM-DD).
        #[arg(long, default_value_t = GeneratorConfig::default().start)]
        start: chrono::NaiveDate,
    },
    /// Rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// List the features rules and models can use.
    Features,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rule directory without running anything.
    Check {
        /// [default: the config's engine.rules_dir, else rules]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of causes on one line, without the
            // backtrace that RUST_BACKTRACE would add to the debug form.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    match cli.command {
        Command::Replay { files, rules, format, pace, limit, json, decisions_out, warmup_days } => {
            let args = ReplayArgs { rules, format, pace, limit, json, decisions_out, warmup_days };
            replay_cmd(&files, args, &config)
        }
        Command::Demo { json } => {
            let args = ReplayArgs {
                rules: None,
                format: Format::Auto,
                pace: None,
                limit: None,
                json,
                decisions_out: None,
                warmup_days: DEMO_WARMUP_DAYS,
            };
            replay_cmd(&[PathBuf::from(DEMO_REPLAY)], args, &config)
        }
        Command::Generate { out, seed, accounts, days, start } => {
            let cfg = GeneratorConfig { seed, accounts, days, start, ..GeneratorConfig::default() };
            generate_cmd(&cfg, &out)
        }
        Command::Rules { command: RulesCommand::Check { dir } } => {
            rules_check(&dir.unwrap_or_else(|| config.rules_dir.clone()))
        }
        Command::Features => {
            for (i, f) in fds::features::SCHEMA.iter().enumerate() {
                println!("{i:>3}  {:<30} {:<8} {}", f.name, f.kind.name(), f.help);
            }
            Ok(())
        }
    }
}

fn load_rules(dir: &Path) -> Result<RuleSet> {
    RuleSet::load_dir(dir).with_context(|| format!("rule directory {} was rejected", dir.display()))
}

struct ReplayArgs {
    rules: Option<PathBuf>,
    format: Format,
    pace: Option<f64>,
    limit: Option<u64>,
    json: bool,
    decisions_out: Option<PathBuf>,
    warmup_days: f64,
}

fn replay_cmd(files: &[PathBuf], args: ReplayArgs, config: &Config) -> Result<()> {
    let ReplayArgs { rules, format, pace, limit, json, decisions_out, warmup_days } = args;
    if let Some(p) = pace {
        if !(p > 0.0 && p.is_finite()) {
            bail!("--pace must be a positive speed factor, got {p}");
        }
    }
    if !(0.0..=3650.0).contains(&warmup_days) {
        bail!("--warmup-days must be between 0 and 3650, got {warmup_days}");
    }
    let rules_dir = rules.unwrap_or_else(|| config.rules_dir.clone());
    let rules = load_rules(&rules_dir)?;
    let mut engine = Engine::new(config.state.clone(), Arc::new(ArcSwap::from_pointee(rules)));
    if let Some(skew) = config.max_skew_ms {
        engine = engine.with_wall_clock_guard(skew);
    }
    // At the recorded pace a replay runs like live traffic, so analysts' edits
    // to the rules take effect while it runs, as they would in production.
    let _watcher = match pace {
        Some(_) => Some(fds::rules::watch(&rules_dir, engine.rules().clone())?),
        None => None,
    };
    let sources = files
        .iter()
        .map(|f| {
            replay::open(f, format).with_context(|| {
                if f == Path::new(DEMO_REPLAY) {
                    "the demo stream ships in replay-data/; run fds from the repository root".to_owned()
                } else {
                    format!("cannot replay {}", f.display())
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let decisions_out: Option<Box<dyn Write>> = match decisions_out {
        Some(p) => {
            Some(Box::new(BufWriter::new(File::create(&p).with_context(|| format!("cannot create {}", p.display()))?)))
        }
        None => None,
    };
    let opts = replay::Options {
        pace,
        limit,
        progress: !json && std::io::stderr().is_terminal(),
        decisions_out,
        warmup: Duration::from_secs_f64(warmup_days * 86_400.0),
    };
    let report = replay::run(&engine, sources, opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

fn generate_cmd(cfg: &GeneratorConfig, out: &Path) -> Result<()> {
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

fn rules_check(dir: &Path) -> Result<()> {
    match RuleSet::load_dir(dir) {
        Ok(set) => {
            let shadow = set.rules().iter().filter(|r| r.shadow()).count();
            println!(
                "{}: {} rules ({} shadow), version {}: OK",
                dir.display(),
                set.rules().len(),
                shadow,
                set.version()
            );
            Ok(())
        }
        Err(e) => {
            // Each problem on its own line, with the I/O cause when there is one.
            eprintln!("{:#}", anyhow::Error::from(e));
            std::process::exit(1);
        }
    }
}
