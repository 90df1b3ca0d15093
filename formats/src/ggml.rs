//! ggml tensor types as stored in GGUF files: ids, names, block sizes and
//! bytes per block, and checked byte-length arithmetic.

use std::fmt;

use crate::FormatError;

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal; )*) => {
        /// A ggml tensor type.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum GgmlType {
            $( $(#[$doc])* $variant, )*
        }

        /// Every known ggml type, in id order.
        pub const ALL_GGML_TYPES: &[GgmlType] = &[ $( GgmlType::$variant, )* ];

        impl GgmlType {
            /// The type for a GGUF type id, `None` if unknown (or removed, like 4 and 5).
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// The GGUF type id.
            pub fn id(&self) -> u32 {
                match self { $( GgmlType::$variant => $id, )* }
            }

            /// The canonical name (`"Q4_K"`, `"BF16"`, ...).
            pub fn name(&self) -> &'static str {
                match self { $( GgmlType::$variant => $name, )* }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(&self) -> u64 {
                match self { $( GgmlType::$variant => $block, )* }
            }

            /// Bytes per block.
            pub fn bytes_per_block(&self) -> u64 {
                match self { $( GgmlType::$variant => $bytes, )* }
            }
        }
    };
}

ggml_types! {
    /// IEEE single precision.
    F32 = 0, "F32", 1, 4;
    /// IEEE half precision.
    F16 = 1, "F16", 1, 2;
    /// 4-bit blocks of 32, f16 scale.
    Q4_0 = 2, "Q4_0", 32, 18;
    /// 4-bit blocks of 32, f16 scale and min.
    Q4_1 = 3, "Q4_1", 32, 20;
    /// 5-bit blocks of 32, f16 scale.
    Q5_0 = 6, "Q5_0", 32, 22;
    /// 5-bit blocks of 32, f16 scale and min.
    Q5_1 = 7, "Q5_1", 32, 24;
    /// 8-bit blocks of 32, f16 scale.
    Q8_0 = 8, "Q8_0", 32, 34;
    /// 8-bit blocks of 32, f16 scale and sum.
    Q8_1 = 9, "Q8_1", 32, 36;
    /// 2-bit k-quant super-blocks of 256.
    Q2_K = 10, "Q2_K", 256, 84;
    /// 3-bit k-quant.
    Q3_K = 11, "Q3_K", 256, 110;
    /// 4-bit k-quant.
    Q4_K = 12, "Q4_K", 256, 144;
    /// 5-bit k-quant.
    Q5_K = 13, "Q5_K", 256, 176;
    /// 6-bit k-quant.
    Q6_K = 14, "Q6_K", 256, 210;
    /// 8-bit k-quant (intermediate).
    Q8_K = 15, "Q8_K", 256, 292;
    /// i-quant, 2.06 bits per weight.
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    /// i-quant, 2.31 bits per weight.
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    /// i-quant, 3.06 bits per weight.
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    /// i-quant, 1.56 bits per weight.
    IQ1_S = 19, "IQ1_S", 256, 50;
    /// Non-linear 4-bit blocks of 32.
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    /// i-quant, 3.44 bits per weight.
    IQ3_S = 21, "IQ3_S", 256, 110;
    /// i-quant, 2.5 bits per weight.
    IQ2_S = 22, "IQ2_S", 256, 82;
    /// Non-linear 4-bit super-blocks of 256.
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    /// Signed 8-bit integer.
    I8 = 24, "I8", 1, 1;
    /// Signed 16-bit integer.
    I16 = 25, "I16", 1, 2;
    /// Signed 32-bit integer.
    I32 = 26, "I32", 1, 4;
    /// Signed 64-bit integer.
    I64 = 27, "I64", 1, 8;
    /// IEEE double precision.
    F64 = 28, "F64", 1, 8;
    /// i-quant, 1.75 bits per weight.
    IQ1_M = 29, "IQ1_M", 256, 56;
    /// bfloat16.
    BF16 = 30, "BF16", 1, 2;
    /// Ternary, 1.69 bits per weight.
    TQ1_0 = 34, "TQ1_0", 256, 54;
    /// Ternary, 2.06 bits per weight.
    TQ2_0 = 35, "TQ2_0", 256, 66;
    /// OCP microscaling FP4: 32 E2M1 values sharing one E8M0 scale (gpt-oss).
    MXFP4 = 39, "MXFP4", 32, 17;
}

impl GgmlType {
    /// True for block-quantized types (block size above 1).
    pub fn is_quantized(&self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a tensor with `dims` (dim 0 innermost) of this type.
    ///
    /// Dim 0 must be a multiple of the block size; all arithmetic is checked.
    pub fn byte_len(&self, tensor: &str, dims: &[u64]) -> Result<u64, FormatError> {
        let block = self.block_size();
        let dim0 = dims.first().copied().unwrap_or(1);
        if !dim0.is_multiple_of(block) {
            return Err(FormatError::BlockMisaligned {
                tensor: tensor.to_owned(),
                ggml_type: self.name(),
                dim0,
                block_size: block,
            });
        }
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                FormatError::overflow(format!("element count of {tensor:?} {dims:?}"))
            })?;
        (elements / block)
            .checked_mul(self.bytes_per_block())
            .ok_or_else(|| FormatError::overflow(format!("byte length of {tensor:?} {dims:?}")))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes() {
        for t in ALL_GGML_TYPES {
            assert_eq!(GgmlType::from_id(t.id()), Some(*t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(31), None);
        assert_eq!(GgmlType::Q4_K.byte_len("t", &[512, 2]), Ok(2 * 2 * 144));
        assert!(GgmlType::Q4_0.byte_len("t", &[33]).is_err());
        assert!(GgmlType::F32.byte_len("t", &[u64::MAX, 2]).is_err());
        assert!(GgmlType::Q8_0.is_quantized() && !GgmlType::BF16.is_quantized());
    }
}
