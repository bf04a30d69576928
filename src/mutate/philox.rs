//! Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3") and a
//! Box–Muller Gaussian built on it.
//!
//! Every Gaussian is a pure function of (key, element index), so any element's noise is
//! computable in O(1) without the others, and results never depend on threads or chunking.
//! Element `j` uses Philox block `j / 4` (counter `[j/4 low 32 bits, j/4 high 32 bits, 0, 0]`);
//! the block's four words give two Box–Muller pairs: lanes 0, 1 are `r·cos θ`, `r·sin θ` from
//! words 0, 1 and lanes 2, 3 the same from words 2, 3.
//!
//! The transcendental functions are our own polynomials written with plain IEEE f32
//! `+ - * / sqrt` (Rust never fuses them into FMA), so the noise is bit-identical on every
//! platform: the platform's `ln`/`sin`/`cos` (libm) differ between systems, ours do not.

use super::simd::multiversion;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// A Philox key: two 32-bit words.
pub type Key = [u32; 2];

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds: the Random123 reference generator.
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: Key) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The Philox output block holding element `block * 4 .. block * 4 + 4`.
#[inline(always)]
fn block_words(key: Key, block: u64) -> [u32; 4] {
    philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], key)
}

const LN2: f32 = std::f32::consts::LN_2;

/// `sqrt(-2 ln u)` with `u = ((w >> 8) + 1) / 2^24`, in (0, 1]. With 24-bit uniforms the
/// normals are bounded by `sqrt(48 ln 2)` ≈ 5.77 (P(|z| > 5.77) ≈ 8e-9 for a true normal).
///
/// `ln` is computed from the exponent and a series for the mantissa, reduced to
/// [√½, √2): `ln m = 2 atanh s`, `s = (m - 1) / (m + 1)`, |s| ≤ 0.172, five terms (error < 1e-9).
#[inline(always)]
fn radius(w: u32) -> f32 {
    // Exact: an integer in [1, 2^24].
    let x = ((w >> 8) + 1) as f32;
    let bits = x.to_bits();
    let mut e = (bits >> 23) as i32 - 127;
    let mut mbits = (bits & 0x007F_FFFF) | 0x3F80_0000;
    // Mantissa above √2: halve it (exponent + 1) so that |s| stays small.
    let big = mbits > 0x3FB5_04F3;
    mbits -= if big { 0x0080_0000 } else { 0 };
    e += i32::from(big);
    let m = f32::from_bits(mbits);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let ln_m =
        2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (0.2 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))));
    // -2 ln u = -2 (e ln 2 + ln m - 24 ln 2); (24 - e) is an exact small integer.
    let v = 2.0 * ((24 - e) as f32 * LN2 - ln_m);
    v.max(0.0).sqrt()
}

// Taylor coefficients of sin and cos on [-π/4, π/4] (truncation error < 3e-8).
const S3: f32 = -1.0 / 6.0;
const S5: f32 = 1.0 / 120.0;
const S7: f32 = -1.0 / 5040.0;
const S9: f32 = 1.0 / 362_880.0;
const C2: f32 = -0.5;
const C4: f32 = 1.0 / 24.0;
const C6: f32 = -1.0 / 720.0;
const C8: f32 = 1.0 / 40_320.0;

/// `(cos θ, sin θ)` with `θ = 2π (w >> 8) / 2^24`.
///
/// The angle is a fraction of a turn, so the quadrant reduction is exact integer arithmetic.
#[inline(always)]
fn cos_sin(w: u32) -> (f32, f32) {
    let a = w >> 8; // [0, 2^24): θ = a · 2π / 2^24 = a / 2^22 quarter turns.
    let q = (a + (1 << 21)) >> 22; // nearest quarter turn, 0..=4
    let f = (a as i32 - (q << 22) as i32) as f32 * (1.0 / 4_194_304.0); // [-0.5, 0.5)
    let x = f * std::f32::consts::FRAC_PI_2;
    let x2 = x * x;
    let s = x * (1.0 + x2 * (S3 + x2 * (S5 + x2 * (S7 + x2 * S9))));
    let c = 1.0 + x2 * (C2 + x2 * (C4 + x2 * (C6 + x2 * C8)));
    // Rotate by q quarter turns: cos(x + qπ/2), sin(x + qπ/2).
    let q = q & 3;
    let swap = q & 1 != 0;
    let (cv, sv) = if swap { (s, c) } else { (c, s) };
    let cneg = ((q + 1) & 2) << 30; // q = 1, 2: cos negative
    let sneg = (q & 2) << 30; // q = 2, 3: sin negative
    (
        f32::from_bits(cv.to_bits() ^ cneg),
        f32::from_bits(sv.to_bits() ^ sneg),
    )
}

