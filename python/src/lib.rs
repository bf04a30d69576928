//! `smd_onnx._native`: the Python binding's Rust half. It runs the `smd-onnx` CLI in-process
//! (`run_cli`, `cli_outcome`, `score_arrays`) and `evolve` with a Python metric and progress
//! callback. Each call releases the GIL while it works; the metric and the callback take it
//! back only for the call itself. The Python package (`smd_onnx/__init__.py`) turns keyword
//! arguments into the CLI's options and the errors raised here into its exception classes.
//! numpy arrays reach the engine as [`RawArray`]s whose bytes are the arrays' own memory
//! ([`numpy_bytes`]).

use std::sync::{Arc, Mutex, PoisonError};

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use smd_onnx::buffer::Bytes;
use smd_onnx::evolve::{Event, EvolveError, Flow, Observer};
use smd_onnx::score::{CustomLabels, CustomMetric, CustomOutputs, DType, DataSource, RawArray};

create_exception!(
    _native,
    NativeError,
    PyException,
    "An smd-onnx error: args are (kind, one-line message); kind is `not_found`, `cancelled` or `invalid`."
);

/// The first Python exception a metric raised (it may run on several threads).
type Slot = Arc<Mutex<Option<PyErr>>>;

/// Runs `argv` (the program's name first) as the `smd-onnx` binary does; returns its exit code.
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    let code = py.detach(|| smd_onnx::cli::main_with(argv));
    flush_stdout();
    code
}

/// Runs `argv` as the CLI does without printing an error: 0 or 1, or raises `NativeError`.
#[pyfunction]
fn cli_outcome(py: Python<'_>, argv: Vec<String>) -> PyResult<u8> {
    let out = py.detach(|| smd_onnx::cli::outcome(argv));
    flush_stdout();
    out.map_err(|e| native_error(&e))
}

/// Runs `smd-onnx evolve` with the options of `argv`, `metric(outputs, labels) -> float`
/// (`None`: the built-in metric of `argv`) and `progress(event_json)`; returns report.json's
/// text. `arrays` (name, ndarray) pairs are the data instead of `--data` (which `argv` then
/// lacks), used where numpy keeps them; `copy_budget` overrides the bytes the run may copy.
#[pyfunction]
#[pyo3(signature = (argv, metric=None, metric_name=String::new(), greater_is_better=true, progress=None, arrays=None, copy_budget=None))]
#[allow(clippy::too_many_arguments)] // Python keyword arguments.
fn evolve(
    py: Python<'_>,
    mut argv: Vec<String>,
    metric: Option<Py<PyAny>>,
    metric_name: String,
    greater_is_better: bool,
    progress: Option<Py<PyAny>>,
    arrays: Option<Vec<(String, Bound<'_, PyUntypedArray>)>>,
    copy_budget: Option<usize>,
) -> PyResult<String> {
    let data = arrays.map(|a| numpy_source(&a)).transpose()?;
    if let Some(d) = &data {
        // The CLI's parser wants `--data`; the report and errors show the arrays' name.
        argv.extend(["--data".to_string(), d.to_string()]);
    }
    let mut cfg = smd_onnx::cli::evolve_config(&argv).map_err(|e| native_error(&e))?;
    cfg.command = Some(argv.join(" "));
    if let Some(d) = data {
        cfg.data = d;
    }
    if copy_budget.is_some() {
        cfg.copy_budget = copy_budget;
    }
    let slot: Slot = Arc::default();
    if let Some(f) = metric {
        cfg.custom_metric = Some(python_metric(
            f,
            metric_name,
            greater_is_better,
            slot.clone(),
        ));
    }
    let mut observer = PyObserver {
        progress,
        error: None,
    };
    let result = py.detach(|| smd_onnx::evolve::evolve(cfg, &mut observer));
    match result {
        Ok(report) => serde_json::to_string(&report)
            .map_err(|e| NativeError::new_err(("invalid", e.to_string()))),
        Err(e) => {
            // Ctrl-C or the callback's own exception, as raised.
            if let Some(err) = observer.error {
                return Err(err);
            }
            let err = native_error(&anyhow::Error::from(e));
            if let Some(cause) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                err.set_cause(py, Some(cause));
            }
            Err(err)
        }
    }
}

