//! Deterministic numerics: hashing, ChaCha8 streams and the distributions the
//! generator samples from, with its own `exp` and `ln` so no platform libm
//! can make two machines write different bytes.

use super::*;

pub(super) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of (salt, a, b): how per-entity facts are derived without storing them.
pub(super) fn h3(salt: u64, a: u64, b: u64) -> u64 {
    mix64(mix64(salt ^ a).wrapping_add(b.wrapping_mul(0xD6E8_FEB8_6659_FD93)))
}

/// Uniform in [0, 1) from 53 bits of a hash.
pub(super) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `e^x` from basic IEEE operations only, so results are identical everywhere.
pub(super) fn det_exp(x: f64) -> f64 {
    let x = x.clamp(-700.0, 700.0);
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * 0.693_147_180_369_123_8) - k * 1.908_214_929_270_587_7e-10;
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..=16 {
        term *= r / f64::from(n);
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// Natural log from basic IEEE operations only (for positive, normal `x`).
pub(super) fn det_ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut pow = s;
    let mut sum = 0.0;
    for k in 0..14 {
        sum += pow / f64::from(2 * k + 1);
        pow *= s2;
    }
    2.0 * sum + e as f64 * std::f64::consts::LN_2
}

/// Approximately standard normal (Irwin–Hall of four uniforms, tails cut at ±3.5).
pub(super) fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let a = rng.next_u64();
    let b = rng.next_u64();
    let u = |v: u64| v as f64 * (1.0 / 4_294_967_296.0);
    let s = u(a & 0xFFFF_FFFF) + u(a >> 32) + u(b & 0xFFFF_FFFF) + u(b >> 32);
    (s - 2.0) * 1.732_050_807_568_877_2
}

pub(super) fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    rng.gen::<f64>()
}

pub(super) fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

/// Uniform integer in `lo..=hi` (u32 only: `usize` sampling differs by platform).
pub(super) fn between(rng: &mut ChaCha8Rng, lo: u32, hi: u32) -> u32 {
    rng.gen_range(lo..=hi)
}

/// Log-uniform between `lo` and `hi`.
pub(super) fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo * det_exp(uniform(rng) * det_ln(hi / lo))
}

pub(super) fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = det_exp(-lambda);
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= uniform(rng);
        if p <= limit || k >= 60 {
            return k;
        }
        k += 1;
    }
}

/// `floor(x)` plus one with probability `frac(x)`: low-variance incident counts.
pub(super) fn round_random(rng: &mut ChaCha8Rng, x: f64) -> u32 {
    let whole = x.floor();
    whole as u32 + u32::from(chance(rng, x - whole))
}

pub(super) fn pick_weighted(weights: &[u32], mut r: u32) -> usize {
    let total: u32 = weights.iter().sum();
    r %= total.max(1);
    for (i, &w) in weights.iter().enumerate() {
        if r < w {
            return i;
        }
        r -= w;
    }
    weights.len() - 1
}

/// Round an amount the way people type it: mostly to 10,000 or 1,000 won,
/// large ones to 100,000; a few exact (splitting a bill).
pub(super) fn round_won(rng: &mut ChaCha8Rng, x: f64) -> u32 {
    let x = x.clamp(1_000.0, 2_000_000_000.0);
    let u = between(rng, 0, 99);
    let unit: f64 = if x >= 1_000_000.0 {
        if u < 70 {
            100_000.0
        } else {
            10_000.0
        }
    } else if x >= 10_000.0 {
        if u < 55 {
            10_000.0
        } else if u < 90 {
            1_000.0
        } else {
            10.0
        }
    } else if u < 75 {
        1_000.0
    } else {
        100.0
    };
    ((x / unit).round().max(1.0) * unit) as u32
}

pub(super) fn round_to(x: f64, unit: f64) -> u32 {
    ((x / unit).round().max(1.0) * unit).min(2_000_000_000.0) as u32
}

pub(super) fn stream(seed: u64, purpose: u64, day: u32) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream((purpose << 32) | u64::from(day));
    r
}
