//! Properties of the children `mutate` writes, across modes (partition, density, layer), scale
//! rules (σ relative to each tensor's std, or absolute) and storage (float32, float16,
//! bfloat16, typed fields with float64 and varint float16, external data):
//!
//! - each child changes exactly the elements its recipe's subspace holds, by that subspace's
//!   noise (up to the rounding of the sum to the tensor's dtype), and the changes have the
//!   documented scale: their empirical standard deviation over a tensor is σ × the tensor's
//!   std, or σ with `--absolute-sigma`, within five standard errors of the sample size;
//! - biases and every other tensor that is not mutable keep their values bit for bit, and the
//!   file differs from the parent only in the changed elements' payload bytes (plus the
//!   recipe appended to `metadata_props`; for external data, the data file's name);
//! - partition children change disjoint elements that cover every tensor; density children
//!   change `round(P · n)` elements of each; layer children change whole tensors, each
//!   tensor in exactly one child.

use std::collections::BTreeSet;
use std::path::PathBuf;

use half::{bf16, f16};
use prost::Message;
use smd_onnx::TensorData;
use smd_onnx::mutate::{Plan, Selection, TensorSpec};
use smd_onnx::onnx::proto::ModelProto;
use smd_onnx::onnx::{Model, Storage, TensorInfo, TypedField};

use crate::util::{repo, smd};

/// (fixture, extra `mutate` flags): the typed fixture also without its varint float16 tensor,
/// so that its bytes can be compared one for one.
const CASES: [(&str, &[&str]); 6] = [
    ("mnist_mlp", &[]),
    ("digits_mlp_fp16", &[]),
    ("digits_mlp_bf16", &[]),
    ("digits_mlp_typed", &[]),
    ("digits_mlp_typed", &["--exclude", "bottom_f16"]),
    ("digits_mlp_external", &[]),
];

const MODES: [&[&str]; 3] = [
    &["--mode", "partition"],
    &["--mode", "density", "--density", "0.3"],
    &["--mode", "layer"],
];

/// (flags, σ, absolute).
const SCALES: [(&[&str], f64, bool); 2] = [
    (&["--sigma", "0.1"], 0.1, false),
    (&["--sigma", "0.02", "--absolute-sigma"], 0.02, true),
];

/// Children: three, but two in layer mode (at most one child per mutable tensor).
fn children(mode: &str) -> u32 {
    if mode == "layer" { 2 } else { 3 }
}

/// The distance from `|x|` to the next representable value of `v`'s dtype.
fn ulp(v: &TensorData, j: usize) -> f64 {
    match v {
        TensorData::F32(x) => {
            let a = x[j].abs();
            f64::from(f32::from_bits(a.to_bits() + 1) - a)
        }
        TensorData::F64(x) => {
            let a = x[j].abs();
            f64::from_bits(a.to_bits() + 1) - a
        }
        TensorData::F16(x) => {
            let a = x[j].to_f64().abs();
            f16::from_bits(f16::from_f64(a).to_bits() + 1).to_f64() - a
        }
        TensorData::BF16(x) => {
            let a = x[j].to_f64().abs();
            bf16::from_bits(bf16::from_f64(a).to_bits() + 1).to_f64() - a
        }
    }
}

fn val(v: &TensorData, j: usize) -> f64 {
    v.get_f64(j).unwrap()
}

