//! Streaming state: what the engine remembers about each sender account, payee
//! and device, aged by event time.
//!
//! This module owns the three concurrent maps (dashmap) and everything kept in
//! them: windowed counts and sums, known payees and devices per account, the last
//! time of each risky context event, a payee's distinct senders (mule fan-in),
//! incoming transfers by day and fraud reports (payee risk), a device's distinct
//! accounts.
//!
//! Guarantees:
//! - **Event time only.** Nothing here reads the wall clock; windows move with the
//!   times written on the events, so a replay gives bit-identical answers.
//! - **As-of reads.** [`State::observe_transfer`] returns views of each entity as it
//!   was *before* the transfer and counts the attempt; [`State::settle_transfer`]
//!   then records the decision. Only an allowed transfer teaches the account its
//!   payee, device and amount; a held one only marks the hold.
//! - **Ordering.** The caller keeps one account's events in order (the Kafka key
//!   is the account). Accounts may be processed concurrently, but payees and
//!   devices are shared between accounts, so their features then depend on how
//!   threads interleave: bit-identical answers need one thread over a
//!   time-ordered stream, which is what replay does.
//! - **Short locks, one at a time.** Each entity is locked only while it is read
//!   and updated, and never while another entity is locked, so no lock order
//!   exists to get wrong.
//! - **Bounded per entity.** Every per-entity collection has a fixed cap and
//!   windows are fixed rings; the number of entities is bounded by traffic and
//!   TTL: entities idle longer than their TTL are dropped by [`State::expire`]
//!   (payees with open fraud reports are kept). [`State::memory`] measures bytes
//!   per entity. The caps are listed below.
//! - **Bounded strings.** The only strings kept are the maps' keys: a fintech
//!   use number (at most 24 bytes), a payee key (3-digit bank code, `-`, at
//!   most 16 letters or digits: 20 bytes) or a device id (at most
//!   `MAX_KEY_BYTES`, 64 bytes), as the event decoder bounds them
//!   (`event/bounds.rs`). Keys from elsewhere are held to the same bound or
//!   near it: an observation's at `MAX_KEY_BYTES` (module `shared`), a
//!   snapshot record's at 256 bytes. Everything kept *per* entity is a 64-bit
//!   hash, a time or a number, never the string it came from.
//! - **Late events.** Context events that arrive late never move a "last seen"
//!   time backwards; window adds older than their ring are dropped.
//! - **Durable form.** [`State::write_snapshot`] and [`State::read_snapshot`]
//!   (module `snapshot`) turn the whole state into versioned, checksummed
//!   records and back, exactly.
//!
//! Windows are rings of time buckets. A window of `N` buckets of width `w` holds
//! the events whose bucket is one of the last `N` buckets up to and including the
//! current one: the near edge is exact, the far edge snaps to a bucket boundary
//! (so a "1 hour" window at 5-minute buckets covers between 55 and 60 minutes of
//! the past). Resolutions: 10 min at 1 min, 1 h at 5 min, 24 h at 1 h, 7 d and
//! 30 d at 1 day (KST days are not used; buckets are aligned to UTC epoch). A
//! payee's incoming transfers are also counted in 38 daily buckets, enough for
//! the 30 days that reports can be received in plus the 7 days before those
//! the reported transfers can date from, plus the far edge's partial bucket.
//!
//! Caps, per entity (why: a fuzzed or hostile stream, one account sending to
//! thousands of payees or one payee reported thousands of times, must not
//! grow one entity without bound, nor make a lookup a long scan):
//!
//! | entity | collection | bound | at the cap |
//! |---|---|---|---|
//! | account | known payees | `max_known_payees` (256) | the least recently paid is forgotten |
//! | account | new payees, last 24 h | `MAX_NEW_PAYEES` (64) | the oldest is dropped; the count saturates |
//! | account | known devices | `max_known_devices` (16) | the least recently used is forgotten |
//! | account | failed logins, last hour | `MAX_FAILED_LOGINS` (64) | the oldest is dropped; the count saturates |
//! | payee | distinct senders | `max_payee_senders` (256) | the least recently seen is forgotten |
//! | payee | fraud reports | `MAX_REPORTS` (64) | a withdrawn report goes first, else the oldest |
//! | device | distinct accounts | `max_device_accounts` (64) | the least recently seen is forgotten |
//! | all | windows | fixed rings ([`Ring`], [`DayCounts`]) | events older than the ring are dropped |
//!
//! At a full cap, a late payee, sender, device account, new payee or failed
//! login older than everything kept is not added (it would be the one
//! evicted); a device or a report is always added. An entity restored from a snapshot or a
//! changelog record written with larger caps is trimmed to this state's caps
//! the same way when it is read.
//!
//! Rooms: `windows` (rings and the other time-bounded counts), `entity` (what
//! is kept per account, payee and device, and the views features read),
//! `shared` (payee and device observations between instances), `snapshot`
//! and `changes` (the durable form, whole and incremental); this module holds
//! the maps and the order of reads and writes.

mod changes;
mod entity;
mod shared;
mod snapshot;
mod windows;

