//! Honest significance of a holdout gain against the original model, on the holdout rows only
//! (nothing here influences selection).
//!
//! Definitions (shared with the independent reference `tests/reference/significance.py`):
//! - per-row score: 1 when the argmax of the row's probabilities (ties → lowest index) equals
//!   the label, else 0 (classification); minus the squared error `(f64(value) − target)²`
//!   (regression). A row's difference `d = score(candidate) − score(original)`.
//! - paired bootstrap: resample `r` (from 0) draws `n` row positions, draw `j` (from 0) being
//!   `splitmix64(seed + (r·n + j + 1)·γ) mod n` with γ = 0x9E3779B97F4A7C15 (wrapping u64
//!   arithmetic: a counter-based SplitMix64 stream), and its gain is `Σ d` (added in draw
//!   order, in f64) `/ n`. With the `B` gains sorted ascending and `k = ⌊B / 40⌋`, the 95%
//!   interval is `[g_k, g_(B−1−k)]`. Both models see the same resampled rows.
//! - seed: the run's split seed XOR [`SEED_SALT`].
//! - McNemar: `b` rows the original gets right and the candidate wrong, `c` the reverse;
//!   `p = min(1, 2·P[X ≤ min(b, c)])` with `X ~ Bin(b + c, 1/2)`, and `p = 1` when `b + c = 0`.

use rayon::prelude::*;

use super::invalid;
use super::report::{Bootstrap, Scores, Significance};
use crate::Error;
use crate::score::metrics::row_se;
use crate::score::{Labels, Predictions, ScoredAs};

/// Bootstrap resamples per interval.
pub const RESAMPLES: u32 = 2000;

/// Mixed into the split seed to seed the bootstrap (ASCII "SMD-BOOT"), so that its stream is
/// not the split's own.
pub const SEED_SALT: u64 = 0x534D_442D_424F_4F54;

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The bootstrap seed of a run with split seed `split_seed`.
pub fn bootstrap_seed(split_seed: u64) -> u64 {
    split_seed ^ SEED_SALT
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny generator whose `i`-th output (from 1) is a
/// fixed mix of `seed + i·γ`, so any draw can be computed on its own.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The stream of `seed` with its first `skip` outputs skipped.
    pub fn at(seed: u64, skip: u64) -> Self {
        SplitMix64 {
            state: seed.wrapping_add(skip.wrapping_mul(GAMMA)),
        }
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Each predicted row's score (see the module docs): 1.0 or 0.0 for a right or wrong class,
/// minus the squared error for regression (the metrics' own per-row formulas).
pub fn row_scores(p: &Predictions, labels: &Labels) -> Result<Vec<f64>, Error> {
    let out_of_range = |r: usize| invalid("internal", format!("row {r} has no label"));
    match (labels, p.kind) {
        (Labels::Classes(ids), ScoredAs::Probabilities | ScoredAs::Logits) => {
            if let Some(&r) = p.rows.iter().find(|&&r| r >= ids.len()) {
                return Err(out_of_range(r));
            }
            // As the metrics count it (a label out of range is never right).
            let correct = p.correct(labels).unwrap_or_default();
            Ok(correct
                .into_iter()
                .map(|c| if c { 1.0 } else { 0.0 })
                .collect())
        }
        (Labels::Targets(t), ScoredAs::Regression) => p
            .rows
            .iter()
            .zip(&p.values)
            .map(|(&r, &v)| {
                let target = t.get(r).copied().ok_or_else(|| out_of_range(r))?;
                Ok(-row_se(v, target))
            })
            .collect(),
        _ => Err(invalid(
            "internal",
            "labels and predictions disagree on classification vs regression",
        )),
    }
}

/// The 95% percentile interval of the mean of `diff` over `resamples` paired bootstrap
/// resamples drawn from `seed` (see the module docs); `None` without rows or resamples.
pub fn bootstrap_ci95(diff: &[f64], resamples: u32, seed: u64) -> Option<[f64; 2]> {
    bootstrap_ci95_many(&[diff], resamples, seed)?.pop()
}

/// [`bootstrap_ci95`] of each of `diffs` (all over the same rows), from one set of draws: the
/// intervals are those of separate calls, and the draws, most of an interval's time, are
/// made once. `None` without rows or resamples, or when the lengths differ.
pub fn bootstrap_ci95_many(diffs: &[&[f64]], resamples: u32, seed: u64) -> Option<Vec<[f64; 2]>> {
    let n = diffs.first()?.len();
    let m = diffs.len();
    if n == 0 || resamples == 0 || diffs.iter().any(|d| d.len() != n) {
        return None;
    }
    // Groups of up to four diffs, row-major: a draw reads its row's values of a group from
    // one place, and a group's sums stay in registers.
    let groups: Vec<(usize, Vec<f64>)> = diffs
        .chunks(4)
        .map(|g| {
            let mut by_row = vec![0.0f64; n * g.len()];
            for (i, d) in g.iter().enumerate() {
                for (j, &v) in d.iter().enumerate() {
                    by_row[j * g.len() + i] = v;
                }
            }
            (g.len(), by_row)
        })
        .collect();
    // Counter-based: each resample starts at its own offset in the stream, so they can run
    // in parallel and still give the same numbers as a sequential reference.
    let sums: Vec<Vec<f64>> = (0..u64::from(resamples))
        .into_par_iter()
        .map(|r| {
            let start = SplitMix64::at(seed, r.wrapping_mul(n as u64));
            let mut sum = Vec::with_capacity(m);
            for (w, by_row) in &groups {
                match w {
                    1 => sum.extend(draw_sums::<1>(start.clone(), n, by_row)),
                    2 => sum.extend(draw_sums::<2>(start.clone(), n, by_row)),
                    3 => sum.extend(draw_sums::<3>(start.clone(), n, by_row)),
                    _ => sum.extend(draw_sums::<4>(start.clone(), n, by_row)),
                }
            }
            sum
        })
        .collect();
    let b = sums.len();
    let k = b / 40;
    let intervals = (0..m)
        .map(|i| {
            let mut gains: Vec<f64> = sums.iter().map(|s| s[i] / n as f64).collect();
            gains.sort_by(f64::total_cmp);
            [gains[k], gains[b - 1 - k]]
        })
        .collect();
    Some(intervals)
}

/// One resample's sums of `W` diffs stored row-major in `by_row` (`n` rows): `n` draws of
/// `rng`, each row's values added in draw order.
fn draw_sums<const W: usize>(mut rng: SplitMix64, n: usize, by_row: &[f64]) -> [f64; W] {
    let mut sum = [0.0f64; W];
    for _ in 0..n {
        // Modulo bias is at most n / 2⁶⁴: negligible, and trivial to reproduce.
        let j = (rng.next_u64() % n as u64) as usize;
        if let Some(row) = by_row.get(j * W..(j + 1) * W) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += v;
            }
        }
    }
    sum
}

