//! Configuration: the operator's file (`fds.toml`), read in two stages.
//!
//! Stage one is serde structs that mirror the file and reject unknown keys, so a
//! misspelt setting is an error instead of a silently ignored default. Stage two,
//! [`Config::from_file`], checks every value and reports *every* problem at once,
//! each naming the key, then builds the strict runtime types the engine takes
//! ([`StateConfig`], the skew bound). Nothing downstream re-checks a value.
//!
//! Every key is optional; an absent file or section means the defaults, which
//! are the ones documented in `fds.example.toml` at the top of the repository.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::event::{DAY_MS, MINUTE_MS};
use crate::kafka::pipeline::PipelineOptions;
use crate::kafka::{Connection, RedactedSettings, Topics};
use crate::rules::Verification;
use crate::state::StateConfig;

/// Why a configuration file was refused.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}", path = path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Not TOML, or an unknown key, or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// Well-formed, but some values make no sense: all of them, one per line.
    #[error("{path}: {} invalid settings:\n{}", problems.len(), problems.join("\n"))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    kafka: RawKafka,
    #[serde(default)]
    server: RawServer,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Option<String>,
    group_id: Option<String>,
    partitions: Option<i64>,
    dedup_capacity: Option<i64>,
    commit_interval_ms: Option<i64>,
    checkpoint_interval_ms: Option<i64>,
    session_timeout_ms: Option<i64>,
    linger_ms: Option<i64>,
    #[serde(default)]
    topics: RawTopics,
    /// librdkafka settings passed through as they are (TLS, SASL...).
    #[serde(default)]
    client: BTreeMap<String, String>,
}

impl std::fmt::Debug for RawKafka {
    /// By hand: `client` may hold a password written into the file as is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawKafka")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("partitions", &self.partitions)
            .field("dedup_capacity", &self.dedup_capacity)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("linger_ms", &self.linger_ms)
            .field("topics", &self.topics)
            .field("client", &RedactedSettings(&self.client))
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopics {
    transfers: Option<String>,
    context_events: Option<String>,
    labels: Option<String>,
    decisions: Option<String>,
    dead_letter: Option<String>,
    state: Option<String>,
    observations: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    account_ttl_days: Option<i64>,
    payee_ttl_days: Option<i64>,
    device_ttl_days: Option<i64>,
    max_known_payees: Option<i64>,
    max_known_devices: Option<i64>,
    max_payee_senders: Option<i64>,
    max_device_accounts: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    rules_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    max_skew_minutes: Option<i64>,
    max_event_bytes: Option<i64>,
    model_dir: Option<PathBuf>,
    use_model: Option<bool>,
    model_verification: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// TTLs and caps of the streaming state (`[state]`).
    pub state: StateConfig,
    /// The rule directory (`engine.rules_dir`), watched for edits.
    pub rules_dir: PathBuf,
    /// Where `fds run` keeps a local copy of its state, written on a graceful
    /// stop and read at start where it still matches (`engine.state_dir`);
    /// `None`: no copy (with the changelog on, restores read the changelog).
    pub state_dir: Option<PathBuf>,
    /// Which model scores beside the rules (`[model]`).
    pub model: ModelConfig,
    /// Refuse events dated more than this far ahead of the wall clock (live
    /// consumption); `None` trusts the recorded times, as replay does.
    pub max_skew_ms: Option<i64>,
    /// Events longer than this are refused before they are parsed
    /// (`engine.max_event_bytes`): dead-lettered live, bad lines in a replay.
    pub max_event_bytes: usize,
    /// The `[kafka]` section, for `fds run`, `fds load` and `fds topics`.
    pub kafka: KafkaConfig,
    /// Where `/metrics`, `/readyz` and `/healthz` are served.
    pub listen: SocketAddr,
}

/// The `[kafka]` section, checked. Its `Debug` output hides secrets (see
/// [`crate::kafka::is_secret_setting`]).
#[derive(Clone)]
pub struct KafkaConfig {
    /// `None`: start the embedded broker.
    pub brokers: Option<String>,
    /// The consumer group every instance joins.
    pub group_id: String,
    /// Partitions of the keyed topics, for the embedded broker (default 1)
    /// and `fds topics create` (default 4).
    pub partitions: Option<i32>,
    /// Decisions remembered by transfer id to answer re-deliveries the same way.
    pub dedup_capacity: usize,
    /// How often stored offsets are committed.
    pub commit_interval: Duration,
    /// How often the state's changes are checkpointed to the changelog
    /// topic; `None`: no changelog (the state is lost with the process).
    pub checkpoint_interval: Option<Duration>,
    /// How long a silent instance keeps its partitions: a crashed instance's
    /// transfers wait this long for another to take them over.
    pub session_timeout: Duration,
    /// The decision producer's batching delay (`linger.ms`).
    pub linger: Duration,
    /// Topic names.
    pub topics: Topics,
    /// Pass-through librdkafka settings, `env:NAME` values already resolved.
    pub client: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    /// By hand, so that a resolved `sasl.password` never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("partitions", &self.partitions)
            .field("dedup_capacity", &self.dedup_capacity)
            .field("commit_interval", &self.commit_interval)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("session_timeout", &self.session_timeout)
            .field("linger", &self.linger)
            .field("topics", &self.topics)
            .field("client", &RedactedSettings(&self.client))
            .finish()
    }
}

