//! The `.npy` format (versions 1, 2, 3): header parsing with checked sizes, dtypes, and a small
//! writer (tests, fuzz seeds, generators).

use std::fmt;

/// numpy's dtype of an `.npy` array: the element types smd-onnx reads from data files
/// (little-endian, or byte-sized). Not the ONNX element type [`crate::onnx::DType`] (a model's
/// tensors); [`DType::onnx`] maps this one to it, the one mapping between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// `|b1`
    Bool,
    /// `|i1`
    I8,
    /// `<i2`
    I16,
    /// `<i4`
    I32,
    /// `<i8`
    I64,
    /// `|u1`
    U8,
    /// `<u2`
    U16,
    /// `<u4`
    U32,
    /// `<u8`
    U64,
    /// `<f2`
    F16,
    /// `<f4`
    F32,
    /// `<f8`
    F64,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 12] = [
        Self::Bool,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::F16,
        Self::F32,
        Self::F64,
    ];

    /// The ONNX element type of this dtype.
    pub fn onnx(self) -> crate::onnx::DType {
        use crate::onnx::DType as O;
        match self {
            Self::Bool => O::Bool,
            Self::I8 => O::I8,
            Self::I16 => O::I16,
            Self::I32 => O::I32,
            Self::I64 => O::I64,
            Self::U8 => O::U8,
            Self::U16 => O::U16,
            Self::U32 => O::U32,
            Self::U64 => O::U64,
            Self::F16 => O::F16,
            Self::F32 => O::F32,
            Self::F64 => O::F64,
        }
    }

    /// The dtype whose ONNX element type is `t`, if data files can hold it ([`DType::onnx`]
    /// inverted).
    pub fn from_onnx(t: crate::onnx::DType) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.onnx() == t)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 | Self::F16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 => 8,
        }
    }

    /// numpy's name (`float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
            Self::F16 => "float16",
            Self::F32 => "float32",
            Self::F64 => "float64",
        }
    }

    /// The `.npy` descr string written for this dtype.
    pub fn descr(self) -> &'static str {
        match self {
            Self::Bool => "|b1",
            Self::I8 => "|i1",
            Self::I16 => "<i2",
            Self::I32 => "<i4",
            Self::I64 => "<i8",
            Self::U8 => "|u1",
            Self::U16 => "<u2",
            Self::U32 => "<u4",
            Self::U64 => "<u8",
            Self::F16 => "<f2",
            Self::F32 => "<f4",
            Self::F64 => "<f8",
        }
    }

    /// True for float16/32/64.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::F32 | Self::F64)
    }

    /// True for signed and unsigned integers (not bool).
    pub fn is_int(self) -> bool {
        !self.is_float() && self != Self::Bool
    }

    /// Parses a descr such as `<f4`, `|u1` or `=i8`.
    pub fn from_descr(d: &str) -> Result<Self, String> {
        let (order, code) = match d.as_bytes().first() {
            Some(b'<' | b'>' | b'|' | b'=') => (d.get(..1).unwrap_or(""), d.get(1..).unwrap_or("")),
            _ => ("", d),
        };
        let t = match code {
            "b1" | "?" => Self::Bool,
            "i1" | "b" => Self::I8,
            "u1" | "B" => Self::U8,
            "i2" => Self::I16,
            "u2" => Self::U16,
            "i4" => Self::I32,
            "u4" => Self::U32,
            "i8" => Self::I64,
            "u8" => Self::U64,
            "f2" | "e" => Self::F16,
            "f4" => Self::F32,
            "f8" => Self::F64,
            _ => return Err(format!("unsupported dtype {d:?}")),
        };
        let big = order == ">" || (order == "=" && cfg!(target_endian = "big"));
        if big && t.size() > 1 {
            return Err(format!(
                "big-endian dtype {d:?} is not supported (save it with .astype('<{code}'))"
            ));
        }
        Ok(t)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Shape (C order).
    pub shape: Vec<usize>,
    /// Offset of the data from the start of the file.
    pub data_offset: usize,
    /// Number of elements (checked product of `shape`).
    pub elements: usize,
    /// Number of data bytes (checked).
    pub data_len: usize,
}

const MAGIC: &[u8] = b"\x93NUMPY";

/// True when `b` starts like an `.npy` file.
pub fn is_npy(b: &[u8]) -> bool {
    b.starts_with(MAGIC)
}

