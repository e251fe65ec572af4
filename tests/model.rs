//! The trained model end to end: `fds train` on generated Korean traffic,
//! `fds model show`, what loading refuses, bad training input, point-in-time
//! rows, and the handbook protocol's splits.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use fds::engine::Engine;
use fds::event::{build, Event, EventTime, LabelStatus};
use fds::features::{FeatureVector, F, N_FEATURES, SCHEMA};
use fds::input::{self, Format};
use fds::model::dataset::{self, Selection};
use fds::model::{Model, ModelError, CARD_FILE, MODEL_FILE};
use fds::rules::RuleSet;

use support::fds;

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Five days of generated traffic for 8,000 accounts, written by `fds generate`.
fn generated(dir: &Path) -> PathBuf {
    let path = dir.join("generated.jsonl.gz");
    let p = path.to_str().unwrap();
    ok(&fds(&["generate", "--accounts", "8000", "--days", "5", "--seed", "11", "--out", p]));
    path
}

fn train(data: &Path, out: &Path, algorithm: &str) -> Output {
    fds(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--algorithm",
        algorithm,
        "--warmup-days",
        "1",
    ])
}

#[test]
fn train_writes_a_model_with_its_card_that_loads_scores_and_explains() {
    let dir = tempfile::tempdir().unwrap();
    let data = generated(dir.path());
    for algorithm in ["forest", "logistic"] {
        let out = dir.path().join("models").join(algorithm);
        let printed = ok(&train(&data, &out, algorithm));
        assert!(printed.contains(&format!("({algorithm})")), "{printed}");

        let model = Model::load(&out).unwrap();
        let card = model.card();
        assert_eq!(card.algorithm, algorithm);
        assert_eq!(card.features.len(), N_FEATURES);
        assert_eq!(card.training.files.len(), 1);
        assert_eq!(card.training.files[0].sha256.len(), 64);
        assert!(card.training.frauds > 0 && card.training.rows > card.training.frauds);
        assert!(card.training.warmup_transfers > 0, "the first day only built state");
        // A ranking far better than chance on transfers after the ones it learned from.
        assert!(card.validation.auc_roc > 0.8, "{algorithm}: {:?}", card.validation);
        let t = model.hold_threshold();
        assert!(t > 0.0 && t < 1.0);

        // The signature of voice phishing scores above an ordinary transfer,
        // and the model names what raised it.
        let ordinary = FeatureVector::zeroed().with(&[
            (F::AMOUNT, fds::features::Value::Int(30_000)),
            (F::ACCT_LIFETIME_COUNT, fds::features::Value::Int(40)),
            (F::ACCT_KNOWN_PAYEES, fds::features::Value::Int(6)),
            (F::AMOUNT_VS_AVG_30D, fds::features::Value::Float(0.9)),
            (F::AMOUNT_VS_MAX, fds::features::Value::Float(0.5)),
            (F::MINS_SINCE_CERT_REISSUE, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_REMOTE_APP, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_PHONE_CHANGE, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_DEVICE_REGISTERED, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::DEVICE_AGE_MIN, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::PAYEE_AGE_MIN, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_HOLD, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_PAYEE_REPORT, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_LIMIT_RAISED, fds::features::Value::Int(fds::features::MINUTES_CAP)),
            (F::MINS_SINCE_EKYC, fds::features::Value::Int(fds::features::MINUTES_CAP)),
        ]);
        let phishing = ordinary.with(&[
            (F::AMOUNT, fds::features::Value::Int(9_000_000)),
            (F::AMOUNT_VS_AVG_30D, fds::features::Value::Float(60.0)),
            (F::AMOUNT_VS_MAX, fds::features::Value::Float(12.0)),
            (F::AMOUNT_LOG_ZSCORE, fds::features::Value::Float(6.0)),
            (F::PAYEE_FIRST_SEEN, fds::features::Value::Bool(true)),
            (F::MINS_SINCE_CERT_REISSUE, fds::features::Value::Int(20)),
            (F::MINS_SINCE_REMOTE_APP, fds::features::Value::Int(15)),
            (F::DEVICE_AGE_MIN, fds::features::Value::Int(0)),
            (F::PAYEE_AGE_MIN, fds::features::Value::Int(0)),
        ]);
        let (low, high) = (model.score(&ordinary), model.score(&phishing));
        assert!((0.0..=1.0).contains(&low) && (0.0..=1.0).contains(&high));
        assert!(high > low, "{algorithm}: phishing {high} vs ordinary {low}");
        let reasons = model.explain(&phishing, 3);
        assert!(!reasons.is_empty() && reasons.len() <= 3);
        assert!(reasons.windows(2).all(|w| w[0].value >= w[1].value));
        assert!(model.reason_code(reasons[0].feature).starts_with("MODEL_"));

        let shown = ok(&fds(&["model", "show", out.to_str().unwrap()]));
        for needle in ["hold threshold", "validation", "amount_vs_avg_30d", &card.model_sha256, "training data"] {
            assert!(shown.contains(needle), "`{needle}` missing from:\n{shown}");
        }
    }
}

