//! Mutation engine throughput on ~25M elements across 50 tensors, k = 16.

use criterion::{Criterion, criterion_group, criterion_main};
use smd_onnx::TensorData;
use smd_onnx::mutate::{Config, Plan, TensorSpec, apply_all, tensor_std};
use std::hint::black_box;

fn specs() -> Vec<TensorSpec> {
    // Mixed sizes, 50 tensors, 24.8M elements in all.
    (0..50)
        .map(|i| TensorSpec {
            key: format!("layer{i}.weight"),
            elements: 300_000 + 8_000 * i,
            std: 0.02,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let specs = specs();
    let total: usize = specs.iter().map(|s| s.elements).sum();
    eprintln!("{} tensors, {total} elements", specs.len());
    let cfg = Config {
        children: 16,
        ..Config::default()
    };
    let plan = Plan::new(&cfg, &specs, 0).unwrap();
    let mut g = c.benchmark_group("mutate_25M_k16");
    g.sample_size(10);
    g.bench_function("plan_new", |b| {
        b.iter(|| Plan::new(&cfg, black_box(&specs), 0).unwrap())
    });
    g.bench_function("child", |b| b.iter(|| plan.child(black_box(3)).unwrap()));
    g.bench_function("epsilon_all_tensors", |b| {
        b.iter(|| {
            (0..specs.len())
                .map(|t| plan.epsilon(t).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("subspace_map_all_tensors", |b| {
        b.iter(|| {
            (0..specs.len())
                .map(|t| plan.subspace_map(t).unwrap().map_or(0, |m| m.len()))
                .sum::<usize>()
        })
    });
    g.bench_function("merged_8_children", |b| {
        b.iter(|| {
            plan.merged(black_box(&[0, 2, 4, 6, 8, 10, 12, 14]))
                .unwrap()
        })
    });
    let deltas = plan.child(3).unwrap();
    let parent: Vec<TensorData> = specs
        .iter()
        .map(|s| TensorData::F32(vec![0.5; s.elements]))
        .collect();
    g.bench_function("apply_child_f32", |b| {
        b.iter_batched_ref(
            || parent.clone(),
            |v| apply_all(v, &deltas).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("tensor_std_all", |b| {
        b.iter(|| parent.iter().map(tensor_std).sum::<f64>())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
