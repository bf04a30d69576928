//! Choosing on the selection split: the best candidate and greedy ensemble selection.

use rayon::prelude::*;

use crate::score::dataset::Labels;
use crate::score::metrics::{
    classification_metrics, regression_metrics, row_correct, row_nll, row_se,
};
use crate::score::{CustomLabels, CustomMetric, DataError, Metric, Metrics, Predictions};

/// True when `a` beats `b` on the selection split: higher accuracy (lower MSE for regression),
/// then, on a tie, lower negative log-likelihood.
pub fn better(a: &Metrics, b: &Metrics) -> bool {
    let (pa, pb) = (a.primary(), b.primary());
    if pa != pb {
        return pa > pb;
    }
    matches!((a.nll, b.nll), (Some(x), Some(y)) if x < y)
}

/// [`better`] by `metric` (`None`: [`better`] itself, the default).
pub fn better_by(metric: Option<Metric>, a: &Metrics, b: &Metrics) -> bool {
    match metric {
        None => better(a, b),
        Some(m) => m.better(a, b),
    }
}

/// Index of the best candidate (`None` = failed), the lowest index among equals.
pub fn best(candidates: &[Option<Metrics>]) -> Option<usize> {
    best_by(None, candidates)
}

/// [`best`] by `metric` (see [`better_by`]).
pub fn best_by(metric: Option<Metric>, candidates: &[Option<Metrics>]) -> Option<usize> {
    let mut out: Option<(usize, &Metrics)> = None;
    for (i, m) in candidates.iter().enumerate() {
        if let Some(m) = m
            && out.is_none_or(|(_, b)| better_by(metric, m, b))
        {
            out = Some((i, m));
        }
    }
    out.map(|(i, _)| i)
}

/// An ensemble chosen by greedy forward selection with replacement.
#[derive(Debug, Clone, PartialEq)]
pub struct Greedy {
    /// How many times each candidate was picked (its weight in the ensemble).
    pub counts: Vec<u32>,
    /// The ensemble's metrics on the selection split.
    pub selection: Metrics,
    /// Every step taken, the chosen ensemble's and those after it until selection stopped:
    /// the candidate added and the running ensemble's metrics on the selection split.
    pub path: Vec<(usize, Metrics)>,
}

/// Greedy forward selection with replacement (Caruana et al., 2004): start empty, repeatedly
/// add the candidate that makes the running ensemble best on the selection split, for
/// at most `steps` steps, and return the best ensemble seen (the earliest among equals). It
/// stops early once `PATIENCE` steps in a row have not improved on the best.
/// `candidates` hold selection-split predictions for the same rows. Candidates are tried in
/// parallel; the choice does not depend on the number of threads. "Best" is by `metric` (see
/// [`better_by`]).
pub fn greedy(
    candidates: &[&Predictions],
    labels: &Labels,
    steps: usize,
    metric: Option<Metric>,
) -> Result<Greedy, DataError> {
    greedy_with(candidates, labels, steps, metric, None)
}

