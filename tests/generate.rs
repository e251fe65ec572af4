//! The shipped demo stream is exactly what the documented `fds generate`
//! command writes, so anyone can regenerate it and get the same bytes.

use std::io::Read;

use fds::generate::{generate, GeneratorConfig};
use sha2::{Digest, Sha256};

#[test]
fn the_shipped_demo_is_reproducible() {
    // `fds generate --accounts 10000 --days 7 --out replay-data/demo.jsonl.gz`
    let cfg = GeneratorConfig { accounts: 10_000, days: 7, ..GeneratorConfig::default() };
    let mut fresh = Vec::new();
    generate(&cfg, &mut fresh).unwrap();

    let mut shipped = Vec::new();
    let file = std::fs::File::open("replay-data/demo.jsonl.gz").unwrap();
    flate2::read::MultiGzDecoder::new(file).read_to_end(&mut shipped).unwrap();
    assert_eq!(
        Sha256::digest(&fresh),
        Sha256::digest(&shipped),
        "replay-data/demo.jsonl.gz differs from the generator's output: regenerate it"
    );
}
