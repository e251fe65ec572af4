//! Synthetic traffic: a deterministic, labelled stream of Korean bank transfers.
//!
//! This module owns the generator behind `fds generate`, the demo replay and the
//! tests that need realistic traffic. Real fraud data cannot leave a bank, so the
//! engine is developed and measured against traffic that has the same shape:
//! genuine habits (regular payees, rent days, salary day, shopping, a daily and a
//! weekly rhythm), the context events around them (logins, certificates, phone
//! upgrades), the confusers that make naive rules noisy (merchants and apartment
//! management offices that receive from thousands of senders, club dues and
//! wedding or funeral money that many people send one person within hours,
//! legitimate certificate re-issues and phone upgrades, large first-time
//! deposits), and four fraud typologies (five label strings: a mule's onward
//! transfers are labelled apart from the victims' transfers into it) whose
//! transfers are labelled, late, as real reports are.
//!
//! Guarantees:
//! - **Determinism.** The same [`GeneratorConfig`] gives byte-identical output on
//!   every run and machine. All randomness comes from ChaCha8 streams seeded by
//!   the config; nothing iterates a hash map; sampling uses only IEEE basic
//!   arithmetic (own `exp`/`ln`, no platform libm), so no float rounding differs
//!   between machines; only integer won and integer times are written.
//! - **Time order.** Lines are ordered by event time (whole seconds); ties are
//!   broken by sender account and then generation order (labels last), so events
//!   of one account that depend on each other (login, then transfer) keep their
//!   order. `bank_tran_id` sequence numbers are assigned in output order.
//! - **Bounded memory.** Traffic is built one KST day at a time: that day's
//!   records are generated into compact fixed-size structs, sorted and written;
//!   only records dated later (labels, the tail of an incident that crosses
//!   midnight, later loan-fraud payments) are kept. Per-account data is a small
//!   `Copy` struct; account numbers, names and device ids are derived from
//!   indices when a line is written, never stored.
//! - Every fraudulent transfer gets a `fraud` [`Label`] 1–10 days later (labels
//!   after the last day of traffic are still written, in time order, at the end).
//!   Transfers that would fall after the last day are not generated, and neither
//!   are their labels.
//!
//! Typologies (the `typology` string on the label):
//! - `voice_phishing` (보이스피싱): a caller talks an established, often older,
//!   customer into installing an app. Either a new device is registered, or a
//!   remote-control app is detected on the victim's own phone; a certificate is
//!   re-issued (sometimes issued) within minutes, sometimes the transfer limit is
//!   raised, then 3–40 minutes after the certificate one to four large transfers
//!   (1M–30M won, split ones just under round limits such as 9,990,000) go to a
//!   payee the victim never used: a mule account.
//! - `account_takeover` (계정탈취): failed logins from an unknown device, a phone
//!   number change, a new device registration and a successful login, then, often
//!   at night, two to five transfers within an hour that drain most of the
//!   account's typical balance to one or two mule accounts (a fifth of them
//!   through an open-banking app the fraudster linked).
//! - `mule_fan_in` (대포통장, 입금): a fake seller or smishing campaign. One mule
//!   account receives from five to fifteen unrelated victims within hours; the
//!   victims' own behaviour is ordinary (own device, moderate amounts), only the
//!   payee is new to them and busy.
//! - `mule_fan_out` (대포통장, 출금): the mule itself, as a sender, forwards the
//!   money onward within minutes, from a device the fraud ring shares between
//!   mules, to collector accounts that many mules pay (or to another mule).
//!   Fan-out follows every fan-in campaign (per about four receipts) and, with
//!   [`GeneratorConfig::fan_out_probability`], voice-phishing and takeover
//!   receipts. It has its own typology because the signal is on the sender side
//!   (a days-old account, a shared device) rather than the payee side.
//! - `loan_fraud` (대출사기, advance fee): the victim pays two to four "fees"
//!   (guarantee fee, credit-upgrade fee: 300,000–3,000,000 won) over hours or
//!   days to a payee named like a person, from their own device and usual
//!   channel, with no preceding account changes. The payees are a small pool of
//!   "loan company" accounts at other banks, each collecting from a few victims
//!   over days rather than many within hours. Deliberately low signal.
//!
//! Voice phishing, takeovers and fan-in campaigns draw payees from one pool of
//! mule accounts: recently opened accounts (with `ekyc_completed` when the
//! opening falls in the window), taken over by the ring (its device registered,
//! a login) the evening before or the morning of their first active day, each
//! active for one to four days and reused across victims and typologies, so a
//! report on a mule makes later transfers to it riskier. A small share of
//! genuine transfers is falsely reported as fraud and `cleared` some days later.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use chrono::{Datelike, NaiveDate};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::event::{
    Certificate, CertificateAction, Channel, DeviceRegistered, EkycCompleted, Event, EventTime, Label, LabelStatus,
    LimitRaised, Login, PhoneChanged, RemoteAppDetected, SchemaVersion, Transfer, TransferPurpose, Won,
};

