//! Features: one pure function from (transfer, state) to a fixed, named vector.
//!
//! This module owns the feature schema: the names, types and order that rules,
//! the model, training and replay all read. There is exactly one function that
//! computes features ([`compute`]), and every consumer calls it, so what a rule
//! or a model sees in training is what it sees on live traffic.
//!
//! Guarantees:
//! - [`compute`] reads the state *as it was before* the transfer: history
//!   features describe the past, and the transfer's own amount is its own feature.
//! - Money features are integer won ([`Value::Int`]); only ratios and scores are
//!   floats. [`FeatureVector::to_f64`] is the model-facing numeric view.
//! - "Minutes since" features are capped at [`MINUTES_CAP`] (30 days), which also
//!   stands for "never seen": a rule writes `mins_since_cert_reissue <= 30`
//!   without caring whether the account ever had a certificate event.

use crate::event::{Channel, EventTime, Transfer, TransferPurpose, DAY_MS, MINUTE_MS};
use crate::state::{AccountView, DeviceView, Observed, PayeeView, Window};

/// "Minutes since" features stop counting here; it also means "never".
pub const MINUTES_CAP: i64 = 30 * 24 * 60;

/// The type of a feature, checked when rules are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureType {
    /// True or false: a condition uses it as it is (`payee_first_seen and ...`).
    Bool,
    /// Integer: counts, minutes, won.
    Int,
    /// Ratios and scores.
    Float,
}

impl FeatureType {
    /// The name rule errors use ("`>` compares numbers, but `x` is bool").
    pub fn name(self) -> &'static str {
        match self {
            FeatureType::Bool => "bool",
            FeatureType::Int => "integer",
            FeatureType::Float => "number",
        }
    }
}

/// One entry of the schema.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    /// The name rules and model cards use.
    pub name: &'static str,
    /// Its type, checked when rules are compiled.
    pub kind: FeatureType,
    /// What it measures, with its units and resolution (`fds features`).
    pub help: &'static str,
}

/// A feature value, typed so money never passes through a float in rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A [`FeatureType::Bool`] feature's value.
    Bool(bool),
    /// A [`FeatureType::Int`] feature's value: a count, minutes or won.
    Int(i64),
    /// A [`FeatureType::Float`] feature's value.
    Float(f64),
}

impl Value {
    /// The value as a model reads it: bools as 0/1.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }
}

/// Declares every feature once: its identifier, type, name, help text and how
/// it is computed from [`Inputs`]. From this one list come the [`F`] index
/// enum, the [`SCHEMA`] and [`compute`], in the same order by construction, so
/// adding a feature is one entry here and a value of the wrong type does not
/// compile (`Int` takes an `i64`, `Bool` a `bool`, `Float` an `f64`).
macro_rules! schema {
    (|$x:ident| { $( $id:ident : $kind:ident = $name:literal, $help:literal => $value:expr; )* }) => {
        /// Index of each feature in [`FeatureVector`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum F { $( #[doc = $help] $id, )* }

        /// Every feature, in vector order.
        pub static SCHEMA: &[FeatureDef] = &[
            $( FeatureDef { name: $name, kind: FeatureType::$kind, help: $help }, )*
        ];

        /// The features of `t`, from the state as it was before `t`.
        pub fn compute(t: &Transfer, seen: &Observed) -> FeatureVector {
            let $x = &Inputs::new(t, seen);
            FeatureVector::from_values([ $( Value::$kind($value), )* ])
        }
    };
}

