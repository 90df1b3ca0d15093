//! The byte-plane frame: elements split into planes by byte position (plane
//! `k` holds byte `k` of every little-endian element), each plane stored raw,
//! zstd-compressed, or as one repeated byte.
//!
//! Frame layout (all integers little-endian):
//!
//! ```text
//! magic "WLBP" | version u8 = 1 | elem_size u8 | flags u8 (bit 0: XOR with base) | 0 u8
//! element count u64
//! elem_size x { method u8 (0 raw, 1 zstd, 2 constant byte) | stored length u64 }
//! the stored planes, in order, with nothing after the last
//! ```
//!
//! Decoding needs only the frame, the element size and the expected length.

use std::io::Cursor;

use bytes::Bytes;

use crate::FormatError;

/// Frame magic.
pub(crate) const MAGIC: &[u8; 4] = b"WLBP";
/// Frame version written and accepted.
pub(crate) const VERSION: u8 = 1;
/// Largest element size a frame may declare.
pub const MAX_ELEM_SIZE: usize = 8;
/// Flag bit: the planes hold `data XOR base`.
const FLAG_XOR: u8 = 1;
/// Fixed header bytes before the plane table.
const FIXED_HEADER: usize = 16;
/// Bytes per plane-table entry.
const TABLE_ENTRY: usize = 9;
/// A plane is stored compressed only if that saves more than 1/50 (2%).
const MIN_SAVING_DIV: usize = 50;

/// How one plane is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Raw = 0,
    Zstd = 1,
    Const = 2,
}

/// Per-plane compressibility measured on a sample: stored / plane bytes.
pub(crate) type PlaneRatios = Vec<f64>;

/// Appends plane `k` of `data` (XORed with `base` when given) to `out`:
/// byte `k` of every `es`-byte little-endian element. `base`, when given, has
/// the length of `data`.
///
/// The plane is written straight into `out` (no plane-major copy of the whole
/// input, no zero-fill): the loops extend from exact-size iterators over
/// whole elements, which LLVM vectorizes.
pub(crate) fn extend_plane(
    out: &mut Vec<u8>,
    data: &[u8],
    base: Option<&[u8]>,
    es: usize,
    k: usize,
) {
    match (es, base) {
        (2, None) => extend_plane_of::<2>(out, data, k),
        (2, Some(b)) => extend_xor_plane_of::<2>(out, data, b, k),
        (4, None) => extend_plane_of::<4>(out, data, k),
        (4, Some(b)) => extend_xor_plane_of::<4>(out, data, b, k),
        (8, None) => extend_plane_of::<8>(out, data, k),
        (8, Some(b)) => extend_xor_plane_of::<8>(out, data, b, k),
        (_, None) => out.extend(data.iter().skip(k).step_by(es.max(1))),
        (_, Some(b)) => out.extend(
            data.iter()
                .zip(b)
                .map(|(d, b)| d ^ b)
                .skip(k)
                .step_by(es.max(1)),
        ),
    }
}

/// [`extend_plane`] for `ES`-byte elements without a base.
fn extend_plane_of<const ES: usize>(out: &mut Vec<u8>, data: &[u8], k: usize) {
    let (elems, _) = data.as_chunks::<ES>();
    let shift = 8 * k as u32;
    match ES {
        2 => out.extend(elems.iter().map(|e| (u16_of(e) >> shift) as u8)),
        4 => out.extend(elems.iter().map(|e| (u32_of(e) >> shift) as u8)),
        _ => out.extend(elems.iter().map(|e| (u64_of(e) >> shift) as u8)),
    }
}

