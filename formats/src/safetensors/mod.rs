//! Safetensors headers parsed as hostile input.
//!
//! A safetensors file is an 8-byte little-endian header length `N`, `N` bytes
//! of JSON (possibly padded with trailing spaces), then the data section. The
//! JSON maps tensor names to `{dtype, shape, data_offsets}` plus an optional
//! `__metadata__` string map. [`parse_header`] checks every rule: size caps,
//! strict fields, checked shape arithmetic, byte lengths, and that the tensors
//! tile the data section exactly (no overlap, no gap).

mod index;
mod json;

use std::collections::BTreeMap;

pub use index::{MAX_SHARD_NAME_LEN, ShardIndex, check_shard_name, parse_index};

use crate::{Dtype, FormatError};
use json::{BoundedU64s, RawHeader, RawTensor};

/// Largest header JSON accepted, in bytes (the reference implementation's cap).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Largest tensor rank accepted.
pub const MAX_RANK: u64 = 64;

/// Length of the header-length prefix.
pub const LEN_PREFIX: u64 = 8;

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for scalars).
    pub shape: Vec<u64>,
    /// Absolute offset of the first byte in the file: `8 + header_len + begin`.
    pub data_offset: u64,
    /// Length of the tensor's bytes.
    pub byte_len: u64,
}

impl TensorInfo {
    /// Number of elements (product of the shape; checked at parse time).
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A validated safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Length of the JSON header in bytes (the 8-byte prefix's value).
    pub header_len: u64,
    /// The exact header bytes, including any trailing padding.
    pub raw_header: Vec<u8>,
    /// `__metadata__`, if present.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Tensors in file order (sorted by data offset).
    pub tensors: Vec<TensorInfo>,
}

impl SafetensorsHeader {
    /// Absolute offset of the data section: `8 + header_len`.
    pub fn data_start(&self) -> u64 {
        LEN_PREFIX + self.header_len
    }

    /// Total length of the data section (sum of all tensor lengths).
    pub fn data_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.byte_len).sum()
    }

    /// The tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Reads the header length from the first 8 bytes of a file.
///
/// Returns [`FormatError::NeedMore`] if fewer than 8 bytes are given and
/// [`FormatError::HeaderTooLarge`] above [`MAX_HEADER_LEN`]. Callers then read
/// `8 + header_len` bytes and call [`parse_header`].
pub fn header_len(first8: &[u8]) -> Result<u64, FormatError> {
    let bytes: [u8; 8] = first8
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or(FormatError::NeedMore { needed: LEN_PREFIX })?;
    let len = u64::from_le_bytes(bytes);
    if len > MAX_HEADER_LEN {
        if let Some(looks_like) = crate::sniff(first8) {
            return Err(FormatError::OtherFormat {
                expected: "safetensors",
                looks_like,
            });
        }
        return Err(FormatError::HeaderTooLarge {
            what: "safetensors header JSON",
            len,
            max: MAX_HEADER_LEN,
        });
    }
    Ok(len)
}

/// Parses and validates a safetensors header.
///
/// `prefix` must hold at least the first `8 + header_len` bytes of the file
/// (more is fine and ignored); `file_size` is the full file size. Returns
/// [`FormatError::NeedMore`] when the prefix is too short.
pub fn parse_header(prefix: &[u8], file_size: u64) -> Result<SafetensorsHeader, FormatError> {
    if file_size < LEN_PREFIX {
        return Err(FormatError::PastEndOfFile {
            what: "safetensors length prefix".into(),
            end: LEN_PREFIX,
            file_size,
        });
    }
    let header_len = header_len(prefix)?;
    let header_end = LEN_PREFIX + header_len; // cannot overflow: header_len <= 1e8
    if header_end > file_size {
        return Err(FormatError::PastEndOfFile {
            what: "safetensors header".into(),
            end: header_end,
            file_size,
        });
    }
    let raw = usize::try_from(header_end)
        .ok()
        .and_then(|end| prefix.get(LEN_PREFIX as usize..end))
        .ok_or(FormatError::NeedMore { needed: header_end })?;
    let text = std::str::from_utf8(raw).map_err(|e| FormatError::NotUtf8 {
        what: "safetensors header".into(),
        offset: e.valid_up_to() as u64,
    })?;
    let first = raw.iter().copied().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        return Err(FormatError::HeaderNotObject { found: first });
    }
    let parsed: RawHeader =
        serde_json::from_str(text).map_err(|e| json::json_error("safetensors header", &e))?;
    if let Some(key) = parsed.duplicate {
        return Err(FormatError::DuplicateKey {
            what: "safetensors header".into(),
            key,
        });
    }
    let metadata = match parsed.metadata {
        Some(m) => {
            if let Some(key) = m.duplicate {
                return Err(FormatError::DuplicateKey {
                    what: json::METADATA_KEY.into(),
                    key,
                });
            }
            Some(m.map)
        }
        None => None,
    };

    let data_len = file_size - header_end; // header_end <= file_size checked above
    let mut spans = Vec::with_capacity(parsed.tensors.len());
    for (name, raw_t) in parsed.tensors {
        spans.push(validate_tensor(name, raw_t, data_len)?);
    }
    spans.sort_by(|a, b| (a.begin, a.end, &a.info.name).cmp(&(b.begin, b.end, &b.info.name)));
    check_tiling(&spans, data_len)?;

    let tensors = spans
        .into_iter()
        .map(|s| {
            let mut info = s.info;
            info.data_offset = header_end
                .checked_add(s.begin)
                .ok_or_else(|| FormatError::overflow(format!("offset of {:?}", info.name)))?;
            Ok(info)
        })
        .collect::<Result<Vec<_>, FormatError>>()?;

    Ok(SafetensorsHeader {
        header_len,
        raw_header: raw.to_vec(),
        metadata,
        tensors,
    })
}