schema! { |x| {
    AMOUNT: Int = "amount",
        "transfer amount in won"
        => x.amount;
    HOUR_KST: Int = "hour_kst",
        "hour of day on the Korean clock, 0-23"
        => i64::from(x.hour);
    IS_NIGHT: Bool = "is_night",
        "sent between 00:00 and 05:59 KST"
        => x.hour < 6;
    IS_WEEKEND: Bool = "is_weekend",
        "sent on a Saturday or Sunday (KST)"
        => x.now.kst_weekday() >= 5;
    CHANNEL_MOBILE_APP: Bool = "channel_mobile_app",
        "sent from the bank's mobile app"
        => x.t.channel == Channel::MobileApp;
    CHANNEL_INTERNET_BANKING: Bool = "channel_internet_banking",
        "sent from internet banking"
        => x.t.channel == Channel::InternetBanking;
    CHANNEL_OPEN_BANKING: Bool = "channel_open_banking",
        "sent through an open-banking partner"
        => x.t.channel == Channel::OpenBanking;
    PURPOSE_PAYMENT: Bool = "purpose_payment",
        "a payment to a merchant (transfer_purpose ST), not a money transfer"
        => x.t.transfer_purpose == TransferPurpose::Payment;
    ACCT_COUNT_10M: Int = "acct_count_10m",
        "sender's transfers in the previous 10 minutes (1-minute buckets: 9-10 min)"
        => x.a.count(Window::Min10);
    ACCT_COUNT_1H: Int = "acct_count_1h",
        "sender's transfers in the previous hour (5-minute buckets: 55-60 min)"
        => x.a.count(Window::Hour1);
    ACCT_COUNT_24H: Int = "acct_count_24h",
        "sender's transfers in the previous 24 hours (1-hour buckets: 23-24 h)"
        => x.a.count(Window::Hour24);
    ACCT_COUNT_7D: Int = "acct_count_7d",
        "sender's transfers in the previous 7 days (1-day buckets: 6-7 d)"
        => x.a.count(Window::Day7);
    ACCT_COUNT_30D: Int = "acct_count_30d",
        "sender's transfers in the previous 30 days (1-day buckets: 29-30 d)"
        => x.a.count(Window::Day30);
    ACCT_SUM_10M: Int = "acct_sum_10m",
        "won sent by the sender in the previous 10 minutes"
        => x.a.sum(Window::Min10);
    ACCT_SUM_1H: Int = "acct_sum_1h",
        "won sent by the sender in the previous hour"
        => x.a.sum(Window::Hour1);
    ACCT_SUM_24H: Int = "acct_sum_24h",
        "won sent by the sender in the previous 24 hours"
        => x.a.sum(Window::Hour24);
    ACCT_SUM_7D: Int = "acct_sum_7d",
        "won sent by the sender in the previous 7 days"
        => x.a.sum(Window::Day7);
    ACCT_SUM_30D: Int = "acct_sum_30d",
        "won sent by the sender in the previous 30 days"
        => x.a.sum(Window::Day30);
    ACCT_HISTORY_DAYS: Int = "acct_history_days",
        "days since the engine first saw the sender"
        => (x.now.millis() - x.a.first_seen.millis()).max(0) / DAY_MS;
    ACCT_LIFETIME_COUNT: Int = "acct_lifetime_count",
        "sender's transfers ever seen"
        => x.a.lifetime_count as i64;
    AMOUNT_VS_AVG_30D: Float = "amount_vs_avg_30d",
        "amount / sender's mean transfer over 30 days (0 with no history)"
        => ratio(x.amount, x.mean(Window::Day30));
    AMOUNT_VS_AVG_24H: Float = "amount_vs_avg_24h",
        "amount / sender's mean transfer over the previous 24 hours (0 with none)"
        => ratio(x.amount, x.mean(Window::Hour24));
    AMOUNT_VS_AVG_7D: Float = "amount_vs_avg_7d",
        "amount / sender's mean transfer over 7 days (0 with none)"
        => ratio(x.amount, x.mean(Window::Day7));
    AMOUNT_VS_MAX: Float = "amount_vs_max",
        "amount / sender's largest earlier transfer (0 with no history)"
        => ratio(x.amount, x.a.max_amount);
    AMOUNT_LOG_ZSCORE: Float = "amount_log_zscore",
        "z-score of log10(amount) against the sender's history (0 under 2 transfers)"
        => x.a.amount_log_zscore(x.amount);
    PAYEE_FIRST_SEEN: Bool = "payee_first_seen",
        "the sender has never sent to this payee before"
        => !x.a.payee_known;
    ACCT_KNOWN_PAYEES: Int = "acct_known_payees",
        "distinct payees the sender has sent to"
        => x.a.known_payees;
    ACCT_NEW_PAYEES_24H: Int = "acct_new_payees_24h",
        "first-time payees of the sender in the previous 24 hours"
        => x.a.new_payees_24h;
    DEVICE_AGE_MIN: Int = "device_age_min",
        "minutes since the sender first used this device (capped; cap if no device)"
        => x.device_age_min();
    MINS_SINCE_CERT_REISSUE: Int = "mins_since_cert_reissue",
        "minutes since a joint certificate was issued or re-issued (capped)"
        => x.minutes_since(x.a.last_cert_reissue);
    MINS_SINCE_DEVICE_REGISTERED: Int = "mins_since_device_registered",
        "minutes since a device was registered (capped)"
        => x.minutes_since(x.a.last_device_registered);
    MINS_SINCE_PHONE_CHANGE: Int = "mins_since_phone_change",
        "minutes since the phone number changed (capped)"
        => x.minutes_since(x.a.last_phone_change);
    MINS_SINCE_REMOTE_APP: Int = "mins_since_remote_app",
        "minutes since a remote-control app was detected (capped)"
        => x.minutes_since(x.a.last_remote_app);
    MINS_SINCE_LIMIT_RAISED: Int = "mins_since_limit_raised",
        "minutes since the transfer limit was raised (capped)"
        => x.minutes_since(x.a.last_limit_raised);
    MINS_SINCE_EKYC: Int = "mins_since_ekyc",
        "minutes since non-face-to-face identity verification (capped)"
        => x.minutes_since(x.a.last_ekyc);
    MINS_SINCE_HOLD: Int = "mins_since_hold",
        "minutes since a rule held one of the sender's transfers (capped; the model's holds are not remembered)"
        => x.minutes_since(x.a.last_hold);
    FAILED_LOGINS_1H: Int = "failed_logins_1h",
        "failed logins on the sender's account in the previous hour"
        => x.a.failed_logins_1h;
    PAYEE_DISTINCT_SENDERS_1H: Int = "payee_distinct_senders_1h",
        "distinct senders to this payee in the previous hour (exact)"
        => x.p.distinct_senders_1h;
    PAYEE_DISTINCT_SENDERS_24H: Int = "payee_distinct_senders_24h",
        "distinct senders to this payee in the previous 24 hours (exact)"
        => x.p.distinct_senders_24h;
    PAYEE_IN_COUNT_24H: Int = "payee_in_count_24h",
        "transfers into this payee in the previous 24 hours (1-hour buckets: 23-24 h)"
        => x.p.in_count_24h;
    PAYEE_IN_SUM_24H: Int = "payee_in_sum_24h",
        "won into this payee in the previous 24 hours (1-hour buckets: 23-24 h)"
        => x.p.in_sum_24h;
    PAYEE_IN_COUNT_7D: Int = "payee_in_count_7d",
        "transfers into this payee in the previous 7 days (1-day buckets: 6-7 d)"
        => x.p.in_count_7d;
    PAYEE_IN_COUNT_30D: Int = "payee_in_count_30d",
        "transfers into this payee in the previous 30 days (1-day buckets: 29-30 d)"
        => x.p.in_count_30d;
    PAYEE_AGE_MIN: Int = "payee_age_min",
        "minutes since the engine first saw this payee (capped)"
        => x.minutes_since(Some(x.p.first_seen));
    PAYEE_FRAUD_REPORTS: Int = "payee_fraud_reports",
        "open fraud reports against this payee (one per reported transfer; a withdrawal closes it)"
        => x.p.fraud_reports;
    MINS_SINCE_PAYEE_REPORT: Int = "mins_since_payee_report",
        "minutes since the last fraud report against this payee (capped)"
        => x.minutes_since(x.p.last_report);
    PAYEE_REPORTS_24H: Int = "payee_reports_24h",
        "open fraud reports against this payee received in the previous 24 hours (exact; saturates at 64)"
        => x.p.recent_reports[0];
    PAYEE_REPORTS_7D: Int = "payee_reports_7d",
        "open fraud reports against this payee received in the previous 7 days (exact; saturates at 64)"
        => x.p.recent_reports[1];
    PAYEE_REPORTS_30D: Int = "payee_reports_30d",
        "open fraud reports against this payee received in the previous 30 days (exact; saturates at 64)"
        => x.p.recent_reports[2];
    PAYEE_FRAUD_SHARE_24H: Float = "payee_fraud_share_24h",
        "payee_reports_24h / transfers into this payee in the 8-9 days they can name (reports assumed within 7 days of their transfer); 0 with no transfers, at most 1"
        => fraud_share(x.p.recent_reports[0], x.p.reportable_transfers[0]);
    PAYEE_FRAUD_SHARE_7D: Float = "payee_fraud_share_7d",
        "payee_reports_7d / transfers into this payee in the 14-15 days they can name; 0 with no transfers, at most 1"
        => fraud_share(x.p.recent_reports[1], x.p.reportable_transfers[1]);
    PAYEE_FRAUD_SHARE_30D: Float = "payee_fraud_share_30d",
        "payee_reports_30d / transfers into this payee in the 37-38 days they can name; 0 with no transfers, at most 1"
        => fraud_share(x.p.recent_reports[2], x.p.reportable_transfers[2]);
    DEVICE_DISTINCT_ACCOUNTS_24H: Int = "device_distinct_accounts_24h",
        "distinct sender accounts on this device in the previous 24 hours"
        => x.device.map_or(0, |d| d.distinct_accounts_24h);
    DEVICE_COUNT_1H: Int = "device_count_1h",
        "transfers from this device in the previous hour (5-minute buckets: 55-60 min)"
        => x.device.map_or(0, |d| d.count_1h);
}}

