//! The single error type of this crate: every rule a safetensors header, a GGUF
//! header, a shard index or an encoded tensor frame can break, with the
//! offending values in the message.

use thiserror::Error;

/// Why a model file header, a shard index or an encoded frame was rejected.
///
/// Parsers treat their input as hostile: every violated rule maps to one
/// variant, and nothing in this crate panics on input bytes.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FormatError {
    /// The prefix handed in is too short; read at least `needed` bytes from
    /// the start of the file and call again.
    #[error("need more bytes: the header needs at least {needed} bytes of the file prefix")]
    NeedMore {
        /// Minimum prefix length, in bytes from the start of the file, needed to make progress.
        needed: u64,
    },

    /// A header declares more bytes than the format's cap allows.
    #[error("{what} is {len} bytes, above the cap of {max} bytes")]
    HeaderTooLarge {
        /// Which header or field.
        what: &'static str,
        /// Declared length in bytes.
        len: u64,
        /// The cap in bytes.
        max: u64,
    },

    /// A structure reaches past the end of the file.
    #[error("{what} ends at byte {end}, past the end of the {file_size}-byte file")]
    PastEndOfFile {
        /// Which structure.
        what: String,
        /// Absolute end offset (exclusive).
        end: u64,
        /// File size in bytes.
        file_size: u64,
    },

    /// Arithmetic on a declared size or offset overflowed `u64`.
    #[error("size arithmetic overflowed u64 while computing {what}")]
    Overflow {
        /// What was being computed.
        what: String,
    },

    /// The safetensors header is not a JSON object.
    #[error("safetensors header must be a JSON object starting with '{{', found {}", first_byte(*found))]
    HeaderNotObject {
        /// The first non-whitespace byte, or `None` for an empty header.
        found: Option<u8>,
    },

    /// Bytes that must be UTF-8 are not.
    #[error("{what} is not valid UTF-8 (first bad byte at offset {offset})")]
    NotUtf8 {
        /// Which string.
        what: String,
        /// Offset of the first invalid byte within that string.
        offset: u64,
    },

    /// JSON syntax or type error (the message carries line and column).
    #[error("invalid JSON in {what}: {reason}")]
    InvalidJson {
        /// Which document.
        what: &'static str,
        /// serde_json's message.
        reason: String,
    },

    /// A JSON object or GGUF metadata section repeats a key.
    #[error("duplicate key {key:?} in {what}")]
    DuplicateKey {
        /// Which map.
        what: String,
        /// The repeated key.
        key: String,
    },

    /// A tensor entry carries a field the format does not define.
    #[error("tensor {tensor:?} has unknown field {field:?} (allowed: dtype, shape, data_offsets)")]
    UnknownField {
        /// Tensor name.
        tensor: String,
        /// The unknown field.
        field: String,
    },

    /// A tensor entry lacks a required field.
    #[error("tensor {tensor:?} is missing required field {field:?}")]
    MissingField {
        /// Tensor name.
        tensor: String,
        /// The missing field.
        field: &'static str,
    },

    /// A dtype name is not one this crate knows.
    #[error("tensor {tensor:?} has unknown dtype {dtype:?}")]
    UnknownDtype {
        /// Tensor name (empty when parsing a bare dtype name).
        tensor: String,
        /// The dtype string found.
        dtype: String,
    },

    /// A tensor has more dimensions than allowed.
    #[error("tensor {tensor:?} has {rank} dimensions, above the maximum of {max}")]
    TooManyDims {
        /// Tensor name.
        tensor: String,
        /// Declared rank.
        rank: u64,
        /// Maximum rank.
        max: u64,
    },

    /// `data_offsets` is not a `[begin, end]` pair with `begin <= end`.
    #[error(
        "tensor {tensor:?} data_offsets must be [begin, end] with begin <= end, found {found:?}"
    )]
    BadOffsets {
        /// Tensor name.
        tensor: String,
        /// The offsets found (at most the first three).
        found: Vec<u64>,
    },

    /// A tensor's byte range does not match its shape and dtype.
    #[error(
        "tensor {tensor:?} byte length must equal elements x dtype size: shape {shape:?} of {dtype} needs {expected} bytes, data_offsets span {actual}"
    )]
    ByteLenMismatch {
        /// Tensor name.
        tensor: String,
        /// Dtype name.
        dtype: &'static str,
        /// Shape.
        shape: Vec<u64>,
        /// Bytes required by shape and dtype.
        expected: u64,
        /// Bytes spanned by the offsets.
        actual: u64,
    },

    /// Sub-byte dtype whose element count does not fill whole bytes.
    #[error(
        "tensor {tensor:?} of {dtype} has {elements} elements = {bits} bits, not a whole number of bytes"
    )]
    PartialByte {
        /// Tensor name.
        tensor: String,
        /// Dtype name.
        dtype: &'static str,
        /// Element count.
        elements: u64,
        /// Total bits.
        bits: u64,
    },

    /// A tensor's range ends past the data section.
    #[error("tensor {tensor:?} ends at data offset {end}, past the {data_len}-byte data section")]
    OutOfBounds {
        /// Tensor name.
        tensor: String,
        /// End offset relative to the data section.
        end: u64,
        /// Data section length.
        data_len: u64,
    },

    /// Two tensors share bytes.
    #[error(
        "tensors {first:?} (ends at {first_end}) and {second:?} (begins at {second_begin}) overlap"
    )]
    Overlap {
        /// The tensor that starts first.
        first: String,
        /// Its end offset.
        first_end: u64,
        /// The overlapping tensor.
        second: String,
        /// Its begin offset.
        second_begin: u64,
    },

    /// Bytes of the data section belong to no tensor.
    #[error(
        "data section bytes {begin}..{end} belong to no tensor ({}); tensors must cover it contiguously",
        after.as_ref().map_or_else(|| "before the first tensor".to_string(), |t| format!("after tensor {t:?}"))
    )]
    Gap {
        /// The tensor the gap follows, `None` when the gap is at the start.
        after: Option<String>,
        /// Gap start, relative to the data section.
        begin: u64,
        /// Gap end (exclusive).
        end: u64,
    },

    /// Two tensors share a name.
    #[error("duplicate tensor name {name:?}")]
    DuplicateTensor {
        /// The name.
        name: String,
    },

    /// A shard file name in an index is not a plain relative name.
    #[error(
        "tensor {tensor:?} maps to shard file {file:?}, which is not a plain relative name: {reason}"
    )]
    BadShardName {
        /// Tensor name.
        tensor: String,
        /// The file name.
        file: String,
        /// The rule broken.
        reason: &'static str,
    },

    /// A required top-level field is missing from a JSON document.
    #[error("{what} is missing required field {field:?}")]
    MissingDocField {
        /// Which document.
        what: &'static str,
        /// The field.
        field: &'static str,
    },

    /// The file is plainly another kind of file than its name says (a
    /// pickle, a zip archive, a GGUF file, a Git LFS pointer, an HTML page).
    #[error("not a {expected} file: it starts like {looks_like}")]
    OtherFormat {
        /// The format the name promised.
        expected: &'static str,
        /// What its first bytes look like.
        looks_like: &'static str,
    },

    /// The file does not start with the expected magic bytes.
    #[error("bad magic: expected {expected:?}, found {found:?}")]
    BadMagic {
        /// Expected magic.
        expected: &'static [u8],
        /// Bytes found.
        found: Vec<u8>,
    },

    /// The format version is not supported.
    #[error("unsupported {what} version {version} (supported: {supported})")]
    UnsupportedVersion {
        /// Which format.
        what: &'static str,
        /// Version found.
        version: u64,
        /// Supported versions, in words.
        supported: &'static str,
    },

    /// A declared count is above the sanity cap.
    #[error("{what} count {count} is above the cap of {max}")]
    CountTooLarge {
        /// What is counted.
        what: &'static str,
        /// Declared count.
        count: u64,
        /// The cap.
        max: u64,
    },

    /// A GGUF metadata value type id is unknown.
    #[error("metadata key {key:?} has unknown value type {type_id} (known: 0..=12)")]
    UnknownValueType {
        /// Metadata key.
        key: String,
        /// Type id found.
        type_id: u32,
    },

    /// A GGUF boolean byte is neither 0 nor 1.
    #[error("metadata key {key:?} has boolean byte {byte}, must be 0 or 1")]
    BadBool {
        /// Metadata key.
        key: String,
        /// Byte found.
        byte: u8,
    },

    /// GGUF arrays nest deeper than allowed.
    #[error("metadata key {key:?} nests arrays {depth} deep, above the maximum of {max}")]
    ArrayTooDeep {
        /// Metadata key.
        key: String,
        /// Depth reached.
        depth: u32,
        /// Maximum depth.
        max: u32,
    },

    /// A metadata value has the wrong type for its well-known key.
    #[error("metadata key {key:?} must be of type {expected}, found {found}")]
    WrongValueType {
        /// Metadata key.
        key: String,
        /// Expected type name.
        expected: &'static str,
        /// Found type name.
        found: &'static str,
    },

    /// `general.alignment` is zero or not a power of two.
    #[error("alignment {alignment} must be a non-zero power of two")]
    BadAlignment {
        /// Alignment found.
        alignment: u64,
    },

    /// A ggml tensor type id is unknown.
    #[error("tensor {tensor:?} has unknown ggml type {type_id}")]
    UnknownGgmlType {
        /// Tensor name.
        tensor: String,
        /// Type id found.
        type_id: u32,
    },

    /// A quantized tensor's first dimension is not a multiple of its block size.
    #[error(
        "tensor {tensor:?} of {ggml_type} has dim 0 = {dim0}, not a multiple of the block size {block_size}"
    )]
    BlockMisaligned {
        /// Tensor name.
        tensor: String,
        /// Type name.
        ggml_type: &'static str,
        /// First dimension.
        dim0: u64,
        /// Block size.
        block_size: u64,
    },

    /// A tensor offset is not a multiple of the alignment.
    #[error("tensor {tensor:?} offset {offset} is not a multiple of the alignment {alignment}")]
    OffsetMisaligned {
        /// Tensor name.
        tensor: String,
        /// Relative offset found.
        offset: u64,
        /// Alignment.
        alignment: u64,
    },

    /// An element size is not supported by a codec.
    #[error("element size {elem_size} is not supported by {what} (supported: {supported})")]
    BadElemSize {
        /// Which operation.
        what: &'static str,
        /// Element size found.
        elem_size: usize,
        /// Supported sizes, in words.
        supported: &'static str,
    },

    /// A data length is not a multiple of the element size.
    #[error("data length {len} is not a multiple of the element size {elem_size}")]
    LenNotMultiple {
        /// Data length.
        len: usize,
        /// Element size.
        elem_size: usize,
    },

    /// A base buffer's length differs from the data's.
    #[error("base length {base_len} must equal data length {data_len}")]
    BaseLenMismatch {
        /// Data length.
        data_len: usize,
        /// Base length.
        base_len: usize,
    },

    /// XOR encoding was asked for without a base.
    #[error("encoding {encoding} needs a base tensor, none was given")]
    MissingBase {
        /// The encoding name.
        encoding: &'static str,
    },

    /// An encoded frame violates the frame format.
    #[error("corrupt {encoding} frame: {reason}")]
    CorruptFrame {
        /// The encoding name.
        encoding: &'static str,
        /// The rule broken, with values.
        reason: String,
    },

    /// Decoded output has the wrong length.
    #[error("{encoding} decoded to {actual} bytes, expected exactly {expected}")]
    DecodedLenMismatch {
        /// The encoding name.
        encoding: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual (or lower bound of the actual) length.
        actual: usize,
    },

    /// zstd failed (corrupt input, or output above the cap).
    #[error("zstd {op} failed: {reason}")]
    Zstd {
        /// `compress` or `decompress`.
        op: &'static str,
        /// zstd's message.
        reason: String,
    },

    /// An encoding name is unknown.
    #[error("unknown encoding {name:?} (known: raw, zstd, planes, xor_planes)")]
    UnknownEncoding {
        /// The name found.
        name: String,
    },
}

impl FormatError {
    /// Shorthand for [`FormatError::Overflow`].
    pub(crate) fn overflow(what: impl Into<String>) -> Self {
        FormatError::Overflow { what: what.into() }
    }
}

/// A header's first byte as a reader sees it: `'['`, `0x00`, or the end.
fn first_byte(b: Option<u8>) -> String {
    match b {
        None => "an empty header".to_string(),
        Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
        Some(b) => format!("byte 0x{b:02x}"),
    }
}