/// [`extend_plane`] for `ES`-byte elements XORed with a base.
fn extend_xor_plane_of<const ES: usize>(out: &mut Vec<u8>, data: &[u8], base: &[u8], k: usize) {
    let (elems, _) = data.as_chunks::<ES>();
    let (bases, _) = base.as_chunks::<ES>();
    let shift = 8 * k as u32;
    let pairs = elems.iter().zip(bases);
    match ES {
        2 => out.extend(pairs.map(|(e, b)| ((u16_of(e) ^ u16_of(b)) >> shift) as u8)),
        4 => out.extend(pairs.map(|(e, b)| ((u32_of(e) ^ u32_of(b)) >> shift) as u8)),
        _ => out.extend(pairs.map(|(e, b)| ((u64_of(e) ^ u64_of(b)) >> shift) as u8)),
    }
}

/// The first two bytes of `e` as a little-endian u16 (zero-padded).
fn u16_of<const ES: usize>(e: &[u8; ES]) -> u16 {
    let mut b = [0u8; 2];
    let n = ES.min(2);
    b[..n].copy_from_slice(&e[..n]);
    u16::from_le_bytes(b)
}

/// The first four bytes of `e` as a little-endian u32 (zero-padded).
fn u32_of<const ES: usize>(e: &[u8; ES]) -> u32 {
    let mut b = [0u8; 4];
    let n = ES.min(4);
    b[..n].copy_from_slice(&e[..n]);
    u32::from_le_bytes(b)
}

/// The first eight bytes of `e` as a little-endian u64 (zero-padded).
fn u64_of<const ES: usize>(e: &[u8; ES]) -> u64 {
    let mut b = [0u8; 8];
    let n = ES.min(8);
    b[..n].copy_from_slice(&e[..n]);
    u64::from_le_bytes(b)
}

/// Elements interleaved per step of [`merge_bytes`]: the step's output fits in L1.
const MERGE_STEP: usize = 4096;

/// Inverse of the plane split: interleaves `planes` (one slice of `n` bytes
/// per byte position) into `n` elements, XORed with `base` (same length as
/// the output) when given.
///
/// 2- and 4-byte elements are collected as native-endian integers built from
/// their bytes in order, so the integers' memory is the output: written once,
/// straight into the buffer the result owns (no zero-fill, no copy).
fn merge(planes: &[&[u8]], n: usize, base: Option<&[u8]>) -> Bytes {
    let base = base.filter(|b| b.len() == n * planes.len());
    match (planes, base) {
        ([p0, p1], None) => {
            let elems = p0[..n].iter().zip(&p1[..n]);
            elems_bytes(elems.map(|(&a, &b)| u16::from_ne_bytes([a, b])).collect())
        }
        ([p0, p1], Some(base)) => {
            let (bases, _) = base.as_chunks::<2>();
            let elems = p0[..n].iter().zip(&p1[..n]).zip(bases);
            let v = elems.map(|((&a, &b), e)| u16::from_ne_bytes([a, b]) ^ u16::from_ne_bytes(*e));
            elems_bytes(v.collect())
        }
        ([p0, p1, p2, p3], None) => {
            let elems = p0[..n].iter().zip(&p1[..n]).zip(&p2[..n]).zip(&p3[..n]);
            let v = elems.map(|(((&a, &b), &c), &d)| u32::from_ne_bytes([a, b, c, d]));
            elems_bytes(v.collect())
        }
        ([p0, p1, p2, p3], Some(base)) => {
            let (bases, _) = base.as_chunks::<4>();
            let elems = p0[..n].iter().zip(&p1[..n]).zip(&p2[..n]).zip(&p3[..n]);
            let v = elems.zip(bases).map(|((((&a, &b), &c), &d), e)| {
                u32::from_ne_bytes([a, b, c, d]) ^ u32::from_ne_bytes(*e)
            });
            elems_bytes(v.collect())
        }
        _ => {
            let mut out = merge_bytes(planes, n);
            if let Some(base) = base {
                out.iter_mut().zip(base).for_each(|(o, b)| *o ^= b);
            }
            Bytes::from(out)
        }
    }
}

/// Integers whose memory is a run of bytes (see [`merge`]).
struct ElemBytes<T>(Vec<T>);

