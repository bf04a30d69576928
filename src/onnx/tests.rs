//! Unit tests of the scanner, reader and writer on models built with the prost types.

use half::{bf16, f16};
use prost::Message;

use super::build::*;
use super::proto::{self, ModelProto, TensorProto};
use super::*;
use crate::mutate::{Mutability, Selection};
use crate::output::OutputError;

const FAKE: &str = "/nonexistent-smd-test/model.onnx";

fn open(bytes: Vec<u8>) -> Model {
    match Model::from_bytes(bytes, FAKE) {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

/// The default rule's verdict.
fn verdict(t: &TensorInfo) -> Mutability {
    Selection::default().judge(t)
}

fn open_err(bytes: Vec<u8>) -> String {
    match Model::from_bytes(bytes, FAKE) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn simple(inits: Vec<TensorProto>) -> Vec<u8> {
    encode(&model(graph("g", vec![], inits, vec![], vec![])))
}

fn key(field: u32, wire: u8) -> Vec<u8> {
    let mut b = Vec::new();
    wire::put_varint(&mut b, u64::from(field) << 3 | u64::from(wire));
    b
}

fn len_field(field: u32, content: &[u8]) -> Vec<u8> {
    let mut b = key(field, 2);
    wire::put_varint(&mut b, content.len() as u64);
    b.extend_from_slice(content);
    b
}

/// A model whose main graph holds one initializer given as raw TensorProto bytes.
fn model_with_tensor_bytes(tensor: &[u8]) -> Vec<u8> {
    let mut g = proto::GraphProto {
        name: Some("g".into()),
        ..Default::default()
    }
    .encode_to_vec();
    g.extend(len_field(5, tensor));
    let mut m = ModelProto {
        ir_version: Some(9),
        ..Default::default()
    }
    .encode_to_vec();
    m.extend(len_field(7, &g));
    m.extend(len_field(8, &[0x10, 17]));
    m
}

fn header(name: &str, dtype: DType, dims: &[i64]) -> Vec<u8> {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype.to_onnx()),
        dims: dims.to_vec(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn f16s(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}
fn bf16s(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

const V6: [f32; 6] = [1.5f32, -2.25, 3.0, 0.0, 1e-3, 7.0];

/// One tensor in each storage form, values [`V6`] (float64: scaled by 1.000001).
fn storage_forms_model() -> Vec<u8> {
    let v = V6;
    let d = [2i64, 3];
    let vd: Vec<f64> = v.iter().map(|&x| f64::from(x) * 1.000001).collect();
    encode(&model(graph(
        "g",
        vec![
            constant("c0", "const_raw", f32_raw("", &d, &v)),
            node(
                "Constant",
                "c1",
                &[],
                &["cf"],
                vec![attr_float("value_float", 0.5)],
            ),
            node(
                "Constant",
                "c2",
                &[],
                &["cfs"],
                vec![attr_floats("value_floats", &[1.0, 2.0, 3.0])],
            ),
            node(
                "Constant",
                "c3",
                &[],
                &["cis"],
                vec![attr_ints("value_ints", &[1, 2])],
            ),
        ],
        vec![
            f32_raw("f32_raw", &d, &v),
            f32_typed("f32_typed", &d, &v),
            f64_raw("f64_raw", &d, &vd),
            f64_typed("f64_typed", &d, &vd),
            f16_raw("f16_raw", &d, &f16s(&v)),
            f16_typed("f16_typed", &d, &f16s(&v)),
            bf16_raw("bf16_raw", &d, &bf16s(&v)),
            bf16_typed("bf16_typed", &d, &bf16s(&v)),
            i64_typed("shape", &[2], &[3, 2]),
        ],
        vec![],
        vec![],
    )))
}

#[test]
fn every_storage_form_reads_back() {
    let v = V6;
    let vd: Vec<f64> = v.iter().map(|&x| f64::from(x) * 1.000001).collect();
    let m = open(storage_forms_model());
    let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "f32_raw",
            "f32_typed",
            "f64_raw",
            "f64_typed",
            "f16_raw",
            "f16_typed",
            "bf16_raw",
            "bf16_typed",
            "shape",
            "const_raw",
            "cf",
            "cfs",
            "cis"
        ]
    );
    let read = |n: &str| m.read_values(&m.tensors()[m.find(n).unwrap()]).unwrap();
    for n in ["const_raw", "f32_raw", "f32_typed"] {
        assert_eq!(read(n), TensorData::F32(v.to_vec()), "{n}");
    }
    for n in ["f64_raw", "f64_typed"] {
        assert_eq!(read(n), TensorData::F64(vd.clone()), "{n}");
    }
    for n in ["f16_raw", "f16_typed"] {
        assert_eq!(read(n), TensorData::F16(f16s(&v)), "{n}");
    }
    for n in ["bf16_raw", "bf16_typed"] {
        assert_eq!(read(n), TensorData::BF16(bf16s(&v)), "{n}");
    }
    assert_eq!(read("cf"), TensorData::F32(vec![0.5]));
    assert_eq!(read("cfs"), TensorData::F32(vec![1.0, 2.0, 3.0]));
    let t = |n: &str| &m.tensors()[m.find(n).unwrap()];
    assert_eq!(t("cf").storage, Storage::ValueFloat);
    assert_eq!(t("cf").dims, Vec::<i64>::new());
    assert_eq!(t("cfs").dims, vec![3]);
    assert_eq!(t("cis").dtype, DType::I64);
    assert_eq!(t("cis").elements, 2);
    assert_eq!(t("const_raw").location, Location::Constant);
    assert_eq!(t("const_raw").node.as_deref(), Some("c0"));
    assert_eq!(
        t("f16_typed").storage,
        Storage::Typed {
            field: TypedField::Int32Data,
            packed: true
        }
    );
    assert!(m.read_values(t("shape")).is_err());
    // Default rule.
    assert!(verdict(t("f32_raw")).is_mutable());
    assert!(verdict(t("const_raw")).is_mutable());
    assert_eq!(verdict(t("cfs")).reason(), Some("1-d (bias/norm)"));
    assert_eq!(verdict(t("cf")).reason(), Some("scalar"));
    assert_eq!(verdict(t("shape")).reason(), Some("int64"));
    let all = Selection {
        all_float: true,
        ..Default::default()
    };
    assert!(all.verdicts(&m)[m.find("cfs").unwrap()].is_mutable());
    assert_eq!(Selection::default().mutable_tensors(&m).len(), 9);
}

#[test]
fn payload_ranges_point_at_the_values() {
    let v = [1.0f32, 2.0, 3.0, 4.0];
    let bytes = simple(vec![f32_raw("w", &[2, 2], &v), f32_typed("t", &[2, 2], &v)]);
    let m = open(bytes.clone());
    for t in m.tensors() {
        let r = t.payload_ranges();
        assert_eq!(r.len(), 1);
        let s = &bytes[r[0].start as usize..r[0].end as usize];
        assert_eq!(s, bytemuck::cast_slice::<f32, u8>(&v));
    }
}

#[test]
fn unpacked_typed_fields_read_and_write() {
    let v = [1.0f32, -2.0, 3.5, 4.25];
    let mut t = header("u32", DType::F32, &[2, 2]);
    prost::encoding::float::encode_repeated(4, &v, &mut t);
    let bytes = model_with_tensor_bytes(&t);
    let m = open(bytes.clone());
    let info = &m.tensors()[0];
    assert_eq!(
        info.storage,
        Storage::Typed {
            field: TypedField::FloatData,
            packed: false
        }
    );
    assert_eq!(m.read_values(info).unwrap(), TensorData::F32(v.to_vec()));
    let new = vec![9.0f32, 8.0, 7.0, 6.0];
    let child = child_bytes(&m, &[(0, TensorData::F32(new.clone()))]).unwrap();
    assert_eq!(child.len(), bytes.len());
    let c = open(child);
    assert_eq!(
        c.read_values(&c.tensors()[0]).unwrap(),
        TensorData::F32(new)
    );

    // float16 bits as unpacked varints, with values whose varint width changes.
    let h = f16s(&[1.0, 0.0, -1.0, 65504.0]);
    let bits: Vec<i32> = h.iter().map(|x| i32::from(x.to_bits())).collect();
    let mut t = header("u16", DType::F16, &[4]);
    prost::encoding::int32::encode_repeated(5, &bits, &mut t);
    let bytes = model_with_tensor_bytes(&t);
    let m = open(bytes);
    assert_eq!(m.read_values(&m.tensors()[0]).unwrap(), TensorData::F16(h));
    let new = f16s(&[0.0, 0.0, 2.0, -0.5]);
    let child = child_bytes(&m, &[(0, TensorData::F16(new.clone()))]).unwrap();
    let c = open(child.clone());
    assert_eq!(
        c.read_values(&c.tensors()[0]).unwrap(),
        TensorData::F16(new)
    );
    // Still a valid protobuf for prost.
    assert!(ModelProto::decode(&child[..]).is_ok());
}

#[test]
fn zero_changes_are_byte_identical() {
    let v = [1.0f32, 2.0, 3.0, 4.0];
    let bytes = simple(vec![
        f32_raw("w", &[2, 2], &v),
        f16_typed("h", &[4], &f16s(&v)),
    ]);
    let m = open(bytes.clone());
    assert_eq!(child_bytes(&m, &[]).unwrap(), bytes);
}

/// Builds nested subgraphs: main → If(then: Constant + initializer; else: Loop(body: Constant)).
fn nested_model() -> Vec<u8> {
    let w = [1.0f32; 6];
    let body = graph(
        "body",
        vec![constant("deep", "deep_w", f32_raw("", &[2, 3], &w))],
        vec![],
        vec![],
        vec![],
    );
    let then_g = graph(
        "then_g",
        vec![
            constant("c_then", "then_w", f16_typed("", &[2, 3], &f16s(&w))),
            node("Resize", "rs", &["x", "", "scales"], &["y"], vec![]),
        ],
        vec![f32_raw("then_init", &[3, 2], &w)],
        vec![],
        vec![],
    );
    let else_g = graph(
        "else_g",
        vec![node(
            "Loop",
            "",
            &["", ""],
            &["o"],
            vec![attr_graph("body", body)],
        )],
        vec![],
        vec![],
        vec![],
    );
    encode(&model(graph(
        "main",
        vec![node(
            "If",
            "If_0",
            &["cond"],
            &["out"],
            vec![
                attr_graph("then_branch", then_g),
                attr_graph("else_branch", else_g),
            ],
        )],
        vec![
            f32_raw("scales", &[4], &[1.0, 1.0, 2.0, 2.0]),
            f32_raw("top", &[2, 3], &w),
        ],
        vec![value_info("cond", DType::Bool, &[])],
        vec![value_info("out", DType::F32, &[Err("N"), Ok(3)])],
    )))
}

#[test]
fn nested_subgraphs_scopes_and_shape_uses() {
    let m = open(nested_model());
    let keys: Vec<&str> = m.tensors().iter().map(|t| t.key()).collect();
    // Python onnx's order: a graph's initializers, then what its nodes hold, depth first.
    assert_eq!(
        keys,
        [
            "scales",
            "top",
            "If_0/then_branch/then_init",
            "If_0/then_branch/then_w",
            "If_0/else_branch/node0/body/deep_w",
        ]
    );
    let t = &m.tensors()[4];
    assert_eq!(t.graph_name, "body");
    assert_eq!(t.scope, "If_0/else_branch/node0/body");
    assert_eq!(t.location, Location::Constant);
    assert_eq!(m.tensors()[3].graph_name, "then_g");
    assert_eq!(m.tensors()[1].graph_name, "main");
    // The main-graph `scales` feeds a Resize inside the then-branch.
    let all = Selection {
        all_float: true,
        ..Default::default()
    };
    let mu = all.verdicts(&m);
    assert_eq!(mu[0].reason(), Some("shape input of Resize 'rs'"));
    assert!(mu.iter().enumerate().all(|(i, x)| i == 0 || x.is_mutable()));
    // Values and writing at depth.
    let new = TensorData::F16(f16s(&[0.0, 1.0, 2.0, 300.0, -4.0, 5.0]));
    let child = child_bytes(&m, &[(3, new.clone())]).unwrap();
    let c = open(child.clone());
    assert_eq!(c.read_values(&c.tensors()[3]).unwrap(), new);
    for i in [0, 1, 2, 4] {
        assert_eq!(
            c.read_values(&c.tensors()[i]).ok(),
            m.read_values(&m.tensors()[i]).ok()
        );
    }
    assert!(ModelProto::decode(&child[..]).is_ok());
    // Facts.
    let f = m.facts();
    assert_eq!(f.ir_version, Some(9));
    assert_eq!(f.graph_name, "main");
    assert_eq!(f.onnx_opset(), Some(17));
    assert_eq!(f.inputs.len(), 1);
    assert_eq!(f.outputs[0].ty.to_string(), "float32[N, 3]");
}

#[test]
fn sparse_initializers_are_listed_never_mutable() {
    let mut g = graph("g", vec![], vec![], vec![], vec![]);
    g.sparse_initializer.push(proto::SparseTensorProto {
        values: Some(f32_raw("sp", &[2], &[1.0, 2.0])),
        indices: Some(i64_typed("", &[2], &[0, 5])),
        dims: vec![3, 4],
    });
    let m = open(encode(&model(g)));
    let t = &m.tensors()[0];
    assert_eq!(t.name, "sp");
    assert_eq!(t.location, Location::SparseInitializer);
    assert_eq!(t.dims, vec![3, 4]);
    assert_eq!(t.elements, 12);
    assert_eq!(verdict(t).reason(), Some("sparse initializer"));
    assert!(m.read_values(t).is_err());
    assert!(child_bytes(&m, &[(0, TensorData::F32(vec![0.0; 12]))]).is_err());
}

#[test]
fn malformed_inputs_are_errors() {
    let good = simple(vec![f32_raw("w", &[2, 2], &[1.0; 4])]);
    assert!(Model::from_bytes(Vec::new(), FAKE).is_err());
    assert!(open_err(b"hello world, not a model".to_vec()).contains(FAKE));
    assert!(open_err(vec![0u8; 64]).contains("invalid field number 0"));
    for cut in 0..good.len() {
        let e = Model::from_bytes(good[..cut].to_vec(), FAKE);
        assert!(e.is_err(), "cut at {cut} was accepted");
    }
    // A model with no graph.
    let nograph = ModelProto {
        ir_version: Some(9),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(open_err(nograph).contains("no graph"));
    // `graph` as a (deprecated) group: a wrong wire type, not a message.
    let e = open_err(vec![0x08, 0x09, 0x3b, 0x3c, 0x42, 0x02, 0x10, 17]);
    assert!(e.contains("wire type group"), "{e}");
    // Unknown fields, groups included, are skipped.
    let mut ok = simple(vec![f32_raw("w", &[1], &[1.0])]);
    ok.extend([0xfb, 0x07, 0x08, 0x01, 0xfc, 0x07, 0xf8, 0x07, 0x05]);
    assert_eq!(open(ok.clone()).tensors().len(), 1);
    assert_eq!(child_bytes(&open(ok.clone()), &[]).unwrap(), ok);
    // Wrong wire type for raw_data (field 9 as varint).
    let mut t = header("w", DType::F32, &[1]);
    t.extend(key(9, 0));
    t.push(1);
    assert!(open_err(model_with_tensor_bytes(&t)).contains("wire type"));
}

#[test]
fn tensor_errors_name_the_tensor() {
    let short = raw("short", DType::F32, &[2, 2], vec![0; 15]);
    let e = open_err(simple(vec![short]));
    assert!(
        e.contains("tensor 'short'") && e.contains("15 bytes"),
        "{e}"
    );
    let long = raw("long", DType::F16, &[3], vec![0; 8]);
    assert!(open_err(simple(vec![long])).contains("tensor 'long'"));
    let ovf = raw("ovf", DType::F32, &[i64::MAX, 4], vec![]);
    let e = open_err(simple(vec![ovf]));
    assert!(e.contains("tensor 'ovf'") && e.contains("overflows"), "{e}");
    let neg = raw("neg", DType::F32, &[-1], vec![]);
    assert!(open_err(simple(vec![neg])).contains("negative"));
    let count = f32_typed("count", &[3], &[1.0, 2.0]);
    let e = open_err(simple(vec![count]));
    assert!(
        e.contains("tensor 'count'") && e.contains("2 values"),
        "{e}"
    );
    let mut both = f32_typed("both", &[1], &[1.0]);
    both.raw_data = Some(vec![0u8; 4].into());
    assert!(open_err(simple(vec![both])).contains("both"));
    let mut wrong = f32_typed("wrong", &[1], &[1.0]);
    wrong.data_type = Some(DType::I64.to_onnx());
    assert!(open_err(simple(vec![wrong])).contains("float_data cannot hold int64"));
    let none = typed_empty("nodata", &[2]);
    assert!(open_err(simple(vec![none])).contains("no values"));
    let undefined = raw("undef", DType::Undefined, &[1], vec![0]);
    assert!(open_err(simple(vec![undefined])).contains("UNDEFINED"));
    // Sub-byte and exotic dtypes are sized correctly.
    let ok = simple(vec![
        raw("i4", DType::I4, &[3], vec![0; 2]),
        raw("f8", DType::Float8E4M3Fn, &[3], vec![0; 3]),
        raw("f6", DType::Float6E2M3, &[5], vec![0; 4]),
        raw("c128", DType::Complex128, &[1], vec![0; 16]),
    ]);
    let m = open(ok);
    assert_eq!(m.tensors()[0].dtype.name(), "int4");
    assert_eq!(verdict(&m.tensors()[1]).reason(), Some("float8e4m3fn"));
}

fn typed_empty(name: &str, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(1),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let mut g = graph("leaf", vec![], vec![], vec![], vec![]);
    for i in 0..60 {
        g = graph(
            &format!("g{i}"),
            vec![node(
                "If",
                &format!("n{i}"),
                &["c"],
                &["o"],
                vec![attr_graph("then_branch", g)],
            )],
            vec![],
            vec![],
            vec![],
        );
    }
    let e = open_err(encode(&model(g)));
    assert!(e.contains("nested deeper"), "{e}");
}

fn write_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn external_data_read_write_and_errors() {
    let d = tempfile::tempdir().unwrap();
    let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let mut data = vec![7u8; 16]; // leading bytes not referenced by any tensor
    data.extend_from_slice(bytemuck::cast_slice(&v));
    write_file(d.path(), "weights.bin", &data);
    let ext = external("w", DType::F32, &[3, 4], "weights.bin", 16, 48);
    let bytes = simple(vec![ext, f32_raw("inline", &[2, 2], &[1.0; 4])]);
    let mp = write_file(d.path(), "m.onnx", &bytes);
    let m = Model::open(&mp).unwrap();
    assert!(m.has_external_data());
    assert_eq!(m.tensors()[0].external_file(), Some(0));
    assert_eq!(
        m.read_values(&m.tensors()[0]).unwrap(),
        TensorData::F32(v.clone())
    );
    assert!(matches!(
        child_bytes(&m, &[]),
        Err(ModelError::NeedsFile { .. })
    ));

    // Zero changes: same model bytes except the location; data file identical.
    let out = d.path().join("child.onnx");
    let written = write_child(&m, &[], &out).unwrap();
    assert_eq!(written, vec![out.clone(), d.path().join("child.onnx.data")]);
    assert_eq!(std::fs::read(&written[1]).unwrap(), data);
    let c = Model::open(&out).unwrap();
    assert_eq!(c.external_files()[0].location, "child.onnx.data");
    assert_eq!(
        c.read_values(&c.tensors()[0]).unwrap(),
        TensorData::F32(v.clone())
    );

    // With a change: only the payload range of the data file differs.
    let new: Vec<f32> = (0..12).map(|i| -(i as f32)).collect();
    write_child(&m, &[(0, TensorData::F32(new.clone()))], &out).unwrap();
    let cd = std::fs::read(d.path().join("child.onnx.data")).unwrap();
    assert_eq!(&cd[..16], &data[..16]);
    assert_eq!(&cd[16..], bytemuck::cast_slice::<f32, u8>(&new));
    assert_eq!(std::fs::read(d.path().join("weights.bin")).unwrap(), data);
    let c = Model::open(&out).unwrap();
    assert_eq!(
        c.read_values(&c.tensors()[0]).unwrap(),
        TensorData::F32(new)
    );

    // Refuses to overwrite the inputs.
    assert!(matches!(
        write_child(&m, &[], &mp),
        Err(ModelError::Output(OutputError::Overwrite { .. }))
    ));
    assert!(write_child(&m, &[], &d.path().join("weights.bin")).is_err());

    // Errors.
    let check = |ext: TensorProto, want: &str| {
        let p = write_file(d.path(), "bad.onnx", &simple(vec![ext]));
        let e = Model::open(&p).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("tensor 'w'"), "{e}");
    };
    check(
        external("w", DType::F32, &[3, 4], "missing.bin", 0, 48),
        "not found",
    );
    check(
        external("w", DType::F32, &[3, 4], "weights.bin", 32, 48),
        "has 64 bytes",
    );
    check(
        external("w", DType::F32, &[3, 4], "weights.bin", 0, 40),
        "does not match",
    );
    check(
        external("w", DType::F32, &[3, 4], "../weights.bin", 0, 48),
        "escapes",
    );
    check(
        external("w", DType::F32, &[3, 4], "/etc/passwd", 0, 48),
        "absolute",
    );
    std::fs::create_dir(d.path().join("adir")).unwrap();
    check(
        external("w", DType::F32, &[3, 4], "adir", 0, 48),
        "directory",
    );
    #[cfg(unix)]
    {
        let outside = tempfile::tempdir().unwrap();
        write_file(outside.path(), "o.bin", &data);
        std::os::unix::fs::symlink(outside.path().join("o.bin"), d.path().join("link.bin"))
            .unwrap();
        check(
            external("w", DType::F32, &[3, 4], "link.bin", 0, 48),
            "outside",
        );
    }
}

#[test]
fn several_external_files_get_distinct_child_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    write_file(d.path(), "a.bin", &[0u8; 16]);
    write_file(d.path(), "sub/b.bin", &[1u8; 8]);
    let bytes = simple(vec![
        external("a", DType::F32, &[2, 2], "a.bin", 0, 16),
        external("b", DType::F64, &[1, 1], "sub/b.bin", 0, 8),
        external("a2", DType::F32, &[2], "./a.bin", 8, 8),
    ]);
    let mp = write_file(d.path(), "m.onnx", &bytes);
    let m = Model::open(&mp).unwrap();
    assert_eq!(m.external_files().len(), 2);
    let out = d.path().join("kid.onnx");
    let w = write_child(&m, &[(1, TensorData::F64(vec![2.5]))], &out).unwrap();
    assert_eq!(
        w,
        vec![
            out.clone(),
            d.path().join("kid.a.bin"),
            d.path().join("kid.sub_b.bin")
        ]
    );
    let c = Model::open(&out).unwrap();
    assert_eq!(
        c.read_values(&c.tensors()[1]).unwrap(),
        TensorData::F64(vec![2.5])
    );
    assert_eq!(
        c.read_values(&c.tensors()[2]).unwrap(),
        m.read_values(&m.tensors()[2]).unwrap()
    );
    assert_eq!(std::fs::read(d.path().join("sub/b.bin")).unwrap(), [1u8; 8]);
}

#[test]
fn change_validation() {
    let m = open(simple(vec![f32_raw("w", &[2, 2], &[1.0; 4])]));
    let e = |c: Vec<(usize, TensorData)>| child_bytes(&m, &c).unwrap_err().to_string();
    assert!(e(vec![(0, TensorData::F64(vec![0.0; 4]))]).contains("float64"));
    assert!(e(vec![(0, TensorData::F32(vec![0.0; 3]))]).contains("3 new values"));
    assert!(e(vec![(5, TensorData::F32(vec![]))]).contains("no such tensor"));
    let two = vec![
        (0, TensorData::F32(vec![0.0; 4])),
        (0, TensorData::F32(vec![0.0; 4])),
    ];
    assert!(e(two).contains("twice"));
}

#[test]
fn content_hash_is_plain_blake3_without_external_data() {
    let bytes = simple(vec![f32_raw("w", &[2, 2], &[1.0; 4])]);
    let m = open(bytes.clone());
    assert_eq!(
        m.content_hash().unwrap(),
        blake3::hash(&bytes).to_hex().to_string()
    );
}

#[test]
fn varint_growth_fixes_every_enclosing_length() {
    // Small f16 values (1-byte varints) replaced by large ones (3-byte varints) inside a
    // Constant in a subgraph: every enclosing length grows, some across a varint width.
    let small: Vec<f16> = (0..100).map(|_| f16::from_bits(1)).collect();
    let then_g = graph(
        "t",
        vec![constant("c", "cw", f16_typed("", &[10, 10], &small))],
        vec![],
        vec![],
        vec![],
    );
    let bytes = encode(&model(graph(
        "main",
        vec![node(
            "If",
            "if",
            &["b"],
            &["o"],
            vec![attr_graph("then_branch", then_g)],
        )],
        vec![],
        vec![],
        vec![],
    )));
    let m = open(bytes.clone());
    let big = TensorData::F16((0..100).map(|_| f16::from_bits(0xfbff)).collect());
    let child = child_bytes(&m, &[(0, big.clone())]).unwrap();
    let c = open(child.clone());
    assert_eq!(c.read_values(&c.tensors()[0]).unwrap(), big);
    let mut expect = ModelProto::decode(&bytes[..]).unwrap();
    let t = expect.graph.as_mut().unwrap().node[0].attribute[0]
        .g
        .as_mut()
        .unwrap()
        .node[0]
        .attribute[0]
        .t
        .as_mut()
        .unwrap();
    t.int32_data = vec![0xfbff; 100];
    assert_eq!(ModelProto::decode(&child[..]).unwrap(), expect);
    // Growing lengths take minimal varints, so the child is exactly prost's encoding.
    assert_eq!(child, expect.encode_to_vec());
    assert!(child.len() > bytes.len() + 200);
    // And back: shrinking keeps the (now wider) prefixes padded, still valid.
    let back = child_bytes(&c, &[(0, TensorData::F16(small.clone()))]).unwrap();
    assert_eq!(back.len(), child.len() - 200);
    let b = open(back);
    assert_eq!(
        b.read_values(&b.tensors()[0]).unwrap(),
        TensorData::F16(small)
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy)]
    enum Form {
        F32Raw,
        F32Typed,
        F64Raw,
        F64Typed,
        F16Raw,
        F16Typed,
        Bf16Raw,
        Bf16Typed,
        ConstF32,
        ValueFloats,
    }

    const FORMS: [Form; 10] = [
        Form::F32Raw,
        Form::F32Typed,
        Form::F64Raw,
        Form::F64Typed,
        Form::F16Raw,
        Form::F16Typed,
        Form::Bf16Raw,
        Form::Bf16Typed,
        Form::ConstF32,
        Form::ValueFloats,
    ];

    fn data(form: Form, v: &[f32]) -> TensorData {
        match form {
            Form::F32Raw | Form::F32Typed | Form::ConstF32 | Form::ValueFloats => {
                TensorData::F32(v.to_vec())
            }
            Form::F64Raw | Form::F64Typed => {
                TensorData::F64(v.iter().map(|&x| f64::from(x)).collect())
            }
            Form::F16Raw | Form::F16Typed => TensorData::F16(f16s(v)),
            Form::Bf16Raw | Form::Bf16Typed => TensorData::BF16(bf16s(v)),
        }
    }

    /// A model with one tensor per (form, values), named t0, t1, ...
    fn build(tensors: &[(Form, Vec<i64>, Vec<f32>)]) -> Vec<u8> {
        let mut inits = Vec::new();
        let mut nodes = Vec::new();
        for (i, (form, dims, v)) in tensors.iter().enumerate() {
            let n = format!("t{i}");
            let d = data(*form, v);
            let t = match (form, &d) {
                (Form::F32Raw, TensorData::F32(x)) => f32_raw(&n, dims, x),
                (Form::F32Typed, TensorData::F32(x)) => f32_typed(&n, dims, x),
                (Form::F64Raw, TensorData::F64(x)) => f64_raw(&n, dims, x),
                (Form::F64Typed, TensorData::F64(x)) => f64_typed(&n, dims, x),
                (Form::F16Raw, TensorData::F16(x)) => f16_raw(&n, dims, x),
                (Form::F16Typed, TensorData::F16(x)) => f16_typed(&n, dims, x),
                (Form::Bf16Raw, TensorData::BF16(x)) => bf16_raw(&n, dims, x),
                (Form::Bf16Typed, TensorData::BF16(x)) => bf16_typed(&n, dims, x),
                (Form::ConstF32, TensorData::F32(x)) => {
                    nodes.push(constant(&format!("c{i}"), &n, f32_raw("", dims, x)));
                    continue;
                }
                (Form::ValueFloats, TensorData::F32(x)) => {
                    nodes.push(node(
                        "Constant",
                        &format!("c{i}"),
                        &[],
                        &[&n],
                        vec![attr_floats("value_floats", x)],
                    ));
                    continue;
                }
                _ => unreachable!(),
            };
            inits.push(t);
        }
        encode(&model(graph("g", nodes, inits, vec![], vec![])))
    }

    fn tensor_strategy() -> impl Strategy<Value = (Form, Vec<i64>, Vec<f32>)> {
        (0usize..FORMS.len(), 1i64..5, 1i64..5).prop_flat_map(|(f, a, b)| {
            let form = FORMS[f];
            let dims = if matches!(form, Form::ValueFloats) {
                vec![a * b]
            } else {
                vec![a, b]
            };
            let n = (a * b) as usize;
            (
                Just(form),
                Just(dims),
                proptest::collection::vec(-70000.0f32..70000.0, n),
            )
        })
    }

    fn by_name(m: &Model, name: &str) -> usize {
        m.tensors().iter().position(|t| t.name == name).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn index_read_write_round_trip(
            tensors in proptest::collection::vec(tensor_strategy(), 1..6),
            pick in proptest::collection::vec(any::<bool>(), 6),
            seed in any::<u64>(),
        ) {
            let bytes = build(&tensors);
            let m = open(bytes.clone());
            prop_assert_eq!(m.tensors().len(), tensors.len());
            for (i, (form, dims, v)) in tensors.iter().enumerate() {
                let idx = by_name(&m, &format!("t{i}"));
                let t = &m.tensors()[idx];
                prop_assert_eq!(&t.dims, dims);
                prop_assert_eq!(m.read_values(t).unwrap(), data(*form, v));
            }
            prop_assert_eq!(child_bytes(&m, &[]).unwrap(), bytes.clone());

            // Random changes to a subset.
            let mut changes = Vec::new();
            let mut expect = Vec::new();
            for (i, (form, _, v)) in tensors.iter().enumerate() {
                let idx = by_name(&m, &format!("t{i}"));
                if pick[i] {
                    let nv: Vec<f32> = v
                        .iter()
                        .enumerate()
                        .map(|(k, x)| x * 0.5 + ((seed.rotate_left(k as u32) % 1000) as f32))
                        .collect();
                    let d = data(*form, &nv);
                    changes.push((idx, d.clone()));
                    expect.push((i, d));
                } else {
                    expect.push((i, data(*form, v)));
                }
            }
            let child = child_bytes(&m, &changes).unwrap();
            let c = open(child.clone());
            for (i, d) in &expect {
                let idx = by_name(&c, &format!("t{i}"));
                prop_assert_eq!(&c.read_values(&c.tensors()[idx]).unwrap(), d);
            }
            // Fixed-size forms: every byte outside the changed payloads is identical.
            let varint = changes.iter().any(|(idx, _)| {
                matches!(m.tensors()[*idx].storage, Storage::Typed { field: TypedField::Int32Data, .. })
            });
            if !varint {
                prop_assert_eq!(child.len(), bytes.len());
                let mut changed = vec![false; bytes.len()];
                for (idx, _) in &changes {
                    for r in m.tensors()[*idx].payload_ranges() {
                        for b in r.start..r.end {
                            changed[b as usize] = true;
                        }
                    }
                }
                for (k, (a, b)) in bytes.iter().zip(&child).enumerate() {
                    if !changed[k] {
                        prop_assert_eq!(a, b, "byte {} changed", k);
                    }
                }
            }
            // In every case the child is the parent message with just those values changed.
            let parent = ModelProto::decode(&bytes[..]).unwrap();
            let kid = ModelProto::decode(&child[..]).unwrap();
            let (pg, kg) = (parent.graph.unwrap(), kid.graph.unwrap());
            prop_assert_eq!(pg.initializer.len(), kg.initializer.len());
            prop_assert_eq!(pg.node.len(), kg.node.len());
            for (a, b) in pg.initializer.iter().zip(&kg.initializer) {
                prop_assert_eq!(&a.name, &b.name);
                prop_assert_eq!(&a.dims, &b.dims);
                prop_assert_eq!(a.data_type, b.data_type);
            }
        }
    }
}

/// Writes the fuzz seed corpus (`fuzz/corpus/model_index/gen_*.onnx`) when
/// `SMD_WRITE_FUZZ_SEEDS=1`; the fixture models are the other seeds.
#[test]
fn write_fuzz_seeds() {
    if std::env::var_os("SMD_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/model_index");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("gen_storage_forms", storage_forms_model()),
        ("gen_nested", nested_model()),
        ("gen_ml_attributes", ml_model()),
    ];
    let v = [1.0f32, -2.0, 3.5, 4.25];
    let mut t = header("u32", DType::F32, &[2, 2]);
    prost::encoding::float::encode_repeated(4, &v, &mut t);
    seeds.push(("gen_unpacked_f32", model_with_tensor_bytes(&t)));
    let bits: Vec<i32> = f16s(&v).iter().map(|x| i32::from(x.to_bits())).collect();
    let mut t = header("u16", DType::F16, &[4]);
    prost::encoding::int32::encode_repeated(5, &bits, &mut t);
    seeds.push(("gen_unpacked_f16", model_with_tensor_bytes(&t)));
    let mut g = graph("g", vec![], vec![], vec![], vec![]);
    g.sparse_initializer.push(proto::SparseTensorProto {
        values: Some(f32_raw("sp", &[2], &[1.0, 2.0])),
        indices: Some(i64_typed("", &[2], &[0, 5])),
        dims: vec![3, 4],
    });
    seeds.push(("gen_sparse", encode(&model(g))));
    seeds.push((
        "gen_dtypes",
        simple(vec![
            raw("i4", DType::I4, &[3], vec![0; 2]),
            raw("f8", DType::Float8E4M3Fn, &[3], vec![0; 3]),
            raw("f6", DType::Float6E2M3, &[5], vec![0; 4]),
            raw("c128", DType::Complex128, &[1], vec![0; 16]),
            bf16_typed("b", &[2, 2], &bf16s(&v)),
        ]),
    ));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.onnx")), bytes).unwrap();
    }
}

