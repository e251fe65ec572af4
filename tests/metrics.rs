//! The metrics dashboards and alerts are built on (issue 16), scraped from a
//! real `fds run` (the binary, with the shipped rules and model) on the
//! embedded broker: consumer lag per assigned partition, the model's score
//! histogram and drift, the model and rule set in force, holds by source,
//! process metrics.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fds::kafka::{EmbeddedBroker, Topics};
use support::*;

const WAIT: Duration = Duration::from_secs(90);

/// Every sample of `name` (with labels) on a /metrics page: labels text to value.
fn samples(page: &str, name: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None;
            }
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The partitions `fds_consumer_lag` has a series for: (topic, partition) to lag.
fn lags(page: &str) -> BTreeMap<(String, i32), f64> {
    samples(page, "fds_consumer_lag")
        .into_iter()
        .map(|(labels, v)| {
            let label = |k: &str| {
                let from = labels.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
                labels[from..].split('"').next().unwrap().to_owned()
            };
            ((label("topic"), label("partition").parse().unwrap()), v)
        })
        .collect()
}

fn scrape(listen: std::net::SocketAddr) -> String {
    http_get(listen, "/metrics").map(|(_, body)| body).unwrap_or_default()
}

/// One instance decides a day of traffic on two partitions: its lag series
/// cover the four input partitions and read 0 once everything is decided;
/// the score histogram counts every transfer the model scored; holds by
/// source add up to the holds decided; the model and rule set in force have
/// their info series. A second instance joining takes half the partitions:
/// their series leave the first one's page and appear on the second's.
#[test]
fn lag_scores_holds_and_versions_are_exported() {
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 2).unwrap();
    let brokers = broker.bootstrap_servers();
    // Enough transfers for the drift index (PSI_MIN_SCORES).
    let events = stream(1000);
    let ids = transfer_ids(&events);

    let listen = free_port();
    let first = FdsRun::start_listening(&brokers, None, listen);
    assert!(wait_for(WAIT, || http_get(listen, "/readyz").is_some_and(|(code, _)| code == 200)), "ready");
    let all: BTreeSet<(String, i32)> = [&topics.transfers, &topics.context_events]
        .into_iter()
        .flat_map(|t| (0..2).map(move |p| (t.clone(), p)))
        .collect();
    assert!(
        wait_for(WAIT, || lags(&scrape(listen)).keys().cloned().collect::<BTreeSet<_>>() == all),
        "a lag series per assigned input partition:\n{}",
        scrape(listen)
    );

    let p = producer(&brokers);
    send_events(&p, &topics, &events, 600_000);
    let mut decisions = Reader::new(&brokers, &topics.decisions);
    assert!(decisions.read_until(WAIT, |r| all_decided(r, ids.len())), "every transfer decided");
    // Decided, acknowledged, then measured (once a second): 0 everywhere.
    assert!(
        wait_for(Duration::from_secs(10), || {
            let l = lags(&scrape(listen));
            l.len() == 4 && l.values().all(|&v| v == 0.0)
        }),
        "no lag once the stream is decided:\n{}",
        scrape(listen)
    );

    let page = scrape(listen);
    let decided = ids.len() as f64;
    assert_eq!(value(&page, "fds_model_score_count"), Some(decided), "the model scored every transfer:\n{page}");
    assert_eq!(value(&page, "fds_model_score_bucket{le=\"+Inf\"}"), Some(decided));
    assert_eq!(samples(&page, "fds_model_score_bucket").len(), 21, "20 bins and +Inf");
    let holds_decided = decisions.records.iter().filter(|r| r.json()["decision"] == "hold").count() as f64;
    assert!(holds_decided > 0.0);
    let held = |s: &str| value(&page, &format!("fds_holds_total{{source=\"{s}\"}}")).unwrap();
    assert_eq!(held("rules") + held("model") + held("both"), holds_decided, "{page}");
    assert_eq!(held("model") + held("both"), value(&page, "fds_model_holds_total").unwrap(), "{page}");
    let by_verification: f64 = samples(&page, "fds_decisions_total")
        .iter()
        .filter(|(labels, _)| labels.contains("decision=\"hold\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(by_verification, holds_decided);

    let model = fds::model::Model::load(std::path::Path::new("models/default")).unwrap();
    let rules = fds::rules::RuleSet::load_dir(std::path::Path::new("rules")).unwrap();
    let info = samples(&page, "fds_model_info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info.get(&format!("{{version=\"{}\"}}", model.version())), Some(&1.0), "{info:?}");
    let info = samples(&page, "fds_ruleset_info");
    assert_eq!(info.get(&format!("{{version=\"{}\"}}", rules.version())), Some(&1.0), "{info:?}");
    assert_eq!(info.len(), 1, "{info:?}");
    let psi = value(&page, "fds_model_score_psi").expect("the drift gauge is there");
    eprintln!("{decided} transfers scored, {holds_decided} held; PSI against the card's reference {psi:.4}");
    assert!(psi.is_finite() && psi >= 0.0, "{psi}");
    assert!(decided >= fds::model::drift::PSI_MIN_SCORES as f64, "{decided} transfers");
    assert!(psi > 0.0, "{decided} scores against the card's reference give an index: {psi}");
    // CPU seconds are counted whole: a second may not have passed yet.
    assert!(value(&page, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0), "{page}");
    for name in ["process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds"] {
        assert!(value(&page, name).is_some_and(|v| v > 0.0), "{name}:\n{page}");
    }

    // A second instance joins: each holds one partition of each input, and
    // the first one's page keeps only its own.
    let second_listen = free_port();
    let _second = FdsRun::start_listening(&brokers, None, second_listen);
    let split = || {
        let (a, b) = (lags(&scrape(listen)), lags(&scrape(second_listen)));
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (a.into_keys().collect(), b.into_keys().collect());
        a.len() == 2 && b.len() == 2 && a.is_disjoint(&b) && a.union(&b).cloned().collect::<BTreeSet<_>>() == all
    };
    assert!(
        wait_for(WAIT, split),
        "the revoked partitions' series left the first instance:\n{:?}\n{:?}",
        lags(&scrape(listen)),
        lags(&scrape(second_listen))
    );
    assert!(first.terminate().success());
}
