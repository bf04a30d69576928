//! Model I/O on the committed fixtures and on generated models: truncation anywhere, values
//! against an independent decoder, byte-faithful children, atomic and safe writes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use prost::Message;
use smd_onnx::TensorData;
use smd_onnx::onnx::proto::{GraphProto, ModelProto, TensorProto};
use smd_onnx::onnx::{DType, Model, ModelError, Storage, TypedField, child_bytes, write_child};
use smd_onnx::output::OutputError;

use crate::util::repo;

/// Every fixture model, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo("models"))
        .expect("models/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    v.sort();
    assert!(v.len() >= 10, "fixture models missing: {v:?}");
    v
}

fn open(p: &Path) -> Model {
    Model::open(p).unwrap_or_else(|e| panic!("{e}"))
}

/// Visits every tensor the golden files list (initializers and Constant `value`s, any depth),
/// with its listed name.
fn for_each_tensor(g: &mut GraphProto, f: &mut dyn FnMut(&str, &mut TensorProto)) {
    for t in &mut g.initializer {
        let n = t.name.clone().unwrap_or_default();
        f(&n, t);
    }
    for node in &mut g.node {
        let out = node.output.first().cloned().unwrap_or_default();
        let constant = node.op_type.as_deref() == Some("Constant");
        for a in &mut node.attribute {
            if constant
                && a.name.as_deref() == Some("value")
                && let Some(t) = a.t.as_mut()
            {
                f(&out, t);
            }
            if let Some(sg) = a.g.as_mut() {
                for_each_tensor(sg, f);
            }
            for sg in &mut a.graphs {
                for_each_tensor(sg, f);
            }
        }
    }
}

