//! The child writer: the parent's bytes with exactly the changed payloads replaced.
//!
//! Same-size payloads (raw_data, packed float_data/double_data, value_float(s), external data)
//! are overwritten in place. Varint payloads (float16/bfloat16 bits in int32_data) and rewritten
//! external `location` strings may change length: every enclosing length prefix is then fixed
//! up, keeping its byte width when the new length still fits (protobuf accepts padded varints),
//! so that as few bytes as possible change.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::dtype::DType;
use super::index::{Location, Payload, TensorInfo};
use super::values::{bits16, encode_le};
use super::wire::{self, LenPrefix};
use super::{Model, ModelError};
use crate::output::{self, OutputError};
use crate::tensor::TensorData;

/// One replacement of `start..end` in the source by `bytes`.
struct Repl<'d> {
    start: u64,
    end: u64,
    bytes: Cow<'d, [u8]>,
}

/// A replacement whose size may differ, with the length prefixes enclosing it (outermost first).
struct Edit<'d> {
    repl: Repl<'d>,
    chain: Vec<LenPrefix>,
}

/// Checks `changes` against the model: known tensor, not sparse, same dtype and element count,
/// no tensor twice.
fn validate<'m, 'd>(
    model: &'m Model,
    changes: &'d [(usize, TensorData)],
) -> Result<Vec<(&'m TensorInfo, &'d TensorData)>, ModelError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(changes.len());
    for (i, data) in changes {
        let Some(t) = model.tensors().get(*i) else {
            return Err(ModelError::Change {
                path: model.path().to_path_buf(),
                tensor: format!("#{i}"),
                what: format!("no such tensor (the model has {})", model.tensors().len()),
            });
        };
        let err = |what: String| ModelError::Change {
            path: model.path().to_path_buf(),
            tensor: t.name.clone(),
            what,
        };
        if !seen.insert(*i) {
            return Err(err("changed twice".into()));
        }
        if t.location == Location::SparseInitializer {
            return Err(err("sparse tensors cannot be changed".into()));
        }
        let dd = data.dtype();
        let requantized = dd == DType::F32 && matches!(t.quant, Some(Ok(_)));
        if dd != t.dtype && !requantized {
            return Err(err(format!(
                "new values are {dd}, the tensor is {}",
                t.dtype
            )));
        }
        if data.len() as u64 != t.value_count() {
            return Err(err(format!(
                "{} new values for {} elements",
                data.len(),
                t.value_count()
            )));
        }
        out.push((t, data));
    }
    Ok(out)
}

/// Patches for external files: file index → (offset, bytes).
type ExtPatches<'d> = HashMap<usize, Vec<(u64, Cow<'d, [u8]>)>>;

/// Turns validated changes into model-file edits and external-file patches.
fn plan_changes<'d>(
    model: &Model,
    changes: &[(&TensorInfo, &'d TensorData)],
    edits: &mut Vec<Edit<'d>>,
    ext: &mut ExtPatches<'d>,
) -> Result<(), ModelError> {
    for &(t, data) in changes {
        let internal = |what: &str| change_bug(model, t, what);
        let n = data.len();
        match &t.payload {
            Payload::None => {
                if n != 0 {
                    return Err(internal("no payload to change"));
                }
            }
            Payload::Raw { start, len } => {
                let bytes = raw_bytes(model, t, data)?;
                if bytes.len() as u64 != *len {
                    return Err(internal("raw_data size changed"));
                }
                edits.push(Edit {
                    repl: Repl {
                        start: *start,
                        end: start + len,
                        bytes,
                    },
                    chain: Vec::new(),
                });
            }
            Payload::External { file, offset, len } => {
                let bytes = raw_bytes(model, t, data)?;
                if bytes.len() as u64 != *len {
                    return Err(internal("external data size changed"));
                }
                ext.entry(*file).or_default().push((*offset, bytes));
            }
            Payload::Fixed { width, runs } => plan_fixed(model, t, data, *width, runs, edits)?,
            Payload::Varint { runs } => plan_varint(model, t, data, runs, edits)?,
        }
    }
    Ok(())
}

/// The little-endian payload of `data` as tensor `t` stores it (`raw_data` or external data):
/// for a quantized tensor, the parent's integers with `data` (float values) requantized into
/// them (see [`super::quant`]).
pub(crate) fn raw_bytes<'d>(
    model: &Model,
    t: &TensorInfo,
    data: &'d TensorData,
) -> Result<Cow<'d, [u8]>, ModelError> {
    match (&t.quant, data) {
        (Some(Ok(q)), TensorData::F32(v)) if t.dtype != DType::F32 => {
            let mut bytes = model
                .raw_payload(t)
                .ok_or_else(|| change_bug(model, t, "quantized payload not found"))?
                .to_vec();
            q.quantize_into(v, &mut bytes);
            Ok(Cow::Owned(bytes))
        }
        _ => Ok(encode_le(data, 0, data.len())),
    }
}

