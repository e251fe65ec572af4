//! # fds: real-time fraud detection for money transfers
//!
//! A transfer API (Korean open-banking style) sends each withdrawal transfer
//! request to `fds` and waits, within a latency budget, for a decision: `allow`,
//! or `hold` with the verification the bank should run (ARS call, call-back,
//! delayed transfer) and the reason codes that led there.
//!
//! Data flows one way through the modules:
//!
//! ```text
//! event ──► state ──► features ──► rules (+ model) ──► engine::Decision ──► sinks
//! ```
//!
//! - [`event`]: the wire format. Transfers, context events (logins, new devices,
//!   joint-certificate re-issues, phone changes, remote-control apps...) and late
//!   fraud labels, as JSON with a `schema_version`; unknown fields are rejected.
//!   [`event::build`] makes valid events for tests, benches, examples and
//!   clients, so a wire-format change is made in one place.
//! - [`state`]: per-account, per-payee and per-device memory in concurrent maps,
//!   windowed by *event time*, bounded by caps and TTLs; durable as checked
//!   records, whole (snapshots) or the entities changed (changelogs). Payees
//!   and devices are shared tables: another instance's transfers reach them as
//!   [`state::Observation`]s, counted by the same code as this one's.
//! - [`features`]: the one pure function from a transfer and the state before it
//!   to a fixed, named feature vector. Rules, models, training and replay all
//!   call it, so there is no train/serve skew. Each feature is declared once,
//!   with its type, name, help and computation, so the vector's order and the
//!   schema cannot disagree.
//! - [`rules`]: analyst-written rule files, compiled once into a typed form,
//!   rejected with file:line:column errors when wrong, hot-reloaded and swapped
//!   in atomically; the hot path reads them without a lock.
//! - [`engine`]: ties the above together and makes the [`engine::Decision`]. The
//!   same input gives the same decisions, bit for bit, on every run.
//! - [`kafka`]: the sinks and sources of the live product. `fds run` consumes
//!   transfers and context events (keyed by account, so one account stays in
//!   order on one instance), reads every fraud report, and produces each
//!   decision; a consumed offset is stored only after its decision is
//!   acknowledged by the broker, and a re-delivered transfer gets the decision
//!   already given. Bad messages go to a dead-letter topic with the reason.
//!   Inputs are merged by event time ([`input::order`]), so live decides as
//!   replay does; the state is checkpointed to a compacted changelog topic,
//!   partitioned as the inputs, and restored from it, so a restart, even
//!   `kill -9`, decides as if it had never stopped, and a partition that moves
//!   to another instance brings its accounts. Instances share payees and
//!   devices through an `observations` topic every one of them reads (a
//!   global table), so N instances decide as one.
//! - [`input`]: recorded streams from files (JSON lines, plain or gzip, and
//!   the handbook's card data set, [`input::handbook`]), with every bad line
//!   named by file, line and reason; replay, load, training and evaluation
//!   all read through it. [`input::order`] is the one order events are
//!   handled in, live and in replay.
//! - [`replay`]: runs recorded streams through the engine and reports throughput,
//!   latency percentiles and, for labelled data, detection quality per typology;
//!   [`replay::Instances`] splits a stream over N engines as a consumer group
//!   would, to see what scaling out does to the decisions.
//! - [`generate`]: a deterministic generator of labelled Korean transfer traffic
//!   with fraud typologies (voice phishing, account takeover, mule accounts, loan
//!   fraud), in rooms by concern: population, genuine behaviour, typologies,
//!   output.
//! - [`load`]: the pipeline benchmark. Plays the transfer API against a running
//!   `fds run` over Kafka and reports end-to-end latency, missed budgets,
//!   unanswered, late, duplicate and contradictory decisions.
//!
//! - [`model`]: the trained model. `fds train` learns from the engine's own
//!   feature vectors, taken at the moment each transfer happened during a
//!   replay, and the late labels of the stream; a model directory holds the
//!   flat parameters and a model card (data, metrics, hold threshold), checked
//!   whole on load; scoring is a walk over arrays, with per-feature reasons.
//!   `fds evaluate` runs the fraud-detection handbook's protocol, or the same
//!   train / gap / test split on any labelled stream, per typology.
//!
//! - [`analyst`]: the analysts' checks before a rule change goes live: rule
//!   tests kept beside the rules (`rules/tests/*.toml`, `fds rules test`), each
//!   case a short story run on a fresh engine, and the backtest (`fds
//!   backtest`): a recorded stream through the rules in force and a draft at
//!   once, each with its own state, compared against the late fraud reports.
//!
//! - [`metrics`]: every Prometheus metric of the product, named once, in a
//!   registry of its own; no account or payee id is ever a label.
//! - [`api`]: the operators' HTTP server (`/metrics`, `/readyz`, `/healthz`)
//!   on a thread of its own, and the readiness flags the pipeline flips.
//! - [`config`]: the operator's `fds.toml`, checked whole (every problem reported
//!   at once) into the runtime types above.
//!
//! Money is integer won everywhere ([`event::Won`]); account numbers are masked
//! in logs ([`event::mask_account`]).
//!
//! ## House rules the code keeps
//!
//! - **One meaning per name, one definition per constant.** `engine::Outcome`
//!   is a decision's allow/hold and `rules::Action` what a rule asks for;
//!   `features::FeatureType` is a feature's type and `state::Window` an
//!   account window; time units ([`event::MINUTE_MS`], [`event::HOUR_MS`],
//!   [`event::DAY_MS`], [`event::KST_OFFSET_MS`]) are defined once.
//! - **The library has no command-line types.** Closed sets the command line
//!   offers ([`input::Format`], [`model::train::Algorithm`]) list themselves
//!   (`ALL`, `name()`); the binary parses those names.
//! - **Lints.** Every public item is documented (`missing_docs`), the
//!   idioms of Rust 2018 are kept, nothing is `pub` that cannot be reached, and
//!   every public type is `Debug` unless its `#[allow]` says why it prints
//!   nothing useful. Error enums document their variants in their `#[error]`
//!   text, which names each field; their `#[allow(missing_docs)]` says so.
//!   `scripts/test` runs `cargo fmt --check` and `cargo clippy --all-targets
//!   -- -D warnings`.

#![warn(missing_docs, unreachable_pub, rust_2018_idioms, missing_debug_implementations)]

pub mod analyst;
pub mod api;
pub mod config;
pub mod engine;
pub mod event;
pub mod features;
pub mod generate;
pub mod input;
pub mod kafka;
pub mod load;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod state;
