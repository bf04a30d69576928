//! Racing (`--race`): a child is scored on the selection rows block by block and dropped as
//! soon as it clearly cannot beat its parent, so a generation costs fewer passes.
//!
//! A child matters only if it beats its parent on the selection rows: elitism keeps nothing
//! else and the merged candidate merges only such winners. So children race against the
//! parent, whose predictions of every selection row are known, not against each other: each
//! child needs one session and no other child's results, and the pipelined session builds
//! stay as they are. Blocks are runs of whole batches (a survivor's batches are exactly a full
//! evaluation's, so its predictions are bit-identical), visited in a seeded order so a
//! prefix is not one region of a sorted data set. After each block but the last, a child is
//! dropped when either
//! - it cannot win any more: its deficit of correct rows against the parent exceeds the
//!   parent's errors in the rows still to come (exact: it never drops a winner), or
//! - it clearly loses: the deficit is at least [`Z`]·√(rows where the two disagree), and at
//!   least [`MIN_DEFICIT`]. A child no better than its parent reaches that by chance with
//!   probability about 1e-3 per look; one that would have won narrowly, less.

use std::ops::Range;

/// Why a run cannot race: [`Race`] compares right and wrong answers.
pub const NEEDS_CLASSES: &str = "racing needs class labels (this data has regression targets)";

/// The standard scores a child's deficit must reach to be dropped as clearly losing.
pub const Z: f64 = 3.0;

/// The fewest rows a clearly losing child must trail by.
pub const MIN_DEFICIT: u64 = 4;

/// Blocks per pass (fewer when batches are large): how often a child is judged.
const BLOCKS: usize = 16;

/// The batch a raced run uses unless told: at most `default`, small enough that the
/// `selection_rows` make `BLOCKS` blocks (a child is judged only between whole batches).
pub fn batch(default: usize, selection_rows: usize) -> usize {
    default.min(selection_rows.div_ceil(BLOCKS)).max(1)
}

/// The race of one generation's children against their parent.
#[derive(Debug, Clone)]
pub struct Race {
    /// Whether the parent is right on each selection position.
    parent_correct: Vec<bool>,
    /// The parent's errors over all of them.
    parent_wrong: u64,
    /// Selection positions, in the order they are scored.
    blocks: Vec<Range<usize>>,
}

/// How a child stands after some blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rows scored.
    pub seen: usize,
    /// Rows the parent got right and the child wrong.
    pub lost: u64,
    /// Rows the child got right and the parent wrong.
    pub won: u64,
    /// The parent's errors among the rows scored.
    parent_wrong_seen: u64,
}

impl Race {
    /// A race against a parent right on `parent_correct`'s positions, scored `batch` rows at a
    /// time; `seed` orders the blocks.
    pub fn new(parent_correct: Vec<bool>, batch: usize, seed: u64) -> Race {
        let n = parent_correct.len();
        let batch = batch.max(1);
        let batches = n.div_ceil(batch);
        let size = batches.div_ceil(BLOCKS).max(1) * batch;
        let mut blocks: Vec<Range<usize>> =
            (0..n).step_by(size).map(|s| s..(s + size).min(n)).collect();
        // Fisher–Yates with SplitMix64: the order depends on the seed only.
        let mut state = seed;
        for i in (1..blocks.len()).rev() {
            state = splitmix64(state);
            let j = (state % (i as u64 + 1)) as usize;
            blocks.swap(i, j);
        }
        let parent_wrong = parent_correct.iter().filter(|&&p| !p).count() as u64;
        Race {
            parent_correct,
            parent_wrong,
            blocks,
        }
    }

    /// Selection positions in blocks, in scoring order.
    pub fn blocks(&self) -> &[Range<usize>] {
        &self.blocks
    }

    /// Adds a scored block: `child_correct` says whether the child is right on each of its
    /// positions.
    pub fn add(&self, tally: &mut Tally, block: Range<usize>, child_correct: &[bool]) {
        let parent = self.parent_correct.get(block).unwrap_or_default();
        for (&c, &p) in child_correct.iter().zip(parent) {
            tally.seen += 1;
            tally.lost += u64::from(p && !c);
            tally.won += u64::from(c && !p);
            tally.parent_wrong_seen += u64::from(!p);
        }
    }

