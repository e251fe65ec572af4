//! Input: recorded event streams, read from files.
//!
//! This module owns turning files into events: JSON lines as on the wire
//! (plain or gzip), and the fraud-detection handbook's card data set
//! ([`handbook`]), read as the same events. `fds replay`, `fds load`, training
//! and evaluation all read their streams through [`open`], so a file that one
//! command accepts, every command accepts, and reports the same bad lines.
//!
//! Guarantees:
//! - **Bad input never stops reading.** A malformed line, an unknown event type
//!   or an invalid value comes out as an error with its line number and the
//!   reason, and the next line is read; a line longer than the event size
//!   limit is refused as the pipeline refuses such a message, and is skipped
//!   without being held in memory (a 100 MB line costs what a short one does); a broken file (a truncated gzip stream)
//!   is reported once, where it breaks, and the input ends there. Nothing
//!   panics on input.
//! - **File order.** Events come out in the order they are written: replays
//!   are deterministic because their input is.
//! - **Progress without a second pass.** [`Input::position`] counts the bytes
//!   read so far (compressed bytes for gzip) against [`Input::size`].

pub mod handbook;
pub mod order;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::event::{Event, EventError, MAX_EVENT_BYTES};
use handbook::HandbookReader;

/// At most this many bad lines are listed in a report (all are counted).
pub const BAD_LINES_LISTED: usize = 20;

/// Why an input could not be opened.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open {path}", path = path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// From the content: the handbook's CSV header, or else JSON lines.
    #[default]
    Auto,
    /// One event per line, as on the wire.
    Jsonl,
    /// The handbook's `transactions.csv(.gz)`.
    Handbook,
}

impl Format {
    /// Every format, as the command line offers them.
    pub const ALL: [Format; 3] = [Format::Auto, Format::Jsonl, Format::Handbook];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Jsonl => "jsonl",
            Format::Handbook => "handbook",
        }
    }
}

/// A line that was not an event.
#[derive(Debug, Clone, Serialize)]
pub struct BadLine {
    /// The input's name (its path).
    pub file: String,
    /// Line number, from 1.
    pub line: u64,
    /// Why the line is not an event.
    pub reason: String,
}

/// Events with their line number, or a line that is not one, with the reason.
type EventIter = Box<dyn Iterator<Item = Result<(u64, Event), (u64, String)>> + Send>;

/// An opened input: its events, and how far into the file reading has got.
#[allow(missing_debug_implementations)] // holds an iterator over a reader: nothing to print but the name
pub struct Input {
    /// The path, as reports name the input.
    pub name: String,
    /// The format read: the one asked for, or the one [`Format::Auto`] found.
    pub format: Format,
    /// The events in file order, or each bad line with its number and reason.
    pub events: EventIter,
    /// Bytes of the file read so far (compressed bytes for gzip).
    pub position: Arc<AtomicU64>,
    /// The file's size in bytes, for progress.
    pub size: u64,
}

struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Open a recorded stream. `.gz` files are decompressed; a directory is taken
/// to hold the handbook's `transactions.csv.gz`. Events longer than
/// [`MAX_EVENT_BYTES`] are bad lines.
pub fn open(path: &Path, format: Format) -> Result<Input, InputError> {
    open_within(path, format, MAX_EVENT_BYTES)
}

