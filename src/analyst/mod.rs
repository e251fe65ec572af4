//! The analysts' workflow: proving a rule change before it goes live.
//!
//! Analysts write rules ([`crate::rules`]); this module owns the two checks a
//! fraud team runs before a change reaches customers:
//!
//! - [`cases`]: **rule tests** kept beside the rules (`rules/tests/*.toml`).
//!   Each case is a short story (context events, earlier transfers, fraud
//!   reports, at times relative to the transfer under test) and what the
//!   rules must decide on its last transfer. `fds rules test` runs every case
//!   on a fresh engine and names each failure by file and line, with what
//!   fired instead.
//! - [`backtest`]: **a rule change replayed on recorded traffic**. The same
//!   stream, parsed once, goes through two engines, one per rule set, each
//!   with its own state (a hold changes what the account's next transfer
//!   looks like, so the two must not share it), and the two sides are counted
//!   by the replay's own [`crate::replay`] code and compared transfer by
//!   transfer against the stream's late fraud reports.
//!
//! Guarantees: both are deterministic (event time only, no wall clock), and
//! both run the engine's real code path, the one `fds run` serves with, so a
//! passing case or a backtest figure says what production would do.

pub mod backtest;
pub mod cases;
