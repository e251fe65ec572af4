//! The `fds` command: replay, generate, check rules, list features, train
//! and evaluate models.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};

use fds::config::{Config, ModelConfig};
use fds::engine::Engine;
use fds::event::{DAY_MS, MINUTE_MS};
use fds::generate::{generate, GeneratorConfig};
use fds::input::{self, Format};
use fds::kafka::Connection;
use fds::model::evaluate::{self, Protocol};
use fds::model::train::{self, Algorithm, Provenance, TrainOptions};
use fds::model::{dataset, Model};
use fds::replay::{self, ReplayOptions};
use fds::rules::RuleSet;

/// The embedded broker serves one `fds run`; one partition per topic keeps its
/// fetches short (librdkafka's mock broker searches a partition's batches
/// linearly, so latency grows with partitions x batches).
const EMBEDDED_PARTITIONS: i32 = 1;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Which model scores beside the rules, over the config's `[engine]` settings.
#[derive(clap::Args, Clone, Default)]
struct ModelArgs {
    /// Model directory [default: the config's engine.model_dir, else models/default].
    #[arg(long, value_name = "DIR", conflicts_with = "no_model")]
    model: Option<PathBuf>,
    /// Rules alone decide: no model.
    #[arg(long)]
    no_model: bool,
}

impl ModelArgs {
    fn resolve(&self, config: &Config) -> ModelConfig {
        let mut m = config.model.clone();
        if let Some(dir) = &self.model {
            m.dir = Some(dir.clone());
            m.explicit = true;
        }
        if self.no_model {
            m.dir = None;
        }
        m
    }
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
        /// How the files are read: auto (from the content), jsonl or handbook.
        #[arg(long, value_parser = choice(&Format::ALL, Format::name), default_value = "auto")]
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
        /// Handle the events in the order `fds run` would on this many
        /// partitions of transfers and context-events (ties in event time are
        /// broken by partition), to compare with a live run [default: 1, or
        /// the number of --instances].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        partitions: Option<u32>,
        /// Split the stream over this many instances of one consumer group,
        /// each with its own state and the shared payee and device tables,
        /// and compare their decisions with one engine's.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        instances: u32,
        /// With --instances: event time before one instance's transfer reaches
        /// the others' shared tables (live, the observations topic's
        /// propagation lag).
        #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..=86_400_000))]
        lag_ms: i64,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Replay recorded streams through two rule sets at once, the rules in
    /// force and a draft, each with its own state, and compare them side by
    /// side against the stream's fraud reports: holds, recall and precision,
    /// money saved and genuine money held, per typology and per rule, and the
    /// transfers whose decision changed.
    Backtest {
        /// Files to replay in order, as for replay.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The rules in force [default: the config's engine.rules_dir, else rules].
        #[arg(long, value_name = "DIR")]
        baseline: Option<PathBuf>,
        /// The draft rule directory [default: the baseline, with --promote].
        #[arg(long, value_name = "DIR", required_unless_present = "promote")]
        candidate: Option<PathBuf>,
        /// Run this shadow rule live in the candidate: what promoting it
        /// would have done (repeatable).
        #[arg(long, value_name = "RULE_ID")]
        promote: Vec<String>,
        /// Days of event time at the start that only build state.
        #[arg(long, default_value_t = 0.0, value_name = "DAYS")]
        warmup_days: f64,
        /// Write every changed transfer, with both decisions and its label,
        /// as a JSON line to this file.
        #[arg(long, value_name = "FILE")]
        changes_out: Option<PathBuf>,
        /// Order the events as `fds run` on this many partitions would.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        partitions: u32,
        /// Stop after this many input records.
        #[arg(long)]
        limit: Option<u64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Replay the shipped demo stream (replay-data/demo.jsonl.gz: 7 days of
    /// generated traffic; the first 2 days build state) through rules/ and the
    /// shipped model (models/default).
    Demo {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
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
    /// Play the transfer API against a running `fds run`: send recorded events
    /// to the input topics and time every decision read back from `decisions`
    /// (end-to-end latency, missed budgets, unanswered, late, duplicate answers).
    Load {
        /// Files to send in order, as for replay.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] [default: the
        /// config's kafka.brokers]. Topics and client settings (TLS, SASL)
        /// come from the config's [kafka] section, as for `fds run`.
        #[arg(long)]
        brokers: Option<String>,
        /// How the files are read: auto (from the content), jsonl or handbook.
        #[arg(long, value_parser = choice(&Format::ALL, Format::name), default_value = "auto")]
        format: Format,
        /// Transfers per second [default: as fast as possible]. Context events
        /// and labels go out as they come and do not count.
        #[arg(long, value_name = "PER_SECOND", conflicts_with = "speed")]
        rate: Option<f64>,
        /// Send every event at its recorded time, sped up by this factor
        /// (10000: a week in about a minute), keeping the traffic's shape.
        #[arg(long, value_name = "FACTOR")]
        speed: Option<f64>,
        /// Stop after this many transfers.
        #[arg(long)]
        limit: Option<u64>,
        /// Latency budget: sets each transfer's deadline-ms header; slower
        /// answers count as missed.
        #[arg(long, default_value_t = fds::load::DEFAULT_BUDGET_MS, value_name = "MS")]
        budget_ms: u64,
        /// Seconds to wait after the last send for outstanding decisions.
        #[arg(long, default_value_t = fds::load::DEFAULT_DRAIN_SECS, value_name = "SECS")]
        drain_secs: f64,
        /// Producer linger.ms.
        #[arg(long, default_value_t = fds::load::DEFAULT_LINGER_MS, value_name = "MS")]
        linger_ms: u32,
        /// At most this many transfers awaiting their decision (the API's
        /// request-handler pool); sending waits while it is reached.
        #[arg(long, default_value_t = fds::load::DEFAULT_MAX_IN_FLIGHT, value_name = "N")]
        max_in_flight: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Write every decision read back, as sent, one JSON line each, to this
        /// file (to compare a live run with `fds replay --decisions-out`).
        #[arg(long, value_name = "FILE")]
        decisions_out: Option<PathBuf>,
    },
    /// Run the Kafka pipeline: consume transfers, context events and labels,
    /// produce decisions (and dead letters); serve /metrics, /readyz, /healthz.
    /// Without --brokers (or kafka.brokers) an embedded broker is started on
    /// loopback and its address printed.
    Run {
        /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] [default: the
        /// config's kafka.brokers, else the embedded broker].
        #[arg(long)]
        brokers: Option<String>,
        /// Rule directory [default: the config's engine.rules_dir, else rules].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Address of the operator endpoints [default: server.listen, else 127.0.0.1:9464].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Keep a local copy of the state here, written on a graceful stop and
        /// read at start where the changelog has not moved since
        /// [default: the config's engine.state_dir, else none].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Train a model on recorded streams: the engine's feature vectors at the
    /// moment each transfer happened, labelled by the stream's fraud reports;
    /// writes model.json and card.toml into the --out directory.
    Train {
        /// Labelled streams to replay in order (as for replay).
        #[arg(long = "data", required = true, num_args = 1..)]
        data: Vec<PathBuf>,
        /// Model directory to write, e.g. models/NAME.
        #[arg(long)]
        out: PathBuf,
        /// The algorithm to fit.
        #[arg(long, value_parser = choice(&Algorithm::ALL, Algorithm::name), default_value = train::DEFAULT_ALGORITHM.name())]
        algorithm: Algorithm,
        /// Rule directory the replay runs with [default: the config's engine.rules_dir, else rules].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Days at the start of the data that only build state.
        #[arg(long, default_value_t = 0.0, value_name = "DAYS")]
        warmup_days: f64,
        #[arg(long, default_value_t = TrainOptions::default().seed)]
        seed: u64,
        /// The hold threshold is the lowest validation score whose holds reach this precision.
        #[arg(long, default_value_t = TrainOptions::default().target_precision)]
        target_precision: f64,
        /// The most recent share of the rows, held out for validation and the threshold.
        #[arg(long, default_value_t = TrainOptions::default().validation_fraction)]
        validation_fraction: f64,
        #[command(flatten)]
        forest: ForestArgs,
    },
    /// Trained models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Run the fraud-detection handbook's protocol (train one week, 7-day gap,
    /// test the next week) on the engine's features and compare with the
    /// handbook's published figures; on a labelled JSON-lines stream (e.g.
    /// from `fds generate`), the same train / gap / test split in KST days.
    /// Both report the test span by typology.
    Evaluate {
        /// The handbook's transactions.csv.gz (or its directory), or a labelled
        /// stream of events (.jsonl or .jsonl.gz).
        #[arg(long, default_value = input::handbook::DATA_PATH)]
        data: PathBuf,
        /// First training day [default: 2018-07-25 for the handbook; for other
        /// streams the data's third KST day, the first two only building state].
        #[arg(long)]
        train_start: Option<chrono::NaiveDate>,
        /// Days of training.
        #[arg(long, default_value_t = 7)]
        train_days: i64,
        /// Days between training and test (labels of the last training days
        /// arrive then; training only learns reports received before the test).
        #[arg(long, default_value_t = 7)]
        gap_days: i64,
        /// Days of test.
        #[arg(long, default_value_t = 7)]
        test_days: i64,
        /// Accounts a day for card precision@k.
        #[arg(long, default_value_t = 100)]
        top_k: usize,
        /// Algorithms to train and compare [default: logistic and forest].
        #[arg(long, value_parser = choice(&Algorithm::ALL, Algorithm::name))]
        algorithm: Vec<Algorithm>,
        /// Rule directory the replay runs with [default: the config's engine.rules_dir, else rules].
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Write the test week's `transaction_id,score` (the first algorithm's) here.
        #[arg(long, value_name = "FILE")]
        scores_out: Option<PathBuf>,
        #[arg(long, default_value_t = TrainOptions::default().seed)]
        seed: u64,
        #[command(flatten)]
        forest: ForestArgs,
    },
}

/// Forest hyper-parameters, shared by train and evaluate.
#[derive(clap::Args, Clone, Copy)]
struct ForestArgs {
    /// Trees in a forest.
    #[arg(long, default_value_t = train::ForestParams::default().trees)]
    trees: usize,
    /// Deepest split of a forest's tree.
    #[arg(long, default_value_t = train::ForestParams::default().max_depth)]
    max_depth: usize,
    /// Genuine transfers sampled per fraud for each tree.
    #[arg(long, default_value_t = train::ForestParams::default().negatives_per_fraud)]
    negatives_per_fraud: f64,
    /// Share of the features each tree may split on.
    #[arg(long, default_value_t = train::ForestParams::default().feature_fraction)]
    feature_fraction: f64,
}

impl ForestArgs {
    fn params(self) -> train::ForestParams {
        train::ForestParams {
            trees: self.trees,
            max_depth: self.max_depth,
            negatives_per_fraud: self.negatives_per_fraud,
            feature_fraction: self.feature_fraction,
            ..train::ForestParams::default()
        }
    }
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Check a model directory and print its card.
    Show { path: PathBuf },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the five topics on a cluster (existing ones are left alone).
    Create {
        /// [default: the config's kafka.brokers]
        #[arg(long)]
        brokers: Option<String>,
        /// Partitions of transfers, context-events and decisions [default: kafka.partitions, else 4].
        #[arg(long)]
        partitions: Option<i32>,
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rule directory without running anything.
    Check {
        /// [default: the config's engine.rules_dir, else rules]
        dir: Option<PathBuf>,
    },
    /// Run the rule tests in DIR/tests/*.toml, each case on a fresh engine;
    /// print every failure with its file:line and what fired instead; exit 1
    /// if any fails.
    Test {
        /// [default: the config's engine.rules_dir, else rules]
        dir: Option<PathBuf>,
        /// Also fail when a rule has no case that must fire it, or no near
        /// miss (a case that must not fire it).
        #[arg(long)]
        require_coverage: bool,
    },
}

/// A command-line parser for one of the library's closed sets of names
/// (`ALL` and `name()`), so the library keeps the one list of names and stays
/// free of command-line types.
fn choice<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(all.iter().map(|&v| name(v)))
        .map(move |s| *all.iter().find(|&&v| name(v) == s).expect("clap offered only these names"))
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
        Command::Replay {
            files,
            rules,
            format,
            pace,
            limit,
            json,
            decisions_out,
            warmup_days,
            partitions,
            instances,
            lag_ms,
            model,
        } => {
            let model = model.resolve(&config);
            let partitions = partitions.unwrap_or(instances);
            if instances > partitions {
                bail!("--instances {instances} needs at least as many --partitions (got {partitions})");
            }
            let args = ReplayArgs { rules, format, pace, limit, json, decisions_out, warmup_days, partitions, model };
            if instances > 1 {
                return scale_out_cmd(&files, args, instances as usize, lag_ms, &config);
            }
            replay_cmd(&files, args, &config)
        }
        Command::Backtest {
            files,
            baseline,
            candidate,
            promote,
            warmup_days,
            changes_out,
            partitions,
            limit,
            json,
            model,
        } => {
            let baseline = baseline.unwrap_or_else(|| config.rules_dir.clone());
            let args = BacktestArgs { candidate, promote, warmup_days, changes_out, partitions, limit, json };
            backtest_cmd(&config, &files, &baseline, args, &model.resolve(&config))
        }
        Command::Demo { json, model } => {
            let args = ReplayArgs {
                model: model.resolve(&config),
                rules: None,
                format: Format::Auto,
                pace: None,
                limit: None,
                json,
                decisions_out: None,
                warmup_days: DEMO_WARMUP_DAYS,
                // As `fds run` on the embedded broker orders them.
                partitions: EMBEDDED_PARTITIONS.unsigned_abs(),
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
        Command::Rules { command: RulesCommand::Test { dir, require_coverage } } => {
            rules_test(&config, &dir.unwrap_or_else(|| config.rules_dir.clone()), require_coverage)
        }
        Command::Run { brokers, rules, listen, state_dir, model } => {
            let model = model.resolve(&config);
            let state_dir = state_dir.or_else(|| config.state_dir.clone());
            run_cmd(&config, brokers, rules.unwrap_or_else(|| config.rules_dir.clone()), listen, state_dir, model)
        }
        Command::Topics { command: TopicsCommand::Create { brokers, partitions, replication } } => {
            let connection = connection(&config, brokers)?;
            let brokers = connection.brokers.clone();
            let partitions = partitions.or(config.kafka.partitions).unwrap_or(4);
            fds::kafka::create_topics(&connection, &config.kafka.topics, partitions, replication)?;
            println!("topics ready on {brokers}: {}", config.kafka.topics.all().join(", "));
            Ok(())
        }
        Command::Load {
            files,
            brokers,
            format,
            rate,
            speed,
            limit,
            budget_ms,
            drain_secs,
            linger_ms,
            max_in_flight,
            json,
            decisions_out,
        } => {
            let Ok(drain) = Duration::try_from_secs_f64(drain_secs) else {
                bail!("--drain-secs must be a number of seconds, got {drain_secs}");
            };
            // The same brokers, client settings and topic names as `fds run`
            // with this config: a load against a TLS/SASL cluster or renamed
            // topics measures the deployment it describes.
            let connection = connection(&config, brokers)?;
            let mut opts = fds::load::LoadOptions::new(files, connection, config.kafka.topics.clone());
            opts.format = format;
            opts.rate = rate;
            opts.speed = speed;
            opts.limit = limit;
            opts.budget = Duration::from_millis(budget_ms);
            opts.drain = drain;
            opts.linger_ms = linger_ms;
            opts.max_in_flight = max_in_flight.max(1);
            opts.decisions_out = decisions_out;
            load_cmd(opts, json)
        }
        Command::Train {
            data,
            out,
            algorithm,
            rules,
            warmup_days,
            seed,
            target_precision,
            validation_fraction,
            forest,
        } => {
            let opts = TrainOptions {
                algorithm,
                seed,
                target_precision,
                validation_fraction,
                forest: forest.params(),
                ..TrainOptions::default()
            };
            train_cmd(&config, &data, &out, rules, warmup_days, &opts)
        }
        Command::Model { command: ModelCommand::Show { path } } => {
            let model = Model::load(&path)?;
            print!("{}", model.card().render());
            Ok(())
        }
        Command::Evaluate {
            data,
            train_start,
            train_days,
            gap_days,
            test_days,
            top_k,
            algorithm,
            rules,
            scores_out,
            seed,
            forest,
        } => {
            let algorithms =
                if algorithm.is_empty() { vec![Algorithm::Logistic, Algorithm::Forest] } else { algorithm };
            let opts = TrainOptions { seed, forest: forest.params(), ..TrainOptions::default() };
            let split = Split { train_start, train_days, gap_days, test_days, top_k };
            evaluate_cmd(&config, &data, split, &algorithms, rules, scores_out, &opts)
        }
        Command::Features => {
            for (i, f) in fds::features::SCHEMA.iter().enumerate() {
                println!("{i:>3}  {:<30} {:<8} {}", f.name, f.kind.name(), f.help);
            }
            Ok(())
        }
    }
}

/// A real cluster's connection: `--brokers`, else the config's
/// `kafka.brokers`, with the config's pass-through client settings.
fn connection(config: &Config, brokers: Option<String>) -> Result<Connection> {
    let Some(brokers) = brokers.or_else(|| config.kafka.brokers.clone()) else {
        bail!("no brokers: pass --brokers HOST:PORT or set kafka.brokers in the config");
    };
    Ok(Connection { brokers, client: config.kafka.client.clone() })
}

/// `fds run`: the engine between the transfer API's topics, until SIGTERM or
/// Ctrl-C, then a graceful stop (in-flight decisions acknowledged, offsets
/// committed) and exit 0.
fn run_cmd(
    config: &Config,
    brokers: Option<String>,
    rules_dir: PathBuf,
    listen: Option<std::net::SocketAddr>,
    state_dir: Option<PathBuf>,
    model: ModelConfig,
) -> Result<()> {
    use fds::kafka::{pipeline, EmbeddedBroker};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The first signal asks for a graceful stop; a second one, while the
        // stop is under way (a broker that never comes back), exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(signal, stop.clone()).context("cannot install the signal handler")?;
    }
    let kafka = &config.kafka;
    let (embedded, brokers) = match brokers.or_else(|| kafka.brokers.clone()) {
        Some(b) => (None, b),
        None => {
            let broker = EmbeddedBroker::start(&kafka.topics, kafka.partitions.unwrap_or(EMBEDDED_PARTITIONS))?;
            let addr = broker.bootstrap_servers();
            eprintln!("embedded broker (librdkafka mock cluster, in memory) listening on {addr}");
            eprintln!("  try: fds load --brokers {addr} {DEMO_REPLAY}");
            (Some(broker), addr)
        }
    };
    let rules = load_rules(&rules_dir)?;
    // Live traffic: refuse events dated ahead of the wall clock (5 min unless configured).
    let skew = config.max_skew_ms.unwrap_or(5 * MINUTE_MS);
    let engine = Engine::new(config.state.clone(), Arc::new(ArcSwap::from_pointee(rules))).with_wall_clock_guard(skew);
    let (engine, model_dir) = with_model(engine, &model)?;
    let engine = Arc::new(engine);
    let watcher = fds::rules::watch(&rules_dir, engine.rules().clone())?;
    let model_watcher = model_dir.map(|dir| fds::model::watch(&dir, engine.model().clone())).transpose()?;

    let metrics = Arc::new(fds::metrics::Metrics::new());
    let health = Arc::new(fds::api::Health::new());
    let refresh = {
        let (engine, metrics) = (engine.clone(), metrics.clone());
        let counted = (AtomicU64::new(0), AtomicU64::new(0));
        let status = watcher.status_handle();
        let model_counted = (AtomicU64::new(0), AtomicU64::new(0));
        let model_status = model_watcher.as_ref().map(|w| w.status_handle());
        Arc::new(move || {
            metrics.observe_state(engine.state());
            metrics.observe_sweeps(engine.sweeps());
            metrics.observe_in_force(&engine.rules().load(), engine.model().load().as_deref());
            let add = |counter: &prometheus::IntCounterVec, counted: &(AtomicU64, AtomicU64), reloads, rejected| {
                let applied = u64::saturating_sub(reloads, counted.0.swap(reloads, Ordering::Relaxed));
                let refused = u64::saturating_sub(rejected, counted.1.swap(rejected, Ordering::Relaxed));
                counter.with_label_values(&["applied"]).inc_by(applied);
                counter.with_label_values(&["rejected"]).inc_by(refused);
            };
            let s = status();
            add(&metrics.rules_reloads, &counted, s.reloads, s.rejected);
            if let Some(model_status) = &model_status {
                let s = model_status();
                add(&metrics.model_reloads, &model_counted, s.reloads, s.rejected);
            }
        }) as Arc<dyn Fn() + Send + Sync>
    };
    // Once now: the info series are there before the first scrape, and the
    // model's score window starts with the run.
    refresh();
    let listen = listen.unwrap_or(config.listen);
    let server = fds::api::spawn(listen, metrics.clone(), health.clone(), Some(refresh))?;
    eprintln!("metrics on http://{}/metrics, readiness on /readyz", server.local_addr());

    let mut opts = pipeline::PipelineOptions::new(Connection { brokers, client: kafka.client.clone() });
    opts.topics = kafka.topics.clone();
    opts.group_id = kafka.group_id.clone();
    opts.dedup_capacity = kafka.dedup_capacity;
    opts.commit_interval = kafka.commit_interval;
    opts.checkpoint_interval = kafka.checkpoint_interval;
    opts.session_timeout = kafka.session_timeout;
    opts.linger = kafka.linger;
    opts.state_dir = state_dir;
    opts.max_event_bytes = config.max_event_bytes;
    let summary = pipeline::run(engine, opts, metrics, health, stop)?;
    tracing::info!(
        consumed = summary.consumed,
        decisions = summary.decisions,
        redelivered = summary.redelivered,
        late = summary.late,
        dead_letters = summary.dead_letters,
        unfinished = summary.unfinished,
        "stopped"
    );
    server.shutdown();
    drop(watcher);
    drop(embedded);
    Ok(())
}

/// `fds load`: the pipeline benchmark; see [`fds::load`].
fn load_cmd(opts: fds::load::LoadOptions, json: bool) -> Result<()> {
    if let Some(rate) = opts.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of transfers per second, got {rate}");
        }
    }
    let progress = (!json && std::io::stderr().is_terminal()).then(fds::load::progress_bar);
    let report = fds::load::run(opts, progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// Load the configured model into the engine. Returns the model directory to
/// watch. A model named explicitly must load; the default one may be missing
/// (fds run outside the repository, or before the first training), and the
/// engine then runs on rules alone, says so, and takes the model when it
/// appears.
fn with_model(engine: Engine, model: &ModelConfig) -> Result<(Engine, Option<PathBuf>)> {
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
fn replay_engine(config: &Config, rules_dir: &Path) -> Result<Engine> {
    let rules = load_rules(rules_dir)?;
    let mut engine = Engine::new(config.state.clone(), Arc::new(ArcSwap::from_pointee(rules)));
    if let Some(skew) = config.max_skew_ms {
        engine = engine.with_wall_clock_guard(skew);
    }
    Ok(engine)
}

fn open_sources(files: &[PathBuf], config: &Config) -> Result<Vec<input::Input>> {
    files
        .iter()
        .map(|f| {
            input::open_within(f, Format::Auto, config.max_event_bytes)
                .with_context(|| format!("cannot read {}", f.display()))
        })
        .collect()
}

/// `fds train`: replay, collect point-in-time rows, fit, write the model directory.
fn train_cmd(
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
struct Split {
    train_start: Option<chrono::NaiveDate>,
    train_days: i64,
    gap_days: i64,
    test_days: i64,
    top_k: usize,
}

/// `fds evaluate`: the handbook protocol, or the same split on another
/// labelled stream; see [`fds::model::evaluate`].
fn evaluate_cmd(
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

fn load_rules(dir: &Path) -> Result<RuleSet> {
    RuleSet::load_dir(dir).with_context(|| format!("rule directory {} was rejected", dir.display()))
}

struct ReplayArgs {
    model: ModelConfig,
    rules: Option<PathBuf>,
    format: Format,
    pace: Option<f64>,
    limit: Option<u64>,
    json: bool,
    decisions_out: Option<PathBuf>,
    warmup_days: f64,
    partitions: u32,
}

fn replay_cmd(files: &[PathBuf], args: ReplayArgs, config: &Config) -> Result<()> {
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

struct BacktestArgs {
    candidate: Option<PathBuf>,
    promote: Vec<String>,
    warmup_days: f64,
    changes_out: Option<PathBuf>,
    partitions: u32,
    limit: Option<u64>,
    json: bool,
}

/// `fds backtest`: the stream once through the baseline's and the
/// candidate's engines (the same state settings and model), compared.
fn backtest_cmd(
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

/// `fds replay --instances N`: the stream through one engine, then through
/// N instances sharing payees and devices; the group's report and how its
/// decisions differ from one engine's.
fn scale_out_cmd(files: &[PathBuf], args: ReplayArgs, instances: usize, lag_ms: i64, config: &Config) -> Result<()> {
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
fn rules_test(config: &Config, dir: &Path, require_coverage: bool) -> Result<()> {
    use fds::analyst::cases;
    let set = Arc::new(load_rules(dir)?);
    let cases = match cases::load(dir, &set) {
        Ok(cases) => cases,
        Err(e) => {
            eprintln!("{:#}", anyhow::Error::from(e));
            std::process::exit(1);
        }
    };
    let outcome = cases::run(dir, &set, &cases, &config.state);
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
