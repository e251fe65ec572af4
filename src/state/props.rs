//! Property tests of the windows: whatever a stream brings (times out of
//! order, the same time twice, times far in the future or the past, times on
//! and beside bucket edges, expiry sweeps between events), every count and
//! sum a window reports is the one recomputed by hand from a plain list of
//! the events it was given.
//!
//! Why by hand: the rings keep running totals and clear slots as their head
//! moves, which is where an off-by-one or a slot left uncleared would hide;
//! the list below has neither. The definition it recomputes (module doc): at
//! `now`, a read of `k` buckets of width `w` from a ring of `N` counts the
//! events whose bucket is one of the `k` up to and including `now`'s, and
//! still in the ring, i.e. after the newest bucket ever written less `N`.
//! An event older than the ring when it arrives is dropped, which that
//! definition already says: the newest bucket only moves forward. Lists of
//! recent times (new payees, failed logins) and of last-seen keys (senders,
//! a device's accounts) count exactly in `(now - window, now]`, recent times
//! only among those after the newest time ever pushed less the time kept.

use std::collections::HashMap;

use proptest::prelude::*;

use super::entity::PAYEE_DAYS;
use super::*;
use crate::event::{build, MINUTE_MS};

/// A UTC midnight (2023-11-15): bucket edges of every width fall on it.
const BASE: i64 = 19_676 * DAY_MS;

/// Ten years: far enough that every ring is emptied by the jump.
const FAR: i64 = 3_650 * DAY_MS;

/// The time of an event: a fresh one, or the time of an earlier event again.
#[derive(Debug, Clone, Copy)]
enum At {
    Time(i64),
    Again(usize),
}

fn resolve(at: At, earlier: &[i64]) -> i64 {
    match at {
        At::Time(t) => t,
        At::Again(i) if !earlier.is_empty() => earlier[i % earlier.len()],
        At::Again(_) => BASE,
    }
}

/// Times around `BASE` for buckets of `width`, `n` to a ring: anywhere in a
/// few rings' span, on a bucket edge or a millisecond either side of one,
/// and now and then ten years ahead or behind.
fn time(width: i64, n: i64) -> impl Strategy<Value = i64> {
    let span = (n + 4) * width;
    prop_oneof![
        4 => (-span..span).prop_map(|d| BASE + d),
        4 => (-(n + 4)..n + 4, -1i64..=1).prop_map(move |(k, e)| BASE + k * width + e),
        1 => (any::<bool>(), -span..span).prop_map(|(ahead, d)| if ahead { BASE + FAR + d } else { BASE - FAR + d }),
    ]
}

fn at(width: i64, n: i64) -> impl Strategy<Value = At> {
    prop_oneof![4 => time(width, n).prop_map(At::Time), 1 => any::<usize>().prop_map(At::Again)]
}

/// Won, anywhere an event may carry.
fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..=100_000, 1i64..=crate::event::MAX_AMOUNT_WON]
}

/// Count and sum of `events` a read of `k` buckets of `width` at `now`
/// sees, from a ring of `n` buckets that was given them all.
fn by_hand(events: &[(i64, i64)], width: i64, n: usize, now: i64, k: usize) -> (i64, i64) {
    let Some(head) = events.iter().map(|&(t, _)| t.div_euclid(width)).max() else { return (0, 0) };
    let nb = now.div_euclid(width);
    events
        .iter()
        .filter(|&&(t, _)| {
            let b = t.div_euclid(width);
            b > nb - k as i64 && b <= nb && b > head - n as i64
        })
        .fold((0, 0), |(c, s), &(_, a)| (c + 1, s + a))
}

/// Feed a ring the events, reading it after each at the event's own time
/// and at another, for every read length.
fn ring_agrees<const N: usize, const W: i64>(ops: &[(At, i64, i64)]) -> Result<(), TestCaseError> {
    let mut ring: Ring<N, W> = Ring::default();
    let mut events: Vec<(i64, i64)> = Vec::new();
    let mut times = Vec::new();
    for &(at, amount, query) in ops {
        let t = resolve(at, &times);
        times.push(t);
        ring.add(EventTime(t), amount);
        events.push((t, amount));
        for now in [t, query, t + W, t - W] {
            for k in 1..=N {
                let want = by_hand(&events, W, N, now, k);
                prop_assert_eq!(ring.total(EventTime(now), k), want, "now={} k={} events={:?}", now, k, events);
            }
        }
    }
    Ok(())
}

