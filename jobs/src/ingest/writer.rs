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
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use tracing::debug;
use weightlake_schemas::bronze;

use crate::Result;
use crate::append::TableAppender;

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

/// Parquet settings for blob tables: zstd, and no statistics or dictionary on
/// the blob column so that footers and the Delta log stay small.
pub fn blob_writer_properties(blob_column: &str, row_group_bytes: usize) -> WriterProperties {
    let level = ZstdLevel::try_new(1).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_column_dictionary_enabled(ColumnPath::from(blob_column), false)
        .set_column_statistics_enabled(ColumnPath::from(blob_column), EnabledStatistics::None)
        .set_max_row_group_bytes(Some(row_group_bytes.max(1 << 20)))
        .build()
}

pub(crate) struct BronzeWriter {
    chunks: TableAppender,
    files: TableAppender,
    run_id: String,
    pending_files: Vec<FileRow>,
    pub chunks_written: usize,
    pub bytes_written: u64,
    pending_bytes: u64,
}

impl BronzeWriter {
    pub fn new(chunks: DeltaTable, files: DeltaTable, run_id: String, commit_bytes: u64) -> Self {
        Self {
            chunks: TableAppender::new(
                chunks,
                bronze::MODEL_FILES,
                &[bronze::DATA_COLUMN],
                commit_bytes,
            ),
            files: TableAppender::new(files, bronze::FILES, &[], u64::MAX),
            run_id,
            pending_files: Vec::new(),
            chunks_written: 0,
            bytes_written: 0,
            pending_bytes: 0,
        }
    }

    /// Commits made to both tables.
    pub fn commits(&self) -> usize {
        self.chunks.commits + self.files.commits
    }

    /// Queue a chunk; commits when the buffer reaches `commit_bytes`.
    pub async fn push_chunk(&mut self, row: ChunkRow) -> Result<()> {
        self.pending_bytes += row.data.len() as u64;
        let batch = self.chunk_batch(std::slice::from_ref(&row))?;
        drop(row);
        if self.chunks.push(batch) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queue a file row; it is committed after the chunks pushed before it.
    pub fn file_complete(&mut self, row: FileRow) {
        self.pending_files.push(row);
    }

    /// Commit pending chunks, then pending file rows.
    pub async fn flush(&mut self) -> Result<()> {
        let before = self.chunks.rows;
        self.chunks.flush().await?;
        if self.chunks.rows > before {
            debug!(
                chunks = self.chunks.rows - before,
                bytes = self.pending_bytes,
                "committed chunks"
            );
            self.chunks_written = self.chunks.rows;
            self.bytes_written += std::mem::take(&mut self.pending_bytes);
        }
        if !self.pending_files.is_empty() {
            let rows = std::mem::take(&mut self.pending_files);
            self.files.push(self.file_batch(&rows)?);
            self.files.flush().await?;
        }
        Ok(())
    }

    fn now_micros() -> i64 {
        chrono::Utc::now().timestamp_micros()
    }

    fn chunk_batch(&self, rows: &[ChunkRow]) -> Result<RecordBatch> {
        let n = rows.len();
        let strings = |f: fn(&ChunkRow) -> &str| -> ArrayRef {
            Arc::new(rows.iter().map(f).map(Some).collect::<StringArray>())
        };
        let total: usize = rows.iter().map(|r| r.data.len()).sum();
        let mut data = BinaryBuilder::with_capacity(n, total);
        for r in rows {
            data.append_value(&r.data);
        }
        let cols: Vec<ArrayRef> = vec![
            strings(|r| &r.model_id),
            strings(|r| &r.revision),
            strings(|r| &r.file_path),
            strings(|r| &r.source_uri),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.file_size),
            )),
            strings(|r| &r.etag),
            strings(|r| &r.upload_id),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.chunk_index),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.chunk_offset),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.data.len() as i64),
            )),
            strings(|r| &r.chunk_sha256),
            Arc::new(StringArray::from(vec![self.run_id.as_str(); n])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Self::now_micros(); n]).with_timezone("UTC"),
            ),
            Arc::new(data.finish()),
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
