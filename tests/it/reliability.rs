//! Reliability through the binary: hostile models, data and arguments given to `evolve` and
//! `mutate` (one-line errors, exit 2, nothing written), crash safety under SIGKILL with
//! `--resume`, determinism across reruns and thread counts, failed children, file modes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;
use serde_json::Value;
use smd_onnx::onnx::DType as TDType;
use smd_onnx::onnx::build::{encode, external, f32_raw, graph, linear_model, model, raw};
use smd_onnx::onnx::proto::ModelProto;
use smd_onnx::score::DType;
use smd_onnx::score::arrays::write_npz;

use crate::util::{assert_one_line_error, entries, is_temp, root, s, smd, smd_env};

/// Exit code 2, exactly one stderr line starting `error: ` that holds every needle, no panic,
/// nothing on stdout, and `out` absent or empty.
#[track_caller]
fn assert_refused(o: &Output, out: &Path, needles: &[&str]) {
    let err = assert_one_line_error(o, needles);
    let left = entries(out);
    assert!(
        left.is_empty(),
        "{} holds {left:?} after: {err}",
        out.display()
    );
}

/// `evolve MODEL --data DATA --out OUT EXTRA...` (`--children 2` unless in `extra`).
fn evolve(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["evolve", s(model), "--data", s(data), "--out", s(out)];
    if !extra.contains(&"--children") {
        a.extend(["--children", "2"]);
    }
    a.extend_from_slice(extra);
    smd(&a)
}