/// Values decoded straight from the prost message (and the external file when needed): an
/// independent decoder to check `read_values` against.
fn prost_values(t: &TensorProto, dir: &Path) -> Option<TensorData> {
    let dtype = DType::from_onnx(i64::from(t.data_type?));
    let raw: Option<Vec<u8>> = if t.data_location == Some(1) {
        let kv: HashMap<_, _> = t
            .external_data
            .iter()
            .map(|e| {
                (
                    e.key.clone().unwrap_or_default(),
                    e.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        let data = std::fs::read(dir.join(&kv["location"])).ok()?;
        let off: usize = kv.get("offset").map_or(0, |o| o.parse().unwrap());
        let len: usize = kv["length"].parse().unwrap();
        Some(data[off..off + len].to_vec())
    } else {
        t.raw_data.as_ref().map(|b| b.to_vec())
    };
    let le = |n: usize| {
        raw.as_ref()
            .map(|r| r.chunks_exact(n).map(|c| c.to_vec()).collect::<Vec<_>>())
    };
    Some(match dtype {
        DType::F32 => TensorData::F32(match le(4) {
            Some(c) => c
                .iter()
                .map(|b| f32::from_le_bytes(b[..].try_into().unwrap()))
                .collect(),
            None => t.float_data.clone(),
        }),
        DType::F64 => TensorData::F64(match le(8) {
            Some(c) => c
                .iter()
                .map(|b| f64::from_le_bytes(b[..].try_into().unwrap()))
                .collect(),
            None => t.double_data.clone(),
        }),
        DType::F16 => TensorData::F16(match le(2) {
            Some(c) => c.iter().map(|b| f16::from_le_bytes([b[0], b[1]])).collect(),
            None => t
                .int32_data
                .iter()
                .map(|&x| f16::from_bits(x as u16))
                .collect(),
        }),
        DType::BF16 => TensorData::BF16(match le(2) {
            Some(c) => c
                .iter()
                .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                .collect(),
            None => t
                .int32_data
                .iter()
                .map(|&x| bf16::from_bits(x as u16))
                .collect(),
        }),
        _ => return None,
    })
}

/// Bitwise equality (NaN-safe).
fn same_bits(a: &TensorData, b: &TensorData) -> bool {
    a.len() == b.len()
        && (0..a.len()).all(|i| a.get_f64(i).map(f64::to_bits) == b.get_f64(i).map(f64::to_bits))
}

/// The offsets of the top-level fields from which the file holds nothing the model needs:
/// `metadata_props` entries (ModelProto field 14; onnxruntime's quantizer appends one), and
/// `opset_import` entries (field 8) that repeat an earlier one (skl2onnx repeats the default
/// domain's) or import a domain no main-graph node uses.
fn metadata_tail(bytes: &[u8]) -> Vec<usize> {
    let varint = |p: &mut usize| {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = bytes[*p];
            *p += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    };
    let mut fields = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let start = p;
        let key = varint(&mut p);
        match key & 7 {
            0 => {
                varint(&mut p);
            }
            2 => p += varint(&mut p) as usize,
            w => panic!("top-level wire type {w}"),
        }
        fields.push((start, p, key >> 3));
    }
    let domain = |d: Option<&str>| match d.unwrap_or("") {
        "ai.onnx" => String::new(),
        d => d.to_string(),
    };
    let used: HashSet<String> = ModelProto::decode(bytes)
        .unwrap()
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| domain(n.domain.as_deref()))
        .collect();
    let mut tail = Vec::new();
    for (k, &(start, end, number)) in fields.iter().enumerate().rev() {
        // One top-level field is a ModelProto of its own.
        let one = ModelProto::decode(&bytes[start..end]).unwrap();
        let unneeded = number == 8
            && (fields[..k]
                .iter()
                .any(|&(s, e, n)| n == 8 && bytes[s..e] == bytes[start..end])
                || !used.contains(&domain(one.opset_import[0].domain.as_deref())));
        if number != 14 && !unneeded {
            break;
        }
        tail.push(start);
    }
    tail
}

#[test]
fn every_fixture_cut_anywhere_is_an_error() {
    for p in fixtures() {
        let bytes = std::fs::read(&p).unwrap();
        // Every offset for the small models; a stride for the large one.
        let step = if bytes.len() > 50_000 { 37 } else { 1 };
        let complete = metadata_tail(&bytes);
        for cut in (0..bytes.len()).step_by(step) {
            if complete.contains(&cut) {
                // Only whole trailing metadata entries are cut off: still a valid model.
                continue;
            }
            let r = Model::from_bytes(bytes[..cut].to_vec(), &p);
            assert!(
                r.is_err(),
                "{} cut at {cut} of {} was accepted",
                p.display(),
                bytes.len()
            );
            let msg = r.unwrap_err().to_string();
            assert!(
                msg.contains(&p.display().to_string()) && !msg.contains('\n'),
                "{msg}"
            );
        }
    }
}

#[test]
fn read_values_match_an_independent_decoder() {
    for p in fixtures() {
        let m = open(&p);
        let mut parsed = ModelProto::decode(&std::fs::read(&p).unwrap()[..]).unwrap();
        let dir = p.parent().unwrap().to_path_buf();
        let mut checked = 0;
        for_each_tensor(parsed.graph.as_mut().unwrap(), &mut |name, t| {
            let Some(want) = prost_values(t, &dir) else {
                return;
            };
            let i = m.tensors().iter().position(|x| x.name == name).unwrap();
            let got = m.read_values(&m.tensors()[i]).unwrap();
            assert!(same_bits(&got, &want), "{}: {name}", p.display());
            checked += 1;
        });
        // ai.onnx.ml weight attributes: their `floats` as prost decodes them.
        for (j, n) in parsed.graph.as_ref().unwrap().node.iter().enumerate() {
            let label = n.name.clone().filter(|l| !l.is_empty());
            let label = label.unwrap_or_else(|| format!("node{j}"));
            for a in n.attribute.iter().filter(|a| !a.floats.is_empty()) {
                let name = format!("{label}.{}", a.name.as_deref().unwrap_or(""));
                if let Some(t) = m.tensors().iter().find(|t| t.name == name) {
                    let got = m.read_values(t).unwrap();
                    assert_eq!(got, TensorData::F32(a.floats.clone()), "{name}");
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 0 || p.ends_with("iris_skl_mlp.onnx"),
            "{}",
            p.display()
        );
        // And every float tensor is readable, wherever it lives.
        for t in m.tensors() {
            if t.dtype.is_mutable_float() {
                let v = m.read_values(t).unwrap();
                assert_eq!(v.len() as u64, t.elements, "{}", t.name);
            }
        }
    }
}

#[test]
fn zero_change_children_are_byte_identical() {
    for p in fixtures() {
        let m = open(&p);
        let d = tempfile::tempdir().unwrap();
        // Same file name in another folder: the external location stays the same too.
        let out = d.path().join(p.file_name().unwrap());
        let written = write_child(&m, &[], &out).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&p).unwrap(),
            "{}",
            p.display()
        );
        assert_eq!(written.len(), 1 + m.external_files().len());
        for (f, w) in m.external_files().iter().zip(&written[1..]) {
            assert_eq!(std::fs::read(w).unwrap(), std::fs::read(&f.path).unwrap());
        }
        if !m.has_external_data() {
            assert_eq!(child_bytes(&m, &[]).unwrap(), std::fs::read(&p).unwrap());
        }
        let c = open(&out);
        assert_eq!(c.content_hash().unwrap(), m.content_hash().unwrap());
    }
}

#[test]
fn external_child_under_another_name_differs_only_in_location() {
    let p = repo("models/digits_mlp_external.onnx");
    let m = open(&p);
    assert!(m.has_external_data());
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("kid.onnx");
    let w = write_child(&m, &[], &out).unwrap();
    assert_eq!(w, vec![out.clone(), d.path().join("kid.onnx.data")]);
    assert_eq!(
        std::fs::read(&w[1]).unwrap(),
        std::fs::read(&m.external_files()[0].path).unwrap()
    );
    // Decoded, the child is the parent with `location` renamed.
    let mut parent = ModelProto::decode(&std::fs::read(&p).unwrap()[..]).unwrap();
    let loc = m.external_files()[0].location.clone();
    for_each_tensor(parent.graph.as_mut().unwrap(), &mut |_, t| {
        for e in &mut t.external_data {
            if e.key.as_deref() == Some("location") {
                assert_eq!(e.value.as_deref(), Some(loc.as_str()));
                e.value = Some("kid.onnx.data".into());
            }
        }
    });
    let child = std::fs::read(&out).unwrap();
    assert_eq!(ModelProto::decode(&child[..]).unwrap(), parent);
    assert_eq!(
        child.len() as i64 - std::fs::metadata(&p).unwrap().len() as i64,
        m.tensors()
            .iter()
            .filter(|t| t.external_file().is_some())
            .count() as i64
            * ("kid.onnx.data".len() as i64 - loc.len() as i64)
    );
}

/// New values for a tensor: a deterministic function of the old ones, never equal to them.
fn changed(v: &TensorData) -> TensorData {
    match v {
        TensorData::F32(x) => TensorData::F32(
            x.iter()
                .enumerate()
                .map(|(i, a)| -a + 1.0 + i as f32)
                .collect(),
        ),
        TensorData::F64(x) => TensorData::F64(
            x.iter()
                .enumerate()
                .map(|(i, a)| -a + 1.0 + i as f64)
                .collect(),
        ),
        TensorData::F16(x) => TensorData::F16(
            x.iter()
                .enumerate()
                .map(|(i, a)| f16::from_f32(-a.to_f32() + 1.0 + (i % 512) as f32))
                .collect(),
        ),
        TensorData::BF16(x) => TensorData::BF16(
            x.iter()
                .enumerate()
                .map(|(i, a)| bf16::from_f32(-a.to_f32() + 1.0 + (i % 512) as f32))
                .collect(),
        ),
    }
}

fn le_bytes(v: &TensorData) -> Vec<u8> {
    match v {
        TensorData::F32(x) => x.iter().flat_map(|a| a.to_le_bytes()).collect(),
        TensorData::F64(x) => x.iter().flat_map(|a| a.to_le_bytes()).collect(),
        TensorData::F16(x) => x.iter().flat_map(|a| a.to_le_bytes()).collect(),
        TensorData::BF16(x) => x.iter().flat_map(|a| a.to_le_bytes()).collect(),
    }
}

#[test]
fn children_change_exactly_the_payload_bytes() {
    for p in fixtures() {
        let m = open(&p);
        // Change every float tensor (the writer does not apply the selection rule).
        let changes: Vec<(usize, TensorData)> = m
            .tensors()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.dtype.is_mutable_float() && t.elements > 0)
            .map(|(i, t)| (i, changed(&m.read_values(t).unwrap())))
            .collect();
        assert!(!changes.is_empty(), "{}", p.display());
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join(p.file_name().unwrap());
        let written = write_child(&m, &changes, &out).unwrap();
        let c = open(&out);
        for (i, v) in &changes {
            let got = c.read_values(&c.tensors()[*i]).unwrap();
            assert!(
                same_bits(&got, v),
                "{}: {}",
                p.display(),
                m.tensors()[*i].name
            );
        }
        for (a, b) in m.tensors().iter().zip(c.tensors()) {
            assert_eq!(
                (&a.name, &a.dims, a.dtype, &a.storage),
                (&b.name, &b.dims, b.dtype, &b.storage)
            );
        }

        let parent = std::fs::read(&p).unwrap();
        let child = std::fs::read(&out).unwrap();
        let varint = changes.iter().any(|(i, _)| {
            matches!(
                m.tensors()[*i].storage,
                Storage::Typed {
                    field: TypedField::Int32Data,
                    ..
                }
            )
        });
        if !varint {
            // Same size: the payload ranges hold the new values, every other byte is the parent's.
            let mut expect = parent.clone();
            let mut ext_expect: Vec<Vec<u8>> = m
                .external_files()
                .iter()
                .map(|f| std::fs::read(&f.path).unwrap())
                .collect();
            for (i, v) in &changes {
                let t = &m.tensors()[*i];
                let bytes = le_bytes(v);
                let ranges = t.payload_ranges();
                let target = match t.external_file() {
                    Some(f) => &mut ext_expect[f],
                    None => &mut expect,
                };
                let width = bytes.len() / t.elements as usize;
                let mut vals = bytes.chunks(width);
                for r in &ranges {
                    let (s, e) = (r.start as usize, r.end as usize);
                    let packed = matches!(t.storage, Storage::Raw | Storage::External { .. })
                        || matches!(t.storage, Storage::Typed { packed: true, .. });
                    if packed {
                        let n = (e - s) / width;
                        let v: Vec<u8> = vals.by_ref().take(n).flatten().copied().collect();
                        target[s..e].copy_from_slice(&v);
                    } else {
                        // Unpacked (value_float(s)): each value keeps its key before it.
                        let mut at = s;
                        while at < e {
                            let key = if target[at] < 0x80 { 1 } else { 2 };
                            let v = vals.next().unwrap();
                            target[at + key..at + key + width].copy_from_slice(v);
                            at += key + width;
                        }
                    }
                }
                assert!(vals.next().is_none(), "{}: values left over", t.name);
            }
            assert_eq!(child, expect, "{}", p.display());
            for (k, w) in written[1..].iter().enumerate() {
                assert_eq!(std::fs::read(w).unwrap(), ext_expect[k], "{}", w.display());
            }
        } else {
            // Varint payloads change size: the decoded child is the parent with those values.
            let mut expect = ModelProto::decode(&parent[..]).unwrap();
            let by_name: HashMap<String, &TensorData> = changes
                .iter()
                .map(|(i, v)| (m.tensors()[*i].name.clone(), v))
                .collect();
            for_each_tensor(expect.graph.as_mut().unwrap(), &mut |name, t| {
                let Some(v) = by_name.get(name) else { return };
                if t.raw_data.is_some() {
                    t.raw_data = Some(le_bytes(v).into());
                } else {
                    match v {
                        TensorData::F32(x) => t.float_data = x.clone(),
                        TensorData::F64(x) => t.double_data = x.clone(),
                        TensorData::F16(x) => {
                            t.int32_data = x.iter().map(|a| i32::from(a.to_bits())).collect()
                        }
                        TensorData::BF16(x) => {
                            t.int32_data = x.iter().map(|a| i32::from(a.to_bits())).collect()
                        }
                    }
                }
            });
            let got = ModelProto::decode(&child[..]).unwrap();
            assert!(got == expect, "{}: decoded child differs", p.display());
            // Bytes before the first changed payload are untouched.
            let first = changes
                .iter()
                .flat_map(|(i, _)| m.tensors()[*i].payload_ranges())
                .map(|r| r.start)
                .min()
                .unwrap();
            let first_prefix = m
                .tensors()
                .iter()
                .filter(|t| !t.payload_ranges().is_empty())
                .count();
            assert!(first_prefix > 0);
            let untouched = (first as usize).min(64);
            assert_eq!(child[..untouched], parent[..untouched]);
        }
        // The parent's files are untouched.
        assert_eq!(std::fs::read(&p).unwrap(), parent);
    }
}