/// The same for the payee's daily counts, read for several lengths at once.
fn day_counts_agree(ops: &[(At, i64)]) -> Result<(), TestCaseError> {
    const N: usize = PAYEE_DAYS;
    let mut days: DayCounts<N> = DayCounts::default();
    let mut events: Vec<(i64, i64)> = Vec::new();
    let mut times = Vec::new();
    for &(at, query) in ops {
        let t = resolve(at, &times);
        times.push(t);
        days.add(EventTime(t));
        events.push((t, 0));
        for now in [t, query, t + DAY_MS, t - DAY_MS] {
            let ks = [1, 7, 9, 15, 30, N];
            let want = ks.map(|k| by_hand(&events, DAY_MS, N, now, k).0);
            prop_assert_eq!(days.totals(EventTime(now), ks), want, "now={} events={:?}", now, events);
        }
    }
    Ok(())
}

fn ring_ops(width: i64, n: usize) -> impl Strategy<Value = Vec<(At, i64, i64)>> {
    prop::collection::vec((at(width, n as i64), amount(), time(width, n as i64)), 1..48)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    /// A small ring, so that wrapping around and long gaps are common.
    #[test]
    fn a_ring_of_three_minutes_matches_a_recount(ops in ring_ops(MINUTE_MS, 3)) {
        ring_agrees::<3, MINUTE_MS>(&ops)?;
    }

    /// Each geometry the state keeps.
    #[test]
    fn the_ten_minute_ring_matches_a_recount(ops in ring_ops(MINUTE_MS, 10)) {
        ring_agrees::<10, MINUTE_MS>(&ops)?;
    }

    #[test]
    fn the_hour_ring_matches_a_recount(ops in ring_ops(5 * MINUTE_MS, 12)) {
        ring_agrees::<12, { 5 * MINUTE_MS }>(&ops)?;
    }

    #[test]
    fn the_day_ring_matches_a_recount(ops in ring_ops(HOUR_MS, 24)) {
        ring_agrees::<24, HOUR_MS>(&ops)?;
    }

    #[test]
    fn the_month_ring_matches_a_recount(ops in ring_ops(DAY_MS, 30)) {
        ring_agrees::<30, DAY_MS>(&ops)?;
    }

    #[test]
    fn the_payee_daily_counts_match_a_recount(
        ops in prop::collection::vec((at(DAY_MS, PAYEE_DAYS as i64), time(DAY_MS, PAYEE_DAYS as i64)), 1..48)
    ) {
        day_counts_agree(&ops)?;
    }
}

// ------------------------------------------------------ the whole state ---

/// One step of a stream over two accounts, two payees and two devices.
#[derive(Debug, Clone)]
enum Op {
    /// A transfer, allowed or held.
    Pay { account: u8, payee: u8, device: Option<u8>, at: At, amount: i64, held: bool },
    /// A failed login.
    FailedLogin { account: u8, at: At },
    /// An expiry sweep as of this time.
    Expire { at: At },
}

/// Times for every window at once: minutes apart, days apart, on the edges
/// of each bucket width, and far away.
fn any_time() -> impl Strategy<Value = i64> {
    let widths = vec![MINUTE_MS, 5 * MINUTE_MS, HOUR_MS, DAY_MS];
    prop_oneof![
        3 => (-3 * HOUR_MS..3 * HOUR_MS).prop_map(|d| BASE + d),
        3 => (-45 * DAY_MS..45 * DAY_MS).prop_map(|d| BASE + d),
        3 => (prop::sample::select(widths), -45i64..45, -1i64..=1).prop_map(|(w, k, e)| BASE + k * w + e),
        1 => (any::<bool>(), -DAY_MS..DAY_MS).prop_map(|(ahead, d)| if ahead { BASE + FAR + d } else { BASE - FAR + d }),
    ]
}

