//! Integration tests of the rules module: loading a directory (every error
//! kind, with exact positions), evaluation semantics, versions and hot reload.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use fds::event::EventTime;
use fds::features::{FeatureVector, Value, F};
use fds::rules::{
    new_handle, reload_now, watch_with, Action, Keys, Problem, RuleSet, RulesError, Verification, WatchOptions,
};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

/// Write files (relative paths, `lists/` created as needed) into a new
/// temporary rules directory.
fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

/// Write as careful editors save: a hidden temporary file renamed into
/// place, so a watcher never sees a truncated intermediate state.
fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    let parent = path.parent().expect("parent");
    fs::create_dir_all(parent).expect("mkdir");
    let file_name = path.file_name().expect("file name").to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{file_name}.tmp"));
    fs::write(&tmp, text).expect("write");
    fs::rename(&tmp, &path).expect("rename");
}

/// Load a directory that must be invalid and return its problems.
fn problems(files: &[(&str, &str)]) -> (TempDir, Vec<Problem>) {
    let dir = dir_with(files);
    match RuleSet::load_dir(dir.path()) {
        Ok(set) => panic!("expected problems, loaded {} rules", set.rules().len()),
        Err(RulesError::Invalid { problems }) => (dir, problems),
        Err(other) => panic!("expected Invalid, got {other}"),
    }
}

/// The single problem of a one-file directory `r.toml` (plus extra files).
fn only_problem(rule_file: &str, extra: &[(&str, &str)]) -> Problem {
    let mut files = vec![("r.toml", rule_file)];
    files.extend_from_slice(extra);
    let (_dir, mut ps) = problems(&files);
    assert_eq!(ps.len(), 1, "expected one problem, got:\n{}", show(&ps));
    ps.remove(0)
}

fn show(ps: &[Problem]) -> String {
    ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")
}

fn at(p: &Problem) -> (usize, usize) {
    (p.line, p.column)
}

fn assert_mentions(p: &Problem, needle: &str) {
    assert!(p.message.contains(needle), "{p}\n  does not mention {needle:?}");
}

/// A rule whose `when` string sits on line 5 with its text starting at
/// column 9 (`when = "` is 8 characters), so an error at offset `k` of an
/// ASCII condition is at 5:(9 + k).
fn rule(id: &str, when: &str, action: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\nlabel = \"라벨: 테스트 규칙\"\ndescription = \"A test rule.\"\nwhen = \"{when}\"\n{action}\nreason = \"R_{id}\"\n"
    )
}

const HOLD: &str = "action = \"hold\"\nverify = \"ars\"";
const SCORE_10: &str = "action = \"score\"\nscore = 10";

fn hold(v: &str) -> String {
    format!("action = \"hold\"\nverify = \"{v}\"")
}

fn score(points: i32) -> String {
    format!("action = \"score\"\nscore = {points}")
}

/// A vector of zeros and falses, with some features set.
fn features(set: &[(F, Value)]) -> FeatureVector {
    FeatureVector::zeroed().with(set)
}

fn keys() -> Keys<'static> {
    Keys { account: "120220000000000000000001", payee: "088-110123456789", device: Some("D1"), ip: Some("10.0.0.1") }
}

fn load(files: &[(&str, &str)]) -> RuleSet {
    RuleSet::from_files(files).unwrap_or_else(|e| panic!("rules should load:\n{e}"))
}

fn fired_ids(set: &RuleSet, idx: &[u16]) -> Vec<String> {
    idx.iter().map(|&i| set.rules()[usize::from(i)].id().to_string()).collect()
}

/// Poll `cond` every 20 ms for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

fn fast() -> WatchOptions {
    WatchOptions { debounce: Duration::from_millis(50) }
}

// ---------------------------------------------------------------- a valid directory

const VOICE_PHISHING: &str = r#"# Voice-phishing rules (보이스피싱).

[[rule]]
id = "VP_CERT_NEW_DEVICE_FIRST_LARGE"
label = "보이스피싱 의심: 인증서 재발급 직후 신규 수취인 고액이체"
description = "Certificate re-issued on a device new to the account, then a first large transfer to a never-seen payee."
when = "mins_since_cert_reissue <= 30 and device_age_min <= 60 and payee_first_seen and amount >= 1_000_000"
action = "hold"
verify = "callback"
reason = "VP001"

[[rule]]
id = "VP_REMOTE_APP"
label = "원격제어 앱 탐지 후 이체"
description = "A remote-control app was seen on the device shortly before the transfer."
when = '''
    mins_since_remote_app <= 60
    and amount >= 50만
'''
action = "score"
score = 60
reason = "VP002"
shadow = true
"#;