#[test]
fn writes_are_atomic_and_never_touch_inputs() {
    let p = repo("models/digits_mlp_external.onnx");
    let d = tempfile::tempdir().unwrap();
    // Work on a copy so a bug cannot damage the repository's fixture.
    let mp = d.path().join("m.onnx");
    std::fs::copy(&p, &mp).unwrap();
    std::fs::copy(
        repo("models/digits_mlp_external.onnx.data"),
        d.path().join("digits_mlp_external.onnx.data"),
    )
    .unwrap();
    let before: Vec<Vec<u8>> = [&mp, &d.path().join("digits_mlp_external.onnx.data")]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let m = open(&mp);
    assert!(matches!(
        write_child(&m, &[], &mp),
        Err(ModelError::Output(OutputError::Overwrite { .. }))
    ));
    // A child whose data file name would be the parent's data file.
    let clash = d.path().join("digits_mlp_external.onnx");
    assert!(matches!(
        write_child(&m, &[], &clash),
        Err(ModelError::Output(OutputError::Overwrite { .. }))
    ));
    // A folder that does not exist: error, nothing written anywhere.
    let r = write_child(&m, &[], &d.path().join("no/such/dir/c.onnx"));
    assert!(r.is_err());
    // A bad change: nothing written.
    let out = d.path().join("c.onnx");
    let r = write_child(&m, &[(0, TensorData::F64(vec![0.0]))], &out);
    assert!(r.is_err());
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["digits_mlp_external.onnx.data", "m.onnx"]);
    let after: Vec<Vec<u8>> = [&mp, &d.path().join("digits_mlp_external.onnx.data")]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn facts_of_fixtures() {
    let m = open(&repo("models/digits_two_inputs.onnx"));
    let f = m.facts();
    let names: Vec<&str> = f.inputs.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["left", "right"]);
    assert_eq!(f.inputs[0].ty.to_string(), "float32[N, 32]");
    assert_eq!(f.onnx_opset(), Some(17));
    let m = open(&repo("models/iris_skl_mlp.onnx"));
    let outs: Vec<String> = m
        .facts()
        .outputs
        .iter()
        .map(|v| format!("{} {}", v.name, v.ty))
        .collect();
    assert_eq!(outs, ["label int64[N]", "probabilities float32[N, 3]"]);
    let domains: Vec<&str> = m.facts().opsets.iter().map(|o| o.domain.as_str()).collect();
    assert_eq!(domains, ["", "ai.onnx.ml"]);
}

