//! Genuine behaviour, one KST day at a time: each customer's habits (regular
//! payees, rent and management fees on their days, salary-day peaks, shopping,
//! logins before transfers, phone upgrades and certificate renewals) and the
//! legitimate fan-in that makes naive mule rules noisy (club dues, wedding and
//! funeral money).

use super::*;

pub(super) struct Generator<'c> {
    pub(super) cfg: &'c GeneratorConfig,
    pub(super) world: World,
    pub(super) profiles: Vec<Profile>,
    pub(super) mules: Vec<Mule>,
    /// Fraud-ring IP addresses, shared across incidents.
    pub(super) fraud_ips: Vec<u32>,
    pub(super) next_fresh_device: u32,
    pub(super) sink: Sink,
}

/// Facts about the day being generated.
pub(super) struct DayInfo {
    pub(super) start: u32,
    pub(super) weekday: u32,
    pub(super) day_of_month: u32,
    pub(super) factor: f64,
}

impl<'c> Generator<'c> {
    pub(super) fn new(cfg: &'c GeneratorConfig) -> Self {
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

    pub(super) fn day(&mut self, index: u32) {
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
    pub(super) fn social_day(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
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

    pub(super) fn social_transfer(&mut self, i: u32, t: u32, payee: u32, amount: u32, lo: u32, rng: &mut ChaCha8Rng) {
        let p = self.profiles[i as usize];
        let channel = self.pick_channel(&p, rng);
        self.genuine_transfer(i, &p, p.gen, t, payee, amount, channel, TransferPurpose::Transfer, lo, rng);
    }

    pub(super) fn genuine_day(&mut self, i: u32, day: &DayInfo, rng: &mut ChaCha8Rng) {
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
    pub(super) fn genuine_transfer(
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
    pub(super) fn endpoint(
        &self,
        i: u32,
        p: &Profile,
        gen: u8,
        channel: Channel,
        rng: &mut ChaCha8Rng,
    ) -> (u32, u32, u8) {
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

    pub(super) fn transfer_with_false_report(&mut self, mut rec: Rec, rng: &mut ChaCha8Rng) {
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

    pub(super) fn pick_channel(&self, p: &Profile, rng: &mut ChaCha8Rng) -> Channel {
        if chance(rng, 0.88) {
            p.channel
        } else {
            [Channel::MobileApp, Channel::InternetBanking, Channel::OpenBanking][between(rng, 0, 2) as usize]
        }
    }

    /// A transfer to one of the account's regular payees; the first few are
    /// favoured (a spouse or parent more than an old friend), and each payee has
    /// its own typical amount around the account's.
    pub(super) fn regular_payment(&self, i: u32, p: &Profile, rng: &mut ChaCha8Rng) -> (u32, u32) {
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

    pub(super) fn shopping(&self, rng: &mut ChaCha8Rng) -> (u32, u32) {
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
    pub(super) fn big_genuine(&mut self, i: u32, p: &Profile, ds: u32, lo: u32, rng: &mut ChaCha8Rng) {
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

    pub(super) fn limit_raised(&mut self, i: u32, t: u32, rng: &mut ChaCha8Rng) {
        let limit = [10_000_000, 20_000_000, 30_000_000, 50_000_000, 100_000_000][between(rng, 0, 4) as usize];
        self.sink.push(Rec { t, account: i, amount: limit, kind: RecKind::LimitRaised, ..Rec::default() });
    }

    /// The day before a mule's first use, the ring registers its own device on
    /// the account and logs in.
    pub(super) fn mule_takeover(&mut self, i: u32, ds: u32, de: u32, rng: &mut ChaCha8Rng) {
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
}

pub(super) fn sample_time(rng: &mut ChaCha8Rng, hours: &[u32; 24], day_start: u32) -> u32 {
    let total: u32 = hours.iter().sum();
    let h = pick_weighted(hours, between(rng, 0, total - 1)) as u32;
    day_start + h * HOUR + between(rng, 0, HOUR - 1)
}

/// Victims report 1–10 days later (most within a few days), in office hours.
pub(super) fn report_time(rng: &mut ChaCha8Rng, t: u32) -> u32 {
    let u = uniform(rng);
    let days = 1 + (9.0 * u * u) as u32;
    let mut r = (t / DAY + days) * DAY + sample_time(rng, &HOURS_OFFICE, 0);
    if r < t + DAY {
        r += DAY;
    }
    r
}

/// Salary day: the 25th, or the Friday before when it falls on a weekend.
pub(super) fn salary_day(date: NaiveDate) -> u32 {
    let Some(d25) = date.with_day(25) else {
        return 25;
    };
    match d25.weekday().num_days_from_monday() {
        5 => 24,
        6 => 23,
        _ => 25,
    }
}
