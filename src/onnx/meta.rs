//! The model's top-level `metadata_props`: read them, and replace smd-onnx's own entries in a
//! child without touching any other byte.
//!
//! ModelProto is the file's top-level message, which has no length prefix: an entry can be
//! removed or appended without fixing up any length.

use super::ModelError;
use super::wire::{self, Reader, Wire};

/// `ModelProto.metadata_props`.
const METADATA_PROPS: u32 = 14;

/// One top-level metadata entry and the bytes it spans (key to end of value).
pub(crate) struct Entry {
    pub key: String,
    pub value: String,
    pub start: usize,
    pub end: usize,
}

/// Reads a `StringStringEntryProto` in `buf[start..end]`.
fn entry(buf: &[u8], start: usize, end: usize) -> Result<(String, String), wire::WireError> {
    let (mut key, mut value) = (String::new(), String::new());
    let mut r = Reader::new(buf, start, end);
    while let Some(f) = r.next_field()? {
        let text = || String::from_utf8_lossy(buf.get(f.start..f.end).unwrap_or(&[])).into_owned();
        match (f.number, f.wire) {
            (1, Wire::Len) => key = text(),
            (2, Wire::Len) => value = text(),
            _ => {}
        }
    }
    Ok((key, value))
}

/// The top-level metadata entries of model bytes (already validated by the index).
pub(crate) fn entries(buf: &[u8]) -> Result<Vec<Entry>, wire::WireError> {
    let mut out = Vec::new();
    let mut r = Reader::new(buf, 0, buf.len());
    while let Some(f) = r.next_field()? {
        if f.number == METADATA_PROPS && f.wire == Wire::Len {
            let (key, value) = entry(buf, f.start, f.end)?;
            out.push(Entry {
                key,
                value,
                start: f.key_pos,
                end: f.end,
            });
        }
    }
    Ok(out)
}

/// The encoding of one top-level metadata entry (field 14).
pub(crate) fn encode_entry(key: &str, value: &str) -> Vec<u8> {
    let mut inner = Vec::new();
    for (field, s) in [(1u64, key), (2u64, value)] {
        wire::put_varint(&mut inner, (field << 3) | 2);
        wire::put_varint(&mut inner, s.len() as u64);
        inner.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    wire::put_varint(&mut out, (u64::from(METADATA_PROPS) << 3) | 2);
    wire::put_varint(&mut out, inner.len() as u64);
    out.extend(inner);
    out
}

/// Maps a wire error while reading metadata to a model error.
pub(crate) fn malformed(path: &std::path::Path, e: wire::WireError) -> ModelError {
    ModelError::Malformed {
        path: path.to_path_buf(),
        offset: 0,
        context: "metadata_props".into(),
        what: e.to_string(),
    }
}
