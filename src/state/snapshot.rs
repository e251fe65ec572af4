//! Snapshots: the whole state written to bytes and read back, so a restarted
//! or moved instance decides as one that never stopped.
//!
//! This is the state's durable form, the building block of restarts and of
//! moving a partition to another instance: every account, payee and device,
//! each as one self-checking record. It is written by hand rather than with
//! a serde format because the format must not change when a struct's fields
//! are reordered (the order here is the format), serde has no impls for the
//! rings' const-generic arrays, and the bytes must be checked record by
//! record (a changelog on Kafka carries single records, not whole files).
//!
//! Layout: the magic `FDSSTATE`, the format version (`u16`, little endian),
//! a clocks record (the engine's expiry clocks, [`ExpiryClocks`]), then one
//! record per entity, then an end record. A record is its kind (one byte), the
//! payload's length (LEB128), the payload, and a CRC-32 of kind, length and
//! payload (`u32`, little endian). An entity's payload is its key (length and
//! UTF-8 bytes) followed by its fields in the order [`write_account`] and its
//! siblings write them: integers as LEB128 (signed ones zigzag-encoded),
//! floats as their IEEE bits, hashes as fixed 8 bytes. The end record holds
//! the number of entity records before it, so a file cut between records is
//! caught too.
//!
//! Guarantees:
//! - **Exact.** What is read back is what was written, bit for bit (read
//!   with caps below the writer's, an entity is trimmed to them): a state
//!   restored from a snapshot gives the decisions the original would have
//!   given (a test replays half of a stream, snapshots, restores into a new
//!   engine and compares the rest).
//! - **Never silently misread.** A wrong magic, another format version, a
//!   truncated file, a checksum mismatch or a field that cannot be what it
//!   says is a [`SnapshotError`] naming the byte offset of the record; nothing
//!   of a refused snapshot is used.
//! - **Versioned.** [`FORMAT_VERSION`] changes whenever a field is added,
//!   removed or reordered; a reader refuses any other version.

use std::io::{self, Read, Write};

use compact_str::CompactString;
use smallvec::SmallVec;

use super::changes::Stamps;
use super::{
    AccountState, DayCounts, DeviceState, LastSeen, LogStats, Map, PayeeState, RecentTimes, Ring, State, StateConfig,
};

/// The first bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"FDSSTATE";

/// The snapshot format this engine writes and reads. Bump it with any change
/// to what a record holds.
pub const FORMAT_VERSION: u16 = 1;

/// A record's payload may not be larger than this: far above any entity
/// (a few KB at the caps), small enough that a corrupt length cannot make a
/// reader allocate gigabytes.
const MAX_RECORD_BYTES: u64 = 1 << 20;

const KIND_END: u8 = 0;
pub(super) const KIND_ACCOUNT: u8 = 1;
pub(super) const KIND_PAYEE: u8 = 2;
pub(super) const KIND_DEVICE: u8 = 3;
pub(super) const KIND_CLOCKS: u8 = 4;

/// The clocks that decide when idle entities are swept (kept by the engine,
/// see `Engine::process`): a restored state must sweep when the original
/// would have, or an entity one side forgot would still count on the other.
/// `i64::MIN` means "not started".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryClocks {
    /// The event-time clock entities are expired by.
    pub expiry_clock: i64,
    /// When the last sweep ran, on that clock.
    pub last_expiry: i64,
}

impl Default for ExpiryClocks {
    fn default() -> Self {
        ExpiryClocks { expiry_clock: i64::MIN, last_expiry: i64::MIN }
    }
}