/// An internal error (a bug, not a user's mistake) found while changing tensor `t`.
fn change_bug(model: &Model, t: &TensorInfo, what: &str) -> ModelError {
    ModelError::Internal {
        path: model.path().to_path_buf(),
        what: format!("tensor '{}': {what}", t.name),
    }
}

/// The key of unpacked run `r` of tensor `t`, repeated before each of its values.
fn run_key<'m>(
    model: &'m Model,
    t: &TensorInfo,
    r: &super::index::Run,
) -> Result<&'m [u8], ModelError> {
    model
        .bytes()
        .get(r.start as usize..r.start as usize + usize::from(r.key_len))
        .ok_or_else(|| change_bug(model, t, "key outside the file"))
}

/// Same-size edits of fixed-width runs (float_data, double_data, value_float(s)): each run's
/// values replaced in place.
fn plan_fixed<'d>(
    model: &Model,
    t: &TensorInfo,
    data: &'d TensorData,
    width: u8,
    runs: &[super::index::Run],
    edits: &mut Vec<Edit<'d>>,
) -> Result<(), ModelError> {
    let internal = |what: &str| change_bug(model, t, what);
    let n = data.len();
    let w = usize::from(width);
    let mut at = 0usize;
    for r in runs {
        let count = usize::try_from(r.count).map_err(|_| internal("run too long"))?;
        let to = at.checked_add(count).filter(|&e| e <= n);
        let Some(to) = to else {
            return Err(internal("more values stored than elements"));
        };
        let values = encode_le(data, at, to);
        let bytes = if r.prefix.is_some() {
            values
        } else {
            // Unpacked: keep each key, replace each value.
            let key = run_key(model, t, r)?;
            let mut b = Vec::with_capacity(count * (w + key.len()));
            for v in values.chunks(w) {
                b.extend_from_slice(key);
                b.extend_from_slice(v);
            }
            Cow::Owned(b)
        };
        if bytes.len() as u64 != r.end - r.start {
            return Err(internal("fixed-width run size changed"));
        }
        edits.push(Edit {
            repl: Repl {
                start: r.start,
                end: r.end,
                bytes,
            },
            chain: Vec::new(),
        });
        at = to;
    }
    Ok(())
}

/// Edits of varint runs (float16/bfloat16 bits in int32_data), whose size may change: each
/// carries the length prefixes to fix up.
fn plan_varint<'d>(
    model: &Model,
    t: &TensorInfo,
    data: &TensorData,
    runs: &[super::index::Run],
    edits: &mut Vec<Edit<'d>>,
) -> Result<(), ModelError> {
    let internal = |what: &str| change_bug(model, t, what);
    let mut at = 0usize;
    for r in runs {
        let count = usize::try_from(r.count).map_err(|_| internal("run too long"))?;
        let key = if r.prefix.is_none() {
            run_key(model, t, r)?
        } else {
            &[]
        };
        let mut b = Vec::with_capacity(count * (3 + key.len()));
        for i in at..at + count {
            let bits = bits16(data, i).ok_or_else(|| internal("not 16-bit values"))?;
            b.extend_from_slice(key);
            wire::put_varint(&mut b, u64::from(bits));
        }
        let mut chain = t.ancestors.clone();
        chain.extend(r.prefix);
        edits.push(Edit {
            repl: Repl {
                start: r.start,
                end: r.end,
                bytes: Cow::Owned(b),
            },
            chain,
        });
        at += count;
    }
    if at != data.len() {
        return Err(internal("stored values differ from elements"));
    }
    Ok(())
}