/// Pass-through settings `fds` sets itself, and why the operator may not:
/// each one would weaken the delivery guarantees (see [`crate::kafka`]) or
/// break the pipeline's own bookkeeping.
const RESERVED_CLIENT_SETTINGS: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers instead"),
    ("group.id", "set kafka.group_id instead; the load and read-back clients need groups of their own"),
    (
        "enable.auto.commit",
        "fds commits only the offsets it stores once a decision is acknowledged; it decides how they are committed",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only once a transfer's decision is acknowledged; storing them on receipt loses \
         transfers in a crash",
    ),
    ("auto.offset.reset", "a new group must start at the earliest offset, or transfers already sent go undecided"),
    ("enable.idempotence", "the producer must be idempotent, or a retry can duplicate or reorder decisions"),
    ("acks", "decisions must be acknowledged by all in-sync replicas (acks=all) before their offset is stored"),
    (
        "request.required.acks",
        "an alias of acks: decisions must be acknowledged by all in-sync replicas before their offset is stored",
    ),
    ("message.timeout.ms", "fds never gives up on a decision (no timeout); a timeout drops decisions"),
    ("delivery.timeout.ms", "an alias of message.timeout.ms: a timeout drops decisions"),
    (
        "partition.assignment.strategy",
        "fds picks the assignment that gives one instance the same partitions of transfers and context events, \
         so an account's events meet on one instance",
    ),
    (
        "isolation.level",
        "fds reads only committed records; reading uncommitted ones would score transfers whose sending was aborted",
    ),
    ("transactional.id", "fds uses no transactions; a transactional producer changes how decisions are delivered"),
    ("enable.partition.eof", "the consumers do not expect end-of-partition events and would count them as errors"),
];

impl Default for KafkaConfig {
    /// The pipeline's own defaults ([`PipelineOptions::new`]): defined there
    /// once, read here.
    fn default() -> Self {
        let p = PipelineOptions::new(Connection::new(""));
        KafkaConfig {
            brokers: None,
            group_id: p.group_id,
            partitions: None,
            dedup_capacity: p.dedup_capacity,
            commit_interval: p.commit_interval,
            checkpoint_interval: p.checkpoint_interval,
            session_timeout: p.session_timeout,
            linger: p.linger,
            topics: p.topics,
            client: BTreeMap::new(),
        }
    }
}

/// Which model the engine scores with, beside the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `None`: rules alone decide (`engine.use_model = false`).
    pub dir: Option<PathBuf>,
    /// The directory was named in the configuration: a missing one is an
    /// error. The default (`models/default`) may be absent: the engine then
    /// runs on rules alone and says so.
    pub explicit: bool,
    /// What a hold asked for by the model alone asks the customer to do.
    pub verification: Verification,
}

/// The shipped model, used when the configuration names none.
pub const DEFAULT_MODEL_DIR: &str = "models/default";

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            dir: Some(PathBuf::from(DEFAULT_MODEL_DIR)),
            explicit: false,
            verification: crate::engine::DEFAULT_MODEL_VERIFICATION,
        }
    }
}

