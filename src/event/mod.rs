//! Events: what the transfer API and the bank's other systems tell the engine.
//!
//! This module owns the wire format. Every event is one JSON object (one line in a
//! replay file, one Kafka message value) with a `type` tag and a `schema_version`.
//! Unknown fields are rejected rather than ignored: a producer that adds a field
//! the engine does not understand is told so at once, instead of having its data
//! silently dropped.
//!
//! Three kinds of event exist:
//! - [`Transfer`]: a withdrawal transfer request, modelled on the Korean
//!   open-banking API (`bank_tran_id`, `tran_dtime`, `fintech_use_num`, `tran_amt`,
//!   `recv_client_*`). This is the only event that gets a decision.
//! - context events ([`Login`], [`DeviceRegistered`], [`Certificate`],
//!   [`PhoneChanged`], [`RemoteAppDetected`], [`LimitRaised`], [`EkycCompleted`]):
//!   they feed the per-account state that transfers are scored against.
//! - [`Label`]: a fraud report (or its withdrawal) for an earlier transfer. Labels
//!   arrive days late; they update payee risk and feed training and evaluation.
//!
//! Guarantees kept here: money is integer won ([`Won`], always positive); times are
//! [`EventTime`] (milliseconds since the Unix epoch), parsed from the open-banking
//! `YYYYMMDDhhmmss` form in Korea Standard Time. Every field is held to the
//! bound of the open-banking message it models, or to a documented one of
//! this engine's (the table in `bounds.rs`), and a message over the size
//! limit is refused before it is parsed. Parsing never panics: every bad input
//! is an [`EventError`] naming the field and the bound, never quoting the value.

mod bounds;
pub mod build;
#[cfg(test)]
mod props;

pub use bounds::{EVENT_BYTES_RANGE, MAX_DEVICE_ID_BYTES, MAX_EVENT_BYTES};

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The only schema version this engine reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A minute, an hour and a day of event time, in the milliseconds
/// [`EventTime`] counts. Defined here once for the whole crate.
pub const MINUTE_MS: i64 = 60_000;
/// An hour of event time in milliseconds.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// A day of event time in milliseconds.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Korea Standard Time is UTC+9 all year (no daylight saving).
pub const KST_OFFSET_MS: i64 = 9 * HOUR_MS;

/// Largest single transfer accepted: the open-banking `tran_amt` is N(12), so
/// 999,999,999,999 won. Anything above is a producer bug (a currency mix-up,
/// a unit error), not a transfer.
pub const MAX_AMOUNT_WON: i64 = 999_999_999_999;

/// Why an event could not be read.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, a missing or unknown field, a wrong type, a bad value.
    /// The message names the field where the event's `type` comes first (as
    /// every producer writes it), and gives serde's line and column.
    #[error("malformed event: {}{source}", field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Malformed { field: Option<String>, source: serde_json::Error },
    /// Well-formed JSON whose values make no sense: an empty id, a bank code
    /// that is not three digits.
    #[error("invalid {kind} event: {field} {reason}")]
    Invalid { kind: &'static str, field: &'static str, reason: String },
    /// Longer than the size limit: refused unread.
    #[error("event of {size} bytes refused unread: the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// Event time: milliseconds since the Unix epoch (UTC).
///
/// The engine never reads the wall clock for windows; all state is aged by the
/// time written on the events, so a replay gives the same answers as the live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventTime(pub i64);

