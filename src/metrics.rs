//! Prometheus metrics: every metric the product exports, named once, here.
//!
//! This module owns the metric names, their help texts, labels and histogram
//! buckets, and the [`Registry`] they live in. The pipeline and the engine's
//! callers update the public fields; [`crate::api`] serves [`Metrics::encode`].
//!
//! Why it is built this way:
//! - One place for names, so a dashboard or alert can be checked against one
//!   file, and a rename is one edit.
//! - A [`Registry`] owned by [`Metrics`] rather than the process-wide default,
//!   so tests (and replay) can make as many independent sets as they like.
//!
//! Guarantees:
//! - **Bounded cardinality.** No label ever holds an account, payee, device or
//!   transfer id; every label value comes from a small fixed set (decision,
//!   verification, dead-letter kind, entity kind, reload result) or from
//!   configuration the operator controls (topic names, rule ids).
//! - **Known series exist from the start.** Labelled metrics whose values are
//!   known in advance (`fds_decisions_total`, `fds_dead_letter_total`,
//!   `fds_state_entities`, `fds_rules_reloads_total`, `fds_holds_total`) have
//!   every series created,
//!   at 0, in [`Metrics::new`], so `rate()` and absence alerts work before the
//!   first event. `fds_events_consumed_total` and `fds_rule_fired_total` are
//!   labelled by configuration (topic names, rule ids) and so appear only once
//!   the caller first uses a label value.
//! - **Series that follow what is in force.** `fds_model_info{version}` and
//!   `fds_ruleset_info{version}` hold one series, at 1, for the model and the
//!   rule set in force (none for the model when rules alone decide); a reload
//!   removes the old version's series and sets the new one
//!   ([`Metrics::observe_in_force`]). `fds_consumer_lag{topic, partition}`
//!   has a series for each input partition assigned to this instance, removed
//!   when the partition is revoked (the pipeline keeps it; see
//!   `kafka::pipeline`'s `lag` module for what it counts).
//! - **Model drift.** `fds_model_score` is the histogram of every score the
//!   model gives, in the bins of [`SCORE_BINS`]; `fds_model_score_psi` is the
//!   population stability index of the recent scores against the model
//!   card's [`ScoreReference`](crate::model::card::ScoreReference), computed
//!   from that histogram's bucket counts when [`Metrics::observe_in_force`]
//!   runs (before each scrape), never on the hot path; see [`crate::model::drift::ScoreWindow`]
//!   for the window.
//! - **Process.** The prometheus crate's process collector (Linux) is in the
//!   registry: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_virtual_memory_bytes`, `process_start_time_seconds`,
//!   `process_open_fds`, `process_max_fds`, `process_threads`.
//! - **No hashing on the hot path.** [`Metrics::count_decision`] uses children
//!   resolved once in [`Metrics::new`]. Callers of the labelled vectors should
//!   do the same: resolve `events_consumed.with_label_values(&[topic])` once per
//!   topic at start, and the `rules_fired` children once per rule set (indexed
//!   like [`crate::rules::RuleSet::rules`]), and keep the returned counters.

use std::fmt;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::engine::{HoldSource, Outcome};
use crate::kafka::DeadLetterKind;
use crate::model::card::SCORE_BINS;
use crate::model::drift::ScoreWindow;
use crate::model::{quality, Model};
use crate::rules::{RuleSet, Verification};
use crate::state::State;

/// `fds_engine_latency_seconds`: state, features and rules for one transfer
/// take microseconds; 10 ms would be a stall worth seeing.
const ENGINE_BUCKETS: [f64; 13] =
    [1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3];

/// End-to-end ages (`fds_decision_age_seconds`, `fds_produce_ack_seconds`):
/// from a sub-millisecond happy path up to a broker outage or a consumer far
/// behind, with 1-2-5 steps so any latency budget falls near a bucket bound.
const END_TO_END_BUCKETS: [f64; 18] =
    [100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0];

/// The outcomes of `fds_shared_observations_total`.
pub const SHARED_OUTCOMES: [&str; 4] = ["sent", "applied", "skipped", "refused"];

