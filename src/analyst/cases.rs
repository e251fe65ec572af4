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
//!   production reads.
//!
//! Guarantees: every case runs on a fresh engine with the state settings
//! `fds run` has, and without a model, so a case says what the rules do and
//! does not move when a model is retrained. Events are built by
//! [`crate::event::build`] and then read back through the wire decoder, so a
//! case can hold only events the product could receive; a value it would
//! refuse is reported at the case's line. Every problem in every case file
//! is reported, each at `file:line:column`, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;
use toml::Spanned;

use crate::engine::{Decision, Engine};
use crate::event::build::{self, DEFAULT_TIME};
use crate::event::{CertificateAction, Channel, Event, EventTime, TransferPurpose, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::rules::{self, Problem, RuleSet, RulesError, Verification};
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
        parse_file(&path, &text, set, &mut cases, &mut problems);
    }
    if problems.is_empty() {
        Ok(cases)
    } else {
        Err(CasesError::Invalid { problems })
    }
}

/// Run every case on a fresh engine with `state`'s settings and no model.
/// `rules_dir` is read again only for cases that add list lines.
pub fn run(rules_dir: &Path, set: &Arc<RuleSet>, cases: &[Case], state: &StateConfig) -> Outcome {
    let mut failures = Vec::new();
    for case in cases {
        let set = if case.lists.is_empty() {
            Ok(set.clone())
        } else {
            rules::load_dir_with_list_lines(rules_dir, &case.lists).map(Arc::new)
        };
        let result = match set {
            Ok(set) => run_case(case, set, state),
            Err(e) => Err(Failure {
                path: case.path.clone(),
                line: case.line,
                name: case.name.clone(),
                expected: vec!["its list lines to load".to_owned()],
                got: one_line(&e),
            }),
        };
        if let Err(failure) = result {
            failures.push(failure);
        }
    }
    let files = cases.iter().map(|c| &c.path).collect::<BTreeSet<_>>().len();
    Outcome { cases: cases.len(), files, failures, coverage: coverage(set, cases) }
}

fn one_line(e: &RulesError) -> String {
    e.to_string().replace('\n', "; ")
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

// ---------------------------------------------------------------- the file format

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    time: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    #[serde(default)]
    lists: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    events: Vec<Spanned<RawEvent>>,
    transfer: Spanned<RawEvent>,
    expect: Spanned<String>,
    verify: Option<Spanned<String>>,
    reasons: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    must_fire: Vec<Spanned<String>>,
    #[serde(default)]
    must_not_fire: Vec<Spanned<String>>,
}

/// An amount as analysts write it: `3000000`, or `"300만"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAmount {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: Option<Spanned<String>>,
    #[serde(rename = "type")]
    kind: Option<Spanned<String>>,
    id: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    amount: Option<Spanned<RawAmount>>,
    payee: Option<Spanned<String>>,
    payee_name: Option<Spanned<String>>,
    channel: Option<Spanned<String>>,
    purpose: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
    ip: Option<Spanned<String>>,
    success: Option<Spanned<bool>>,
    app: Option<Spanned<String>>,
    limit: Option<Spanned<RawAmount>>,
    transfer: Option<Spanned<String>>,
    typology: Option<Spanned<String>>,
}

/// The event types a case may use, with the fields each takes besides `at`,
/// `type`, `account`.
const EVENT_TYPES: [(&str, &[&str]); 13] = [
    ("transfer", &["id", "amount", "payee", "payee_name", "channel", "purpose", "device", "ip"]),
    ("login", &["device", "ip", "success"]),
    ("device_registered", &["device"]),
    ("cert_issued", &["device"]),
    ("cert_reissued", &["device"]),
    ("cert_renewed", &["device"]),
    ("phone_changed", &[]),
    ("remote_app", &["device", "app"]),
    ("limit_raised", &["limit"]),
    ("ekyc", &["device"]),
    ("report", &["transfer", "payee", "typology"]),
    ("cleared", &["transfer", "payee"]),
    // Not written in files: the transfer under test, which has no `at`.
    ("", &["id", "amount", "payee", "payee_name", "channel", "purpose", "device", "ip"]),
];