/// Number of features.
pub const N_FEATURES: usize = F::DEVICE_COUNT_1H as usize + 1;

/// Look a feature up by name.
pub fn index_of(name: &str) -> Option<usize> {
    SCHEMA.iter().position(|d| d.name == name)
}

/// The features of one transfer, in [`SCHEMA`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureVector {
    values: [Value; N_FEATURES],
}

impl FeatureVector {
    /// Build a vector from values in schema order; each value must have its
    /// feature's kind (checked in debug builds).
    pub fn from_values(values: [Value; N_FEATURES]) -> Self {
        debug_assert!(values.iter().zip(SCHEMA).all(|(v, d)| matches!(
            (v, d.kind),
            (Value::Bool(_), FeatureType::Bool)
                | (Value::Int(_), FeatureType::Int)
                | (Value::Float(_), FeatureType::Float)
        )));
        FeatureVector { values }
    }
    /// Every feature at its zero: false, 0, 0.0. With [`FeatureVector::with`], this
    /// builds the vectors rule tests and benches evaluate.
    pub fn zeroed() -> Self {
        let mut values = [Value::Int(0); N_FEATURES];
        for (v, d) in values.iter_mut().zip(SCHEMA) {
            *v = match d.kind {
                FeatureType::Bool => Value::Bool(false),
                FeatureType::Int => Value::Int(0),
                FeatureType::Float => Value::Float(0.0),
            };
        }
        FeatureVector { values }
    }
    /// This vector with the given features set (kinds checked in debug builds).
    pub fn with(mut self, set: &[(F, Value)]) -> Self {
        for &(f, v) in set {
            self.values[f as usize] = v;
        }
        FeatureVector::from_values(self.values)
    }
    /// The value at schema index `i` (compiled rules and models keep indexes).
    #[inline]
    pub fn get(&self, i: usize) -> Value {
        self.values[i]
    }
    /// The value of feature `f`.
    #[inline]
    pub fn feature(&self, f: F) -> Value {
        self.values[f as usize]
    }
    /// Every value, in [`SCHEMA`] order.
    pub fn values(&self) -> &[Value; N_FEATURES] {
        &self.values
    }
    /// The numeric view a model reads: bools as 0/1, integers and won as f64
    /// (exact below 2^53 won, far above any transfer).
    pub fn to_f64(&self) -> [f64; N_FEATURES] {
        let mut out = [0.0; N_FEATURES];
        for (o, v) in out.iter_mut().zip(&self.values) {
            *o = v.as_f64();
        }
        out
    }
}