/// Resolves length-prefix fix-ups for size-changing edits and returns all replacements,
/// sorted and checked not to overlap.
fn finish_plan<'d>(model: &Model, edits: Vec<Edit<'d>>) -> Result<Vec<Repl<'d>>, ModelError> {
    struct Node {
        p: LenPrefix,
        depth: usize,
        parent: Option<u64>,
        acc: i128,
    }
    let internal = |what: String| ModelError::Internal {
        path: model.path().to_path_buf(),
        what,
    };
    let mut nodes: HashMap<u64, Node> = HashMap::new();
    let mut repls = Vec::with_capacity(edits.len());
    for e in edits {
        let delta =
            e.repl.bytes.len() as i128 - (i128::from(e.repl.end) - i128::from(e.repl.start));
        // An edit with no enclosing prefix is in the top-level message (ModelProto), which has
        // no length to fix.
        if delta != 0 && !e.chain.is_empty() {
            let mut parent = None;
            for (depth, p) in e.chain.iter().enumerate() {
                nodes.entry(p.pos).or_insert(Node {
                    p: *p,
                    depth,
                    parent,
                    acc: 0,
                });
                parent = Some(p.pos);
            }
            if let Some(last) = e.chain.last().and_then(|p| nodes.get_mut(&p.pos)) {
                last.acc += delta;
            }
        }
        repls.push(e.repl);
    }
    // Deepest prefixes first, so each parent sees its children's changes (content and width).
    let mut order: Vec<(usize, u64)> = nodes.values().map(|n| (n.depth, n.p.pos)).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    for (_, pos) in order {
        let Some(n) = nodes.get(&pos) else { continue };
        if n.acc == 0 {
            continue;
        }
        let new_len = i128::from(n.p.len) + n.acc;
        let new_len = u64::try_from(new_len)
            .ok()
            .filter(|&l| l <= i32::MAX as u64)
            .ok_or_else(|| {
                internal(format!(
                    "a message would be {new_len} bytes, beyond protobuf's 2 GiB limit"
                ))
            })?;
        let width = usize::from(n.p.width);
        let bytes = wire::varint_padded(new_len, width).unwrap_or_else(|| {
            let mut b = Vec::new();
            wire::put_varint(&mut b, new_len);
            b
        });
        let wdelta = bytes.len() as i128 - width as i128;
        let (acc, parent) = (n.acc, n.parent);
        if let Some(pn) = parent.and_then(|pp| nodes.get_mut(&pp)) {
            pn.acc += acc + wdelta;
        }
        repls.push(Repl {
            start: pos,
            end: pos + width as u64,
            bytes: Cow::Owned(bytes),
        });
    }
    repls.sort_by_key(|r| (r.start, r.end));
    let mut prev_end = 0u64;
    for r in &repls {
        if r.start < prev_end || r.end < r.start || r.end > model.bytes().len() as u64 {
            return Err(internal(format!(
                "overlapping or out-of-range edit at byte {}",
                r.start
            )));
        }
        prev_end = r.end;
    }
    Ok(repls)
}

