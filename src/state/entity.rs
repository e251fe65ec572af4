//! What is kept per entity: a sender account, a payee, a device, each with
//! its windows and capped collections, and the views the features read (each
//! entity as it was before the transfer being decided). The maps that hold
//! them, and the order of reads and writes, are the state module's.

use smallvec::SmallVec;

use super::changes::Stamps;
use super::windows::{DayCounts, LastSeen, LogStats, RecentTimes, Ring};
use super::{StateConfig, Window};
use crate::event::{EventTime, DAY_MS, HOUR_MS, MINUTE_MS};

pub(super) const NEVER: i64 = i64::MIN;

/// Payees first sent to in the last 24 hours, kept per account: the count
/// saturates here, far above what any rule compares it with (a handful).
pub(super) const MAX_NEW_PAYEES: usize = 64;

/// Failed logins in the last hour, kept per account: the count saturates here.
pub(super) const MAX_FAILED_LOGINS: usize = 64;

/// The longest key of an entity: a device id, as the event decoder bounds it
/// (a fintech use number is at most 24 bytes, a payee key 20).
pub(super) const MAX_KEY_BYTES: usize = crate::event::MAX_DEVICE_ID_BYTES;

/// Everything kept per sender account.
#[derive(Debug, Clone)]
pub struct AccountState {
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
    pub(super) lifetime_count: u64,
    pub(super) max_amount: i64,
    pub(super) log_stats: LogStats,
    pub(super) out_1m: Ring<10, MINUTE_MS>,
    pub(super) out_5m: Ring<12, { 5 * MINUTE_MS }>,
    pub(super) out_1h: Ring<24, HOUR_MS>,
    pub(super) out_1d: Ring<30, DAY_MS>,
    pub(super) payees: LastSeen,
    pub(super) new_payees: RecentTimes,
    /// Device hash, when this account first used it, and when it last did.
    pub(super) devices: SmallVec<[(u64, i64, i64); 3]>,
    pub(super) failed_logins: RecentTimes,
    pub(super) last_cert_reissue: i64,
    pub(super) last_device_registered: i64,
    pub(super) last_phone_change: i64,
    pub(super) last_remote_app: i64,
    pub(super) last_limit_raised: i64,
    pub(super) last_ekyc: i64,
    pub(super) last_hold: i64,
    /// Not state: what the change tracking keeps (see `changes`).
    pub(super) stamps: Stamps,
}

impl AccountState {
    pub(super) fn new(t: EventTime) -> Self {
        AccountState {
            first_seen: t.millis(),
            last_seen: t.millis(),
            lifetime_count: 0,
            max_amount: 0,
            log_stats: LogStats::default(),
            out_1m: Ring::default(),
            out_5m: Ring::default(),
            out_1h: Ring::default(),
            out_1d: Ring::default(),
            payees: LastSeen::default(),
            new_payees: RecentTimes::default(),
            devices: SmallVec::new(),
            failed_logins: RecentTimes::default(),
            last_cert_reissue: NEVER,
            last_device_registered: NEVER,
            last_phone_change: NEVER,
            last_remote_app: NEVER,
            last_limit_raised: NEVER,
            last_ekyc: NEVER,
            last_hold: NEVER,
            stamps: Stamps::default(),
        }
    }

    pub(super) fn device_first_seen(&self, h: u64) -> Option<i64> {
        self.devices.iter().find(|(k, _, _)| *k == h).map(|&(_, first, _)| first)
    }

    pub(super) fn remember_device(&mut self, h: u64, t: EventTime, cap: usize) {
        if let Some(d) = self.devices.iter_mut().find(|(k, _, _)| *k == h) {
            d.1 = d.1.min(t.millis());
            d.2 = d.2.max(t.millis());
            return;
        }
        // Forget the device used least recently: the customer's everyday
        // phone is used all the time and must not be the one to go.
        self.trim_devices(cap.saturating_sub(1));
        self.devices.push((h, t.millis(), t.millis()));
    }