impl<T: bytemuck::Pod> AsRef<[u8]> for ElemBytes<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// The bytes of `elems`, without a copy.
fn elems_bytes<T: bytemuck::Pod + Send + Sync>(elems: Vec<T>) -> Bytes {
    Bytes::from_owner(ElemBytes(elems))
}

/// [`merge`] for any element size: each step interleaves into a small stack
/// buffer and appends it, so the output is written once (no zero-fill).
fn merge_bytes(planes: &[&[u8]], n: usize) -> Vec<u8> {
    let es = planes.len().max(1);
    let mut out = Vec::with_capacity(n * es);
    let mut step = [0u8; MERGE_STEP * MAX_ELEM_SIZE];
    let mut at = 0;
    while at < n {
        let m = MERGE_STEP.min(n - at);
        let buf = &mut step[..m * es];
        for (k, plane) in planes.iter().enumerate() {
            for (dst, &src) in buf.iter_mut().skip(k).step_by(es).zip(&plane[at..at + m]) {
                *dst = src;
            }
        }
        out.extend_from_slice(buf);
        at += m;
    }
    out
}

/// Encodes `data` (elements of `elem_size` bytes, XORed with `base` when
/// given) as a frame. With `ratios` from a sample, planes whose sample did not
/// shrink enough are stored raw without trying zstd. Returns the frame and
/// each plane's stored/raw ratio.
///
/// Planes that may compress are extracted and compressed first (one plane
/// buffer at a time); then the frame is assembled in order, raw planes
/// extracted straight into it. No plane-major copy of the whole input is made.
pub(crate) fn encode_frame(
    data: &[u8],
    base: Option<&[u8]>,
    elem_size: usize,
    ratios: Option<&[f64]>,
    cz: &mut zstd::bulk::Compressor<'_>,
) -> (Vec<u8>, PlaneRatios) {
    let es = elem_size.max(1);
    let n = data.len() / es;
    let base = base.filter(|b| b.len() == data.len());
    let xor = base.is_some();
    // Pass 1: planes stored other than raw (constant, or zstd that saves enough).
    let mut packed: Vec<Option<(Method, Vec<u8>)>> = Vec::with_capacity(es);
    let mut plane = Vec::new();
    for k in 0..es {
        let skip_zstd = ratios
            .and_then(|r| r.get(k))
            .is_some_and(|&r| r * MIN_SAVING_DIV as f64 >= (MIN_SAVING_DIV - 1) as f64);
        packed.push(if n == 0 {
            None
        } else if skip_zstd {
            // Constant planes are rare and stop the check at their first
            // differing byte, so checking costs next to nothing.
            let first = plane_byte(data, base, es, k, 0);
            let constant = (1..n).all(|i| plane_byte(data, base, es, k, i) == first);
            constant.then(|| (Method::Const, vec![first]))
        } else {
            plane.clear();
            plane.reserve_exact(n);
            extend_plane(&mut plane, data, base, es, k);
            match plane.first() {
                Some(&b0) if plane.iter().all(|&b| b == b0) => Some((Method::Const, vec![b0])),
                _ => {
                    let mut z = Vec::new();
                    try_zstd_into(&mut z, &plane, cz).then_some((Method::Zstd, z))
                }
            }
        });
    }
    drop(plane);

    // Pass 2: the frame, in plane order.
    let table_len = FIXED_HEADER + TABLE_ENTRY * es;
    let stored_total: usize = packed
        .iter()
        .map(|p| p.as_ref().map_or(n, |(_, b)| b.len()))
        .sum();
    let mut out = Vec::with_capacity(table_len + stored_total);
    push_fixed_header(&mut out, es, xor, n);
    out.resize(table_len, 0);
    let mut measured = Vec::with_capacity(es);
    for (k, p) in packed.into_iter().enumerate() {
        let start = out.len();
        let method = match p {
            Some((method, bytes)) => {
                out.extend_from_slice(&bytes);
                method
            }
            None => {
                if n > 0 {
                    extend_plane(&mut out, data, base, es, k);
                }
                Method::Raw
            }
        };
        let stored = out.len() - start;
        measured.push(if n == 0 {
            1.0
        } else {
            stored as f64 / n as f64
        });
        let entry = FIXED_HEADER + TABLE_ENTRY * k;
        if let Some(slot) = out.get_mut(entry..entry + TABLE_ENTRY) {
            slot[0] = method as u8;
            slot[1..].copy_from_slice(&(stored as u64).to_le_bytes());
        }
    }
    (out, measured)
}

