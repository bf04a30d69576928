//! Turning candidates into ONNX Runtime sessions, at the cost of one session build each.
//!
//! ONNX Runtime has no way to change weights in a live session, and `AddInitializer` overrides
//! are applied after graph optimization (a Conv fused with a BatchNormalization silently keeps
//! the file's weights). External initializers are injected before optimization, so the fast
//! path gives ONNX Runtime the model with its mutable tensors taken out as external data
//! ([`crate::onnx::external_template`]) and their values from buffers smd-onnx owns: a
//! candidate's sparse changes are applied to those buffers in place, the session is built and
//! used, and the changes are undone. No copy of the model, no protobuf parse of its weights.
//! Models whose mutable tensors cannot be external (Constant nodes, subgraphs, typed storage)
//! get a byte-faithful copy of the model per candidate instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::DynValue;

use super::EvolveError;
use crate::lineage::Lineage;
use crate::mutate::{self, Delta};
use crate::onnx::Model;
use crate::runtime::{Runtime, tensor_mut, tensor_value};
use crate::{Error, TensorData};

/// Candidates to score with [`Sessions::run_all`].
pub(super) struct Jobs<'a> {
    /// How many.
    pub n: usize,
    /// Candidate `j`'s changes to the parent and its weights key.
    pub deltas_of: &'a (dyn Fn(usize) -> Result<(Vec<Delta>, String), Error> + Sync),
    /// Runs a first batch through a new session (pipelined path only).
    pub warm: &'a (dyn Fn(&mut Session) -> Result<(), Error> + Sync),
}

/// How candidates become sessions.
pub(super) enum Sessions {
    /// The template model and the current parent's values of its external initializers, in
    /// lineage tensor order.
    Template {
        bytes: Vec<u8>,
        folder: Option<PathBuf>,
        values: Vec<(String, Arc<DynValue>)>,
        /// Build the next candidate's session while the current one runs.
        pipelined: bool,
    },
    /// A copy of the model per candidate.
    Copies {
        /// Scratch file for models with external data (resolved next to the model file).
        scratch: PathBuf,
        /// Appended to every candidate's bytes (see [`crate::score::Predictor::session_suffix`]).
        suffix: Vec<u8>,
    },
}

fn internal(message: String) -> Error {
    EvolveError::Invalid {
        arg: "internal",
        message,
    }
    .into()
}

