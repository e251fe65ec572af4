//! The shared tables: what one instance's transfers teach every other
//! instance about payees and devices.
//!
//! Input is partitioned by the sender, so an account lives on exactly one
//! instance; but a payee receives from senders on every partition, and a
//! device can be used by accounts on several. Each instance therefore keeps
//! the payees and devices of *all* transfers (a global table, as Kafka
//! Streams' GlobalKTable): the ones it scores itself at once, the others'
//! from the [`Observation`]s they publish. Applying an observation is the
//! same code as the scoring instance's own update ([`PayeeState::count_in`],
//! [`DeviceState::count_use`]), so the tables differ between instances only
//! by what is still in flight.
//!
//! Guarantees:
//! - **Counted once.** The caller keeps, per transfers partition, the offsets
//!   already in its shared tables; an observation or a transfer among them is
//!   not counted again ([`SharedCount::ALREADY_COUNTED`]), whichever of the
//!   two arrived first.
//! - **Order-insensitive.** Windows are rings of buckets and sender sets keep
//!   the latest time per sender, so observations applied a little late or out
//!   of order give the same counts (a late one beyond its ring is dropped, as
//!   a late transfer is).
//! - **Refused, not misread.** A batch in another format version, cut
//!   short, or carrying a key longer than any event can (more than
//!   `MAX_KEY_BYTES`, 64 bytes: the keys become the shared maps' keys, which
//!   live for months), is refused whole with what was wrong and where.
//!
//! [`PayeeState::count_in`]: super::PayeeState
//! [`DeviceState::count_use`]: super::DeviceState

use compact_str::CompactString;

use super::{key_hash, DeviceState, PayeeState, State, MAX_KEY_BYTES};
use crate::event::{EventTime, Transfer};

/// Whether a transfer still has to be counted in its payee and in its
/// device: not where this instance already learnt it from the instance that
/// scored it first, or where a restored checkpoint already holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCount {
    /// Count it in the payee.
    pub payee: bool,
    /// Count it in the device.
    pub device: bool,
}

impl SharedCount {
    /// First sight: count it in both.
    pub const COUNT: SharedCount = SharedCount { payee: true, device: true };
    /// Counted already: the payee and device are read as they are and left
    /// unchanged.
    pub const ALREADY_COUNTED: SharedCount = SharedCount { payee: false, device: false };

    /// Counted anywhere.
    pub fn any(self) -> bool {
        self.payee || self.device
    }
}

/// What one scored transfer does to its payee and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The transfer's offset in its partition of `transfers`: the receiver's
    /// key for counting it once.
    pub offset: i64,
    /// The transfer's event time.
    pub time: EventTime,
    /// Won.
    pub amount: i64,
    /// The sender, hashed as the state hashes it (the account number itself
    /// never leaves its owner).
    pub account: u64,
    /// The payee key (bank code and account number).
    pub payee: CompactString,
    /// The device, when the transfer names one.
    pub device: Option<CompactString>,
}

/// The format version written first in every batch.
pub const OBSERVATION_FORMAT: u8 = 2;

/// Why a batch of observations was refused.
#[allow(missing_docs)] // each variant's #[error] text is its documentation and names its fields
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ObservationError {
    #[error("an empty observation batch")]
    Empty,
    #[error("observation format version {found}, this build reads version {OBSERVATION_FORMAT}")]
    Version { found: u8 },
    #[error("observation {index} is cut short at byte {at}")]
    Truncated { index: usize, at: usize },
    #[error("{bytes} bytes after the last observation")]
    Trailing { bytes: usize },
    #[error("observation {index}: a key that is not UTF-8")]
    NotUtf8 { index: usize },
    #[error("observation {index}: a key of {bytes} bytes, more than the {MAX_KEY_BYTES} any event carries")]
    KeyTooLong { index: usize, bytes: usize },
    #[error("observation {index}: offset {offset} cannot be a Kafka offset")]
    Offset { index: usize, offset: i64 },
}

/// A key's length field of this value means "no key" (no device).
const NO_KEY: u16 = u16::MAX;

/// The longest key an observation carries, in bytes: the longest key of an
/// entity, as the event decoder bounds it. A longer one is cut at a
/// character boundary below it when written (no decoded event has one), and
/// refused when read.
const KEY_MAX: usize = MAX_KEY_BYTES;

impl Observation {
    /// What `t` (at `offset`) teaches the shared tables.
    pub fn of(t: &Transfer, payee_key: &str, offset: i64) -> Self {
        Observation {
            offset,
            time: t.tran_dtime,
            amount: t.tran_amt.get(),
            account: key_hash(&t.fintech_use_num),
            payee: CompactString::from(payee_key),
            device: t.device_id.as_deref().map(CompactString::from),
        }
    }

