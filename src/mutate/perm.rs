//! A keyed bijection on `[0, n)`, `n ≤ u32::MAX`, with O(1) evaluation and inverse.
//!
//! A Feistel network (4 rounds, Luby–Rackoff) permutes `[0, 2^b)` where `b` is the smallest
//! bit count with `2^b ≥ n` (at least 2); cycle walking (re-applying the network until the
//! value lands below `n`) restricts it to `[0, n)`. Since `2^b < 2n`, a walk takes fewer than
//! 2 steps on average. For odd `b` the halves differ by one bit (an unbalanced Feistel
//! network: the halves swap widths each round, and after an even number of rounds they are
//! back in place). The round function is Wellons' `lowbias32` hash of the half (≤ 16 bits)
//! xor a 32-bit round key, truncated to the other half's width. Everything is 32-bit, so the
//! range functions run 8 lanes at a time.

use super::simd::multiversion;

const ROUNDS: usize = 4;
const _: () = assert!(
    ROUNDS.is_multiple_of(2),
    "halves must end where they started"
);
const LANES: usize = 8;

/// A keyed permutation of `[0, n)`.
#[derive(Debug, Clone)]
pub struct Perm {
    n: u32,
    /// Width of the low (right) half; the high half has `b − right` ≤ `right` bits.
    right: u32,
    keys: [u32; ROUNDS],
    /// Round `i`'s function is truncated to the width of the half it is xored into.
    masks: [u32; ROUNDS],
}

#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

impl Perm {
    /// The permutation of `[0, n)` with these round keys.
    pub fn new(n: u32, keys: [u32; ROUNDS]) -> Self {
        let bits = if n <= 1 {
            0
        } else {
            32 - (n - 1).leading_zeros()
        };
        let bits = bits.max(2);
        let left = bits / 2;
        let right = bits - left;
        let mask = |w: u32| ((1u64 << w) - 1) as u32;
        // (l, r) → (r, l ⊕ F(r)): rounds 0, 2 xor into a `left`-bit half, 1, 3 `right`-bit.
        let masks = std::array::from_fn(|i| mask(if i % 2 == 0 { left } else { right }));
        Self {
            n,
            right,
            keys,
            masks,
        }
    }

    /// Round keys read from a key stream.
    pub fn from_stream(n: u32, ks: &mut super::keys::KeyStream) -> Self {
        let (a, b) = (ks.next_u64(), ks.next_u64());
        Self::new(n, [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32])
    }

    #[inline(always)]
    fn f(&self, round: usize, x: u32) -> u32 {
        lowbias32(x ^ self.keys[round]) & self.masks[round]
    }

    #[inline(always)]
    fn encrypt(&self, x: u32) -> u32 {
        let mut l = x >> self.right;
        let mut r = x & self.masks[1];
        for round in 0..ROUNDS {
            let t = l ^ self.f(round, r);
            l = r;
            r = t;
        }
        (l << self.right) | r
    }

    #[inline(always)]
    fn decrypt(&self, y: u32) -> u32 {
        let mut l = y >> self.right;
        let mut r = y & self.masks[1];
        for round in (0..ROUNDS).rev() {
            // Undo (l, r) → (r, l ⊕ F(r)).
            let t = r ^ self.f(round, l);
            r = l;
            l = t;
        }
        (l << self.right) | r
    }

    /// π(x) for `x < n` (reference form; the ranges are what the planner uses).
    #[cfg(test)]
    pub fn forward(&self, x: u32) -> u32 {
        if self.n <= 1 {
            return x;
        }
        let mut y = self.encrypt(x);
        while y >= self.n {
            y = self.encrypt(y);
        }
        y
    }

    /// π⁻¹(y) for `y < n` (reference form).
    #[cfg(test)]
    pub fn inverse(&self, y: u32) -> u32 {
        if self.n <= 1 {
            return y;
        }
        let mut x = self.decrypt(y);
        while x >= self.n {
            x = self.decrypt(x);
        }
        x
    }

    /// One network pass (no walking) over every value, `LANES` at a time.
    #[inline(always)]
    fn step_all<const INVERSE: bool>(&self, xs: &mut [u32]) {
        let step = |x: u32| {
            if INVERSE {
                self.decrypt(x)
            } else {
                self.encrypt(x)
            }
        };
        let mut chunks = xs.chunks_exact_mut(LANES);
        for c in &mut chunks {
            // Plain loops: `array::from_fn` may be outlined, losing the AVX2 build.
            let mut y = [0u32; LANES];
            for l in 0..LANES {
                y[l] = step(c[l]);
            }
            c.copy_from_slice(&y);
        }
        for x in chunks.into_remainder() {
            *x = step(*x);
        }
    }

