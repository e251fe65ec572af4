//! The engine end to end on hand-written streams: windows at their edges, the
//! typologies the starter rules exist for, determinism.

use std::path::Path;

use fds::engine::{Engine, Outcome, Scored};
use fds::event::build::{self, context};
use fds::event::Event;
use fds::features::{FeatureVector, Value, F, MINUTES_CAP};
use fds::rules::{RuleSet, Verification};

const ACCT: &str = build::DEFAULT_ACCOUNT;

fn transfer(id: &str, time: &str, amount: i64, payee: &str, device: &str) -> Event {
    transfer_from(ACCT, id, time, amount, payee, device)
}

fn transfer_from(acct: &str, id: &str, time: &str, amount: i64, payee: &str, device: &str) -> Event {
    build::transfer(id).account(acct).at(time).amount(amount).payee("088", payee).device(device).ip("10.0.0.1").build()
}

fn starter_engine() -> Engine {
    Engine::with_rules(RuleSet::load_dir(Path::new("rules")).unwrap())
}

fn score(engine: &Engine, e: &Event) -> Scored {
    engine.process(e).expect("the event is accepted").expect("a transfer gets a decision")
}

/// Feed a context event or a label.
fn apply(engine: &Engine, e: &Event) {
    assert!(engine.process(e).expect("the event is accepted").is_none());
}

fn int(fv: &FeatureVector, f: F) -> i64 {
    match fv.feature(f) {
        Value::Int(i) => i,
        other => panic!("{f:?} is {other:?}"),
    }
}

fn boolean(fv: &FeatureVector, f: F) -> bool {
    match fv.feature(f) {
        Value::Bool(b) => b,
        other => panic!("{f:?} is {other:?}"),
    }
}

#[test]
fn ten_minute_window_edges() {
    let engine = Engine::with_rules(RuleSet::empty());
    score(&engine, &transfer("T1", "20261102100000", 10_000, "1", "D1"));
    score(&engine, &transfer("T2", "20261102100059", 20_000, "1", "D1"));
    // 9 min 59 s after the first bucket opened: both still inside.
    let s = score(&engine, &transfer("T3", "20261102100959", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_10M), 2);
    assert_eq!(int(&s.features, F::ACCT_SUM_10M), 30_000);
    // At 10:10:00 the 10:00 bucket has left the window; T3 (10:09) is inside.
    let s = score(&engine, &transfer("T4", "20261102101000", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_10M), 1);
    assert_eq!(int(&s.features, F::ACCT_SUM_10M), 1_000);
    // The hour window still holds all four earlier transfers.
    let s = score(&engine, &transfer("T5", "20261102105500", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_1H), 4);
    assert_eq!(int(&s.features, F::ACCT_COUNT_10M), 0);
    // At 11:00:00 the hour window starts at the 10:05 bucket: T1 and T2 (10:00)
    // are out; T3 (10:09:59), T4 and T5 are in.
    let s = score(&engine, &transfer("T6", "20261102110000", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_1H), 3);
}

#[test]
fn day_and_month_windows_edges() {
    let engine = Engine::with_rules(RuleSet::empty());
    // Buckets are UTC-aligned: 09:00 KST is 00:00 UTC, a day boundary.
    score(&engine, &transfer("T1", "20261102090000", 50_000, "1", "D1"));
    let s = score(&engine, &transfer("T2", "20261103085959", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_24H), 1);
    let s = score(&engine, &transfer("T3", "20261103090000", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_24H), 1, "T1 left the 24 h window, T2 is in it");
    assert_eq!(int(&s.features, F::ACCT_COUNT_7D), 2);
    // 29 days later T1's day is the oldest still in the 30-day window.
    let s = score(&engine, &transfer("T4", "20261201085959", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_30D), 3);
    assert_eq!(int(&s.features, F::ACCT_COUNT_7D), 0);
    // On 3 December (UTC) the window starts on 4 November: only T4 remains.
    let s = score(&engine, &transfer("T5", "20261203090000", 1_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_30D), 1, "only T4 remains");
    assert_eq!(int(&s.features, F::ACCT_SUM_30D), 1_000);
}