    /// Forget the devices used least recently until at most `cap` are left.
    pub(super) fn trim_devices(&mut self, cap: usize) {
        while self.devices.len() > cap {
            let Some(i) = (0..self.devices.len()).min_by_key(|&i| self.devices[i].2) else { return };
            self.devices.swap_remove(i);
        }
    }

    /// Hold every collection to `cfg`'s caps (an account read from a
    /// snapshot written with larger ones), evicting as at the cap.
    pub(super) fn trim_to_caps(&mut self, cfg: &StateConfig) {
        self.payees.trim(cfg.max_known_payees);
        self.new_payees.trim(MAX_NEW_PAYEES);
        self.trim_devices(cfg.max_known_devices);
        self.failed_logins.trim(MAX_FAILED_LOGINS);
    }

    pub(super) fn view(&self, now: EventTime, payee: u64, device: Option<u64>) -> AccountView {
        let mut windows = [(0, 0); 5];
        for (out, w) in windows.iter_mut().zip(Window::ALL) {
            *out = match w {
                Window::Min10 => self.out_1m.total(now, 10),
                Window::Hour1 => self.out_5m.total(now, 12),
                Window::Hour24 => self.out_1h.total(now, 24),
                Window::Day7 => self.out_1d.total(now, 7),
                Window::Day30 => self.out_1d.total(now, 30),
            };
        }
        AccountView {
            first_seen: EventTime(self.first_seen),
            lifetime_count: self.lifetime_count,
            windows,
            max_amount: self.max_amount,
            log_zscore_of: self.log_stats,
            payee_known: self.payees.get(payee).is_some(),
            known_payees: self.payees.0.len() as i64,
            new_payees_24h: self.new_payees.count_within(now, DAY_MS),
            device_first_seen: device.and_then(|d| self.device_first_seen(d)).map(EventTime),
            last_cert_reissue: opt_time(self.last_cert_reissue),
            last_device_registered: opt_time(self.last_device_registered),
            last_phone_change: opt_time(self.last_phone_change),
            last_remote_app: opt_time(self.last_remote_app),
            last_limit_raised: opt_time(self.last_limit_raised),
            last_ekyc: opt_time(self.last_ekyc),
            last_hold: opt_time(self.last_hold),
            failed_logins_1h: self.failed_logins.count_within(now, HOUR_MS),
        }
    }

    /// Every attempt counts toward velocity, whatever its decision.
    pub(super) fn count_attempt(&mut self, t: EventTime, amount: i64) {
        self.last_seen = self.last_seen.max(t.millis());
        self.lifetime_count += 1;
        self.out_1m.add(t, amount);
        self.out_5m.add(t, amount);
        self.out_1h.add(t, amount);
        self.out_1d.add(t, amount);
    }

