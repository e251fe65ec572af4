//! Lists: `lists/<name>.txt`, the entries rules look keys up in
//! (`payee in mule_accounts`), each with the span of event time it is in
//! force.
//!
//! A line is an entry, then optional `key=value` attributes, then an
//! optional `# comment`:
//!
//! ```text
//! # 사기이용계좌 shared by other banks
//! 088-110-123-456789  added=2026-11-02  expires=2027-05-02  source=KFTC  by=kim.j   # case 2026-1187
//! 004-1002003004
//! ```
//!
//! - `added` and `expires` are KST dates (`YYYY-MM-DD`, meaning 00:00 KST)
//!   or times (`YYYY-MM-DDTHH:MM`). An entry is in force for transfers whose
//!   **event time** is in `[added, expires)`: a replay of last month's traffic
//!   is matched as it would have been then (no entry used before the bank had
//!   it, none after it lapsed), so replays and backtests stay deterministic
//!   and free of hindsight. Without them an entry is always in force.
//! - `source` and `by` say where the entry came from (the information-sharing
//!   channel, the analyst); they are checked (no spaces, at most 64 bytes) and
//!   kept in the file for audit, not in memory.
//! - The same entry on several lines (two banks reporting one account) is in
//!   force whenever one of its lines is.
//!
//! Guarantees: a lookup is one hash probe and, for the usual entry of one
//! line, one comparison of two integers; nothing is allocated. Every
//! malformed line is reported at its line and column, and the entry is left
//! out.

use std::collections::HashMap;

use crate::event::EventTime;

/// Longest list entry: the longest value a list is matched against (a device
/// id; accounts, payee keys and IP addresses are shorter), so a longer entry
/// could never match anything.
pub(crate) const MAX_ENTRY_BYTES: usize = crate::event::MAX_DEVICE_ID_BYTES;

/// Longest `source` or `by` value.
const MAX_ATTRIBUTE_BYTES: usize = 64;

/// The attributes a list line may carry.
const ATTRIBUTES: [&str; 4] = ["added", "expires", "source", "by"];

/// The span of event time an entry is in force: `[from, until)` in Unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    from: i64,
    until: i64,
}

impl Window {
    /// Always in force.
    pub(crate) const ALWAYS: Window = Window { from: i64::MIN, until: i64::MAX };

    #[inline]
    fn covers(self, at_ms: i64) -> bool {
        self.from <= at_ms && at_ms < self.until
    }

    /// One window covering both, when they overlap or touch.
    fn union(self, other: Window) -> Option<Window> {
        (other.from <= self.until && self.from <= other.until)
            .then(|| Window { from: self.from.min(other.from), until: self.until.max(other.until) })
    }
}

/// Where an entry is in force: one window, or (an entry listed on several
/// lines with gaps between them, rare) several kept aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    window: Window,
    /// Index into [`List::more`], or [`Entry::ONE`].
    more: u32,
}

impl Entry {
    const ONE: u32 = u32::MAX;
}

/// A named set of strings from `lists/<name>.txt`, each in force for a span
/// of event time.
#[derive(Debug, Clone)]
pub(crate) struct List {
    name: String,
    // ahash: fast on short keys and resistant to crafted collisions, since the
    // looked-up values come from transfer requests.
    entries: HashMap<Box<str>, Entry, ahash::RandomState>,
    more: Vec<Vec<Window>>,
}

/// How many of a list's entries are in force at one moment, and how many
/// are over or not yet begun.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListCounts {
    /// Distinct entries.
    pub entries: usize,
    /// In force at that moment.
    pub in_force: usize,
    /// Every window ended before it: candidates for pruning.
    pub expired: usize,
    /// Not yet in force, and in force later.
    pub pending: usize,
}

impl List {
    /// A list whose entries are always in force.
    pub(crate) fn new(name: String, entries: impl IntoIterator<Item = String>) -> List {
        List::with_windows(name, entries.into_iter().map(|e| (e, Window::ALWAYS)))
    }

    pub(crate) fn with_windows(name: String, lines: impl IntoIterator<Item = (String, Window)>) -> List {
        let lines = lines.into_iter();
        let entries = HashMap::with_capacity_and_hasher(lines.size_hint().0, ahash::RandomState::new());
        let mut list = List { name, entries, more: Vec::new() };
        list.extend(lines);
        list
    }

