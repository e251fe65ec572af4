//! Reading a rules directory: rule files, `ruleset.toml`, `lists/*.txt`, and
//! the version hash.
//!
//! Reading (I/O) and building (pure) are separate: [`build`] checks a set of
//! named files and either returns a complete [`RuleSet`] or every problem it
//! found, so the same checks serve [`RuleSet::load_dir`] and
//! [`RuleSet::from_files`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::expr::{self, did_you_mean};
use super::lists::{self, List};
use super::source::{line_col, StringMap};
use super::{Action, Compiled, Problem, Rule, RuleSet, RulesError, Settings, Verification, MAX_RULE_SCORE};

/// The settings file; every other `*.toml` in the directory is a rule file.
const SETTINGS_FILE: &str = "ruleset.toml";
const LISTS_DIR: &str = "lists";

/// Largest rule file or `ruleset.toml`: a thousand rules take about 300 KB.
const MAX_RULE_FILE_BYTES: u64 = 1 << 20;
/// Largest list file: a million and a half entries that each carry every
/// attribute (`added= expires= source= by=` and a comment, about 85 bytes),
/// or six million bare account numbers.
const MAX_LIST_FILE_BYTES: u64 = 128 << 20;

const RULE_KEYS: [&str; 9] = ["id", "label", "description", "when", "action", "verify", "score", "reason", "shadow"];

/// One file of a rules directory, as read.
#[derive(Debug)]
pub(crate) struct SourceFile {
    /// Path relative to the directory, `/`-separated on every platform, so
    /// the version does not depend on where the directory lives.
    rel: String,
    /// Path shown in problems.
    path: PathBuf,
    /// The file's bytes, read no further than one byte past the largest
    /// file allowed, so a huge file is refused without being held.
    bytes: Vec<u8>,
}

pub(crate) fn load_dir(dir: &Path) -> Result<RuleSet, RulesError> {
    let started = std::time::Instant::now();
    let mut set = build(read_dir_files(dir)?)?;
    set.load_time = started.elapsed();
    Ok(set)
}

pub(crate) fn from_files(files: &[(&str, &str)]) -> Result<RuleSet, RulesError> {
    let files = files
        .iter()
        .map(|(name, text)| SourceFile {
            rel: name.to_string(),
            path: PathBuf::from(name),
            bytes: text.as_bytes().to_vec(),
        })
        .collect();
    build(files)
}

