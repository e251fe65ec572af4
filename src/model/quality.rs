//! Quality of a score against labels: the ranking metrics a fraud model is
//! judged by, and the hold threshold chosen from them.
//!
//! This module owns the metric definitions, so `fds train` (validation),
//! `fds evaluate` (the handbook protocol) and the model card all report the
//! same numbers the same way. The definitions follow the fraud-detection
//! handbook (Le Borgne et al., 2022, chapter 4) and scikit-learn:
//!
//! - [`auc_roc`]: the probability that a random fraud scores above a random
//!   genuine transfer; tied scores count one half (Mann-Whitney with mid-ranks).
//! - [`average_precision`]: scikit-learn's `average_precision_score`, the sum
//!   over distinct thresholds of precision times the recall gained there (no
//!   interpolation); tied scores form one threshold.
//! - [`card_precision_at_k`]: the handbook's card precision top-k. Per day,
//!   each card (account) is scored by its highest transaction score; the share
//!   of fraudulent cards among the k highest is that day's figure, and cards
//!   found that way are left out of the later days; the result is the mean
//!   over days.
//!
//! - [`psi`]: the population stability index of one binned score
//!   distribution against another (drift of live scores from the card's
//!   reference, `fds_model_score_psi`).
//!
//! All functions are pure and total: empty input or a single class gives
//! `None` instead of a number that would mean nothing.

use std::collections::{BTreeMap, HashSet};

/// Order of indexes by score, highest first; ties keep input order.
fn by_score_desc(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// The scores from highest to lowest, equal scores taken together (a
/// threshold cannot split them): (score, how many, how many fraud).
fn tie_groups<'a>(scores: &'a [f64], labels: &'a [bool]) -> impl Iterator<Item = (f64, usize, usize)> + 'a {
    let order = by_score_desc(scores);
    let mut i = 0;
    std::iter::from_fn(move || {
        let first = *order.get(i)?;
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[first] {
            j += 1;
        }
        let frauds = order[i..=j].iter().filter(|&&k| labels[k]).count();
        let size = j - i + 1;
        i = j + 1;
        Some((scores[first], size, frauds))
    })
}

/// Area under the ROC curve; `None` without both classes.
pub fn auc_roc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' ranks (1-based), tied scores sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        let pos_in_group = order[i..=j].iter().filter(|&&k| labels[k]).count();
        rank_sum += mid_rank * pos_in_group as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Average precision (scikit-learn's definition); `None` without a positive.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let (mut tp, mut seen, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    for (_, size, frauds) in tie_groups(scores, labels) {
        tp += frauds;
        seen += size;
        let recall = tp as f64 / positives as f64;
        ap += (recall - last_recall) * (tp as f64 / seen as f64);
        last_recall = recall;
    }
    Some(ap)
}

/// One scored transaction for card precision: its day, its card, its score
/// and whether it was fraud.
#[derive(Debug, Clone, Copy)]
pub struct CardScore<'a> {
    /// KST day, as days since 1970-01-01.
    pub day: i64,
    /// The card (account) the transaction belongs to.
    pub card: &'a str,
    /// The model's score.
    pub score: f64,
    /// Whether it was fraud.
    pub fraud: bool,
}