    /// `out[i] = π(first + i)` (π⁻¹ when `INVERSE`). One vectorised pass over everything,
    /// then further passes over the compacted list of values still outside `[0, n)` (fewer
    /// than half each time), so walking costs about as much as the walks themselves.
    #[inline(always)]
    fn range_body<const INVERSE: bool>(&self, first: u32, out: &mut [u32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = first.wrapping_add(i as u32);
        }
        if self.n <= 1 {
            return;
        }
        self.step_all::<INVERSE>(out);
        let n = self.n;
        let count = out.iter().filter(|&&x| x >= n).count();
        if count == 0 {
            return;
        }
        // Branch-free compaction of the positions still walking.
        let mut pos = vec![0u32; count + 1];
        let mut c = 0usize;
        for (i, &x) in out.iter().enumerate() {
            if let Some(p) = pos.get_mut(c) {
                *p = i as u32;
            }
            c += usize::from(x >= n);
        }
        pos.truncate(count);
        let mut vals: Vec<u32> = pos
            .iter()
            .map(|&p| out.get(p as usize).copied().unwrap_or(0))
            .collect();
        while !vals.is_empty() {
            self.step_all::<INVERSE>(&mut vals);
            // Branch-free: store every value (one still walking is overwritten when it
            // lands), keep only the ones still outside [0, n).
            let mut keep = 0usize;
            for k in 0..vals.len() {
                let (v, p) = (vals[k], pos[k]);
                if let Some(o) = out.get_mut(p as usize) {
                    *o = v;
                }
                vals[keep] = v;
                pos[keep] = p;
                keep += usize::from(v >= n);
            }
            vals.truncate(keep);
            pos.truncate(keep);
        }
    }

    /// `out[i] = π(first + i)`; `first + out.len()` must not exceed `n`.
    pub fn forward_range(&self, first: u32, out: &mut [u32]) {
        range_mv::<false>(self, first, out)
    }

    /// `out[i] = π⁻¹(first + i)`; `first + out.len()` must not exceed `n`.
    pub fn inverse_range(&self, first: u32, out: &mut [u32]) {
        range_mv::<true>(self, first, out)
    }

    /// `forward_range` without its own dispatch, for use inside other multiversioned kernels.
    #[inline(always)]
    pub fn forward_range_inline(&self, first: u32, out: &mut [u32]) {
        self.range_body::<false>(first, out)
    }
}

multiversion! {
    fn range_mv / range_portable<const INVERSE: bool>(perm: &Perm, first: u32, out: &mut [u32]) {
        perm.range_body::<INVERSE>(first, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bijection_with_inverse(n in 1u32..3000, k0: u32, k1: u32, k2: u32, k3: u32) {
            let p = Perm::new(n, [k0, k1, k2, k3]);
            let mut seen = vec![false; n as usize];
            let mut fwd = vec![0u32; n as usize];
            let mut inv = vec![0u32; n as usize];
            p.forward_range(0, &mut fwd);
            p.inverse_range(0, &mut inv);
            for x in 0..n {
                let y = p.forward(x);
                prop_assert!(y < n);
                prop_assert!(!seen[y as usize]);
                seen[y as usize] = true;
                prop_assert_eq!(p.inverse(y), x);
                prop_assert_eq!(fwd[x as usize], y);
                prop_assert_eq!(inv[y as usize], x);
            }
        }
    }

    #[test]
    fn portable_kernel_matches_dispatched() {
        for n in [1u32, 2, 5, 1000, 300_000, 262_144] {
            let p = Perm::new(n, [11, 22, 33, 44]);
            let (mut a, mut b) = (vec![0u32; n as usize], vec![0u32; n as usize]);
            p.inverse_range(0, &mut a);
            range_portable::<true>(&p, 0, &mut b);
            assert_eq!(a, b);
            p.forward_range(0, &mut a);
            range_portable::<false>(&p, 0, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn network_is_a_bijection_on_its_domain() {
        for bits in 2..=12u32 {
            let n = 1u32 << bits;
            let p = Perm::new(n, [9, 8, 7, 6]);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.encrypt(x);
                assert!(y < n && !seen[y as usize], "bits={bits}");
                seen[y as usize] = true;
                assert_eq!(p.decrypt(y), x);
            }
        }
    }

    #[test]
    fn large_domain_round_trips() {
        for n in [u32::MAX, (1 << 31) + 1] {
            let p = Perm::new(n, [1, 2, 3, 4]);
            for x in (0..n).step_by(999_983) {
                let y = p.forward(x);
                assert!(y < n);
                assert_eq!(p.inverse(y), x);
            }
            let mut out = vec![0u32; 20];
            p.inverse_range(n - 20, &mut out);
            for (i, &x) in out.iter().enumerate() {
                assert_eq!(p.forward(x), n - 20 + i as u32);
            }
        }
    }

    #[test]
    fn keys_change_the_permutation() {
        let a = Perm::new(1000, [1, 2, 3, 4]);
        let b = Perm::new(1000, [5, 6, 7, 8]);
        let same = (0..1000).filter(|&x| a.forward(x) == b.forward(x)).count();
        // Two random permutations agree at about one point.
        assert!(same < 8, "{same} agreements");
    }
}
