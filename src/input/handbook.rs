//! The fraud-detection handbook's labelled card data set, read as a stream of
//! transfers and late fraud labels.
//!
//! Le Borgne et al., *Reproducible Machine Learning for Credit Card Fraud
//! Detection - Practical Handbook* (ULB, 2022) publish 1.75M simulated card
//! transactions with fraud labels (`../shared/datasets/handbook-simulated/`). This
//! module maps them onto the engine's events so detection can be measured on data
//! nobody on this project wrote. The mapping:
//!
//! | handbook column      | engine event                                                    |
//! |----------------------|-----------------------------------------------------------------|
//! | `transaction_id`     | `transfer.bank_tran_id` = `HB` + id (e.g. `HB1754154`)          |
//! | `tx_datetime`        | `transfer.tran_dtime`, read as Korean local time (the data has no zone) |
//! | `customer_id`        | sender account `fintech_use_num` = `HBC` + id, zero-padded to 8 |
//! | `terminal_id`        | payee: bank code `999`, account `HBT` + id zero-padded to 8     |
//! | `tx_amount`          | `tran_amt`: 1 unit = 1,000 won, so cents become 10 won, exactly |
//! | (none)               | channel `open_banking`, purpose `ST` (payment), no device or IP |
//! | `tx_fraud` = 1       | a `label` event, status `fraud`, `report_dtime` = transaction time + 7 days (the handbook's own delay), typology `handbook_scenario_N` |
//!
//! Rows with an amount of 0.00 (42 in the file) are not valid transfers for the
//! engine (a transfer moves at least 1 won); they are reported as bad lines with
//! that reason, like any other invalid input.
//!
//! Guarantees: events come out in time order; a label due at the same second as
//! a transaction is delivered before it (a fraud known at `t - 7 days` is known
//! at `t`, as in the handbook's delayed terminal-risk features).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::BufRead;

use crate::event::{
    Channel, Event, EventTime, Label, LabelStatus, SchemaVersion, Transfer, TransferPurpose, Won, DAY_MS,
};

/// The exact header the published file has.
/// Where the data set lies, relative to the repository: beside it, as CI lays
/// it out. `fds evaluate` reads it from there by default.
pub const DATA_PATH: &str = "../shared/datasets/handbook-simulated/transactions.csv.gz";

/// The CSV header the data set starts with, by which [`crate::input::Format::Auto`] knows it.
pub const HEADER: &str = "transaction_id,tx_datetime,customer_id,terminal_id,tx_amount,tx_fraud,tx_fraud_scenario";

/// Fraud labels are delivered this long after the transaction.
pub const LABEL_DELAY_MS: i64 = 7 * DAY_MS;

/// Payee bank code for handbook terminals (not a real Korean bank code).
pub const TERMINAL_BANK_CODE: &str = "999";

/// A row the reader could not turn into an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BadRow {
    /// Line number in the CSV (1 is the header).
    pub line: u64,
    /// What is wrong with the row.
    pub reason: String,
}

/// Reads the handbook CSV (already decompressed) as events in time order.
#[allow(missing_debug_implementations)] // a reader over an opaque input and a heap of pending labels: nothing a log line could use
pub struct HandbookReader<R> {
    input: R,
    line: u64,
    buf: String,
    /// Labels waiting for their time: (due, sequence, source line, label).
    labels: BinaryHeap<Reverse<(i64, u64, u64, LabelSlot)>>,
    label_seq: u64,
    /// A transfer read ahead while due labels are delivered first.
    held: Option<(u64, Transfer)>,
    done: bool,
}

/// A label waiting in the heap; ordered by (time, sequence) only.
#[derive(Debug, Clone)]
struct LabelSlot(Label);

impl PartialEq for LabelSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for LabelSlot {}
impl PartialOrd for LabelSlot {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for LabelSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<R: BufRead> HandbookReader<R> {
    /// Check the header and start reading.
    pub fn new(mut input: R) -> Result<Self, BadRow> {
        let mut header = String::new();
        input.read_line(&mut header).map_err(|e| BadRow { line: 1, reason: format!("cannot read header: {e}") })?;
        if header.trim_end() != HEADER {
            return Err(BadRow {
                line: 1,
                reason: format!("not the handbook data set: header is {:?}, expected {HEADER:?}", header.trim_end()),
            });
        }
        Ok(HandbookReader {
            input,
            line: 1,
            buf: String::new(),
            labels: BinaryHeap::new(),
            label_seq: 0,
            held: None,
            done: false,
        })
    }

