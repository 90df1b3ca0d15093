//! Row types of `silver.tensors` and `silver.files`, and their Arrow batches.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, Int64Builder,
    ListBuilder, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use weightlake_formats::stats::TensorStats;
use weightlake_schemas::silver;

use crate::Result;

/// One tensor of one file.
#[derive(Debug, Clone)]
pub(crate) struct TensorRow {
    pub tensor_index: i32,
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub byte_len: i64,
    pub file_offset: i64,
    pub content_sha256: String,
    pub stats: Option<TensorStats>,
    pub base_sha256: Option<String>,
    pub rel_l2_change: Option<f64>,
    pub identical_to_base: Option<bool>,
    pub pad_before: Vec<u8>,
}

/// What identifies the file the rows belong to.
#[derive(Debug, Clone)]
pub(crate) struct FileKey {
    pub model_id: String,
    pub revision: String,
    pub file_path: String,
    pub upload_id: String,
    pub file_size: i64,
    pub file_sha256: String,
}

/// One `silver.files` row.
#[derive(Debug, Clone)]
pub(crate) struct SilverFileRow {
    pub format: &'static str,
    pub tensor_count: i32,
    pub unsafe_pickle: bool,
    pub error: Option<String>,
    pub base_model: Option<String>,
    pub metadata: Option<String>,
    pub header: Vec<u8>,
    pub suffix: Vec<u8>,
}

impl FileKey {
    /// The key of the silver rows made from bronze's row `f`.
    pub fn of(f: &super::reader::BronzeFileRef) -> Self {
        Self {
            model_id: f.model_id.clone(),
            revision: f.revision.clone(),
            file_path: f.file_path.clone(),
            upload_id: f.upload_id.clone(),
            file_size: f.file_size as i64,
            file_sha256: f.file_sha256.clone(),
        }
    }
}

impl SilverFileRow {
    /// The row that records a path's removal from its revision
    /// ([`silver::REMOVED_FORMAT`]).
    pub fn removal() -> Self {
        Self {
            format: silver::REMOVED_FORMAT,
            tensor_count: 0,
            unsafe_pickle: false,
            error: None,
            base_model: None,
            metadata: None,
            header: Vec::new(),
            suffix: Vec::new(),
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub(crate) fn tensors_batch(
    key: &FileKey,
    base_model: Option<&str>,
    rows: &[TensorRow],
    run_id: &str,
) -> Result<RecordBatch> {
    let n = rows.len();
    let rep = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s; n])) };
    let stat = |f: fn(&TensorStats) -> Option<f64>| -> ArrayRef {
        Arc::new(
            rows.iter()
                .map(|r| r.stats.as_ref().and_then(f))
                .collect::<Float64Array>(),
        )
    };
    let mut shape = ListBuilder::new(Int64Builder::new());
    for r in rows {
        shape.values().append_slice(&r.shape);
        shape.append(true);
    }
    let base_col: ArrayRef = Arc::new(
        rows.iter()
            .map(|r| r.base_sha256.as_ref().and(base_model))
            .collect::<StringArray>(),
    );
    let cols: Vec<ArrayRef> = vec![
        rep(&key.model_id),
        rep(&key.revision),
        rep(&key.file_path),
        rep(&key.file_sha256),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.tensor_index),
        )),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.name.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.dtype.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(shape.finish()),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.byte_len),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.file_offset),
        )),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.content_sha256.as_str()))
                .collect::<StringArray>(),
        ),
        stat(|s| s.min),
        stat(|s| s.max),
        stat(|s| s.mean),
        stat(|s| s.std),
        stat(|s| s.l2),
        Arc::new(
            rows.iter()
                .map(|r| r.stats.map(|s| s.nan_count as i64))
                .collect::<Int64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.stats.map(|s| s.inf_count as i64))
                .collect::<Int64Array>(),
        ),
        base_col,
        Arc::new(
            rows.iter()
                .map(|r| r.base_sha256.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.rel_l2_change)
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.identical_to_base)
                .collect::<BooleanArray>(),
        ),
        rep(run_id),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.pad_before.as_slice()))
                .collect::<BinaryArray>(),
        ),
    ];
    Ok(RecordBatch::try_new(silver::tensors_schema(), cols)?)
}

pub(crate) fn file_batch(key: &FileKey, row: &SilverFileRow, run_id: &str) -> Result<RecordBatch> {
    let s = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let cols: Vec<ArrayRef> = vec![
        s(&key.model_id),
        s(&key.revision),
        s(&key.file_path),
        s(&key.upload_id),
        Arc::new(Int64Array::from(vec![key.file_size])),
        s(&key.file_sha256),
        s(row.format),
        Arc::new(Int32Array::from(vec![row.tensor_count])),
        Arc::new(BooleanArray::from(vec![row.unsafe_pickle])),
        Arc::new(StringArray::from(vec![row.error.as_deref()])),
        Arc::new(StringArray::from(vec![row.base_model.as_deref()])),
        Arc::new(StringArray::from(vec![row.metadata.as_deref()])),
        s(run_id),
        Arc::new(TimestampMicrosecondArray::from(vec![now()]).with_timezone("UTC")),
        Arc::new(BinaryArray::from(vec![Some(row.header.as_slice())])),
        Arc::new(BinaryArray::from(vec![Some(row.suffix.as_slice())])),
    ];
    Ok(RecordBatch::try_new(silver::files_schema(), cols)?)
}
