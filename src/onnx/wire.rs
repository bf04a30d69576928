//! Protobuf wire format over a byte slice, keeping absolute byte positions so that payloads and
//! length prefixes can be located (and later rewritten) without decoding anything else.

use std::fmt;

/// Protobuf wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
    /// A (deprecated) group, skipped whole; never valid for a field smd-onnx reads.
    Group,
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::Varint => "varint",
            Wire::Fixed64 => "fixed64",
            Wire::Len => "length-delimited",
            Wire::Fixed32 => "fixed32",
            Wire::Group => "group",
        })
    }
}

/// A length prefix of a length-delimited field: where its varint sits, how wide it is and the
/// length it holds. The content starts right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LenPrefix {
    /// Offset of the length varint.
    pub pos: u64,
    /// Bytes the varint takes (1..=10).
    pub width: u8,
    /// The length it encodes.
    pub len: u64,
}

/// What went wrong at the wire level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// A varint runs past the end of its message.
    TruncatedVarint,
    /// A varint longer than 10 bytes.
    LongVarint,
    /// A fixed-width value runs past the end of its message.
    TruncatedFixed,
    /// A length-delimited field longer than what is left of its message.
    LengthBeyond { len: u64, left: u64 },
    /// Field number 0 or above 2^29 - 1.
    BadFieldNumber(u64),
    /// Wire type 6 or 7, or a group end without a start.
    BadWireType(u8),
    /// A group that never ends, or ends with another field number.
    BadGroup,
    /// Messages nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TruncatedVarint => write!(f, "truncated varint"),
            WireError::LongVarint => write!(f, "varint longer than 10 bytes"),
            WireError::TruncatedFixed => write!(f, "truncated fixed-width value"),
            WireError::LengthBeyond { len, left } => {
                write!(f, "length {len} runs past the end ({left} bytes left)")
            }
            WireError::BadFieldNumber(n) => write!(f, "invalid field number {n}"),
            WireError::BadWireType(w) => write!(f, "invalid wire type {w}"),
            WireError::BadGroup => write!(f, "unterminated or mismatched group"),
            WireError::TooDeep => write!(f, "messages nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Deepest message nesting accepted (protobuf's own default recursion limit is 100).
pub(crate) const MAX_DEPTH: usize = 100;

/// Decodes a varint at `pos`, not reading at or past `end`. Returns the value and its width.
pub(crate) fn varint_at(buf: &[u8], pos: usize, end: usize) -> Result<(u64, usize), WireError> {
    let end = end.min(buf.len());
    let mut v: u64 = 0;
    for i in 0..10 {
        let p = pos + i;
        if p >= end {
            return Err(WireError::TruncatedVarint);
        }
        let b = buf[p];
        // The 10th byte may only carry the top bit of a u64; anything more is ignored as
        // protobuf does, since only the low 64 bits count.
        v |= u64::from(b & 0x7f).wrapping_shl(7 * i as u32);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(WireError::LongVarint)
}

/// Bytes that the minimal varint encoding of `v` takes.
pub(crate) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends the minimal varint encoding of `v`.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes `v` in exactly `width` bytes (padding with continuation bytes, which protobuf
/// parsers accept), or `None` when it does not fit.
pub(crate) fn varint_padded(v: u64, width: usize) -> Option<Vec<u8>> {
    if width == 0 || width > 10 || varint_len(v) > width {
        return None;
    }
    let mut out = Vec::with_capacity(width);
    let mut x = v;
    for i in 0..width {
        let mut b = (x & 0x7f) as u8;
        x >>= 7;
        if i + 1 < width {
            b |= 0x80;
        }
        out.push(b);
    }
    Some(out)
}

/// One field of a message, with absolute positions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// Field number.
    pub number: u32,
    /// Wire type.
    pub wire: Wire,
    /// Offset of the key.
    pub key_pos: usize,
    /// Start of the value: the varint, the fixed bytes, or the content of a length-delimited
    /// field (after its length prefix).
    pub start: usize,
    /// End of the value.
    pub end: usize,
    /// For varints: the value. For fixed: the raw bits. For length-delimited: the length.
    pub value: u64,
    /// For length-delimited fields: the length prefix.
    pub prefix: Option<LenPrefix>,
}

impl Field {
    /// The key's byte width (start of value minus key position, for non-length-delimited).
    pub fn key_len(&self) -> usize {
        match self.prefix {
            Some(p) => p.pos as usize - self.key_pos,
            None => self.start - self.key_pos,
        }
    }
}

/// Iterates the fields of one message occupying `buf[pos..end]`.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf[start..end]` (positions stay absolute in `buf`).
    pub fn new(buf: &'a [u8], start: usize, end: usize) -> Self {
        let end = end.min(buf.len());
        Reader {
            buf,
            pos: start.min(end),
            end,
        }
    }

    /// Where the next field starts (for error messages).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The next field, or `None` at the end of the message. Groups (wire types 3/4, long
    /// deprecated) are skipped whole and reported as [`Wire::Group`] fields spanning them.
    pub fn next_field(&mut self) -> Result<Option<Field>, WireError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let key_pos = self.pos;
        let (key, kw) = varint_at(self.buf, self.pos, self.end)?;
        self.pos += kw;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(WireError::BadFieldNumber(number));
        }
        let number = number as u32;
        match (key & 7) as u8 {
            0 => {
                let (v, w) = varint_at(self.buf, self.pos, self.end)?;
                let start = self.pos;
                self.pos += w;
                Ok(Some(Field {
                    number,
                    wire: Wire::Varint,
                    key_pos,
                    start,
                    end: self.pos,
                    value: v,
                    prefix: None,
                }))
            }
            1 => self.fixed(number, key_pos, 8, Wire::Fixed64),
            5 => self.fixed(number, key_pos, 4, Wire::Fixed32),
            2 => {
                let ppos = self.pos;
                let (len, w) = varint_at(self.buf, self.pos, self.end)?;
                self.pos += w;
                let left = (self.end - self.pos) as u64;
                if len > left {
                    return Err(WireError::LengthBeyond { len, left });
                }
                let start = self.pos;
                self.pos += len as usize;
                Ok(Some(Field {
                    number,
                    wire: Wire::Len,
                    key_pos,
                    start,
                    end: self.pos,
                    value: len,
                    prefix: Some(LenPrefix {
                        pos: ppos as u64,
                        width: w as u8,
                        len,
                    }),
                }))
            }
            3 => {
                let start = self.pos;
                self.skip_group(number, 1)?;
                Ok(Some(Field {
                    number,
                    wire: Wire::Group,
                    key_pos,
                    start,
                    end: self.pos,
                    value: 0,
                    prefix: None,
                }))
            }
            w => Err(WireError::BadWireType(w)),
        }
    }

    fn fixed(
        &mut self,
        number: u32,
        key_pos: usize,
        n: usize,
        wire: Wire,
    ) -> Result<Option<Field>, WireError> {
        if self.end - self.pos < n {
            return Err(WireError::TruncatedFixed);
        }
        let start = self.pos;
        let mut v = 0u64;
        for (i, b) in self.buf[start..start + n].iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        self.pos += n;
        Ok(Some(Field {
            number,
            wire,
            key_pos,
            start,
            end: self.pos,
            value: v,
            prefix: None,
        }))
    }

    /// Skips to just past the end-group key matching `number`.
    fn skip_group(&mut self, number: u32, depth: usize) -> Result<(), WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        loop {
            if self.pos >= self.end {
                return Err(WireError::BadGroup);
            }
            let (key, kw) = varint_at(self.buf, self.pos, self.end)?;
            let n = key >> 3;
            match (key & 7) as u8 {
                4 => {
                    self.pos += kw;
                    return if n == u64::from(number) {
                        Ok(())
                    } else {
                        Err(WireError::BadGroup)
                    };
                }
                3 => {
                    if n == 0 || n > (1 << 29) - 1 {
                        return Err(WireError::BadFieldNumber(n));
                    }
                    self.pos += kw;
                    self.skip_group(n as u32, depth + 1)?;
                }
                _ => {
                    self.next_field()?;
                }
            }
        }
    }
}

