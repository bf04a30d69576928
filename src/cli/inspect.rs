//! `smd-onnx inspect`: a model's tensors (where they live, dtype, shape, mutable or why not),
//! totals and facts, as a table or as one JSON object.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use smd_onnx::mutate::Mutability;
use smd_onnx::onnx::{Model, ModelFacts, Storage, TensorInfo};

use super::common::SelectionArgs;

/// Arguments of `smd-onnx inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// Runs `smd-onnx inspect`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sel = args.selection.to_selection()?;
    let model = Model::open(&args.model)?;
    let verdicts = sel.verdicts(&model);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let v = to_json(&model, &verdicts);
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &model, &verdicts)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Control characters shown escaped, so hostile names cannot forge lines or move the cursor.
fn clean(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        s.to_string()
    }
}

struct Totals {
    tensors: u64,
    elements: u128,
    mutable_tensors: u64,
    mutable_elements: u128,
}

fn totals(model: &Model, verdicts: &[Mutability]) -> Totals {
    let mut t = Totals {
        tensors: 0,
        elements: 0,
        mutable_tensors: 0,
        mutable_elements: 0,
    };
    for (info, m) in model.tensors().iter().zip(verdicts) {
        t.tensors += 1;
        t.elements += u128::from(info.elements);
        if m.is_mutable() {
            t.mutable_tensors += 1;
            t.mutable_elements += u128::from(info.elements);
        }
    }
    t
}

fn tensor_json(t: &TensorInfo, m: &Mutability) -> serde_json::Value {
    let external = match &t.storage {
        Storage::External {
            location,
            offset,
            length,
        } => json!({"location": location, "offset": offset, "length": length}),
        _ => serde_json::Value::Null,
    };
    json!({
        "name": t.name,
        "key": t.key(),
        "dtype": t.dtype,
        "shape": t.dims,
        "elements": t.elements,
        "location": t.location.as_str(),
        "graph": t.scope,
        "graph_name": t.graph_name,
        "node": t.node,
        "storage": t.storage.kind(),
        "external": external,
        "mutable": m.is_mutable(),
        "reason": m.reason(),
        "quantized": t.quantization().and_then(Result::ok).map(|q| json!({
            "scale": q.scale_name,
            "zero_point": q.zero_point_name,
            "axis": q.axis,
            "block_size": q.block_size,
            "integers": q.count(),
            "integer_type": q.packing(),
        })),
    })
}

fn facts_json(model: &Model, f: &ModelFacts) -> serde_json::Value {
    let externals: Vec<_> = model
        .external_files()
        .iter()
        .map(|e| json!({"location": e.location, "path": e.path, "bytes": e.len()}))
        .collect();
    json!({
        "path": model.path(),
        "bytes": model.bytes().len(),
        "ir_version": f.ir_version,
        "opsets": f.opsets,
        "producer_name": f.producer_name,
        "producer_version": f.producer_version,
        "graph_name": f.graph_name,
        "inputs": f.inputs,
        "outputs": f.outputs,
        "external_files": externals,
    })
}

fn to_json(model: &Model, verdicts: &[Mutability]) -> serde_json::Value {
    let t = totals(model, verdicts);
    let tensors: Vec<_> = model
        .tensors()
        .iter()
        .zip(verdicts)
        .map(|(t, m)| tensor_json(t, m))
        .collect();
    // Element totals fit u64 in any real model; u128 sums only guard against overflow.
    let num = |x: u128| u64::try_from(x).map_or_else(|_| json!(x.to_string()), |v| json!(v));
    json!({
        "model": facts_json(model, model.facts()),
        "tensors": tensors,
        "totals": {
            "tensors": t.tensors,
            "elements": num(t.elements),
            "mutable_tensors": t.mutable_tensors,
            "mutable_elements": num(t.mutable_elements),
        },
    })
}

/// `1234567` → `1,234,567`.
fn thousands(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn write_table(out: &mut dyn Write, model: &Model, verdicts: &[Mutability]) -> anyhow::Result<()> {
    write_facts(out, model)?;
    write_tensors(out, model, verdicts)?;
    let t = totals(model, verdicts);
    let pct = if t.elements == 0 {
        0.0
    } else {
        t.mutable_elements as f64 * 100.0 / t.elements as f64
    };
    writeln!(out)?;
    writeln!(
        out,
        "totals:   {} tensors, {} params; mutable: {} tensors, {} params ({pct:.1}%)",
        t.tensors,
        thousands(t.elements),
        t.mutable_tensors,
        thousands(t.mutable_elements),
    )?;
    Ok(())
}

/// The model's file, producer, IR version, opsets, inputs and outputs.
fn write_facts(out: &mut dyn Write, model: &Model) -> anyhow::Result<()> {
    let f = model.facts();
    writeln!(
        out,
        "model:    {} ({} bytes{})",
        model.path().display(),
        thousands(model.bytes().len() as u128),
        if model.has_external_data() {
            let n: u64 = model.external_files().iter().map(|e| e.len()).sum();
            format!(
                " + {} bytes external data in {} file(s)",
                thousands(u128::from(n)),
                model.external_files().len()
            )
        } else {
            String::new()
        }
    )?;
    let producer = format!("{} {}", clean(&f.producer_name), clean(&f.producer_version));
    let opsets: Vec<String> = f
        .opsets
        .iter()
        .map(|o| {
            let d = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                &o.domain
            };
            format!("{} {}", clean(d), o.version)
        })
        .collect();
    writeln!(
        out,
        "producer: {}   IR version: {}   opsets: {}",
        producer.trim(),
        f.ir_version.map_or("?".into(), |v| v.to_string()),
        opsets.join(", ")
    )?;
    for (label, list) in [("inputs: ", &f.inputs), ("outputs:", &f.outputs)] {
        let items: Vec<String> = list
            .iter()
            .map(|v| format!("{} {}", clean(&v.name), clean(&v.ty.to_string())))
            .collect();
        writeln!(out, "{label}  {}", items.join("; "))?;
    }
    writeln!(out)?;
    Ok(())
}

/// One aligned row per tensor: where it lives, its type and whether it is mutable.
fn write_tensors(
    out: &mut dyn Write,
    model: &Model,
    verdicts: &[Mutability],
) -> anyhow::Result<()> {
    let headers = [
        "NAME", "DTYPE", "SHAPE", "PARAMS", "LOCATION", "STORAGE", "MUTABLE",
    ];
    let rows: Vec<[String; 7]> = model
        .tensors()
        .iter()
        .zip(verdicts)
        .map(|(t, m)| {
            let loc = if t.scope.is_empty() {
                t.location.as_str().to_string()
            } else {
                format!("{} in {}", t.location, clean(&t.scope))
            };
            let mutable = match (m.reason(), t.quantization()) {
                (None, Some(Ok(q))) => match &q.scale_name {
                    Some(scale) => format!("yes: quantized (scale from {})", clean(scale)),
                    None => "yes: quantized (integer steps)".to_string(),
                },
                (None, _) => "yes".to_string(),
                (Some(r), _) => format!("no: {}", clean(r)),
            };
            [
                clean(&t.name),
                t.dtype.to_string(),
                t.shape_string(),
                thousands(u128::from(t.elements)),
                loc,
                clean(&t.storage.to_string()),
                mutable,
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == cells.len() - 1 {
                s.push_str(c);
            } else if i == 3 {
                s.push_str(&format!("{c:>w$}  "));
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(&headers.map(String::from)))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(clean("a\nb"), "a\\nb");
        assert_eq!(clean("ok"), "ok");
    }
}