    /// Only an allowed transfer teaches the account's habits: a held one must
    /// not make its payee "known" or its amount "usual", or simply retrying it
    /// would get it through.
    pub(super) fn settle(
        &mut self,
        t: EventTime,
        amount: i64,
        payee: u64,
        device: Option<u64>,
        held: bool,
        cfg: &StateConfig,
    ) {
        if held {
            self.last_hold = self.last_hold.max(t.millis());
            return;
        }
        self.max_amount = self.max_amount.max(amount);
        self.log_stats.add(amount);
        if self.payees.touch(payee, t, cfg.max_known_payees) {
            self.new_payees.push(t, DAY_MS, MAX_NEW_PAYEES);
        }
        if let Some(d) = device {
            self.remember_device(d, t, cfg.max_known_devices);
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.payees.heap_bytes()
            + self.new_payees.heap_bytes()
            + if self.devices.spilled() { self.devices.capacity() * size_of::<(u64, i64, i64)>() } else { 0 }
            + self.failed_logins.heap_bytes()
    }
}

pub(super) fn opt_time(t: i64) -> Option<EventTime> {
    (t != NEVER).then_some(EventTime(t))
}

/// An account as it was just before a transfer, as features read it.
#[derive(Debug, Clone, Copy)]
pub struct AccountView {
    /// The account's first event this engine saw (not when it was opened).
    pub first_seen: EventTime,
    /// Transfers attempted, held ones included.
    pub lifetime_count: u64,
    /// (transfers, won) sent in each window, in [`Window::ALL`] order; read
    /// through [`AccountView::count`] and [`AccountView::sum`].
    pub(super) windows: [(i64, i64); 5],
    /// The largest allowed transfer, in won.
    pub max_amount: i64,
    pub(super) log_zscore_of: LogStats,
    /// The account has sent to this payee before.
    pub payee_known: bool,
    /// Distinct payees remembered (at most [`StateConfig::max_known_payees`]).
    pub known_payees: i64,
    /// Payees first sent to in the last 24 hours.
    pub new_payees_24h: i64,
    /// When this account first used the transfer's device, if ever.
    pub device_first_seen: Option<EventTime>,
    /// The last joint-certificate issue or re-issue (renewals do not count).
    pub last_cert_reissue: Option<EventTime>,
    /// The last device registration.
    pub last_device_registered: Option<EventTime>,
    /// The last phone-number change.
    pub last_phone_change: Option<EventTime>,
    /// The last time a remote-control app was detected.
    pub last_remote_app: Option<EventTime>,
    /// The last transfer-limit raise.
    pub last_limit_raised: Option<EventTime>,
    /// The last non-face-to-face identity verification.
    pub last_ekyc: Option<EventTime>,
    /// The account's last held transfer.
    pub last_hold: Option<EventTime>,
    /// Failed logins in the last hour.
    pub failed_logins_1h: i64,
}

impl AccountView {
    /// Transfers the account sent in window `w`.
    #[inline]
    pub fn count(&self, w: Window) -> i64 {
        self.windows[w as usize].0
    }

    /// Won the account sent in window `w`.
    #[inline]
    pub fn sum(&self, w: Window) -> i64 {
        self.windows[w as usize].1
    }