    /// True when a child standing at `tally` is dropped.
    pub fn drops(&self, tally: &Tally) -> bool {
        if tally.seen >= self.parent_correct.len() || tally.lost <= tally.won {
            return false;
        }
        let deficit = tally.lost - tally.won;
        let catchable = self.parent_wrong.saturating_sub(tally.parent_wrong_seen);
        let clearly = deficit >= MIN_DEFICIT
            && deficit as f64 >= Z * ((tally.lost + tally.won) as f64).sqrt();
        deficit > catchable || clearly
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blocks_cover_every_position_once_in_whole_batches() {
        for (n, batch) in [(1, 1), (7, 3), (100, 8), (1000, 64), (5, 64), (900, 1)] {
            let race = Race::new(vec![true; n], batch, 42);
            let mut seen = vec![0u8; n];
            for b in race.blocks() {
                assert_eq!(b.start % batch, 0, "a block starts mid-batch");
                assert!(b.end % batch == 0 || b.end == n);
                for i in b.clone() {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "n {n} batch {batch}");
            assert!(race.blocks().len() <= BLOCKS);
        }
        let order = |seed| Race::new(vec![true; 1000], 10, seed).blocks().to_vec();
        assert_eq!(order(1), order(1));
        assert_ne!(order(1), order(2));
    }

    #[test]
    fn a_child_that_loses_every_disagreement_is_dropped_and_a_tie_is_not() {
        let race = Race::new(vec![true; 1000], 10, 0);
        let mut t = Tally::default();
        race.add(
            &mut t,
            0..100,
            &[[false; 10], [true; 10]].repeat(5).concat(),
        );
        assert_eq!((t.lost, t.won, t.seen), (50, 0, 100));
        assert!(race.drops(&t));
        let tie = Tally {
            seen: 100,
            lost: 20,
            won: 20,
            parent_wrong_seen: 0,
        };
        assert!(!race.drops(&tie));
    }

    /// The final accuracy of a child against its parent, by the whole selection split.
    fn beats_or_ties(child: &[bool], parent: &[bool]) -> bool {
        child.iter().filter(|&&c| c).count() >= parent.iter().filter(|&&p| p).count()
    }

    proptest! {
        /// The exact rule alone never drops a child that ends at least level with its parent
        /// (so never one that beats it, whatever the NLL tie-break says); with the
        /// statistical rule too, a child that ends far ahead is never dropped.
        #[test]
        fn no_winner_is_dropped(
            pairs in proptest::collection::vec((any::<bool>(), 0u8..10), 1..400),
            batch in 1usize..20,
            seed in any::<u64>(),
        ) {
            let parent: Vec<bool> = pairs.iter().map(|p| p.0).collect();
            // The child agrees with the parent on most rows, flips the rest.
            let child: Vec<bool> = pairs.iter().map(|&(p, r)| if r < 2 { !p } else { p }).collect();
            let race = Race::new(parent.clone(), batch, seed);
            let mut t = Tally::default();
            for b in race.blocks() {
                race.add(&mut t, b.clone(), &child[b.clone()]);
                let exact_drop = {
                    let deficit = t.lost.saturating_sub(t.won);
                    let wrong = parent.iter().filter(|&&p| !p).count() as u64;
                    t.lost > t.won && deficit > wrong - t.parent_wrong_seen
                };
                if exact_drop {
                    prop_assert!(!beats_or_ties(&child, &parent));
                }
                if race.drops(&t) {
                    let (c, p) = (
                        child.iter().filter(|&&c| c).count() as f64,
                        parent.iter().filter(|&&p| p).count() as f64,
                    );
                    // Dropped as clearly losing: it does not end far ahead.
                    prop_assert!(c <= p + 3.0 * (parent.len() as f64).sqrt());
                    break;
                }
            }
            prop_assert_eq!(t.seen <= parent.len(), true);
        }
    }
}