/// The XOR frame of `n` elements of `es` bytes equal to their base: every
/// plane the constant 0 (raw and empty when `n` is 0, as [`encode_frame`]
/// writes it).
pub(crate) fn zero_xor_frame(n: usize, es: usize) -> Vec<u8> {
    let es = es.max(1);
    let table_len = FIXED_HEADER + TABLE_ENTRY * es;
    let mut out = Vec::with_capacity(table_len + es);
    push_fixed_header(&mut out, es, true, n);
    let (method, stored) = if n == 0 {
        (Method::Raw, 0u64)
    } else {
        (Method::Const, 1)
    };
    for _ in 0..es {
        out.push(method as u8);
        out.extend_from_slice(&stored.to_le_bytes());
    }
    if n > 0 {
        out.resize(table_len + es, 0);
    }
    out
}

/// Appends the frame's fixed header: magic, version, element size, flags,
/// element count.
fn push_fixed_header(out: &mut Vec<u8>, es: usize, xor: bool, n: usize) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, es as u8, if xor { FLAG_XOR } else { 0 }, 0]);
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

/// Byte `k` of element `i` of `data` (XORed with `base` when given).
fn plane_byte(data: &[u8], base: Option<&[u8]>, es: usize, k: usize, i: usize) -> u8 {
    let at = i * es + k;
    let d = data.get(at).copied().unwrap_or(0);
    d ^ base.and_then(|b| b.get(at)).copied().unwrap_or(0)
}

/// Appends zstd(plane) to `out` if it saves more than 2%; leaves `out`
/// unchanged and returns false otherwise (including if zstd fails).
fn try_zstd_into(out: &mut Vec<u8>, plane: &[u8], cz: &mut zstd::bulk::Compressor<'_>) -> bool {
    let start = out.len();
    let limit = plane.len() - plane.len() / MIN_SAVING_DIV;
    out.reserve_exact(limit);
    let mut cursor = Cursor::new(&mut *out);
    cursor.set_position(start as u64);
    match cz.compress_to_buffer(plane, &mut cursor) {
        Ok(written) if written < limit => true,
        _ => {
            out.truncate(start);
            false
        }
    }
}