/// Edits that replace smd-onnx's own top-level metadata entries (`smd_onnx.*`) by `meta`:
/// old entries removed, new ones appended at the end of the file.
fn metadata_edits<'d>(
    model: &Model,
    meta: &[(String, String)],
) -> Result<Vec<Edit<'d>>, ModelError> {
    if meta.is_empty() {
        return Ok(Vec::new());
    }
    let mut edits = Vec::new();
    for e in
        super::meta::entries(model.bytes()).map_err(|e| super::meta::malformed(model.path(), e))?
    {
        if e.key.starts_with(SMD_META_PREFIX) {
            edits.push(Edit {
                repl: Repl {
                    start: e.start as u64,
                    end: e.end as u64,
                    bytes: Cow::Borrowed(&[]),
                },
                chain: Vec::new(),
            });
        }
    }
    let end = model.bytes().len() as u64;
    let appended: Vec<u8> = meta
        .iter()
        .flat_map(|(k, v)| super::meta::encode_entry(k, v))
        .collect();
    edits.push(Edit {
        repl: Repl {
            start: end,
            end,
            bytes: Cow::Owned(appended),
        },
        chain: Vec::new(),
    });
    Ok(edits)
}

/// The `location` that [`external_template`] gives the tensors it takes out.
pub const TEMPLATE_LOCATION: &str = "smd-onnx-values-in-memory";

/// The model with the payloads of `tensors` taken out and marked as external data, so that
/// ONNX Runtime takes their values from the caller (`AddExternalInitializers`), which it does
/// before optimizing the graph. Scoring a child then needs neither a copy of the model nor a
/// protobuf parse of its weights. Only main-graph initializers stored in `raw_data` qualify;
/// `None` when one of `tensors` does not.
pub fn external_template(model: &Model, tensors: &[usize]) -> Result<Option<Vec<u8>>, ModelError> {
    let bytes = model.bytes();
    let mut edits = Vec::new();
    for &i in tensors {
        let Some(t) = model.tensors().get(i) else {
            return Ok(None);
        };
        // Quantized tensors are given float values: they must be requantized in the file.
        let (Payload::Raw { start, len }, Location::Initializer, true, true) = (
            &t.payload,
            t.location,
            t.scope.is_empty(),
            t.dtype.is_mutable_float(),
        ) else {
            return Ok(None);
        };
        let Some(own) = t.ancestors.last().copied() else {
            return Ok(None);
        };
        // The raw_data field: key 0x4A (field 9, length-delimited), then the length varint.
        let width = wire::varint_len(*len) as u64;
        let Some(key_pos) = start.checked_sub(width + 1) else {
            return Ok(None);
        };
        let key_ok = bytes.get(key_pos as usize) == Some(&0x4A);
        let len_ok = wire::varint_at(bytes, key_pos as usize + 1, *start as usize).ok()
            == Some((*len, width as usize));
        if !key_ok || !len_ok {
            return Ok(None);
        }
        edits.push(Edit {
            repl: Repl {
                start: key_pos,
                end: start + len,
                bytes: Cow::Borrowed(&[]),
            },
            chain: t.ancestors.clone(),
        });
        // Appended at the end of the tensor, so they win over any earlier `data_location`.
        let mut extra = Vec::new();
        for (k, v) in [
            ("location", TEMPLATE_LOCATION.to_string()),
            ("offset", "0".to_string()),
            ("length", len.to_string()),
        ] {
            let mut entry = Vec::new();
            for (field, s) in [(1u64, k), (2u64, v.as_str())] {
                wire::put_varint(&mut entry, (field << 3) | 2);
                wire::put_varint(&mut entry, s.len() as u64);
                entry.extend_from_slice(s.as_bytes());
            }
            wire::put_varint(&mut extra, (13 << 3) | 2);
            wire::put_varint(&mut extra, entry.len() as u64);
            extra.extend(entry);
        }
        extra.extend([(14 << 3), 1]); // data_location = EXTERNAL
        let end = own.pos + u64::from(own.width) + own.len;
        edits.push(Edit {
            repl: Repl {
                start: end,
                end,
                bytes: Cow::Owned(extra),
            },
            chain: t.ancestors.clone(),
        });
    }
    let repls = finish_plan(model, edits)?;
    let mut out = Vec::with_capacity(bytes.len() / 8);
    stream(bytes, &repls, &mut out).map_err(|source| ModelError::Write { source })?;
    Ok(Some(out))
}

