//! The `fds` command: replay, generate, check and test rules, backtest a
//! rule change, list features, run the pipeline, train and evaluate models.
//! One module per family of commands; this one holds the command line and
//! hands each command to its module.

mod analyst;
mod live;
mod model;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use fds::config::{Config, ModelConfig};
use fds::generate::GeneratorConfig;
use fds::input::{self, Format};
use fds::model::train::{self, Algorithm, TrainOptions};
use fds::model::Model;

use analyst::{backtest_cmd, rules_check, rules_test, BacktestArgs};
use live::{connection, load_cmd, run_cmd};
use model::{evaluate_cmd, train_cmd, Split};
use replay::{generate_cmd, replay_cmd, scale_out_cmd, ReplayArgs};

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
        /// Also write the results as a JUnit XML report (one test per case,
        /// with its file and line) for a CI server to show.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
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

/// `fds rules check | head` should stop `fds` as it stops `cat`, not make it
/// panic on the closed pipe: the default action of SIGPIPE, which Rust's
/// runtime ignores. Not for `run` and `load`, which keep sockets to brokers
/// and scrapers that may close.
fn end_quietly_when_stdout_closes() {
    // SAFETY: called once at start, before any thread is spawned; restores a
    // signal's default disposition, which touches no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. } | Command::Load { .. }) {
        end_quietly_when_stdout_closes();
    }
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
        Command::Rules { command: RulesCommand::Test { dir, require_coverage, junit } } => {
            rules_test(&config, &dir.unwrap_or_else(|| config.rules_dir.clone()), require_coverage, junit.as_deref())
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