/// The fuzz target's checks (fuzz/fuzz_targets/model_index.rs) over the committed fuzz corpus,
/// so its findings stay fixed on stable Rust without cargo-fuzz.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = repo("fuzz/corpus/model_index");
    let mut n = 0;
    let mut indexed = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        n += 1;
        let Ok(model) = Model::from_bytes(data.clone(), "/nonexistent-fuzz/model.onnx") else {
            continue;
        };
        indexed += 1;
        let (mut changes, mut same) = (Vec::new(), Vec::new());
        for (i, t) in model.tensors().iter().enumerate() {
            if let Ok(v) = model.read_values(t) {
                assert_eq!(v.len() as u64, t.elements, "{}", p.display());
                // Quantized values are rounded when written: they must round-trip unchanged.
                if t.quantization().is_some_and(|q| q.is_ok()) {
                    same.push((i, v));
                } else {
                    changes.push((i, changed(&v)));
                }
            }
        }
        assert!(child_bytes(&model, &[]).unwrap() == data, "{}", p.display());
        assert!(
            child_bytes(&model, &same).unwrap() == data,
            "{}",
            p.display()
        );
        let child = child_bytes(&model, &changes).unwrap();
        let again = Model::from_bytes(child, "/nonexistent-fuzz/child.onnx")
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        for (i, v) in &changes {
            let got = again.read_values(&again.tensors()[*i]).unwrap();
            assert!(same_bits(&got, v), "{}: tensor {i}", p.display());
        }
    }
    assert!(n > 100 && indexed > 10, "{n} inputs, {indexed} indexed");
}