/// Counts the varints packed in `buf[start..end]`, checking that the last one is complete and
/// none is longer than 10 bytes.
pub(crate) fn count_packed_varints(buf: &[u8], start: usize, end: usize) -> Result<u64, WireError> {
    let s = buf.get(start..end).ok_or(WireError::TruncatedVarint)?;
    let mut count = 0u64;
    let mut run = 0usize;
    for &b in s {
        run += 1;
        if run > 10 {
            return Err(WireError::LongVarint);
        }
        if b & 0x80 == 0 {
            count += 1;
            run = 0;
        }
    }
    if run != 0 {
        return Err(WireError::TruncatedVarint);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(varint_at(&b, 0, b.len()), Ok((v, b.len())));
            let p = varint_padded(v, 10).unwrap();
            assert_eq!(varint_at(&p, 0, p.len()), Ok((v, 10)));
        }
        assert_eq!(varint_padded(300, 1), None);
        assert_eq!(
            varint_at(&[0x80, 0x80], 0, 2),
            Err(WireError::TruncatedVarint)
        );
        assert_eq!(varint_at(&[0xff; 11], 0, 11), Err(WireError::LongVarint));
    }

    #[test]
    fn reader_positions_and_errors() {
        // field 1 varint 150; field 2 "ab"; field 3 fixed32; a group 4 {field 1 varint}.
        let buf = [
            0x08, 0x96, 0x01, 0x12, 0x02, b'a', b'b', 0x1d, 1, 2, 3, 4, 0x23, 0x08, 0x01, 0x24,
        ];
        let mut r = Reader::new(&buf, 0, buf.len());
        let f = r.next_field().unwrap().unwrap();
        assert_eq!(
            (f.number, f.wire, f.value, f.start, f.end),
            (1, Wire::Varint, 150, 1, 3)
        );
        let f = r.next_field().unwrap().unwrap();
        assert_eq!((f.number, f.start, f.end, f.key_len()), (2, 5, 7, 1));
        assert_eq!(
            f.prefix,
            Some(LenPrefix {
                pos: 4,
                width: 1,
                len: 2
            })
        );
        let f = r.next_field().unwrap().unwrap();
        assert_eq!((f.wire, f.value), (Wire::Fixed32, 0x04030201));
        let f = r.next_field().unwrap().unwrap();
        assert_eq!((f.number, f.end), (4, buf.len()));
        assert!(r.next_field().unwrap().is_none());

        let bad = [0x12, 0x05, b'a'];
        let mut r = Reader::new(&bad, 0, bad.len());
        assert_eq!(
            r.next_field().unwrap_err(),
            WireError::LengthBeyond { len: 5, left: 1 }
        );
        let mut r = Reader::new(&[0x00], 0, 1);
        assert_eq!(r.next_field().unwrap_err(), WireError::BadFieldNumber(0));
        let mut r = Reader::new(&[0x0e], 0, 1);
        assert_eq!(r.next_field().unwrap_err(), WireError::BadWireType(6));
        let mut r = Reader::new(&[0x0c], 0, 1);
        assert_eq!(r.next_field().unwrap_err(), WireError::BadWireType(4));
        let mut r = Reader::new(&[0x0b, 0x08], 0, 2);
        assert!(r.next_field().is_err());
    }

    #[test]
    fn packed_varint_count() {
        assert_eq!(count_packed_varints(&[1, 0x80, 1, 5], 0, 4), Ok(3));
        assert_eq!(
            count_packed_varints(&[1, 0x80], 0, 2),
            Err(WireError::TruncatedVarint)
        );
    }
}
