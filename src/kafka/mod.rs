//! The Kafka pipeline: transfers in, decisions out.
//!
//! This module owns everything that touches a broker: the topics and message
//! contract shared with the transfer API, the client settings, the embedded
//! broker for demos, and the consume → score → produce loop ([`pipeline`]).
//!
//! ## The contract with the transfer API
//!
//! | topic (default name) | key              | value                                  | headers |
//! |----------------------|------------------|----------------------------------------|---------|
//! | `transfers`          | sender account   | a transfer event (JSON, `schema_version`) | `correlation-id`, `deadline-ms` |
//! | `context-events`     | account          | a context event (login, certificate...) | — |
//! | `labels`             | payee account    | a fraud report (label event)           | — |
//! | `decisions`          | sender account   | the decision (JSON, `schema_version`)  | `correlation-id`, `fds-decision`, `fds-late`, `fds-redelivered` |
//! | `dead-letter`        | the original key | the original bytes, unchanged          | `fds-error`, `fds-error-kind`, `fds-source-topic`, `fds-source-partition`, `fds-source-offset` |
//! | `state` (compacted)  | entity kind and key | the entity as a checked record (fds's own; see [`pipeline`]'s changelog) | `fds-checkpoint` |
//! | `observations`       | —                | a batch of transfers seen by one instance, for the others' payees and devices (fds's own) | — |
//!
//! Transfers and context events are keyed by the sender's account, and both
//! topics must have the same partition count, so one account's events land on
//! one partition number of each and therefore on one `fds` instance, in order.
//! Labels are read by every instance (each keeps its own reading position), so
//! every instance learns every reported payee; so are `observations`, so every
//! instance counts every transfer in its payee and device. `state`,
//! `decisions` and `observations` have as many partitions as `transfers`.
//!
//! ## Delivery semantics
//!
//! See [`pipeline`]: at least once, idempotent by transfer id, offsets stored
//! only after the decision (or dead-letter record) is acknowledged.

pub mod pipeline;

use std::collections::BTreeMap;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;

/// Why a broker-side set-up step failed.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("cannot start the embedded broker")]
    Embedded(#[source] KafkaError),
    #[error("cannot create topic {topic} on {brokers}: {code}")]
    CreateTopic { topic: String, brokers: String, code: RDKafkaErrorCode },
    #[error("cannot reach the brokers at {brokers}")]
    Unreachable { brokers: String, source: KafkaError },
}

/// The header carrying the transfer id, on transfers and on decisions. The
/// transfer API matches decisions to waiting requests by it.
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
/// The header carrying the moment (Unix epoch milliseconds, UTC) by which the
/// transfer API needs the decision. A transfer consumed after it is still
/// scored (the state must see it) but its decision is marked late.
pub const HEADER_DEADLINE_MS: &str = "deadline-ms";
/// On decisions: the verdict, `"allow"` or `"hold"`, as in the body, so the
/// transfer API can route an answer without parsing it.
pub const HEADER_DECISION: &str = "fds-decision";
/// On decisions: `"true"` when the transfer was consumed after its deadline.
pub const HEADER_LATE: &str = "fds-late";
/// On decisions: `"true"` when the transfer was delivered again (after a
/// restart or rebalance) and the decision is the one already given.
pub const HEADER_REDELIVERED: &str = "fds-redelivered";
/// On dead-letter records: why the message was refused, in words.
pub const HEADER_ERROR: &str = "fds-error";
/// On dead-letter records: the kind of refusal, one of [`DeadLetterKind`].
pub const HEADER_ERROR_KIND: &str = "fds-error-kind";
/// On dead-letter records: where the original message was read.
pub const HEADER_SOURCE_TOPIC: &str = "fds-source-topic";
/// On dead-letter records: the partition the original message was read from.
pub const HEADER_SOURCE_PARTITION: &str = "fds-source-partition";
/// On dead-letter records: the original message's offset.
pub const HEADER_SOURCE_OFFSET: &str = "fds-source-offset";
/// On dead-letter records cut to fit the broker's size limit: the original length.
pub const HEADER_TRUNCATED_FROM: &str = "fds-truncated-from";

