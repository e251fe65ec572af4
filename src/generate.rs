//! Synthetic traffic: a deterministic, labelled stream of Korean bank transfers.
//!
//! This module owns the generator behind `fds generate`, the demo replay and the
//! tests that need realistic traffic. Real fraud data cannot leave a bank, so the
//! engine is developed and measured against traffic that has the same shape:
//! genuine habits (regular payees, rent days, salary day, shopping, a daily and a
//! weekly rhythm), the context events around them (logins, certificates, phone
//! upgrades), the confusers that make naive rules noisy (merchants and apartment
//! management offices that receive from thousands of senders, club dues and
//! wedding or funeral money that many people send one person within hours,
//! legitimate certificate re-issues and phone upgrades, large first-time
//! deposits), and four fraud typologies (five label strings: a mule's onward
//! transfers are labelled apart from the victims' transfers into it) whose
//! transfers are labelled, late, as real reports are.
//!
//! Guarantees:
//! - **Determinism.** The same [`GeneratorConfig`] gives byte-identical output on
//!   every run and machine. All randomness comes from ChaCha8 streams seeded by
//!   the config; nothing iterates a hash map; sampling uses only IEEE basic
//!   arithmetic (own `exp`/`ln`, no platform libm), so no float rounding differs
//!   between machines; only integer won and integer times are written.
//! - **Time order.** Lines are ordered by event time (whole seconds); ties are
//!   broken by sender account and then generation order (labels last), so events
//!   of one account that depend on each other (login, then transfer) keep their
//!   order. `bank_tran_id` sequence numbers are assigned in output order.
//! - **Bounded memory.** Traffic is built one KST day at a time: that day's
//!   records are generated into compact fixed-size structs, sorted and written;
//!   only records dated later (labels, the tail of an incident that crosses
//!   midnight, later loan-fraud payments) are kept. Per-account data is a small
//!   `Copy` struct; account numbers, names and device ids are derived from
//!   indices when a line is written, never stored.
//! - Every fraudulent transfer gets a `fraud` [`Label`] 1–10 days later (labels
//!   after the last day of traffic are still written, in time order, at the end).
//!   Transfers that would fall after the last day are not generated, and neither
//!   are their labels.
//!
//! Typologies (the `typology` string on the label):
//! - `voice_phishing` (보이스피싱): a caller talks an established, often older,
//!   customer into installing an app. Either a new device is registered, or a
//!   remote-control app is detected on the victim's own phone; a certificate is
//!   re-issued (sometimes issued) within minutes, sometimes the transfer limit is
//!   raised, then 3–40 minutes after the certificate one to four large transfers
//!   (1M–30M won, split ones just under round limits such as 9,990,000) go to a
//!   payee the victim never used: a mule account.
//! - `account_takeover` (계정탈취): failed logins from an unknown device, a phone
//!   number change, a new device registration and a successful login, then, often
//!   at night, two to five transfers within an hour that drain most of the
//!   account's typical balance to one or two mule accounts (a fifth of them
//!   through an open-banking app the fraudster linked).
//! - `mule_fan_in` (대포통장, 입금): a fake seller or smishing campaign. One mule
//!   account receives from five to fifteen unrelated victims within hours; the
//!   victims' own behaviour is ordinary (own device, moderate amounts), only the
//!   payee is new to them and busy.
//! - `mule_fan_out` (대포통장, 출금): the mule itself, as a sender, forwards the
//!   money onward within minutes, from a device the fraud ring shares between
//!   mules, to collector accounts that many mules pay (or to another mule).
//!   Fan-out follows every fan-in campaign (per about four receipts) and, with
//!   [`GeneratorConfig::fan_out_probability`], voice-phishing and takeover
//!   receipts. It has its own typology because the signal is on the sender side
//!   (a days-old account, a shared device) rather than the payee side.
//! - `loan_fraud` (대출사기, advance fee): the victim pays two to four "fees"
//!   (guarantee fee, credit-upgrade fee: 300,000–3,000,000 won) over hours or
//!   days to a payee named like a person, from their own device and usual
//!   channel, with no preceding account changes. The payees are a small pool of
//!   "loan company" accounts at other banks, each collecting from a few victims
//!   over days rather than many within hours. Deliberately low signal.
//!
//! Voice phishing, takeovers and fan-in campaigns draw payees from one pool of
//! mule accounts: recently opened accounts (with `ekyc_completed` when the
//! opening falls in the window), taken over by the ring (its device registered,
//! a login) the evening before or the morning of their first active day, each
//! active for one to four days and reused across victims and typologies, so a
//! report on a mule makes later transfers to it riskier. A small share of
//! genuine transfers is falsely reported as fraud and `cleared` some days later.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use chrono::{Datelike, NaiveDate};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::event::{
    Certificate, CertificateAction, Channel, DeviceRegistered, EkycCompleted, Event, EventTime, Label, LabelStatus,
    LimitRaised, Login, PhoneChanged, RemoteAppDetected, SchemaVersion, Transfer, TransferPurpose, Won,
};

/// Why traffic could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The configuration is out of range; nothing was written.
    #[error("invalid generator config: {0}")]
    Config(String),
    /// The run would need more transfer ids or records than the formats allow.
    #[error("generator capacity exceeded: {0}")]
    Capacity(String),
    /// Writing to the output failed.
    #[error("writing generated events: {0}")]
    Io(#[from] std::io::Error),
}

/// What to generate. Fraud intensity is given per 10,000 accounts per day so a
/// small demo and a million-account run have the same fraud rate.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Sender accounts (100 to 10,000,000).
    pub accounts: u32,
    /// Days of traffic (1 to 366).
    pub days: u32,
    /// First day of traffic, midnight KST.
    pub start: NaiveDate,
    /// Voice-phishing victims per 10,000 accounts per weekday (fewer on weekends).
    pub voice_phishing_per_10k: f64,
    /// Account takeovers per 10,000 accounts per day.
    pub account_takeover_per_10k: f64,
    /// Mule fan-in campaigns (each with 5–15 victims) per 10,000 accounts per day.
    pub mule_campaigns_per_10k: f64,
    /// Advance-fee loan fraud victims per 10,000 accounts per weekday.
    pub loan_fraud_per_10k: f64,
    /// Probability that a mule forwards a voice-phishing or takeover receipt
    /// onward (fan-in campaign receipts are always forwarded).
    pub fan_out_probability: f64,
    /// Share of genuine transfers that are falsely reported, then cleared.
    pub false_report_rate: f64,
}

impl Default for GeneratorConfig {
    /// A small demo: one Monday of 20,000 accounts, about 28,000 transfers of
    /// which roughly 0.5% are fraud across all typologies.
    fn default() -> Self {
        GeneratorConfig {
            seed: 7,
            accounts: 20_000,
            days: 1,
            start: NaiveDate::from_ymd_opt(2026, 11, 2).expect("valid date"),
            voice_phishing_per_10k: 8.0,
            account_takeover_per_10k: 4.0,
            mule_campaigns_per_10k: 1.5,
            loan_fraud_per_10k: 5.0,
            fan_out_probability: 0.35,
            false_report_rate: 0.0002,
        }
    }
}

impl GeneratorConfig {
    /// Check every field; the generator never panics on a bad config.
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: String| Err(GenerateError::Config(m));
        if !(100..=MAX_ACCOUNTS).contains(&self.accounts) {
            return bad(format!("accounts must be 100..={MAX_ACCOUNTS}, got {}", self.accounts));
        }
        if !(1..=MAX_DAYS).contains(&self.days) {
            return bad(format!("days must be 1..={MAX_DAYS}, got {}", self.days));
        }
        if u64::from(self.accounts) * u64::from(self.days) > MAX_ACCOUNT_DAYS {
            return bad(format!(
                "accounts x days must be at most {MAX_ACCOUNT_DAYS}, got {}",
                u64::from(self.accounts) * u64::from(self.days)
            ));
        }
        if !(2000..=2999).contains(&self.start.year()) {
            return bad(format!("start must be in the years 2000..=2999, got {}", self.start));
        }
        for (name, v) in [
            ("voice_phishing_per_10k", self.voice_phishing_per_10k),
            ("account_takeover_per_10k", self.account_takeover_per_10k),
            ("mule_campaigns_per_10k", self.mule_campaigns_per_10k),
            ("loan_fraud_per_10k", self.loan_fraud_per_10k),
        ] {
            if !(v.is_finite() && (0.0..=MAX_PER_10K).contains(&v)) {
                return bad(format!("{name} must be 0..={MAX_PER_10K}, got {v}"));
            }
        }
        if !(self.fan_out_probability.is_finite() && (0.0..=1.0).contains(&self.fan_out_probability)) {
            return bad(format!("fan_out_probability must be 0..=1, got {}", self.fan_out_probability));
        }
        if !(self.false_report_rate.is_finite() && (0.0..=0.1).contains(&self.false_report_rate)) {
            return bad(format!("false_report_rate must be 0..=0.1, got {}", self.false_report_rate));
        }
        Ok(())
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateSummary {
    /// Lines written.
    pub events: u64,
    pub transfers: u64,
    /// Logins, device, certificate, phone, remote-app, limit and eKYC events.
    pub context_events: u64,
    /// All label lines: fraud reports (true and false) and clearances.
    pub labels: u64,
    /// Transfers that are really fraud (each has a `fraud` label).
    pub fraud_transfers: u64,
    /// Genuine transfers reported as fraud and later cleared.
    pub false_reports: u64,
    /// Fraud transfers per typology.
    pub frauds_by_typology: BTreeMap<String, u64>,
    pub bytes: u64,
    /// Time of the first and last line (the last is usually a late label).
    pub first_time: Option<EventTime>,
    pub last_time: Option<EventTime>,
}

/// Generate traffic for `cfg` into `out` as JSON lines.
pub fn generate<W: Write>(cfg: &GeneratorConfig, out: W) -> Result<GenerateSummary, GenerateError> {
    generate_with_progress(cfg, out, &mut |_| {})
}

/// As [`generate`], calling `progress` with the number of lines written so far
/// after every block of output (and once at the end).
pub fn generate_with_progress<W: Write>(
    cfg: &GeneratorConfig,
    mut out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<GenerateSummary, GenerateError> {
    cfg.validate()?;
    let mut g = Generator::new(cfg);
    let mut w = Writer::new();
    for day in 0..cfg.days {
        g.day(day);
        if g.sink.overflow {
            return Err(GenerateError::Capacity("more than 4 billion records".into()));
        }
        let day_end = (day + 1) * DAY;
        w.write_until(&g.world, &mut g.sink.recs, Some(day_end), &mut out, progress)?;
    }
    w.write_until(&g.world, &mut g.sink.recs, None, &mut out, progress)?;
    out.flush()?;
    progress(w.summary.events);
    Ok(w.summary)
}

// ---------------------------------------------------------------------------
// Limits and id spaces
// ---------------------------------------------------------------------------

const MAX_ACCOUNTS: u32 = 10_000_000;
const MAX_DAYS: u32 = 366;
/// Keeps transfer sequence numbers within the 9 digits of `bank_tran_id` and
/// record numbers within u32 (about 1.5 transfers and 3 records per account-day).
const MAX_ACCOUNT_DAYS: u64 = 100_000_000;
const MAX_PER_10K: f64 = 500.0;
const DAY: u32 = 86_400;
const HOUR: u32 = 3_600;
const MIN: u32 = 60;

// Payee ids. Every payee (bank code + account number) is derived from a u32 id
// below 10^9, and the 9-digit core of its account number is a bijection of the
// id, so distinct ids never collide. Ids below the account count are the
// generated sender accounts themselves (family members, and mules receiving).
const EXT_BASE: u32 = 10_000_000;
const EXT_END: u32 = 800_000_000;
const OFFICE_BASE: u32 = 800_000_000;
const MERCHANT_BASE: u32 = 810_000_000;
const COLLECTOR_BASE: u32 = 820_000_000;
const LOAN_BASE: u32 = 830_000_000;

// Device keys: 0 = none; genuine = account * 8 + slot + 1; fraud >= FRAUD_DEVICE.
const FRAUD_DEVICE: u32 = 0xF000_0000;
const FRESH_FRAUD_DEVICE: u32 = 0xF100_0000;
const SLOT_PC: u32 = 6;
const SLOT_TABLET: u32 = 7;

/// What a record becomes when written, with the one detail only that kind
/// of event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecKind {
    /// A transfer; `labelled` when a label will name it, so the writer keeps
    /// the id it gives the transfer until the label is written.
    Transfer {
        labelled: bool,
    },
    Login {
        success: bool,
    },
    DeviceRegistered,
    Certificate(CertificateAction),
    PhoneChanged,
    /// A remote-control app detected: an index into [`REMOTE_APPS`].
    RemoteApp {
        app: u8,
    },
    LimitRaised,
    Ekyc,
    Label(LabelStatus),
}

/// The fraud typology a transfer belongs to (and a label claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Typology {
    Genuine,
    VoicePhishing,
    AccountTakeover,
    MuleFanIn,
    MuleFanOut,
    LoanFraud,
}