impl Sessions {
    /// The fast path when every mutable tensor of `lineage` can be an external initializer
    /// (`pipelined`: see [`Sessions::run_all`]).
    /// `suffix` is appended to the model bytes of every session (extra outputs to score).
    pub(super) fn new(
        model: &Model,
        lineage: &Lineage,
        scratch: PathBuf,
        pipelined: bool,
        suffix: Vec<u8>,
    ) -> Result<Sessions, Error> {
        let Some(mut bytes) = crate::onnx::external_template(model, &lineage.tensors)? else {
            return Ok(Sessions::Copies { scratch, suffix });
        };
        bytes.extend_from_slice(&suffix);
        let mut values = Vec::with_capacity(lineage.tensors.len());
        for (&t, v) in lineage.tensors.iter().zip(&lineage.values) {
            let info = &model.tensors()[t];
            values.push((
                info.name.clone(),
                Arc::new(tensor_value(&info.name, v.clone(), &info.dims)?),
            ));
        }
        let folder = model
            .path()
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty());
        Ok(Sessions::Template {
            bytes,
            folder,
            values,
            pipelined,
        })
    }

    /// Calls `f` with a session for the current parent with `deltas` applied.
    pub(super) fn with_candidate<T>(
        &mut self,
        runtime: &Runtime,
        model: &Model,
        lineage: &Lineage,
        deltas: &[Delta],
        weights_key: &str,
        f: impl FnOnce(&mut Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match self {
            Sessions::Template {
                bytes,
                folder,
                values,
                ..
            } => {
                let saved = apply_in_place(values, deltas)?;
                let result = runtime
                    .session_from_template(bytes, values, folder.as_deref(), Some(weights_key))
                    .map_err(|e| Error::from(e.for_model(model.path())))
                    .and_then(|mut s| f(&mut s));
                // Undo the candidate's changes: the session (and its references) is gone.
                restore(values, deltas, &saved)?;
                result
            }
            Sessions::Copies { scratch, suffix } => {
                let changes = lineage.changes(deltas)?;
                let key = Some(weights_key);
                let mut session = if changes.is_empty() {
                    runtime.session_with_suffix(model.path(), suffix, key)?
                } else if model.has_external_data() {
                    // External data is resolved next to the model file: write the candidate to
                    // the scratch file (replaced atomically for each candidate).
                    crate::onnx::write_child(model, &changes, scratch)?;
                    runtime.session_with_suffix(scratch, suffix, key)?
                } else {
                    let mut bytes = crate::onnx::child_bytes(model, &changes)?;
                    bytes.extend_from_slice(suffix);
                    runtime
                        .session_from_memory_keyed(&bytes, key)
                        .map_err(|e| e.for_model(model.path()))?
                };
                f(&mut session)
            }
        }
    }

    /// Scores `jobs.n` candidates: `jobs.deltas_of(j)` gives candidate `j`'s changes and
    /// `f(j, session)` uses its session, in order. When pipelined (the template path only),
    /// another thread builds and warms up the next candidate's session (`jobs.warm`) while `f`
    /// runs the current one, on a second set of values, and drops used sessions: on a GPU,
    /// building, first-running and releasing a session cost a fifth of a pass over thousands
    /// of images, while the CPU is idle.
    pub(super) fn run_all(
        &mut self,
        runtime: &Runtime,
        model: &Model,
        lineage: &Lineage,
        jobs: &Jobs<'_>,
        f: &mut dyn FnMut(usize, &mut Session) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let n = jobs.n;
        match self {
            Sessions::Template {
                bytes,
                folder,
                pipelined: true,
                ..
            } if n > 1 => {
                let template = Template {
                    runtime,
                    model,
                    bytes,
                    folder: folder.as_deref(),
                };
                run_pipelined(&template, value_sets(model, lineage), jobs, f)
            }
            _ => {
                for j in 0..n {
                    let (deltas, key) = (jobs.deltas_of)(j)?;
                    self.with_candidate(runtime, model, lineage, &deltas, &key, |s| f(j, s))?;
                }
                Ok(())
            }
        }
    }

    /// Makes `deltas` part of the parent: the next generation starts from that candidate.
    pub(super) fn descend(&mut self, deltas: &[Delta]) -> Result<(), Error> {
        if let Sessions::Template { values, .. } = self {
            apply_in_place(values, deltas)?;
        }
        Ok(())
    }
}

/// What pipelined sessions are built from.
struct Template<'a> {
    runtime: &'a Runtime,
    model: &'a Model,
    bytes: &'a [u8],
    folder: Option<&'a Path>,
}

/// A copy of the parent's mutable tensors (name, values, dims) for a second set of values.
type ValueSet = Vec<(String, TensorData, Vec<i64>)>;

/// Two value sets, each used by at most one live session.
fn value_sets(model: &Model, lineage: &Lineage) -> Vec<ValueSet> {
    (0..2)
        .map(|_| {
            lineage
                .tensors
                .iter()
                .zip(&lineage.values)
                .map(|(&t, v)| {
                    let info = &model.tensors()[t];
                    (info.name.clone(), v.clone(), info.dims.clone())
                })
                .collect()
        })
        .collect()
}

/// [`Sessions::run_all`] with a second thread building (and warming up) candidate j+1's
/// session on one value set while `f` runs candidate j's on the other.
fn run_pipelined(
    template: &Template<'_>,
    sets: Vec<ValueSet>,
    jobs: &Jobs<'_>,
    f: &mut dyn FnMut(usize, &mut Session) -> Result<(), Error>,
) -> Result<(), Error> {
    std::thread::scope(|scope| -> Result<(), Error> {
        let (ready_tx, ready_rx) =
            std::sync::mpsc::sync_channel::<Result<(usize, Session), Error>>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Session>();
        scope.spawn(move || {
            if let Err(e) = produce(template, sets, jobs, &ready_tx, &done_rx) {
                let _ = ready_tx.send(Err(e));
            }
        });
        for _ in 0..jobs.n {
            let (j, mut session) = ready_rx
                .recv()
                .map_err(|_| internal("the session builder stopped".into()))??;
            let result = f(j, &mut session);
            let _ = done_tx.send(session);
            result?;
        }
        drop(done_tx);
        Ok(())
    })
}

