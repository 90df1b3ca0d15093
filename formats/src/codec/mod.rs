//! Lossless, weight-aware encodings of tensor bytes.
//!
//! [`encode`] picks the smallest of a few candidates: the raw bytes, whole-buffer
//! zstd, a byte-plane split (sign/exponent bytes of floats compress, mantissa
//! bytes mostly do not, so planes are compressed or stored raw one by one), and
//! the same split of `data XOR base` for fine-tunes of a known base. Large
//! inputs pick the candidate from a small sample, so only one candidate is run
//! at full cost; the result is always exact. [`decode`] is the inverse and
//! treats its input as hostile.

mod planes;

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

pub use planes::MAX_ELEM_SIZE;

use crate::FormatError;

/// zstd level for whole-buffer compression of 2/4/8-byte elements.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd level for planes and for 1-byte / odd-sized (quantized) data.
pub const FAST_LEVEL: i32 = 1;
/// zstd hash-table log for planes: exponent planes are nearly all literals,
/// and a tiny match table both speeds zstd up (about 2.5x) and avoids
/// short, costly matches (slightly better ratio than the level-1 default).
pub const PLANE_HASH_LOG: u32 = 6;
/// Inputs up to this size try every candidate in full.
pub const FULL_TRY_LIMIT: usize = 256 << 10;
/// Number of slices in the selection sample of larger inputs.
const SAMPLE_SLICES: usize = 8;
/// Bytes per sample slice.
const SAMPLE_SLICE: usize = 32 << 10;

/// How tensor bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// The bytes as they are.
    Raw,
    /// One zstd frame of the bytes.
    Zstd,
    /// A byte-plane frame of the bytes.
    BytePlanes,
    /// A byte-plane frame of the bytes XOR a base tensor of the same length.
    XorBytePlanes,
}

impl Encoding {
    /// Every encoding, in preference order for ties.
    pub const ALL: [Encoding; 4] = [
        Encoding::Raw,
        Encoding::Zstd,
        Encoding::BytePlanes,
        Encoding::XorBytePlanes,
    ];

    /// The stable name: `raw`, `zstd`, `planes` or `xor_planes`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Zstd => "zstd",
            Encoding::BytePlanes => "planes",
            Encoding::XorBytePlanes => "xor_planes",
        }
    }

    /// True if decoding needs the base tensor.
    pub fn needs_base(&self) -> bool {
        *self == Encoding::XorBytePlanes
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| FormatError::UnknownEncoding { name: s.to_owned() })
    }
}

/// Encodes `data` (elements of `elem_size` bytes) with the smallest candidate.
///
/// Candidates: raw; zstd (level 3 for 2/4/8-byte elements, level 1 otherwise);
/// byte planes for 2/4/8-byte elements; XOR byte planes when `base` has the
/// same length as `data` (a `base` of another length is ignored). Errors if
/// `elem_size` is 0 or does not divide `data.len()`.
pub fn encode(
    data: &[u8],
    elem_size: usize,
    base: Option<&[u8]>,
) -> Result<(Encoding, Vec<u8>), FormatError> {
    check_elems(data.len(), elem_size)?;
    let base = base.filter(|b| b.len() == data.len());
    let candidates = candidates(elem_size, base.is_some());
    let mut cz = Compressor::new()?;
    if data.len() <= FULL_TRY_LIMIT {
        let mut best = (Encoding::Raw, data.to_vec());
        for &enc in candidates.iter().skip(1) {
            let out = cz.encode(enc, data, elem_size, base, None, false)?.0;
            if out.len() < best.1.len() {
                best = (enc, out);
            }
        }
        return Ok(best);
    }

    // Large input: estimate every candidate on a sample (whole-buffer zstd at
    // the fast level, which ranks candidates the same way), run the best in full.
    let (sample, sample_base) = sample(data, base, elem_size);
    let mut best = (Encoding::Raw, sample.len(), None);
    for &enc in candidates.iter().skip(1) {
        let sb = sample_base.as_deref();
        let (out, ratios) = cz.encode(enc, &sample, elem_size, sb, None, true)?;
        if out.len() < best.1 {
            best = (enc, out.len(), ratios);
        }
    }
    let (enc, _, ratios) = best;
    if enc == Encoding::Raw {
        return Ok((Encoding::Raw, data.to_vec()));
    }
    let out = cz
        .encode(enc, data, elem_size, base, ratios.as_deref(), false)?
        .0;
    if out.len() >= data.len() {
        return Ok((Encoding::Raw, data.to_vec()));
    }
    // The frame was allocated for the worst case (the input's size); callers
    // queue frames for writing, so give the unused tail back.
    let mut out = out;
    out.shrink_to_fit();
    Ok((enc, out))
}

