//! Content-addressed tensor bytes in `silver.tensor_blobs`: which contents are
//! stored, and reading one back (decoding parts, resolving XOR bases, checking
//! the sha256).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringArray,
};
use deltalake::datafusion::prelude::{col, lit};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use weightlake_formats::Encoding;
use weightlake_schemas::silver;

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
    if !session.tables().contains(&silver::TENSOR_BLOBS) {
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

/// Rows of `silver.tensor_blobs` for `parts`.
pub(crate) fn blob_batch(parts: &[BlobPart], run_id: &str) -> Result<RecordBatch> {
    let n = parts.len();
    let total: usize = parts.iter().map(|p| p.data.len()).sum();
    let mut data = BinaryBuilder::with_capacity(n, total);
    for p in parts {
        data.append_value(&p.data);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            parts
                .iter()
                .map(|p| Some(p.content_sha256.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(Int32Array::from_iter_values(
            parts.iter().map(|p| p.part_index),
        )),
        Arc::new(Int32Array::from_iter_values(
            parts.iter().map(|p| p.part_count),
        )),
        Arc::new(Int64Array::from_iter_values(
            parts.iter().map(|p| p.raw_offset),
        )),
        Arc::new(Int64Array::from_iter_values(
            parts.iter().map(|p| p.raw_len),
        )),
        Arc::new(Int32Array::from_iter_values(
            parts.iter().map(|p| p.elem_size),
        )),
        Arc::new(
            parts
                .iter()
                .map(|p| Some(p.encoding.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            parts
                .iter()
                .map(|p| p.base_sha256.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(Int64Array::from_iter_values(
            parts.iter().map(|p| p.data.len() as i64),
        )),
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(data.finish()),
    ];
    Ok(RecordBatch::try_new(silver::tensor_blobs_schema(), cols)?)
}

/// Read a content back: decode every part (resolving XOR bases, at most 8
/// levels deep) and check its sha256.
pub(crate) fn read_content<'a>(
    session: &'a LakeSession,
    sha: &'a str,
    depth: usize,
) -> BoxFuture<'a, Result<Vec<u8>>> {
    Box::pin(async move {
        if depth > 8 {
            return Err(JobError::Invalid(format!(
                "blob {sha}: XOR base chain deeper than 8"
            )));
        }
        let batches = session
            .context()
            .table(silver::TENSOR_BLOBS.to_string())
            .await?
            .filter(col("content_sha256").eq(lit(sha.to_string())))?
            .select_columns(&[
                "part_index",
                "part_count",
                "raw_offset",
                "raw_len",
                "elem_size",
                "encoding",
                "base_sha256",
                "data",
            ])?
            .collect()
            .await?;
        // One row per part (a part written twice by an interrupted run is identical).
        let mut parts: BTreeMap<i32, BlobPart> = BTreeMap::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let i = |c: usize| int_value(b.column(c).as_ref(), r).unwrap_or(-1);
                let s = |c: usize| string_value(b.column(c).as_ref(), r).map(str::to_string);
                let enc = s(5).unwrap_or_default();
                let encoding: Encoding = enc.parse().map_err(|_| {
                    JobError::Invalid(format!("blob {sha}: unknown encoding `{enc}`"))
                })?;
                parts.entry(i(0) as i32).or_insert_with(|| BlobPart {
                    content_sha256: sha.to_string(),
                    part_index: i(0) as i32,
                    part_count: i(1) as i32,
                    raw_offset: i(2),
                    raw_len: i(3),
                    elem_size: i(4) as i32,
                    encoding,
                    base_sha256: s(6),
                    data: binary_value(b.column(7).as_ref(), r)
                        .unwrap_or_default()
                        .to_vec(),
                });
            }
        }
        let count = parts.values().next().map(|p| p.part_count).unwrap_or(0);
        if parts.is_empty() || parts.len() != count as usize {
            return Err(JobError::Invalid(format!(
                "blob {sha}: {} of {count} parts stored",
                parts.len()
            )));
        }
        let mut base: Option<Vec<u8>> = None;
        let mut out = Vec::new();
        for (idx, p) in parts {
            if p.raw_offset != out.len() as i64 {
                return Err(JobError::Invalid(format!(
                    "blob {sha}: part {idx} at {}, expected {}",
                    p.raw_offset,
                    out.len()
                )));
            }
            let base_slice = if p.encoding.needs_base() {
                let bsha = p.base_sha256.as_deref().ok_or_else(|| {
                    JobError::Invalid(format!("blob {sha}: XOR part without base"))
                })?;
                if base.is_none() {
                    base = Some(read_content(session, bsha, depth + 1).await?);
                }
                let b = base.as_deref().unwrap_or_default();
                let (s, e) = (p.raw_offset as usize, (p.raw_offset + p.raw_len) as usize);
                Some(b.get(s..e).ok_or_else(|| {
                    JobError::Invalid(format!("blob {sha}: base shorter than part {idx}"))
                })?)
            } else {
                None
            };
            let decoded = weightlake_formats::decode(
                p.encoding,
                &p.data,
                p.elem_size as usize,
                base_slice,
                p.raw_len as usize,
            )
            .map_err(|e| JobError::Invalid(format!("blob {sha} part {idx}: {e}")))?;
            out.extend_from_slice(&decoded);
        }
        let got = hex::encode(Sha256::digest(&out));
        if got != sha {
            return Err(JobError::Invalid(format!(
                "blob {sha}: decoded content has sha256 {got}"
            )));
        }
        Ok(out)
    })
}
