//! The deterministic selection/holdout split shared by `score` and `evolve`.
//!
//! Classification: per class, the class's rows are ordered by a keyed hash of
//! (seed, class, row) and the first `round(F · n_c)` go to the holdout. Regression: all rows are
//! ordered by a keyed hash of (seed, row) and the first `round(F · n)` go to the holdout. When
//! there are at least two samples, both parts are made non-empty. Both parts are sorted.
//! The split depends only on the labels, `F` and the seed, not on the machine or thread count.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::DataError;
use super::dataset::Labels;

/// Which samples to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitPart {
    /// The selection part (children are chosen on it).
    Selection,
    /// The holdout part (reported, never used for selection).
    Holdout,
    /// Every sample.
    #[default]
    All,
}

impl FromStr for SplitPart {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "selection" => Ok(Self::Selection),
            "holdout" => Ok(Self::Holdout),
            "all" => Ok(Self::All),
            _ => Err(DataError::Argument {
                arg: "--split",
                message: format!("{s:?}: expected selection, holdout or all"),
            }),
        }
    }
}

impl std::fmt::Display for SplitPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Selection => "selection",
            Self::Holdout => "holdout",
            Self::All => "all",
        })
    }
}

/// Row indices of the two parts, each ascending; together they cover every sample once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Rows used to select children.
    pub selection: Vec<usize>,
    /// Rows held out for reporting.
    pub holdout: Vec<usize>,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(seed: u64, class: u64, row: usize) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ class) ^ row as u64)
}

impl Split {
    /// Splits the samples whose labels are `labels`; `holdout_fraction` must lie in (0, 1).
    pub fn new(labels: &Labels, holdout_fraction: f64, seed: u64) -> Result<Self, DataError> {
        if !(holdout_fraction > 0.0 && holdout_fraction < 1.0) {
            return Err(DataError::Argument {
                arg: "--holdout",
                message: format!("{holdout_fraction}: must be strictly between 0 and 1"),
            });
        }
        let n = labels.len();
        // Groups of rows, each ordered by its keyed hash.
        let mut groups: Vec<Vec<usize>> = match labels {
            Labels::Classes(ids) => {
                let mut by: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
                for (row, &c) in ids.iter().enumerate() {
                    by.entry(c).or_default().push(row);
                }
                by.into_iter()
                    .map(|(c, mut rows)| {
                        rows.sort_by_key(|&r| (key(seed, c as u64, r), r));
                        rows
                    })
                    .collect()
            }
            Labels::Targets(_) => {
                let mut rows: Vec<usize> = (0..n).collect();
                rows.sort_by_key(|&r| (key(seed, u64::MAX, r), r));
                vec![rows]
            }
        };
        let mut cut: Vec<usize> = groups
            .iter()
            .map(|g| (((g.len() as f64) * holdout_fraction).round() as usize).min(g.len()))
            .collect();
        if n >= 2 {
            let largest = (0..groups.len())
                .max_by_key(|&i| (groups.get(i).map_or(0, Vec::len), std::cmp::Reverse(i)))
                .unwrap_or(0);
            let hold: usize = cut.iter().sum();
            if hold == 0 {
                // Move the largest class's first-keyed row to the holdout.
                if let Some(c) = cut.get_mut(largest) {
                    *c = 1;
                }
            } else if hold == n {
                // Give the selection one row back (largest class, last-keyed row).
                if let (Some(c), Some(g)) = (cut.get_mut(largest), groups.get(largest)) {
                    *c = g.len().saturating_sub(1);
                }
            }
        }
        let mut holdout = Vec::new();
        let mut selection = Vec::new();
        for (g, c) in groups.iter_mut().zip(cut) {
            let (h, s) = g.split_at(c.min(g.len()));
            holdout.extend_from_slice(h);
            selection.extend_from_slice(s);
        }
        holdout.sort_unstable();
        selection.sort_unstable();
        Ok(Self { selection, holdout })
    }

    /// The rows of one part (`All`: every row, ascending).
    pub fn rows(&self, part: SplitPart) -> Vec<usize> {
        match part {
            SplitPart::Selection => self.selection.clone(),
            SplitPart::Holdout => self.holdout.clone(),
            SplitPart::All => {
                let mut all: Vec<usize> = self
                    .selection
                    .iter()
                    .chain(self.holdout.iter())
                    .copied()
                    .collect();
                all.sort_unstable();
                all
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn classes(v: &[i64]) -> Labels {
        Labels::Classes(v.to_vec())
    }

    #[test]
    fn stratified_deterministic_disjoint_covering() {
        let ids: Vec<i64> = (0..1000).map(|i| (i % 7) as i64).collect();
        let l = classes(&ids);
        let s = Split::new(&l, 0.5, 0).unwrap();
        assert_eq!(s, Split::new(&l, 0.5, 0).unwrap());
        assert_ne!(s, Split::new(&l, 0.5, 1).unwrap());
        let all = s.rows(SplitPart::All);
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        for c in 0..7 {
            let n_c = ids.iter().filter(|&&x| x == c).count();
            let h = s.holdout.iter().filter(|&&r| ids[r] == c).count();
            assert_eq!(h, ((n_c as f64) * 0.5).round() as usize);
        }
        assert!(s.holdout.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn both_parts_non_empty_when_possible() {
        let s = Split::new(&classes(&[0, 1]), 0.1, 0).unwrap();
        assert_eq!((s.selection.len(), s.holdout.len()), (1, 1));
        let s = Split::new(&classes(&[0, 0, 0]), 0.9, 3).unwrap();
        assert!(!s.selection.is_empty() && !s.holdout.is_empty());
        let s = Split::new(&classes(&[5]), 0.5, 0).unwrap();
        assert_eq!(s.selection.len() + s.holdout.len(), 1);
    }

    #[test]
    fn regression_split() {
        let l = Labels::Targets((0..100).map(f64::from).collect());
        let s = Split::new(&l, 0.25, 9).unwrap();
        assert_eq!(s.holdout.len(), 25);
        assert_eq!(s.rows(SplitPart::All).len(), 100);
    }

    #[test]
    fn bad_fraction() {
        for f in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
            assert!(Split::new(&classes(&[0, 1]), f, 0).is_err());
        }
        assert!("holdout".parse::<SplitPart>().is_ok());
        assert!("test".parse::<SplitPart>().is_err());
    }

    proptest! {
        #[test]
        fn split_properties(ids in proptest::collection::vec(0i64..5, 0..300), f in 0.01f64..0.99, seed in any::<u64>()) {
            let l = classes(&ids);
            let s = Split::new(&l, f, seed).unwrap();
            let mut all: Vec<usize> = s.selection.iter().chain(&s.holdout).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..ids.len()).collect::<Vec<_>>());
            if ids.len() >= 2 {
                prop_assert!(!s.selection.is_empty() && !s.holdout.is_empty());
            }
            prop_assert_eq!(&s, &Split::new(&l, f, seed).unwrap());
        }
    }
}