impl EventTime {
    /// A time `ms` milliseconds after the Unix epoch (UTC).
    pub const fn from_millis(ms: i64) -> Self {
        EventTime(ms)
    }
    /// A time `s` seconds after the Unix epoch (UTC).
    pub const fn from_secs(s: i64) -> Self {
        EventTime(s * 1000)
    }
    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// Whole seconds since the Unix epoch (rounded down).
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// Hour of day (0..=23) on the Korean clock.
    pub fn kst_hour(self) -> u32 {
        ((self.0 + KST_OFFSET_MS).div_euclid(HOUR_MS).rem_euclid(24)) as u32
    }
    /// The day on the Korean calendar, as days since 1970-01-01.
    pub fn kst_day(self) -> i64 {
        (self.0 + KST_OFFSET_MS).div_euclid(DAY_MS)
    }
    /// Day of week on the Korean clock, 0 = Monday .. 6 = Sunday.
    pub fn kst_weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3 with Monday = 0).
        ((self.kst_day() + 3).rem_euclid(7)) as u32
    }
    /// Parse the open-banking `YYYYMMDDhhmmss` form, read as Korea Standard Time.
    ///
    /// ```
    /// use fds::event::EventTime;
    /// let t = EventTime::parse_kst("20261102090000").unwrap();
    /// assert_eq!(t.kst_hour(), 9);
    /// assert_eq!(t.secs() % 86_400, 0); // 09:00 KST is midnight UTC
    /// assert!(EventTime::parse_kst("20261302090000").is_err());
    /// ```
    pub fn parse_kst(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
            return Err(format!("expected 14 digits YYYYMMDDhhmmss, got {s:?}"));
        }
        let num =
            |r: std::ops::Range<usize>| -> u32 { b[r].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')) };
        let (y, mo, d, h, mi, se) = (num(0..4) as i32, num(4..6), num(6..8), num(8..10), num(10..12), num(12..14));
        let local = chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, se))
            .ok_or_else(|| format!("{s:?} is not a valid date and time"))?;
        Ok(EventTime(local.and_utc().timestamp_millis() - KST_OFFSET_MS))
    }
    /// `YYYY-MM-DD hh:mm:ss` on the Korean clock, for messages people read.
    pub fn human(self) -> String {
        let local = chrono::DateTime::from_timestamp_millis(self.0 + KST_OFFSET_MS).unwrap_or_default().naive_utc();
        local.format("%Y-%m-%d %H:%M:%S").to_string()
    }
    /// Format as `YYYYMMDDhhmmss` on the Korean clock (sub-second part dropped).
    pub fn format_kst(self) -> String {
        let buf = self.kst_digits();
        std::str::from_utf8(&buf).expect("ASCII digits").to_owned()
    }

    /// The 14 digits of `YYYYMMDDhhmmss`, written by hand: every decision and
    /// every event sent by `fds load` carries one, and chrono's general-purpose
    /// formatter (a pattern parsed per call) showed in the pipeline's profile.
    /// Years outside 0..=9999 are clamped, as the format has four digits.
    fn kst_digits(self) -> [u8; 14] {
        use chrono::{Datelike, Timelike};
        let local = chrono::DateTime::from_timestamp_millis(self.0 + KST_OFFSET_MS).unwrap_or_default().naive_utc();
        let mut buf = [b'0'; 14];
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, local.year().clamp(0, 9999) as u32);
        put(4, 2, local.month());
        put(6, 2, local.day());
        put(8, 2, local.hour());
        put(10, 2, local.minute());
        put(12, 2, local.second());
        buf
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.kst_digits()).expect("ASCII digits"))
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.kst_digits()).expect("ASCII digits"))
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventTime::parse_kst(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money in Korean won: a positive integer, never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Won(i64);

impl Won {
    /// A valid transfer amount: 1 won up to [`MAX_AMOUNT_WON`].
    pub fn new(won: i64) -> Result<Self, String> {
        if won <= 0 {
            Err(format!("amount must be a positive number of won, got {won}"))
        } else if won > MAX_AMOUNT_WON {
            Err(format!("amount {won} won exceeds the maximum of {MAX_AMOUNT_WON}"))
        } else {
            Ok(Won(won))
        }
    }
    /// The amount in won.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Won {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only JSON integers are accepted: 1000.0 or "1000" is a producer bug
        // that must be seen, not guessed at.
        let v = i64::deserialize(d)?;
        Won::new(v).map_err(serde::de::Error::custom)
    }
}

/// The schema version field: deserializes only when it equals [`SCHEMA_VERSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(SCHEMA_VERSION)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == SCHEMA_VERSION {
            Ok(SchemaVersion)
        } else {
            Err(serde::de::Error::custom(format!("unsupported schema_version {v}, this engine reads {SCHEMA_VERSION}")))
        }
    }
}

/// How the customer reached the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The bank's own mobile app (스마트뱅킹).
    MobileApp,
    /// Internet banking in a browser.
    InternetBanking,
    /// A fintech partner through the open-banking API (오픈뱅킹).
    OpenBanking,
}

/// Open-banking transfer purpose code (`transfer_purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferPurpose {
    /// 송금: a money transfer to a person or account.
    #[serde(rename = "TR")]
    Transfer,
    /// 결제: a payment.
    #[serde(rename = "ST")]
    Payment,
    /// 회수: a recovery (return of funds).
    #[serde(rename = "RC")]
    Recovery,
}

