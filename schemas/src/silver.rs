//! Silver tables: model files parsed into tensors, tensor bytes stored once.
//!
//! - `silver.files`: one row per source file (format, header bytes, what is
//!   needed to rebuild it bit for bit, quarantine status).
//! - `silver.tensors`: one row per tensor (dtype, shape, offsets, content
//!   sha256, statistics, change against a base model).
//! - `silver.tensor_blobs`: content-addressed bytes, each distinct content once,
//!   in parts of at most [`MAX_PART_BYTES`], with a lossless encoding.
//!
//! Hazard: `data`, `header`, `suffix` and `pad_before` are blob columns: no
//! statistics, no dictionary (see `blob_columns`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::{TableName, timestamp_type};

/// `silver.files`.
pub const FILES: TableName = TableName {
    layer: "silver",
    table: "files",
};
/// `silver.tensors`.
pub const TENSORS: TableName = TableName {
    layer: "silver",
    table: "tensors",
};
/// `silver.tensor_blobs`.
pub const TENSOR_BLOBS: TableName = TableName {
    layer: "silver",
    table: "tensor_blobs",
};

/// Schema version of the silver tables.
pub const VERSION: u32 = 1;

/// `format` of a `silver.files` row that records a removal: bronze's newest
/// row for the path is a removal ([`crate::bronze::REMOVED_SIZE`]), so the
/// revision no longer has the file. A path belongs to a revision when its
/// newest row (by `tensorised_at`) is not a removal; older rows stay, and
/// gold versions pinned to them still rebuild.
pub const REMOVED_FORMAT: &str = "removed";

/// Largest blob part.
pub const MAX_PART_BYTES: usize = 64 << 20;

/// The part size tensorise writes by default. Half the cap: a tensorise holds
/// a handful of parts at once (read, encoded, queued, being written), so the
/// part size sets its memory; and buffers under 64 MiB are reused from the
/// heap instead of being mapped and faulted in afresh (see `src/malloc.rs`).
pub const DEFAULT_PART_BYTES: usize = 32 << 20;
const _: () = assert!(DEFAULT_PART_BYTES <= MAX_PART_BYTES);

/// Columns that hold bytes, per table (no statistics, no dictionary).
pub fn blob_columns(table: TableName) -> &'static [&'static str] {
    match table.table {
        "files" => &["header", "suffix"],
        "tensors" => &["pad_before"],
        "tensor_blobs" => &["data"],
        _ => &[],
    }
}

/// Arrow schema of `silver.files`.
pub fn files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("revision", DataType::Utf8, false),
        Field::new("file_path", DataType::Utf8, false),
        Field::new("upload_id", DataType::Utf8, false),
        Field::new("file_size", DataType::Int64, false),
        Field::new("file_sha256", DataType::Utf8, false),
        // safetensors | gguf | passthrough | quarantined
        Field::new("format", DataType::Utf8, false),
        Field::new("tensor_count", DataType::Int32, false),
        Field::new("unsafe_pickle", DataType::Boolean, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("base_model", DataType::Utf8, true),
        Field::new("metadata", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("tensorised_at", timestamp_type(), false),
        Field::new("header", DataType::Binary, false),
        Field::new("suffix", DataType::Binary, false),
    ]))
}

/// Arrow schema of `silver.tensors`.
pub fn tensors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("model_id", DataType::Utf8, false),
        Field::new("revision", DataType::Utf8, false),
        Field::new("file_path", DataType::Utf8, false),
        Field::new("file_sha256", DataType::Utf8, false),
        Field::new("tensor_index", DataType::Int32, false),
        Field::new("tensor_name", DataType::Utf8, false),
        Field::new("dtype", DataType::Utf8, false),
        Field::new(
            "shape",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            false,
        ),
        Field::new("byte_len", DataType::Int64, false),
        Field::new("file_offset", DataType::Int64, false),
        Field::new("content_sha256", DataType::Utf8, false),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("mean", DataType::Float64, true),
        Field::new("std", DataType::Float64, true),
        Field::new("l2", DataType::Float64, true),
        Field::new("nan_count", DataType::Int64, true),
        Field::new("inf_count", DataType::Int64, true),
        Field::new("base_model", DataType::Utf8, true),
        Field::new("base_sha256", DataType::Utf8, true),
        Field::new("rel_l2_change", DataType::Float64, true),
        Field::new("identical_to_base", DataType::Boolean, true),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pad_before", DataType::Binary, false),
    ]))
}

/// Arrow schema of `silver.tensor_blobs`.
pub fn tensor_blobs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("content_sha256", DataType::Utf8, false),
        Field::new("part_index", DataType::Int32, false),
        Field::new("part_count", DataType::Int32, false),
        Field::new("raw_offset", DataType::Int64, false),
        Field::new("raw_len", DataType::Int64, false),
        Field::new("elem_size", DataType::Int32, false),
        Field::new("encoding", DataType::Utf8, false),
        Field::new("base_sha256", DataType::Utf8, true),
        Field::new("stored_len", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("data", DataType::Binary, false),
    ]))
}