/// Encodes `data` with the given encoding (no candidate search).
///
/// Same argument rules as [`encode`]; [`Encoding::XorBytePlanes`] needs a
/// `base` of the same length, and plane encodings need `elem_size` <= 8.
pub fn encode_as(
    encoding: Encoding,
    data: &[u8],
    elem_size: usize,
    base: Option<&[u8]>,
) -> Result<Vec<u8>, FormatError> {
    check_elems(data.len(), elem_size)?;
    if matches!(encoding, Encoding::BytePlanes | Encoding::XorBytePlanes)
        && elem_size > MAX_ELEM_SIZE
    {
        return Err(FormatError::BadElemSize {
            what: encoding.as_str(),
            elem_size,
            supported: "1 to 8 bytes",
        });
    }
    let base = match (encoding, base) {
        (Encoding::XorBytePlanes, None) => {
            return Err(FormatError::MissingBase {
                encoding: encoding.as_str(),
            });
        }
        (Encoding::XorBytePlanes, Some(b)) if b.len() != data.len() => {
            return Err(FormatError::BaseLenMismatch {
                data_len: data.len(),
                base_len: b.len(),
            });
        }
        (_, b) => b,
    };
    Ok(Compressor::new()?
        .encode(encoding, data, elem_size, base, None, false)?
        .0)
}

/// The [`Encoding::XorBytePlanes`] frame of `len` bytes equal to their base:
/// every plane the constant 0, built without reading either side. [`encode`]
/// returns this frame for such data whenever it is smaller than the data
/// (about 100 bytes; tinier data is stored raw). Same argument rules as
/// [`encode_as`].
pub fn encode_equal_to_base(len: usize, elem_size: usize) -> Result<Vec<u8>, FormatError> {
    check_elems(len, elem_size)?;
    if elem_size > MAX_ELEM_SIZE {
        return Err(FormatError::BadElemSize {
            what: Encoding::XorBytePlanes.as_str(),
            elem_size,
            supported: "1 to 8 bytes",
        });
    }
    Ok(planes::zero_xor_frame(len / elem_size, elem_size))
}

/// Decodes `encoded` back into exactly `expected_len` bytes.
///
/// `elem_size` must match the one used to encode (plane encodings check it
/// against the frame); `base` is required for [`Encoding::XorBytePlanes`].
/// Output is capped at `expected_len`: truncated or oversized frames and
/// decompression bombs are errors. The bytes are returned as [`Bytes`]:
/// byte-plane frames of 2- and 4-byte elements decode straight into the
/// buffer they own, and slices of them are free.
pub fn decode(
    encoding: Encoding,
    encoded: &[u8],
    elem_size: usize,
    base: Option<&[u8]>,
    expected_len: usize,
) -> Result<Bytes, FormatError> {
    let what = encoding.as_str();
    match encoding {
        Encoding::Raw => {
            if encoded.len() != expected_len {
                return Err(FormatError::DecodedLenMismatch {
                    encoding: what,
                    expected: expected_len,
                    actual: encoded.len(),
                });
            }
            Ok(Bytes::copy_from_slice(encoded))
        }
        Encoding::Zstd => {
            let mut out = Vec::with_capacity(expected_len);
            let got = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress_to_buffer(encoded, &mut out))
                .map_err(planes::zstd_err)?;
            if got != expected_len {
                return Err(FormatError::DecodedLenMismatch {
                    encoding: what,
                    expected: expected_len,
                    actual: got,
                });
            }
            Ok(Bytes::from(out))
        }
        Encoding::BytePlanes => planes::decode_frame(encoded, elem_size, None, expected_len, what),
        Encoding::XorBytePlanes => {
            let base = base.ok_or(FormatError::MissingBase { encoding: what })?;
            if base.len() != expected_len {
                return Err(FormatError::BaseLenMismatch {
                    data_len: expected_len,
                    base_len: base.len(),
                });
            }
            planes::decode_frame(encoded, elem_size, Some(base), expected_len, what)
        }
    }
}

