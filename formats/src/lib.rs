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

/// What a file's first bytes say it is, for the kinds often found under a
/// weights file's name: a checkpoint saved another way, or a download that
/// went wrong (an LFS pointer instead of the object, an error page). Every
/// signature fits in 8 bytes, all a safetensors length prefix gives.
pub fn sniff(start: &[u8]) -> Option<&'static str> {
    let kinds: [(&[u8], &str); 10] = [
        (
            b"PK\x03\x04",
            "a zip archive (torch.save's format, a pickle inside)",
        ),
        (b"GGUF", "a GGUF file"),
        (b"\x1f\x8b", "a gzip file"),
        (
            b"version ",
            "a Git LFS pointer (the object itself was not fetched)",
        ),
        (b"<!DOCTYP", "an HTML page"),
        (b"<!doctyp", "an HTML page"),
        (b"<html", "an HTML page"),
        (b"<HTML", "an HTML page"),
        (b"\x93NUMPY", "a NumPy array file"),
        (b"\x89HDF", "an HDF5 file"),
    ];
    if let Some((_, what)) = kinds.iter().find(|(magic, _)| start.starts_with(magic)) {
        return Some(what);
    }
    // Markup after a byte-order mark or blank space: an HTML or XML page
    // (an error page, or S3's XML error, saved as the file).
    let text = start.strip_prefix(b"\xef\xbb\xbf").unwrap_or(start);
    let text = text.trim_ascii_start();
    if text.starts_with(b"<!")
        || text.starts_with(b"<?xml")
        || text.starts_with(b"<h")
        || text.starts_with(b"<H")
    {
        return Some("an HTML or XML page");
    }
    // A pickle: PROTO with protocols 2 to 5.
    match start {
        [0x80, 2..=5, ..] => Some("a Python pickle"),
        _ => None,
    }
}
