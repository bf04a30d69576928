//! Model I/O speed on a ~100 MB model generated on the fly (four float32 initializers in
//! raw_data): indexing, reading every value, writing a child with 1/16 of the elements
//! changed, hashing, next to copying the same file (`std::fs::copy`, with and without fsync,
//! since the child writer syncs its output).
//!
//! Run: `cargo bench --bench model_io`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use smd_onnx::TensorData;
use smd_onnx::onnx::{Model, build, write_child};

/// Elements per tensor: 4 × 6.25 M float32 = 100 MB.
const ELEMENTS: usize = 6_250_000;
const TENSORS: usize = 4;

fn make_model(dir: &Path) -> std::path::PathBuf {
    let mut inits = Vec::new();
    for t in 0..TENSORS {
        let v: Vec<f32> = (0..ELEMENTS)
            .map(|i| ((i * 7 + t) % 1000) as f32 * 1e-3)
            .collect();
        inits.push(build::f32_raw(
            &format!("layer{t}.weight"),
            &[2500, 2500],
            &v,
        ));
    }
    let g = build::graph("bench", vec![], inits, vec![], vec![]);
    let path = dir.join("bench.onnx");
    std::fs::write(&path, build::encode(&build::model(g))).expect("write bench model");
    path
}

/// Every tensor with every 16th element changed (what one SMD child of k = 16 touches).
fn changes(model: &Model) -> Vec<(usize, TensorData)> {
    model
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let TensorData::F32(mut v) = model.read_values(t).expect("values") else {
                unreachable!("float32 model")
            };
            for x in v.iter_mut().step_by(16) {
                *x += 0.5;
            }
            (i, TensorData::F32(v))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = make_model(dir.path());
    let size = std::fs::metadata(&path).expect("size").len();
    eprintln!("model: {} ({:.1} MB)", path.display(), size as f64 / 1e6);

    let mut g = c.benchmark_group("model_io_100MB");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("index (open + tensors)", |b| {
        b.iter(|| {
            let m = Model::open(&path).expect("open");
            black_box(m.tensors().len())
        })
    });

    let model = Model::open(&path).expect("open");
    g.bench_function("read_values (all tensors)", |b| {
        b.iter(|| {
            for t in model.tensors() {
                black_box(model.read_values(t).expect("values"));
            }
        })
    });

    let ch = changes(&model);
    let out = dir.path().join("child.onnx");
    g.bench_function("write_child (1/16 of elements changed, fsync)", |b| {
        b.iter(|| write_child(&model, &ch, &out).expect("write child"))
    });

    g.bench_function("content_hash (blake3)", |b| {
        b.iter(|| black_box(model.content_hash().expect("hash")))
    });

    let copy = dir.path().join("copy.onnx");
    g.bench_function("std::fs::copy", |b| {
        b.iter(|| std::fs::copy(&path, &copy).expect("copy"))
    });
    g.bench_function("std::fs::copy + fsync", |b| {
        b.iter(|| {
            std::fs::copy(&path, &copy).expect("copy");
            std::fs::File::open(&copy)
                .and_then(|f| f.sync_all())
                .expect("sync");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
