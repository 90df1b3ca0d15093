//! GGUF metadata values. Arrays are stored typed (`Vec<u8>`, `Vec<String>`,
//! ...) rather than as vectors of enums, so a hostile header cannot multiply
//! its size in memory more than about threefold.

/// A GGUF metadata value (value types 0..=12).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (stored as a byte that must be 0 or 1).
    Bool(bool),
    /// Type 8 (u64 length + UTF-8 bytes).
    String(String),
    /// Type 9 (element type u32 + count u64 + items).
    Array(GgufArray),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// A typed GGUF array.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    /// Array of type 0.
    U8(Vec<u8>),
    /// Array of type 1.
    I8(Vec<i8>),
    /// Array of type 2.
    U16(Vec<u16>),
    /// Array of type 3.
    I16(Vec<i16>),
    /// Array of type 4.
    U32(Vec<u32>),
    /// Array of type 5.
    I32(Vec<i32>),
    /// Array of type 6.
    F32(Vec<f32>),
    /// Array of type 7.
    Bool(Vec<bool>),
    /// Array of type 8.
    String(Vec<String>),
    /// Array of arrays (type 9); each inner array carries its own type.
    Array(Vec<GgufArray>),
    /// Array of type 10.
    U64(Vec<u64>),
    /// Array of type 11.
    I64(Vec<i64>),
    /// Array of type 12.
    F64(Vec<f64>),
}

/// GGUF names of the value types, indexed by type id.
pub const VALUE_TYPE_NAMES: [&str; 13] = [
    "UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL", "STRING", "ARRAY",
    "UINT64", "INT64", "FLOAT64",
];

impl GgufValue {
    /// The GGUF type id (0..=12).
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// The GGUF type name (`"UINT32"`, `"STRING"`, ...).
    pub fn type_name(&self) -> &'static str {
        VALUE_TYPE_NAMES
            .get(self.type_id() as usize)
            .copied()
            .unwrap_or("?")
    }

    /// The value as a `u64` if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a string slice if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array if it is one.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl GgufArray {
    /// Number of items.
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    /// True when the array has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The type id of the items (0..=12).
    pub fn item_type_id(&self) -> u32 {
        match self {
            GgufArray::U8(_) => 0,
            GgufArray::I8(_) => 1,
            GgufArray::U16(_) => 2,
            GgufArray::I16(_) => 3,
            GgufArray::U32(_) => 4,
            GgufArray::I32(_) => 5,
            GgufArray::F32(_) => 6,
            GgufArray::Bool(_) => 7,
            GgufArray::String(_) => 8,
            GgufArray::Array(_) => 9,
            GgufArray::U64(_) => 10,
            GgufArray::I64(_) => 11,
            GgufArray::F64(_) => 12,
        }
    }
}
