//! `smd_onnx._native`: the Python binding's Rust half. It runs the `smd-onnx` CLI in-process
//! (`run_cli`, `cli_outcome`) and `evolve` with a Python metric and progress callback. Each
//! call releases the GIL while it works; the metric and the callback take it back only for
//! the call itself. The Python package (`smd_onnx/__init__.py`) turns keyword arguments into
//! the CLI's options and the errors raised here into its exception classes.

use std::sync::{Arc, Mutex, PoisonError};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use smd_onnx::evolve::{Event, EvolveError, Flow, Observer};
use smd_onnx::score::{CustomLabels, CustomMetric, CustomOutputs};

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
/// text.
#[pyfunction]
#[pyo3(signature = (argv, metric=None, metric_name=String::new(), greater_is_better=true, progress=None))]
fn evolve(
    py: Python<'_>,
    argv: Vec<String>,
    metric: Option<Py<PyAny>>,
    metric_name: String,
    greater_is_better: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<String> {
    let mut cfg = smd_onnx::cli::evolve_config(&argv).map_err(|e| native_error(&e))?;
    cfg.command = Some(argv.join(" "));
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
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add("ORT_VERSION", smd_onnx::runtime::provision::ORT_VERSION)?;
    Ok(())
}