/// The session-building thread of [`run_pipelined`]: builds the sessions in order, each on
/// the value set its predecessor but one has released (its changes undone).
fn produce(
    template: &Template<'_>,
    sets: Vec<ValueSet>,
    jobs: &Jobs<'_>,
    ready_tx: &std::sync::mpsc::SyncSender<Result<(usize, Session), Error>>,
    done_rx: &std::sync::mpsc::Receiver<Session>,
) -> Result<(), Error> {
    let mut sets: Vec<Vec<(String, Arc<DynValue>)>> = sets
        .into_iter()
        .map(|set| {
            set.into_iter()
                .map(|(name, v, dims)| Ok((name.clone(), Arc::new(tensor_value(&name, v, &dims)?))))
                .collect::<Result<_, Error>>()
        })
        .collect::<Result<_, _>>()?;
    let mut applied: Vec<Option<(Vec<Delta>, Vec<TensorData>)>> = vec![None, None];
    for j in 0..jobs.n {
        let set = j % 2;
        if j >= 2 {
            // Candidate j-2's session comes back used: release it here, then undo its changes.
            let Ok(used) = done_rx.recv() else {
                return Ok(());
            };
            drop(used);
            if let Some((deltas, saved)) = applied[set].take() {
                restore(&mut sets[set], &deltas, &saved)?;
            }
        }
        let (deltas, key) = (jobs.deltas_of)(j)?;
        let saved = apply_in_place(&mut sets[set], &deltas)?;
        applied[set] = Some((deltas, saved));
        let mut session = template
            .runtime
            .session_from_template(template.bytes, &sets[set], template.folder, Some(&key))
            .map_err(|e| e.for_model(template.model.path()))?;
        (jobs.warm)(&mut session)?;
        if ready_tx.send(Ok((j, session))).is_err() {
            return Ok(());
        }
    }
    // Release the last sessions on this thread too.
    while done_rx.recv().is_ok() {}
    Ok(())
}

/// Mutable access to value `i` (no session may hold it).
fn value_mut(
    values: &mut [(String, Arc<DynValue>)],
    i: usize,
) -> Result<crate::TensorMut<'_>, Error> {
    let (name, v) = values
        .get_mut(i)
        .ok_or_else(|| internal(format!("no mutable tensor {i}")))?;
    let name = name.clone();
    let v = Arc::get_mut(v)
        .ok_or_else(|| internal(format!("tensor `{name}` is still in use by a session")))?;
    tensor_mut(v).ok_or_else(|| internal(format!("tensor `{name}` is not a float tensor")))
}

/// Applies `deltas` to the values in place; returns the values they replaced.
fn apply_in_place(
    values: &mut [(String, Arc<DynValue>)],
    deltas: &[Delta],
) -> Result<Vec<TensorData>, Error> {
    let mut saved = Vec::with_capacity(deltas.len());
    for d in deltas {
        let v = value_mut(values, d.tensor)?;
        saved.push(v.gather(&d.indices));
        mutate::apply_to(v, d)?;
    }
    Ok(saved)
}

/// Puts back the values [`apply_in_place`] replaced.
fn restore(
    values: &mut [(String, Arc<DynValue>)],
    deltas: &[Delta],
    saved: &[TensorData],
) -> Result<(), Error> {
    // In reverse, in case two deltas touch the same elements.
    for (d, old) in deltas.iter().zip(saved).rev() {
        if !value_mut(values, d.tensor)?.scatter(&d.indices, old) {
            return Err(internal("restoring a tensor of another dtype".into()));
        }
    }
    Ok(())
}
