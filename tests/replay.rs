//! Replay end to end: the shipped demo stream, bad input, determinism, and the
//! handbook's external data set.

mod support;
use std::io::Write;
use std::path::{Path, PathBuf};

use fds::engine::Engine;
use fds::event::build::transfer;
use fds::input::{self, Format};
use fds::replay::{self, ReplayOptions, ReplayReport};
use fds::rules::RuleSet;

fn starter_engine() -> Engine {
    Engine::with_rules(RuleSet::load_dir(Path::new("rules")).unwrap())
}

fn replay_files(files: &[PathBuf], format: Format, limit: Option<u64>) -> ReplayReport {
    let engine = starter_engine();
    let sources = files.iter().map(|f| input::open(f, format).unwrap()).collect();
    replay::run(&engine, sources, ReplayOptions { limit, ..ReplayOptions::default() }).unwrap()
}

#[test]
fn bad_lines_are_counted_with_line_numbers_and_replay_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    // Bad lines are made from a good one by hand: they are the wire format's
    // own business.
    let good = transfer("T1").account("A1").at("20261102100000").amount(10_000).payee("088", "1").json();
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "{good}").unwrap();
    writeln!(f, "not json at all").unwrap();
    writeln!(f).unwrap();
    writeln!(f, "{}", good.replace("\"transfer\"", "\"wire\"")).unwrap();
    writeln!(f, "{}", good.replace("\"tran_amt\":10000", "\"tran_amt\":-10000").replace("T1", "T2")).unwrap();
    writeln!(f, "{}", good.replace("T1", "T3")).unwrap();
    drop(f);

    let r = replay_files(&[path], Format::Auto, None);
    assert_eq!(r.transfers, 2);
    assert_eq!(r.bad_lines, 3);
    let lines: Vec<u64> = r.bad_line_samples.iter().map(|b| b.line).collect();
    assert_eq!(lines, [2, 4, 5]);
    assert!(r.bad_line_samples[1].reason.contains("wire"), "{}", r.bad_line_samples[1].reason);
    assert!(r.bad_line_samples[2].reason.contains("positive"), "{}", r.bad_line_samples[2].reason);
    assert!(r.render().contains("mixed.jsonl:5:"));
}

#[test]
fn the_demo_stream_replays_the_same_way_twice_and_finds_fraud() {
    let demo = PathBuf::from("replay-data/demo.jsonl.gz");
    let a = replay_files(std::slice::from_ref(&demo), Format::Auto, None);
    let b = replay_files(&[demo], Format::Auto, None);
    assert_eq!(a.decisions_digest, b.decisions_digest);
    assert_eq!((a.allow, a.hold), (b.allow, b.hold));
    assert_eq!(a.bad_lines, 0);
    assert!(a.transfers > 10_000, "{} transfers", a.transfers);
    assert!(a.context_events > 0 && a.labels > 0);

    let q = a.quality.as_ref().expect("the demo is labelled");
    assert_eq!(q.unmatched_labels, 0);
    let typologies: Vec<&str> = q.by_typology.iter().map(|t| t.typology.as_str()).collect();
    for t in ["voice_phishing", "account_takeover", "loan_fraud"] {
        assert!(typologies.contains(&t), "{t} missing from {typologies:?}");
    }
    let vp = q.by_typology.iter().find(|t| t.typology == "voice_phishing").unwrap();
    assert!(vp.recall > 0.5, "voice phishing recall {}", vp.recall);
    assert!(q.hold_rate_genuine < 0.02, "hold rate on genuine {}", q.hold_rate_genuine);
    // A shadow rule is reported but never holds on its own.
    let shadow = a.rules.iter().find(|r| r.shadow).expect("the starter set has a shadow rule");
    assert!(shadow.fired > 0);
}

#[test]
fn a_different_rule_set_changes_the_digest() {
    let demo = PathBuf::from("replay-data/demo.jsonl.gz");
    let a = replay_files(std::slice::from_ref(&demo), Format::Auto, Some(20_000));
    let engine = Engine::with_rules(RuleSet::empty());
    let b = replay::run(
        &engine,
        vec![input::open(&demo, Format::Auto).unwrap()],
        ReplayOptions { limit: Some(20_000), ..ReplayOptions::default() },
    )
    .unwrap();
    assert_eq!(a.transfers, b.transfers);
    assert_eq!(b.hold, 0);
    assert_ne!(a.decisions_digest, b.decisions_digest);
}