#[test]
fn a_valid_directory_loads_with_its_metadata() {
    let dir = dir_with(&[
        ("vp.toml", VOICE_PHISHING),
        ("ruleset.toml", "hold_score = 80\nscore_verify = \"delay\"\n"),
        ("lists/mule_accounts.txt", "088-110123456789\n"),
        ("README.md", "ignored: not a rule file"),
    ]);
    let set = RuleSet::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.rules().len(), 2);
    let r = &set.rules()[0];
    assert_eq!(r.id(), "VP_CERT_NEW_DEVICE_FIRST_LARGE");
    assert_eq!(r.label(), "보이스피싱 의심: 인증서 재발급 직후 신규 수취인 고액이체");
    assert!(r.description().starts_with("Certificate re-issued"));
    assert_eq!(r.reason(), "VP001");
    assert_eq!(r.action(), Action::Hold(Verification::Callback));
    assert!(!r.shadow());
    assert_eq!(r.source(), dir.path().join("vp.toml"));
    assert_eq!(r.line(), 3);
    let r = &set.rules()[1];
    assert_eq!((r.action(), r.shadow(), r.line()), (Action::Score(60), true, 12));
    assert_eq!(set.settings().hold_score, 80);
    assert_eq!(set.settings().score_verify, Verification::Delay);
    assert_eq!(set.lists().collect::<Vec<_>>(), vec![("mule_accounts", 1)]);
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    match RuleSet::load_dir(&missing) {
        Err(RulesError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io, got {other:?}"),
    }
}

// ---------------------------------------------------------------- every error kind

#[test]
fn toml_syntax_error_points_at_the_bad_spot() {
    let file = "[[rule]]\nid = \"A\"\nlabel = \"x\"\nscore = = 3\n";
    let p = only_problem(file, &[]);
    assert_eq!(at(&p), (4, 9), "{p}");
    assert!(p.path.ends_with("r.toml"));
    let file = "[[rule]]\nid = \"A\nlabel = \"x\"\n";
    let p = only_problem(file, &[]);
    assert_eq!(p.line, 2, "{p}");
}

#[test]
fn unknown_key_in_a_rule_suggests_the_right_one() {
    let file = rule("A", "amount > 1", HOLD).replace("reason =", "reasn =");
    let (_dir, ps) = problems(&[("r.toml", &file)]);
    assert_eq!(ps.len(), 2, "{}", show(&ps));
    // Missing `reason` at the [[rule]] header, then the unknown key itself.
    assert_eq!(at(&ps[0]), (1, 1));
    assert_mentions(&ps[0], "rule `A` is missing `reason`");
    assert_eq!(at(&ps[1]), (8, 1));
    assert_mentions(&ps[1], "unknown key `reasn` in a rule; did you mean `reason`?");
}

#[test]
fn unknown_top_level_key_is_reported() {
    let file = format!("version = 2\n{}", rule("A", "amount > 1", HOLD));
    let p = only_problem(&file, &[]);
    assert_eq!(at(&p), (1, 1));
    assert_mentions(&p, "unknown key `version`");
}

#[test]
fn missing_key_points_at_the_rule_header() {
    let file = format!(
        "# header comment\n\n{}",
        rule("A", "amount > 1", HOLD).replace("description = \"A test rule.\"\n", "")
    );
    let p = only_problem(&file, &[]);
    assert_eq!(at(&p), (3, 1));
    assert_mentions(&p, "rule `A` is missing `description`");
}

#[test]
fn wrong_value_type_points_at_the_value() {
    let file = rule("A", "amount > 1", HOLD).replace("label = \"라벨: 테스트 규칙\"", "label = 42");
    let p = only_problem(&file, &[]);
    assert_eq!(at(&p), (3, 9));
    assert_mentions(&p, "`label` must be a string, found an integer");
}

#[test]
fn unknown_feature_with_did_you_mean() {
    let p = only_problem(&rule("A", "amout >= 100", HOLD), &[]);
    assert_eq!(at(&p), (5, 9));
    assert_mentions(&p, "unknown feature `amout`; did you mean `amount`?");

    let p = only_problem(&rule("A", "is_night and zzz_qqq > 1", HOLD), &[]);
    assert_eq!(at(&p), (5, 22));
    assert_eq!(p.message, "unknown feature `zzz_qqq`");
}

