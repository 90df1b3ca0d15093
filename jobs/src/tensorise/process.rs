//! Tensorising one file: detect its format, parse its header as hostile input,
//! walk its tensors in offset order (hash, statistics, change against the base,
//! encode new contents), and record what rebuilds it bit for bit.
//!
//! A file that fails to parse is quarantined: recorded with the error and kept
//! whole as a pass-through blob, so the model still rebuilds.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use sha2::Digest;
use tracing::warn;
use weightlake_formats::stats::{FloatKind, StatsAccumulator, TensorStats, rel_l2_from_sums};
use weightlake_formats::{Encoding, FormatError, gguf, safetensors};

use super::first_pass::FirstPass;
use super::reader::BronzeReader;
use super::rows::{SilverFileRow, TensorRow};
use super::spill::{Spill, take_spilled};
use crate::blobs::{BlobPart, content_len, read_range};
use crate::sql::LakeSession;
use crate::{JobError, Result};

/// A tensor as the parsers describe it, in one shape for both formats.
#[derive(Debug, Clone)]
pub(crate) struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub byte_len: u64,
    /// Element size the encoder works with (1 for quantized blocks).
    pub elem_size: usize,
    pub float: Option<FloatKind>,
}

/// A tensor of the base model, for XOR encoding and change statistics.
#[derive(Debug, Clone)]
pub(crate) struct BaseTensor {
    pub dtype: String,
    pub shape: Vec<i64>,
    pub sha256: String,
}

/// Where new blob parts go, and which contents already exist.
pub(crate) trait PartSink {
    fn has(&self, sha: &str) -> bool;
    fn mark(&mut self, sha: &str);
    fn put(&mut self, part: BlobPart) -> impl Future<Output = Result<()>> + Send;
}

/// Counters of one file.
#[derive(Debug, Default, Clone)]
pub(crate) struct FileTally {
    pub tensors: usize,
    pub dedup_hits: usize,
    pub bytes_stored: u64,
}

pub(crate) struct FileResult {
    pub row: SilverFileRow,
    pub tensors: Vec<TensorRow>,
    pub tally: FileTally,
}

const PICKLE_EXT: &[&str] = &[".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"];

/// Bytes of a file's start that [`looks_pickled`] reads.
const PICKLE_HEAD: u64 = 512;

/// Whether loading the file would unpickle: a pickle extension (unless it
/// is empty), pickle protocol 2-5 magic, a zip whose first entry is a
/// pickle (PyTorch's `archive/data.pkl`, whatever the file is called), or a
/// `.npy` of Python objects (`np.load` unpickles those).
fn looks_pickled(path: &str, head: &[u8]) -> bool {
    let lower = path.to_ascii_lowercase();
    let zip_entry = head
        .starts_with(b"PK\x03\x04")
        .then(|| {
            let n = usize::from(u16::from_le_bytes([*head.get(26)?, *head.get(27)?]));
            head.get(30..30 + n)
        })
        .flatten();
    let npy_objects =
        head.starts_with(b"\x93NUMPY") && head.windows(4).any(|w| w == b"'|O'" || w == b"\"|O\"");
    (!head.is_empty() && PICKLE_EXT.iter().any(|e| lower.ends_with(e)))
        || (head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]))
        || zip_entry.is_some_and(|name| name.ends_with(b".pkl"))
        || (head.starts_with(b"PK\x03\x04") && (lower.ends_with(".bin") || lower.ends_with(".pt")))
        || npy_objects
}

pub(crate) struct Processor<'a, S: PartSink> {
    pub session: &'a LakeSession,
    pub sink: &'a mut S,
    pub base: Option<&'a HashMap<String, BaseTensor>>,
    pub part_bytes: u64,
    /// Where spill files go (`None`: the system's temporary directory).
    pub scratch_dir: Option<&'a Path>,
}

fn format_err(path: &str, e: FormatError) -> String {
    format!("{path}: {e}")
}