/// The handbook's card precision@k (mean over days, detected cards removed
/// from later days); `None` for no transactions or `k` = 0.
pub fn card_precision_at_k(rows: &[CardScore<'_>], k: usize) -> Option<f64> {
    if rows.is_empty() || k == 0 {
        return None;
    }
    // Per day and card: the highest score and whether any transaction was fraud.
    let mut days: BTreeMap<i64, BTreeMap<&str, (f64, bool)>> = BTreeMap::new();
    for r in rows {
        let e = days.entry(r.day).or_default().entry(r.card).or_insert((f64::NEG_INFINITY, false));
        e.0 = e.0.max(r.score);
        e.1 |= r.fraud;
    }
    let mut detected: HashSet<&str> = HashSet::new();
    let mut sum = 0.0;
    for cards in days.values() {
        let mut ranked: Vec<(&str, f64, bool)> =
            cards.iter().filter(|(c, _)| !detected.contains(*c)).map(|(c, &(s, f))| (*c, s, f)).collect();
        // Highest score first; ties by card id so the figure is reproducible.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let found: Vec<&str> = ranked.iter().take(k).filter(|c| c.2).map(|c| c.0).collect();
        sum += found.len() as f64 / k as f64;
        detected.extend(found);
    }
    Some(sum / days.len() as f64)
}

/// Precision and recall of holding every transfer scoring at least `threshold`.
pub fn precision_recall_at(scores: &[f64], labels: &[bool], threshold: f64) -> (f64, f64) {
    let (mut tp, mut fp, mut pos) = (0usize, 0usize, 0usize);
    for (&s, &l) in scores.iter().zip(labels) {
        pos += usize::from(l);
        if s >= threshold {
            if l {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let precision = if tp + fp == 0 { 0.0 } else { tp as f64 / (tp + fp) as f64 };
    let recall = if pos == 0 { 0.0 } else { tp as f64 / pos as f64 };
    (precision, recall)
}

/// The lowest score threshold whose holds reach `target_precision`, so recall
/// is as high as that precision allows; `None` if no threshold reaches it.
/// Thresholds are the distinct scores (a hold is `score >= threshold`).
pub fn threshold_for_precision(scores: &[f64], labels: &[bool], target_precision: f64) -> Option<f64> {
    let (mut tp, mut seen, mut best) = (0usize, 0usize, None);
    for (score, size, frauds) in tie_groups(scores, labels) {
        tp += frauds;
        seen += size;
        if tp > 0 && tp as f64 / seen as f64 >= target_precision {
            best = Some(score);
        }
    }
    best
}

/// The share a bin is given in [`psi`] when it has less (an empty bin would
/// make the logarithm infinite): 0.01% of the scores, the usual floor.
pub const PSI_EPSILON: f64 = 1e-4;

/// Population stability index of `actual` against `expected`, both the
/// shares of their scores per bin (each summing to 1, same bins):
/// `sum((a - e) * ln(a / e))`, every share first raised to at least
/// [`PSI_EPSILON`]. 0 for identical distributions; the usual reading is
/// under 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a shift worth
/// acting on.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    assert_eq!(expected.len(), actual.len(), "the same bins");
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(PSI_EPSILON), a.max(PSI_EPSILON));
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_counts_ordered_pairs_and_ties_as_half() {
        // Pairs (pos, neg): (0.9,0.1) win, (0.9,0.5) win, (0.4,0.1) win, (0.4,0.5) lose: 3/4.
        assert!(close(auc_roc(&[0.9, 0.4, 0.5, 0.1], &[true, true, false, false]).unwrap(), 0.75));
        // One tie between the positive and a negative: (1 + 0.5) / 2.
        assert!(close(auc_roc(&[0.5, 0.5, 0.1], &[true, false, false]).unwrap(), 0.75));
        assert!(close(auc_roc(&[0.1, 0.9], &[true, false]).unwrap(), 0.0));
        assert_eq!(auc_roc(&[0.1, 0.9], &[false, false]), None);
    }

    #[test]
    fn average_precision_matches_the_sklearn_definition() {
        // sklearn: y=[0,0,1,1], s=[0.1,0.4,0.35,0.8] -> 0.8333...
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!(close(ap, 0.5 * 1.0 + 0.5 * (2.0 / 3.0)), "{ap}");
        // Ties form one threshold: all four at one score, two positives -> precision 0.5.
        assert!(close(average_precision(&[0.3; 4], &[true, false, true, false]).unwrap(), 0.5));
        assert_eq!(average_precision(&[0.3], &[false]), None);
    }

    #[test]
    fn card_precision_takes_each_cards_best_score_per_day_and_drops_found_cards() {
        let rows = [
            // Day 0: card a (fraud) 0.9, card b 0.8 and 0.95 (genuine), card c 0.1 (fraud).
            CardScore { day: 0, card: "a", score: 0.9, fraud: true },
            CardScore { day: 0, card: "b", score: 0.8, fraud: false },
            CardScore { day: 0, card: "b", score: 0.95, fraud: false },
            CardScore { day: 0, card: "c", score: 0.1, fraud: true },
            // Day 1: a was found on day 0 and is left out; d (fraud) ranks first.
            CardScore { day: 1, card: "a", score: 0.99, fraud: true },
            CardScore { day: 1, card: "d", score: 0.7, fraud: true },
            CardScore { day: 1, card: "b", score: 0.6, fraud: false },
        ];
        // Day 0 top 2: b (0.95), a (0.9) -> 1/2. Day 1 top 2: d, b -> 1/2.
        assert!(close(card_precision_at_k(&rows, 2).unwrap(), 0.5));
        // Top 1: day 0 b -> 0; day 1 a (not found on day 0) -> 1. Mean 0.5.
        assert!(close(card_precision_at_k(&rows, 1).unwrap(), 0.5));
        // Top 3 on day 0 finds a and c (2/3); day 1 top 3 are d and b (1/3).
        assert!(close(card_precision_at_k(&rows, 3).unwrap(), 0.5));
        assert_eq!(card_precision_at_k(&[], 3), None);
    }

    #[test]
    fn threshold_is_the_lowest_score_that_keeps_the_precision() {
        let s = [0.9, 0.8, 0.7, 0.6, 0.5];
        let l = [true, true, false, true, false];
        // At 0.8: 2/2; at 0.7: 2/3; at 0.6: 3/4; at 0.5: 3/5.
        assert_eq!(threshold_for_precision(&s, &l, 0.75), Some(0.6));
        assert_eq!(threshold_for_precision(&s, &l, 1.0), Some(0.8));
        assert_eq!(threshold_for_precision(&s, &[false; 5], 0.1), None);
        let (p, r) = precision_recall_at(&s, &l, 0.6);
        assert!(close(p, 0.75) && close(r, 1.0));
    }

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_the_shift() {
        let e = [0.5, 0.3, 0.2, 0.0];
        assert_eq!(psi(&e, &e), 0.0);
        // By hand: (0.4-0.5)ln(0.8) + (0.3-0.3)ln(1) + (0.3-0.2)ln(1.5) + 0.
        let a = [0.4, 0.3, 0.3, 0.0];
        let by_hand = -0.1 * 0.8f64.ln() + 0.1 * 1.5f64.ln();
        assert!((psi(&e, &a) - by_hand).abs() < 1e-12, "{}", psi(&e, &a));
        // Symmetric, and an empty bin is floored, not infinite.
        assert!((psi(&a, &e) - psi(&e, &a)).abs() < 1e-12);
        let moved = [0.0, 0.0, 0.0, 1.0];
        let far = psi(&e, &moved);
        assert!(far.is_finite() && far > 5.0, "{far}");
        assert!(psi(&e, &a) < 0.1 && psi(&e, &a) > 0.0);
    }
}
