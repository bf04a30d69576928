//! Scoring candidates: each is built into a session ([`super::sessions`]), run over the
//! selection rows and (unless it only matters when it wins) the holdout rows, saved to the
//! journal, and reported to the observer.

use std::time::Instant;

use super::journal::{Journal, Record};
use super::observer::{Event, Flow, Observer};
use super::race::{Race, Tally};
use super::report::{Scores, Timings};
use super::{EvolveError, invalid, select, sessions};
use crate::Error;
use crate::lineage::Lineage;
use crate::mutate::{Delta, Member, Plan};
use crate::onnx::Model;
use crate::runtime::Runtime;
use crate::score::{
    CustomMetric, DataError, Dataset, Labels, Metrics, Predictions, Predictor, Split,
};

/// A scored candidate.
#[derive(Clone)]
pub(super) struct Scored {
    pub record: Record,
    /// Its metrics on the selection rows (`None`: it failed there).
    pub selection: Option<Metrics>,
    /// Its metrics on both parts (`None`: it failed, or its holdout rows were not scored).
    pub scores: Option<Scores>,
    pub failure: Option<String>,
    /// Holdout rows whose outputs were NaN/Inf (counted as wrong answers; a candidate fails
    /// only on the selection rows, where it is chosen).
    pub holdout_non_finite: usize,
    /// Dropped by racing after part of the selection rows (`record.selection` holds those);
    /// not journaled, not in any ensemble.
    pub dropped: bool,
}

impl Scored {
    /// A journal record with its metrics. Holdout rows with NaN/Inf outputs count as wrong
    /// answers (in the record too, so that ensembles and significance see the same rows):
    /// what fails on holdout only must not change what was chosen on the selection rows.
    /// A caller's metric that fails is an error of the run naming candidate `id`, not a
    /// failed candidate.
    fn from_record(
        mut record: Record,
        labels: &Labels,
        custom: Option<&CustomMetric>,
        id: &str,
    ) -> Result<Scored, Error> {
        let holdout_non_finite = match (&mut record.holdout, record.selection.failed()) {
            (Some(h), false) => h.count_failed_rows_as_wrong(labels),
            _ => 0,
        };
        let holdout = record
            .holdout
            .as_ref()
            .map(|h| h.metrics_with(labels, custom));
        let selection = record.selection.metrics_with(labels, custom);
        for r in std::iter::once(&selection).chain(&holdout) {
            if let Err(e @ DataError::Metric { .. }) = r {
                return Err(invalid("metric", format!("candidate {id}: {e}")));
            }
        }
        let (selection, scores, failure) = match (selection, holdout) {
            (Ok(selection), Some(Ok(holdout))) => {
                (Some(selection), Some(Scores { selection, holdout }), None)
            }
            (Ok(selection), None) => (Some(selection), None, None),
            (Ok(selection), Some(Err(e))) => (Some(selection), None, Some(e.to_string())),
            (Err(e), _) => (None, None, Some(e.to_string())),
        };
        Ok(Scored {
            record,
            selection,
            scores,
            failure,
            holdout_non_finite,
            dropped: false,
        })
    }

    /// A child racing dropped: `record` holds the selection rows it was scored on.
    fn dropped(record: Record) -> Scored {
        Scored {
            record,
            selection: None,
            scores: None,
            failure: None,
            holdout_non_finite: 0,
            dropped: true,
        }
    }

    /// Tells `observer` about this candidate; `Err` when it asks to stop.
    fn announce(
        &self,
        id: &str,
        journaled: bool,
        observer: &mut dyn Observer,
    ) -> Result<(), Error> {
        let event = Event::Candidate {
            id,
            selection: self.selection.as_ref(),
            holdout: self.scores.as_ref().map(|s| &s.holdout),
            failed: self.failure.as_deref(),
            journaled,
        };
        match observer.event(&event) {
            Flow::Continue => Ok(()),
            Flow::Stop => Err(EvolveError::Cancelled.into()),
        }
    }
}