/// Why a snapshot was refused. Offsets count bytes from the start of the
/// snapshot, so an operator can find the record with `xxd`.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading failed (other than ending early).
    #[error("cannot read the snapshot: {0}")]
    Io(#[from] io::Error),
    /// The bytes do not start with [`MAGIC`]: not a snapshot.
    #[error("not a state snapshot (no FDSSTATE magic)")]
    NotASnapshot,
    /// Written by a format this engine does not read.
    #[error("state format version {found}, but this engine reads version {expected}")]
    Version {
        /// The version in the file.
        found: u16,
        /// [`FORMAT_VERSION`].
        expected: u16,
    },
    /// The bytes end inside a record, or before the end record.
    #[error("snapshot truncated at byte {offset}")]
    Truncated {
        /// Where the missing bytes should have been.
        offset: u64,
    },
    /// A record's checksum does not match its bytes.
    #[error("record at byte {offset}: checksum mismatch (the snapshot is corrupt)")]
    Checksum {
        /// The record's first byte.
        offset: u64,
    },
    /// A record passed its checksum but does not read as what it says.
    #[error("record at byte {offset}: {reason}")]
    Malformed {
        /// The record's first byte.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a snapshot held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Account records.
    pub accounts: u64,
    /// Payee records.
    pub payees: u64,
    /// Device records.
    pub devices: u64,
    /// Bytes of the whole snapshot.
    pub bytes: u64,
}

impl State {
    /// Write every entity to `out` as a snapshot. Entities are read one at a
    /// time under their shard's read lock, so writers elsewhere wait at most
    /// for one shard's walk; a snapshot taken while events are applied holds
    /// each entity as it was when its shard was read.
    pub fn write_snapshot<W: Write>(&self, clocks: ExpiryClocks, out: W) -> io::Result<SnapshotStats> {
        let mut out = Counting { inner: out, bytes: 0 };
        out.write_all(MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let mut stats = SnapshotStats::default();
        let mut buf = Vec::with_capacity(4096);
        put_i64(&mut buf, clocks.expiry_clock);
        put_i64(&mut buf, clocks.last_expiry);
        write_record(&mut out, KIND_CLOCKS, &buf)?;
        stats.accounts = write_entities(&mut out, &mut buf, &self.accounts, KIND_ACCOUNT, write_account)?;
        stats.payees = write_entities(&mut out, &mut buf, &self.payees, KIND_PAYEE, write_payee)?;
        stats.devices = write_entities(&mut out, &mut buf, &self.devices, KIND_DEVICE, write_device)?;
        let records = stats.accounts + stats.payees + stats.devices;
        buf.clear();
        put_u64(&mut buf, records);
        write_record(&mut out, KIND_END, &buf)?;
        out.flush()?;
        stats.bytes = out.bytes;
        Ok(stats)
    }

    /// Read a snapshot written by [`State::write_snapshot`] into a new state
    /// with `cfg`'s TTLs and caps (an entity written with larger caps is
    /// trimmed to them, as at the cap). All or nothing: any error leaves
    /// nothing half-restored.
    pub fn read_snapshot<R: Read>(
        cfg: StateConfig,
        input: R,
    ) -> Result<(State, ExpiryClocks, SnapshotStats), SnapshotError> {
        let mut input = Offset { inner: input, at: 0 };
        let mut head = [0u8; 10];
        if input.read_exact_or_eof(&mut head[..8])? < 8 || &head[..8] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        if input.read_exact_or_eof(&mut head[8..])? < 2 {
            return Err(SnapshotError::Truncated { offset: input.at });
        }
        let found = u16::from_le_bytes([head[8], head[9]]);
        if found != FORMAT_VERSION {
            return Err(SnapshotError::Version { found, expected: FORMAT_VERSION });
        }
        let state = State::new(cfg);
        let mut stats = SnapshotStats::default();
        let mut payload = Vec::new();
        let offset = input.at;
        if read_record(&mut input, &mut payload)? != KIND_CLOCKS {
            return Err(SnapshotError::Malformed { offset, reason: "the first record is not the clocks".into() });
        }
        let mut r = Cursor { bytes: &payload, at: 0 };
        let malformed = |reason: String| SnapshotError::Malformed { offset, reason };
        let clocks =
            ExpiryClocks { expiry_clock: r.i64().map_err(malformed)?, last_expiry: r.i64().map_err(malformed)? };
        loop {
            let offset = input.at;
            let kind = read_record(&mut input, &mut payload)?;
            let malformed = |reason: String| SnapshotError::Malformed { offset, reason };
            let mut r = Cursor { bytes: &payload, at: 0 };
            if kind == KIND_END {
                let records = r.u64().map_err(malformed)?;
                let read = stats.accounts + stats.payees + stats.devices;
                if records != read {
                    return Err(malformed(format!("the end record counts {records} records, {read} were read")));
                }
                stats.bytes = input.at;
                return Ok((state, clocks, stats));
            }
            let key = r.key().map_err(malformed)?;
            match kind {
                KIND_ACCOUNT => {
                    let mut a = read_account(&mut r).map_err(malformed)?;
                    a.trim_to_caps(&state.cfg);
                    insert_once(&state.accounts, key, a).map_err(malformed)?;
                    stats.accounts += 1;
                }
                KIND_PAYEE => {
                    let mut p = read_payee(&mut r).map_err(malformed)?;
                    p.trim_to_caps(&state.cfg);
                    insert_once(&state.payees, key, p).map_err(malformed)?;
                    stats.payees += 1;
                }
                KIND_DEVICE => {
                    let mut d = read_device(&mut r).map_err(malformed)?;
                    d.trim_to_caps(&state.cfg);
                    insert_once(&state.devices, key, d).map_err(malformed)?;
                    stats.devices += 1;
                }
                other => return Err(malformed(format!("unknown record kind {other}"))),
            }
            if r.at != r.bytes.len() {
                return Err(malformed(format!("{} bytes left over after the entity", r.bytes.len() - r.at)));
            }
        }
    }
}

/// Write every entity of `map` as a record of `kind`; returns how many.
fn write_entities<W: Write, V>(
    out: &mut W,
    buf: &mut Vec<u8>,
    map: &Map<V>,
    kind: u8,
    fields: fn(&mut Vec<u8>, &V),
) -> io::Result<u64> {
    let mut n = 0;
    for e in map.iter() {
        buf.clear();
        put_key(buf, e.key());
        fields(buf, e.value());
        write_record(out, kind, buf)?;
        n += 1;
    }
    Ok(n)
}

fn insert_once<V>(map: &Map<V>, key: CompactString, value: V) -> Result<(), String> {
    match map.insert(key, Box::new(value)) {
        None => Ok(()),
        Some(_) => Err("an entity appears twice".into()),
    }
}

// ---------------------------------------------------------------- records ---

pub(super) fn write_record<W: Write>(out: &mut W, kind: u8, payload: &[u8]) -> io::Result<()> {
    let mut head = Vec::with_capacity(11);
    head.push(kind);
    put_u64(&mut head, payload.len() as u64);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    out.write_all(&head)?;
    out.write_all(payload)?;
    out.write_all(&crc.finalize().to_le_bytes())
}

/// Read one record into `payload`; returns its kind.
pub(super) fn read_record<R: Read>(input: &mut Offset<R>, payload: &mut Vec<u8>) -> Result<u8, SnapshotError> {
    let offset = input.at;
    let truncated = |at| SnapshotError::Truncated { offset: at };
    let mut head = Vec::with_capacity(11);
    let mut byte = [0u8; 1];
    if input.read_exact_or_eof(&mut byte)? == 0 {
        return Err(truncated(input.at));
    }
    head.push(byte[0]);
    // The length, LEB128, at most 10 bytes.
    let (mut len, mut shift) = (0u64, 0u32);
    loop {
        if input.read_exact_or_eof(&mut byte)? == 0 {
            return Err(truncated(input.at));
        }
        head.push(byte[0]);
        if shift > 63 {
            return Err(SnapshotError::Malformed { offset, reason: "record length does not fit 64 bits".into() });
        }
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    if len > MAX_RECORD_BYTES {
        // A corrupt length is far more likely than a giant entity; the
        // checksum cannot be reached to tell.
        return Err(SnapshotError::Checksum { offset });
    }
    payload.clear();
    payload.resize(len as usize, 0);
    if input.read_exact_or_eof(payload)? < payload.len() {
        return Err(truncated(input.at));
    }
    let mut sum = [0u8; 4];
    if input.read_exact_or_eof(&mut sum)? < 4 {
        return Err(truncated(input.at));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(sum) {
        return Err(SnapshotError::Checksum { offset });
    }
    Ok(head[0])
}

/// A writer that counts what went through it.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that knows its offset, and tells a clean end from a short read.
pub(super) struct Offset<R> {
    inner: R,
    at: u64,
}

impl<R: Read> Offset<R> {
    pub(super) fn new(inner: R) -> Self {
        Offset { inner, at: 0 }
    }

    /// Fill `buf`, or as much of it as there is; returns how much was read.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.at += filled as u64;
        Ok(filled)
    }
}

// ---------------------------------------------------------------- fields ---

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn put_hash(out: &mut Vec<u8>, h: u64) {
    out.extend_from_slice(&h.to_le_bytes());
}

pub(super) fn put_key(out: &mut Vec<u8>, key: &str) {
    put_u64(out, key.len() as u64);
    out.extend_from_slice(key.as_bytes());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_u64(out, n as u64);
}

/// Reads fields from one record's payload; every error names the field's
/// position in the payload.
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    pub(super) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or_else(|| format!("ends inside a field at payload byte {}", self.at))?;
        self.at += 1;
        Ok(b)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte()?;
            if shift > 63 {
                return Err(format!("integer too long at payload byte {}", self.at));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    pub(super) fn i64(&mut self) -> Result<i64, String> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let at = self.at;
        u32::try_from(self.u64()?).map_err(|_| format!("count too large at payload byte {at}"))
    }
    fn fixed8(&mut self) -> Result<[u8; 8], String> {
        let end = self.at + 8;
        let b =
            self.bytes.get(self.at..end).ok_or_else(|| format!("ends inside a field at payload byte {}", self.at))?;
        self.at = end;
        Ok(b.try_into().expect("8 bytes"))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(u64::from_le_bytes(self.fixed8()?)))
    }
    fn hash(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.fixed8()?))
    }
    fn bool(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{b} is not a bool at payload byte {}", self.at - 1)),
        }
    }
    /// A collection length, checked against the cap the state keeps it under.
    fn len(&mut self, cap: usize) -> Result<usize, String> {
        let at = self.at;
        let n = self.u64()?;
        if n > cap as u64 {
            return Err(format!("a list of {n} entries at payload byte {at}, more than the {cap} allowed"));
        }
        Ok(n as usize)
    }
    pub(super) fn key(&mut self) -> Result<CompactString, String> {
        let n = self.len(256)?;
        let end = self.at + n;
        let b = self.bytes.get(self.at..end).ok_or("ends inside the key")?;
        self.at = end;
        std::str::from_utf8(b).map(CompactString::from).map_err(|_| "the key is not UTF-8".into())
    }
}