/// The four standard normals of Philox block `block`.
#[inline(always)]
pub fn gauss_block(key: Key, block: u64) -> [f32; 4] {
    let w = block_words(key, block);
    let r0 = radius(w[0]);
    let (c0, s0) = cos_sin(w[1]);
    let r1 = radius(w[2]);
    let (c1, s1) = cos_sin(w[3]);
    [r0 * c0, r0 * s0, r1 * c1, r1 * s1]
}

/// The standard normal of element `j`: the same value `fill_gauss` writes at `j`.
#[inline(always)]
pub fn gauss_at(key: Key, j: u64) -> f32 {
    let w = block_words(key, j >> 2);
    let pair = (j & 2) as usize; // words 0, 1 or 2, 3
    let r = radius(w[pair]);
    let (c, s) = cos_sin(w[pair + 1]);
    r * if j & 1 == 0 { c } else { s }
}

/// Lanes processed together (structure of arrays, so the compiler vectorises).
const LANES: usize = 32;

/// Philox4x32-10 of `LANES` blocks at once: `out[word][lane]`. Same arithmetic as
/// [`philox4x32_10`], arranged so each round is a vector operation across lanes.
#[inline(always)]
fn philox_lanes(key: Key, blocks: &[u64; LANES]) -> [[u32; LANES]; 4] {
    let mut c = [[0u32; LANES]; 4];
    for l in 0..LANES {
        c[0][l] = blocks[l] as u32;
        c[1][l] = (blocks[l] >> 32) as u32;
    }
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let mut n = [[0u32; LANES]; 4];
        for l in 0..LANES {
            let (hi0, lo0) = mulhilo(M0, c[0][l]);
            let (hi1, lo1) = mulhilo(M1, c[2][l]);
            n[0][l] = hi1 ^ c[1][l] ^ k[0];
            n[1][l] = lo1;
            n[2][l] = hi0 ^ c[3][l] ^ k[1];
            n[3][l] = lo0;
        }
        c = n;
    }
    c
}

/// Writes the standard normals of elements `first .. first + out.len()` into `out`, each
/// multiplied by `scale`. `first` must be a multiple of 4.
#[inline(always)]
fn fill_gauss_body(key: Key, first: u64, scale: f32, out: &mut [f32]) {
    debug_assert_eq!(first % 4, 0);
    let mut block = first >> 2;
    let mut chunks = out.chunks_exact_mut(4 * LANES);
    for chunk in &mut chunks {
        // Plain loops here: `array::from_fn` may be outlined, losing the AVX2 build.
        let mut blocks = [0u64; LANES];
        for (l, b) in blocks.iter_mut().enumerate() {
            *b = block + l as u64;
        }
        let w = philox_lanes(key, &blocks);
        let mut z = [[0f32; LANES]; 4];
        for l in 0..LANES {
            let r0 = radius(w[0][l]);
            let (c0, s0) = cos_sin(w[1][l]);
            let r1 = radius(w[2][l]);
            let (c1, s1) = cos_sin(w[3][l]);
            z[0][l] = r0 * c0 * scale;
            z[1][l] = r0 * s0 * scale;
            z[2][l] = r1 * c1 * scale;
            z[3][l] = r1 * s1 * scale;
        }
        for (l, quad) in chunk.chunks_exact_mut(4).enumerate() {
            quad[0] = z[0][l];
            quad[1] = z[1][l];
            quad[2] = z[2][l];
            quad[3] = z[3][l];
        }
        block += LANES as u64;
    }
    for quad in chunks.into_remainder().chunks_mut(4) {
        let g = gauss_block(key, block);
        for (o, &x) in quad.iter_mut().zip(g.iter()) {
            *o = x * scale;
        }
        block += 1;
    }
}

/// Writes `scale · z_j` for each `j` in `indices` into `out` (same length): the values
/// [`gauss_at`] gives, computed `LANES` at a time.
#[inline(always)]
fn gather_gauss_body(key: Key, indices: &[u32], scale: f32, out: &mut [f32]) {
    let mut idx = indices.chunks_exact(LANES);
    let mut outs = out.chunks_exact_mut(LANES);
    for (ix, o) in (&mut idx).zip(&mut outs) {
        let mut blocks = [0u64; LANES];
        for (b, &j) in blocks.iter_mut().zip(ix) {
            *b = u64::from(j >> 2);
        }
        let w = philox_lanes(key, &blocks);
        for l in 0..LANES {
            let j = ix[l];
            let hi = j & 2 != 0;
            let wa = if hi { w[2][l] } else { w[0][l] };
            let wb = if hi { w[3][l] } else { w[1][l] };
            let r = radius(wa);
            let (c, s) = cos_sin(wb);
            o[l] = r * if j & 1 == 0 { c } else { s } * scale;
        }
    }
    for (&j, o) in idx.remainder().iter().zip(outs.into_remainder()) {
        *o = gauss_at(key, u64::from(j)) * scale;
    }
}

