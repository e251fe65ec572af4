//! The wire format: what reading one event off the wire costs.
//!
//! - `event/parse/transfer`: a transfer as the transfer API publishes it;
//! - `event/parse/login`: a context event, about as many of which arrive as
//!   transfers.
//!
//! Run: `cargo bench --bench event` (add `-- --quick` for a fast look).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use fds::event::Event;

const TRANSFER: &str = r#"{"type":"transfer","schema_version":1,"bank_tran_id":"F123456789U4BC12345678","tran_dtime":"20261102093015","fintech_use_num":"120220000000000000012345","tran_amt":350000,"recv_client_bank_code":"088","recv_client_account_num":"110-234-567890","recv_client_name":"김민수","channel":"mobile_app","device_id":"D9f3a77c1","ip":"211.36.142.7","transfer_purpose":"TR"}"#;
const LOGIN: &str = r#"{"type":"login","schema_version":1,"event_dtime":"20261102092950","fintech_use_num":"120220000000000000012345","success":true,"device_id":"D9f3a77c1","ip":"211.36.142.7"}"#;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("event/parse");
    g.throughput(Throughput::Elements(1));
    for (name, line) in [("transfer", TRANSFER), ("login", LOGIN)] {
        Event::from_json(line.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        g.bench_function(name, |b| b.iter(|| black_box(Event::from_json(black_box(line.as_bytes())))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
