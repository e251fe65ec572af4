//! Rule tests: cases kept beside the rules, in `rules/tests/*.toml`.
//!
//! A case tells a short story about one customer and says what the rules
//! must decide on its last transfer:
//!
//! ```toml
//! [[case]]
//! name = "certificate re-issued on a new phone, then 1,000,000 won to a new payee"
//! events = [
//!   { at = "-9d", type = "transfer", payee = "004-1002003004", amount = "5만", device = "PHONE-1" },
//!   { at = "-40m", type = "device_registered", device = "PHONE-2" },
//!   { at = "-30m", type = "cert_reissued", device = "PHONE-2" },
//! ]
//! transfer = { payee = "088-9998887776", amount = "100만", device = "PHONE-2" }
//! expect = "hold"
//! verify = "callback"
//! reasons = ["VP001", "VP010"]
//! must_fire = ["VP_CERT_REISSUE_NEW_DEVICE_NEW_PAYEE"]
//! ```
//!
//! - `events` happen before the transfer under test, at times relative to it
//!   (`at = "-50m"`; units `s`, `m`, `h`, `d`, combinable: `-1d2h`). Types:
//!   `transfer`, `login` (`success = false` for a failed one),
//!   `device_registered`, `cert_issued`, `cert_reissued`, `cert_renewed`,
//!   `phone_changed`, `remote_app` (`app`), `limit_raised` (`limit`), `ekyc`,
//!   and fraud reports: `report` and `cleared`, naming an earlier transfer of
//!   the case (`transfer = "ID"`), or a payee (another victim's transfer,
//!   with `transfer` as its id when a later `cleared` must name it).
//!   Every event is about the case's account unless it names another
//!   (`account`), which is how many senders paying one mule account are told.
//! - `transfer` is the transfer under test, at the case's `time` (KST,
//!   `YYYY-MM-DD HH:MM`; default Monday 2026-11-02 14:10, see
//!   [`crate::event::build::DEFAULT_TIME`]). Amounts are integers or strings
//!   as conditions write them (`"300만"`); payees `BANK-ACCOUNT`.
//! - `expect` (`hold` or `allow`) is required; `verify`, `reasons` (exactly
//!   the decision's reason codes), `must_fire` and `must_not_fire` (rule
//!   ids, shadow rules included) are checked when given.
//! - `lists = { mule_accounts = ["088-5554443332"] }` adds list lines for
//!   this case only, so list rules are tested without touching the lists
//!   production reads. Each line is checked as a list file checks its lines
//!   (attributes such as `added=2026-11-01` included), at its position.
//!
//! Guarantees: every case runs on a fresh engine with the state settings
//! `fds run` has, and without a model, so a case says what the rules do and
//! does not move when a model is retrained. Events are built by
//! [`crate::event::build`] and then read back through the wire decoder, so a
//! case can hold only events the product could receive; a value it would
//! refuse is reported at the case's line. Every problem in every case file
//! is reported, each at `file:line:column`, before anything runs.

mod format;
pub mod junit;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::engine::{Decision, Engine};
use crate::event::Event;
use crate::rules::{self, Problem, RuleSet, Verification};
use crate::state::StateConfig;

/// The directory of case files inside a rules directory.
pub const TESTS_DIR: &str = "tests";

/// Why the cases could not be run at all.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    /// A case file or the tests directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The case files were read but hold problems: every one found.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

/// A case, checked and ready to run.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file it is written in.
    pub path: PathBuf,
    /// Line of its `[[case]]` header.
    pub line: usize,
    /// What it is about, in the analyst's words.
    pub name: String,
    /// Extra list lines for this case, by list name.
    lists: Vec<(String, Vec<String>)>,
    /// Events before the transfer, in time order, then the transfer.
    events: Vec<Event>,
    expect: Expect,
}

/// What a case expects of the decision on its last transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expect {
    hold: bool,
    verify: Option<Verification>,
    reasons: Option<BTreeSet<String>>,
    must_fire: Vec<String>,
    must_not_fire: Vec<String>,
}

/// A case that did not hold.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The case.
    pub path: PathBuf,
    /// Line of its `[[case]]` header.
    pub line: usize,
    /// Its name.
    pub name: String,
    /// Each expectation that failed.
    pub expected: Vec<String>,
    /// What the rules did instead: decision, score, every rule that fired.
    pub got: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}:{}: FAILED {}", self.path.display(), self.line, self.name)?;
        for e in &self.expected {
            writeln!(f, "    expected {e}")?;
        }
        write!(f, "    got {}", self.got)
    }
}

/// Rules with and without cases, for `--require-coverage`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Rules no case names in `must_fire`.
    pub without_firing_case: Vec<String>,
    /// Rules no case names in `must_not_fire` (a near miss).
    pub without_near_miss: Vec<String>,
}

/// What running the cases found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Cases run.
    pub cases: usize,
    /// Case files read.
    pub files: usize,
    /// The cases that failed, in file and line order.
    pub failures: Vec<Failure>,
    /// Which rules have cases.
    pub coverage: Coverage,
}