fn model_config(raw: &RawEngine, problems: &mut Vec<String>) -> ModelConfig {
    let mut model = ModelConfig::default();
    if let Some(dir) = &raw.model_dir {
        if dir.as_os_str().is_empty() {
            problems.push("engine.model_dir is empty (set engine.use_model = false to score without a model)".into());
        }
        model.dir = Some(dir.clone());
        model.explicit = true;
    }
    if raw.use_model == Some(false) {
        if raw.model_dir.is_some() {
            problems.push("engine.model_dir is set but engine.use_model = false: keep one".into());
        }
        model.dir = None;
    }
    if let Some(v) = &raw.model_verification {
        match Verification::ALL.into_iter().find(|x| x.name() == v) {
            Some(x) => model.verification = x,
            None => problems.push(format!(
                "engine.model_verification = {v:?}: must be one of {}",
                Verification::ALL.map(Verification::name).join(", ")
            )),
        }
    }
    model
}

/// The default address of the operator endpoints.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

impl Default for Config {
    fn default() -> Self {
        Config {
            state: StateConfig::default(),
            rules_dir: PathBuf::from("rules"),
            state_dir: None,
            model: ModelConfig::default(),
            max_skew_ms: None,
            max_event_bytes: crate::event::MAX_EVENT_BYTES,
            kafka: KafkaConfig::default(),
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
        }
    }
}

impl Config {
    /// Read and check a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Config::from_toml(&text).map_err(|e| match e {
            Problems::Syntax(message) => ConfigError::Syntax { path: path.into(), message },
            Problems::Invalid(problems) => ConfigError::Invalid { path: path.into(), problems },
        })
    }

    fn from_toml(text: &str) -> Result<Config, Problems> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| Problems::Syntax(e.to_string()))?;
        let mut problems = Vec::new();
        let defaults = StateConfig::default();
        let mut days = |key: &str, value: Option<i64>, default_ms: i64, min: i64| match value {
            None => default_ms,
            Some(d) if (min..=3650).contains(&d) => d * DAY_MS,
            Some(d) => {
                problems.push(format!("state.{key} = {d}: must be between {min} and 3650 days"));
                default_ms
            }
        };
        // Idle entities must outlive the 30-day window, or "first seen" and the
        // 30-day sums would be computed from a half-forgotten history.
        let account_ttl_ms = days("account_ttl_days", raw.state.account_ttl_days, defaults.account_ttl_ms, 31);
        let payee_ttl_ms = days("payee_ttl_days", raw.state.payee_ttl_days, defaults.payee_ttl_ms, 31);
        let device_ttl_ms = days("device_ttl_days", raw.state.device_ttl_days, defaults.device_ttl_ms, 2);
        let mut cap = |key: &str, value: Option<i64>, default: usize| match value {
            None => default,
            Some(n) if (1..=65_535).contains(&n) => n as usize,
            Some(n) => {
                problems.push(format!("state.{key} = {n}: must be between 1 and 65535"));
                default
            }
        };
        let state = StateConfig {
            account_ttl_ms,
            payee_ttl_ms,
            device_ttl_ms,
            max_known_payees: cap("max_known_payees", raw.state.max_known_payees, defaults.max_known_payees),
            max_known_devices: cap("max_known_devices", raw.state.max_known_devices, defaults.max_known_devices),
            max_payee_senders: cap("max_payee_senders", raw.state.max_payee_senders, defaults.max_payee_senders),
            max_device_accounts: cap(
                "max_device_accounts",
                raw.state.max_device_accounts,
                defaults.max_device_accounts,
            ),
        };
        let max_skew_ms = match raw.engine.max_skew_minutes {
            None => None,
            Some(m) if (1..=525_600).contains(&m) => Some(m * MINUTE_MS),
            Some(m) => {
                problems.push(format!("engine.max_skew_minutes = {m}: must be between 1 and 525600 (one year)"));
                None
            }
        };
        let range = crate::event::EVENT_BYTES_RANGE;
        let max_event_bytes = match raw.engine.max_event_bytes {
            None => crate::event::MAX_EVENT_BYTES,
            Some(n) if usize::try_from(n).is_ok_and(|n| range.contains(&n)) => n as usize,
            Some(n) => {
                problems.push(format!(
                    "engine.max_event_bytes = {n}: must be between {} and {} bytes",
                    range.start(),
                    range.end()
                ));
                crate::event::MAX_EVENT_BYTES
            }
        };
        let rules_dir = raw.engine.rules_dir.clone().unwrap_or_else(|| PathBuf::from("rules"));
        if rules_dir.as_os_str().is_empty() {
            problems.push("engine.rules_dir is empty".to_owned());
        }
        let state_dir = raw.engine.state_dir.clone();
        if state_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            problems.push("engine.state_dir is empty; leave it out to keep the state in memory only".to_owned());
        }
        let model = model_config(&raw.engine, &mut problems);
        let kafka = kafka_config(raw.kafka, &mut problems);
        let listen = match raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN).parse() {
            Ok(a) => a,
            Err(_) => {
                problems.push(format!(
                    "server.listen = {:?}: must be an IP address and port, like {DEFAULT_LISTEN}",
                    raw.server.listen.unwrap_or_default()
                ));
                DEFAULT_LISTEN.parse().expect("a valid default address")
            }
        };
        if problems.is_empty() {
            Ok(Config { state, rules_dir, state_dir, model, max_skew_ms, max_event_bytes, kafka, listen })
        } else {
            Err(Problems::Invalid(problems))
        }
    }
}

