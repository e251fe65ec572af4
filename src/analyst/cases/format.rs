//! The case file format: `rules/tests/*.toml` read with positions, each
//! case checked against the rule set and turned into events by the builders
//! (see the parent module for the format). Every problem found in a file is
//! reported, each at `file:line:column`; a case with any problem is left out.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{Case, Expect};
use crate::event::build::{self, DEFAULT_TIME};
use crate::event::{CertificateAction, Channel, Event, EventTime, TransferPurpose, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::rules::{self, Problem, RuleSet, Verification};

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

pub(super) fn parse_file(path: &Path, text: &str, set: &RuleSet, cases: &mut Vec<Case>, problems: &mut Vec<Problem>) {
    let first = problems.len();
    parse_cases(path, text, set, cases, problems);
    problems[first..].sort_by_key(|p| (p.line, p.column));
}

fn parse_cases(path: &Path, text: &str, set: &RuleSet, cases: &mut Vec<Case>, problems: &mut Vec<Problem>) {
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
        for line in lines {
            // Where the line's text begins in the file (inside its quotes;
            // at the string when escapes make it differ from the text).
            let span = line.span();
            let base = span.start + cx.text.get(span).and_then(|raw| raw.find(line.get_ref().as_str())).unwrap_or(0);
            for (offset, message) in rules::list_line_problems(line.get_ref()) {
                cx.report(base + offset, format!("list line `{}`: {message}", line.get_ref()));
            }
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

    fn set() -> RuleSet {
        let rule = "[[rule]]\nid = \"LARGE\"\nlabel = \"l\"\ndescription = \"d\"\nwhen = \"amount >= 100만\"\n\
                    action = \"hold\"\nverify = \"ars\"\nreason = \"LG1\"\n";
        RuleSet::from_files(&[("r.toml", rule), ("lists/mules.txt", "")]).unwrap()
    }

    fn parse(text: &str) -> (Vec<Case>, Vec<String>) {
        let (mut cases, mut problems) = (Vec::new(), Vec::new());
        parse_file(Path::new("t.toml"), text, &set(), &mut cases, &mut problems);
        (cases, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_mistake_in_a_file_is_reported_at_its_position() {
        let text = r#"[[case]]
name = "one"
events = [
  { at = "-5m", type = "logn" },
  { at = "5m", type = "login" },
  { at = "-1h", type = "transfer", app = "x" },
  { at = "-1h", type = "transfer", payee = "08-1234" },
]
lists = { mule = ["088-1"], mules = ["088-2 sorce=x"] }
transfer = { amount = "100만원" }
expect = "held"
must_fire = ["LARGE", "LARGER"]

[[case]]
name = "two, fine"
transfer = { amount = 1_000_000 }
expect = "hold"
"#;
        let (cases, problems) = parse(text);
        assert_eq!(cases.len(), 1, "the good case is kept: {problems:#?}");
        let expected = [
            "t.toml:4:24: unknown event type `logn`; did you mean `login`?",
            "t.toml:5:10: `5m` is not a time before the transfer",
            "t.toml:6:42: a `transfer` event has no `app`",
            "t.toml:7:3: this event would be refused on the wire: invalid transfer event: recv_client_bank_code",
            "t.toml:9:11: no list `mule` in the rules directory; did you mean `mules`?",
            "t.toml:9:45: list line `088-2 sorce=x`: unknown attribute `sorce`; did you mean `source`?",
            "t.toml:10:23: write amounts without `원`",
            "t.toml:11:10: `expect` is \"hold\" or \"allow\", found \"held\"",
            "t.toml:12:23: `must_fire` names no rule `LARGER`; did you mean `LARGE`?",
        ];
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        for (p, want) in problems.iter().zip(expected) {
            assert!(p.starts_with(want), "{p:?} should start with {want:?}; all: {problems:#?}");
        }
    }

    #[test]
    fn events_are_ordered_by_time_with_the_transfer_last() {
        let text = r#"[[case]]
name = "order"
events = [
  { at = "-1h", type = "login" },
  { at = "-2d", type = "transfer", id = "OLD", payee = "004-1111" },
  { at = "-1d", type = "report", transfer = "OLD" },
]
transfer = { amount = "5만" }
expect = "allow"
"#;
        let (cases, problems) = parse(text);
        assert!(problems.is_empty(), "{problems:?}");
        let kinds: Vec<&str> = cases[0].events.iter().map(Event::kind).collect();
        assert_eq!(kinds, ["transfer", "label", "login", "transfer"]);
        let Event::Label(l) = &cases[0].events[1] else { unreachable!() };
        assert_eq!((l.bank_tran_id.as_str(), l.recv_client_account_num.as_str()), ("OLD", "1111"));
        assert_eq!(cases[0].events[3].time().format_kst(), DEFAULT_TIME);
    }

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
