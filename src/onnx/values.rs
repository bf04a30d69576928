//! Decoding float tensor values from every storage form, and encoding them back in the same
//! form for the child writer.

use std::borrow::Cow;

use half::{bf16, f16};

use super::dtype::DType;
use super::index::{Payload, Run};
use super::wire;
use crate::tensor::TensorData;

/// Why values could not be decoded (the caller adds the file and tensor).
pub(crate) type DecodeResult<T> = Result<T, String>;

/// Copies little-endian `bytes` into a vector of `T` (bulk copy; byte swaps on big-endian).
fn le_vec<T: bytemuck::Pod>(bytes: &[u8], swap: fn(T) -> T) -> Vec<T> {
    let n = bytes.len() / std::mem::size_of::<T>();
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v)
        .copy_from_slice(&bytes[..n * std::mem::size_of::<T>()]);
    if cfg!(target_endian = "big") {
        for x in &mut v {
            *x = swap(*x);
        }
    }
    v
}

fn swap_f32(x: f32) -> f32 {
    f32::from_bits(x.to_bits().swap_bytes())
}
fn swap_f64(x: f64) -> f64 {
    f64::from_bits(x.to_bits().swap_bytes())
}
fn swap_f16(x: f16) -> f16 {
    f16::from_bits(x.to_bits().swap_bytes())
}
fn swap_bf16(x: bf16) -> bf16 {
    bf16::from_bits(x.to_bits().swap_bytes())
}

/// Decodes `bytes` (raw_data or external data) as `dtype`.
pub(crate) fn decode_raw(dtype: DType, bytes: &[u8]) -> DecodeResult<TensorData> {
    Ok(match dtype {
        DType::F32 => TensorData::F32(le_vec(bytes, swap_f32)),
        DType::F64 => TensorData::F64(le_vec(bytes, swap_f64)),
        DType::F16 => TensorData::F16(le_vec(bytes, swap_f16)),
        DType::BF16 => TensorData::BF16(le_vec(bytes, swap_bf16)),
        d => return Err(format!("cannot read values of a {d} tensor")),
    })
}

fn slice(buf: &[u8], start: u64, end: u64) -> DecodeResult<&[u8]> {
    let (s, e) = (usize::try_from(start), usize::try_from(end));
    match (s, e) {
        (Ok(s), Ok(e)) if s <= e => buf
            .get(s..e)
            .ok_or_else(|| format!("payload bytes {start}..{end} are outside the file")),
        _ => Err(format!("payload bytes {start}..{end} are outside the file")),
    }
}

/// Decodes fixed-width runs (`float_data`, `double_data`, `value_float(s)`).
pub(crate) fn decode_fixed(
    dtype: DType,
    width: u8,
    runs: &[Run],
    buf: &[u8],
    elements: u64,
) -> DecodeResult<TensorData> {
    let w = u64::from(width);
    // The usual case, one packed run: convert straight from the mapped bytes.
    if let [r] = runs
        && r.prefix.is_some()
        && r.end.saturating_sub(r.start) == elements.saturating_mul(w)
        && matches!((dtype, width), (DType::F32, 4) | (DType::F64, 8))
    {
        return decode_raw(dtype, slice(buf, r.start, r.end)?);
    }
    let mut bytes: Vec<u8> = Vec::new();
    for r in runs {
        let s = slice(buf, r.start, r.end)?;
        if r.prefix.is_some() {
            bytes.extend_from_slice(s);
        } else {
            let step = (w + u64::from(r.key_len)) as usize;
            let k = usize::from(r.key_len);
            for chunk in s.chunks(step) {
                let v = chunk
                    .get(k..k + usize::from(width))
                    .ok_or("truncated unpacked value")?;
                bytes.extend_from_slice(v);
            }
        }
    }
    if bytes.len() as u64 != elements.saturating_mul(w) {
        return Err(format!(
            "typed field has {} values, expected {elements}",
            bytes.len() as u64 / w.max(1)
        ));
    }
    match (dtype, width) {
        (DType::F32, 4) | (DType::F64, 8) => decode_raw(dtype, &bytes),
        (d, _) => Err(format!(
            "cannot read values of a {d} tensor from a typed field"
        )),
    }
}