/// The handbook's data set, read through the documented mapping. Its compromised
/// terminals (scenario 2) become payees with fraud reports 7 days later, so the
/// reported-payee rule must start holding their later transactions.
#[test]
fn handbook_import_maps_rows_labels_and_payee_reports() {
    use std::io::BufRead;
    let Some(path) = support::handbook_data() else { return };
    // The first 150,000 rows (about two weeks), as a file of their own, so every
    // label of those rows is delivered (the reader drains them at the end).
    const ROWS: usize = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("transactions.csv");
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap());
    let mut out = std::io::BufWriter::new(std::fs::File::create(&head).unwrap());
    let mut frauds = 0;
    for line in std::io::BufReader::new(gz).lines().take(ROWS + 1) {
        let line = line.unwrap();
        frauds += usize::from(line.split(',').nth(5) == Some("1"));
        writeln!(out, "{line}").unwrap();
    }
    drop(out);

    let r = replay_files(&[head], Format::Auto, None);
    // Every row is a transfer, except rows with a 0.00 amount (reported, not replayed).
    assert_eq!(r.transfers + r.bad_lines, ROWS as u64);
    assert!(r.bad_line_samples.iter().all(|b| b.reason.contains("positive")), "{:?}", r.bad_line_samples);
    assert_eq!(r.labels as usize, frauds);
    let q = r.quality.unwrap();
    assert_eq!(q.unmatched_labels, 0);
    assert_eq!(q.frauds as usize, frauds);
    let s2 = q.by_typology.iter().find(|t| t.typology == "handbook_scenario_2").expect("scenario 2 labels");
    assert!(s2.held > 0, "no compromised-terminal transaction was held");
    let mu = r.rules.iter().find(|x| x.reason == "MU001").unwrap();
    assert!(mu.fired_on_fraud > 0);
}

#[test]
fn the_handbook_format_is_checked_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.csv");
    std::fs::write(&path, "a,b,c\n1,2,3\n").unwrap();
    let err = input::open(&path, Format::Handbook).err().expect("not the handbook");
    assert!(err.to_string().contains("not the handbook data set"), "{err}");
}

#[test]
fn a_truncated_gzip_file_is_reported_once_and_the_replay_ends() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read("replay-data/demo.jsonl.gz").unwrap();
    let path = dir.path().join("cut.jsonl.gz");
    std::fs::write(&path, &shipped[..200_000]).unwrap();
    let r = replay_files(&[path], Format::Auto, None);
    assert!(r.transfers > 100, "the readable part was replayed");
    assert_eq!(r.bad_lines, 1, "{:?}", r.bad_line_samples);
    assert!(r.bad_line_samples[0].reason.contains("input ends here"), "{:?}", r.bad_line_samples);
}

/// `Event::from_json` reads events with `"type"` first on a fast path of their
/// own; over the whole demo stream it gives exactly what the general
/// tagged-enum reader gives.
#[test]
fn every_demo_event_parses_the_same_on_both_paths() {
    use std::io::BufRead;
    let file = std::fs::File::open("replay-data/demo.jsonl.gz").unwrap();
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let mut transfers = 0;
    for line in reader.lines() {
        let line = line.unwrap();
        let fast = fds::event::Event::from_json(line.as_bytes()).unwrap();
        let general: fds::event::Event = serde_json::from_str(&line).unwrap();
        assert_eq!(fast, general, "{line}");
        transfers += usize::from(matches!(fast, fds::event::Event::Transfer(_)));
    }
    assert!(transfers > 60_000);
}

/// `fds replay --instances`: the demo split over 4 instances by sender. With
/// the shared tables up to date they decide exactly as one engine; with them
/// a day behind (what no sharing at all looks like) the mules that fan in
/// from senders on other instances slip through. Both directions, so the
/// comparison itself is shown to see a difference.
#[test]
fn four_instances_with_shared_tables_decide_as_one_engine() {
    let demo = PathBuf::from("replay-data/demo.jsonl.gz");
    let opts = || ReplayOptions {
        partitions: 4,
        keep_outcomes: true,
        warmup: std::time::Duration::from_secs(2 * 86_400),
        ..ReplayOptions::default()
    };
    let open = || vec![input::open(&demo, Format::Auto).unwrap()];
    let one = replay::run(&starter_engine(), open(), opts()).unwrap();
    let group = |lag_ms: i64| {
        let engines: Vec<Engine> = (0..4).map(|_| starter_engine()).collect();
        let mut instances = replay::Instances::new(&engines, 4, lag_ms);
        let report = replay::run_instances(&mut instances, open(), opts()).unwrap();
        (report.decisions_digest.clone(), replay::compare(&one, &report, 4, 4, lag_ms))
    };
    let (digest, now) = group(0);
    assert_eq!(digest, one.decisions_digest);
    assert_eq!(now.differ, 0);
    assert!(now.transfers > 10_000 && now.recall_one > 0.5, "{now:?}");

    let (_, day_late) = group(86_400_000);
    let mules = day_late.by_typology.iter().find(|t| t.typology == "mule_fan_in").expect("the demo has mules");
    assert!(mules.held_group + 10 < mules.held_one, "{mules:?}");
    assert!(day_late.differ_share > 0.01, "{day_late:?}");
}
