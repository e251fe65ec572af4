//! Rules: analyst-edited rule files, compiled once into a typed form and
//! evaluated on every transfer.
//!
//! This module owns the rules directory (default `rules/`): the rule files
//! (`*.toml`, one or more `[[rule]]` tables each), the optional settings file
//! `ruleset.toml`, and the lists in `lists/<name>.txt`. Fraud analysts edit
//! these files while the engine runs; the engine picks up their changes without
//! a restart (see [`watch()`]).
//!
//! Why it is built this way:
//! - Analysts are not programmers, and a rule that silently never fires is worse
//!   than one that is refused. So a directory is checked completely before it is
//!   used: every problem in every file is reported at once, each as
//!   `path:line:column: message` pointing into the TOML file, including
//!   positions *inside* a `when` condition.
//! - Conditions are statically typed against [`crate::features::SCHEMA`]:
//!   an unknown feature, a bool compared with a number, or a condition that is
//!   not true/false is a load error, never a runtime surprise.
//! - The condition language is hand-written rather than taken from an
//!   expression crate (evalexpr, cel-interpreter, ...): those check types at
//!   evaluation time, resolve names through maps on every call and report
//!   errors against the expression alone. Here we need schema-typed compilation,
//!   errors mapped back through TOML string escapes to the file position, and
//!   evaluation with no lookups and no allocation in well under a microsecond.
//!   The grammar is small enough that owning it is cheaper.
//!
//! Guarantees:
//! - A [`RuleSet`] is immutable once built; [`RuleSet::evaluate`] takes no lock,
//!   does no name lookup and does not allocate unless more than 8 live rules
//!   (or 4 shadow rules) fire on one transfer.
//! - Evaluation is total: it never panics and never fails. Integer arithmetic
//!   saturates, division by zero gives 0.0, an absent device or IP is in no list.
//! - A directory that fails to load never replaces the running set: the hot path
//!   reads the current set through [`RulesHandle`] (an `ArcSwap`, no lock), and
//!   only a fully valid directory is ever swapped in.
//! - Shadow rules are evaluated and reported but never change `score` or `hold`,
//!   so a new rule can be measured on live traffic before it acts.
//! - [`RuleSet::version`] is a content hash: the same files give the same
//!   version on any machine, so decisions can name the rules that made them.
//!
//! # Files
//!
//! - Rule files: every `*.toml` except `ruleset.toml`, in file-name order, each
//!   with one or more `[[rule]]` tables holding `id` (`[A-Z0-9_]+`, unique in
//!   the directory), `label`, `description`, `when`, `action` (`"hold"` or
//!   `"score"`), `verify` (hold only: `"delay"`, `"ars"`, `"callback"`),
//!   `score` (score only: 1..=1000), `reason`, and optional `shadow`.
//!   Unknown and missing keys are errors.
//! - `ruleset.toml` (optional): `hold_score` (default 100) and `score_verify`
//!   (default `"ars"`).
//! - `lists/<name>.txt` (`<name>` is `[a-z0-9_]+`): one entry per line, `#`
//!   starts a comment, blank lines are skipped, whitespace is trimmed. After
//!   the entry, optional `added=`, `expires=` (KST dates or times), `source=`
//!   and `by=`: an entry is matched only while in force, by the transfer's
//!   event time (see the `lists` module).
//!
//! Hidden files (editor swap and lock files) are never read, and neither are
//! other subdirectories: `tests/` holds the rule tests
//! ([`crate::analyst::cases`]), which are not part of the rule set or its
//! version.
//!
//! # Conditions
//!
//! ```text
//! expr  := or
//! or    := and ("or" and)*
//! and   := not ("and" not)*
//! not   := "not" not | cmp
//! cmp   := sum (("<"|"<="|">"|">="|"=="|"!=") sum)?
//!        | KEY ["not"] "in" LISTNAME           KEY: account, payee, device, ip
//! sum   := prod (("+"|"-") prod)*
//! prod  := unary (("*"|"/") unary)*
//! unary := "-" unary | atom
//! atom  := INT | FLOAT | "true" | "false" | FEATURE | "(" expr ")"
//! ```
//!
//! Integers take `_` separators and the Korean units 만 (10⁴) and 억 (10⁸):
//! `300만`, `1.5억` (exact, and refused unless a whole number of won).
//! Comparisons of two integers are exact; if either side is a float both are
//! compared as f64. `+ - *` on integers stay integers and saturate; `/`
//! always gives a float, and division by zero gives 0.0 (a ratio over an empty
//! history reads as 0, not infinity). `==`/`!=` also compare two bools.
//! `and`/`or` short-circuit.