/// Shared state of a run.
pub(super) struct Run {
    pub model: Model,
    pub runtime: Runtime,
    /// The labels of every sample.
    pub labels: Labels,
    /// What candidates are scored on: the selection rows, then the holdout rows.
    pub parts: [Part; 2],
    pub predictor: Predictor,
    pub split: Split,
    pub journal: Journal,
    pub sessions: sessions::Sessions,
    pub timings: Timings,
    /// What selection optimises (see [`super::EvolveConfig::metric`]).
    pub metric: Option<crate::score::Metric>,
    /// The caller's metric (see [`super::EvolveConfig::custom_metric`]).
    pub custom: Option<CustomMetric>,
    /// This process's part in the run (which records it saves).
    pub role: super::shard::Role,
}

/// A candidate to score: its journal id, which member of the generation's plan it is (`None`:
/// the parent itself), its weights key (TensorRT's engine cache), and, for a candidate that
/// matters only if it wins, the selection metrics it must beat for its holdout rows to be
/// scored (a pass over rows that would never be reported is saved).
pub(super) struct Job {
    pub id: String,
    pub member: Option<Member>,
    pub key: String,
    pub holdout_if_beats: Option<Metrics>,
}

impl Run {
    /// Builds and scores candidates, in order, taking those already in the journal from it;
    /// with `race`, each races the race's parent and may be dropped (see [`super::race`]).
    pub fn score_all(
        &mut self,
        lineage: &Lineage,
        plan: Option<&Plan>,
        jobs: &[Job],
        race: Option<&Race>,
        observer: &mut dyn Observer,
    ) -> Result<Vec<Scored>, Error> {
        let mut scored = self.journaled(jobs, observer)?;
        let pending: Vec<usize> = (0..jobs.len()).filter(|&j| scored[j].is_none()).collect();
        let deltas_of = |p: usize| -> Result<(Vec<Delta>, String), Error> {
            let job = &jobs[pending[p]];
            let deltas = match (&job.member, plan) {
                (Some(m), Some(plan)) => plan.deltas(m)?,
                _ => Vec::new(),
            };
            Ok((deltas, job.key.clone()))
        };
        let Run {
            model,
            runtime,
            parts,
            predictor,
            sessions,
            journal,
            labels,
            metric,
            custom,
            role,
            ..
        } = self;
        let custom = custom.as_ref();
        let mut t = Instant::now();
        let mut seconds = vec![0.0; jobs.len()];
        let warm_up = predictor.warm_up(&parts[0].data, &parts[0].rows);
        let warm = |s: &mut ort::session::Session| -> Result<(), Error> { Ok(warm_up(s)?) };
        let batch = sessions::Jobs {
            n: pending.len(),
            deltas_of: &deltas_of,
            warm: &warm,
        };
        sessions.run_all(runtime, model, lineage, &batch, &mut |p, session| {
            let j = pending[p];
            let (selection, dropped) = match race {
                Some(race) => parts[0].race(predictor, session, race, labels)?,
                None => (parts[0].predict(predictor, session)?, false),
            };
            if dropped {
                let record = Record {
                    selection,
                    holdout: None,
                    seconds: t.elapsed().as_secs_f64(),
                };
                t = Instant::now();
                seconds[j] = record.seconds;
                let s = Scored::dropped(record);
                s.announce(&jobs[j].id, false, observer)?;
                scored[j] = Some(s);
                return Ok(());
            }
            let wins = |bar: &Metrics| {
                selection
                    .metrics_with(labels, custom)
                    .is_ok_and(|m| select::better_by(*metric, &m, bar))
            };
            let holdout = match &jobs[j].holdout_if_beats {
                Some(bar) if !wins(bar) => None,
                _ => Some(parts[1].predict(predictor, session)?),
            };
            // With pipelining, building the next session overlaps this one: the time since
            // the previous candidate finished is what this one cost.
            let record = Record {
                selection,
                holdout,
                seconds: t.elapsed().as_secs_f64(),
            };
            t = Instant::now();
            if super::shard::saves(*role, jobs[j].member.as_ref()) {
                journal.save(&jobs[j].id, &record)?;
            }
            seconds[j] = record.seconds;
            let s = Scored::from_record(record, labels, custom, &jobs[j].id)?;
            s.announce(&jobs[j].id, false, observer)?;
            scored[j] = Some(s);
            Ok(())
        })?;
        self.timings.per_candidate.extend(seconds);
        scored
            .into_iter()
            .map(|s| s.ok_or_else(|| invalid("internal", "a candidate was not scored")))
            .collect()
    }