#[test]
fn training_graphs_listed_functions_not() {
    let mut m = model(graph(
        "g",
        vec![],
        vec![f32_raw("w", &[2, 2], &[1.0; 4])],
        vec![],
        vec![],
    ));
    m.training_info.push(proto::TrainingInfoProto {
        initialization: Some(graph(
            "init",
            vec![],
            vec![f32_raw("seed", &[2, 2], &[0.0; 4])],
            vec![],
            vec![],
        )),
        ..Default::default()
    });
    m.functions.push(proto::FunctionProto {
        name: Some("f".into()),
        domain: Some("local".into()),
        node: vec![constant("fc", "fw", f32_raw("", &[2, 2], &[2.0; 4]))],
        ..Default::default()
    });
    let bytes = encode(&m);
    let model = open(bytes.clone());
    let keys: Vec<&str> = model.tensors().iter().map(|t| t.key()).collect();
    assert_eq!(keys, ["w", "training_info[0]/initialization/seed"]);
    assert_eq!(
        verdict(&model.tensors()[1]).reason(),
        Some("training graph")
    );
    assert_eq!(child_bytes(&model, &[]).unwrap(), bytes);
}

#[test]
fn constants_in_custom_domains_are_not_listed() {
    let mut n = constant("c", "out", f32_raw("", &[2, 2], &[1.0; 4]));
    n.domain = Some("com.example".into());
    let mut m = model(graph("g", vec![n], vec![], vec![], vec![]));
    let e = open_err(encode(&m));
    assert!(e.contains("com.example"), "{e}");
    m.opset_import.push(proto::OperatorSetIdProto {
        domain: Some("com.example".into()),
        version: Some(1),
    });
    assert!(open(encode(&m)).tensors().is_empty());
}