    /// Start a batch in `out` (cleared first): the format version, then how
    /// many observations follow (so a batch cut at an observation's end is
    /// still seen to be cut).
    pub fn begin_batch(out: &mut Vec<u8>) {
        out.clear();
        out.push(OBSERVATION_FORMAT);
        out.extend_from_slice(&0u32.to_le_bytes());
    }

    /// Append this observation to a batch begun with [`Observation::begin_batch`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        if let Some(count) = out.get_mut(1..5) {
            let n = u32::from_le_bytes(count.try_into().expect("4 bytes")) + 1;
            count.copy_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.time.millis().to_le_bytes());
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.account.to_le_bytes());
        put_key(out, Some(&self.payee));
        put_key(out, self.device.as_deref());
    }

    /// Read a whole batch: every observation, or why none can be trusted.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Observation>, ObservationError> {
        let (&version, rest) = bytes.split_first().ok_or(ObservationError::Empty)?;
        if version != OBSERVATION_FORMAT {
            return Err(ObservationError::Version { found: version });
        }
        let (count, mut rest) =
            rest.split_first_chunk::<4>().ok_or(ObservationError::Truncated { index: 0, at: bytes.len() })?;
        let count = u32::from_le_bytes(*count) as usize;
        // The count is not trusted for the allocation: each observation
        // takes at least 36 bytes.
        let mut out = Vec::with_capacity(count.min(rest.len() / 36));
        while out.len() < count {
            let index = out.len();
            let at = bytes.len() - rest.len();
            let cut = ObservationError::Truncated { index, at };
            let fixed = |r: &mut &[u8]| -> Option<[u8; 8]> {
                let (head, tail) = r.split_first_chunk::<8>()?;
                *r = tail;
                Some(*head)
            };
            let (Some(offset), Some(time), Some(amount), Some(account)) =
                (fixed(&mut rest), fixed(&mut rest), fixed(&mut rest), fixed(&mut rest))
            else {
                return Err(cut);
            };
            let payee = take_key(&mut rest, index, bytes.len())?.ok_or(ObservationError::Truncated { index, at })?;
            let device = take_key(&mut rest, index, bytes.len())?;
            let offset = i64::from_le_bytes(offset);
            if !(0..i64::MAX).contains(&offset) {
                return Err(ObservationError::Offset { index, offset });
            }
            out.push(Observation {
                offset,
                time: EventTime(i64::from_le_bytes(time)),
                amount: i64::from_le_bytes(amount),
                account: u64::from_le_bytes(account),
                payee,
                device,
            });
        }
        if !rest.is_empty() {
            return Err(ObservationError::Trailing { bytes: rest.len() });
        }
        Ok(out)
    }
}

fn put_key(out: &mut Vec<u8>, key: Option<&str>) {
    match key {
        Some(k) => {
            let mut end = k.len().min(KEY_MAX);
            while !k.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&(end as u16).to_le_bytes());
            out.extend_from_slice(&k.as_bytes()[..end]);
        }
        None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
}

/// A length-prefixed key from `rest` (of a batch `total` bytes long).
fn take_key(rest: &mut &[u8], index: usize, total: usize) -> Result<Option<CompactString>, ObservationError> {
    let truncated = ObservationError::Truncated { index, at: total - rest.len() };
    let (len, tail) = rest.split_first_chunk::<2>().ok_or(truncated.clone())?;
    let len = u16::from_le_bytes(*len);
    if len == NO_KEY {
        *rest = tail;
        return Ok(None);
    }
    let len = usize::from(len);
    if len > KEY_MAX {
        return Err(ObservationError::KeyTooLong { index, bytes: len });
    }
    if tail.len() < len {
        return Err(truncated);
    }
    let key = std::str::from_utf8(&tail[..len]).map_err(|_| ObservationError::NotUtf8 { index })?;
    *rest = &tail[len..];
    Ok(Some(CompactString::from(key)))
}