/// A withdrawal transfer request: the event that gets a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Always [`SCHEMA_VERSION`]; another version is refused.
    pub schema_version: SchemaVersion,
    /// Transfer id, unique per request; the correlation id of the decision.
    pub bank_tran_id: String,
    /// Request time (`YYYYMMDDhhmmss`, KST).
    pub tran_dtime: EventTime,
    /// The sender's account, as the fintech use number (핀테크이용번호).
    pub fintech_use_num: String,
    /// The amount, in won.
    pub tran_amt: Won,
    /// Counterparty (payee) bank code, e.g. "088".
    pub recv_client_bank_code: String,
    /// Counterparty account number; hyphens and spaces are ignored when payees are compared.
    pub recv_client_account_num: String,
    /// The payee's name as the sender typed it (not checked against the bank's).
    pub recv_client_name: String,
    /// Where the customer made the request.
    pub channel: Channel,
    /// Device the request came from; open-banking partners may not send one.
    /// An empty string counts as absent, not as one device shared by everyone.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub device_id: Option<String>,
    /// Client IP address, when the channel sends one.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub ip: Option<String>,
    /// What the money is for.
    pub transfer_purpose: TransferPurpose,
}

impl Transfer {
    /// The payee's identity across all senders: bank code and account number.
    pub fn payee_key(&self) -> String {
        payee_key(&self.recv_client_bank_code, &self.recv_client_account_num)
    }
}

/// The key a payee is known by in state and in rule lists: `BANK-ACCOUNT`,
/// with the account number's separators dropped, so `110-123-456789` and
/// `110123456789` are one payee. (The bank code is checked to be three digits,
/// so the first `-` always ends it.)
pub fn payee_key(bank_code: &str, account_num: &str) -> String {
    let mut k = String::with_capacity(bank_code.len() + 1 + account_num.len());
    k.push_str(bank_code);
    k.push('-');
    k.extend(account_num.chars().filter(|c| *c != '-' && *c != ' '));
    k
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.trim().is_empty()))
}

/// A login attempt on the sender's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
    /// The device used, if known.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub device_id: Option<String>,
    /// Client IP address, if known.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub ip: Option<String>,
    /// Whether the login succeeded; failed ones count toward takeover signals.
    pub success: bool,
}

/// A new device registered to the account (기기 등록).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistered {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
    /// The newly registered device.
    pub device_id: String,
}

/// What happened to the joint certificate (공동인증서).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateAction {
    /// A first certificate for the customer.
    Issued,
    /// A new certificate replacing one (lost phone, new device): the voice-phishing precursor.
    Reissued,
    /// An extension of the certificate already held.
    Renewed,
}

/// Joint certificate issued, re-issued or renewed. A re-issue on a new device,
/// followed by a first large transfer, is the voice-phishing signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
    /// Issued, re-issued or renewed.
    pub action: CertificateAction,
    /// The device the certificate was put on, if known.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub device_id: Option<String>,
}

/// The phone number on the account changed (휴대폰 번호 변경).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneChanged {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
}

/// The app found a remote-control app running (원격제어 앱 탐지).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAppDetected {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
    /// The device the app was found on, if known.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub device_id: Option<String>,
    /// The app's name as the detector reports it.
    pub app_name: String,
}

/// The account's transfer limit was raised (이체한도 상향).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRaised {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
    /// The new daily transfer limit, in won.
    pub new_limit: Won,
}

/// Non-face-to-face identity verification completed (비대면 실명확인).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EkycCompleted {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// When it happened (`YYYYMMDDhhmmss`, KST).
    pub event_dtime: EventTime,
    /// The account it is about.
    pub fintech_use_num: String,
    /// The device verified on, if known.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "non_empty")]
    pub device_id: Option<String>,
}

/// Whether a report says fraud, or withdraws an earlier report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelStatus {
    /// The transfer was fraud.
    Fraud,
    /// An earlier report on the transfer is withdrawn.
    Cleared,
}

/// A fraud report for an earlier transfer (사기 신고), or its withdrawal.
///
/// The report names the payee account the money went to, as a real report does,
/// so payee risk can be updated without the engine remembering every transfer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: SchemaVersion,
    /// The reported transfer's id.
    pub bank_tran_id: String,
    /// When the report was received (`YYYYMMDDhhmmss`, KST).
    pub report_dtime: EventTime,
    /// Fraud, or a withdrawal of an earlier report.
    pub status: LabelStatus,
    /// The fraud typology, e.g. `voice_phishing`; empty for `cleared`.
    #[serde(default)]
    pub typology: String,
    /// The bank code of the account the money went to.
    pub recv_client_bank_code: String,
    /// The account the money went to.
    pub recv_client_account_num: String,
}