#[test]
fn external_small_and_large_patches() {
    // A small change in a big file (copy, then patch) and a change covering most of a file
    // (one streaming pass) give the same kind of result: the parent with those bytes replaced.
    let d = tempfile::tempdir().unwrap();
    let mut big = vec![3u8; 1 << 16];
    big[100..104].copy_from_slice(&1.0f32.to_le_bytes());
    write_file(d.path(), "big.bin", &big);
    write_file(d.path(), "small.bin", &[5u8; 16]);
    let bytes = simple(vec![
        external("tiny", DType::F32, &[1, 1], "big.bin", 100, 4),
        external("most", DType::F32, &[2, 2], "small.bin", 0, 16),
    ]);
    let mp = write_file(d.path(), "m.onnx", &bytes);
    let m = Model::open(&mp).unwrap();
    let out = d.path().join("c.onnx");
    let changes = [
        (0, TensorData::F32(vec![2.0])),
        (1, TensorData::F32(vec![4.0; 4])),
    ];
    let w = write_child(&m, &changes, &out).unwrap();
    let mut want_big = big.clone();
    want_big[100..104].copy_from_slice(&2.0f32.to_le_bytes());
    assert_eq!(std::fs::read(&w[1]).unwrap(), want_big);
    let want_small: Vec<u8> = (0..4).flat_map(|_| 4.0f32.to_le_bytes()).collect();
    assert_eq!(std::fs::read(&w[2]).unwrap(), want_small);
    assert_eq!(std::fs::read(d.path().join("big.bin")).unwrap(), big);
}

