//! Reading named arrays from an `.npz` file or a folder of `.npy` files.
//!
//! Stored (uncompressed) npz members and `.npy` files are memory-mapped: an array's bytes are a
//! slice of the map found from the member's local header and the `.npy` header, so nothing is
//! copied and a data set larger than RAM is paged in as batches touch it. Deflated members are
//! decompressed into memory (8-byte aligned). Both are [`crate::buffer`]'s buffers.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;

use super::DataError;
use super::npy::{self, DType};
use crate::buffer::{self, Bytes};

/// One named array: dtype, shape and its raw little-endian bytes (C order).
#[derive(Debug, Clone)]
pub struct RawArray {
    /// The array's name (npz key or file stem).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Exactly `product(shape) * dtype.size()` bytes.
    pub data: Bytes,
}

fn invalid(path: &Path, message: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

fn map_file(path: &Path) -> Result<Bytes, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    buffer::map_file(&f).map_err(io)
}

/// Reads every array of `path`: an `.npz` file or a folder of `.npy` files.
pub fn read_arrays(path: &Path) -> Result<Vec<RawArray>, DataError> {
    if path.is_dir() {
        return read_dir(path);
    }
    let bytes = map_file(path)?;
    parse_npz(&bytes).map_err(|m| invalid(path, m))
}

fn read_dir(dir: &Path) -> Result<Vec<RawArray>, DataError> {
    let io = |e| DataError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "npy") && p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for p in files {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = map_file(&p)?;
        let arr = parse_npy(&name, bytes).map_err(|m| invalid(&p, m))?;
        out.push(arr);
    }
    if out.is_empty() {
        return Err(invalid(dir, "folder holds no .npy files".into()));
    }
    Ok(out)
}

/// Parses a whole `.npy` file held in `bytes` (zero copy).
pub fn parse_npy(name: &str, bytes: Bytes) -> Result<RawArray, String> {
    let h = npy::parse_header(&bytes).map_err(|e| format!("array `{name}`: {e}"))?;
    let end = h
        .data_offset
        .checked_add(h.data_len)
        .ok_or_else(|| format!("array `{name}`: size overflows"))?;
    if bytes.len() != end {
        return Err(format!(
            "array `{name}`: {} data bytes, but dtype {} and shape {:?} need {}",
            bytes.len().saturating_sub(h.data_offset),
            h.dtype,
            h.shape,
            h.data_len
        ));
    }
    Ok(RawArray {
        name: name.to_string(),
        dtype: h.dtype,
        shape: h.shape,
        data: bytes.slice(h.data_offset..end),
    })
}

/// Parses an `.npz` (zip) archive held in `bytes`: stored members are sliced (zero copy),
/// deflated ones decompressed. Errors are messages naming the array.
pub fn parse_npz(bytes: &Bytes) -> Result<Vec<RawArray>, String> {
    if bytes.is_empty() {
        return Err("not an .npz file (empty)".into());
    }
    if npy::is_npy(bytes) {
        return Err(
            "is a single .npy array; --data needs an .npz (or a folder of .npy files) holding the inputs and `labels`"
                .into(),
        );
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.as_ref()))
        .map_err(|e| format!("not an .npz (zip) file: {e}"))?;
    let mut out: Vec<RawArray> = Vec::new();
    for i in 0..zip.len() {
        let (member, name, stored, size) = {
            let f = zip
                .by_index_raw(i)
                .map_err(|e| format!("zip member {i}: {e}"))?;
            let member = String::from_utf8_lossy(f.name_raw()).into_owned();
            let Some(name) = member.strip_suffix(".npy").map(str::to_string) else {
                continue;
            };
            if f.encrypted() {
                return Err(format!(
                    "array `{name}`: encrypted zip members are not supported"
                ));
            }
            let stored = match f.compression() {
                zip::CompressionMethod::Stored => {
                    if f.compressed_size() != f.size() {
                        return Err(format!(
                            "array `{name}`: stored member with compressed size {} != size {}",
                            f.compressed_size(),
                            f.size()
                        ));
                    }
                    let start = f.data_start().ok_or_else(|| {
                        format!("array `{name}`: cannot locate the member's data")
                    })?;
                    Some(start)
                }
                zip::CompressionMethod::Deflated => None,
                m => return Err(format!("array `{name}`: unsupported zip compression {m}")),
            };
            (member, name, stored, f.size())
        };
        if out.iter().any(|a| a.name == name) {
            return Err(format!("array `{name}` appears twice"));
        }
        let arr = match stored {
            Some(start) => stored_member(bytes, &name, start, size)?,
            None => {
                let f = zip
                    .by_index(i)
                    .map_err(|e| format!("array `{name}`: {e}"))?;
                deflated_member(f, bytes.len(), &name, &member, size)?
            }
        };
        out.push(arr);
    }
    if out.is_empty() {
        return Err("the .npz holds no .npy arrays".into());
    }
    Ok(out)
}

