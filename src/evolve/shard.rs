//! Scaling a run out: shards and the merge step.
//!
//! Every child is a pure function of (parent, seed, generation, index, settings), so a run can
//! be split by child index without shipping weights: shard `I/N` scores the children `i` with
//! `i mod N = I` of the first generation whose children are not all in the shared journal,
//! saves them (one record file per child: shards never write the same file, and records are
//! written atomically), and stops. Everything before that generation is replayed from the
//! journal exactly as `--resume` would. The merge step replays the whole run from the journal,
//! scores what only it scores (the parent, merged and stretched candidates), and stops at the
//! first generation with missing children ([`EvolveError::Incomplete`]); once none is missing
//! it selects, builds ensembles, exports and reports exactly as a single-process run.
//!
//! Shards and the merge step meet only in the journal, whose key file refuses a shard of any
//! other run (model, data or settings).

use std::fmt;
use std::path::Path;

use super::journal::Journal;
use super::scoring::Job;
use super::{EvolveConfig, EvolveError, Observer, invalid};
use crate::Error;
use crate::mutate::Member;

/// One share of a run's children: those whose index `i` has `i mod count = index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This shard's index, below `count`.
    pub index: u32,
    /// How many shards split each generation.
    pub count: u32,
}

/// Why a shard specification is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--shard {spec:?}: {message}")]
pub struct ShardSpecError {
    /// What was given.
    pub spec: String,
    /// What is wrong.
    pub message: String,
}

impl Shard {
    /// Shard `index` of `count`; refused unless `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardSpecError> {
        if index >= count {
            return Err(ShardSpecError {
                spec: format!("{index}/{count}"),
                message: format!(
                    "the index must be below the count (0 to {})",
                    count.max(1) - 1
                ),
            });
        }
        Ok(Shard { index, count })
    }

    /// True when child `child` of a generation is this shard's.
    pub fn owns(self, child: u32) -> bool {
        child % self.count == self.index
    }

    /// True when this shard saves `member`'s record: its own children; the candidates every
    /// shard may score (the parent, a merged candidate) only shard 0, so that no two shards
    /// of one run write the same file.
    fn saves(self, member: Option<&Member>) -> bool {
        match member {
            Some(Member::Child(i)) => self.owns(*i),
            _ => self.index == 0,
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = ShardSpecError;

    /// `I/N`, decimal, `0 ≤ I < N`.
    fn from_str(s: &str) -> Result<Shard, ShardSpecError> {
        let bad = |message: &str| ShardSpecError {
            spec: s.to_string(),
            message: message.to_string(),
        };
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N (shard I of N, counted from 0)"))?;
        let number = |t: &str| {
            // Only plain digits: `+1` or ` 1` is more likely a mistake than a shard.
            t.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| t.parse::<u32>().ok())
                .flatten()
        };
        let (Some(i), Some(n)) = (number(i), number(n)) else {
            return Err(bad("expected I/N with whole numbers I and N"));
        };
        if n == 0 {
            return Err(bad("the count must be at least 1"));
        }
        Shard::new(i, n).map_err(|e| bad(&e.message))
    }
}

/// How a process takes part in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The whole run in this process (the default).
    #[default]
    Whole,
    /// Score one shard of the first incomplete generation's children, then stop.
    Shard(Shard),
    /// Replay the run from the journal; stop at missing children, else finish the run.
    Merge,
}

/// How a shard's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardOutcome {
    /// It scored its share of `generation` (`scored` children were not in the journal
    /// yet); `missing` children of that generation (its own included when it was stopped)
    /// are still not in the journal.
    Scored {
        /// The generation (from 0).
        generation: u32,
        /// Children this shard scored now.
        scored: u32,
        /// Children of the generation still missing from the journal (any shard's).
        missing: Vec<u32>,
    },
    /// Every generation's children were in the journal already: only the merge step is left.
    Complete,
}

/// How the journal is opened for a role.
pub(super) enum JournalMode {
    /// A new run: an old journal is cleared.
    Fresh,
    /// Continue: the journal's key must match; temporary files of killed writers are removed.
    Resume,
    /// A shard: the journal is shared with running shards, so nothing in it is removed and it
    /// may not exist yet; an existing key must match.
    Shared,
}