#[test]
fn model_is_shareable_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<Model>();
    check::<TensorInfo>();
    check::<ModelError>();
}

/// A model with `ai.onnx.ml` nodes: a LinearClassifier (floats attributes, unpacked as the
/// Python `onnx` package writes them), a TreeEnsemble (tensor attributes, unnamed node) and a
/// Scaler (not a listed operator).
fn ml_model() -> Vec<u8> {
    let ml = |op: &str, name: &str, attrs| proto::NodeProto {
        domain: Some("ai.onnx.ml".into()),
        ..node(op, name, &["x"], &["y"], attrs)
    };
    let nodes = vec![
        ml(
            "LinearClassifier",
            "lin",
            vec![
                attr_ints("classlabels_ints", &[0, 1]),
                attr_floats("coefficients", &[1.0, 2.0, 3.0, 4.0]),
                attr_floats("intercepts", &[0.5, -0.5]),
            ],
        ),
        ml("Scaler", "sc", vec![attr_floats("scale", &[2.0])]),
        ml(
            "TreeEnsemble",
            "",
            vec![
                attr_tensor("leaf_weights", f32_raw("", &[3], &[0.1, 0.2, 0.3])),
                attr_tensor("nodes_splits", f64_raw("", &[2], &[0.5, 1.5])),
            ],
        ),
    ];
    let mut m = model(graph("g", nodes, vec![], vec![], vec![]));
    m.opset_import.push(proto::OperatorSetIdProto {
        domain: Some("ai.onnx.ml".into()),
        version: Some(5),
    });
    encode(&m)
}