/// Where problems in one case file are positioned.
struct FileCx<'a> {
    path: &'a Path,
    text: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl FileCx<'_> {
    fn report(&mut self, offset: usize, message: impl Into<String>) {
        let (line, column) = rules::line_col(self.text, offset);
        self.problems.push(Problem { path: self.path.to_path_buf(), line, column, message: message.into() });
    }
}

fn parse_file(path: &Path, text: &str, set: &RuleSet, cases: &mut Vec<Case>, problems: &mut Vec<Problem>) {
    let mut cx = FileCx { path, text, problems };
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(": ");
            return cx.report(e.span().map_or(0, |s| s.start), message);
        }
    };
    if raw.case.is_empty() {
        cx.report(0, "no cases in this file: expected one or more [[case]] tables");
    }
    for (n, raw) in raw.case.iter().enumerate() {
        let before = cx.problems.len();
        let case = parse_case(&mut cx, raw, set, cases.len() + n + 1);
        if cx.problems.len() == before {
            cases.extend(case);
        }
    }
}

fn parse_case(cx: &mut FileCx<'_>, raw: &Spanned<RawCase>, set: &RuleSet, number: usize) -> Option<Case> {
    let header = raw.span().start;
    let c = raw.get_ref();
    let name = c.name.get_ref().trim().to_owned();
    if name.is_empty() {
        cx.report(c.name.span().start, "`name` is empty: say what the case is about");
    }
    let time = match &c.time {
        None => EventTime::parse_kst(DEFAULT_TIME).expect("the builders' default time parses"),
        Some(t) => match parse_time(t.get_ref()) {
            Ok(time) => time,
            Err(message) => {
                cx.report(t.span().start, message);
                return None;
            }
        },
    };
    let account = c.account.as_ref().map_or(build::DEFAULT_ACCOUNT, |a| a.get_ref().as_str());
    let mut lists = Vec::new();
    let list_names: Vec<&str> = set.lists().map(|(n, _)| n).collect();
    for (list, lines) in &c.lists {
        if !list_names.contains(&list.get_ref().as_str()) {
            let hint = rules::did_you_mean(list.get_ref(), list_names.iter().copied()).map_or_else(
                || format!("; the lists are {}", list_names.join(", ")),
                |s| format!("; did you mean `{s}`?"),
            );
            cx.report(list.span().start, format!("no list `{}` in the rules directory{hint}", list.get_ref()));
        }
        lists.push((list.get_ref().clone(), lines.iter().map(|l| l.get_ref().clone()).collect()));
    }
    // Events in time order; equal times keep the file's order, and the
    // transfer under test comes last.
    let mut timed = Vec::new();
    let mut ids = Vec::new();
    for (i, e) in c.events.iter().enumerate() {
        let at = match &e.get_ref().at {
            Some(at) => match parse_offset(at.get_ref()) {
                Ok(ms) => ms,
                Err(message) => {
                    cx.report(at.span().start, message);
                    continue;
                }
            },
            None => {
                cx.report(e.span().start, "an event needs `at`, its time before the transfer, e.g. `at = \"-50m\"`");
                continue;
            }
        };
        let id = format!("CASE{number}E{}", i + 1);
        if let Some(event) = parse_event(cx, e, EventTime(time.0 + at), account, &id, &ids) {
            if let Event::Transfer(t) = &event {
                ids.push((t.bank_tran_id.clone(), t.recv_client_bank_code.clone(), t.recv_client_account_num.clone()));
            }
            timed.push((at, event));
        }
    }
    timed.sort_by_key(|(at, _)| *at);
    let mut events: Vec<Event> = timed.into_iter().map(|(_, e)| e).collect();
    if c.transfer.get_ref().at.is_some() || c.transfer.get_ref().kind.is_some() {
        cx.report(
            c.transfer.span().start,
            "the transfer under test takes no `at` or `type`: it is a transfer, at the case's `time`",
        );
    }
    events.extend(parse_event(cx, &c.transfer, time, account, &format!("CASE{number}"), &ids));
    let expect = parse_expect(cx, c, set);
    Some(Case {
        path: cx.path.to_path_buf(),
        line: rules::line_col(cx.text, header).0,
        name,
        lists,
        events,
        expect: expect?,
    })
}