impl JournalMode {
    /// The mode of `cfg`.
    pub(super) fn of(cfg: &EvolveConfig) -> JournalMode {
        match cfg.role {
            Role::Shard(_) => JournalMode::Shared,
            Role::Merge => JournalMode::Resume,
            Role::Whole if cfg.resume => JournalMode::Resume,
            Role::Whole => JournalMode::Fresh,
        }
    }
}

/// The scratch file of a process's candidate models (shards share the journal folder).
pub(super) fn scratch_name(role: Role) -> String {
    match role {
        Role::Shard(s) => format!("candidate-shard{}.onnx", s.index),
        _ => "candidate.onnx".into(),
    }
}

/// Checks the settings a role needs.
pub(super) fn check(cfg: &EvolveConfig) -> Result<(), Error> {
    if cfg.role != Role::Whole && cfg.race {
        return Err(invalid(
            "--race",
            "cannot be sharded: racing drops children without journaling them, so no other process could see their results",
        ));
    }
    Ok(())
}

/// True when this process saves the record of `member` (see [`Shard::saves`]).
pub(super) fn saves(role: Role, member: Option<&Member>) -> bool {
    match role {
        Role::Shard(s) => s.saves(member),
        Role::Whole | Role::Merge => true,
    }
}

/// Which of generation `g`'s children `jobs` this process scores: all of them, or (a
/// shard) its own that are missing, after which it stops with [`EvolveError::ShardDone`]
/// unless the generation was already complete. The merge step refuses a generation with
/// missing children ([`EvolveError::Incomplete`]).
pub(super) fn share(
    cfg: &EvolveConfig,
    journal: &Journal,
    g: u32,
    jobs: &[Job],
) -> Result<Share, Error> {
    let role = cfg.role;
    match role {
        // One process scores (or loads) everything: nothing to look up.
        Role::Whole => return Ok(Share::All),
        Role::Merge => check_markers(journal)?,
        Role::Shard(_) => {}
    }
    let missing: Vec<u32> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| !journal.has(&j.id))
        .map(|(i, _)| i as u32)
        .collect();
    if missing.is_empty() {
        return Ok(Share::All);
    }
    match role {
        Role::Whole => Ok(Share::All),
        Role::Merge => Err(EvolveError::Incomplete {
            generation: g,
            children: jobs.len() as u32,
            missing,
        }
        .into()),
        Role::Shard(s) => {
            let note = serde_json::json!({
                "run_key": journal.run_key(),
                "shard": s.to_string(),
                "command": cfg.command,
            });
            journal.write_note(&marker_name(s), &note)?;
            let mine = missing.iter().copied().filter(|&i| s.owns(i)).collect();
            Ok(Share::Mine { mine, missing })
        }
    }
}

/// The file shard `s` leaves in the journal: its run key and command line, for the merge
/// step to check and to quote when its children are missing.
fn marker_name(s: Shard) -> String {
    format!("shard-{}-of-{}.json", s.index, s.count)
}

/// A shard's marker, as [`markers`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The shard.
    pub shard: Shard,
    /// The run key it was started for.
    pub run_key: String,
    /// Its command line, when it was recorded.
    pub command: Option<String>,
}

/// The markers of the shards that have run in `out`'s journal (unreadable ones are skipped:
/// they only serve messages and the check of `check_markers`).
pub fn markers(out: &Path) -> Vec<Marker> {
    let Ok(entries) = std::fs::read_dir(out.join(".smd-journal")) else {
        return Vec::new();
    };
    let mut found: Vec<Marker> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("shard-") && n.ends_with(".json")
        })
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            Some(Marker {
                shard: v.get("shard")?.as_str()?.parse().ok()?,
                run_key: v.get("run_key")?.as_str()?.to_string(),
                command: v.get("command").and_then(|c| c.as_str()).map(String::from),
            })
        })
        .collect();
    found.sort_by_key(|m| (m.shard.count, m.shard.index));
    found
}