    /// The candidates of `jobs` the journal already holds (a resumed run), announced.
    fn journaled(
        &self,
        jobs: &[Job],
        observer: &mut dyn Observer,
    ) -> Result<Vec<Option<Scored>>, Error> {
        let output = self.predictor.output();
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let record =
                self.journal
                    .load(&j.id, &self.split.selection, &self.split.holdout, output);
            let scored = record
                .map(|r| Scored::from_record(r, &self.labels, self.custom.as_ref(), &j.id))
                .transpose()?;
            if let Some(s) = &scored {
                s.announce(&j.id, true, observer)?;
            }
            out.push(scored);
        }
        Ok(out)
    }

    /// Scores one candidate (see [`Run::score_all`]).
    pub fn score(
        &mut self,
        lineage: &Lineage,
        plan: Option<&Plan>,
        job: Job,
        observer: &mut dyn Observer,
    ) -> Result<Scored, Error> {
        let mut out = self.score_all(lineage, plan, std::slice::from_ref(&job), None, observer)?;
        out.pop()
            .ok_or_else(|| invalid("internal", "a candidate was not scored"))
    }
}

/// Rows candidates are scored on.
pub(super) struct Part {
    /// The data: the rows copied contiguously when memory allows (no copy per pass), else
    /// the whole data set.
    pub data: Dataset,
    /// The rows to predict, in `data`.
    pub rows: Vec<usize>,
    /// The same rows in the data set (what predictions report).
    original: Vec<usize>,
}

impl Part {
    /// Rows `rows` of `data`, reported as the data set rows `original`.
    pub(super) fn new(data: Dataset, rows: Vec<usize>, original: Vec<usize>) -> Part {
        Part {
            data,
            rows,
            original,
        }
    }

    /// The data set rows these rows are.
    pub(super) fn original(&self) -> &[usize] {
        &self.original
    }

    /// The selection and holdout parts of `data`, copied into memory when they take at most
    /// `budget` bytes.
    pub fn both(data: Dataset, split: &Split, budget: usize) -> Result<[Part; 2], Error> {
        let total = split.selection.len() + split.holdout.len();
        if data.bytes_for(total) <= budget {
            let part = |rows: &[usize]| -> Result<Part, Error> {
                Ok(Part {
                    data: data.subset(rows)?,
                    rows: (0..rows.len()).collect(),
                    original: rows.to_vec(),
                })
            };
            return Ok([part(&split.selection)?, part(&split.holdout)?]);
        }
        let part = |rows: &[usize]| Part {
            data: data.clone(),
            rows: rows.to_vec(),
            original: rows.to_vec(),
        };
        Ok([part(&split.selection), part(&split.holdout)])
    }

    /// A model's predictions for these rows racing `race` (see [`super::race`]): all of them
    /// and `false`, or those it was scored on before it was dropped and `true`.
    fn race(
        &self,
        predictor: &mut Predictor,
        session: &mut ort::session::Session,
        race: &Race,
        labels: &Labels,
    ) -> Result<(Predictions, bool), Error> {
        let mut tally = Tally::default();
        let mut blocks = Vec::with_capacity(race.blocks().len());
        let mut dropped = false;
        for block in race.blocks() {
            let rows = self.rows.get(block.clone()).unwrap_or_default();
            let mut p = predictor.predict(session, &self.data, rows)?;
            p.rows = self
                .original
                .get(block.clone())
                .unwrap_or_default()
                .to_vec();
            let correct = p
                .correct(labels)
                .ok_or_else(|| invalid("--race", super::race::NEEDS_CLASSES))?;
            race.add(&mut tally, block.clone(), &correct);
            blocks.push((block.start, p));
            if race.drops(&tally) {
                dropped = true;
                break;
            }
        }
        // Joined in row order, a survivor's blocks are exactly one prediction of every row.
        blocks.sort_by_key(|&(start, _)| start);
        let joined = Predictions::concat(blocks.into_iter().map(|(_, p)| p).collect())?;
        Ok((joined, dropped))
    }

    /// A model's predictions for these rows (reported with their data set row numbers).
    pub(super) fn predict(
        &self,
        predictor: &mut Predictor,
        session: &mut ort::session::Session,
    ) -> Result<Predictions, Error> {
        let mut p = predictor.predict(session, &self.data, &self.rows)?;
        p.rows.clone_from(&self.original);
        Ok(p)
    }
}