fn any_at() -> impl Strategy<Value = At> {
    prop_oneof![4 => any_time().prop_map(At::Time), 1 => any::<usize>().prop_map(At::Again)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..2, 0u8..2, prop::option::of(0u8..2), any_at(), amount(), prop::bool::weighted(0.2)).prop_map(
            |(account, payee, device, at, amount, held)| Op::Pay { account, payee, device, at, amount, held }
        ),
        1 => (0u8..2, any_at()).prop_map(|(account, at)| Op::FailedLogin { account, at }),
        1 => any_at().prop_map(|at| Op::Expire { at }),
    ]
}

/// An account by hand: everything it was given since it was (last) created.
#[derive(Debug, Default)]
struct Account {
    last_seen: i64,
    sent: Vec<(i64, i64)>,
    /// Payees learnt from allowed transfers, and when each was first learnt.
    known: HashMap<u8, i64>,
    /// Devices used in allowed transfers, and their first use.
    devices: HashMap<u8, i64>,
    failed_logins: Vec<i64>,
}

#[derive(Debug, Default)]
struct Payee {
    last_seen: i64,
    received: Vec<(i64, i64)>,
    /// Each sender's latest transfer.
    senders: HashMap<u8, i64>,
}

#[derive(Debug, Default)]
struct Device {
    last_seen: i64,
    used: Vec<(i64, i64)>,
    accounts: HashMap<u8, i64>,
}

/// Times kept by a [`RecentTimes`] of `keep_ms`, counted in
/// `(now - window_ms, now]`: those after the newest ever pushed less `keep_ms`.
fn recent_by_hand(times: &[i64], keep_ms: i64, now: i64, window_ms: i64) -> i64 {
    let Some(&newest) = times.iter().max() else { return 0 };
    times.iter().filter(|&&x| x > newest - keep_ms && x > now - window_ms && x <= now).count() as i64
}

/// Keys whose latest time is in `(now - window_ms, now]`.
fn distinct_by_hand(latest: &HashMap<u8, i64>, now: i64, window_ms: i64) -> i64 {
    latest.values().filter(|&&x| x > now - window_ms && x <= now).count() as i64
}