/// `mutate MODEL --out OUT EXTRA...` (`--children 2` unless in `extra`).
fn mutate(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut a = vec!["mutate", s(model), "--out", s(out)];
    if !extra.contains(&"--children") {
        a.extend(["--children", "2"]);
    }
    a.extend_from_slice(extra);
    smd(&a)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A scratch folder with a linear model `x [N,2] -> y [N,3]` (`m.onnx`) and good data for it
/// (`d.npz`); `out(name)` gives a fresh, not yet existing output folder.
struct Case {
    dir: tempfile::TempDir,
    outs: std::cell::Cell<u32>,
}

const SAMPLES: usize = 24;

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.onnx"), Self::linear()).unwrap();
        let c = Case {
            dir,
            outs: std::cell::Cell::new(0),
        };
        let (x, l) = Self::data();
        c.write(
            "d.npz",
            &write_npz(
                &[
                    ("x", DType::F32, &[SAMPLES, 2], &x),
                    ("labels", DType::I64, &[SAMPLES], &l),
                ],
                false,
            ),
        );
        c
    }

    fn linear() -> Vec<u8> {
        linear_model(
            &[1.0, 0.0, -1.0, 0.0, 1.0, 0.5],
            &[0.0, 0.1, 0.2],
            2,
            3,
            false,
            None,
        )
    }

    fn data() -> (Vec<u8>, Vec<u8>) {
        let x: Vec<f32> = (0..SAMPLES * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let l: Vec<i64> = (0..SAMPLES as i64).map(|i| i % 3).collect();
        (f32s(&x), i64s(&l))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn out(&self) -> PathBuf {
        let n = self.outs.get();
        self.outs.set(n + 1);
        self.path(&format!("out{n}"))
    }

    fn model(&self) -> PathBuf {
        self.path("m.onnx")
    }

    fn data_file(&self) -> PathBuf {
        self.path("d.npz")
    }
}

/// The linear model with `edit` applied to its decoded form.
fn edited(edit: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut m = ModelProto::decode(&Case::linear()[..]).unwrap();
    edit(&mut m);
    m.encode_to_vec()
}

#[test]
fn good_inputs_control() {
    // The harness's control: the same helpers succeed on good inputs.
    let c = Case::new();
    let out = c.out();
    let o = evolve(&c.model(), &c.data_file(), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("report.json").is_file());
    let out = c.out();
    let o = mutate(&c.model(), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(entries(&out).len(), 2);
}

#[test]
fn malformed_models_are_refused_by_evolve_and_mutate() {
    let c = Case::new();
    let good = Case::linear();
    let one = |t| encode(&model(graph("g", vec![], vec![t], vec![], vec![])));
    std::fs::write(c.path("w.bin"), vec![0u8; 64]).unwrap();
    std::fs::create_dir(c.path("sub")).unwrap();
    let ext =
        |loc: &str, off: u64, len: u64| one(external("w_ext", TDType::F32, &[4, 4], loc, off, len));
    // Wrong wire type: `graph` (field 7) as a varint.
    let mut cases: Vec<(String, Vec<u8>, Vec<&str>)> = vec![
        ("empty.onnx".into(), Vec::new(), vec!["empty"]),
        (
            "text.onnx".into(),
            b"this is not a model\nsecond line\n".to_vec(),
            vec!["not a valid ONNX model"],
        ),
        ("zeros.onnx".into(), vec![0u8; 4096], vec![]),
        (
            "wire.onnx".into(),
            vec![0x08, 0x09, 0x38, 0x01],
            vec!["wire type"],
        ),
        (
            "overflow.onnx".into(),
            one(raw("big", TDType::F32, &[1 << 62, 1 << 62], vec![])),
            vec!["tensor 'big'", "overflows"],
        ),
        (
            "short.onnx".into(),
            one(raw("w_short", TDType::F32, &[4, 4], vec![0; 60])),
            vec!["tensor 'w_short'", "60 bytes"],
        ),
        (
            "long.onnx".into(),
            one(raw("w_long", TDType::F32, &[4, 4], vec![0; 68])),
            vec!["tensor 'w_long'", "68 bytes"],
        ),
        (
            "ext_missing.onnx".into(),
            ext("nope.bin", 0, 64),
            vec!["tensor 'w_ext'", "not found"],
        ),
        (
            "ext_short.onnx".into(),
            ext("w.bin", 8, 64),
            vec!["tensor 'w_ext'", "64 bytes"],
        ),
        (
            "ext_escape.onnx".into(),
            ext("../w.bin", 0, 64),
            vec!["tensor 'w_ext'", "escapes"],
        ),
        (
            "ext_dir.onnx".into(),
            ext("sub", 0, 64),
            vec!["tensor 'w_ext'", "directory"],
        ),
        (
            "nomutable.onnx".into(),
            one(f32_raw("bias", &[3], &[0.0; 3])),
            vec!["no mutable tensors"],
        ),
    ];
    // Truncated at a few offsets, including inside the weight payload.
    for cut in [1, 7, good.len() / 3, good.len() / 2, good.len() - 1] {
        cases.push((format!("cut{cut}.onnx"), good[..cut].to_vec(), vec![]));
    }
    // A length prefix made huge: the graph's length varint claims more bytes than exist.
    let mut huge = good.clone();
    let g = huge.iter().position(|&b| b == 0x3a).unwrap();
    huge.splice(g + 1..g + 1, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    cases.push(("length.onnx".into(), huge, vec![]));
    for (name, bytes, needles) in &cases {
        let p = c.write(name, bytes);
        let mut n = vec![s(&p)];
        n.extend(needles.iter().copied());
        let out = c.out();
        assert_refused(&evolve(&p, &c.data_file(), &out, &[]), &out, &n);
        let out = c.out();
        assert_refused(&mutate(&p, &out, &[]), &out, &n);
    }
    // Inputs are never modified.
    for (name, bytes, _) in &cases {
        assert_eq!(&std::fs::read(c.path(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn models_onnx_runtime_refuses_are_one_line_errors() {
    let c = Case::new();
    let unknown = edited(|m| {
        let g = m.graph.as_mut().unwrap();
        g.node[1].op_type = Some("NoSuchOperator".into());
    });
    // `b` becomes float64: Add(float, double) is a type error.
    let typed = edited(|m| {
        let g = m.graph.as_mut().unwrap();
        let b = g.initializer.iter_mut().find(|t| t.name() == "b").unwrap();
        b.data_type = Some(TDType::F64.to_onnx());
        b.raw_data = Some(
            [0.0f64, 0.1, 0.2]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        );
    });
    for (name, bytes) in [("unknown_op.onnx", unknown), ("type_error.onnx", typed)] {
        let p = c.write(name, &bytes);
        let out = c.out();
        assert_refused(&evolve(&p, &c.data_file(), &out, &[]), &out, &[s(&p)]);
    }
}

#[test]
fn malformed_data_is_refused_by_evolve() {
    let c = Case::new();
    let (x, l) = Case::data();
    let n = SAMPLES;
    let mut corrupt = write_npz(
        &[
            ("x", DType::F32, &[n, 2], &x),
            ("labels", DType::I64, &[n], &l),
        ],
        true,
    );
    let pos = corrupt.windows(5).position(|w| w == b"x.npy").unwrap() + 5 + 20 + 4;
    for b in &mut corrupt[pos..pos + 12] {
        *b ^= 0xa5;
    }
    let mut out_of_range = l.clone();
    out_of_range[8..16].copy_from_slice(&3i64.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "text.npz",
            b"this is not a zip file".to_vec(),
            vec!["not an .npz"],
        ),
        ("corrupt.npz", corrupt, vec!["array `x`"]),
        (
            "nolabels.npz",
            write_npz(&[("x", DType::F32, &[n, 2], &x)], false),
            vec!["no array `labels`"],
        ),
        (
            "noinput.npz",
            write_npz(
                &[
                    ("other", DType::F32, &[n, 2], &x),
                    ("labels", DType::I64, &[n], &l),
                ],
                false,
            ),
            vec!["no array `x` for model input `x`"],
        ),
        (
            "dtype.npz",
            write_npz(
                &[
                    ("x", DType::F64, &[n, 2], &vec![0u8; n * 16]),
                    ("labels", DType::I64, &[n], &l),
                ],
                false,
            ),
            vec!["array `x` has dtype float64"],
        ),
        (
            "rank.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[n, 2, 1], &x),
                    ("labels", DType::I64, &[n], &l),
                ],
                false,
            ),
            vec!["array `x` has rank 3"],
        ),
        (
            "count.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[n, 2], &x),
                    ("labels", DType::I64, &[n - 1], &l[..(n - 1) * 8]),
                ],
                false,
            ),
            vec!["array `x` has 24 samples but array `labels` has 23"],
        ),
        (
            "range.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[n, 2], &x),
                    ("labels", DType::I64, &[n], &out_of_range),
                ],
                false,
            ),
            vec!["array `labels` has class id 3 at row 1", "3 classes"],
        ),
        (
            "empty.npz",
            write_npz(
                &[
                    ("x", DType::F32, &[0, 2], &[]),
                    ("labels", DType::I64, &[0], &[]),
                ],
                false,
            ),
            vec!["empty"],
        ),
    ];
    for (name, bytes, needles) in cases {
        let p = c.write(name, &bytes);
        let mut all = vec![s(&p)];
        all.extend(needles);
        let out = c.out();
        assert_refused(&evolve(&c.model(), &p, &out, &[]), &out, &all);
    }
    let absent = c.path("absent.npz");
    let out = c.out();
    assert_refused(&evolve(&c.model(), &absent, &out, &[]), &out, &[s(&absent)]);
}

#[test]
fn bad_arguments_are_refused() {
    let c = Case::new();
    let (m, d) = (c.model(), c.data_file());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--children", "0"], "--children"),
        (vec!["--children", "1000000000"], "--children"),
        (vec!["--children", "-3"], "--children"),
        (vec!["--sigma", "0"], "--sigma"),
        (vec!["--sigma", "-1"], "--sigma"),
        (vec!["--sigma", "NaN"], "--sigma"),
        (vec!["--sigma", "inf"], "--sigma"),
        (vec!["--holdout", "0"], "--holdout"),
        (vec!["--holdout", "1"], "--holdout"),
        (vec!["--holdout", "1.5"], "--holdout"),
        (vec!["--holdout", "-0.5"], "--holdout"),
        (vec!["--holdout", "NaN"], "--holdout"),
        (vec!["--generations", "0"], "--generations"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--density", "0", "--mode", "density"], "--density"),
        (vec!["--device", "quantum"], "--device"),
        (vec!["--include", "("], "--include"),
        (vec!["--children", "many"], "--children"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ];
    for (extra, needle) in &cases {
        let out = c.out();
        assert_refused(&evolve(&m, &d, &out, extra), &out, &[needle]);
    }
    // `mutate` shares the mutation flags; --sigma 0 is allowed there (identical copies).
    for (extra, needle) in &cases[..3] {
        let out = c.out();
        assert_refused(&mutate(&m, &out, extra), &out, &[needle]);
    }
    let out = c.out();
    assert_refused(&mutate(&m, &out, &["--only", "2"]), &out, &["--only"]);
}

#[test]
fn unusable_output_folders_are_refused() {
    let c = Case::new();
    let (m, d) = (c.model(), c.data_file());
    // The output folder is a file.
    let file = c.write("file.txt", b"keep me");
    let o = evolve(&m, &d, &file, &[]);
    assert_refused(&o, &c.path("nothing"), &[s(&file), "not a folder"]);
    let o = mutate(&m, &file, &[]);
    assert_refused(&o, &c.path("nothing"), &[s(&file), "not a folder"]);
    // Under a file: it cannot be created.
    let under = file.join("out");
    assert_refused(&evolve(&m, &d, &under, &[]), &under, &[s(&under)]);
    assert_refused(&mutate(&m, &under, &[]), &under, &[s(&under)]);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // Not empty.
    let full = c.out();
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("mine.txt"), b"x").unwrap();
    let o = evolve(&m, &d, &full, &[]);
    assert_eq!(o.status.code(), Some(2));
    // evolve rewords the output module's typed error to name its own way out.
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "is not empty (use --force to replace its outputs, or --resume to continue a run)"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(entries(&full), ["mine.txt"]);

    // Not writable. Root ignores permission bits: then check the folder probe differently.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = c.out();
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let enforced = std::fs::write(ro.join("probe"), b"").is_err();
        if enforced {
            assert_refused(&evolve(&m, &d, &ro, &[]), &ro, &[s(&ro)]);
            assert_refused(&mutate(&m, &ro, &[]), &ro, &[s(&ro)]);
            let sub = ro.join("sub");
            assert_refused(&evolve(&m, &d, &sub, &[]), &sub, &[s(&sub)]);
        } else {
            println!(
                "skipped the read-only folder case: running as a user who bypasses permission \
                 bits (root); the folder-under-a-file case above covers an unwritable path"
            );
            std::fs::remove_file(ro.join("probe")).unwrap();
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Everything in `dir` with a hash of its bytes.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    entries(dir)
        .into_iter()
        .map(|e| {
            let p = dir.join(&e);
            let h = if p.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string()
            } else {
                "dir".into()
            };
            (e, h)
        })
        .collect()
}

#[test]
fn outputs_never_overwrite_inputs() {
    let c = Case::new();
    let d = c.data_file();
    let good = Case::linear();
    // The model is DIR/best.onnx, DIR/ensemble.onnx or DIR/report.json; with or without --force.
    for name in ["best.onnx", "ensemble.onnx", "report.json"] {
        let dir = c.out();
        std::fs::create_dir(&dir).unwrap();
        let m = dir.join(name);
        std::fs::write(&m, &good).unwrap();
        let before = snapshot(&dir);
        for extra in [&[][..], &["--force"][..], &["--resume"][..]] {
            let o = evolve(&m, &d, &dir, extra);
            assert_eq!(o.status.code(), Some(2), "{name} {extra:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.lines().count(), 1, "{err}");
            let named = if extra.is_empty() { s(&dir) } else { s(&m) };
            assert!(err.contains(named), "{err}");
            assert_eq!(snapshot(&dir), before, "{name} {extra:?}: {err}");
        }
    }
    // The data is DIR/report.json.
    let dir = c.out();
    std::fs::create_dir(&dir).unwrap();
    let data = dir.join("report.json");
    std::fs::copy(&d, &data).unwrap();
    let before = snapshot(&dir);
    let o = evolve(&c.model(), &data, &dir, &["--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(s(&data)));
    assert_eq!(snapshot(&dir), before);
    // A hard link to the model under an output's name.
    let dir = c.out();
    std::fs::create_dir(&dir).unwrap();
    std::fs::hard_link(c.model(), dir.join("best.onnx")).unwrap();
    let before = snapshot(&dir);
    let o = evolve(&c.model(), &d, &dir, &["--force"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(snapshot(&dir), before);
    // External data named like an output.
    let dir = c.out();
    std::fs::create_dir(&dir).unwrap();
    let w: Vec<f32> = vec![1.0, 0.0, -1.0, 0.0, 1.0, 0.5];
    std::fs::write(dir.join("report.json"), f32s(&w)).unwrap();
    let ext_model = edited(|m| {
        let g = m.graph.as_mut().unwrap();
        let t = g.initializer.iter_mut().find(|t| t.name() == "W").unwrap();
        *t = external("W", TDType::F32, &[2, 3], "report.json", 0, 24);
    });
    let m = dir.join("m.onnx");
    std::fs::write(&m, ext_model).unwrap();
    let before = snapshot(&dir);
    let o = evolve(&m, &d, &dir, &["--force"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("report.json"));
    assert_eq!(snapshot(&dir), before);
    // `mutate` into the model's own folder, the model named like a child.
    let dir = c.out();
    std::fs::create_dir(&dir).unwrap();
    let m = dir.join("child_001.onnx");
    std::fs::write(&m, &good).unwrap();
    let before = snapshot(&dir);
    let o = mutate(&m, &dir, &["--force"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains(s(&m)));
    assert_eq!(
        snapshot(&dir),
        before,
        "no child written before the refusal"
    );
}

#[test]
fn a_parent_that_fails_on_the_data_is_refused() {
    let c = Case::new();
    let nan = c.write(
        "nan.onnx",
        &linear_model(
            &[f32::NAN, 0.0, 0.0, 0.0, 1.0, 0.0],
            &[0.0; 3],
            2,
            3,
            false,
            None,
        ),
    );
    let out = c.out();
    let o = evolve(&nan, &c.data_file(), &out, &[]);
    assert_refused(&o, &out, &[s(&nan), "NaN/Inf"]);
}

/// The linear model on data whose `x[:, 0]` is 1000 and `x[:, 1]` is `x1`: with `--children 6`
/// each child mutates exactly one of the six weights; with a huge absolute σ a child that
/// mutates row 0 of `W` overflows to Inf, one that mutates row 1 does too unless `x1` is 0.
fn overflow_case(x1: f32) -> Case {
    let c = Case::new();
    let x: Vec<f32> = (0..SAMPLES).flat_map(|_| [1000.0, x1]).collect();
    let (_, l) = Case::data();
    c.write(
        "d.npz",
        &write_npz(
            &[
                ("x", DType::F32, &[SAMPLES, 2], &f32s(&x)),
                ("labels", DType::I64, &[SAMPLES], &l),
            ],
            false,
        ),
    );
    c
}

const OVERFLOW: [&str; 5] = ["--children", "6", "--absolute-sigma", "--sigma", "4e37"];

#[test]
fn failed_children_are_reported_and_the_run_goes_on() {
    let c = overflow_case(0.0);
    let out = c.out();
    let o = evolve(&c.model(), &c.data_file(), &out, &OVERFLOW);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("3 of 6 children failed"),
        "a warning says so: {err}"
    );
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("failed: output `y` has NaN/Inf"),
        "{summary}"
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let children = r["children"].as_array().unwrap();
    let failed: Vec<&Value> = children
        .iter()
        .filter(|c| c["failed"].is_string())
        .collect();
    assert_eq!(failed.len(), 3, "{children:?}");
    for f in &failed {
        assert!(f["selection"].is_null() && f["holdout"].is_null(), "{f}");
    }
    // The others were scored, and the ensembles use only them.
    for e in r["ensembles"].as_array().unwrap() {
        for m in e["members"].as_array().unwrap() {
            if let Some(i) = m["index"].as_u64() {
                assert!(children[i as usize]["failed"].is_null(), "{e}");
            }
        }
    }
    assert!(out.join("ensemble.onnx").is_file());

    // Every child fails: nothing to select from, exit 1 (partial), the report still written.
    let c = overflow_case(1000.0);
    let out = c.out();
    let o = evolve(&c.model(), &c.data_file(), &out, &OVERFLOW);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("6 of 6 children failed"), "{err}");
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(
        r["children"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["failed"].is_string())
    );
    assert!(r["best"].is_null());
    assert!(!out.join("best.onnx").exists() && !out.join("ensemble.onnx").exists());
}

/// The report without what legitimately varies between runs: timings, and the output folder
/// in `outputs` (replaced by `OUT`).
fn normalised(report: &Path, out: &Path) -> Value {
    let mut r: Value = serde_json::from_slice(&std::fs::read(report).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", report.display()));
    r.as_object_mut().unwrap().remove("timings");
    let text = r["outputs"].to_string().replace(s(out), "OUT");
    r["outputs"] = serde_json::from_str(&text).unwrap();
    r
}

/// Fails with the first path where `a` and `b` differ (whole reports are too long to print).
#[track_caller]
fn assert_same_json(a: &Value, b: &Value, what: &str) {
    fn first_diff(a: &Value, b: &Value, path: String) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys()) {
                    let (va, vb) = (&x.get(k), &y.get(k));
                    match (va, vb) {
                        (Some(va), Some(vb)) => {
                            if let Some(d) = first_diff(va, vb, format!("{path}.{k}")) {
                                return Some(d);
                            }
                        }
                        _ => return Some(format!("{path}.{k}: {va:?} vs {vb:?}")),
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (va, vb))| first_diff(va, vb, format!("{path}[{i}]"))),
            _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
        }
    }
    if let Some(d) = first_diff(a, b, String::new()) {
        panic!("{what}: reports differ at {d}");
    }
}

/// What a new file gets under this process's umask (children inherit it).
#[cfg(unix)]
fn new_file_mode() -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f");
    std::fs::File::create(&p).unwrap();
    std::fs::metadata(&p).unwrap().permissions().mode() & 0o777
}

#[test]
fn same_command_same_bytes_across_reruns_and_thread_counts() {
    let d = tempfile::tempdir().unwrap();
    let run = |name: &str, threads: &str, extra: &[&str]| -> PathBuf {
        let out = d.path().join(name);
        let mut a = vec![
            "evolve",
            "models/digits_cnn_undertrained.onnx",
            "--data",
            "fixtures/digits_val.npz",
            "--children",
            "8",
            "--generations",
            "2",
            "--seed",
            "3",
            "--out",
            s(&out),
        ];
        a.extend_from_slice(extra);
        let o = smd_env(&a, &[("RAYON_NUM_THREADS", threads)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let first = run("a", "2", &[]);
    assert!(first.join("best.onnx").is_file() && first.join("ensemble.onnx").is_file());
    let want_report = normalised(&first.join("report.json"), &first);
    let others = [
        run("b", "2", &[]),
        run("c", "1", &[]),
        run("d", "8", &[]),
        run("e", "2", &["--threads", "1"]),
    ];
    for (i, out) in others.iter().enumerate() {
        let mut report = normalised(&out.join("report.json"), out);
        if i == 3 {
            // The one thing that differs: the report records the thread setting.
            assert_eq!(report["runtime"]["intra_threads"], 1);
            report["runtime"]["intra_threads"] = want_report["runtime"]["intra_threads"].clone();
        }
        assert_same_json(&report, &want_report, &out.display().to_string());
        for f in ["best.onnx", "ensemble.onnx"] {
            assert!(
                std::fs::read(first.join(f)).unwrap() == std::fs::read(out.join(f)).unwrap(),
                "{f} differs in {}",
                out.display()
            );
        }
    }
    // Children written by `mutate`, with any number of threads.
    let mutate_run = |name: &str, threads: &str| -> Vec<(String, String)> {
        let out = d.path().join(name);
        let o = smd_env(
            &[
                "mutate",
                "models/digits_cnn.onnx",
                "--children",
                "5",
                "--seed",
                "9",
                "--out",
                s(&out),
            ],
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        snapshot(&out)
    };
    let m1 = mutate_run("m1", "1");
    assert_eq!(m1.len(), 5);
    assert_eq!(mutate_run("m2", "8"), m1);
    assert_eq!(mutate_run("m3", "2"), m1);

    // Outputs have the permissions of any new file (not tempfile's 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let want = new_file_mode();
        let mut files: Vec<PathBuf> = ["best.onnx", "ensemble.onnx", "report.json"]
            .iter()
            .map(|f| first.join(f))
            .collect();
        files.extend(m1.iter().map(|(n, _)| d.path().join("m1").join(n)));
        for f in files {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, want, "{}: {mode:o}", f.display());
        }
    }
}

/// xorshift64*: seeded, so a failing kill moment reproduces.
fn rng(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// After a kill: only complete outputs are visible; every model loads, every report parses,
/// every journal entry is a record or the key file. Returns the number of journal records.
fn check_after_kill(out: &Path, when: &str) -> usize {
    let mut records = 0;
    for e in entries(out) {
        let p = out.join(&e);
        let name = p.file_name().unwrap().to_str().unwrap();
        if is_temp(name) {
            continue;
        }
        match e.as_str() {
            "best.onnx" | "ensemble.onnx" => {
                smd_onnx::onnx::Model::open(&p)
                    .unwrap_or_else(|err| panic!("{when}: {e} does not load: {err}"));
            }
            "report.json" => {
                let _: Value = serde_json::from_slice(&std::fs::read(&p).unwrap())
                    .unwrap_or_else(|err| panic!("{when}: {e} does not parse: {err}"));
            }
            "report.html" => {
                let page = std::fs::read_to_string(&p).unwrap();
                assert!(page.ends_with("</html>\n"), "{when}: {e} is not complete");
            }
            ".smd-journal" | ".smd-journal/run.json" => {}
            j if j.starts_with(".smd-journal/") && j.ends_with(".bin") => records += 1,
            other => panic!("{when}: unexpected {other} in the output folder"),
        }
    }
    records
}

#[cfg(unix)]
#[test]
fn killed_runs_leave_only_complete_outputs_and_resume_finishes_the_same() {
    use std::time::Instant;
    let d = tempfile::tempdir().unwrap();
    let args = |out: &Path, resume: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "evolve",
            "models/mnist_mlp.onnx",
            "--data",
            "fixtures/mnist_val.npz",
            "--children",
            "16",
            "--generations",
            "3",
            "--seed",
            "11",
            "--out",
            s(out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        if resume {
            a.push("--resume".into());
        }
        a
    };
    let spawn = |a: &[String]| {
        Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
            .args(a)
            .current_dir(root())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start smd-onnx")
    };
    // The uninterrupted run, timed once.
    let reference = d.path().join("reference");
    let t = Instant::now();
    let status = spawn(&args(&reference, false)).wait().unwrap();
    let duration = t.elapsed();
    assert!(status.success());
    let want = normalised(&reference.join("report.json"), &reference);
    let total_candidates = want["children"].as_array().unwrap().len();

    let mut seed = 0x6b69_6c6c_u64;
    let kills = 20;
    for k in 0..kills {
        // One moment in each twentieth of the run, at a random place inside it.
        let frac = (k as f64 + (rng(&mut seed) % 1000) as f64 / 1000.0) / kills as f64;
        let at = duration.mul_f64(frac);
        let out = d.path().join(format!("kill{k}"));
        let when = format!("kill {k} at {at:?} of {duration:?}");
        let mut child = spawn(&args(&out, false));
        std::thread::sleep(at);
        // SIGKILL: no destructor, no cleanup.
        let _ = child.kill();
        child.wait().unwrap();
        let records = check_after_kill(&out, &when);

        let o = smd(&args(&out, true)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert!(
            o.status.success(),
            "{when}: resume failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Nothing journaled was scored again: a candidate taken from the journal has 0 s.
        let r: Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        let per: Vec<f64> = r["timings"]["per_candidate"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(per.len() > total_candidates, "{when}: {per:?}");
        let reused = per.iter().filter(|&&x| x == 0.0).count();
        assert_eq!(
            reused, records,
            "{when}: journal records vs reused candidates"
        );
        // The resumed run's report is the uninterrupted run's.
        assert_same_json(&normalised(&out.join("report.json"), &out), &want, &when);
        for f in ["best.onnx", "ensemble.onnx"] {
            assert!(
                std::fs::read(out.join(f)).unwrap() == std::fs::read(reference.join(f)).unwrap(),
                "{when}: {f} differs from the uninterrupted run's"
            );
        }
        // The resumed run cleaned up the killed one's temporary files.
        let temps: Vec<String> = entries(&out).into_iter().filter(|e| is_temp(e)).collect();
        assert!(temps.is_empty(), "{when}: {temps:?}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Environment variable that turns [`atomic_write_helper`] into the process to kill.
const HELPER_ENV: &str = "SMD_ONNX_RELIABILITY_HELPER";

/// Not a test: the process `writes_killed_midway_leave_the_old_file` kills in the middle of
/// an atomic write (it writes half the new contents, says so, then waits).
#[test]
#[ignore = "helper process, started by writes_killed_midway_leave_the_old_file"]
fn atomic_write_helper() {
    let Some(path) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let ready = path.with_extension("ready");
    smd_onnx::output::write_atomic::<(), smd_onnx::output::OutputError>(&path, |w| {
        w.write_all(&vec![b'n'; 1 << 20]).unwrap();
        w.flush().unwrap();
        std::fs::write(&ready, b"").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
        Ok(())
    })
    .unwrap();
}

#[cfg(unix)]
#[test]
fn writes_killed_midway_leave_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    for old in [None, Some(b"old contents".to_vec())] {
        let path = d.path().join("report.json");
        match &old {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        let ready = path.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reliability::atomic_write_helper",
                "--ignored",
                "--test-threads",
                "1",
            ])
            .env(HELPER_ENV, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while !ready.exists() {
            assert!(start.elapsed().as_secs() < 30, "the helper never got going");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The destination is untouched; the half-written data is only in a hidden temp file.
        let now = std::fs::read(&path).ok();
        assert!(
            now == old,
            "the destination changed: {:?} bytes, was {:?}",
            now.map(|b| b.len()),
            old.as_ref().map(Vec::len)
        );
        let names: Vec<String> = entries(d.path())
            .into_iter()
            .filter(|n| n != "report.ready" && n != "report.json")
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names[0].starts_with(".report.json.") && is_temp(&names[0]),
            "{names:?}"
        );
        smd_onnx::output::remove_temps(d.path(), Some(&["report.json"])).unwrap();
    }
}

#[test]
fn resume_refuses_another_runs_journal_and_inputs_stay_untouched() {
    let c = Case::new();
    let (m, d) = (c.model(), c.data_file());
    let before = snapshot(c.dir.path());
    let out = c.out();
    let o = evolve(&m, &d, &out, &["--seed", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let done = snapshot(&out);
    // Other settings: the journal is not theirs; nothing in the folder changes.
    let o = evolve(&m, &d, &out, &["--seed", "2", "--resume"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("run.json") && err.contains("different run"),
        "{err}"
    );
    assert_eq!(snapshot(&out), done);
    // The same settings: a finished run resumes to the same outputs without scoring anything.
    let o = evolve(&m, &d, &out, &["--seed", "1", "--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert!(
        r["timings"]["per_candidate"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_f64() == Some(0.0)),
        "{}",
        r["timings"]
    );
    // The inputs were never modified (the scratch folder also holds the outputs now).
    let after: Vec<_> = snapshot(c.dir.path())
        .into_iter()
        .filter(|(n, _)| !n.starts_with("out"))
        .collect();
    assert_eq!(after, before);
}
