//! The engine: one event in, state updated, and for a transfer a decision out.
//!
//! This module owns the order of operations for a transfer, which is the whole
//! product in four lines: read the state as it was before the transfer and record
//! the transfer ([`State::observe_transfer`]), compute the features
//! ([`features::compute`]), evaluate the rules, and make the [`Decision`].
//!
//! Guarantees:
//! - **Deterministic.** The same events in the same order give the same decisions,
//!   bit for bit, apart from the measured latency ([`Decision::fingerprint`] leaves
//!   it out). Time comes only from the events.
//! - **Lock-free reads of rules.** The rule set is read through `arc-swap`: a
//!   reload swaps a pointer and never blocks a transfer.
//! - **Concurrent across accounts, ordered within one.** [`Engine`] is `Sync`;
//!   callers must feed one account's events in order (the account is the Kafka
//!   key). Determinism, bit for bit, holds for one thread over a time-ordered
//!   stream (see [`crate::state`]).
//! - **Clocks gone wrong do bounded harm.** Expiry follows a clock that moves
//!   at most one sweep period (a hundredth of the shortest TTL) per event, so
//!   one event dated next year cannot wipe the state; live consumers also refuse events dated ahead of the wall clock
//!   ([`Engine::with_wall_clock_guard`], [`EngineError::AheadOfClock`]).
//! - **Housekeeping inline.** Once per sweep period of event time the thread
//!   that crosses it sweeps idle entities ([`State::expire`]); that pause is
//!   not part of the transfer's measured latency. The expiry clock follows
//!   transfers and context events, not fraud reports (dated days later).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};
use smallvec::SmallVec;

use crate::event::{Event, EventTime, Transfer, MINUTE_MS};
use crate::features::{self, FeatureVector, SCHEMA};
use crate::model::{Model, ModelHandle};
use crate::rules::{Action as RuleAction, Keys, RuleSet, RulesHandle, Verification};
use crate::state::{ExpiryClocks, SharedCount, SnapshotError, SnapshotStats, State, StateConfig};

/// A hold the model alone asks for: an automated call the customer answers,
/// the least costly check that still stops a fraudster on a phished device.
pub const DEFAULT_MODEL_VERIFICATION: Verification = Verification::Ars;

/// Idle entities are swept out once per this fraction of the shortest TTL: a
/// sweep visits every entity, so its cost is the state's size whatever it
/// frees, while an entity outlives its TTL by at most one period. A hundredth
/// keeps that overshoot at 1% (8.4 hours for the default 35-day device TTL);
/// sweeping hourly cost 6% of the pipeline's scoring thread when seven days
/// were replayed in seconds.
const SWEEPS_PER_TTL: i64 = 100;
/// The shortest sweep period, for very short TTLs (tests, experiments).
const MIN_SWEEP_MS: i64 = MINUTE_MS;

/// Why the engine refused an event. Nothing was applied to the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The event is dated further ahead of the wall clock than
    /// `engine.max_skew_minutes` allows: a producer with a broken clock,
    /// whose event would otherwise move windows and expiry into the future.
    #[error(
        "{kind} dated {} KST is {ahead_min} min ahead of the clock; at most {max_skew_min} min is allowed, \
         so it was not applied",
        time.human()
    )]
    AheadOfClock {
        /// The event's type, as on the wire.
        kind: &'static str,
        /// The time written on the event.
        time: EventTime,
        /// How far ahead of the wall clock that is.
        ahead_min: i64,
        /// The bound it broke (`engine.max_skew_minutes`).
        max_skew_min: i64,
    },
}

/// What the bank should do with the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Let the money move.
    Allow,
    /// Stop and verify before the money moves.
    Hold,
}

impl Outcome {
    /// The name on the wire (the decision's `decision` field, the
    /// `fds-decision` header) and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Hold => "hold",
        }
    }
}

/// What held a transfer: the rules (a live hold rule, or the live score
/// rules reaching `hold_score`), the model (its score at or above the card's
/// threshold), or both. `fds_holds_total{source}` counts by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldSource {
    /// The rules alone.
    Rules,
    /// The model alone.
    Model,
    /// The rules and the model, each on its own.
    Both,
}

