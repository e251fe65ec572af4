//! The `fds` command as a user runs it.

mod support;

use support::fds;

#[test]
fn rules_check_accepts_the_shipped_rules_and_rejects_a_bad_file_with_positions() {
    let ok = fds(&["rules", "check", "rules"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[rule]]\nid = \"X1\"\nlabel = \"l\"\ndescription = \"d\"\nwhen = \"amout >= 1\"\naction = \"hold\"\nverify = \"ars\"\nreason = \"R\"\n",
    )
    .unwrap();
    let bad = fds(&["rules", "check", dir.path().to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("bad.toml:5:9: unknown feature `amout`"), "{err}");
}

#[test]
fn demo_prints_a_report_with_quality_per_typology() {
    let out = fds(&["demo", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["transfers"].as_u64().unwrap() > 50_000);
    assert!(report["warmup_transfers"].as_u64().unwrap() > 0);
    assert!(report["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    let typologies = report["quality"]["by_typology"].as_array().unwrap();
    assert_eq!(typologies.len(), 5, "{typologies:?}");
}

#[test]
fn output_piped_into_a_reader_that_stops_early_ends_fds_without_a_panic() {
    // `fds rules check | head -0`: the reader is gone before fds prints.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fds"))
        .args(["rules", "check", "rules"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(out.status.success() || out.status.signal() == Some(13), "{:?}: {stderr}", out.status);
}

#[test]
fn replay_without_a_readable_file_says_which() {
    let out = fds(&["replay", "no/such/file.jsonl"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/file.jsonl"));
}

#[test]
fn a_bad_config_file_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fds.toml");
    std::fs::write(&path, "[state]\naccount_ttl_days = 7\nmax_known_devices = 0\n").unwrap();
    let out = fds(&["--config", path.to_str().unwrap(), "demo"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 invalid settings"), "{err}");
    assert!(err.contains("state.account_ttl_days = 7") && err.contains("state.max_known_devices = 0"), "{err}");

    // The shipped example is valid as it stands.
    let ok = fds(&["--config", "fds.example.toml", "rules", "check"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn load_without_brokers_names_both_ways_to_give_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").unwrap();
    let out = fds(&["load", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--brokers") && err.contains("kafka.brokers"), "{err}");
}

#[test]
fn load_takes_brokers_topics_and_client_settings_from_the_config() {
    let broker = fds::kafka::EmbeddedBroker::start(&fds::kafka::Topics::default(), 1).unwrap();
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").unwrap();

    // Brokers and topic names: the load reaches the embedded broker and looks
    // for the renamed transfers topic, which is not there.
    let config = dir.path().join("fds.toml");
    std::fs::write(
        &config,
        format!("[kafka]\nbrokers = \"{brokers}\"\n[kafka.topics]\ntransfers = \"ob.transfers\"\n"),
    )
    .unwrap();
    let out = fds(&["--config", config.to_str().unwrap(), "load", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("topic \"ob.transfers\" (transfers) does not exist on {brokers}")), "{err}");

    // Client settings are passed through: librdkafka refuses this one.
    std::fs::write(
        &config,
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[kafka.client]\n\"security.protocol\" = \"carrier-pigeon\"\n",
    )
    .unwrap();
    let out = fds(&["--config", config.to_str().unwrap(), "load", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("security.protocol") && err.contains("carrier-pigeon"), "{err}");
}