    fn next_row(&mut self) -> Option<Result<(u64, Transfer), BadRow>> {
        self.buf.clear();
        match self.input.read_line(&mut self.buf) {
            Ok(0) => None,
            Ok(_) => {
                self.line += 1;
                let row = self.buf.trim_end().to_owned();
                let line = self.line;
                Some(parse_row(&row).map_err(|reason| BadRow { line, reason }).map(|(t, label)| {
                    if let Some(l) = label {
                        self.label_seq += 1;
                        self.labels.push(Reverse((l.report_dtime.millis(), self.label_seq, line, LabelSlot(l))));
                    }
                    (line, t)
                }))
            }
            Err(e) => {
                // A broken file (a truncated gzip stream) fails the same way on
                // every further read: report it once and end the input.
                self.line += 1;
                self.done = true;
                Some(Err(BadRow { line: self.line, reason: format!("read error, input ends here: {e}") }))
            }
        }
    }

    fn pop_label_due(&mut self, by: Option<EventTime>) -> Option<(u64, Event)> {
        let due = match (self.labels.peek(), by) {
            (Some(Reverse((t, _, _, _))), Some(by)) => *t <= by.millis(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if due {
            self.labels.pop().map(|Reverse((_, _, line, LabelSlot(l)))| (line, Event::Label(l)))
        } else {
            None
        }
    }
}

impl<R: BufRead> Iterator for HandbookReader<R> {
    /// An event with the line of the row it came from (a label: the row of its
    /// transaction), or a row that could not be read.
    type Item = Result<(u64, Event), BadRow>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.held.is_none() && !self.done {
            match self.next_row() {
                Some(Ok(t)) => self.held = Some(t),
                Some(Err(e)) => return Some(Err(e)),
                None => self.done = true,
            }
        }
        // Labels due by the next transfer's time (or all, at the end) go first.
        let by = self.held.as_ref().map(|(_, t)| t.tran_dtime);
        if let Some(label) = self.pop_label_due(by) {
            return Some(Ok(label));
        }
        self.held.take().map(|(line, t)| Ok((line, Event::Transfer(t))))
    }
}

/// One CSV row to a transfer and, for a fraud, its late label.
fn parse_row(row: &str) -> Result<(Transfer, Option<Label>), String> {
    let cols: Vec<&str> = row.split(',').collect();
    let [id, dt, customer, terminal, amount, fraud, scenario] = cols[..] else {
        return Err(format!("expected 7 columns, found {}", cols.len()));
    };
    let id: u64 = id.parse().map_err(|_| format!("transaction_id {id:?} is not an integer"))?;
    let time = parse_datetime(dt)?;
    let customer: u64 = customer.parse().map_err(|_| format!("customer_id {customer:?} is not an integer"))?;
    let terminal: u64 = terminal.parse().map_err(|_| format!("terminal_id {terminal:?} is not an integer"))?;
    let won = Won::new(parse_amount_won(amount)?).map_err(|e| format!("tx_amount {amount}: {e}"))?;
    let transfer = Transfer {
        schema_version: SchemaVersion,
        bank_tran_id: format!("HB{id}"),
        tran_dtime: time,
        fintech_use_num: format!("HBC{customer:08}"),
        tran_amt: won,
        recv_client_bank_code: TERMINAL_BANK_CODE.to_owned(),
        recv_client_account_num: format!("HBT{terminal:08}"),
        recv_client_name: format!("terminal {terminal}"),
        channel: Channel::OpenBanking,
        device_id: None,
        ip: None,
        transfer_purpose: TransferPurpose::Payment,
    };
    let label = match (fraud, scenario) {
        ("0", _) => None,
        ("1", s @ ("1" | "2" | "3")) => Some(Label {
            schema_version: SchemaVersion,
            bank_tran_id: transfer.bank_tran_id.clone(),
            report_dtime: EventTime(time.millis() + LABEL_DELAY_MS),
            status: LabelStatus::Fraud,
            typology: format!("handbook_scenario_{s}"),
            recv_client_bank_code: transfer.recv_client_bank_code.clone(),
            recv_client_account_num: transfer.recv_client_account_num.clone(),
        }),
        _ => return Err(format!("tx_fraud {fraud:?} with scenario {scenario:?} is not a known label")),
    };
    Ok((transfer, label))
}

/// `2018-04-01T00:00:31` as Korean local time.
fn parse_datetime(s: &str) -> Result<EventTime, String> {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(format!("tx_datetime {s:?} is not YYYY-MM-DDThh:mm:ss"));
    }
    let compact: String = s.chars().filter(char::is_ascii_digit).collect();
    EventTime::parse_kst(&compact).map_err(|e| format!("tx_datetime: {e}"))
}

/// `53.63` -> 53,630 won (1 unit = 1,000 won), exactly, with no float.
fn parse_amount_won(s: &str) -> Result<i64, String> {
    let bad = || format!("tx_amount {s:?} is not an amount with two decimals");
    let (units, cents) = s.split_once('.').ok_or_else(bad)?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if cents.len() != 2 || !digits(units) || !digits(cents) {
        return Err(bad());
    }
    let units: i64 = units.parse().map_err(|_| bad())?;
    let cents: i64 = cents.parse().map_err(|_| bad())?;
    units.checked_mul(1000).and_then(|w| w.checked_add(cents * 10)).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rows: &str) -> Vec<Result<Event, BadRow>> {
        let text = format!("{HEADER}\n{rows}");
        HandbookReader::new(text.as_bytes()).unwrap().map(|r| r.map(|(_, e)| e)).collect()
    }