/// Refuses a journal some shard of another run wrote into.
fn check_markers(journal: &Journal) -> Result<(), Error> {
    let out = journal.dir().parent().unwrap_or(Path::new("."));
    for m in markers(out) {
        if m.run_key != journal.run_key() {
            return Err(EvolveError::Resume {
                path: journal.dir().join(marker_name(m.shard)),
                message: format!(
                    "shard {} was started for a different run (model, data or settings differ)",
                    m.shard
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// What [`share`] decided.
pub(super) enum Share {
    /// Score (or load) every job.
    All,
    /// A shard's own missing children (indices into the jobs), then stop; `missing` are all
    /// the generation's missing children.
    Mine {
        /// This shard's missing children.
        mine: Vec<u32>,
        /// Every missing child of the generation.
        missing: Vec<u32>,
    },
}

/// Runs shard `shard` of the run `cfg` describes: replays the journal up to the first
/// generation with missing children and scores this shard's share of them. Writes nothing
/// but journal records; the merge step ([`Role::Merge`]) writes the outputs.
pub fn run_shard(
    mut cfg: EvolveConfig,
    shard: Shard,
    observer: &mut dyn Observer,
) -> Result<ShardOutcome, Error> {
    cfg.role = Role::Shard(shard);
    let mut run = super::Evolution::new(cfg, observer)?;
    while run.generations_left() > 0 {
        match run.run_generation() {
            Ok(_) => {}
            Err(Error::Evolve(EvolveError::ShardDone {
                generation,
                scored,
                missing,
            })) => {
                return Ok(ShardOutcome::Scored {
                    generation,
                    scored,
                    missing,
                });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ShardOutcome::Complete)
}

/// Removes the journal of an earlier run in `out`, if any (a driver starting a fresh run
/// with `--force`).
pub fn clear_journal(out: &Path) -> Result<(), Error> {
    let dir = out.join(".smd-journal");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EvolveError::Io {
            path: dir,
            source: e,
        }
        .into()),
    }
}

/// `1, 5, 9` (at most 20 listed, then a count).
pub(crate) fn list(children: &[u32]) -> String {
    const SHOWN: usize = 20;
    let mut text: Vec<String> = children.iter().take(SHOWN).map(u32::to_string).collect();
    if children.len() > SHOWN {
        text.push(format!("and {} more", children.len() - SHOWN));
    }
    text.join(", ")
}

/// The shards of `count` that own any of `children`, in order.
pub fn owners(children: &[u32], count: u32) -> Vec<Shard> {
    let mut idx: Vec<u32> = children.iter().map(|c| c % count.max(1)).collect();
    idx.sort_unstable();
    idx.dedup();
    idx.into_iter()
        .map(|index| Shard {
            index,
            count: count.max(1),
        })
        .collect()
}

/// Journal records of generation `g`'s children present in `out` (for a driver's progress).
pub fn journaled_children(out: &Path, g: u32) -> usize {
    let prefix = format!("g{g}-c");
    std::fs::read_dir(out.join(".smd-journal")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".bin")
            })
            .count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!("0/1".parse::<Shard>(), Ok(Shard { index: 0, count: 1 }));
        for bad in [
            "", "1", "4/4", "5/4", "0/0", "-1/4", "+1/4", " 1/4", "1/4/", "a/b", "1/",
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.to_string().starts_with("--shard "), "{bad}: {e}");
        }
    }

    #[test]
    fn shards_partition_the_children_and_save_disjoint_files() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        for child in 0..20 {
            let owners = shards.iter().filter(|s| s.owns(child)).count();
            assert_eq!(owners, 1, "child {child}");
            let savers = shards
                .iter()
                .filter(|s| s.saves(Some(&Member::Child(child))))
                .count();
            assert_eq!(savers, 1, "child {child}");
        }
        let merged = Member::Merged(vec![0, 1]);
        assert_eq!(shards.iter().filter(|s| s.saves(Some(&merged))).count(), 1);
        assert_eq!(shards.iter().filter(|s| s.saves(None)).count(), 1);
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(count in 1u32..10_000, index in 0u32..10_000) {
            let index = index % count;
            let s = Shard::new(index, count).unwrap();
            proptest::prop_assert_eq!(s.to_string().parse::<Shard>(), Ok(s));
        }
    }
}