impl<S: PartSink> Processor<'_, S> {
    pub async fn file(&mut self, reader: &mut BronzeReader) -> Result<FileResult> {
        let f = reader.file().clone();
        let head = reader.read(0, f.file_size.min(16)).await?;
        let lower = f.file_path.to_ascii_lowercase();
        let parsed = if lower.ends_with(".safetensors") {
            Some(
                self.parse_safetensors(reader)
                    .await
                    .map(|(specs, start, meta)| ("safetensors", specs, start, meta)),
            )
        } else if head.starts_with(b"GGUF") || lower.ends_with(".gguf") {
            // By its magic, or by its name: a damaged `.gguf` is quarantined
            // (the parser names the bad magic), not passed through as if it
            // were any other file.
            Some(
                self.parse_gguf(reader)
                    .await
                    .map(|(specs, start, meta)| ("gguf", specs, start, meta)),
            )
        } else {
            None
        };
        match parsed {
            Some(Ok((format, specs, data_start, metadata))) => {
                match self.tensors(reader, &specs, data_start).await {
                    Ok((tensors, suffix, tally)) => {
                        let header = reader.read(0, data_start).await?;
                        Ok(FileResult {
                            row: SilverFileRow {
                                format,
                                tensor_count: tensors.len() as i32,
                                unsafe_pickle: false,
                                error: None,
                                base_model: None,
                                metadata,
                                header,
                                suffix,
                            },
                            tensors,
                            tally,
                        })
                    }
                    Err(JobError::Invalid(e)) => self.quarantine(reader, e).await,
                    Err(e) => Err(e),
                }
            }
            Some(Err(JobError::Invalid(e))) => self.quarantine(reader, e).await,
            Some(Err(e)) => Err(e),
            None => self.whole_file(reader, "passthrough", None).await,
        }
    }

    async fn quarantine(&mut self, reader: &mut BronzeReader, error: String) -> Result<FileResult> {
        warn!(file = %reader.file().file_path, %error, "quarantined");
        self.whole_file(reader, "quarantined", Some(error)).await
    }

    /// A file kept as one content: pass-through files, and quarantined ones.
    async fn whole_file(
        &mut self,
        reader: &mut BronzeReader,
        format: &'static str,
        error: Option<String>,
    ) -> Result<FileResult> {
        let head = reader
            .read(0, reader.file().file_size.min(PICKLE_HEAD))
            .await?;
        let tally = self.passthrough(reader).await?;
        Ok(FileResult {
            row: SilverFileRow {
                format,
                tensor_count: 0,
                unsafe_pickle: looks_pickled(&reader.file().file_path, &head),
                error,
                base_model: None,
                metadata: None,
                header: Vec::new(),
                suffix: Vec::new(),
            },
            tensors: Vec::new(),
            tally,
        })
    }

    async fn parse_safetensors(
        &mut self,
        reader: &mut BronzeReader,
    ) -> Result<(Vec<TensorSpec>, u64, Option<String>)> {
        let f = reader.file().clone();
        let first8 = reader.read(0, f.file_size.min(8)).await?;
        let hlen = safetensors::header_len(&first8)
            .map_err(|e| JobError::Invalid(format_err(&f.file_path, e)))?;
        if hlen.saturating_add(8) > f.file_size {
            return Err(JobError::Invalid(format!(
                "{}: header length {hlen} exceeds the file ({} bytes)",
                f.file_path, f.file_size
            )));
        }
        let prefix = reader.read(0, 8 + hlen).await?;
        let h = safetensors::parse_header(&prefix, f.file_size)
            .map_err(|e| JobError::Invalid(format_err(&f.file_path, e)))?;
        let specs = h
            .tensors
            .iter()
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dtype: t.dtype.name().to_string(),
                shape: t.shape.clone(),
                offset: t.data_offset,
                byte_len: t.byte_len,
                elem_size: if t.dtype.is_float() {
                    t.dtype.size_bytes().unwrap_or(1).max(1)
                } else {
                    1
                },
                float: FloatKind::from_dtype(t.dtype.name()),
            })
            .collect();
        let meta = h
            .metadata
            .as_ref()
            .and_then(|m| serde_json::to_string(m).ok());
        Ok((specs, h.data_start(), meta))
    }

    async fn parse_gguf(
        &mut self,
        reader: &mut BronzeReader,
    ) -> Result<(Vec<TensorSpec>, u64, Option<String>)> {
        let f = reader.file().clone();
        let mut want = f.file_size.min(1 << 16);
        let h = loop {
            let prefix = reader.read(0, want).await?;
            match gguf::parse(&prefix, f.file_size) {
                Ok(h) => break h,
                // Grow geometrically: each retry parses from the start.
                Err(FormatError::NeedMore { needed }) if needed > want && needed <= f.file_size => {
                    want = needed.max(want.saturating_mul(2)).min(f.file_size)
                }
                Err(e) => return Err(JobError::Invalid(format_err(&f.file_path, e))),
            }
        };
        let mut specs: Vec<TensorSpec> = h
            .tensors
            .iter()
            .map(|t| {
                let name = t.ggml_type.name();
                let float = FloatKind::from_dtype(name);
                TensorSpec {
                    name: t.name.clone(),
                    dtype: name.to_string(),
                    shape: t.dims.clone(),
                    offset: t.offset,
                    byte_len: t.byte_len,
                    elem_size: float.map_or(1, |k| k.size()),
                    float,
                }
            })
            .collect();
        specs.sort_by_key(|s| s.offset);
        let meta = h.architecture().map(|a| {
            format!(
                "{{\"general.architecture\":{}}}",
                serde_json::Value::from(a)
            )
        });
        Ok((specs, h.data_offset, meta))
    }

    async fn tensors(
        &mut self,
        reader: &mut BronzeReader,
        specs: &[TensorSpec],
        data_start: u64,
    ) -> Result<(Vec<TensorRow>, Vec<u8>, FileTally)> {
        let size = reader.file().file_size;
        let mut pos = data_start;
        let mut rows = Vec::with_capacity(specs.len());
        let mut tally = FileTally::default();
        for (i, t) in specs.iter().enumerate() {
            if t.offset < pos {
                return Err(JobError::Invalid(format!(
                    "{}: tensor `{}` overlaps the previous one",
                    reader.file().file_path,
                    t.name
                )));
            }
            let pad = reader.read(pos, t.offset - pos).await?;
            let mut row = self.tensor(reader, t, &mut tally).await?;
            row.tensor_index = i as i32;
            row.pad_before = pad;
            rows.push(row);
            pos = t.offset + t.byte_len;
        }
        let suffix = reader.read(pos, size - pos).await?;
        tally.tensors = rows.len();
        Ok((rows, suffix, tally))
    }

    /// The sha256 of the base tensor to compare `t` with and encode it against:
    /// same name, dtype, shape and byte length (any dtype: an integer tensor
    /// is compared and XOR-encoded too, only its relative L2 change is not
    /// defined).
    async fn base_for(&self, t: &TensorSpec) -> Result<Option<String>> {
        let Some(base) = self.base.and_then(|m| m.get(&t.name)) else {
            return Ok(None);
        };
        let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
        if base.dtype != t.dtype || base.shape != shape {
            return Ok(None);
        }
        if content_len(self.session, &base.sha256).await? != t.byte_len {
            return Ok(None);
        }
        Ok(Some(base.sha256.clone()))
    }

    /// Hash, describe and (if new) store one tensor.
    ///
    /// Pass 1 reads the tensor part by part: sha256, statistics, and the change
    /// against the base, whose same range is decoded alongside (and hashed, to
    /// check the base decodes to its own sha256). Pass 2 encodes the parts of a
    /// content not stored yet. Memory stays at a few parts whatever the size of
    /// the tensor or its base: a one-part tensor keeps its bytes (and its base
    /// range) between the passes; a bigger one is spilled to a temporary file
    /// (see `spill`), or read again where no spill file could be written.
    async fn tensor(
        &mut self,
        reader: &mut BronzeReader,
        t: &TensorSpec,
        tally: &mut FileTally,
    ) -> Result<TensorRow> {
        let base_sha = self.base_for(t).await?;
        let parts = part_ranges(t.byte_len, self.part_bytes);
        let multi = parts.len() > 1;
        let spill = |wanted: bool| wanted.then(|| Spill::create(self.scratch_dir)).flatten();
        let mut pass = FirstPass::new(
            t.float,
            base_sha.is_some(),
            spill(multi),
            spill(multi && base_sha.is_some()),
        );
        // Where the spill starts (parts before it equal the base's).
        let mut spill_from = if base_sha.is_some() { None } else { Some(0) };
        let (mut kept, mut kept_base) = (None, None);
        for (start, len) in &parts {
            let data = reader.read(t.offset + start, *len).await?;
            let base_part = match &base_sha {
                Some(b) => Some(read_range(self.session, b, *start..start + len).await?),
                None => None,
            };
            let was_same = pass.same;
            let (p, data, base_part) = tokio::task::spawn_blocking(move || {
                let mut p = pass;
                p.part(&data, base_part.as_deref());
                (p, data, base_part)
            })
            .await
            .map_err(|e| JobError::Invalid(format!("hashing task failed: {e}")))?;
            pass = p;
            if was_same && !pass.same {
                spill_from = Some(*start);
            }
            if !multi {
                (kept, kept_base) = (Some(data), base_part);
            }
        }
        if let (Some(bsha), Some(bh)) = (&base_sha, pass.base_hasher) {
            let got = hex::encode(bh.finalize());
            if got != *bsha {
                return Err(JobError::Invalid(format!(
                    "base content {bsha} decodes to sha256 {got}"
                )));
            }
        }
        if multi {
            // Pass 2 reads the spill; the bronze chunk kept from pass 1 is not needed.
            reader.release();
        }
        let sha = hex::encode(pass.hasher.finalize());
        let stats: Option<TensorStats> = pass.stats.map(StatsAccumulator::finish);
        let (rel, identical) = match &base_sha {
            Some(bsha) => (
                t.float
                    .map(|_| rel_l2_from_sums(pass.diff_sq, pass.base_sq)),
                Some(*bsha == sha),
            ),
            None => (None, None),
        };
        let (mut spill, mut base_spill) = (pass.spill, pass.base_spill);
        if self.sink.has(&sha) {
            tally.dedup_hits += 1;
        } else {
            self.sink.mark(&sha);
            // Pass 2: encode new content part by part.
            let count = parts.len() as i32;
            for (i, (start, len)) in parts.iter().enumerate() {
                let elem = t.elem_size;
                let at = PartAt {
                    index: i,
                    count,
                    start: *start,
                    len: *len,
                    elem,
                };
                // Before the first difference the part equals the base's: its
                // XOR frame is all zero planes, written without reading either.
                let equal_to_base =
                    kept.is_none() && base_sha.is_some() && spill_from.is_none_or(|f| *start < f);
                if equal_to_base
                    && let Some(frame) =
                        weightlake_formats::codec::encode_equal_to_base(*len as usize, elem)
                            .ok()
                            .filter(|f| (f.len() as u64) < *len)
                {
                    tally.bytes_stored += frame.len() as u64;
                    let part = at.blob(&sha, Encoding::XorBytePlanes, &base_sha, frame);
                    self.sink.put(part).await?;
                    continue;
                }
                let (data, base_part) = match (kept.take(), &base_sha) {
                    (Some(d), _) => (Bytes::from(d), kept_base.take()),
                    (None, Some(bsha)) if equal_to_base => {
                        let b = read_range(self.session, bsha, *start..start + len).await?;
                        (b.clone(), Some(b))
                    }
                    (None, base) => {
                        let at = *start - spill_from.unwrap_or(0);
                        let data = match take_spilled(&mut spill, at, *len).await? {
                            Some(d) => Bytes::from(d),
                            None => Bytes::from(reader.read(t.offset + start, *len).await?),
                        };
                        let base_part = match base {
                            None => None,
                            Some(bsha) => {
                                Some(match take_spilled(&mut base_spill, at, *len).await? {
                                    Some(b) => Bytes::from(b),
                                    None => {
                                        read_range(self.session, bsha, *start..start + len).await?
                                    }
                                })
                            }
                        };
                        (data, base_part)
                    }
                };
                let (enc, bytes) = tokio::task::spawn_blocking(move || {
                    weightlake_formats::encode(&data, elem, base_part.as_deref())
                })
                .await
                .map_err(|e| JobError::Invalid(format!("encoding task failed: {e}")))?
                .map_err(|e| {
                    JobError::Invalid(format!(
                        "{}: tensor `{}`: {e}",
                        reader.file().file_path,
                        t.name
                    ))
                })?;
                tally.bytes_stored += bytes.len() as u64;
                self.sink.put(at.blob(&sha, enc, &base_sha, bytes)).await?;
            }
        }
        Ok(TensorRow {
            tensor_index: 0,
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.iter().map(|d| *d as i64).collect(),
            byte_len: t.byte_len as i64,
            file_offset: t.offset as i64,
            content_sha256: sha,
            stats,
            base_sha256: base_sha,
            rel_l2_change: rel,
            identical_to_base: identical,
            pad_before: Vec::new(),
        })
    }

    /// Store a whole file as one content (its sha256 is the file's).
    async fn passthrough(&mut self, reader: &mut BronzeReader) -> Result<FileTally> {
        let f = reader.file().clone();
        let mut tally = FileTally::default();
        if self.sink.has(&f.file_sha256) {
            tally.dedup_hits = 1;
            return Ok(tally);
        }
        self.sink.mark(&f.file_sha256);
        let parts = part_ranges(f.file_size, self.part_bytes);
        let count = parts.len() as i32;
        for (i, (start, len)) in parts.iter().enumerate() {
            let data = reader.read(*start, *len).await?;
            let (enc, bytes) =
                tokio::task::spawn_blocking(move || weightlake_formats::encode(&data, 1, None))
                    .await
                    .map_err(|e| JobError::Invalid(format!("encoding task failed: {e}")))?
                    .map_err(|e| JobError::Invalid(format!("{}: {e}", f.file_path)))?;
            tally.bytes_stored += bytes.len() as u64;
            self.sink
                .put(BlobPart {
                    content_sha256: f.file_sha256.clone(),
                    part_index: i as i32,
                    part_count: count,
                    raw_offset: *start as i64,
                    raw_len: *len as i64,
                    elem_size: 1,
                    encoding: enc,
                    base_sha256: None,
                    data: bytes,
                })
                .await?;
        }
        Ok(tally)
    }
}

