//! Lists with provenance and expiry, as an analyst keeps them: entries in
//! force by event time in a replay, and a malformed line refused with its
//! position by `fds rules check`.

mod support;

use std::path::Path;

use fds::event::build::transfer;
use fds::event::Event;

use support::{fds, printed as text};

fn rules_dir(dir: &Path, mules: &str) {
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    std::fs::write(
        dir.join("mule.toml"),
        r#"[[rule]]
id = "MULE_LISTED_PAYEE"
label = "대포통장 목록 수취계좌"
description = "The payee is on the list of known mule accounts."
when = "payee in mule_accounts"
action = "hold"
verify = "callback"
reason = "MU002"
"#,
    )
    .unwrap();
    std::fs::write(dir.join("lists/mule_accounts.txt"), mules).unwrap();
}

#[test]
fn a_list_entry_matches_only_from_added_until_it_expires_by_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    rules_dir(
        &rules,
        "# reported through the banks' sharing channel\n\
         088-555-444-3332  added=2026-11-03  expires=2026-11-05T12:00  source=KFTC  by=kim.j  # case 2026-1187\n",
    );
    // The same payee paid by a different account each day, so only the list
    // can tell the transfers apart.
    let days = [("T1", "20261102100000"), ("T2", "20261103000000"), ("T3", "20261105115900"), ("T4", "20261105120000")];
    let events: Vec<Event> = days
        .iter()
        .enumerate()
        .map(|(i, (id, at))| {
            let account = format!("1202200000000000000000{:02}", i + 1);
            transfer(id).account(&account).at(at).payee("088", "555-444-3332").amount(50_000).build()
        })
        .collect();
    let data = dir.path().join("stream.jsonl");
    std::fs::write(&data, events.iter().map(|e| e.to_json() + "\n").collect::<String>()).unwrap();
    let decisions = dir.path().join("decisions.jsonl");
    let out = fds(&[
        "replay",
        "--no-model",
        "--rules",
        rules.to_str().unwrap(),
        "--decisions-out",
        decisions.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let held: Vec<(String, String)> = std::fs::read_to_string(&decisions)
        .unwrap()
        .lines()
        .map(|l| {
            let d: serde_json::Value = serde_json::from_str(l).unwrap();
            (d["bank_tran_id"].as_str().unwrap().to_owned(), d["decision"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [("T1", "allow"), ("T2", "hold"), ("T3", "hold"), ("T4", "allow")];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(held, expected, "before added, in force (both ends), from expires on");

    // `fds rules check` says how the list stands now (the wall clock: both
    // dates are in the past on any machine running this).
    let out = fds(&["rules", "check", rules.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("lists/mule_accounts.txt: 1 entries; now 0 in force, 1 expired"), "{}", text(&out));
}

#[test]
fn a_malformed_list_line_is_refused_with_its_position_and_nothing_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    rules_dir(dir.path(), "088-1111  added=2026-11-03\n088-2222  expires=2026-11-31\n088-3333  sorce=KFTC\n088 4444\n");
    let out = fds(&["rules", "check", dir.path().to_str().unwrap()]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let file = dir.path().join("lists/mule_accounts.txt");
    let at = |line: usize, column: usize| format!("{}:{line}:{column}: ", file.display());
    assert!(printed.contains(&format!("{}`expires` is a KST date or time", at(2, 19))), "{printed}");
    assert!(printed.contains(&format!("{}unknown attribute `sorce`; did you mean `source`?", at(3, 11))), "{printed}");
    assert!(printed.contains(&format!("{}`4444` after the entry", at(4, 5))), "{printed}");
    assert!(!printed.contains(":1:"), "the good line is not a problem: {printed}");
}