/// Parses the header at the start of `b` (the whole file or at least its header).
/// Fortran-ordered arrays with more than one non-trivial dimension are rejected.
pub fn parse_header(b: &[u8]) -> Result<NpyHeader, String> {
    if !b.starts_with(MAGIC) {
        return Err("not an .npy array (bad magic)".into());
    }
    let major = *b.get(6).ok_or("truncated .npy header")?;
    let (len, start) = match major {
        1 => {
            let l = b.get(8..10).ok_or("truncated .npy header")?;
            (usize::from(u16::from_le_bytes([l[0], l[1]])), 10usize)
        }
        2 | 3 => {
            let l = b.get(8..12).ok_or("truncated .npy header")?;
            let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]);
            (usize::try_from(n).map_err(|_| "header too long")?, 12usize)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start.checked_add(len).ok_or("header length overflows")?;
    let raw = b.get(start..end).ok_or("truncated .npy header")?;
    // Versions 1 and 2 are latin-1; every byte we accept is ASCII, so reject others.
    let text = std::str::from_utf8(raw).map_err(|_| "header is not text")?;
    let dict = parse_dict(text)?;
    let descr = dict.descr.ok_or("header has no 'descr'")?;
    let shape = dict.shape.ok_or("header has no 'shape'")?;
    let fortran = dict.fortran.ok_or("header has no 'fortran_order'")?;
    let dtype = DType::from_descr(&descr)?;
    let mut elements: usize = 1;
    for &d in &shape {
        elements = elements
            .checked_mul(d)
            .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    }
    if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(
            "array is in Fortran order; save it with np.ascontiguousarray(...) first".into(),
        );
    }
    let data_len = elements
        .checked_mul(dtype.size())
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset: end,
        elements,
        data_len,
    })
}

#[derive(Default)]
struct Dict {
    descr: Option<String>,
    shape: Option<Vec<usize>>,
    fortran: Option<bool>,
}

enum Val {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let q = self.peek().ok_or("header ends early")?;
        if q != b'\'' && q != b'"' {
            return Err("header: expected a quoted string".into());
        }
        self.i += 1;
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            if c == q {
                let v = self.s.get(start..self.i).unwrap_or_default();
                self.i += 1;
                return Ok(String::from_utf8_lossy(v).into_owned());
            }
            if c == b'\\' {
                return Err("header: escapes in strings are not supported".into());
            }
            self.i += 1;
        }
        Err("header: unterminated string".into())
    }

    fn word(&mut self) -> &[u8] {
        self.ws();
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            self.i += 1;
        }
        self.s.get(start..self.i).unwrap_or_default()
    }

    fn value(&mut self) -> Result<Val, String> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Val::Str(self.string()?)),
            Some(b'(') => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    if self.eat(b')') {
                        break;
                    }
                    let w = self.word();
                    let w = w.strip_suffix(b"L").unwrap_or(w);
                    if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
                        return Err("header: shape must be a tuple of non-negative integers".into());
                    }
                    let n: usize = std::str::from_utf8(w)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or("header: shape dimension too large")?;
                    dims.push(n);
                    if dims.len() > 64 {
                        return Err("header: more than 64 dimensions".into());
                    }
                    if !self.eat(b',') {
                        if self.eat(b')') {
                            break;
                        }
                        return Err("header: bad shape tuple".into());
                    }
                }
                Ok(Val::Tuple(dims))
            }
            Some(b'[') => Err("structured dtypes are not supported".into()),
            _ => match self.word() {
                b"True" => Ok(Val::Bool(true)),
                b"False" => Ok(Val::Bool(false)),
                _ => Err("header: unexpected value".into()),
            },
        }
    }
}

fn parse_dict(text: &str) -> Result<Dict, String> {
    let mut lx = Lexer {
        s: text.as_bytes(),
        i: 0,
    };
    if !lx.eat(b'{') {
        return Err("header is not a dict".into());
    }
    let mut d = Dict::default();
    loop {
        if lx.eat(b'}') {
            break;
        }
        let key = lx.string()?;
        if !lx.eat(b':') {
            return Err("header: expected ':'".into());
        }
        let v = lx.value()?;
        match (key.as_str(), v) {
            ("descr", Val::Str(s)) => d.descr = Some(s),
            ("shape", Val::Tuple(t)) => d.shape = Some(t),
            ("fortran_order", Val::Bool(b)) => d.fortran = Some(b),
            ("descr" | "shape" | "fortran_order", _) => {
                return Err(format!("header: bad value for '{key}'"));
            }
            _ => {}
        }
        if !lx.eat(b',') {
            if lx.eat(b'}') {
                break;
            }
            return Err("header: expected ',' or '}'".into());
        }
    }
    Ok(d)
}

