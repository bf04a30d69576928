//! Running a session over rows of a data set, batch by batch, into [`Predictions`].

use half::{bf16, f16};
use ort::session::Session;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions};
use ort::value::{DynValue, TensorElementType, ValueType};

use super::DataError;
use super::dataset::{BatchShape, Batcher, Dataset};
use super::metrics::{Predictions, ScoredAs, are_probabilities, softmax_row_with};
use super::spec::{ModelIo, OutputSpec};

/// Runs a model over rows of a data set. Reuses its batch buffers between calls.
pub struct Predictor {
    model: std::path::PathBuf,
    output: String,
    /// The scored value when it is not a graph output (sessions must expose it).
    exposed: Option<String>,
    regression: bool,
    static_classes: Option<usize>,
    batch: usize,
    pad_to: Option<usize>,
    batcher: Batcher,
    // Created on first use: every ort call needs the library loaded by `Runtime::new`.
    run_options: Option<RunOptions<HasSelectedOutputs>>,
}

impl std::fmt::Debug for Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("output", &self.output)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Predictor {
    /// Chooses the scored output (`output`, else the first float output of shape [N, C]; for
    /// regression labels `[N]` or `[N, 1]` also) and the batch size (`batch`, or the model's fixed
    /// batch size). Checks that the labels fit the output's classes when they are declared.
    pub fn new(
        io: &ModelIo,
        ds: &Dataset,
        output: Option<&str>,
        batch: usize,
    ) -> Result<Self, DataError> {
        let model_err = |m: String| DataError::Model {
            path: io.path.clone(),
            message: m,
        };
        let regression = !ds.labels().is_classification();
        let rank_ok = |o: &OutputSpec| match o.rank() {
            None => true,
            Some(2) => true,
            Some(1) => regression,
            Some(_) => false,
        };
        let list = || {
            io.outputs
                .iter()
                .map(|o| {
                    let t = o.elem.map_or("non-tensor".to_string(), |e| e.to_string());
                    format!("{} {t} {}", o.name, o.dims_text())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let spec = match output {
            Some(name) => {
                let o = io
                    .scoreable(name)
                    .ok_or_else(|| model_err(format!("no output `{name}` (outputs: {})", list())))?;
                if !o.may_be_float() {
                    return Err(model_err(format!(
                        "output `{name}` is {}, but the scored output must be a float tensor",
                        o.elem.map_or("not a tensor".to_string(), |e| e.to_string())
                    )));
                }
                if !rank_ok(o) {
                    return Err(model_err(format!(
                        "output `{name}` has shape {}; scoring needs [N, C]{}",
                        o.dims_text(),
                        if regression { " or [N]" } else { "" }
                    )));
                }
                o
            }
            // The first float [N, C] output; for regression, else the first float [N].
            None => io
                .outputs
                .iter()
                .find(|o| o.may_be_float() && o.rank().is_none_or(|r| r == 2))
                .or_else(|| io.outputs.iter().find(|o| o.may_be_float() && rank_ok(o)))
                // The class scores a label or ZipMap output is computed from (skl2onnx).
                .or_else(|| io.hidden.iter().find(|o| o.may_be_float() && rank_ok(o)))
                .ok_or_else(|| {
                    model_err(format!(
                        "no float output of shape [N, C] to score (outputs: {}); name one with --output",
                        list()
                    ))
                })?,
        };
        let static_classes = if regression {
            None
        } else {
            spec.fixed(1).and_then(|c| usize::try_from(c).ok())
        };
        if let Some(c) = static_classes {
            check_class_count(io, &spec.name, c)?;
            ds.check_classes(c, &spec.name)?;
        }
        let (batch, pad_to) = match ds.fixed_batch() {
            Some(b) => (b, Some(b)),
            None if batch == 0 => {
                return Err(DataError::Argument {
                    arg: "--batch",
                    message: "0: must be at least 1".into(),
                });
            }
            None => (batch, None),
        };
        let exposed = io.output(&spec.name).is_none().then(|| spec.name.clone());
        Ok(Self {
            model: io.path.clone(),
            output: spec.name.clone(),
            exposed,
            regression,
            static_classes,
            batch,
            pad_to,
            batcher: Batcher::default(),
            run_options: None,
        })
    }

    /// The scored output.
    pub fn output(&self) -> &str {
        &self.output
    }

    /// The scored value when it is not one of the model's outputs (skl2onnx's `ZipMap`
    /// input): sessions are built from the model bytes followed by
    /// [`Predictor::session_suffix`], which makes it an output.
    pub fn exposed(&self) -> Option<&str> {
        self.exposed.as_deref()
    }

    /// Bytes to append to the model for sessions that can produce the scored value (empty when
    /// it is a graph output).
    pub fn session_suffix(&self) -> Vec<u8> {
        self.exposed
            .as_deref()
            .map(|n| crate::onnx::tail::expose_suffix(&[n]))
            .unwrap_or_default()
    }

    /// Samples per run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// A warm-up for new sessions: runs the first batch of `rows` through a session and
    /// discards the result. A GPU session's first run sets up its kernels and memory; doing
    /// that on another thread while the previous session is busy hides the cost. Returns a
    /// closure that can be shared between threads.
    pub fn warm_up<'a>(
        &self,
        ds: &'a Dataset,
        rows: &'a [usize],
    ) -> impl Fn(&mut Session) -> Result<(), DataError> + Sync + 'a {
        let (batch, pad_to, model) = (self.batch.max(1), self.pad_to, self.model.clone());
        move |session: &mut Session| {
            let first = rows.get(..batch.min(rows.len())).unwrap_or_default();
            if first.is_empty() {
                return Ok(());
            }
            let mut batcher = Batcher::default();
            let (inputs, _) = batcher.inputs(ds, first, pad_to)?;
            session
                .run(inputs)
                .map(drop)
                .map_err(|e| DataError::Inference {
                    path: model.clone(),
                    message: e.message().replace(['\n', '\r'], " "),
                })
        }
    }

    /// Classes declared by the model's output, if fixed.
    pub fn static_classes(&self) -> Option<usize> {
        self.static_classes
    }

    /// Predictions for `rows` (in order), in batches of [`Self::batch`] formed from `rows` in
    /// order: the same rows and batch size give bit-identical outputs.
    pub fn predict(
        &mut self,
        session: &mut Session,
        ds: &Dataset,
        rows: &[usize],
    ) -> Result<Predictions, DataError> {
        self.predict_with_progress(session, ds, rows, &mut |_| {})
    }

    /// [`Self::predict`], calling `progress(rows_done)` after each batch.
    pub fn predict_with_progress(
        &mut self,
        session: &mut Session,
        ds: &Dataset,
        rows: &[usize],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Predictions, DataError> {
        let model = self.model.clone();
        let infer = |m: String| DataError::Inference {
            path: model.clone(),
            message: m.replace(['\n', '\r'], " "),
        };
        let out_name = self.output.clone();
        if self.run_options.is_none() {
            let ro = RunOptions::new()
                .map_err(|e| infer(e.message().to_string()))?
                .with_outputs(OutputSelector::no_default().with(out_name.clone()));
            self.run_options = Some(ro);
        }
        let mut acc = Collected::new(
            if self.regression {
                Some(0)
            } else {
                self.static_classes
            },
            self.regression,
            rows.len(),
        );
        let mut done = 0usize;
        let Self {
            batcher,
            run_options: Some(run_options),
            pad_to,
            batch,
            ..
        } = self
        else {
            return Err(infer("no run options".into()));
        };
        for chunk in rows.chunks((*batch).max(1)) {
            let (inputs, shape) = batcher.inputs(ds, chunk, *pad_to)?;
            let outputs = session
                .run_with_options(inputs, run_options)
                .map_err(|e| infer(e.message().to_string()))?;
            let value = outputs
                .get(&out_name)
                .ok_or_else(|| infer(format!("output `{out_name}` was not produced")))?;
            with_f32(value, &out_name, &mut |dims: &[i64], data: &[f32]| {
                acc.add_batch(&out_name, dims, data, shape, chunk)
            })
            .map_err(infer)?;
            done += chunk.len();
            progress(done);
        }
        acc.finish(ds, rows, out_name)
    }
}

/// A run's outputs so far: rows of class scores (or regression values), and the rows with
/// NaN/Inf.
struct Collected {
    /// Columns of the scored output, once known (0 for regression).
    classes: Option<usize>,
    regression: bool,
    /// Rows to come, for reserving.
    rows: usize,
    probs: Vec<f32>,
    values: Vec<f32>,
    non_finite: usize,
    first_bad: Option<usize>,
}

impl Collected {
    fn new(classes: Option<usize>, regression: bool, rows: usize) -> Self {
        let mut c = Collected {
            classes,
            regression,
            rows,
            probs: Vec::new(),
            values: Vec::new(),
            non_finite: 0,
            first_bad: None,
        };
        if let Some(k) = classes {
            c.probs.reserve(rows.saturating_mul(k));
        }
        if regression {
            c.values.reserve(rows);
        }
        c
    }

    /// Takes one batch's output (`dims`, `data`) for the data set rows `chunk`.
    fn add_batch(
        &mut self,
        out_name: &str,
        dims: &[i64],
        data: &[f32],
        shape: BatchShape,
        chunk: &[usize],
    ) -> Result<(), String> {
        let fed = i64::try_from(shape.fed).unwrap_or(-1);
        let width = match (dims, self.regression) {
            ([n], true) if *n == fed => 1,
            ([n, c], _) if *n == fed && *c >= 1 => usize::try_from(*c).unwrap_or(0),
            _ => {
                return Err(format!(
                    "output `{out_name}` has shape {dims:?} for a batch of {}; expected [{}, C]",
                    shape.fed, shape.fed
                ));
            }
        };
        if !self.regression {
            self.check_width(out_name, width)?;
        }
        for (k, row) in data.chunks_exact(width).take(shape.rows).enumerate() {
            if !row.iter().all(|v| v.is_finite()) {
                self.non_finite += 1;
                if self.first_bad.is_none() {
                    self.first_bad = chunk.get(k).copied();
                }
            }
            if self.regression {
                self.values.push(row.first().copied().unwrap_or(f32::NAN));
            } else {
                self.probs.extend_from_slice(row);
            }
        }
        Ok(())
    }

    /// A batch's class count must be at least 2, and the same in every batch.
    fn check_width(&mut self, out_name: &str, width: usize) -> Result<(), String> {
        match self.classes {
            None => {
                if width < 2 {
                    return Err(format!(
                        "output `{out_name}` has {width} column; classification needs at least 2 classes (float labels score it as regression)"
                    ));
                }
                self.classes = Some(width);
                self.probs.reserve(self.rows.saturating_mul(width));
            }
            Some(c) if c != width => {
                return Err(format!(
                    "output `{out_name}` has {width} classes in one batch and {c} in another"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The predictions: rows that were not probabilities get a softmax.
    fn finish(
        mut self,
        ds: &Dataset,
        rows: &[usize],
        out_name: String,
    ) -> Result<Predictions, DataError> {
        let classes = self.classes.unwrap_or(0);
        if !self.regression {
            ds.check_classes(classes, &out_name)?;
        }
        let kind = if self.regression {
            ScoredAs::Regression
        } else if self
            .probs
            .chunks_exact(classes.max(1))
            .filter(|r| r.iter().all(|v| v.is_finite()))
            .all(|r| are_probabilities(r, classes))
        {
            ScoredAs::Probabilities
        } else {
            let mut exps = Vec::with_capacity(classes);
            for row in self.probs.chunks_exact_mut(classes.max(1)) {
                if row.iter().all(|v| v.is_finite()) {
                    softmax_row_with(row, &mut exps);
                }
            }
            ScoredAs::Logits
        };
        Ok(Predictions {
            rows: rows.to_vec(),
            classes,
            probs: self.probs,
            values: self.values,
            kind,
            non_finite_rows: self.non_finite,
            first_non_finite: self.first_bad,
            output: out_name,
        })
    }
}

fn check_class_count(io: &ModelIo, name: &str, c: usize) -> Result<(), DataError> {
    if c < 2 {
        return Err(DataError::Model {
            path: io.path.clone(),
            message: format!(
                "output `{name}` has {c} column; classification needs at least 2 classes (float labels score it as regression)"
            ),
        });
    }
    Ok(())
}

/// Receives one batch's output: dims and values as f32.
type RowSink<'f> = dyn FnMut(&[i64], &[f32]) -> Result<(), String> + 'f;

/// Calls `f(dims, values)` with the tensor's values as f32 (converting float16/bfloat16/f64).
fn with_f32(value: &DynValue, name: &str, f: &mut RowSink<'_>) -> Result<(), String> {
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(format!("output `{name}` is {other:?}, not a tensor")),
    };
    let err = |e: ort::Error| e.message().to_string();
    match ty {
        TensorElementType::Float32 => {
            let (s, d) = value.try_extract_tensor::<f32>().map_err(err)?;
            f(s, d)
        }
        TensorElementType::Float16 => {
            let (s, d) = value.try_extract_tensor::<f16>().map_err(err)?;
            let v: Vec<f32> = d.iter().map(|x| x.to_f32()).collect();
            f(s, &v)
        }
        TensorElementType::Bfloat16 => {
            let (s, d) = value.try_extract_tensor::<bf16>().map_err(err)?;
            let v: Vec<f32> = d.iter().map(|x| x.to_f32()).collect();
            f(s, &v)
        }
        TensorElementType::Float64 => {
            let (s, d) = value.try_extract_tensor::<f64>().map_err(err)?;
            let v: Vec<f32> = d.iter().map(|&x| x as f32).collect();
            f(s, &v)
        }
        t => Err(format!(
            "output `{name}` has element type {t:?}; it must be float"
        )),
    }
}
