//! Indexes arbitrary bytes as an ONNX model. When indexing succeeds: every float tensor's
//! values are read, a zero-change child must equal the input byte for byte (also when every
//! quantized tensor is given back its own dequantized values), and a child with every float
//! tensor changed must index again and read back exactly the new values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smd_onnx::TensorData;
use smd_onnx::mutate::Selection;
use smd_onnx::onnx::{Model, child_bytes};

/// A different value for every element (bit flips, so NaNs and varint widths vary too).
fn perturb(v: TensorData) -> TensorData {
    match v {
        TensorData::F32(x) => TensorData::F32(
            x.into_iter().map(|a| f32::from_bits(a.to_bits() ^ 0x8040_0001)).collect(),
        ),
        TensorData::F64(x) => TensorData::F64(
            x.into_iter().map(|a| f64::from_bits(a.to_bits() ^ 0x8008_0000_0000_0001)).collect(),
        ),
        TensorData::F16(x) => TensorData::F16(
            x.into_iter().map(|a| half::f16::from_bits(!a.to_bits())).collect(),
        ),
        TensorData::BF16(x) => TensorData::BF16(
            x.into_iter().map(|a| half::bf16::from_bits(a.to_bits() ^ 0xff81)).collect(),
        ),
    }
}

fn bits(v: &TensorData) -> Vec<u64> {
    (0..v.len()).map(|i| v.get_f64(i).map_or(0, f64::to_bits)).collect()
}

fuzz_target!(|data: &[u8]| {
    // A folder that does not exist: external data never resolves, nothing is read from disk.
    let Ok(model) = Model::from_bytes(data.to_vec(), "/nonexistent-fuzz/model.onnx") else {
        return;
    };
    let _ = model.facts().inputs.iter().map(|v| v.ty.to_string()).count();
    let _ = Selection { all_float: true, ..Default::default() }.mutable_tensors(&model);
    let (mut changes, mut same) = (Vec::new(), Vec::new());
    for (i, t) in model.tensors().iter().enumerate() {
        let _ = (t.key(), t.payload_ranges(), t.storage.to_string());
        if let Ok(v) = model.read_values(t) {
            assert_eq!(v.len() as u64, t.elements);
            // Quantized values are rounded when written: they must round-trip unchanged.
            if t.quantization().is_some_and(|q| q.is_ok()) {
                same.push((i, v));
            } else {
                changes.push((i, perturb(v)));
            }
        }
    }
    let zero = child_bytes(&model, &[]).expect("zero-change child");
    assert!(zero == data, "zero-change child differs from the input");
    let round = child_bytes(&model, &same).expect("unchanged quantized values");
    assert!(round == data, "requantized unchanged values differ from the input");
    let child = child_bytes(&model, &changes).expect("child");
    let again = Model::from_bytes(child, "/nonexistent-fuzz/child.onnx").expect("child indexes");
    assert_eq!(again.tensors().len(), model.tensors().len());
    for (i, v) in &changes {
        let got = again.read_values(&again.tensors()[*i]).expect("child values");
        assert_eq!(bits(&got), bits(v), "tensor {i}");
    }
});
