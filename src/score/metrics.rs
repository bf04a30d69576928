//! Predictions (what a model said about some rows) and metrics (how good that was).
//!
//! They are separate so that predictions of several models can be combined (ensembles) and
//! scored on any subset of rows.
//!
//! Definitions (shared with the Python reference that made the fixtures' golden values), each
//! written once, as the per-row functions below that ensemble selection uses too:
//! - probabilities: the output is taken as is when every row is non-negative and sums to 1
//!   within 1e-4; otherwise each row gets a softmax computed in f64 (max subtracted first);
//! - accuracy: argmax (ties → lowest index) equals the label;
//! - top-5 accuracy (C ≥ 5): fewer than 5 classes have a strictly larger probability than the
//!   label's;
//! - NLL: mean of `-ln(max(p_label, 1e-15))` in f64;
//! - balanced accuracy: the mean over the classes present in the labels of each class's recall
//!   (right rows of the class / rows of the class);
//! - macro F1: the mean over the classes present in the labels or the predictions (argmax) of
//!   each class's F1 = 2·right / (rows of the class + rows predicted as it);
//! - MSE, MAE (float labels): mean of `(value - target)^2`, of `|value - target|`, in f64.
//!
//! These are scikit-learn's `accuracy_score`, `balanced_accuracy_score`,
//! `f1_score(average="macro")`, `top_k_accuracy_score(k=5)`, `mean_squared_error` and
//! `mean_absolute_error` (checked on the fixtures: `models/make_metrics.py`).

use serde::Serialize;

use super::DataError;
use super::dataset::Labels;

/// What the scored output's values were, as scoring found (and treated) them. Not
/// [`crate::ensemble::OutputKind`], how an ensemble combines an output;
/// [`crate::ensemble::OutputKind::from_scored`] maps this to that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoredAs {
    /// Rows already were probabilities.
    Probabilities,
    /// Rows were logits; a softmax was applied.
    Logits,
    /// Regression values.
    Regression,
}

/// A model's predictions for `rows` (in that order).
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// The data set rows predicted, in order.
    pub rows: Vec<usize>,
    /// Classes per row (0 for regression).
    pub classes: usize,
    /// `rows.len() × classes` probabilities (classification).
    pub probs: Vec<f32>,
    /// One value per row (regression).
    pub values: Vec<f32>,
    /// What the output held.
    pub kind: ScoredAs,
    /// Rows whose outputs had NaN or ±Inf (their probabilities are unspecified).
    pub non_finite_rows: usize,
    /// The first such data set row.
    pub first_non_finite: Option<usize>,
    /// The scored output's name.
    pub output: String,
}

/// Scores of predictions against labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Samples scored.
    pub samples: usize,
    /// Fraction of samples whose argmax equals the label (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Mean recall over the classes present in the labels (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balanced_accuracy: Option<f64>,
    /// Mean F1 over the classes present in the labels or the predictions (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// Fraction of samples whose label is among the 5 most probable classes (C ≥ 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top5_accuracy: Option<f64>,
    /// Mean negative log-likelihood of the label (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nll: Option<f64>,
    /// Mean squared error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Mean absolute error (regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// The caller's metric ([`super::CustomMetric`]), when a run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<f64>,
}

impl Metrics {
    /// The metrics present, named as in JSON, in field order (for text reports).
    pub fn values(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("accuracy", self.accuracy),
            ("balanced_accuracy", self.balanced_accuracy),
            ("macro_f1", self.macro_f1),
            ("top5_accuracy", self.top5_accuracy),
            ("nll", self.nll),
            ("mse", self.mse),
            ("mae", self.mae),
            ("custom", self.custom),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v?)))
    }

    /// The number to maximise when comparing models: accuracy, or −MSE for regression.
    pub fn primary(&self) -> f64 {
        match (self.accuracy, self.mse) {
            (Some(a), _) => a,
            (None, Some(m)) => -m,
            _ => f64::NEG_INFINITY,
        }
    }
}

/// What selection optimises (`evolve --metric`): one of the metrics of [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// [`Metrics::accuracy`] (higher is better).
    Accuracy,
    /// [`Metrics::balanced_accuracy`] (higher is better).
    BalancedAccuracy,
    /// [`Metrics::macro_f1`] (higher is better).
    MacroF1,
    /// [`Metrics::nll`] (lower is better).
    Nll,
    /// [`Metrics::top5_accuracy`] (higher is better).
    Top5,
    /// [`Metrics::mse`] (lower is better).
    Mse,
    /// [`Metrics::mae`] (lower is better).
    Mae,
    /// [`Metrics::custom`], the caller's metric ([`super::CustomMetric`]); not in
    /// [`Metric::ALL`] (it has no `--metric` name).
    Custom {
        /// Whether larger values are better.
        higher_is_better: bool,
    },
}