/// [`greedy`], with each trial's [`Metrics::custom`] computed by `custom` (for
/// [`Metric::Custom`]).
pub fn greedy_with(
    candidates: &[&Predictions],
    labels: &Labels,
    steps: usize,
    metric: Option<Metric>,
    custom: Option<&CustomMetric>,
) -> Result<Greedy, DataError> {
    let Some(first) = candidates.first() else {
        return Err(DataError::Argument {
            arg: "members",
            message: "greedy selection needs at least one candidate".into(),
        });
    };
    let regression = first.kind == crate::score::ScoredAs::Regression;
    fn values(p: &Predictions, regression: bool) -> &[f32] {
        if regression { &p.values } else { &p.probs }
    }
    if candidates.iter().any(|p| {
        values(p, regression).len() != values(first, regression).len() || p.rows != first.rows
    }) {
        return Err(DataError::Argument {
            arg: "members",
            message: "greedy candidates predicted different rows".into(),
        });
    }
    // The label of each predicted row: a class id, or a regression target.
    let targets: Vec<f64> = first
        .rows
        .iter()
        .map(|&r| match labels {
            Labels::Classes(v) => v.get(r).map_or(-1.0, |&c| c as f64),
            Labels::Targets(v) => v.get(r).copied().unwrap_or(f64::NAN),
        })
        .collect();
    let classes = first.classes.max(1);
    let mut sum = vec![0.0f64; values(first, regression).len()];
    // The widest change one member can make to a difference between two classes' sums.
    let (lo, hi) = candidates
        .iter()
        .flat_map(|p| &p.probs)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let trials = Trials {
        candidates,
        targets: &targets,
        classes,
        spread: f64::from(hi) - f64::from(lo),
        regression,
        // Threads pay off once a trial is more than a few microseconds of work.
        parallel: sum.len() >= 1 << 14,
        custom,
        custom_error: std::sync::Mutex::new(None),
        // The incremental trials compute accuracy (then NLL) or MSE; any other metric is
        // computed in full from each trial's mean.
        full: metric.filter(|&m| {
            m != if regression {
                Metric::Mse
            } else {
                Metric::Accuracy
            }
        }),
    };
    let mut counts = vec![0u32; candidates.len()];
    let mut best: Option<Greedy> = None;
    let mut since_best = 0;
    let mut path = Vec::new();
    let all: Vec<usize> = (0..candidates.len()).collect();
    for step in 1..=steps.max(1) {
        let (tried, metrics) = trials.step(&sum, step as f64, &all);
        if let Some(e) = trials.take_error() {
            return Err(e);
        }
        let mut pick: Option<(usize, Metrics)> = None;
        for (&c, m) in tried.iter().zip(metrics) {
            if pick.as_ref().is_none_or(|(_, b)| better_by(metric, &m, b)) {
                pick = Some((c, m));
            }
        }
        let Some((c, m)) = pick else { break };
        counts[c] += 1;
        path.push((c, m));
        for (s, &v) in sum.iter_mut().zip(values(candidates[c], regression)) {
            *s += f64::from(v);
        }
        if best
            .as_ref()
            .is_none_or(|b| better_by(metric, &m, &b.selection))
        {
            best = Some(Greedy {
                counts: counts.clone(),
                selection: m,
                path: Vec::new(),
            });
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= PATIENCE {
                break;
            }
        }
    }
    let mut best = best.ok_or_else(|| DataError::Argument {
        arg: "members",
        message: "greedy selection found no ensemble".into(),
    })?;
    best.path = path;
    Ok(best)
}

/// One greedy step's trials: each candidate added to the running sum of predictions.
struct Trials<'a> {
    candidates: &'a [&'a Predictions],
    targets: &'a [f64],
    classes: usize,
    /// The widest change one member can make to a difference between two classes' sums.
    spread: f64,
    regression: bool,
    parallel: bool,
    /// A metric the incremental trials do not compute: every trial is scored in full.
    full: Option<Metric>,
    /// The caller's metric, computed for every full trial.
    custom: Option<&'a CustomMetric>,
    /// Its first error (trials run in parallel and return plain metrics).
    custom_error: std::sync::Mutex<Option<DataError>>,
}

impl Trials<'_> {
    fn map(&self, f: &(dyn Fn(usize) -> Metrics + Sync), of: &[usize]) -> Vec<Metrics> {
        if self.parallel {
            of.par_iter().map(|&c| f(c)).collect()
        } else {
            of.iter().map(|&c| f(c)).collect()
        }
    }

    /// The candidates worth comparing at step `n` (the running ensemble has `n` members
    /// once one is added to `sum`) and their metrics.
    fn step(&self, sum: &[f64], n: f64, all: &[usize]) -> (Vec<usize>, Vec<Metrics>) {
        let (candidates, targets, classes) = (self.candidates, self.targets, self.classes);
        if self.full.is_some() {
            return (
                all.to_vec(),
                self.map(&|c| self.full_of_mean(sum, c, n), all),
            );
        }
        if self.regression {
            let mse = |c: usize| mse_of_mean(sum, &candidates[c].values, n, targets);
            return (all.to_vec(), self.map(&mse, all));
        }
        // NLL only breaks accuracy ties: it is computed (a logarithm per row) for the
        // candidates tied at the top accuracy alone, which gives the same pick.
        let settled = Settled::new(sum, targets, classes, self.spread);
        let acc =
            |c: usize| accuracy_of_mean(sum, &candidates[c].probs, targets, classes, &settled);
        let accuracies = self.map(&acc, all);
        let top = accuracies
            .iter()
            .filter_map(|m| m.accuracy)
            .fold(f64::NEG_INFINITY, f64::max);
        let tied: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&c| accuracies[c].accuracy == Some(top))
            .collect();
        let full = |c: usize| Metrics {
            nll: Some(nll_of_mean(sum, &candidates[c].probs, n, targets, classes)),
            ..accuracies[c]
        };
        let trials = self.map(&full, &tied);
        (tied, trials)
    }
}