/// Iterates the varints of runs (packed content, or unpacked key/value pairs).
pub(crate) fn for_each_varint(
    runs: &[Run],
    buf: &[u8],
    mut f: impl FnMut(u64),
) -> DecodeResult<()> {
    for r in runs {
        let s = slice(buf, r.start, r.end)?;
        let mut p = 0usize;
        while p < s.len() {
            if r.prefix.is_none() {
                p += usize::from(r.key_len);
            }
            let (v, w) = wire::varint_at(s, p, s.len()).map_err(|e| e.to_string())?;
            f(v);
            p += w;
        }
    }
    Ok(())
}

/// Decodes varint runs (`int32_data` holding float16/bfloat16 bits).
pub(crate) fn decode_varint(
    dtype: DType,
    runs: &[Run],
    buf: &[u8],
    elements: u64,
) -> DecodeResult<TensorData> {
    let cap = usize::try_from(elements).unwrap_or(0).min(1 << 24);
    let out = match dtype {
        DType::F16 => {
            let mut v = Vec::with_capacity(cap);
            for_each_varint(runs, buf, |x| v.push(f16::from_bits(x as u16)))?;
            TensorData::F16(v)
        }
        DType::BF16 => {
            let mut v = Vec::with_capacity(cap);
            for_each_varint(runs, buf, |x| v.push(bf16::from_bits(x as u16)))?;
            TensorData::BF16(v)
        }
        d => {
            return Err(format!(
                "cannot read values of a {d} tensor from int32_data"
            ));
        }
    };
    if out.len() as u64 != elements {
        return Err(format!(
            "int32_data has {} values, expected {elements}",
            out.len()
        ));
    }
    Ok(out)
}

/// Decodes a tensor's values from its payload. `model` is the model file, `external` the
/// external file holding the payload, if any.
pub(crate) fn decode(
    dtype: DType,
    elements: u64,
    payload: &Payload,
    model: &[u8],
    external: Option<&[u8]>,
) -> DecodeResult<TensorData> {
    if !dtype.is_mutable_float() {
        return Err(format!("cannot read values of a {dtype} tensor"));
    }
    match payload {
        Payload::None => {
            if elements == 0 {
                decode_raw(dtype, &[])
            } else {
                Err("the tensor's values are not stored where they can be read".into())
            }
        }
        Payload::Raw { start, len } => {
            decode_raw(dtype, slice(model, *start, start.saturating_add(*len))?)
        }
        Payload::External { offset, len, .. } => {
            let buf = external.ok_or("external file not resolved")?;
            decode_raw(dtype, slice(buf, *offset, offset.saturating_add(*len))?)
        }
        Payload::Fixed { width, runs } => decode_fixed(dtype, *width, runs, model, elements),
        Payload::Varint { runs } => decode_varint(dtype, runs, model, elements),
    }
}

/// Little-endian bytes of values `from..to` of `data` (borrowed on little-endian machines).
pub(crate) fn encode_le(data: &TensorData, from: usize, to: usize) -> Cow<'_, [u8]> {
    fn enc<T: bytemuck::Pod>(v: &[T], swap: fn(T) -> T) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            Cow::Borrowed(bytemuck::cast_slice(v))
        } else {
            let w: Vec<T> = v.iter().map(|x| swap(*x)).collect();
            Cow::Owned(bytemuck::cast_slice(&w).to_vec())
        }
    }
    match data {
        TensorData::F32(v) => enc(v.get(from..to).unwrap_or(&[]), swap_f32),
        TensorData::F64(v) => enc(v.get(from..to).unwrap_or(&[]), swap_f64),
        TensorData::F16(v) => enc(v.get(from..to).unwrap_or(&[]), swap_f16),
        TensorData::BF16(v) => enc(v.get(from..to).unwrap_or(&[]), swap_bf16),
    }
}

/// The 16 bits of a float16/bfloat16 value, for `int32_data`.
pub(crate) fn bits16(data: &TensorData, i: usize) -> Option<u16> {
    match data {
        TensorData::F16(v) => v.get(i).map(|x| x.to_bits()),
        TensorData::BF16(v) => v.get(i).map(|x| x.to_bits()),
        _ => None,
    }
}
