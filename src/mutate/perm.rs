//! A keyed bijection on `[0, n)` with O(1) evaluation and inverse.
//!
//! A balanced Feistel network (4 rounds, Luby–Rackoff) permutes `[0, 2^b)` where `b` is the
//! smallest even bit count with `2^b ≥ n` (at least 2); cycle walking (re-applying the
//! network until the value lands below `n`) restricts it to `[0, n)`. Since `2^b < 4n`, a walk
//! takes fewer than 4 steps on average. The round function is the SplitMix64 finaliser of
//! the half-word xor a 64-bit round key.

const ROUNDS: usize = 4;

/// A keyed permutation of `[0, n)`.
#[derive(Debug, Clone)]
pub struct Perm {
    n: u64,
    half: u32,
    mask: u64,
    keys: [u64; ROUNDS],
}

#[inline(always)]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Perm {
    /// The permutation of `[0, n)` with these round keys.
    pub fn new(n: u64, keys: [u64; ROUNDS]) -> Self {
        let bits = if n <= 1 {
            0
        } else {
            64 - (n - 1).leading_zeros()
        };
        let bits = (bits + (bits & 1)).max(2);
        let half = bits / 2;
        Self {
            n,
            half,
            mask: (1u64 << half) - 1,
            keys,
        }
    }

    /// Round keys read from a key stream.
    pub fn from_stream(n: u64, ks: &mut super::keys::KeyStream) -> Self {
        let keys = [ks.next_u64(), ks.next_u64(), ks.next_u64(), ks.next_u64()];
        Self::new(n, keys)
    }

    #[inline(always)]
    fn f(&self, round: usize, x: u64) -> u64 {
        mix64(x ^ self.keys[round]) & self.mask
    }

    #[inline(always)]
    fn encrypt(&self, x: u64) -> u64 {
        let mut l = x >> self.half;
        let mut r = x & self.mask;
        for round in 0..ROUNDS {
            let t = l ^ self.f(round, r);
            l = r;
            r = t;
        }
        (l << self.half) | r
    }

    #[inline(always)]
    fn decrypt(&self, y: u64) -> u64 {
        let mut l = y >> self.half;
        let mut r = y & self.mask;
        for round in (0..ROUNDS).rev() {
            let t = r ^ self.f(round, l);
            r = l;
            l = t;
        }
        (l << self.half) | r
    }

    /// π(x) for `x < n`.
    #[inline]
    pub fn forward(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        if self.n <= 1 {
            return x;
        }
        let mut y = self.encrypt(x);
        while y >= self.n {
            y = self.encrypt(y);
        }
        y
    }

    /// π⁻¹(y) for `y < n`.
    #[inline]
    pub fn inverse(&self, y: u64) -> u64 {
        debug_assert!(y < self.n);
        if self.n <= 1 {
            return y;
        }
        let mut x = self.decrypt(y);
        while x >= self.n {
            x = self.decrypt(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bijection_with_inverse(n in 1u64..3000, k0: u64, k1: u64, k2: u64, k3: u64) {
            let p = Perm::new(n, [k0, k1, k2, k3]);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.forward(x);
                prop_assert!(y < n);
                prop_assert!(!seen[y as usize]);
                seen[y as usize] = true;
                prop_assert_eq!(p.inverse(y), x);
            }
        }
    }

    #[test]
    fn large_domain_round_trips() {
        let p = Perm::new((1 << 32) - 1, [1, 2, 3, 4]);
        for x in (0..(1u64 << 32) - 1).step_by(999_983) {
            let y = p.forward(x);
            assert!(y < (1 << 32) - 1);
            assert_eq!(p.inverse(y), x);
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