/// `rs-` and 12 hex digits of SHA-256 over the files sorted by relative
/// name. Each file contributes its name, a NUL, its length and its bytes, so
/// no two different directories can produce the same byte stream.
pub(crate) fn version_of(files: &[SourceFile]) -> String {
    let mut sorted: Vec<&SourceFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut hash = Sha256::new();
    for f in sorted {
        hash.update(f.rel.as_bytes());
        hash.update([0u8]);
        hash.update((f.bytes.len() as u64).to_le_bytes());
        hash.update(&f.bytes);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("rs-{hex}")
}

// ---------------------------------------------------------------- reading

/// Editor swap and backup files, lock files and other hidden files are never
/// rules, even when their names end in `.toml` (`.#vp.toml`, `.vp.toml.swp`).
fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn read_dir_files(dir: &Path) -> Result<Vec<SourceFile>, RulesError> {
    let mut files = Vec::new();
    for (name, path) in sorted_files(dir)? {
        if name.ends_with(".toml") {
            push_file(&mut files, name, path)?;
        }
    }
    let lists = dir.join(LISTS_DIR);
    if lists.is_dir() {
        for (name, path) in sorted_files(&lists)? {
            if name.ends_with(".txt") {
                push_file(&mut files, format!("{LISTS_DIR}/{name}"), path)?;
            }
        }
    }
    Ok(files)
}

/// Regular files (after following symlinks) that are not hidden, by name.
fn sorted_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, RulesError> {
    let io_err = |source| RulesError::Io { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_hidden(&name) && path.is_file() {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

fn push_file(files: &mut Vec<SourceFile>, rel: String, path: PathBuf) -> Result<(), RulesError> {
    let read = |path: &Path| -> io::Result<Vec<u8>> {
        use std::io::Read;
        let limit = MAX_LIST_FILE_BYTES.max(MAX_RULE_FILE_BYTES) + 1;
        let file = std::fs::File::open(path)?;
        // Sized from the file up front: grown by doubling instead, a 100 MB
        // list was copied over and over (an eighth of its load time).
        let size = file.metadata().map_or(0, |m| m.len()).min(limit);
        let mut bytes = Vec::with_capacity(size as usize + 1);
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read(&path) {
        Ok(bytes) => {
            files.push(SourceFile { rel, path, bytes });
            Ok(())
        }
        // Deleted between listing and reading (an editor saving by rename):
        // the directory no longer holds it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RulesError::Io { path, source }),
    }
}

// ---------------------------------------------------------------- building

/// A file's text with what is needed to position problems in it.
struct FileCx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl FileCx<'_> {
    /// Messages quote the analyst's text, which may hold newlines; a problem
    /// is always one line of output.
    fn problem(&self, offset: usize, message: impl Into<String>) -> Problem {
        let (line, column) = line_col(self.text, offset);
        let message = message.into().replace(|c: char| c.is_control(), " ");
        Problem { path: self.path.to_path_buf(), line, column, message }
    }

    /// toml's messages come in several lines ("invalid table header" /
    /// "expected `.`, `]]`"); join them into one.
    fn toml_problem(&self, e: &toml::de::Error, prefix: &str) -> Problem {
        let offset = e.span().map_or(0, |s| s.start);
        let lines: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        // toml gives some syntax errors no message (a control character in a
        // comment, found by the `rule_files` fuzz target): say what is there.
        let message = match self.text[offset.min(self.text.len())..].chars().next() {
            _ if !lines.is_empty() => lines.join(": "),
            Some(c) if c.is_control() && c != '\t' => {
                format!("invalid TOML: control character U+{:04X} (only tab is allowed, even in a comment)", c as u32)
            }
            _ => "invalid TOML syntax".to_string(),
        };
        self.problem(offset, format!("{prefix}{message}"))
    }
}

enum FileRole<'a> {
    Settings,
    Rules,
    List(&'a str),
    Unknown,
}

fn role(rel: &str) -> FileRole<'_> {
    if rel == SETTINGS_FILE {
        FileRole::Settings
    } else if !rel.contains('/') && rel.ends_with(".toml") {
        FileRole::Rules
    } else if let Some(name) =
        rel.strip_prefix("lists/").and_then(|n| n.strip_suffix(".txt")).filter(|n| !n.contains('/'))
    {
        FileRole::List(name)
    } else {
        FileRole::Unknown
    }
}

/// Decode as UTF-8, dropping a byte-order mark (Windows editors add one).
fn decode(file: &SourceFile, problems: &mut Vec<Problem>) -> Option<String> {
    match std::str::from_utf8(&file.bytes) {
        Ok(text) => Some(text.strip_prefix('\u{feff}').unwrap_or(text).to_string()),
        Err(e) => {
            let valid = String::from_utf8_lossy(&file.bytes[..e.valid_up_to()]).into_owned();
            let cx = FileCx { path: &file.path, text: &valid };
            problems.push(cx.problem(valid.len(), "file is not UTF-8 text; save it as UTF-8"));
            None
        }
    }
}

/// A rule checked and compiled, waiting for the directory-wide checks.
struct Draft {
    rule: Rule,
    compiled: Compiled,
}

/// Where a (well-formed) rule id is written, valid rule or not, so duplicate
/// ids are found even while the rules have other problems.
struct IdSite {
    id: String,
    path: PathBuf,
    line: usize,
    column: usize,
}

fn file_cx<'a>(file: &'a SourceFile, text: &'a str) -> FileCx<'a> {
    FileCx { path: &file.path, text }
}

fn build(mut files: Vec<SourceFile>) -> Result<RuleSet, RulesError> {
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    let version = version_of(&files);
    let mut problems = Vec::new();
    let mut settings = Settings::default();
    let mut lists = Vec::new();
    let mut rule_files = Vec::new();
    for file in &files {
        let limit =
            if matches!(role(&file.rel), FileRole::List(_)) { MAX_LIST_FILE_BYTES } else { MAX_RULE_FILE_BYTES };
        if file.bytes.len() as u64 > limit {
            let what = if limit == MAX_LIST_FILE_BYTES { "a list file" } else { "a rule file" };
            let message = format!("file is larger than {what} may be ({} MB); nothing of it was used", limit >> 20);
            problems.push(file_cx(file, "").problem(0, message));
            if let FileRole::List(name) = role(&file.rel) {
                lists.push(List::new(name.to_string(), Vec::new()));
            }
            continue;
        }
        let text = decode(file, &mut problems);
        match role(&file.rel) {
            FileRole::Settings => {
                if let Some(text) = &text {
                    settings = parse_settings(&file_cx(file, text), &mut problems);
                }
            }
            FileRole::Rules => rule_files.extend(text.map(|t| (file, t))),
            // A list with a bad name or bad content still counts as existing,
            // so rules using it are not also reported as naming a missing list.
            FileRole::List(name) => {
                let list = match text.as_deref() {
                    Some(t) => parse_list(&file_cx(file, t), name, &mut problems),
                    None => List::new(name.to_string(), Vec::new()),
                };
                lists.push(list);
            }
            FileRole::Unknown => problems.push(file_cx(file, "").problem(
                0,
                format!("`{}` is not a rule file (`*.toml`), `{SETTINGS_FILE}` or `{LISTS_DIR}/<name>.txt`", file.rel),
            )),
        }
    }
    let list_names: Vec<String> = lists.iter().map(|l| l.name().to_string()).collect();
    let mut drafts = Vec::new();
    let mut ids = Vec::new();
    for (file, text) in &rule_files {
        parse_rule_file(&file_cx(file, text), &list_names, &mut drafts, &mut ids, &mut problems);
    }
    check_duplicate_ids(&ids, &mut problems);
    if let Some(extra) = ids.get(usize::from(u16::MAX)) {
        problems.push(Problem {
            path: extra.path.clone(),
            line: extra.line,
            column: extra.column,
            message: format!("a rule set holds at most {} rules; this is one too many", u16::MAX),
        });
    }
    if !problems.is_empty() {
        problems.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
        return Err(RulesError::Invalid { problems });
    }
    let (rules, compiled) = drafts.into_iter().map(|d| (d.rule, d.compiled)).unzip();
    Ok(RuleSet { version, rules, compiled, lists, settings, load_time: std::time::Duration::ZERO })
}

/// Ids are unique across the directory; name both places so the analyst can
/// decide which one to rename.
fn check_duplicate_ids(ids: &[IdSite], problems: &mut Vec<Problem>) {
    let mut first: HashMap<&str, &IdSite> = HashMap::new();
    for site in ids {
        match first.get(site.id.as_str()) {
            Some(earlier) => problems.push(Problem {
                path: site.path.clone(),
                line: site.line,
                column: site.column,
                message: format!(
                    "duplicate rule id `{}`: already used at {}:{}:{}",
                    site.id,
                    earlier.path.display(),
                    earlier.line,
                    earlier.column
                ),
            }),
            None => {
                first.insert(&site.id, site);
            }
        }
    }
}

// ---------------------------------------------------------------- ruleset.toml

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    hold_score: Option<Spanned<i64>>,
    score_verify: Option<Verification>,
}

fn parse_settings(cx: &FileCx<'_>, problems: &mut Vec<Problem>) -> Settings {
    let raw: RawSettings = match toml::from_str(cx.text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(cx.toml_problem(&e, ""));
            return Settings::default();
        }
    };
    let mut settings = Settings::default();
    if let Some(score) = raw.hold_score {
        match i32::try_from(*score.get_ref()) {
            Ok(s) if s > 0 => settings.hold_score = s,
            _ => problems.push(cx.problem(
                score.span().start,
                format!("`hold_score` must be a positive integer up to {}, found {}", i32::MAX, score.get_ref()),
            )),
        }
    }
    if let Some(v) = raw.score_verify {
        settings.score_verify = v;
    }
    settings
}

// ---------------------------------------------------------------- lists

fn is_list_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A list file (see [`super::lists`] for the format): problems positioned in
/// the file, the list's name checked.
fn parse_list(cx: &FileCx<'_>, name: &str, problems: &mut Vec<Problem>) -> List {
    if !is_list_name(name) {
        let fixed: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        problems.push(cx.problem(
            0,
            format!("list file name `{name}.txt` may use only a-z, 0-9 and `_`; rename it, e.g. to `{fixed}.txt`"),
        ));
    }
    let lines = lists::parse(cx.text, &mut |offset, message| problems.push(cx.problem(offset, message)));
    List::with_windows(name.to_string(), lines)
}

// ---------------------------------------------------------------- rule files

/// A TOML type name with its article: "a string", "an integer".
fn a(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {type_name}")
}

/// A TOML table whose keys and values keep their positions.
type Table = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
struct RawRuleFile {
    #[serde(default)]
    rule: Vec<Spanned<Table>>,
}

fn parse_rule_file(
    cx: &FileCx<'_>,
    lists: &[String],
    drafts: &mut Vec<Draft>,
    ids: &mut Vec<IdSite>,
    problems: &mut Vec<Problem>,
) {
    // First pass: syntax, and top-level keys with their positions.
    let top: BTreeMap<Spanned<String>, IgnoredAny> = match toml::from_str(cx.text) {
        Ok(top) => top,
        Err(e) => return problems.push(cx.toml_problem(&e, "")),
    };
    for key in top.keys().filter(|k| k.get_ref() != "rule") {
        let message = format!("unknown key `{}`: a rule file holds only [[rule]] tables", key.get_ref());
        problems.push(cx.problem(key.span().start, message));
    }
    // Second pass: each rule as a positioned table, so one bad rule does not
    // hide the problems of the others.
    let raw: RawRuleFile = match toml::from_str(cx.text) {
        Ok(raw) => raw,
        Err(e) => return problems.push(cx.toml_problem(&e, "rules must be written as [[rule]] tables: ")),
    };
    if raw.rule.is_empty() {
        problems.push(cx.problem(0, "no rules in this file: expected one or more [[rule]] tables"));
    }
    for table in &raw.rule {
        let mut rcx = RuleCx { cx, table: table.get_ref(), header: table.span().start, id: None, problems };
        let draft = rcx.parse(lists);
        if let Some((id, offset)) = rcx.id {
            let (line, column) = line_col(cx.text, offset);
            ids.push(IdSite { id, path: cx.path.to_path_buf(), line, column });
        }
        drafts.extend(draft);
    }
}

/// Checking one `[[rule]]` table.
struct RuleCx<'a, 'p> {
    cx: &'a FileCx<'a>,
    table: &'a Table,
    /// Offset of the `[[rule]]` header: where missing keys are reported.
    header: usize,
    /// The rule's id and its offset once known, to name the rule in messages.
    id: Option<(String, usize)>,
    problems: &'p mut Vec<Problem>,
}

impl<'a> RuleCx<'a, '_> {
    fn parse(&mut self, lists: &[String]) -> Option<Draft> {
        let before = self.problems.len();
        self.unknown_keys();
        let id = self.id();
        let label = self.text("label");
        let description = self.text("description");
        let reason = self.reason();
        let when = self.when(lists);
        let action = self.action();
        let shadow = self.shadow();
        if self.problems.len() > before {
            return None;
        }
        let (id, (when_text, cond)) = (id?, when?);
        let (action, shadow) = (action?, shadow?);
        let rule = Rule {
            id,
            label: label?,
            description: description?,
            when: when_text,
            action,
            reason: reason?,
            shadow,
            source: self.cx.path.to_path_buf(),
            line: line_col(self.cx.text, self.header).0,
        };
        Some(Draft { rule, compiled: Compiled { cond, action, shadow } })
    }

    fn report(&mut self, offset: usize, message: String) {
        self.problems.push(self.cx.problem(offset, message));
    }

    fn unknown_keys(&mut self) {
        let unknown: Vec<(usize, String)> = self
            .table
            .keys()
            .filter(|k| !RULE_KEYS.contains(&k.get_ref().as_str()))
            .map(|k| {
                let hint = match did_you_mean(k.get_ref(), RULE_KEYS.into_iter()) {
                    Some(s) => format!("; did you mean `{s}`?"),
                    None => format!("; a rule has {}", RULE_KEYS.join(", ")),
                };
                (k.span().start, format!("unknown key `{}` in a rule{hint}", k.get_ref()))
            })
            .collect();
        for (offset, message) in unknown {
            self.report(offset, message);
        }
    }

    fn rule_name(&self) -> String {
        match &self.id {
            Some((id, _)) => format!("rule `{id}`"),
            None => "this rule".to_string(),
        }
    }

    fn key_offset(&self, key: &str) -> usize {
        self.table.get_key_value(key).map_or(self.header, |(k, _)| k.span().start)
    }

    /// A key that must be present, with the type `want` (a TOML type name).
    fn required(&mut self, key: &str, want: &str) -> Option<&'a Spanned<toml::Value>> {
        let table = self.table;
        match table.get(key) {
            None => {
                let message = format!("{} is missing `{key}` ({want})", self.rule_name());
                self.report(self.header, message);
                None
            }
            some => self.typed(key, some, want),
        }
    }

    /// Present values must have the type `want`; absence is the caller's call.
    fn typed(
        &mut self,
        key: &str,
        value: Option<&'a Spanned<toml::Value>>,
        want: &str,
    ) -> Option<&'a Spanned<toml::Value>> {
        let value = value?;
        if value.get_ref().type_str() == want {
            return Some(value);
        }
        let found = value.get_ref().type_str();
        self.report(value.span().start, format!("`{key}` must be {}, found {}", a(want), a(found)));
        None
    }

    fn string(&mut self, key: &str) -> Option<(&'a str, Range<usize>)> {
        let v = self.required(key, "string")?;
        v.get_ref().as_str().map(|s| (s, v.span()))
    }

    /// A required string that must say something.
    fn text(&mut self, key: &str) -> Option<String> {
        let (s, span) = self.string(key)?;
        if s.trim().is_empty() {
            self.report(span.start, format!("`{key}` is empty"));
            return None;
        }
        Some(s.to_string())
    }

    fn id(&mut self) -> Option<String> {
        let (id, span) = self.string("id")?;
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            let fixed: String =
                id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            self.report(span.start, format!("rule id `{id}` may use only A-Z, 0-9 and `_`, e.g. `{fixed}`"));
            return None;
        }
        self.id = Some((id.to_string(), span.start));
        Some(id.to_string())
    }

    /// Reason codes travel in decisions to other systems: keep them plain.
    fn reason(&mut self) -> Option<String> {
        let (reason, span) = self.string("reason")?;
        let valid = !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !valid {
            self.report(span.start, format!("reason code `{reason}` may use only letters, digits, `_`, `-` and `.`"));
            return None;
        }
        Some(reason.to_string())
    }

    fn when(&mut self, lists: &[String]) -> Option<(String, expr::BoolExpr)> {
        let (src, span) = self.string("when")?;
        match expr::compile(src, lists) {
            Ok(cond) => Some((src.to_string(), cond)),
            Err(errors) => {
                let map = StringMap::new(self.cx.text, span, src);
                for e in errors {
                    self.report(map.file_offset(e.offset), e.message);
                }
                None
            }
        }
    }

    fn shadow(&mut self) -> Option<bool> {
        let table = self.table;
        match self.typed("shadow", table.get("shadow"), "boolean") {
            Some(v) => v.get_ref().as_bool(),
            None if table.contains_key("shadow") => None,
            None => Some(false),
        }
    }

    /// `action`, with `verify` required by hold and `score` by score rules,
    /// each forbidden with the other.
    fn action(&mut self) -> Option<Action> {
        let table = self.table;
        let verify = self.typed("verify", table.get("verify"), "string");
        let score = self.typed("score", table.get("score"), "integer");
        let (action, span) = self.string("action")?;
        match action {
            "hold" => {
                if table.contains_key("score") {
                    let message =
                        "`score` is not allowed with action = \"hold\": a hold rule holds the transfer outright".into();
                    self.report(self.key_offset("score"), message);
                }
                match (verify, table.contains_key("verify")) {
                    (Some(v), _) => self.verification(v).map(Action::Hold),
                    (None, true) => None,
                    (None, false) => {
                        let message = format!(
                            "{} has action = \"hold\" but no `verify` (\"delay\", \"ars\" or \"callback\")",
                            self.rule_name()
                        );
                        self.report(self.header, message);
                        None
                    }
                }
            }
            "score" => {
                if table.contains_key("verify") {
                    let message = "`verify` is not allowed with action = \"score\": holds from the score total use \
                                   `score_verify` in ruleset.toml"
                        .into();
                    self.report(self.key_offset("verify"), message);
                }
                match (score, table.contains_key("score")) {
                    (Some(s), _) => self.score(s).map(Action::Score),
                    (None, true) => None,
                    (None, false) => {
                        let message = format!(
                            "{} has action = \"score\" but no `score` (an integer from 1 to {MAX_RULE_SCORE})",
                            self.rule_name()
                        );
                        self.report(self.header, message);
                        None
                    }
                }
            }
            other => {
                self.report(span.start, format!("unknown action `{other}`: expected \"hold\" or \"score\""));
                None
            }
        }
    }

    fn verification(&mut self, v: &Spanned<toml::Value>) -> Option<Verification> {
        let name = v.get_ref().as_str().unwrap_or("");
        let found = Verification::from_name(name);
        if found.is_none() {
            let hint = did_you_mean(name, Verification::ALL.iter().map(|v| v.name()))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            self.report(
                v.span().start,
                format!("unknown verification `{name}`: expected delay, ars or callback{hint}"),
            );
        }
        found
    }

    fn score(&mut self, s: &Spanned<toml::Value>) -> Option<i32> {
        let value = s.get_ref().as_integer().unwrap_or(0);
        match i32::try_from(value) {
            Ok(v) if (1..=MAX_RULE_SCORE).contains(&v) => Some(v),
            _ => {
                self.report(s.span().start, format!("`score` must be from 1 to {MAX_RULE_SCORE}, found {value}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str = r#"[[rule]]
id = "R1"
label = "라벨"
description = "d"
when = "amount >= 100만"
action = "score"
score = 10
reason = "X1"
"#;

    #[test]
    fn list_files_strip_comments_blanks_and_whitespace() {
        let set = RuleSet::from_files(&[
            ("r.toml", RULE),
            ("lists/mules.txt", "# header\n  088-1  \n\n088-2 # from case 17\r\n#088-3\n"),
        ])
        .unwrap();
        assert_eq!(set.lists().collect::<Vec<_>>(), vec![("mules", 2)]);
        assert!(
            set.lists[0].contains("088-1", 0)
                && set.lists[0].contains("088-2", 0)
                && !set.lists[0].contains("088-3", 0)
        );
    }

    #[test]
    fn lines_added_to_a_loaded_list_match_as_if_written_in_its_file() {
        let set = RuleSet::from_files(&[("r.toml", RULE), ("lists/mules.txt", "088-1\n")]).unwrap();
        let day = |d: &str| lists_day(d);
        let lines = vec![("mules".to_owned(), vec!["088-2".to_owned(), "088-3 added=2026-11-02".to_owned()])];
        let extended = set.with_list_lines(&lines).unwrap();
        let mules = &extended.lists[0];
        assert!(mules.contains("088-1", 0) && mules.contains("088-2", 0));
        assert!(!mules.contains("088-3", day("2026-11-01")) && mules.contains("088-3", day("2026-11-02")));
        assert!(!set.lists[0].contains("088-2", 0), "the loaded set is left as it was");
        let from_files =
            RuleSet::from_files(&[("r.toml", RULE), ("lists/mules.txt", "088-1\n088-2\n088-3 added=2026-11-02\n")])
                .unwrap();
        assert_eq!(extended.lists[0].counts_at(day("2026-11-01")), from_files.lists[0].counts_at(day("2026-11-01")));

        // Every refused line, by list and line, and a list the set lacks.
        let bad = vec![
            ("mules".to_owned(), vec!["088-4".to_owned(), "088-5 sorce=x".to_owned()]),
            ("payees".to_owned(), vec!["088-6".to_owned()]),
        ];
        let problems = set.with_list_lines(&bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("mules line 2: unknown attribute `sorce`"), "{problems:?}");
        assert_eq!(problems[1], "no list `payees` (lists/payees.txt)");
    }

    /// Midnight KST of `date` (`YYYY-MM-DD`), as event-time ms.
    fn lists_day(date: &str) -> i64 {
        crate::event::EventTime::parse_kst(&format!("{}000000", date.replace('-', ""))).unwrap().millis()
    }

    #[test]
    fn control_characters_are_refused_with_a_message() {
        // Found by the `rule_files` fuzz target: toml's own message is empty.
        let err = RuleSet::from_files(&[("r.toml", "# note\n#\0")]).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!((p.line, p.column), (2, 2), "{err}");
        assert!(p.message.contains("control character U+0000"), "{}", p.message);
    }

    #[test]
    fn text_after_an_entry_that_is_not_an_attribute_is_refused_at_it() {
        let err = RuleSet::from_files(&[("r.toml", RULE), ("lists/mules.txt", "088-1\n  088 2\n")]).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!((p.line, p.column), (2, 7));
        assert!(p.message.contains("`2` after the entry: one entry per line"), "{}", p.message);
    }

    #[test]
    fn huge_list_entries_and_files_are_refused_with_positions() {
        // A line longer than the limit is refused by the file's size, unread past it.
        let huge = format!("088-1\n{}\n", "9".repeat(MAX_LIST_FILE_BYTES as usize));
        let err = RuleSet::from_files(&[("r.toml", RULE), ("lists/mules.txt", &huge)]).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!((p.path.to_str(), p.line, p.column), (Some("lists/mules.txt"), 1, 1));
        assert!(p.message.contains("larger than a list file may be (128 MB)"), "{}", p.message);
        assert_eq!(err.problems().len(), 1, "the rules using the list are not also refused: {err}");
        // A long line in a file of allowed size: refused at the entry, not quoted.
        let long = format!("088-1\n  {}\n", "9".repeat(1 << 20));
        let err = RuleSet::from_files(&[("r.toml", RULE), ("lists/mules.txt", &long)]).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!((p.line, p.column), (2, 3));
        assert!(p.message.len() < 200 && p.message.contains("1048576 bytes"), "{}", p.message);
        // A rule file past its size.
        let big = format!("{RULE}\n# {}\n", "x".repeat(1 << 20));
        let err = RuleSet::from_files(&[("r.toml", &big)]).unwrap_err();
        assert!(err.to_string().contains("r.toml:1:1: file is larger than a rule file may be (1 MB)"), "{err}");
    }

    #[test]
    fn deep_nesting_in_a_rule_file_or_a_condition_is_refused_with_a_position() {
        let parens = format!("{}amount > 1{}", "(".repeat(10_000), ")".repeat(10_000));
        let rule = RULE.replacen("when = \"", &format!("when = \"{parens} and "), 1);
        let err = RuleSet::from_files(&[("r.toml", &rule)]).unwrap_err();
        assert!(err.to_string().contains("nested too deeply"), "{err}");
        let arrays = format!("x = {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let err = RuleSet::from_files(&[("r.toml", &arrays)]).unwrap_err();
        let p = &err.problems()[0];
        assert!(p.line == 1 && p.column > 1, "{err}");
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let with_bom = format!("\u{feff}{RULE}");
        let set = RuleSet::from_files(&[("r.toml", &with_bom)]).unwrap();
        assert_eq!(set.rules()[0].line(), 1);
    }

    #[test]
    fn version_hashes_names_and_contents() {
        let a = SourceFile { rel: "a.toml".into(), path: "a.toml".into(), bytes: b"xy".to_vec() };
        let b = SourceFile { rel: "a.tomlx".into(), path: "a.toml".into(), bytes: b"y".to_vec() };
        assert_ne!(version_of(&[a]), version_of(&[b]));
        assert_eq!(version_of(&[]), "rs-e3b0c44298fc");
    }

    #[test]
    fn unknown_file_names_in_memory_are_reported() {
        let err = RuleSet::from_files(&[("r.toml", RULE), ("lists/sub/x.txt", "")]).unwrap_err();
        assert!(err.to_string().contains("not a rule file"), "{err}");
        let err = RuleSet::from_files(&[("r.toml", RULE), ("notes.md", "")]).unwrap_err();
        assert!(err.to_string().contains("not a rule file"), "{err}");
    }
}
