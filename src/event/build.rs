//! Builders for events: the one place tests, benches and examples make
//! transfers, context events and fraud reports, and a short way for anyone
//! writing a client to produce valid wire messages.
//!
//! Each builder starts from a valid event with plain defaults and sets only
//! what the caller names, so a test says what matters to it and nothing else,
//! and a change to the wire format is made here once instead of in every
//! hand-written JSON string. Times are the open-banking `YYYYMMDDhhmmss` on
//! the Korean clock, as on the wire; money is integer won. A builder panics on
//! a value no event may carry (an unparsable time, a non-positive amount):
//! that is a mistake in the calling code, not input to handle. Parsing
//! untrusted bytes is [`Event::from_json`]'s job.
//!
//! ```
//! use fds::event::build::{context, label, transfer};
//!
//! let reissue = context("120220000000000000000001").at("20261102140200").device("NEWPHONE").cert_reissued();
//! let t = transfer("VP1").account("120220000000000000000001").at("20261102141000").amount(9_000_000).build();
//! let report = label("VP1").at("20261105100000").typology("voice_phishing").build();
//! assert_eq!(fds::event::Event::from_json(t.to_json().as_bytes()).unwrap(), t);
//! # let _ = (reissue, report);
//! ```

use super::{
    Certificate, CertificateAction, Channel, DeviceRegistered, EkycCompleted, Event, EventTime, Label, LabelStatus,
    LimitRaised, Login, PhoneChanged, RemoteAppDetected, SchemaVersion, Transfer, TransferPurpose, Won,
};

/// The account events are about unless a builder is told otherwise.
pub const DEFAULT_ACCOUNT: &str = "120220000000000000000001";
/// The default time of every builder: a Monday afternoon, 2026-11-02 14:10 KST.
pub const DEFAULT_TIME: &str = "20261102141000";
/// The default payee: bank code and account number.
pub const DEFAULT_PAYEE: (&str, &str) = ("088", "110123456789");

fn time(kst: &str) -> EventTime {
    EventTime::parse_kst(kst).unwrap_or_else(|e| panic!("builder time {kst:?}: {e}"))
}

fn won(amount: i64) -> Won {
    Won::new(amount).unwrap_or_else(|e| panic!("builder amount: {e}"))
}

/// A transfer with id `bank_tran_id`: 10,000 won from [`DEFAULT_ACCOUNT`] to
/// [`DEFAULT_PAYEE`] at [`DEFAULT_TIME`], from the mobile app, no device or IP.
pub fn transfer(bank_tran_id: &str) -> TransferBuilder {
    TransferBuilder(Transfer {
        schema_version: SchemaVersion,
        bank_tran_id: bank_tran_id.to_owned(),
        tran_dtime: time(DEFAULT_TIME),
        fintech_use_num: DEFAULT_ACCOUNT.to_owned(),
        tran_amt: won(10_000),
        recv_client_bank_code: DEFAULT_PAYEE.0.to_owned(),
        recv_client_account_num: DEFAULT_PAYEE.1.to_owned(),
        recv_client_name: "김민수".to_owned(),
        channel: Channel::MobileApp,
        device_id: None,
        ip: None,
        transfer_purpose: TransferPurpose::Transfer,
    })
}

/// Builds a [`Transfer`]; see [`transfer`].
#[derive(Debug, Clone)]
pub struct TransferBuilder(Transfer);

