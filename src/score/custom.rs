//! Metrics the caller supplies: a closure over a candidate's outputs and the labels of the
//! same rows (the Python binding's `metric=callable`). It is what selection, greedy ensembles
//! and the report's `custom` figure use when [`crate::evolve::EvolveConfig::custom_metric`] is
//! set.

use std::fmt;
use std::sync::Arc;

use super::metrics::RowLabels;
use super::{DataError, Labels, Predictions};

/// The labels of the rows a custom metric scores, in the rows' order.
#[derive(Debug, Clone, Copy)]
pub enum CustomLabels<'a> {
    /// Class ids (classification).
    Classes(&'a [i64]),
    /// Targets (regression).
    Targets(&'a [f64]),
}

/// A candidate's outputs for the scored rows: `rows × cols` row-major values, probabilities
/// for classification (logits already softmaxed, as every built-in metric sees them), one
/// value per row (`cols` = 1) for regression.
#[derive(Debug, Clone, Copy)]
pub struct CustomOutputs<'a> {
    /// The values.
    pub values: &'a [f32],
    /// Rows scored.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
}

/// The closure of a [`CustomMetric`]: a score, or why it could not be computed.
pub type MetricFn =
    dyn Fn(CustomOutputs<'_>, CustomLabels<'_>) -> Result<f64, String> + Send + Sync;

/// A metric computed by the caller's closure (higher or lower is better), named for the run's
/// key and errors. It may be called from several threads at once.
#[derive(Clone)]
pub struct CustomMetric {
    name: String,
    higher_is_better: bool,
    f: Arc<MetricFn>,
}

impl fmt::Debug for CustomMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomMetric")
            .field("name", &self.name)
            .field("higher_is_better", &self.higher_is_better)
            .finish_non_exhaustive()
    }
}

impl CustomMetric {
    /// A metric named `name` computed by `f`.
    pub fn new(name: impl Into<String>, higher_is_better: bool, f: Arc<MetricFn>) -> Self {
        Self {
            name: name.into(),
            higher_is_better,
            f,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether larger values are better.
    pub fn higher_is_better(&self) -> bool {
        self.higher_is_better
    }

    /// The [`super::Metric`] that selects by it.
    pub fn metric(&self) -> super::Metric {
        super::Metric::Custom {
            higher_is_better: self.higher_is_better,
        }
    }

    /// Calls the closure on `values` (`cols` per row) against `labels`. A closure error, or a
    /// non-finite score, becomes [`DataError::Metric`].
    pub fn evaluate_raw(
        &self,
        values: &[f32],
        cols: usize,
        labels: CustomLabels<'_>,
    ) -> Result<f64, DataError> {
        let cols = cols.max(1);
        let outputs = CustomOutputs {
            values,
            rows: values.len() / cols,
            cols,
        };
        let err = |message: String| DataError::Metric {
            name: self.name.clone(),
            message,
        };
        let v = (self.f)(outputs, labels).map_err(err)?;
        if v.is_nan() {
            return Err(err("returned NaN".into()));
        }
        Ok(v)
    }

    /// Its value for `p` against the data set's labels.
    pub fn evaluate(&self, p: &Predictions, labels: &Labels) -> Result<f64, DataError> {
        match p.labels_of_rows(labels)? {
            RowLabels::Classes(l) => {
                self.evaluate_raw(&p.probs, p.classes, CustomLabels::Classes(&l))
            }
            RowLabels::Targets(t) => self.evaluate_raw(&p.values, 1, CustomLabels::Targets(&t)),
        }
    }
}

impl Predictions {
    /// [`Predictions::metrics`], with [`super::Metrics::custom`] computed by `custom` when
    /// given.
    pub fn metrics_with(
        &self,
        labels: &Labels,
        custom: Option<&CustomMetric>,
    ) -> Result<super::Metrics, DataError> {
        let mut m = self.metrics(labels)?;
        if let Some(c) = custom {
            m.custom = Some(c.evaluate(self, labels)?);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::ScoredAs;

    fn preds() -> Predictions {
        Predictions {
            rows: vec![0, 1, 2],
            classes: 2,
            probs: vec![0.9, 0.1, 0.2, 0.8, 0.6, 0.4],
            values: Vec::new(),
            kind: ScoredAs::Probabilities,
            non_finite_rows: 0,
            first_non_finite: None,
            output: "y".into(),
        }
    }

    fn accuracy() -> CustomMetric {
        CustomMetric::new(
            "acc",
            true,
            Arc::new(|o: CustomOutputs<'_>, l: CustomLabels<'_>| {
                let CustomLabels::Classes(l) = l else {
                    return Err("regression".into());
                };
                let right = o
                    .values
                    .chunks_exact(o.cols)
                    .zip(l)
                    .filter(|(row, c)| row[**c as usize] >= row[1 - **c as usize])
                    .count();
                Ok(right as f64 / o.rows as f64)
            }),
        )
    }

    #[test]
    fn a_hand_written_accuracy_equals_the_built_in_one() {
        let labels = Labels::Classes(vec![0, 1, 1]);
        let m = preds().metrics_with(&labels, Some(&accuracy())).unwrap();
        assert_eq!(m.custom, m.accuracy);
        assert_eq!(m.custom, Some(2.0 / 3.0));
        assert_eq!(preds().metrics_with(&labels, None).unwrap().custom, None);
    }

    #[test]
    fn closure_errors_and_nan_name_the_metric() {
        let labels = Labels::Targets(vec![0.0, 1.0, 2.0]);
        let mut p = preds();
        p.kind = ScoredAs::Regression;
        p.classes = 0;
        p.values = vec![0.0, 1.0, 2.0];
        let e = accuracy().evaluate(&p, &labels).unwrap_err().to_string();
        assert_eq!(e, "metric `acc` failed: regression");
        let nan = CustomMetric::new(
            "n",
            false,
            Arc::new(|_: CustomOutputs<'_>, _: CustomLabels<'_>| Ok(f64::NAN)),
        );
        let e = nan.evaluate(&p, &labels).unwrap_err().to_string();
        assert_eq!(e, "metric `n` failed: returned NaN");
    }
}