/// The product's metrics and the registry they are exported from.
///
/// Every field is cheap to update from any thread (atomics inside). The
/// gauges `ready` and `broker_up` are set from [`crate::api::Health`] at each
/// scrape by [`crate::api`], so callers need not keep them in step.
pub struct Metrics {
    /// The registry `/metrics` encodes: this product's metrics only.
    pub registry: Registry,
    /// `fds_events_consumed_total{topic}`. Resolve each topic's child once.
    pub events_consumed: IntCounterVec,
    /// `fds_decisions_late_total`: decisions made after the transfer's deadline.
    pub decisions_late: IntCounter,
    /// `fds_decisions_redelivered_total`: a re-delivered transfer answered with
    /// the decision already given.
    pub decisions_redelivered: IntCounter,
    /// `fds_dead_letter_total{reason}`, `reason` one of [`DeadLetterKind::name`].
    pub dead_letters: IntCounterVec,
    /// `fds_rule_fired_total{rule, shadow}`: rule id, `"true"`/`"false"`.
    pub rules_fired: IntCounterVec,
    /// `fds_engine_latency_seconds`: state + features + rules, per transfer.
    pub engine_latency: Histogram,
    /// `fds_decision_age_seconds`: from the transfer's Kafka timestamp to its
    /// decision handed to the producer.
    pub decision_age: Histogram,
    /// `fds_produce_ack_seconds`: decision handed to the producer until the
    /// broker acknowledged it.
    pub ack_latency: Histogram,
    /// `fds_produce_retries_total`.
    pub produce_retries: IntCounter,
    /// `fds_broker_up`: 1 when the broker is reachable.
    pub broker_up: IntGauge,
    /// `fds_offsets_pending`: consumed messages whose outcome is not yet
    /// acknowledged, so their offsets cannot be stored yet.
    pub offsets_pending: IntGauge,
    /// `fds_state_entities{kind}`, `kind` = `account`, `payee` or `device`.
    pub state_entities: IntGaugeVec,
    /// `fds_state_bytes{kind}`: estimated bytes held by the state, by
    /// entity kind (as `fds_state_entities`).
    pub state_bytes: IntGaugeVec,
    /// `fds_state_sweeps_total`: sweeps of idle entities run (by event time,
    /// several per TTL), and `fds_state_expired_total`: the entities they
    /// expired. Set from [`crate::engine::Engine::sweeps`] by
    /// [`Metrics::observe_sweeps`].
    pub state_sweeps: IntCounter,
    /// `fds_state_expired_total` (see `state_sweeps`).
    pub state_expired: IntCounter,
    /// `fds_merge_gave_up_total`: times the scoring thread stopped waiting for
    /// an input partition that should have had more to deliver (its leader
    /// unreachable) and went on without it, out of the canonical order.
    pub merge_gave_up: IntCounter,
    /// `fds_state_checkpoints_total{result}`: checkpoints of the state to
    /// the changelog, `result` = `written` or `failed` (a record refused: the
    /// next one writes every entity).
    pub state_checkpoints: IntCounterVec,
    /// `fds_state_local_copies_total{result}`: local copies of the state
    /// written at a graceful stop (`engine.state_dir`), `result` =
    /// `written`, `skipped` (nothing it could cover: partitions not all held
    /// without the changelog, or the last checkpoint incomplete) or `failed`
    /// (the disk full, say: the previous copy is left as it was).
    pub state_local_copies: IntCounterVec,
    /// `fds_state_checkpoint_pause_seconds`: the longest the scoring thread
    /// spent at once on the last changelog checkpoint (it is written a few
    /// entities per turn, so this stays well under a millisecond).
    pub state_checkpoint_pause_seconds: Gauge,
    /// `fds_state_checkpoint_failing`: 1 while the last checkpoint failed or
    /// the open one is overdue (the `/readyz` warning), 0 once one is written.
    pub state_checkpoint_failing: IntGauge,
    /// `fds_state_restores_total{result}`: restores of the state (the shared
    /// tables at start, accounts when partitions are assigned), `result` =
    /// `restored` (from the changelog), `local` (from the local copy),
    /// `empty` (no checkpoint), `stale` (a local copy that no longer
    /// matches) or `refused` (unreadable or corrupt).
    pub state_restores: IntCounterVec,
    /// `fds_state_restore_records_refused_total{reason}`: changelog records a
    /// restore could not use, `reason` = `checksum` (corrupt or cut short),
    /// `format` (written by another state format version) or `malformed`
    /// (no checkpoint header, a key that names no entity, a record under
    /// another entity's key, an unreadable marker). Each is logged with its
    /// topic, partition and offset; the entity falls back to its previous
    /// record.
    pub state_records_refused: IntCounterVec,
    /// `fds_state_restore_seconds`: how long the last restore took.
    pub state_restore_seconds: Gauge,
    /// `fds_state_restore_bytes`: bytes of the snapshot last restored.
    pub state_restore_bytes: IntGauge,
    /// `fds_shared_observations_total{outcome}`: the shared payee and device
    /// tables' traffic: `sent` (this instance's transfers, to the others),
    /// `applied` (the others', counted here), `skipped` (already counted:
    /// this instance's own, or seen before) and `refused` (an unreadable
    /// batch, each observation in it counted once the batch says how many).
    pub shared_observations: IntCounterVec,
    /// `fds_shared_lag_seconds`: from another instance producing an
    /// observation to it being counted here (the shared tables' freshness).
    pub shared_lag: Histogram,
    /// `fds_rules_reloads_total{result}`, `result` = `applied` or `rejected`.
    pub rules_reloads: IntCounterVec,
    /// `fds_rules_loaded`: rules in force (live and shadow).
    pub rules_loaded: IntGauge,
    /// `fds_rules_load_seconds`: how long the rule set in force took to read
    /// and compile (its lists included).
    pub rules_load_seconds: Gauge,
    /// `fds_list_entries{list}`: distinct entries of each list of the rule
    /// set in force (list names come from the rules directory, a short set).
    pub list_entries: IntGaugeVec,
    /// `fds_list_entries_expired{list}`: of those, entries whose expiry had
    /// passed by the wall clock when the rule set was loaded. They no longer
    /// match live traffic (matching goes by each transfer's event time) and
    /// can be pruned.
    pub list_entries_expired: IntGaugeVec,
    /// `fds_model_reloads_total{result}`, `result` = `applied` or `rejected`.
    pub model_reloads: IntCounterVec,
    /// `fds_model_loaded`: 1 when a model scores beside the rules.
    pub model_loaded: IntGauge,
    /// `fds_model_holds_total`: transfers whose model score reached the hold
    /// threshold (whether or not a rule also held them).
    pub model_holds: IntCounter,
    /// `fds_ready`: 1 when the instance answers transfers.
    pub ready: IntGauge,
    /// `fds_consumer_lag{topic, partition}`: messages of an input partition
    /// assigned to this instance not yet decided (its end minus the first
    /// offset whose outcome is not yet safe); kept by the pipeline, which
    /// removes a partition's series when it is revoked.
    pub consumer_lag: IntGaugeVec,
    /// `fds_model_score`: the model's score of each transfer it scores, in
    /// the bins of [`SCORE_BINS`].
    pub model_score: Histogram,
    /// `fds_model_score_psi`: population stability index of the recent
    /// scores against the card's reference (see [`crate::model::drift::ScoreWindow`]).
    pub model_score_psi: Gauge,
    /// `fds_model_info{version}`: 1 for the model in force.
    pub model_info: IntGaugeVec,
    /// `fds_ruleset_info{version}`: 1 for the rule set in force.
    pub ruleset_info: IntGaugeVec,
    /// `fds_holds_total{source}`, `source` one of [`HoldSource::name`].
    pub holds: IntCounterVec,