mod changes;
mod expr;
mod lists;
mod load;
#[cfg(test)]
mod props;
mod source;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::event::EventTime;
use crate::features::FeatureVector;

pub use changes::RuleChanges;
pub use expr::ExprError;
pub use lists::ListCounts;
pub(crate) use source::line_col;
pub use watch::{new_handle, reload_now, watch, watch_with, ReloadStatus, RuleWatcher, RulesHandle, WatchOptions};

/// Score total at which a hold is made when `ruleset.toml` does not say.
pub const DEFAULT_HOLD_SCORE: i32 = 100;

/// Largest score one rule may add: keeps a single typo (`score = 40000`) from
/// acting like a hold rule, and keeps totals far from `i32` overflow.
pub const MAX_RULE_SCORE: i32 = 1000;

/// How a held transfer is verified with the customer. Ordered by strength, so
/// when several rules hold one transfer the strongest check wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// Delayed transfer (지연이체): released after a waiting period.
    Delay,
    /// Automated phone call (ARS 인증) the customer must answer.
    Ars,
    /// A call back from the bank's staff before release.
    Callback,
}

impl Verification {
    /// Every verification, weakest first.
    pub const ALL: [Verification; 3] = [Verification::Delay, Verification::Ars, Verification::Callback];

    /// The spelling used in rule files and decisions.
    pub fn name(self) -> &'static str {
        match self {
            Verification::Delay => "delay",
            Verification::Ars => "ars",
            Verification::Callback => "callback",
        }
    }

    /// Parse the rule-file spelling.
    pub fn from_name(name: &str) -> Option<Verification> {
        Verification::ALL.into_iter().find(|v| v.name() == name)
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a live rule does when its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Hold the transfer outright and ask for this verification.
    Hold(Verification),
    /// Add these points to the transfer's score (1..=[`MAX_RULE_SCORE`]).
    Score(i32),
}

/// The string keys of a transfer, which rules look up in lists
/// (`payee in mule_accounts`). Borrowed so the hot path copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a> {
    /// The sender's account (fintech use number).
    pub account: &'a str,
    /// The payee key, `BANK-ACCOUNT` (see [`crate::event::payee_key`]).
    pub payee: &'a str,
    /// The device id, when the transfer has one; an absent device is in no list.
    pub device: Option<&'a str>,
    /// The client IP, when the transfer has one; an absent IP is in no list.
    pub ip: Option<&'a str>,
}

/// Directory-wide settings from `ruleset.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Score total at which the transfer is held.
    pub hold_score: i32,
    /// The verification asked for when a hold comes from the score total.
    pub score_verify: Verification,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { hold_score: DEFAULT_HOLD_SCORE, score_verify: Verification::Ars }
    }
}

/// One rule as the analyst wrote it, for decisions, explanations and audit.
/// The compiled condition lives beside it in the [`RuleSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    id: String,
    label: String,
    description: String,
    when: String,
    action: Action,
    reason: String,
    shadow: bool,
    source: PathBuf,
    line: usize,
}

impl Rule {
    /// Unique across the directory; `[A-Z0-9_]+`.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Shown to analysts; may be Korean.
    pub fn label(&self) -> &str {
        &self.label
    }
    /// What the rule is for, in the analysts' words.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The condition as written, for explanations.
    pub fn when(&self) -> &str {
        &self.when
    }
    /// What the rule does when live and its condition holds.
    pub fn action(&self) -> Action {
        self.action
    }
    /// Reason code emitted in decisions.
    pub fn reason(&self) -> &str {
        &self.reason
    }
    /// Shadow rules are counted and reported but never change the decision.
    pub fn shadow(&self) -> bool {
        self.shadow
    }
    /// The file the rule was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }
    /// Line of the rule's `[[rule]]` header in [`Rule::source`].
    pub fn line(&self) -> usize {
        self.line
    }
}

