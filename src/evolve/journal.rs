//! The run journal: every scored candidate's predictions, saved atomically as it finishes, so
//! `evolve --resume` continues an interrupted run without scoring anything twice.
//!
//! Layout: `DIR/.smd-journal/run.json` (the run's key: a hash of the model, the data and every
//! setting that changes results) and one `<id>.bin` per candidate: a magic string, the
//! predictions of the selection and holdout rows, the scoring time, and a blake3 checksum.

use std::path::{Path, PathBuf};

use super::EvolveError;
use super::shard::JournalMode;
use crate::Error;
use crate::output;
use crate::score::{Predictions, ScoredAs};

const MAGIC: &[u8; 8] = b"SMDJRN02";

/// The holdout kind byte of a record whose holdout rows were not scored.
const NOT_SCORED: u8 = 255;

/// A scored candidate: its predictions on both parts of the split.
#[derive(Debug, Clone)]
pub struct Record {
    /// Predictions for the selection rows.
    pub selection: Predictions,
    /// Predictions for the holdout rows; `None` when they were not scored (a merged candidate
    /// that did not win on the selection rows).
    pub holdout: Option<Predictions>,
    /// Seconds spent building and scoring it.
    pub seconds: f64,
}

/// The journal folder of one run. It is created with the first record, so a run that fails
/// before scoring anything (e.g. a model ONNX Runtime refuses) leaves the output folder empty.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    run_key: String,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    EvolveError::Io {
        path: path.to_path_buf(),
        source: e,
    }
    .into()
}