impl Metric {
    /// Every metric, in the order of [`Metric::NAMES`].
    pub const ALL: [Metric; 7] = [
        Metric::Accuracy,
        Metric::BalancedAccuracy,
        Metric::MacroF1,
        Metric::Nll,
        Metric::Top5,
        Metric::Mse,
        Metric::Mae,
    ];
    /// The names `--metric` takes (and `report.json`'s settings record).
    pub const NAMES: [&'static str; 7] = [
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "nll",
        "top5",
        "mse",
        "mae",
    ];

    /// Its name (see [`Metric::NAMES`]).
    pub fn name(self) -> &'static str {
        if let Metric::Custom { .. } = self {
            return "custom";
        }
        let i = Self::ALL.iter().position(|&m| m == self).unwrap_or(0);
        Self::NAMES[i]
    }

    /// Whether larger values are better.
    pub fn higher_is_better(self) -> bool {
        match self {
            Metric::Custom { higher_is_better } => higher_is_better,
            m => !matches!(m, Metric::Nll | Metric::Mse | Metric::Mae),
        }
    }

    /// Its value in `m` (`None` when it does not apply: a classification metric of
    /// regression predictions, top-5 with fewer than 5 classes…).
    pub fn value(self, m: &Metrics) -> Option<f64> {
        match self {
            Metric::Accuracy => m.accuracy,
            Metric::BalancedAccuracy => m.balanced_accuracy,
            Metric::MacroF1 => m.macro_f1,
            Metric::Nll => m.nll,
            Metric::Top5 => m.top5_accuracy,
            Metric::Mse => m.mse,
            Metric::Mae => m.mae,
            Metric::Custom { .. } => m.custom,
        }
    }

    /// True when `a` beats `b` by this metric; on a tie, by lower NLL (classification).
    pub fn better(self, a: &Metrics, b: &Metrics) -> bool {
        if let (Some(x), Some(y)) = (self.value(a), self.value(b))
            && x != y
        {
            return if self.higher_is_better() {
                x > y
            } else {
                x < y
            };
        }
        matches!((a.nll, b.nll), (Some(x), Some(y)) if x < y)
    }
}

impl std::str::FromStr for Metric {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::NAMES.iter().position(|&n| n == s) {
            Some(i) => Ok(Self::ALL[i]),
            None => Err(DataError::Argument {
                arg: "--metric",
                message: format!("{s:?}: expected one of {}", Self::NAMES.join(", ")),
            }),
        }
    }
}

/// True when every row of `values` (`classes` wide) is non-negative and sums to 1 within 1e-4.
pub fn are_probabilities(values: &[f32], classes: usize) -> bool {
    if classes == 0 {
        return false;
    }
    values.chunks_exact(classes).all(|row| {
        let mut sum = 0.0f64;
        let mut ok = true;
        for &v in row {
            ok &= v >= 0.0;
            sum += f64::from(v);
        }
        ok && (sum - 1.0).abs() <= 1e-4
    })
}

/// Softmax of one row in place, computed in f64 with the maximum subtracted.
pub fn softmax_row(row: &mut [f32]) {
    softmax_row_with(row, &mut Vec::new());
}

/// [`softmax_row`] with a reusable buffer for the exponentials (one `exp` per element).
pub fn softmax_row_with(row: &mut [f32], exps: &mut Vec<f64>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = f64::from(max);
    exps.clear();
    exps.extend(row.iter().map(|&v| (f64::from(v) - max).exp()));
    let sum: f64 = exps.iter().sum();
    let inv = 1.0 / sum;
    for (v, e) in row.iter_mut().zip(exps.iter()) {
        *v = (e * inv) as f32;
    }
}

/// The floor on the label's probability in the NLL: one row costs at most `-ln(1e-15)` ≈ 34.5.
pub const NLL_FLOOR: f64 = 1e-15;

/// One row's negative log-likelihood, from the label's probability `p`: `-ln(max(p, 1e-15))`
/// in f64.
#[inline]
pub fn row_nll(p: f32) -> f64 {
    -f64::from(p).max(NLL_FLOOR).ln()
}

/// One row's squared error `(value - target)²` in f64.
#[inline]
pub fn row_se(value: f32, target: f64) -> f64 {
    let d = f64::from(value) - target;
    d * d
}

/// One row's absolute error `|value - target|` in f64.
#[inline]
pub fn row_ae(value: f32, target: f64) -> f64 {
    (f64::from(value) - target).abs()
}

/// Whether one row counts for top-5 accuracy: fewer than 5 classes have a strictly larger
/// probability than the label's `p`.
#[inline]
pub fn row_top5(row: &[f32], p: f32) -> bool {
    row.iter().filter(|&&q| q > p).count() < 5
}

