//! The analysts' workflow, driven through the `fds` command as an analyst
//! runs it: rule tests (`fds rules test`) and the backtest of a rule change
//! (`fds backtest`). Rules and cases are analyst-written files; the streams
//! come from the event builders.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fds::event::build::{label, transfer};
use fds::event::Event;

use support::{fds, printed as text};

/// A hold rule on large transfers to new payees, at `threshold`, and a
/// shadow score rule on any transfer to a new payee at night.
fn rules_dir(dir: &Path, threshold: &str) {
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    std::fs::write(
        dir.join("large.toml"),
        format!(
            r#"[[rule]]
id = "LARGE_NEW_PAYEE"
label = "신규 수취인 고액 이체"
description = "A large transfer to a payee the account never paid."
when = "amount >= {threshold} and payee_first_seen"
action = "hold"
verify = "ars"
reason = "LG001"

[[rule]]
id = "NIGHT_NEW_PAYEE"
label = "심야 신규 수취인"
description = "Any transfer to a new payee at night (shadow, being measured)."
when = "is_night and payee_first_seen"
action = "hold"
verify = "delay"
reason = "NT001"
shadow = true
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.join("lists/mule_accounts.txt"), "# none yet\n").unwrap();
}

#[test]
fn the_shipped_rules_pass_their_tests_and_every_rule_has_a_firing_and_a_near_miss_case() {
    let out = fds(&["rules", "test", "--require-coverage", "rules"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(" 0 failed"), "{}", text(&out));
}

#[test]
fn a_failing_rule_test_exits_1_naming_the_case_line_and_what_fired_instead() {
    let dir = tempfile::tempdir().unwrap();
    rules_dir(dir.path(), "100만");
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    // The second case expects a hold the rule does not make (80만 is under
    // its line); the first passes.
    std::fs::write(
        dir.path().join("tests/large.toml"),
        r#"[[case]]
name = "a million won to a new payee is held"
transfer = { payee = "088-9998887776", amount = "100만" }
expect = "hold"
verify = "ars"
reasons = ["LG001"]
must_fire = ["LARGE_NEW_PAYEE"]

[[case]]
name = "800,000 won to a new payee at night"
time = "2026-11-03 02:00"
transfer = { payee = "088-9998887776", amount = "80만" }
expect = "hold"
must_fire = ["LARGE_NEW_PAYEE"]
"#,
    )
    .unwrap();
    let out = fds(&["rules", "test", dir.path().to_str().unwrap()]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("tests/large.toml:9: FAILED 800,000 won to a new payee at night"), "{printed}");
    assert!(printed.contains("expected hold"), "{printed}");
    assert!(printed.contains("expected to fire: LARGE_NEW_PAYEE"), "{printed}");
    assert!(
        printed.contains("got allow, score 0 of 100; fired NIGHT_NEW_PAYEE (NT001 hold/delay shadow)"),
        "{printed}"
    );
    assert!(printed.contains("2 cases, 1 files") && printed.contains("1 passed, 1 failed"), "{printed}");
    assert!(!printed.contains(":1: FAILED"), "the passing case is not listed: {printed}");

    // The same results for a CI server: a JUnit report with a test per case
    // at its line, and with coverage required a test per rule.
    let junit = dir.path().join("rule-tests.xml");
    let out =
        fds(&["rules", "test", "--require-coverage", "--junit", junit.to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    for expected in [
        r#"<testsuites name="fds rules test" tests="4" failures="3">"#,
        r#"tests="2" failures="1">"#,
        r#"<testcase name="a million won to a new payee is held" "#,
        r#"line="1"/>"#,
        r#"<testcase name="800,000 won to a new payee at night" "#,
        r#"line="9">"#,
        r#"<failure message="expected hold; expected to fire: LARGE_NEW_PAYEE" type="rule test">"#,
        "got allow, score 0 of 100; fired NIGHT_NEW_PAYEE (NT001 hold/delay shadow)</failure>",
        r#"<testsuite name="coverage" tests="2" failures="2">"#,
        r#"<failure message="rule LARGE_NEW_PAYEE has no near miss (case that must not fire it)" type="coverage"/>"#,
        "rule NIGHT_NEW_PAYEE has no case that must fire it and no near miss",
    ] {
        assert!(xml.contains(expected), "{expected} not in\n{xml}");
    }

    // A case file with a mistake is refused with its position, before anything runs.
    std::fs::write(
        dir.path().join("tests/large.toml"),
        "[[case]]\nname = \"typo\"\ntransfer = { amount = \"100만\" }\nexpect = \"hold\"\nmust_fire = [\"LARGE_NEW_PAYE\"]\n",
    )
    .unwrap();
    let out = fds(&["rules", "test", dir.path().to_str().unwrap()]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(
        printed.contains(
            "tests/large.toml:5:14: `must_fire` names no rule `LARGE_NEW_PAYE`; did you mean `LARGE_NEW_PAYEE`?"
        ),
        "{printed}"
    );
}

/// Accounts sending once each, so each transfer's decision depends on its
/// amount alone; the one at 80만 is reported as fraud three days later.
fn stream(path: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, amount) in [30_0000, 60_0000, 80_0000, 120_0000, 10_0000].into_iter().enumerate() {
        let account = format!("12022000000000000000{:04}", i + 1);
        let at = format!("2026110214{:02}00", 10 + i);
        events.push(transfer(&format!("T{}", i + 1)).account(&account).at(&at).amount(amount).build());
    }
    // A known payee: paid a week earlier, so not a new one now.
    events.insert(0, transfer("T0").account("120220000000000000009999").at("20261026100000").amount(1_0000).build());
    events.push(transfer("T6").account("120220000000000000009999").at("20261102143000").amount(90_0000).build());
    events.push(label("T3").at("20261105100000").typology("voice_phishing").build());
    let lines: Vec<String> = events.iter().map(Event::to_json).collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    events
}

fn changes(path: &Path) -> BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["bank_tran_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[test]
fn a_backtest_of_a_tightened_threshold_changes_exactly_the_transfers_between_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, candidate) = (dir.path().join("rules"), dir.path().join("draft"));
    rules_dir(&baseline, "100만");
    rules_dir(&candidate, "50만");
    let data = dir.path().join("stream.jsonl");
    stream(&data);
    let out_file = dir.path().join("changes.jsonl");
    let out = fds(&[
        "backtest",
        "--no-model",
        "--baseline",
        baseline.to_str().unwrap(),
        "--candidate",
        candidate.to_str().unwrap(),
        "--changes-out",
        out_file.to_str().unwrap(),
        "--json",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // 60만 and 80만 to new payees are now held; 30만 and 10만 are under both
    // lines, 120만 over both, and 90만 goes to a payee the account knows.
    let changed = changes(&out_file);
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["T2", "T3"], "{changed:?}");
    for c in changed.values() {
        assert_eq!(c["direction"], "allow_to_hold");
        assert_eq!(c["baseline"]["decision"], "allow");
        assert_eq!(c["candidate"]["decision"], "hold");
        assert_eq!(c["candidate"]["verification"], "ars");
        assert_eq!(c["candidate"]["reasons"], serde_json::json!(["LG001"]));
    }
    assert_eq!(changed["T3"]["fraud"], "voice_phishing");
    assert_eq!(changed["T2"]["fraud"], serde_json::Value::Null);

    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (b, c) = (&report["baseline"], &report["candidate"]);
    assert_eq!((b["hold"].as_u64(), c["hold"].as_u64()), (Some(1), Some(3)), "{report:#}");
    assert_eq!(b["quality"]["held_fraud"], 0);
    assert_eq!(c["quality"]["held_fraud"], 1);
    assert_eq!(c["quality"]["saved_won"], 80_0000);
    assert_eq!(c["quality"]["held_genuine_won"], 180_0000);
    assert_ne!(b["ruleset_version"], c["ruleset_version"]);
    assert_eq!(report["changed"][0][1]["transfers"], 2);
    assert_eq!(report["changed"][0][1]["fraud"], 1);
    assert_eq!(report["changed"][1][1]["transfers"], 0);

    // The text report shows the two sides and the changed transfers.
    let out = fds(&[
        "backtest",
        "--no-model",
        "--baseline",
        baseline.to_str().unwrap(),
        "--candidate",
        candidate.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    let printed = text(&out);
    assert!(printed.contains("changed decisions: 2"), "{printed}");
    assert!(printed.contains("T3 2026-11-02 14:12:00"), "{printed}");
    assert!(printed.contains("allow [] -> hold/ars [LG001]"), "{printed}");
}

#[test]
fn promoting_a_shadow_rule_shows_what_it_would_have_held() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    rules_dir(&rules, "100만");
    let data = dir.path().join("stream.jsonl");
    stream(&data);
    // Two night transfers to new payees: the shadow rule would hold them.
    let mut night = std::fs::read_to_string(&data).unwrap();
    for (id, account) in [("N1", "120220000000000000000501"), ("N2", "120220000000000000000502")] {
        night.push_str(&transfer(id).account(account).at("20261103013000").amount(5_0000).json());
        night.push('\n');
    }
    std::fs::write(&data, night).unwrap();
    let out_file = dir.path().join("changes.jsonl");
    let args = ["backtest", "--no-model", "--baseline", rules.to_str().unwrap(), "--promote", "NIGHT_NEW_PAYEE"];
    let out = fds(&[&args[..], &["--changes-out", out_file.to_str().unwrap(), data.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("promoted from shadow to live: NIGHT_NEW_PAYEE"), "{}", text(&out));
    let changed = changes(&out_file);
    assert_eq!(changed.keys().collect::<Vec<_>>(), ["N1", "N2"]);
    assert_eq!(changed["N1"]["candidate"]["verification"], "delay");

    // A rule that is not there, or already live, cannot be promoted.
    let out = fds(&["backtest", "--no-model", "--baseline", rules.to_str().unwrap(), "--promote", "NIGHT_NEW_PAYE"]
        .iter()
        .chain(&[data.to_str().unwrap()])
        .copied()
        .collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(text(&out).contains("did you mean `NIGHT_NEW_PAYEE`?"), "{}", text(&out));
    let out = fds(&[
        "backtest",
        "--no-model",
        "--promote",
        "LARGE_NEW_PAYEE",
        "--baseline",
        rules.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(text(&out).contains("rule `LARGE_NEW_PAYEE` is already live"), "{}", text(&out));
}

#[test]
fn a_reload_logs_the_rules_added_removed_and_changed_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    rules_dir(&rules, "100만");
    // Four seconds of transfers, replayed at the recorded pace: rules edited
    // meanwhile are reloaded as `fds run` reloads them.
    let data = dir.path().join("stream.jsonl");
    let lines: String =
        (0..8).map(|i| transfer(&format!("P{i}")).at(&format!("202611021400{:02}", i / 2)).json() + "\n").collect();
    std::fs::write(&data, lines).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_fds"))
        .args(["replay", "--no-model", "--pace", "1", "--rules", rules.to_str().unwrap(), data.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The edits are made once the replay watches the directory (it says so),
    // however long a busy host takes to start it.
    let (watching, watched) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(run.stderr.take().unwrap());
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufRead::lines(stderr) {
            let line = line.unwrap();
            if line.contains("watching for changes") {
                let _ = watching.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    assert!(watched.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), "the replay never watched the rules");
    // The threshold tightened (changed), the shadow rule deleted (removed), a
    // new rule file (added).
    rules_dir(&rules, "50만");
    let large = std::fs::read_to_string(rules.join("large.toml")).unwrap();
    let live_only = &large[..large.find("\n[[rule]]\nid = \"NIGHT_NEW_PAYEE\"").unwrap()];
    std::fs::write(rules.join("large.toml"), live_only).unwrap();
    std::fs::write(
        rules.join("device.toml"),
        "[[rule]]\nid = \"BLOCKED_DEVICE\"\nlabel = \"차단 기기\"\ndescription = \"d\"\nwhen = \"device in blocked_devices\"\n\
         action = \"hold\"\nverify = \"callback\"\nreason = \"DV001\"\n",
    )
    .unwrap();
    std::fs::write(rules.join("lists/blocked_devices.txt"), "PHONE-STOLEN-7\n").unwrap();
    let out = run.wait_with_output().unwrap();
    let log = log.join().unwrap();
    let printed = format!("{}{log}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{printed}");
    // The log's reload lines (the edits may land in one reload or several).
    let reloads: Vec<&str> = log.lines().filter(|l| l.contains("rules reloaded")).collect();
    assert!(!reloads.is_empty(), "{printed}");
    let all = reloads.join("\n");
    eprintln!("{all}");
    for named in [
        "added [BLOCKED_DEVICE]",
        "removed [NIGHT_NEW_PAYEE]",
        "changed [LARGE_NEW_PAYEE]",
        "blocked_devices 0 -> 1 entries",
    ] {
        assert!(all.contains(named), "{named} not in\n{all}");
    }
}

#[test]
fn each_side_of_a_backtest_decides_exactly_as_a_replay_of_its_rules_alone() {
    // The demo stream through the shipped rules and a draft that lowers
    // MULE_FAN_IN's amount: each side's decisions digest is the one `fds
    // replay` gives for that rule set, so the sides do not share state.
    let dir = tempfile::tempdir().unwrap();
    let draft = dir.path().join("draft");
    std::fs::create_dir_all(draft.join("lists")).unwrap();
    for entry in std::fs::read_dir("rules").unwrap().chain(std::fs::read_dir("rules/lists").unwrap()) {
        let path = entry.unwrap().path();
        if path.is_file() {
            let rel = path.strip_prefix("rules").unwrap();
            std::fs::copy(&path, draft.join(rel)).unwrap();
        }
    }
    let mule = std::fs::read_to_string(draft.join("mule.toml")).unwrap();
    let lowered = mule.replace("not purpose_payment and amount >= 30만\"", "not purpose_payment and amount >= 10만\"");
    assert_ne!(lowered, mule, "the draft changes a rule");
    std::fs::write(draft.join("mule.toml"), lowered).unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = fds(args);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let demo = "replay-data/demo.jsonl.gz";
    let draft = draft.to_str().unwrap();
    let report = json(&["backtest", "--json", "--warmup-days", "2", "--candidate", draft, demo]);
    let baseline = json(&["replay", "--json", "--warmup-days", "2", demo]);
    let candidate = json(&["replay", "--json", "--warmup-days", "2", "--rules", draft, demo]);
    assert_eq!(report["baseline"]["decisions_digest"], baseline["decisions_digest"]);
    assert_eq!(report["candidate"]["decisions_digest"], candidate["decisions_digest"]);
    assert_ne!(baseline["decisions_digest"], candidate["decisions_digest"]);
    assert_eq!(report["baseline"]["hold"], baseline["hold"]);
    assert_eq!(report["candidate"]["quality"], candidate["quality"]);
    assert_eq!(report["rule_changes"]["changed"], serde_json::json!(["MULE_FAN_IN"]));
}
