//! The dashboards and alerts in `grafana/`, checked with the real parts: a
//! Prometheus (Debian's package, started by `scripts/prometheus`) scraping a
//! real `fds run` every second while `fds load` plays the demo stream through
//! it, with dead letters and a rejected rule reload among the traffic.
//!
//! Then every PromQL expression of every dashboard panel goes through
//! Prometheus' HTTP API and must parse and return series (the traffic made
//! them), every alerting and recording rule must have been loaded and
//! evaluated without error, and every metric an alert reads must exist.
//! `promtool check rules` and `promtool test rules` run on the alert files.
//!
//! Without Prometheus installed the tests say so and pass, except where
//! `FDS_REQUIRE_PROMETHEUS` is set (scripts/test sets it after installing
//! it), so a fresh machine cannot skip them by accident. With
//! `FDS_DASHBOARD_PREVIEW` set to a directory, the test also renders each
//! dashboard from the same Prometheus into a PNG there
//! (`scripts/dashboard-preview` sets it).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fds::kafka::{EmbeddedBroker, Topics};
use rdkafka::message::OwnedHeaders;
use serde_json::Value;
use support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether Prometheus is here; `false` means skip, unless it is required.
fn prometheus_installed() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success())
        && Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("FDS_REQUIRE_PROMETHEUS").is_none(),
            "FDS_REQUIRE_PROMETHEUS is set but prometheus/promtool are missing: run `scripts/prometheus install`"
        );
        eprintln!("prometheus is not installed (`scripts/prometheus install`): skipping");
    }
    found
}

/// The files of `dir` (under the repository root) ending in `.ext`, sorted.
fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

fn alert_files() -> Vec<PathBuf> {
    let files = files_in("grafana/alerts", "yml");
    assert!(!files.is_empty(), "no alert rule files in grafana/alerts/");
    files
}

fn dashboard_files() -> Vec<PathBuf> {
    let files = files_in("grafana/dashboards", "json");
    assert!(files.len() >= 4, "the four dashboards in grafana/dashboards/: {files:?}");
    files
}

/// Run `promtool` with `args`; fail with its output unless it succeeds.
fn promtool(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("promtool").args(args).current_dir(root()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !prometheus_installed() {
        return;
    }
    let mut args: Vec<&std::ffi::OsStr> = vec!["check".as_ref(), "rules".as_ref()];
    let files = alert_files();
    args.extend(files.iter().map(|f| f.as_os_str()));
    let out = promtool(&args);
    assert!(out.contains("SUCCESS"), "{out}");

    let tests = files_in("grafana/alerts/tests", "yml");
    assert!(!tests.is_empty(), "no promtool unit tests in grafana/alerts/tests/");
    let mut args: Vec<&std::ffi::OsStr> = vec!["test".as_ref(), "rules".as_ref()];
    args.extend(tests.iter().map(|f| f.as_os_str()));
    let out = promtool(&args);
    assert!(out.contains("SUCCESS"), "{out}");
    // The alerts the issue names are unit-tested, not only loaded.
    let all_tests: String = tests.iter().map(|t| std::fs::read_to_string(t).unwrap()).collect();
    for alert in ["FdsDecisionAgeOverBudget", "FdsConsumerLagGrowing"] {
        assert!(all_tests.contains(alert), "no promtool unit test for {alert}");
    }
}

/// A Prometheus started by `scripts/prometheus`, stopped when dropped.
struct Prometheus {
    dir: tempfile::TempDir,
    url: String,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(root().join("scripts/prometheus"));
        cmd.args(["start", "--wait-scrape", "--interval", "1s", "--target", &target.to_string(), "--dir"])
            .arg(dir.path());
        for f in alert_files() {
            cmd.arg("--rules").arg(f);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "scripts/prometheus start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let url = stdout.lines().last().unwrap().trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "the URL on start's last line: {stdout}");
        Prometheus { dir, url }
    }

    /// GET an API path; the `data` of a `success` answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut req = ureq::get(&format!("{}{path}", self.url));
        for (k, v) in params {
            req = req.query(k, v);
        }
        let body: Value = match req.call() {
            Ok(r) => r.into_json().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(_, r)) => r.into_json().map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        match body["status"].as_str() {
            Some("success") => Ok(body["data"].clone()),
            _ => Err(format!("{}: {}", body["errorType"], body["error"])),
        }
    }

    /// An instant query's result series.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/prometheus")).args(["stop", "--dir"]).arg(self.dir.path()).status();
    }
}

/// Every `expr` of every panel target, rows' panels included, with the
/// panel's title.
fn panel_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A panel's expression as Grafana would send it, with the dashboard's
/// template variables at their "All" values and the interval at one a
/// one-second scrape fills (grafana/generate/variables.json).
fn substitute(expr: &str) -> String {
    // One table for the generator, the preview and this test.
    let table: Vec<(String, String)> =
        serde_json::from_str(include_str!("../grafana/generate/variables.json")).expect("variables.json");
    let mut e = expr.to_owned();
    for (var, value) in &table {
        e = e.replace(var.as_str(), value);
    }
    assert!(!e.contains('$'), "a template variable the test does not know in: {expr}");
    e
}

