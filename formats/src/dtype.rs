//! Safetensors element types (`dtype` strings) with their sizes in bits.

use std::fmt;
use std::str::FromStr;

use crate::FormatError;

/// A safetensors element type, as spelled in the header's `dtype` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dtype {
    /// Boolean, one byte each.
    Bool,
    /// 4-bit float (e2m1), two per byte.
    F4,
    /// 6-bit float (e2m3).
    F6E2M3,
    /// 6-bit float (e3m2).
    F6E3M2,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// 8-bit float, 5 exponent bits, 2 mantissa bits.
    F8E5M2,
    /// 8-bit float, 4 exponent bits, 3 mantissa bits.
    F8E4M3,
    /// 8-bit exponent-only scale (e8m0).
    F8E8M0,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// IEEE single precision.
    F32,
    /// Complex of two f32.
    C64,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE double precision.
    F64,
}

/// Every dtype, in a stable order.
pub const ALL_DTYPES: [Dtype; 20] = [
    Dtype::Bool,
    Dtype::F4,
    Dtype::F6E2M3,
    Dtype::F6E3M2,
    Dtype::U8,
    Dtype::I8,
    Dtype::F8E5M2,
    Dtype::F8E4M3,
    Dtype::F8E8M0,
    Dtype::U16,
    Dtype::I16,
    Dtype::F16,
    Dtype::BF16,
    Dtype::U32,
    Dtype::I32,
    Dtype::F32,
    Dtype::C64,
    Dtype::U64,
    Dtype::I64,
    Dtype::F64,
];

impl Dtype {
    /// Size of one element in bits (4 and 6 for the sub-byte floats).
    pub fn size_bits(&self) -> u64 {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 | Dtype::F8E8M0 => {
                8
            }
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::U64 | Dtype::I64 | Dtype::F64 => 64,
        }
    }

    /// Size of one element in whole bytes, `None` for sub-byte types.
    pub fn size_bytes(&self) -> Option<usize> {
        let bits = self.size_bits();
        bits.is_multiple_of(8).then_some((bits / 8) as usize)
    }

    /// The name as written in a safetensors header (`"BF16"`, `"F8_E4M3"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6E2M3 => "F6_E2M3",
            Dtype::F6E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::F32 => "F32",
            Dtype::C64 => "C64",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F64 => "F64",
        }
    }

    /// True for real floating-point types (including the 4/6/8-bit floats and
    /// the e8m0 scale type); false for integers, booleans and complex.
    pub fn is_float(&self) -> bool {
        matches!(
            self,
            Dtype::F4
                | Dtype::F6E2M3
                | Dtype::F6E3M2
                | Dtype::F8E5M2
                | Dtype::F8E4M3
                | Dtype::F8E8M0
                | Dtype::F16
                | Dtype::BF16
                | Dtype::F32
                | Dtype::F64
        )
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| FormatError::UnknownDtype {
                tensor: String::new(),
                dtype: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<Dtype>(), Ok(d));
        }
        assert!("f32".parse::<Dtype>().is_err());
        assert_eq!(Dtype::BF16.size_bits(), 16);
        assert_eq!(Dtype::F4.size_bytes(), None);
        assert!(Dtype::F8E4M3.is_float());
        assert!(!Dtype::I64.is_float());
    }
}