#[test]
fn features_describe_the_past_not_the_transfer_itself() {
    let engine = Engine::with_rules(RuleSet::empty());
    let s = score(&engine, &transfer("T1", "20261102100000", 10_000, "1", "D1"));
    assert_eq!(int(&s.features, F::ACCT_COUNT_10M), 0);
    assert!(boolean(&s.features, F::PAYEE_FIRST_SEEN));
    assert_eq!(int(&s.features, F::DEVICE_AGE_MIN), 0);
    assert_eq!(int(&s.features, F::MINS_SINCE_CERT_REISSUE), MINUTES_CAP);
    let s = score(&engine, &transfer("T2", "20261102103000", 10_000, "1", "D1"));
    assert!(!boolean(&s.features, F::PAYEE_FIRST_SEEN));
    assert_eq!(int(&s.features, F::DEVICE_AGE_MIN), 30);
    assert_eq!(int(&s.features, F::AMOUNT), 10_000);
}

/// The starter rules' reason for existing: certificate re-issued on a new
/// device, then minutes later a first large transfer to a never-seen payee.
#[test]
fn voice_phishing_pattern_is_held_for_a_call_back() {
    let engine = starter_engine();
    // A month of ordinary habits: small transfers to two known payees.
    for day in 1..=28 {
        let time = format!("202610{day:02}190000");
        let payee = if day % 2 == 0 { "111" } else { "222" };
        let s = score(&engine, &transfer(&format!("H{day}"), &time, 50_000, payee, "HOME"));
        assert_eq!(s.decision.outcome, Outcome::Allow, "habitual transfer on day {day}");
    }
    apply(&engine, &context(ACCT).at("20261102140000").device("EVIL").device_registered());
    apply(&engine, &context(ACCT).at("20261102140200").device("EVIL").cert_reissued());
    // The same transfer to a known payee from home is fine...
    let s = score(&engine, &transfer("K1", "20261102140500", 50_000, "111", "HOME"));
    assert_eq!(s.decision.outcome, Outcome::Allow);
    // ...the first large transfer to a stranger from the new device is not.
    let s = score(&engine, &transfer("VP1", "20261102141000", 9_000_000, "999999", "EVIL"));
    assert_eq!(int(&s.features, F::MINS_SINCE_CERT_REISSUE), 8);
    assert_eq!(int(&s.features, F::DEVICE_AGE_MIN), 10);
    assert_eq!(s.decision.outcome, Outcome::Hold);
    assert_eq!(s.decision.verification, Some(Verification::Callback));
    assert!(s.decision.reason_codes().any(|c| c == "VP001"), "{}", s.decision.to_json());
    // Each reason says what its rule asked for: the hard rule a hold, the
    // softer one its points.
    let json: serde_json::Value = serde_json::from_str(&s.decision.to_json()).unwrap();
    let reason = |code: &str| json["reasons"].as_array().unwrap().iter().find(|r| r["code"] == code).cloned().unwrap();
    assert_eq!(
        (reason("VP001")["action"].clone(), reason("VP001")["verify"].clone()),
        ("hold".into(), "callback".into())
    );
    assert_eq!((reason("VP010")["action"].clone(), reason("VP010")["points"].clone()), ("score".into(), 50.into()));
    // Two hours later, with no other signal, the same transfer passes the hard rule.
    let s = score(&engine, &transfer("VP2", "20261102181000", 9_000_000, "888888", "HOME"));
    assert!(!s.decision.reason_codes().any(|c| c == "VP001"));
}