/// `x · 2^e`, without overflowing or underflowing on the way.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    let (up, down) = (2f64.powi(500), 2f64.powi(-500));
    while e > 500 && x.is_finite() {
        x *= up;
        e -= 500;
    }
    while e < -500 && x != 0.0 {
        x *= down;
        e += 500;
    }
    x * 2f64.powi(e.clamp(-500, 500) as i32)
}

/// McNemar's exact two-sided p-value for `b` and `c` discordant pairs:
/// `min(1, 2·P[X ≤ min(b, c)])` with `X ~ Bin(b + c, 1/2)`; 1 when `b + c = 0`.
///
/// The largest term `C(m, k) / 2^m` is built as a product of ratios with its power of two kept
/// apart (no overflow, no logarithms), the others relative to it; the relative error stays
/// within a few `k·ε`. Time: `O(min(b, c))` (counts of rows already scored).
pub fn mcnemar_exact_p(b: u64, c: u64) -> f64 {
    let m = b.saturating_add(c);
    let k = b.min(c);
    // With b = c, P[X ≤ k] > 1/2: p is 1 (this also covers b + c = 0).
    if 2 * k >= m {
        return 1.0;
    }
    // C(m, k) = Π_{i=1..k} (m − i + 1) / i, as mantissa · 2^exp.
    let mut mant = 1.0f64;
    let mut exp: i64 = 0;
    for i in 1..=k {
        mant = mant * (m - i + 1) as f64 / i as f64;
        if mant > 2f64.powi(600) {
            mant *= 2f64.powi(-600);
            exp += 600;
        }
    }
    // Σ_{i ≤ k} C(m, i) / C(m, k): terms shrink going down from k, largest first.
    let (mut ratio, mut sum) = (1.0f64, 1.0f64);
    for i in (1..=k).rev() {
        ratio *= i as f64 / (m - i + 1) as f64;
        sum += ratio;
        if ratio < 1e-18 * sum {
            break;
        }
    }
    let p = ldexp(2.0 * mant * sum, exp - m as i64);
    p.min(1.0)
}

