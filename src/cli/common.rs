//! Option groups shared by several commands.

use std::path::PathBuf;

use smd_onnx::mutate::ModeName;
use smd_onnx::runtime::Device;

/// Which tensors may be mutated.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectionArgs {
    /// Only tensors whose name matches this regular expression (on top of the default rule);
    /// also adds the `ai.onnx.ml` arrays that are not weights by default (tree thresholds,
    /// intercepts).
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
    pub fn to_selection(&self) -> anyhow::Result<smd_onnx::mutate::Selection> {
        let compile = |flag: &str, re: &Option<String>| -> anyhow::Result<Option<regex::Regex>> {
            re.as_deref()
                .map(|r| {
                    regex::Regex::new(r).map_err(|e| {
                        anyhow::anyhow!("{flag} {r:?}: invalid regular expression: {e}")
                    })
                })
                .transpose()
        };
        Ok(smd_onnx::mutate::Selection {
            include: compile("--include", &self.include)?,
            exclude: compile("--exclude", &self.exclude)?,
            all_float: self.all_float,
        })
    }
}

/// Where ONNX Runtime runs.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    // The choices come from the runtime's table of execution providers.
    #[arg(
        long,
        default_value = Device::default_name(),
        value_name = "DEVICE",
        help = format!(
            "Execution device: {}. A GPU device never falls back to the CPU",
            Device::choices()
        )
    )]
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
        let device: Device = self.device.parse()?;
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
    /// Samples per inference run (default: 256, or fewer so that a batch's inputs take at most
    /// 64 MiB; a model with a fixed batch dimension uses that).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// The output to score (default: the first float output of shape [N, C]).
    #[arg(long, value_name = "NAME")]
    pub output: Option<String>,
    /// Fraction of the samples held out for reporting (never used for selection).
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "F",
        allow_negative_numbers = true
    )]
    pub holdout: f64,
    /// Seed of the label-stratified selection/holdout split.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub split_seed: u64,
}

/// How children are made.
#[derive(Debug, Clone, clap::Args)]
pub struct MutationArgs {
    /// Children per generation (k): the number of sparse sub-mutations.
    #[arg(
        long,
        short = 'k',
        default_value_t = 16,
        value_name = "K",
        allow_negative_numbers = true
    )]
    pub children: u32,
    /// How the mutation is decomposed into children.
    #[arg(
        long,
        value_name = "MODE",
        value_parser = mode_parser(),
        default_value = ModeName::default().name()
    )]
    pub mode: ModeName,
    /// Fraction of each tensor a child mutates in density mode.
    #[arg(
        long,
        default_value_t = 0.1,
        value_name = "P",
        allow_negative_numbers = true
    )]
    pub density: f64,
    /// Noise scale σ, relative to each tensor's standard deviation (see --absolute-sigma).
    /// `evolve` also takes `auto`: σ starts at 0.1 and adapts between generations (the 1/5
    /// success rule of (1+λ)-ES: ×1.5 when more than a fifth of the children beat their parent,
    /// ÷1.5 otherwise).
    #[arg(
        long,
        default_value = "0.1",
        value_name = "SIGMA|auto",
        allow_negative_numbers = true,
        value_parser = parse_or_auto::<f64>
    )]
    pub sigma: OrAuto<f64>,
    /// σ is an absolute standard deviation, not relative to each tensor's.
    #[arg(long)]
    pub absolute_sigma: bool,
    /// Children come in pairs on the same subspace with +ε and −ε.
    #[arg(long)]
    pub antithetic: bool,
    /// Random seed: the same seed gives the same children, on any machine.
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub seed: u64,
}

/// A number, or `auto` (`--sigma`, `--generations`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrAuto<T> {
    /// The number given.
    Value(T),
    /// `auto`.
    Auto,
}

/// Parses a number or `auto`.
pub fn parse_or_auto<T: std::str::FromStr>(s: &str) -> Result<OrAuto<T>, String> {
    if s == "auto" {
        return Ok(OrAuto::Auto);
    }
    s.parse()
        .map(OrAuto::Value)
        .map_err(|_| format!("{s:?} is neither a number nor `auto`"))
}

/// Where `--sigma auto` starts.
pub const AUTO_SIGMA_START: f64 = 0.1;

/// `--mode`'s choices and their help, from the library's one list of modes.
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = ModeName> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(ModeName::ALL.map(|m| PossibleValue::new(m.name()).help(m.help())))
        .try_map(|s| s.parse::<ModeName>())
}

impl MutationArgs {
    /// The library's mutation settings (validated later, with the model at hand).
    pub fn config(&self, subspaces: smd_onnx::mutate::Subspaces) -> smd_onnx::mutate::Config {
        use smd_onnx::mutate::{Config, ScaleRule};
        Config {
            mode: self.mode.with_density(self.density),
            children: self.children,
            sigma: match self.sigma {
                OrAuto::Value(v) => v,
                OrAuto::Auto => AUTO_SIGMA_START,
            },
            scale: if self.absolute_sigma {
                ScaleRule::Absolute
            } else {
                ScaleRule::Relative
            },
            antithetic: self.antithetic,
            seed: self.seed,
            subspaces,
        }
    }
}

/// `a` quoted for a POSIX shell when it holds anything but plain characters.
pub fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:+,@%".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// This process' command line as one line a POSIX shell runs again: arguments that hold
/// anything but plain characters are single-quoted (the program as `smd-onnx`, its name).
pub fn command_line() -> String {
    std::iter::once("smd-onnx".to_string())
        .chain(
            std::env::args_os()
                .skip(1)
                .map(|a| shell_quote(&a.to_string_lossy())),
        )
        .collect::<Vec<_>>()
        .join(" ")
}
