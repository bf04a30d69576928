//! Option groups shared by several commands.

use std::path::PathBuf;

/// Which tensors may be mutated.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectionArgs {
    /// Only tensors whose name matches this regular expression (on top of the default rule).
    #[arg(long, value_name = "REGEX")]
    pub include: Option<String>,
    /// Never tensors whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub exclude: Option<String>,
    /// Every float tensor is a candidate, not only those with two or more dimensions.
    #[arg(long)]
    pub all_float: bool,
}

impl SelectionArgs {
    /// The library's selection rule, with the regular expressions compiled.
    pub fn to_selection(&self) -> anyhow::Result<smd_onnx::onnx::Selection> {
        let compile = |flag: &str, re: &Option<String>| -> anyhow::Result<Option<regex::Regex>> {
            re.as_deref()
                .map(|r| {
                    regex::Regex::new(r).map_err(|e| {
                        anyhow::anyhow!("{flag} {r:?}: invalid regular expression: {e}")
                    })
                })
                .transpose()
        };
        Ok(smd_onnx::onnx::Selection {
            include: compile("--include", &self.include)?,
            exclude: compile("--exclude", &self.exclude)?,
            all_float: self.all_float,
        })
    }
}

/// Where ONNX Runtime runs.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Execution device: cpu, cuda[:N] or tensorrt[:N]. A GPU device never falls back to the CPU.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: String,
    /// The ONNX Runtime shared library to use (else ORT_DYLIB_PATH, else the cache, else fetched).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per ONNX Runtime session (default: every available core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl RuntimeArgs {
    /// The library's runtime configuration.
    pub fn config(&self) -> anyhow::Result<smd_onnx::runtime::RuntimeConfig> {
        let device: smd_onnx::runtime::Device = self.device.parse()?;
        Ok(smd_onnx::runtime::RuntimeConfig {
            device,
            library: self.ort_lib.clone(),
            intra_threads: self.threads,
            ..Default::default()
        })
    }
}

/// The labelled data and how it is split and batched.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Labelled data: an .npz file (or a folder of .npy files) with one array per model input and `labels`.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Samples per inference run (a model with a fixed batch dimension uses that).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub batch: usize,
    /// The output to score (default: the first float output of shape [N, C]).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// Fraction of the samples held out for reporting (never used for selection).
    #[arg(long, default_value_t = 0.5, value_name = "F")]
    pub holdout: f64,
    /// Seed of the label-stratified selection/holdout split.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub split_seed: u64,
}