mod behaviour;
mod output;
mod population;
mod random;
mod typologies;
mod vocabulary;

use behaviour::*;
use output::*;
use population::*;
use random::*;
use vocabulary::*;

/// Why traffic could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The configuration is out of range; nothing was written.
    #[error("invalid generator config: {0}")]
    Config(String),
    /// The run would need more transfer ids or records than the formats allow.
    #[error("generator capacity exceeded: {0}")]
    Capacity(String),
    /// Writing to the output failed.
    #[error("writing generated events: {0}")]
    Io(#[from] std::io::Error),
}

/// What to generate. Fraud intensity is given per 10,000 accounts per day so a
/// small demo and a million-account run have the same fraud rate.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    /// Seeds every random stream: the same seed, the same bytes.
    pub seed: u64,
    /// Sender accounts (100 to 10,000,000).
    pub accounts: u32,
    /// Days of traffic (1 to 366).
    pub days: u32,
    /// First day of traffic, midnight KST.
    pub start: NaiveDate,
    /// Voice-phishing victims per 10,000 accounts per weekday (fewer on weekends).
    pub voice_phishing_per_10k: f64,
    /// Account takeovers per 10,000 accounts per day.
    pub account_takeover_per_10k: f64,
    /// Mule fan-in campaigns (each with 5–15 victims) per 10,000 accounts per day.
    pub mule_campaigns_per_10k: f64,
    /// Advance-fee loan fraud victims per 10,000 accounts per weekday.
    pub loan_fraud_per_10k: f64,
    /// Probability that a mule forwards a voice-phishing or takeover receipt
    /// onward (fan-in campaign receipts are always forwarded).
    pub fan_out_probability: f64,
    /// Share of genuine transfers that are falsely reported, then cleared.
    pub false_report_rate: f64,
}

impl Default for GeneratorConfig {
    /// A small demo: one Monday of 20,000 accounts, about 28,000 transfers of
    /// which roughly 0.5% are fraud across all typologies.
    fn default() -> Self {
        GeneratorConfig {
            seed: 7,
            accounts: 20_000,
            days: 1,
            start: NaiveDate::from_ymd_opt(2026, 11, 2).expect("valid date"),
            voice_phishing_per_10k: 8.0,
            account_takeover_per_10k: 4.0,
            mule_campaigns_per_10k: 1.5,
            loan_fraud_per_10k: 5.0,
            fan_out_probability: 0.35,
            false_report_rate: 0.0002,
        }
    }
}