#[test]
fn type_mismatch_says_the_types_found() {
    let p = only_problem(&rule("A", "amount and payee_first_seen", HOLD), &[]);
    assert_eq!(at(&p), (5, 9));
    assert_mentions(&p, "`and` needs true or false on both sides, but `amount` is integer");

    let p = only_problem(&rule("A", "payee_first_seen > 3", HOLD), &[]);
    assert_eq!(at(&p), (5, 9));
    assert_mentions(&p, "`>` compares numbers, but `payee_first_seen` is bool");

    let p = only_problem(&rule("A", "amount + 1", HOLD), &[]);
    assert_eq!(at(&p), (5, 9));
    assert_mentions(&p, "a condition must be true or false, but `amount + 1` is integer");

    let p = only_problem(&rule("A", "is_night == amount_vs_max", HOLD), &[]);
    assert_eq!(at(&p), (5, 18));
    assert_mentions(&p, "`==` cannot compare bool `is_night` with number `amount_vs_max`");
}

#[test]
fn expression_syntax_errors() {
    let p = only_problem(&rule("A", "amount >= ) 1", HOLD), &[]);
    assert_eq!(at(&p), (5, 19));
    assert_mentions(&p, "expected a value (a feature, a number, true or false), found `)`");

    let p = only_problem(&rule("A", "is_night and (amount > 1", HOLD), &[]);
    assert_eq!(at(&p), (5, 22));
    assert_mentions(&p, "unclosed `(`");

    let p = only_problem(&rule("A", "amount > 1 is_night", HOLD), &[]);
    assert_eq!(at(&p), (5, 20));
    assert_mentions(&p, "expected `and`, `or` or the end of the condition, found `is_night`");

    // An expression that ends too early points at the closing quote.
    let p = only_problem(&rule("A", "amount >", HOLD), &[]);
    assert_eq!(at(&p), (5, 17));
    assert_mentions(&p, "ends too early");
}

#[test]
fn unknown_list_suggests_an_existing_one() {
    let lists = [("lists/mule_accounts.txt", "088-1\n")];
    let p = only_problem(&rule("A", "payee in mule_acounts", HOLD), &lists);
    assert_eq!(at(&p), (5, 18));
    assert_mentions(
        &p,
        "unknown list `mule_acounts`: there is no lists/mule_acounts.txt; did you mean `mule_accounts`?",
    );

    let p = only_problem(&rule("A", "payee in mules", HOLD), &[]);
    assert_mentions(&p, "the lists/ directory holds no lists");
}

#[test]
fn a_key_outside_in_is_refused() {
    let p = only_problem(&rule("A", "amount > 1 and device == 3", HOLD), &[]);
    assert_eq!(at(&p), (5, 24));
    assert_mentions(&p, "`device` is a transfer key, usable only as `device in <list>`");

    let p = only_problem(&rule("A", "amount in mules", HOLD), &[("lists/mules.txt", "")]);
    assert_eq!(at(&p), (5, 9));
    assert_mentions(&p, "only `account`, `payee`, `device` or `ip` can be looked up in a list; `amount` is a feature");
}

#[test]
fn duplicate_rule_id_names_both_places() {
    let (dir, ps) = problems(&[
        ("a.toml", &rule("DUP", "amount > 1", HOLD)),
        ("b.toml", &format!("{}\n{}", rule("OTHER", "amount > 2", HOLD), rule("DUP", "amount > 3", HOLD))),
    ]);
    assert_eq!(ps.len(), 1, "{}", show(&ps));
    assert_eq!(ps[0].path, dir.path().join("b.toml"));
    assert_eq!(at(&ps[0]), (11, 6));
    let first = format!("already used at {}:2:6", dir.path().join("a.toml").display());
    assert_mentions(&ps[0], "duplicate rule id `DUP`");
    assert_mentions(&ps[0], &first);
}

#[test]
fn duplicates_are_found_even_when_the_rule_has_other_problems() {
    let (_dir, ps) =
        problems(&[("a.toml", &rule("DUP", "amount > 1", HOLD)), ("b.toml", &rule("DUP", "amout > 1", HOLD))]);
    let messages: Vec<&str> = ps.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(ps.len(), 2, "{}", show(&ps));
    assert!(messages[0].starts_with("duplicate rule id"), "{messages:?}");
    assert!(messages[1].starts_with("unknown feature"), "{messages:?}");
}

