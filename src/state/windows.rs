//! The windows an entity is counted in, by event time: rings of count and
//! sum buckets ([`Ring`]), counts by day ([`DayCounts`]), the few recent
//! times of an event ([`RecentTimes`]), hashes last seen at a time
//! ([`LastSeen`]) and a running mean and spread ([`LogStats`]). Fixed in
//! size, moved only by the times written on the events (see the state
//! module's doc for resolutions and caps).

use smallvec::SmallVec;

use crate::event::{EventTime, DAY_MS};

/// Counts and sums in `N` buckets of `WIDTH_MS`, indexed by absolute bucket
/// number, with running totals over the whole ring.
///
/// The totals are why this is fast: the common read (the full ring, at or just
/// after the newest bucket) touches the one cache line holding `head` and the
/// totals, not all `N` buckets. Sums are exact below 9.2 * 10^18 won.
#[derive(Debug, Clone)]
pub struct Ring<const N: usize, const WIDTH_MS: i64> {
    /// Absolute bucket number of the newest bucket written (or cleared up to).
    pub(super) head: i64,
    /// Count and sum over every bucket in the ring, `head - N + 1 ..= head`.
    pub(super) total_count: i64,
    pub(super) total_sum: i64,
    pub(super) counts: [u32; N],
    pub(super) sums: [i64; N],
}

impl<const N: usize, const WIDTH_MS: i64> Default for Ring<N, WIDTH_MS> {
    fn default() -> Self {
        Ring { head: i64::MIN, total_count: 0, total_sum: 0, counts: [0; N], sums: [0; N] }
    }
}

impl<const N: usize, const WIDTH_MS: i64> Ring<N, WIDTH_MS> {
    #[inline]
    pub(super) fn bucket(t: EventTime) -> i64 {
        t.millis().div_euclid(WIDTH_MS)
    }

    #[inline]
    pub(super) fn slot(b: i64) -> usize {
        b.rem_euclid(N as i64) as usize
    }

    /// Count and sum in the buckets `from ..= to` (all inside the ring), walking
    /// the slots with one division for the first.
    #[inline]
    pub(super) fn scan(&self, from: i64, to: i64) -> (i64, i64) {
        let (mut c, mut s) = (0i64, 0i64);
        if to < from {
            return (0, 0);
        }
        let mut i = Self::slot(from);
        for _ in from..=to {
            c += i64::from(self.counts[i]);
            s = s.wrapping_add(self.sums[i]);
            i += 1;
            if i == N {
                i = 0;
            }
        }
        (c, s)
    }

    /// Record one event. Events older than the ring (late arrivals beyond the
    /// window) are dropped: they could not be in any window that is still read.
    pub fn add(&mut self, t: EventTime, amount: i64) {
        let b = Self::bucket(t);
        if self.head == i64::MIN {
            self.head = b;
        } else if b > self.head {
            // The buckets between the old head and the new one leave the ring.
            let stale = (b - self.head).min(N as i64);
            let mut s = Self::slot(b);
            for _ in 0..stale {
                self.total_count -= i64::from(self.counts[s]);
                self.total_sum = self.total_sum.wrapping_sub(self.sums[s]);
                self.counts[s] = 0;
                self.sums[s] = 0;
                s = if s == 0 { N - 1 } else { s - 1 };
            }
            self.head = b;
        } else if b <= self.head - N as i64 {
            return;
        }
        let s = Self::slot(b);
        if self.counts[s] == u32::MAX {
            return;
        }
        self.counts[s] += 1;
        self.sums[s] = self.sums[s].wrapping_add(amount);
        self.total_count += 1;
        self.total_sum = self.total_sum.wrapping_add(amount);
    }