    /// Add lines as if they had been written at the end of the list's file:
    /// also how a rule test's own entries join a loaded list.
    pub(crate) fn extend(&mut self, lines: impl IntoIterator<Item = (String, Window)>) {
        for (key, window) in lines {
            use std::collections::hash_map::Entry as Slot;
            let e = match self.entries.entry(key.into_boxed_str()) {
                Slot::Vacant(v) => {
                    v.insert(Entry { window, more: Entry::ONE });
                    continue;
                }
                Slot::Occupied(o) => o.into_mut(),
            };
            match e {
                e if e.more != Entry::ONE => self.more[e.more as usize].push(window),
                e => match e.window.union(window) {
                    Some(hull) => e.window = hull,
                    None => {
                        // `more` cannot reach u32::MAX entries: a list file
                        // holds at most a few million lines.
                        e.more = self.more.len() as u32;
                        self.more.push(vec![e.window, window]);
                    }
                },
            }
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `key` is in the list and in force at event time `at_ms`.
    #[inline]
    pub(crate) fn contains(&self, key: &str, at_ms: i64) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if e.more == Entry::ONE => e.window.covers(at_ms),
            Some(e) => self.more[e.more as usize].iter().any(|w| w.covers(at_ms)),
        }
    }

    /// Entries in force, over and still to come at `at_ms`.
    pub(crate) fn counts_at(&self, at_ms: i64) -> ListCounts {
        let mut c = ListCounts { entries: self.entries.len(), ..ListCounts::default() };
        for e in self.entries.values() {
            let windows = match e.more {
                Entry::ONE => std::slice::from_ref(&e.window),
                i => &self.more[i as usize][..],
            };
            if windows.iter().any(|w| w.covers(at_ms)) {
                c.in_force += 1;
            } else if windows.iter().any(|w| w.from > at_ms) {
                c.pending += 1;
            } else {
                c.expired += 1;
            }
        }
        c
    }

    /// Whether both lists hold the same entries in force at the same times.
    pub(crate) fn same_entries(&self, other: &List) -> bool {
        let windows = |l: &List, e: &Entry| -> Vec<Window> {
            let mut w = match e.more {
                Entry::ONE => vec![e.window],
                i => l.more[i as usize].clone(),
            };
            w.sort_by_key(|w| (w.from, w.until));
            w
        };
        self.entries.len() == other.entries.len()
            && self.entries.iter().all(|(k, e)| {
                other.entries.get(k).is_some_and(|o| {
                    (e.more == Entry::ONE && o.more == Entry::ONE && e.window == o.window)
                        || windows(self, e) == windows(other, o)
                })
            })
    }
}

/// Read a list file: each line's entry (normalized as the engine keys it)
/// and its window. `report(offset, message)` is told every problem, at the
/// byte offset in `text` where it is; a line with a problem is left out.
pub(crate) fn parse(text: &str, report: &mut dyn FnMut(usize, String)) -> Vec<(String, Window)> {
    // Lines are about 20 bytes in a large list: reserving by that keeps a
    // million-entry file from growing the vector twenty times.
    let mut out = Vec::with_capacity(text.len() / 24);
    let mut dates = DateCache::default();
    let mut line_start = 0;
    for line in text.split('\n') {
        let content = line.split('#').next().unwrap_or("");
        let mut words = Words { text: content, at: 0 };
        if let Some((entry_at, entry)) = words.next() {
            let mut bad = 0;
            let mut say = |offset: usize, message: String| {
                bad += 1;
                report(line_start + offset, message);
            };
            if entry.len() > MAX_ENTRY_BYTES {
                let message = format!(
                    "a list entry of {} bytes: nothing it could match is longer than {MAX_ENTRY_BYTES} bytes",
                    entry.len()
                );
                say(entry_at, message);
            }
            let window = attributes(&mut words, &mut dates, &mut say);
            if bad == 0 {
                out.push((normalize_entry(entry), window));
            }
        }
        line_start += line.len() + 1;
    }
    out
}

/// The whitespace-separated words of a line, with their offsets.
struct Words<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = (usize, &'a str);

    /// Words are split at ASCII whitespace, byte by byte (a list file is
    /// megabytes of short lines); other bytes, Korean included, are word.
    fn next(&mut self) -> Option<(usize, &'a str)> {
        let bytes = self.text.as_bytes();
        let start = self.at + bytes[self.at..].iter().take_while(|b| b.is_ascii_whitespace()).count();
        if start == bytes.len() {
            self.at = start;
            return None;
        }
        let len = bytes[start..].iter().take_while(|b| !b.is_ascii_whitespace()).count();
        self.at = start + len;
        // Both ends are at ASCII bytes or the ends of the text: char boundaries.
        Some((start, &self.text[start..start + len]))
    }
}

