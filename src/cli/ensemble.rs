//! `smd-onnx ensemble`: combine models with the same interface into one drop-in ONNX graph.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use smd_onnx::ensemble::{self, Heads, OutputKind};
use smd_onnx::onnx::Model;

use super::evolve::CombineArg;

/// Arguments of `smd-onnx ensemble`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The member models (same input and output names, element types and ranks).
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// The ensemble model to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// How float outputs are combined: probs (probabilities averaged, logits as the log of
    /// the mean softmax), logits (logits averaged), mean (every float output averaged).
    #[arg(long, value_enum, default_value = "probs")]
    combine: CombineArg,
    /// Member weights, comma-separated (default: equal).
    #[arg(long, value_delimiter = ',', value_name = "W1,W2,...")]
    weights: Option<Vec<f64>>,
    /// Outputs that hold probabilities (default: recognised from the op that makes them).
    #[arg(long, value_name = "NAME")]
    probabilities: Vec<String>,
}

/// Runs `smd-onnx ensemble`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| vec![1.0; args.models.len()]);
    if weights.len() != args.models.len() {
        anyhow::bail!(
            "--weights: {} weights for {} models",
            weights.len(),
            args.models.len()
        );
    }
    let models = args
        .models
        .iter()
        .map(Model::open)
        .collect::<Result<Vec<_>, _>>()?;
    let heads = Heads::Combined {
        combine: args.combine.into(),
        declared: args
            .probabilities
            .iter()
            .map(|p| (p.clone(), OutputKind::Probabilities))
            .collect(),
    };
    let members: Vec<serde_json::Value> = models
        .iter()
        .zip(&weights)
        .map(|(m, w)| {
            let recipe = m.metadata("smd_onnx.recipe").and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok());
            serde_json::json!({ "model": m.path().display().to_string(), "weight": w, "recipe": recipe })
        })
        .collect();
    let meta = vec![(
        "smd_onnx.ensemble".to_string(),
        serde_json::Value::Array(members).to_string(),
    )];
    let built = ensemble::from_models(&models, &weights, &heads, &meta)
        .with_context(|| format!("building the ensemble of {} models", models.len()))?;
    let mut inputs: Vec<PathBuf> = Vec::new();
    for m in &models {
        inputs.extend(m.input_paths());
    }
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    ensemble::save(&built.model, &args.out, &inputs)?;
    for n in &built.notices {
        eprintln!("note: {n}");
    }
    let encodings = built.encodings.len();
    println!(
        "wrote {} ({} members{}, {} bytes)",
        args.out.display(),
        models.len(),
        if encodings > 0 {
            format!(", {encodings} tensors stored once plus the members' differences")
        } else {
            ", full copies".into()
        },
        std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0)
    );
    Ok(ExitCode::SUCCESS)
}
