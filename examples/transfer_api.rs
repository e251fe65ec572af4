//! The transfer API's side of the contract with `fds run`: publish a transfer,
//! wait for its decision within the latency budget, and fall back when none
//! comes in time.
//!
//! Run `fds run` in one terminal (it prints the embedded broker's address),
//! then in another:
//!
//! ```text
//! cargo run --release --example transfer_api -- 127.0.0.1:PORT
//! cargo run --release --example transfer_api -- 127.0.0.1:PORT 30000000   # a large transfer
//! ```
//!
//! What it shows, in order: the message (a transfer event as JSON with
//! `schema_version`, keyed by the sender's account; made here with
//! `fds::event::build`, the README shows the JSON a client in any language
//! writes), the `correlation-id` and
//! `deadline-ms` headers, reading the `decisions` topic from its end *before*
//! publishing (so the answer cannot be missed), matching by correlation id, and
//! the documented fallback when the budget runs out: small amounts proceed,
//! large ones are held for verification. A real API keeps one decisions reader
//! for all its requests and wakes each waiting request by correlation id.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use fds::event::build;
use fds::event::EventTime;

/// How long the API waits for fds before it decides by itself.
const BUDGET: Duration = Duration::from_millis(200);
/// The fallback: below this amount a transfer proceeds without a decision;
/// at or above it, the transfer is held (delayed) until verified.
const FALLBACK_ALLOW_BELOW_WON: i64 = 1_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().ok_or("usage: transfer_api HOST:PORT [AMOUNT_WON]")?;
    let amount: i64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(250_000);

    let client = |extra: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &brokers).set("socket.nagle.disable", "true");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    let producer: ThreadedProducer<DefaultProducerContext> =
        client(&[("enable.idempotence", "true"), ("acks", "all"), ("linger.ms", "1")]).create()?;
    let decisions: BaseConsumer =
        client(&[("group.id", "transfer-api-example"), ("enable.auto.commit", "false"), ("fetch.wait.max.ms", "1")])
            .create()?;

    // 1. Read decisions from the current end of every partition, before sending.
    let md = decisions.fetch_metadata(Some("decisions"), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        let (_, high) = decisions.fetch_watermarks("decisions", p.id(), Duration::from_secs(10))?;
        tpl.add_partition_offset("decisions", p.id(), Offset::Offset(high))?;
    }
    decisions.assign(&tpl)?;

    // 2. The transfer, as the open-banking withdrawal-transfer request carries it.
    let now = chrono::Utc::now();
    let tran_id = format!("F120220001U{:09}", now.timestamp_micros().rem_euclid(1_000_000_000));
    let account = "120220000000000000004242";
    let transfer = build::transfer(&tran_id)
        .at_time(EventTime::from_millis(now.timestamp_millis()))
        .account(account)
        .amount(amount)
        .payee("088", "110123456789")
        .payee_name("홍길동")
        .device("Dexample0001")
        .ip("10.1.2.3")
        .json();
    let deadline = Instant::now() + BUDGET;
    let deadline_ms = (now.timestamp_millis() + BUDGET.as_millis() as i64).to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "correlation-id", value: Some(tran_id.as_str()) })
        .insert(Header { key: "deadline-ms", value: Some(deadline_ms.as_str()) });
    let sent = Instant::now();
    producer.send(BaseRecord::to("transfers").key(account).payload(&transfer).headers(headers)).map_err(|(e, _)| e)?;
    println!("sent {tran_id}: {amount} won, budget {} ms", BUDGET.as_millis());

    // 3. Wait for the decision with our correlation id, until the deadline.
    while Instant::now() < deadline {
        let Some(msg) = decisions.poll(deadline.saturating_duration_since(Instant::now())) else { continue };
        let msg = msg?;
        let id = msg.headers().and_then(|h| {
            h.iter().find(|h| h.key == "correlation-id").and_then(|h| h.value).map(String::from_utf8_lossy)
        });
        if id.as_deref() != Some(tran_id.as_str()) {
            continue; // another request's answer
        }
        let d: serde_json::Value = serde_json::from_slice(msg.payload().unwrap_or_default())?;
        println!("decision after {:.1} ms: {}", sent.elapsed().as_secs_f64() * 1e3, d["decision"]);
        if d["decision"] == "hold" {
            println!("  verify by: {}", d["verification"]);
            for r in d["reasons"].as_array().into_iter().flatten() {
                println!("  {} {}", r["code"].as_str().unwrap_or(""), r["label"].as_str().unwrap_or(""));
            }
        }
        producer.flush(Duration::from_secs(1))?;
        return Ok(());
    }

    // 4. No answer within the budget: the documented fallback.
    let fallback = if amount < FALLBACK_ALLOW_BELOW_WON { "allow (fallback)" } else { "hold: delay (fallback)" };
    println!("no decision within {} ms: {fallback}", BUDGET.as_millis());
    Ok(())
}