    /// `fds_decisions_total{decision, verification}`, for combinations the
    /// engine never makes (so they have no pre-resolved child).
    decisions: IntCounterVec,
    decided_allow: IntCounter,
    /// Indexed by [`verification_index`].
    decided_hold: [IntCounter; Verification::ALL.len()],
    entities_account: IntGauge,
    entities_payee: IntGauge,
    entities_device: IntGauge,
    bytes_account: IntGauge,
    bytes_payee: IntGauge,
    bytes_device: IntGauge,
    /// Indexed like [`HoldSource::ALL`].
    held_by: [IntCounter; HoldSource::ALL.len()],
    /// What [`Metrics::observe_in_force`] last exported.
    in_force: Mutex<InForce>,
}

/// The versions whose info series are set, and the drift window.
#[derive(Debug, Default)]
struct InForce {
    model: Option<String>,
    ruleset: Option<String>,
    /// The lists with series in `fds_list_entries`.
    lists: Vec<String>,
    window: ScoreWindow,
}

impl Metrics {
    /// Create and register every metric, with every known series at 0.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;

        let decisions = register(
            r,
            IntCounterVec::new(
                Opts::new("fds_decisions_total", "Transfers decided, by decision and verification asked for."),
                &["decision", "verification"],
            ),
        );
        let decided_allow = decisions.with_label_values(&["allow", "none"]);
        let decided_hold = Verification::ALL.map(|v| decisions.with_label_values(&["hold", v.name()]));

        let dead_letters = register(
            r,
            IntCounterVec::new(
                Opts::new("fds_dead_letter_total", "Messages sent to the dead-letter topic, by reason."),
                &["reason"],
            ),
        );
        for kind in DeadLetterKind::ALL {
            dead_letters.with_label_values(&[kind.name()]);
        }

        let state_entities = register(
            r,
            IntGaugeVec::new(Opts::new("fds_state_entities", "Entities held in the state, by kind."), &["kind"]),
        );
        let entities_account = state_entities.with_label_values(&["account"]);
        let entities_payee = state_entities.with_label_values(&["payee"]);
        let entities_device = state_entities.with_label_values(&["device"]);
        let state_bytes = register(
            r,
            IntGaugeVec::new(Opts::new("fds_state_bytes", "Estimated bytes held by the state, by kind."), &["kind"]),
        );
        let bytes_account = state_bytes.with_label_values(&["account"]);
        let bytes_payee = state_bytes.with_label_values(&["payee"]);
        let bytes_device = state_bytes.with_label_values(&["device"]);

        let rules_reloads = register(
            r,
            IntCounterVec::new(Opts::new("fds_rules_reloads_total", "Rule directory reloads, by result."), &["result"]),
        );
        for result in ["applied", "rejected"] {
            rules_reloads.with_label_values(&[result]);
        }

        let model_reloads = register(
            r,
            IntCounterVec::new(
                Opts::new("fds_model_reloads_total", "Model directory reloads, by result."),
                &["result"],
            ),
        );
        for result in ["applied", "rejected"] {
            model_reloads.with_label_values(&[result]);
        }

        let holds = register(
            r,
            IntCounterVec::new(
                Opts::new("fds_holds_total", "Held transfers, by what held them: rules, model or both."),
                &["source"],
            ),
        );
        let held_by = HoldSource::ALL.map(|s| holds.with_label_values(&[s.name()]));

        // The process's CPU, memory, file descriptors and start time, read
        // from /proc at each scrape (Linux only).
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process metric names are unique");