/// The `key=value` attributes after an entry, as its window.
fn attributes(words: &mut Words<'_>, dates: &mut DateCache, say: &mut dyn FnMut(usize, String)) -> Window {
    let mut window = Window::ALWAYS;
    let mut seen: Vec<&str> = Vec::new();
    let mut added_at = 0;
    for (at, word) in words {
        let Some((key, value)) = word.split_once('=') else {
            say(
                at,
                format!(
                    "`{word}` after the entry: one entry per line, then only key=value attributes ({})",
                    ATTRIBUTES.join(", ")
                ),
            );
            continue;
        };
        let value_at = at + key.len() + 1;
        if !ATTRIBUTES.contains(&key) {
            let hint = super::expr::did_you_mean(key, ATTRIBUTES.into_iter()).map_or_else(
                || format!("; a list line takes {}", ATTRIBUTES.join(", ")),
                |s| format!("; did you mean `{s}`?"),
            );
            say(at, format!("unknown attribute `{key}`{hint}"));
            continue;
        }
        if seen.contains(&key) {
            say(at, format!("`{key}` is given twice on this line"));
            continue;
        }
        seen.push(key);
        if value.is_empty() {
            say(value_at, format!("`{key}` has no value"));
            continue;
        }
        match key {
            "added" | "expires" => match dates.parse(value) {
                Some(ms) if key == "added" => {
                    window.from = ms;
                    added_at = at;
                }
                Some(ms) => window.until = ms,
                None => say(
                    value_at,
                    format!("`{key}` is a KST date or time, `2026-11-02` or `2026-11-02T14:30`; found `{value}`"),
                ),
            },
            _ if value.len() > MAX_ATTRIBUTE_BYTES => {
                say(value_at, format!("`{key}` is longer than {MAX_ATTRIBUTE_BYTES} bytes"))
            }
            _ if value.chars().any(char::is_control) => say(value_at, format!("`{key}` holds a control character")),
            _ => {}
        }
    }
    if window.from != i64::MIN && window.until != i64::MAX && window.until <= window.from {
        say(added_at, "`expires` is not after `added`: the entry would never be in force".to_owned());
    }
    window
}

/// The last few dates parsed: a list's entries share a handful of dates
/// (the day a batch of reports came in), so most are parsed once.
#[derive(Default)]
struct DateCache {
    recent: Vec<(String, Option<i64>)>,
}

impl DateCache {
    const SIZE: usize = 8;

    fn parse(&mut self, value: &str) -> Option<i64> {
        if let Some((_, ms)) = self.recent.iter().find(|(v, _)| v == value) {
            return *ms;
        }
        let ms = parse_kst(value);
        if self.recent.len() == Self::SIZE {
            self.recent.remove(0);
        }
        self.recent.push((value.to_owned(), ms));
        ms
    }
}

/// `YYYY-MM-DD` (00:00) or `YYYY-MM-DDTHH:MM`, KST, as Unix ms.
fn parse_kst(value: &str) -> Option<i64> {
    let b = value.as_bytes();
    let time: &[u8] = match b.len() {
        10 => b"0000",
        16 if b[10] == b'T' && b[13] == b':' => &[b[11], b[12], b[14], b[15]],
        _ => return None,
    };
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    // Rearranged on the stack as the event format's digits, which are
    // checked there: no allocation per entry of a million-line list.
    let mut digits = [b'0'; 14];
    digits[..4].copy_from_slice(&b[..4]);
    digits[4..6].copy_from_slice(&b[5..7]);
    digits[6..8].copy_from_slice(&b[8..10]);
    digits[8..12].copy_from_slice(time);
    let t = EventTime::parse_kst(std::str::from_utf8(&digits).ok()?).ok()?;
    Some(t.millis())
}