/// Per-entity lists are read with this cap: far above any configured cap
/// (see `StateConfig`), so a snapshot written with larger caps still reads,
/// while a corrupt length is refused before it allocates.
const MAX_LIST: usize = 1 << 16;

fn put_ring<const N: usize, const W: i64>(out: &mut Vec<u8>, r: &Ring<N, W>) {
    put_i64(out, r.head);
    put_i64(out, r.total_count);
    put_i64(out, r.total_sum);
    for &c in &r.counts {
        put_u64(out, u64::from(c));
    }
    for &s in &r.sums {
        put_i64(out, s);
    }
}

fn read_ring<const N: usize, const W: i64>(r: &mut Cursor<'_>) -> Result<Ring<N, W>, String> {
    let mut ring = Ring::<N, W> { head: r.i64()?, total_count: r.i64()?, total_sum: r.i64()?, ..Ring::default() };
    for c in ring.counts.iter_mut() {
        *c = r.u32()?;
    }
    for s in ring.sums.iter_mut() {
        *s = r.i64()?;
    }
    Ok(ring)
}

fn put_day_counts<const N: usize>(out: &mut Vec<u8>, d: &DayCounts<N>) {
    put_i64(out, d.head);
    for &c in &d.counts {
        put_u64(out, u64::from(c));
    }
}