/// A stored member: a zero-copy slice of the archive, once its range is checked.
fn stored_member(bytes: &Bytes, name: &str, start: u64, size: u64) -> Result<RawArray, String> {
    let start = usize::try_from(start).map_err(|_| format!("array `{name}`: offset too large"))?;
    let size = usize::try_from(size).map_err(|_| format!("array `{name}`: size too large"))?;
    let end = start
        .checked_add(size)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!("array `{name}`: member extends past the end of the file (truncated?)")
        })?;
    parse_npy(name, bytes.slice(start..end))
}

/// A deflated member, decompressed straight into an aligned buffer (typed views need no
/// further copy). `file_len` bounds what its untrusted directory entry may claim.
fn deflated_member(
    mut f: zip::read::ZipFile<'_, Cursor<&[u8]>>,
    file_len: usize,
    name: &str,
    member: &str,
    size: u64,
) -> Result<RawArray, String> {
    // Sizes in the zip directory are untrusted: the compressed bytes must lie in the file,
    // and deflate cannot expand them more than ~1032:1.
    let in_file = f.compressed_size().min(file_len as u64);
    let limit = in_file.saturating_mul(1032).saturating_add(1024);
    if size > limit {
        return Err(format!(
            "array `{name}`: member {member} claims {size} bytes from {} compressed",
            f.compressed_size()
        ));
    }
    let len = usize::try_from(size).map_err(|_| format!("array `{name}`: member too large"))?;
    let corrupt =
        |e: std::io::Error| format!("array `{name}`: corrupt compressed member {member}: {e}");
    let data = buffer::try_aligned_with(len, |dst| {
        f.read_exact(dst).map_err(corrupt)?;
        // Reading to the end also makes the zip reader check the CRC.
        let mut extra = [0u8; 1];
        if f.read(&mut extra).map_err(corrupt)? != 0 {
            return Err(format!(
                "array `{name}`: member {member} holds more than the {size} bytes its directory entry says"
            ));
        }
        Ok(())
    })?;
    parse_npy(name, data)
}

