//! What identifies a run (the journal's key) and the settings its report records.

use std::path::Path;

use super::report::Settings;
use super::{EvolveConfig, EvolveError};
use crate::Error;

/// The run's identity for the journal: model, data, and every setting that changes results.
pub(super) fn run_key(
    cfg: &EvolveConfig,
    parent_hash: &str,
    output: &str,
    batch: usize,
) -> Result<String, Error> {
    let data_hash = hash_path(&cfg.data)?;
    let m = &cfg.mutation;
    let text = format!(
        "{parent_hash}\n{data_hash}\n{output}\n{:?}\n{}\n{}\n{:?}\n{}\n{}\n{:?}\n{}\n{}\n{}\n{}\n{}\n{:?}",
        m.mode,
        m.children,
        m.sigma,
        m.scale,
        m.antithetic,
        m.seed,
        m.subspaces,
        cfg.generations,
        cfg.selection.describe(),
        cfg.holdout,
        cfg.split_seed,
        batch,
        // The provider, not the GPU index: workers on cuda:0 and cuda:1 share one run (the
        // key of a run on GPU 0 stays what it was).
        crate::runtime::Device::new(cfg.runtime.device.provider(), 0)
    );
    // Adapted σ and the line search change later generations' children (appended only then,
    // so keys of runs without them stay what they were).
    let text = match (cfg.adapt_sigma, cfg.line_search) {
        (false, false) => text,
        (a, l) => format!("{text}\nadapt-sigma {a}\nline-search {l}"),
    };
    // Racing drops children (they are not journaled), so a raced run's key differs.
    let text = if cfg.race {
        format!("{text}\nrace")
    } else {
        text
    };
    // Another metric chooses other candidates (the default's keys stay what they were).
    let text = match (&cfg.custom_metric, cfg.metric) {
        // The caller's metric enters by name and direction (its code cannot be hashed).
        (Some(c), _) => {
            let dir = if c.higher_is_better() { "max" } else { "min" };
            format!("{text}\nmetric custom {dir} {}", c.name())
        }
        (None, Some(m)) => format!("{text}\nmetric {}", m.name()),
        (None, None) => text,
    };
    Ok(blake3::hash(text.as_bytes()).to_hex().to_string())
}

/// blake3 of a file, or of every file of a folder (sorted by name).
fn hash_path(p: &Path) -> Result<String, Error> {
    let io = |e| {
        Error::from(EvolveError::Io {
            path: p.to_path_buf(),
            source: e,
        })
    };
    let mut h = blake3::Hasher::new();
    let mut files = Vec::new();
    if p.is_dir() {
        for e in std::fs::read_dir(p).map_err(io)? {
            files.push(e.map_err(io)?.path());
        }
        files.sort();
    } else {
        files.push(p.to_path_buf());
    }
    for f in files {
        h.update(
            f.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update_mmap_rayon(&f).map_err(|e| {
            Error::from(EvolveError::Io {
                path: f.clone(),
                source: e,
            })
        })?;
    }
    Ok(h.finalize().to_hex().to_string())
}

pub(super) fn settings(cfg: &EvolveConfig, batch: usize) -> Settings {
    let m = &cfg.mutation;
    Settings {
        children: m.children,
        generations: cfg.generations,
        budget: cfg.budget,
        patience: cfg.patience,
        adapt_sigma: cfg.adapt_sigma,
        line_search: cfg.line_search,
        race: cfg.race,
        accept_p: cfg.accept_p,
        metric: cfg.metric.map(|m| m.name()),
        mode: m.mode.kind().name().into(),
        density: m.mode.density(),
        sigma: m.sigma,
        scale: format!("{:?}", m.scale).to_lowercase(),
        antithetic: m.antithetic,
        subspaces: format!("{:?}", m.subspaces).to_lowercase(),
        seed: m.seed,
        selection: cfg.selection.describe(),
        holdout: cfg.holdout,
        split_seed: cfg.split_seed,
        batch,
    }
}
