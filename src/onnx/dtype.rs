//! ONNX element types: names, sizes in `raw_data`, and which typed field holds them.

use std::fmt;

/// Declares [`DType`] and its codes and names from one list: `Variant = code, "name";`.
macro_rules! dtypes {
    ($($(#[doc = $doc:literal])* $v:ident = $code:literal, $name:literal;)*) => {
        /// An ONNX tensor element type (`TensorProto.DataType`), the full enum. Not numpy's
        /// dtype of a data file's array ([`crate::score::npy::DType`], which maps to this one
        /// with [`crate::score::npy::DType::onnx`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DType {
            $($(#[doc = $doc])* $v,)*
            /// A value this version does not know.
            Unknown(i32),
        }

        impl DType {
            /// Every element type this version knows, in code order.
            pub const ALL: &'static [DType] = &[$(DType::$v),*];

            /// From the `TensorProto.DataType` number.
            pub fn from_onnx(v: i64) -> DType {
                match v {
                    $($code => DType::$v,)*
                    // Out-of-range numbers are kept (saturated into i32) so they can be named.
                    v => DType::Unknown(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
                }
            }

            /// The `TensorProto.DataType` number.
            pub fn to_onnx(self) -> i32 {
                match self {
                    $(DType::$v => $code,)*
                    DType::Unknown(v) => v,
                }
            }

            /// The name of a known type.
            fn known_name(self) -> Option<&'static str> {
                match self {
                    $(DType::$v => Some($name),)*
                    DType::Unknown(_) => None,
                }
            }
        }
    };
}

// The one table of ONNX element types: variant, `TensorProto.DataType` code, name in reports
// and JSON (numpy-like for common types, the lower-case ONNX name for the rest).
dtypes! {
    /// `UNDEFINED` (0).
    Undefined = 0, "undefined";
    /// IEEE float32.
    F32 = 1, "float32";
    /// uint8.
    U8 = 2, "uint8";
    /// int8.
    I8 = 3, "int8";
    /// uint16.
    U16 = 4, "uint16";
    /// int16.
    I16 = 5, "int16";
    /// int32.
    I32 = 6, "int32";
    /// int64.
    I64 = 7, "int64";
    /// UTF-8 string.
    String = 8, "string";
    /// bool (one byte each).
    Bool = 9, "bool";
    /// IEEE float16.
    F16 = 10, "float16";
    /// IEEE float64.
    F64 = 11, "float64";
    /// uint32.
    U32 = 12, "uint32";
    /// uint64.
    U64 = 13, "uint64";
    /// complex64 (two float32).
    Complex64 = 14, "complex64";
    /// complex128 (two float64).
    Complex128 = 15, "complex128";
    /// bfloat16.
    BF16 = 16, "bfloat16";
    /// float8e4m3fn.
    Float8E4M3Fn = 17, "float8e4m3fn";
    /// float8e4m3fnuz.
    Float8E4M3Fnuz = 18, "float8e4m3fnuz";
    /// float8e5m2.
    Float8E5M2 = 19, "float8e5m2";
    /// float8e5m2fnuz.
    Float8E5M2Fnuz = 20, "float8e5m2fnuz";
    /// uint4 (two per byte).
    U4 = 21, "uint4";
    /// int4 (two per byte).
    I4 = 22, "int4";
    /// float4e2m1 (two per byte).
    Float4E2M1 = 23, "float4e2m1";
    /// float8e8m0.
    Float8E8M0 = 24, "float8e8m0";
    /// uint2 (four per byte).
    U2 = 25, "uint2";
    /// int2 (four per byte).
    I2 = 26, "int2";
    /// float6e2m3 (four per three bytes).
    Float6E2M3 = 27, "float6e2m3";
    /// float6e3m2 (four per three bytes).
    Float6E3M2 = 28, "float6e3m2";
}

/// The typed (non-raw) `TensorProto` field that can hold a dtype's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypedField {
    /// `float_data` (field 4, fixed32).
    FloatData,
    /// `int32_data` (field 5, varint).
    Int32Data,
    /// `string_data` (field 6, bytes).
    StringData,
    /// `int64_data` (field 7, varint).
    Int64Data,
    /// `double_data` (field 10, fixed64).
    DoubleData,
    /// `uint64_data` (field 11, varint).
    Uint64Data,
}

impl TypedField {
    /// The protobuf field name.
    pub fn name(self) -> &'static str {
        match self {
            Self::FloatData => "float_data",
            Self::Int32Data => "int32_data",
            Self::StringData => "string_data",
            Self::Int64Data => "int64_data",
            Self::DoubleData => "double_data",
            Self::Uint64Data => "uint64_data",
        }
    }
}

impl DType {
    /// The name used in reports and JSON: numpy-like for common types, the lower-case ONNX
    /// name for the rest (e.g. `float8e4m3fn`).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self.known_name() {
            Some(s) => s.into(),
            None => format!("unknown({})", self.to_onnx()).into(),
        }
    }

    /// True for the dtypes whose tensors may be mutated: float32, float16, bfloat16, float64.
    pub fn is_mutable_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Bytes that `n` elements take in `raw_data` (or external data); `None` on overflow,
    /// for strings (never raw) and for unknown dtypes.
    pub fn raw_bytes(self, n: u64) -> Option<u64> {
        use DType::*;
        match self {
            U8 | I8 | Bool | Float8E4M3Fn | Float8E4M3Fnuz | Float8E5M2 | Float8E5M2Fnuz
            | Float8E8M0 => Some(n),
            U16 | I16 | F16 | BF16 => n.checked_mul(2),
            F32 | I32 | U32 => n.checked_mul(4),
            F64 | I64 | U64 | Complex64 => n.checked_mul(8),
            Complex128 => n.checked_mul(16),
            U4 | I4 | Float4E2M1 => Some(n.div_ceil(2)),
            U2 | I2 => Some(n.div_ceil(4)),
            Float6E2M3 | Float6E3M2 => n.checked_mul(6).map(|b| b.div_ceil(8)),
            Undefined | String | Unknown(_) => None,
        }
    }

    /// The typed field that may hold this dtype's values, and how many values it must hold
    /// for `n` elements (`None` when the count overflows or no typed field fits).
    pub fn typed_field(self, n: u64) -> Option<(TypedField, Option<u64>)> {
        use DType::*;
        let f = match self {
            F32 => (TypedField::FloatData, Some(n)),
            Complex64 => (TypedField::FloatData, n.checked_mul(2)),
            F64 => (TypedField::DoubleData, Some(n)),
            Complex128 => (TypedField::DoubleData, n.checked_mul(2)),
            I64 => (TypedField::Int64Data, Some(n)),
            U32 | U64 => (TypedField::Uint64Data, Some(n)),
            String => (TypedField::StringData, Some(n)),
            I32 | I16 | I8 | U16 | U8 | Bool | F16 | BF16 | Float8E4M3Fn | Float8E4M3Fnuz
            | Float8E5M2 | Float8E5M2Fnuz | Float8E8M0 | Float6E2M3 | Float6E3M2 => {
                (TypedField::Int32Data, Some(n))
            }
            U4 | I4 | Float4E2M1 => (TypedField::Int32Data, Some(n.div_ceil(2))),
            U2 | I2 => (TypedField::Int32Data, Some(n.div_ceil(4))),
            Undefined | Unknown(_) => return None,
        };
        Some(f)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_names_are_distinct() {
        let mut names = std::collections::HashSet::new();
        assert_eq!(DType::ALL.len(), 29);
        for v in 0..=28 {
            let d = DType::from_onnx(v);
            assert_eq!(DType::ALL[v as usize], d);
            assert_eq!(i64::from(d.to_onnx()), v);
            assert!(names.insert(d.name().into_owned()), "{d}");
            assert!(!matches!(d, DType::Unknown(_)));
        }
        assert_eq!(DType::from_onnx(99), DType::Unknown(99));
        assert_eq!(
            DType::from_onnx(1 << 40).name(),
            format!("unknown({})", i32::MAX)
        );
    }

    #[test]
    fn raw_sizes() {
        assert_eq!(DType::F32.raw_bytes(3), Some(12));
        assert_eq!(DType::I4.raw_bytes(3), Some(2));
        assert_eq!(DType::U2.raw_bytes(5), Some(2));
        assert_eq!(DType::Float6E2M3.raw_bytes(5), Some(4));
        assert_eq!(DType::Complex128.raw_bytes(2), Some(32));
        assert_eq!(DType::F64.raw_bytes(u64::MAX), None);
        assert_eq!(DType::String.raw_bytes(1), None);
        assert_eq!(
            DType::I4.typed_field(5),
            Some((TypedField::Int32Data, Some(3)))
        );
    }
}
