//! `smd-onnx replay`: rebuild a model smd-onnx wrote from the original model and its lineage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use smd_onnx::lineage::{self, Pick};
use smd_onnx::onnx::Model;

/// Arguments of `smd-onnx replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The original model: the one given to the `evolve` or `mutate` run that made FILE.
    original: PathBuf,
    /// Where the lineage is stored: a model smd-onnx wrote (best.onnx, a `mutate` child, a
    /// `replay` output) or an evolve report.json.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The model to write.
    #[arg(long, value_name = "OUT.onnx")]
    out: PathBuf,
    /// With a report: child I of generation G (default: the best model).
    #[arg(long, value_name = "G:I", value_parser = parse_child, conflicts_with = "merged")]
    child: Option<(u32, u32)>,
    /// With a report: the merged candidate of generation G.
    #[arg(long, value_name = "G")]
    merged: Option<u32>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

/// `G:I` → (G, I).
fn parse_child(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("expected GENERATION:INDEX (e.g. 1:3), got {s:?}");
    let (g, i) = s.split_once(':').ok_or_else(bad)?;
    Ok((g.parse().map_err(|_| bad())?, i.parse().map_err(|_| bad())?))
}

/// Runs `smd-onnx replay`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pick = match (args.child, args.merged) {
        (Some((generation, index)), _) => Pick::Child { generation, index },
        (None, Some(generation)) => Pick::Merged { generation },
        (None, None) => Pick::Best,
    };
    // Refuse before any work (rebuilding a large model takes a while).
    if !args.force && std::fs::symlink_metadata(&args.out).is_ok() {
        anyhow::bail!(
            "{}: already exists (use --force to replace it)",
            args.out.display()
        );
    }
    let stored = if lineage::is_report(&args.from)? {
        let json = std::fs::read(&args.from).with_context(|| format!("{}", args.from.display()))?;
        lineage::from_report(&json, &args.from, pick)?
    } else {
        if pick != Pick::Best {
            anyhow::bail!(
                "{}: --child and --merged pick a candidate of an evolve report.json; this is a \
                 model, whose own lineage is replayed",
                args.from.display()
            );
        }
        lineage::from_model(&Model::open(&args.from)?)?
    };
    let original = Model::open(&args.original)?;
    smd_onnx::output::ensure_not_input(&args.out, &[args.from.as_path()])?;
    let written = lineage::write_rebuilt(&original, &stored.recipes, &args.out)
        .with_context(|| format!("rebuilding {}", describe(&args.from, pick)))?;
    for p in &written {
        println!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What is rebuilt, for messages: `run/best.onnx`, `child 1:3 of run/report.json`.
fn describe(from: &Path, pick: Pick) -> String {
    match pick {
        Pick::Best => from.display().to_string(),
        Pick::Child { generation, index } => {
            format!("child {generation}:{index} of {}", from.display())
        }
        Pick::Merged { generation } => {
            format!(
                "the merged candidate of generation {generation} of {}",
                from.display()
            )
        }
    }
}