/// Whether one row is right: `label` is the row's [`argmax`] (ties go to the lowest index, NaN
/// never wins). The row is an iterator over its values so that a sum of rows (greedy ensemble
/// selection) need not be stored; it is walked without branching on the values.
#[inline]
pub fn row_correct<T: PartialOrd + Copy>(
    row: impl Iterator<Item = T> + Clone,
    label: usize,
) -> bool {
    let Some(v) = row.clone().nth(label) else {
        return false;
    };
    let is_nan = |x: T| x.partial_cmp(&x).is_none();
    if is_nan(v) {
        // `argmax` of a row of NaNs is 0; otherwise a NaN label never wins.
        return label == 0 && row.clone().all(is_nan);
    }
    // The label beats every lower class and ties no higher one (NaNs compare false).
    let mut beaten = false;
    for x in row.clone().take(label) {
        beaten |= x >= v;
    }
    for x in row.skip(label + 1) {
        beaten |= x > v;
    }
    !beaten
}

/// Index of the largest value (first one on ties; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        match best {
            _ if v.is_nan() => {}
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map_or(0, |b| b.0)
}

/// Classification metrics of `probs` (`labels.len() × classes`) against class ids.
pub fn classification_metrics(probs: &[f32], classes: usize, labels: &[i64]) -> Metrics {
    let n = labels.len();
    let mut counts = ClassCounts::new(classes);
    let mut top5 = 0usize;
    let mut nll = 0.0f64;
    for (row, &label) in probs.chunks_exact(classes.max(1)).zip(labels) {
        let l = usize::try_from(label).unwrap_or(usize::MAX);
        let p = row.get(l).copied().unwrap_or(0.0);
        counts.add(l, argmax(row), row_correct(row.iter().copied(), l));
        top5 += usize::from(row_top5(row, p));
        nll += row_nll(p);
    }
    let nf = n as f64;
    Metrics {
        samples: n,
        accuracy: Some(counts.right as f64 / nf),
        balanced_accuracy: Some(counts.balanced_accuracy()),
        macro_f1: Some(counts.macro_f1()),
        top5_accuracy: (classes >= 5).then(|| top5 as f64 / nf),
        nll: Some(nll / nf),
        ..Metrics::default()
    }
}

/// Rows per true class, per predicted class and right per class: what balanced accuracy,
/// macro F1 and the per-class results are made of.
struct ClassCounts {
    support: Vec<u64>,
    predicted: Vec<u64>,
    correct: Vec<u64>,
    /// Right rows in all (a label outside the classes is never right).
    right: usize,
}

impl ClassCounts {
    fn new(classes: usize) -> Self {
        ClassCounts {
            support: vec![0; classes],
            predicted: vec![0; classes],
            correct: vec![0; classes],
            right: 0,
        }
    }

    /// One row: its label, its argmax, and whether it is right (`label == predicted`, as
    /// [`row_correct`] decides it).
    fn add(&mut self, label: usize, predicted: usize, right: bool) {
        if let Some(s) = self.support.get_mut(label) {
            *s += 1;
        }
        if let Some(p) = self.predicted.get_mut(predicted) {
            *p += 1;
        }
        if right {
            self.right += 1;
            if let Some(c) = self.correct.get_mut(label) {
                *c += 1;
            }
        }
    }

    fn balanced_accuracy(&self) -> f64 {
        mean(
            self.support
                .iter()
                .zip(&self.correct)
                .filter(|(s, _)| **s > 0)
                .map(|(&s, &c)| c as f64 / s as f64),
        )
    }

    fn macro_f1(&self) -> f64 {
        mean(
            (0..self.support.len())
                .filter(|&c| self.support[c] + self.predicted[c] > 0)
                .map(|c| self.f1(c)),
        )
    }

    fn f1(&self, c: usize) -> f64 {
        let d = self.support[c] + self.predicted[c];
        if d == 0 {
            0.0
        } else {
            2.0 * self.correct[c] as f64 / d as f64
        }
    }
}

/// Mean of `values` (0 when there are none).
fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Confusion matrices are kept up to this many classes (a 1,000-class matrix would be a
/// million numbers per model in `report.json`); per-class results are kept for any number.
pub const MAX_CONFUSION_CLASSES: usize = 256;

/// Per-class results of classification predictions (scikit-learn's
/// `precision_recall_fscore_support` with `zero_division=0`, and `confusion_matrix`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassStats {
    /// Rows whose label is each class.
    pub support: Vec<u64>,
    /// Rows predicted (argmax) as each class.
    pub predicted: Vec<u64>,
    /// Right rows of each class.
    pub correct: Vec<u64>,
    /// `correct / predicted` (0 when nothing was predicted as the class).
    pub precision: Vec<f64>,
    /// `correct / support` (0 when no row has the class).
    pub recall: Vec<f64>,
    /// `2·correct / (support + predicted)` (0 when both are 0).
    pub f1: Vec<f64>,
    /// `confusion[label][predicted]`: rows; absent above [`MAX_CONFUSION_CLASSES`] classes.
    pub confusion: Option<Vec<Vec<u64>>>,
}