/// The significance of `candidate`'s holdout gain over the original model's holdout
/// predictions `original` (same rows), given both models' scores.
pub(super) fn significance(
    original: (&Predictions, &Scores),
    candidate: (&Predictions, &Scores),
    labels: &Labels,
    seed: u64,
) -> Result<Significance, Error> {
    significance_many(original, &[candidate], labels, seed)?
        .pop()
        .ok_or_else(|| invalid("internal", "no candidate"))
}

/// [`significance`] of each of `candidates`, their bootstrap draws made once.
pub(super) fn significance_many(
    original: (&Predictions, &Scores),
    candidates: &[(&Predictions, &Scores)],
    labels: &Labels,
    seed: u64,
) -> Result<Vec<Significance>, Error> {
    let (orig, orig_scores) = original;
    if candidates.iter().any(|(cand, _)| orig.rows != cand.rows) {
        return Err(invalid(
            "internal",
            "the original and a candidate were scored on different holdout rows",
        ));
    }
    let so = row_scores(orig, labels)?;
    let mut scores = Vec::with_capacity(candidates.len());
    let mut diffs = Vec::with_capacity(candidates.len());
    for (cand, _) in candidates {
        let sc = row_scores(cand, labels)?;
        diffs.push(sc.iter().zip(&so).map(|(c, o)| c - o).collect::<Vec<f64>>());
        scores.push(sc);
    }
    let views: Vec<&[f64]> = diffs.iter().map(Vec::as_slice).collect();
    let intervals = bootstrap_ci95_many(&views, RESAMPLES, seed)
        .ok_or_else(|| invalid("internal", "no holdout rows"))?;
    Ok(candidates
        .iter()
        .zip(scores)
        .zip(intervals)
        .map(|(((cand, cand_scores), sc), ci95)| {
            let classification = cand.kind != ScoredAs::Regression;
            let discordant = classification.then(|| discordant(&so, &sc));
            let gain = cand_scores.holdout.primary() - orig_scores.holdout.primary();
            let selection_gain = cand_scores.selection.primary() - orig_scores.selection.primary();
            Significance {
                gain,
                ci95,
                mcnemar_p: discordant.map(|[b, c]| mcnemar_exact_p(b, c)),
                discordant,
                selection_gain,
                gap: selection_gain - gain,
                bootstrap: Bootstrap {
                    resamples: RESAMPLES,
                    seed,
                },
            }
        })
        .collect())
}

/// `[b, c]`: rows the original gets right and the candidate wrong, and the reverse.
fn discordant(original: &[f64], candidate: &[f64]) -> [u64; 2] {
    let count = |o: f64, c: f64| {
        original
            .iter()
            .zip(candidate)
            .filter(|&(&x, &y)| x == o && y == c)
            .count() as u64
    };
    [count(1.0, 0.0), count(0.0, 1.0)]
}