    /// z-score of log10(amount) against the account's earlier transfers.
    pub fn amount_log_zscore(&self, amount: i64) -> f64 {
        self.log_zscore_of.zscore(amount)
    }
}

/// Everything kept per payee (bank code + account number), across all senders.
#[derive(Debug, Clone)]
pub struct PayeeState {
    pub(super) first_seen: i64,
    pub(super) last_seen: i64,
    pub(super) in_1h: Ring<24, HOUR_MS>,
    /// Incoming transfers by day: the 7- and 30-day counts, and the transfers
    /// that recent reports can refer to (the denominators of the fraud shares).
    pub(super) in_1d: DayCounts<PAYEE_DAYS>,
    pub(super) senders: LastSeen,
    /// Reports by transfer id (hashed): (transfer, report time, still fraud).
    /// Keyed by transfer so a report delivered twice counts once and a
    /// withdrawal cancels exactly the report it names.
    pub(super) reports: SmallVec<[(u64, i64, bool); 2]>,
    /// Not state: what the change tracking keeps (see `changes`).
    pub(super) stamps: Stamps,
}

/// Reports remembered per payee; the count saturates here.
pub(super) const MAX_REPORTS: usize = 64;

/// Days a report is assumed to arrive after the transfer it names, at most:
/// the handbook's label delay, and about the time a Korean victim of voice
/// phishing or a fake seller takes to notice and report.
pub const REPORT_LAG_DAYS: usize = 7;

/// The report windows of a payee's risk features, in days.
pub const REPORT_WINDOW_DAYS: [usize; 3] = [1, 7, 30];

/// Daily buckets of a payee's incoming transfers: the longest report window,
/// the report lag, and one more because the far edge snaps to a bucket.
pub(super) const PAYEE_DAYS: usize = 30 + REPORT_LAG_DAYS + 1;

impl PayeeState {
    pub(super) fn new(t: EventTime) -> Self {
        PayeeState {
            first_seen: t.millis(),
            last_seen: t.millis(),
            in_1h: Ring::default(),
            in_1d: DayCounts::default(),
            senders: LastSeen::default(),
            reports: SmallVec::new(),
            stamps: Stamps::default(),
        }
    }
    pub(super) fn open_reports(&self) -> i64 {
        self.reports.iter().filter(|r| r.2).count() as i64
    }
    /// One transfer in, from the account hashed `account_h`.
    pub(super) fn count_in(&mut self, now: EventTime, amount: i64, account_h: u64, cfg: &StateConfig) {
        self.last_seen = self.last_seen.max(now.millis());
        self.in_1h.add(now, amount);
        self.in_1d.add(now);
        self.senders.touch(account_h, now, cfg.max_payee_senders);
    }
    pub(super) fn apply_report(&mut self, tran: u64, at: EventTime, fraud: bool) {
        match self.reports.iter_mut().find(|r| r.0 == tran) {
            // The latest word on a transfer wins, whatever order the labels
            // arrive in; at the same time a withdrawal wins.
            Some(r) => {
                if at.millis() > r.1 || (at.millis() == r.1 && !fraud) {
                    r.1 = at.millis();
                    r.2 = fraud;
                }
            }
            // A withdrawal of a report never seen changes nothing.
            None if !fraud => {}
            None => {
                self.trim_reports(MAX_REPORTS - 1);
                self.reports.push((tran, at.millis(), true));
            }
        }
    }
    /// Drop reports until at most `cap` are left: a withdrawn report first,
    /// else the oldest.
    pub(super) fn trim_reports(&mut self, cap: usize) {
        while self.reports.len() > cap {
            let victim = (0..self.reports.len()).min_by_key(|&i| (self.reports[i].2, self.reports[i].1));
            let Some(i) = victim else { return };
            self.reports.swap_remove(i);
        }
    }
    /// Hold every collection to `cfg`'s caps (see [`AccountState::trim_to_caps`]).
    pub(super) fn trim_to_caps(&mut self, cfg: &StateConfig) {
        self.senders.trim(cfg.max_payee_senders);
        self.trim_reports(MAX_REPORTS);
    }
    pub(super) fn view(&self, now: EventTime) -> PayeeView {
        let (c24h, s24h) = self.in_1h.total(now, 24);
        let ([w1, w7, w30], lag) = (REPORT_WINDOW_DAYS, REPORT_LAG_DAYS);
        // 7 and 30 days as the account rings count them; N + L + 1 buckets
        // cover at least the N + L days before now that reports received in
        // the last N days can name transfers from.
        let [c7d, share1, share7, c30d, share30] =
            self.in_1d.totals(now, [7, w1 + lag + 1, w7 + lag + 1, 30, w30 + lag + 1]);
        // Reports dated after `now` (delivered ahead of a transfer from another
        // partition) are not yet known at `now`.
        let mut reports = [0i64; 3];
        let mut last_report = None;
        for &(_, at, open) in &self.reports {
            if !open {
                continue;
            }
            last_report = last_report.max(Some(at));
            for (r, days) in reports.iter_mut().zip(REPORT_WINDOW_DAYS) {
                *r += i64::from(at <= now.millis() && at > now.millis() - days as i64 * DAY_MS);
            }
        }
        PayeeView {
            first_seen: EventTime(self.first_seen),
            distinct_senders_1h: self.senders.count_within(now, HOUR_MS),
            distinct_senders_24h: self.senders.count_within(now, DAY_MS),
            in_count_24h: c24h,
            in_sum_24h: s24h,
            in_count_7d: c7d,
            in_count_30d: c30d,
            fraud_reports: self.open_reports(),
            last_report: last_report.map(EventTime),
            recent_reports: reports,
            reportable_transfers: [share1, share7, share30],
        }
    }
    pub(super) fn heap_bytes(&self) -> usize {
        self.senders.heap_bytes()
            + if self.reports.spilled() { self.reports.capacity() * size_of::<(u64, i64, bool)>() } else { 0 }
    }
}

/// A payee as it was just before a transfer.
#[derive(Debug, Clone, Copy)]
pub struct PayeeView {
    /// The payee's first transfer or report this engine saw.
    pub first_seen: EventTime,
    /// Distinct sender accounts in the last hour (exact, up to the cap).
    pub distinct_senders_1h: i64,
    /// Distinct sender accounts in the last 24 hours.
    pub distinct_senders_24h: i64,
    /// Transfers into the payee in the last 24 hourly buckets.
    pub in_count_24h: i64,
    /// Won into the payee in the same buckets.
    pub in_sum_24h: i64,
    /// Transfers into the payee in the last 7 and 30 daily buckets.
    pub in_count_7d: i64,
    /// See `in_count_7d`.
    pub in_count_30d: i64,
    /// Open fraud reports, one per reported transfer, whenever received.
    pub fraud_reports: i64,
    /// The latest open report's time.
    pub last_report: Option<EventTime>,
    /// Open reports received in the last 1, 7 and 30 days ([`REPORT_WINDOW_DAYS`]),
    /// exact to the millisecond, saturating at 64 reports.
    pub recent_reports: [i64; 3],
    /// For each report window of N days: transfers into the payee in the last
    /// N + [`REPORT_LAG_DAYS`] + 1 daily buckets, which cover every transfer a
    /// report received in the window can name if reports arrive within
    /// [`REPORT_LAG_DAYS`] of their transfer.
    pub reportable_transfers: [i64; 3],
}

/// Everything kept per device, across all accounts that use it.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub(super) last_seen: i64,
    pub(super) transfers_5m: Ring<12, { 5 * MINUTE_MS }>,
    pub(super) accounts: LastSeen,
    /// Not state: what the change tracking keeps (see `changes`).
    pub(super) stamps: Stamps,
}

