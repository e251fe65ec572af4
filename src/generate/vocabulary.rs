//! The generator's vocabulary and reference data: id spaces for payees and
//! devices, the kinds of record and the fraud typologies as types, and the
//! banks, names, merchants and daily rhythms generated traffic is drawn from.

use super::*;

// Payee ids. Every payee (bank code + account number) is derived from a u32 id
// below 10^9, and the 9-digit core of its account number is a bijection of the
// id, so distinct ids never collide. Ids below the account count are the
// generated sender accounts themselves (family members, and mules receiving).
pub(super) const EXT_BASE: u32 = 10_000_000;
pub(super) const EXT_END: u32 = 800_000_000;
pub(super) const OFFICE_BASE: u32 = 800_000_000;
pub(super) const MERCHANT_BASE: u32 = 810_000_000;
pub(super) const COLLECTOR_BASE: u32 = 820_000_000;
pub(super) const LOAN_BASE: u32 = 830_000_000;

// Device keys: 0 = none; genuine = account * 8 + slot + 1; fraud >= FRAUD_DEVICE.
pub(super) const FRAUD_DEVICE: u32 = 0xF000_0000;
pub(super) const FRESH_FRAUD_DEVICE: u32 = 0xF100_0000;
pub(super) const SLOT_PC: u32 = 6;
pub(super) const SLOT_TABLET: u32 = 7;

/// What a record becomes when written, with the one detail only that kind
/// of event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecKind {
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
pub(super) enum Typology {
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
    pub(super) const FRAUD: [Typology; 5] = [
        Typology::VoicePhishing,
        Typology::AccountTakeover,
        Typology::MuleFanIn,
        Typology::MuleFanOut,
        Typology::LoanFraud,
    ];

    /// The `typology` string of a label (empty for genuine transfers).
    pub(super) fn label(self) -> &'static str {
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
pub(super) const F_OLDER: u8 = 1;
pub(super) const F_TABLET: u8 = 2;
pub(super) const F_MULE: u8 = 4;
pub(super) const F_NEW: u8 = 8;
pub(super) const F_VICTIM: u8 = 16;
pub(super) const F_PC: u8 = 32;

// ---------------------------------------------------------------------------
// Reference data
// ---------------------------------------------------------------------------

pub(super) struct Bank {
    pub(super) code: &'static str,
    /// Share among ordinary people's accounts.
    pub(super) weight: u32,
    /// Share among mule accounts: internet-only banks open accounts remotely.
    pub(super) mule_weight: u32,
    pub(super) prefix: &'static str,
    pub(super) len: usize,
}

pub(super) const BANKS: [Bank; 9] = [
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
pub(super) const SURNAMES: [(&str, u32); 42] = [
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

pub(super) const GIVEN: [&str; 50] = [
    "민", "서", "지", "현", "준", "우", "영", "수", "예", "하", "윤", "은", "도", "재", "정", "승", "연", "진", "희",
    "성", "호", "혜", "경", "동", "상", "태", "유", "주", "나", "아", "원", "채", "시", "건", "훈", "석", "철", "숙",
    "자", "순", "미", "옥", "기", "용", "광", "명", "혁", "빈", "린", "율",
];

/// Large merchants and billers, most popular first (payments go to them with
/// purpose `ST` from a large share of all accounts: legitimate fan-in).
pub(super) const MERCHANTS: [&str; 24] = [
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
pub(super) const SHOP_PREFIX: [&str; 12] =
    ["하늘", "바다", "초록", "행복", "다온", "미소", "소담", "온누리", "한빛", "새봄", "푸른", "별빛"];
pub(super) const SHOP_SUFFIX: [&str; 8] = ["상회", "마켓", "샵", "스토어", "공방", "유통", "푸드", "농원"];
pub(super) const APT_BRANDS: [&str; 12] = [
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
pub(super) const REMOTE_APPS: [&str; 5] =
    ["TeamViewer QuickSupport", "AnyDesk", "RemoteCall", "RemoteView", "Chrome Remote Desktop"];

/// Institution codes for `bank_tran_id`: the bank's own app, its internet
/// banking, then open-banking partners (fintech apps).
pub(super) const INSTITUTIONS: [&str; 8] =
    ["120220001", "120220002", "199160010", "199160023", "199160031", "199160045", "199160052", "199160068"];
pub(super) const INST_MOBILE: u8 = 0;
pub(super) const INST_INTERNET: u8 = 1;
pub(super) const INST_PARTNERS: u32 = 6;

/// Relative transfer volume per KST hour (weekday, weekend): quiet 01–06, peaks
/// at lunch and in the evening; weekends start later and are flatter.
pub(super) const HOURS_WEEKDAY: [u32; 24] =
    [6, 3, 2, 1, 1, 2, 6, 15, 25, 35, 40, 45, 60, 50, 40, 40, 40, 45, 55, 60, 60, 55, 40, 20];
pub(super) const HOURS_WEEKEND: [u32; 24] =
    [10, 6, 3, 2, 1, 1, 3, 6, 12, 22, 32, 40, 48, 45, 42, 40, 40, 42, 48, 52, 52, 48, 36, 20];
/// Business hours, for reports and daytime fraud.
pub(super) const HOURS_OFFICE: [u32; 24] =
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 45, 45, 25, 35, 45, 45, 40, 30, 10, 0, 0, 0, 0, 0];
/// Night-heavy, for account takeovers.
pub(super) const HOURS_NIGHT: [u32; 24] =
    [40, 45, 45, 40, 35, 25, 8, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 6, 8, 10, 15, 25];

/// Day-of-week volume factor, Monday first.
pub(super) const WEEKDAY_FACTOR: [f64; 7] = [1.05, 1.0, 1.0, 1.0, 1.12, 0.85, 0.7];