#[test]
fn ml_attributes_are_listed_and_written_in_place() {
    let bytes = ml_model();
    let m = open(bytes.clone());
    let keys: Vec<&str> = m.tensors().iter().map(|t| t.key()).collect();
    assert_eq!(
        keys,
        [
            "lin.coefficients",
            "lin.intercepts",
            "node2.leaf_weights",
            "node2.nodes_splits"
        ]
    );
    for t in m.tensors() {
        assert_eq!(t.location, Location::MlAttribute);
    }
    let t = &m.tensors()[0];
    assert_eq!((t.dtype, t.dims.as_slice()), (DType::F32, &[4i64][..]));
    assert_eq!(t.storage, Storage::Floats { packed: false });
    assert_eq!(t.node.as_deref(), Some("lin"));
    assert_eq!(m.tensors()[2].storage, Storage::Raw);
    assert_eq!(m.tensors()[3].dtype, DType::F64);
    // Weights by default; thresholds and intercepts only when --include names them.
    let reasons: Vec<Option<String>> = m
        .tensors()
        .iter()
        .map(|t| verdict(t).reason().map(str::to_string))
        .collect();
    let opt_in = Some("not a weight (name it with --include)".to_string());
    assert_eq!(reasons, [None, opt_in.clone(), None, opt_in]);
    let sel = Selection {
        include: Some(regex::Regex::new("intercepts|coefficients|splits").unwrap()),
        ..Default::default()
    };
    assert_eq!(sel.mutable_tensors(&m), vec![0, 1, 3]);
    // Values, and a child that is the parent with only those payload bytes changed.
    assert_eq!(
        m.read_values(&m.tensors()[0]).unwrap(),
        TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])
    );
    let changes = vec![
        (0, TensorData::F32(vec![-1.0, 2.0, 3.5, 4.0])),
        (2, TensorData::F32(vec![0.25, 0.2, 0.3])),
        (3, TensorData::F64(vec![0.75, 1.5])),
    ];
    let child = child_bytes(&m, &changes).unwrap();
    assert_eq!(child.len(), bytes.len());
    let c = open(child.clone());
    for (i, v) in &changes {
        assert_eq!(&c.read_values(&c.tensors()[*i]).unwrap(), v);
    }
    assert_eq!(
        c.read_values(&c.tensors()[1]).unwrap(),
        TensorData::F32(vec![0.5, -0.5])
    );
    let inside = |p: usize| {
        changes.iter().any(|(i, _)| {
            m.tensors()[*i]
                .payload_ranges()
                .iter()
                .any(|r| r.contains(&(p as u64)))
        })
    };
    for (p, (a, b)) in bytes.iter().zip(&child).enumerate() {
        assert!(a == b || inside(p), "byte {p} changed outside the payloads");
    }
}