impl ClassStats {
    /// Per-class results of `probs` (`labels.len() × classes`) against class ids.
    pub fn of(probs: &[f32], classes: usize, labels: &[i64]) -> ClassStats {
        let mut counts = ClassCounts::new(classes);
        let mut confusion =
            (classes <= MAX_CONFUSION_CLASSES).then(|| vec![vec![0u64; classes]; classes]);
        for (row, &label) in probs.chunks_exact(classes.max(1)).zip(labels) {
            let l = usize::try_from(label).unwrap_or(usize::MAX);
            let p = argmax(row);
            counts.add(l, p, row_correct(row.iter().copied(), l));
            if let Some(cell) = confusion
                .as_mut()
                .and_then(|m| m.get_mut(l))
                .and_then(|r| r.get_mut(p))
            {
                *cell += 1;
            }
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        ClassStats {
            precision: (0..classes)
                .map(|c| ratio(counts.correct[c], counts.predicted[c]))
                .collect(),
            recall: (0..classes)
                .map(|c| ratio(counts.correct[c], counts.support[c]))
                .collect(),
            f1: (0..classes).map(|c| counts.f1(c)).collect(),
            support: counts.support,
            predicted: counts.predicted,
            correct: counts.correct,
            confusion,
        }
    }
}

/// Regression metrics of `values` against `targets`.
pub fn regression_metrics(values: &[f32], targets: &[f64]) -> Metrics {
    let n = targets.len();
    let (se, ae) = values
        .iter()
        .zip(targets)
        .fold((0.0f64, 0.0f64), |(se, ae), (&v, &t)| {
            (se + row_se(v, t), ae + row_ae(v, t))
        });
    Metrics {
        samples: n,
        mse: Some(se / n as f64),
        mae: Some(ae / n as f64),
        ..Metrics::default()
    }
}

/// The labels of some predicted rows, in their order.
pub(super) enum RowLabels {
    Classes(Vec<i64>),
    Targets(Vec<f64>),
}

impl Predictions {
    /// True when some output was NaN or infinite: the model failed on this data.
    pub fn failed(&self) -> bool {
        self.non_finite_rows > 0
    }

    /// Probabilities of the `i`-th predicted row.
    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.classes;
        self.probs
            .get(i.saturating_mul(c)..i.saturating_add(1).saturating_mul(c))
            .unwrap_or_default()
    }

    /// Metrics against the data set's labels (looked up by row).
    pub fn metrics(&self, labels: &Labels) -> Result<Metrics, DataError> {
        match self.labels_of_rows(labels)? {
            RowLabels::Classes(l) => Ok(classification_metrics(&self.probs, self.classes, &l)),
            RowLabels::Targets(t) => Ok(regression_metrics(&self.values, &t)),
        }
    }

    /// Per-class results against the data set's labels (`None` for regression).
    pub fn class_stats(&self, labels: &Labels) -> Result<Option<ClassStats>, DataError> {
        match self.labels_of_rows(labels)? {
            RowLabels::Classes(l) => Ok(Some(ClassStats::of(&self.probs, self.classes, &l))),
            RowLabels::Targets(_) => Ok(None),
        }
    }

    /// The labels of the predicted rows, once the predictions are known to be scorable.
    pub(super) fn labels_of_rows(&self, labels: &Labels) -> Result<RowLabels, DataError> {
        if self.rows.is_empty() {
            return Err(DataError::Argument {
                arg: "rows",
                message: "no rows to score".into(),
            });
        }
        if self.failed() {
            return Err(DataError::NonFinite {
                output: self.output.clone(),
                rows: self.non_finite_rows,
                first: self.first_non_finite.unwrap_or(0),
            });
        }
        let pick = |len: usize| -> Result<(), DataError> {
            match self.rows.iter().find(|&&r| r >= len) {
                Some(r) => Err(DataError::Argument {
                    arg: "rows",
                    message: format!("row {r} is out of range ({len} labels)"),
                }),
                None => Ok(()),
            }
        };
        match (labels, self.kind) {
            (Labels::Classes(ids), ScoredAs::Probabilities | ScoredAs::Logits) => {
                pick(ids.len())?;
                Ok(RowLabels::Classes(
                    self.rows
                        .iter()
                        .map(|&r| ids.get(r).copied().unwrap_or(-1))
                        .collect(),
                ))
            }
            (Labels::Targets(t), ScoredAs::Regression) => {
                pick(t.len())?;
                Ok(RowLabels::Targets(
                    self.rows
                        .iter()
                        .map(|&r| t.get(r).copied().unwrap_or(f64::NAN))
                        .collect(),
                ))
            }
            _ => Err(DataError::Argument {
                arg: "labels",
                message: "labels and predictions disagree on classification vs regression".into(),
            }),
        }
    }