impl Label {
    /// The reported payee's key (see [`payee_key`]).
    pub fn payee_key(&self) -> String {
        payee_key(&self.recv_client_bank_code, &self.recv_client_account_num)
    }
}

/// Any event the engine consumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A withdrawal transfer request: the only event that gets a decision.
    Transfer(Transfer),
    /// A login attempt.
    Login(Login),
    /// A device registered to the account.
    DeviceRegistered(DeviceRegistered),
    /// A joint certificate issued, re-issued or renewed.
    Certificate(Certificate),
    /// The account's phone number changed.
    PhoneChanged(PhoneChanged),
    /// A remote-control app detected on the customer's device.
    RemoteAppDetected(RemoteAppDetected),
    /// The transfer limit raised.
    LimitRaised(LimitRaised),
    /// Non-face-to-face identity verification completed.
    EkycCompleted(EkycCompleted),
    /// A fraud report, or its withdrawal.
    Label(Label),
}

/// The fast path of [`Event::from_json`]. serde's internally tagged enums
/// buffer every field of an object before they look at the tag, which showed
/// as a sixth of the pipeline's scoring thread. Every producer of this project
/// (and serde, for any tagged enum) writes `"type"` as the first key, so this
/// reads the tag first and the rest of the object straight into the variant's
/// struct. Anything it refuses (the tag elsewhere, an escaped tag, any error)
/// is read again by the general path, which accepts any key order and names
/// the problem; both paths end in the same structs and the same checks.
struct TypeFirst(Event);

impl<'de> Deserialize<'de> for TypeFirst {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TypeFirst;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an event object with "type" first"#)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TypeFirst, A::Error> {
                use serde::de::Error;
                if map.next_key::<&str>()? != Some("type") {
                    return Err(A::Error::custom("type is not the first key"));
                }
                let tag: &str = map.next_value()?;
                let rest = serde::de::value::MapAccessDeserializer::new(map);
                Ok(TypeFirst(match tag {
                    "transfer" => Event::Transfer(Deserialize::deserialize(rest)?),
                    "login" => Event::Login(Deserialize::deserialize(rest)?),
                    "device_registered" => Event::DeviceRegistered(Deserialize::deserialize(rest)?),
                    "certificate" => Event::Certificate(Deserialize::deserialize(rest)?),
                    "phone_changed" => Event::PhoneChanged(Deserialize::deserialize(rest)?),
                    "remote_app_detected" => Event::RemoteAppDetected(Deserialize::deserialize(rest)?),
                    "limit_raised" => Event::LimitRaised(Deserialize::deserialize(rest)?),
                    "ekyc_completed" => Event::EkycCompleted(Deserialize::deserialize(rest)?),
                    "label" => Event::Label(Deserialize::deserialize(rest)?),
                    _ => return Err(A::Error::custom("unknown type")),
                }))
            }
        }
        d.deserialize_map(Fields)
    }
}

impl Event {
    /// Parse and check one event from JSON, within the default size limit
    /// ([`MAX_EVENT_BYTES`]).
    pub fn from_json(bytes: &[u8]) -> Result<Event, EventError> {
        Event::from_json_within(bytes, MAX_EVENT_BYTES)
    }

    /// Parse and check one event from JSON of at most `max_bytes` bytes; a
    /// longer message is refused before a byte of it is parsed.
    pub fn from_json_within(bytes: &[u8], max_bytes: usize) -> Result<Event, EventError> {
        if bytes.len() > max_bytes {
            return Err(EventError::TooLarge { size: bytes.len(), limit: max_bytes });
        }
        // The usual layout, `"type"` first, is read straight into the event's
        // struct; anything else takes the general path, which gives the errors.
        let event = match serde_json::from_slice::<TypeFirst>(bytes) {
            Ok(TypeFirst(e)) => e,
            Err(_) => serde_json::from_slice(bytes)
                .map_err(|source| EventError::Malformed { field: Event::field_at_fault(bytes), source })?,
        };
        event.validate()?;
        Ok(event)
    }