#[test]
fn bad_id_action_verify_and_score_combinations() {
    // Each rule is 6 lines plus its action lines, then a blank line.
    let rules = [
        rule("vp-1", "amount > 1", HOLD),                                                  // 1-8
        rule("HOLD_NO_VERIFY", "amount > 1", "action = \"hold\""),                         // 10-16
        rule("HOLD_WITH_SCORE", "amount > 1", &format!("{HOLD}\nscore = 5")),              // 18-26
        rule("SCORE_WITH_VERIFY", "amount > 1", &format!("{SCORE_10}\nverify = \"ars\"")), // 28-36
        rule("SCORE_NO_SCORE", "amount > 1", "action = \"score\""),                        // 38-44
        rule("SCORE_ZERO", "amount > 1", &score(0)),                                       // 46-53
        rule("BAD_ACTION", "amount > 1", "action = \"block\""),                            // 55-61
        rule("BAD_VERIFY", "amount > 1", &hold("sms")),                                    // 63-70
        rule("BAD_SHADOW", "amount > 1", &format!("{HOLD}\nshadow = \"yes\"")),            // 72-80
    ];
    let (_dir, ps) = problems(&[("r.toml", &rules.join("\n"))]);
    let got: Vec<(usize, usize, &str)> = ps.iter().map(|p| (p.line, p.column, p.message.as_str())).collect();
    let expected: Vec<(usize, usize, &str)> = vec![
        (2, 6, "rule id `vp-1` may use only A-Z, 0-9 and `_`, e.g. `VP_1`"),
        (10, 1, "rule `HOLD_NO_VERIFY` has action = \"hold\" but no `verify` (\"delay\", \"ars\" or \"callback\")"),
        (25, 1, "`score` is not allowed with action = \"hold\": a hold rule holds the transfer outright"),
        (
            35,
            1,
            "`verify` is not allowed with action = \"score\": holds from the score total use `score_verify` in ruleset.toml",
        ),
        (38, 1, "rule `SCORE_NO_SCORE` has action = \"score\" but no `score` (an integer from 1 to 1000)"),
        (52, 9, "`score` must be from 1 to 1000, found 0"),
        (60, 10, "unknown action `block`: expected \"hold\" or \"score\""),
        (69, 10, "unknown verification `sms`: expected delay, ars or callback"),
        (79, 10, "`shadow` must be a boolean, found a string"),
    ];
    assert_eq!(got, expected, "\n{}", show(&ps));
}

#[test]
fn an_empty_rule_file_is_reported() {
    let p = only_problem("# nothing here yet\n", &[]);
    assert_eq!(at(&p), (1, 1));
    assert_mentions(&p, "no rules in this file");
}

#[test]
fn rule_written_as_a_single_table_is_reported() {
    let p = only_problem("[rule]\nid = \"A\"\n", &[]);
    assert_eq!(at(&p), (1, 1));
    assert_mentions(&p, "rules must be written as [[rule]] tables");
}

#[test]
fn bad_list_file_name() {
    let (dir, ps) = problems(&[("r.toml", &rule("A", "amount > 1", HOLD)), ("lists/Mule-Accounts.txt", "088-1\n")]);
    assert_eq!(ps.len(), 1, "{}", show(&ps));
    assert_eq!(ps[0].path, dir.path().join("lists/Mule-Accounts.txt"));
    assert_eq!(at(&ps[0]), (1, 1));
    assert_mentions(&ps[0], "list file name `Mule-Accounts.txt` may use only a-z, 0-9 and `_`");
    assert_mentions(&ps[0], "`mule_accounts.txt`");
}

#[test]
fn bad_ruleset_toml() {
    let good = rule("A", "amount > 1", HOLD);
    let check = |settings: &str, pos: (usize, usize), needle: &str| {
        let (dir, ps) = problems(&[("r.toml", &good), ("ruleset.toml", settings)]);
        assert_eq!(ps.len(), 1, "{}", show(&ps));
        assert_eq!(ps[0].path, dir.path().join("ruleset.toml"));
        assert_eq!(at(&ps[0]), pos, "{}", ps[0]);
        assert_mentions(&ps[0], needle);
    };
    check("hold_score = 100\nhold_scor = 5\n", (2, 1), "unknown field `hold_scor`");
    check("hold_score = 0\n", (1, 14), "`hold_score` must be a positive integer");
    check("hold_score = 99999999999\n", (1, 14), "`hold_score` must be a positive integer");
    check("# thresholds\nscore_verify = \"sms\"\n", (2, 16), "unknown variant `sms`");
    check("hold_score = \"high\"\n", (1, 14), "invalid type");
}

#[test]
fn errors_inside_multi_line_strings_point_at_the_right_line() {
    let file = r#"[[rule]]
id = "A"
label = "l"
description = "d"
when = '''
  mins_since_cert_reissue <= 30
  and devce_age_min <= 60
'''
action = "hold"
verify = "ars"
reason = "R"
"#;
    let p = only_problem(file, &[]);
    assert_eq!(at(&p), (7, 7));
    assert_mentions(&p, "did you mean `device_age_min`?");
}