impl Typology {
    /// Every fraud typology, in the order reports list them.
    #[cfg(test)]
    const FRAUD: [Typology; 5] = [
        Typology::VoicePhishing,
        Typology::AccountTakeover,
        Typology::MuleFanIn,
        Typology::MuleFanOut,
        Typology::LoanFraud,
    ];

    /// The `typology` string of a label (empty for genuine transfers).
    fn label(self) -> &'static str {
        match self {
            Typology::Genuine => "",
            Typology::VoicePhishing => "voice_phishing",
            Typology::AccountTakeover => "account_takeover",
            Typology::MuleFanIn => "mule_fan_in",
            Typology::MuleFanOut => "mule_fan_out",
            Typology::LoanFraud => "loan_fraud",
        }
    }
}

// Profile flags.
const F_OLDER: u8 = 1;
const F_TABLET: u8 = 2;
const F_MULE: u8 = 4;
const F_NEW: u8 = 8;
const F_VICTIM: u8 = 16;
const F_PC: u8 = 32;

// ---------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------

struct Bank {
    code: &'static str,
    /// Share among ordinary people's accounts.
    weight: u32,
    /// Share among mule accounts: internet-only banks open accounts remotely.
    mule_weight: u32,
    prefix: &'static str,
    len: usize,
}

const BANKS: [Bank; 9] = [
    Bank { code: "004", weight: 20, mule_weight: 10, prefix: "", len: 14 }, // KB국민
    Bank { code: "088", weight: 16, mule_weight: 8, prefix: "110", len: 12 }, // 신한
    Bank { code: "020", weight: 12, mule_weight: 8, prefix: "1002", len: 13 }, // 우리
    Bank { code: "081", weight: 11, mule_weight: 8, prefix: "", len: 14 },  // 하나
    Bank { code: "011", weight: 14, mule_weight: 8, prefix: "3", len: 13 }, // NH농협
    Bank { code: "003", weight: 7, mule_weight: 4, prefix: "", len: 14 },   // IBK기업
    Bank { code: "090", weight: 12, mule_weight: 30, prefix: "3333", len: 13 }, // 카카오뱅크
    Bank { code: "089", weight: 3, mule_weight: 12, prefix: "100", len: 12 }, // 케이뱅크
    Bank { code: "092", weight: 5, mule_weight: 12, prefix: "100", len: 12 }, // 토스뱅크
];

/// Surnames with rough frequencies (per mille of the population).
const SURNAMES: [(&str, u32); 42] = [
    ("김", 215),
    ("이", 147),
    ("박", 84),
    ("최", 47),
    ("정", 43),
    ("강", 23),
    ("조", 21),
    ("윤", 20),
    ("장", 20),
    ("임", 17),
    ("한", 15),
    ("오", 15),
    ("서", 15),
    ("신", 14),
    ("권", 14),
    ("황", 14),
    ("안", 13),
    ("송", 13),
    ("류", 12),
    ("전", 11),
    ("홍", 11),
    ("고", 9),
    ("문", 9),
    ("양", 9),
    ("손", 9),
    ("배", 8),
    ("백", 8),
    ("허", 6),
    ("유", 6),
    ("남", 5),
    ("심", 5),
    ("노", 5),
    ("하", 4),
    ("곽", 4),
    ("성", 4),
    ("차", 4),
    ("주", 4),
    ("우", 4),
    ("구", 4),
    ("민", 3),
    ("진", 3),
    ("나", 3),
];

const GIVEN: [&str; 50] = [
    "민", "서", "지", "현", "준", "우", "영", "수", "예", "하", "윤", "은", "도", "재", "정", "승", "연", "진", "희",
    "성", "호", "혜", "경", "동", "상", "태", "유", "주", "나", "아", "원", "채", "시", "건", "훈", "석", "철", "숙",
    "자", "순", "미", "옥", "기", "용", "광", "명", "혁", "빈", "린", "율",
];

/// Large merchants and billers, most popular first (payments go to them with
/// purpose `ST` from a large share of all accounts: legitimate fan-in).
const MERCHANTS: [&str; 24] = [
    "쿠팡(주)",
    "네이버파이낸셜(주)",
    "(주)카카오페이",
    "토스페이먼츠(주)",
    "(주)우아한형제들",
    "(주)지마켓",
    "11번가(주)",
    "(주)무신사",
    "(주)컬리",
    "(주)에스에스지닷컴",
    "씨제이올리브영(주)",
    "당근페이(주)",
    "(주)위대한상상",
    "(주)야놀자",
    "(주)케이지이니시스",
    "엔에이치엔케이씨피(주)",
    "(주)다날",
    "한국전력공사",
    "서울도시가스(주)",
    "(주)케이티",
    "에스케이텔레콤(주)",
    "(주)엘지유플러스",
    "(주)인터파크트리플",
    "(주)여기어때컴퍼니",
];
const SHOP_PREFIX: [&str; 12] =
    ["하늘", "바다", "초록", "행복", "다온", "미소", "소담", "온누리", "한빛", "새봄", "푸른", "별빛"];
const SHOP_SUFFIX: [&str; 8] = ["상회", "마켓", "샵", "스토어", "공방", "유통", "푸드", "농원"];
const APT_BRANDS: [&str; 12] = [
    "래미안",
    "자이",
    "힐스테이트",
    "푸르지오",
    "e편한세상",
    "아이파크",
    "롯데캐슬",
    "더샵",
    "SK뷰",
    "두산위브",
    "호반써밋",
    "센트레빌",
];
const REMOTE_APPS: [&str; 5] =
    ["TeamViewer QuickSupport", "AnyDesk", "RemoteCall", "RemoteView", "Chrome Remote Desktop"];

/// Institution codes for `bank_tran_id`: the bank's own app, its internet
/// banking, then open-banking partners (fintech apps).
const INSTITUTIONS: [&str; 8] =
    ["120220001", "120220002", "199160010", "199160023", "199160031", "199160045", "199160052", "199160068"];
const INST_MOBILE: u8 = 0;
const INST_INTERNET: u8 = 1;
const INST_PARTNERS: u32 = 6;

/// Relative transfer volume per KST hour (weekday, weekend): quiet 01–06, peaks
/// at lunch and in the evening; weekends start later and are flatter.
const HOURS_WEEKDAY: [u32; 24] =
    [6, 3, 2, 1, 1, 2, 6, 15, 25, 35, 40, 45, 60, 50, 40, 40, 40, 45, 55, 60, 60, 55, 40, 20];
const HOURS_WEEKEND: [u32; 24] =
    [10, 6, 3, 2, 1, 1, 3, 6, 12, 22, 32, 40, 48, 45, 42, 40, 40, 42, 48, 52, 52, 48, 36, 20];
/// Business hours, for reports and daytime fraud.
const HOURS_OFFICE: [u32; 24] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 45, 45, 25, 35, 45, 45, 40, 30, 10, 0, 0, 0, 0, 0];
/// Night-heavy, for account takeovers.
const HOURS_NIGHT: [u32; 24] = [40, 45, 45, 40, 35, 25, 8, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 6, 8, 10, 15, 25];

/// Day-of-week volume factor, Monday first.
const WEEKDAY_FACTOR: [f64; 7] = [1.05, 1.0, 1.0, 1.0, 1.12, 0.85, 0.7];

// ---------------------------------------------------------------------------
// Deterministic numerics (no platform libm anywhere)
// ---------------------------------------------------------------------------

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of (salt, a, b): how per-entity facts are derived without storing them.
fn h3(salt: u64, a: u64, b: u64) -> u64 {
    mix64(mix64(salt ^ a).wrapping_add(b.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
}

/// Uniform in [0, 1) from 53 bits of a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `e^x` from basic IEEE operations only, so results are identical everywhere.
fn det_exp(x: f64) -> f64 {
    let x = x.clamp(-700.0, 700.0);
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * 0.693_147_180_369_123_8) - k * 1.908_214_929_270_587_7e-10;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=16 {
        term *= r / f64::from(n);
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// Natural log from basic IEEE operations only (for positive, normal `x`).
fn det_ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut pow = s;
    let mut sum = 0.0;
    for k in 0..14 {
        sum += pow / f64::from(2 * k + 1);
        pow *= s2;
    }
    2.0 * sum + e as f64 * std::f64::consts::LN_2
}

/// Approximately standard normal (Irwin–Hall of four uniforms, tails cut at ±3.5).
fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let a = rng.next_u64();
    let b = rng.next_u64();
    let u = |v: u64| v as f64 * (1.0 / 4_294_967_296.0);
    let s = u(a & 0xFFFF_FFFF) + u(a >> 32) + u(b & 0xFFFF_FFFF) + u(b >> 32);
    (s - 2.0) * 1.732_050_807_568_877_2
}

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    rng.gen::<f64>()
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

/// Uniform integer in `lo..=hi` (u32 only: `usize` sampling differs by platform).
fn between(rng: &mut ChaCha8Rng, lo: u32, hi: u32) -> u32 {
    rng.gen_range(lo..=hi)
}

/// Log-uniform between `lo` and `hi`.
fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo * det_exp(uniform(rng) * det_ln(hi / lo))
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = det_exp(-lambda);
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= uniform(rng);
        if p <= limit || k >= 60 {
            return k;
        }
        k += 1;
    }
}

/// `floor(x)` plus one with probability `frac(x)`: low-variance incident counts.
fn round_random(rng: &mut ChaCha8Rng, x: f64) -> u32 {
    let whole = x.floor();
    whole as u32 + u32::from(chance(rng, x - whole))
}