/// Key prefix of the metadata entries smd-onnx writes (and replaces in children).
pub const SMD_META_PREFIX: &str = "smd_onnx.";

/// Writes `src` with `repls` (sorted, disjoint) applied.
fn stream(src: &[u8], repls: &[Repl<'_>], w: &mut dyn Write) -> std::io::Result<()> {
    let bad = || std::io::Error::other("edit outside the source file");
    let mut cur = 0usize;
    for r in repls {
        let s = usize::try_from(r.start).map_err(|_| bad())?;
        let e = usize::try_from(r.end).map_err(|_| bad())?;
        w.write_all(src.get(cur..s).ok_or_else(bad)?)?;
        w.write_all(&r.bytes)?;
        cur = e;
    }
    w.write_all(src.get(cur..).ok_or_else(bad)?)
}

/// Writes the child of a model without external data to `w`: the parent's bytes with the
/// changed payloads replaced. `changes` pairs tensor indices (into [`Model::tensors`]) with new
/// values of the same dtype and element count. Models with external data need
/// [`write_child`], which also writes the child's data file.
pub fn write_child_to<W: Write>(
    model: &Model,
    changes: &[(usize, TensorData)],
    w: &mut W,
) -> Result<(), ModelError> {
    if model.has_external_data() {
        return Err(ModelError::NeedsFile {
            path: model.path().to_path_buf(),
        });
    }
    let valid = validate(model, changes)?;
    let mut edits = Vec::new();
    let mut ext = ExtPatches::new();
    plan_changes(model, &valid, &mut edits, &mut ext)?;
    let repls = finish_plan(model, edits)?;
    stream(model.bytes(), &repls, w).map_err(|source| ModelError::Write { source })
}

/// The child of a model without external data, in memory (see [`write_child_to`]).
pub fn child_bytes(model: &Model, changes: &[(usize, TensorData)]) -> Result<Vec<u8>, ModelError> {
    let mut out = Vec::with_capacity(model.bytes().len());
    write_child_to(model, changes, &mut out)?;
    Ok(out)
}

/// Names of the child's external files, one per parent external file: `child.onnx.data` when
/// the parent has one, else `<child-stem>.<location with separators as '_'>`.
fn child_external_names(model: &Model, out: &Path) -> Vec<String> {
    let files = model.external_files();
    let out_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "child.onnx".into());
    if files.len() == 1 {
        return vec![format!("{out_name}.data")];
    }
    let stem = out
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "child".into());
    let mut used = std::collections::HashSet::new();
    files
        .iter()
        .map(|f| {
            let flat: String = f
                .location
                .trim_start_matches("./")
                .chars()
                .map(|c| if c == '/' || c == '\\' { '_' } else { c })
                .collect();
            let base = format!("{stem}.{flat}");
            let mut name = base.clone();
            let mut k = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}.{k}");
                k += 1;
            }
            name
        })
        .collect()
}

/// Writes the child model to `out` (atomically) and, for a model with external data, its own
/// external file(s) beside it: `<out>.data` (e.g. `child.onnx.data`) when the parent has one,
/// else `<out stem>.<parent location, '/' as '_'>` for each; every `location` entry is
/// rewritten to them and offsets are kept. The parent's files are never
/// written; nothing is left behind on error. Returns the paths written, the model first.
pub fn write_child(
    model: &Model,
    changes: &[(usize, TensorData)],
    out: &Path,
) -> Result<Vec<PathBuf>, ModelError> {
    write_child_with_metadata(model, changes, &[], out)
}