/// What every feature is computed from: the transfer and the views of the
/// state before it, with the values several features share worked out once.
struct Inputs<'a> {
    t: &'a Transfer,
    now: EventTime,
    amount: i64,
    hour: u32,
    a: &'a AccountView,
    p: &'a PayeeView,
    device: Option<DeviceView>,
}

impl<'a> Inputs<'a> {
    #[inline]
    fn new(t: &'a Transfer, seen: &'a Observed) -> Self {
        Inputs {
            t,
            now: t.tran_dtime,
            amount: t.tran_amt.get(),
            hour: t.tran_dtime.kst_hour(),
            a: &seen.account,
            p: &seen.payee,
            device: seen.device,
        }
    }

    /// Minutes from `since` to the transfer, capped at [`MINUTES_CAP`]; `None`
    /// means never.
    #[inline]
    fn minutes_since(&self, since: Option<EventTime>) -> i64 {
        match since {
            Some(s) => ((self.now.millis() - s.millis()).max(0) / MINUTE_MS).min(MINUTES_CAP),
            None => MINUTES_CAP,
        }
    }

    /// Mean won per transfer the sender sent in `w`, 0 with none (integer won,
    /// like the sums).
    #[inline]
    fn mean(&self, w: Window) -> i64 {
        let count = self.a.count(w);
        if count > 0 {
            self.a.sum(w) / count
        } else {
            0
        }
    }