impl HoldSource {
    /// Every source, in the order of their names in metrics.
    pub const ALL: [HoldSource; 3] = [HoldSource::Rules, HoldSource::Model, HoldSource::Both];

    /// The name in metrics (`source` label).
    pub fn name(self) -> &'static str {
        match self {
            HoldSource::Rules => "rules",
            HoldSource::Model => "model",
            HoldSource::Both => "both",
        }
    }
}

/// The engine's answer for one transfer.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The transfer's id, which the API correlates the answer by.
    pub bank_tran_id: String,
    /// The transfer's own time (`tran_dtime`), not when it was scored.
    pub event_time: EventTime,
    /// Allow or hold.
    pub outcome: Outcome,
    /// The verification a hold asks for; `None` for allow.
    pub verification: Option<Verification>,
    /// Sum of the score contributions of the live rules that fired.
    pub score: i32,
    /// Indexes into `rules.rules()` of the live rules that fired.
    pub fired: SmallVec<[u16; 8]>,
    /// Shadow rules that fired: reported, never acted on.
    pub shadow_fired: SmallVec<[u16; 4]>,
    /// The rule set that made the decision, kept so reasons can be named later
    /// without copying strings in the hot path.
    pub rules: Arc<RuleSet>,
    /// The model's part, when a model is loaded.
    pub model: Option<ModelVerdict>,
    /// The verification the rules asked for, `None` when they did not hold
    /// (the model may still have). Not part of the published decision.
    pub rules_hold: Option<Verification>,
    /// Time spent in the engine for this transfer (state, features, rules, model).
    pub latency_ns: u64,
}

/// What the model said about a transfer.
#[derive(Debug, Clone)]
pub struct ModelVerdict {
    /// The model that scored it (for its version and reason codes).
    pub model: Arc<Model>,
    /// Fraud probability in [0, 1] (see [`Model::score`]).
    pub score: f64,
    /// The score reached the card's hold threshold.
    pub hold: bool,
    /// When it asked for a hold: the features that raised the score most, as
    /// (feature index, contribution), largest first.
    pub reasons: SmallVec<[(u16, f64); MODEL_REASONS]>,
}

/// Model reasons given with a model hold: enough for an analyst to see why,
/// few enough to read on a case screen.
pub const MODEL_REASONS: usize = 3;

impl Decision {
    /// Whether the bank must stop and verify.
    pub fn is_hold(&self) -> bool {
        self.outcome == Outcome::Hold
    }

    /// What held it: `None` for an allow.
    pub fn held_by(&self) -> Option<HoldSource> {
        if !self.is_hold() {
            return None;
        }
        let model = self.model.as_ref().is_some_and(|m| m.hold);
        Some(match (self.rules_hold.is_some(), model) {
            (true, true) => HoldSource::Both,
            (false, true) => HoldSource::Model,
            // A hold is the rules' or the model's; `Rules` also stands for
            // a hold neither claims, which the engine never makes.
            _ => HoldSource::Rules,
        })
    }

    /// The decision as one JSON line: what the transfer API receives.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&WithLatency(self, true, None)).expect("decisions always serialize")
    }

    /// The decision as the pipeline publishes it: with `late` telling the
    /// transfer API whether the transfer was scored after its deadline.
    /// Appended to `out`, so the pipeline writes every decision into one
    /// reused buffer.
    pub fn write_json_with_late(&self, late: bool, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &WithLatency(self, true, Some(late))).expect("decisions always serialize")
    }

    /// The decision without the measured latency: identical across runs of the
    /// same input, so runs can be compared by hashing these.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(&WithLatency(self, false, None)).expect("decisions always serialize")
    }

    /// Reason codes of the live rules that fired, in rule order, then the
    /// model's (`MODEL_...`) when the model asked for the hold.
    pub fn reason_codes(&self) -> impl Iterator<Item = &str> + '_ {
        let rules = self.fired.iter().map(|&i| self.rules.rules()[usize::from(i)].reason());
        let model = self.model.iter().flat_map(|m| m.reasons.iter().map(|&(f, _)| m.model.reason_code(usize::from(f))));
        rules.chain(model)
    }
}