fn read_day_counts<const N: usize>(r: &mut Cursor<'_>) -> Result<DayCounts<N>, String> {
    let mut d = DayCounts::<N> { head: r.i64()?, ..DayCounts::default() };
    for c in d.counts.iter_mut() {
        *c = r.u32()?;
    }
    Ok(d)
}

fn put_recent(out: &mut Vec<u8>, t: &RecentTimes) {
    put_len(out, t.0.len());
    for &x in &t.0 {
        put_i64(out, x);
    }
}

fn read_recent(r: &mut Cursor<'_>) -> Result<RecentTimes, String> {
    let n = r.len(MAX_LIST)?;
    let mut v = SmallVec::with_capacity(n);
    for _ in 0..n {
        v.push(r.i64()?);
    }
    Ok(RecentTimes(v))
}

fn put_last_seen(out: &mut Vec<u8>, l: &LastSeen) {
    put_len(out, l.0.len());
    for &(h, t) in &l.0 {
        put_hash(out, h);
        put_i64(out, t);
    }
}

fn read_last_seen(r: &mut Cursor<'_>) -> Result<LastSeen, String> {
    let n = r.len(MAX_LIST)?;
    let mut v = SmallVec::with_capacity(n);
    for _ in 0..n {
        v.push((r.hash()?, r.i64()?));
    }
    Ok(LastSeen(v))
}

