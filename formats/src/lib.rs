//! Model file formats parsed as hostile input, and lossless weight-aware
//! tensor encodings.
//!
//! - [`safetensors`]: safetensors headers ([`safetensors::parse_header`]) and
//!   sharded-checkpoint indexes ([`safetensors::parse_index`]).
//! - [`gguf`]: GGUF v2/v3 headers ([`gguf::parse`]).
//! - [`codec`]: raw / zstd / byte-plane / XOR-byte-plane encodings of tensor
//!   bytes ([`codec::encode`], [`codec::decode`]).
//!
//! Nothing here panics on input bytes: every violated rule is a
//! [`FormatError`] naming the rule and the offending values.

pub mod codec;
mod dtype;
mod error;
mod ggml;
pub mod gguf;
pub mod safetensors;
pub mod stats;

pub use codec::{Encoding, decode, encode};
pub use dtype::{ALL_DTYPES, Dtype};
pub use error::FormatError;
pub use ggml::{ALL_GGML_TYPES, GgmlType};
pub use gguf::{GgufHeader, GgufTensor, GgufValue};
pub use safetensors::{SafetensorsHeader, ShardIndex, TensorInfo};