/// A logistic model directory written by `fds train`.
fn saved_model(dir: &Path) -> PathBuf {
    let data = generated(dir);
    let out = dir.join("m");
    ok(&train(&data, &out, "logistic"));
    out
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn load_refuses_corrupt_files_other_versions_other_features_and_a_card_for_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let good = saved_model(dir.path());
    let copy = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in [MODEL_FILE, CARD_FILE] {
            std::fs::copy(good.join(f), d.join(f)).unwrap();
        }
        d
    };

    let d = copy("truncated");
    let text = std::fs::read_to_string(d.join(MODEL_FILE)).unwrap();
    std::fs::write(d.join(MODEL_FILE), &text[..text.len() / 2]).unwrap();
    let e = Model::load(&d).unwrap_err();
    assert!(matches!(e, ModelError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("truncated/model.json"), "{e}");

    let d = copy("version");
    edit_json(&d.join(MODEL_FILE), |v| v["format_version"] = 99.into());
    let e = Model::load(&d).unwrap_err();
    assert!(matches!(e, ModelError::UnsupportedVersion { found: 99, .. }), "{e}");

    let d = copy("features");
    edit_json(&d.join(MODEL_FILE), |v| v["features"].as_array_mut().unwrap().swap(0, 1));
    let e = Model::load(&d).unwrap_err();
    assert!(matches!(e, ModelError::FeatureMismatch { .. }), "{e}");
    assert!(e.to_string().contains(&format!("feature 0 is `{}`", SCHEMA[1].name)), "{e}");

    let d = copy("short");
    edit_json(&d.join(MODEL_FILE), |v| {
        v["features"].as_array_mut().unwrap().pop();
    });
    assert!(matches!(Model::load(&d).unwrap_err(), ModelError::FeatureMismatch { .. }));

    let d = copy("weights");
    edit_json(&d.join(MODEL_FILE), |v| {
        v["weights"].as_array_mut().unwrap().pop();
    });
    let e = Model::load(&d).unwrap_err();
    assert!(matches!(e, ModelError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains(&format!("weights has {} entries", N_FEATURES - 1)), "{e}");

    // Change one weight, keep the card: the card no longer names this model.
    let d = copy("tampered");
    edit_json(&d.join(MODEL_FILE), |v| v["intercept"] = 3.5.into());
    let e = Model::load(&d).unwrap_err();
    assert!(matches!(e, ModelError::CardMismatch { .. }), "{e}");

    let d = copy("nocard");
    std::fs::remove_file(d.join(CARD_FILE)).unwrap();
    assert!(matches!(Model::load(&d).unwrap_err(), ModelError::Read { .. }));

    // Through the CLI, the same refusal names the file.
    let out = fds(&["model", "show", dir.path().join("version").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("format_version 99"));
    // And the untouched directory still loads.
    Model::load(&good).unwrap();
}

#[test]
fn data_without_fraud_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = generated(dir.path());
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&data).unwrap()).read_to_string(&mut s).unwrap();
        s
    };
    // No labels at all.
    let unlabelled = dir.path().join("unlabelled.jsonl");
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains(r#""type":"label""#)).collect();
    std::fs::write(&unlabelled, lines.join("\n")).unwrap();
    let out_dir = dir.path().join("models/none");
    let out = train(&unlabelled, &out_dir, "forest");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no labels") && err.contains("nothing written"), "{err}");
    assert!(!out_dir.exists());

    // Labels, but every report withdrawn: one class.
    let cleared = dir.path().join("cleared.jsonl");
    std::fs::write(&cleared, text.replace(r#""status":"fraud""#, r#""status":"cleared""#)).unwrap();
    let out_dir = dir.path().join("models/cleared");
    let out = train(&cleared, &out_dir, "logistic");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only one class"), "{err}");
    assert!(!out_dir.exists());
    // Not even a staging directory is left behind.
    assert!(std::fs::read_dir(dir.path().join("models")).map_or(true, |mut d| d.next().is_none()));
}

fn transfer(id: &str, time: EventTime, payee: &str) -> Event {
    build::transfer(id).account(&format!("ACC{id}")).at_time(time).amount(100_000).payee("088", payee).build()
}

fn label(id: &str, time: EventTime, payee: &str, status: LabelStatus) -> Event {
    let report = build::label(id).at_time(time).payee("088", payee);
    match status {
        LabelStatus::Fraud => report.build(),
        LabelStatus::Cleared => report.cleared().build(),
    }
}

/// Rows are what the engine saw at the time: a transfer to a payee reported
/// later carries no report; the same payee after the report carries it. The
/// row's label is the stream's final word (a withdrawn report is genuine).
#[test]
fn rows_are_point_in_time_and_labels_are_the_latest_word() {
    let t0 = EventTime::parse_kst("20261102100000").unwrap();
    let h = |n: i64| EventTime(t0.millis() + n * 3_600_000);
    let events = [
        transfer("T1", h(0), "111"),
        transfer("T2", h(1), "111"),
        label("T1", h(24), "111", LabelStatus::Fraud),
        transfer("T3", h(25), "111"),
        transfer("T4", h(26), "222"),
        label("T4", h(27), "222", LabelStatus::Fraud),
        label("T4", h(28), "222", LabelStatus::Cleared),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    for e in &events {
        writeln!(f, "{}", e.to_json()).unwrap();
    }
    drop(f);
    let engine = Engine::with_rules(RuleSet::load_dir(Path::new("rules")).unwrap());
    let source = input::open(&path, Format::Auto).unwrap();
    let data = dataset::collect(&engine, vec![source], Selection::default()).unwrap();
    let reports: Vec<f64> = data.rows.iter().map(|r| r.features[F::PAYEE_FRAUD_REPORTS as usize]).collect();
    assert_eq!(reports, [0.0, 0.0, 1.0, 0.0]);
    assert_eq!(data.targets(), [true, false, false, false]);
}

/// The handbook protocol's splits reproduce the handbook's counts (train
/// 67,240 transactions with 598 frauds, test 58,264 with 385), less the rows
/// with a 0.00 amount that are not transfers; and the models beat chance by far.
#[test]
fn handbook_protocol_reproduces_the_handbooks_splits() {
    let Some(path) = support::handbook_data() else { return };
    let out = fds(&[
        "evaluate",
        "--data",
        path.to_str().unwrap(),
        "--algorithm",
        "logistic",
        "--scores-out",
        std::env::temp_dir().join(format!("fds-scores-{}.csv", std::process::id())).to_str().unwrap(),
    ]);
    let text = ok(&out);
    let (train_rows, train_frauds) = two_numbers_after(&text, "2018-07-31 (");
    let (test_rows, test_frauds) = two_numbers_after(&text, "2018-08-14 (");
    assert!((67_230..=67_240).contains(&train_rows), "{text}");
    assert_eq!(train_frauds, 598, "{text}");
    assert!((58_254..=58_264).contains(&test_rows), "{text}");
    assert_eq!(test_frauds, 385, "{text}");
    assert!(first_auc(&text) > 0.8, "{text}");
    let scores =
        std::fs::read_to_string(std::env::temp_dir().join(format!("fds-scores-{}.csv", std::process::id()))).unwrap();
    assert_eq!(scores.lines().next(), Some("transaction_id,score"));
    assert_eq!(scores.lines().count() as u64, test_rows + 1);
    assert!(!scores.contains("HB"));
}

/// The shipped model loads against this build's feature schema (a schema
/// change must come with a retrained `models/default`), and scores the way its
/// card says it was trained: the same data retrains to the same model file.
#[test]
fn the_shipped_default_model_loads_and_retrains_identically() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default");
    let model = Model::load(&shipped).unwrap();
    assert_eq!(model.card().name, "default");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("default");
    // Trained on ten days before the demo, from another seed, so the demo
    // replay is out of sample for it (the commands in models/README.md).
    let data = dir.path().join("train-seed11.jsonl.gz");
    let data = data.to_str().unwrap();
    let generate = ["generate", "--accounts", "30000", "--days", "10", "--seed", "11", "--start", "2026-10-16"];
    ok(&fds(&[&generate[..], &["--out", data]].concat()));
    ok(&fds(&["train", "--data", data, "--out", out.to_str().unwrap(), "--warmup-days", "2"]));
    assert_eq!(
        std::fs::read(out.join(MODEL_FILE)).unwrap(),
        std::fs::read(shipped.join(MODEL_FILE)).unwrap(),
        "models/default is stale: retrain it with the command in models/README.md"
    );
    // The drift reference (`fds_model_score_psi`) is the one training writes.
    let retrained = Model::load(&out).unwrap();
    assert!(model.card().score_reference.is_some(), "the shipped card has a score reference");
    assert_eq!(retrained.card().score_reference, model.card().score_reference);
    assert_eq!(retrained.card().threshold, model.card().threshold);
}

/// `fds evaluate` on a generated Korean stream: train on earlier days, test on
/// later ones, per typology. Training learns only the reports received before
/// the test span (counted here independently from the file), the test span is
/// judged by the stream's final word, and the ranking beats chance by far.
#[test]
fn evaluate_on_generated_traffic_splits_by_time_and_reports_each_typology() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("g.jsonl.gz");
    ok(&fds(&["generate", "--accounts", "4000", "--days", "12", "--seed", "5", "--out", data.to_str().unwrap()]));
    let text = ok(&fds(&[
        "evaluate",
        "--data",
        data.to_str().unwrap(),
        "--train-days",
        "4",
        "--gap-days",
        "3",
        "--test-days",
        "3",
        "--top-k",
        "10",
        "--algorithm",
        "forest",
    ]));
    // The data starts 2026-11-02; two days only build state.
    assert!(text.contains("train 2026-11-04 .. 2026-11-07 ("), "{text}");
    assert!(text.contains("test 2026-11-11 .. 2026-11-13 ("), "{text}");
    assert!(text.contains("reports received before 2026-11-11"), "{text}");

    // Independently: transfers per span, and their labels as known at the
    // test start (latest word before it) and in the end.
    let mut raw = String::new();
    {
        use std::io::Read;
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&data).unwrap()).read_to_string(&mut raw).unwrap();
    }
    let mut span: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    let (mut known, mut last) = (std::collections::HashMap::new(), std::collections::HashMap::new());
    for line in raw.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["type"].as_str().unwrap() {
            "transfer" => {
                let day = &v["tran_dtime"].as_str().unwrap()[..8];
                let part = if ("20261104"..="20261107").contains(&day) {
                    "train"
                } else if ("20261111"..="20261113").contains(&day) {
                    "test"
                } else {
                    continue;
                };
                span.insert(v["bank_tran_id"].as_str().unwrap().to_owned(), part);
            }
            "label" => {
                let id = v["bank_tran_id"].as_str().unwrap().to_owned();
                let fraud = v["status"] == "fraud";
                if v["report_dtime"].as_str().unwrap() < "20261111000000" {
                    known.insert(id.clone(), fraud);
                }
                last.insert(id, fraud);
            }
            _ => {}
        }
    }
    let frauds = |labels: &std::collections::HashMap<String, bool>, part: &str| {
        span.iter().filter(|(id, p)| **p == part && labels.get(*id) == Some(&true)).count() as u64
    };
    let (train_rows, train_frauds) = two_numbers_after(&text, "2026-11-07 (");
    let (test_rows, test_frauds) = two_numbers_after(&text, "2026-11-13 (");
    assert_eq!(train_rows, span.values().filter(|p| **p == "train").count() as u64);
    assert_eq!(test_rows, span.values().filter(|p| **p == "test").count() as u64);
    assert_eq!(train_frauds, frauds(&known, "train"), "training learns only reports received before the test");
    assert!(train_frauds < frauds(&last, "train"), "some training-span reports arrive later: the check can tell");
    assert_eq!(test_frauds, frauds(&last, "test"));

    assert!(first_auc(&text) > 0.8, "{text}");
    assert!(text.contains("card precision@10 "), "{text}");
    // One row per typology in the test span; their frauds add up to the test's.
    let table = &text[text.find("by typology").expect("a typology table")..];
    let rows: Vec<(&str, u64)> = table
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap(), w.next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), test_frauds, "{table}");
    for typology in ["voice_phishing", "account_takeover", "mule_fan_in"] {
        assert!(rows.iter().any(|r| r.0 == typology), "{typology} missing from:\n{table}");
    }
    assert!(!text.contains("handbook best"), "no handbook comparison on other data");
}

/// The first two numbers after `after` in the report line that holds it, as
/// in "2018-07-31 (67238 transactions, 598 frauds)".
fn two_numbers_after(report: &str, after: &str) -> (u64, u64) {
    let line = report.lines().find(|l| l.contains(after)).unwrap_or_else(|| panic!("no {after:?} in {report}"));
    let rest = &line[line.find(after).unwrap() + after.len()..];
    let nums: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(2)
        .map(|w| w.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

/// The first model's AUC ROC in an `fds evaluate` report.
fn first_auc(report: &str) -> f64 {
    report
        .lines()
        .find(|l| l.starts_with("AUC ROC"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no AUC ROC line in {report}"))
}