#[test]
fn a_reported_payee_is_held_for_every_later_sender() {
    let engine = starter_engine();
    let s = score(&engine, &transfer_from("A1", "T1", "20261102100000", 300_000, "555", "DA"));
    assert_eq!(s.decision.outcome, Outcome::Allow);
    // Days later the victim reports it; the label names the payee.
    apply(&engine, &label("T1", "20261105100000", "fraud", "555"));
    let s = score(&engine, &transfer_from("A2", "T2", "20261105110000", 300_000, "555", "DB"));
    assert_eq!(s.decision.outcome, Outcome::Hold);
    assert!(s.decision.reason_codes().any(|c| c == "MU001"));
    // A withdrawn report lifts it.
    apply(&engine, &label("T1", "20261105120000", "cleared", "555"));
    let s = score(&engine, &transfer_from("A3", "T3", "20261105130000", 300_000, "555", "DC"));
    assert!(!s.decision.reason_codes().any(|c| c == "MU001"));
}

#[test]
fn mule_fan_in_is_held_once_many_senders_pay_a_new_payee() {
    let engine = starter_engine();
    let mut held = Vec::new();
    for i in 0..8 {
        let acct = format!("V{i}");
        let time = format!("2026110210{:02}00", i * 5);
        let s = score(&engine, &transfer_from(&acct, &format!("M{i}"), &time, 700_000, "MULE1", &format!("DV{i}")));
        held.push(s.decision.outcome == Outcome::Hold);
    }
    // The first three senders build the fan-in; from the fourth on it is held.
    assert_eq!(held, [false, false, false, true, true, true, true, true]);
}

#[test]
fn same_events_same_decisions() {
    let events: Vec<Event> = (0..200)
        .map(|i| {
            transfer_from(
                &format!("A{}", i % 7),
                &format!("T{i}"),
                &format!("202611021{}{:02}00", i / 60, i % 60),
                10_000 * (1 + i % 13),
                &format!("P{}", i % 11),
                &format!("D{}", i % 5),
            )
        })
        .collect();
    let run = || {
        let engine = starter_engine();
        events.iter().filter_map(|e| engine.process(e).unwrap()).map(|s| s.decision.fingerprint()).collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a.len(), 200);
    assert_eq!(a, run());
}

#[test]
fn decision_json_names_reasons_with_labels() {
    let engine = starter_engine();
    apply(&engine, &context(ACCT).at("20261102100000").remote_app("TeamViewer QS"));
    let s = score(&engine, &transfer("R1", "20261102101500", 800_000, "777", "HOME"));
    let json: serde_json::Value = serde_json::from_str(&s.decision.to_json()).unwrap();
    assert_eq!(json["decision"], "hold");
    assert_eq!(json["verification"], "callback");
    assert_eq!(json["bank_tran_id"], "R1");
    assert_eq!(json["schema_version"], 1);
    let reasons = json["reasons"].as_array().unwrap();
    let vp = reasons.iter().find(|r| r["code"] == "VP002").expect("VP002 fired");
    assert!(vp["label"].as_str().unwrap().contains("원격제어"));
    assert_eq!(vp["action"], "hold");
    assert_eq!(vp["verify"], "callback");
    assert!(json["ruleset_version"].as_str().unwrap().starts_with("rs-"));
    assert!(json["engine_latency_us"].as_f64().unwrap() > 0.0);
    assert!(!s.decision.fingerprint().contains("latency"));
}

#[test]
fn one_report_against_a_busy_payee_adds_score_but_does_not_hold() {
    let engine = starter_engine();
    // Forty customers pay the same shop through the morning.
    for i in 0..40 {
        let time = format!("202611020{}{:02}00", 8 + i / 20, (i % 20) * 3);
        score(&engine, &transfer_from(&format!("C{i}"), &format!("S{i}"), &time, 30_000, "SHOP", &format!("DC{i}")));
    }
    apply(&engine, &build::label("S0").at("20261102110000").typology("loan_fraud").payee("088", "SHOP").build());
    let s = score(&engine, &transfer_from("C99", "S99", "20261102113000", 30_000, "SHOP", "DC99"));
    let codes: Vec<&str> = s.decision.reason_codes().collect();
    // The report adds MU011's 40 points (the young payee's fan-in adds MU010's
    // 50), below the hold score of 100; the hard reported-payee holds stay quiet.
    assert_eq!(codes, ["MU011", "MU010"]);
    assert_eq!(s.decision.score, 90);
    assert_eq!(s.decision.outcome, Outcome::Allow);
}