        Metrics {
            events_consumed: register(
                r,
                IntCounterVec::new(Opts::new("fds_events_consumed_total", "Messages consumed, by topic."), &["topic"]),
            ),
            decisions_late: register(
                r,
                IntCounter::new("fds_decisions_late_total", "Decisions made after the transfer's deadline."),
            ),
            decisions_redelivered: register(
                r,
                IntCounter::new(
                    "fds_decisions_redelivered_total",
                    "Re-delivered transfers answered with the decision already given.",
                ),
            ),
            dead_letters,
            rules_fired: register(
                r,
                IntCounterVec::new(
                    Opts::new("fds_rule_fired_total", "Rules that fired, by rule id and whether in shadow."),
                    &["rule", "shadow"],
                ),
            ),
            engine_latency: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "fds_engine_latency_seconds",
                        "Time to update state, compute features and evaluate rules for one transfer.",
                    )
                    .buckets(ENGINE_BUCKETS.to_vec()),
                ),
            ),
            decision_age: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "fds_decision_age_seconds",
                        "From the transfer's Kafka timestamp to its decision handed to the producer.",
                    )
                    .buckets(END_TO_END_BUCKETS.to_vec()),
                ),
            ),
            ack_latency: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "fds_produce_ack_seconds",
                        "From a decision handed to the producer to the broker's acknowledgement.",
                    )
                    .buckets(END_TO_END_BUCKETS.to_vec()),
                ),
            ),
            produce_retries: register(
                r,
                IntCounter::new("fds_produce_retries_total", "Produce attempts retried after a failure."),
            ),
            broker_up: register(r, IntGauge::new("fds_broker_up", "1 when the Kafka broker is reachable.")),
            offsets_pending: register(
                r,
                IntGauge::new(
                    "fds_offsets_pending",
                    "Consumed messages whose outcome is not yet acknowledged by the broker.",
                ),
            ),
            state_entities,
            state_bytes,
            state_sweeps: register(
                r,
                IntCounter::new("fds_state_sweeps_total", "Sweeps of idle entities run, by event time."),
            ),
            state_expired: register(
                r,
                IntCounter::new("fds_state_expired_total", "Entities expired by the sweeps of idle entities."),
            ),
            merge_gave_up: register(
                r,
                IntCounter::new(
                    "fds_merge_gave_up_total",
                    "Times an input partition that should have had more was not waited for any longer.",
                ),
            ),
            state_checkpoints: register(
                r,
                IntCounterVec::new(
                    Opts::new("fds_state_checkpoints_total", "State checkpoints to the changelog, by result."),
                    &["result"],
                ),
            ),
            state_local_copies: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "fds_state_local_copies_total",
                        "Local copies of the state written at a graceful stop, by result.",
                    ),
                    &["result"],
                ),
            ),
            state_checkpoint_pause_seconds: register(
                r,
                Gauge::new(
                    "fds_state_checkpoint_pause_seconds",
                    "The longest the scoring thread spent at once on the last state checkpoint.",
                ),
            ),
            state_checkpoint_failing: register(
                r,
                IntGauge::new(
                    "fds_state_checkpoint_failing",
                    "1 while state checkpoints fail or are overdue, 0 once one is written.",
                ),
            ),
            state_restores: register(
                r,
                IntCounterVec::new(
                    Opts::new("fds_state_restores_total", "State restores by where the state came from, or why not."),
                    &["result"],
                ),
            ),
            state_records_refused: {
                let v = register(
                    r,
                    IntCounterVec::new(
                        Opts::new(
                            "fds_state_restore_records_refused_total",
                            "Changelog records a state restore could not use, by reason.",
                        ),
                        &["reason"],
                    ),
                );
                for reason in ["checksum", "format", "malformed"] {
                    v.with_label_values(&[reason]);
                }
                v
            },
            state_restore_seconds: register(
                r,
                Gauge::new("fds_state_restore_seconds", "How long the last state restore took."),
            ),
            state_restore_bytes: register(
                r,
                IntGauge::new("fds_state_restore_bytes", "Bytes of the state snapshot last restored."),
            ),
            shared_observations: {
                let v = register(
                    r,
                    IntCounterVec::new(
                        Opts::new(
                            "fds_shared_observations_total",
                            "Observations of the shared payee and device tables, by outcome.",
                        ),
                        &["outcome"],
                    ),
                );
                for outcome in SHARED_OUTCOMES {
                    v.with_label_values(&[outcome]);
                }
                v
            },
            shared_lag: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "fds_shared_lag_seconds",
                        "From another instance producing an observation to it being counted here.",
                    )
                    .buckets(END_TO_END_BUCKETS.to_vec()),
                ),
            ),
            rules_reloads,
            rules_loaded: register(r, IntGauge::new("fds_rules_loaded", "Rules in force, live and shadow.")),
            rules_load_seconds: register(
                r,
                Gauge::new("fds_rules_load_seconds", "Seconds the rule set in force took to read and compile."),
            ),
            list_entries: register(
                r,
                IntGaugeVec::new(Opts::new("fds_list_entries", "Entries of each list in force, by list."), &["list"]),
            ),
            list_entries_expired: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "fds_list_entries_expired",
                        "List entries already expired by the wall clock when the rule set was loaded, by list.",
                    ),
                    &["list"],
                ),
            ),
            model_reloads,
            model_loaded: register(r, IntGauge::new("fds_model_loaded", "1 when a model scores beside the rules.")),
            model_holds: register(
                r,
                IntCounter::new("fds_model_holds_total", "Transfers whose model score reached the hold threshold."),
            ),
            ready: register(r, IntGauge::new("fds_ready", "1 when this instance is ready to answer transfers.")),
            consumer_lag: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "fds_consumer_lag",
                        "Messages of an input partition assigned here not yet decided: its end minus the first \
                         offset whose outcome is not yet acknowledged.",
                    ),
                    &["topic", "partition"],
                ),
            ),
            model_score: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("fds_model_score", "The model's fraud score of each transfer it scored.")
                        .buckets(SCORE_BINS.to_vec()),
                ),
            ),
            model_score_psi: register(
                r,
                Gauge::new(
                    "fds_model_score_psi",
                    "Population stability index of the recent model scores against the card's reference \
                     (0 until enough scores, or without a reference).",
                ),
            ),
            model_info: register(
                r,
                IntGaugeVec::new(Opts::new("fds_model_info", "1 for the model in force, by version."), &["version"]),
            ),
            ruleset_info: register(
                r,
                IntGaugeVec::new(
                    Opts::new("fds_ruleset_info", "1 for the rule set in force, by version."),
                    &["version"],
                ),
            ),
            holds,
            held_by,
            in_force: Mutex::new(InForce::default()),
            decisions,
            decided_allow,
            decided_hold,
            entities_account,
            entities_payee,
            entities_device,
            bytes_account,
            bytes_payee,
            bytes_device,
            registry,
        }
    }

    /// Count one decision in `fds_decisions_total`.
    ///
    /// Called for every transfer, so the usual combinations (allow without
    /// verification, hold with one) go to counters resolved in [`Metrics::new`]
    /// and no label is hashed; any other combination still counts, slowly.
    pub fn count_decision(&self, outcome: Outcome, verification: Option<Verification>) {
        match (outcome, verification) {
            (Outcome::Allow, None) => self.decided_allow.inc(),
            (Outcome::Hold, Some(v)) => self.decided_hold[verification_index(v)].inc(),
            (outcome, verification) => {
                let verification = verification.map_or("none", Verification::name);
                self.decisions.with_label_values(&[outcome.name(), verification]).inc();
            }
        }
    }

    /// Count a held transfer in `fds_holds_total` under what held it (see
    /// [`crate::engine::Decision::held_by`]); no label is hashed.
    pub fn count_hold(&self, source: HoldSource) {
        self.held_by[hold_source_index(source)].inc();
    }

    /// Refresh what follows the rule set and the model in force:
    /// `fds_rules_loaded`, `fds_model_loaded`, `fds_ruleset_info`,
    /// `fds_model_info` (the previous version's series removed when it
    /// changed) and `fds_model_score_psi`.
    ///
    /// Call it before a scrape (`fds run` does), not per event: it reads the
    /// score histogram's buckets and computes the index, some microseconds.
    pub fn observe_in_force(&self, rules: &RuleSet, model: Option<&Model>) {
        let mut in_force = self.in_force.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.rules_loaded.set(gauge_value(rules.rules().len()));
        self.model_loaded.set(i64::from(model.is_some()));
        if swap_info(&self.ruleset_info, &mut in_force.ruleset, Some(rules.version())) {
            self.observe_lists(rules, &mut in_force.lists);
        }
        let model_changed = swap_info(&self.model_info, &mut in_force.model, model.map(Model::version));
        let counts = self.score_counts();
        if model_changed {
            // Scores given before belong to another model (or none): the
            // window starts afresh.
            in_force.window = ScoreWindow::default();
        }
        let live = in_force.window.observe(counts);
        let reference = model.and_then(|m| m.card().score_reference.as_ref());
        let psi = match (reference, live) {
            (Some(reference), Some(live)) => quality::psi(&reference.fractions(), &live),
            _ => 0.0,
        };
        self.model_score_psi.set(psi);
    }

    /// The lists' gauges for a rule set just put in force; the series of
    /// lists it no longer has are removed. Counting expired entries walks
    /// each list once, so it is done per rule set, not per scrape.
    fn observe_lists(&self, rules: &RuleSet, shown: &mut Vec<String>) {
        let now = crate::event::EventTime(chrono::Utc::now().timestamp_millis());
        let names: Vec<String> = rules.lists().map(|(name, _)| name.to_owned()).collect();
        for gone in shown.iter().filter(|n| !names.contains(n)) {
            let _ = self.list_entries.remove_label_values(&[gone]);
            let _ = self.list_entries_expired.remove_label_values(&[gone]);
        }
        for (name, counts) in rules.list_counts_at(now) {
            self.list_entries.with_label_values(&[name]).set(gauge_value(counts.entries));
            self.list_entries_expired.with_label_values(&[name]).set(gauge_value(counts.expired));
        }
        *shown = names;
        self.rules_load_seconds.set(rules.load_time().as_secs_f64());
    }

    /// `fds_model_score`'s count per bin of [`SCORE_BINS`] so far (not
    /// cumulative).
    fn score_counts(&self) -> [u64; SCORE_BINS.len()] {
        let mut counts = [0; SCORE_BINS.len()];
        let families = self.model_score.collect();
        let Some(h) = families.first().and_then(|f| f.get_metric().first()).map(|m| m.get_histogram()) else {
            return counts;
        };
        let mut below = 0;
        for (i, b) in h.get_bucket().iter().take(SCORE_BINS.len()).enumerate() {
            counts[i] = b.cumulative_count().saturating_sub(below);
            below = b.cumulative_count();
        }
        // Scores above the last bound (never made: scores are at most 1)
        // count in the last bin, as `score_bin` puts them.
        counts[SCORE_BINS.len() - 1] += h.get_sample_count().saturating_sub(below);
        counts
    }

    /// Every metric in the Prometheus text exposition format
    /// ([`prometheus::TEXT_FORMAT`]).
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            // Text encoding into a String fails only on a malformed family,
            // which the registry refuses at registration.
            .expect("registered metrics encode as text")
    }

    /// Refresh `fds_state_entities` and `fds_state_bytes` from the state.
    ///
    /// Call it before a scrape, not per event: measuring bytes walks every
    /// entity (briefly read-locking each map shard), so it costs time in
    /// proportion to the state's size.
    pub fn observe_state(&self, state: &State) {
        let memory = state.memory();
        self.entities_account.set(gauge_value(memory.accounts));
        self.entities_payee.set(gauge_value(memory.payees));
        self.entities_device.set(gauge_value(memory.devices));
        self.bytes_account.set(gauge_value(memory.account_bytes));
        self.bytes_payee.set(gauge_value(memory.payee_bytes));
        self.bytes_device.set(gauge_value(memory.device_bytes));
    }

    /// Bring `fds_state_sweeps_total` and `fds_state_expired_total` up to
    /// the engine's totals ([`crate::engine::Engine::sweeps`]), before a scrape.
    pub fn observe_sweeps(&self, (sweeps, expired): (u64, u64)) {
        self.state_sweeps.inc_by(sweeps.saturating_sub(self.state_sweeps.get()));
        self.state_expired.inc_by(expired.saturating_sub(self.state_expired.get()));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Register `metric` and hand it back. Registration fails only for a bad or
/// duplicate name, a bug in this file that every test would catch.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> M {
    let metric = metric.expect("metric definition is valid");
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

/// Make `vec`'s one series the `{version}` of `now`, removing the one of
/// `shown` (what it showed before) when that differs. Returns whether it did.
fn swap_info(vec: &IntGaugeVec, shown: &mut Option<String>, now: Option<&str>) -> bool {
    if shown.as_deref() == now {
        return false;
    }
    if let Some(old) = shown.take() {
        // Only this function adds series: the old one is there.
        let _ = vec.remove_label_values(&[&old]);
    }
    if let Some(now) = now {
        vec.with_label_values(&[now]).set(1);
        *shown = Some(now.to_owned());
    }
    true
}

/// The position of `s` in [`HoldSource::ALL`], by an exhaustive match.
fn hold_source_index(s: HoldSource) -> usize {
    match s {
        HoldSource::Rules => 0,
        HoldSource::Model => 1,
        HoldSource::Both => 2,
    }
}

/// The position of `v` in [`Verification::ALL`], by an exhaustive match so a
/// new variant cannot be forgotten here.
fn verification_index(v: Verification) -> usize {
    match v {
        Verification::Delay => 0,
        Verification::Ars => 1,
        Verification::Callback => 2,
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateConfig;

    const ALL_NAMES: [&str; 42] = [
        "fds_events_consumed_total",
        "fds_decisions_total",
        "fds_decisions_late_total",
        "fds_decisions_redelivered_total",
        "fds_dead_letter_total",
        "fds_rule_fired_total",
        "fds_engine_latency_seconds",
        "fds_decision_age_seconds",
        "fds_produce_ack_seconds",
        "fds_produce_retries_total",
        "fds_broker_up",
        "fds_offsets_pending",
        "fds_state_entities",
        "fds_state_bytes",
        "fds_state_sweeps_total",
        "fds_state_expired_total",
        "fds_merge_gave_up_total",
        "fds_state_checkpoints_total",
        "fds_state_local_copies_total",
        "fds_state_checkpoint_pause_seconds",
        "fds_state_checkpoint_failing",
        "fds_state_restores_total",
        "fds_state_restore_records_refused_total",
        "fds_state_restore_seconds",
        "fds_state_restore_bytes",
        "fds_shared_observations_total",
        "fds_shared_lag_seconds",
        "fds_rules_reloads_total",
        "fds_rules_loaded",
        "fds_rules_load_seconds",
        "fds_list_entries",
        "fds_list_entries_expired",
        "fds_model_reloads_total",
        "fds_model_loaded",
        "fds_model_holds_total",
        "fds_ready",
        "fds_consumer_lag",
        "fds_model_score",
        "fds_model_score_psi",
        "fds_model_info",
        "fds_ruleset_info",
        "fds_holds_total",
    ];

    /// The process collector's, on Linux.
    const PROCESS_NAMES: [&str; 7] = [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
    ];

    /// The value of the one sample line that starts with `series`.
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn labels_without_known_values_appear_on_first_use() {
        let m = Metrics::new();
        let text = m.encode();
        for name in ALL_NAMES {
            let expected = !matches!(
                name,
                "fds_events_consumed_total"
                    | "fds_rule_fired_total"
                    | "fds_state_checkpoints_total"
                    | "fds_state_local_copies_total"
                    | "fds_state_restores_total"
                    | "fds_consumer_lag"
                    | "fds_model_info"
                    | "fds_ruleset_info"
                    | "fds_list_entries"
                    | "fds_list_entries_expired"
            );
            assert_eq!(text.contains(&format!("# TYPE {name} ")), expected, "{name}:\n{text}");
        }
        m.events_consumed.with_label_values(&["transfers"]).inc();
        m.rules_fired.with_label_values(&["NEW_PAYEE", "false"]).inc();
        m.state_checkpoints.with_label_values(&["written"]).inc();
        m.state_local_copies.with_label_values(&["written"]).inc();
        m.state_restores.with_label_values(&["restored"]).inc();
        m.consumer_lag.with_label_values(&["transfers", "0"]).set(3);
        let rule = "[[rule]]\nid = \"R\"\nlabel = \"l\"\ndescription = \"d\"\nwhen = \"payee in mules\"\n\
                    action = \"hold\"\nverify = \"ars\"\nreason = \"R\"\n";
        let lists = "088-1\n088-2 expires=2020-01-01\n088-3 added=2999-01-01\n";
        m.observe_in_force(&RuleSet::from_files(&[("r.toml", rule), ("lists/mules.txt", lists)]).unwrap(), None);
        m.model_info.with_label_values(&["m-1"]).set(1);
        let text = m.encode();
        for name in ALL_NAMES {
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}:\n{text}");
        }
        assert_eq!(sample(&text, r#"fds_events_consumed_total{topic="transfers"}"#).as_deref(), Some("1"));
        assert_eq!(sample(&text, r#"fds_rule_fired_total{rule="NEW_PAYEE",shadow="false"}"#).as_deref(), Some("1"));
        assert_eq!(sample(&text, r#"fds_list_entries{list="mules"}"#).as_deref(), Some("3"));
        assert_eq!(sample(&text, r#"fds_list_entries_expired{list="mules"}"#).as_deref(), Some("1"));
        // A rule set without the list removes its series.
        m.observe_in_force(&RuleSet::empty(), None);
        assert_eq!(sample(&m.encode(), r#"fds_list_entries{list="mules"}"#), None);
    }

    #[test]
    fn known_series_start_at_zero() {
        let text = Metrics::new().encode();
        for series in [
            r#"fds_decisions_total{decision="allow",verification="none"}"#,
            r#"fds_decisions_total{decision="hold",verification="delay"}"#,
            r#"fds_decisions_total{decision="hold",verification="ars"}"#,
            r#"fds_decisions_total{decision="hold",verification="callback"}"#,
            r#"fds_dead_letter_total{reason="malformed"}"#,
            r#"fds_dead_letter_total{reason="invalid"}"#,
            r#"fds_dead_letter_total{reason="wrong_topic"}"#,
            r#"fds_dead_letter_total{reason="ahead_of_clock"}"#,
            r#"fds_state_entities{kind="account"}"#,
            r#"fds_state_entities{kind="payee"}"#,
            r#"fds_state_entities{kind="device"}"#,
            r#"fds_rules_reloads_total{result="applied"}"#,
            r#"fds_rules_reloads_total{result="rejected"}"#,
            r#"fds_holds_total{source="rules"}"#,
            r#"fds_holds_total{source="model"}"#,
            r#"fds_holds_total{source="both"}"#,
            "fds_model_score_count",
            "fds_model_score_psi",
            "fds_ready",
            "fds_broker_up",
        ] {
            assert_eq!(sample(&text, series).as_deref(), Some("0"), "{series}:\n{text}");
        }
    }

    #[test]
    fn decisions_count_under_their_labels() {
        let m = Metrics::new();
        for (i, v) in Verification::ALL.into_iter().enumerate() {
            assert_eq!(verification_index(v), i);
        }
        m.count_decision(Outcome::Allow, None);
        m.count_decision(Outcome::Allow, None);
        m.count_decision(Outcome::Hold, Some(Verification::Callback));
        m.count_decision(Outcome::Hold, Some(Verification::Ars));
        m.count_decision(Outcome::Hold, Some(Verification::Ars));
        m.count_decision(Outcome::Hold, Some(Verification::Ars));
        // Not made by the engine, but counted rather than lost.
        m.count_decision(Outcome::Hold, None);
        let text = m.encode();
        let count = |d: &str, v: &str| {
            sample(&text, &format!(r#"fds_decisions_total{{decision="{d}",verification="{v}"}}"#))
                .unwrap_or_else(|| panic!("{d}/{v} missing:\n{text}"))
        };
        assert_eq!(count("allow", "none"), "2");
        assert_eq!(count("hold", "callback"), "1");
        assert_eq!(count("hold", "ars"), "3");
        assert_eq!(count("hold", "delay"), "0");
        assert_eq!(count("hold", "none"), "1");
    }

    #[test]
    fn histograms_have_their_buckets() {
        let m = Metrics::new();
        m.engine_latency.observe(3e-6);
        m.decision_age.observe(0.015);
        m.ack_latency.observe(45.0);
        let text = m.encode();
        let bucket = |name: &str, le: &str| {
            sample(&text, &format!(r#"{name}_bucket{{le="{le}"}}"#))
                .unwrap_or_else(|| panic!("{name} le={le} missing:\n{text}"))
        };
        // Lowest and highest bounds: 1 µs .. 10 ms, 100 µs .. 30 s.
        assert_eq!(bucket("fds_engine_latency_seconds", "0.000001"), "0");
        assert_eq!(bucket("fds_engine_latency_seconds", "0.000005"), "1");
        assert_eq!(bucket("fds_engine_latency_seconds", "0.01"), "1");
        assert_eq!(bucket("fds_engine_latency_seconds", "+Inf"), "1");
        for name in ["fds_decision_age_seconds", "fds_produce_ack_seconds"] {
            assert_eq!(bucket(name, "0.0001"), "0");
            assert_eq!(bucket(name, "30"), bucket(name, "20"));
        }
        assert_eq!(bucket("fds_decision_age_seconds", "0.01"), "0");
        assert_eq!(bucket("fds_decision_age_seconds", "0.02"), "1");
        assert_eq!(bucket("fds_produce_ack_seconds", "30"), "0");
        assert_eq!(bucket("fds_produce_ack_seconds", "+Inf"), "1");
        assert_eq!(text.matches("fds_engine_latency_seconds_bucket").count(), ENGINE_BUCKETS.len() + 1);
        assert_eq!(text.matches("fds_decision_age_seconds_bucket").count(), END_TO_END_BUCKETS.len() + 1);
        assert!(ENGINE_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(END_TO_END_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn state_gauges_follow_the_state() {
        let m = Metrics::new();
        let state = State::new(StateConfig::default());
        m.observe_state(&state);
        let text = m.encode();
        assert_eq!(sample(&text, r#"fds_state_entities{kind="account"}"#).as_deref(), Some("0"));
        assert_eq!(sample(&text, r#"fds_state_bytes{kind="account"}"#).as_deref(), Some("0"));

        let t = crate::event::build::transfer("T1").device("D1").transfer();
        let seen = state.observe_transfer(&t, &t.payee_key());
        state.settle_transfer(&t, &seen, false);
        m.observe_state(&state);
        let text = m.encode();
        for kind in ["account", "payee", "device"] {
            assert_eq!(sample(&text, &format!(r#"fds_state_entities{{kind="{kind}"}}"#)).as_deref(), Some("1"));
        }
        let memory = state.memory();
        for (kind, expected) in
            [("account", memory.account_bytes), ("payee", memory.payee_bytes), ("device", memory.device_bytes)]
        {
            let bytes: i64 = sample(&text, &format!(r#"fds_state_bytes{{kind="{kind}"}}"#)).unwrap().parse().unwrap();
            assert_eq!(bytes, gauge_value(expected), "{kind}");
            assert!(bytes > 0, "{kind}");
        }

        m.observe_sweeps((3, 40));
        m.observe_sweeps((5, 42));
        m.observe_sweeps((5, 42));
        let text = m.encode();
        assert_eq!(sample(&text, "fds_state_sweeps_total").as_deref(), Some("5"));
        assert_eq!(sample(&text, "fds_state_expired_total").as_deref(), Some("42"));
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::default();
        a.decisions_late.inc();
        assert_eq!(sample(&a.encode(), "fds_decisions_late_total").as_deref(), Some("1"));
        assert_eq!(sample(&b.encode(), "fds_decisions_late_total").as_deref(), Some("0"));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn process_metrics_are_exported() {
        let text = Metrics::new().encode();
        for name in PROCESS_NAMES {
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}:\n{text}");
        }
        let rss: f64 = sample(&text, "process_resident_memory_bytes").unwrap().parse().unwrap();
        assert!(rss > 1e6, "a test process holds more than a megabyte: {rss}");
        let start: f64 = sample(&text, "process_start_time_seconds").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(start > now - 86_400.0 && start <= now + 1.0, "started {start}, now {now}");
    }

    #[test]
    fn holds_count_by_source() {
        let m = Metrics::new();
        for (i, s) in HoldSource::ALL.into_iter().enumerate() {
            assert_eq!(hold_source_index(s), i);
        }
        m.count_hold(HoldSource::Rules);
        m.count_hold(HoldSource::Both);
        m.count_hold(HoldSource::Both);
        let text = m.encode();
        let held = |s: &str| sample(&text, &format!(r#"fds_holds_total{{source="{s}"}}"#));
        assert_eq!(
            (held("rules"), held("model"), held("both")),
            (Some("1".into()), Some("0".into()), Some("2".into()))
        );
    }

    #[test]
    fn the_score_histogram_has_the_card_bins() {
        let m = Metrics::new();
        for s in [0.0, 0.05, 0.051, 0.5, 1.0] {
            m.model_score.observe(s);
        }
        let text = m.encode();
        assert_eq!(text.matches("fds_model_score_bucket").count(), SCORE_BINS.len() + 1);
        let bucket = |le: &str| sample(&text, &format!(r#"fds_model_score_bucket{{le="{le}"}}"#));
        assert_eq!(bucket("0.05").as_deref(), Some("2"), "{text}");
        assert_eq!(bucket("0.1").as_deref(), Some("3"));
        assert_eq!(bucket("0.95").as_deref(), Some("4"));
        assert_eq!(bucket("1").as_deref(), Some("5"));
        let mut expected = [0u64; SCORE_BINS.len()];
        for s in [0.0, 0.05, 0.051, 0.5, 1.0] {
            expected[crate::model::card::score_bin(s)] += 1;
        }
        assert_eq!(m.score_counts(), expected, "the histogram's bins are score_bin's");
    }

    #[test]
    fn info_series_follow_the_versions_in_force() {
        let m = Metrics::new();
        let a = RuleSet::empty();
        let b = RuleSet::from_files(&[(
            "r.toml",
            "[[rule]]\nid = \"X\"\nlabel = \"x\"\ndescription = \"x\"\nwhen = \"amount > 1\"\naction = \"hold\"\n\
             verify = \"ars\"\nreason = \"X1\"\n",
        )])
        .unwrap();
        assert_ne!(a.version(), b.version());
        m.observe_in_force(&a, None);
        let text = m.encode();
        assert_eq!(sample(&text, &format!(r#"fds_ruleset_info{{version="{}"}}"#, a.version())).as_deref(), Some("1"));
        assert!(!text.contains("fds_model_info{"), "no model, no series:\n{text}");
        assert_eq!(sample(&text, "fds_model_loaded").as_deref(), Some("0"));
        m.observe_in_force(&b, None);
        m.observe_in_force(&b, None);
        let text = m.encode();
        assert_eq!(text.matches("fds_ruleset_info{").count(), 1, "the old version's series is gone:\n{text}");
        assert_eq!(sample(&text, &format!(r#"fds_ruleset_info{{version="{}"}}"#, b.version())).as_deref(), Some("1"));
        assert_eq!(sample(&text, "fds_rules_loaded").as_deref(), Some("1"));
    }

    #[test]
    fn psi_compares_recent_scores_with_the_card_reference_and_restarts_with_a_new_model() {
        use crate::model::card::ScoreReference;
        let m = Metrics::new();
        let rules = RuleSet::empty();
        let model = crate::model::tests::tiny_model("drift", 0.5);
        let mut card = model.card().clone();
        // The reference: 90% of scores at 0.01, 10% at 0.07.
        let mut reference_scores = vec![0.01; 900];
        reference_scores.extend([0.07; 100]);
        card.score_reference = Some(ScoreReference::of("test", &reference_scores));
        let with_reference = crate::model::tests::with_card(&model, card);

        m.observe_in_force(&rules, Some(&with_reference));
        assert_eq!(sample(&m.encode(), "fds_model_score_psi").as_deref(), Some("0"));
        for _ in 0..9 {
            for _ in 0..90 {
                m.model_score.observe(0.01);
            }
            for _ in 0..10 {
                m.model_score.observe(0.07);
            }
        }
        m.observe_in_force(&rules, Some(&with_reference));
        assert_eq!(m.model_score_psi.get(), 0.0, "900 scores: not enough yet");
        for _ in 0..100 {
            m.model_score.observe(0.01);
        }
        for _ in 0..100 {
            m.model_score.observe(0.9);
        }
        m.observe_in_force(&rules, Some(&with_reference));
        let psi = m.model_score_psi.get();
        let mut live = [0.0; SCORE_BINS.len()];
        (live[0], live[1], live[18]) = (910.0 / 1100.0, 90.0 / 1100.0, 100.0 / 1100.0);
        let expected = quality::psi(&with_reference.card().score_reference.as_ref().unwrap().fractions(), &live);
        assert!((psi - expected).abs() < 1e-12 && psi > 0.5, "{psi} vs {expected}");
        assert_eq!(
            sample(&m.encode(), &format!(r#"fds_model_info{{version="{}"}}"#, model.version())).as_deref(),
            Some("1")
        );

        // Another model: its window starts afresh; without a reference, 0.
        let other = crate::model::tests::tiny_model("other", 0.5);
        m.observe_in_force(&rules, Some(&other));
        for _ in 0..2000 {
            m.model_score.observe(0.9);
        }
        m.observe_in_force(&rules, Some(&other));
        assert_eq!(m.model_score_psi.get(), 0.0);
        let text = m.encode();
        assert_eq!(text.matches("fds_model_info{").count(), 1, "{text}");
        assert_eq!(sample(&text, &format!(r#"fds_model_info{{version="{}"}}"#, other.version())).as_deref(), Some("1"));
        m.observe_in_force(&rules, None);
        assert!(!m.encode().contains("fds_model_info{"), "rules alone: no model series");
    }
}