    /// The field whose value a refused event failed on, read again (only
    /// refusals pay for it) through the fast path with the path tracked:
    /// `Some("tran_amt")` for `"tran_amt": 500.5`. `None` where the fault
    /// is not inside a field's value or `type` does not come first.
    fn field_at_fault(bytes: &[u8]) -> Option<String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let err = serde_path_to_error::deserialize::<_, TypeFirst>(&mut de).err()?;
        let path = err.path().to_string();
        (path != ".").then_some(path)
    }

    /// Check what the types alone cannot: every string within its bound
    /// (see `bounds.rs`), bank codes real, IP addresses addresses.
    pub fn validate(&self) -> Result<(), EventError> {
        use bounds::{check_bank_code, check_ip};
        let kind = self.kind();
        if let Some(account) = self.account() {
            bounds::FINTECH_USE_NUM.check(kind, account)?;
        }
        let device = |d: &Option<String>| d.as_deref().map_or(Ok(()), |d| bounds::DEVICE_ID.check(kind, d));
        let ip = |i: &Option<String>| i.as_deref().map_or(Ok(()), |i| check_ip(kind, i));
        match self {
            Event::Transfer(t) => {
                bounds::BANK_TRAN_ID.check(kind, &t.bank_tran_id)?;
                check_bank_code(kind, &t.recv_client_bank_code)?;
                bounds::RECV_CLIENT_ACCOUNT_NUM.check(kind, &t.recv_client_account_num)?;
                bounds::RECV_CLIENT_NAME.check(kind, &t.recv_client_name)?;
                device(&t.device_id)?;
                ip(&t.ip)?;
            }
            Event::Login(e) => {
                device(&e.device_id)?;
                ip(&e.ip)?;
            }
            Event::DeviceRegistered(e) => bounds::DEVICE_ID.check(kind, &e.device_id)?,
            Event::Certificate(e) => device(&e.device_id)?,
            Event::RemoteAppDetected(e) => {
                device(&e.device_id)?;
                bounds::APP_NAME.check(kind, &e.app_name)?;
            }
            Event::EkycCompleted(e) => device(&e.device_id)?,
            Event::PhoneChanged(_) | Event::LimitRaised(_) => {}
            Event::Label(l) => {
                bounds::BANK_TRAN_ID.check(kind, &l.bank_tran_id)?;
                check_bank_code(kind, &l.recv_client_bank_code)?;
                bounds::RECV_CLIENT_ACCOUNT_NUM.check(kind, &l.recv_client_account_num)?;
                bounds::TYPOLOGY.check(kind, &l.typology)?;
            }
        }
        Ok(())
    }

    /// Serialize as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).expect("events always serialize")
    }

    /// Append the JSON line to `out` (no trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("events always serialize")
    }

    /// When the event happened (for labels: when the report was made).
    pub fn time(&self) -> EventTime {
        match self {
            Event::Transfer(e) => e.tran_dtime,
            Event::Login(e) => e.event_dtime,
            Event::DeviceRegistered(e) => e.event_dtime,
            Event::Certificate(e) => e.event_dtime,
            Event::PhoneChanged(e) => e.event_dtime,
            Event::RemoteAppDetected(e) => e.event_dtime,
            Event::LimitRaised(e) => e.event_dtime,
            Event::EkycCompleted(e) => e.event_dtime,
            Event::Label(e) => e.report_dtime,
        }
    }

    /// The sender account this event belongs to, which is its ordering key:
    /// all events of one account must be processed in order. Labels have none.
    pub fn account(&self) -> Option<&str> {
        match self {
            Event::Transfer(e) => Some(&e.fintech_use_num),
            Event::Login(e) => Some(&e.fintech_use_num),
            Event::DeviceRegistered(e) => Some(&e.fintech_use_num),
            Event::Certificate(e) => Some(&e.fintech_use_num),
            Event::PhoneChanged(e) => Some(&e.fintech_use_num),
            Event::RemoteAppDetected(e) => Some(&e.fintech_use_num),
            Event::LimitRaised(e) => Some(&e.fintech_use_num),
            Event::EkycCompleted(e) => Some(&e.fintech_use_num),
            Event::Label(_) => None,
        }
    }

    /// The `type` tag, for counting and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Transfer(_) => "transfer",
            Event::Login(_) => "login",
            Event::DeviceRegistered(_) => "device_registered",
            Event::Certificate(_) => "certificate",
            Event::PhoneChanged(_) => "phone_changed",
            Event::RemoteAppDetected(_) => "remote_app_detected",
            Event::LimitRaised(_) => "limit_raised",
            Event::EkycCompleted(_) => "ekyc_completed",
            Event::Label(_) => "label",
        }
    }
}

/// Show an account number with all but its last four characters hidden, for logs.
pub fn mask_account(account: &str) -> String {
    let n = account.chars().count();
    if n <= 4 {
        return "*".repeat(n);
    }
    let tail: String = account.chars().skip(n - 4).collect();
    format!("{}{}", "*".repeat(n - 4), tail)
}