fn pick_weighted(weights: &[u32], mut r: u32) -> usize {
    let total: u32 = weights.iter().sum();
    r %= total.max(1);
    for (i, &w) in weights.iter().enumerate() {
        if r < w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

/// Round an amount the way people type it: mostly to 10,000 or 1,000 won,
/// large ones to 100,000; a few exact (splitting a bill).
fn round_won(rng: &mut ChaCha8Rng, x: f64) -> u32 {
    let x = x.clamp(1_000.0, 2_000_000_000.0);
    let u = between(rng, 0, 99);
    let unit: f64 = if x >= 1_000_000.0 {
        if u < 70 {
            100_000.0
        } else {
            10_000.0
        }
    } else if x >= 10_000.0 {
        if u < 55 {
            10_000.0
        } else if u < 90 {
            1_000.0
        } else {
            10.0
        }
    } else if u < 75 {
        1_000.0
    } else {
        100.0
    };
    ((x / unit).round().max(1.0) * unit) as u32
}

fn round_to(x: f64, unit: f64) -> u32 {
    ((x / unit).round().max(1.0) * unit).min(2_000_000_000.0) as u32
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// One event before rendering: 40 bytes, so a million-account day fits in
/// about 100 MB. Which fields mean what depends on `kind`.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// Seconds since the first day's midnight KST.
    t: u32,
    /// Sender account index (`u32::MAX` for labels).
    account: u32,
    /// Generation order: the last tie-breaker, and how labels find their transfer.
    ord: u32,
    /// Transfer amount or new limit, won.
    amount: u32,
    device: u32,
    /// Payee id (transfers and labels).
    payee: u32,
    /// Labels: `ord` of the reported transfer.
    link: u32,
    /// IPv4 address, 0 = none.
    ip: u32,
    kind: RecKind,
    channel: Channel,
    purpose: TransferPurpose,
    /// Institution index for `bank_tran_id`.
    inst: u8,
    typology: Typology,
}

impl Default for Rec {
    /// Zeros, and a genuine mobile-app transfer: every record pushed names
    /// its own kind, so only the fields a kind leaves unset keep these.
    fn default() -> Self {
        Rec {
            t: 0,
            account: 0,
            ord: 0,
            amount: 0,
            device: 0,
            payee: 0,
            link: 0,
            ip: 0,
            kind: RecKind::Transfer { labelled: false },
            channel: Channel::MobileApp,
            purpose: TransferPurpose::Transfer,
            inst: 0,
            typology: Typology::Genuine,
        }
    }
}

struct Sink {
    recs: Vec<Rec>,
    next_ord: u32,
    /// End of the traffic window: later non-label records are not generated.
    end: u32,
    overflow: bool,
}

impl Sink {
    fn push(&mut self, mut r: Rec) -> Option<u32> {
        if !matches!(r.kind, RecKind::Label(_)) && r.t >= self.end {
            return None;
        }
        r.ord = self.next_ord;
        match self.next_ord.checked_add(1) {
            Some(n) => self.next_ord = n,
            None => self.overflow = true,
        }
        self.recs.push(r);
        Some(r.ord)
    }

    fn context(&mut self, kind: RecKind, t: u32, account: u32, device: u32, ip: u32) {
        self.push(Rec { t, account, device, ip, kind, ..Rec::default() });
    }
}

// ---------------------------------------------------------------------------
// The world: everything derived from the config and indices
// ---------------------------------------------------------------------------

/// Facts about ids that are derived, not stored: names, account numbers,
/// devices. Shared by generation and rendering.
struct World {
    accounts: u32,
    /// Accounts below this index are established; the rest were opened
    /// recently (genuine newcomers and mules).
    n_old: u32,
    n_offices: u32,
    n_shops: u32,
    n_collectors: u32,
    /// Accounts advance-fee fraudsters collect "fees" into.
    n_loan_payees: u32,
    n_ring_devices: u32,
    /// Epoch seconds of the first day's midnight KST.
    base: i64,
    salt_payee: u64,
    salt_name: u64,
    salt_device: u64,
    salt_profile: u64,
    core_offset: u64,
    bank_cum: Vec<u32>,
    mule_bank_cum: Vec<u32>,
}

impl World {
    fn new(cfg: &GeneratorConfig) -> Self {
        let a = cfg.accounts;
        let n_new = (a / 100).max(12);
        let s = mix64(cfg.seed ^ 0x5EED_F00D);
        let midnight = cfg.start.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        World {
            accounts: a,
            n_old: a - n_new,
            n_offices: (a / 300).max(4),
            n_shops: (a / 40).max(20),
            n_collectors: (a / 5_000).max(3),
            n_loan_payees: (a / 500).max(5),
            n_ring_devices: (a / 4_000).max(3),
            base: midnight.timestamp() - 9 * 3_600,
            salt_payee: h3(s, 1, 0),
            salt_name: h3(s, 2, 0),
            salt_device: h3(s, 3, 0),
            salt_profile: h3(s, 4, 0),
            core_offset: h3(s, 5, 0) % 1_000_000_000,
            bank_cum: BANKS.iter().map(|b| b.weight).collect(),
            mule_bank_cum: BANKS.iter().map(|b| b.mule_weight).collect(),
        }
    }

    fn is_mule_id(&self, payee: u32) -> bool {
        payee >= self.n_old && payee < self.accounts
    }

    fn bank_of(&self, payee: u32) -> usize {
        let h = h3(self.salt_payee, u64::from(payee), 1);
        let fraudulent = self.is_mule_id(payee) || payee >= COLLECTOR_BASE;
        let weights = if fraudulent { &self.mule_bank_cum } else { &self.bank_cum };
        pick_weighted(weights, (h >> 32) as u32)
    }

    fn account_number(&self, payee: u32, bank: &Bank) -> String {
        // 3^18 is coprime to 10^9, so this is a bijection on 9-digit cores.
        let core = (u64::from(payee) * 387_420_489 + self.core_offset) % 1_000_000_000;
        let mut s = String::with_capacity(bank.len);
        s.push_str(bank.prefix);
        let filler = bank.len - bank.prefix.len() - 9;
        let mut h = h3(self.salt_payee, u64::from(payee), 2);
        for _ in 0..filler {
            s.push(char::from(b'0' + (h % 10) as u8));
            h /= 10;
        }
        s.push_str(&format!("{core:09}"));
        s
    }

    fn person_name(&self, id: u64) -> String {
        let h = h3(self.salt_name, id, 0);
        let weights: [u32; 42] = std::array::from_fn(|i| SURNAMES[i].1);
        let mut s = String::with_capacity(9);
        s.push_str(SURNAMES[pick_weighted(&weights, h as u32)].0);
        s.push_str(GIVEN[((h >> 32) % 50) as usize]);
        if (h >> 40) % 100 >= 6 {
            s.push_str(GIVEN[((h >> 48) % 50) as usize]);
        }
        s
    }

    fn payee_name(&self, payee: u32) -> String {
        if payee >= COLLECTOR_BASE {
            self.person_name(u64::from(payee))
        } else if payee >= MERCHANT_BASE {
            let k = payee - MERCHANT_BASE;
            if (k as usize) < MERCHANTS.len() {
                MERCHANTS[k as usize].to_owned()
            } else {
                let h = h3(self.salt_name, u64::from(payee), 1);
                format!("{}{}", SHOP_PREFIX[(h % 12) as usize], SHOP_SUFFIX[((h >> 8) % 8) as usize])
            }
        } else if payee >= OFFICE_BASE {
            let h = h3(self.salt_name, u64::from(payee), 2);
            format!("{}{}단지 관리사무소", APT_BRANDS[(h % 12) as usize], 1 + (h >> 8) % 9)
        } else {
            self.person_name(u64::from(payee))
        }
    }

    fn device_id(&self, key: u32) -> String {
        format!("D{:016x}", mix64(u64::from(key) ^ self.salt_device))
    }

    fn home_device(account: u32, gen: u8) -> u32 {
        account * 8 + u32::from(gen % 6) + 1
    }

    fn slot_device(account: u32, slot: u32) -> u32 {
        account * 8 + slot + 1
    }

    fn home_ip(&self, account: u32) -> u32 {
        0xC0A8_0000 | (h3(self.salt_device, u64::from(account), 7) as u32 & 0xFFFF)
    }

    fn time(&self, t: u32) -> EventTime {
        EventTime::from_secs(self.base + i64::from(t))
    }
}

fn fintech_use_num(account: u32) -> String {
    format!("1202200{account:017}")
}

/// Open-banking style: institution code, "U", a 9-digit sequence (20 chars).
fn tran_id(inst: u8, seq: u64) -> String {
    format!("F{}U{seq:09}", INSTITUTIONS[usize::from(inst)])
}

fn ip_string(ip: u32) -> String {
    let [a, b, c, d] = ip.to_be_bytes();
    format!("{a}.{b}.{c}.{d}")
}

/// A mobile session address: carrier NAT (10/8), or for a few travellers and
/// VPN users a documentation range, so an "unusual IP range" rule stays noisy.
fn mobile_ip(rng: &mut ChaCha8Rng) -> u32 {
    let r = rng.next_u32();
    if r % 1000 < 3 {
        0xC633_6400 | (r >> 24) // 198.51.100.x
    } else {
        0x0A00_0000 | (r & 0x00FF_FFFF)
    }
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

/// One sender's habits. Copy and small: a million of these is about 32 MB.
#[derive(Debug, Clone, Copy)]
struct Profile {
    /// ln of the median amount sent to regular payees.
    mu: f32,
    sigma: f32,
    /// Transfers per day.
    rate: f32,
    /// When the account was opened (seconds relative to the window; negative =
    /// before it).
    open_t: i64,
    /// Monthly rent to a landlord, won (0 = none).
    rent_won: u32,
    /// Base monthly apartment management fee, won (0 = none).
    fee_won: u32,
    rent_day: u8,
    fee_day: u8,
    /// Percent of transfers that are shopping payments.
    shop_pct: u8,
    n_payees: u8,
    flags: u8,
    /// Current phone generation (increments on phone upgrades).
    gen: u8,
    channel: Channel,
    /// Open-banking partner used by this account.
    partner: u8,
}

struct Mule {
    account: u32,
    first_day: u32,
    last_day: u32,
    ring_device: u32,
    /// When the fraud ring took the account over (device registered, login).
    takeover_t: i64,
}

struct Generator<'c> {
    cfg: &'c GeneratorConfig,
    world: World,
    profiles: Vec<Profile>,
    mules: Vec<Mule>,
    /// Fraud-ring IP addresses, shared across incidents.
    fraud_ips: Vec<u32>,
    next_fresh_device: u32,
    sink: Sink,
}

/// Facts about the day being generated.
struct DayInfo {
    start: u32,
    weekday: u32,
    day_of_month: u32,
    factor: f64,
}

impl<'c> Generator<'c> {
    fn new(cfg: &'c GeneratorConfig) -> Self {
        let world = World::new(cfg);
        let mut rng = stream(cfg.seed, 1, 0);
        let window_end = i64::from(cfg.days * DAY);
        let mut profiles = Vec::with_capacity(cfg.accounts as usize);
        for i in 0..cfg.accounts {
            profiles.push(new_profile(&world, &mut rng, i, window_end));
        }
        // Mules: a sixth of the recently opened accounts (at least two), so
        // each is used by several victims. Each is active for one to four days,
        // first days spread over the window. The ring takes the account over
        // the evening before its first day, or that morning; it was opened (in
        // the daytime) hours to three days before.
        let mut mules = Vec::new();
        for i in world.n_old..cfg.accounts {
            let h = h3(world.salt_profile, u64::from(i), 9);
            if h % 6 == 0 || (mules.len() < 2 && i + 2 >= cfg.accounts) {
                let first_day = ((h >> 8) % u64::from(cfg.days)) as u32;
                let life = 1 + ((h >> 20) % 4) as u32;
                let d0 = i64::from(first_day * DAY);
                let takeover_t = if (h >> 24) % 10 < 4 {
                    d0 + i64::from(9 * HOUR + (h >> 28) as u32 % (4 * HOUR))
                } else {
                    d0 - i64::from(HOUR + (h >> 28) as u32 % (20 * HOUR))
                };
                let opened = takeover_t - i64::from(HOUR) - ((h >> 40) % u64::from(3 * DAY)) as i64;
                let mut open_t = opened.div_euclid(i64::from(DAY)) * i64::from(DAY)
                    + i64::from(8 * HOUR + (h >> 52) as u32 % (13 * HOUR));
                if open_t > takeover_t - i64::from(30 * MIN) {
                    open_t -= i64::from(DAY);
                }
                let p = &mut profiles[i as usize];
                p.flags |= F_MULE;
                p.rate = 0.15;
                p.open_t = open_t;
                mules.push(Mule {
                    account: i,
                    first_day,
                    last_day: first_day + life - 1,
                    ring_device: FRAUD_DEVICE + ((h >> 50) as u32 % world.n_ring_devices),
                    takeover_t,
                });
            }
        }
        let fraud_ips = (0..48)
            .map(|_| {
                let r = rng.next_u32();
                match r % 4 {
                    0 => 0xCB00_7100 | (r >> 24),         // 203.0.113.x
                    1 => 0xC633_6400 | (r >> 24),         // 198.51.100.x
                    _ => 0x0A00_0000 | (r & 0x00FF_FFFF), // looks like any carrier NAT
                }
            })
            .collect();
        Generator {
            cfg,
            world,
            profiles,
            mules,
            fraud_ips,
            next_fresh_device: FRESH_FRAUD_DEVICE,
            sink: Sink { recs: Vec::new(), next_ord: 0, end: cfg.days * DAY, overflow: false },
        }
    }

    fn day(&mut self, index: u32) {
        let date = self.cfg.start + chrono::Days::new(u64::from(index));
        let weekday = date.weekday().num_days_from_monday();
        let dom = date.day();
        let mut factor = WEEKDAY_FACTOR[weekday as usize];
        let payday = salary_day(date);
        if dom == payday {
            factor *= 1.4;
        } else if dom == payday + 1 {
            factor *= 1.15;
        }
        let info = DayInfo { start: index * DAY, weekday, day_of_month: dom, factor };
        let mut rng = stream(self.cfg.seed, 2, index);
        // Before the per-account loop, so these use each sender's device as
        // it was at the start of the day (a phone upgrade later that day
        // does not make a transfer come from a phone not yet registered).
        self.social_day(&info, &mut rng);
        for i in 0..self.world.accounts {
            self.genuine_day(i, &info, &mut rng);
        }
        let mut frng = stream(self.cfg.seed, 3, index);
        self.fraud_day(&info, &mut frng);
    }

    // -- genuine traffic ----------------------------------------------------

    /// Legitimate fan-in between people, the confusers for mule rules: club
    /// dues (회비) paid to a treasurer on the club's day of the month, and
    /// congratulatory or condolence money (경조사비) sent to one person by many
    /// people within hours, most of whom never paid them before.
    fn social_day(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let (salt, n_old) = (self.world.salt_profile, self.world.n_old);
        for c in 0..(self.world.accounts / 40).max(1) {
            let h = h3(salt, u64::from(c), 20);
            if 1 + (h % 28) as u32 != day.day_of_month {
                continue;
            }
            let treasurer = EXT_BASE + ((h >> 8) % u64::from(EXT_END - EXT_BASE)) as u32;
            let dues = [20_000, 30_000, 50_000, 100_000][((h >> 50) % 4) as usize];
            for j in 0..8 + ((h >> 40) % 23) as u32 {
                let member = (h3(salt, u64::from(c), 1_000 + u64::from(j)) % u64::from(n_old)) as u32;
                if chance(rng, 0.8) {
                    let t = day.start + between(rng, 8 * HOUR, 23 * HOUR);
                    self.social_transfer(member, t, treasurer, dues, day.start, rng);
                }
            }
        }
        let per_day = if day.weekday >= 5 { 2.0 } else { 0.5 };
        let events = round_random(rng, f64::from(self.world.accounts) / 2_500.0 * per_day);
        for _ in 0..events {
            let recipient = random_stranger(rng);
            let t0 = sample_time(rng, &HOURS_OFFICE, day.start);
            for _ in 0..between(rng, 8, 40) {
                let sender = between(rng, 0, n_old - 1);
                let amount =
                    [30_000, 50_000, 50_000, 100_000, 100_000, 100_000, 200_000, 300_000][between(rng, 0, 7) as usize];
                let t = t0 + between(rng, 0, 6 * HOUR);
                self.social_transfer(sender, t, recipient, amount, day.start, rng);
            }
        }
    }

    fn social_transfer(&mut self, i: u32, t: u32, payee: u32, amount: u32, lo: u32, rng: &mut ChaCha8Rng) {
        let p = self.profiles[i as usize];
        let channel = self.pick_channel(&p, rng);
        self.genuine_transfer(i, &p, p.gen, t, payee, amount, channel, TransferPurpose::Transfer, lo, rng);
    }

    fn genuine_day(&mut self, i: u32, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let p = self.profiles[i as usize];
        let ds = day.start;
        let de = ds + DAY;
        if p.open_t >= i64::from(de) {
            return;
        }
        if p.flags & F_MULE != 0 {
            self.mule_takeover(i, ds, de, rng);
        }
        let mut lo = ds;
        if p.open_t >= i64::from(ds) {
            // Opened today: remote identity check, phone registered, certificate.
            let t = p.open_t as u32;
            let dev = World::home_device(i, p.gen);
            self.sink.context(RecKind::Ekyc, t, i, dev, 0);
            self.sink.context(RecKind::DeviceRegistered, t + between(rng, 20, 300), i, dev, 0);
            self.sink.context(RecKind::Certificate(CertificateAction::Issued), t + between(rng, 320, 900), i, dev, 0);
            lo = t + 1_000;
            if lo >= de {
                return;
            }
        }

        // Rare account events: at most one per account-day.
        let r = rng.next_u32();
        let mut upgrade_t = u32::MAX;
        let mut after: Option<(u32, bool)> = None; // (time, to a new payee)
        let mut acc = 0u32;
        let mut slot = |q: f64| {
            let from = acc;
            acc = acc.saturating_add((q * 4_294_967_296.0) as u32);
            r >= from && r < acc
        };
        if slot(0.0027) {
            // Yearly certificate renewal.
            let t = sample_time(rng, &HOURS_WEEKDAY, ds).max(lo);
            self.sink.context(RecKind::Certificate(CertificateAction::Renewed), t, i, World::home_device(i, p.gen), 0);
            if chance(rng, 0.2) {
                after = Some((t + between(rng, 120, 1_800), false));
            }
        } else if slot(0.0006) {
            // Certificate re-issued (forgotten password, new PC): a confuser.
            let t = sample_time(rng, &HOURS_WEEKDAY, ds).max(lo);
            self.sink.context(RecKind::Certificate(CertificateAction::Reissued), t, i, World::home_device(i, p.gen), 0);
            let u = uniform(rng);
            if u < 0.5 {
                after = Some((t + between(rng, 180, 2_400), false));
            } else if u < 0.62 {
                after = Some((t + between(rng, 180, 2_400), true));
            }
        } else if slot(0.0008) {
            // Phone upgrade: new device, login, certificate moved to it.
            let t = sample_time(rng, &HOURS_WEEKEND, ds).max(lo);
            upgrade_t = t;
            let dev = World::home_device(i, p.gen.wrapping_add(1));
            self.sink.context(RecKind::DeviceRegistered, t, i, dev, 0);
            let t2 = t + between(rng, 30, 600);
            self.sink.context(RecKind::Login { success: true }, t2, i, dev, mobile_ip(rng));
            if chance(rng, 0.7) {
                let t3 = t2 + between(rng, 60, 3_600);
                self.sink.context(RecKind::Certificate(CertificateAction::Reissued), t3, i, dev, 0);
                if chance(rng, 0.4) {
                    after = Some((t3 + between(rng, 120, 3_600), chance(rng, 0.1)));
                }
            }
            self.profiles[i as usize].gen = p.gen.wrapping_add(1);
        } else if slot(0.0001) {
            let t = sample_time(rng, &HOURS_WEEKDAY, ds).max(lo);
            self.sink.context(RecKind::PhoneChanged, t, i, 0, 0);
        } else if slot(0.0002) {
            let t = sample_time(rng, &HOURS_WEEKDAY, ds).max(lo);
            self.limit_raised(i, t, rng);
        } else if slot(0.000_05) {
            // IT support on the customer's PC: a remote-app confuser.
            let t = sample_time(rng, &HOURS_OFFICE, ds).max(lo);
            let dev = if p.flags & F_PC != 0 { World::slot_device(i, SLOT_PC) } else { World::home_device(i, p.gen) };
            self.sink.context(RecKind::RemoteApp { app: between(rng, 0, 4) as u8 }, t, i, dev, 0);
        } else if slot(0.0002) && p.flags & F_MULE == 0 {
            self.big_genuine(i, &p, ds, lo, rng);
        }
        let upgraded = |t: u32| t >= upgrade_t;

        if let Some((t, new_payee)) = after {
            let gen = p.gen.wrapping_add(u8::from(upgraded(t)));
            let (payee, amount) = if new_payee {
                let x = det_exp(f64::from(p.mu) + 1.0 + f64::from(p.sigma) * std_normal(rng));
                (random_stranger(rng), round_won(rng, x))
            } else {
                self.regular_payment(i, &p, rng)
            };
            self.genuine_transfer(i, &p, gen, t, payee, amount, p.channel, TransferPurpose::Transfer, lo, rng);
        }

        // Everyday transfers.
        let n = poisson(rng, f64::from(p.rate) * day.factor);
        let hours = if day.weekday >= 5 { &HOURS_WEEKEND } else { &HOURS_WEEKDAY };
        for _ in 0..n {
            let t = sample_time(rng, hours, ds);
            if t < lo {
                continue;
            }
            let gen = p.gen.wrapping_add(u8::from(upgraded(t)));
            let u = between(rng, 0, 999);
            let shop = u32::from(p.shop_pct) * 10;
            let channel = self.pick_channel(&p, rng);
            if u < shop {
                let (payee, amount) = self.shopping(rng);
                let ch = if chance(rng, 0.7) { Channel::OpenBanking } else { channel };
                self.genuine_transfer(i, &p, gen, t, payee, amount, ch, TransferPurpose::Payment, lo, rng);
            } else if u < shop + 100 {
                // A first-time payee: mostly small (second-hand goods, a new
                // friend), to a stranger.
                let x = det_exp(f64::from(p.mu) - 0.6 + f64::from(p.sigma) * std_normal(rng));
                let amount = round_won(rng, x);
                self.genuine_transfer(
                    i,
                    &p,
                    gen,
                    t,
                    random_stranger(rng),
                    amount,
                    channel,
                    TransferPurpose::Transfer,
                    lo,
                    rng,
                );
            } else {
                let (payee, amount) = self.regular_payment(i, &p, rng);
                self.genuine_transfer(i, &p, gen, t, payee, amount, channel, TransferPurpose::Transfer, lo, rng);
            }
        }

        // Monthly rent and management fee: same payee, same day, every month.
        if p.rent_won > 0 && day.day_of_month == u32::from(p.rent_day) && chance(rng, 0.93) {
            let t = ds + between(rng, 8 * HOUR, 22 * HOUR);
            if t >= lo {
                let gen = p.gen.wrapping_add(u8::from(upgraded(t)));
                let landlord = landlord_of(&self.world, i);
                self.genuine_transfer(
                    i,
                    &p,
                    gen,
                    t,
                    landlord,
                    p.rent_won,
                    p.channel,
                    TransferPurpose::Transfer,
                    lo,
                    rng,
                );
            }
        }
        if p.fee_won > 0 && day.day_of_month == u32::from(p.fee_day) && chance(rng, 0.9) {
            let t = ds + between(rng, 8 * HOUR, 22 * HOUR);
            if t >= lo {
                let gen = p.gen.wrapping_add(u8::from(upgraded(t)));
                let office = OFFICE_BASE
                    + (h3(self.world.salt_profile, u64::from(i), 11) % u64::from(self.world.n_offices)) as u32;
                let amount = round_to(f64::from(p.fee_won) * (0.8 + 0.45 * uniform(rng)), 10.0);
                self.genuine_transfer(i, &p, gen, t, office, amount, p.channel, TransferPurpose::Transfer, lo, rng);
            }
        }

        // Logins without a transfer (checking the balance).
        let m = poisson(rng, f64::from(p.rate) * 0.35);
        for _ in 0..m {
            let t = sample_time(rng, hours, ds);
            if t < lo {
                continue;
            }
            let gen = p.gen.wrapping_add(u8::from(upgraded(t)));
            let (dev, ip) = if p.channel == Channel::InternetBanking {
                (World::slot_device(i, SLOT_PC), self.world.home_ip(i))
            } else {
                (World::home_device(i, gen), mobile_ip(rng))
            };
            let ok = !chance(rng, 0.03);
            self.sink.context(RecKind::Login { success: ok }, t, i, dev, ip);
        }
    }

    /// A genuine transfer with its usual preceding login.
    #[allow(clippy::too_many_arguments)]
    fn genuine_transfer(
        &mut self,
        i: u32,
        p: &Profile,
        gen: u8,
        t: u32,
        payee: u32,
        amount: u32,
        channel: Channel,
        purpose: TransferPurpose,
        lo: u32,
        rng: &mut ChaCha8Rng,
    ) {
        let (device, ip, inst) = self.endpoint(i, p, gen, channel, rng);
        if channel != Channel::OpenBanking && chance(rng, 0.7) {
            // A login that would fall before the day (or the account) began is
            // left out rather than moved: earlier days are already written.
            let tl = i64::from(t) - i64::from(between(rng, 5, 300));
            if tl >= i64::from(lo) {
                let tl = tl as u32;
                if chance(rng, 0.025) {
                    let tf = i64::from(tl) - i64::from(between(rng, 3, 40));
                    if tf >= i64::from(lo) {
                        self.sink.context(RecKind::Login { success: false }, tf as u32, i, device, ip);
                    }
                }
                self.sink.context(RecKind::Login { success: true }, tl, i, device, ip);
            }
        }
        let rec = Rec {
            t,
            account: i,
            amount,
            device,
            payee,
            ip,
            kind: RecKind::Transfer { labelled: false },
            channel,
            purpose,
            inst,
            ..Rec::default()
        };
        self.transfer_with_false_report(rec, rng);
    }

    /// Device, IP and institution of a customer's own request on `channel`.
    /// Open-banking partners often send no device or IP.
    fn endpoint(&self, i: u32, p: &Profile, gen: u8, channel: Channel, rng: &mut ChaCha8Rng) -> (u32, u32, u8) {
        match channel {
            Channel::MobileApp => {
                let dev = if p.flags & F_TABLET != 0 && chance(rng, 0.2) {
                    World::slot_device(i, SLOT_TABLET)
                } else {
                    World::home_device(i, gen)
                };
                (dev, mobile_ip(rng), INST_MOBILE)
            }
            Channel::InternetBanking => (World::slot_device(i, SLOT_PC), self.world.home_ip(i), INST_INTERNET),
            Channel::OpenBanking => {
                let dev = if chance(rng, 0.35) { World::home_device(i, gen) } else { 0 };
                let ip = if chance(rng, 0.5) { mobile_ip(rng) } else { 0 };
                (dev, ip, 2 + p.partner)
            }
        }
    }

    fn transfer_with_false_report(&mut self, mut rec: Rec, rng: &mut ChaCha8Rng) {
        let false_report = chance(rng, self.cfg.false_report_rate);
        if false_report {
            rec.kind = RecKind::Transfer { labelled: true };
        }
        let Some(ord) = self.sink.push(rec) else {
            return;
        };
        if false_report {
            // The reporter names what they thought happened.
            let claimed =
                [Typology::VoicePhishing, Typology::LoanFraud, Typology::MuleFanIn][between(rng, 0, 2) as usize];
            let reported = report_time(rng, rec.t);
            self.label(reported, &rec, ord, LabelStatus::Fraud, claimed);
            let cleared = reported + between(rng, DAY, 14 * DAY);
            self.label(cleared, &rec, ord, LabelStatus::Cleared, Typology::Genuine);
        }
    }

    fn pick_channel(&self, p: &Profile, rng: &mut ChaCha8Rng) -> Channel {
        if chance(rng, 0.88) {
            p.channel
        } else {
            [Channel::MobileApp, Channel::InternetBanking, Channel::OpenBanking][between(rng, 0, 2) as usize]
        }
    }

    /// A transfer to one of the account's regular payees; the first few are
    /// favoured (a spouse or parent more than an old friend), and each payee has
    /// its own typical amount around the account's.
    fn regular_payment(&self, i: u32, p: &Profile, rng: &mut ChaCha8Rng) -> (u32, u32) {
        let u = uniform(rng);
        let j = ((f64::from(p.n_payees) * u * u) as u32).min(u32::from(p.n_payees) - 1);
        let h = h3(self.world.salt_profile, u64::from(i), 100 + u64::from(j));
        let payee = if h % 10 < 3 {
            // Family within the same bank's customer base.
            let k = ((h >> 8) % u64::from(self.world.n_old)) as u32;
            if k == i {
                (k + 1) % self.world.n_old
            } else {
                k
            }
        } else {
            EXT_BASE + ((h >> 8) % u64::from(EXT_END - EXT_BASE)) as u32
        };
        let offset = (unit(h3(h, 1, 0)) - 0.45) * 1.6;
        let x = det_exp(f64::from(p.mu) + offset + f64::from(p.sigma) * std_normal(rng));
        (payee, round_won(rng, x))
    }

    fn shopping(&self, rng: &mut ChaCha8Rng) -> (u32, u32) {
        let payee = if chance(rng, 0.75) {
            // Zipf-like over the large merchants.
            let u = uniform(rng);
            MERCHANT_BASE + ((MERCHANTS.len() as f64) * u * u * u) as u32
        } else {
            MERCHANT_BASE + MERCHANTS.len() as u32 + between(rng, 0, self.world.n_shops - 1)
        };
        // Prices: to 100 won, often ending in 900.
        let x = det_exp(10.3 + 0.85 * std_normal(rng));
        let mut amount = round_to(x, 100.0).max(1_000);
        if chance(rng, 0.5) && amount > 1_000 {
            amount = round_to(f64::from(amount), 1_000.0).saturating_sub(100).max(900);
        }
        (payee, amount)
    }

    /// A genuine large first-time transfer (a lease deposit, a car): the main
    /// confuser for voice phishing. Sometimes after a limit raise, sometimes
    /// after a certificate re-issue, sometimes split in two.
    fn big_genuine(&mut self, i: u32, p: &Profile, ds: u32, lo: u32, rng: &mut ChaCha8Rng) {
        let mut t = sample_time(rng, &HOURS_OFFICE, ds).max(lo);
        if chance(rng, 0.35) {
            self.limit_raised(i, t, rng);
            t += between(rng, 10 * MIN, 2 * HOUR);
        }
        if chance(rng, 0.25) {
            self.sink.context(RecKind::Certificate(CertificateAction::Reissued), t, i, World::home_device(i, p.gen), 0);
            t += between(rng, 5 * MIN, 40 * MIN);
        }
        let payee = random_stranger(rng);
        let total = log_uniform(rng, 5_000_000.0, 50_000_000.0);
        let parts = if chance(rng, 0.25) { 2 } else { 1 };
        for _ in 0..parts {
            let amount = round_to(total / f64::from(parts), 100_000.0);
            let ch = if p.channel == Channel::OpenBanking { Channel::MobileApp } else { p.channel };
            self.genuine_transfer(i, p, p.gen, t, payee, amount, ch, TransferPurpose::Transfer, lo, rng);
            t += between(rng, 60, 20 * MIN);
        }
    }

    fn limit_raised(&mut self, i: u32, t: u32, rng: &mut ChaCha8Rng) {
        let limit = [10_000_000, 20_000_000, 30_000_000, 50_000_000, 100_000_000][between(rng, 0, 4) as usize];
        self.sink.push(Rec { t, account: i, amount: limit, kind: RecKind::LimitRaised, ..Rec::default() });
    }

    /// The day before a mule's first use, the ring registers its own device on
    /// the account and logs in.
    fn mule_takeover(&mut self, i: u32, ds: u32, de: u32, rng: &mut ChaCha8Rng) {
        let Some(m) = self.mules.iter().find(|m| m.account == i) else {
            return;
        };
        if m.takeover_t >= i64::from(ds) && m.takeover_t < i64::from(de) {
            let t = m.takeover_t as u32;
            let dev = m.ring_device;
            let ip = self.fraud_ips[between(rng, 0, self.fraud_ips.len() as u32 - 1) as usize];
            self.sink.context(RecKind::DeviceRegistered, t, i, dev, 0);
            self.sink.context(RecKind::Login { success: true }, t + between(rng, 20, 300), i, dev, ip);
        }
    }

    // -- fraud ---------------------------------------------------------------

    fn fraud_day(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let scale = f64::from(self.world.accounts) / 10_000.0;
        let weekend = day.weekday >= 5;
        let office_days = if weekend { 0.3 } else { 1.0 };
        let n_vp = round_random(rng, scale * self.cfg.voice_phishing_per_10k * office_days);
        let n_ato = round_random(rng, scale * self.cfg.account_takeover_per_10k);
        let n_camp = round_random(rng, scale * self.cfg.mule_campaigns_per_10k);
        let n_loan = round_random(rng, scale * self.cfg.loan_fraud_per_10k * office_days);
        for _ in 0..n_vp {
            self.voice_phishing(day, rng);
        }
        for _ in 0..n_ato {
            self.account_takeover(day, rng);
        }
        for _ in 0..n_camp {
            self.mule_campaign(day, rng);
        }
        for _ in 0..n_loan {
            self.loan_fraud(day, rng);
        }
    }

    /// An established account not yet victimised; `older` prefers the older
    /// customers voice phishing targets.
    fn pick_victim(&mut self, rng: &mut ChaCha8Rng, older: bool) -> Option<u32> {
        for _ in 0..200 {
            let i = between(rng, 0, self.world.n_old - 1);
            let f = self.profiles[i as usize].flags;
            if f & (F_VICTIM | F_MULE) != 0 {
                continue;
            }
            if older && f & F_OLDER == 0 && !chance(rng, 0.25) {
                continue;
            }
            self.profiles[i as usize].flags |= F_VICTIM;
            return Some(i);
        }
        None
    }

    /// A mule to receive money at time `t`: one active that day and already
    /// taken over; failing that, any taken over; failing that, any.
    fn pick_mule(&self, t: u32, rng: &mut ChaCha8Rng) -> u32 {
        let day = t / DAY;
        let ready = |m: &&Mule| m.takeover_t < i64::from(t);
        let active = |m: &&Mule| ready(m) && m.first_day <= day && day <= m.last_day;
        let pick = |filter: &dyn Fn(&&Mule) -> bool, rng: &mut ChaCha8Rng| {
            let n = self.mules.iter().filter(|m| filter(m)).count() as u32;
            (n > 0).then(|| {
                let k = between(rng, 0, n - 1) as usize;
                self.mules.iter().filter(|m| filter(m)).nth(k).map_or(0, |m| m.account)
            })
        };
        pick(&active, rng)
            .or_else(|| pick(&ready, rng))
            .unwrap_or_else(|| self.mules[between(rng, 0, self.mules.len() as u32 - 1) as usize].account)
    }

    fn fraud_device(&mut self, rng: &mut ChaCha8Rng) -> u32 {
        if chance(rng, 0.5) {
            FRAUD_DEVICE + between(rng, 0, self.world.n_ring_devices - 1)
        } else {
            self.next_fresh_device = self.next_fresh_device.wrapping_add(1).max(FRESH_FRAUD_DEVICE);
            self.next_fresh_device
        }
    }

    fn fraud_ip(&self, rng: &mut ChaCha8Rng) -> u32 {
        self.fraud_ips[between(rng, 0, self.fraud_ips.len() as u32 - 1) as usize]
    }

    /// Push a fraudulent transfer; its label is added by the caller once the
    /// incident's report time is known.
    #[allow(clippy::too_many_arguments)]
    fn fraud_transfer(
        &mut self,
        t: u32,
        account: u32,
        payee: u32,
        amount: u32,
        channel: Channel,
        device: u32,
        ip: u32,
        typology: Typology,
        out: &mut Vec<(Rec, u32)>,
    ) {
        let inst = match channel {
            Channel::MobileApp => INST_MOBILE,
            Channel::InternetBanking => INST_INTERNET,
            Channel::OpenBanking => 2 + self.profiles[account as usize].partner,
        };
        let rec = Rec {
            t,
            account,
            amount,
            device,
            payee,
            ip,
            kind: RecKind::Transfer { labelled: true },
            channel,
            purpose: TransferPurpose::Transfer,
            inst,
            typology,
            ..Rec::default()
        };
        if let Some(ord) = self.sink.push(rec) {
            out.push((rec, ord));
        }
    }

    /// Labels for one incident: the victim reports everything at once, late.
    fn report(&mut self, rng: &mut ChaCha8Rng, done: &[(Rec, u32)]) {
        let Some(last) = done.iter().map(|(r, _)| r.t).max() else {
            return;
        };
        let reported = report_time(rng, last);
        for (rec, ord) in done {
            self.label(reported, rec, *ord, LabelStatus::Fraud, rec.typology);
        }
    }

    fn label(&mut self, t: u32, rec: &Rec, ord: u32, status: LabelStatus, typology: Typology) {
        self.sink.push(Rec {
            t,
            account: u32::MAX,
            payee: rec.payee,
            link: ord,
            kind: RecKind::Label(status),
            inst: rec.inst,
            typology,
            ..Rec::default()
        });
    }

    fn voice_phishing(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let Some(v) = self.pick_victim(rng, true) else {
            return;
        };
        let p = self.profiles[v as usize];
        let t0 = sample_time(rng, &HOURS_OFFICE, day.start);
        let home = World::home_device(v, p.gen);
        let (device, ip, mut t) = if chance(rng, 0.7) {
            // The victim installs a "security app": the fraudster's phone is
            // registered on the account, then logs in.
            let dev = self.fraud_device(rng);
            let ip = self.fraud_ip(rng);
            self.sink.context(RecKind::DeviceRegistered, t0, v, dev, 0);
            let mut t = t0 + between(rng, 20, 180);
            if chance(rng, 0.8) {
                self.sink.context(RecKind::Login { success: true }, t, v, dev, ip);
                t += between(rng, 10, 120);
            }
            (dev, ip, t + between(rng, 20, 300))
        } else {
            // A remote-control app on the victim's own phone.
            let app = between(rng, 0, 4) as u8;
            self.sink.context(RecKind::RemoteApp { app: app }, t0, v, home, 0);
            (home, mobile_ip(rng), t0 + between(rng, 60, 600))
        };
        let action = if chance(rng, 0.25) { CertificateAction::Issued } else { CertificateAction::Reissued };
        self.sink.context(RecKind::Certificate(action), t, v, device, 0);
        let cert_t = t;
        if chance(rng, 0.3) {
            t += between(rng, 30, 150);
            let limit = if chance(rng, 0.5) { 50_000_000 } else { 100_000_000 };
            self.sink.push(Rec { t, account: v, amount: limit, kind: RecKind::LimitRaised, ..Rec::default() });
        }
        let mut tt = (cert_t + between(rng, 3 * MIN, 20 * MIN)).max(t + 30);
        let n = match between(rng, 0, 99) {
            0..=49 => 1,
            50..=79 => 2,
            80..=94 => 3,
            _ => 4,
        };
        let mule = self.pick_mule(tt, rng);
        let second_mule = if n > 1 && chance(rng, 0.2) { self.pick_mule(tt, rng) } else { mule };
        let mut done = Vec::new();
        for k in 0..n {
            let amount = if n == 1 {
                {
                    let x = log_uniform(rng, 1_000_000.0, 30_000_000.0);
                    round_won(rng, x)
                }
            } else {
                // Just under the round limits people and banks use.
                [9_990_000, 9_900_000, 9_950_000, 4_990_000, 4_900_000, 2_990_000][between(rng, 0, 5) as usize]
            };
            let payee = if k >= 2 { second_mule } else { mule };
            if tt > cert_t + 40 * MIN {
                break;
            }
            self.fraud_transfer(
                tt,
                v,
                payee,
                amount,
                Channel::MobileApp,
                device,
                ip,
                Typology::VoicePhishing,
                &mut done,
            );
            tt += between(rng, 60, 300);
        }
        self.report(rng, &done);
        self.maybe_fan_out(rng, &done);
    }

    fn account_takeover(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let Some(v) = self.pick_victim(rng, false) else {
            return;
        };
        let p = self.profiles[v as usize];
        let mut t = sample_time(rng, &HOURS_NIGHT, day.start).min(day.start + 21 * HOUR);
        let dev = self.fraud_device(rng);
        let ip = self.fraud_ip(rng);
        // Credential stuffing, then a SIM swap or number change to get the OTP.
        for _ in 0..between(rng, 2, 6) {
            self.sink.context(RecKind::Login { success: false }, t, v, dev, ip);
            t += between(rng, 10, 90);
        }
        t += between(rng, 60, 15 * MIN);
        self.sink.context(RecKind::PhoneChanged, t, v, 0, 0);
        t += between(rng, 30, 5 * MIN);
        self.sink.context(RecKind::DeviceRegistered, t, v, dev, 0);
        t += between(rng, 20, 2 * MIN);
        self.sink.context(RecKind::Login { success: true }, t, v, dev, ip);
        if chance(rng, 0.3) {
            t += between(rng, 30, 5 * MIN);
            self.sink.context(RecKind::Certificate(CertificateAction::Reissued), t, v, dev, 0);
        }
        // Drain most of the typical balance within the hour.
        let balance = (det_exp(f64::from(p.mu)) * (15.0 + 45.0 * uniform(rng))).clamp(500_000.0, 50_000_000.0);
        let total = balance * (0.7 + 0.25 * uniform(rng));
        let n = between(rng, 2, 5);
        let mut done = Vec::new();
        let mut left = total;
        t += between(rng, 2 * MIN, 10 * MIN);
        let mules = [self.pick_mule(t, rng), self.pick_mule(t, rng)];
        let n_mules = if chance(rng, 0.6) { 1 } else { 2 };
        // Some takeovers drain through a fintech app the fraudster links the
        // account to; the partner may not pass the device on.
        let (channel, drain_dev) = if chance(rng, 0.2) {
            (Channel::OpenBanking, if chance(rng, 0.5) { dev } else { 0 })
        } else {
            (Channel::MobileApp, dev)
        };
        let end = t + HOUR;
        for k in 0..n {
            let share = if k + 1 == n { left } else { left * (0.3 + 0.4 * uniform(rng)) };
            left -= share;
            let amount = round_to(share, 10_000.0);
            let payee = mules[(k % n_mules) as usize];
            if t >= end {
                break;
            }
            self.fraud_transfer(t, v, payee, amount, channel, drain_dev, ip, Typology::AccountTakeover, &mut done);
            t += between(rng, 2 * MIN, 15 * MIN);
        }
        self.report(rng, &done);
        self.maybe_fan_out(rng, &done);
    }

    fn mule_campaign(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let t0 = day.start + between(rng, 10 * HOUR, 16 * HOUR);
        let mule = self.pick_mule(t0, rng);
        let dur = between(rng, HOUR, 6 * HOUR);
        let n = between(rng, 5, 15);
        let mut received: Vec<(Rec, u32)> = Vec::new();
        for _ in 0..n {
            let Some(v) = self.pick_victim(rng, false) else {
                continue;
            };
            let p = self.profiles[v as usize];
            let mut t = t0 + between(rng, 0, dur);
            let channel = self.pick_channel(&p, rng);
            let (dev, ip, _) = self.endpoint(v, &p, p.gen, channel, rng);
            if channel != Channel::OpenBanking && chance(rng, 0.6) {
                self.sink.context(RecKind::Login { success: true }, t - between(rng, 10, 240), v, dev, ip);
            }
            let pays = if chance(rng, 0.15) { 2 } else { 1 };
            let mut done = Vec::new();
            for _ in 0..pays {
                let x = det_exp(12.6 + 0.8 * std_normal(rng)).min(2_000_000.0);
                let amount = round_won(rng, x);
                self.fraud_transfer(t, v, mule, amount, channel, dev, ip, Typology::MuleFanIn, &mut done);
                t += between(rng, 5 * MIN, HOUR);
            }
            self.report(rng, &done);
            received.extend(done);
        }
        // Forward in batches of about four receipts.
        received.sort_by_key(|(r, o)| (r.t, *o));
        for batch in received.chunks(4) {
            self.fan_out(rng, batch);
        }
    }

    fn loan_fraud(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
        let Some(v) = self.pick_victim(rng, false) else {
            return;
        };
        let p = self.profiles[v as usize];
        let mut t = sample_time(rng, &HOURS_OFFICE, day.start);
        // Not the busy mule pool: each "loan company" account collects from a
        // few victims over days, so payee fan-in gives little away.
        let n_payees = self.world.n_loan_payees;
        let mut payee = LOAN_BASE + between(rng, 0, n_payees - 1);
        let n = between(rng, 2, 4);
        let mut done = Vec::new();
        for k in 0..n {
            if k > 0 {
                // The next "fee" is demanded within hours, or the next day.
                t += if chance(rng, 0.6) { between(rng, HOUR, 6 * HOUR) } else { between(rng, 16 * HOUR, 40 * HOUR) };
                // Move into office hours: the "loan officer" calls in the day.
                let h = (t % DAY) / HOUR;
                if !(9..20).contains(&h) {
                    t = (t / DAY + u32::from(h >= 20)) * DAY + 10 * HOUR + between(rng, 0, 6 * HOUR);
                }
                if chance(rng, 0.3) {
                    payee = LOAN_BASE + between(rng, 0, n_payees - 1);
                }
            }
            let channel = self.pick_channel(&p, rng);
            let (dev, ip, _) = self.endpoint(v, &p, p.gen, channel, rng);
            if channel != Channel::OpenBanking && chance(rng, 0.7) {
                self.sink.context(RecKind::Login { success: true }, t - between(rng, 10, 300), v, dev, ip);
            }
            let fee = log_uniform(rng, 300_000.0, 3_000_000.0);
            let amount = if chance(rng, 0.5) { round_to(fee, 100_000.0) } else { round_to(fee, 10_000.0) };
            self.fraud_transfer(t, v, payee, amount, channel, dev, ip, Typology::LoanFraud, &mut done);
        }
        self.report(rng, &done);
    }

    fn maybe_fan_out(&mut self, rng: &mut ChaCha8Rng, received: &[(Rec, u32)]) {
        // Each receiving mule forwards what it got, once per incident.
        let mut payees: Vec<u32> = received.iter().map(|(r, _)| r.payee).collect();
        payees.sort_unstable();
        payees.dedup();
        for m in payees {
            if chance(rng, self.cfg.fan_out_probability) {
                let mine: Vec<(Rec, u32)> = received.iter().filter(|(r, _)| r.payee == m).copied().collect();
                self.fan_out(rng, &mine);
            }
        }
    }

    /// The mule forwards the money received in `batch` (all to one mule) to
    /// collector accounts, minutes later, from the ring's shared device.
    fn fan_out(&mut self, rng: &mut ChaCha8Rng, batch: &[(Rec, u32)]) {
        let Some(&(first, _)) = batch.first() else {
            return;
        };
        let m = first.payee;
        if !self.world.is_mule_id(m) {
            return;
        }
        let total: f64 = batch.iter().map(|(r, _)| f64::from(r.amount)).sum();
        let last = batch.iter().map(|(r, _)| r.t).max().unwrap_or(first.t);
        let ring = self.mules.iter().find(|x| x.account == m).map_or(FRAUD_DEVICE, |x| x.ring_device);
        let dev = if chance(rng, 0.7) { ring } else { World::home_device(m, self.profiles[m as usize].gen) };
        let ip = self.fraud_ip(rng);
        let mut t = last + between(rng, 5 * MIN, 40 * MIN);
        self.sink.context(RecKind::Login { success: true }, t, m, dev, ip);
        t += between(rng, 20, 180);
        let n = if total > 3_000_000.0 { 2 } else { 1 };
        let mut left = total * (0.9 + 0.09 * uniform(rng));
        let mut done = Vec::new();
        for k in 0..n {
            let share = if k + 1 == n { left } else { left * (0.4 + 0.3 * uniform(rng)) };
            left -= share;
            if share < 10_000.0 {
                continue;
            }
            let payee = if chance(rng, 0.2) {
                // Layering through another mule.
                let other = self.pick_mule(t, rng);
                if other == m {
                    COLLECTOR_BASE + between(rng, 0, self.world.n_collectors - 1)
                } else {
                    other
                }
            } else {
                COLLECTOR_BASE + between(rng, 0, self.world.n_collectors - 1)
            };
            self.fraud_transfer(
                t,
                m,
                payee,
                round_to(share, 10_000.0),
                Channel::MobileApp,
                dev,
                ip,
                Typology::MuleFanOut,
                &mut done,
            );
            t += between(rng, 30, 300);
        }
        self.report(rng, &done);
    }
}

fn stream(seed: u64, purpose: u64, day: u32) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream((purpose << 32) | u64::from(day));
    r
}

fn new_profile(w: &World, rng: &mut ChaCha8Rng, i: u32, window_end: i64) -> Profile {
    let mut flags = 0;
    if chance(rng, 0.22) {
        flags |= F_OLDER;
    }
    if chance(rng, 0.15) {
        flags |= F_TABLET;
    }
    let channel = match between(rng, 0, 99) {
        0..=79 => Channel::MobileApp,
        80..=91 => Channel::InternetBanking,
        _ => Channel::OpenBanking,
    };
    if channel == Channel::InternetBanking || chance(rng, 0.1) {
        flags |= F_PC;
    }
    let older = flags & F_OLDER != 0;
    // Older customers send less often, to fewer people, in larger amounts.
    let mu = det_ln(80_000.0) + 0.7 * std_normal(rng) + if older { 0.35 } else { 0.0 };
    let sigma = 0.5 + 0.5 * uniform(rng);
    let rate = (det_exp(0.8 * std_normal(rng)) * if older { 0.7 } else { 1.0 }).clamp(0.05, 10.0);
    let u = uniform(rng);
    let n_payees = (3.0 + 12.0 * u * u.sqrt()) as u8;
    let (rent_won, rent_day) = if chance(rng, 0.25) {
        let rent = round_to(log_uniform(rng, 350_000.0, 1_300_000.0), 10_000.0);
        let day = [1, 5, 10, 15, 20, 25, 28][between(rng, 0, 6) as usize];
        (rent, day)
    } else {
        (0, 0)
    };
    let (fee_won, fee_day) = if chance(rng, 0.35) {
        (round_to(120_000.0 + 230_000.0 * uniform(rng), 10.0), between(rng, 20, 28) as u8)
    } else {
        (0, 0)
    };
    let shop_pct = (5.0 + 35.0 * uniform(rng) * uniform(rng)) as u8;
    let mut open_t = i64::MIN / 2;
    if i >= w.n_old {
        flags |= F_NEW;
        // Opened between 20 days before the window and its end.
        let span = 20 * i64::from(DAY) + window_end;
        let t = -20 * i64::from(DAY) + (unit(rng.next_u64()) * span as f64) as i64;
        // During the day: move to 08:00–21:00.
        let day0 = t.div_euclid(i64::from(DAY));
        open_t = day0 * i64::from(DAY) + i64::from(8 * HOUR + between(rng, 0, 13 * HOUR));
    }
    Profile {
        mu: mu as f32,
        sigma: sigma as f32,
        rate: rate as f32,
        open_t,
        rent_won,
        fee_won,
        rent_day,
        fee_day,
        shop_pct,
        n_payees: n_payees.clamp(3, 15),
        flags,
        gen: 0,
        channel,
        partner: between(rng, 0, INST_PARTNERS - 1) as u8,
    }
}

fn landlord_of(w: &World, i: u32) -> u32 {
    EXT_BASE + (h3(w.salt_profile, u64::from(i), 12) % u64::from(EXT_END - EXT_BASE)) as u32
}

/// Someone the sender has never paid: drawn from hundreds of millions of
/// external accounts, so a repeat is practically impossible.
fn random_stranger(rng: &mut ChaCha8Rng) -> u32 {
    between(rng, EXT_BASE, EXT_END - 1)
}

fn sample_time(rng: &mut ChaCha8Rng, hours: &[u32; 24], day_start: u32) -> u32 {
    let total: u32 = hours.iter().sum();
    let h = pick_weighted(hours, between(rng, 0, total - 1)) as u32;
    day_start + h * HOUR + between(rng, 0, HOUR - 1)
}

/// Victims report 1–10 days later (most within a few days), in office hours.
fn report_time(rng: &mut ChaCha8Rng, t: u32) -> u32 {
    let u = uniform(rng);
    let days = 1 + (9.0 * u * u) as u32;
    let mut r = (t / DAY + days) * DAY + sample_time(rng, &HOURS_OFFICE, 0);
    if r < t + DAY {
        r += DAY;
    }
    r
}

/// Salary day: the 25th, or the Friday before when it falls on a weekend.
fn salary_day(date: NaiveDate) -> u32 {
    let Some(d25) = date.with_day(25) else {
        return 25;
    };
    match d25.weekday().num_days_from_monday() {
        5 => 24,
        6 => 23,
        _ => 25,
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

struct Writer {
    summary: GenerateSummary,
    /// Next transfer sequence number: assigned in output order, so ids grow
    /// with time and say nothing about how a transfer was generated.
    next_seq: u64,
    /// `ord` -> sequence number, for transfers a label will refer to.
    labelled: HashMap<u32, u64>,
    buf: Vec<u8>,
}

impl Writer {
    fn new() -> Self {
        Writer {
            summary: GenerateSummary::default(),
            next_seq: 1,
            labelled: HashMap::new(),
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// Sort the pending records and write those before `until` (all if `None`).
    fn write_until<W: Write>(
        &mut self,
        world: &World,
        recs: &mut Vec<Rec>,
        until: Option<u32>,
        out: &mut W,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), GenerateError> {
        recs.sort_unstable_by_key(|r| (r.t, r.account, r.ord));
        let cut = until.map_or(recs.len(), |u| recs.partition_point(|r| r.t < u));
        for r in &recs[..cut] {
            let event = self.render(world, r)?;
            serde_json::to_writer(&mut self.buf, &event).map_err(std::io::Error::from)?;
            self.buf.push(b'\n');
            self.summary.events += 1;
            if self.buf.len() >= 1 << 20 {
                self.flush(out)?;
                progress(self.summary.events);
            }
        }
        self.flush(out)?;
        recs.drain(..cut);
        Ok(())
    }

    fn flush<W: Write>(&mut self, out: &mut W) -> Result<(), GenerateError> {
        out.write_all(&self.buf)?;
        self.summary.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn render(&mut self, w: &World, r: &Rec) -> Result<Event, GenerateError> {
        let time = w.time(r.t);
        let s = &mut self.summary;
        if s.first_time.is_none() {
            s.first_time = Some(time);
        }
        s.last_time = Some(time);
        let device = (r.device != 0).then(|| w.device_id(r.device));
        let ip = (r.ip != 0).then(|| ip_string(r.ip));
        let acct = || fintech_use_num(r.account);
        let payee_fields = |payee: u32| {
            let bank = &BANKS[w.bank_of(payee)];
            (bank.code.to_owned(), w.account_number(payee, bank))
        };
        if !matches!(r.kind, RecKind::Transfer { .. } | RecKind::Label(_)) {
            s.context_events += 1;
        }
        let ev = match r.kind {
            RecKind::Transfer { labelled } => {
                let seq = self.next_seq;
                if seq > 999_999_999 {
                    return Err(GenerateError::Capacity("more than 999,999,999 transfers".into()));
                }
                self.next_seq += 1;
                s.transfers += 1;
                if r.typology != Typology::Genuine {
                    s.fraud_transfers += 1;
                    *s.frauds_by_typology.entry(r.typology.label().to_owned()).or_insert(0) += 1;
                }
                if labelled {
                    self.labelled.insert(r.ord, seq);
                }
                let (bank, account) = payee_fields(r.payee);
                Event::Transfer(Transfer {
                    schema_version: SchemaVersion,
                    bank_tran_id: tran_id(r.inst, seq),
                    tran_dtime: time,
                    fintech_use_num: acct(),
                    tran_amt: Won::new(i64::from(r.amount.max(1))).map_err(GenerateError::Capacity)?,
                    recv_client_bank_code: bank,
                    recv_client_account_num: account,
                    recv_client_name: w.payee_name(r.payee),
                    channel: r.channel,
                    device_id: device,
                    ip,
                    transfer_purpose: r.purpose,
                })
            }
            RecKind::Label(status) => {
                let seq = *self
                    .labelled
                    .get(&r.link)
                    .ok_or_else(|| GenerateError::Capacity("label before its transfer".into()))?;
                s.labels += 1;
                if status == LabelStatus::Cleared {
                    s.false_reports += 1;
                }
                let (bank, account) = payee_fields(r.payee);
                Event::Label(Label {
                    schema_version: SchemaVersion,
                    bank_tran_id: tran_id(r.inst, seq),
                    report_dtime: time,
                    status,
                    typology: r.typology.label().to_owned(),
                    recv_client_bank_code: bank,
                    recv_client_account_num: account,
                })
            }
            RecKind::Login { success } => Event::Login(Login {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device,
                ip,
                success,
            }),
            RecKind::DeviceRegistered => Event::DeviceRegistered(DeviceRegistered {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device.unwrap_or_else(|| w.device_id(0)),
            }),
            RecKind::Certificate(action) => Event::Certificate(Certificate {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                action,
                device_id: device,
            }),
            RecKind::PhoneChanged => Event::PhoneChanged(PhoneChanged {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
            }),
            RecKind::RemoteApp { app } => Event::RemoteAppDetected(RemoteAppDetected {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device,
                app_name: REMOTE_APPS[usize::from(app) % REMOTE_APPS.len()].to_owned(),
            }),
            RecKind::LimitRaised => Event::LimitRaised(LimitRaised {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                new_limit: Won::new(i64::from(r.amount.max(1))).map_err(GenerateError::Capacity)?,
            }),
            RecKind::Ekyc => Event::EkycCompleted(EkycCompleted {
                schema_version: SchemaVersion,
                event_dtime: time,
                fintech_use_num: acct(),
                device_id: device,
            }),
        };
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::event::Transfer;

    /// Small and fast in debug builds, with fraud boosted so every pattern
    /// appears several times.
    fn small(seed: u64) -> GeneratorConfig {
        GeneratorConfig {
            seed,
            accounts: 2_000,
            days: 2,
            voice_phishing_per_10k: 40.0,
            account_takeover_per_10k: 25.0,
            mule_campaigns_per_10k: 10.0,
            loan_fraud_per_10k: 25.0,
            false_report_rate: 0.002,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn a_record_stays_40_bytes() {
        assert!(std::mem::size_of::<Rec>() <= 40, "{} bytes", std::mem::size_of::<Rec>());
    }

    fn run(cfg: &GeneratorConfig) -> (Vec<u8>, GenerateSummary) {
        let mut out = Vec::new();
        let summary = generate(cfg, &mut out).expect("generates");
        (out, summary)
    }

    fn parse(bytes: &[u8]) -> Vec<Event> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| Event::from_json(l).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(l))))
            .collect()
    }

    fn transfers(events: &[Event]) -> BTreeMap<String, (usize, &Transfer)> {
        events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Event::Transfer(t) => Some((t.bank_tran_id.clone(), (i, t))),
                _ => None,
            })
            .collect()
    }

    /// bank_tran_id -> typology of its fraud label (true reports only:
    /// transfers whose report was later cleared are left out).
    fn fraud_typologies(events: &[Event]) -> BTreeMap<String, String> {
        let cleared: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Label(l) if l.status == LabelStatus::Cleared => Some(l.bank_tran_id.as_str()),
                _ => None,
            })
            .collect();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Label(l) if l.status == LabelStatus::Fraud && !cleared.contains(l.bank_tran_id.as_str()) => {
                    Some((l.bank_tran_id.clone(), l.typology.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, sa) = run(&small(11));
        let (b, sb) = run(&small(11));
        assert!(a == b, "same config gave different output");
        assert_eq!(sa, sb);
        let (c, _) = run(&small(12));
        assert!(a != c, "different seeds gave the same output");
    }

    #[test]
    fn every_line_is_an_event_in_time_order_with_unique_ids() {
        let (bytes, summary) = run(&small(3));
        let text = std::str::from_utf8(&bytes).unwrap();
        let events = parse(&bytes);
        // The lines are exactly what the wire format writes.
        for (line, e) in text.lines().zip(&events) {
            assert_eq!(line, e.to_json());
        }
        assert_eq!(events.len() as u64, summary.events);
        assert_eq!(bytes.len() as u64, summary.bytes);
        for w in events.windows(2) {
            assert!(w[0].time() <= w[1].time(), "{:?} before {:?}", w[0], w[1]);
        }
        let mut ids = BTreeSet::new();
        let mut n_transfers = 0;
        for e in &events {
            if let Event::Transfer(t) = e {
                n_transfers += 1;
                assert_eq!(t.bank_tran_id.len(), 20, "{}", t.bank_tran_id);
                assert!(ids.insert(t.bank_tran_id.clone()), "duplicate {}", t.bank_tran_id);
                assert_eq!(t.fintech_use_num.len(), 24);
                assert!((12..=14).contains(&t.recv_client_account_num.len()));
                assert!(!t.recv_client_name.is_empty());
            }
        }
        assert_eq!(n_transfers, summary.transfers);
        let labels = events.iter().filter(|e| matches!(e, Event::Label(_))).count() as u64;
        assert_eq!(labels, summary.labels);
        assert_eq!(summary.transfers + summary.context_events + summary.labels, summary.events);
        // Traffic stays inside the window; only labels come later.
        let end = EventTime::parse_kst("20261104000000").unwrap();
        assert!(events.iter().all(|e| matches!(e, Event::Label(_)) || e.time() < end));
        let start = EventTime::parse_kst("20261102000000").unwrap();
        assert!(events.iter().all(|e| e.time() >= start));
    }

    #[test]
    fn labels_refer_to_earlier_transfers_with_their_payee() {
        let (bytes, summary) = run(&small(5));
        let events = parse(&bytes);
        let by_id = transfers(&events);
        let mut fraud_labels = 0;
        let mut cleared = 0;
        let mut reported = BTreeSet::new();
        for e in &events {
            let Event::Label(l) = e else { continue };
            let (_, t) = by_id.get(&l.bank_tran_id).expect("label for a transfer that exists");
            assert_eq!(l.payee_key(), t.payee_key());
            assert!(l.report_dtime.secs() >= t.tran_dtime.secs() + 86_400, "reported within a day");
            match l.status {
                LabelStatus::Fraud => {
                    // 1–10 days after the incident's last transfer; a loan
                    // fraud's payments can span a few days before that.
                    let late = l.report_dtime.secs() - t.tran_dtime.secs();
                    assert!(late <= 16 * 86_400, "reported {late}s later");
                    fraud_labels += 1;
                    assert!(Typology::FRAUD.map(Typology::label).contains(&l.typology.as_str()), "{}", l.typology);
                    reported.insert(l.bank_tran_id.clone());
                }
                LabelStatus::Cleared => {
                    cleared += 1;
                    assert!(reported.contains(&l.bank_tran_id), "cleared before reported");
                    assert!(l.typology.is_empty());
                }
            }
        }
        assert_eq!(fraud_labels, summary.fraud_transfers + summary.false_reports);
        assert_eq!(cleared, summary.false_reports);
        assert!(summary.false_reports > 0);
        let by_typology: u64 = summary.frauds_by_typology.values().sum();
        assert_eq!(by_typology, summary.fraud_transfers);
        assert_eq!(fraud_typologies(&events).len() as u64, summary.fraud_transfers);
    }

    #[test]
    fn default_demo_has_every_typology_at_a_realistic_rate() {
        let (bytes, summary) = run(&GeneratorConfig::default());
        for t in Typology::FRAUD.map(Typology::label).iter() {
            let n = summary.frauds_by_typology.get(*t).copied().unwrap_or(0);
            assert!(n >= 5, "typology {t}: {n} transfers");
        }
        let rate = summary.fraud_transfers as f64 / summary.transfers as f64;
        assert!((0.001..=0.01).contains(&rate), "fraud rate {rate}: {summary:?}");
        assert!((20_000..=40_000).contains(&summary.transfers), "{summary:?}");
        // Shopping payments and all three channels are there.
        let text = std::str::from_utf8(&bytes).unwrap();
        for needle in [
            "\"transfer_purpose\":\"ST\"",
            "\"channel\":\"open_banking\"",
            "\"channel\":\"internet_banking\"",
            "\"type\":\"ekyc_completed\"",
            "\"type\":\"phone_changed\"",
            "\"type\":\"remote_app_detected\"",
            "\"type\":\"limit_raised\"",
            "\"action\":\"renewed\"",
        ] {
            assert!(text.contains(needle), "no {needle}");
        }
    }

    #[test]
    fn voice_phishing_follows_a_certificate_to_a_never_used_payee() {
        let (bytes, _) = run(&small(8));
        let events = parse(&bytes);
        let fraud = fraud_typologies(&events);
        let mut checked = 0;
        for (i, e) in events.iter().enumerate() {
            let Event::Transfer(t) = e else { continue };
            if fraud.get(&t.bank_tran_id).map(String::as_str) != Some("voice_phishing") {
                continue;
            }
            checked += 1;
            let from = t.tran_dtime.secs() - 40 * 60;
            let cert = events[..i].iter().any(|p| {
                matches!(p, Event::Certificate(c)
                    if c.fintech_use_num == t.fintech_use_num
                        && c.event_dtime.secs() >= from
                        && matches!(c.action, CertificateAction::Issued | CertificateAction::Reissued))
            });
            assert!(cert, "no certificate event 40 min before {}", t.bank_tran_id);
            // Earlier transfers from the victim to this payee are part of the
            // same scam, never genuine history.
            for p in &events[..i] {
                if let Event::Transfer(q) = p {
                    if q.fintech_use_num == t.fintech_use_num && q.payee_key() == t.payee_key() {
                        assert_eq!(fraud.get(&q.bank_tran_id).map(String::as_str), Some("voice_phishing"));
                    }
                }
            }
            assert!(t.tran_amt.get() >= 1_000_000);
        }
        assert!(checked >= 5, "only {checked} voice-phishing transfers");
    }

    #[test]
    fn mules_receive_from_many_senders_and_forward_onward() {
        let (bytes, _) = run(&small(9));
        let events = parse(&bytes);
        let fraud = fraud_typologies(&events);
        let mut senders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut fan_out_senders = BTreeSet::new();
        let mut fraud_payees = BTreeMap::<String, BTreeSet<String>>::new();
        for e in &events {
            let Event::Transfer(t) = e else { continue };
            match fraud.get(&t.bank_tran_id).map(String::as_str) {
                Some("mule_fan_in") => {
                    senders.entry(t.payee_key()).or_default().insert(t.fintech_use_num.clone());
                }
                Some("mule_fan_out") => {
                    fan_out_senders.insert(t.fintech_use_num.clone());
                }
                _ => {}
            }
            if let Some(ty) = fraud.get(&t.bank_tran_id) {
                if ty != "mule_fan_out" {
                    fraud_payees.entry(t.payee_key()).or_default().insert(t.fintech_use_num.clone());
                }
            }
        }
        assert!(!senders.is_empty());
        for (payee, s) in &senders {
            assert!(s.len() >= 3, "mule {payee} has only {} senders", s.len());
        }
        assert!(!fan_out_senders.is_empty());
        // The mule pool is reused: some payee gets fraud from victims of
        // more than one incident.
        assert!(fraud_payees.values().any(|s| s.len() >= 2));
    }

    #[test]
    fn bad_configs_are_errors_not_panics() {
        let ok = GeneratorConfig::default();
        let bad = [
            GeneratorConfig { accounts: 99, ..ok.clone() },
            GeneratorConfig { accounts: 20_000_000, ..ok.clone() },
            GeneratorConfig { days: 0, ..ok.clone() },
            GeneratorConfig { days: 1_000, ..ok.clone() },
            GeneratorConfig { accounts: 1_000_000, days: 200, ..ok.clone() },
            GeneratorConfig { start: NaiveDate::from_ymd_opt(1969, 1, 1).unwrap(), ..ok.clone() },
            GeneratorConfig { voice_phishing_per_10k: f64::NAN, ..ok.clone() },
            GeneratorConfig { loan_fraud_per_10k: -1.0, ..ok.clone() },
            GeneratorConfig { fan_out_probability: 1.5, ..ok.clone() },
            GeneratorConfig { false_report_rate: f64::INFINITY, ..ok.clone() },
        ];
        for cfg in bad {
            let mut out = Vec::new();
            let err = generate(&cfg, &mut out).unwrap_err();
            assert!(matches!(err, GenerateError::Config(_)), "{err}");
            assert!(out.is_empty());
        }
        // The smallest config works, with or without fraud.
        let tiny = GeneratorConfig { accounts: 100, days: 3, ..ok.clone() };
        run(&tiny);
        let none = GeneratorConfig {
            accounts: 100,
            voice_phishing_per_10k: 0.0,
            account_takeover_per_10k: 0.0,
            mule_campaigns_per_10k: 0.0,
            loan_fraud_per_10k: 0.0,
            false_report_rate: 0.0,
            ..ok
        };
        assert_eq!(run(&none).1.labels, 0);
    }

    #[test]
    fn own_exp_and_ln_match_the_platform() {
        for x in [-20.0, -1.5, -0.1, 0.0, 0.3, 1.0, 2.5, 10.3, 17.0] {
            let (a, b) = (det_exp(x), f64::exp(x));
            assert!((a - b).abs() <= b * 1e-14, "exp({x}): {a} vs {b}");
        }
        for x in [1e-6, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0, 80_000.0, 3e7] {
            let (a, b) = (det_ln(x), f64::ln(x));
            assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0), "ln({x}): {a} vs {b}");
        }
    }

    #[test]
    fn progress_is_reported() {
        let mut calls = Vec::new();
        let summary = generate_with_progress(&small(1), std::io::sink(), &mut |n| calls.push(n)).unwrap();
        assert_eq!(calls.last(), Some(&summary.events));
        assert!(calls.windows(2).all(|w| w[0] <= w[1]));
    }

    /// `cargo test --release --lib generate -- --ignored --nocapture`
    #[test]
    #[ignore = "timing; run in release"]
    fn throughput_200k_accounts() {
        let cfg = GeneratorConfig { accounts: 200_000, ..GeneratorConfig::default() };
        let started = std::time::Instant::now();
        let summary = generate(&cfg, std::io::sink()).unwrap();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{} events ({} transfers, {} fraud) in {secs:.2}s: {:.0} events/s, {:.0} MB/s",
            summary.events,
            summary.transfers,
            summary.fraud_transfers,
            summary.events as f64 / secs,
            summary.bytes as f64 / secs / 1e6
        );
        println!("{summary:#?}");
    }
}