/// A payee entry (`BANK-ACCOUNT`, three-digit bank code) is stored the way the
/// engine keys payees, without the account number's hyphens, so analysts can
/// paste `088-110-123-456789` as printed on a report. Other entries (devices,
/// accounts, IPs) are kept as written.
pub(crate) fn normalize_entry(entry: &str) -> String {
    match entry.split_once('-') {
        Some((bank, account)) if bank.len() == 3 && bank.bytes().all(|b| b.is_ascii_digit()) => {
            crate::event::payee_key(bank, account)
        }
        _ => entry.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> i64 {
        parse_kst(s).unwrap()
    }

    type Parsed = (Vec<(String, Window)>, Vec<(usize, String)>);

    fn parsed(text: &str) -> Parsed {
        let mut problems = Vec::new();
        let lines = parse(text, &mut |at, m| problems.push((at, m)));
        (lines, problems)
    }

    #[test]
    fn payee_entries_drop_account_hyphens_like_the_engine_does() {
        assert_eq!(normalize_entry("088-110-123-456789"), "088-110123456789");
        assert_eq!(normalize_entry("088-110123456789"), "088-110123456789");
        assert_eq!(normalize_entry("D-1234"), "D-1234");
        assert_eq!(normalize_entry("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn attributes_give_the_window_and_provenance_is_checked() {
        let (lines, problems) = parsed(
            "088-1  added=2026-11-02  expires=2027-05-02T09:30 source=KFTC by=kim.j # case 17\nD9\n  # only a comment\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].1, Window { from: day("2026-11-02"), until: day("2027-05-02T09:30") });
        assert_eq!(lines[1], ("D9".to_owned(), Window::ALWAYS));
        // 2026-11-02 00:00 KST is 2026-11-01 15:00 UTC.
        assert_eq!(day("2026-11-02"), 1_793_545_200_000);
    }

    #[test]
    fn every_malformed_attribute_is_reported_at_its_column() {
        let text = "088-1 addded=2026-11-02\n088-2 expires=2026-13-01\n088-3 source=\n088-4 added=2026-11-02 added=2026-11-03\n\
                    088-5 added=2026-11-02 expires=2026-11-01\n088-6 later\n088-7 by=kim source=ok\n";
        let (lines, problems) = parsed(text);
        let at: Vec<(usize, &str)> = problems.iter().map(|(o, m)| (*o, m.as_str())).collect();
        let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
        let col_of = |offset: usize| offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
        let found: Vec<(usize, usize)> = at.iter().map(|(o, _)| (line_of(*o), col_of(*o))).collect();
        assert_eq!(found, [(1, 7), (2, 15), (3, 14), (4, 24), (5, 7), (6, 7)], "{problems:?}");
        assert!(at[0].1.contains("did you mean `added`?"), "{}", at[0].1);
        assert!(at[1].1.contains("KST date or time"), "{}", at[1].1);
        assert!(at[3].1.contains("given twice"), "{}", at[3].1);
        assert!(at[4].1.contains("not after `added`"), "{}", at[4].1);
        assert!(at[5].1.contains("`later` after the entry"), "{}", at[5].1);
        assert_eq!(lines.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["088-7"]);
    }

    #[test]
    fn an_entry_is_in_force_from_added_until_expires_by_event_time() {
        let (from, until) = (day("2026-11-02"), day("2026-12-01"));
        let list = List::with_windows("m".into(), [("088-1".to_owned(), Window { from, until })]);
        assert!(!list.contains("088-1", from - 1));
        assert!(list.contains("088-1", from));
        assert!(list.contains("088-1", until - 1));
        assert!(!list.contains("088-1", until));
        assert!(!list.contains("088-2", from));
        assert_eq!(list.counts_at(from - 1), ListCounts { entries: 1, in_force: 0, expired: 0, pending: 1 });
        assert_eq!(list.counts_at(until), ListCounts { entries: 1, in_force: 0, expired: 1, pending: 0 });
    }

    #[test]
    fn an_entry_on_several_lines_is_in_force_when_any_line_is() {
        let w = |a: &str, b: &str| Window { from: day(a), until: day(b) };
        let lines = [
            ("A".to_owned(), w("2026-01-01", "2026-02-01")),
            ("A".to_owned(), w("2026-03-01", "2026-04-01")),
            ("B".to_owned(), w("2026-01-01", "2026-02-01")),
            ("B".to_owned(), w("2026-02-01", "2026-03-01")),
            ("C".to_owned(), w("2026-01-01", "2026-02-01")),
            ("C".to_owned(), Window::ALWAYS),
        ];
        let list = List::with_windows("m".into(), lines);
        assert_eq!(list.len(), 3);
        assert!(list.contains("A", day("2026-01-15")) && list.contains("A", day("2026-03-15")));
        assert!(!list.contains("A", day("2026-02-15")));
        assert!(list.contains("B", day("2026-02-15")), "touching windows merge");
        assert!(list.contains("C", day("2030-01-01")));
        assert_eq!(list.more.len(), 1, "only the entry with a gap is kept aside");
        let same = List::with_windows("m".into(), list.entries.keys().map(|k| (k.to_string(), Window::ALWAYS)));
        assert!(!list.same_entries(&same) && same.same_entries(&same.clone()));
    }
}
