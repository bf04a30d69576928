//! Read-only byte buffers of model and data files: [`Bytes`], cheap to clone and slice, holding
//! either a memory map of a file (zero copy: pages are read as they are touched) or bytes in
//! memory. [`crate::onnx`] and [`crate::score`] both read files through [`map_file`].

use std::fs::File;

pub use bytes::Bytes;

/// Memory-maps `file` read-only. An empty file gives an empty buffer (mapping zero bytes is an
/// error on some systems). A map starts page-aligned.
pub fn map_file(file: &File) -> std::io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the map is read-only and private to this process; smd-onnx never writes its
    // inputs. Another process truncating the file while it is mapped is outside our control
    // (as for every mmap-based reader).
    let map = unsafe { memmap2::Mmap::map(file) }?;
    Ok(Bytes::from_owner(map))
}

/// Bytes whose start is 8-byte aligned (a `Vec<u64>` underneath), so that typed views of any
/// element type need no copy.
struct Aligned {
    words: Vec<u64>,
    len: usize,
}

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        let all: &[u8] = bytemuck::cast_slice(&self.words);
        all.get(..self.len).unwrap_or_default()
    }
}

/// A new 8-byte-aligned buffer of `len` bytes, filled by `fill` (which may fail).
pub fn try_aligned_with<E>(
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
) -> Result<Bytes, E> {
    let mut words = vec![0u64; len.div_ceil(8)];
    let all: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    if let Some(dst) = all.get_mut(..len) {
        fill(dst)?;
    }
    Ok(Bytes::from_owner(Aligned { words, len }))
}

/// A new 8-byte-aligned buffer of `len` bytes, filled by `fill`.
pub fn aligned_with(len: usize, fill: impl FnOnce(&mut [u8])) -> Bytes {
    try_aligned_with(len, |dst| {
        fill(dst);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {})
}

/// Copies `src` into a new 8-byte-aligned buffer.
pub fn aligned_copy(src: &[u8]) -> Bytes {
    aligned_with(src.len(), |dst| dst.copy_from_slice(src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers() {
        for len in [0, 1, 7, 8, 9, 100] {
            let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let b = aligned_copy(&src);
            assert_eq!(&b[..], &src[..]);
            assert_eq!(b.as_ptr() as usize % 8, 0);
            // Slices keep pointing into the same buffer.
            if len > 1 {
                assert_eq!(b.slice(1..).as_ptr(), b[1..].as_ptr());
            }
        }
        let e = try_aligned_with(4, |_| Err("no")).unwrap_err();
        assert_eq!(e, "no");
    }

    #[test]
    fn maps_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let b = map_file(&File::open(&p).unwrap()).unwrap();
        assert_eq!(&b[..], b"hello");
        assert_eq!(b.as_ptr() as usize % 8, 0);
        std::fs::write(&p, b"").unwrap();
        assert!(map_file(&File::open(&p).unwrap()).unwrap().is_empty());
    }
}
