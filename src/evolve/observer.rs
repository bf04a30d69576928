//! What an evolution run tells the code that drives it: phases for progress bars, every
//! scored candidate, every finished generation; the observer's answer can stop the run.

use super::report::GenerationReport;
use crate::score::Metrics;

/// One thing that happened during a run, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A phase with `total` candidates starts (e.g. a generation's children).
    Phase {
        /// What it is, e.g. `generation 1/3: children`.
        name: &'a str,
        /// Candidates it scores.
        total: u64,
    },
    /// A candidate was scored, or taken from the journal of an interrupted run.
    Candidate {
        /// Its journal id: `parent`, `g<G>-c<I>` (child I of generation G), `g<G>-merged`.
        id: &'a str,
        /// Its selection metrics (`None`: it failed).
        selection: Option<&'a Metrics>,
        /// Its holdout metrics (`None`: it failed, or it only mattered if it won and did not).
        holdout: Option<&'a Metrics>,
        /// Why it failed (e.g. NaN outputs).
        failed: Option<&'a str>,
        /// It came from the journal (`--resume`), not from a new pass.
        journaled: bool,
    },
    /// The current phase is over.
    PhaseDone,
    /// A generation is over: what was chosen.
    Generation(&'a GenerationReport),
}

/// What the run does after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop after the candidate just scored (it is in the journal: `resume` continues); the
    /// run returns [`super::EvolveError::Cancelled`].
    Stop,
}

/// Receives a run's events (progress bars, Python callbacks, live reports).
pub trait Observer {
    /// Called for every event, in order.
    fn event(&mut self, event: &Event<'_>) -> Flow;
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn event(&mut self, _: &Event<'_>) -> Flow {
        Flow::Continue
    }
}