/// Rejects a zero element size or a length it does not divide.
fn check_elems(len: usize, elem_size: usize) -> Result<(), FormatError> {
    if elem_size == 0 {
        return Err(FormatError::BadElemSize {
            what: "encode",
            elem_size,
            supported: "1 or more bytes",
        });
    }
    if !len.is_multiple_of(elem_size) {
        return Err(FormatError::LenNotMultiple { len, elem_size });
    }
    Ok(())
}

/// The candidates for an element size, raw first.
fn candidates(elem_size: usize, has_base: bool) -> Vec<Encoding> {
    let mut c = vec![Encoding::Raw, Encoding::Zstd];
    if matches!(elem_size, 2 | 4 | 8) {
        c.push(Encoding::BytePlanes);
    }
    if has_base && elem_size <= MAX_ELEM_SIZE {
        c.push(Encoding::XorBytePlanes);
    }
    c
}

/// Up to [`SAMPLE_SLICES`] element-aligned slices spread over `data` (and the
/// same slices of `base`), concatenated.
fn sample(data: &[u8], base: Option<&[u8]>, elem_size: usize) -> (Vec<u8>, Option<Vec<u8>>) {
    let n = data.len() / elem_size;
    let slice_elems = (SAMPLE_SLICE / elem_size).clamp(1, n.max(1));
    let step = (n - slice_elems.min(n)) / (SAMPLE_SLICES - 1);
    let mut s = Vec::with_capacity(SAMPLE_SLICES * slice_elems * elem_size);
    let mut sb = base.map(|_| Vec::with_capacity(s.capacity()));
    for i in 0..SAMPLE_SLICES {
        let start = i * step * elem_size;
        let range = start..start + slice_elems * elem_size;
        s.extend_from_slice(data.get(range.clone()).unwrap_or_default());
        if let (Some(sb), Some(b)) = (sb.as_mut(), base) {
            sb.extend_from_slice(b.get(range).unwrap_or_default());
        }
    }
    (s, sb)
}

/// Reusable zstd contexts.
struct Compressor {
    /// Whole-buffer zstd of 1-byte / odd-sized elements.
    fast: zstd::bulk::Compressor<'static>,
    /// Whole-buffer zstd of 2/4/8-byte elements.
    whole: zstd::bulk::Compressor<'static>,
    /// Planes.
    plane: zstd::bulk::Compressor<'static>,
}

impl Compressor {
    fn new() -> Result<Self, FormatError> {
        let err = |e: std::io::Error| FormatError::Zstd {
            op: "compress",
            reason: e.to_string(),
        };
        let mut plane = zstd::bulk::Compressor::new(FAST_LEVEL).map_err(err)?;
        plane
            .set_parameter(zstd::zstd_safe::CParameter::HashLog(PLANE_HASH_LOG))
            .map_err(err)?;
        Ok(Compressor {
            fast: zstd::bulk::Compressor::new(FAST_LEVEL).map_err(err)?,
            whole: zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(err)?,
            plane,
        })
    }

    /// Encodes with `enc`; also returns per-plane ratios for plane encodings.
    /// `estimate` runs whole-buffer zstd at the fast level (for sampling).
    fn encode(
        &mut self,
        enc: Encoding,
        data: &[u8],
        elem_size: usize,
        base: Option<&[u8]>,
        ratios: Option<&[f64]>,
        estimate: bool,
    ) -> Result<(Vec<u8>, Option<Vec<f64>>), FormatError> {
        match enc {
            Encoding::Raw => Ok((data.to_vec(), None)),
            Encoding::Zstd => {
                let cz = if matches!(elem_size, 2 | 4 | 8) && !estimate {
                    &mut self.whole
                } else {
                    &mut self.fast
                };
                let out = cz.compress(data).map_err(|e| FormatError::Zstd {
                    op: "compress",
                    reason: e.to_string(),
                })?;
                Ok((out, None))
            }
            Encoding::BytePlanes | Encoding::XorBytePlanes => {
                let base = base.filter(|_| enc == Encoding::XorBytePlanes);
                let (out, r) = planes::encode_frame(data, base, elem_size, ratios, &mut self.plane);
                Ok((out, Some(r)))
            }
        }
    }
}