/// Population standard deviation of the finite values, computed here independently of the
/// library.
fn std_of(v: &TensorData) -> f64 {
    let xs: Vec<f64> = (0..v.len())
        .map(|j| val(v, j))
        .filter(|x| x.is_finite())
        .collect();
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

/// The model decoded, with what a child may change blanked: metadata, the values of the
/// tensors in `mutable`, and external data locations.
fn skeleton(bytes: &[u8], mutable: &BTreeSet<String>) -> ModelProto {
    let mut m = ModelProto::decode(bytes).unwrap();
    m.metadata_props.clear();
    let g = m.graph.as_mut().unwrap();
    assert!(
        g.node.iter().all(|n| n.op_type() != "Constant"),
        "initializers only in these fixtures"
    );
    for t in &mut g.initializer {
        if mutable.contains(t.name()) {
            t.raw_data = None;
            t.float_data.clear();
            t.int32_data.clear();
            t.double_data.clear();
        }
        for e in &mut t.external_data {
            if e.key() == "location" {
                e.value = Some("LOCATION".into());
            }
        }
    }
    m
}

/// Byte offsets of each element's bytes in the file holding the tensor's payload (the model,
/// or its external data file); `None` for varint payloads (their size changes).
fn element_spans(t: &TensorInfo) -> Option<Vec<(usize, usize)>> {
    let width = t.dtype.raw_bytes(1)? as usize;
    match t.storage {
        Storage::Raw | Storage::External { .. } | Storage::Typed { packed: true, .. } => {}
        _ => return None,
    }
    if matches!(
        t.storage,
        Storage::Typed {
            field: TypedField::Int32Data | TypedField::Int64Data | TypedField::Uint64Data,
            ..
        }
    ) {
        return None;
    }
    let mut out = Vec::new();
    for r in t.payload_ranges() {
        let mut at = r.start as usize;
        while at < r.end as usize {
            out.push((at, at + width));
            at += width;
        }
    }
    assert_eq!(out.len() as u64, t.elements, "{}", t.name);
    Some(out)
}

/// `child` differs from `parent` only inside `allowed` byte spans (and after the parent's
/// length, where the child's recipe is appended when `appended`).
#[track_caller]
fn assert_bytes_only_in(
    parent: &[u8],
    child: &[u8],
    allowed: &[(usize, usize)],
    appended: bool,
    what: &str,
) {
    if appended {
        assert!(child.len() > parent.len(), "{what}: the recipe is appended");
    } else {
        assert_eq!(child.len(), parent.len(), "{what}");
    }
    let mut mask = vec![false; parent.len()];
    for &(a, b) in allowed {
        mask[a..b].iter_mut().for_each(|m| *m = true);
    }
    let stray: Vec<usize> = (0..parent.len())
        .filter(|&i| parent[i] != child[i] && !mask[i])
        .take(5)
        .collect();
    assert!(
        stray.is_empty(),
        "{what}: bytes changed outside the mutated elements at {stray:?}"
    );
}

/// The parent's side of one case: model, mutable tensors (in the library's order) and their
/// values and specs.
struct Parent {
    path: PathBuf,
    bytes: Vec<u8>,
    model: Model,
    selected: Vec<usize>,
    values: Vec<TensorData>,
    specs: Vec<TensorSpec>,
    names: BTreeSet<String>,
}

impl Parent {
    fn new(stem: &str, flags: &[&str]) -> Parent {
        let path = repo(&format!("models/{stem}.onnx"));
        let model = Model::open(&path).unwrap();
        let exclude = flags
            .iter()
            .position(|f| *f == "--exclude")
            .map(|i| regex::Regex::new(flags[i + 1]).unwrap());
        let selection = Selection {
            exclude,
            ..Selection::default()
        };
        let selected = selection.mutable_tensors(&model);
        let values: Vec<TensorData> = selected
            .iter()
            .map(|&t| model.read_values(&model.tensors()[t]).unwrap())
            .collect();
        let specs = selected
            .iter()
            .zip(&values)
            .map(|(&t, v)| TensorSpec::from_values(model.tensors()[t].key(), v))
            .collect();
        let names = selected
            .iter()
            .map(|&t| model.tensors()[t].name.clone())
            .collect();
        Parent {
            bytes: std::fs::read(&path).unwrap(),
            path,
            model,
            selected,
            values,
            specs,
            names,
        }
    }
}

/// What one case's children did to one tensor, pooled over the children.
#[derive(Default)]
struct Pooled {
    /// Child value − parent value at every element some child's subspace holds (once each).
    deltas: Vec<f64>,
    /// Half an ulp of the changed value there: how far rounding may move a delta.
    rounding: Vec<f64>,
    /// Per element: the children whose subspace holds it, and those whose value changed.
    owners: Vec<u32>,
    changers: Vec<u32>,
    /// Per element: |ε| at most an ulp of the parent's value (its change may round away).
    tiny: Vec<bool>,
}

#[test]
fn deltas_have_the_documented_scale_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (n, (stem, flags)) in CASES.iter().enumerate() {
        let parent = Parent::new(stem, flags);
        for (m, mode) in MODES.iter().enumerate() {
            for (sc, (scale_flags, sigma, absolute)) in SCALES.iter().enumerate() {
                let out = dir.path().join(format!("{n}-{m}-{sc}"));
                let what = format!("{stem} {flags:?} {mode:?} {scale_flags:?}");
                let mut a = vec!["mutate", parent.path.to_str().unwrap(), "--out"];
                let out_s = out.to_str().unwrap().to_string();
                a.push(&out_s);
                let k = children(mode[1]).to_string();
                a.extend(["--children", &k, "--seed", "21"]);
                a.extend_from_slice(flags);
                a.extend_from_slice(mode);
                a.extend_from_slice(scale_flags);
                let o = smd(&a);
                assert!(
                    o.status.success(),
                    "{what}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                let kids: Vec<PathBuf> = String::from_utf8(o.stdout)
                    .unwrap()
                    .lines()
                    .map(PathBuf::from)
                    .collect();
                assert_eq!(kids.len().to_string(), k);
                check_case(&parent, &kids, mode[1], *sigma, *absolute, &what);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, CASES.len() * MODES.len() * SCALES.len());
}

fn check_case(
    parent: &Parent,
    kids: &[PathBuf],
    mode: &str,
    sigma: f64,
    absolute: bool,
    what: &str,
) {
    let tensors = parent.model.tensors();
    let mut pooled: Vec<Pooled> = parent
        .values
        .iter()
        .map(|v| Pooled {
            owners: vec![0; v.len()],
            changers: vec![0; v.len()],
            tiny: vec![false; v.len()],
            ..Pooled::default()
        })
        .collect();
    for (c, kid) in kids.iter().enumerate() {
        let c32 = c as u32;
        let child = Model::open(kid).unwrap();
        let what = format!("{what} child {c}");
        // The plan from the child's own recipe (its tensor digest must match these specs).
        let stored = smd_onnx::lineage::from_model(&child).unwrap();
        assert_eq!(stored.recipes.len(), 1, "{what}");
        let plan: Plan = stored.recipes[0].plan(&parent.specs).unwrap();
        let mut allowed_model = Vec::new();
        let mut allowed_ext: Vec<Vec<(usize, usize)>> =
            vec![Vec::new(); parent.model.external_files().len()];
        let mut varint = false;
        // Every tensor that is not mutable keeps its values, bit for bit.
        for (i, t) in tensors.iter().enumerate() {
            if parent.selected.contains(&i) || !t.dtype.is_mutable_float() || t.elements == 0 {
                continue;
            }
            let (a, b) = (
                parent.model.read_values(t).unwrap(),
                child.read_values(&child.tensors()[i]).unwrap(),
            );
            assert!(
                (0..a.len()).all(|j| val(&a, j).to_bits() == val(&b, j).to_bits()),
                "{what}: {} changed",
                t.name
            );
        }
        for (ti, &t) in parent.selected.iter().enumerate() {
            let info = &tensors[t];
            let p = &parent.values[ti];
            let q = child.read_values(&child.tensors()[t]).unwrap();
            let n = p.len();
            // The scale: σ·std of the parent's values, or σ.
            let want_scale = if absolute { sigma } else { sigma * std_of(p) };
            let got_scale = f64::from(plan.scale(ti).unwrap());
            assert!(
                (got_scale / want_scale - 1.0).abs() < 1e-6,
                "{what} {}: scale {got_scale}, want {want_scale}",
                info.name
            );
            let idx = plan.child_indices(c32, ti).unwrap();
            match mode {
                "density" => assert_eq!(idx.len(), (0.3 * n as f64).round() as usize, "{what}"),
                "layer" => assert!(idx.is_empty() || idx.len() == n, "{what}: whole tensors"),
                _ => {}
            }
            let eps = plan.epsilon(ti).unwrap();
            let sign = f64::from(plan.sign(c32));
            let mut mine = vec![false; n];
            let spans = element_spans(info);
            varint |= spans.is_none();
            for &j in &idx {
                let j = j as usize;
                mine[j] = true;
                let d = val(&q, j) - val(p, j);
                let e = sign * f64::from(eps[j]);
                // The change is the subspace's noise, up to rounding the sum to the dtype.
                assert!(
                    (d - e).abs() <= ulp(&q, j),
                    "{what} {}[{j}]: changed by {d}, noise {e}",
                    info.name
                );
                let pool = &mut pooled[ti];
                if pool.owners[j] == 0 {
                    // Once per element: density children share the dense noise where their
                    // subsets overlap, and repeats would not be independent samples.
                    pool.deltas.push(d);
                    pool.rounding.push(ulp(&q, j) / 2.0);
                }
                pool.owners[j] += 1;
                pool.tiny[j] = e.abs() <= ulp(p, j);
                if d != 0.0 {
                    pool.changers[j] += 1;
                    if let Some(spans) = &spans {
                        match info.external_file() {
                            Some(f) => allowed_ext[f].push(spans[j]),
                            None => allowed_model.push(spans[j]),
                        }
                    }
                }
            }
            // Elements outside the subspace keep their bits.
            let stray = (0..n).find(|&j| !mine[j] && val(p, j).to_bits() != val(&q, j).to_bits());
            assert!(
                stray.is_none(),
                "{what} {}[{stray:?}] changed outside its subspace",
                info.name
            );
        }
        // Nothing but values (and the recipe, and an external data file's name) changed...
        let bytes = std::fs::read(kid).unwrap();
        assert!(
            skeleton(&bytes, &parent.names) == skeleton(&parent.bytes, &parent.names),
            "{what}: the child's structure differs from the parent's"
        );
        // ...and, byte for byte, only the changed elements' payload bytes.
        if !varint {
            if parent.model.has_external_data() {
                for (f, ext) in parent.model.external_files().iter().enumerate() {
                    let name = format!("{}.data", kid.file_name().unwrap().to_str().unwrap());
                    let theirs = std::fs::read(&ext.path).unwrap();
                    let mine = std::fs::read(kid.with_file_name(name)).unwrap();
                    assert_bytes_only_in(&theirs, &mine, &allowed_ext[f], false, &what);
                }
            } else {
                assert_bytes_only_in(&parent.bytes, &bytes, &allowed_model, true, &what);
            }
        }
    }
    for (ti, pool) in pooled.iter().enumerate() {
        let info = &tensors[parent.selected[ti]];
        let what = format!("{what} {}", info.name);
        match mode {
            // Disjoint and covering: one owner per element; a changed element has one child
            // that changed it, and an unchanged one a change too small to survive rounding.
            "partition" => {
                assert!(pool.owners.iter().all(|&o| o == 1), "{what}: owners");
                for j in 0..pool.owners.len() {
                    assert!(
                        pool.changers[j] == 1 || (pool.changers[j] == 0 && pool.tiny[j]),
                        "{what}[{j}]: changed by {} children",
                        pool.changers[j]
                    );
                }
            }
            "layer" => assert!(pool.owners.iter().all(|&o| o == 1), "{what}: one owner"),
            _ => {}
        }
        // The scale, measured: the deltas' root mean square (their mean is 0) is the noise
        // scale within five standard errors of a sample standard deviation of n values, plus
        // what rounding to the dtype may add (at most the RMS of half an ulp, by Minkowski).
        let n = pool.deltas.len() as f64;
        if n == 0.0 {
            continue;
        }
        let want = if absolute {
            sigma
        } else {
            sigma * std_of(&parent.values[ti])
        };
        let rms = (pool.deltas.iter().map(|d| d * d).sum::<f64>() / n).sqrt();
        let rounding = (pool.rounding.iter().map(|r| r * r).sum::<f64>() / n).sqrt() / want;
        let tol = 5.0 / (2.0 * n).sqrt() + rounding;
        assert!(
            (rms / want - 1.0).abs() <= tol,
            "{what}: deltas' RMS {rms}, want {want} (n = {n}, ±{tol})"
        );
        let mean = pool.deltas.iter().sum::<f64>() / n;
        assert!(
            mean.abs() <= 5.0 * want / n.sqrt() + rounding * want,
            "{what}: deltas' mean {mean}, scale {want}"
        );
        // The other rule's scale lies outside the accepted band: the check tells them apart.
        let other = if absolute {
            sigma * std_of(&parent.values[ti])
        } else {
            sigma
        };
        assert!(
            (other / want - 1.0).abs() > tol,
            "{what}: std {} too close to 1 to tell the rules apart",
            std_of(&parent.values[ti])
        );
    }
}

#[test]
fn noise_fixture_helpers_agree_with_inspect() {
    // The byte spans used above are the payload ranges `inspect --json` reports.
    let p = repo("models/digits_mlp_external.onnx");
    let m = Model::open(&p).unwrap();
    let j: serde_json::Value =
        serde_json::from_slice(&smd(&["inspect", p.to_str().unwrap(), "--json"]).stdout).unwrap();
    for (t, jt) in m.tensors().iter().zip(j["tensors"].as_array().unwrap()) {
        assert_eq!(jt["key"], t.key());
        if let Storage::External { offset, length, .. } = &t.storage {
            assert_eq!(jt["external"]["offset"], *offset);
            assert_eq!(jt["external"]["length"], *length);
            let spans = element_spans(t).unwrap();
            assert_eq!(spans[0].0 as u64, *offset);
            assert_eq!(spans.last().unwrap().1 as u64, offset + length);
        }
    }
}