fn parse_expect(cx: &mut FileCx<'_>, c: &RawCase, set: &RuleSet) -> Option<Expect> {
    let hold = match c.expect.get_ref().as_str() {
        "hold" => Some(true),
        "allow" => Some(false),
        other => {
            cx.report(c.expect.span().start, format!("`expect` is \"hold\" or \"allow\", found \"{other}\""));
            None
        }
    };
    let verify = match &c.verify {
        None => None,
        Some(v) => match Verification::from_name(v.get_ref()) {
            Some(_) if hold == Some(false) => {
                cx.report(v.span().start, "`verify` goes with expect = \"hold\"");
                None
            }
            Some(found) => Some(found),
            None => {
                cx.report(v.span().start, format!("unknown verification `{}`: delay, ars or callback", v.get_ref()));
                None
            }
        },
    };
    let mut ids = |key: &str, list: &[Spanned<String>]| -> Vec<String> {
        let mut out = Vec::new();
        for id in list {
            if set.rules().iter().any(|r| r.id() == id.get_ref()) {
                out.push(id.get_ref().clone());
            } else {
                let hint = rules::did_you_mean(id.get_ref(), set.rules().iter().map(|r| r.id()))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.report(id.span().start, format!("`{key}` names no rule `{}`{hint}", id.get_ref()));
            }
        }
        out
    };
    let must_fire = ids("must_fire", &c.must_fire);
    let must_not_fire = ids("must_not_fire", &c.must_not_fire);
    for id in c.must_not_fire.iter().filter(|id| must_fire.contains(id.get_ref())) {
        cx.report(id.span().start, format!("`{}` is in both must_fire and must_not_fire", id.get_ref()));
    }
    let reasons = c.reasons.as_ref().map(|r| r.iter().map(|s| s.get_ref().clone()).collect());
    Some(Expect { hold: hold?, verify, reasons, must_fire, must_not_fire })
}