/// Metric names an expression reads: identifiers that name a metric of
/// fds's, of the process collector, or `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
            i += 1;
        }
        if i > start {
            let word = &expr[start..i];
            let quoted = start > 0 && bytes[start - 1] == b'"';
            if !quoted && (word.starts_with("fds_") || word.starts_with("process_")) {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_panel_and_alert_expression_runs_against_a_real_prometheus_scraping_fds() {
    if !prometheus_installed() {
        return;
    }
    let topics = Topics::default();
    let broker = EmbeddedBroker::start(&topics, 2).unwrap();
    let brokers = broker.bootstrap_servers();
    // The shipped rules, in a directory of the test's own, to reload.
    let work = tempfile::tempdir().unwrap();
    let rules = work.path().join("rules");
    copy_dir(&root().join("rules"), &rules);
    let config = work.path().join("fds.toml");
    std::fs::write(&config, format!("[engine]\nrules_dir = {:?}\n", rules.display().to_string())).unwrap();
    let listen = free_port();
    let _run = FdsRun::start_listening(&brokers, Some(&config), listen);
    assert!(wait_for(Duration::from_secs(60), || http_get(listen, "/readyz").is_some_and(|r| r.0 == 200)), "fds ready");
    let prometheus = Prometheus::start(listen);
    assert!(
        wait_for(Duration::from_secs(30), || prometheus.query("up{job=\"fds\"} == 1").is_ok_and(|r| !r.is_empty())),
        "Prometheus scraping fds"
    );

    // Traffic: bad messages, a rejected reload, then the demo stream.
    let p = producer(&brokers);
    for payload in [&b"not json"[..], br#"{"type":"transfer","schema_version":99}"#] {
        send_raw(&p, &topics.transfers, b"k", payload, OwnedHeaders::new());
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).unwrap();
    std::fs::write(rules.join("broken.toml"), "[[rule]]\nid = \"X\"\nwhen = \"amount >\"\n").unwrap();
    let demo = root().join("replay-data/demo.jsonl.gz");
    let load = Command::new(env!("CARGO_BIN_EXE_fds"))
        .args(["load", "--brokers", &brokers, "--rate", "3000", "--json"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(load.status.success(), "fds load: {}", String::from_utf8_lossy(&load.stderr));
    std::fs::remove_file(rules.join("broken.toml")).unwrap();
    // A few more scrapes and rule evaluations after the last decision.
    std::thread::sleep(Duration::from_secs(5));

    let mut problems = Vec::new();
    let mut checked = 0;
    for file in dashboard_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let exprs = panel_exprs(&dashboard);
        assert!(!exprs.is_empty(), "{name}: no panel expressions");
        for (title, expr) in exprs {
            checked += 1;
            match prometheus.query(&substitute(&expr)) {
                Err(e) => problems.push(format!("{name} / {title}: {expr}: {e}")),
                Ok(series) if series.is_empty() => problems.push(format!("{name} / {title}: no series: {expr}")),
                Ok(_) => {}
            }
        }
    }

    // The rules Prometheus loaded from grafana/alerts/: all evaluated, none
    // in error, recording rules with series, every metric an alert reads there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let groups = loop {
        let data = prometheus.api("/api/v1/rules", &[]).unwrap();
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        let evaluated = groups.iter().all(|g| g["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        if (!groups.is_empty() && evaluated) || Instant::now() > deadline {
            break groups;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!groups.is_empty(), "Prometheus loaded no rule groups from grafana/alerts/");
    let mut alerts = 0;
    for group in &groups {
        for rule in group["rules"].as_array().into_iter().flatten() {
            let name = rule["name"].as_str().unwrap_or_default();
            let expr = rule["query"].as_str().unwrap_or_default();
            checked += 1;
            if rule["health"] != "ok" {
                problems.push(format!("rule {name}: health {} {}", rule["health"], rule["lastError"]));
            }
            if let Err(e) = prometheus.query(expr) {
                problems.push(format!("rule {name}: {expr}: {e}"));
            }
            if rule["type"] == "recording" {
                // A rule comparing with the past (`offset 15m`) has nothing to
                // read in a test a minute long: it must parse and evaluate.
                if !expr.contains(" offset ") && prometheus.query(name).is_ok_and(|s| s.is_empty()) {
                    problems.push(format!("recording rule {name}: no series: {expr}"));
                }
            } else {
                alerts += 1;
            }
            for metric in metric_names(expr) {
                if prometheus.query(&format!("count({{__name__=\"{metric}\"}})")).is_ok_and(|s| s.is_empty()) {
                    problems.push(format!("rule {name}: reads {metric}, which fds does not export: {expr}"));
                }
            }
        }
    }
    assert!(alerts >= 8, "the alerts the issue names: found {alerts}");
    // The traffic reached Prometheus as it was sent.
    let held = prometheus.query("sum(fds_decisions_total{decision=\"hold\"})").unwrap();
    assert!(held[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "holds scraped");
    let dead = prometheus.query("sum(fds_dead_letter_total)").unwrap();
    assert!(dead[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 2.0, "dead letters scraped");
    let rejected = prometheus.query("sum(fds_rules_reloads_total{result=\"rejected\"})").unwrap();
    assert!(rejected[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 1.0, "the rejected reload scraped");

    if let Some(out) = std::env::var_os("FDS_DASHBOARD_PREVIEW") {
        let status = Command::new(root().join("scripts/dashboard-preview"))
            .args(["--prometheus", &prometheus.url, "--out"])
            .arg(out)
            .status()
            .unwrap();
        assert!(status.success(), "scripts/dashboard-preview");
    }
    assert!(problems.is_empty(), "{} of {checked} expressions failed:\n{}", problems.len(), problems.join("\n"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(fds_decision_age_seconds_bucket{instance=~\"fds_x\"}[5m]))) \
         > on() fds:budget and process_cpu_seconds_total",
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["fds_decision_age_seconds_bucket", "process_cpu_seconds_total"]);
}
