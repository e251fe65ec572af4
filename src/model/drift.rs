//! Drift of the live model scores from the model card's reference:
//! `fds_model_score_psi` (see [`crate::metrics`]).
//!
//! The card holds the share of validation scores in each of [`SCORE_BINS`]
//! (`[score_reference]`, written by `fds train`); the pipeline observes every
//! live score in the `fds_model_score` histogram, whose buckets are those
//! bins. [`ScoreWindow`] turns the histogram's running counts into the shares
//! of the recent scores, and [`quality::psi`](super::quality::psi) compares
//! them with the reference. It runs when the metrics are read (before each
//! scrape), never per transfer.

use std::collections::VecDeque;

use super::card::SCORE_BINS;

/// `fds_model_score_psi` is computed over at least this many of the most
/// recent scores (see [`ScoreWindow`]).
pub const PSI_WINDOW: u64 = 10_000;

/// `fds_model_score_psi` stays 0 until the model in force has given this
/// many scores: below it the index measures the sample's noise (with 20
/// bins, a sample of a few hundred from the reference itself scores 0.02 to
/// 0.05) more than any drift.
pub const PSI_MIN_SCORES: u64 = 1_000;

/// A snapshot of the score histogram is kept each time this many more scores
/// have come: the window's granularity, and a bound on the snapshots kept
/// (`PSI_WINDOW / PSI_STEP + 1`).
const PSI_STEP: u64 = 100;

/// The recent scores, as differences of snapshots of `fds_model_score`'s
/// bucket counts: the window `fds_model_score_psi` is computed over.
///
/// Each call gives the histogram's counts as they are now. A snapshot is
/// kept whenever `PSI_STEP` more scores have come since the last one, and
/// the window is the counts now minus the newest snapshot at least
/// [`PSI_WINDOW`] scores old: so it holds the last 10,000 scores, plus at
/// most those of one step or one call (at 1,000 transfers a second and a
/// 15 s scrape, the last 10,000 to 25,000). With fewer scores since the
/// model came into force, the window is all of them, and below
/// [`PSI_MIN_SCORES`] there is no window. Nothing runs per score: the hot
/// path only observes the histogram.
#[derive(Debug, Default)]
pub struct ScoreWindow {
    /// Snapshots, oldest first, each [`PSI_STEP`] or more scores after the
    /// one before; the first is where the window starts.
    snapshots: VecDeque<[u64; SCORE_BINS.len()]>,
}

impl ScoreWindow {
    /// Take the histogram's counts per bin now; the recent scores' share
    /// per bin, or `None` while there are fewer than [`PSI_MIN_SCORES`].
    pub fn observe(&mut self, now: [u64; SCORE_BINS.len()]) -> Option<[f64; SCORE_BINS.len()]> {
        let total = |c: &[u64; SCORE_BINS.len()]| c.iter().sum::<u64>();
        let now_total = total(&now);
        match self.snapshots.back() {
            None => {
                // The first call (or the first since the model changed): the
                // window starts here.
                self.snapshots.push_back(now);
                return None;
            }
            Some(last) if now_total >= total(last) + PSI_STEP => self.snapshots.push_back(now),
            _ => {}
        }
        // The newest snapshot that still leaves PSI_WINDOW scores after it
        // becomes the start; the ones before it are no longer needed.
        while self.snapshots.len() >= 2 && now_total - total(&self.snapshots[1]) >= PSI_WINDOW {
            self.snapshots.pop_front();
        }
        let start = self.snapshots.front().expect("one snapshot at least");
        let n = now_total.saturating_sub(total(start));
        if n < PSI_MIN_SCORES {
            return None;
        }
        Some(std::array::from_fn(|i| now[i].saturating_sub(start[i]) as f64 / n as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts per bin of `n` scores drawn in the shares of `shares`.
    fn counts_of(shares: &[f64; SCORE_BINS.len()], n: u64) -> [u64; SCORE_BINS.len()] {
        std::array::from_fn(|i| (shares[i] * n as f64).round() as u64)
    }

    fn add(a: [u64; SCORE_BINS.len()], b: [u64; SCORE_BINS.len()]) -> [u64; SCORE_BINS.len()] {
        std::array::from_fn(|i| a[i] + b[i])
    }

    #[test]
    fn the_score_window_holds_the_recent_scores() {
        let mut reference = [0.0; SCORE_BINS.len()];
        reference[0] = 0.9;
        reference[1] = 0.1;
        let mut shifted = [0.0; SCORE_BINS.len()];
        shifted[0] = 0.5;
        shifted[19] = 0.5;
        let mut w = ScoreWindow::default();
        let mut total = [0u64; SCORE_BINS.len()];
        assert_eq!(w.observe(total), None, "the first call starts the window");
        total = add(total, counts_of(&reference, 500));
        assert_eq!(w.observe(total), None, "fewer than PSI_MIN_SCORES");
        total = add(total, counts_of(&reference, 500));
        let live = w.observe(total).unwrap();
        assert!((live[0] - 0.9).abs() < 1e-9 && (live[1] - 0.1).abs() < 1e-9, "{live:?}");
        // Thirty thousand like the reference, in steps of 1,000, then twenty
        // thousand shifted: the window sees only (about) the last 10,000.
        for _ in 0..30 {
            total = add(total, counts_of(&reference, 1000));
            w.observe(total).unwrap();
        }
        let mut live = [0.0; SCORE_BINS.len()];
        for _ in 0..20 {
            total = add(total, counts_of(&shifted, 1000));
            live = w.observe(total).unwrap();
        }
        assert!((live[19] - 0.5).abs() < 1e-9, "only shifted scores in the window: {live:?}");
        assert!(w.snapshots.len() <= (PSI_WINDOW / PSI_STEP + 1) as usize);
        // Halfway: 5,000 shifted of the 10,000 or 11,000 kept.
        let mut w = ScoreWindow::default();
        let mut total = [0u64; SCORE_BINS.len()];
        w.observe(total);
        for k in 0..25 {
            let shares = if k < 20 { &reference } else { &shifted };
            total = add(total, counts_of(shares, 1000));
            live = w.observe(total).unwrap();
        }
        assert!(live[19] > 0.5 * 5.0 / 11.0 - 1e-9 && live[19] <= 0.25 + 1e-9, "{live:?}");
    }
}