impl GeneratorConfig {
    /// Check every field; the generator never panics on a bad config.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Config(m));
        if !(100..=MAX_ACCOUNTS).contains(&self.accounts) {
            return bad(format!("accounts must be 100..={MAX_ACCOUNTS}, got {}", self.accounts));
        }
        if !(1..=MAX_DAYS).contains(&self.days) {
            return bad(format!("days must be 1..={MAX_DAYS}, got {}", self.days));
        }
        if u64::from(self.accounts) * u64::from(self.days) > MAX_ACCOUNT_DAYS {
            return bad(format!(
                "accounts x days must be at most {MAX_ACCOUNT_DAYS}, got {}",
                u64::from(self.accounts) * u64::from(self.days)
            ));
        }
        if !(2000..=2999).contains(&self.start.year()) {
            return bad(format!("start must be in the years 2000..=2999, got {}", self.start));
        }
        for (name, v) in [
            ("voice_phishing_per_10k", self.voice_phishing_per_10k),
            ("account_takeover_per_10k", self.account_takeover_per_10k),
            ("mule_campaigns_per_10k", self.mule_campaigns_per_10k),
            ("loan_fraud_per_10k", self.loan_fraud_per_10k),
        ] {
            if !(v.is_finite() && (0.0..=MAX_PER_10K).contains(&v)) {
                return bad(format!("{name} must be 0..={MAX_PER_10K}, got {v}"));
            }
        }
        if !(self.fan_out_probability.is_finite() && (0.0..=1.0).contains(&self.fan_out_probability)) {
            return bad(format!("fan_out_probability must be 0..=1, got {}", self.fan_out_probability));
        }
        if !(self.false_report_rate.is_finite() && (0.0..=0.1).contains(&self.false_report_rate)) {
            return bad(format!("false_report_rate must be 0..=0.1, got {}", self.false_report_rate));
        }
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Lines written.
    pub events: u64,
    /// Transfer lines.
    pub transfers: u64,
    /// Logins, device, certificate, phone, remote-app, limit and eKYC events.
    pub context_events: u64,
    /// All label lines: fraud reports (true and false) and clearances.
    pub labels: u64,
    /// Transfers that are really fraud (each has a `fraud` label).
    pub fraud_transfers: u64,
    /// Genuine transfers reported as fraud and later cleared.
    pub false_reports: u64,
    /// Fraud transfers per typology.
    pub frauds_by_typology: BTreeMap<String, u64>,
    /// Bytes written.
    pub bytes: u64,
    /// Time of the first and last line (the last is usually a late label).
    pub first_time: Option<EventTime>,
    /// See `first_time`.
    pub last_time: Option<EventTime>,
}

/// Generate traffic for `cfg` into `out` as JSON lines.
pub fn generate<W: Write>(cfg: &GeneratorConfig, out: W) -> Result<GenerateSummary, GenerateError> {
    generate_with_progress(cfg, out, &mut |_| {})
}