impl State {
    /// Count another instance's transfer in its payee and device, as that
    /// instance did when it scored it (in those `which` says).
    pub fn observe_shared(&self, o: &Observation, which: SharedCount) {
        if which.payee {
            self.change(&self.payees, &o.payee, || PayeeState::new(o.time))
                .count_in(o.time, o.amount, o.account, &self.cfg);
        }
        if let Some(d) = o.device.as_ref().filter(|_| which.device) {
            self.change(&self.devices, d, || DeviceState::new(o.time))
                .count_use(o.time, o.amount, o.account, &self.cfg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::build;
    use crate::state::StateConfig;

    #[test]
    fn a_batch_reads_back_exactly_and_a_bad_one_is_refused() {
        let a = Observation {
            offset: 7,
            time: EventTime(1_700_000_000_000),
            amount: 5_000_000,
            account: 42,
            payee: "088:110123456789".into(),
            device: Some("dev-1".into()),
        };
        let b = Observation { offset: 8, device: None, ..a.clone() };
        let mut buf = Vec::new();
        Observation::begin_batch(&mut buf);
        a.encode(&mut buf);
        b.encode(&mut buf);
        assert_eq!(Observation::decode_batch(&buf).unwrap(), vec![a.clone(), b]);
        assert_eq!(Observation::decode_batch(&[]), Err(ObservationError::Empty));
        let mut other = buf.clone();
        other[0] = 9;
        assert_eq!(Observation::decode_batch(&other), Err(ObservationError::Version { found: 9 }));
        // A key past the bound is cut at a character boundary, never inside
        // one (which would make the whole batch unreadable).
        let long = Observation { device: Some("가".repeat(30_000).into()), ..a.clone() };
        let mut one = Vec::new();
        Observation::begin_batch(&mut one);
        long.encode(&mut one);
        let back = Observation::decode_batch(&one).unwrap();
        let device = back[0].device.as_deref().unwrap();
        assert!(device.len() <= KEY_MAX && device.len() > KEY_MAX - 3 && "가".repeat(30_000).starts_with(device));
        // One written by another writer is refused, payee or device, whole.
        for (payee_len, device_len) in [(KEY_MAX + 1, 1), (1, KEY_MAX + 1), (u16::MAX as usize - 1, 1)] {
            let mut bad = Vec::new();
            Observation::begin_batch(&mut bad);
            a.encode(&mut bad);
            bad[1..5].copy_from_slice(&2u32.to_le_bytes());
            bad.extend_from_slice(&[0; 32]);
            for len in [payee_len, device_len] {
                bad.extend_from_slice(&(len as u16).to_le_bytes());
                bad.extend(std::iter::repeat(b'k').take(len));
            }
            let bytes = payee_len.max(device_len);
            assert_eq!(Observation::decode_batch(&bad), Err(ObservationError::KeyTooLong { index: 1, bytes }));
        }
        let mut longest = Vec::new();
        Observation::begin_batch(&mut longest);
        let at_bound = Observation { device: Some("d".repeat(KEY_MAX).into()), ..a.clone() };
        at_bound.encode(&mut longest);
        assert_eq!(Observation::decode_batch(&longest).unwrap(), vec![at_bound], "a key at the bound reads back");
        let mut bad = Vec::new();
        Observation::begin_batch(&mut bad);
        Observation { offset: -1, ..a.clone() }.encode(&mut bad);
        assert_eq!(Observation::decode_batch(&bad), Err(ObservationError::Offset { index: 0, offset: -1 }));
        for cut in 1..buf.len() - 1 {
            assert!(
                matches!(Observation::decode_batch(&buf[..cut]), Err(ObservationError::Truncated { .. })),
                "cut at {cut}"
            );
        }
    }

    /// An instance that learns another's transfers through observations ends
    /// with the payee and device the scoring instance has.
    #[test]
    fn an_observation_counts_as_the_transfer_itself_does() {
        let (scorer, other) = (State::new(StateConfig::default()), State::new(StateConfig::default()));
        let mut later = None;
        for (i, sender) in ["A1", "A2", "A3", "A2"].into_iter().enumerate() {
            let t = build::transfer(&format!("T{i}"))
                .account(sender)
                .payee("088", "110999")
                .device("shared-phone")
                .at_time(EventTime(1_700_000_000_000 + 60_000 * i as i64))
                .transfer();
            scorer.observe_transfer(&t, &t.payee_key());
            other.observe_shared(&Observation::of(&t, &t.payee_key(), i as i64), SharedCount::COUNT);
            later = Some(t);
        }
        let t = later.unwrap();
        let (a, b) = (scorer.observe_transfer(&t, &t.payee_key()), other.observe_transfer(&t, &t.payee_key()));
        assert_eq!(a.payee.distinct_senders_1h, 3);
        assert_eq!(b.payee.distinct_senders_1h, a.payee.distinct_senders_1h);
        assert_eq!(b.payee.in_sum_24h, a.payee.in_sum_24h);
        assert_eq!(b.device.unwrap().distinct_accounts_24h, 3);
        assert_eq!(b.device.unwrap().count_1h, a.device.unwrap().count_1h);
        // Already counted: read, not counted again.
        let c = other.observe_transfer_as(&t, &t.payee_key(), SharedCount::ALREADY_COUNTED);
        let d = other.observe_transfer_as(&t, &t.payee_key(), SharedCount::ALREADY_COUNTED);
        assert_eq!(c.payee.in_count_24h, d.payee.in_count_24h);
    }
}
