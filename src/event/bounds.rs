//! Bounds: how long, and of what characters, every field of every event may be.
//!
//! An event's strings go into state that lives for months (payee keys, device
//! ids) and into every decision, checkpoint and log line that names them, so
//! nothing is accepted that the transfer API it models would refuse. Where the
//! Korean open-banking API (금융결제원 오픈뱅킹 API) specifies a field, its
//! type and length are the bound; where it has none (context events, fraud
//! reports), the bound is this engine's own and says so.
//!
//! | field | open-banking type | bound here |
//! |---|---|---|
//! | `bank_tran_id` | AN(20) | 1-20 ASCII letters or digits |
//! | `fintech_use_num` | AN(24) | 1-24 ASCII letters or digits |
//! | `recv_client_bank_code` | AN(3) | three digits |
//! | `recv_client_account_num` | AN(16) | 1-16 ASCII letters or digits; `-` and spaces between them are allowed and not counted (`110-123-456789`) |
//! | `recv_client_name` | AH(20) | 1-20 characters, no control characters |
//! | `tran_amt` | N(12) | 1 to 999,999,999,999 won ([`super::MAX_AMOUNT_WON`]) |
//! | `tran_dtime`, `event_dtime`, `report_dtime` | N(14) | `YYYYMMDDhhmmss`, a real date |
//! | `device_id` | none | 1-64 bytes, no control characters (own bound: a UUID, an Android id or an IDFV fits) |
//! | `ip` | none | an IPv4 or IPv6 address in text form (at most 45 bytes) |
//! | `app_name` | none | 1-64 bytes, no control characters |
//! | `typology` | none | 0-32 ASCII letters, digits or `_` (empty for `cleared`) |
//! | `new_limit` | N(12) | as `tran_amt` |
//! | a whole event | none | [`MAX_EVENT_BYTES`] bytes by default (`engine.max_event_bytes`), refused before it is parsed |
//!
//! The open-banking tables give lengths without saying how a Hangul syllable
//! counts; systems from the EUC-KR era count two bytes, which some real
//! merchant names (`엔에이치엔케이씨피(주)`) exceed. Names are therefore
//! counted in characters, the looser reading: at most 80 bytes of UTF-8.
//!
//! Refusals name the field, the bound and the specification, never the value:
//! the value may be an account number or a name, and refusals reach logs.

use super::EventError;

/// The default size limit of one event, in bytes: the largest valid event
/// (every field at its bound, names written as `\u` escapes) is under 1 KB.
/// A message over the limit is refused before it is parsed.
pub const MAX_EVENT_BYTES: usize = 4096;

/// Longest device id: no open-banking field carries one; a UUID (36), an
/// Android id (16) or an IDFV (36) fits with room.
pub const MAX_DEVICE_ID_BYTES: usize = 64;

/// The smallest and largest size limit a configuration may set.
pub const EVENT_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 20;

/// What a field's characters may be.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// ASCII letters and digits only (open-banking `AN`).
    Alphanumeric,
    /// ASCII letters and digits, with `-` and spaces between them not counted.
    AccountNumber,
    /// Any characters but control characters, counted in characters.
    Name,
    /// Any characters but control characters, counted in bytes.
    Text,
    /// ASCII letters, digits and `_`, possibly empty.
    Code,
}

/// One field's bound.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    field: &'static str,
    shape: Shape,
    max: usize,
    /// Where the bound comes from, quoted in refusals.
    source: &'static str,
}

pub(super) const BANK_TRAN_ID: Bound =
    Bound { field: "bank_tran_id", shape: Shape::Alphanumeric, max: 20, source: "open-banking AN(20)" };
pub(super) const FINTECH_USE_NUM: Bound =
    Bound { field: "fintech_use_num", shape: Shape::Alphanumeric, max: 24, source: "open-banking AN(24)" };
pub(super) const RECV_CLIENT_ACCOUNT_NUM: Bound =
    Bound { field: "recv_client_account_num", shape: Shape::AccountNumber, max: 16, source: "open-banking AN(16)" };
pub(super) const RECV_CLIENT_NAME: Bound =
    Bound { field: "recv_client_name", shape: Shape::Name, max: 20, source: "open-banking AH(20)" };
pub(super) const DEVICE_ID: Bound =
    Bound { field: "device_id", shape: Shape::Text, max: MAX_DEVICE_ID_BYTES, source: "fds's bound" };
pub(super) const APP_NAME: Bound = Bound { field: "app_name", shape: Shape::Text, max: 64, source: "fds's bound" };
pub(super) const TYPOLOGY: Bound = Bound { field: "typology", shape: Shape::Code, max: 32, source: "fds's bound" };

/// The longest IP address in text form: an IPv6 address with an embedded
/// IPv4 one (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_IP_BYTES: usize = 45;

fn invalid(kind: &'static str, field: &'static str, reason: String) -> EventError {
    EventError::Invalid { kind, field, reason }
}

