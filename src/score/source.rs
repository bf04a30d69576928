//! Where a run's labelled data comes from: a file (an `.npz` or a folder of `.npy` files) or
//! arrays a caller already holds in memory (the Python binding's numpy arrays, whose bytes
//! the [`RawArray`]s borrow: nothing is copied or written to disk).

use std::fmt;
use std::path::{Path, PathBuf};

use super::arrays::RawArray;
use super::{DataError, Dataset, ModelIo};

/// The labelled data of a run or a score.
#[derive(Clone)]
pub enum DataSource {
    /// An `.npz` file or a folder of `.npy` files (memory-mapped).
    File(PathBuf),
    /// Named arrays in memory: one per model input and `labels`, as in an `.npz`.
    Arrays {
        /// What errors and reports call them (e.g. `<numpy arrays: pixels, labels>`).
        name: String,
        /// The arrays; their names are unique.
        arrays: Vec<RawArray>,
    },
}

impl DataSource {
    /// Reads and validates the data against the model's inputs (see [`Dataset::open`]);
    /// arrays are checked first: unique names, and bytes that match dtype and shape.
    pub fn open(&self, io: &ModelIo) -> Result<Dataset, DataError> {
        match self {
            Self::File(p) => Dataset::open(p, io),
            Self::Arrays { name, arrays } => {
                let path = Path::new(name);
                check_arrays(arrays).map_err(|message| DataError::Invalid {
                    path: path.to_path_buf(),
                    message,
                })?;
                Dataset::from_arrays(path, arrays.clone(), io)
            }
        }
    }

    /// The file or folder, `None` for arrays in memory (an output must never replace it).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::File(p) => Some(p),
            Self::Arrays { .. } => None,
        }
    }
}

/// Every array's byte length is its shape's elements times the dtype's size, and no two
/// arrays share a name (a caller, unlike the npz reader, can hand over anything).
fn check_arrays(arrays: &[RawArray]) -> Result<(), String> {
    for (i, a) in arrays.iter().enumerate() {
        if arrays[..i].iter().any(|b| b.name == a.name) {
            return Err(format!("two arrays are named `{}`", a.name));
        }
        let need = a
            .shape
            .iter()
            .try_fold(a.dtype.size(), |n, &d| n.checked_mul(d))
            .ok_or_else(|| format!("array `{}`: shape {:?} overflows", a.name, a.shape))?;
        if a.data.len() != need {
            return Err(format!(
                "array `{}` has {} bytes but shape {:?} of {} needs {need}",
                a.name,
                a.data.len(),
                a.shape,
                a.dtype
            ));
        }
    }
    Ok(())
}

impl fmt::Display for DataSource {
    /// The path, or the arrays' name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Arrays { name, .. } => f.write_str(name),
        }
    }
}

impl fmt::Debug for DataSource {
    /// Arrays by name, dtype and shape (not their bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Arrays { name, arrays } => {
                let shapes: Vec<String> = arrays
                    .iter()
                    .map(|a| format!("{}: {} {:?}", a.name, a.dtype, a.shape))
                    .collect();
                f.debug_struct("Arrays")
                    .field("name", name)
                    .field("arrays", &shapes)
                    .finish()
            }
        }
    }
}

impl From<PathBuf> for DataSource {
    fn from(p: PathBuf) -> Self {
        Self::File(p)
    }
}

impl From<&Path> for DataSource {
    fn from(p: &Path) -> Self {
        Self::File(p.to_path_buf())
    }
}

impl From<&PathBuf> for DataSource {
    fn from(p: &PathBuf) -> Self {
        Self::File(p.clone())
    }
}

impl From<&str> for DataSource {
    fn from(p: &str) -> Self {
        Self::File(p.into())
    }
}

impl From<String> for DataSource {
    fn from(p: String) -> Self {
        Self::File(p.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Bytes;
    use crate::score::npy::DType;
    use crate::score::spec::{ElemType, IoSpec};

    use crate::score::dataset::tests::arr;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn labels(v: &[i64]) -> RawArray {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        arr("labels", DType::I64, vec![v.len()], bytes)
    }

    fn io() -> ModelIo {
        ModelIo {
            path: "m.onnx".into(),
            inputs: vec![IoSpec {
                name: "x".into(),
                elem: Some(ElemType::Known(DType::F32)),
                dims: None,
            }],
            outputs: vec![],
            hidden: vec![],
        }
    }

    fn source(arrays: Vec<RawArray>) -> DataSource {
        DataSource::Arrays {
            name: "<arrays>".into(),
            arrays,
        }
    }

    #[test]
    fn arrays_open_as_a_data_set_named_by_the_source() {
        let x = arr("x", DType::F32, vec![3, 2], f32s(&[1., 2., 3., 4., 5., 6.]));
        let ds = source(vec![x, labels(&[0, 1, 0])]).open(&io()).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.path(), Path::new("<arrays>"));
        assert_eq!(source(vec![]).to_string(), "<arrays>");
        assert_eq!(source(vec![]).path(), None);
        let file = DataSource::from("d.npz");
        assert_eq!(file.path(), Some(Path::new("d.npz")));
        assert_eq!(file.to_string(), "d.npz");
    }

    #[test]
    fn the_arrays_bytes_are_used_where_they_are() {
        let data = crate::buffer::aligned_copy(&f32s(&[1., 2., 3., 4.]));
        let x = RawArray {
            name: "x".into(),
            dtype: DType::F32,
            shape: vec![2, 2],
            data: data.clone(),
        };
        let ds = source(vec![x, labels(&[0, 1])]).open(&io()).unwrap();
        let a = &ds.inputs()[0];
        assert_eq!(a.data().as_ptr(), data.as_ptr());
    }

    #[test]
    fn bad_arrays_are_refused_naming_the_array() {
        let short = arr("x", DType::F32, vec![3, 2], f32s(&[1., 2.]));
        let e = source(vec![short, labels(&[0, 1, 0])])
            .open(&io())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "<arrays>: array `x` has 8 bytes but shape [3, 2] of float32 needs 24"
        );
        let x = || arr("x", DType::F32, vec![1, 1], f32s(&[1.]));
        let e = source(vec![x(), x(), labels(&[0])])
            .open(&io())
            .unwrap_err()
            .to_string();
        assert!(e.contains("two arrays are named `x`"), "{e}");
        let e = source(vec![x()]).open(&io()).unwrap_err().to_string();
        assert!(e.contains("no array `labels`"), "{e}");
        let huge = RawArray {
            name: "x".into(),
            dtype: DType::F64,
            shape: vec![usize::MAX, 2],
            data: Bytes::new(),
        };
        let e = source(vec![huge]).open(&io()).unwrap_err().to_string();
        assert!(e.contains("array `x`: shape"), "{e}");
    }
}