#[test]
fn packed_ml_floats_are_patched_in_place() {
    // coefficients as one packed run (prost writes the field unpacked).
    let floats: Vec<u8> = [1.0f32, -2.0, 3.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut attr = len_field(1, b"coefficients");
    attr.extend(len_field(7, &floats));
    let mut n = len_field(4, b"LinearRegressor");
    n.extend(len_field(3, b"reg"));
    n.extend(len_field(7, b"ai.onnx.ml"));
    n.extend(len_field(5, &attr));
    let mut g = len_field(1, &n);
    g.extend(len_field(2, b"g"));
    let mut bytes = len_field(7, &g);
    bytes.extend(len_field(8, &[0x10, 17]));
    let mut ml = len_field(1, b"ai.onnx.ml");
    ml.extend([0x10, 1]);
    bytes.extend(len_field(8, &ml));
    let m = open(bytes.clone());
    let t = &m.tensors()[0];
    assert_eq!(t.key(), "reg.coefficients");
    assert_eq!(t.storage, Storage::Floats { packed: true });
    assert!(verdict(t).is_mutable());
    let new = TensorData::F32(vec![1.5, -2.0, 3.0]);
    let child = child_bytes(&m, &[(0, new.clone())]).unwrap();
    assert_eq!(open(child.clone()).read_values(t).unwrap(), new);
    assert_eq!(child.len(), bytes.len());
    let diff: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != child[i]).collect();
    let r = &t.payload_ranges()[0];
    assert!(diff.iter().all(|&i| r.contains(&(i as u64))) && !diff.is_empty());
}