impl DeviceState {
    pub(super) fn new(t: EventTime) -> Self {
        DeviceState {
            last_seen: t.millis(),
            transfers_5m: Ring::default(),
            accounts: LastSeen::default(),
            stamps: Stamps::default(),
        }
    }
    /// One transfer made from the device by the account hashed `account_h`.
    pub(super) fn count_use(&mut self, now: EventTime, amount: i64, account_h: u64, cfg: &StateConfig) {
        self.last_seen = self.last_seen.max(now.millis());
        self.transfers_5m.add(now, amount);
        self.accounts.touch(account_h, now, cfg.max_device_accounts);
    }
    /// Hold the accounts to `cfg`'s cap (see [`AccountState::trim_to_caps`]).
    pub(super) fn trim_to_caps(&mut self, cfg: &StateConfig) {
        self.accounts.trim(cfg.max_device_accounts);
    }
    pub(super) fn view(&self, now: EventTime) -> DeviceView {
        DeviceView {
            distinct_accounts_24h: self.accounts.count_within(now, DAY_MS),
            count_1h: self.transfers_5m.total(now, 12).0,
        }
    }
    pub(super) fn heap_bytes(&self) -> usize {
        self.accounts.heap_bytes()
    }
}

/// A device as it was just before a transfer.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView {
    /// Distinct accounts that used the device in the last 24 hours.
    pub distinct_accounts_24h: i64,
    /// Transfers from the device in the last 12 five-minute buckets.
    pub count_1h: i64,
}

/// Views of the three entities a transfer touches, each as it was before it.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The sender.
    pub account: AccountView,
    /// The payee, across all its senders.
    pub payee: PayeeView,
    /// The device, when the transfer names one.
    pub device: Option<DeviceView>,
    /// The payee's and device's key hashes, kept for [`State::settle_transfer`].
    pub(super) payee_hash: u64,
    pub(super) device_hash: Option<u64>,
}