/// Hide all but the last four digits of every number of eight or more digits
/// in `text`: error messages quote the input they reject, and that input may
/// hold an account number that must not reach a log or a report.
///
/// A number is a run of digits, or digit groups joined by single hyphens or
/// spaces, as account numbers are written (`110-123-456789`, `3333 02
/// 1234567`); its digits are counted across the groups. Separators are kept,
/// so the text keeps its length and shape: `***-***-**6789`.
///
/// Deliberately blunt: anything shaped like a number of eight digits or more
/// is hidden, whatever it is. A date such as `2026-11-26` (eight digits) is
/// masked to `****-11-26`, as the 14-digit `tran_dtime` always was; a message
/// losing a date is a small price next to a log holding an account number.
pub fn mask_digit_runs(text: &str) -> String {
    const MIN_DIGITS: usize = 8;
    const SHOWN: usize = 4;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // Digits and separators are ASCII, never inside a multi-byte character, so
    // every index below is a character boundary.
    let mut plain = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let joined = i + 1 < bytes.len() && matches!(bytes[i], b'-' | b' ') && bytes[i + 1].is_ascii_digit();
            if !joined {
                break;
            }
            i += 1;
        }
        out.push_str(&text[plain..start]);
        plain = i;
        let number = &text[start..i];
        let digits = number.bytes().filter(u8::is_ascii_digit).count();
        if digits < MIN_DIGITS {
            out.push_str(number);
            continue;
        }
        let mut hidden = digits - SHOWN;
        for c in number.chars() {
            if c.is_ascii_digit() && hidden > 0 {
                hidden -= 1;
                out.push('*');
            } else {
                out.push(c);
            }
        }
    }
    out.push_str(&text[plain..]);
    out
}

