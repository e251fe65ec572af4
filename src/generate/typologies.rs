//! Fraud, one KST day at a time: voice phishing, account takeover, mule
//! fan-in campaigns and the mules' onward fan-out, advance-fee loan fraud, each
//! with the context events that precede it and its late fraud reports (see
//! the typologies in the module doc of [`super`]).

use super::*;

impl<'c> Generator<'c> {
    // -- fraud ---------------------------------------------------------------

    pub(super) fn fraud_day(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
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
    pub(super) fn pick_victim(&mut self, rng: &mut ChaCha8Rng, older: bool) -> Option<u32> {
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
    pub(super) fn pick_mule(&self, t: u32, rng: &mut ChaCha8Rng) -> u32 {
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

    pub(super) fn fraud_device(&mut self, rng: &mut ChaCha8Rng) -> u32 {
        if chance(rng, 0.5) {
            FRAUD_DEVICE + between(rng, 0, self.world.n_ring_devices - 1)
        } else {
            self.next_fresh_device = self.next_fresh_device.wrapping_add(1).max(FRESH_FRAUD_DEVICE);
            self.next_fresh_device
        }
    }

    pub(super) fn fraud_ip(&self, rng: &mut ChaCha8Rng) -> u32 {
        self.fraud_ips[between(rng, 0, self.fraud_ips.len() as u32 - 1) as usize]
    }

    /// Push a fraudulent transfer; its label is added by the caller once the
    /// incident's report time is known.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fraud_transfer(
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
    pub(super) fn report(&mut self, rng: &mut ChaCha8Rng, done: &[(Rec, u32)]) {
        let Some(last) = done.iter().map(|(r, _)| r.t).max() else {
            return;
        };
        let reported = report_time(rng, last);
        for (rec, ord) in done {
            self.label(reported, rec, *ord, LabelStatus::Fraud, rec.typology);
        }
    }

    pub(super) fn label(&mut self, t: u32, rec: &Rec, ord: u32, status: LabelStatus, typology: Typology) {
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

    pub(super) fn voice_phishing(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
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
            self.sink.context(RecKind::RemoteApp { app }, t0, v, home, 0);
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

    pub(super) fn account_takeover(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
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

    pub(super) fn mule_campaign(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
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

    pub(super) fn loan_fraud(&mut self, day: &DayInfo, rng: &mut ChaCha8Rng) {
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

    pub(super) fn maybe_fan_out(&mut self, rng: &mut ChaCha8Rng, received: &[(Rec, u32)]) {
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
    pub(super) fn fan_out(&mut self, rng: &mut ChaCha8Rng, batch: &[(Rec, u32)]) {
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