/// A decision to serialize, with or without its measured latency, and with the
/// pipeline's `late` mark when there is one.
struct WithLatency<'a>(&'a Decision, bool, Option<bool>);

/// The reasons of a decision, named from its rule set, then the model's.
struct Reasons<'a>(&'a RuleSet, &'a [u16], Option<&'a ModelVerdict>);

impl Serialize for Reasons<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let model_reasons = self.2.map_or(&[][..], |m| &m.reasons[..]);
        let mut seq = s.serialize_seq(Some(self.1.len() + model_reasons.len()))?;
        for &i in self.1 {
            let r = &self.0.rules()[usize::from(i)];
            let (action, verify, points) = match r.action() {
                RuleAction::Hold(v) => ("hold", Some(v), None),
                RuleAction::Score(p) => ("score", None, Some(p)),
            };
            seq.serialize_element(&Reason {
                code: r.reason(),
                rule: r.id(),
                label: r.label(),
                action,
                verify,
                points,
                contribution: None,
            })?;
        }
        if let Some(m) = self.2 {
            for &(f, value) in model_reasons {
                seq.serialize_element(&Reason {
                    code: m.model.reason_code(usize::from(f)),
                    rule: m.model.version(),
                    label: SCHEMA[usize::from(f)].help,
                    action: "model",
                    verify: None,
                    points: None,
                    contribution: Some((value * 1e4).round() / 1e4),
                })?;
            }
        }
        seq.end()
    }
}

/// One rule that fired: which, why in the analysts' words, and what it asked
/// for, so a reader can tell the rule that held from the ones that added points.
#[derive(Serialize)]
struct Reason<'a> {
    code: &'a str,
    rule: &'a str,
    label: &'a str,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<Verification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<i32>,
    /// A model reason's share of the score (probability for a forest,
    /// log-odds for a logistic model).
    #[serde(skip_serializing_if = "Option::is_none")]
    contribution: Option<f64>,
}

impl Serialize for WithLatency<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let mut st = s.serialize_struct("Decision", 14)?;
        st.serialize_field("schema_version", &crate::event::SCHEMA_VERSION)?;
        st.serialize_field("bank_tran_id", &d.bank_tran_id)?;
        st.serialize_field("tran_dtime", &d.event_time)?;
        st.serialize_field("decision", &d.outcome)?;
        st.serialize_field("verification", &d.verification)?;
        st.serialize_field("score", &d.score)?;
        st.serialize_field("reasons", &Reasons(&d.rules, &d.fired, d.model.as_ref()))?;
        st.serialize_field("shadow_reasons", &Reasons(&d.rules, &d.shadow_fired, None))?;
        st.serialize_field("ruleset_version", d.rules.version())?;
        st.serialize_field("model_version", &d.model.as_ref().map(|m| m.model.version()))?;
        // Rounded for reading (the hold threshold is compared before rounding).
        st.serialize_field("model_score", &d.model.as_ref().map(|m| (m.score * 1e6).round() / 1e6))?;
        // The threshold in force: a card edit moves it without changing the
        // model's version, and an audit needs to see what the score was held against.
        st.serialize_field("model_threshold", &d.model.as_ref().map(|m| m.model.hold_threshold()))?;
        if let Some(late) = self.2 {
            st.serialize_field("late", &late)?;
        }
        if self.1 {
            st.serialize_field("engine_latency_us", &(d.latency_ns as f64 / 1000.0))?;
        }
        st.end()
    }
}

/// The model's score, and when it holds, its reasons (explaining costs about
/// as much as scoring, so allowed transfers skip it).
fn model_verdict(model: Arc<Model>, features: &FeatureVector) -> ModelVerdict {
    let score = model.score(features);
    let hold = score >= model.hold_threshold();
    let reasons = if hold {
        model.explain(features, MODEL_REASONS).into_iter().map(|c| (c.feature as u16, c.value)).collect()
    } else {
        SmallVec::new()
    };
    ModelVerdict { model, score, hold, reasons }
}