    /// Makes every row with NaN/Inf outputs a wrong answer (classification): probability 0 on
    /// its label, spread evenly over the other classes, so it is wrong at every rank a metric
    /// looks at (top-5 included, with more than 5 classes) and costs NLL's floor. Returns the
    /// rows changed; the predictions then no longer count as failed. Regression is left as
    /// it is (0).
    pub fn count_failed_rows_as_wrong(&mut self, labels: &Labels) -> usize {
        let (Labels::Classes(ids), true) = (labels, self.kind != ScoredAs::Regression) else {
            return 0;
        };
        let c = self.classes;
        if c < 2 || self.non_finite_rows == 0 {
            return 0;
        }
        let mut changed = 0;
        let other = 1.0 / (c - 1) as f32;
        for (i, &r) in self.rows.iter().enumerate() {
            let Some(row) = self.probs.get_mut(i * c..(i + 1) * c) else {
                continue;
            };
            if row.iter().all(|v| v.is_finite()) {
                continue;
            }
            let label = ids.get(r).and_then(|&l| usize::try_from(l).ok());
            for (j, v) in row.iter_mut().enumerate() {
                *v = if Some(j) == label { 0.0 } else { other };
            }
            changed += 1;
        }
        self.non_finite_rows = 0;
        self.first_non_finite = None;
        changed
    }

    /// Whether each row's argmax is its label (`None` for regression).
    pub fn correct(&self, labels: &Labels) -> Option<Vec<bool>> {
        let Labels::Classes(ids) = labels else {
            return None;
        };
        let label = |r: usize| ids.get(r).and_then(|&l| usize::try_from(l).ok());
        let rows = self.rows.iter().enumerate();
        Some(
            rows.map(|(i, &r)| {
                label(r).is_some_and(|l| row_correct(self.row(i).iter().copied(), l))
            })
            .collect(),
        )
    }

    /// One model's predictions of consecutive parts of its rows, joined in order: what one
    /// prediction of all the rows gives when every part was a run of whole batches. When some
    /// part held logits, the whole did: the parts read as probabilities get their softmax.
    pub fn concat(parts: Vec<Predictions>) -> Result<Predictions, DataError> {
        let mut parts = parts.into_iter();
        let Some(mut out) = parts.next() else {
            return Err(DataError::Argument {
                arg: "parts",
                message: "no predictions to join".into(),
            });
        };
        let mut raw_probabilities = vec![(0, out.rows.len(), out.kind)];
        for p in parts {
            if p.classes != out.classes
                || p.output != out.output
                || (p.kind == ScoredAs::Regression) != (out.kind == ScoredAs::Regression)
            {
                return Err(DataError::Argument {
                    arg: "parts",
                    message: "parts of one prediction disagree on the output".into(),
                });
            }
            raw_probabilities.push((out.rows.len(), p.rows.len(), p.kind));
            out.rows.extend_from_slice(&p.rows);
            out.probs.extend_from_slice(&p.probs);
            out.values.extend_from_slice(&p.values);
            out.non_finite_rows += p.non_finite_rows;
            out.first_non_finite = out.first_non_finite.or(p.first_non_finite);
        }
        if raw_probabilities
            .iter()
            .any(|&(_, _, k)| k == ScoredAs::Logits)
        {
            let c = out.classes.max(1);
            let mut exps = Vec::with_capacity(c);
            for &(start, len, kind) in &raw_probabilities {
                if kind != ScoredAs::Probabilities {
                    continue;
                }
                let block = out.probs.get_mut(start * c..(start + len) * c);
                for row in block.into_iter().flat_map(|b| b.chunks_exact_mut(c)) {
                    if row.iter().all(|v| v.is_finite()) {
                        softmax_row_with(row, &mut exps);
                    }
                }
            }
            out.kind = ScoredAs::Logits;
        }
        Ok(out)
    }

    /// The mean of several models' predictions for the same rows (an ensemble): probabilities
    /// (or regression values) averaged element-wise.
    pub fn mean(members: &[&Predictions]) -> Result<Predictions, DataError> {
        let weighted: Vec<(&Predictions, f64)> = members.iter().map(|&m| (m, 1.0)).collect();
        Self::weighted_mean(&weighted)
    }

