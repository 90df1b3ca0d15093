//! A bounds-checked little-endian cursor over a GGUF file prefix, and the
//! metadata value decoder built on it. Every read checks, in this order, the
//! end of the file, the header cap, and the end of the prefix (the last gives
//! [`FormatError::NeedMore`] so the caller can read more and retry).

use super::value::{GgufArray, GgufValue};
use crate::FormatError;

/// Largest GGUF header (metadata and tensor infos) accepted: 256 MiB.
pub const MAX_HEADER_BYTES: u64 = 256 << 20;

/// Deepest nesting of arrays accepted in metadata (an array of scalars is depth 1).
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// Longest metadata key or tensor name accepted, in bytes.
pub const MAX_NAME_LEN: u64 = 65_535;

/// Minimum encoded size of one item of each value type, by type id.
const MIN_ITEM_SIZE: [u64; 13] = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/// Cursor over the bytes of a GGUF prefix.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: u64,
    file_size: u64,
}

impl<'a> Reader<'a> {
    /// A cursor at offset 0.
    pub fn new(buf: &'a [u8], file_size: u64) -> Self {
        Reader {
            buf,
            pos: 0,
            file_size,
        }
    }

    /// Current offset from the start of the file.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Checks that `n` more bytes exist without consuming them.
    pub fn ensure(&self, n: u64, what: &str) -> Result<(), FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| FormatError::overflow(format!("end of {what}")))?;
        if end > self.file_size {
            return Err(FormatError::PastEndOfFile {
                what: what.to_owned(),
                end,
                file_size: self.file_size,
            });
        }
        if end > MAX_HEADER_BYTES {
            return Err(FormatError::HeaderTooLarge {
                what: "GGUF header",
                len: end,
                max: MAX_HEADER_BYTES,
            });
        }
        if end > self.buf.len() as u64 {
            return Err(FormatError::NeedMore { needed: end });
        }
        Ok(())
    }

    /// Consumes `n` bytes.
    pub fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], FormatError> {
        self.ensure(n, what)?;
        // ensure() proved pos + n <= buf.len(), so both fit in usize.
        let start = self.pos as usize;
        let end = start + n as usize;
        let bytes = self
            .buf
            .get(start..end)
            .ok_or(FormatError::NeedMore { needed: end as u64 })?;
        self.pos += n;
        Ok(bytes)
    }

    /// Consumes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FormatError> {
        let b = self.take(N as u64, what)?;
        b.try_into()
            .map_err(|_| FormatError::overflow(format!("fixed read of {what}")))
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a GGUF string (u64 length + UTF-8), at most `max` bytes long.
    pub fn string(&mut self, max: u64, what: &str) -> Result<String, FormatError> {
        let len = self.u64(what)?;
        if len > max {
            return Err(FormatError::HeaderTooLarge {
                what: "GGUF string",
                len,
                max,
            });
        }
        let bytes = self.take(len, what)?;
        let s = std::str::from_utf8(bytes).map_err(|e| FormatError::NotUtf8 {
            what: what.to_owned(),
            offset: e.valid_up_to() as u64,
        })?;
        Ok(s.to_owned())
    }

    /// Reads one metadata value of type `type_id` for `key`.
    pub fn value(&mut self, type_id: u32, key: &str) -> Result<GgufValue, FormatError> {
        let v = match type_id {
            0 => GgufValue::U8(self.u8(key)?),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(key)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => GgufValue::Bool(bool_byte(self.u8(key)?, key)?),
            8 => GgufValue::String(self.string(MAX_HEADER_BYTES, key)?),
            9 => GgufValue::Array(self.array_value(key, 1)?),
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            _ => {
                return Err(FormatError::UnknownValueType {
                    key: key.to_owned(),
                    type_id,
                });
            }
        };
        Ok(v)
    }

    /// Reads an array (item type u32, count u64, items) at nesting `depth`.
    fn array_value(&mut self, key: &str, depth: u32) -> Result<GgufArray, FormatError> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(FormatError::ArrayTooDeep {
                key: key.to_owned(),
                depth,
                max: MAX_ARRAY_DEPTH,
            });
        }
        let item_type = self.u32(key)?;
        let count = self.u64(key)?;
        let min_size = *MIN_ITEM_SIZE.get(item_type as usize).ok_or_else(|| {
            FormatError::UnknownValueType {
                key: key.to_owned(),
                type_id: item_type,
            }
        })?;
        let min_total = count
            .checked_mul(min_size)
            .ok_or_else(|| FormatError::overflow(format!("size of array {key:?}")))?;
        // Proves the items can fit in the file, the cap and the prefix before allocating.
        self.ensure(min_total, key)?;
        // ensure() proved count * min_size <= prefix length, so count fits in usize.
        let n = count as usize;
        let arr = match item_type {
            0 => GgufArray::U8(self.take(count, key)?.to_vec()),
            1 => GgufArray::I8(fixed(self.take(count, key)?, i8::from_le_bytes)),
            2 => GgufArray::U16(fixed(self.take(min_total, key)?, u16::from_le_bytes)),
            3 => GgufArray::I16(fixed(self.take(min_total, key)?, i16::from_le_bytes)),
            4 => GgufArray::U32(fixed(self.take(min_total, key)?, u32::from_le_bytes)),
            5 => GgufArray::I32(fixed(self.take(min_total, key)?, i32::from_le_bytes)),
            6 => GgufArray::F32(fixed(self.take(min_total, key)?, f32::from_le_bytes)),
            7 => GgufArray::Bool(
                self.take(count, key)?
                    .iter()
                    .map(|&b| bool_byte(b, key))
                    .collect::<Result<_, _>>()?,
            ),
            8 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(MAX_HEADER_BYTES, key)?);
                }
                GgufArray::String(v)
            }
            9 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                GgufArray::Array(v)
            }
            10 => GgufArray::U64(fixed(self.take(min_total, key)?, u64::from_le_bytes)),
            11 => GgufArray::I64(fixed(self.take(min_total, key)?, i64::from_le_bytes)),
            _ => GgufArray::F64(fixed(self.take(min_total, key)?, f64::from_le_bytes)),
        };
        Ok(arr)
    }
}

/// Decodes a GGUF boolean byte.
fn bool_byte(byte: u8, key: &str) -> Result<bool, FormatError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FormatError::BadBool {
            key: key.to_owned(),
            byte,
        }),
    }
}

/// Decodes a packed little-endian array of `N`-byte items.
fn fixed<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}