/// [`write_child`], with the model's `smd_onnx.*` metadata entries replaced by `meta` (e.g.
/// the child's recipe). Only the metadata bytes and the changed payloads differ from the parent.
pub fn write_child_with_metadata(
    model: &Model,
    changes: &[(usize, TensorData)],
    meta: &[(String, String)],
    out: &Path,
) -> Result<Vec<PathBuf>, ModelError> {
    let valid = validate(model, changes)?;
    let inputs = model.input_paths();
    let input_refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    output::ensure_not_input(out, &input_refs)?;
    let mut edits = Vec::new();
    let mut ext = ExtPatches::new();
    plan_changes(model, &valid, &mut edits, &mut ext)?;

    let names = child_external_names(model, out);
    let ext_paths = child_external_paths(out, &names, &input_refs)?;
    plan_locations(model, &names, &mut edits)?;
    edits.extend(metadata_edits(model, meta)?);
    let repls = finish_plan(model, edits)?;

    // An older `out` would name the data written next: a crash in between would leave it
    // loading new weights under its old metadata. Without it, a crash leaves no model file.
    if !ext_paths.is_empty() {
        match std::fs::remove_file(out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ModelError::Io {
                    path: out.to_path_buf(),
                    source,
                });
            }
        }
    }
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for (f, dst) in model.external_files().iter().zip(&ext_paths) {
            let i = written.len();
            let patches = ext.remove(&i).unwrap_or_default();
            write_external_child(f, dst, patches)?;
            written.push(dst.clone());
        }
        output::write_atomic(out, |w| {
            stream(model.bytes(), &repls, w).map_err(|source| ModelError::Io {
                path: out.to_path_buf(),
                source,
            })
        })?;
        Ok(())
    })();
    if let Err(e) = result {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    let mut paths = vec![out.to_path_buf()];
    paths.extend(written);
    Ok(paths)
}

/// The paths of the child's external files `names`, beside `out`; an error when one would
/// overwrite an input or the child model itself.
fn child_external_paths(
    out: &Path,
    names: &[String],
    input_refs: &[&Path],
) -> Result<Vec<PathBuf>, ModelError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ext_paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    for p in &ext_paths {
        output::ensure_not_input(p, input_refs)?;
        if p == out {
            return Err(OutputError::Overwrite {
                out: p.clone(),
                input: out.to_path_buf(),
            }
            .into());
        }
    }
    Ok(ext_paths)
}

/// Edits that point every external `location` entry at the child's file, `names[file]`.
fn plan_locations(
    model: &Model,
    names: &[String],
    edits: &mut Vec<Edit<'_>>,
) -> Result<(), ModelError> {
    for loc in model.locations() {
        let name = names.get(loc.file).ok_or_else(|| ModelError::Internal {
            path: model.path().to_path_buf(),
            what: "external location without a file".into(),
        })?;
        edits.push(Edit {
            repl: Repl {
                start: loc.field.start,
                end: loc.field.end,
                bytes: Cow::Owned(name.clone().into_bytes()),
            },
            chain: loc.field.ancestors.clone(),
        });
    }
    Ok(())
}

/// Writes the child's copy `dst` of external file `f` (atomically), with `patches` (offset,
/// new bytes) applied.
fn write_external_child(
    f: &super::ExternalFile,
    dst: &Path,
    mut patches: Vec<(u64, Cow<'_, [u8]>)>,
) -> Result<(), ModelError> {
    patches.sort_by_key(|(o, _)| *o);
    let covered: u64 = patches.iter().map(|(_, b)| b.len() as u64).sum();
    let disjoint = patches
        .windows(2)
        .all(|w| w[0].0 + w[0].1.len() as u64 <= w[1].0);
    if disjoint && covered.saturating_mul(8) >= f.len() {
        // Much of the file changes: one streaming pass (parent gaps + new payloads).
        let repls: Vec<Repl<'_>> = patches
            .into_iter()
            .map(|(start, bytes)| Repl {
                start,
                end: start + bytes.len() as u64,
                bytes,
            })
            .collect();
        output::write_atomic(dst, |w| {
            stream(&f.bytes, &repls, w).map_err(|source| ModelError::Io {
                path: dst.to_path_buf(),
                source,
            })
        })?;
    } else {
        // Little changes: let the kernel copy (reflink where possible), then patch.
        output::copy_atomic(&f.path, dst, |file: &mut File| {
            for (offset, bytes) in &patches {
                file.seek(SeekFrom::Start(*offset))?;
                file.write_all(bytes)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}