pub use changes::{Changed, EntityRecord, Ours};
pub use entity::{
    AccountState, AccountView, DeviceState, DeviceView, Observed, PayeeState, PayeeView, REPORT_LAG_DAYS,
    REPORT_WINDOW_DAYS,
};
use entity::{MAX_FAILED_LOGINS, MAX_KEY_BYTES};
pub use shared::{Observation, ObservationError, SharedCount, OBSERVATION_FORMAT};
pub use snapshot::{ExpiryClocks, SnapshotError, SnapshotStats, FORMAT_VERSION, MAGIC};
pub use windows::{DayCounts, Ring};
use windows::{LastSeen, LogStats, RecentTimes};

use std::mem::size_of;

use compact_str::CompactString;
use dashmap::DashMap;
use smallvec::SmallVec;

use crate::event::{CertificateAction, Event, EventTime, Label, LabelStatus, Transfer, DAY_MS, HOUR_MS};

/// The windows an account's outgoing transfers are counted and summed over.
/// Each is read from the ring whose resolution fits it (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The previous 10 minutes, in 1-minute buckets.
    Min10,
    /// The previous hour, in 5-minute buckets.
    Hour1,
    /// The previous 24 hours, in 1-hour buckets.
    Hour24,
    /// The previous 7 days, in 1-day buckets.
    Day7,
    /// The previous 30 days, in 1-day buckets.
    Day30,
}

impl Window {
    /// Every window, in the order [`AccountView`] keeps them.
    pub const ALL: [Window; 5] = [Window::Min10, Window::Hour1, Window::Hour24, Window::Day7, Window::Day30];
}

/// How long idle entities are kept, and per-entity caps.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// An account with no event for this long is forgotten (known payees and
    /// devices included). Must exceed the longest window (30 days).
    pub account_ttl_ms: i64,
    /// A payee idle this long is forgotten, unless it has open fraud reports.
    pub payee_ttl_ms: i64,
    /// A device idle this long is forgotten.
    pub device_ttl_ms: i64,
    /// Payees remembered per account; the least recently used is forgotten first.
    pub max_known_payees: usize,
    /// Devices remembered per account.
    pub max_known_devices: usize,
    /// Distinct senders tracked per payee; the fan-in count saturates here.
    pub max_payee_senders: usize,
    /// Distinct accounts tracked per device.
    pub max_device_accounts: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            account_ttl_ms: 90 * DAY_MS,
            payee_ttl_ms: 90 * DAY_MS,
            device_ttl_ms: 35 * DAY_MS,
            max_known_payees: 256,
            max_known_devices: 16,
            max_payee_senders: 256,
            max_device_accounts: 64,
        }
    }
}

/// Entity counts and measured memory.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MemoryReport {
    /// Accounts held.
    pub accounts: usize,
    /// Payees held.
    pub payees: usize,
    /// Devices held.
    pub devices: usize,
    /// Bytes the accounts take: entries, keys, heap collections, one slot each.
    pub account_bytes: usize,
    /// Bytes the payees take, measured the same way.
    pub payee_bytes: usize,
    /// Bytes the devices take, measured the same way.
    pub device_bytes: usize,
}

impl MemoryReport {
    /// Mean bytes per account, 0 with none.
    pub fn bytes_per_account(&self) -> usize {
        self.account_bytes.checked_div(self.accounts).unwrap_or(0)
    }
    /// Mean bytes per payee, 0 with none.
    pub fn bytes_per_payee(&self) -> usize {
        self.payee_bytes.checked_div(self.payees).unwrap_or(0)
    }
    /// Mean bytes per device, 0 with none.
    pub fn bytes_per_device(&self) -> usize {
        self.device_bytes.checked_div(self.devices).unwrap_or(0)
    }
    /// Bytes of the whole state.
    pub fn total_bytes(&self) -> usize {
        self.account_bytes + self.payee_bytes + self.device_bytes
    }
}

/// Keys up to 24 bytes (account numbers, fintech use numbers, payee keys,
/// device ids) are stored inline and values are boxed, so the table itself is
/// small (32 bytes a slot) and mostly stays in cache: a lookup then costs about
/// one cache miss, for the entity itself, instead of three.
type Map<V> = DashMap<CompactString, Box<V>, ahash::RandomState>;

/// Shards per map, whatever the cores: a whole checkpoint walks the state a
/// shard at a time between two messages (see `changes`), so a shard must stay
/// small; 1,000,000 accounts make about 4,000 per shard. A lookup costs the
/// same with any number.
const SHARDS: usize = 256;

fn new_map<V>() -> Map<V> {
    Map::with_hasher_and_shard_amount(ahash::RandomState::default(), SHARDS)
}

/// A stable 64-bit hash of a key, for the small per-entity sets. Fixed seeds so
/// the same input gives the same state (and the same decisions) on every run.
fn key_hash(s: &str) -> u64 {
    static HASHER: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    HASHER
        .get_or_init(|| {
            ahash::RandomState::with_seeds(
                0x6664_735f_6b65_7931,
                0x9e37_79b9_7f4a_7c15,
                0xc2b2_ae3d_27d4_eb4f,
                0x1656_67b1_9e37_79f9,
            )
        })
        .hash_one(s)
}

/// The engine's memory of accounts, payees and devices.
pub struct State {
    cfg: StateConfig,
    accounts: Map<AccountState>,
    payees: Map<PayeeState>,
    devices: Map<DeviceState>,
    /// The entities changed since they were last taken, when asked to keep
    /// them (see [`State::track_changes`]).
    changes: changes::Tracker,
}