/// Writes arrays as an `.npz` (stored or deflated members), as `np.savez` would. Test
/// scaffolding (feature `test-support`): the library never writes data files.
#[cfg(any(test, feature = "test-support"))]
pub fn write_npz(arrays: &[(&str, DType, &[usize], &[u8])], deflate: bool) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(true);
    for (name, dtype, shape, data) in arrays {
        let npy = npy::write_npy(*dtype, shape, data);
        if w.start_file(format!("{name}.npy"), opts).is_ok() {
            let _ = w.write_all(&npy);
        }
    }
    w.finish().map(|c| c.into_inner()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn stored_members_are_zero_copy_slices() {
        let x = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let l: Vec<u8> = [0i64, 1, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let z = Bytes::from(write_npz(
            &[
                ("x", DType::F32, &[3, 2], &x),
                ("labels", DType::I64, &[3], &l),
            ],
            false,
        ));
        let arrs = parse_npz(&z).unwrap();
        assert_eq!(arrs.len(), 2);
        let a = &arrs[0];
        assert_eq!(
            (a.name.as_str(), a.dtype, a.shape.clone()),
            ("x", DType::F32, vec![3, 2])
        );
        assert_eq!(&a.data[..], &x[..]);
        // Zero copy: the array's bytes live inside the archive's buffer.
        let zr = z.as_ptr_range();
        assert!(zr.contains(&a.data.as_ptr()));
        // The member's offset is where the local header says.
        let off = a.data.as_ptr() as usize - z.as_ptr() as usize;
        assert_eq!(&z[off..off + x.len()], &x[..]);
    }

    #[test]
    fn deflated_members_are_read_and_aligned() {
        let x = f32_bytes(&[0.5; 100]);
        let l: Vec<u8> = vec![1u8; 10];
        let z = Bytes::from(write_npz(
            &[
                ("x", DType::F32, &[10, 10], &x),
                ("labels", DType::U8, &[10], &l),
            ],
            true,
        ));
        let arrs = parse_npz(&z).unwrap();
        assert_eq!(&arrs[0].data[..], &x[..]);
        assert_eq!(arrs[0].data.as_ptr() as usize % 8, 0);
        assert_eq!(arrs[1].dtype, DType::U8);
    }

    #[test]
    fn corrupt_archives_are_errors() {
        let x = f32_bytes(&[0.25; 64]);
        let good = write_npz(&[("x", DType::F32, &[64], &x)], true);
        assert!(parse_npz(&Bytes::from_static(b"")).is_err());
        assert!(parse_npz(&Bytes::from_static(b"hello world")).is_err());
        // Flip bytes in the deflate stream: a corrupt member (or a CRC mismatch), not a panic.
        let mut bad = good.clone();
        for b in bad.iter_mut().skip(60).take(20) {
            *b ^= 0x5a;
        }
        assert!(parse_npz(&Bytes::from(bad)).is_err());
        // Truncation anywhere.
        for cut in [1, 10, good.len() / 2, good.len() - 1] {
            let _ = parse_npz(&Bytes::from(good[..cut].to_vec()));
        }
        // A stored member whose npy length disagrees with its shape.
        let short = write_npz(&[("x", DType::F32, &[65], &x)], false);
        let e = parse_npz(&Bytes::from(short)).unwrap_err();
        assert!(e.contains("array `x`"), "{e}");
    }

    #[test]
    fn npy_alone_is_explained() {
        let b = Bytes::from(npy::write_npy(DType::U8, &[1], &[1]));
        assert!(parse_npz(&b).unwrap_err().contains("single .npy"));
    }
    fn unhex(parts: &[&str]) -> Vec<u8> {
        let h: String = parts.concat();
        (0..h.len() / 2)
            .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// Fuzz finding (npz target): a deflated member whose zip directory claims a 4 GiB size and
    /// compressed size made the reader allocate 4 GiB before reading a byte.
    #[test]
    fn fuzz_regression_huge_declared_member_size() {
        let b = unhex(&[
            "504b03042d000000080000002100ec80fb76ffffffffffffffff05001400782e6e707901001000a0",
            "0000000000000068000000000000009bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a06e9366a2",
            "aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a402f91a263a0a469a3a0ab5",
            "0a6403aecc0f1bec268606d9f3e8afb4bb7d76d9fef4a3e9f6a6dd4fec8e9472eed73822620f0050",
            "4b03042d00000008000000210087dea66cffffffffffffffff0a0014006c6162656c732e6e707901",
            "001000a0000000000000004c000000000000009bec17ea1b10c9c850c650ad9e925a9c5ca4925a5f",
            "8a9369a1aea5a06e9366a2aea3a09e965f54529498774bcc294e058a17672416a402f91a263a9a3a",
            "0ab50a14002e06286082d28c687c00504b01022d032d000000080000002100ec80fb7668000000a0",
            "000000050000000000000000000000800100000000782e6e7079504b01022d032d00000008000000",
            "210087dea66cbcfffdff5fffffff0a000000000000000000000080019f0000006c6162656c732e6e",
            "7079504b050600000000020002006b000000270100000000",
        ]);
        let e = parse_npz(&Bytes::from(b)).unwrap_err();
        assert!(e.contains("claims"), "rejected before allocating: {e}");
    }
}