    #[test]
    fn maps_a_row_and_delivers_its_label_seven_days_later_in_order() {
        let out = read(
            "0,2018-04-01T00:00:31,596,3156,57.16,1,2\n\
             1,2018-04-08T00:00:30,1,2,1.00,0,0\n\
             2,2018-04-08T00:00:31,1,2,0.05,0,0\n",
        );
        let kinds: Vec<_> = out.iter().map(|e| e.as_ref().unwrap().kind()).collect();
        // The label is due at 2018-04-08T00:00:31, before the transfer at that second.
        assert_eq!(kinds, ["transfer", "transfer", "label", "transfer"]);
        let Ok(Event::Transfer(t)) = &out[0] else { panic!() };
        assert_eq!(t.tran_amt.get(), 57_160);
        assert_eq!(t.fintech_use_num, "HBC00000596");
        assert_eq!(t.payee_key(), "999-HBT00003156");
        assert_eq!(t.tran_dtime.format_kst(), "20180401000031");
        let Ok(Event::Label(l)) = &out[2] else { panic!() };
        assert_eq!(l.bank_tran_id, "HB0");
        assert_eq!(l.typology, "handbook_scenario_2");
        assert_eq!(l.payee_key(), t.payee_key());
        let Ok(Event::Transfer(t3)) = &out[3] else { panic!() };
        assert_eq!(t3.tran_amt.get(), 50);
    }

    #[test]
    fn bad_rows_are_reported_with_line_and_reason_and_reading_goes_on() {
        let out = read("0,2018-04-01T00:00:31,596,3156,0.00,0,0\nbroken\n2,2018-04-01T00:00:40,1,2,3.10,0,0\n");
        assert_eq!(out[0].as_ref().unwrap_err().line, 2);
        assert!(out[0].as_ref().unwrap_err().reason.contains("positive"));
        assert_eq!(out[1].as_ref().unwrap_err().line, 3);
        assert!(out[1].as_ref().unwrap_err().reason.contains("7 columns"));
        assert!(out[2].is_ok());
    }

    #[test]
    fn rejects_a_file_that_is_not_the_handbook() {
        assert!(HandbookReader::new("a,b,c\n".as_bytes()).is_err());
    }

    #[test]
    fn amounts_convert_exactly() {
        assert_eq!(parse_amount_won("2628.00"), Ok(2_628_000));
        assert_eq!(parse_amount_won("0.01"), Ok(10));
        assert!(parse_amount_won("1.5").is_err());
        assert!(parse_amount_won("-1.00").is_err());
        assert!(parse_amount_won("5.-1").is_err());
        assert!(parse_amount_won("18446744073709552.00").is_err());
    }
}
