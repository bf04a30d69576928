//! Compares ways of scoring SMD children with ONNX Runtime (issue: choose the scoring
//! strategy by measurement). For K partition children of MODEL over every sample of DATA:
//!
//! - `floor`: K+1 passes with one session of the parent (what no strategy can beat);
//! - `template`: one session per child from the model with its mutable tensors as external
//!   initializers, changed in place (what `evolve` does);
//! - `add-initializer`: one session per child from the file, mutated tensors given with
//!   `AddInitializer` (fast, but wrong when optimizations fuse those tensors, e.g. Conv+BN);
//! - `graph-inputs`: one session whose mutable tensors are graph inputs, fed per child;
//! - `batched`: sessions running B children at once (the ensemble graph with one output per
//!   member; members share what they do not change).
//!
//! Every strategy's predictions (argmax per sample) are compared with `template`'s.
//!
//! `cargo run --release --example strategies -- MODEL DATA.npz [K] [DEVICE] [B] [SIGMA] [WHICH]`
//! (defaults: 16, cpu, 4, 0.1, all; WHICH is a comma-separated subset of `add-initializer`,
//! `graph-inputs`, `batched`; the floor and template always run; `floor` runs the floor alone).
//! Prints one line per strategy:
//! seconds and ratio to the floor.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorRef};
use prost::Message;
use smd_onnx::ensemble::{self, Heads, TensorAddr, Varying};
use smd_onnx::mutate::{self, Config, Member, Plan, Selection, TensorSpec};
use smd_onnx::onnx::{self, Model};
use smd_onnx::runtime::{Runtime, RuntimeConfig, tensor_mut, tensor_value};
use smd_onnx::score::arrays::read_arrays;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The data's single float32 input, in batches.
struct Data {
    name: String,
    row_shape: Vec<usize>,
    x: Vec<f32>,
    n: usize,
}

const BATCH: usize = 256;

impl Data {
    fn batches(&self) -> impl Iterator<Item = (Vec<usize>, &[f32])> {
        let row: usize = self.row_shape.iter().product();
        (0..self.n).step_by(BATCH).map(move |s| {
            let rows = BATCH.min(self.n - s);
            let mut shape = vec![rows];
            shape.extend_from_slice(&self.row_shape);
            (shape, &self.x[s * row..(s + rows) * row])
        })
    }
}