/// What the rules say about one transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleOutcome {
    /// Indexes into [`RuleSet::rules`] of live (non-shadow) rules that fired,
    /// in rule order.
    pub fired: SmallVec<[u16; 8]>,
    /// Shadow rules that fired: counted and reported, never affect hold/score.
    pub shadow_fired: SmallVec<[u16; 4]>,
    /// Sum of live score-rule contributions.
    pub score: i32,
    /// The strongest verification asked for, if a live hold rule fired or the
    /// score reached [`Settings::hold_score`].
    pub hold: Option<Verification>,
}

/// A compiled, immutable rules directory.
#[derive(Clone)]
pub struct RuleSet {
    version: String,
    rules: Vec<Rule>,
    /// Parallel to `rules`: only what evaluation touches, kept small and
    /// contiguous for the hot loop.
    compiled: Vec<Compiled>,
    lists: Vec<lists::List>,
    settings: Settings,
    /// How long reading and compiling the directory took (zero when built
    /// otherwise), for `fds_rules_load_seconds`: a list of a million entries
    /// should load in well under a second.
    load_time: std::time::Duration,
}

/// The hot-path half of a rule.
#[derive(Debug, Clone)]
struct Compiled {
    cond: expr::BoolExpr,
    action: Action,
    shadow: bool,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .field("lists", &self.lists.len())
            .field("settings", &self.settings)
            .finish()
    }
}

impl RuleSet {
    /// Read, check and compile a rules directory. Every problem found in any
    /// file is reported in one [`RulesError::Invalid`].
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RulesError> {
        load::load_dir(dir)
    }

    /// Build a rule set from in-memory files, named by their path relative to
    /// a rules directory (`"vp.toml"`, `"ruleset.toml"`, `"lists/mules.txt"`).
    /// Same checks and the same version as [`RuleSet::load_dir`] on a directory
    /// holding those files; problems name the relative paths.
    pub fn from_files(files: &[(&str, &str)]) -> Result<RuleSet, RulesError> {
        load::from_files(files)
    }

    /// No rules and default settings: what the engine runs before a directory
    /// is loaded, and the same version as an empty directory.
    pub fn empty() -> RuleSet {
        RuleSet {
            version: load::version_of(&[]),
            rules: Vec::new(),
            compiled: Vec::new(),
            lists: Vec::new(),
            settings: Settings::default(),
            load_time: std::time::Duration::ZERO,
        }
    }

    /// `rs-` and the first 12 hex digits of a SHA-256 over the directory's
    /// files (relative names and contents, sorted by name).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How long [`RuleSet::load_dir`] took to read and compile it.
    pub fn load_time(&self) -> std::time::Duration {
        self.load_time
    }

    /// All rules, live and shadow, in load order (files by name, then position).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The directory-wide settings (`ruleset.toml`; the defaults when it is absent).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The loaded lists and their entry counts, for start-up logs and metrics.
    pub fn lists(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.lists.iter().map(|l| (l.name(), l.len()))
    }