fn label(id: &str, time: &str, status: &str, payee: &str) -> Event {
    let report = build::label(id).at(time).payee("088", payee);
    match status {
        "fraud" => report.build(),
        "cleared" => report.cleared().build(),
        other => panic!("status {other}"),
    }
}

/// A hold must not teach the engine that the payee is known: retrying the
/// same transfer (or another to a new payee) right after is held again.
#[test]
fn a_held_transfer_retried_is_held_again() {
    let engine = starter_engine();
    apply(&engine, &context(ACCT).at("20261102100000").remote_app("AnyDesk"));
    let first = score(&engine, &transfer("R1", "20261102101000", 800_000, "777", "HOME"));
    assert_eq!(first.decision.outcome, Outcome::Hold);
    let retry = score(&engine, &transfer("R2", "20261102101100", 800_000, "777", "HOME"));
    assert!(boolean(&retry.features, F::PAYEE_FIRST_SEEN), "a held transfer made its payee known");
    assert_eq!(int(&retry.features, F::MINS_SINCE_HOLD), 1);
    assert_eq!(retry.decision.outcome, Outcome::Hold);
    // Two hours later the remote-app signal and the hold have aged out...
    let later = score(&engine, &transfer("R3", "20261102121000", 30_000, "888", "HOME"));
    assert_eq!(later.decision.outcome, Outcome::Allow);
    // ...and an allowed transfer does teach: its payee is known next time.
    let again = score(&engine, &transfer("R4", "20261102121500", 30_000, "888", "HOME"));
    assert!(!boolean(&again.features, F::PAYEE_FIRST_SEEN));
}

#[test]
fn a_report_delivered_twice_counts_once_and_a_stray_withdrawal_changes_nothing() {
    let engine = starter_engine();
    score(&engine, &transfer_from("A1", "T1", "20261102100000", 300_000, "555", "DA"));
    for _ in 0..3 {
        apply(&engine, &label("T1", "20261103100000", "fraud", "555"));
    }
    apply(&engine, &label("NO_SUCH_TRANSFER", "20261103110000", "cleared", "555"));
    let s = score(&engine, &transfer_from("A2", "T2", "20261103120000", 300_000, "555", "DB"));
    assert_eq!(int(&s.features, F::PAYEE_FRAUD_REPORTS), 1);
    assert_eq!(int(&s.features, F::MINS_SINCE_PAYEE_REPORT), 120);
    let codes: Vec<&str> = s.decision.reason_codes().collect();
    assert!(codes.contains(&"MU001") && !codes.contains(&"MU004"), "{codes:?}");
}

#[test]
fn late_context_events_do_not_move_the_clock_back() {
    let engine = Engine::with_rules(RuleSet::empty());
    let cert = |time: &str| context(ACCT).at(time).cert_reissued();
    let failed_login = |time: &str| context(ACCT).at(time).login(false);
    apply(&engine, &cert("20261102140200"));
    for t in ["20261102140300", "20261102140400", "20261102140500"] {
        apply(&engine, &failed_login(t));
    }
    // Events from hours ago arrive late.
    apply(&engine, &cert("20261102100000"));
    apply(&engine, &failed_login("20261102090000"));
    let s = score(&engine, &transfer("T1", "20261102141000", 10_000, "1", "D1"));
    assert_eq!(int(&s.features, F::MINS_SINCE_CERT_REISSUE), 8);
    assert_eq!(int(&s.features, F::FAILED_LOGINS_1H), 3);
}

#[test]
fn one_event_dated_next_century_does_not_expire_the_state() {
    let engine = starter_engine();
    score(&engine, &transfer("T1", "20261102100000", 10_000, "1", "D1"));
    // Accepted (a replay trusts its file), but the expiry clock moves one sweep
    // period (hours) at most, so the account is not swept as idle.
    score(&engine, &transfer_from("OTHER", "BAD", "20991102100000", 10_000, "2", "D2"));
    let s = score(&engine, &transfer("T2", "20261102100500", 10_000, "1", "D1"));
    assert!(!boolean(&s.features, F::PAYEE_FIRST_SEEN), "the account's history was expired");
    assert_eq!(int(&s.features, F::ACCT_COUNT_10M), 1);
}