    /// Count and sum over the last `k` buckets (k <= N) up to the one holding `now`.
    #[inline]
    pub fn total(&self, now: EventTime, k: usize) -> (i64, i64) {
        debug_assert!(k <= N);
        if self.head == i64::MIN {
            return (0, 0);
        }
        let nb = Self::bucket(now);
        if k == N && nb >= self.head {
            // The whole ring, less the oldest buckets that `now` has pushed out.
            let gone = nb - self.head;
            if gone >= N as i64 {
                return (0, 0);
            }
            let (c, s) = self.scan(self.head - N as i64 + 1, self.head - N as i64 + gone);
            return (self.total_count - c, self.total_sum.wrapping_sub(s));
        }
        let lo = (nb - k as i64 + 1).max(self.head - N as i64 + 1);
        let hi = nb.min(self.head);
        self.scan(lo, hi)
    }
}

/// Counts only, in `N` daily buckets: the payee's incoming transfers by day,
/// read as counts over the last `k` days for several `k` at once. Half the size
/// of a [`Ring`] (no sums, no running totals): 8 + 4N bytes, 160 at N = 38.
/// A read walks at most `N` buckets once, which is a few dozen additions.
#[derive(Debug, Clone)]
pub struct DayCounts<const N: usize> {
    /// Absolute day number of the newest bucket written (or cleared up to).
    pub(super) head: i64,
    pub(super) counts: [u32; N],
}

impl<const N: usize> Default for DayCounts<N> {
    fn default() -> Self {
        DayCounts { head: i64::MIN, counts: [0; N] }
    }
}

impl<const N: usize> DayCounts<N> {
    #[inline]
    pub(super) fn slot(b: i64) -> usize {
        b.rem_euclid(N as i64) as usize
    }

    /// Count one event; events older than the ring are dropped (no window that
    /// is still read could contain them), a bucket saturates at `u32::MAX`.
    pub fn add(&mut self, t: EventTime) {
        let b = t.millis().div_euclid(DAY_MS);
        if self.head == i64::MIN {
            self.head = b;
        } else if b > self.head {
            let stale = (b - self.head).min(N as i64);
            for i in 0..stale {
                self.counts[Self::slot(b - i)] = 0;
            }
            self.head = b;
        } else if b <= self.head - N as i64 {
            return;
        }
        let s = Self::slot(b);
        self.counts[s] = self.counts[s].saturating_add(1);
    }

    /// Counts over the last `k` daily buckets up to the one holding `now`, for
    /// each `k` in `ks` (ascending, each at most `N`), in one walk.
    #[inline]
    pub fn totals<const K: usize>(&self, now: EventTime, ks: [usize; K]) -> [i64; K] {
        debug_assert!(ks.windows(2).all(|w| w[0] <= w[1]) && ks.iter().all(|&k| k <= N));
        let mut out = [0i64; K];
        if self.head == i64::MIN {
            return out;
        }
        let nb = now.millis().div_euclid(DAY_MS);
        let oldest = self.head - N as i64 + 1;
        let (mut sum, mut j) = (0i64, 0usize);
        for k in 1..=ks.last().copied().unwrap_or(0) {
            let b = nb - k as i64 + 1;
            if b >= oldest && b <= self.head {
                sum += i64::from(self.counts[Self::slot(b)]);
            }
            while j < K && ks[j] == k {
                out[j] = sum;
                j += 1;
            }
        }
        out
    }
}

/// Times of recent occurrences, newest last, pruned by age and capped in length.
#[derive(Debug, Clone, Default)]
pub(super) struct RecentTimes(pub(super) SmallVec<[i64; 4]>);

