//! Bronze tables: raw model files exactly as downloaded.
//!
//! `bronze.model_files` holds one row per chunk of a source file; `bronze.files`
//! holds one row per *complete, verified* file and is the commit marker of the
//! ingest protocol (docs/ARCHITECTURE.md): a file is visible as complete only once
//! its `bronze.files` row is committed, which happens after all of its chunks are.
//!
//! Hazard: `data` is a blob column. It must stay the last column, and writers must
//! collect no statistics and build no dictionary on it, or the Parquet footer and
//! the Delta log carry the blobs.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::{TableName, timestamp_type};

/// `bronze.model_files`: one row per downloaded chunk.
pub const MODEL_FILES: TableName = TableName {
    layer: "bronze",
    table: "model_files",
};
/// `bronze.files`: one row per complete, verified file.
pub const FILES: TableName = TableName {
    layer: "bronze",
    table: "files",
};

/// Schema version of `bronze.model_files`, stored in the table's configuration.
pub const MODEL_FILES_VERSION: u32 = 1;
/// Schema version of `bronze.files`, stored in the table's configuration.
pub const FILES_VERSION: u32 = 1;

/// Name of the blob column of `bronze.model_files`.
pub const DATA_COLUMN: &str = "data";

/// `file_size` recorded on chunks of a stream whose length the source did not
/// announce; such uploads cannot be resumed (their `etag` is unique to the run).
pub const UNKNOWN_SIZE: i64 = -1;

/// `file_size` of a `bronze.files` row that records a removal rather than a
/// file: the revision's source, listed whole, no longer has the path (a branch
/// that moved, a file deleted from a directory). Such a row has no chunks
/// (`chunk_count` 0) and an empty `file_sha256`. A path belongs to a revision
/// when its newest row (by `ingested_at`) is not a removal.
pub const REMOVED_SIZE: i64 = -1;

/// The columns that identify one upload of one source file. `upload_id` is a
/// hash of them (see `docs/TABLES.md`); chunks of the same upload committed by an
/// earlier, interrupted run are reused, and readers join chunks to their
/// `bronze.files` row on `upload_id`.
pub const FILE_IDENTITY: &[&str] = &["model_id", "revision", "file_path", "file_size", "etag"];

/// Arrow schema of `bronze.model_files`.
pub fn model_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("revision", DataType::Utf8, false),
        Field::new("file_path", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, false),
        Field::new("etag", DataType::Utf8, false),
        Field::new("upload_id", DataType::Utf8, false),
        Field::new("chunk_index", DataType::Int32, false),
        Field::new("chunk_offset", DataType::Int64, false),
        Field::new("chunk_len", DataType::Int64, false),
        Field::new("chunk_sha256", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("ingested_at", timestamp_type(), false),
        Field::new(DATA_COLUMN, DataType::Binary, false),
    ]))
}

/// Arrow schema of `bronze.files`.
pub fn files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("revision", DataType::Utf8, false),
        Field::new("file_path", DataType::Utf8, false),
        Field::new("source_uri", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, false),
        Field::new("file_sha256", DataType::Utf8, false),
        Field::new("etag", DataType::Utf8, false),
        Field::new("upload_id", DataType::Utf8, false),
        Field::new("chunk_size", DataType::Int64, false),
        Field::new("chunk_count", DataType::Int32, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("ingested_at", timestamp_type(), false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_column_is_last_and_identity_columns_exist() {
        let s = model_files_schema();
        assert_eq!(
            s.fields().last().map(|f| f.name().as_str()),
            Some(DATA_COLUMN)
        );
        for c in FILE_IDENTITY {
            assert!(s.field_with_name(c).is_ok(), "model_files lacks {c}");
            assert!(files_schema().field_with_name(c).is_ok(), "files lacks {c}");
        }
    }
}