/// Fraud reports are dated days after their transfers; a replay's last
/// reports come weeks after its last transfer. They must not move the expiry
/// clock, or accounts still active would be swept as idle.
#[test]
fn fraud_reports_do_not_move_the_expiry_clock() {
    let hour = 3_600_000;
    let ttl = fds::state::StateConfig {
        account_ttl_ms: 2 * hour,
        payee_ttl_ms: 2 * hour,
        device_ttl_ms: 2 * hour,
        ..Default::default()
    };
    let engine = Engine::new(ttl, fds::rules::new_handle(RuleSet::load_dir(Path::new("rules")).unwrap()));
    score(&engine, &transfer("T1", "20261102100000", 10_000, "1", "D1"));
    assert_eq!(engine.sweeps(), (0, 0));
    // Each report could move the clock a sweep period (72 s here); 500 of
    // them, dated the next day, would carry it 10 hours on.
    for i in 0..500 {
        apply(&engine, &label(&format!("R{i}"), "20261103100000", "fraud", "777"));
    }
    let s = score(&engine, &transfer("T2", "20261102100500", 10_000, "1", "D1"));
    assert!(!boolean(&s.features, F::PAYEE_FIRST_SEEN), "the account's history was expired");
    assert_eq!(int(&s.features, F::ACCT_COUNT_10M), 1);
    // Transfers still drive it: three hours on, the idle account is gone.
    for i in 0..200 {
        score(&engine, &transfer_from("OTHER", &format!("O{i}"), "20261102133000", 10_000, "2", "D2"));
    }
    let s = score(&engine, &transfer("T3", "20261102133100", 10_000, "1", "D1"));
    assert!(boolean(&s.features, F::PAYEE_FIRST_SEEN), "an account idle past its TTL is swept");
    // What fds_state_sweeps_total and fds_state_expired_total show: the
    // sweeps that ran, and the idle account, payee and device they dropped.
    let (sweeps, expired) = engine.sweeps();
    assert!(sweeps > 0, "sweeps counted");
    assert!(expired >= 3, "the idle account, its payee and device counted as expired: {expired}");
}

#[test]
fn a_live_engine_refuses_events_dated_ahead_of_the_wall_clock() {
    let engine = starter_engine().with_wall_clock_guard(5 * 60_000);
    let err = engine.process(&transfer("BAD", "20991102100000", 10_000, "1", "D1")).unwrap_err();
    assert!(err.to_string().contains("2099-11-02 10:00:00 KST"), "{err}");
    assert_eq!(engine.state().entities(), (0, 0, 0), "a refused event changes nothing");
    assert!(engine.process(&transfer("OK", "20261102100000", 10_000, "1", "D1")).is_ok());
}

#[test]
fn a_withdrawn_report_delivered_again_stays_withdrawn() {
    let engine = starter_engine();
    score(&engine, &transfer_from("A1", "T1", "20261102100000", 300_000, "555", "DA"));
    apply(&engine, &label("T1", "20261103100000", "fraud", "555"));
    apply(&engine, &label("T1", "20261103120000", "cleared", "555"));
    // At-least-once delivery brings the original report once more.
    apply(&engine, &label("T1", "20261103100000", "fraud", "555"));
    let s = score(&engine, &transfer_from("A2", "T2", "20261103130000", 300_000, "555", "DB"));
    assert_eq!(int(&s.features, F::PAYEE_FRAUD_REPORTS), 0);
}