/// A validated tensor with its data-relative range.
struct Span {
    info: TensorInfo,
    begin: u64,
    end: u64,
}

/// Checks one tensor entry's fields, shape arithmetic and bounds.
fn validate_tensor(name: String, t: RawTensor, data_len: u64) -> Result<Span, FormatError> {
    if let Some(field) = t.unknown {
        return Err(FormatError::UnknownField {
            tensor: name,
            field,
        });
    }
    if let Some(key) = t.duplicate {
        return Err(FormatError::DuplicateKey {
            what: format!("tensor {name:?}"),
            key,
        });
    }
    let missing = |field| FormatError::MissingField {
        tensor: name.clone(),
        field,
    };
    let dtype_name = t.dtype.as_deref().ok_or_else(|| missing("dtype"))?;
    let shape = t.shape.ok_or_else(|| missing("shape"))?;
    let offsets = t.data_offsets.ok_or_else(|| missing("data_offsets"))?;

    let dtype: Dtype = dtype_name.parse().map_err(|_| FormatError::UnknownDtype {
        tensor: name.clone(),
        dtype: dtype_name.to_owned(),
    })?;
    if shape.total > MAX_RANK {
        return Err(FormatError::TooManyDims {
            tensor: name,
            rank: shape.total,
            max: MAX_RANK,
        });
    }
    let (begin, end) = offsets_pair(&name, &offsets)?;
    let shape = shape.values;
    let elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| FormatError::overflow(format!("element count of {name:?} {shape:?}")))?;
    let bits = elements
        .checked_mul(dtype.size_bits())
        .ok_or_else(|| FormatError::overflow(format!("bit size of {name:?} {shape:?}")))?;
    if !bits.is_multiple_of(8) {
        return Err(FormatError::PartialByte {
            tensor: name,
            dtype: dtype.name(),
            elements,
            bits,
        });
    }
    let expected = bits / 8;
    let actual = end - begin; // begin <= end checked in offsets_pair
    if expected != actual {
        return Err(FormatError::ByteLenMismatch {
            tensor: name,
            dtype: dtype.name(),
            shape,
            expected,
            actual,
        });
    }
    if end > data_len {
        return Err(FormatError::OutOfBounds {
            tensor: name,
            end,
            data_len,
        });
    }
    Ok(Span {
        info: TensorInfo {
            name,
            dtype,
            shape,
            data_offset: 0,
            byte_len: expected,
        },
        begin,
        end,
    })
}

/// Extracts `[begin, end]` with `begin <= end`.
fn offsets_pair(name: &str, offsets: &BoundedU64s) -> Result<(u64, u64), FormatError> {
    match (offsets.total, offsets.values.as_slice()) {
        (2, &[begin, end]) if begin <= end => Ok((begin, end)),
        _ => Err(FormatError::BadOffsets {
            tensor: name.to_owned(),
            found: offsets.values.iter().copied().take(3).collect(),
        }),
    }
}

/// Checks that spans sorted by `begin` tile `0..data_len` exactly.
fn check_tiling(spans: &[Span], data_len: u64) -> Result<(), FormatError> {
    let mut cursor = 0u64;
    let mut prev: Option<&Span> = None;
    for s in spans {
        if s.begin < cursor {
            let p = prev
                .map(|p| (p.info.name.clone(), p.end))
                .unwrap_or_default();
            return Err(FormatError::Overlap {
                first: p.0,
                first_end: p.1,
                second: s.info.name.clone(),
                second_begin: s.begin,
            });
        }
        if s.begin > cursor {
            return Err(FormatError::Gap {
                after: prev.map(|p| p.info.name.clone()),
                begin: cursor,
                end: s.begin,
            });
        }
        cursor = s.end;
        prev = Some(s);
    }
    if cursor != data_len {
        return Err(FormatError::Gap {
            after: prev.map(|p| p.info.name.clone()),
            begin: cursor,
            end: data_len,
        });
    }
    Ok(())
}