impl std::fmt::Debug for State {
    /// Counts only: the maps are keyed by account numbers, which never go to
    /// a log in full.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (accounts, payees, devices) = self.entities();
        f.debug_struct("State")
            .field("accounts", &accounts)
            .field("payees", &payees)
            .field("devices", &devices)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Empty state with these TTLs and caps.
    pub fn new(cfg: StateConfig) -> Self {
        State { cfg, accounts: new_map(), payees: new_map(), devices: new_map(), changes: changes::Tracker::default() }
    }

    /// The TTLs and caps this state keeps.
    pub fn config(&self) -> &StateConfig {
        &self.cfg
    }

    /// Take `other`'s entities in place of this state's own (restoring a
    /// snapshot into a state already shared with other threads).
    pub fn replace_with(&self, other: State) {
        self.accounts.clear();
        self.payees.clear();
        self.devices.clear();
        for (k, v) in other.accounts {
            self.accounts.insert(k, v);
        }
        for (k, v) in other.payees {
            self.payees.insert(k, v);
        }
        for (k, v) in other.devices {
            self.devices.insert(k, v);
        }
    }

    /// Read the sender, payee and device as they were before `t`, then record `t`.
    /// `payee_key` is `t.payee_key()`, passed in so it is built once per transfer.
    pub fn observe_transfer(&self, t: &Transfer, payee_key: &str) -> Observed {
        self.observe_transfer_as(t, payee_key, SharedCount::COUNT)
    }

    /// [`State::observe_transfer`], saying whether the transfer still has to
    /// be counted in the shared tables (its payee and device): not when this
    /// instance already learnt it from the instance that scored it first.
    pub fn observe_transfer_as(&self, t: &Transfer, payee_key: &str, shared: SharedCount) -> Observed {
        let now = t.tran_dtime;
        let amount = t.tran_amt.get();
        let payee_h = key_hash(payee_key);
        let account_h = key_hash(&t.fintech_use_num);
        let device_h = t.device_id.as_deref().map(key_hash);

        let account = {
            let mut a = self.change(&self.accounts, &t.fintech_use_num, || AccountState::new(now));
            let view = a.view(now, payee_h, device_h);
            a.count_attempt(now, amount);
            view
        };
        let payee = if shared.payee {
            let mut p = self.change(&self.payees, payee_key, || PayeeState::new(now));
            let view = p.view(now);
            p.count_in(now, amount, account_h, &self.cfg);
            view
        } else {
            self.payee_view(payee_key, now)
        };
        let device = t.device_id.as_deref().map(|d| {
            if !shared.device {
                return self.device_view(d, now);
            }
            let mut dev = self.change(&self.devices, d, || DeviceState::new(now));
            let view = dev.view(now);
            dev.count_use(now, amount, account_h, &self.cfg);
            view
        });
        Observed { account, payee, device, payee_hash: payee_h, device_hash: device_h }
    }

    /// A payee as it is, for a transfer already counted in it: as it was
    /// just before that transfer is not known any more, so the view is the
    /// current one (see [`SharedCount::ALREADY_COUNTED`]).
    fn payee_view(&self, key: &str, now: EventTime) -> PayeeView {
        match self.payees.get(key) {
            Some(p) => p.view(now),
            None => PayeeState::new(now).view(now),
        }
    }

    fn device_view(&self, key: &str, now: EventTime) -> DeviceView {
        match self.devices.get(key) {
            Some(d) => d.view(now),
            None => DeviceState::new(now).view(now),
        }
    }