#[test]
fn a_listed_payee_matches_however_its_account_number_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lists")).unwrap();
    std::fs::write(dir.path().join("lists/mule_accounts.txt"), "088-110-123-456789\n").unwrap();
    std::fs::write(
        dir.path().join("mule.toml"),
        "[[rule]]\nid = \"LISTED\"\nlabel = \"l\"\ndescription = \"d\"\nwhen = \"payee in mule_accounts\"\naction = \"hold\"\nverify = \"callback\"\nreason = \"MU002\"\n",
    )
    .unwrap();
    let engine = Engine::with_rules(RuleSet::load_dir(dir.path()).unwrap());
    for (i, written) in ["110123456789", "110-123-456789"].iter().enumerate() {
        let s = score(&engine, &transfer_from("A1", &format!("T{i}"), "20261102100000", 10_000, written, "D1"));
        assert_eq!(s.decision.outcome, Outcome::Hold, "{written}");
    }
}

fn float(fv: &FeatureVector, f: F) -> f64 {
    match fv.feature(f) {
        Value::Float(x) => x,
        other => panic!("{f:?} is {other:?}"),
    }
}

/// Payee risk: incoming transfers by day, reports received in the last 24 h,
/// 7 d and 30 d (a withdrawal removes its report), and the fraud share, which
/// divides by the transfers those reports can name (the last N + 7 days), is
/// capped at 1 and is 0 for a payee with no transfers.
#[test]
fn payee_risk_counts_recent_reports_over_the_transfers_they_can_name() {
    let engine = Engine::with_rules(RuleSet::empty());
    // One transfer a day into "PAY" at noon KST (03:00 UTC, mid-bucket), days 1..=20.
    for day in 1..=20 {
        score(
            &engine,
            &transfer_from(
                &format!("S{day}"),
                &format!("P{day}"),
                &format!("202611{day:02}120000"),
                50_000,
                "PAY",
                "D",
            ),
        );
    }
    apply(&engine, &label("P5", "20261112100000", "fraud", "PAY"));
    apply(&engine, &label("P10", "20261120090000", "fraud", "PAY"));
    apply(&engine, &label("P11", "20261120100000", "fraud", "PAY"));
    apply(&engine, &label("P11", "20261120110000", "cleared", "PAY"));
    let s = score(&engine, &transfer_from("SQ", "PQ", "20261120130000", 50_000, "PAY", "D"));
    let f = &s.features;
    assert_eq!(int(f, F::PAYEE_IN_COUNT_24H), 1);
    assert_eq!(int(f, F::PAYEE_IN_COUNT_7D), 7);
    assert_eq!(int(f, F::PAYEE_IN_COUNT_30D), 20);
    // P10's report is 4 h old; P5's is 8 days old; P11's was withdrawn.
    assert_eq!(int(f, F::PAYEE_REPORTS_24H), 1);
    assert_eq!(int(f, F::PAYEE_REPORTS_7D), 1);
    assert_eq!(int(f, F::PAYEE_REPORTS_30D), 2);
    assert_eq!(int(f, F::PAYEE_FRAUD_REPORTS), 2);
    assert_eq!(int(f, F::MINS_SINCE_PAYEE_REPORT), 240);
    // Denominators: the last 9, 15 and 38 daily buckets (days 12..=20, 6..=20, all 20).
    assert!((float(f, F::PAYEE_FRAUD_SHARE_24H) - 1.0 / 9.0).abs() < 1e-12, "{f:?}");
    assert!((float(f, F::PAYEE_FRAUD_SHARE_7D) - 1.0 / 15.0).abs() < 1e-12);
    assert!((float(f, F::PAYEE_FRAUD_SHARE_30D) - 2.0 / 20.0).abs() < 1e-12);
    // A month later the reports have left every window, the open count stays.
    let later = score(&engine, &transfer_from("SL", "PL", "20261222130000", 50_000, "PAY", "D"));
    for feature in [F::PAYEE_REPORTS_24H, F::PAYEE_REPORTS_7D, F::PAYEE_REPORTS_30D, F::PAYEE_IN_COUNT_30D] {
        assert_eq!(int(&later.features, feature), 0, "{feature:?}");
    }
    assert_eq!(float(&later.features, F::PAYEE_FRAUD_SHARE_30D), 0.0);
    assert_eq!(int(&later.features, F::PAYEE_FRAUD_REPORTS), 2);

    // More reports than transfers (reports on transfers the engine never saw): capped at 1.
    score(&engine, &transfer_from("S1", "Q1", "20261101120000", 50_000, "QUIET", "D"));
    for id in ["Q1", "Q2", "Q3"] {
        apply(&engine, &label(id, "20261102100000", "fraud", "QUIET"));
    }
    let q = score(&engine, &transfer_from("S2", "Q4", "20261103120000", 50_000, "QUIET", "D"));
    assert_eq!(int(&q.features, F::PAYEE_REPORTS_7D), 3);
    assert_eq!(float(&q.features, F::PAYEE_FRAUD_SHARE_7D), 1.0);

    // Reported before any transfer into it: reports count, the share is 0.
    apply(&engine, &label("X1", "20261104100000", "fraud", "FRESH"));
    let x = score(&engine, &transfer_from("S3", "X2", "20261104110000", 50_000, "FRESH", "D"));
    assert_eq!(int(&x.features, F::PAYEE_REPORTS_24H), 1);
    assert_eq!(float(&x.features, F::PAYEE_FRAUD_SHARE_24H), 0.0);
}