#[test]
fn errors_after_escapes_point_at_the_right_column() {
    // `\t` is two characters in the file but one in the condition.
    let file = rule("A", r"is_night and\tamout > 1", HOLD);
    let p = only_problem(&file, &[]);
    assert_eq!(at(&p), (5, 23));
    // Korean text before the error on the same line: columns count
    // characters, so `만` is one column although it is three bytes.
    let p = only_problem(&rule("A", "amount >= 300만 and 가", HOLD), &[]);
    assert_eq!(at(&p), (5, 28));
    assert_mentions(&p, "unexpected character `가`");
}

#[test]
fn every_problem_in_every_file_is_reported_in_order() {
    let (dir, ps) = problems(&[
        ("a.toml", &format!("{}\n{}", rule("A1", "amout > 1", HOLD), rule("A2", "is_night and", HOLD))),
        ("b.toml", "[[rule]\n"),
        ("c.toml", &rule("C1", "payee in nowhere", "action = \"hold\"")),
        ("ruleset.toml", "hold_score = -1\n"),
    ]);
    let got: Vec<(String, usize, usize)> = ps
        .iter()
        .map(|p| (p.path.file_name().unwrap_or_default().to_string_lossy().into_owned(), p.line, p.column))
        .collect();
    let expected = [
        ("a.toml", 5, 9),
        ("a.toml", 14, 21),
        ("b.toml", 1, 7),
        ("c.toml", 1, 1),
        ("c.toml", 5, 18),
        ("ruleset.toml", 1, 14),
    ];
    let expected: Vec<(String, usize, usize)> = expected.iter().map(|(f, l, c)| (f.to_string(), *l, *c)).collect();
    assert_eq!(got, expected, "\n{}", show(&ps));
    assert_eq!(ps[2].message, "invalid table header: expected `.`, `]]`");

    // Display lists every problem, one per line, as path:line:column: message.
    let err = RuleSet::load_dir(dir.path()).expect_err("invalid");
    let text = err.to_string();
    assert_eq!(text.lines().count(), 6, "{text}");
    let first = format!("{}:5:9: unknown feature `amout`", dir.path().join("a.toml").display());
    assert!(text.lines().next().is_some_and(|l| l.starts_with(&first)), "{text}");
}

#[test]
fn a_non_utf8_file_is_reported_where_it_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("r.toml"), b"[[rule]]\nid = \"\xff\"\n").expect("write");
    let err = RuleSet::load_dir(dir.path()).expect_err("invalid");
    let ps = err.problems();
    assert_eq!(ps.len(), 1, "{err}");
    assert_eq!(at(&ps[0]), (2, 7));
    assert_mentions(&ps[0], "not UTF-8");
}

#[test]
fn text_after_a_list_entry_that_is_not_an_attribute_is_reported_at_it() {
    let p = only_problem(&rule("A", "amount > 1", HOLD), &[("lists/mules.txt", "# mules\n088-1\n088-2 홍길동\n")]);
    assert_eq!(at(&p), (3, 7));
    assert_mentions(&p, "`홍길동` after the entry: one entry per line, then only key=value attributes");
}

