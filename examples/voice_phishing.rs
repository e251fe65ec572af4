//! Score a voice-phishing attempt with the shipped rules and model, step by step.
//!
//! A customer with a month of ordinary habits has their joint certificate
//! re-issued on a new device (the fraudster's), and eight minutes later a first
//! large transfer goes to a never-seen payee. The engine holds it for a call-back
//! and says why: the rules that fired and, when the model's score reaches its
//! hold threshold, the features that raised it (`MODEL_...` reasons).
//!
//! Run from the repository root: `cargo run --example voice_phishing`

use std::path::Path;

use fds::engine::Engine;
use fds::event::Event;
use fds::model::{self, Model};
use fds::rules::{RuleSet, Verification};

const ACCOUNT: &str = "120220000000000000012345";

fn event(json: String) -> Event {
    Event::from_json(json.as_bytes()).expect("the example's events are valid")
}

fn transfer(id: &str, time: &str, amount: i64, payee: &str, device: &str) -> Event {
    event(format!(
        r#"{{"type":"transfer","schema_version":1,"bank_tran_id":"{id}","tran_dtime":"{time}","fintech_use_num":"{ACCOUNT}","tran_amt":{amount},"recv_client_bank_code":"088","recv_client_account_num":"{payee}","recv_client_name":"김민수","channel":"mobile_app","device_id":"{device}","transfer_purpose":"TR"}}"#
    ))
}

fn main() -> anyhow::Result<()> {
    let model = Model::load(Path::new("models/default"))?;
    let engine = Engine::with_rules(RuleSet::load_dir(Path::new("rules"))?)
        .with_model(model::new_handle(model), Verification::Ars);

    // A month of habits: 50,000 won to family every other day, from the home phone.
    for day in (1..=28).step_by(2) {
        engine.process(&transfer(
            &format!("H{day}"),
            &format!("202610{day:02}190000"),
            50_000,
            "110222333444",
            "HOME",
        ))?;
    }

    // The fraudster's device is registered and the certificate re-issued on it.
    engine.process(&event(format!(
        r#"{{"type":"device_registered","schema_version":1,"event_dtime":"20261102140000","fintech_use_num":"{ACCOUNT}","device_id":"NEWPHONE"}}"#
    )))?;
    engine.process(&event(format!(
        r#"{{"type":"certificate","schema_version":1,"event_dtime":"20261102140200","fintech_use_num":"{ACCOUNT}","action":"reissued","device_id":"NEWPHONE"}}"#
    )))?;

    // Eight minutes later: 9,000,000 won to a stranger, from the new device.
    let scored = engine
        .process(&transfer("VP1", "20261102141000", 9_000_000, "3333999888777", "NEWPHONE"))?
        .expect("a transfer is scored");
    println!("{}", scored.decision.to_json());
    Ok(())
}
