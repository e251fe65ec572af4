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
use fds::event::{build, Event};
use fds::model::{self, Model};
use fds::rules::{RuleSet, Verification};

const ACCOUNT: &str = "120220000000000000012345";

fn transfer(id: &str, time: &str, amount: i64, payee: &str, device: &str) -> Event {
    build::transfer(id).account(ACCOUNT).at(time).amount(amount).payee("088", payee).device(device).build()
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
    engine.process(&build::context(ACCOUNT).at("20261102140000").device("NEWPHONE").device_registered())?;
    engine.process(&build::context(ACCOUNT).at("20261102140200").device("NEWPHONE").cert_reissued())?;

    // Eight minutes later: 9,000,000 won to a stranger, from the new device.
    let scored = engine
        .process(&transfer("VP1", "20261102141000", 9_000_000, "3333999888777", "NEWPHONE"))?
        .expect("a transfer is scored");
    println!("{}", scored.decision.to_json());
    Ok(())
}