/// Reads a little-endian u64 at `at`.
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Decodes a frame into the original elements (XORed back with `base`, of
/// `expected_len` bytes, for an XOR frame), checking every field against
/// `elem_size`, whether a base is given, and `expected_len`.
pub(crate) fn decode_frame(
    encoded: &[u8],
    elem_size: usize,
    base: Option<&[u8]>,
    expected_len: usize,
    what: &'static str,
) -> Result<Bytes, FormatError> {
    let xor = base.is_some();
    let bad = |reason: String| FormatError::CorruptFrame {
        encoding: what,
        reason,
    };
    if !(1..=MAX_ELEM_SIZE).contains(&elem_size) {
        return Err(FormatError::BadElemSize {
            what,
            elem_size,
            supported: "1 to 8 bytes",
        });
    }
    let table_len = FIXED_HEADER + TABLE_ENTRY * elem_size;
    let header = encoded.get(..table_len).ok_or_else(|| {
        bad(format!(
            "frame is {} bytes, shorter than its {table_len}-byte header",
            encoded.len()
        ))
    })?;
    if header.get(..4) != Some(MAGIC.as_slice()) {
        return Err(bad(format!(
            "magic must be \"WLBP\", found {:?}",
            header.get(..4)
        )));
    }
    let fixed = header.get(4..8).unwrap_or_default();
    let want_flags = if xor { FLAG_XOR } else { 0 };
    if fixed != [VERSION, elem_size as u8, want_flags, 0] {
        return Err(bad(format!(
            "version/elem_size/flags/reserved must be {:?}, found {fixed:?}",
            [VERSION, elem_size as u8, want_flags, 0]
        )));
    }
    let n_elems = u64_at(header, 8).unwrap_or_default();
    let n = n_elems
        .checked_mul(elem_size as u64)
        .filter(|&len| len == expected_len as u64)
        .map(|_| expected_len / elem_size)
        .ok_or_else(|| {
            bad(format!(
                "element count {n_elems} x element size {elem_size} must equal expected length {expected_len}"
            ))
        })?;

    // Raw planes are read in place; zstd and constant planes are expanded
    // into buffers of their own; then one pass interleaves them.
    let mut owned: Vec<Option<Vec<u8>>> = Vec::with_capacity(elem_size);
    let mut payloads: Vec<&[u8]> = Vec::with_capacity(elem_size);
    let mut pos = table_len;
    let mut dz = None;
    for k in 0..if n == 0 { 0 } else { elem_size } {
        let entry = FIXED_HEADER + TABLE_ENTRY * k;
        let method = header.get(entry).copied().unwrap_or(u8::MAX);
        let stored = u64_at(header, entry + 1).unwrap_or(u64::MAX);
        let payload = usize::try_from(stored)
            .ok()
            .and_then(|s| encoded.get(pos..pos.checked_add(s)?))
            .ok_or_else(|| {
                bad(format!(
                    "plane {k} claims {stored} bytes at offset {pos}, frame is {} bytes",
                    encoded.len()
                ))
            })?;
        pos += payload.len();
        payloads.push(payload);
        owned.push(match method {
            0 if payload.len() == n => None,
            2 if payload.len() == 1 => Some(vec![payload.first().copied().unwrap_or(0); n]),
            1 => {
                let d = match &mut dz {
                    Some(d) => d,
                    None => dz.insert(zstd::bulk::Decompressor::new().map_err(zstd_err)?),
                };
                // Decompressed into the spare capacity: no zero-fill first.
                let mut plane = Vec::with_capacity(n);
                let got = d
                    .decompress_to_buffer(payload, &mut plane)
                    .map_err(zstd_err)?;
                if got != n {
                    return Err(bad(format!(
                        "plane {k} decompressed to {got} bytes, expected {n}"
                    )));
                }
                Some(plane)
            }
            0 | 2 => {
                return Err(bad(format!(
                    "plane {k} method {method} stores {} bytes, plane is {n} bytes",
                    payload.len()
                )));
            }
            _ => return Err(bad(format!("plane {k} has unknown method {method}"))),
        });
    }
    if n == 0 {
        // No plane payloads to read, but the table must still describe empty planes.
        for k in 0..elem_size {
            let entry = FIXED_HEADER + TABLE_ENTRY * k;
            let method = header.get(entry).copied().unwrap_or(u8::MAX);
            let stored = u64_at(header, entry + 1).unwrap_or(u64::MAX);
            if (method, stored) != (Method::Raw as u8, 0) {
                return Err(bad(format!(
                    "plane {k} of an empty tensor must be raw with 0 bytes, found method {method} with {stored} bytes"
                )));
            }
        }
    }
    if pos != encoded.len() {
        return Err(bad(format!(
            "{} trailing bytes after the last plane",
            encoded.len().saturating_sub(pos)
        )));
    }
    let planes: Vec<&[u8]> = owned
        .iter()
        .zip(&payloads)
        .map(|(o, p)| o.as_deref().unwrap_or(p))
        .collect();
    if n == 0 {
        return Ok(Bytes::new());
    }
    Ok(merge(&planes, n, base))
}

/// Maps a zstd decompression error.
pub(crate) fn zstd_err(e: std::io::Error) -> FormatError {
    FormatError::Zstd {
        op: "decompress",
        reason: e.to_string(),
    }
}