fn kafka_config(raw: RawKafka, problems: &mut Vec<String>) -> KafkaConfig {
    let d = KafkaConfig::default();
    let mut int = |key: &str, value: Option<i64>, range: std::ops::RangeInclusive<i64>, default: i64| match value {
        None => default,
        Some(v) if range.contains(&v) => v,
        Some(v) => {
            problems.push(format!("kafka.{key} = {v}: must be between {} and {}", range.start(), range.end()));
            default
        }
    };
    let partitions = raw.partitions.map(|n| int("partitions", Some(n), 1..=1024, 1) as i32);
    let dedup_capacity = int("dedup_capacity", raw.dedup_capacity, 1..=100_000_000, d.dedup_capacity as i64) as usize;
    let commit_ms =
        int("commit_interval_ms", raw.commit_interval_ms, 10..=60_000, d.commit_interval.as_millis() as i64) as u64;
    let linger_ms = int("linger_ms", raw.linger_ms, 0..=1000, d.linger.as_millis() as i64) as u64;
    let default_checkpoint = d.checkpoint_interval.map_or(0, |i| i.as_millis() as i64);
    let checkpoint_ms =
        int("checkpoint_interval_ms", raw.checkpoint_interval_ms, 0..=3_600_000, default_checkpoint) as u64;
    let session_ms =
        int("session_timeout_ms", raw.session_timeout_ms, 3_000..=300_000, d.session_timeout.as_millis() as i64) as u64;
    let mut name = |key: &str, value: Option<String>, default: &str| match value {
        None => default.to_owned(),
        Some(v)
            if !v.is_empty() && v.len() <= 249 && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
        {
            v
        }
        Some(v) => {
            problems.push(format!("kafka.{key} = {v:?}: a topic or group name is 1-249 of [A-Za-z0-9._-]"));
            default.to_owned()
        }
    };
    let t = raw.topics;
    let topics = Topics {
        transfers: name("topics.transfers", t.transfers, &d.topics.transfers),
        context_events: name("topics.context_events", t.context_events, &d.topics.context_events),
        labels: name("topics.labels", t.labels, &d.topics.labels),
        decisions: name("topics.decisions", t.decisions, &d.topics.decisions),
        dead_letter: name("topics.dead_letter", t.dead_letter, &d.topics.dead_letter),
        state: name("topics.state", t.state, &d.topics.state),
        observations: name("topics.observations", t.observations, &d.topics.observations),
    };
    let group_id = name("group_id", raw.group_id, &d.group_id);
    let all = topics.all();
    for (i, a) in all.iter().enumerate() {
        if all[..i].contains(a) {
            problems.push(format!("kafka.topics: {a:?} is named for two topics"));
        }
    }
    let brokers = match raw.brokers {
        Some(b) if b.trim().is_empty() => {
            problems.push("kafka.brokers is empty; leave it out to use the embedded broker".to_owned());
            None
        }
        b => b,
    };
    // Secrets stay out of the file: `"sasl.password" = "env:FDS_SASL_PASSWORD"`.
    let mut client = BTreeMap::new();
    for (k, v) in raw.client {
        if let Some((_, why)) = RESERVED_CLIENT_SETTINGS.iter().find(|(key, _)| *key == k.trim()) {
            problems.push(format!("kafka.client.{k:?}: {why}"));
            continue;
        }
        let value = match v.strip_prefix("env:") {
            Some(var) => match std::env::var(var) {
                Ok(v) => v,
                Err(_) => {
                    problems.push(format!("kafka.client.{k:?} = \"env:{var}\": environment variable {var} is not set"));
                    continue;
                }
            },
            None => v,
        };
        client.insert(k, value);
    }
    KafkaConfig {
        brokers,
        group_id,
        partitions,
        dedup_capacity,
        commit_interval: Duration::from_millis(commit_ms),
        checkpoint_interval: (checkpoint_ms > 0).then(|| Duration::from_millis(checkpoint_ms)),
        session_timeout: Duration::from_millis(session_ms),
        linger: Duration::from_millis(linger_ms),
        topics,
        client,
    }
}