    /// The weighted mean of several models' predictions for the same rows (an ensemble whose
    /// members have multiplicities): Σ wᵢ·pᵢ / Σ wᵢ, accumulated in f64 in member order.
    pub fn weighted_mean(members: &[(&Predictions, f64)]) -> Result<Predictions, DataError> {
        let Some(&(first, _)) = members.first() else {
            return Err(DataError::Argument {
                arg: "members",
                message: "an ensemble needs at least one member".into(),
            });
        };
        if members.iter().any(|(m, _)| {
            m.rows != first.rows
                || m.classes != first.classes
                || (m.kind == ScoredAs::Regression) != (first.kind == ScoredAs::Regression)
        }) {
            return Err(DataError::Argument {
                arg: "members",
                message: "ensemble members predicted different rows or class counts".into(),
            });
        }
        let total: f64 = members.iter().map(|(_, w)| w).sum();
        if !(total.is_finite() && total > 0.0) {
            return Err(DataError::Argument {
                arg: "members",
                message: "ensemble weights must sum to a positive number".into(),
            });
        }
        let avg = |get: &dyn Fn(&Predictions) -> &Vec<f32>| -> Vec<f32> {
            let mut acc = vec![0.0f64; get(first).len()];
            for (m, w) in members {
                for (a, &v) in acc.iter_mut().zip(get(m)) {
                    *a += w * f64::from(v);
                }
            }
            acc.into_iter().map(|a| (a / total) as f32).collect()
        };
        Ok(Predictions {
            rows: first.rows.clone(),
            classes: first.classes,
            probs: avg(&|p| &p.probs),
            values: avg(&|p| &p.values),
            kind: if first.kind == ScoredAs::Regression {
                ScoredAs::Regression
            } else {
                ScoredAs::Probabilities
            },
            non_finite_rows: members
                .iter()
                .map(|(m, _)| m.non_finite_rows)
                .max()
                .unwrap_or(0),
            first_non_finite: members.iter().filter_map(|(m, _)| m.first_non_finite).min(),
            output: first.output.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_detection() {
        assert!(are_probabilities(&[0.2, 0.8, 1.0, 0.0], 2));
        assert!(are_probabilities(&[0.20001, 0.8], 2));
        assert!(!are_probabilities(&[0.3, 0.8], 2));
        assert!(!are_probabilities(&[-0.1, 1.1], 2));
        assert!(!are_probabilities(&[2.0, -1.0, 0.5, 0.5], 2));
    }

    fn preds(rows: Vec<usize>, probs: Vec<f32>, kind: ScoredAs) -> Predictions {
        Predictions {
            classes: 2,
            non_finite_rows: probs
                .chunks(2)
                .filter(|p| p.iter().any(|v| !v.is_finite()))
                .count(),
            first_non_finite: rows
                .iter()
                .zip(probs.chunks(2))
                .find_map(|(&r, p)| p.iter().any(|v| !v.is_finite()).then_some(r)),
            rows,
            probs,
            values: Vec::new(),
            kind,
            output: "y".into(),
        }
    }

    #[test]
    fn joined_parts_equal_one_prediction() {
        // Raw outputs of 3 rows: the first two read as probabilities, the third does not.
        let raw = [0.25f32, 0.75, 1.0, 0.0, 2.0, -1.0];
        let mut whole = raw.to_vec();
        let mut exps = Vec::new();
        for row in whole.chunks_exact_mut(2) {
            softmax_row_with(row, &mut exps);
        }
        let a = preds(vec![4, 7], raw[..4].to_vec(), ScoredAs::Probabilities);
        let mut b_probs = raw[4..].to_vec();
        softmax_row_with(&mut b_probs, &mut exps);
        let b = preds(vec![9], b_probs, ScoredAs::Logits);
        let joined = Predictions::concat(vec![a.clone(), b]).unwrap();
        assert_eq!(joined, preds(vec![4, 7, 9], whole, ScoredAs::Logits));
        // Parts that all read as probabilities stay as they are.
        let c = preds(vec![9], vec![0.5, 0.5], ScoredAs::Probabilities);
        let joined = Predictions::concat(vec![a, c]).unwrap();
        assert_eq!(joined.kind, ScoredAs::Probabilities);
        assert_eq!(joined.probs, [0.25, 0.75, 1.0, 0.0, 0.5, 0.5]);
        assert_eq!(
            joined.correct(&Labels::Classes(vec![0; 10])).unwrap(),
            [false, true, true]
        );
        // Non-finite rows: counted over the parts, the first in row order reported.
        let bad = preds(
            vec![1, 2],
            vec![0.5, 0.5, f32::NAN, 0.0],
            ScoredAs::Probabilities,
        );
        let worse = preds(vec![3], vec![f32::NAN, 1.0], ScoredAs::Probabilities);
        let joined = Predictions::concat(vec![bad, worse]).unwrap();
        assert_eq!(
            (joined.non_finite_rows, joined.first_non_finite),
            (2, Some(2))
        );
        assert!(Predictions::concat(Vec::new()).is_err());
    }

    #[test]
    fn failed_rows_become_wrong_answers() {
        let mut p = preds(
            vec![0, 1, 2],
            vec![0.9, 0.1, f32::NAN, 0.5, f32::INFINITY, 0.0],
            ScoredAs::Probabilities,
        );
        let labels = Labels::Classes(vec![0, 0, 1]);
        assert!(p.metrics(&labels).is_err());
        assert_eq!(p.count_failed_rows_as_wrong(&labels), 2);
        assert_eq!(p.probs, [0.9, 0.1, 0.0, 1.0, 1.0, 0.0]);
        let m = p.metrics(&labels).unwrap();
        assert_eq!(m.accuracy, Some(1.0 / 3.0));
        assert_eq!(p.count_failed_rows_as_wrong(&labels), 0);
        let mut r = preds(vec![0], vec![f32::NAN, 0.0], ScoredAs::Regression);
        assert_eq!(r.count_failed_rows_as_wrong(&labels), 0);
        assert!(r.failed());
    }

    #[test]
    fn softmax_matches_definition() {
        let mut r = [1.0f32, 2.0, 3.0];
        softmax_row(&mut r);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0]
            .iter()
            .map(|x| (x - 3.0f64).exp())
            .collect();
        let s: f64 = e.iter().sum();
        for (a, b) in r.iter().zip(&e) {
            assert!((f64::from(*a) - b / s).abs() < 1e-7);
        }
        let mut big = [1000.0f32, 1000.0];
        softmax_row(&mut big);
        assert_eq!(big, [0.5, 0.5]);
    }

    #[test]
    fn argmax_ties_go_low() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[0.3, 0.3]), 0);
        assert_eq!(argmax(&[-5.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// `row_correct` is `argmax(row) == label`, NaNs, ties and out-of-range labels included.
        #[test]
        fn row_correct_is_argmax(
            row in proptest::collection::vec(
                proptest::prop_oneof![
                    (0u8..4).prop_map(|v| f32::from(v) / 4.0),
                    proptest::strategy::Just(f32::NAN),
                    proptest::strategy::Just(f32::NEG_INFINITY),
                ],
                1..7,
            ),
        ) {
            for label in 0..row.len() + 2 {
                proptest::prop_assert_eq!(
                    row_correct(row.iter().copied(), label),
                    argmax(&row) == label,
                    "{:?} {}", row, label
                );
                let wide = row.iter().map(|&v| f64::from(v));
                proptest::prop_assert_eq!(row_correct(wide, label), argmax(&row) == label);
            }
        }
    }

    #[test]
    fn metrics_on_hand_made_arrays() {
        let probs = [
            0.7, 0.2, 0.1, // label 0: correct
            0.1, 0.3, 0.6, // label 1: wrong
            0.5, 0.5, 0.0, // label 1: tie → index 0 → wrong
            0.0, 0.0, 1.0, // label 2: correct
        ];
        let m = classification_metrics(&probs, 3, &[0, 1, 1, 2]);
        assert_eq!(m.samples, 4);
        assert_eq!(m.accuracy, Some(0.5));
        assert_eq!(m.top5_accuracy, None);
        let want =
            -((0.7f32 as f64).ln() + (0.3f32 as f64).ln() + (0.5f32 as f64).ln() + 0.0) / 4.0;
        assert!((m.nll.unwrap() - want).abs() < 1e-12);
        let p0 = [0.0f32, 1.0];
        let m = classification_metrics(&p0, 2, &[0]);
        assert!((m.nll.unwrap() - (-(1e-15f64).ln())).abs() < 1e-9);
    }

    #[test]
    fn top5() {
        let row = [0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05];
        assert_eq!(
            classification_metrics(&row, 8, &[4]).top5_accuracy,
            Some(1.0)
        );
        // Class 5 ties with 6 and 7 at 0.05; five classes are above it.
        assert_eq!(
            classification_metrics(&row, 8, &[5]).top5_accuracy,
            Some(0.0)
        );
    }

    #[test]
    fn values_are_the_json_fields() {
        let m = classification_metrics(&[0.1, 0.2, 0.3, 0.4, 0.0], 5, &[3]);
        let json = serde_json::to_value(m).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|&k| k != "samples")
            .collect();
        let names: Vec<&str> = m.values().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "accuracy",
                "balanced_accuracy",
                "macro_f1",
                "top5_accuracy",
                "nll"
            ]
        );
        let mut sorted = names.clone();
        sorted.sort_unstable();
        let mut fields = fields;
        fields.sort_unstable();
        assert_eq!(sorted, fields);
        for (n, v) in m.values() {
            assert_eq!(json[n].as_f64(), Some(v));
        }
    }

    #[test]
    fn metric_names_and_order() {
        for (m, n) in Metric::ALL.iter().zip(Metric::NAMES) {
            assert_eq!(m.name(), n);
            assert_eq!(n.parse::<Metric>().ok(), Some(*m));
        }
        assert!("f1".parse::<Metric>().is_err());
        let a = classification_metrics(&[0.9, 0.1, 0.2, 0.8], 2, &[0, 1]);
        let b = classification_metrics(&[0.6, 0.4, 0.4, 0.6], 2, &[0, 1]);
        // Equal accuracy, F1, balanced accuracy: the lower NLL decides.
        for m in [
            Metric::Accuracy,
            Metric::MacroF1,
            Metric::BalancedAccuracy,
            Metric::Nll,
        ] {
            assert!(m.better(&a, &b) && !m.better(&b, &a), "{m:?}");
        }
        let r = |v: f32| regression_metrics(&[v], &[0.0]);
        assert!(Metric::Mae.better(&r(0.1), &r(-0.2)));
        assert!(!Metric::Mse.better(&r(0.3), &r(-0.2)));
        assert_eq!(Metric::Top5.value(&a), None);
    }

    #[test]
    fn mse() {
        let m = regression_metrics(&[1.0, 2.0], &[0.0, 4.0]);
        assert_eq!(m.mse, Some(2.5));
        assert_eq!(m.mae, Some(1.5));
        assert_eq!(m.primary(), -2.5);
    }

    /// Balanced accuracy, macro F1 and the per-class results on a case worked by hand:
    /// labels 0 0 0 1 2, predictions 0 0 1 1 1 (class 3 is neither).
    #[test]
    fn per_class_by_hand() {
        let one_hot = |c: usize| {
            let mut r = [0.0f32; 4];
            r[c] = 1.0;
            r
        };
        let probs: Vec<f32> = [0, 0, 1, 1, 1].into_iter().flat_map(one_hot).collect();
        let labels = [0, 0, 0, 1, 2];
        let m = classification_metrics(&probs, 4, &labels);
        assert_eq!(m.accuracy, Some(0.6));
        // Recalls 2/3, 1, 0 over the classes present in the labels.
        assert!((m.balanced_accuracy.unwrap() - (2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-15);
        // F1: class 0 = 2·2/(3+2), class 1 = 2·1/(1+3), class 2 = 0; class 3 left out.
        assert!((m.macro_f1.unwrap() - (0.8 + 0.5) / 3.0).abs() < 1e-15);
        let s = ClassStats::of(&probs, 4, &labels);
        assert_eq!(s.support, [3, 1, 1, 0]);
        assert_eq!(s.predicted, [2, 3, 0, 0]);
        assert_eq!(s.correct, [2, 1, 0, 0]);
        assert_eq!(s.precision, [1.0, 1.0 / 3.0, 0.0, 0.0]);
        assert_eq!(s.recall, [2.0 / 3.0, 1.0, 0.0, 0.0]);
        assert_eq!(s.f1, [0.8, 0.5, 0.0, 0.0]);
        let c = s.confusion.unwrap();
        assert_eq!(c[0], [2, 1, 0, 0]);
        assert_eq!(c[2], [0, 1, 0, 0]);
        let total: u64 = c.iter().flatten().sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn ensembles_average() {
        let a = Predictions {
            rows: vec![0, 1],
            classes: 2,
            probs: vec![1.0, 0.0, 0.0, 1.0],
            values: vec![],
            kind: ScoredAs::Probabilities,
            non_finite_rows: 0,
            first_non_finite: None,
            output: "y".into(),
        };
        let mut b = a.clone();
        b.probs = vec![0.0, 1.0, 0.5, 0.5];
        let m = Predictions::mean(&[&a, &b]).unwrap();
        assert_eq!(m.probs, vec![0.5, 0.5, 0.25, 0.75]);
        let mm = m.metrics(&Labels::Classes(vec![0, 1])).unwrap();
        assert_eq!(mm.accuracy, Some(1.0));
        b.rows = vec![1, 0];
        assert!(Predictions::mean(&[&a, &b]).is_err());
        b.rows = vec![0, 1];
        b.non_finite_rows = 1;
        b.first_non_finite = Some(1);
        let m = Predictions::mean(&[&a, &b]).unwrap();
        assert!(m.failed());
        assert!(m.metrics(&Labels::Classes(vec![0, 1])).is_err());
    }
}