impl TransferBuilder {
    /// The sender's account (fintech use number).
    pub fn account(mut self, account: &str) -> Self {
        self.0.fintech_use_num = account.to_owned();
        self
    }
    /// The request time, `YYYYMMDDhhmmss` KST.
    pub fn at(self, kst: &str) -> Self {
        self.at_time(time(kst))
    }
    /// The request time as an [`EventTime`], for computed times.
    pub fn at_time(mut self, t: EventTime) -> Self {
        self.0.tran_dtime = t;
        self
    }
    /// The amount in won (positive).
    pub fn amount(mut self, won_amount: i64) -> Self {
        self.0.tran_amt = won(won_amount);
        self
    }
    /// The payee's bank code and account number.
    pub fn payee(mut self, bank_code: &str, account_num: &str) -> Self {
        self.0.recv_client_bank_code = bank_code.to_owned();
        self.0.recv_client_account_num = account_num.to_owned();
        self
    }
    /// The payee's name as the sender typed it.
    pub fn payee_name(mut self, name: &str) -> Self {
        self.0.recv_client_name = name.to_owned();
        self
    }
    /// The channel the customer used.
    pub fn channel(mut self, channel: Channel) -> Self {
        self.0.channel = channel;
        self
    }
    /// The device the request came from.
    pub fn device(mut self, device_id: &str) -> Self {
        self.0.device_id = Some(device_id.to_owned());
        self
    }
    /// The client's IP address.
    pub fn ip(mut self, ip: &str) -> Self {
        self.0.ip = Some(ip.to_owned());
        self
    }
    /// The open-banking purpose code.
    pub fn purpose(mut self, purpose: TransferPurpose) -> Self {
        self.0.transfer_purpose = purpose;
        self
    }
    /// The transfer itself.
    pub fn transfer(self) -> Transfer {
        self.0
    }
    /// The transfer as an [`Event`].
    pub fn build(self) -> Event {
        Event::Transfer(self.0)
    }
    /// The wire message: one JSON line, no newline.
    pub fn json(self) -> String {
        self.build().to_json()
    }
}

/// A context event about `account`, at [`DEFAULT_TIME`] unless told; the
/// last call names the kind of event ([`ContextBuilder::login`],
/// [`ContextBuilder::cert_reissued`], ...).
pub fn context(account: &str) -> ContextBuilder {
    ContextBuilder { account: account.to_owned(), at: time(DEFAULT_TIME), device: None, ip: None }
}

/// Builds a context event; see [`context`].
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    account: String,
    at: EventTime,
    device: Option<String>,
    ip: Option<String>,
}

impl ContextBuilder {
    /// The event time, `YYYYMMDDhhmmss` KST.
    pub fn at(self, kst: &str) -> Self {
        self.at_time(time(kst))
    }
    /// The event time as an [`EventTime`].
    pub fn at_time(mut self, t: EventTime) -> Self {
        self.at = t;
        self
    }
    /// The device the event happened on (required by
    /// [`ContextBuilder::device_registered`], optional elsewhere).
    pub fn device(mut self, device_id: &str) -> Self {
        self.device = Some(device_id.to_owned());
        self
    }
    /// The client's IP address (logins only).
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.to_owned());
        self
    }
    /// A login, successful or failed.
    pub fn login(self, success: bool) -> Event {
        Event::Login(Login {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
            device_id: self.device,
            ip: self.ip,
            success,
        })
    }
    /// A new device registered to the account.
    pub fn device_registered(self) -> Event {
        Event::DeviceRegistered(DeviceRegistered {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
            device_id: self.device.expect("device_registered needs .device(..)"),
        })
    }
    /// A joint certificate (공동인증서) issued, re-issued or renewed.
    pub fn certificate(self, action: CertificateAction) -> Event {
        Event::Certificate(Certificate {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
            action,
            device_id: self.device,
        })
    }
    /// A joint certificate re-issued: the voice-phishing precursor.
    pub fn cert_reissued(self) -> Event {
        self.certificate(CertificateAction::Reissued)
    }
    /// The account's phone number changed.
    pub fn phone_changed(self) -> Event {
        Event::PhoneChanged(PhoneChanged {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
        })
    }
    /// A remote-control app detected on the customer's device.
    pub fn remote_app(self, app_name: &str) -> Event {
        Event::RemoteAppDetected(RemoteAppDetected {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
            device_id: self.device,
            app_name: app_name.to_owned(),
        })
    }
    /// The transfer limit raised to `new_limit` won.
    pub fn limit_raised(self, new_limit: i64) -> Event {
        Event::LimitRaised(LimitRaised {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
            new_limit: won(new_limit),
        })
    }
    /// Non-face-to-face identity verification completed.
    pub fn ekyc(self) -> Event {
        Event::EkycCompleted(EkycCompleted {
            schema_version: SchemaVersion,
            event_dtime: self.at,
            fintech_use_num: self.account,
            device_id: self.device,
        })
    }
}