/// A model whose only node dequantizes `x` with scale `s` and zero point `z` (when given).
fn qdq_model(
    x: TensorProto,
    scale: TensorProto,
    zp: Option<TensorProto>,
    attrs: Vec<proto::AttributeProto>,
) -> Model {
    let inputs: &[&str] = if zp.is_some() {
        &["x", "s", "z"]
    } else {
        &["x", "s"]
    };
    let mut inits = vec![x, scale];
    inits.extend(zp);
    let n = node("DequantizeLinear", "dq", inputs, &["y"], attrs);
    open(encode(&model(graph("g", vec![n], inits, vec![], vec![]))))
}

fn i8_typed(name: &str, dims: &[i64], v: &[i32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(DType::I8.to_onnx()),
        dims: dims.to_vec(),
        int32_data: v.to_vec(),
        ..Default::default()
    }
}

#[test]
fn quantized_weights_read_and_write_through_their_scales() {
    let q: Vec<u8> = [1i8, 2, 3, -4, 5, 127].iter().map(|&v| v as u8).collect();
    let x = || raw("x", DType::I8, &[2, 3], q.clone());
    let scale = || f32_raw("s", &[2], &[0.5, 0.25]);
    let zp = || Some(i8_typed("z", &[2], &[1, -1]));
    // Per axis (axis -2 is axis 0), zero points in int32_data as quantizers write them.
    let axis = |a: i64| vec![attr_int("axis", a)];
    let m = qdq_model(x(), scale(), zp(), axis(-2));
    let t = &m.tensors()[0];
    let quant = t.quantization().unwrap().unwrap();
    assert_eq!(
        (quant.scale_name.as_deref(), quant.axis),
        (Some("s"), Some(0))
    );
    assert!(verdict(t).is_mutable());
    // Its scale and (int8) zero point stay as they are, whatever the rule.
    let all = Selection {
        all_float: true,
        ..Default::default()
    };
    assert_eq!(
        all.judge(&m.tensors()[1]).reason(),
        Some("scale or zero point of quantized x")
    );
    assert_eq!(all.judge(&m.tensors()[2]).reason(), Some("int8"));
    let w = TensorData::F32(vec![0.0, 0.5, 1.0, -0.75, 1.5, 32.0]);
    assert_eq!(m.read_values(t).unwrap(), w);
    // 1.5 steps round to 2 (half to even); 400 steps clamp to 127; the rest is unchanged.
    let new = TensorData::F32(vec![0.75, 0.5, 1.0, -0.75, 1.5, 100.0]);
    let bytes = m.bytes().to_vec();
    let child = child_bytes(&m, &[(0, new)]).unwrap();
    let start = t.payload_ranges()[0].start as usize;
    let diff: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] != child[i]).collect();
    assert_eq!(diff, [start]);
    assert_eq!(child[start], 3);
    // Per tensor, without a zero point.
    let m = qdq_model(x(), f32_raw("s", &[], &[0.5]), None, vec![]);
    let t = &m.tensors()[0];
    assert_eq!(t.quantization().unwrap().unwrap().axis, None);
    assert_eq!(
        m.read_values(t).unwrap(),
        TensorData::F32(vec![0.5, 1.0, 1.5, -2.0, 2.5, 63.5])
    );
    // What cannot be requantized says why.
    let why = |m: Model| verdict(&m.tensors()[0]).reason().unwrap_or("").to_string();
    let cases = [
        (
            qdq_model(x(), scale(), zp(), vec![attr_int("block_size", 2)]),
            "does not fit axis 1",
        ),
        (
            qdq_model(x(), f32_raw("s", &[2], &[0.5, 0.0]), zp(), axis(0)),
            "not positive",
        ),
        (
            qdq_model(x(), f32_raw("s", &[3], &[1.0; 3]), None, axis(0)),
            "does not fit axis 0",
        ),
        (
            qdq_model(x(), scale(), Some(i8_typed("z", &[3], &[0; 3])), axis(0)),
            "zero point `z`",
        ),
        (
            qdq_model(i8_typed("x", &[2, 3], &[1; 6]), scale(), zp(), axis(0)),
            "values in int32_data",
        ),
    ];
    for (m, want) in cases {
        let r = why(m);
        assert!(r.starts_with("int8 quantized: ") && r.contains(want), "{r}");
    }
}

