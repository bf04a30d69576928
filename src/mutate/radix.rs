//! LSD radix sort for index lists: they are uniformly spread over `[0, n)`, so a few linear
//! passes beat a comparison sort by a wide margin.

const DIGIT: u32 = 11;
const BUCKETS: usize = 1 << DIGIT;

/// Unsigned keys sortable by digits.
pub trait RadixKey: Copy + Default + Ord {
    /// The `DIGIT`-bit digit at `shift`.
    fn digit(self, shift: u32) -> usize;
}

impl RadixKey for u32 {
    #[inline(always)]
    fn digit(self, shift: u32) -> usize {
        ((self >> shift) as usize) & (BUCKETS - 1)
    }
}

impl RadixKey for u64 {
    #[inline(always)]
    fn digit(self, shift: u32) -> usize {
        ((self >> shift) as usize) & (BUCKETS - 1)
    }
}

/// Sorts `v` ascending, where every key is below `2^bits`.
pub fn sort<T: RadixKey>(v: &mut Vec<T>, bits: u32) {
    if v.len() < 256 {
        // Small lists: the counting passes would dominate.
        v.sort_unstable();
        return;
    }
    let mut src = std::mem::take(v);
    let mut dst = vec![T::default(); src.len()];
    let mut shift = 0;
    while shift < bits {
        let mut count = [0usize; BUCKETS];
        for &x in &src {
            count[x.digit(shift)] += 1;
        }
        if count.contains(&src.len()) {
            // One bucket holds everything: this digit is constant, the pass is a no-op.
            shift += DIGIT;
            continue;
        }
        let mut sum = 0;
        for c in count.iter_mut() {
            let here = *c;
            *c = sum;
            sum += here;
        }
        for &x in &src {
            let d = x.digit(shift);
            if let Some(slot) = dst.get_mut(count[d]) {
                *slot = x;
            }
            count[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
        shift += DIGIT;
    }
    *v = src;
}

/// Bits needed for values below `n`.
pub fn bits_below(n: u64) -> u32 {
    64 - n.saturating_sub(1).leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_like_std(v in prop::collection::vec(0u32..5_000_000, 0..3000)) {
            let mut a = v.clone();
            sort(&mut a, bits_below(5_000_000));
            let mut b = v;
            b.sort_unstable();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn sorts_u64(v in prop::collection::vec(any::<u64>().prop_map(|x| x >> 30), 0..3000)) {
            let mut a = v.clone();
            sort(&mut a, 34);
            let mut b = v;
            b.sort_unstable();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn bits() {
        assert_eq!(bits_below(0), 0);
        assert_eq!(bits_below(1), 0);
        assert_eq!(bits_below(2), 1);
        assert_eq!(bits_below(1 << 32), 32);
        assert_eq!(bits_below((1 << 32) + 1), 33);
    }
}