/// Serialises an array as `.npy` version 1 (header padded to 64 bytes, as numpy does). Test
/// scaffolding (feature `test-support`): the library never writes data files.
#[cfg(any(test, feature = "test-support"))]
pub fn write_npy(dtype: DType, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = match dims.len() {
        1 => format!("({},)", dims.join("")),
        _ => format!("({})", dims.join(", ")),
    };
    let mut h = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_s}, }}",
        dtype.descr()
    );
    let total = 10 + h.len() + 1;
    let pad = (64 - total % 64) % 64;
    h.push_str(&" ".repeat(pad));
    h.push('\n');
    let mut out = Vec::with_capacity(10 + h.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&u16::try_from(h.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_headers() {
        let b = write_npy(DType::F32, &[3, 4], &[0u8; 48]);
        assert_eq!(b.len() % 16, 0);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.dtype, DType::F32);
        assert_eq!(h.shape, vec![3, 4]);
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(h.data_len, 48);
        let b = write_npy(DType::I64, &[5], &[0u8; 40]);
        assert_eq!(parse_header(&b).unwrap().shape, vec![5]);
        let b = write_npy(DType::U8, &[], &[0u8; 1]);
        assert_eq!(parse_header(&b).unwrap().elements, 1);
    }

    fn with_header(major: u8, text: &str) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[major, 0]);
        if major == 1 {
            b.extend_from_slice(&(text.len() as u16).to_le_bytes());
        } else {
            b.extend_from_slice(&(text.len() as u32).to_le_bytes());
        }
        b.extend_from_slice(text.as_bytes());
        b
    }

    #[test]
    fn versions_and_spellings() {
        for major in [1, 2, 3] {
            let h = parse_header(&with_header(
                major,
                "{\"descr\": \"<f8\", \"shape\": (2, 3L), 'fortran_order': False}\n",
            ))
            .unwrap();
            assert_eq!(h.dtype, DType::F64);
            assert_eq!(h.shape, vec![2, 3]);
        }
        let h = parse_header(&with_header(
            1,
            "{'descr':'|b1','fortran_order':True,'shape':(7,)}",
        ))
        .unwrap();
        assert_eq!((h.dtype, h.shape), (DType::Bool, vec![7]));
    }

    #[test]
    fn rejects_bad_headers() {
        let cases = [
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
            "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }",
            "{'descr': '<f4', 'shape': (2,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2,",
            "{'descr': '<f4 , 'fortran_order': False, 'shape': (2,), }",
            "['descr']",
        ];
        for c in cases {
            assert!(parse_header(&with_header(1, c)).is_err(), "{c}");
        }
        assert!(parse_header(b"\x93NUMPY").is_err());
        assert!(parse_header(b"\x93NUMPY\x04\x00\x00\x00").is_err());
        assert!(parse_header(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse_header(b"PK\x03\x04").is_err());
    }

    #[test]
    fn onnx_mapping_agrees_with_onnx_facts() {
        for d in DType::ALL {
            let o = d.onnx();
            assert_eq!(DType::from_onnx(o), Some(d));
            assert_eq!(d.name(), o.name(), "numpy and report names agree");
            assert_eq!(Some(d.size() as u64), o.raw_bytes(1));
            assert_eq!(d.is_float(), o.is_mutable_float());
        }
        assert_eq!(DType::from_onnx(crate::onnx::DType::BF16), None);
    }

    #[test]
    fn descr_spellings() {
        assert_eq!(DType::from_descr("<f2").unwrap(), DType::F16);
        assert_eq!(DType::from_descr("|u1").unwrap(), DType::U8);
        assert_eq!(DType::from_descr(">u1").unwrap(), DType::U8);
        assert_eq!(DType::from_descr("=i4").unwrap(), DType::I32);
        assert!(DType::from_descr(">i4").is_err());
        assert!(DType::from_descr("<U10").is_err());
        assert!(DType::from_descr("").is_err());
    }
}