/// Whether a librdkafka setting holds a secret: a password, a client secret
/// (`sasl.oauthbearer.client.secret`), or private key material (`ssl.key.pem`,
/// `ssl.key.location`, `ssl.key.password`). Over-matching costs only a
/// `<redacted>` where a harmless value would have been.
pub fn is_secret_setting(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key.pem", "ssl.key", "ssl_key"].iter().any(|s| key.contains(s))
}

/// librdkafka settings for `Debug` output, with the values of secret ones
/// (see [`is_secret_setting`]) shown as `"<redacted>"`. Used by every type
/// that holds pass-through settings, [`Connection`] and the checked
/// configuration included.
pub struct RedactedSettings<'a>(pub &'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedSettings<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, if is_secret_setting(k) { "<redacted>" } else { v.as_str() })))
            .finish()
    }
}

/// The topic names, configurable per deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Transfer requests in, keyed by sender account.
    pub transfers: String,
    /// Context events in, keyed by account; as many partitions as `transfers`.
    pub context_events: String,
    /// Fraud reports in, keyed by payee; every instance reads all of it.
    pub labels: String,
    /// Decisions out, keyed by sender account.
    pub decisions: String,
    /// Refused messages out, with the reason in headers.
    pub dead_letter: String,
    /// The state's changelog (compacted): fds writes and reads it itself.
    pub state: String,
    /// The shared payee and device tables' observations: every instance
    /// writes its own transfers' and reads everyone's; as many partitions
    /// as `transfers`.
    pub observations: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            transfers: "transfers".into(),
            context_events: "context-events".into(),
            labels: "labels".into(),
            decisions: "decisions".into(),
            dead_letter: "dead-letter".into(),
            state: "state".into(),
            observations: "observations".into(),
        }
    }
}

impl Topics {
    /// Every topic, inputs first.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.transfers,
            &self.context_events,
            &self.labels,
            &self.decisions,
            &self.dead_letter,
            &self.state,
            &self.observations,
        ]
    }
}

/// Why a message went to the dead-letter topic. The name is the value of the
/// `fds-error-kind` header and of the `reason` label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// Not JSON, not an event, an unknown event type, a bad field value.
    Malformed,
    /// Well-formed but wrong: a field past its bound (an id too long, an
    /// empty name, a bad bank code, an amount out of range).
    Invalid,
    /// Longer than `engine.max_event_bytes`: refused before it was parsed.
    TooLarge,
    /// An event of a type that does not belong on the topic it came from.
    WrongTopic,
    /// Dated too far ahead of the wall clock.
    AheadOfClock,
}

impl DeadLetterKind {
    /// Every kind, for metrics resolved up front.
    pub const ALL: [DeadLetterKind; 5] = [
        DeadLetterKind::Malformed,
        DeadLetterKind::Invalid,
        DeadLetterKind::TooLarge,
        DeadLetterKind::WrongTopic,
        DeadLetterKind::AheadOfClock,
    ];

    /// The kind of refusal an event that could not be read gets.
    pub fn of(error: &crate::event::EventError) -> DeadLetterKind {
        use crate::event::EventError;
        match error {
            EventError::Malformed { .. } => DeadLetterKind::Malformed,
            EventError::Invalid { .. } => DeadLetterKind::Invalid,
            EventError::TooLarge { .. } => DeadLetterKind::TooLarge,
        }
    }

    /// The name in the `fds-error-kind` header and the metric label.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterKind::Malformed => "malformed",
            DeadLetterKind::Invalid => "invalid",
            DeadLetterKind::TooLarge => "too_large",
            DeadLetterKind::WrongTopic => "wrong_topic",
            DeadLetterKind::AheadOfClock => "ahead_of_clock",
        }
    }
}

/// How to reach the brokers: the bootstrap list and any librdkafka settings
/// the operator passes through (TLS, SASL, timeouts...), applied last so the
/// operator has the final word. Its `Debug` output hides secrets such as a
/// resolved `sasl.password` (see [`is_secret_setting`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Bootstrap servers, `HOST:PORT[,HOST:PORT...]`.
    pub brokers: String,
    /// librdkafka settings passed through (TLS, SASL...), secrets already resolved.
    pub client: BTreeMap<String, String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("brokers", &self.brokers)
            .field("client", &RedactedSettings(&self.client))
            .finish()
    }
}

impl Connection {
    /// A connection with no extra client settings.
    pub fn new(brokers: impl Into<String>) -> Self {
        Connection { brokers: brokers.into(), client: BTreeMap::new() }
    }