    /// Start loading into the CPU cache what a burst of events will touch:
    /// each sender's account, and for a transfer its payee and device.
    ///
    /// Why: the state is far larger than the cache, so each entity read is a
    /// trip to memory, and one event's trips come one after another. Called
    /// for a burst before any of it is processed, the trips of the whole burst
    /// overlap. Two passes: the first starts loading the hash-table slots the
    /// lookups will probe, the second looks the entities up (now mostly in
    /// cache) and starts loading their contents. A hint only: it changes no
    /// state and no result, and a line fetched for an entity that moves or
    /// goes is simply not used.
    pub fn prefetch<'a>(&self, events: impl Iterator<Item = &'a Event> + Clone) {
        for event in events.clone() {
            entity_keys(event, |map, key| match map {
                EntityKind::Account => prefetch_slot(&self.accounts, key),
                EntityKind::Payee => prefetch_slot(&self.payees, key),
                EntityKind::Device => prefetch_slot(&self.devices, key),
            });
        }
        for event in events {
            entity_keys(event, |map, key| match map {
                EntityKind::Account => prefetch_entity(&self.accounts, key, |a| &a.payees.0),
                EntityKind::Payee => prefetch_entity(&self.payees, key, |p| &p.senders.0),
                EntityKind::Device => prefetch_entity(&self.devices, key, |d| &d.accounts.0),
            });
        }
    }

    /// Record the decision on a transfer already observed: an allowed transfer
    /// teaches the account its payee, device and amount; a held one only marks
    /// the hold. Call it once per [`observe_transfer`](State::observe_transfer),
    /// with what that returned.
    pub fn settle_transfer(&self, t: &Transfer, seen: &Observed, held: bool) {
        let now = t.tran_dtime;
        let mut a = self.change(&self.accounts, &t.fintech_use_num, || AccountState::new(now));
        a.settle(now, t.tran_amt.get(), seen.payee_hash, seen.device_hash, held, &self.cfg);
    }

    /// Record a context event or a label. Transfers go through [`observe_transfer`].
    ///
    /// [`observe_transfer`]: State::observe_transfer
    pub fn apply(&self, event: &Event) {
        let now = event.time();
        match event {
            Event::Transfer(t) => {
                let seen = self.observe_transfer(t, &t.payee_key());
                self.settle_transfer(t, &seen, false);
            }
            Event::Label(l) => self.apply_label(l),
            Event::Login(e) => {
                self.with_account(&e.fintech_use_num, now, |a, cfg| {
                    if !e.success {
                        a.failed_logins.push(now, HOUR_MS, MAX_FAILED_LOGINS);
                    }
                    if let Some(d) = &e.device_id {
                        a.remember_device(key_hash(d), now, cfg.max_known_devices);
                    }
                });
            }
            Event::DeviceRegistered(e) => {
                self.with_account(&e.fintech_use_num, now, |a, cfg| {
                    a.last_device_registered = a.last_device_registered.max(now.millis());
                    a.remember_device(key_hash(&e.device_id), now, cfg.max_known_devices);
                });
            }
            Event::Certificate(e) => {
                self.with_account(&e.fintech_use_num, now, |a, cfg| {
                    // A renewal extends a certificate the customer already holds; only a
                    // new issue or re-issue puts one on a possibly foreign device.
                    if e.action != CertificateAction::Renewed {
                        a.last_cert_reissue = a.last_cert_reissue.max(now.millis());
                    }
                    if let Some(d) = &e.device_id {
                        a.remember_device(key_hash(d), now, cfg.max_known_devices);
                    }
                });
            }
            Event::PhoneChanged(e) => {
                self.with_account(&e.fintech_use_num, now, |a, _| {
                    a.last_phone_change = a.last_phone_change.max(now.millis())
                });
            }
            Event::RemoteAppDetected(e) => {
                self.with_account(&e.fintech_use_num, now, |a, _| {
                    a.last_remote_app = a.last_remote_app.max(now.millis())
                });
            }
            Event::LimitRaised(e) => {
                self.with_account(&e.fintech_use_num, now, |a, _| {
                    a.last_limit_raised = a.last_limit_raised.max(now.millis())
                });
            }
            Event::EkycCompleted(e) => {
                self.with_account(&e.fintech_use_num, now, |a, _| a.last_ekyc = a.last_ekyc.max(now.millis()));
            }
        }
    }

    fn with_account(&self, account: &str, now: EventTime, f: impl FnOnce(&mut AccountState, &StateConfig)) {
        let mut a = self.change(&self.accounts, account, || AccountState::new(now));
        a.last_seen = a.last_seen.max(now.millis());
        f(&mut a, &self.cfg);
    }

    /// A fraud report opens a report against the payee; a withdrawal closes the
    /// report it names. Delivering either twice changes nothing more.
    fn apply_label(&self, l: &Label) {
        let now = l.report_dtime;
        let key = l.payee_key();
        let mut p = self.change(&self.payees, &key, || PayeeState::new(now));
        p.last_seen = p.last_seen.max(now.millis());
        p.apply_report(key_hash(&l.bank_tran_id), now, l.status == LabelStatus::Fraud);
    }

    /// Drop entities idle for longer than their TTL, as of event time `now`.
    /// Returns how many were dropped.
    pub fn expire(&self, now: EventTime) -> usize {
        // Counted in the closures: other threads may insert while this runs, so
        // lengths before and after do not tell how many went.
        let dropped = std::cell::Cell::new(0usize);
        let keep = |k: bool| {
            if !k {
                dropped.set(dropped.get() + 1);
            }
            k
        };
        let n = now.millis();
        // A checkpoint being written gets its entities first, as they were
        // (a sweep is rare, and already a pause of its own).
        if self.changes.is_open() {
            let mut done = Vec::new();
            self.checkpoint_step(usize::MAX, &mut done);
            self.changes.park(done);
        }
        let changes = &self.changes;
        let gone = |kind: EntityKind, key: &CompactString, kept: bool| {
            if !kept {
                changes.touch_dirty(kind, key);
            }
            keep(kept)
        };
        self.accounts.retain(|k, a| gone(EntityKind::Account, k, n - a.last_seen <= self.cfg.account_ttl_ms));
        // A payee with open fraud reports is kept: forgetting a reported mule
        // account because it went quiet would reopen it to victims.
        self.payees.retain(|k, p| {
            gone(EntityKind::Payee, k, p.open_reports() > 0 || n - p.last_seen <= self.cfg.payee_ttl_ms)
        });
        self.devices.retain(|k, d| gone(EntityKind::Device, k, n - d.last_seen <= self.cfg.device_ttl_ms));
        dropped.get()
    }

    /// Count entities and measure their memory: the entry itself, its key and its
    /// heap collections (map overhead per entry is estimated at one hash slot).
    pub fn memory(&self) -> MemoryReport {
        fn measure<V>(m: &Map<V>, heap: impl Fn(&V) -> usize) -> usize {
            let slot = size_of::<(CompactString, Box<V>)>() + size_of::<u64>() + size_of::<V>();
            m.iter().map(|e| slot + usize::from(e.key().is_heap_allocated()) * e.key().len() + heap(e.value())).sum()
        }
        MemoryReport {
            accounts: self.accounts.len(),
            payees: self.payees.len(),
            devices: self.devices.len(),
            account_bytes: measure(&self.accounts, AccountState::heap_bytes),
            payee_bytes: measure(&self.payees, PayeeState::heap_bytes),
            device_bytes: measure(&self.devices, DeviceState::heap_bytes),
        }
    }

    /// How many (accounts, payees, devices) are held: cheaper than
    /// [`State::memory`], for metrics.
    pub fn entities(&self) -> (usize, usize, usize) {
        (self.accounts.len(), self.payees.len(), self.devices.len())
    }

    /// Whether this state holds the account: which instance owns which
    /// accounts is a property the pipeline must keep (one owner each).
    pub fn knows_account(&self, account: &str) -> bool {
        self.accounts.contains_key(account)
    }
}

