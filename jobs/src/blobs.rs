//! Content-addressed tensor bytes in `silver.tensor_blobs`: which contents are
//! stored, and reading one back (decoding parts, resolving XOR bases, checking
//! the sha256).

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::array::{
    ArrayRef, BinaryArray, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringArray,
};
use deltalake::arrow::buffer::{Buffer, OffsetBuffer};
use futures::future::BoxFuture;
use weightlake_formats::Encoding;
use weightlake_schemas::silver;

use crate::locate::{Key, RowAt, lookup};
use crate::sql::{LakeSession, binary_value, int_value, string_value};
use crate::{JobError, Result};

/// One stored part of a content.
#[derive(Debug, Clone)]
pub(crate) struct BlobPart {
    pub content_sha256: String,
    pub part_index: i32,
    pub part_count: i32,
    pub raw_offset: i64,
    pub raw_len: i64,
    pub elem_size: i32,
    pub encoding: Encoding,
    pub base_sha256: Option<String>,
    pub data: Vec<u8>,
}

/// Contents whose every part is committed.
pub(crate) async fn complete_contents(session: &LakeSession) -> Result<HashSet<String>> {
    if !session.has_table(silver::TENSOR_BLOBS) {
        return Ok(HashSet::new());
    }
    let batches = session
        .query(
            "SELECT content_sha256 FROM silver.tensor_blobs GROUP BY content_sha256, part_count \
             HAVING COUNT(DISTINCT part_index) = MAX(part_count)",
        )
        .await?;
    let mut set = HashSet::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            if let Some(s) = string_value(b.column(0).as_ref(), r) {
                set.insert(s.to_string());
            }
        }
    }
    Ok(set)
}

/// The `silver.tensor_blobs` row of one part; its bytes move into the Arrow
/// array without a copy.
pub(crate) fn blob_row(mut part: BlobPart, run_id: &str) -> Result<RecordBatch> {
    let bytes = std::mem::take(&mut part.data);
    let offsets = OffsetBuffer::<i32>::from_lengths([bytes.len()]);
    let data = BinaryArray::try_new(offsets, Buffer::from_vec(bytes), None)?;
    blob_batch(std::slice::from_ref(&part), data, run_id)
}

/// The `silver.tensor_blobs` rows of many parts in one batch, their bytes
/// copied once into one buffer: for small parts, where a batch of one row
/// (a dozen Arrow arrays, each its own allocations) would cost more memory
/// than the bytes it holds. A file of 300 000 tiny tensors queued 2.5 GB of
/// one-row batches.
pub(crate) fn blob_rows(parts: &[BlobPart], run_id: &str) -> Result<RecordBatch> {
    let bytes: usize = parts.iter().map(|p| p.data.len()).sum();
    let mut data = BinaryBuilder::with_capacity(parts.len(), bytes);
    for p in parts {
        data.append_value(&p.data);
    }
    blob_batch(parts, data.finish(), run_id)
}

/// The rows of `parts` (their place, encoding and base), with `data` (their
/// stored bytes, in the same order) as the blob column.
fn blob_batch(parts: &[BlobPart], data: BinaryArray, run_id: &str) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&BlobPart) -> Option<&str>| -> ArrayRef {
        Arc::new(parts.iter().map(f).collect::<StringArray>())
    };
    let stored: Int64Array = data.offsets().lengths().map(|n| n as i64).collect();
    let cols: Vec<ArrayRef> = vec![
        strings(&|p| Some(p.content_sha256.as_str())),
        Arc::new(parts.iter().map(|p| p.part_index).collect::<Int32Array>()),
        Arc::new(parts.iter().map(|p| p.part_count).collect::<Int32Array>()),
        Arc::new(parts.iter().map(|p| p.raw_offset).collect::<Int64Array>()),
        Arc::new(parts.iter().map(|p| p.raw_len).collect::<Int64Array>()),
        Arc::new(parts.iter().map(|p| p.elem_size).collect::<Int32Array>()),
        strings(&|p| Some(p.encoding.as_str())),
        strings(&|p| p.base_sha256.as_deref()),
        Arc::new(stored),
        Arc::new(StringArray::from(vec![run_id; parts.len()])),
        Arc::new(data),
    ];
    Ok(RecordBatch::try_new(silver::tensor_blobs_schema(), cols)?)
}

/// Where one stored part of a content sits, without its bytes.
#[derive(Debug, Clone)]
pub(crate) struct PartMeta {
    part_index: i32,
    part_count: i32,
    raw_offset: u64,
    raw_len: u64,
    /// Its row, when found through the session's locator: its bytes are
    /// then read without another key lookup.
    at: Option<RowAt>,
}

/// Columns of a part's row that say where it sits in its content.
const PLACE_COLUMNS: [&str; 4] = ["part_index", "part_count", "raw_offset", "raw_len"];
/// Columns of a part's row needed to decode it.
const DATA_COLUMNS: [&str; 4] = ["elem_size", "encoding", "base_sha256", "data"];

