//! State snapshots: replay a stream, write the engine's state to a file, read
//! it back into a fresh engine, and report sizes and times, beside the
//! state's size in memory.
//!
//! ```text
//! cargo run --release --example snapshot                       # the demo stream
//! cargo run --release --example snapshot -- FILE.jsonl.gz      # any stream
//! ```
//!
//! What it shows: [`Engine::write_snapshot`] and [`Engine::restore_snapshot`],
//! the building blocks of state that survives a restart, and what they cost
//! (bytes per entity on disk and in memory, write and restore time).

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::time::Instant;

use fds::engine::Engine;
use fds::input::{self, Format};
use fds::rules::RuleSet;

fn main() -> anyhow::Result<()> {
    let file = std::env::args().nth(1).unwrap_or_else(|| "replay-data/demo.jsonl.gz".into());
    let rules = || RuleSet::load_dir(Path::new("rules"));
    let engine = Engine::with_rules(rules()?);
    let started = Instant::now();
    let mut events = 0u64;
    // Bad lines are skipped here; `fds replay` reports them.
    for (_, e) in input::open(Path::new(&file), Format::Auto)?.events.flatten() {
        let _ = engine.process(&e);
        events += 1;
    }
    println!("replayed {events} events of {file} in {:.1} s", started.elapsed().as_secs_f64());

    let path = std::env::temp_dir().join(format!("fds-snapshot-{}.bin", std::process::id()));
    let started = Instant::now();
    let written = engine.write_snapshot(BufWriter::new(std::fs::File::create(&path)?))?;
    let write_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (restored, read) =
        Engine::with_rules(rules()?).restore_snapshot(BufReader::new(std::fs::File::open(&path)?))?;
    let read_s = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    assert_eq!(read, written);

    let memory = restored.state().memory();
    let entities = written.accounts + written.payees + written.devices;
    println!(
        "snapshot: {} accounts, {} payees, {} devices; {:.1} MB, {:.0} B per entity",
        written.accounts,
        written.payees,
        written.devices,
        written.bytes as f64 / 1e6,
        written.bytes as f64 / entities as f64
    );
    println!(
        "memory:   {:.1} MB, {:.0} B per entity (accounts {} B, payees {} B, devices {} B each)",
        memory.total_bytes() as f64 / 1e6,
        memory.total_bytes() as f64 / entities as f64,
        memory.bytes_per_account(),
        memory.bytes_per_payee(),
        memory.bytes_per_device()
    );
    println!(
        "write {write_s:.2} s ({:.0} MB/s), restore {read_s:.2} s ({:.0} entities/s)",
        written.bytes as f64 / 1e6 / write_s,
        entities as f64 / read_s
    );
    Ok(())
}
