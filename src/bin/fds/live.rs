//! `fds run` and `fds load`: the Kafka side, against a real cluster or the
//! embedded broker.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;

use fds::config::{Config, ModelConfig};
use fds::engine::Engine;
use fds::event::MINUTE_MS;
use fds::kafka::Connection;

use crate::replay::{load_rules, with_model};
use crate::{DEMO_REPLAY, EMBEDDED_PARTITIONS};

/// A real cluster's connection: `--brokers`, else the config's
/// `kafka.brokers`, with the config's pass-through client settings.
pub(crate) fn connection(config: &Config, brokers: Option<String>) -> Result<Connection> {
    let Some(brokers) = brokers.or_else(|| config.kafka.brokers.clone()) else {
        bail!("no brokers: pass --brokers HOST:PORT or set kafka.brokers in the config");
    };
    Ok(Connection { brokers, client: config.kafka.client.clone() })
}

/// `fds run`: the engine between the transfer API's topics, until SIGTERM or
/// Ctrl-C, then a graceful stop (in-flight decisions acknowledged, offsets
/// committed) and exit 0.
pub(crate) fn run_cmd(
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
pub(crate) fn load_cmd(opts: fds::load::LoadOptions, json: bool) -> Result<()> {
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