impl Journal {
    /// Opens the journal in `out`. Resumed or shared, an existing journal must have been
    /// written for the same `run_key`; fresh, any old journal is cleared. Resumed, temporary
    /// files left by an interrupted write are removed; shared, nothing is (they may be a
    /// running shard's).
    pub fn open(out: &Path, run_key: &str, mode: JournalMode) -> Result<Journal, Error> {
        let dir = out.join(".smd-journal");
        let key_file = dir.join("run.json");
        let key = match mode {
            JournalMode::Fresh => None,
            _ => std::fs::read_to_string(&key_file).ok(),
        };
        if let Some(text) = key {
            let found: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if found.get("run_key").and_then(|v| v.as_str()) != Some(run_key) {
                return Err(EvolveError::Resume {
                    path: key_file,
                    message:
                        "the journal belongs to a different run (model, data or settings differ)"
                            .into(),
                }
                .into());
            }
            if !matches!(mode, JournalMode::Shared) {
                output::remove_temps(&dir, None)?;
            }
        } else if dir.exists() && !matches!(mode, JournalMode::Shared) {
            // A fresh run, or a resumed one killed before its key file was written (then the
            // folder holds nothing but temporary files).
            std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        Ok(Journal {
            dir,
            run_key: run_key.to_string(),
        })
    }

    /// Creates the folder and its key file unless they exist.
    fn create(&self) -> Result<(), Error> {
        let key_file = self.dir.join("run.json");
        if key_file.is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let text = serde_json::json!({ "run_key": self.run_key }).to_string();
        output::write_atomic(&key_file, |w| {
            w.write_all(text.as_bytes())
                .map_err(|e| io_err(&key_file, e))
        })
    }

    /// Removes the journal (best effort): for a run that fails before anything in it could
    /// be reused.
    pub fn discard(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The journal folder (scratch files go there too); created on first use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.bin"))
    }

    /// The record of candidate `id`, when a complete one exists. `selection`/`holdout` are
    /// the rows it was scored on, `output` the scored output's name.
    pub fn load(
        &self,
        id: &str,
        selection: &[usize],
        holdout: &[usize],
        output: &str,
    ) -> Option<Record> {
        let bytes = std::fs::read(self.path(id)).ok()?;
        decode(&bytes, selection, holdout, output)
    }

    /// The run's key.
    pub fn run_key(&self) -> &str {
        &self.run_key
    }

    /// Writes `name` (a small JSON file beside the records) atomically.
    pub fn write_note(&self, name: &str, value: &serde_json::Value) -> Result<(), Error> {
        self.create()?;
        let path = self.dir.join(name);
        let text = value.to_string();
        output::write_atomic(&path, |w| {
            w.write_all(text.as_bytes()).map_err(|e| io_err(&path, e))
        })
    }

    /// True when a record file of candidate `id` exists (complete, since records are written
    /// atomically; a damaged one is scored again when loaded).
    pub fn has(&self, id: &str) -> bool {
        self.path(id).is_file()
    }

    /// Saves candidate `id` atomically. Not synced to disk: a record lost to a power cut is
    /// scored again, and a damaged one fails its checksum.
    pub fn save(&self, id: &str, rec: &Record) -> Result<(), Error> {
        self.create()?;
        let path = self.path(id);
        let bytes = encode(rec);
        output::write_atomic_cache(&path, |w| w.write_all(&bytes).map_err(|e| io_err(&path, e)))
    }
}

fn kind_code(k: ScoredAs) -> u8 {
    match k {
        ScoredAs::Probabilities => 0,
        ScoredAs::Logits => 1,
        ScoredAs::Regression => 2,
    }
}

fn encode(rec: &Record) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.push(kind_code(rec.selection.kind));
    b.push(
        rec.holdout
            .as_ref()
            .map_or(NOT_SCORED, |h| kind_code(h.kind)),
    );
    let none = Vec::new();
    let (hold_probs, hold_values) = rec
        .holdout
        .as_ref()
        .map_or((&none, &none), |h| (&h.probs, &h.values));
    let (hold_nf, hold_first) = rec
        .holdout
        .as_ref()
        .map_or((0, None), |h| (h.non_finite_rows, h.first_non_finite));
    for v in [
        rec.selection.classes,
        rec.selection.probs.len(),
        rec.selection.values.len(),
        hold_probs.len(),
        hold_values.len(),
        rec.selection.non_finite_rows,
        rec.selection
            .first_non_finite
            .map_or(u64::MAX as usize, |r| r),
        hold_nf,
        hold_first.map_or(u64::MAX as usize, |r| r),
    ] {
        b.extend_from_slice(&(v as u64).to_le_bytes());
    }
    b.extend_from_slice(&rec.seconds.to_le_bytes());
    for part in [
        &rec.selection.probs,
        &rec.selection.values,
        hold_probs,
        hold_values,
    ] {
        for x in part {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

fn decode(bytes: &[u8], selection: &[usize], holdout: &[usize], output: &str) -> Option<Record> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != sum || !body.starts_with(MAGIC) {
        return None;
    }
    let mut at = MAGIC.len();
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let kind = |c: u8| match c {
        0 => Some(ScoredAs::Probabilities),
        1 => Some(ScoredAs::Logits),
        2 => Some(ScoredAs::Regression),
        _ => None,
    };
    let sel_kind = kind(*take(1)?.first()?)?;
    let hold_kind = match *take(1)?.first()? {
        NOT_SCORED => None,
        c => Some(kind(c)?),
    };
    let mut words = [0usize; 9];
    for w in &mut words {
        *w = usize::try_from(u64::from_le_bytes(take(8)?.try_into().ok()?)).unwrap_or(usize::MAX);
    }
    let seconds = f64::from_le_bytes(take(8)?.try_into().ok()?);
    let [classes, sp, sv, hp, hv, snf, sfirst, hnf, hfirst] = words;
    let mut floats = |n: usize| -> Option<Vec<f32>> {
        let raw = take(n.checked_mul(4)?)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    };
    let (sel_probs, sel_values, hold_probs, hold_values) =
        (floats(sp)?, floats(sv)?, floats(hp)?, floats(hv)?);
    let first = |r: usize| (r != u64::MAX as usize).then_some(r);
    let part = |rows: &[usize], kind, probs, values, nf, fst| Predictions {
        rows: rows.to_vec(),
        classes,
        probs,
        values,
        kind,
        non_finite_rows: nf,
        first_non_finite: first(fst),
        output: output.to_string(),
    };
    let rec = Record {
        selection: part(selection, sel_kind, sel_probs, sel_values, snf, sfirst),
        holdout: hold_kind.map(|k| part(holdout, k, hold_probs, hold_values, hnf, hfirst)),
        seconds,
    };
    // A record for other rows (a changed split) is not this run's.
    let fits = |p: &Predictions| {
        let per_row = if p.kind == ScoredAs::Regression {
            p.values.len()
        } else {
            p.probs.len() / classes.max(1)
        };
        per_row == p.rows.len()
    };
    (fits(&rec.selection) && rec.holdout.as_ref().is_none_or(fits)).then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preds(rows: &[usize], probs: Vec<f32>) -> Predictions {
        Predictions {
            rows: rows.to_vec(),
            classes: 2,
            probs,
            values: Vec::new(),
            kind: ScoredAs::Logits,
            non_finite_rows: 0,
            first_non_finite: None,
            output: "y".into(),
        }
    }

    #[test]
    fn records_round_trip_and_corruption_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "k1", JournalMode::Fresh).unwrap();
        let rec = Record {
            selection: preds(&[0, 2], vec![0.1, 0.9, 0.5, 0.5]),
            holdout: Some(preds(&[1], vec![1.0, 0.0])),
            seconds: 1.5,
        };
        j.save("g0-c1", &rec).unwrap();
        let back = j.load("g0-c1", &[0, 2], &[1], "y").unwrap();
        assert_eq!(back.selection, rec.selection);
        assert_eq!(back.holdout, rec.holdout);
        assert_eq!(back.seconds, 1.5);
        assert!(
            j.load("g0-c1", &[0, 1, 2], &[1], "y").is_none(),
            "other rows"
        );
        let p = dir.path().join(".smd-journal/g0-c1.bin");
        let mut b = std::fs::read(&p).unwrap();
        b[20] ^= 1;
        std::fs::write(&p, b).unwrap();
        assert!(j.load("g0-c1", &[0, 2], &[1], "y").is_none(), "corrupt");
        let selection_only = Record {
            holdout: None,
            ..rec.clone()
        };
        j.save("g0-merged", &selection_only).unwrap();
        let back = j.load("g0-merged", &[0, 2], &[1], "y").unwrap();
        assert_eq!(back.selection, rec.selection);
        assert!(back.holdout.is_none());
        // A journal without its key file (killed while writing it) holds nothing to resume.
        let keyless = dir.path().join("keyless");
        std::fs::create_dir_all(keyless.join(".smd-journal")).unwrap();
        std::fs::write(keyless.join(".smd-journal/.run.json.x1.tmp"), "{").unwrap();
        Journal::open(&keyless, "k1", JournalMode::Resume).unwrap();
        assert!(!keyless.join(".smd-journal").exists());
        // Resuming needs the same run key; a fresh open clears the journal.
        assert!(Journal::open(dir.path(), "other", JournalMode::Resume).is_err());
        assert!(Journal::open(dir.path(), "k1", JournalMode::Resume).is_ok());
        Journal::open(dir.path(), "k2", JournalMode::Fresh).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn a_shared_journal_removes_nothing_and_refuses_another_run() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join(".smd-journal");
        // Another shard is creating the journal: its folder, a record being written.
        std::fs::create_dir_all(&j).unwrap();
        std::fs::write(j.join(".g0-c1.bin.x1y2z3.tmp"), b"half").unwrap();
        let shared = Journal::open(dir.path(), "k1", JournalMode::Shared).unwrap();
        assert!(
            j.join(".g0-c1.bin.x1y2z3.tmp").exists(),
            "in-flight temp kept"
        );
        let rec = Record {
            selection: preds(&[0], vec![0.5, 0.5]),
            holdout: None,
            seconds: 0.0,
        };
        shared.save("g0-c0", &rec).unwrap();
        assert!(shared.has("g0-c0") && !shared.has("g0-c1"));
        Journal::open(dir.path(), "k1", JournalMode::Shared).unwrap();
        assert!(j.join(".g0-c1.bin.x1y2z3.tmp").exists());
        let e = Journal::open(dir.path(), "k2", JournalMode::Shared).unwrap_err();
        assert!(e.to_string().contains("different run"), "{e}");
        // The merge step (resumed) cleans the temp of a killed shard.
        Journal::open(dir.path(), "k1", JournalMode::Resume).unwrap();
        assert!(!j.join(".g0-c1.bin.x1y2z3.tmp").exists());
        assert!(j.join("g0-c0.bin").exists());
    }
}