/// The sender's amount against its mean over 24 hours and 7 days.
#[test]
fn amount_is_compared_with_the_senders_recent_means() {
    let engine = Engine::with_rules(RuleSet::empty());
    score(&engine, &transfer("M1", "20261101120000", 10_000, "111", "HOME"));
    score(&engine, &transfer("M2", "20261105120000", 30_000, "111", "HOME"));
    score(&engine, &transfer("M3", "20261105130000", 50_000, "111", "HOME"));
    let s = score(&engine, &transfer("M4", "20261105140000", 200_000, "111", "HOME"));
    // 24 h: (30,000 + 50,000) / 2 = 40,000; 7 d: 90,000 / 3 = 30,000.
    assert!((float(&s.features, F::AMOUNT_VS_AVG_24H) - 5.0).abs() < 1e-12);
    assert!((float(&s.features, F::AMOUNT_VS_AVG_7D) - 200_000.0 / 30_000.0).abs() < 1e-12);
    let first = score(&engine, &transfer_from("NEWACCT", "M5", "20261105140000", 200_000, "111", "HOME"));
    assert_eq!(float(&first.features, F::AMOUNT_VS_AVG_24H), 0.0);
}

/// Prefetching is a hint: events prefetched in bursts, before they or any
/// entity they name exist, give the same decisions and the same state as
/// events processed one by one.
#[test]
fn prefetch_changes_nothing() {
    let stream: Vec<Event> = (0..40)
        .map(|i| {
            let acct = format!("1202200000000000000000{:02}", i % 7);
            let time = format!("20260301{:02}{:02}00", 9 + i / 30, (i * 2) % 60);
            let amount = 10_000 * (i as i64 % 5 + 1) * if i % 9 == 0 { 300 } else { 1 };
            transfer_from(&acct, &format!("T{i}"), &time, amount, &format!("9000{}", i % 4), &format!("dev-{}", i % 3))
        })
        .collect();
    let plain = starter_engine();
    let hinted = starter_engine();
    let (mut one_by_one, mut in_bursts) = (Vec::new(), Vec::new());
    for e in &stream {
        one_by_one.push(score(&plain, e).decision.fingerprint());
    }
    for burst in stream.chunks(8) {
        let before = hinted.state().entities();
        hinted.prefetch(burst.iter());
        assert_eq!(hinted.state().entities(), before, "prefetch creates no entity");
        for e in burst {
            in_bursts.push(score(&hinted, e).decision.fingerprint());
        }
    }
    assert_eq!(one_by_one, in_bursts);
    assert_eq!(plain.state().entities(), hinted.state().entities());
    assert!(one_by_one.iter().any(|d| d.contains("\"hold\"")), "the stream has holds too");
}
