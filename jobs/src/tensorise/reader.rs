//! Random access to a complete bronze file, one chunk at a time.
//!
//! Chunk `i` of an upload starts at `i × chunk_size`. Each chunk is fetched by
//! `(upload_id, chunk_index)` with [`lookup`] (Parquet read directly, no scan
//! planned per chunk). The last chunk
//! fetched is kept: reads walk a file forward and each starts where the last
//! ended, so every chunk is fetched once (the header is read again at the
//! end) and memory stays at one chunk besides the caller's buffer. The kept
//! chunk is the scanned Arrow array itself: its bytes are copied once, into
//! the caller's buffer.

use std::sync::Arc;

use deltalake::arrow::array::ArrayRef;
use weightlake_schemas::bronze;

use crate::locate::{Key, lookup};
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
    /// The row records a removal (`bronze::REMOVED_SIZE`), not a file.
    pub removed: bool,
}

pub(crate) struct BronzeReader {
    session: Arc<LakeSession>,
    file: BronzeFileRef,
    /// `(chunk index, one-row array holding its bytes)` of the last chunk fetched.
    last: Option<(u32, ArrayRef)>,
    /// Chunks fetched (for tests and metrics).
    pub fetched: usize,
}

impl BronzeReader {
    pub fn new(session: Arc<LakeSession>, file: BronzeFileRef) -> Self {
        Self {
            session,
            file,
            last: None,
            fetched: 0,
        }
    }

    pub fn file(&self) -> &BronzeFileRef {
        &self.file
    }

    /// Drop the kept chunk (the caller reads elsewhere for a while).
    pub fn release(&mut self) {
        self.last = None;
    }

    /// The one-row array holding chunk `index`: the last one, or fetched.
    async fn chunk(&mut self, index: u32) -> Result<ArrayRef> {
        if let Some((_, a)) = self.last.as_ref().filter(|(i, _)| *i == index) {
            return Ok(a.clone());
        }
        let keys = [
            ("upload_id", Key::Str(&self.file.upload_id)),
            ("chunk_index", Key::Int(i64::from(index))),
        ];
        let found = lookup(
            &self.session,
            bronze::MODEL_FILES,
            &keys,
            &[bronze::DATA_COLUMN],
        )
        .await?
        .iter()
        .flat_map(|b| {
            let data = b.column_by_name(bronze::DATA_COLUMN);
            (0..b.num_rows()).filter_map(move |r| data.map(|c| c.slice(r, 1)))
        })
        .find(|c| binary_value(c.as_ref(), 0).is_some());
        let array = found.ok_or_else(|| {
            JobError::Corrupt(format!(
                "{}@{}: chunk {index} of {} (upload {}) is missing from bronze.model_files \
                 though bronze.files records the file complete",
                self.file.model_id, self.file.revision, self.file.file_path, self.file.upload_id
            ))
        })?;
        self.fetched += 1;
        self.last = Some((index, array.clone()));
        Ok(array)
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
            let array = self.chunk(idx).await?;
            let chunk = binary_value(array.as_ref(), 0).unwrap_or_default();
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