/// Runs `smd-onnx score` with the options of `argv` (no `--data`) on `arrays`, (name,
/// ndarray) pairs used where numpy keeps them; 0 or 1 as `cli_outcome`, or raises
/// `NativeError`.
#[pyfunction]
fn score_arrays(
    py: Python<'_>,
    mut argv: Vec<String>,
    arrays: Vec<(String, Bound<'_, PyUntypedArray>)>,
) -> PyResult<u8> {
    let data = numpy_source(&arrays)?;
    argv.extend(["--data".to_string(), data.to_string()]);
    let out = py.detach(|| smd_onnx::cli::score_with(argv, data));
    flush_stdout();
    out.map_err(|e| native_error(&e))
}

/// The data source of `(name, array)` pairs, named `<numpy arrays: a, b>`.
fn numpy_source(arrays: &[(String, Bound<'_, PyUntypedArray>)]) -> PyResult<DataSource> {
    let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    let name = format!("<numpy arrays: {}>", names.join(", "));
    let raw = arrays
        .iter()
        .map(|(n, a)| numpy_array(n, a))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(DataSource::Arrays { name, arrays: raw })
}

/// A C-contiguous, aligned, little-endian array of a dtype `.npy` data may have, as a
/// [`RawArray`] over the array's own memory (anything else: `NativeError`; the Python side
/// converts such arrays once before calling).
fn numpy_array(name: &str, a: &Bound<'_, PyUntypedArray>) -> PyResult<RawArray> {
    let err = |m: String| NativeError::new_err(("invalid", format!("inputs: array `{name}` {m}")));
    if !a.is_c_contiguous() || !a.is_aligned() {
        return Err(err("is not C-contiguous and aligned".into()));
    }
    let descr = a.dtype();
    if descr.is_native_byteorder() == Some(false) || cfg!(target_endian = "big") {
        return Err(err("is not little-endian".into()));
    }
    let text: String = descr.getattr("str")?.extract()?;
    let dtype = DType::from_descr(&text).map_err(|m| err(format!("has an {m}")))?;
    if descr.itemsize() != dtype.size() {
        return Err(err(format!("has items of {} bytes", descr.itemsize())));
    }
    let shape = a.shape().to_vec();
    let len = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| err("is too large".into()))?;
    Ok(RawArray {
        name: name.to_string(),
        dtype,
        shape,
        data: numpy_bytes(a, len),
    })
}

/// The first `len` bytes of a C-contiguous array's memory, where numpy keeps them: the
/// [`Bytes`] holds a reference to the array, so the memory lives as long as any clone of it.
fn numpy_bytes(a: &Bound<'_, PyUntypedArray>, len: usize) -> Bytes {
    // SAFETY: `as_array_ptr` is the live array object (we hold it, with the GIL); its `data`
    // field is the start of its elements.
    let fields = unsafe { numpy::npyffi::objects::_PyArray_GET_ITEM_DATA(a.as_array_ptr()) };
    let ptr = unsafe { (*fields).data }.cast::<u8>().cast_const();
    Bytes::from_owner(NumpyBytes {
        _array: a.clone().unbind(),
        ptr,
        len,
    })
}

/// Owner of a numpy array's bytes: a strong reference keeps the array (and the buffer it
/// views) alive, and numpy never moves an array's data (`resize` refuses while another
/// reference exists). Dropped without the GIL, pyo3 defers the decref until it next holds it.
struct NumpyBytes {
    _array: Py<PyUntypedArray>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is only read, and the memory it points at is kept alive by `_array`
// (itself `Send`); the engine reads it from its threads while the GIL is released, which is
// why the Python side makes the arrays read-only for the run.
unsafe impl Send for NumpyBytes {}

impl AsRef<[u8]> for NumpyBytes {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: `len` bytes of a C-contiguous array from its data pointer (see above).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// `NativeError(kind, message)` with the CLI's one-line message.
fn native_error(e: &anyhow::Error) -> PyErr {
    let not_found = e
        .chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|c| c.kind() == std::io::ErrorKind::NotFound);
    let cancelled = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<smd_onnx::Error>(),
            Some(smd_onnx::Error::Evolve(EvolveError::Cancelled))
        ) || matches!(
            c.downcast_ref::<EvolveError>(),
            Some(EvolveError::Cancelled)
        )
    });
    let kind = match (not_found, cancelled) {
        (true, _) => "not_found",
        (_, true) => "cancelled",
        _ => "invalid",
    };
    NativeError::new_err((kind, smd_onnx::cli::one_line(e)))
}