/// [`open`], with events longer than `max_event_bytes` bad lines (the
/// configuration's `engine.max_event_bytes`, so a replay refuses what the
/// pipeline would).
pub fn open_within(path: &Path, format: Format, max_event_bytes: usize) -> Result<Input, InputError> {
    let path = if path.is_dir() { path.join("transactions.csv.gz") } else { path.to_path_buf() };
    let open_err = |source| InputError::Open { path: path.clone(), source };
    let file = File::open(&path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let position = Arc::new(AtomicU64::new(0));
    let counted = Counting { inner: file, read: position.clone() };
    let raw: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, counted)))
    } else {
        Box::new(counted)
    };
    // Look at the whole first line (one read of a decoder may return less),
    // then put it back in front of the rest.
    let mut reader = BufReader::with_capacity(1 << 16, raw);
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first).map_err(open_err)?;
    let format = match format {
        Format::Auto if first.starts_with(handbook::HEADER.as_bytes()) => Format::Handbook,
        Format::Auto => Format::Jsonl,
        f => f,
    };
    let rest: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(first).chain(reader));
    let reader = BufReader::with_capacity(1 << 16, rest);
    let events: EventIter = match format {
        Format::Handbook => {
            let hb = HandbookReader::new(reader)
                .map_err(|e| InputError::Format { path: path.clone(), reason: e.to_string() })?;
            Box::new(hb.map(|r| r.map_err(|e| (e.line, e.reason))))
        }
        _ => Box::new(JsonLines { input: reader, line: 0, buf: Vec::new(), done: false, max_bytes: max_event_bytes }),
    };
    Ok(Input { name: path.display().to_string(), format, events, position, size })
}

/// Events from JSON lines; blank lines are skipped.
struct JsonLines<R> {
    input: R,
    line: u64,
    buf: Vec<u8>,
    done: bool,
    max_bytes: usize,
}

/// Read one line into `buf`, keeping at most `keep` bytes of it: the rest is
/// read past, not stored. Returns the whole line's length without its
/// newline, and whether anything was read (false at the end of the input).
fn read_line_capped(input: &mut impl BufRead, buf: &mut Vec<u8>, keep: usize) -> std::io::Result<(usize, bool)> {
    let mut total = 0;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((total, total > 0));
        }
        let (len, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = keep.saturating_sub(buf.len());
        buf.extend_from_slice(&available[..len.min(room)]);
        input.consume(len);
        total += len;
        if ends {
            return Ok((total - 1, true));
        }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = Result<(u64, Event), (u64, String)>;
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            // A line's end (`\r\n`) and surrounding blanks are not the event's.
            let keep = self.max_bytes.saturating_add(64);
            match read_line_capped(&mut self.input, &mut self.buf, keep) {
                Ok((_, false)) => return None,
                Ok((len, true)) => {
                    if len > keep {
                        let e = EventError::TooLarge { size: len, limit: self.max_bytes };
                        return Some(Err((self.line, e.to_string())));
                    }
                    let text = self.buf.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    return Some(
                        Event::from_json_within(text, self.max_bytes)
                            .map(|e| (self.line, e))
                            .map_err(|e| (self.line, e.to_string())),
                    );
                }
                Err(e) => {
                    // A broken file (a truncated gzip stream) fails the same way
                    // on every further read: report it once and end the input.
                    self.done = true;
                    return Some(Err((self.line, format!("read error, input ends here: {e}"))));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::build;

    #[test]
    fn a_line_over_the_limit_is_a_bad_line_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.jsonl");
        let ok = |id: &str| build::transfer(id).build().to_json();
        let huge = ok("T2").replace("김민수", &"가".repeat(10_000_000));
        let near = ok("T3").replace("김민수", &"나".repeat(1000));
        std::fs::write(&path, format!("{}\r\n{huge}\n{near}\n\n{}", ok("T1"), ok("T4"))).unwrap();
        let input = open_within(&path, Format::Jsonl, 4096).unwrap();
        let got: Vec<_> = input.events.map(|r| r.map(|(line, e)| (line, e.to_json()))).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().0, 1);
        assert_eq!(
            got[1].as_ref().unwrap_err(),
            &(2, format!("event of {} bytes refused unread: the limit is 4096 bytes", huge.len()))
        );
        // Under the size limit but a name of 1,000 characters: its bound.
        let (line, reason) = got[2].as_ref().unwrap_err();
        assert_eq!(*line, 3);
        assert!(reason.contains("recv_client_name is 1000 characters long, at most 20"), "{reason}");
        assert_eq!(got[3].as_ref().unwrap().0, 5);
    }
}