enum Problems {
    Syntax(String),
    Invalid(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> Vec<String> {
        match Config::from_toml(text) {
            Err(Problems::Invalid(p)) => p,
            Err(Problems::Syntax(m)) => panic!("syntax error: {m}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_toml("").ok().unwrap();
        assert_eq!(c.state.account_ttl_ms, StateConfig::default().account_ttl_ms);
        assert_eq!(c.max_skew_ms, None);
        assert_eq!(c.rules_dir, PathBuf::from("rules"));
    }

    #[test]
    fn values_become_runtime_units() {
        let c = Config::from_toml(
            "[state]\naccount_ttl_days = 120\nmax_known_payees = 512\n[engine]\nmax_skew_minutes = 30\n",
        )
        .ok()
        .unwrap();
        assert_eq!(c.state.account_ttl_ms, 120 * DAY_MS);
        assert_eq!(c.state.max_known_payees, 512);
        assert_eq!(c.max_skew_ms, Some(30 * MINUTE_MS));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = invalid(
            "[state]\naccount_ttl_days = 7\nmax_known_devices = 0\n[engine]\nmax_skew_minutes = -1\nmax_event_bytes = 10\n",
        );
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[3].contains("engine.max_event_bytes = 10: must be between 1024 and 1048576"), "{p:?}");
        assert!(p[0].contains("state.account_ttl_days = 7"));
        assert!(p[1].contains("state.max_known_devices = 0"));
        assert!(p[2].contains("engine.max_skew_minutes = -1"));
    }

    #[test]
    fn model_settings() {
        let d = Config::from_toml("").ok().unwrap().model;
        assert_eq!((d.dir, d.explicit), (Some(PathBuf::from(DEFAULT_MODEL_DIR)), false));
        let c = Config::from_toml("[engine]\nmodel_dir = \"models/v2\"\nmodel_verification = \"callback\"\n")
            .ok()
            .unwrap()
            .model;
        assert_eq!(c.dir, Some(PathBuf::from("models/v2")));
        assert!(c.explicit);
        assert_eq!(c.verification, Verification::Callback);
        let off = Config::from_toml("[engine]\nuse_model = false\n").ok().unwrap().model;
        assert_eq!(off.dir, None);
        let p = invalid("[engine]\nmodel_dir = \"m\"\nuse_model = false\nmodel_verification = \"sms\"\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("keep one") && p[1].contains("\"sms\"") && p[1].contains("delay, ars, callback"),
            "{p:?}"
        );
    }

    #[test]
    fn kafka_section_is_checked_whole() {
        let p = invalid(
            "[kafka]\nbrokers = \" \"\npartitions = 0\nsession_timeout_ms = 500\n[kafka.topics]\ndecisions = \"transfers\"\n\
             labels = \"a b\"\n[kafka.client]\n\"sasl.password\" = \"env:FDS_TEST_SURELY_UNSET\"\n[server]\nlisten = \"nine\"\n",
        );
        assert_eq!(p.len(), 7, "{p:?}");
        assert!(p.iter().any(|m| m.contains("kafka.session_timeout_ms = 500: must be between 3000 and 300000")));
        assert!(p.iter().any(|m| m.contains("kafka.partitions = 0")));
        assert!(p.iter().any(|m| m.contains("\"transfers\" is named for two topics")));
        assert!(p.iter().any(|m| m.contains("kafka.topics.labels")));
        assert!(p.iter().any(|m| m.contains("FDS_TEST_SURELY_UNSET is not set")));
        assert!(p.iter().any(|m| m.contains("server.listen")));
        assert!(p.iter().any(|m| m.contains("kafka.brokers is empty")));
    }

    #[test]
    fn kafka_settings_pass_through() {
        let c = Config::from_toml(
            "[kafka]\nbrokers = \"10.0.0.1:9092\"\n[kafka.topics]\ntransfers = \"ob.transfers\"\n\
             [kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n",
        )
        .ok()
        .unwrap();
        assert_eq!(c.kafka.brokers.as_deref(), Some("10.0.0.1:9092"));
        assert_eq!(c.kafka.topics.transfers, "ob.transfers");
        assert_eq!(c.kafka.topics.decisions, "decisions");
        assert_eq!(c.kafka.topics.observations, "observations");
        assert_eq!(c.kafka.session_timeout, Duration::from_secs(10));
        assert_eq!(c.kafka.client.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
    }

    #[test]
    fn settings_fds_owns_are_refused_all_at_once() {
        let keys = [
            "bootstrap.servers",
            "group.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "auto.offset.reset",
            "enable.idempotence",
            "acks",
            "request.required.acks",
            "message.timeout.ms",
            "delivery.timeout.ms",
            "partition.assignment.strategy",
            "isolation.level",
            "transactional.id",
            "enable.partition.eof",
        ];
        let mut text = "[kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n".to_owned();
        for k in keys {
            text.push_str(&format!("\"{k}\" = \"x\"\n"));
        }
        let p = invalid(&text);
        assert_eq!(p.len(), keys.len(), "{p:#?}");
        for k in keys {
            let line = p.iter().find(|m| m.starts_with(&format!("kafka.client.\"{k}\": "))).expect(k);
            assert!(line.len() > format!("kafka.client.\"{k}\": ").len() + 10, "no reason given: {line}");
        }
        assert!(p.iter().any(|m| m.contains("acks=all")), "{p:#?}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Config::from_toml(
            "[kafka.client]\n\"sasl.password\" = \"hunter2\"\n\"sasl.oauthbearer.client.secret\" = \"s3cret\"\n\
             \"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----\"\n\"ssl.key.password\" = \"kpw\"\n\
             \"sasl.username\" = \"fds-user\"\n",
        )
        .ok()
        .unwrap();
        for shown in [format!("{c:?}"), format!("{:?}", c.kafka), format!("{:#?}", c.kafka)] {
            for secret in ["hunter2", "s3cret", "PRIVATE KEY", "kpw"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("\"sasl.password\": \"<redacted>\""), "{shown}");
            assert!(shown.contains("fds-user"), "harmless settings are shown: {shown}");
        }
        let connection = crate::kafka::Connection { brokers: "10.0.0.1:9093".into(), client: c.kafka.client.clone() };
        let shown = format!("{connection:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("\"ssl.key.pem\": \"<redacted>\"") && shown.contains("10.0.0.1:9093"), "{shown}");
        let raw: RawConfig = toml::from_str("[kafka.client]\n\"sasl.password\" = \"hunter2\"\n").unwrap();
        assert!(!format!("{raw:?}").contains("hunter2"));
        assert!(
            crate::kafka::is_secret_setting("SSL.KEY.LOCATION")
                && !crate::kafka::is_secret_setting("security.protocol")
        );
    }

    #[test]
    fn unknown_keys_are_errors_not_ignored() {
        match Config::from_toml("[state]\naccount_ttl = 90\n") {
            Err(Problems::Syntax(m)) => assert!(m.contains("unknown field `account_ttl`"), "{m}"),
            _ => panic!("an unknown key was accepted"),
        }
    }
}
