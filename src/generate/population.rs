//! The population: every account, payee, name, account number and device is
//! derived from an index and the seed when needed, never stored; each sender
//! account has a small `Copy` profile of habits, and mules are drawn from the
//! recently opened accounts.

use super::*;

/// Facts about ids that are derived, not stored: names, account numbers,
/// devices. Shared by generation and rendering.
pub(super) struct World {
    pub(super) accounts: u32,
    /// Accounts below this index are established; the rest were opened
    /// recently (genuine newcomers and mules).
    pub(super) n_old: u32,
    pub(super) n_offices: u32,
    pub(super) n_shops: u32,
    pub(super) n_collectors: u32,
    /// Accounts advance-fee fraudsters collect "fees" into.
    pub(super) n_loan_payees: u32,
    pub(super) n_ring_devices: u32,
    /// Epoch seconds of the first day's midnight KST.
    pub(super) base: i64,
    pub(super) salt_payee: u64,
    pub(super) salt_name: u64,
    pub(super) salt_device: u64,
    pub(super) salt_profile: u64,
    pub(super) core_offset: u64,
    pub(super) bank_cum: Vec<u32>,
    pub(super) mule_bank_cum: Vec<u32>,
}

impl World {
    pub(super) fn new(cfg: &GeneratorConfig) -> Self {
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

    pub(super) fn is_mule_id(&self, payee: u32) -> bool {
        payee >= self.n_old && payee < self.accounts
    }

    pub(super) fn bank_of(&self, payee: u32) -> usize {
        let h = h3(self.salt_payee, u64::from(payee), 1);
        let fraudulent = self.is_mule_id(payee) || payee >= COLLECTOR_BASE;
        let weights = if fraudulent { &self.mule_bank_cum } else { &self.bank_cum };
        pick_weighted(weights, (h >> 32) as u32)
    }

    pub(super) fn account_number(&self, payee: u32, bank: &Bank) -> String {
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

    pub(super) fn person_name(&self, id: u64) -> String {
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

    pub(super) fn payee_name(&self, payee: u32) -> String {
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

    pub(super) fn device_id(&self, key: u32) -> String {
        format!("D{:016x}", mix64(u64::from(key) ^ self.salt_device))
    }

    pub(super) fn home_device(account: u32, gen: u8) -> u32 {
        account * 8 + u32::from(gen % 6) + 1
    }

    pub(super) fn slot_device(account: u32, slot: u32) -> u32 {
        account * 8 + slot + 1
    }

    pub(super) fn home_ip(&self, account: u32) -> u32 {
        0xC0A8_0000 | (h3(self.salt_device, u64::from(account), 7) as u32 & 0xFFFF)
    }

    pub(super) fn time(&self, t: u32) -> EventTime {
        EventTime::from_secs(self.base + i64::from(t))
    }
}

pub(super) fn fintech_use_num(account: u32) -> String {
    format!("1202200{account:017}")
}

/// Open-banking style: institution code, "U", a 9-digit sequence (20 chars).
pub(super) fn tran_id(inst: u8, seq: u64) -> String {
    format!("F{}U{seq:09}", INSTITUTIONS[usize::from(inst)])
}

pub(super) fn ip_string(ip: u32) -> String {
    let [a, b, c, d] = ip.to_be_bytes();
    format!("{a}.{b}.{c}.{d}")
}

/// A mobile session address: carrier NAT (10/8), or for a few travellers and
/// VPN users a documentation range, so an "unusual IP range" rule stays noisy.
pub(super) fn mobile_ip(rng: &mut ChaCha8Rng) -> u32 {
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
pub(super) struct Profile {
    /// ln of the median amount sent to regular payees.
    pub(super) mu: f32,
    pub(super) sigma: f32,
    /// Transfers per day.
    pub(super) rate: f32,
    /// When the account was opened (seconds relative to the window; negative =
    /// before it).
    pub(super) open_t: i64,
    /// Monthly rent to a landlord, won (0 = none).
    pub(super) rent_won: u32,
    /// Base monthly apartment management fee, won (0 = none).
    pub(super) fee_won: u32,
    pub(super) rent_day: u8,
    pub(super) fee_day: u8,
    /// Percent of transfers that are shopping payments.
    pub(super) shop_pct: u8,
    pub(super) n_payees: u8,
    pub(super) flags: u8,
    /// Current phone generation (increments on phone upgrades).
    pub(super) gen: u8,
    pub(super) channel: Channel,
    /// Open-banking partner used by this account.
    pub(super) partner: u8,
}

pub(super) struct Mule {
    pub(super) account: u32,
    pub(super) first_day: u32,
    pub(super) last_day: u32,
    pub(super) ring_device: u32,
    /// When the fraud ring took the account over (device registered, login).
    pub(super) takeover_t: i64,
}

pub(super) fn new_profile(w: &World, rng: &mut ChaCha8Rng, i: u32, window_end: i64) -> Profile {
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

pub(super) fn landlord_of(w: &World, i: u32) -> u32 {
    EXT_BASE + (h3(w.salt_profile, u64::from(i), 12) % u64::from(EXT_END - EXT_BASE)) as u32
}

/// Someone the sender has never paid: drawn from hundreds of millions of
/// external accounts, so a repeat is practically impossible.
pub(super) fn random_stranger(rng: &mut ChaCha8Rng) -> u32 {
    between(rng, EXT_BASE, EXT_END - 1)
}
