//! `smd-onnx mutate`: write sparse-mutation children of a model.

use std::path::PathBuf;
use std::process::ExitCode;

use smd_onnx::mutate::{Member, Plan, Recipe, Subspaces, TensorSpec, tensor_std};
use smd_onnx::onnx::{Model, write_child_with_metadata};

use super::common::{MutationArgs, SelectionArgs};

/// Arguments of `smd-onnx mutate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The parent ONNX model.
    model: PathBuf,
    #[command(flatten)]
    mutation: MutationArgs,
    #[command(flatten)]
    selection: SelectionArgs,
    /// Output folder for `child_<i>.onnx` files.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write only child I of this command's children, byte for byte as without --only (to
    /// rebuild any model smd-onnx wrote from its stored recipes, use `smd-onnx replay`).
    #[arg(long, value_name = "I")]
    only: Option<u32>,
    /// Write into a non-empty folder (replacing its children).
    #[arg(long)]
    force: bool,
}

/// Runs `smd-onnx mutate`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.mutation.sigma == super::common::OrAuto::Auto {
        anyhow::bail!(
            "--sigma auto: σ adapts between the generations of `evolve`; give `mutate` a number"
        );
    }
    let cfg = args.mutation.config(Subspaces::Dynamic);
    cfg.validate()?;
    if let Some(i) = args.only
        && i >= cfg.children
    {
        anyhow::bail!(
            "--only: child {i} does not exist (children are 0..{})",
            cfg.children
        );
    }
    let model = Model::open(&args.model)?;
    let selection = args.selection.to_selection()?;
    let selected = selection.mutable_tensors(&model);
    if selected.is_empty() {
        anyhow::bail!(
            "{}: no mutable tensors (see `smd-onnx inspect`; --all-float or --include widen the selection)",
            args.model.display()
        );
    }
    smd_onnx::output::prepare_out_dir(&args.out, args.force)?;
    let values = selected
        .iter()
        .map(|&t| model.read_values(&model.tensors()[t]))
        .collect::<Result<Vec<_>, _>>()?;
    let specs: Vec<TensorSpec> = selected
        .iter()
        .zip(&values)
        .map(|(&t, v)| TensorSpec {
            key: model.tensors()[t].key().to_string(),
            elements: v.len(),
            std: tensor_std(v),
        })
        .collect();
    let plan = Plan::new(&cfg, &specs, 0)?;
    let hash = model.content_hash()?;
    let width = (cfg.children.max(1) - 1).to_string().len().max(3);
    let children: Vec<u32> = match args.only {
        Some(i) => vec![i],
        None => (0..cfg.children).collect(),
    };
    let path_of = |i: u32| args.out.join(format!("child_{i:0width$}.onnx"));
    // Refuse before writing anything, rather than after some children are written.
    let inputs = model.input_paths();
    let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
    for &i in &children {
        smd_onnx::output::ensure_not_input(&path_of(i), &inputs)?;
    }
    let mut written: Vec<PathBuf> = Vec::new();
    for i in children {
        let path = path_of(i);
        match write_one(
            &model,
            &plan,
            &values,
            &selected,
            &hash,
            &selection.describe(),
            i,
            &path,
        ) {
            Ok(paths) => written.extend(paths),
            Err(e) => {
                // No partial set of children: remove what this run wrote.
                for p in &written {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e.context(format!("writing child {i}")));
            }
        }
        println!("{}", path.display());
    }
    if args.force && args.only.is_none() {
        remove_stale_children(&args.out, &written)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// After `--force` wrote a full set of children: removes the children of an earlier run in
/// `out` that this one did not write (an earlier, larger k), so the folder holds one set.
fn remove_stale_children(out: &std::path::Path, written: &[PathBuf]) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ours = name
            .strip_prefix("child_")
            .and_then(|rest| rest.split_once(".onnx"))
            .is_some_and(|(digits, _)| {
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            });
        if ours && !written.contains(&path) {
            std::fs::remove_file(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Builds child `i` and writes it to `path`; returns the files written.
#[allow(clippy::too_many_arguments)]
fn write_one(
    model: &Model,
    plan: &Plan,
    values: &[smd_onnx::TensorData],
    selected: &[usize],
    hash: &str,
    selection: &str,
    i: u32,
    path: &std::path::Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let deltas = plan.child(i)?;
    let mut changes = Vec::new();
    for d in &deltas {
        let mut v = values[d.tensor].clone();
        smd_onnx::mutate::apply(&mut v, d)?;
        changes.push((selected[d.tensor], v));
    }
    let recipe = Recipe::new(plan, hash.to_string(), selection, Member::Child(i));
    let meta = smd_onnx::lineage::recipe_meta(&[recipe], hash)?;
    Ok(write_child_with_metadata(model, &changes, &meta, path)?)
}