/// Argmax of each row of every output named in `outputs`, over all samples.
fn predict(
    s: &mut Session,
    data: &Data,
    extra: &[(String, &DynValue)],
    outputs: &[String],
) -> Res<Vec<Vec<usize>>> {
    let mut out = vec![Vec::with_capacity(data.n); outputs.len()];
    for (shape, x) in data.batches() {
        let mut feed: Vec<(String, SessionInputValue<'_>)> = vec![(
            data.name.clone(),
            TensorRef::from_array_view((shape, x))?.into(),
        )];
        for (n, v) in extra {
            feed.push((n.clone(), (*v).into()));
        }
        let res = s.run(feed)?;
        for (k, name) in outputs.iter().enumerate() {
            let (shape, y) = res[name.as_str()].try_extract_tensor::<f32>()?;
            let c = usize::try_from(*shape.last().unwrap_or(&1))?;
            for row in y.chunks_exact(c.max(1)) {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
                out[k].push(best);
            }
        }
    }
    Ok(out)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = Path::new(
        args.first()
            .ok_or("usage: strategies MODEL DATA.npz [K] [DEVICE] [B] [SIGMA]")?,
    );
    let data_path = Path::new(args.get(1).ok_or("missing DATA")?);
    let k: u32 = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let device = args.get(3).map_or("cpu", String::as_str).parse()?;
    let b: usize = args.get(4).map_or(Ok(4), |s| s.parse())?;
    let sigma: f64 = args.get(5).map_or(Ok(0.1), |s| s.parse())?;
    let which = args
        .get(6)
        .map_or("add-initializer,graph-inputs,batched", String::as_str);
    let run = |s: &str| which.split(',').any(|w| w == s);

    let rt = Runtime::new(&RuntimeConfig {
        device,
        ..Default::default()
    })?;
    let model = Model::open(model_path)?;
    let arrays = read_arrays(data_path)?;
    let input = model.facts().inputs.first().ok_or("no input")?.name.clone();
    let output = model
        .facts()
        .outputs
        .first()
        .ok_or("no output")?
        .name
        .clone();
    let a = arrays
        .iter()
        .find(|a| a.name == input || a.name == "input")
        .ok_or("no input array")?;
    let data = Data {
        name: input.clone(),
        row_shape: a.shape[1..].to_vec(),
        x: a.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        n: a.shape[0],
    };
    let outs = vec![output.clone()];

    let selected = Selection::default().mutable_tensors(&model);
    let values: Vec<_> = selected
        .iter()
        .map(|&t| model.read_values(&model.tensors()[t]))
        .collect::<Result<_, _>>()?;
    let specs: Vec<TensorSpec> = selected
        .iter()
        .zip(&values)
        .map(|(&t, v)| TensorSpec::from_values(model.tensors()[t].key(), v))
        .collect();
    let cfg = Config {
        children: k,
        sigma,
        ..Default::default()
    };
    let plan = Plan::new(&cfg, &specs, 0)?;
    let deltas: Vec<_> = (0..k).map(|i| plan.child(i)).collect::<Result<_, _>>()?;
    let name = |i: usize| model.tensors()[selected[i]].name.clone();
    let dims = |i: usize| model.tensors()[selected[i]].dims.clone();
    let child_values = |c: usize| -> Res<Vec<smd_onnx::TensorData>> {
        let mut v = values.clone();
        mutate::apply_all(&mut v, &deltas[c])?;
        Ok(v)
    };

    // Floor: K+1 passes, one session.
    let t = Instant::now();
    let mut s = rt.session_from_file(model_path, Vec::new())?;
    for _ in 0..=k {
        predict(&mut s, &data, &[], &outs)?;
    }
    drop(s);
    let floor = t.elapsed().as_secs_f64();
    println!(
        "floor            {floor:8.2} s  1.000x  ({} passes, one session)",
        k + 1
    );
    let report = |what: &str, secs: f64, agree: &str| {
        // Each strategy also scores the parent once, as evolve does: add one floor pass.
        println!(
            "{what:<16} {:8.2} s  {:.3}x  {agree}",
            secs + floor / f64::from(k + 1),
            (secs + floor / f64::from(k + 1)) / floor
        );
    };

    if which == "floor" {
        return Ok(());
    }
    // Template (evolve's way): in-place values, one session per child.
    let t = Instant::now();
    let template = onnx::external_template(&model, &selected)?
        .ok_or("the model's mutable tensors cannot be external initializers")?;
    let mut vals: Vec<(String, Arc<DynValue>)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        vals.push((
            name(i),
            Arc::new(tensor_value(&name(i), v.clone(), &dims(i))?),
        ));
    }
    let mut exact = Vec::new();
    // Where a child's time goes: apply its changes, build its session, its pass, drop the
    // session and undo the changes.
    let mut parts = [0.0f64; 4];
    let mut lap = |i: usize, t: &mut Instant| {
        parts[i] += t.elapsed().as_secs_f64();
        *t = Instant::now();
    };
    for ds in &deltas {
        let mut tp = Instant::now();
        let mut saved = Vec::new();
        for d in ds {
            let v = tensor_mut(Arc::get_mut(&mut vals[d.tensor].1).ok_or("shared")?)
                .ok_or("not float")?;
            saved.push(v.gather(&d.indices));
            mutate::apply_to(v, d)?;
        }
        lap(0, &mut tp);
        let mut s = rt.session_from_template(&template, &vals, model_path.parent(), None)?;
        lap(1, &mut tp);
        exact.push(predict(&mut s, &data, &[], &outs)?.remove(0));
        lap(2, &mut tp);
        drop(s);
        for (d, old) in ds.iter().zip(&saved) {
            tensor_mut(Arc::get_mut(&mut vals[d.tensor].1).ok_or("shared")?)
                .ok_or("not float")?
                .scatter(&d.indices, old);
        }
        lap(3, &mut tp);
    }
    report("template", t.elapsed().as_secs_f64(), "(evolve; exact)");
    let per = |x: f64| 1e3 * x / f64::from(k);
    println!(
        "  per child: apply {:.1} ms, session build {:.1} ms, pass {:.1} ms, drop + undo {:.1} ms (floor pass {:.1} ms)",
        per(parts[0]),
        per(parts[1]),
        per(parts[2]),
        per(parts[3]),
        1e3 * floor / f64::from(k + 1)
    );
    let agreement = |preds: &[Vec<usize>]| -> String {
        let same: usize = preds
            .iter()
            .zip(&exact)
            .map(|(p, e)| p.iter().zip(e).filter(|(a, b)| a == b).count())
            .sum();
        format!(
            "predictions equal to template's: {:.2}%",
            100.0 * same as f64 / (exact.len() * data.n) as f64
        )
    };

    // AddInitializer overrides, one session per child.
    if run("add-initializer") {
        let t = Instant::now();
        let mut preds = Vec::new();
        for c in 0..k as usize {
            let cv = child_values(c)?;
            let overrides = cv
                .into_iter()
                .enumerate()
                .map(|(i, v)| Ok((name(i), tensor_value(&name(i), v, &dims(i))?)))
                .collect::<Res<Vec<_>>>()?;
            let mut s = rt.session_from_file(model_path, overrides)?;
            preds.push(predict(&mut s, &data, &[], &outs)?.remove(0));
        }
        report(
            "add-initializer",
            t.elapsed().as_secs_f64(),
            &agreement(&preds),
        );
    }

    // Graph inputs: one session, the mutable tensors fed with every run.
    if run("graph-inputs") {
        let t = Instant::now();
        let mut proto = onnx::proto::ModelProto::decode(model.bytes())?;
        if let Some(g) = proto.graph.as_mut() {
            let names: Vec<String> = (0..selected.len()).map(name).collect();
            let moved: Vec<onnx::proto::TensorProto> = g
                .initializer
                .iter()
                .filter(|t| names.iter().any(|n| Some(n) == t.name.as_ref()))
                .cloned()
                .collect();
            g.initializer
                .retain(|t| !names.iter().any(|n| Some(n) == t.name.as_ref()));
            for t in moved {
                let d: Vec<Result<i64, &str>> = t.dims.iter().map(|&d| Ok(d)).collect();
                let dtype = onnx::DType::from_onnx(i64::from(t.data_type.unwrap_or(1)));
                g.input.push(onnx::build::value_info(
                    t.name.as_deref().unwrap_or(""),
                    dtype,
                    &d,
                ));
            }
        }
        let mut s = rt.session_from_memory(&proto.encode_to_vec())?;
        let mut preds = Vec::new();
        for c in 0..k as usize {
            let cv = child_values(c)?;
            let feeds: Vec<(String, DynValue)> = cv
                .into_iter()
                .enumerate()
                .map(|(i, v)| Ok((name(i), tensor_value(&name(i), v, &dims(i))?)))
                .collect::<Res<_>>()?;
            let extra: Vec<(String, &DynValue)> =
                feeds.iter().map(|(n, v)| (n.clone(), v)).collect();
            preds.push(predict(&mut s, &data, &extra, &outs)?.remove(0));
        }
        drop(s);
        report(
            "graph-inputs",
            t.elapsed().as_secs_f64(),
            &agreement(&preds),
        );
    }

    // Batched graphs of B members.
    if run("batched") {
        let t = Instant::now();
        let proto = ensemble::decode_model(&model)?;
        let mut preds = Vec::new();
        for group in (0..k).collect::<Vec<_>>().chunks(b.max(1)) {
            let varying: Vec<Varying> = (0..selected.len())
                .map(|i| {
                    let info = &model.tensors()[selected[i]];
                    let changes = group
                        .iter()
                        .map(|&c| {
                            plan.deltas(&Member::Child(c))
                                .ok()
                                .and_then(|ds| ds.into_iter().find(|d| d.tensor == i))
                                .map(|d| {
                                    let mut v = values[i].gather(&d.indices);
                                    let local = mutate::Delta {
                                        tensor: 0,
                                        indices: (0..d.indices.len() as u32).collect(),
                                        values: d.values,
                                    };
                                    let _ = mutate::apply(&mut v, &local);
                                    ensemble::Change {
                                        indices: d.indices,
                                        values: v,
                                    }
                                })
                        })
                        .collect();
                    Varying {
                        addr: TensorAddr {
                            scope: info.scope.clone(),
                            name: info.name.clone(),
                        },
                        dims: info.dims.clone(),
                        base: values[i].clone(),
                        changes,
                    }
                })
                .collect();
            let built = ensemble::compact(
                &proto,
                &varying,
                &vec![1.0; group.len()],
                &Heads::PerMember {
                    output: output.clone(),
                },
                &[],
            )?;
            let mut s = rt.session_from_memory(&built.model.encode_to_vec())?;
            let names: Vec<String> = (0..group.len())
                .map(|i| format!("smd/member/{i}/{output}"))
                .collect();
            preds.extend(predict(&mut s, &data, &[], &names)?);
        }
        report(
            &format!("batched (B={b})"),
            t.elapsed().as_secs_f64(),
            &agreement(&preds),
        );
    }
    Ok(())
}
