//! GGUF v2/v3 (little-endian) headers parsed as hostile input.
//!
//! Layout: magic `GGUF`, version u32, tensor count u64, metadata KV count u64,
//! the KV pairs, the tensor infos, padding to the alignment, then the data
//! section. [`parse`] reads everything up to the data section from a prefix of
//! the file; when the prefix is too short it returns
//! [`FormatError::NeedMore`] with the prefix length needed to make progress.

mod reader;
mod value;

use std::collections::HashSet;

pub use reader::{MAX_ARRAY_DEPTH, MAX_HEADER_BYTES, MAX_NAME_LEN};
pub use value::{GgufArray, GgufValue, VALUE_TYPE_NAMES};

use crate::{FormatError, GgmlType};
use reader::Reader;

/// The four magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Most tensors accepted in one file.
pub const MAX_TENSORS: u64 = 1 << 24;

/// Most metadata KV pairs accepted in one file.
pub const MAX_KV: u64 = 1 << 24;

/// Most dimensions accepted per tensor.
pub const MAX_DIMS: u32 = 8;

/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata key that overrides the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    /// Tensor name.
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as stored.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Absolute offset of the first byte in the file.
    pub offset: u64,
    /// Length of the tensor's bytes.
    pub byte_len: u64,
}

/// A validated GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata KV pairs in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensors in header order.
    pub tensors: Vec<GgufTensor>,
    /// Data alignment in bytes.
    pub alignment: u64,
    /// Absolute offset of the data section (header end rounded up to `alignment`).
    pub data_offset: u64,
    /// Bytes from the start of the file to the end of the tensor infos.
    pub header_len_bytes: u64,
}

impl GgufHeader {
    /// The metadata value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// The tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Parses and validates a GGUF header from a prefix of a `file_size`-byte file.
///
/// Returns [`FormatError::NeedMore`] when `prefix` ends before the header
/// does (read at least `needed` bytes and retry; doubling is a good policy),
/// and [`FormatError::HeaderTooLarge`] past [`MAX_HEADER_BYTES`].
pub fn parse(prefix: &[u8], file_size: u64) -> Result<GgufHeader, FormatError> {
    let mut r = Reader::new(prefix, file_size);
    let magic = r.array::<4>("GGUF magic")?;
    if &magic != MAGIC {
        if let Some(looks_like) = crate::sniff(prefix) {
            return Err(FormatError::OtherFormat {
                expected: "GGUF",
                looks_like,
            });
        }
        return Err(FormatError::BadMagic {
            expected: MAGIC,
            found: magic.to_vec(),
        });
    }
    let version = r.u32("GGUF version")?;
    if version != 2 && version != 3 {
        return Err(FormatError::UnsupportedVersion {
            what: "GGUF",
            version: version.into(),
            supported: "2 and 3, little-endian only",
        });
    }
    let tensor_count = capped(r.u64("tensor count")?, "tensor", MAX_TENSORS)?;
    let kv_count = capped(r.u64("metadata KV count")?, "metadata KV", MAX_KV)?;

    let mut metadata = Vec::with_capacity(kv_count.min(1024) as usize);
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let key = r.string(MAX_NAME_LEN, "metadata key")?;
        let type_id = r.u32(&key)?;
        let value = r.value(type_id, &key)?;
        if !keys.insert(key.clone()) {
            return Err(FormatError::DuplicateKey {
                what: "GGUF metadata".into(),
                key,
            });
        }
        metadata.push((key, value));
    }

    let mut infos = Vec::with_capacity(tensor_count.min(1024) as usize);
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let info = read_tensor_info(&mut r)?;
        if !names.insert(info.0.clone()) {
            return Err(FormatError::DuplicateTensor { name: info.0 });
        }
        infos.push(info);
    }
    let header_len_bytes = r.pos();

    let alignment = alignment(&metadata)?;
    let data_offset = header_len_bytes
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| FormatError::overflow("data section offset"))?;

    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ggml_type, rel) in infos {
        if !rel.is_multiple_of(alignment) {
            return Err(FormatError::OffsetMisaligned {
                tensor: name,
                offset: rel,
                alignment,
            });
        }
        let byte_len = ggml_type.byte_len(&name, &dims)?;
        let offset = data_offset
            .checked_add(rel)
            .ok_or_else(|| FormatError::overflow(format!("offset of {name:?}")))?;
        let end = offset
            .checked_add(byte_len)
            .ok_or_else(|| FormatError::overflow(format!("end of {name:?}")))?;
        if end > file_size {
            return Err(FormatError::PastEndOfFile {
                what: format!("tensor {name:?}"),
                end,
                file_size,
            });
        }
        tensors.push(GgufTensor {
            name,
            dims,
            ggml_type,
            offset,
            byte_len,
        });
    }
    check_no_overlap(&tensors)?;

    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
        header_len_bytes,
    })
}

/// Rejects counts above `max`.
fn capped(count: u64, what: &'static str, max: u64) -> Result<u64, FormatError> {
    if count > max {
        return Err(FormatError::CountTooLarge { what, count, max });
    }
    Ok(count)
}

/// A tensor info as read: name, dims, type, offset relative to the data section.
type RawInfo = (String, Vec<u64>, GgmlType, u64);

/// Reads one tensor info.
fn read_tensor_info(r: &mut Reader<'_>) -> Result<RawInfo, FormatError> {
    let name = r.string(MAX_NAME_LEN, "tensor name")?;
    let n_dims = r.u32(&name)?;
    if n_dims > MAX_DIMS {
        return Err(FormatError::TooManyDims {
            tensor: name,
            rank: n_dims.into(),
            max: MAX_DIMS.into(),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64(&name)?);
    }
    let type_id = r.u32(&name)?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| FormatError::UnknownGgmlType {
        tensor: name.clone(),
        type_id,
    })?;
    let offset = r.u64(&name)?;
    Ok((name, dims, ggml_type, offset))
}

/// `general.alignment` (must be a UINT32 power of two), else the default.
fn alignment(metadata: &[(String, GgufValue)]) -> Result<u64, FormatError> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let GgufValue::U32(a) = *v else {
        return Err(FormatError::WrongValueType {
            key: ALIGNMENT_KEY.into(),
            expected: "UINT32",
            found: v.type_name(),
        });
    };
    if !a.is_power_of_two() {
        return Err(FormatError::BadAlignment {
            alignment: a.into(),
        });
    }
    Ok(a.into())
}

/// Rejects tensors whose non-empty byte ranges intersect.
fn check_no_overlap(tensors: &[GgufTensor]) -> Result<(), FormatError> {
    let mut order: Vec<&GgufTensor> = tensors.iter().filter(|t| t.byte_len > 0).collect();
    order.sort_by_key(|t| (t.offset, t.byte_len));
    for pair in order.windows(2) {
        if let [a, b] = pair {
            let a_end = a.offset.saturating_add(a.byte_len);
            if b.offset < a_end {
                return Err(FormatError::Overlap {
                    first: a.name.clone(),
                    first_end: a_end,
                    second: b.name.clone(),
                    second_begin: b.offset,
                });
            }
        }
    }
    Ok(())
}