/// Writes `scale ·` the standard normals of elements `first .. first + out.len()` into
/// `out`. `first` must be a multiple of 4.
pub fn fill_gauss(key: Key, first: u64, scale: f32, out: &mut [f32]) {
    fill_gauss_mv(key, first, scale, out)
}

multiversion! {
    fn fill_gauss_mv / fill_gauss_portable(key: Key, first: u64, scale: f32, out: &mut [f32]) {
        fill_gauss_body(key, first, scale, out)
    }
}

multiversion! {
    fn gather_gauss_mv / gather_gauss_portable(key: Key, indices: &[u32], scale: f32, out: &mut [f32]) {
        gather_gauss_body(key, indices, scale, out)
    }
}

/// Writes `scale · z_j` for each `j` in `indices` into `out` (zipped; extra entries of the
/// longer one are left alone).
pub fn gather_gauss(key: Key, indices: &[u32], scale: f32, out: &mut [f32]) {
    let len = indices.len().min(out.len());
    let (indices, out) = (&indices[..len], &mut out[..len]);
    gather_gauss_mv(key, indices, scale, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Random123 kat_vectors: counter, key -> output.
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn radius_matches_f64() {
        for w in (0..=u32::MAX)
            .step_by(65_537)
            .chain([0, 255, 256, u32::MAX])
        {
            let u = f64::from((w >> 8) + 1) / 16_777_216.0;
            let want = (-2.0 * u.ln()).sqrt();
            let got = f64::from(radius(w));
            assert!(
                (got - want).abs() <= 2e-6 * want.max(1e-3),
                "w={w:#x} {got} {want}"
            );
        }
        assert_eq!(radius(u32::MAX), 0.0);
    }

    #[test]
    fn cos_sin_match_f64() {
        for w in (0..=u32::MAX)
            .step_by(40_009)
            .chain([0, u32::MAX, 1 << 29, 3 << 30])
        {
            let t = f64::from(w >> 8) / 16_777_216.0 * std::f64::consts::TAU;
            let (c, s) = cos_sin(w);
            assert!((f64::from(c) - t.cos()).abs() < 3e-7, "cos w={w:#x}");
            assert!((f64::from(s) - t.sin()).abs() < 3e-7, "sin w={w:#x}");
        }
    }

    #[test]
    fn gaussian_moments() {
        let key = [0x1234_5678, 0x9abc_def0];
        let n = 1_000_000usize;
        let mut v = vec![0f32; n];
        fill_gauss(key, 0, 1.0, &mut v);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let m4 = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(4))
            .sum::<f64>()
            / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!(
            (m4 / (var * var) - 3.0).abs() < 0.05,
            "kurtosis {}",
            m4 / (var * var)
        );
        let within1 = v.iter().filter(|x| x.abs() < 1.0).count() as f64 / n as f64;
        assert!((within1 - 0.682_689).abs() < 0.003, "P(|z|<1) {within1}");
        // Neighbouring lanes are uncorrelated.
        let corr = v
            .chunks_exact(2)
            .map(|p| f64::from(p[0]) * f64::from(p[1]))
            .sum::<f64>()
            / (n / 2) as f64;
        assert!(corr.abs() < 0.01, "corr {corr}");
    }

    #[test]
    fn gather_matches_pointwise_bitwise() {
        let key = [3, 5];
        let idx: Vec<u32> = (0..1000u32)
            .map(|i| i * 7919 % 100_003)
            .chain([u32::MAX, 0])
            .collect();
        let mut v = vec![0f32; idx.len()];
        gather_gauss(key, &idx, -0.5, &mut v);
        for (&j, &x) in idx.iter().zip(&v) {
            assert_eq!(x.to_bits(), (gauss_at(key, u64::from(j)) * -0.5).to_bits());
        }
        // The portable kernels agree with the dispatched (AVX2 here) ones, bit for bit.
        let mut p = vec![0f32; idx.len()];
        gather_gauss_portable(key, &idx, -0.5, &mut p);
        assert!(p.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
        let (mut a, mut b) = (vec![0f32; 9999], vec![0f32; 9999]);
        fill_gauss(key, 400, 2.0, &mut a);
        fill_gauss_portable(key, 400, 2.0, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    #[test]
    fn fill_matches_pointwise_bitwise() {
        let key = [7, 11];
        for (first, len) in [
            (0u64, 0usize),
            (0, 1),
            (0, 3),
            (4, 37),
            (4096, 1000),
            (8, 32),
        ] {
            let mut v = vec![0f32; len];
            fill_gauss(key, first, 0.25, &mut v);
            for (i, &x) in v.iter().enumerate() {
                let want = gauss_at(key, first + i as u64) * 0.25;
                assert_eq!(x.to_bits(), want.to_bits(), "first={first} i={i}");
            }
        }
    }
}