/// Cache lines prefetched from a spilled per-entity list: the start of a
/// linear scan; the hardware prefetcher follows the rest.
const PREFETCH_LIST_LINES: usize = 8;

/// Which map an entity lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A sender account (`fintech_use_num`).
    Account,
    /// A receiving account (bank code and account number).
    Payee,
    /// A device id.
    Device,
}

/// The entities an event touches, by map and key.
fn entity_keys(event: &Event, mut f: impl FnMut(EntityKind, &str)) {
    let Some(account) = event.account() else { return };
    f(EntityKind::Account, account);
    if let Event::Transfer(t) = event {
        f(EntityKind::Payee, &t.payee_key());
        if let Some(d) = t.device_id.as_deref() {
            f(EntityKind::Device, d);
        }
    }
}

/// Start loading an entity of `m` and the head of the list its lookups scan.
fn prefetch_entity<V, A: smallvec::Array>(m: &Map<V>, key: &str, list: impl FnOnce(&V) -> &SmallVec<A>) {
    if let Some(v) = m.get(key) {
        prefetch_value(&**v);
        prefetch_slice(list(&v));
    }
}

/// Start loading the slot where a lookup of `key` in `m` begins: the group of
/// control bytes at the hash's home position and the entry stored there.
///
/// This leans on how hashbrown lays out a table (entries stored downwards
/// from the control bytes, probing from `hash & (buckets - 1)`), reached
/// through dashmap's `raw-api`. Were that to change, the lines fetched would
/// be the wrong ones and only the speed-up would be lost.
fn prefetch_slot<V>(m: &Map<V>, key: &str) {
    let hash = m.hash_usize(&key);
    let shard = m.shards()[m.determine_shard(hash)].read();
    let ctrl = shard.data_end().as_ptr() as *const u8;
    let home = hash & (shard.buckets() - 1);
    let entry = size_of::<(CompactString, dashmap::SharedValue<Box<V>>)>();
    prefetch_lines(ctrl.wrapping_add(home), 16);
    prefetch_lines(ctrl.wrapping_sub((home + 1) * entry), entry);
}

fn prefetch_value<V>(v: &V) {
    prefetch_lines(v as *const V as *const u8, size_of::<V>());
}

fn prefetch_slice<A: smallvec::Array>(v: &SmallVec<A>) {
    if v.spilled() {
        let bytes = (v.len() * size_of::<A::Item>()).min(PREFETCH_LIST_LINES * 64);
        prefetch_lines(v.as_ptr() as *const u8, bytes);
    }
}