/// Where one part of a content sits, for its `silver.tensor_blobs` row.
struct PartAt {
    index: usize,
    count: i32,
    start: u64,
    len: u64,
    elem: usize,
}

impl PartAt {
    /// The part's row: `bytes` encoded as `enc` (against `base_sha` when XOR).
    fn blob(
        &self,
        sha: &str,
        enc: Encoding,
        base_sha: &Option<String>,
        bytes: Vec<u8>,
    ) -> BlobPart {
        BlobPart {
            content_sha256: sha.to_string(),
            part_index: self.index as i32,
            part_count: self.count,
            raw_offset: self.start as i64,
            raw_len: self.len as i64,
            elem_size: self.elem as i32,
            base_sha256: base_sha.clone().filter(|_| enc.needs_base()),
            encoding: enc,
            data: bytes,
        }
    }
}

/// (offset, len) of each part of `len` bytes; one empty part for empty content.
pub(crate) fn part_ranges(len: u64, part: u64) -> Vec<(u64, u64)> {
    if len == 0 {
        return vec![(0, 0)];
    }
    let part = part.max(1);
    (0..len.div_ceil(part))
        .map(|i| (i * part, part.min(len - i * part)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_content() {
        assert_eq!(part_ranges(10, 4), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(part_ranges(0, 4), vec![(0, 0)]);
        assert!(looks_pickled("pytorch_model.bin", b"PK"));
        assert!(looks_pickled("x", &[0x80, 0x04]));
        assert!(!looks_pickled("model.safetensors", b"{}"));
    }

    #[test]
    fn pickles_are_known_by_name_magic_zip_entry_or_npy_objects() {
        let mut zip = b"PK\x03\x04".to_vec();
        zip.resize(26, 0);
        zip.extend_from_slice(&16u16.to_le_bytes());
        zip.extend_from_slice(&[0, 0]);
        zip.extend_from_slice(b"archive/data.pkl");
        assert!(looks_pickled("renamed.dat", &zip));
        assert!(looks_pickled("x.dat", &[0x80, 4, 0x95]));
        assert!(looks_pickled("model.bin", b"anything"));
        assert!(!looks_pickled("empty.bin", b""));
        let npy = b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }";
        assert!(looks_pickled("a.npy", npy));
        let floats =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        assert!(!looks_pickled("a.npy", floats));
        assert!(!looks_pickled("config.json", b"{}"));
    }
}