/// As [`generate`], calling `progress` with the number of lines written so far
/// after every block of output (and once at the end).
pub fn generate_with_progress<W: Write>(
    cfg: &GeneratorConfig,
    mut out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<GenerateSummary, GenerateError> {
    cfg.validate()?;
    let mut g = Generator::new(cfg);
    let mut w = Writer::new();
    for day in 0..cfg.days {
        g.day(day);
        if g.sink.overflow {
            return Err(GenerateError::Capacity("more than 4 billion records".into()));
        }
        let day_end = (day + 1) * DAY;
        w.write_until(&g.world, &mut g.sink.recs, Some(day_end), &mut out, progress)?;
    }
    w.write_until(&g.world, &mut g.sink.recs, None, &mut out, progress)?;
    out.flush()?;
    progress(w.summary.events);
    Ok(w.summary)
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

const MAX_ACCOUNTS: u32 = 10_000_000;
const MAX_DAYS: u32 = 366;
/// Keeps transfer sequence numbers within the 9 digits of `bank_tran_id` and
/// record numbers within u32 (about 1.5 transfers and 3 records per account-day).
const MAX_ACCOUNT_DAYS: u64 = 100_000_000;
const MAX_PER_10K: f64 = 500.0;
const DAY: u32 = 86_400;
const HOUR: u32 = 3_600;
const MIN: u32 = 60;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::event::Transfer;

    /// Small and fast in debug builds, with fraud boosted so every pattern
    /// appears several times.
    fn small(seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed,
            accounts: 2_000,
            days: 2,
            voice_phishing_per_10k: 40.0,
            account_takeover_per_10k: 25.0,
            mule_campaigns_per_10k: 10.0,
            loan_fraud_per_10k: 25.0,
            false_report_rate: 0.002,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn a_record_stays_40_bytes() {
        assert!(std::mem::size_of::<Rec>() <= 40, "{} bytes", std::mem::size_of::<Rec>());
    }

    fn run(cfg: &GeneratorConfig) -> (Vec<u8>, GenerateSummary) {
        let mut out = Vec::new();
        let summary = generate(cfg, &mut out).expect("generates");
        (out, summary)
    }

    fn parse(bytes: &[u8]) -> Vec<Event> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Event::from_json(l).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(l))))
            .collect()
    }

    fn transfers(events: &[Event]) -> BTreeMap<String, (usize, &Transfer)> {
        events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Event::Transfer(t) => Some((t.bank_tran_id.clone(), (i, t))),
                _ => None,
            })
            .collect()
    }

    /// bank_tran_id -> typology of its fraud label (true reports only:
    /// transfers whose report was later cleared are left out).
    fn fraud_typologies(events: &[Event]) -> BTreeMap<String, String> {
        let cleared: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Label(l) if l.status == LabelStatus::Cleared => Some(l.bank_tran_id.as_str()),
                _ => None,
            })
            .collect();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Label(l) if l.status == LabelStatus::Fraud && !cleared.contains(l.bank_tran_id.as_str()) => {
                    Some((l.bank_tran_id.clone(), l.typology.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, sa) = run(&small(11));
        let (b, sb) = run(&small(11));
        assert!(a == b, "same config gave different output");
        assert_eq!(sa, sb);
        let (c, _) = run(&small(12));
        assert!(a != c, "different seeds gave the same output");
    }

    #[test]
    fn every_line_is_an_event_in_time_order_with_unique_ids() {
        let (bytes, summary) = run(&small(3));
        let text = std::str::from_utf8(&bytes).unwrap();
        let events = parse(&bytes);
        // The lines are exactly what the wire format writes.
        for (line, e) in text.lines().zip(&events) {
            assert_eq!(line, e.to_json());
        }
        assert_eq!(events.len() as u64, summary.events);
        assert_eq!(bytes.len() as u64, summary.bytes);
        for w in events.windows(2) {
            assert!(w[0].time() <= w[1].time(), "{:?} before {:?}", w[0], w[1]);
        }
        let mut ids = BTreeSet::new();
        let mut n_transfers = 0;
        for e in &events {
            if let Event::Transfer(t) = e {
                n_transfers += 1;
                assert_eq!(t.bank_tran_id.len(), 20, "{}", t.bank_tran_id);
                assert!(ids.insert(t.bank_tran_id.clone()), "duplicate {}", t.bank_tran_id);
                assert_eq!(t.fintech_use_num.len(), 24);
                assert!((12..=14).contains(&t.recv_client_account_num.len()));
                assert!(!t.recv_client_name.is_empty());
            }
        }
        assert_eq!(n_transfers, summary.transfers);
        let labels = events.iter().filter(|e| matches!(e, Event::Label(_))).count() as u64;
        assert_eq!(labels, summary.labels);
        assert_eq!(summary.transfers + summary.context_events + summary.labels, summary.events);
        // Traffic stays inside the window; only labels come later.
        let end = EventTime::parse_kst("20261104000000").unwrap();
        assert!(events.iter().all(|e| matches!(e, Event::Label(_)) || e.time() < end));
        let start = EventTime::parse_kst("20261102000000").unwrap();
        assert!(events.iter().all(|e| e.time() >= start));
    }

    #[test]
    fn labels_refer_to_earlier_transfers_with_their_payee() {
        let (bytes, summary) = run(&small(5));
        let events = parse(&bytes);
        let by_id = transfers(&events);
        let mut fraud_labels = 0;
        let mut cleared = 0;
        let mut reported = BTreeSet::new();
        for e in &events {
            let Event::Label(l) = e else { continue };
            let (_, t) = by_id.get(&l.bank_tran_id).expect("label for a transfer that exists");
            assert_eq!(l.payee_key(), t.payee_key());
            assert!(l.report_dtime.secs() >= t.tran_dtime.secs() + 86_400, "reported within a day");
            match l.status {
                LabelStatus::Fraud => {
                    // 1–10 days after the incident's last transfer; a loan
                    // fraud's payments can span a few days before that.
                    let late = l.report_dtime.secs() - t.tran_dtime.secs();
                    assert!(late <= 16 * 86_400, "reported {late}s later");
                    fraud_labels += 1;
                    assert!(Typology::FRAUD.map(Typology::label).contains(&l.typology.as_str()), "{}", l.typology);
                    reported.insert(l.bank_tran_id.clone());
                }
                LabelStatus::Cleared => {
                    cleared += 1;
                    assert!(reported.contains(&l.bank_tran_id), "cleared before reported");
                    assert!(l.typology.is_empty());
                }
            }
        }
        assert_eq!(fraud_labels, summary.fraud_transfers + summary.false_reports);
        assert_eq!(cleared, summary.false_reports);
        assert!(summary.false_reports > 0);
        let by_typology: u64 = summary.frauds_by_typology.values().sum();
        assert_eq!(by_typology, summary.fraud_transfers);
        assert_eq!(fraud_typologies(&events).len() as u64, summary.fraud_transfers);
    }

    #[test]
    fn default_demo_has_every_typology_at_a_realistic_rate() {
        let (bytes, summary) = run(&GeneratorConfig::default());
        for t in Typology::FRAUD.map(Typology::label).iter() {
            let n = summary.frauds_by_typology.get(*t).copied().unwrap_or(0);
            assert!(n >= 5, "typology {t}: {n} transfers");
        }
        let rate = summary.fraud_transfers as f64 / summary.transfers as f64;
        assert!((0.001..=0.01).contains(&rate), "fraud rate {rate}: {summary:?}");
        assert!((20_000..=40_000).contains(&summary.transfers), "{summary:?}");
        // Shopping payments and all three channels are there.
        let text = std::str::from_utf8(&bytes).unwrap();
        for needle in [
            "\"transfer_purpose\":\"ST\"",
            "\"channel\":\"open_banking\"",
            "\"channel\":\"internet_banking\"",
            "\"type\":\"ekyc_completed\"",
            "\"type\":\"phone_changed\"",
            "\"type\":\"remote_app_detected\"",
            "\"type\":\"limit_raised\"",
            "\"action\":\"renewed\"",
        ] {
            assert!(text.contains(needle), "no {needle}");
        }
    }

    #[test]
    fn voice_phishing_follows_a_certificate_to_a_never_used_payee() {
        let (bytes, _) = run(&small(8));
        let events = parse(&bytes);
        let fraud = fraud_typologies(&events);
        let mut checked = 0;
        for (i, e) in events.iter().enumerate() {
            let Event::Transfer(t) = e else { continue };
            if fraud.get(&t.bank_tran_id).map(String::as_str) != Some("voice_phishing") {
                continue;
            }
            checked += 1;
            let from = t.tran_dtime.secs() - 40 * 60;
            let cert = events[..i].iter().any(|p| {
                matches!(p, Event::Certificate(c)
                    if c.fintech_use_num == t.fintech_use_num
                        && c.event_dtime.secs() >= from
                        && matches!(c.action, CertificateAction::Issued | CertificateAction::Reissued))
            });
            assert!(cert, "no certificate event 40 min before {}", t.bank_tran_id);
            // Earlier transfers from the victim to this payee are part of the
            // same scam, never genuine history.
            for p in &events[..i] {
                if let Event::Transfer(q) = p {
                    if q.fintech_use_num == t.fintech_use_num && q.payee_key() == t.payee_key() {
                        assert_eq!(fraud.get(&q.bank_tran_id).map(String::as_str), Some("voice_phishing"));
                    }
                }
            }
            assert!(t.tran_amt.get() >= 1_000_000);
        }
        assert!(checked >= 5, "only {checked} voice-phishing transfers");
    }

    #[test]
    fn mules_receive_from_many_senders_and_forward_onward() {
        let (bytes, _) = run(&small(9));
        let events = parse(&bytes);
        let fraud = fraud_typologies(&events);
        let mut senders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut fan_out_senders = BTreeSet::new();
        let mut fraud_payees = BTreeMap::<String, BTreeSet<String>>::new();
        for e in &events {
            let Event::Transfer(t) = e else { continue };
            match fraud.get(&t.bank_tran_id).map(String::as_str) {
                Some("mule_fan_in") => {
                    senders.entry(t.payee_key()).or_default().insert(t.fintech_use_num.clone());
                }
                Some("mule_fan_out") => {
                    fan_out_senders.insert(t.fintech_use_num.clone());
                }
                _ => {}
            }
            if let Some(ty) = fraud.get(&t.bank_tran_id) {
                if ty != "mule_fan_out" {
                    fraud_payees.entry(t.payee_key()).or_default().insert(t.fintech_use_num.clone());
                }
            }
        }
        assert!(!senders.is_empty());
        for (payee, s) in &senders {
            assert!(s.len() >= 3, "mule {payee} has only {} senders", s.len());
        }
        assert!(!fan_out_senders.is_empty());
        // The mule pool is reused: some payee gets fraud from victims of
        // more than one incident.
        assert!(fraud_payees.values().any(|s| s.len() >= 2));
    }

    #[test]
    fn bad_configs_are_errors_not_panics() {
        let ok = GeneratorConfig::default();
        let bad = [
            GeneratorConfig { accounts: 99, ..ok.clone() },
            GeneratorConfig { accounts: 20_000_000, ..ok.clone() },
            GeneratorConfig { days: 0, ..ok.clone() },
            GeneratorConfig { days: 1_000, ..ok.clone() },
            GeneratorConfig { accounts: 1_000_000, days: 200, ..ok.clone() },
            GeneratorConfig { start: NaiveDate::from_ymd_opt(1969, 1, 1).unwrap(), ..ok.clone() },
            GeneratorConfig { voice_phishing_per_10k: f64::NAN, ..ok.clone() },
            GeneratorConfig { loan_fraud_per_10k: -1.0, ..ok.clone() },
            GeneratorConfig { fan_out_probability: 1.5, ..ok.clone() },
            GeneratorConfig { false_report_rate: f64::INFINITY, ..ok.clone() },
        ];
        for cfg in bad {
            let mut out = Vec::new();
            let err = generate(&cfg, &mut out).unwrap_err();
            assert!(matches!(err, GenerateError::Config(_)), "{err}");
            assert!(out.is_empty());
        }
        // The smallest config works, with or without fraud.
        let tiny = GeneratorConfig { accounts: 100, days: 3, ..ok.clone() };
        run(&tiny);
        let none = GeneratorConfig {
            accounts: 100,
            voice_phishing_per_10k: 0.0,
            account_takeover_per_10k: 0.0,
            mule_campaigns_per_10k: 0.0,
            loan_fraud_per_10k: 0.0,
            false_report_rate: 0.0,
            ..ok
        };
        assert_eq!(run(&none).1.labels, 0);
    }

    #[test]
    fn own_exp_and_ln_match_the_platform() {
        for x in [-20.0, -1.5, -0.1, 0.0, 0.3, 1.0, 2.5, 10.3, 17.0] {
            let (a, b) = (det_exp(x), f64::exp(x));
            assert!((a - b).abs() <= b * 1e-14, "exp({x}): {a} vs {b}");
        }
        for x in [1e-6, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 80_000.0, 3e7] {
            let (a, b) = (det_ln(x), f64::ln(x));
            assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0), "ln({x}): {a} vs {b}");
        }
    }

    #[test]
    fn progress_is_reported() {
        let mut calls = Vec::new();
        let summary = generate_with_progress(&small(1), std::io::sink(), &mut |n| calls.push(n)).unwrap();
        assert_eq!(calls.last(), Some(&summary.events));
        assert!(calls.windows(2).all(|w| w[0] <= w[1]));
    }

    /// `cargo test --release --lib generate -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn throughput_200k_accounts() {
        let cfg = GeneratorConfig { accounts: 200_000, ..GeneratorConfig::default() };
        let started = std::time::Instant::now();
        let summary = generate(&cfg, std::io::sink()).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{} events ({} transfers, {} fraud) in {secs:.2}s: {:.0} events/s, {:.0} MB/s",
            summary.events,
            summary.transfers,
            summary.fraud_transfers,
            summary.events as f64 / secs,
            summary.bytes as f64 / secs / 1e6
        );
        println!("{summary:#?}");
    }
}