/// An account's fields, in format order.
pub(super) fn write_account(out: &mut Vec<u8>, a: &AccountState) {
    put_i64(out, a.first_seen);
    put_i64(out, a.last_seen);
    put_u64(out, a.lifetime_count);
    put_i64(out, a.max_amount);
    put_u64(out, a.log_stats.n);
    put_f64(out, a.log_stats.mean);
    put_f64(out, a.log_stats.m2);
    put_ring(out, &a.out_1m);
    put_ring(out, &a.out_5m);
    put_ring(out, &a.out_1h);
    put_ring(out, &a.out_1d);
    put_last_seen(out, &a.payees);
    put_recent(out, &a.new_payees);
    put_len(out, a.devices.len());
    for &(h, first, last) in &a.devices {
        put_hash(out, h);
        put_i64(out, first);
        put_i64(out, last);
    }
    put_recent(out, &a.failed_logins);
    for t in [
        a.last_cert_reissue,
        a.last_device_registered,
        a.last_phone_change,
        a.last_remote_app,
        a.last_limit_raised,
        a.last_ekyc,
        a.last_hold,
    ] {
        put_i64(out, t);
    }
}

pub(super) fn read_account(r: &mut Cursor<'_>) -> Result<AccountState, String> {
    let first_seen = r.i64()?;
    let last_seen = r.i64()?;
    let lifetime_count = r.u64()?;
    let max_amount = r.i64()?;
    let log_stats = LogStats { n: r.u64()?, mean: r.f64()?, m2: r.f64()? };
    let out_1m = read_ring(r)?;
    let out_5m = read_ring(r)?;
    let out_1h = read_ring(r)?;
    let out_1d = read_ring(r)?;
    let payees = read_last_seen(r)?;
    let new_payees = read_recent(r)?;
    let n = r.len(MAX_LIST)?;
    let mut devices = SmallVec::with_capacity(n);
    for _ in 0..n {
        devices.push((r.hash()?, r.i64()?, r.i64()?));
    }
    let failed_logins = read_recent(r)?;
    Ok(AccountState {
        first_seen,
        last_seen,
        lifetime_count,
        max_amount,
        log_stats,
        out_1m,
        out_5m,
        out_1h,
        out_1d,
        payees,
        new_payees,
        devices,
        failed_logins,
        last_cert_reissue: r.i64()?,
        last_device_registered: r.i64()?,
        last_phone_change: r.i64()?,
        last_remote_app: r.i64()?,
        last_limit_raised: r.i64()?,
        last_ekyc: r.i64()?,
        last_hold: r.i64()?,
        stamps: Stamps::default(),
    })
}

/// A payee's fields, in format order.
pub(super) fn write_payee(out: &mut Vec<u8>, p: &PayeeState) {
    put_i64(out, p.first_seen);
    put_i64(out, p.last_seen);
    put_ring(out, &p.in_1h);
    put_day_counts(out, &p.in_1d);
    put_last_seen(out, &p.senders);
    put_len(out, p.reports.len());
    for &(tran, at, open) in &p.reports {
        put_hash(out, tran);
        put_i64(out, at);
        out.push(u8::from(open));
    }
}

pub(super) fn read_payee(r: &mut Cursor<'_>) -> Result<PayeeState, String> {
    let first_seen = r.i64()?;
    let last_seen = r.i64()?;
    let in_1h = read_ring(r)?;
    let in_1d = read_day_counts(r)?;
    let senders = read_last_seen(r)?;
    let n = r.len(MAX_LIST)?;
    let mut reports = SmallVec::with_capacity(n);
    for _ in 0..n {
        reports.push((r.hash()?, r.i64()?, r.bool()?));
    }
    Ok(PayeeState { first_seen, last_seen, in_1h, in_1d, senders, reports, stamps: Stamps::default() })
}

/// A device's fields, in format order.
pub(super) fn write_device(out: &mut Vec<u8>, d: &DeviceState) {
    put_i64(out, d.last_seen);
    put_ring(out, &d.transfers_5m);
    put_last_seen(out, &d.accounts);
}