    /// A librdkafka configuration with the bootstrap servers, `settings` (the
    /// role's own defaults), then the operator's pass-through settings.
    pub fn client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // Requests here are small and latency-bound: never let Nagle's
        // algorithm hold one back waiting for an ACK.
        c.set("socket.nagle.disable", "true");
        if self.brokers.split(',').all(|b| b.starts_with("127.0.0.1:") || b.starts_with("localhost:")) {
            // A loopback broker: skip the IPv6 attempt `localhost` would cost.
            c.set("broker.address.family", "v4");
        }
        for (k, v) in settings {
            c.set(*k, *v);
        }
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// A Kafka-protocol broker inside this process, on a loopback port:
/// librdkafka's mock cluster. It lets the demo and the tests run the real
/// client code with nothing installed. It keeps records in memory only, and its
/// transactions are not real (the pipeline uses none).
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

/// By hand: the mock cluster has no `Debug`, and its address is what a reader needs.
impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker").field("bootstrap_servers", &self.bootstrap_servers()).finish()
    }
}

impl EmbeddedBroker {
    /// Start a one-broker cluster with every topic created: `partitions` for
    /// the keyed topics (transfers, context events, decisions), one for the
    /// others.
    pub fn start(topics: &Topics, partitions: i32) -> Result<Self, KafkaSetupError> {
        let cluster = MockCluster::new(1).map_err(KafkaSetupError::Embedded)?;
        for (name, n) in topic_layout(topics, partitions) {
            cluster.create_topic(name, n, 1).map_err(KafkaSetupError::Embedded)?;
        }
        Ok(EmbeddedBroker { cluster })
    }

    /// The `HOST:PORT` other clients (another process too) connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The mock cluster itself, for tests that take its broker down and up.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

/// Each topic with its partition count: the keyed topics get `partitions`
/// (transfers and context events must match, the state changelog and the
/// observations follow them), labels and dead letters one.
fn topic_layout(topics: &Topics, partitions: i32) -> [(&str, i32); 7] {
    [
        (&topics.transfers, partitions),
        (&topics.context_events, partitions),
        (&topics.labels, 1),
        (&topics.decisions, partitions),
        (&topics.dead_letter, 1),
        (&topics.state, partitions),
        (&topics.observations, partitions),
    ]
}

/// How long `fds topics create` has the brokers keep a changelog record
/// before compaction may drop it for a newer one of the same entity: an
/// hour. A record of a checkpoint that never completed can be the newest of
/// its entity until the next owner's first checkpoint writes the entity
/// again (seconds later); compacted before that, the entity's record as of
/// the last complete checkpoint would be gone.
pub const STATE_MIN_COMPACTION_LAG_MS: &str = "3600000";

/// How long `fds topics create` has the brokers keep observations: 6 hours.
pub const OBSERVATIONS_RETENTION_MS: &str = "21600000";

/// Create the topics on a real cluster (`fds topics create`); topics that
/// already exist are left as they are.
pub fn create_topics(
    connection: &Connection,
    topics: &Topics,
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaSetupError> {
    let brokers = connection.brokers.clone();
    let admin: AdminClient<DefaultClientContext> = connection
        .client_config(&[])
        .create()
        .map_err(|source| KafkaSetupError::Unreachable { brokers: brokers.clone(), source })?;
    let layout = topic_layout(topics, partitions);
    // The changelog keeps the latest record per entity: compacted. The
    // observations are read live, and after a restart only from the last
    // checkpoints on (seconds back): hours of them are plenty, and at 10,000
    // transfers/s a week would be 400 GB.
    let new: Vec<NewTopic<'_>> = layout
        .iter()
        .map(|&(name, n)| {
            let topic = NewTopic::new(name, n, TopicReplication::Fixed(replication));
            if name == topics.state {
                topic.set("cleanup.policy", "compact").set("min.compaction.lag.ms", STATE_MIN_COMPACTION_LAG_MS)
            } else if name == topics.observations {
                topic.set("retention.ms", OBSERVATIONS_RETENTION_MS)
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    // The admin client answers through a future; a one-off runtime waits for it.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let results = runtime
        .block_on(admin.create_topics(&new, &opts))
        .map_err(|source| KafkaSetupError::Unreachable { brokers: brokers.clone(), source })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, brokers, code }),
        }
    }
    Ok(())
}