/// Build one event with the builders, then read it back through the wire
/// decoder so it is held to every bound a real message is.
fn parse_event(
    cx: &mut FileCx<'_>,
    raw: &Spanned<RawEvent>,
    at: EventTime,
    case_account: &str,
    default_id: &str,
    transfers: &[(String, String, String)],
) -> Option<Event> {
    let start = raw.span().start;
    let e = raw.get_ref();
    let kind = e.kind.as_ref().map_or("", |k| k.get_ref().as_str());
    let Some((_, allowed)) = EVENT_TYPES.iter().find(|(name, _)| *name == kind) else {
        let k = e.kind.as_ref().expect("the transfer under test has the empty type");
        let names = EVENT_TYPES.iter().map(|(n, _)| *n).filter(|n| !n.is_empty());
        let hint = rules::did_you_mean(kind, names.clone()).map_or_else(
            || format!("; types are {}", names.collect::<Vec<_>>().join(", ")),
            |s| format!("; did you mean `{s}`?"),
        );
        cx.report(k.span().start, format!("unknown event type `{kind}`{hint}"));
        return None;
    };
    if e.kind.is_none() && e.at.is_some() {
        cx.report(start, "an event needs `type`, e.g. `type = \"login\"`");
        return None;
    }
    let fields: [(&str, Option<usize>); 13] = [
        ("id", e.id.as_ref().map(|v| v.span().start)),
        ("amount", e.amount.as_ref().map(|v| v.span().start)),
        ("payee", e.payee.as_ref().map(|v| v.span().start)),
        ("payee_name", e.payee_name.as_ref().map(|v| v.span().start)),
        ("channel", e.channel.as_ref().map(|v| v.span().start)),
        ("purpose", e.purpose.as_ref().map(|v| v.span().start)),
        ("device", e.device.as_ref().map(|v| v.span().start)),
        ("ip", e.ip.as_ref().map(|v| v.span().start)),
        ("success", e.success.as_ref().map(|v| v.span().start)),
        ("app", e.app.as_ref().map(|v| v.span().start)),
        ("limit", e.limit.as_ref().map(|v| v.span().start)),
        ("transfer", e.transfer.as_ref().map(|v| v.span().start)),
        ("typology", e.typology.as_ref().map(|v| v.span().start)),
    ];
    let before = cx.problems.len();
    for (field, offset) in fields {
        if let Some(offset) = offset.filter(|_| !allowed.contains(&field)) {
            let what = if kind.is_empty() { "the transfer under test".to_owned() } else { format!("a `{kind}` event") };
            let takes = if allowed.is_empty() { "nothing else".to_owned() } else { allowed.join(", ") };
            cx.report(offset, format!("{what} has no `{field}`; it takes at, type, account, {takes}"));
        }
    }
    if cx.problems.len() > before {
        return None;
    }
    let account = e.account.as_ref().map_or(case_account, |a| a.get_ref().as_str());
    fn text(v: &Option<Spanned<String>>) -> Option<&str> {
        v.as_ref().map(|s| s.get_ref().as_str())
    }
    let event = match kind {
        "" | "transfer" => {
            let id = text(&e.id).unwrap_or(default_id);
            let mut b = build::transfer(id).account(account).at_time(at);
            if let Some(amount) = amount(cx, &e.amount)? {
                b = b.amount(amount);
            }
            if let Some(p) = &e.payee {
                let (bank, number) = payee(cx, p)?;
                b = b.payee(bank, number);
            }
            if let Some(name) = text(&e.payee_name) {
                b = b.payee_name(name);
            }
            if let Some(c) = &e.channel {
                b = b.channel(named::<Channel>(cx, c, "channel", "mobile_app, internet_banking or open_banking")?);
            }
            if let Some(p) = &e.purpose {
                b = b.purpose(named::<TransferPurpose>(cx, p, "purpose", "TR, ST or RC")?);
            }
            if let Some(d) = text(&e.device) {
                b = b.device(d);
            }
            if let Some(ip) = text(&e.ip) {
                b = b.ip(ip);
            }
            b.build()
        }
        "report" | "cleared" => {
            // A transfer of the case, or one outside it (another victim's),
            // named by its payee and, to clear it later, an id.
            let earlier = e.transfer.as_ref().and_then(|t| transfers.iter().find(|(id, _, _)| id == t.get_ref()));
            let (id, bank, number) = match (earlier, &e.transfer, &e.payee) {
                (Some((id, bank, number)), _, None) => (id.clone(), bank.clone(), number.clone()),
                (None, t, Some(p)) => {
                    let (bank, number) = payee(cx, p)?;
                    let id = t.as_ref().map_or_else(|| format!("{default_id}R"), |t| t.get_ref().clone());
                    (id, bank.to_owned(), number.to_owned())
                }
                (Some(_), _, Some(p)) => {
                    cx.report(p.span().start, "a report of a transfer in this case takes its payee from it");
                    return None;
                }
                (None, Some(t), None) => {
                    let message = format!(
                        "no earlier transfer `{}` in this case; for one outside it, name its `payee` too",
                        t.get_ref()
                    );
                    cx.report(t.span().start, message);
                    return None;
                }
                (None, None, None) => {
                    cx.report(start, "a report names `transfer` (an earlier transfer's id), `payee`, or both");
                    return None;
                }
            };
            let mut b = build::label(&id).at_time(at).payee(&bank, &number);
            if let Some(t) = text(&e.typology) {
                b = b.typology(t);
            }
            if kind == "cleared" {
                b = b.cleared();
            }
            b.build()
        }
        _ => {
            let mut b = build::context(account).at_time(at);
            if let Some(d) = text(&e.device) {
                b = b.device(d);
            }
            if let Some(ip) = text(&e.ip) {
                b = b.ip(ip);
            }
            match kind {
                "login" => b.login(e.success.as_ref().map_or(true, |s| *s.get_ref())),
                "device_registered" if e.device.is_none() => {
                    cx.report(start, "a `device_registered` event needs `device`");
                    return None;
                }
                "device_registered" => b.device_registered(),
                "cert_issued" => b.certificate(CertificateAction::Issued),
                "cert_reissued" => b.certificate(CertificateAction::Reissued),
                "cert_renewed" => b.certificate(CertificateAction::Renewed),
                "phone_changed" => b.phone_changed(),
                "remote_app" => match text(&e.app) {
                    Some(app) => b.remote_app(app),
                    None => {
                        cx.report(start, "a `remote_app` event needs `app`, the app's name");
                        return None;
                    }
                },
                "limit_raised" => match amount(cx, &e.limit)? {
                    Some(limit) => b.limit_raised(limit),
                    None => {
                        cx.report(start, "a `limit_raised` event needs `limit`, the new limit in won");
                        return None;
                    }
                },
                "ekyc" => b.ekyc(),
                other => unreachable!("event type {other} is listed but not built"),
            }
        }
    };
    // Through the decoder: a case holds only what the product could receive.
    match Event::from_json(event.to_json().as_bytes()) {
        Ok(event) => Some(event),
        Err(err) => {
            cx.report(start, format!("this event would be refused on the wire: {err}"));
            None
        }
    }
}