/// The parts of `sha` in order, checked to cover the content without gaps;
/// looked up once per session. With `want_data`, a content stored in one
/// part found through the locator comes with its row's data columns, read in
/// the same call (one round trip instead of two for most tensors).
async fn content_parts(
    session: &LakeSession,
    sha: &str,
    want_data: bool,
) -> Result<(Arc<[PartMeta]>, Option<RecordBatch>)> {
    if let Some(parts) = session.part_list(sha) {
        return Ok((parts, None));
    }
    let (parts, data) = lookup_parts(session, sha, want_data).await?;
    let parts: Arc<[PartMeta]> = parts.into();
    session.remember_part_list(sha, parts.clone());
    Ok((parts, data))
}

/// [`content_parts`] read from `silver.tensor_blobs`.
async fn lookup_parts(
    session: &LakeSession,
    sha: &str,
    want_data: bool,
) -> Result<(Vec<PartMeta>, Option<RecordBatch>)> {
    let keys = [("content_sha256", Key::Str(sha))];
    let (batches, hits, with_data) = match session.locator(silver::TENSOR_BLOBS) {
        Some(locator) => {
            let hits = locator.hits(&keys).await?;
            let with_data = want_data && hits.len() == 1;
            let columns: Vec<&str> = if with_data {
                PLACE_COLUMNS.iter().chain(&DATA_COLUMNS).copied().collect()
            } else {
                PLACE_COLUMNS.to_vec()
            };
            let batches = locator.read_hits(&hits, &keys, &columns).await?;
            (batches, Some(hits), with_data)
        }
        None => (
            lookup(session, silver::TENSOR_BLOBS, &keys, &PLACE_COLUMNS).await?,
            None,
            false,
        ),
    };
    // One entry per part (a part written twice by an interrupted run is identical).
    let mut parts: BTreeMap<i32, PartMeta> = BTreeMap::new();
    let mut row = 0;
    for b in &batches {
        for r in 0..b.num_rows() {
            let i = |c: &str| {
                b.column_by_name(c)
                    .and_then(|a| int_value(a.as_ref(), r))
                    .unwrap_or(-1)
            };
            let part_index = i(PLACE_COLUMNS[0]) as i32;
            parts.entry(part_index).or_insert(PartMeta {
                part_index,
                part_count: i(PLACE_COLUMNS[1]) as i32,
                raw_offset: i(PLACE_COLUMNS[2]).max(0) as u64,
                raw_len: i(PLACE_COLUMNS[3]).max(0) as u64,
                // `read_hits` gives one row per hit, in order.
                at: hits.as_ref().and_then(|h| h.get(row)).copied(),
            });
            row += 1;
        }
    }
    let count = parts.values().next().map(|p| p.part_count).unwrap_or(0);
    if parts.is_empty() || parts.len() != count as usize {
        return Err(JobError::Corrupt(format!(
            "blob {sha}: {} of {count} parts stored",
            parts.len()
        )));
    }
    let mut end = 0;
    for p in parts.values() {
        if p.raw_offset != end {
            return Err(JobError::Corrupt(format!(
                "blob {sha}: part {} at {}, expected {end}",
                p.part_index, p.raw_offset
            )));
        }
        end += p.raw_len;
    }
    let data = if with_data {
        batches.into_iter().find(|b| b.num_rows() > 0)
    } else {
        None
    };
    Ok((parts.into_values().collect(), data))
}

/// The row of one part with its [`DATA_COLUMNS`]: `read` when its lookup
/// already brought them, else by its locator row, else by key.
async fn part_row(
    session: &LakeSession,
    sha: &str,
    part: &PartMeta,
    read: Option<RecordBatch>,
) -> Result<RecordBatch> {
    if let Some(b) = read {
        return Ok(b);
    }
    let keys = [
        ("content_sha256", Key::Str(sha)),
        ("part_index", Key::Int(i64::from(part.part_index))),
    ];
    let batches = match (part.at, session.locator(silver::TENSOR_BLOBS)) {
        (Some(at), Some(locator)) => locator.read_hits(&[at], &keys, &DATA_COLUMNS).await?,
        _ => lookup(session, silver::TENSOR_BLOBS, &keys, &DATA_COLUMNS).await?,
    };
    batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| JobError::Corrupt(format!("blob {sha}: part {} vanished", part.part_index)))
}

