//! Positions in rule files: byte offsets to `line:column`, and offsets inside
//! a TOML string value back to the file.
//!
//! A `when` condition is a TOML string, so the expression compiler sees the
//! *decoded* value while the analyst's editor shows the raw file. Mapping
//! between the two is what lets an error inside a condition point at the
//! exact character, also across the lines of a `'''...'''` string and past
//! escapes such as `\"` or `\u00e9`.

use std::ops::Range;

/// 1-based line and 1-based column in characters (not bytes) of a byte
/// offset. Offsets past the end or inside a character are clamped, so a
/// position can always be shown.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Maps byte offsets within the decoded value of one TOML string back to
/// byte offsets in the file.
#[derive(Debug)]
pub(crate) struct StringMap {
    /// Where the string starts in the file: the answer when exact mapping
    /// is impossible.
    start: usize,
    /// File offset for each decoded byte, plus one for the end of the value.
    offsets: Option<Vec<usize>>,
}

impl StringMap {
    /// `span` is the span toml reports for the string value (quotes included)
    /// and `value` is the decoded string toml produced from it.
    pub(crate) fn new(file: &str, span: Range<usize>, value: &str) -> StringMap {
        let offsets = file
            .get(span.clone())
            .and_then(|raw| decode_offsets(raw, value))
            .map(|offsets| offsets.into_iter().map(|o| o + span.start).collect());
        StringMap { start: span.start, offsets }
    }

    pub(crate) fn file_offset(&self, value_offset: usize) -> usize {
        self.offsets.as_ref().and_then(|o| o.get(value_offset).copied()).unwrap_or(self.start)
    }
}

/// For each byte of the decoded string, plus one past its end (which maps to
/// the closing delimiter), the offset within `raw` (the string token,
/// delimiters included) of the text that produced it.
///
/// Returns `None` unless decoding here reproduces `value` exactly: a string
/// form or escape this decoder does not know must degrade to "point at the
/// start of the string", never to a wrong position.
fn decode_offsets(raw: &str, value: &str) -> Option<Vec<usize>> {
    let (delim, multiline, basic) = if raw.starts_with("\"\"\"") {
        (3, true, true)
    } else if raw.starts_with("'''") {
        (3, true, false)
    } else if raw.starts_with('"') {
        (1, false, true)
    } else if raw.starts_with('\'') {
        (1, false, false)
    } else {
        return None;
    };
    let end = raw.len().checked_sub(delim)?;
    let mut start = delim;
    if multiline {
        // A newline right after the opening delimiter is not part of the value.
        let rest = raw.get(start..)?;
        start += if rest.starts_with("\r\n") { 2 } else { usize::from(rest.starts_with('\n')) };
    }
    let content = raw.get(start..end)?;
    let mut decoded = String::with_capacity(content.len());
    let mut offsets = Vec::with_capacity(content.len() + 1);
    let mut chars = content.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = start + i;
        let out = match c {
            '\\' if basic => {
                let (_, e) = chars.next()?;
                match e {
                    'b' => '\u{8}',
                    't' => '\t',
                    'n' => '\n',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    '"' => '"',
                    '\\' => '\\',
                    'u' | 'U' => {
                        let len = if e == 'u' { 4 } else { 8 };
                        let hex: String = (0..len).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                    }
                    ' ' | '\t' | '\r' | '\n' if multiline => {
                        // Line-ending backslash: the newline and all
                        // whitespace after it vanish from the value.
                        while chars.peek().is_some_and(|&(_, w)| w.is_ascii_whitespace()) {
                            chars.next();
                        }
                        continue;
                    }
                    _ => return None,
                }
            }
            // TOML normalizes CRLF in multi-line strings to LF.
            '\r' if multiline && chars.peek().is_some_and(|&(_, n)| n == '\n') => continue,
            other => other,
        };
        decoded.push(out);
        offsets.extend(std::iter::repeat(at).take(out.len_utf8()));
    }
    offsets.push(end);
    (decoded == value).then_some(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Map the first occurrence of `needle` in the decoded value and return
    /// what the file holds there.
    fn mapped<'f>(file: &'f str, value: &str, needle: &str) -> &'f str {
        let start = file.find(['"', '\'']).expect("a string");
        let end = file.rfind(['"', '\'']).expect("a string") + 1;
        let map = StringMap::new(file, start..end, value);
        let at = map.file_offset(value.find(needle).expect("needle in value"));
        &file[at..]
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "label = \"보이스피싱\"\nx = 1";
        assert_eq!(line_col(text, text.find("\"\n").unwrap()), (1, 15));
        assert_eq!(line_col(text, text.find('x').unwrap()), (2, 1));
        assert_eq!(line_col(text, 10), (1, 10)); // inside a character: clamped back
        assert_eq!(line_col(text, 10_000), (2, 6));
        assert_eq!(line_col("", 0), (1, 1));
    }

    #[test]
    fn basic_strings_map_exactly_even_past_escapes() {
        let file = r#"when = "a \"q\" \u00e9 b > 1""#;
        assert!(mapped(file, "a \"q\" é b > 1", "b >").starts_with("b > 1"));
        assert!(mapped(file, "a \"q\" é b > 1", "é").starts_with("\\u00e9"));
    }

    #[test]
    fn multi_line_literal_strings_map_across_lines_and_crlf() {
        let file = "when = '''\r\n  amount > 1\r\n  and x\r\n'''";
        let value = "  amount > 1\n  and x\n";
        assert!(mapped(file, value, "and").starts_with("and x"));
        let map = StringMap::new(file, 7..file.len(), value);
        assert_eq!(map.file_offset(value.len()), file.len() - 3);
    }

    #[test]
    fn multi_line_basic_strings_skip_line_ending_backslashes() {
        let file = "when = \"\"\"\nab \\\n    cd\"\"\"";
        assert!(mapped(file, "ab cd", "cd").starts_with("cd\"\"\""));
    }

    #[test]
    fn an_unknown_form_falls_back_to_the_string_start() {
        let file = r#"when = "x \q y""#;
        let map = StringMap::new(file, 7..file.len(), "something else");
        assert_eq!(map.file_offset(3), 7);
    }
}