fn amount(cx: &mut FileCx<'_>, raw: &Option<Spanned<RawAmount>>) -> Option<Option<i64>> {
    let Some(raw) = raw else { return Some(None) };
    let value = match raw.get_ref() {
        RawAmount::Int(v) if *v > 0 => Ok(*v),
        RawAmount::Int(v) => Err(format!("an amount is a positive number of won, found {v}")),
        RawAmount::Text(t) => rules::amount_literal(t),
    };
    match value {
        Ok(v) => Some(Some(v)),
        Err(message) => {
            cx.report(raw.span().start, message);
            None
        }
    }
}

fn payee<'r>(cx: &mut FileCx<'_>, raw: &'r Spanned<String>) -> Option<(&'r str, &'r str)> {
    match raw.get_ref().split_once('-') {
        Some((bank, number)) if !bank.is_empty() && !number.is_empty() => Some((bank, number)),
        _ => {
            cx.report(raw.span().start, "a payee is BANK-ACCOUNT, e.g. \"088-110123456789\"");
            None
        }
    }
}

/// A closed set named as on the wire (`mobile_app`, `TR`).
fn named<T: serde::de::DeserializeOwned>(
    cx: &mut FileCx<'_>,
    raw: &Spanned<String>,
    field: &str,
    names: &str,
) -> Option<T> {
    match serde_json::from_value(serde_json::Value::String(raw.get_ref().clone())) {
        Ok(v) => Some(v),
        Err(_) => {
            cx.report(raw.span().start, format!("unknown {field} `{}`: {names}", raw.get_ref()));
            None
        }
    }
}

/// `-50m`, `-1d2h`, `-30s`, `0`: milliseconds before the transfer (<= 0).
fn parse_offset(text: &str) -> Result<i64, String> {
    let bad =
        || format!("`{text}` is not a time before the transfer: write e.g. \"-50m\", \"-2h\", \"-9d\" or \"-1d2h\"");
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let Some(rest) = t.strip_prefix('-') else { return Err(bad()) };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1000,
            'm' => MINUTE_MS,
            'h' => HOUR_MS,
            'd' => DAY_MS,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        total =
            n.checked_mul(unit).and_then(|v| total.checked_add(v)).filter(|v| *v <= 3650 * DAY_MS).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() || rest.is_empty() {
        return Err(bad());
    }
    Ok(-total)
}

/// `2026-11-02 23:30` or `2026-11-02T23:30:00`, KST.
fn parse_time(text: &str) -> Result<EventTime, String> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let shape_ok = text.len() >= 16 && text.chars().all(|c| c.is_ascii_digit() || "-: T".contains(c));
    let padded = match digits.len() {
        12 => format!("{digits}00"),
        14 => digits,
        _ => String::new(),
    };
    match (shape_ok, EventTime::parse_kst(&padded)) {
        (true, Ok(t)) => Ok(t),
        _ => Err(format!("`time` is a KST time such as \"2026-11-02 23:30\", found \"{text}\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_before_the_transfer() {
        assert_eq!(parse_offset("-50m"), Ok(-50 * MINUTE_MS));
        assert_eq!(parse_offset("-1d2h"), Ok(-(DAY_MS + 2 * HOUR_MS)));
        assert_eq!(parse_offset("-30s"), Ok(-30_000));
        assert_eq!(parse_offset("0"), Ok(0));
        for bad in ["50m", "-", "-5", "-5x", "+5m", "-m", "-99999999999999d"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_kst_minutes_or_seconds() {
        assert_eq!(parse_time("2026-11-02 23:30").unwrap().format_kst(), "20261102233000");
        assert_eq!(parse_time("2026-11-02T23:30:15").unwrap().format_kst(), "20261102233015");
        assert!(parse_time("20261102").is_err());
        assert!(parse_time("2026-13-02 23:30").is_err());
    }
}