pub(super) fn read_device(r: &mut Cursor<'_>) -> Result<DeviceState, String> {
    Ok(DeviceState {
        last_seen: r.i64()?,
        transfers_5m: read_ring(r)?,
        accounts: read_last_seen(r)?,
        stamps: Stamps::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::build::{context, label, transfer};

    fn busy_state() -> State {
        let state = State::new(StateConfig::default());
        let t0 = crate::event::EventTime::parse_kst("20261102100000").unwrap().millis();
        for i in 0..300i64 {
            let at = crate::event::EventTime(t0 + i * 97_000);
            let acct = format!("A{}", i % 13);
            let e = transfer(&format!("T{i}"))
                .account(&acct)
                .at_time(at)
                .amount(1_000 + i * 7_919)
                .payee("088", &format!("P{}", i % 17))
                .device(&format!("D{}", i % 5))
                .build();
            state.apply(&e);
            state.apply(&context(&acct).at_time(at).device("D9").login(i % 3 != 0));
            if i % 11 == 0 {
                state.apply(&context(&acct).at_time(at).cert_reissued());
                state.apply(&label(&format!("T{i}")).at_time(at).payee("088", &format!("P{}", i % 17)).build());
            }
        }
        state
    }

    fn snapshot(state: &State) -> Vec<u8> {
        let mut bytes = Vec::new();
        state.write_snapshot(ExpiryClocks { expiry_clock: 42, last_expiry: -7 }, &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_snapshot_reads_back_to_the_same_state() {
        let state = busy_state();
        let bytes = snapshot(&state);
        let (back, clocks, stats) = State::read_snapshot(StateConfig::default(), &bytes[..]).unwrap();
        assert_eq!(clocks, ExpiryClocks { expiry_clock: 42, last_expiry: -7 });
        assert_eq!((stats.accounts, stats.payees, stats.devices), (13, 17, 5)); // D9 only logs in: devices are kept from transfers
        assert_eq!(stats.bytes, bytes.len() as u64);
        // Written again, the restored state gives the same bytes entity by
        // entity (map order may differ, so compare sorted records).
        let records = |b: &[u8]| {
            let (s, _, _) = State::read_snapshot(StateConfig::default(), b).unwrap();
            let mut out: Vec<Vec<u8>> = Vec::new();
            for e in s.accounts.iter() {
                let mut v = Vec::new();
                put_key(&mut v, e.key());
                write_account(&mut v, e.value());
                out.push(v);
            }
            for e in s.payees.iter() {
                let mut v = Vec::new();
                put_key(&mut v, e.key());
                write_payee(&mut v, e.value());
                out.push(v);
            }
            for e in s.devices.iter() {
                let mut v = Vec::new();
                put_key(&mut v, e.key());
                write_device(&mut v, e.value());
                out.push(v);
            }
            out.sort();
            out
        };
        assert_eq!(records(&bytes), records(&snapshot(&back)));
        assert_eq!(state.entities(), back.entities());
    }

    #[test]
    fn every_truncation_is_refused_with_its_offset() {
        let bytes = snapshot(&busy_state());
        for cut in (0..bytes.len()).step_by(37).chain([bytes.len() - 1]) {
            match State::read_snapshot(StateConfig::default(), &bytes[..cut]) {
                Err(SnapshotError::Truncated { offset }) => assert!(offset <= cut as u64),
                Err(SnapshotError::NotASnapshot) => assert!(cut < 8),
                other => panic!("cut at {cut}: {:?}", other.map(|(_, _, s)| s)),
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_after_the_header_is_caught() {
        let bytes = snapshot(&busy_state());
        for at in (10..bytes.len()).step_by(53) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            match State::read_snapshot(StateConfig::default(), &bad[..]) {
                Err(SnapshotError::Checksum { .. } | SnapshotError::Truncated { .. }) => {}
                Err(e @ SnapshotError::Malformed { .. }) => {
                    // Only a flipped kind byte or length can get past the
                    // checksum's reach; it is still refused.
                    assert!(e.to_string().contains("record at byte"), "{e}");
                }
                other => panic!("flip at {at}: {:?}", other.map(|(_, _, s)| s)),
            }
        }
    }

    #[test]
    fn another_version_or_no_magic_is_refused() {
        let mut bytes = snapshot(&busy_state());
        bytes[8] = 2;
        assert!(matches!(
            State::read_snapshot(StateConfig::default(), &bytes[..]),
            Err(SnapshotError::Version { found: 2, expected: FORMAT_VERSION })
        ));
        let text = b"{\"type\":\"transfer\"}";
        assert!(matches!(State::read_snapshot(StateConfig::default(), &text[..]), Err(SnapshotError::NotASnapshot)));
    }

    #[test]
    fn integers_round_trip_at_their_edges() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, i64::MIN + 1] {
            let mut b = Vec::new();
            put_i64(&mut b, v);
            assert_eq!(Cursor { bytes: &b, at: 0 }.i64().unwrap(), v);
        }
    }
}