#[test]
fn half_written_files_never_panic_and_always_position_their_problems() {
    let text = format!("{VOICE_PHISHING}\n{}", rule("X", "payee in mules and amount >= 1.5억", &score(5)));
    let lines = text.lines().count() + 1;
    for (cut, _) in text.char_indices() {
        let prefix = &text[..cut];
        match RuleSet::from_files(&[("r.toml", prefix), ("lists/mules.txt", "088-1")]) {
            Ok(set) => assert!(set.rules().len() <= 3),
            Err(e) => {
                assert!(!e.problems().is_empty(), "cut {cut}: {e}");
                for p in e.problems() {
                    assert!(p.line >= 1 && p.line <= lines && p.column >= 1, "cut {cut}: {p}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- evaluation

#[test]
fn int_and_float_comparisons() {
    let set = load(&[(
        "r.toml",
        &[
            rule("RATIO", "amount_vs_avg_30d >= 3", SCORE_10),
            rule("INT_VS_FLOAT", "amount > 2.5", SCORE_10),
            rule("EXACT", "amount == 9_007_199_254_740_993", SCORE_10),
        ]
        .join("\n"),
    )]);
    let run = |amount, ratio| {
        let f = features(&[(F::AMOUNT, Value::Int(amount)), (F::AMOUNT_VS_AVG_30D, Value::Float(ratio))]);
        fired_ids(&set, &set.evaluate(&f, &keys(), EventTime(0)).fired)
    };
    assert_eq!(run(3, 3.0), ["RATIO", "INT_VS_FLOAT"]);
    assert_eq!(run(2, 2.999), Vec::<String>::new());
    // Int against Int is exact even where f64 cannot tell the numbers apart.
    assert_eq!(run(9_007_199_254_740_993, 0.0), ["INT_VS_FLOAT", "EXACT"]);
    assert_eq!(run(9_007_199_254_740_992, 0.0), ["INT_VS_FLOAT"]);
}

#[test]
fn korean_unit_literals() {
    let set = load(&[(
        "r.toml",
        &[rule("MAN", "amount >= 300만", SCORE_10), rule("EOK", "amount >= 1.5억", SCORE_10)].join("\n"),
    )]);
    let run = |amount| {
        let f = features(&[(F::AMOUNT, Value::Int(amount))]);
        fired_ids(&set, &set.evaluate(&f, &keys(), EventTime(0)).fired)
    };
    assert_eq!(run(2_999_999), Vec::<String>::new());
    assert_eq!(run(3_000_000), ["MAN"]);
    assert_eq!(run(149_999_999), ["MAN"]);
    assert_eq!(run(150_000_000), ["MAN", "EOK"]);
}

#[test]
fn and_or_not_and_parentheses() {
    let set = load(&[("r.toml", &rule("A", "not is_night and (is_weekend or amount > 10)", SCORE_10))]);
    let run = |night, weekend, amount| {
        let f = features(&[
            (F::IS_NIGHT, Value::Bool(night)),
            (F::IS_WEEKEND, Value::Bool(weekend)),
            (F::AMOUNT, Value::Int(amount)),
        ]);
        !set.evaluate(&f, &keys(), EventTime(0)).fired.is_empty()
    };
    assert!(run(false, true, 0));
    assert!(run(false, false, 11));
    assert!(!run(false, false, 10));
    assert!(!run(true, true, 11));
}

#[test]
fn list_membership_including_absent_device() {
    let set = load(&[
        (
            "r.toml",
            &[
                rule("MULE", "payee in mule_accounts", SCORE_10),
                rule("BLOCKED", "device in blocked_devices", SCORE_10),
                rule("NOT_BLOCKED", "device not in blocked_devices", SCORE_10),
                rule("IP", "ip in bad_ips", SCORE_10),
                rule("SELF", "account in mule_accounts", SCORE_10),
            ]
            .join("\n"),
        ),
        ("lists/mule_accounts.txt", "# 대포통장\n088-110123456789\n004-999\n"),
        ("lists/blocked_devices.txt", "D-BAD\n"),
        ("lists/bad_ips.txt", "10.0.0.1 # seen in case 42\n"),
    ]);
    let f = features(&[]);
    let run = |k: Keys| fired_ids(&set, &set.evaluate(&f, &k, EventTime(0)).fired);
    assert_eq!(run(keys()), ["MULE", "NOT_BLOCKED", "IP"]);
    assert_eq!(run(Keys { device: Some("D-BAD"), ip: None, ..keys() }), ["MULE", "BLOCKED"]);
    // An absent device is in no list, so `not in` holds.
    assert_eq!(run(Keys { device: None, payee: "004-1", ..keys() }), ["NOT_BLOCKED", "IP"]);
    assert_eq!(run(Keys { account: "004-999", payee: "x", device: None, ip: None }), ["NOT_BLOCKED", "SELF"]);
}

#[test]
fn shadow_rules_never_affect_hold_or_score() {
    let shadow_hold = format!("{}shadow = true\n", rule("SHADOW_HOLD", "amount > 0", &hold("callback")));
    let shadow_score = format!("{}shadow = true\n", rule("SHADOW_SCORE", "amount > 0", &score(1000)));
    let set = load(&[("r.toml", &[shadow_hold, rule("LIVE", "amount > 100", &score(30)), shadow_score].join("\n"))]);
    let f = features(&[(F::AMOUNT, Value::Int(500))]);
    let out = set.evaluate(&f, &keys(), EventTime(0));
    assert_eq!(fired_ids(&set, &out.fired), ["LIVE"]);
    assert_eq!(fired_ids(&set, &out.shadow_fired), ["SHADOW_HOLD", "SHADOW_SCORE"]);
    assert_eq!(out.score, 30);
    assert_eq!(out.hold, None);
}

#[test]
fn the_strongest_verification_wins() {
    let set = load(&[(
        "r.toml",
        &[
            rule("DELAY", "amount > 0", &hold("delay")),
            rule("CALLBACK", "amount > 100", &hold("callback")),
            rule("ARS", "amount > 0", &hold("ars")),
        ]
        .join("\n"),
    )]);
    let run = |amount| set.evaluate(&features(&[(F::AMOUNT, Value::Int(amount))]), &keys(), EventTime(0)).hold;
    assert_eq!(run(50), Some(Verification::Ars));
    assert_eq!(run(500), Some(Verification::Callback));
    assert_eq!(run(0), None);
    assert!(Verification::Delay < Verification::Ars && Verification::Ars < Verification::Callback);
}

#[test]
fn score_threshold_comes_from_ruleset_toml() {
    let rules = [rule("S1", "amount > 0", &score(30)), rule("S2", "amount > 100", &score(30))].join("\n");
    let set = load(&[("r.toml", &rules), ("ruleset.toml", "hold_score = 60\nscore_verify = \"delay\"\n")]);
    let run = |set: &RuleSet, amount| {
        let out = set.evaluate(&features(&[(F::AMOUNT, Value::Int(amount))]), &keys(), EventTime(0));
        (out.score, out.hold)
    };
    assert_eq!(run(&set, 50), (30, None));
    assert_eq!(run(&set, 500), (60, Some(Verification::Delay)));

    // Without ruleset.toml the threshold is 100 and the verification ARS.
    let defaults = load(&[("r.toml", &rules)]);
    assert_eq!(defaults.settings().hold_score, 100);
    assert_eq!(run(&defaults, 500), (60, None));

    // A score hold and a hold rule together: the stronger verification wins.
    let mixed = load(&[
        ("r.toml", &format!("{rules}\n{}", rule("H", "amount > 100", &hold("delay")))),
        ("ruleset.toml", "hold_score = 60\nscore_verify = \"callback\"\n"),
    ]);
    assert_eq!(run(&mixed, 500), (60, Some(Verification::Callback)));
}

#[test]
fn rules_run_in_file_name_order_then_position() {
    let set = load(&[
        ("b.toml", &rule("B1", "amount > 0", SCORE_10)),
        ("a.toml", &format!("{}\n{}", rule("A1", "amount > 0", SCORE_10), rule("A2", "amount > 0", SCORE_10))),
    ]);
    let out = set.evaluate(&features(&[(F::AMOUNT, Value::Int(1))]), &keys(), EventTime(0));
    assert_eq!(fired_ids(&set, &out.fired), ["A1", "A2", "B1"]);
    assert_eq!(out.fired.as_slice(), &[0, 1, 2]);
}

#[test]
fn the_empty_set_fires_nothing() {
    let set = RuleSet::empty();
    let out = set.evaluate(&features(&[(F::AMOUNT, Value::Int(1_000_000_000))]), &keys(), EventTime(0));
    assert_eq!(out, Default::default());
    assert_eq!(*set.settings(), Default::default());
}

// ---------------------------------------------------------------- versions

#[test]
fn version_is_stable_for_identical_content_and_changes_with_it() {
    let files = [("vp.toml", VOICE_PHISHING), ("lists/mules.txt", "088-1\n"), ("ruleset.toml", "hold_score = 90\n")];
    let a = dir_with(&files);
    let b = dir_with(&files);
    let va = RuleSet::load_dir(a.path()).expect("a").version().to_string();
    assert_eq!(va, RuleSet::load_dir(b.path()).expect("b").version());
    assert_eq!(va, load(&files).version());
    assert!(va.starts_with("rs-") && va.len() == 15 && va[3..].bytes().all(|c| c.is_ascii_hexdigit()), "{va}");

    write(b.path(), "lists/mules.txt", "088-1\n088-2\n");
    let vb = RuleSet::load_dir(b.path()).expect("b").version().to_string();
    assert_ne!(va, vb);
    write(b.path(), "lists/mules.txt", "088-1\n");
    assert_eq!(va, RuleSet::load_dir(b.path()).expect("b").version());
    write(b.path(), "vp.toml", &VOICE_PHISHING.replace("score = 60", "score = 61"));
    assert_ne!(va, RuleSet::load_dir(b.path()).expect("b").version());

    // Same contents under other names is another directory.
    let renamed = dir_with(&[
        ("vp2.toml", VOICE_PHISHING),
        ("lists/mules.txt", "088-1\n"),
        ("ruleset.toml", "hold_score = 90\n"),
    ]);
    assert_ne!(va, RuleSet::load_dir(renamed.path()).expect("renamed").version());
}

#[test]
fn an_empty_directory_is_the_empty_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let set = RuleSet::load_dir(dir.path()).expect("empty dir loads");
    assert!(set.rules().is_empty());
    assert_eq!(set.version(), RuleSet::empty().version());
}

// ---------------------------------------------------------------- hot reload

fn ids(handle: &fds::rules::RulesHandle) -> Vec<String> {
    handle.load().rules().iter().map(|r| r.id().to_string()).collect()
}

#[test]
fn reload_now_swaps_only_valid_changed_sets() {
    let dir = dir_with(&[("r.toml", &rule("A", "amount > 1", HOLD))]);
    let handle = new_handle(RuleSet::load_dir(dir.path()).expect("load"));
    assert!(!reload_now(dir.path(), &handle).expect("unchanged"));

    write(dir.path(), "r.toml", &rule("B", "amount > 1", HOLD));
    assert!(reload_now(dir.path(), &handle).expect("changed"));
    assert_eq!(ids(&handle), ["B"]);

    write(dir.path(), "r.toml", &rule("C", "amount >", HOLD));
    let err = reload_now(dir.path(), &handle).expect_err("invalid");
    assert_eq!(at(&err.problems()[0]), (5, 17));
    assert_eq!(ids(&handle), ["B"]);
}

#[test]
fn watcher_swaps_in_a_good_edit() {
    let dir = dir_with(&[("r.toml", &rule("A", "amount > 1", HOLD))]);
    let handle = new_handle(RuleSet::load_dir(dir.path()).expect("load"));
    let before = handle.load().version().to_string();
    let watcher = watch_with(dir.path(), handle.clone(), fast()).expect("watch");
    assert_eq!(watcher.status().reloads, 0);

    write(dir.path(), "r.toml", &rule("B", "amount > 2", HOLD));
    eventually("the edited rule is live", || ids(&handle) == ["B"]);
    assert_ne!(handle.load().version(), before);
    assert!(watcher.status().reloads >= 1);
    assert_eq!(watcher.status().rejected, 0);
}

#[test]
fn watcher_rejects_a_bad_file_keeps_the_old_set_and_recovers() {
    let dir = dir_with(&[("r.toml", &rule("A", "amount > 1", HOLD))]);
    let handle = new_handle(RuleSet::load_dir(dir.path()).expect("load"));
    let good = handle.load().version().to_string();
    let watcher = watch_with(dir.path(), handle.clone(), fast()).expect("watch");

    // A half-written file: cut in the middle of the condition.
    let full = rule("B", "amount > 2 and is_night", HOLD);
    let half = &full[..full.find("and is_night").expect("cut point") + 3];
    write(dir.path(), "r.toml", half);
    eventually("the bad file is rejected", || watcher.status().rejected >= 1);
    assert_eq!(handle.load().version(), good, "the running set must be kept");
    assert_eq!(ids(&handle), ["A"]);
    let status = watcher.status();
    assert_eq!(status.reloads, 0);
    let problems = status.last_problems();
    assert!(!problems.is_empty());
    assert!(problems[0].path.ends_with("r.toml"), "{}", problems[0]);

    write(dir.path(), "r.toml", &full);
    eventually("the fixed file is live", || ids(&handle) == ["B"]);
    assert!(watcher.status().reloads >= 1);
}

#[test]
fn watcher_picks_up_list_changes() {
    let dir = dir_with(&[
        ("r.toml", &rule("MULE", "payee in mule_accounts", HOLD)),
        ("lists/mule_accounts.txt", "# none yet\n"),
    ]);
    let handle = new_handle(RuleSet::load_dir(dir.path()).expect("load"));
    let _watcher = watch_with(dir.path(), handle.clone(), fast()).expect("watch");
    let f = features(&[]);
    let hits = || handle.load().evaluate(&f, &keys(), EventTime(0)).hold;
    assert_eq!(hits(), None);

    write(dir.path(), "lists/mule_accounts.txt", "# none yet\n088-110123456789\n");
    eventually("the new list entry is live", || hits() == Some(Verification::Ars));
}

#[test]
fn watcher_picks_up_a_new_rule_file_and_ignores_editor_files() {
    let dir = dir_with(&[("a.toml", &rule("A", "amount > 1", HOLD))]);
    let handle = new_handle(RuleSet::load_dir(dir.path()).expect("load"));
    let watcher = watch_with(dir.path(), handle.clone(), fast()).expect("watch");
    // A swap file that would be a broken rule file if it were read.
    write(dir.path(), ".b.toml.swp", "garbage [[");
    write(dir.path(), "b.toml", &rule("B", "amount > 1", HOLD));
    eventually("the new file is live", || ids(&handle) == ["A", "B"]);
    assert_eq!(watcher.status().rejected, 0);
}

#[test]
fn dropping_the_watcher_stops_it() {
    let dir = dir_with(&[("r.toml", &rule("A", "amount > 1", HOLD))]);
    let handle = new_handle(RuleSet::load_dir(dir.path()).expect("load"));
    let watcher = watch_with(dir.path(), handle.clone(), fast()).expect("watch");
    let started = Instant::now();
    drop(watcher);
    assert!(started.elapsed() < Duration::from_secs(5));
    write(dir.path(), "r.toml", &rule("B", "amount > 1", HOLD));
    // Ten quiet periods: a live watcher would have reloaded by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ids(&handle), ["A"]);
}
