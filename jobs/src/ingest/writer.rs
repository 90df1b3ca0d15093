//! Appends chunk rows and file rows to bronze, in that order.
//!
//! Chunks are buffered up to `commit_bytes` and committed as one Delta append.
//! A file's `bronze.files` row is queued when its last chunk has been hashed and
//! verified, and committed only after the commit that holds that chunk: so a file
//! visible in `bronze.files` always has every chunk committed.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::{Buffer, OffsetBuffer};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use tracing::debug;
use weightlake_schemas::bronze;

use crate::Result;
use crate::append::{OrderedCommits, TableAppender};

/// One chunk to append to `bronze.model_files`.
#[derive(Debug, Clone)]
pub(crate) struct ChunkRow {
    pub model_id: String,
    pub revision: String,
    pub file_path: String,
    pub source_uri: String,
    pub file_size: i64,
    pub etag: String,
    pub upload_id: String,
    pub chunk_index: i32,
    pub chunk_offset: i64,
    pub chunk_sha256: String,
    pub data: Bytes,
}

/// One complete file to append to `bronze.files`.
#[derive(Debug, Clone)]
pub(crate) struct FileRow {
    pub model_id: String,
    pub revision: String,
    pub file_path: String,
    pub source_uri: String,
    pub file_size: i64,
    pub file_sha256: String,
    pub etag: String,
    pub upload_id: String,
    pub chunk_size: i64,
    pub chunk_count: i32,
}

/// Rows per Parquet page at most in blob tables. A lookup of one row
/// decompresses the pages holding it: with the default limits (1 MiB or
/// 20 000 rows) a lake of many small files put thousands of rows in a page,
/// so each lookup decompressed all of them and tensorising N files cost
/// O(N²) (10 000 small files: 9.1 s; 2 000: 0.96 s).
const BLOB_PAGE_ROWS: usize = 256;

/// Parquet settings for blob tables: zstd, no statistics or dictionary on
/// the blob column so that footers and the Delta log stay small, and at most
/// [`BLOB_PAGE_ROWS`] rows per page.
pub fn blob_writer_properties(blob_column: &str, row_group_bytes: usize) -> WriterProperties {
    let level = ZstdLevel::try_new(1).unwrap_or_default();
    WriterProperties::builder()
        .set_write_batch_size(BLOB_PAGE_ROWS)
        .set_data_page_row_count_limit(BLOB_PAGE_ROWS)
        .set_compression(Compression::ZSTD(level))
        .set_column_dictionary_enabled(ColumnPath::from(blob_column), false)
        .set_column_statistics_enabled(ColumnPath::from(blob_column), EnabledStatistics::None)
        .set_max_row_group_bytes(Some(row_group_bytes.max(1 << 20)))
        .build()
}

pub(crate) struct BronzeWriter {
    commits: OrderedCommits,
    run_id: String,
    pending_files: Vec<FileRow>,
    pub chunks_written: usize,
}

const CHUNKS: usize = 0;
const FILES: usize = 1;

impl BronzeWriter {
    pub fn new(chunks: DeltaTable, files: DeltaTable, run_id: String, commit_bytes: u64) -> Self {
        let tables = vec![
            TableAppender::new(chunks, bronze::MODEL_FILES),
            TableAppender::new(files, bronze::FILES),
        ];
        Self {
            commits: OrderedCommits::new(tables, commit_bytes),
            run_id,
            pending_files: Vec::new(),
            chunks_written: 0,
        }
    }

    /// Queue a chunk; starts a background commit when `commit_bytes` are queued
    /// (waiting first for the commit before it, which bounds memory).
    pub async fn push_chunk(&mut self, row: ChunkRow) -> Result<()> {
        let batch = self.chunk_batch(row)?;
        if self.commits.push(CHUNKS, batch) {
            self.commit().await?;
        }
        Ok(())
    }

    /// Queue a file row; it is committed after the chunks pushed before it.
    pub fn file_complete(&mut self, row: FileRow) {
        self.pending_files.push(row);
    }

    /// Start committing queued chunks, then queued file rows, in the background.
    async fn commit(&mut self) -> Result<()> {
        if !self.pending_files.is_empty() {
            let rows = std::mem::take(&mut self.pending_files);
            let batch = self.file_batch(&rows)?;
            self.commits.push(FILES, batch);
        }
        let queued = self.commits.queued_bytes();
        self.commits.commit().await?;
        debug!(bytes = queued, "commit started");
        Ok(())
    }

    /// Commit everything queued and wait for it; returns the commits made.
    pub async fn finish(&mut self) -> Result<usize> {
        self.commit().await?;
        let tables = self.commits.finish().await?;
        self.chunks_written = tables[CHUNKS].rows;
        Ok(tables.iter().map(|t| t.commits).sum())
    }

    fn now_micros() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    /// One row; `data` is shared with the download buffer, not copied.
    fn chunk_batch(&self, r: ChunkRow) -> Result<RecordBatch> {
        let len = r.data.len();
        let offsets = OffsetBuffer::<i32>::from_lengths([len]);
        let data = BinaryArray::try_new(offsets, Buffer::from(r.data), None)?;
        let string = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s])) };
        let cols: Vec<ArrayRef> = vec![
            string(&r.model_id),
            string(&r.revision),
            string(&r.file_path),
            string(&r.source_uri),
            Arc::new(Int64Array::from(vec![r.file_size])),
            string(&r.etag),
            string(&r.upload_id),
            Arc::new(Int32Array::from(vec![r.chunk_index])),
            Arc::new(Int64Array::from(vec![r.chunk_offset])),
            Arc::new(Int64Array::from(vec![len as i64])),
            string(&r.chunk_sha256),
            string(&self.run_id),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Self::now_micros()]).with_timezone("UTC"),
            ),
            Arc::new(data),
        ];
        Ok(RecordBatch::try_new(bronze::model_files_schema(), cols)?)
    }

    fn file_batch(&self, rows: &[FileRow]) -> Result<RecordBatch> {
        let n = rows.len();
        let strings = |f: fn(&FileRow) -> &str| -> ArrayRef {
            Arc::new(rows.iter().map(f).map(Some).collect::<StringArray>())
        };
        let cols: Vec<ArrayRef> = vec![
            strings(|r| &r.model_id),
            strings(|r| &r.revision),
            strings(|r| &r.file_path),
            strings(|r| &r.source_uri),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.file_size),
            )),
            strings(|r| &r.file_sha256),
            strings(|r| &r.etag),
            strings(|r| &r.upload_id),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.chunk_size),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.chunk_count),
            )),
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Self::now_micros(); n]).with_timezone("UTC"),
            ),
        ];
        Ok(RecordBatch::try_new(bronze::files_schema(), cols)?)
    }
}