/// A scored transfer: the decision and the features it was made from (kept for
/// training and for analysts replaying a case).
#[derive(Debug, Clone)]
pub struct Scored {
    /// What the engine decided.
    pub decision: Decision,
    /// The features as computed from the state before the transfer.
    pub features: FeatureVector,
}

/// The scoring engine. Share it by reference (or `Arc`) across threads.
#[derive(Debug)]
pub struct Engine {
    state: State,
    rules: RulesHandle,
    /// Empty: rules alone decide.
    model: ModelHandle,
    /// The verification a hold asks for when the model alone asked for it.
    model_verification: Verification,
    last_expiry: AtomicI64,
    /// The sweep period in event time (see [`SWEEPS_PER_TTL`]).
    sweep_every_ms: i64,
    /// The clock idle entities are expired by. It follows event time but moves
    /// at most one sweep period per event, so one event dated next year (a
    /// producer with a broken clock) cannot expire the whole state, while a real
    /// gap in the stream is caught up within a few events.
    expiry_clock: AtomicI64,
    /// Refuse events dated more than this far ahead of the wall clock.
    wall_clock_skew_ms: Option<i64>,
    /// Sweeps run and entities they expired, for `fds_state_sweeps_total`
    /// and `fds_state_expired_total` (see [`Engine::sweeps`]).
    sweeps: AtomicU64,
    expired: AtomicU64,
}