/// Read and check every case file in `rules_dir/tests/` against `set` (the
/// rule ids cases name must exist in it). No directory: no cases.
pub fn load(rules_dir: &Path, set: &RuleSet) -> Result<Vec<Case>, CasesError> {
    let dir = rules_dir.join(TESTS_DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    fn io(path: &Path) -> impl Fn(std::io::Error) -> CasesError + '_ {
        move |source| CasesError::Io { path: path.to_path_buf(), source }
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let path = entry.map_err(io(&dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".toml") && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        format::parse_file(&path, &text, set, &mut cases, &mut problems);
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(CasesError::Invalid { problems })
    }
}

/// Run every case on a fresh engine with `state`'s settings and no model; a
/// case that adds list lines runs on `set` with its lists extended by them.
pub fn run(set: &Arc<RuleSet>, cases: &[Case], state: &StateConfig) -> Outcome {
    let mut failures = Vec::new();
    for case in cases {
        let set = if case.lists.is_empty() { Ok(set.clone()) } else { set.with_list_lines(&case.lists).map(Arc::new) };
        let result = match set {
            Ok(set) => run_case(case, set, state),
            Err(e) => Err(Failure {
                path: case.path.clone(),
                line: case.line,
                name: case.name.clone(),
                expected: vec!["its list lines to load".to_owned()],
                got: e.join("; "),
            }),
        };
        if let Err(failure) = result {
            failures.push(failure);
        }
    }
    let files = cases.iter().map(|c| &c.path).collect::<BTreeSet<_>>().len();
    Outcome { cases: cases.len(), files, failures, coverage: coverage(set, cases) }
}

fn coverage(set: &RuleSet, cases: &[Case]) -> Coverage {
    let named = |pick: fn(&Expect) -> &Vec<String>| -> BTreeSet<&str> {
        cases.iter().flat_map(|c| pick(&c.expect).iter().map(String::as_str)).collect()
    };
    let (fire, miss) = (named(|e| &e.must_fire), named(|e| &e.must_not_fire));
    let without = |named: &BTreeSet<&str>| {
        set.rules().iter().map(|r| r.id()).filter(|id| !named.contains(id)).map(str::to_owned).collect()
    };
    Coverage { without_firing_case: without(&fire), without_near_miss: without(&miss) }
}

fn run_case(case: &Case, set: Arc<RuleSet>, state: &StateConfig) -> Result<(), Failure> {
    let engine = Engine::new(state.clone(), Arc::new(ArcSwap::new(set)));
    let mut last = None;
    for event in &case.events {
        match engine.process(event) {
            Ok(scored) => last = scored.map(|s| s.decision),
            Err(e) => {
                return Err(Failure {
                    path: case.path.clone(),
                    line: case.line,
                    name: case.name.clone(),
                    expected: vec!["every event to be taken".to_owned()],
                    got: format!("an event refused: {e}"),
                })
            }
        }
    }
    let decision = last.expect("a case ends with its transfer");
    let expected = case.expect.unmet(&decision);
    if expected.is_empty() {
        return Ok(());
    }
    Err(Failure {
        path: case.path.clone(),
        line: case.line,
        name: case.name.clone(),
        expected,
        got: describe(&decision),
    })
}

/// What the rules did: `hold/callback, score 50 of 100; fired VP001 (...)`.
fn describe(d: &Decision) -> String {
    let rules = d.rules.rules();
    let mut s = match d.verification {
        Some(v) => format!("hold/{v}"),
        None => "allow".to_owned(),
    };
    s.push_str(&format!(", score {} of {}", d.score, d.rules.settings().hold_score));
    let fired: Vec<String> = d
        .fired
        .iter()
        .map(|&i| (&rules[usize::from(i)], ""))
        .chain(d.shadow_fired.iter().map(|&i| (&rules[usize::from(i)], " shadow")))
        .map(|(r, shadow)| {
            let action = match r.action() {
                rules::Action::Hold(v) => format!("hold/{v}"),
                rules::Action::Score(p) => format!("+{p}"),
            };
            format!("{} ({} {action}{shadow})", r.id(), r.reason())
        })
        .collect();
    if fired.is_empty() {
        s.push_str("; no rule fired");
    } else {
        s.push_str("; fired ");
        s.push_str(&fired.join(", "));
    }
    s
}

impl Expect {
    /// The expectations `d` does not meet, each as the analyst would say it.
    fn unmet(&self, d: &Decision) -> Vec<String> {
        let mut out = Vec::new();
        if d.is_hold() != self.hold {
            out.push(if self.hold { "hold".to_owned() } else { "allow".to_owned() });
        }
        if let (Some(want), true) = (self.verify, d.is_hold()) {
            if d.verification != Some(want) {
                out.push(format!("verification {want}"));
            }
        }
        if let Some(want) = &self.reasons {
            let got: BTreeSet<String> = d.reason_codes().map(str::to_owned).collect();
            if &got != want {
                out.push(format!("reasons {}", list(want.iter())));
            }
        }
        let rules = d.rules.rules();
        let fired: BTreeSet<&str> =
            d.fired.iter().chain(d.shadow_fired.iter()).map(|&i| rules[usize::from(i)].id()).collect();
        let missing: Vec<&String> = self.must_fire.iter().filter(|id| !fired.contains(id.as_str())).collect();
        if !missing.is_empty() {
            out.push(format!("to fire: {}", list(missing.into_iter())));
        }
        let unwanted: Vec<&String> = self.must_not_fire.iter().filter(|id| fired.contains(id.as_str())).collect();
        if !unwanted.is_empty() {
            out.push(format!("not to fire: {}", list(unwanted.into_iter())));
        }
        out
    }
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.map(String::as_str).collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}