    /// This set with `lines` added to some of its lists (by list name), as
    /// if written at the end of their files: a rule test's own entries,
    /// beside the lists production reads. Only the lists are copied, not
    /// read again: with a million-entry list, a tenth of loading it. Refused
    /// with every line that would be refused in a list file, and every list
    /// name the set does not have.
    pub fn with_list_lines(&self, lines: &[(String, Vec<String>)]) -> Result<RuleSet, Vec<String>> {
        let mut set = self.clone();
        let mut problems = Vec::new();
        for (name, added) in lines {
            let Some(list) = set.lists.iter_mut().find(|l| l.name() == name) else {
                problems.push(format!("no list `{name}` (lists/{name}.txt)"));
                continue;
            };
            for (i, line) in added.iter().enumerate() {
                let mut bad = Vec::new();
                let entries = lists::parse(line, &mut |_, message| bad.push(message));
                if bad.is_empty() {
                    list.extend(entries);
                } else {
                    problems.extend(bad.into_iter().map(|m| format!("{name} line {}: {m}", i + 1)));
                }
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// This rule set with the named shadow rules made live, as if their
    /// `shadow = true` were deleted: what a backtest's `--promote` runs. The
    /// version says so (`rs-...+ID+ID`), since no directory has it. Refused
    /// with every unknown id (with the nearest one) and every rule that is
    /// already live.
    pub fn with_promoted(&self, ids: &[String]) -> Result<RuleSet, Vec<String>> {
        let mut set = self.clone();
        let mut problems = Vec::new();
        for id in ids {
            match set.rules.iter().position(|r| r.id == *id) {
                Some(i) if set.rules[i].shadow => {
                    set.rules[i].shadow = false;
                    set.compiled[i].shadow = false;
                    set.version.push('+');
                    set.version.push_str(id);
                }
                Some(_) => problems.push(format!("rule `{id}` is already live: only a shadow rule can be promoted")),
                None => {
                    let hint = expr::did_you_mean(id, self.rules.iter().map(|r| r.id.as_str()))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    problems.push(format!("no rule `{id}` in the rule set {}{hint}", self.version));
                }
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems)
        }
    }

    /// Each list with how many of its entries are in force, over and still
    /// to come at `at` (for `fds rules check` and the metrics: matching itself
    /// goes by each transfer's event time).
    pub fn list_counts_at(&self, at: EventTime) -> impl Iterator<Item = (&str, ListCounts)> + '_ {
        self.lists.iter().map(move |l| (l.name(), l.counts_at(at.millis())))
    }

    /// Evaluate every rule against one transfer made at `at` (its event time:
    /// list entries are matched only while in force, so a replay matches as
    /// live did).
    pub fn evaluate(&self, features: &FeatureVector, keys: &Keys<'_>, at: EventTime) -> RuleOutcome {
        let cx = expr::EvalCx { features, keys, at_ms: at.millis(), lists: &self.lists };
        let mut out = RuleOutcome::default();
        let mut hold: Option<Verification> = None;
        for (i, rule) in self.compiled.iter().enumerate() {
            if !rule.cond.eval(&cx) {
                continue;
            }
            // Rule counts are checked at load to fit in u16.
            let index = i as u16;
            if rule.shadow {
                out.shadow_fired.push(index);
                continue;
            }
            out.fired.push(index);
            match rule.action {
                Action::Hold(v) => hold = hold.max(Some(v)),
                Action::Score(points) => out.score = out.score.saturating_add(points),
            }
        }
        if out.score >= self.settings.hold_score {
            hold = hold.max(Some(self.settings.score_verify));
        }
        out.hold = hold;
        out
    }
}

/// What a list file would refuse in `line` (one line of a list): each
/// problem at its byte offset in the line. For list lines written elsewhere,
/// such as a rule test's, checked where they are written.
pub fn list_line_problems(line: &str) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    lists::parse(line, &mut |offset, message| problems.push((offset, message)));
    problems
}

/// Compile one condition (a rule's `when`) against the feature schema and the
/// given list names, as loading a rule file does. The condition language's
/// own entry point, for the property tests and fuzz targets that hold it to
/// its promise: any text is either accepted or refused with problems inside
/// it, never a panic or a hang.
pub fn check_condition(when: &str, lists: &[String]) -> Result<(), Vec<ExprError>> {
    expr::compile(when, lists).map(|_| ())
}

/// Parse an amount as conditions write it (`1_000_000`, `300만`, `1.5억`):
/// for anything analysts write beside their rules, such as rule tests.
pub fn amount_literal(text: &str) -> Result<i64, String> {
    expr::int_literal(text.trim())
}

/// The name in `candidates` closest to `name`, if one is close enough to be
/// what was meant: for "did you mean" hints wherever analysts name things.
pub fn did_you_mean<'c>(name: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    expr::did_you_mean(name, candidates)
}

/// One problem in a rules directory, positioned for an editor: 1-based line,
/// and 1-based column counted in characters (not bytes), so it is right for
/// lines holding Korean text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file: under the directory given to [`RuleSet::load_dir`], or the
    /// relative name given to [`RuleSet::from_files`].
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and how to fix it where that is known.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

/// Why a rules directory could not be used (or watched).
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A file or directory could not be read at all.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The directory was read but is not a valid rule set: every problem found.
    #[error("{}", ProblemList(problems))]
    Invalid { problems: Vec<Problem> },
}

impl RulesError {
    /// The positioned problems, if the directory was read but invalid.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RulesError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