impl Engine {
    /// An engine with empty state and no model: rules alone decide until
    /// [`Engine::with_model`] gives it one.
    pub fn new(state: StateConfig, rules: RulesHandle) -> Self {
        let shortest_ttl = state.account_ttl_ms.min(state.payee_ttl_ms).min(state.device_ttl_ms);
        Engine {
            sweep_every_ms: (shortest_ttl / SWEEPS_PER_TTL).max(MIN_SWEEP_MS),
            state: State::new(state),
            rules,
            model: Arc::new(arc_swap::ArcSwapOption::empty()),
            model_verification: DEFAULT_MODEL_VERIFICATION,
            last_expiry: AtomicI64::new(i64::MIN),
            expiry_clock: AtomicI64::new(i64::MIN),
            wall_clock_skew_ms: None,
            sweeps: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    /// Refuse events dated more than `ms` ahead of the wall clock. For live
    /// traffic, where "now" is known; a replay of recorded (or generated,
    /// possibly future-dated) streams leaves it off and trusts the file.
    pub fn with_wall_clock_guard(mut self, ms: i64) -> Self {
        self.wall_clock_skew_ms = Some(ms.max(0));
        self
    }

    /// Whether an event at `time_ms` is refused as ahead of the wall clock
    /// `wall_ms` (see [`Engine::with_wall_clock_guard`]).
    pub fn is_ahead_of_clock(&self, time_ms: i64, wall_ms: i64) -> bool {
        self.wall_clock_skew_ms.is_some_and(|skew| time_ms > wall_ms.saturating_add(skew))
    }

    /// Score with the model in `handle` (swapped by its watcher), besides the
    /// rules; a hold the model alone asks for gets `verification`.
    pub fn with_model(mut self, handle: ModelHandle, verification: Verification) -> Self {
        self.model = handle;
        self.model_verification = verification;
        self
    }

    /// The model handle, for a watcher to swap new models into.
    pub fn model(&self) -> &ModelHandle {
        &self.model
    }

    /// An engine with a fixed rule set (no reload).
    pub fn with_rules(rules: RuleSet) -> Self {
        Engine::new(StateConfig::default(), Arc::new(ArcSwap::from_pointee(rules)))
    }

    /// The rule handle, for a watcher to swap new rule sets into.
    pub fn rules(&self) -> &RulesHandle {
        &self.rules
    }

    /// The streaming state, for reports (memory, entity counts) and tests.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Feed any event. Transfers are scored and return their decision; context
    /// events and labels update the state and return `None`.
    ///
    /// An event dated too far ahead of the stream is refused and changes
    /// nothing; the caller reports it (replay counts it, the pipeline sends it
    /// to the dead-letter topic).
    pub fn process(&self, event: &Event) -> Result<Option<Scored>, EngineError> {
        let wall = self.wall_clock_skew_ms.map(|_| chrono::Utc::now().timestamp_millis());
        self.process_at(event, wall)
    }

    /// Start loading the state a burst of events will read into the CPU
    /// cache, before processing any of them, so their memory trips overlap;
    /// see [`State::prefetch`].
    pub fn prefetch<'a>(&self, events: impl Iterator<Item = &'a Event> + Clone) {
        self.state.prefetch(events);
    }

    /// [`Engine::process`] with the wall clock read by the caller (Unix ms):
    /// the pipeline reads it once per burst of messages, not per message.
    /// `None` skips the wall-clock guard.
    pub fn process_at(&self, event: &Event, wall_ms: Option<i64>) -> Result<Option<Scored>, EngineError> {
        self.process_shared(event, wall_ms, SharedCount::COUNT)
    }

    /// [`Engine::process_at`], saying whether a transfer still has to be
    /// counted in the shared payee and device tables (see [`Engine::score_as`]).
    pub fn process_shared(
        &self,
        event: &Event,
        wall_ms: Option<i64>,
        shared: SharedCount,
    ) -> Result<Option<Scored>, EngineError> {
        let time = event.time().millis();
        if let (Some(skew), Some(wall)) = (self.wall_clock_skew_ms, wall_ms) {
            if self.is_ahead_of_clock(time, wall) {
                return Err(EngineError::AheadOfClock {
                    kind: event.kind(),
                    time: event.time(),
                    ahead_min: (time - wall) / MINUTE_MS,
                    max_skew_min: skew / MINUTE_MS,
                });
            }
        }
        // Fraud reports do not move the expiry clock: they are dated days after
        // the transfers they name, so in a replay (streams ordered by time, the
        // last reports weeks past the last transfer) each one would push the
        // clock a sweep period ahead of the accounts' activity and start a
        // sweep, expiring entities early and stalling the scoring thread. Live,
        // transfers and context events keep the clock at the present anyway.
        if !matches!(event, Event::Label(_)) {
            self.maybe_expire(self.advance_expiry_clock(time));
        }
        Ok(match event {
            Event::Transfer(t) => Some(self.score_as(t, shared)),
            other => {
                self.state.apply(other);
                None
            }
        })
    }

    /// Score one transfer: state, then features, then rules and the model.
    /// Either can hold; a rule's verification wins over the model's default,
    /// since analysts chose it for the pattern they saw.
    pub fn score(&self, t: &Transfer) -> Scored {
        self.score_as(t, SharedCount::COUNT)
    }

    /// [`Engine::score`] for a transfer whose payee and device may already
    /// have counted it (learnt from the instance that scored it before this
    /// one took its partition over; see [`crate::state`]'s shared tables).
    pub fn score_as(&self, t: &Transfer, shared: SharedCount) -> Scored {
        let started = Instant::now();
        let payee = t.payee_key();
        let seen = self.state.observe_transfer_as(t, &payee, shared);
        let features = features::compute(t, &seen);
        let rules = self.rules.load_full();
        let keys =
            Keys { account: &t.fintech_use_num, payee: &payee, device: t.device_id.as_deref(), ip: t.ip.as_deref() };
        let outcome = rules.evaluate(&features, &keys, t.tran_dtime);
        let model = self.model.load_full().map(|m| model_verdict(m, &features));
        let verification = outcome.hold.or(model.as_ref().filter(|m| m.hold).map(|_| self.model_verification));
        // The state remembers the rules' holds only. A held transfer teaches
        // the account nothing (no known payee, no amount history) and starts
        // `mins_since_hold`, and models are trained on replays where only the
        // rules held: if the model's own holds fed back into the features,
        // each false alarm would make the customer's next transfer look new
        // again, and serving would drift from training into a cascade of holds.
        self.state.settle_transfer(t, &seen, outcome.hold.is_some());
        let decision = Decision {
            bank_tran_id: t.bank_tran_id.clone(),
            event_time: t.tran_dtime,
            outcome: if verification.is_some() { Outcome::Hold } else { Outcome::Allow },
            verification,
            score: outcome.score,
            fired: outcome.fired,
            shadow_fired: outcome.shadow_fired,
            rules,
            model,
            rules_hold: outcome.hold,
            latency_ns: started.elapsed().as_nanos() as u64,
        };
        Scored { decision, features }
    }

    /// Write the engine's state, with its expiry clocks, as a snapshot (see
    /// [`crate::state`]'s `snapshot` module for the format and its checks).
    /// Call it between events: a snapshot taken while another thread applies
    /// events holds each entity as its shard was when read.
    pub fn write_snapshot<W: std::io::Write>(&self, out: W) -> std::io::Result<SnapshotStats> {
        self.state.write_snapshot(self.expiry_clocks(), out)
    }

    /// The clocks that decide when idle entities are swept: part of the
    /// state a restored engine must carry on with.
    pub fn expiry_clocks(&self) -> ExpiryClocks {
        ExpiryClocks {
            expiry_clock: self.expiry_clock.load(Ordering::Relaxed),
            last_expiry: self.last_expiry.load(Ordering::Relaxed),
        }
    }

    /// This engine with its state replaced by a snapshot's: what a restarted
    /// instance does before it handles an event. All or nothing: on error the
    /// engine is not built.
    pub fn restore_snapshot<R: std::io::Read>(mut self, input: R) -> Result<(Self, SnapshotStats), SnapshotError> {
        let (state, clocks, stats) = State::read_snapshot(self.state.config().clone(), input)?;
        // Owned: the restored maps are taken as they are, not copied.
        self.state = state;
        self.set_expiry_clocks(clocks);
        Ok((self, stats))
    }

    /// Replace the state of this (shared) engine with a snapshot's. Meant
    /// for start-up, before any event is processed; all or nothing, so on
    /// error the state is as it was. Costs a second pass over the entities
    /// ([`State::replace_with`]) that [`Engine::restore_snapshot`] avoids.
    pub fn load_snapshot<R: std::io::Read>(&self, input: R) -> Result<SnapshotStats, SnapshotError> {
        let (state, clocks, stats) = State::read_snapshot(self.state.config().clone(), input)?;
        self.state.replace_with(state);
        self.set_expiry_clocks(clocks);
        Ok(stats)
    }

    /// Carry on with restored expiry clocks (see [`Engine::expiry_clocks`]).
    pub fn set_expiry_clocks(&self, clocks: ExpiryClocks) {
        self.expiry_clock.store(clocks.expiry_clock, Ordering::Relaxed);
        self.last_expiry.store(clocks.last_expiry, Ordering::Relaxed);
    }

    /// The sweeps of idle entities run by this engine since it was made, and
    /// the entities they expired (accounts, payees and devices together).
    pub fn sweeps(&self) -> (u64, u64) {
        (self.sweeps.load(Ordering::Relaxed), self.expired.load(Ordering::Relaxed))
    }

    /// Move the expiry clock toward `time`, by at most one sweep period.
    fn advance_expiry_clock(&self, time: i64) -> EventTime {
        let mut cur = self.expiry_clock.load(Ordering::Relaxed);
        loop {
            let next = if cur == i64::MIN { time } else { cur.max(time.min(cur.saturating_add(self.sweep_every_ms))) };
            if next == cur {
                return EventTime(cur);
            }
            match self.expiry_clock.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return EventTime(next),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Sweep idle entities once per sweep period of the expiry clock. Whichever
    /// thread first sees a new period does the sweep; the rest go on.
    fn maybe_expire(&self, now: EventTime) {
        let last = self.last_expiry.load(Ordering::Relaxed);
        if last == i64::MIN {
            let _ = self.last_expiry.compare_exchange(last, now.millis(), Ordering::Relaxed, Ordering::Relaxed);
            return;
        }
        if now.millis() - last >= self.sweep_every_ms
            && self.last_expiry.compare_exchange(last, now.millis(), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let dropped = self.state.expire(now);
            self.sweeps.fetch_add(1, Ordering::Relaxed);
            self.expired.fetch_add(dropped as u64, Ordering::Relaxed);
            if dropped > 0 {
                tracing::debug!(dropped, "expired idle entities");
            }
        }
    }
}
