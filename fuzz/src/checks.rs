//! The properties the fuzz targets hold `fds` to, one function per target.
//!
//! Each function takes the fuzzer's raw input and returns `Err` with a
//! description of the violation when a property fails; a panic inside `fds`
//! is a failure too, and is left to propagate. The fuzz targets turn an `Err`
//! into a panic, which libFuzzer records as a crash; the main package's
//! `tests/fuzz_regressions.rs` includes this very file (`#[path]`) and runs
//! the same functions over the seeds and the saved crashes. That is why this
//! file depends on nothing but `fds` and std.

use std::path::Path;

use fds::event::Event;
use fds::rules::{check_condition, RuleSet};

/// What a check returns: `Err` describes the property that failed.
pub type Outcome = Result<(), String>;

/// A target's check of one input.
pub type Check = fn(&[u8]) -> Outcome;

/// Every target by name (the name of its binary, its seed directory and its
/// regression directory) with its check.
pub const TARGETS: [(&str, Check); 3] =
    [("event_decode", event_decode), ("rule_condition", rule_condition), ("rule_files", rule_files)];

/// The lists the shipped rules use (`rules/lists/*.txt`), so conditions and
/// rule files written against them compile rather than stop at "unknown
/// list", and the fuzzer reaches the code past the name check.
pub const SHIPPED_LISTS: [&str; 3] = ["blocked_devices", "mule_accounts", "trusted_payees"];

/// Separates the parts of a `rule_files` input. 0xFF never occurs in UTF-8,
/// so it cannot collide with text the parts are meant to hold.
pub const PART_SEPARATOR: u8 = 0xFF;

/// `event_decode`: any bytes as one event message. Decoding never panics,
/// and an event it accepts is accepted again, unchanged, from its own JSON:
/// what `fds` writes (decisions, dead letters, replay files) it can read.
pub fn event_decode(data: &[u8]) -> Outcome {
    let Ok(event) = Event::from_json(data) else {
        return Ok(());
    };
    let json = event.to_json();
    match Event::from_json(json.as_bytes()) {
        Ok(again) if again == event => Ok(()),
        Ok(again) => {
            Err(format!("round trip changed the event\n  decoded: {event:?}\n  re-read: {again:?}\n  via: {json}"))
        }
        Err(e) => Err(format!("an accepted event's own JSON is refused: {e}\n  event: {event:?}\n  json: {json}")),
    }
}

/// `rule_condition`: any UTF-8 text as a rule's `when` (other input is
/// skipped: a rule file is decoded before its conditions are compiled).
/// Compiling never panics, and a refusal names at least one problem, each at
/// a byte offset inside the text, where an editor can show it.
pub fn rule_condition(data: &[u8]) -> Outcome {
    let Ok(when) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let lists: Vec<String> = SHIPPED_LISTS.iter().map(|name| name.to_string()).collect();
    let Err(errors) = check_condition(when, &lists) else {
        return Ok(());
    };
    if errors.is_empty() {
        return Err(format!("condition refused without a problem: {when:?}"));
    }
    match errors.iter().find(|e| e.offset > when.len()) {
        Some(e) => {
            Err(format!("problem at byte {} of a {}-byte condition ({:?}): {when:?}", e.offset, when.len(), e.message))
        }
        None => Ok(()),
    }
}

/// `rule_files`: the input split at [`PART_SEPARATOR`] into a rule file
/// (`fuzz.toml`), a list file (`lists/fuzz_list.txt`, when there is a first
/// separator) and a `ruleset.toml` (when there is a second), loaded together
/// with empty [`SHIPPED_LISTS`]. Bytes that are not UTF-8 become U+FFFD, since
/// [`RuleSet::from_files`] takes text. Loading never panics, and a refusal
/// names at least one problem, each a non-empty line of text positioned
/// inside the file it names: line from 1 to the file's line count, column
/// from 1 to one past that line's length in characters.
pub fn rule_files(data: &[u8]) -> Outcome {
    let mut parts = data.splitn(3, |&b| b == PART_SEPARATOR).map(String::from_utf8_lossy);
    let rules = parts.next().unwrap_or_default();
    let list = parts.next();
    let settings = parts.next();

    let shipped: Vec<String> = SHIPPED_LISTS.iter().map(|name| format!("lists/{name}.txt")).collect();
    let mut files: Vec<(&str, &str)> = vec![("fuzz.toml", &*rules)];
    if let Some(list) = &list {
        files.push(("lists/fuzz_list.txt", &**list));
    }
    if let Some(settings) = &settings {
        files.push(("ruleset.toml", &**settings));
    }
    files.extend(shipped.iter().map(|name| (name.as_str(), "")));

    let Err(error) = RuleSet::from_files(&files) else {
        return Ok(());
    };
    if error.problems().is_empty() {
        return Err(format!("in-memory files refused without a positioned problem: {error:?}"));
    }
    for problem in error.problems() {
        let Some(&(_, text)) = files.iter().find(|(name, _)| Path::new(name) == problem.path) else {
            return Err(format!("problem names a file that was not given: {problem:?}"));
        };
        if problem.message.trim().is_empty() {
            return Err(format!("problem does not say what is wrong: {problem:?}"));
        }
        if problem.message.contains(['\n', '\r']) {
            return Err(format!("problem message is not one line of text: {problem:?}"));
        }
        // A leading byte-order mark is dropped before positions are counted,
        // which only shortens the first line: the bounds below stay sound.
        let lines = text.matches('\n').count() + 1;
        let line_chars = text.split('\n').nth(problem.line.wrapping_sub(1)).map_or(0, |l| l.chars().count());
        if problem.line < 1 || problem.line > lines || problem.column < 1 || problem.column > line_chars + 1 {
            return Err(format!(
                "problem outside its file ({lines} lines, line {} has {line_chars} characters): {problem:?}",
                problem.line
            ));
        }
    }
    Ok(())
}