/// What a log line may say of an input it refuses: [`mask_digit_runs`], and
/// every quoted value shown as [`mask_account`] shows an account. serde quotes
/// the values it rejects (`invalid type: string "홍길동", expected i64`,
/// ``unknown variant `홍길동` ``), so a name, a device id or an account number
/// put in the wrong field would otherwise reach the log in full. Field names
/// (``unknown field `ipaddr` ``) stay readable, and so do unknown variants
/// written as every variant is, in lower-case ASCII letters and `_`
/// (``unknown variant `wire` ``): those are a producer's misspelt tags, not a
/// customer's data.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open];
        let (before, after) = (&rest[..open], &rest[open + 1..]);
        out.push_str(before);
        out.push(quote as char);
        let is_value = quote == b'"' || before.ends_with("variant ");
        // The closing quote: the next one not escaped by a backslash
        // (serde writes strings as Rust's `{:?}` does).
        let mut close = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c as u32 == u32::from(quote) => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let inner = &after[..close.unwrap_or(after.len())];
        let tag_like = quote == b'`' && inner.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        out.push_str(&if is_value && !tag_like { mask_account(inner) } else { inner.to_owned() });
        match close {
            Some(i) => {
                out.push(quote as char);
                rest = &after[i + 1..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    mask_digit_runs(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by hand, not with `build`: these tests are about the wire format
    // itself (field order, the fast path, unknown fields, bad values), so the
    // bytes must not come from the serializer under test.
    const TRANSFER: &str = r#"{"type":"transfer","schema_version":1,"bank_tran_id":"T1","tran_dtime":"20261126093000","fintech_use_num":"120220000000000000000001","tran_amt":50000,"recv_client_bank_code":"088","recv_client_account_num":"110123456789","recv_client_name":"홍길동","channel":"mobile_app","device_id":"D1","ip":"10.0.0.1","transfer_purpose":"TR"}"#;

    #[test]
    fn parses_a_transfer_and_round_trips() {
        let e = Event::from_json(TRANSFER.as_bytes()).unwrap();
        let Event::Transfer(t) = &e else { panic!("not a transfer") };
        assert_eq!(t.tran_amt.get(), 50_000);
        assert_eq!(t.payee_key(), "088-110123456789");
        assert_eq!(e.time().format_kst(), "20261126093000");
        assert_eq!(e.time().kst_hour(), 9);
        let again = Event::from_json(e.to_json().as_bytes()).unwrap();
        assert_eq!(e, again);
    }

    #[test]
    fn the_fast_path_reads_what_the_general_one_does() {
        let general = |b: &[u8]| -> Result<Event, String> {
            let e: Event = serde_json::from_slice(b)
                .map_err(|source| EventError::Malformed { field: Event::field_at_fault(b), source }.to_string())?;
            e.validate().map_err(|e| e.to_string())?;
            Ok(e)
        };
        let mut samples = vec![
            TRANSFER.to_owned(),
            TRANSFER.replace(r#""device_id":"D1","#, r#""device_id":"  ","#),
            TRANSFER.replace(r#","ip":"10.0.0.1""#, ""),
            TRANSFER.replace(r#""type":"transfer","#, "") + "",
            format!(r#"{{"tran_amt":1,{}"#, &TRANSFER[1..].replace(r#""tran_amt":50000,"#, "")),
            TRANSFER.replace(r#""type":"transfer""#, r#""type":"login""#),
            TRANSFER.replace("50000", "-5"),
            TRANSFER.replace(r#""channel":"mobile_app""#, r#""channel":"mobile_app","extra":1"#),
        ];
        samples.push(TRANSFER.replace(r#"{"type":"transfer","#, r#"{"#).replacen('}', r#","type":"transfer"}"#, 1));
        for s in &samples {
            let fast = Event::from_json(s.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(fast, general(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn every_kind_of_event_takes_the_fast_path() {
        use std::io::BufRead;
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("replay-data/demo.jsonl.gz");
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(std::fs::File::open(demo).unwrap()));
        let mut kinds = std::collections::BTreeSet::new();
        for line in reader.lines() {
            let line = line.unwrap();
            let TypeFirst(fast) = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let general: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(fast, general);
            kinds.insert(fast.kind());
        }
        // Every variant of Event, so a tag spelt differently here than in
        // serde's renaming would show as a missing kind.
        assert_eq!(kinds.len(), 9, "{kinds:?}");
    }

    #[test]
    fn hand_written_time_format_matches_chrono() {
        // Every hour boundary, leap days and year ends over a few decades, plus
        // odd milliseconds: the digits must be chrono's, byte for byte.
        let mut t = EventTime::parse_kst("19991231230000").unwrap().millis();
        let end = EventTime::parse_kst("20400301000000").unwrap().millis();
        while t < end {
            for probe in [t, t + 59_999, t + 3_599_999] {
                let local = chrono::DateTime::from_timestamp_millis(probe + KST_OFFSET_MS).unwrap().naive_utc();
                assert_eq!(EventTime(probe).format_kst(), local.format("%Y%m%d%H%M%S").to_string());
                assert_eq!(EventTime::parse_kst(&EventTime(probe).format_kst()).unwrap().millis(), probe / 1000 * 1000);
            }
            t += 7 * 3_600_000 + 13 * 60_000 + 17_000;
        }
    }

    #[test]
    fn kst_parsing_is_nine_hours_ahead_of_utc() {
        let t = EventTime::parse_kst("19700101090000").unwrap();
        assert_eq!(t.millis(), 0);
        assert_eq!(t.kst_weekday(), 3); // Thursday
        assert!(EventTime::parse_kst("20261332000000").is_err());
        assert!(EventTime::parse_kst("2026112609300").is_err());
    }

    #[test]
    fn rejects_unknown_fields_bad_amounts_and_versions() {
        let unknown = TRANSFER.replace("\"ip\"", "\"ipaddr\"");
        let err = Event::from_json(unknown.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("unknown field `ipaddr`"), "{err}");

        let negative = TRANSFER.replace("50000", "-3");
        let err = Event::from_json(negative.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("positive"), "{err}");

        let float = TRANSFER.replace("50000", "500.5");
        let err = Event::from_json(float.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("malformed event: tran_amt: invalid type: floating point `500.5`"), "{err}");

        let v2 = TRANSFER.replace("\"schema_version\":1", "\"schema_version\":2");
        let err = Event::from_json(v2.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("schema_version 2"), "{err}");

        let kind = TRANSFER.replace("\"transfer\"", "\"teleport\"");
        let err = Event::from_json(kind.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("teleport"), "{err}");
    }

    #[test]
    fn checks_identifiers_and_normalizes_payees() {
        let empty = TRANSFER.replace("\"bank_tran_id\":\"T1\"", "\"bank_tran_id\":\"\"");
        let err = Event::from_json(empty.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "invalid transfer event: bank_tran_id must not be empty");
        let blank = TRANSFER.replace("\"bank_tran_id\":\"T1\"", "\"bank_tran_id\":\" \"");
        let err = Event::from_json(blank.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("bank_tran_id may hold only ASCII letters and digits"), "{err}");
        let bank = TRANSFER.replace("\"088\"", "\"88\"");
        let err = Event::from_json(bank.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("three-digit bank code"), "{err}");
        let dashed = TRANSFER.replace("110123456789", "110-123-456789").replace("\"D1\"", "\"\"");
        let Event::Transfer(t) = Event::from_json(dashed.as_bytes()).unwrap() else { panic!() };
        assert_eq!(t.payee_key(), "088-110123456789");
        assert_eq!(t.device_id, None, "an empty device id is no device");
    }

    #[test]
    fn a_450_kb_name_is_refused_by_size_then_by_its_bound() {
        let long = TRANSFER.replace("홍길동", &"김".repeat(150_000));
        let err = Event::from_json(long.as_bytes()).unwrap_err();
        assert!(matches!(err, EventError::TooLarge { limit: MAX_EVENT_BYTES, .. }), "{err}");
        assert!(err.to_string().contains(&format!("event of {} bytes refused unread", long.len())));
        // With a limit that lets it be parsed, the name's own bound refuses it.
        let err = Event::from_json_within(long.as_bytes(), 1 << 20).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid transfer event: recv_client_name is 150000 characters long, at most 20 (open-banking AH(20))"
        );
        // Every field the bounds table names, one at a time past its bound.
        for (from, to, field) in [
            ("\"T1\"", format!("\"{}\"", "T".repeat(21)), "bank_tran_id"),
            ("120220000000000000000001", "1".repeat(25), "fintech_use_num"),
            ("110123456789", "1".repeat(17), "recv_client_account_num"),
            ("\"D1\"", format!("\"{}\"", "D".repeat(65)), "device_id"),
            ("10.0.0.1", "10.0.0.1.5".to_owned(), "ip"),
            ("50000", "1000000000000".to_owned(), "tran_amt"),
        ] {
            let bad = TRANSFER.replacen(from, &to, 1);
            let err = Event::from_json(bad.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn masks_long_digit_runs_in_messages() {
        assert_eq!(
            mask_digit_runs("invalid type: integer `120220000000000000012345`, line 1 column 88"),
            "invalid type: integer `********************2345`, line 1 column 88"
        );
    }

    #[test]
    fn masks_account_numbers_written_in_groups() {
        assert_eq!(
            mask_digit_runs(r#"invalid type: string "110-123-456789", expected u64"#),
            r#"invalid type: string "***-***-**6789", expected u64"#
        );
        assert_eq!(mask_digit_runs("3333-02-1234567"), "****-**-***4567");
        assert_eq!(mask_digit_runs("account 3333 02 1234567."), "account **** ** ***4567.");
        // A date has eight digits too: masked, as documented.
        assert_eq!(mask_digit_runs("on 2026-11-26"), "on ****-11-26");
        // Fewer than eight digits in all, or groups not joined by a single
        // separator, stay as they are.
        assert_eq!(mask_digit_runs("line 1 column 88"), "line 1 column 88");
        assert_eq!(mask_digit_runs("088-1234"), "088-1234");
        assert_eq!(mask_digit_runs("1234--5678 and 1234- 5678-"), "1234--5678 and 1234- 5678-");
        assert_eq!(mask_digit_runs("12345678-"), "****5678-");
        assert_eq!(mask_digit_runs("홍길동 110-123-456789 님"), "홍길동 ***-***-**6789 님");
    }

    #[test]
    fn redacts_quoted_values_but_not_field_names() {
        assert_eq!(
            redact(r#"invalid type: string "홍길동", expected i64 at line 1 column 30"#),
            r#"invalid type: string "***", expected i64 at line 1 column 30"#
        );
        assert_eq!(
            redact("unknown variant `Dda355b3d8c36c9be`, expected one of `mobile_app`"),
            "unknown variant `*************c9be`, expected one of `mobile_app`"
        );
        assert_eq!(redact("unknown field `ipaddr`, expected `ip`"), "unknown field `ipaddr`, expected `ip`");
        assert_eq!(redact("unknown variant `wire_transfer`, expected"), "unknown variant `wire_transfer`, expected");
        assert_eq!(redact(r#"string "a\"b110123456789" rest"#), r#"string "************6789" rest"#);
        assert_eq!(redact(r#"unterminated "12345678901"#), r#"unterminated "*******8901"#);
    }

    #[test]
    fn masks_all_but_the_last_four() {
        assert_eq!(mask_account("110123456789"), "********6789");
        assert_eq!(mask_account("12"), "**");
    }
}