/// Decode one part: fetch its bytes (unless `read` holds them), and for an
/// XOR part the same range of its base.
fn decode_part<'a>(
    session: &'a LakeSession,
    sha: &'a str,
    part: &'a PartMeta,
    read: Option<RecordBatch>,
    depth: usize,
) -> BoxFuture<'a, Result<Bytes>> {
    Box::pin(async move {
        if depth > 8 {
            return Err(JobError::Corrupt(format!(
                "blob {sha}: XOR base chain deeper than 8"
            )));
        }
        let b = part_row(session, sha, part, read).await?;
        let (r, column) = (0, |name: &str| b.column_by_name(name).map(|c| c.as_ref()));
        let enc = column(DATA_COLUMNS[1])
            .and_then(|c| string_value(c, r))
            .unwrap_or_default();
        let encoding: Encoding = enc
            .parse()
            .map_err(|_| JobError::Corrupt(format!("blob {sha}: unknown encoding `{enc}`")))?;
        let elem_size = column(DATA_COLUMNS[0])
            .and_then(|c| int_value(c, r))
            .unwrap_or(1)
            .max(1) as usize;
        let data = column(DATA_COLUMNS[3])
            .and_then(|c| binary_value(c, r))
            .unwrap_or_default();
        let base = if encoding.needs_base() {
            let bsha = column(DATA_COLUMNS[2])
                .and_then(|c| string_value(c, r))
                .ok_or_else(|| JobError::Corrupt(format!("blob {sha}: XOR part without base")))?;
            let range = part.raw_offset..part.raw_offset + part.raw_len;
            Some(read_range_at_depth(session, bsha, range, depth + 1).await?)
        } else {
            None
        };
        weightlake_formats::decode(
            encoding,
            data,
            elem_size,
            base.as_deref(),
            part.raw_len as usize,
        )
        .map_err(|e| JobError::Corrupt(format!("blob {sha} part {}: {e}", part.part_index)))
    })
}

/// Bytes `range` of content `sha`, decoded part by part (no copy when the
/// range lies in one part).
fn read_range_at_depth<'a>(
    session: &'a LakeSession,
    sha: &'a str,
    range: Range<u64>,
    depth: usize,
) -> BoxFuture<'a, Result<Bytes>> {
    Box::pin(async move {
        let len = (range.end - range.start) as usize;
        let mut parts = ContentParts::open(session, sha, range).await?;
        let Some(first) = parts.next_at_depth(depth).await? else {
            return Ok(Bytes::new());
        };
        if first.len() == len {
            return Ok(first);
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&first);
        while let Some(bytes) = parts.next_at_depth(depth).await? {
            out.extend_from_slice(&bytes);
        }
        Ok(Bytes::from(out))
    })
}

/// Reads a range of one content part by part, so memory stays at one part
/// (at most `silver::MAX_PART_BYTES`, twice that for an XOR part).
pub(crate) struct ContentParts<'a> {
    session: &'a LakeSession,
    sha: String,
    parts: std::vec::IntoIter<PartMeta>,
    range: Range<u64>,
    /// The row of a one-part content, read with its part list.
    read: Option<RecordBatch>,
}

impl<'a> ContentParts<'a> {
    /// The parts of `sha` that overlap `range` (clamped to the content's length).
    pub async fn open(session: &'a LakeSession, sha: &str, range: Range<u64>) -> Result<Self> {
        let (all, read) = content_parts(session, sha, true).await?;
        let len = all.last().map_or(0, |p| p.raw_offset + p.raw_len);
        if range.end > len || range.start > range.end {
            return Err(JobError::Invalid(format!(
                "blob {sha}: range {}..{} outside its {len} bytes",
                range.start, range.end
            )));
        }
        let parts: Vec<PartMeta> = all
            .iter()
            .filter(|p| {
                p.raw_offset < range.end && p.raw_offset + p.raw_len > range.start
                    || (p.raw_len == 0 && range.is_empty())
            })
            .cloned()
            .collect();
        Ok(Self {
            session,
            sha: sha.to_string(),
            parts: parts.into_iter(),
            range,
            read,
        })
    }

    /// The next piece of the range, or `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        self.next_at_depth(0).await
    }

    async fn next_at_depth(&mut self, depth: usize) -> Result<Option<Bytes>> {
        let Some(p) = self.parts.next() else {
            return Ok(None);
        };
        let raw = decode_part(self.session, &self.sha, &p, self.read.take(), depth).await?;
        let from = self.range.start.saturating_sub(p.raw_offset) as usize;
        let to = (self.range.end.min(p.raw_offset + p.raw_len) - p.raw_offset) as usize;
        Ok(Some(raw.slice(from..to)))
    }
}

/// Length in bytes of content `sha` (all its parts stored, without gaps).
pub(crate) async fn content_len(session: &LakeSession, sha: &str) -> Result<u64> {
    let (parts, _) = content_parts(session, sha, false).await?;
    Ok(parts.last().map_or(0, |p| p.raw_offset + p.raw_len))
}

/// Bytes `range` of content `sha`, decoded part by part (no sha256 check: the
/// caller hashes the ranges it reads if it needs one).
pub(crate) async fn read_range(
    session: &LakeSession,
    sha: &str,
    range: Range<u64>,
) -> Result<Bytes> {
    read_range_at_depth(session, sha, range, 0).await
}
