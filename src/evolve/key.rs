//! What identifies a run (the journal's key) and the settings its report records.

use std::path::Path;

use super::report::Settings;
use super::{EvolveConfig, EvolveError};
use crate::Error;
use crate::score::{DataSource, RawArray};

/// The run's identity for the journal: model, data, and every setting that changes results.
pub(super) fn run_key(
    cfg: &EvolveConfig,
    parent_hash: &str,
    output: &str,
    batch: usize,
) -> Result<String, Error> {
    let data_hash = match &cfg.data {
        DataSource::File(p) => hash_path(p)?,
        DataSource::Arrays { arrays, .. } => hash_arrays(arrays),
    };
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

/// blake3 of arrays in memory: each one's name, dtype, shape and bytes, in name order (the
/// order a caller lists them in does not change the data set). Lengths are hashed before
/// names and shapes so that no two different lists give the same stream.
fn hash_arrays(arrays: &[RawArray]) -> String {
    let mut sorted: Vec<&RawArray> = arrays.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = blake3::Hasher::new();
    h.update(b"arrays\n");
    for a in sorted {
        let len = |n: usize| (n as u64).to_le_bytes();
        h.update(&len(a.name.len()));
        h.update(a.name.as_bytes());
        h.update(a.dtype.descr().as_bytes());
        h.update(&len(a.shape.len()));
        for &d in &a.shape {
            h.update(&len(d));
        }
        h.update(&len(a.data.len()));
        h.update_rayon(&a.data);
    }
    h.finalize().to_hex().to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::DType;

    fn arr(name: &str, t: DType, shape: Vec<usize>, data: &[u8]) -> RawArray {
        RawArray {
            name: name.into(),
            dtype: t,
            shape,
            data: crate::buffer::aligned_copy(data),
        }
    }

    fn cfg(arrays: Vec<RawArray>) -> EvolveConfig {
        let data = DataSource::Arrays {
            name: "<arrays>".into(),
            arrays,
        };
        EvolveConfig::new("m.onnx", data, "out")
    }

    fn key(arrays: Vec<RawArray>) -> String {
        run_key(&cfg(arrays), "parent", "probs", 8).unwrap()
    }

    #[test]
    fn arrays_key_by_names_dtypes_shapes_and_bytes_not_by_order() {
        let x = || arr("x", DType::U8, vec![2, 2], &[1, 2, 3, 4]);
        let y = || arr("labels", DType::U8, vec![2], &[0, 1]);
        let base = key(vec![x(), y()]);
        assert_eq!(base, key(vec![x(), y()]));
        assert_eq!(base, key(vec![y(), x()]), "the order arrays are listed in");
        let others = [
            key(vec![arr("x", DType::U8, vec![2, 2], &[1, 2, 3, 5]), y()]),
            key(vec![arr("x", DType::U8, vec![4, 1], &[1, 2, 3, 4]), y()]),
            key(vec![arr("x", DType::I8, vec![2, 2], &[1, 2, 3, 4]), y()]),
            key(vec![arr("z", DType::U8, vec![2, 2], &[1, 2, 3, 4]), y()]),
            key(vec![x(), arr("labels", DType::U8, vec![2], &[1, 1])]),
            key(vec![x()]),
        ];
        for (i, k) in others.iter().enumerate() {
            assert_ne!(&base, k, "change {i}");
        }
    }

    #[test]
    fn a_file_keys_by_its_bytes_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.npz");
        std::fs::write(&f, b"one").unwrap();
        let k = |c: &EvolveConfig| run_key(c, "parent", "probs", 8).unwrap();
        let file = EvolveConfig::new("m.onnx", f.as_path(), "out");
        let first = k(&file);
        std::fs::write(&f, b"two").unwrap();
        assert_ne!(first, k(&file));
        assert_ne!(first, key(vec![]));
        let missing = EvolveConfig::new("m.onnx", dir.path().join("no.npz"), "out");
        assert!(run_key(&missing, "parent", "probs", 8).is_err());
    }
}
