//! The wire format: what reading one event off the wire costs.
//!
//! - `event/parse/transfer`: a transfer as the transfer API publishes it;
//! - `event/parse/login`: a context event, about as many of which arrive as
//!   transfers.
//!
//! Run: `cargo bench --bench event` (add `-- --quick` for a fast look).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use fds::event::{build, Event};

/// A transfer and a login as the wire carries them, fields as a busy client
/// fills them.
fn lines() -> [(&'static str, String); 2] {
    let account = "120220000000000000012345";
    [
        (
            "transfer",
            build::transfer("F123456789U4BC123456")
                .at("20261102093015")
                .account(account)
                .amount(350_000)
                .payee("088", "110-234-567890")
                .device("D9f3a77c1")
                .ip("211.36.142.7")
                .json(),
        ),
        (
            "login",
            build::context(account).at("20261102092950").device("D9f3a77c1").ip("211.36.142.7").login(true).to_json(),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("event/parse");
    g.throughput(Throughput::Elements(1));
    for (name, line) in lines() {
        Event::from_json(line.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        g.bench_function(name, |b| b.iter(|| black_box(Event::from_json(black_box(line.as_bytes())))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
