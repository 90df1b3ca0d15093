//! Random access to a complete bronze file, one chunk at a time.
//!
//! Chunk `i` of an upload starts at `i × chunk_size`. Each chunk is fetched with
//! a filtered scan (row-group statistics on `upload_id` and `chunk_index` prune
//! the rest) and the last two are cached, so a forward walk over a file reads
//! every chunk once and memory stays at two chunks.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::datafusion::prelude::{col, lit};
use weightlake_schemas::bronze;

use crate::sql::{LakeSession, binary_value};
use crate::{JobError, Result};

/// A complete file in bronze.
#[derive(Debug, Clone)]
pub(crate) struct BronzeFileRef {
    pub model_id: String,
    pub revision: String,
    pub file_path: String,
    pub upload_id: String,
    pub file_size: u64,
    pub file_sha256: String,
    pub chunk_size: u64,
}

pub(crate) struct BronzeReader {
    session: Arc<LakeSession>,
    file: BronzeFileRef,
    cache: Vec<(u32, Bytes)>,
    /// Chunks fetched (for tests and metrics).
    pub fetched: usize,
}

impl BronzeReader {
    pub fn new(session: Arc<LakeSession>, file: BronzeFileRef) -> Self {
        Self {
            session,
            file,
            cache: Vec::new(),
            fetched: 0,
        }
    }

    pub fn file(&self) -> &BronzeFileRef {
        &self.file
    }

    async fn chunk(&mut self, index: u32) -> Result<Bytes> {
        if let Some((_, b)) = self.cache.iter().find(|(i, _)| *i == index) {
            return Ok(b.clone());
        }
        let batches = self
            .session
            .context()
            .table(bronze::MODEL_FILES.to_string())
            .await?
            .filter(
                col("model_id")
                    .eq(lit(self.file.model_id.clone()))
                    .and(col("upload_id").eq(lit(self.file.upload_id.clone())))
                    .and(col("chunk_index").eq(lit(index as i32))),
            )?
            .select_columns(&[bronze::DATA_COLUMN])?
            .limit(0, Some(1))?
            .collect()
            .await?;
        let data = batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| binary_value(b.column(0).as_ref(), 0))
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| {
                JobError::Invalid(format!(
                    "{}: chunk {index} missing from bronze",
                    self.file.file_path
                ))
            })?;
        self.fetched += 1;
        if self.cache.len() >= 2 {
            self.cache.remove(0);
        }
        self.cache.push((index, data.clone()));
        Ok(data)
    }

    /// Read `len` bytes at `offset` (must lie within the file).
    pub async fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= self.file.file_size)
            .ok_or_else(|| {
                JobError::Invalid(format!("{}: read past end of file", self.file.file_path))
            })?;
        let mut out = Vec::with_capacity(len as usize);
        let cs = self.file.chunk_size.max(1);
        let mut pos = offset;
        while pos < end {
            let idx = (pos / cs) as u32;
            let chunk = self.chunk(idx).await?;
            let start = (pos - u64::from(idx) * cs) as usize;
            let take = ((end - pos) as usize).min(chunk.len().saturating_sub(start));
            if take == 0 {
                return Err(JobError::Invalid(format!(
                    "{}: chunk {idx} is shorter than expected",
                    self.file.file_path
                )));
            }
            out.extend_from_slice(&chunk[start..start + take]);
            pos += take as u64;
        }
        Ok(out)
    }
}