    /// Minutes since the sender first used the transfer's device.
    #[inline]
    fn device_age_min(&self) -> i64 {
        match (&self.t.device_id, self.a.device_first_seen) {
            // No device sent (open-banking partners): nothing to judge it by.
            (None, _) => MINUTES_CAP,
            // The account's first use of this device is this transfer.
            (Some(_), None) => 0,
            (Some(_), first) => self.minutes_since(first),
        }
    }
}

#[inline]
fn ratio(num: i64, den: i64) -> f64 {
    if den <= 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The payee's fraud share over a report window: reports received in the
/// window over the transfers into the payee they can name.
///
/// The handbook's terminal risk counts the frauds among a terminal's
/// transactions from `n + 7` to 7 days ago, because its labels arrive exactly
/// 7 days late. Bank reports arrive hours to days late and do not carry the
/// reported transfer's time, so the engine cannot place a report on its
/// transfer's day; it divides instead by every transfer that a report
/// received in the last `n` days can name when reports arrive within
/// [`crate::state::REPORT_LAG_DAYS`] (7 days) of their transfer: those of the
/// last `n + 7` days. Then the share never exceeds 1 and equals the handbook's
/// risk scaled by `n / (n + 7)` for a payee with steady traffic. Capped at 1
/// (reports later than 7 days, or a ring that dropped a late transfer), and 0
/// when the payee received no transfer, so a reported payee that went quiet
/// reads as "no evidence", not as a division by zero.
#[inline]
fn fraud_share(reports: i64, transfers: i64) -> f64 {
    ratio(reports, transfers).min(1.0)
}
