//! Fuzz the data-set reader: arbitrary bytes as an `.npz` (and as a lone `.npy`), then the
//! arrays validated against a fixed model interface. Must never panic or over-allocate.
#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use smd_onnx::score::arrays::{parse_npy, parse_npz};
use smd_onnx::score::{DType, Dataset, Dim, ElemType, IoSpec, ModelIo};

fn model_io() -> ModelIo {
    let spec = |name: &str, t: DType, dims: Vec<Dim>| IoSpec {
        name: name.into(),
        elem: Some(ElemType::Known(t)),
        dims: Some(dims),
    };
    ModelIo {
        path: "fuzz.onnx".into(),
        inputs: vec![spec("x", DType::F32, vec![Dim::Symbolic("N".into()), Dim::Unknown])],
        outputs: vec![spec("y", DType::F32, vec![Dim::Symbolic("N".into()), Dim::Fixed(3)])],
        hidden: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = parse_npy("fuzz", bytes.clone());
    if let Ok(arrays) = parse_npz(&bytes) {
        for a in &arrays {
            // The reader's promise: every array's bytes match its dtype and shape.
            let n: usize = a.shape.iter().product();
            assert_eq!(a.data.len(), n * a.dtype.size());
        }
        if let Ok(ds) = Dataset::from_arrays(Path::new("fuzz.npz"), arrays, &model_io()) {
            assert!(!ds.is_empty());
            let _ = ds.check_classes(3, "y");
        }
    }
});