/// A fraud report on transfer `bank_tran_id`, naming [`DEFAULT_PAYEE`],
/// received at [`DEFAULT_TIME`], typology `voice_phishing`.
pub fn label(bank_tran_id: &str) -> LabelBuilder {
    LabelBuilder(Label {
        schema_version: SchemaVersion,
        bank_tran_id: bank_tran_id.to_owned(),
        report_dtime: time(DEFAULT_TIME),
        status: LabelStatus::Fraud,
        typology: "voice_phishing".to_owned(),
        recv_client_bank_code: DEFAULT_PAYEE.0.to_owned(),
        recv_client_account_num: DEFAULT_PAYEE.1.to_owned(),
    })
}

/// Builds a [`Label`]; see [`label`].
#[derive(Debug, Clone)]
pub struct LabelBuilder(Label);

impl LabelBuilder {
    /// When the report was received, `YYYYMMDDhhmmss` KST.
    pub fn at(self, kst: &str) -> Self {
        self.at_time(time(kst))
    }
    /// When the report was received, as an [`EventTime`].
    pub fn at_time(mut self, t: EventTime) -> Self {
        self.0.report_dtime = t;
        self
    }
    /// The payee the money went to.
    pub fn payee(mut self, bank_code: &str, account_num: &str) -> Self {
        self.0.recv_client_bank_code = bank_code.to_owned();
        self.0.recv_client_account_num = account_num.to_owned();
        self
    }
    /// The fraud typology.
    pub fn typology(mut self, typology: &str) -> Self {
        self.0.typology = typology.to_owned();
        self
    }
    /// A withdrawal of the report (no typology).
    pub fn cleared(mut self) -> Self {
        self.0.status = LabelStatus::Cleared;
        self.0.typology.clear();
        self
    }
    /// The label as an [`Event`].
    pub fn build(self) -> Event {
        Event::Label(self.0)
    }
    /// The wire message: one JSON line, no newline.
    pub fn json(self) -> String {
        self.build().to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: Event) {
        let parsed = Event::from_json(e.to_json().as_bytes()).unwrap_or_else(|err| panic!("{e:?}: {err}"));
        assert_eq!(parsed, e);
    }

    #[test]
    fn every_builder_makes_a_valid_event_that_parses_back_equal() {
        let c = || context("A1").at("20261102140000");
        for e in [
            transfer("T1").build(),
            transfer("T2")
                .account("A1")
                .at("20261103091500")
                .amount(9_000_000)
                .payee("004", "123-45-6789")
                .payee_name("박서준")
                .channel(Channel::OpenBanking)
                .device("D1")
                .ip("203.0.113.7")
                .purpose(TransferPurpose::Payment)
                .build(),
            c().device("D1").ip("203.0.113.7").login(false),
            c().device("D1").device_registered(),
            c().device("D1").cert_reissued(),
            c().certificate(CertificateAction::Renewed),
            c().phone_changed(),
            c().device("D1").remote_app("TeamViewer QS"),
            c().limit_raised(50_000_000),
            c().ekyc(),
            label("T1").build(),
            label("T1").at("20261105100000").payee("004", "1234").typology("loan_fraud").build(),
            label("T1").cleared().build(),
        ] {
            round_trip(e);
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let t = transfer("T1").transfer();
        assert_eq!(t.fintech_use_num, DEFAULT_ACCOUNT);
        assert_eq!(t.tran_dtime.format_kst(), DEFAULT_TIME);
        assert_eq!((t.recv_client_bank_code.as_str(), t.recv_client_account_num.as_str()), DEFAULT_PAYEE);
        assert_eq!(t.tran_amt.get(), 10_000);
    }

    #[test]
    #[should_panic(expected = "builder amount")]
    fn a_non_positive_amount_is_a_mistake_in_the_caller() {
        let _ = transfer("T1").amount(0);
    }
}