fn state_agrees(ttl_days: (i64, i64, i64), ops: &[Op]) -> Result<(), TestCaseError> {
    let cfg = StateConfig {
        account_ttl_ms: ttl_days.0 * DAY_MS,
        payee_ttl_ms: ttl_days.1 * DAY_MS,
        device_ttl_ms: ttl_days.2 * DAY_MS,
        ..StateConfig::default()
    };
    let state = State::new(cfg.clone());
    let (mut accounts, mut payees, mut devices) =
        (HashMap::<u8, Account>::new(), HashMap::<u8, Payee>::new(), HashMap::<u8, Device>::new());
    let mut times = Vec::new();
    let payee_num = |p: u8| format!("11000{p}");
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Pay { account, payee, device, at, amount, held } => {
                let t = resolve(at, &times);
                times.push(t);
                let tr = {
                    let b = build::transfer("T1")
                        .account(&format!("A{account}"))
                        .payee("088", &payee_num(payee))
                        .at_time(EventTime(t))
                        .amount(amount);
                    match device {
                        Some(d) => b.device(&format!("D{d}")),
                        None => b,
                    }
                    .transfer()
                };
                let seen = state.observe_transfer(&tr, &tr.payee_key());
                state.settle_transfer(&tr, &seen, held);

                let a = accounts.entry(account).or_insert_with(|| Account { last_seen: t, ..Account::default() });
                let got = seen.account;
                for (w, (width, n, k)) in Window::ALL.into_iter().zip([
                    (MINUTE_MS, 10, 10),
                    (5 * MINUTE_MS, 12, 12),
                    (HOUR_MS, 24, 24),
                    (DAY_MS, 30, 7),
                    (DAY_MS, 30, 30),
                ]) {
                    let want = by_hand(&a.sent, width, n, t, k);
                    prop_assert_eq!((got.count(w), got.sum(w)), want, "step {} account {:?} {:?}", step, w, a);
                }
                let new_payees: Vec<i64> = a.known.values().copied().collect();
                prop_assert_eq!(got.new_payees_24h, recent_by_hand(&new_payees, DAY_MS, t, DAY_MS), "step {}", step);
                prop_assert_eq!(got.failed_logins_1h, recent_by_hand(&a.failed_logins, HOUR_MS, t, HOUR_MS));
                prop_assert_eq!(got.payee_known, a.known.contains_key(&payee), "step {}", step);
                prop_assert_eq!(got.known_payees, a.known.len() as i64);
                let first_use = device.and_then(|d| a.devices.get(&d)).copied().map(EventTime);
                prop_assert_eq!(got.device_first_seen, first_use, "step {}", step);
                a.last_seen = a.last_seen.max(t);
                a.sent.push((t, amount));
                if !held {
                    a.known.entry(payee).or_insert(t);
                    if let Some(d) = device {
                        let first = a.devices.entry(d).or_insert(t);
                        *first = (*first).min(t);
                    }
                }

                let p = payees.entry(payee).or_insert_with(|| Payee { last_seen: t, ..Payee::default() });
                let got = seen.payee;
                prop_assert_eq!((got.in_count_24h, got.in_sum_24h), by_hand(&p.received, HOUR_MS, 24, t, 24));
                let days = |k| by_hand(&p.received, DAY_MS, PAYEE_DAYS, t, k).0;
                prop_assert_eq!((got.in_count_7d, got.in_count_30d), (days(7), days(30)), "step {}", step);
                prop_assert_eq!(got.reportable_transfers, [days(9), days(15), days(38)], "step {}", step);
                prop_assert_eq!(got.distinct_senders_1h, distinct_by_hand(&p.senders, t, HOUR_MS));
                prop_assert_eq!(got.distinct_senders_24h, distinct_by_hand(&p.senders, t, DAY_MS));
                p.last_seen = p.last_seen.max(t);
                p.received.push((t, amount));
                let latest = p.senders.entry(account).or_insert(t);
                *latest = (*latest).max(t);

                if let Some(d) = device {
                    let dev = devices.entry(d).or_insert_with(|| Device { last_seen: t, ..Device::default() });
                    let got = seen.device.expect("a device view");
                    prop_assert_eq!(got.count_1h, by_hand(&dev.used, 5 * MINUTE_MS, 12, t, 12).0, "step {}", step);
                    prop_assert_eq!(got.distinct_accounts_24h, distinct_by_hand(&dev.accounts, t, DAY_MS));
                    dev.last_seen = dev.last_seen.max(t);
                    dev.used.push((t, amount));
                    let latest = dev.accounts.entry(account).or_insert(t);
                    *latest = (*latest).max(t);
                } else {
                    prop_assert!(seen.device.is_none());
                }
            }
            Op::FailedLogin { account, at } => {
                let t = resolve(at, &times);
                times.push(t);
                state.apply(&build::context(&format!("A{account}")).at_time(EventTime(t)).login(false));
                let a = accounts.entry(account).or_insert_with(|| Account { last_seen: t, ..Account::default() });
                a.last_seen = a.last_seen.max(t);
                a.failed_logins.push(t);
            }
            Op::Expire { at } => {
                let now = resolve(at, &times);
                let dropped = state.expire(EventTime(now));
                let before = accounts.len() + payees.len() + devices.len();
                accounts.retain(|_, a| now - a.last_seen <= cfg.account_ttl_ms);
                payees.retain(|_, p| now - p.last_seen <= cfg.payee_ttl_ms);
                devices.retain(|_, d| now - d.last_seen <= cfg.device_ttl_ms);
                let after = accounts.len() + payees.len() + devices.len();
                prop_assert_eq!(dropped, before - after, "step {}: swept at {}", step, now);
            }
        }
        prop_assert_eq!(state.entities(), (accounts.len(), payees.len(), devices.len()), "step {}", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(800))]

    /// Every window the features read, through the state itself: accounts,
    /// payees and devices created, fed, swept and created again.
    #[test]
    fn every_window_of_the_state_matches_a_recount(
        ttl_days in (1i64..40, 1i64..40, 1i64..40),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        state_agrees(ttl_days, &ops)?;
    }
}
