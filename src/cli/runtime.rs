//! `smd-onnx runtime`: which ONNX Runtime library and execution providers are used (fetching
//! the library when needed), checked by running a tiny model on the device.

use std::process::ExitCode;

use smd_onnx::runtime::Runtime;

use super::common::RuntimeArgs;

/// Arguments of `smd-onnx runtime`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `smd-onnx runtime`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.runtime.config()?;
    let rt = Runtime::new(&config)?;
    rt.self_check()?;
    let info = rt.describe();
    if args.json {
        let mut v = serde_json::to_value(&info)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("check".into(), "ok".into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("library    {}", info.library.display());
    println!("version    {}", info.version);
    let source = serde_json::to_value(info.source)?;
    println!("source     {}", source.as_str().unwrap_or("?"));
    if let Some(d) = &info.cache_dir {
        println!("cache      {}", d.display());
    }
    println!("device     {}", info.device);
    println!("providers  {}", info.providers.join(", "));
    println!("available  {}", info.available_providers.join(", "));
    println!("threads    {}", info.intra_threads);
    if let Some(g) = &info.gpu_libraries {
        for l in &g.loaded {
            println!("loaded     {:<36} {}", l.name, l.path.display());
        }
        for m in &g.missing_optional {
            println!("optional   {m} not found");
        }
    }
    println!("check      ok (a small model ran on {})", info.device);
    Ok(ExitCode::SUCCESS)
}