impl Trials<'_> {
    /// Every metric of the mean `(sum + candidate c) / n`, rounded to f32 as
    /// [`Predictions::weighted_mean`] rounds it.
    fn full_of_mean(&self, sum: &[f64], c: usize, n: f64) -> Metrics {
        let p = self.candidates[c];
        let add = if self.regression { &p.values } else { &p.probs };
        let mean: Vec<f32> = sum
            .iter()
            .zip(add)
            .map(|(&s, &a)| ((s + f64::from(a)) / n) as f32)
            .collect();
        let labels: Vec<i64> = self.targets.iter().map(|&t| t as i64).collect();
        let (mut m, custom_labels) = if self.regression {
            let m = regression_metrics(&mean, self.targets);
            (m, CustomLabels::Targets(self.targets))
        } else {
            let m = classification_metrics(&mean, self.classes, &labels);
            (m, CustomLabels::Classes(&labels))
        };
        if let Some(c) = self.custom {
            let cols = if self.regression { 1 } else { self.classes };
            match c.evaluate_raw(&mean, cols, custom_labels) {
                Ok(v) => m.custom = Some(v),
                Err(e) => {
                    let mut slot = self.custom_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(e);
                }
            }
        }
        m
    }

    /// The first error of the caller's metric since the last call.
    fn take_error(&self) -> Option<DataError> {
        self.custom_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The rows whose verdict no single member can change: the label's sum leads every other class
/// by more than one member can move a difference (`spread`), or trails one by more.
struct Settled {
    /// Rows right whatever is added.
    right: usize,
    /// The other rows, to evaluate per candidate.
    open: Vec<usize>,
}

impl Settled {
    fn new(sum: &[f64], targets: &[f64], classes: usize, spread: f64) -> Settled {
        // Far above the rounding error of sums of at most a few hundred probabilities.
        let margin = spread + 1e-6;
        let mut right = 0;
        let mut open = Vec::new();
        for (r, (s, &t)) in sum.chunks_exact(classes).zip(targets).enumerate() {
            let label = t as usize;
            if t < 0.0 || label >= classes {
                continue; // never right
            }
            let (mut leads, mut trails) = (true, false);
            for (j, &sj) in s.iter().enumerate() {
                if j != label {
                    leads &= s[label] - sj > margin;
                    trails |= sj - s[label] > margin;
                }
            }
            if leads {
                right += 1;
            } else if !trails {
                open.push(r);
            }
        }
        Settled { right, open }
    }
}

/// Accuracy of the mean of probabilities `sum + add` (rows of `classes`; a row is right by
/// [`row_correct`], as in [`crate::score::metrics::classification_metrics`]), evaluated on the
/// rows `settled` leaves open. For ranking greedy candidates; reported metrics are computed
/// from the weighted mean itself.
fn accuracy_of_mean(
    sum: &[f64],
    add: &[f32],
    targets: &[f64],
    classes: usize,
    settled: &Settled,
) -> Metrics {
    let mut correct = settled.right;
    for &r in &settled.open {
        let span = r * classes..(r + 1) * classes;
        let (Some(s), Some(a), Some(&t)) = (sum.get(span.clone()), add.get(span), targets.get(r))
        else {
            continue;
        };
        // The argmax of the mean is the argmax of the sum: no row of the mean is stored.
        let row = s.iter().zip(a).map(|(&sj, &aj)| sj + f64::from(aj));
        correct += usize::from(row_correct(row, t as usize));
    }
    Metrics {
        samples: targets.len(),
        accuracy: Some(correct as f64 / targets.len().max(1) as f64),
        ..Metrics::default()
    }
}

/// NLL of the mean `(sum + add) / n` of probabilities: [`row_nll`] of the label's probability
/// rounded to f32, as [`crate::score::metrics::classification_metrics`] sees the mean.
fn nll_of_mean(sum: &[f64], add: &[f32], n: f64, targets: &[f64], classes: usize) -> f64 {
    let nll: f64 = sum
        .chunks_exact(classes)
        .zip(add.chunks_exact(classes))
        .zip(targets)
        .map(|((s, a), &t)| {
            let label = t as usize;
            let p = if t >= 0.0 && label < classes {
                ((s[label] + f64::from(a[label])) / n) as f32
            } else {
                0.0
            };
            row_nll(p)
        })
        .sum();
    nll / targets.len().max(1) as f64
}

/// MSE of the mean `(sum + add) / n` of regression values.
fn mse_of_mean(sum: &[f64], add: &[f32], n: f64, targets: &[f64]) -> Metrics {
    let se: f64 = sum
        .iter()
        .zip(add)
        .zip(targets)
        .map(|((s, &a), &t)| row_se(((s + f64::from(a)) / n) as f32, t))
        .sum();
    Metrics {
        samples: targets.len(),
        mse: Some(se / targets.len().max(1) as f64),
        ..Metrics::default()
    }
}

/// Greedy steps without improvement after which selection stops.
pub const PATIENCE: usize = 8;

/// Number of greedy steps for `candidates` candidates: twice the library, within [10, 200].
pub fn greedy_steps(candidates: usize) -> usize {
    (2 * candidates).clamp(10, 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::ScoredAs;

    fn preds(probs: &[f32]) -> Predictions {
        Predictions {
            rows: (0..probs.len() / 2).collect(),
            classes: 2,
            probs: probs.to_vec(),
            values: Vec::new(),
            kind: ScoredAs::Probabilities,
            non_finite_rows: 0,
            first_non_finite: None,
            output: "p".into(),
        }
    }

    fn m(acc: f64, nll: f64) -> Metrics {
        Metrics {
            samples: 1,
            accuracy: Some(acc),
            nll: Some(nll),
            ..Metrics::default()
        }
    }

    #[test]
    fn greedy_stops_at_a_failing_caller_metric() {
        let (a, b) = (preds(&[0.9, 0.1, 0.2, 0.8]), preds(&[0.4, 0.6, 0.3, 0.7]));
        let labels = Labels::Classes(vec![0, 1]);
        let bad = CustomMetric::new(
            "bad",
            false,
            std::sync::Arc::new(|_: crate::score::CustomOutputs<'_>, _: CustomLabels<'_>| {
                Err("raised".to_string())
            }),
        );
        let e = greedy_with(&[&a, &b], &labels, 4, Some(bad.metric()), Some(&bad)).unwrap_err();
        assert_eq!(e.to_string(), "metric `bad` failed: raised");
    }

    #[test]
    fn better_prefers_accuracy_then_nll() {
        assert!(better(&m(0.9, 1.0), &m(0.8, 0.1)));
        assert!(better(&m(0.9, 0.5), &m(0.9, 0.6)));
        assert!(!better(&m(0.9, 0.6), &m(0.9, 0.6)));
        let mse = |v| Metrics {
            samples: 1,
            mse: Some(v),
            ..Metrics::default()
        };
        assert!(better(&mse(0.1), &mse(0.2)));
    }

    #[test]
    fn best_skips_failures_and_takes_the_first_of_equals() {
        assert_eq!(
            best(&[
                None,
                Some(m(0.5, 1.0)),
                Some(m(0.7, 1.0)),
                Some(m(0.7, 1.0))
            ]),
            Some(2)
        );
        assert_eq!(best(&[None, None]), None);
    }

    #[test]
    fn greedy_finds_the_complementary_pair() {
        // Labels 0, 1, 0. Candidate a is right on rows 0-1, b on rows 1-2 with more confidence
        // where a is wrong; c is always wrong.
        let labels = Labels::Classes(vec![0, 1, 0]);
        let a = preds(&[0.9, 0.1, 0.4, 0.6, 0.45, 0.55]);
        let b = preds(&[0.45, 0.55, 0.4, 0.6, 0.9, 0.1]);
        let c = preds(&[0.1, 0.9, 0.9, 0.1, 0.1, 0.9]);
        let g = greedy(&[&a, &b, &c], &labels, 10, None).unwrap();
        assert_eq!(g.selection.accuracy, Some(1.0));
        assert_eq!(g.counts[2], 0);
        assert!(g.counts[0] >= 1 && g.counts[1] >= 1);
        // The reported metrics are the weighted mean's.
        let w: Vec<(&Predictions, f64)> = [&a, &b, &c]
            .into_iter()
            .zip(&g.counts)
            .map(|(p, &n)| (p, f64::from(n)))
            .collect();
        let mean = Predictions::weighted_mean(&w).unwrap();
        assert_eq!(mean.metrics(&labels).unwrap().accuracy, Some(1.0));
    }

    /// Greedy selection that computes every candidate's accuracy (by argmax) and NLL on every
    /// row at every step.
    fn greedy_reference(candidates: &[&Predictions], targets: &[f64], steps: usize) -> Vec<u32> {
        let classes = candidates[0].classes;
        let mut sum = vec![0.0f64; candidates[0].probs.len()];
        let mut counts = vec![0u32; candidates.len()];
        let mut best: Option<(Vec<u32>, Metrics)> = None;
        let mut since_best = 0;
        for step in 1..=steps {
            let n = step as f64;
            let mut pick: Option<(usize, Metrics)> = None;
            for (c, p) in candidates.iter().enumerate() {
                // The argmax of each row, ties to the lowest class.
                let right = sum
                    .chunks(classes)
                    .zip(p.probs.chunks(classes))
                    .zip(targets)
                    .filter(|((s, a), t)| {
                        let v: Vec<f64> =
                            s.iter().zip(*a).map(|(s, &a)| s + f64::from(a)).collect();
                        let top = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        v.iter().position(|&x| x == top) == Some(**t as usize)
                    })
                    .count();
                let m = Metrics {
                    samples: targets.len(),
                    accuracy: Some(right as f64 / targets.len() as f64),
                    nll: Some(nll_of_mean(&sum, &p.probs, n, targets, classes)),
                    ..Metrics::default()
                };
                if pick.as_ref().is_none_or(|(_, b)| better(&m, b)) {
                    pick = Some((c, m));
                }
            }
            let (c, m) = pick.unwrap();
            counts[c] += 1;
            for (s, &v) in sum.iter_mut().zip(&candidates[c].probs) {
                *s += f64::from(v);
            }
            if best.as_ref().is_none_or(|(_, b)| better(&m, b)) {
                best = Some((counts.clone(), m));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= PATIENCE {
                    break;
                }
            }
        }
        best.unwrap().0
    }

    proptest::proptest! {
        /// Skipping the rows no member can change and computing NLL only for the candidates
        /// tied on accuracy picks what the full computation picks. Probabilities on a coarse
        /// grid make ties common; sums grow past the spread within a few steps.
        #[test]
        fn greedy_matches_the_full_computation(
            grid in proptest::collection::vec(0u8..4, 6 * 3 * 20),
            labels in proptest::collection::vec(0i64..3, 20),
        ) {
            let cands: Vec<Predictions> = grid
                .chunks(3 * 20)
                .map(|g| {
                    let mut p = preds(&[]);
                    p.rows = (0..20).collect();
                    p.classes = 3;
                    p.probs = g.iter().map(|&v| f32::from(v) / 4.0).collect();
                    p
                })
                .collect();
            let refs: Vec<&Predictions> = cands.iter().collect();
            let targets: Vec<f64> = labels.iter().map(|&l| l as f64).collect();
            let labels = Labels::Classes(labels);
            let g = greedy(&refs, &labels, 12, None).unwrap();
            proptest::prop_assert_eq!(&g.counts, &greedy_reference(&refs, &targets, 12));
            // `--metric accuracy` is the default; by NLL (computed in full from each trial's
            // mean) the ensemble never ends worse than its best single member.
            let explicit = greedy(&refs, &labels, 12, Some(Metric::Accuracy)).unwrap();
            proptest::prop_assert_eq!(&explicit.counts, &g.counts);
            let by_nll = greedy(&refs, &labels, 12, Some(Metric::Nll)).unwrap();
            let single = refs
                .iter()
                .map(|p| p.metrics(&labels).unwrap().nll.unwrap())
                .fold(f64::INFINITY, f64::min);
            proptest::prop_assert!(by_nll.selection.nll.unwrap() <= single + 1e-12);
            // A caller's metric that is accuracy chooses as accuracy does (its ties, too,
            // go by NLL).
            let acc = CustomMetric::new(
                "acc",
                true,
                std::sync::Arc::new(|o: crate::score::CustomOutputs<'_>, l: CustomLabels<'_>| {
                    let CustomLabels::Classes(l) = l else {
                        return Err("regression".to_string());
                    };
                    classification_metrics(o.values, o.cols, l)
                        .accuracy
                        .ok_or_else(|| "no accuracy".to_string())
                }),
            );
            let custom =
                greedy_with(&refs, &labels, 12, Some(acc.metric()), Some(&acc)).unwrap();
            proptest::prop_assert_eq!(&custom.counts, &g.counts);
            proptest::prop_assert_eq!(custom.selection.custom, g.selection.accuracy);
        }
    }
}