#[test]
fn blocked_scales_follow_their_blocks() {
    // Rows of 3 along axis 1 in blocks of 2: scales and zero points are [2, 2].
    let q: Vec<u8> = [1i8, 2, 3, -4, 5, 127].iter().map(|&v| v as u8).collect();
    let attrs = vec![attr_int("axis", 1), attr_int("block_size", 2)];
    let m = qdq_model(
        raw("x", DType::I8, &[2, 3], q),
        f32_raw("s", &[2, 2], &[0.5, 1.0, 0.25, 2.0]),
        Some(i8_typed("z", &[2, 2], &[1, 0, -1, 0])),
        attrs,
    );
    let t = &m.tensors()[0];
    let quant = t.quantization().unwrap().unwrap();
    assert_eq!((quant.axis, quant.block_size), (Some(1), Some(2)));
    assert_eq!(
        m.read_values(t).unwrap(),
        TensorData::F32(vec![0.0, 0.5, 3.0, -0.75, 1.5, 254.0])
    );
    // Element 2 is in the second block of row 0 (scale 1, zero point 0).
    let new = TensorData::F32(vec![0.0, 0.5, 5.0, -0.75, 1.5, 254.0]);
    let child = child_bytes(&m, &[(0, new)]).unwrap();
    let start = t.payload_ranges()[0].start as usize;
    assert_eq!(child[start + 2], 5);
    let diff = (0..child.len())
        .filter(|&i| child[i] != m.bytes()[i])
        .count();
    assert_eq!(diff, 1);
}

/// A `MatMulNBits` node (K 6, N 2, blocks of 2) reading `b` with scales [2, 3] and `zp`.
fn nbits_model(b: TensorProto, zp: Option<TensorProto>, bits: i64, g_idx: bool) -> Model {
    let mut inputs = vec!["a", "b", "s", if zp.is_some() { "z" } else { "" }];
    if g_idx {
        inputs.push("g");
    }
    let mut inits = vec![b, f32_raw("s", &[2, 3], &[1.0, 0.5, 0.25, 2.0, 4.0, 8.0])];
    inits.extend(zp);
    inits.push(raw("g", DType::I32, &[6], vec![0; 24]));
    let attrs = ["K", "N", "bits", "block_size"]
        .iter()
        .zip([6, 2, bits, 2])
        .map(|(n, v)| attr_int(n, v))
        .collect();
    let mut n = node("MatMulNBits", "mm", &inputs, &["y"], attrs);
    n.domain = Some("com.microsoft".into());
    let mut m = model(graph("g", vec![n], inits, vec![], vec![]));
    m.opset_import.push(proto::OperatorSetIdProto {
        domain: Some("com.microsoft".into()),
        version: Some(1),
    });
    open(encode(&m))
}

#[test]
fn matmul_nbits_weights_are_4_bit_integers_in_blocks() {
    let b = || {
        raw(
            "b",
            DType::U8,
            &[2, 3, 1],
            vec![0x10, 0x32, 0x54, 0x76, 0x98, 0xba],
        )
    };
    // Each row's three 4-bit zero points fill two bytes (a padding nibble, 0xf, in the second).
    let zp = || Some(raw("z", DType::U8, &[2, 2], vec![0x21, 0xf3, 0x54, 0xf6]));
    let m = nbits_model(b(), zp(), 4, false);
    let t = &m.tensors()[0];
    let quant = t.quantization().unwrap().unwrap();
    assert_eq!((quant.packing(), quant.count()), (DType::U4, 12));
    assert_eq!(t.value_count(), 12);
    assert!(verdict(t).is_mutable());
    let w = vec![
        -1.0, 0.0, 0.0, 0.5, 0.25, 0.5, 4.0, 6.0, 12.0, 16.0, 32.0, 40.0,
    ];
    assert_eq!(m.read_values(t).unwrap(), TensorData::F32(w.clone()));
    // Value 1 (row 0, block 0: scale 1, zero point 1) to 3.0 is integer 4: one high nibble.
    let mut new = w;
    new[1] = 3.0;
    let child = child_bytes(&m, &[(0, TensorData::F32(new))]).unwrap();
    let start = t.payload_ranges()[0].start as usize;
    assert_eq!(child[start], 0x40);
    let diff = (0..child.len())
        .filter(|&i| child[i] != m.bytes()[i])
        .count();
    assert_eq!(diff, 1);
    // Without zero points, the middle of the range (8).
    let m = nbits_model(b(), None, 4, false);
    let v = m.read_values(&m.tensors()[0]).unwrap();
    assert_eq!(v.get_f64(0), Some(-8.0));
    // What cannot be requantized says why.
    let why = |m: Model| verdict(&m.tensors()[0]).reason().unwrap_or("").to_string();
    for (m, want) in [
        (nbits_model(b(), zp(), 2, false), "2-bit MatMulNBits"),
        (nbits_model(b(), zp(), 4, true), "g_idx"),
        (
            nbits_model(raw("b", DType::U8, &[2, 6], vec![0; 12]), zp(), 4, false),
            "is not the uint8 [2, 3, 1] MatMulNBits",
        ),
        (
            nbits_model(b(), Some(f32_raw("z", &[2, 3], &[0.0; 6])), 4, false),
            "float zero point",
        ),
        (
            nbits_model(
                b(),
                Some(raw("z", DType::U8, &[2, 1], vec![0; 2])),
                4,
                false,
            ),
            "zero point `z` does not fit",
        ),
    ] {
        let r = why(m);
        assert!(
            r.starts_with("uint8 quantized: ") && r.contains(want),
            "{r}"
        );
    }
}