/// McNemar's exact p-value of `candidate` against `original` on the same rows (the selection
/// rows: what the export gate reads); `None` for regression.
pub(super) fn selection_p(
    original: &Predictions,
    candidate: &Predictions,
    labels: &Labels,
) -> Result<Option<f64>, Error> {
    if original.rows != candidate.rows {
        return Err(invalid(
            "internal",
            "the original and a candidate were scored on different selection rows",
        ));
    }
    if candidate.kind == ScoredAs::Regression {
        return Ok(None);
    }
    let (so, sc) = (
        row_scores(original, labels)?,
        row_scores(candidate, labels)?,
    );
    let [b, c] = discordant(&so, &sc);
    Ok(Some(mcnemar_exact_p(b, c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact `2·Σ_{i ≤ k} C(m, i) / 2^m`, in integers (m ≤ 120).
    fn exact_p(b: u64, c: u64) -> f64 {
        let m = b + c;
        if m == 0 {
            return 1.0;
        }
        let k = b.min(c);
        let mut binom: u128 = 1;
        let mut sum: u128 = 1;
        for i in 1..=k {
            binom = binom * u128::from(m - i + 1) / u128::from(i);
            sum += binom;
        }
        // One rounding (sum → f64); the power of two is exact.
        (2.0 * sum as f64 * 2f64.powi(-(m as i32))).min(1.0)
    }

    #[test]
    fn mcnemar_known_values() {
        assert_eq!(mcnemar_exact_p(0, 0), 1.0);
        assert_eq!(mcnemar_exact_p(1, 9), 0.021484375);
        assert_eq!(mcnemar_exact_p(9, 1), 0.021484375);
        assert_eq!(mcnemar_exact_p(0, 10), 0.001953125);
        assert_eq!(mcnemar_exact_p(0, 1), 1.0);
        assert_eq!(mcnemar_exact_p(5, 5), 1.0);
        assert_eq!(mcnemar_exact_p(4, 5), 1.0);
        // 2·(1 + 12 + 66 + 220)/4096
        assert!((mcnemar_exact_p(3, 9) - 598.0 / 4096.0).abs() < 1e-16);
    }

    #[test]
    fn mcnemar_matches_exact_integers() {
        for b in 0..60u64 {
            for c in 0..60u64 {
                let (got, want) = (mcnemar_exact_p(b, c), exact_p(b, c));
                assert!(
                    (got - want).abs() <= 1e-13 * want,
                    "b={b} c={c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn mcnemar_large_counts_stay_finite() {
        for (b, c) in [
            (5_000, 6_000),
            (0, 2_000),
            (1, 100_000),
            (49_000, 51_000),
            (1_000_000, 1_000_500),
        ] {
            let p = mcnemar_exact_p(b, c);
            assert!(
                p.is_finite() && (0.0..=1.0).contains(&p),
                "b={b} c={c}: {p}"
            );
        }
        // 2^-1999 underflows to 0; ±1 sd around the mean is far from significant.
        assert_eq!(mcnemar_exact_p(0, 2_000), 0.0);
        assert!(mcnemar_exact_p(49_900, 50_100) > 0.5);
        assert!(mcnemar_exact_p(5_000, 6_000) < 1e-20);
    }

    #[test]
    fn splitmix_is_the_reference_stream() {
        // Vigna's splitmix64.c from seed 1234567.
        let mut r = SplitMix64::new(1_234_567);
        let want = [
            6_457_827_717_110_365_317u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
        let mut a = SplitMix64::new(7);
        for _ in 0..3 {
            a.next_u64();
        }
        assert_eq!(a.next_u64(), SplitMix64::at(7, 3).next_u64());
    }

    fn preds(probs: Vec<f32>, classes: usize) -> Predictions {
        Predictions {
            rows: (0..probs.len() / classes).collect(),
            classes,
            probs,
            values: vec![],
            kind: ScoredAs::Probabilities,
            non_finite_rows: 0,
            first_non_finite: None,
            output: "y".into(),
        }
    }

    /// The bootstrap written out naively, one sequential stream.
    fn naive_ci(diff: &[f64], b: usize, seed: u64) -> [f64; 2] {
        let n = diff.len();
        let mut rng = SplitMix64::new(seed);
        let mut g: Vec<f64> = (0..b)
            .map(|_| {
                let mut s = 0.0;
                for _ in 0..n {
                    s += diff[(rng.next_u64() % n as u64) as usize];
                }
                s / n as f64
            })
            .collect();
        g.sort_by(f64::total_cmp);
        [g[b / 40], g[b - 1 - b / 40]]
    }

    #[test]
    fn one_set_of_draws_gives_each_diffs_own_interval() {
        // Diffs of 37 rows: classification-like, regression-like and all zeros.
        let a: Vec<f64> = (0..37).map(|i| f64::from(i % 3) - 1.0).collect();
        let b: Vec<f64> = (0..37).map(|i| (f64::from(i) * 0.37).sin()).collect();
        let z = vec![0.0; 37];
        // Six: two groups of draws (four, then two).
        let all = [&a, &b, &z, &b, &a, &z];
        let many = bootstrap_ci95_many(&all.map(|d| d.as_slice()), 300, 7).unwrap();
        assert_eq!(many.len(), 6);
        for (d, ci) in all.into_iter().zip(&many) {
            assert_eq!(*ci, naive_ci(d, 300, 7));
            assert_eq!(Some(*ci), bootstrap_ci95(d, 300, 7));
        }
        assert_eq!(many[2], [0.0, 0.0]);
        assert_eq!(bootstrap_ci95_many(&[&a, &b[..36]], 300, 7), None);
        assert_eq!(bootstrap_ci95_many(&[], 300, 7), None);
    }

    #[test]
    fn bootstrap_on_hand_made_predictions() {
        // Rows: labels 0,1,1,0; the original gets rows 0 and 1 right, the candidate 0, 1, 2.
        let labels = Labels::Classes(vec![0, 1, 1, 0]);
        let orig = preds(vec![0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7], 2);
        // Row 3 is a tie: it goes to class 0, the label.
        let cand = preds(vec![0.9, 0.1, 0.2, 0.8, 0.4, 0.6, 0.5, 0.5], 2);
        assert_eq!(row_scores(&orig, &labels).unwrap(), [1.0, 1.0, 0.0, 0.0]);
        assert_eq!(row_scores(&cand, &labels).unwrap(), [1.0, 1.0, 1.0, 1.0]);
        let sc = |p: &Predictions| {
            let m = p.metrics(&labels).unwrap();
            Scores {
                selection: m,
                holdout: m,
            }
        };
        let s = significance((&orig, &sc(&orig)), (&cand, &sc(&cand)), &labels, 42).unwrap();
        assert_eq!(s.gain, 0.5);
        assert_eq!(s.discordant, Some([0, 2]));
        // 2·P[Bin(2, 1/2) = 0]
        assert_eq!(s.mcnemar_p, Some(0.5));
        assert_eq!((s.selection_gain, s.gap), (0.5, 0.0));
        // Gains of a resample are multiples of 1/4 within [0, 1].
        let [lo, hi] = s.ci95;
        assert!(
            (0.0..=0.5).contains(&lo) && (0.5..=1.0).contains(&hi),
            "{lo} {hi}"
        );
        assert_eq!((lo * 4.0).fract(), 0.0);
        assert_eq!(s.ci95, naive_ci(&[0.0, 0.0, 1.0, 1.0], 2000, 42));
        assert_eq!(s.bootstrap.resamples, 2000);
        // Identical models: every resampled gain is 0.
        let same = significance((&orig, &sc(&orig)), (&orig, &sc(&orig)), &labels, 1).unwrap();
        assert_eq!(same.ci95, [0.0, 0.0]);
        assert_eq!(same.mcnemar_p, Some(1.0));
        // Different rows are refused.
        let mut other = cand.clone();
        other.rows = vec![1, 2, 3, 0];
        assert!(significance((&orig, &sc(&orig)), (&other, &sc(&cand)), &labels, 1).is_err());
    }

    #[test]
    fn bootstrap_regression_uses_squared_errors() {
        let labels = Labels::Targets(vec![0.0, 1.0, 2.0]);
        let mk = |values: Vec<f32>| Predictions {
            rows: vec![0, 1, 2],
            classes: 0,
            probs: vec![],
            values,
            kind: ScoredAs::Regression,
            non_finite_rows: 0,
            first_non_finite: None,
            output: "y".into(),
        };
        let (orig, cand) = (mk(vec![1.0, 1.0, 0.0]), mk(vec![0.5, 1.0, 2.0]));
        assert_eq!(row_scores(&orig, &labels).unwrap(), [-1.0, 0.0, -4.0]);
        let sc = |p: &Predictions| {
            let m = p.metrics(&labels).unwrap();
            Scores {
                selection: m,
                holdout: m,
            }
        };
        let s = significance((&orig, &sc(&orig)), (&cand, &sc(&cand)), &labels, 9).unwrap();
        assert_eq!(s.mcnemar_p, None);
        assert_eq!(s.discordant, None);
        assert_eq!(s.ci95, naive_ci(&[0.75, 0.0, 4.0], 2000, 9));
        assert!((s.gain - 4.75 / 3.0).abs() < 1e-12);
        // One resample of three rows: the interval is that resample's gain.
        let one = bootstrap_ci95(&[0.75, 0.0, 4.0], 1, 9).unwrap();
        assert_eq!(one[0], one[1]);
        assert_eq!(bootstrap_ci95(&[], 10, 0), None);
    }
}
