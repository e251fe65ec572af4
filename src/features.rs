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

use crate::event::{Channel, EventTime, Transfer, TransferPurpose};
use crate::state::Observed;

/// "Minutes since" features stop counting here; it also means "never".
pub const MINUTES_CAP: i64 = 30 * 24 * 60;

/// The type of a feature, checked when rules are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Integer: counts, minutes, won.
    Int,
    /// Ratios and scores.
    Float,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "integer",
            Kind::Float => "number",
        }
    }
}

/// One entry of the schema.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// A feature value, typed so money never passes through a float in rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }
}

macro_rules! schema {
    ($( $id:ident : $kind:ident = $name:literal, $help:literal; )*) => {
        /// Index of each feature in [`FeatureVector`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum F { $( $id, )* }

        /// Every feature, in vector order.
        pub static SCHEMA: &[FeatureDef] = &[
            $( FeatureDef { name: $name, kind: Kind::$kind, help: $help }, )*
        ];
    };
}

schema! {
    AMOUNT: Int = "amount", "transfer amount in won";
    HOUR_KST: Int = "hour_kst", "hour of day on the Korean clock, 0-23";
    IS_NIGHT: Bool = "is_night", "sent between 00:00 and 05:59 KST";
    IS_WEEKEND: Bool = "is_weekend", "sent on a Saturday or Sunday (KST)";
    CHANNEL_MOBILE_APP: Bool = "channel_mobile_app", "sent from the bank's mobile app";
    CHANNEL_INTERNET_BANKING: Bool = "channel_internet_banking", "sent from internet banking";
    CHANNEL_OPEN_BANKING: Bool = "channel_open_banking", "sent through an open-banking partner";
    PURPOSE_PAYMENT: Bool = "purpose_payment", "a payment to a merchant (transfer_purpose ST), not a money transfer";
    ACCT_COUNT_10M: Int = "acct_count_10m", "sender's transfers in the previous 10 minutes (1-minute buckets: 9-10 min)";
    ACCT_COUNT_1H: Int = "acct_count_1h", "sender's transfers in the previous hour (5-minute buckets: 55-60 min)";
    ACCT_COUNT_24H: Int = "acct_count_24h", "sender's transfers in the previous 24 hours (1-hour buckets: 23-24 h)";
    ACCT_COUNT_7D: Int = "acct_count_7d", "sender's transfers in the previous 7 days (1-day buckets: 6-7 d)";
    ACCT_COUNT_30D: Int = "acct_count_30d", "sender's transfers in the previous 30 days (1-day buckets: 29-30 d)";
    ACCT_SUM_10M: Int = "acct_sum_10m", "won sent by the sender in the previous 10 minutes";
    ACCT_SUM_1H: Int = "acct_sum_1h", "won sent by the sender in the previous hour";
    ACCT_SUM_24H: Int = "acct_sum_24h", "won sent by the sender in the previous 24 hours";
    ACCT_SUM_7D: Int = "acct_sum_7d", "won sent by the sender in the previous 7 days";
    ACCT_SUM_30D: Int = "acct_sum_30d", "won sent by the sender in the previous 30 days";
    ACCT_HISTORY_DAYS: Int = "acct_history_days", "days since the engine first saw the sender";
    ACCT_LIFETIME_COUNT: Int = "acct_lifetime_count", "sender's transfers ever seen";
    AMOUNT_VS_AVG_30D: Float = "amount_vs_avg_30d", "amount / sender's mean transfer over 30 days (0 with no history)";
    AMOUNT_VS_AVG_24H: Float = "amount_vs_avg_24h", "amount / sender's mean transfer over the previous 24 hours (0 with none)";
    AMOUNT_VS_AVG_7D: Float = "amount_vs_avg_7d", "amount / sender's mean transfer over 7 days (0 with none)";
    AMOUNT_VS_MAX: Float = "amount_vs_max", "amount / sender's largest earlier transfer (0 with no history)";
    AMOUNT_LOG_ZSCORE: Float = "amount_log_zscore", "z-score of log10(amount) against the sender's history (0 under 2 transfers)";
    PAYEE_FIRST_SEEN: Bool = "payee_first_seen", "the sender has never sent to this payee before";
    ACCT_KNOWN_PAYEES: Int = "acct_known_payees", "distinct payees the sender has sent to";
    ACCT_NEW_PAYEES_24H: Int = "acct_new_payees_24h", "first-time payees of the sender in the previous 24 hours";
    DEVICE_AGE_MIN: Int = "device_age_min", "minutes since the sender first used this device (capped; cap if no device)";
    MINS_SINCE_CERT_REISSUE: Int = "mins_since_cert_reissue", "minutes since a joint certificate was issued or re-issued (capped)";
    MINS_SINCE_DEVICE_REGISTERED: Int = "mins_since_device_registered", "minutes since a device was registered (capped)";
    MINS_SINCE_PHONE_CHANGE: Int = "mins_since_phone_change", "minutes since the phone number changed (capped)";
    MINS_SINCE_REMOTE_APP: Int = "mins_since_remote_app", "minutes since a remote-control app was detected (capped)";
    MINS_SINCE_LIMIT_RAISED: Int = "mins_since_limit_raised", "minutes since the transfer limit was raised (capped)";
    MINS_SINCE_EKYC: Int = "mins_since_ekyc", "minutes since non-face-to-face identity verification (capped)";
    MINS_SINCE_HOLD: Int = "mins_since_hold", "minutes since a rule held one of the sender's transfers (capped; the model's holds are not remembered)";
    FAILED_LOGINS_1H: Int = "failed_logins_1h", "failed logins on the sender's account in the previous hour";
    PAYEE_DISTINCT_SENDERS_1H: Int = "payee_distinct_senders_1h", "distinct senders to this payee in the previous hour (exact)";
    PAYEE_DISTINCT_SENDERS_24H: Int = "payee_distinct_senders_24h", "distinct senders to this payee in the previous 24 hours (exact)";
    PAYEE_IN_COUNT_24H: Int = "payee_in_count_24h", "transfers into this payee in the previous 24 hours (1-hour buckets: 23-24 h)";
    PAYEE_IN_SUM_24H: Int = "payee_in_sum_24h", "won into this payee in the previous 24 hours (1-hour buckets: 23-24 h)";
    PAYEE_IN_COUNT_7D: Int = "payee_in_count_7d", "transfers into this payee in the previous 7 days (1-day buckets: 6-7 d)";
    PAYEE_IN_COUNT_30D: Int = "payee_in_count_30d", "transfers into this payee in the previous 30 days (1-day buckets: 29-30 d)";
    PAYEE_AGE_MIN: Int = "payee_age_min", "minutes since the engine first saw this payee (capped)";
    PAYEE_FRAUD_REPORTS: Int = "payee_fraud_reports", "open fraud reports against this payee (one per reported transfer; a withdrawal closes it)";
    MINS_SINCE_PAYEE_REPORT: Int = "mins_since_payee_report", "minutes since the last fraud report against this payee (capped)";
    PAYEE_REPORTS_24H: Int = "payee_reports_24h", "open fraud reports against this payee received in the previous 24 hours (exact; saturates at 64)";
    PAYEE_REPORTS_7D: Int = "payee_reports_7d", "open fraud reports against this payee received in the previous 7 days (exact; saturates at 64)";
    PAYEE_REPORTS_30D: Int = "payee_reports_30d", "open fraud reports against this payee received in the previous 30 days (exact; saturates at 64)";
    PAYEE_FRAUD_SHARE_24H: Float = "payee_fraud_share_24h", "payee_reports_24h / transfers into this payee in the 8-9 days they can name (reports assumed within 7 days of their transfer); 0 with no transfers, at most 1";
    PAYEE_FRAUD_SHARE_7D: Float = "payee_fraud_share_7d", "payee_reports_7d / transfers into this payee in the 14-15 days they can name; 0 with no transfers, at most 1";
    PAYEE_FRAUD_SHARE_30D: Float = "payee_fraud_share_30d", "payee_reports_30d / transfers into this payee in the 37-38 days they can name; 0 with no transfers, at most 1";
    DEVICE_DISTINCT_ACCOUNTS_24H: Int = "device_distinct_accounts_24h", "distinct sender accounts on this device in the previous 24 hours";
    DEVICE_COUNT_1H: Int = "device_count_1h", "transfers from this device in the previous hour (5-minute buckets: 55-60 min)";
}

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
            (Value::Bool(_), Kind::Bool) | (Value::Int(_), Kind::Int) | (Value::Float(_), Kind::Float)
        )));
        FeatureVector { values }
    }
    /// Every feature at its zero: false, 0, 0.0. With [`FeatureVector::with`], this
    /// builds the vectors rule tests and benches evaluate.
    pub fn zeroed() -> Self {
        let mut values = [Value::Int(0); N_FEATURES];
        for (v, d) in values.iter_mut().zip(SCHEMA) {
            *v = match d.kind {
                Kind::Bool => Value::Bool(false),
                Kind::Int => Value::Int(0),
                Kind::Float => Value::Float(0.0),
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
    #[inline]
    pub fn get(&self, i: usize) -> Value {
        self.values[i]
    }
    #[inline]
    pub fn feature(&self, f: F) -> Value {
        self.values[f as usize]
    }
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

/// Minutes from `since` to `now`, capped at [`MINUTES_CAP`]; `None` means never.
#[inline]
fn minutes_since(now: EventTime, since: Option<EventTime>) -> i64 {
    match since {
        Some(s) => ((now.millis() - s.millis()).max(0) / 60_000).min(MINUTES_CAP),
        None => MINUTES_CAP,
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

/// Mean won per transfer, 0 with no transfers (integer won, like the sums).
#[inline]
fn mean(sum: i64, count: i64) -> i64 {
    if count > 0 {
        sum / count
    } else {
        0
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

/// The features of `t`, from the state as it was before `t`.
pub fn compute(t: &Transfer, seen: &Observed) -> FeatureVector {
    use Value::{Bool, Float, Int};
    let now = t.tran_dtime;
    let amount = t.tran_amt.get();
    let a = &seen.account;
    let p = &seen.payee;
    let hour = now.kst_hour();
    let mean_30d = mean(a.sums[4], a.counts[4]);
    let device_age = match (&t.device_id, a.device_first_seen) {
        // No device sent (open-banking partners): nothing to judge it by.
        (None, _) => MINUTES_CAP,
        // The account's first use of this device is this transfer.
        (Some(_), None) => 0,
        (Some(_), first) => minutes_since(now, first),
    };
    let (dev_accounts, dev_count) = seen.device.map_or((0, 0), |d| (d.distinct_accounts_24h, d.count_1h));
    FeatureVector::from_values([
        Int(amount),
        Int(i64::from(hour)),
        Bool(hour < 6),
        Bool(now.kst_weekday() >= 5),
        Bool(t.channel == Channel::MobileApp),
        Bool(t.channel == Channel::InternetBanking),
        Bool(t.channel == Channel::OpenBanking),
        Bool(t.transfer_purpose == TransferPurpose::Payment),
        Int(a.counts[0]),
        Int(a.counts[1]),
        Int(a.counts[2]),
        Int(a.counts[3]),
        Int(a.counts[4]),
        Int(a.sums[0]),
        Int(a.sums[1]),
        Int(a.sums[2]),
        Int(a.sums[3]),
        Int(a.sums[4]),
        Int((now.millis() - a.first_seen.millis()).max(0) / 86_400_000),
        Int(a.lifetime_count as i64),
        Float(ratio(amount, mean_30d)),
        Float(ratio(amount, mean(a.sums[2], a.counts[2]))),
        Float(ratio(amount, mean(a.sums[3], a.counts[3]))),
        Float(ratio(amount, a.max_amount)),
        Float(a.amount_log_zscore(amount)),
        Bool(!a.payee_known),
        Int(a.known_payees),
        Int(a.new_payees_24h),
        Int(device_age),
        Int(minutes_since(now, a.last_cert_reissue)),
        Int(minutes_since(now, a.last_device_registered)),
        Int(minutes_since(now, a.last_phone_change)),
        Int(minutes_since(now, a.last_remote_app)),
        Int(minutes_since(now, a.last_limit_raised)),
        Int(minutes_since(now, a.last_ekyc)),
        Int(minutes_since(now, a.last_hold)),
        Int(a.failed_logins_1h),
        Int(p.distinct_senders_1h),
        Int(p.distinct_senders_24h),
        Int(p.in_count_24h),
        Int(p.in_sum_24h),
        Int(p.in_count_7d),
        Int(p.in_count_30d),
        Int(minutes_since(now, Some(p.first_seen))),
        Int(p.fraud_reports),
        Int(minutes_since(now, p.last_report)),
        Int(p.recent_reports[0]),
        Int(p.recent_reports[1]),
        Int(p.recent_reports[2]),
        Float(fraud_share(p.recent_reports[0], p.reportable_transfers[0])),
        Float(fraud_share(p.recent_reports[1], p.reportable_transfers[1])),
        Float(fraud_share(p.recent_reports[2], p.reportable_transfers[2])),
        Int(dev_accounts),
        Int(dev_count),
    ])
}