/// Issue a prefetch for each 64-byte line of `bytes` bytes from `p`. Written
/// by hand because it is one CPU instruction per line; on other targets it
/// does nothing.
#[inline]
fn prefetch_lines(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch never faults and writes nothing, whatever the
            // address; `wrapping_add` keeps the pointer arithmetic defined.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off) as *const i8) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::entity::{MAX_NEW_PAYEES, MAX_REPORTS};
    use super::*;
    use crate::event::build;
    use crate::event::MINUTE_MS;

    fn t(secs: i64) -> EventTime {
        EventTime::from_secs(secs)
    }

    #[test]
    fn ring_near_edge_is_exact_and_far_edge_snaps_to_buckets() {
        let mut r: Ring<10, MINUTE_MS> = Ring::default();
        // 10:00:00 and 10:00:59 share a bucket; 10:01:00 opens the next.
        r.add(t(36_000), 5);
        r.add(t(36_059), 7);
        assert_eq!(r.total(t(36_059), 10), (2, 12));
        // 9 minutes later the first bucket is still inside a 10-bucket window...
        assert_eq!(r.total(t(36_000 + 9 * 60 + 59), 10), (2, 12));
        // ...and at the tenth bucket it has fallen out.
        assert_eq!(r.total(t(36_000 + 10 * 60), 10), (0, 0));
        // A query of fewer buckets sees only the most recent ones.
        r.add(t(36_000 + 5 * 60), 100);
        assert_eq!(r.total(t(36_000 + 5 * 60), 1), (1, 100));
        assert_eq!(r.total(t(36_000 + 5 * 60), 10), (3, 112));
    }

    #[test]
    fn ring_clears_stale_slots_after_a_long_gap() {
        let mut r: Ring<3, MINUTE_MS> = Ring::default();
        r.add(t(0), 1);
        r.add(t(60), 2);
        r.add(t(120), 3);
        // Jumping far ahead clears every slot, even ones the jump wraps over.
        r.add(t(60 * 1000 + 60), 10);
        assert_eq!(r.total(t(60 * 1000 + 60), 3), (1, 10));
        // Late events older than the ring are dropped, recent late ones counted.
        r.add(t(0), 99);
        r.add(t(60 * 1000), 4);
        assert_eq!(r.total(t(60 * 1000 + 60), 3), (2, 14));
    }

    /// The running totals give the same answers as summing the buckets, for
    /// every window length, in and out of order, across long gaps.
    #[test]
    fn ring_totals_match_a_bucket_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut r: Ring<7, MINUTE_MS> = Ring::default();
        let mut events: Vec<(i64, i64)> = Vec::new();
        let mut now = 1_000_000_000i64;
        for _ in 0..1_500 {
            now += match rng.gen_range(0..10) {
                0 => rng.gen_range(0..20 * MINUTE_MS),
                1 => -rng.gen_range(0..5 * MINUTE_MS),
                _ => rng.gen_range(0..30_000),
            };
            let amount = rng.gen_range(1..1_000_000);
            r.add(EventTime(now), amount);
            events.push((now, amount));
            let q = now + rng.gen_range(-MINUTE_MS..3 * MINUTE_MS);
            for k in 1..=7 {
                // Brute force: events whose bucket is in the last k buckets up to
                // q's, and still inside the ring.
                let (qb, hb) = (q.div_euclid(MINUTE_MS), r.head);
                let keep = |t: i64| {
                    let b = t.div_euclid(MINUTE_MS);
                    b > qb - k as i64 && b <= qb && b > hb - 7 && b <= hb
                };
                let mut want = (0, 0);
                let mut seen_head = i64::MIN;
                for &(t, a) in &events {
                    // Events dropped on arrival (older than the ring then) never count.
                    let b = t.div_euclid(MINUTE_MS);
                    if seen_head != i64::MIN && b <= seen_head - 7 {
                        continue;
                    }
                    seen_head = seen_head.max(b);
                    if keep(t) {
                        want = (want.0 + 1, want.1 + a);
                    }
                }
                assert_eq!(r.total(EventTime(q), k), want, "k={k} q={q}");
            }
        }
    }

    #[test]
    fn last_seen_replaces_the_least_recent_when_full() {
        let mut s = LastSeen::default();
        assert!(s.touch(1, t(10), 2));
        assert!(s.touch(2, t(20), 2));
        assert!(!s.touch(1, t(30), 2));
        assert!(s.touch(3, t(40), 2)); // evicts 2, seen least recently
        assert_eq!(s.get(2), None);
        assert_eq!(s.get(1), Some(30_000));
        assert_eq!(s.count_within(t(40), 15_000), 2);
        assert_eq!(s.count_within(t(40), 10_000), 1);
    }

    #[test]
    fn recent_times_window_excludes_its_far_edge() {
        let mut r = RecentTimes::default();
        r.push(t(0), HOUR_MS, 8);
        r.push(t(1800), HOUR_MS, 8);
        assert_eq!(r.count_within(t(3599), HOUR_MS), 2);
        assert_eq!(r.count_within(t(3600), HOUR_MS), 1); // (now - 1h, now]
    }

    /// Every window length of a read agrees with counting the events by hand,
    /// across gaps longer than the ring and late events.
    #[test]
    fn day_counts_match_a_brute_force_count() {
        let mut r: DayCounts<5> = DayCounts::default();
        assert_eq!(r.totals(t(0), [1, 5]), [0, 0]);
        let day = |d: i64| EventTime(d * DAY_MS + 3 * HOUR_MS);
        let mut kept: Vec<i64> = Vec::new();
        for (d, late) in [
            (10, false),
            (10, false),
            (11, false),
            (13, false),
            (12, true),
            (7, true),
            (14, false),
            (30, false),
            (27, true),
            (25, true),
        ] {
            let before = r.head;
            r.add(day(d));
            // Dropped on arrival if older than the ring then.
            if !(late && d <= before - 5) {
                kept.push(d);
            }
            for now in [d, d + 1, d + 4, d + 6] {
                let want = |k: i64| {
                    let nb = now;
                    kept.iter().filter(|&&b| b > nb - k && b <= nb && b > r.head - 5).count() as i64
                };
                assert_eq!(r.totals(day(now), [1, 2, 3, 5]), [want(1), want(2), want(3), want(5)], "d={d} now={now}");
            }
        }
    }

    #[test]
    fn log_zscore_measures_orders_of_magnitude() {
        let mut s = LogStats::default();
        assert_eq!(s.zscore(1_000), 0.0);
        for a in [10_000, 20_000, 15_000, 12_000, 30_000] {
            s.add(a);
        }
        assert!(s.zscore(10_000_000) > 5.0);
        assert!(s.zscore(15_000).abs() < 1.0);
    }

    // ------------------------------------------------------------- caps ---
    // One test per cap: fill past it, then check that the count stays at the
    // cap and that the entry the policy names is the one that went.

    const T0: i64 = 1_700_000_000;

    fn small_caps() -> StateConfig {
        StateConfig {
            max_known_payees: 3,
            max_known_devices: 2,
            max_payee_senders: 3,
            max_device_accounts: 2,
            ..StateConfig::default()
        }
    }

    /// An allowed transfer from `account` to payee `088-{payee}` at `T0 + secs`.
    fn pay(s: &State, account: &str, payee: &str, device: Option<&str>, secs: i64) -> Observed {
        let mut b = build::transfer("T1").account(account).payee("088", payee).at_time(t(T0 + secs));
        if let Some(d) = device {
            b = b.device(d);
        }
        let tr = b.transfer();
        let seen = s.observe_transfer(&tr, &tr.payee_key());
        s.settle_transfer(&tr, &seen, false);
        seen
    }

    fn account(s: &State, key: &str) -> AccountState {
        (**s.accounts.get(key).expect("the account")).clone()
    }

    fn payee(s: &State, account_num: &str) -> PayeeState {
        (**s.payees.get(crate::event::payee_key("088", account_num).as_str()).expect("the payee")).clone()
    }

    fn payee_h(account_num: &str) -> u64 {
        key_hash(&crate::event::payee_key("088", account_num))
    }

    #[test]
    fn known_payees_stop_at_the_cap_forgetting_the_least_recently_paid() {
        let s = State::new(small_caps());
        pay(&s, "A1", "P1", None, 0);
        pay(&s, "A1", "P2", None, 10);
        pay(&s, "A1", "P3", None, 20);
        pay(&s, "A1", "P1", None, 30); // P2 is now the least recently paid
        pay(&s, "A1", "P4", None, 40);
        let a = account(&s, "A1");
        assert_eq!(a.payees.0.len(), 3);
        assert_eq!(a.payees.get(payee_h("P2")), None, "the least recently paid went");
        for p in ["P1", "P3", "P4"] {
            assert!(a.payees.get(payee_h(p)).is_some(), "{p}");
        }
        for i in 5..50 {
            pay(&s, "A1", &format!("P{i}"), None, 10 * i);
        }
        let seen = pay(&s, "A1", "P2", None, 1_000);
        assert_eq!((seen.account.known_payees, seen.account.payee_known), (3, false));
        assert_eq!(account(&s, "A1").payees.0.len(), 3);
    }

    #[test]
    fn new_payees_of_a_day_saturate_at_their_cap_dropping_the_oldest() {
        let s = State::new(StateConfig::default());
        for i in 0..MAX_NEW_PAYEES as i64 + 6 {
            pay(&s, "A1", &format!("P{i}"), None, 60 * i);
        }
        let a = account(&s, "A1");
        assert_eq!(a.new_payees.0.len(), MAX_NEW_PAYEES);
        assert_eq!(a.new_payees.0.first().copied(), Some((T0 + 60 * 6) * 1000), "the six oldest went");
        let seen = pay(&s, "A1", "Q", None, 60 * 100);
        assert_eq!(seen.account.new_payees_24h, MAX_NEW_PAYEES as i64);
    }

    #[test]
    fn known_devices_stop_at_the_cap_forgetting_the_least_recently_used() {
        let s = State::new(small_caps());
        pay(&s, "A1", "P1", Some("D1"), 0);
        pay(&s, "A1", "P1", Some("D2"), 10);
        pay(&s, "A1", "P1", Some("D1"), 20); // D2 is now the least recently used
        s.apply(&build::context("A1").device("D3").at_time(t(T0 + 30)).login(true));
        let a = account(&s, "A1");
        assert_eq!(a.devices.len(), 2);
        assert_eq!(a.device_first_seen(key_hash("D2")), None, "the least recently used went");
        assert_eq!(a.device_first_seen(key_hash("D1")), Some(T0 * 1000), "kept with its first use");
        assert_eq!(a.device_first_seen(key_hash("D3")), Some((T0 + 30) * 1000));
        for i in 4..40 {
            pay(&s, "A1", "P1", Some(&format!("D{i}")), 10 * i);
        }
        assert_eq!(account(&s, "A1").devices.len(), 2);
    }

    #[test]
    fn failed_logins_of_an_hour_saturate_at_their_cap_dropping_the_oldest() {
        let s = State::new(StateConfig::default());
        for i in 0..MAX_FAILED_LOGINS as i64 + 6 {
            s.apply(&build::context("A1").at_time(t(T0 + 10 * i)).login(false));
        }
        let a = account(&s, "A1");
        assert_eq!(a.failed_logins.0.len(), MAX_FAILED_LOGINS);
        assert_eq!(a.failed_logins.0.first().copied(), Some((T0 + 60) * 1000), "the six oldest went");
        let seen = pay(&s, "A1", "P1", None, 10 * 80);
        assert_eq!(seen.account.failed_logins_1h, MAX_FAILED_LOGINS as i64);
    }

    #[test]
    fn payee_senders_stop_at_the_cap_forgetting_the_least_recently_seen() {
        let s = State::new(small_caps());
        pay(&s, "A1", "P1", None, 0);
        pay(&s, "A2", "P1", None, 10);
        pay(&s, "A3", "P1", None, 20);
        pay(&s, "A1", "P1", None, 30); // A2 is now the least recently seen
        pay(&s, "A4", "P1", None, 40);
        let p = payee(&s, "P1");
        assert_eq!(p.senders.0.len(), 3);
        assert_eq!(p.senders.get(key_hash("A2")), None, "the least recently seen went");
        for a in ["A1", "A3", "A4"] {
            assert!(p.senders.get(key_hash(a)).is_some(), "{a}");
        }
        for i in 5..50 {
            pay(&s, &format!("A{i}"), "P1", None, 10 * i);
        }
        let seen = pay(&s, "A2", "P1", None, 1_000);
        assert_eq!(seen.payee.distinct_senders_24h, 3, "saturates at the cap");
        assert_eq!(payee(&s, "P1").senders.0.len(), 3);
    }

    #[test]
    fn payee_reports_stop_at_the_cap_dropping_withdrawn_then_oldest() {
        let s = State::new(StateConfig::default());
        let report = |id: &str, secs: i64| build::label(id).payee("088", "P1").at_time(t(T0 + secs));
        for i in 0..MAX_REPORTS as i64 + 1 {
            s.apply(&report(&format!("R{i}"), 60 * i).build());
        }
        let p = payee(&s, "P1");
        assert_eq!((p.reports.len(), p.open_reports()), (MAX_REPORTS, MAX_REPORTS as i64));
        assert!(!p.reports.iter().any(|r| r.0 == key_hash("R0")), "the oldest went");
        // A withdrawn report goes before the oldest open one.
        s.apply(&report("R30", 60 * 100).cleared().build());
        s.apply(&report("R100", 60 * 101).build());
        let p = payee(&s, "P1");
        assert_eq!((p.reports.len(), p.open_reports()), (MAX_REPORTS, MAX_REPORTS as i64));
        assert!(!p.reports.iter().any(|r| r.0 == key_hash("R30")), "the withdrawn one went");
        assert!(p.reports.iter().any(|r| r.0 == key_hash("R1")), "the oldest open one stays");
    }

    #[test]
    fn device_accounts_stop_at_the_cap_forgetting_the_least_recently_seen() {
        let s = State::new(small_caps());
        pay(&s, "A1", "P1", Some("D1"), 0);
        pay(&s, "A2", "P1", Some("D1"), 10);
        pay(&s, "A1", "P1", Some("D1"), 20); // A2 is now the least recently seen
        pay(&s, "A3", "P1", Some("D1"), 30);
        let d = (**s.devices.get("D1").unwrap()).clone();
        assert_eq!(d.accounts.0.len(), 2);
        assert_eq!(d.accounts.get(key_hash("A2")), None, "the least recently seen went");
        assert!(d.accounts.get(key_hash("A1")).is_some() && d.accounts.get(key_hash("A3")).is_some());
        for i in 4..40 {
            pay(&s, &format!("A{i}"), "P1", Some("D1"), 10 * i);
        }
        let seen = pay(&s, "A2", "P1", Some("D1"), 1_000);
        assert_eq!(seen.device.unwrap().distinct_accounts_24h, 2, "saturates at the cap");
        assert_eq!(s.devices.get("D1").unwrap().accounts.0.len(), 2);
    }

    /// Read back under smaller caps (a snapshot, a changelog record), every
    /// collection is trimmed to them, keeping the most recent.
    #[test]
    fn an_entity_read_under_smaller_caps_is_trimmed_to_them() {
        let big = State::new(StateConfig::default());
        for i in 0..10 {
            pay(&big, "A1", &format!("P{i}"), Some(&format!("D{i}")), 10 * i);
            pay(&big, &format!("B{i}"), "P0", Some("D0"), 10 * i + 5);
        }
        let mut bytes = Vec::new();
        big.write_snapshot(ExpiryClocks::default(), &mut bytes).unwrap();
        let (small, _, _) = State::read_snapshot(small_caps(), &bytes[..]).unwrap();
        let changelog = State::new(small_caps());
        let mut record = Vec::new();
        for (kind, key) in [(EntityKind::Account, "A1"), (EntityKind::Payee, "088-P0"), (EntityKind::Device, "D0")] {
            assert!(big.entity_record(kind, key, &mut record));
            changelog.apply_record(&record, (kind, key)).unwrap();
        }
        for s in [&small, &changelog] {
            let a = account(s, "A1");
            assert_eq!(a.payees.0.len(), 3);
            assert!(["P7", "P8", "P9"].iter().all(|p| a.payees.get(payee_h(p)).is_some()), "the most recent kept");
            assert_eq!(a.devices.len(), 2);
            assert!(a.device_first_seen(key_hash("D9")).is_some() && a.device_first_seen(key_hash("D8")).is_some());
            let p = payee(s, "P0");
            assert_eq!(p.senders.0.len(), 3);
            assert!(["B7", "B8", "B9"].iter().all(|b| p.senders.get(key_hash(b)).is_some()));
            let d = s.devices.get("D0").unwrap();
            assert_eq!(d.accounts.0.len(), 2);
            assert!(d.accounts.get(key_hash("B9")).is_some() && d.accounts.get(key_hash("B8")).is_some());
        }
    }

    #[test]
    fn recent_times_trim_keeps_the_newest() {
        let mut r = RecentTimes::default();
        for i in 0..10 {
            r.push(t(i), HOUR_MS, 64);
        }
        r.trim(4);
        assert_eq!(r.0.as_slice(), [6_000, 7_000, 8_000, 9_000]);
    }

    #[test]
    fn windows_are_kept_in_declaration_order() {
        for (i, w) in Window::ALL.into_iter().enumerate() {
            assert_eq!(w as usize, i, "{w:?}");
        }
    }
}
