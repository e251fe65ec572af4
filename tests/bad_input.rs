//! Bad input as a transfer-API client outside this project sends it: every
//! refusal dead-lettered with the field and the bound, the partition moving
//! on, and nothing that identifies a customer written to a log in full.

mod support;

use std::time::Duration;

use fds::event::build::{context, transfer};
use fds::event::Event;
use fds::kafka::{EmbeddedBroker, Topics};
use rdkafka::message::OwnedHeaders;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// What must never reach a log line in full.
const ACCOUNT: &str = "120220000000000000777123";
const PAYEE_ACCOUNT: &str = "110123456789012";
const PAYEE_NAME: &str = "홍길동사기범";
const DEVICE: &str = "Dsecretdevice12345";

/// A valid transfer carrying every identifying value, then refusals of each
/// kind, each quoting (in its own place or in the wrong one) one of them.
/// Returns the messages with the dead-letter kind each must get (`None`: decided).
fn messages() -> Vec<(Option<&'static str>, &'static str, Vec<u8>)> {
    let good = transfer("G1")
        .account(ACCOUNT)
        .payee("088", PAYEE_ACCOUNT)
        .payee_name(PAYEE_NAME)
        .device(DEVICE)
        .at("20261102100000")
        .build();
    let json = good.to_json();
    let with = |from: &str, to: &str| json.replacen(from, to, 1).replacen("\"G1\"", "\"B1\"", 1).into_bytes();
    vec![
        (None, "valid", json.clone().into_bytes()),
        (Some("invalid"), "fintech_use_num", with(ACCOUNT, &format!("{ACCOUNT}9"))),
        (Some("invalid"), "recv_client_account_num", with(PAYEE_ACCOUNT, &format!("{PAYEE_ACCOUNT}34"))),
        (Some("invalid"), "recv_client_name", with(PAYEE_NAME, &PAYEE_NAME.repeat(4))),
        (Some("invalid"), "bank_tran_id", with("\"G1\"", "\"G1234567890123456789012\"")),
        (Some("malformed"), "tran_amt", with("\"tran_amt\":10000", &format!("\"tran_amt\":\"{PAYEE_NAME}\""))),
        (Some("malformed"), "channel", with("\"mobile_app\"", &format!("\"{DEVICE}\""))),
        (Some("too_large"), "refused unread", with(PAYEE_NAME, &"김".repeat(150_000))),
    ]
}

#[test]
fn each_refusal_names_its_field_and_bound_and_the_log_names_no_customer() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 1).unwrap();
    let brokers = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("fds.log");
    let run = FdsRun::start_logging(&brokers, &log);

    let p = producer(&brokers);
    let reissue = context(ACCOUNT).at("20261102095000").device(DEVICE).cert_reissued();
    send_events(&p, &topics, &[reissue], 60_000);
    let sent = messages();
    for (_, _, payload) in &sent {
        send_raw(&p, &topics.transfers, ACCOUNT.as_bytes(), payload, OwnedHeaders::new());
    }
    let last = transfer("G2").account(ACCOUNT).at("20261102100100").build();
    send_events(&p, &topics, &[last], 60_000);

    let refused: Vec<_> = sent.iter().filter(|(kind, _, _)| kind.is_some()).collect();
    let mut dead = Reader::new(&brokers, &topics.dead_letter);
    assert!(dead.read_until(WAIT, |r| r.len() >= refused.len()), "{} dead letters", dead.records.len());
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| r.len() >= 2), "the transfers around the bad ones are decided");
    assert_eq!(run.terminate().code(), Some(0));

    for (r, (kind, field, payload)) in dead.records.iter().zip(&refused) {
        assert_eq!(r.header("fds-error-kind"), *kind, "{field}: {:?}", r.headers);
        let reason = r.header("fds-error").unwrap();
        assert!(reason.contains(field), "{field}: {reason}");
        assert_eq!(&r.payload, payload, "original bytes kept");
        if *kind == Some("invalid") {
            assert!(reason.contains("at most"), "the bound is named: {reason}");
        }
    }

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("dead-lettered"), "the refusals are logged:\n{logged}");
    for secret in [ACCOUNT, PAYEE_ACCOUNT, PAYEE_NAME, DEVICE] {
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
    }
}

#[test]
fn a_replay_counts_the_same_refusals_as_bad_lines_and_prints_no_customer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    let sent = messages();
    let mut bytes = Vec::new();
    for (_, _, payload) in &sent {
        bytes.extend_from_slice(payload);
        bytes.push(b'\n');
    }
    std::fs::write(&file, bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fds"))
        .args(["replay", "--warmup-days", "0", "--no-model", file.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let refused = sent.iter().filter(|(kind, _, _)| kind.is_some()).count();
    assert!(stdout.contains(&format!("bad lines {refused}")), "{stdout}");
    for (kind, field, _) in &sent {
        if kind.is_some() {
            assert!(stdout.contains(field), "{field} named in the report:\n{stdout}");
        }
    }
    for secret in [ACCOUNT, PAYEE_ACCOUNT, PAYEE_NAME, DEVICE] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "{secret} printed:\n{stdout}\n{stderr}");
    }
    // The valid line was read and decided.
    assert!(Event::from_json(&sent[0].2).is_ok());
    assert!(stdout.contains("transfers 1"), "{stdout}");
}
