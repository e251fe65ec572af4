//! The model in the engine's decisions: it holds beside the rules, names its
//! reasons, and is hot-reloaded (a bad model directory leaves the running model
//! in force). Training and model files themselves are in `tests/model.rs`.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fds::engine::{Engine, HoldSource, Outcome, Scored};
use fds::event::{build, Event};
use fds::features::{Value, F, MINUTES_CAP};
use fds::model::{self, Forest, Model, Scorer, LEAF};
use fds::rules::{RuleSet, Verification};

use support::fds;

fn transfer(id: &str, time: &str, amount: i64, payee: &str) -> Event {
    build::transfer(id).at(time).amount(amount).payee("088", payee).device("D1").ip("10.0.0.1").build()
}

/// One tree: up to 1,000,000 won scores 0.01; above, 0.2 to a known payee
/// and 0.9 to a new one. Held at `threshold`.
fn tiny_model(threshold: f64) -> Model {
    let forest = Forest {
        roots: vec![0],
        feature: vec![F::AMOUNT as u16, LEAF, F::PAYEE_FIRST_SEEN as u16, LEAF, LEAF],
        threshold: vec![1_000_000.0, 0.0, 0.5, 0.0, 0.0],
        left: vec![1, 0, 3, 0, 0],
        right: vec![2, 0, 4, 0, 0],
        value: vec![0.3, 0.01, 0.5, 0.2, 0.9],
    };
    // The shipped card supplies the provenance fields; the test changes what
    // it is about.
    let mut card = Model::load(Path::new("models/default")).expect("the shipped model loads").card().clone();
    card.name = "tiny".into();
    card.threshold.hold = threshold;
    Model::new(Scorer::Forest(forest), card).expect("a consistent model")
}

fn engine_with(rules: RuleSet, model: Model, verification: Verification) -> Engine {
    Engine::with_rules(rules).with_model(model::new_handle(model), verification)
}

fn score(engine: &Engine, e: &Event) -> Scored {
    engine.process(e).expect("accepted").expect("a transfer gets a decision")
}

#[test]
fn a_model_hold_joins_the_decision_with_its_reasons() {
    let engine = engine_with(RuleSet::empty(), tiny_model(0.5), Verification::Ars);

    let small = score(&engine, &transfer("T1", "20261102100000", 50_000, "1"));
    let d = &small.decision;
    assert_eq!(d.outcome, Outcome::Allow);
    let m = d.model.as_ref().expect("the model scored it");
    assert!((m.score - 0.01).abs() < 1e-12 && !m.hold && m.reasons.is_empty());

    let large = score(&engine, &transfer("T2", "20261102100500", 3_000_000, "2"));
    let d = &large.decision;
    assert_eq!(d.outcome, Outcome::Hold);
    assert_eq!(d.verification, Some(Verification::Ars));
    let codes: Vec<&str> = d.reason_codes().collect();
    assert_eq!(codes, ["MODEL_PAYEE_FIRST_SEEN", "MODEL_AMOUNT"], "largest contribution first");
    let json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(json["decision"], "hold");
    assert_eq!(json["model_score"], 0.9);
    assert_eq!(json["model_threshold"], 0.5);
    assert!(json["model_version"].as_str().unwrap().starts_with("tiny-"));
    let reasons = json["reasons"].as_array().unwrap();
    assert_eq!(reasons[0]["code"], "MODEL_PAYEE_FIRST_SEEN");
    assert_eq!(reasons[0]["action"], "model");
    // Saabas path contributions: 0.5 - 0.3 for the amount split, 0.9 - 0.5 for the payee one.
    assert!((reasons[0]["contribution"].as_f64().unwrap() - 0.4).abs() < 1e-9, "{reasons:?}");

    // A model hold does not feed back into the state (the model was trained
    // on replays where only rules held): the payee is learned and no hold is
    // remembered, as if the customer had passed the check.
    let next = score(&engine, &transfer("T3", "20261102101000", 50_000, "2"));
    assert_eq!(next.features.feature(F::MINS_SINCE_HOLD), Value::Int(MINUTES_CAP));
    assert_eq!(next.features.feature(F::PAYEE_FIRST_SEEN), Value::Bool(false));
}

#[test]
fn a_rules_verification_wins_over_the_models_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("big.toml"),
        r#"