/// A [`CustomMetric`] calling `f(outputs, labels)`: outputs `rows × classes` probabilities
/// (classification) or one value per row (regression), labels the class ids or targets.
fn python_metric(f: Py<PyAny>, name: String, higher: bool, slot: Slot) -> CustomMetric {
    let call = move |o: CustomOutputs<'_>, l: CustomLabels<'_>| -> Result<f64, String> {
        Python::attach(|py| {
            let result = (|| -> PyResult<f64> {
                let values = PyArray1::from_slice(py, o.values);
                let (outputs, labels) = match l {
                    CustomLabels::Classes(c) => (
                        values.reshape([o.rows, o.cols])?.into_any(),
                        PyArray1::from_slice(py, c).into_any(),
                    ),
                    CustomLabels::Targets(t) => {
                        (values.into_any(), PyArray1::from_slice(py, t).into_any())
                    }
                };
                f.bind(py).call1((outputs, labels))?.extract::<f64>()
            })();
            result.map_err(|e| {
                let text = e.to_string();
                slot.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
                text
            })
        })
    };
    CustomMetric::new(name, higher, Arc::new(call))
}

/// Passes events to the Python callback (as JSON) and stops the run on Ctrl-C or when the
/// callback raises; the exception is kept to be raised once the run has stopped.
struct PyObserver {
    progress: Option<Py<PyAny>>,
    error: Option<PyErr>,
}

impl Observer for PyObserver {
    fn event(&mut self, event: &Event<'_>) -> Flow {
        Python::attach(|py| {
            if let Err(e) = py.check_signals() {
                self.error = Some(e);
                return Flow::Stop;
            }
            let Some(cb) = &self.progress else {
                return Flow::Continue;
            };
            let Some(json) = event_json(event) else {
                return Flow::Continue;
            };
            match cb.call1(py, (json,)) {
                Ok(_) => Flow::Continue,
                Err(e) => {
                    self.error = Some(e);
                    Flow::Stop
                }
            }
        })
    }
}

/// An event as a JSON object with an `event` field (`None`: an event this binding predates).
fn event_json(event: &Event<'_>) -> Option<String> {
    use serde_json::json;
    let v = match event {
        Event::Phase { name, total } => json!({"event": "phase", "name": name, "total": total}),
        Event::Candidate {
            id,
            selection,
            holdout,
            failed,
            journaled,
        } => json!({
            "event": "candidate",
            "id": id,
            "selection": selection,
            "holdout": holdout,
            "failed": failed,
            "journaled": journaled,
        }),
        Event::PhaseDone => json!({"event": "phase_done"}),
        Event::Generation(g) => json!({"event": "generation", "report": g}),
        _ => return None,
    };
    Some(v.to_string())
}

/// Rust's stdout is line-buffered: flush it before Python writes to the same descriptor.
fn flush_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(cli_outcome, m)?)?;
    m.add_function(wrap_pyfunction!(evolve, m)?)?;
    m.add_function(wrap_pyfunction!(score_arrays, m)?)?;
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add("ORT_VERSION", smd_onnx::runtime::provision::ORT_VERSION)?;
    Ok(())
}