impl Bound {
    /// Check `value` against the bound; the refusal names the field, the
    /// bound and the offending character's position, never the value.
    pub(super) fn check(&self, kind: &'static str, value: &str) -> Result<(), EventError> {
        let fail = |reason: String| Err(invalid(kind, self.field, reason));
        let (max, source) = (self.max, self.source);
        let (counted, unit) = match self.shape {
            Shape::Name => (value.chars().count(), "characters"),
            Shape::AccountNumber => (value.bytes().filter(|b| !matches!(b, b'-' | b' ')).count(), "characters"),
            _ => (value.len(), "bytes"),
        };
        if counted == 0 && !matches!(self.shape, Shape::Code) {
            return fail("must not be empty".to_owned());
        }
        if counted > max {
            return fail(format!("is {counted} {unit} long, at most {max} ({source})"));
        }
        let allowed = |c: char| match self.shape {
            Shape::Alphanumeric => c.is_ascii_alphanumeric(),
            Shape::AccountNumber => c.is_ascii_alphanumeric() || c == '-' || c == ' ',
            Shape::Name | Shape::Text => !c.is_control(),
            Shape::Code => c.is_ascii_alphanumeric() || c == '_',
        };
        if let Some((at, c)) = value.char_indices().find(|&(_, c)| !allowed(c)) {
            let what = match self.shape {
                Shape::Alphanumeric => "ASCII letters and digits",
                Shape::AccountNumber => "ASCII letters and digits, with '-' or spaces between them",
                Shape::Name | Shape::Text => "printable characters",
                Shape::Code => "ASCII letters, digits and '_'",
            };
            return fail(format!("may hold only {what} ({source}), found {c:?} at byte {at}"));
        }
        let ends_in = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if matches!(self.shape, Shape::AccountNumber)
            && !(ends_in(value.chars().next()) && ends_in(value.chars().last()))
        {
            return fail(format!("must begin and end with a letter or digit ({source})"));
        }
        if matches!(self.shape, Shape::Name) && value.trim().is_empty() {
            return fail("must not be blank".to_owned());
        }
        Ok(())
    }
}

/// An IP address in text form, when the channel sends one.
pub(super) fn check_ip(kind: &'static str, value: &str) -> Result<(), EventError> {
    if value.len() > MAX_IP_BYTES {
        return Err(invalid(kind, "ip", format!("is {} bytes long, at most {MAX_IP_BYTES}", value.len())));
    }
    value
        .parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| invalid(kind, "ip", "must be an IPv4 or IPv6 address".to_owned()))
}

/// A three-digit bank code (open-banking AN(3), in practice digits).
pub(super) fn check_bank_code(kind: &'static str, value: &str) -> Result<(), EventError> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(kind, "recv_client_bank_code", "must be a three-digit bank code (open-banking AN(3))".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(b: Bound, v: &str) -> String {
        match b.check("transfer", v) {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_shape_holds_its_bound_and_names_it() {
        assert_eq!(reason(BANK_TRAN_ID, "F123456789U000000001"), "ok");
        assert_eq!(
            reason(BANK_TRAN_ID, "F123456789U0000000012"),
            "invalid transfer event: bank_tran_id is 21 bytes long, at most 20 (open-banking AN(20))"
        );
        assert!(reason(BANK_TRAN_ID, "F1-2").contains("found '-' at byte 2"));
        assert_eq!(reason(RECV_CLIENT_ACCOUNT_NUM, "110-123-456789"), "ok");
        assert_eq!(reason(RECV_CLIENT_ACCOUNT_NUM, "1234 5678 9012 3456"), "ok");
        assert!(reason(RECV_CLIENT_ACCOUNT_NUM, "12345678901234567").contains("17 characters long, at most 16"));
        assert!(reason(RECV_CLIENT_ACCOUNT_NUM, "-110").contains("must begin and end"));
        assert!(reason(RECV_CLIENT_ACCOUNT_NUM, "--").contains("must not be empty"));
        assert_eq!(reason(RECV_CLIENT_NAME, "엔에이치엔케이씨피(주)"), "ok");
        assert!(reason(RECV_CLIENT_NAME, &"가".repeat(21)).contains("21 characters long, at most 20"));
        assert!(reason(RECV_CLIENT_NAME, "  ").contains("blank"));
        assert!(reason(DEVICE_ID, "D1\n").contains("printable"));
        assert!(reason(DEVICE_ID, &"d".repeat(65)).contains("65 bytes long, at most 64 (fds's bound)"));
        assert_eq!(reason(TYPOLOGY, ""), "ok");
        assert!(reason(TYPOLOGY, "voice phishing").contains("found ' '"));
    }

    #[test]
    fn refusals_never_quote_the_value() {
        let account = "1101234567890123456789";
        for b in [RECV_CLIENT_ACCOUNT_NUM, FINTECH_USE_NUM, BANK_TRAN_ID] {
            let r = reason(b, account);
            assert!(!r.contains(account) && !r.contains("6789"), "{r}");
        }
        let name = "홍길동".repeat(10);
        assert!(!reason(RECV_CLIENT_NAME, &name).contains("홍"));
    }

    #[test]
    fn ip_addresses_parse() {
        assert!(check_ip("login", "10.0.0.1").is_ok());
        assert!(check_ip("login", "::ffff:10.0.0.1").is_ok());
        assert!(check_ip("login", "10.0.0.256").is_err());
        assert!(check_ip("login", &"1".repeat(500)).unwrap_err().to_string().contains("500 bytes long, at most 45"));
    }
}