[[rule]]
id = "BIG_TO_NEW_PAYEE"
label = "고액 신규 수취인"
description = "Large transfer to a never-seen payee."
when = "amount >= 2000000 and payee_first_seen"
action = "hold"
verify = "callback"
reason = "BG001"
"#,
    )
    .unwrap();
    let rules = RuleSet::load_dir(dir.path()).unwrap();
    let engine = engine_with(rules, tiny_model(0.5), Verification::Delay);
    let d = score(&engine, &transfer("T1", "20261102100000", 3_000_000, "2")).decision;
    assert_eq!(d.verification, Some(Verification::Callback));
    assert_eq!((d.rules_hold, d.held_by()), (Some(Verification::Callback), Some(HoldSource::Both)));
    assert_eq!(d.reason_codes().collect::<Vec<_>>(), ["BG001", "MODEL_PAYEE_FIRST_SEEN", "MODEL_AMOUNT"]);
    // The model alone: its configured verification.
    let d = score(&engine, &transfer("T2", "20261102100500", 1_500_000, "3")).decision;
    assert_eq!((d.outcome, d.verification), (Outcome::Hold, Some(Verification::Delay)));
    assert_eq!((d.rules_hold, d.held_by()), (None, Some(HoldSource::Model)));
    let d = score(&engine, &transfer("T3", "20261102101000", 50_000, "4")).decision;
    assert_eq!((d.outcome, d.held_by()), (Outcome::Allow, None));
    // The rules alone: the model's threshold out of reach.
    let rules = RuleSet::load_dir(dir.path()).unwrap();
    let engine = engine_with(rules, tiny_model(0.95), Verification::Delay);
    let d = score(&engine, &transfer("T4", "20261102100000", 3_000_000, "5")).decision;
    assert_eq!((d.outcome, d.held_by()), (Outcome::Hold, Some(HoldSource::Rules)));
    assert!(!d.model.as_ref().unwrap().hold);
}

#[test]
fn no_model_means_rules_alone_and_a_null_model_version() {
    let engine = Engine::with_rules(RuleSet::empty());
    let d = score(&engine, &transfer("T1", "20261102100000", 30_000_000, "2")).decision;
    assert_eq!(d.outcome, Outcome::Allow);
    let json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
    assert!(json["model_version"].is_null() && json["model_score"].is_null() && json["model_threshold"].is_null());
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_retrained_model_is_swapped_in_and_a_broken_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny");
    tiny_model(0.5).save(&dir).unwrap();
    let handle = model::new_handle(Model::load(&dir).unwrap());
    let engine = Engine::with_rules(RuleSet::empty()).with_model(handle.clone(), Verification::Ars);
    let watcher = model::watch(&dir, handle.clone()).unwrap();
    let threshold = || handle.load().as_deref().map(Model::hold_threshold);

    // A retrained model arrives the way `fds train` writes it: a new
    // directory renamed into place.
    tiny_model(0.95).save(&dir).unwrap();
    wait_for("the new model", || threshold() == Some(0.95));
    let d = score(&engine, &transfer("T1", "20261102100000", 3_000_000, "2")).decision;
    assert_eq!(d.outcome, Outcome::Allow, "0.9 is under the new threshold");

    // The threshold alone moved in the card: also a new model.
    let card = dir.join(model::CARD_FILE);
    let text = std::fs::read_to_string(&card).unwrap().replace("hold = 0.95", "hold = 0.85");
    std::fs::write(&card, text).unwrap();
    wait_for("the new threshold", || threshold() == Some(0.85));

    // A corrupt model file is refused; the running model stays.
    let running = Arc::clone(&handle.load_full().unwrap());
    let rejected = watcher.status().rejected;
    std::fs::write(dir.join(model::MODEL_FILE), "{\"format_version\": 1, \"feat").unwrap();
    wait_for("the rejection", || watcher.status().rejected > rejected);
    let err = watcher.status().last_rejection.unwrap().to_string();
    assert!(err.contains("model.json") && err.contains("corrupt"), "{err}");
    assert!(Arc::ptr_eq(&running, &handle.load_full().unwrap()), "the running model was kept");
    let d = score(&engine, &transfer("T2", "20261102100500", 3_000_000, "3")).decision;
    assert_eq!(d.outcome, Outcome::Hold, "still scored by the running model (0.9 >= 0.85)");
}

#[test]
fn the_demo_scores_with_the_shipped_model_and_a_named_model_must_load() {
    let out = fds(&["demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("model default-"), "{report}");
    assert!(report.lines().any(|l| l.trim_start().starts_with("MODEL ")), "model holds are counted: {report}");

    let out = fds(&["demo", "--no-model"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("model none (rules alone)"));

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = fds(&["demo", "--model", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nowhere") && err.contains("rejected"), "{err}");

    let broken = dir.path().join("broken");
    tiny_model(0.5).save(&broken).unwrap();
    std::fs::write(broken.join(model::MODEL_FILE), "not json").unwrap();
    let out = fds(&["demo", "--model", broken.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.json is corrupt"), "{err}");
}

#[test]
fn a_model_trained_into_place_after_the_start_is_taken_up() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("default");
    let handle: model::ModelHandle = Arc::new(arc_swap::ArcSwapOption::empty());
    let engine = Engine::with_rules(RuleSet::empty()).with_model(handle.clone(), Verification::Ars);
    let watcher = model::watch(&dir, handle.clone()).unwrap();
    assert!(handle.load().is_none() && watcher.status().rejected == 1, "nothing to load yet");
    let d = score(&engine, &transfer("T1", "20261102100000", 3_000_000, "2")).decision;
    assert!(d.model.is_none() && d.outcome == Outcome::Allow);

    tiny_model(0.5).save(&dir).unwrap();
    wait_for("the first model", || handle.load().is_some());
    let d = score(&engine, &transfer("T2", "20261102100500", 3_000_000, "3")).decision;
    assert_eq!(d.outcome, Outcome::Hold);
}