impl RecentTimes {
    pub(super) fn push(&mut self, t: EventTime, keep_ms: i64, cap: usize) {
        // Prune by the newest time known, not by `t`: a late event must not
        // drop occurrences that are still inside the window.
        let newest = self.0.last().copied().unwrap_or(i64::MIN).max(t.millis());
        self.prune(EventTime(newest), keep_ms);
        if t.millis() <= newest - keep_ms {
            return;
        }
        if self.0.len() >= cap {
            // Full: a late event older than everything kept would be the one
            // to go, so it is not added at all.
            if self.0.first().is_some_and(|&oldest| t.millis() < oldest) {
                return;
            }
            self.0.remove(0);
        }
        // Late arrivals are inserted in order, so the list stays sorted.
        let at = self.0.partition_point(|&x| x <= t.millis());
        self.0.insert(at, t.millis());
    }
    /// Keep the newest `cap` (a list read from a snapshot written with a
    /// larger cap).
    pub(super) fn trim(&mut self, cap: usize) {
        let over = self.0.len().saturating_sub(cap);
        if over > 0 {
            self.0.drain(..over);
        }
    }
    pub(super) fn prune(&mut self, now: EventTime, keep_ms: i64) {
        let cutoff = now.millis() - keep_ms;
        let stale = self.0.iter().take_while(|&&x| x <= cutoff).count();
        if stale > 0 {
            self.0.drain(..stale);
        }
    }
    /// Occurrences in (now - window, now].
    pub(super) fn count_within(&self, now: EventTime, window_ms: i64) -> i64 {
        let (lo, hi) = (now.millis() - window_ms, now.millis());
        self.0.iter().filter(|&&x| x > lo && x <= hi).count() as i64
    }
    pub(super) fn heap_bytes(&self) -> usize {
        if self.0.spilled() {
            self.0.capacity() * size_of::<i64>()
        } else {
            0
        }
    }
}

/// Distinct keys (by 64-bit hash) with the last time each was seen, capped:
/// when full, the least recently seen key is replaced.
#[derive(Debug, Clone, Default)]
pub(super) struct LastSeen(pub(super) SmallVec<[(u64, i64); 6]>);

impl LastSeen {
    pub(super) fn get(&self, h: u64) -> Option<i64> {
        self.0.iter().find(|(k, _)| *k == h).map(|&(_, t)| t)
    }
    /// Record `h` at `t`; returns true when `h` was not there before.
    pub(super) fn touch(&mut self, h: u64, t: EventTime, cap: usize) -> bool {
        if let Some(e) = self.0.iter_mut().find(|(k, _)| *k == h) {
            e.1 = e.1.max(t.millis());
            return false;
        }
        if self.0.len() >= cap {
            let Some(oldest) = (0..self.0.len()).min_by_key(|&i| self.0[i].1) else { return true };
            // A late key older than everything kept would be evicted first:
            // it is new, but not worth a newer key's place.
            if t.millis() < self.0[oldest].1 {
                return true;
            }
            self.0.swap_remove(oldest);
        }
        self.0.push((h, t.millis()));
        true
    }
    /// Forget the least recently seen keys until at most `cap` are left.
    pub(super) fn trim(&mut self, cap: usize) {
        while self.0.len() > cap {
            let Some(oldest) = (0..self.0.len()).min_by_key(|&i| self.0[i].1) else { return };
            self.0.swap_remove(oldest);
        }
    }
    pub(super) fn count_within(&self, now: EventTime, window_ms: i64) -> i64 {
        let cutoff = now.millis() - window_ms;
        self.0.iter().filter(|&&(_, t)| t > cutoff && t <= now.millis()).count() as i64
    }
    pub(super) fn heap_bytes(&self) -> usize {
        if self.0.spilled() {
            self.0.capacity() * size_of::<(u64, i64)>()
        } else {
            0
        }
    }
}

/// Running mean and variance (Welford) of log10(amount): amounts are
/// log-normal, so deviation is measured in orders of magnitude.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LogStats {
    pub(super) n: u64,
    pub(super) mean: f64,
    pub(super) m2: f64,
}

impl LogStats {
    pub(super) fn add(&mut self, amount: i64) {
        let x = (amount.max(1) as f64).log10();
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    pub(super) fn zscore(&self, amount: i64) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        // A floor on the spread keeps a perfectly regular account (same rent every
        // month) from turning a tiny change into an enormous score.
        let sd = (self.m2 / (self.n - 1) as f64).sqrt().max(0.1);
        ((amount.max(1) as f64).log10() - self.mean) / sd
    }
}
