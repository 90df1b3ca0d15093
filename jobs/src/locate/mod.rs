//! Point lookups of rows in a Delta table by reading its Parquet files
//! directly, without planning a DataFusion scan for each lookup.
//!
//! Tensorise fetches each bronze chunk by `(upload_id, chunk_index)` and a
//! rebuild each blob part by `(content_sha256, part_index)`. Planning a Delta
//! scan replays the table's file actions every time (measured at 15-16 % of
//! the CPU of tensorise and rebuild, one scan per 16-64 MiB). A
//! [`RowLocator`] takes the snapshot's files and their statistics once, then
//! answers each lookup from the files whose Delta statistics admit the key,
//! the row groups whose Parquet statistics admit it, an index of the key
//! columns of those row groups (read once per session, see `key_index`),
//! and a check of every row read. Footers are read once per file and kept.
//!
//! [`lookup`] is the entry point: tables a locator does not cover
//! (partitioned, or with deletion vectors) are queried through DataFusion with
//! the same keys.

mod key_index;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use deltalake::DeltaTable;
use deltalake::arrow::array::{Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::prelude::{Expr, col, lit};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use deltalake::parquet::file::metadata::{PageIndexPolicy, RowGroupMetaData};
use deltalake::parquet::file::statistics::Statistics;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::file_ranges::{FileRanges, ReadStats};
use crate::sql::{LakeSession, int_value, string_value};
use crate::{JobError, Result};
pub(crate) use key_index::RowAt;
use key_index::{KeyIndex, index_name};
use weightlake_schemas::TableName;

/// A value a key column must equal.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key<'a> {
    /// A string column (Utf8 in the files).
    Str(&'a str),
    /// An integer column (Int32 or Int64 in the files).
    Int(i64),
}

/// Every row of `table` whose columns equal `keys`, as batches of the key
/// columns and `columns`: through the session's [`RowLocator`], or a
/// DataFusion scan filtered on the keys where the table has none.
pub(crate) async fn lookup(
    session: &LakeSession,
    table: TableName,
    keys: &[(&str, Key<'_>)],
    columns: &[&str],
) -> Result<Vec<RecordBatch>> {
    if let Some(locator) = session.locator(table) {
        return locator.find(keys, columns).await;
    }
    let filter = keys
        .iter()
        .map(|(c, key)| {
            col(*c).eq(match key {
                Key::Str(v) => lit(*v),
                Key::Int(v) => lit(*v),
            })
        })
        .reduce(Expr::and)
        .unwrap_or_else(|| lit(true));
    let names: Vec<&str> = keys
        .iter()
        .map(|(c, _)| *c)
        .chain(columns.iter().copied())
        .collect();
    Ok(session
        .context()
        .table(table.to_string())
        .await?
        .filter(filter)?
        .select_columns(&names)?
        .collect()
        .await?)
}

/// One data file of the snapshot and the column ranges its Delta statistics give.
#[derive(Debug)]
struct DataFile {
    path: Path,
    size: u64,
    /// `minValues` / `maxValues` of the file, when recorded.
    min: Option<serde_json::Value>,
    max: Option<serde_json::Value>,
}

/// Finds rows of one table snapshot by key columns.
pub(crate) struct RowLocator {
    store: Arc<dyn ObjectStore>,
    /// The table's root as a local file system, when it is on local disk.
    local: Option<LocalFileSystem>,
    files: Vec<DataFile>,
    footers: Mutex<HashMap<Path, ArrowReaderMetadata>>,
    /// One index per set of key columns looked up.
    indexes: Mutex<HashMap<String, KeyIndex>>,
    /// What was read from the store so far (footers, keys and data).
    stats: Arc<ReadStats>,
}

impl std::fmt::Debug for RowLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowLocator")
            .field("files", &self.files.len())
            .finish()
    }
}

impl RowLocator {
    /// A locator over the snapshot `table` has loaded, or `None` when the
    /// table is partitioned or has deletion vectors.
    pub fn new(table: &DeltaTable) -> Option<Self> {
        let snapshot = table.snapshot().ok()?;
        if !snapshot.metadata().partition_columns().is_empty() {
            return None;
        }
        let mut files = Vec::new();
        for view in snapshot.log_data().iter() {
            if view.deletion_vector_descriptor().is_some() {
                return None;
            }
            let stats: Option<serde_json::Value> =
                view.stats().and_then(|s| serde_json::from_str(&s).ok());
            let (min, max) = match stats {
                Some(mut s) => (
                    s.get_mut("minValues").map(serde_json::Value::take),
                    s.get_mut("maxValues").map(serde_json::Value::take),
                ),
                None => (None, None),
            };
            files.push(DataFile {
                path: view.object_store_path(),
                size: u64::try_from(view.size()).unwrap_or(0),
                min,
                max,
            });
        }
        let url = table.table_url();
        let local = (url.scheme() == "file")
            .then(|| url.to_file_path().ok())
            .flatten()
            .and_then(|root| LocalFileSystem::new_with_prefix(root).ok());
        Some(Self {
            store: table.object_store(),
            local,
            files,
            footers: Mutex::new(HashMap::new()),
            indexes: Mutex::new(HashMap::new()),
            stats: Arc::new(ReadStats::default()),
        })
    }

    /// Every row whose columns equal `keys`, as batches of the key columns and
    /// `columns`, in file and row order: [`Self::hits`] then
    /// [`Self::read_hits`].
    pub async fn find(
        &self,
        keys: &[(&str, Key<'_>)],
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        let hits = self.hits(keys).await?;
        self.read_hits(&hits, keys, columns).await
    }

    /// Where the rows whose columns equal `keys` are, in file, row group and
    /// row order, without reading them.
    ///
    /// The row groups whose statistics admit the keys are looked up in the
    /// [`KeyIndex`] of these key columns; those not in it yet have their key
    /// columns read (a few at once) and added.
    pub async fn hits(&self, keys: &[(&str, Key<'_>)]) -> Result<Vec<RowAt>> {
        let mut admitted = Vec::new();
        for (fi, file) in self.files.iter().enumerate() {
            if !file_admits(file, keys) {
                continue;
            }
            let meta = self.footer(file).await?;
            for (ri, rg) in meta.metadata().row_groups().iter().enumerate() {
                if row_group_admits(rg, keys) {
                    admitted.push((fi, ri));
                }
            }
        }
        let name = index_name(keys);
        let names: Vec<&str> = keys.iter().map(|(c, _)| *c).collect();
        let missing: Vec<(usize, usize)> = {
            let indexes = self.indexes.lock().map_err(|_| poisoned())?;
            let index = indexes.get(&name);
            admitted
                .iter()
                .filter(|(f, r)| !index.is_some_and(|i| i.has(*f, *r)))
                .copied()
                .collect()
        };
        let read: Vec<((usize, usize), Vec<RecordBatch>)> = futures::stream::iter(missing)
            .map(|(fi, ri)| {
                let names = &names;
                async move {
                    let batches = self.read_row_group(fi, ri, names, None).await?;
                    Ok::<_, JobError>(((fi, ri), batches))
                }
            })
            .buffer_unordered(INDEX_READS)
            .try_collect::<Vec<_>>()
            .await?;
        let mut indexes = self.indexes.lock().map_err(|_| poisoned())?;
        let index = indexes.entry(name).or_default();
        for ((fi, ri), batches) in &read {
            index.add(*fi, *ri, &names, batches);
        }
        Ok(index.rows(keys))
    }

    /// The key columns and `columns` of rows `hits` (sorted, as
    /// [`Self::hits`] gives them for `keys`), one batch or more per row
    /// group, a row for each hit in order: only the pages that hold them are
    /// read, in one call per row group. A row whose keys differ from `keys`
    /// is an error (the index and the file disagree).
    pub async fn read_hits(
        &self,
        hits: &[RowAt],
        keys: &[(&str, Key<'_>)],
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        let (start, start_reads) = (self.bytes_fetched(), self.reads());
        let projection: Vec<&str> = keys
            .iter()
            .map(|(c, _)| *c)
            .chain(columns.iter().copied())
            .collect();
        let mut found = Vec::new();
        for group in hits.chunk_by(|a, b| (a.file, a.row_group) == (b.file, b.row_group)) {
            let rows: Vec<usize> = group.iter().map(|r| r.row).collect();
            let (fi, ri) = (group[0].file, group[0].row_group);
            let mut read = 0;
            for batch in self
                .read_row_group(fi, ri, &projection, Some(&rows))
                .await?
            {
                if let Some(r) = (0..batch.num_rows()).find(|r| !row_matches(&batch, *r, keys)) {
                    return Err(JobError::Invalid(format!(
                        "reading {}: row {} of row group {ri} does not hold {keys:?}",
                        self.files[fi].path,
                        rows.get(read + r).copied().unwrap_or_default()
                    )));
                }
                read += batch.num_rows();
                if batch.num_rows() > 0 {
                    found.push(batch);
                }
            }
            if read != rows.len() {
                return Err(JobError::Invalid(format!(
                    "reading {}: {read} of {} rows of row group {ri} read",
                    self.files[fi].path,
                    rows.len()
                )));
            }
        }
        tracing::trace!(
            ?keys,
            rows = hits.len(),
            fetched = self.bytes_fetched() - start,
            reads = self.reads() - start_reads,
            "point lookup"
        );
        Ok(found)
    }

    /// Columns `columns` of row group `ri` of file `fi`: every row, or only
    /// `rows` (sorted), reading just the pages that hold them.
    async fn read_row_group(
        &self,
        fi: usize,
        ri: usize,
        columns: &[&str],
        rows: Option<&[usize]>,
    ) -> Result<Vec<RecordBatch>> {
        let file = &self.files[fi];
        let meta = self.footer(file).await?;
        let schema = meta.metadata().file_metadata().schema_descr();
        let mask = ProjectionMask::columns(schema, columns.iter().copied());
        let total = usize::try_from(meta.metadata().row_group(ri).num_rows()).unwrap_or(0);
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(self.ranges(file), meta)
                .with_row_groups(vec![ri])
                .with_projection(mask);
        if let Some(rows) = rows {
            builder = builder.with_row_selection(selection(rows, total));
        }
        builder
            .build()
            .map_err(|e| parquet_err(&file.path, e))?
            .try_collect()
            .await
            .map_err(|e| parquet_err(&file.path, e))
    }

    /// Byte ranges of `file` for the Parquet reader.
    fn ranges(&self, file: &DataFile) -> FileRanges {
        let local = self.local.as_ref();
        FileRanges::new(&self.store, local, &file.path, file.size, &self.stats)
    }

    /// Bytes read from the store by this locator so far.
    pub fn bytes_fetched(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }

    /// Read calls made so far (each one round trip to an object store).
    pub fn reads(&self) -> u64 {
        self.stats.calls.load(Ordering::Relaxed)
    }

    /// The footer of `file`, read once.
    async fn footer(&self, file: &DataFile) -> Result<ArrowReaderMetadata> {
        if let Some(m) = self
            .footers
            .lock()
            .ok()
            .and_then(|f| f.get(&file.path).cloned())
        {
            return Ok(m);
        }
        let mut reader = self.ranges(file);
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load_async(&mut reader, options.clone())
            .await
            .and_then(|m| with_binary_views(m, options))
            .map_err(|e| parquet_err(&file.path, e))?;
        if let Ok(mut f) = self.footers.lock() {
            f.insert(file.path.clone(), meta.clone());
        }
        Ok(meta)
    }
}

/// `meta` with binary columns read as `BinaryView`: each value then points
/// into its decoded page instead of being copied out of it. Blobs are most of
/// the bytes a lookup reads (that copy was 6.6 % of `verify`'s CPU).
fn with_binary_views(
    meta: ArrowReaderMetadata,
    options: ArrowReaderOptions,
) -> deltalake::parquet::errors::Result<ArrowReaderMetadata> {
    let schema = meta.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Binary)
    {
        return Ok(meta);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Binary => f.as_ref().clone().with_data_type(DataType::BinaryView),
            _ => f.as_ref().clone(),
        })
        .collect();
    let views = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    ArrowReaderMetadata::try_new(meta.metadata().clone(), options.with_schema(views))
}

/// Row groups whose key columns one lookup reads at once into the index.
const INDEX_READS: usize = 8;

fn poisoned() -> JobError {
    JobError::Invalid("a key index lock was poisoned by a panic".into())
}

/// Only `rows` (sorted, distinct) of a row group of `total` rows.
fn selection(rows: &[usize], total: usize) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0;
    for &r in rows {
        if r < at {
            continue;
        }
        if r > at {
            selectors.push(RowSelector::skip(r - at));
        }
        selectors.push(RowSelector::select(1));
        at = r + 1;
    }
    if total > at {
        selectors.push(RowSelector::skip(total - at));
    }
    RowSelection::from(selectors)
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> JobError {
    JobError::Invalid(format!("reading {path}: {e}"))
}

/// True unless the file's Delta statistics rule a key out. String bounds may
/// be truncated prefixes, so only the key's prefix of the same length is
/// compared with the maximum.
fn file_admits(file: &DataFile, keys: &[(&str, Key<'_>)]) -> bool {
    keys.iter().all(|(col, key)| {
        let lo = file.min.as_ref().and_then(|m| m.get(*col));
        let hi = file.max.as_ref().and_then(|m| m.get(*col));
        match key {
            Key::Str(v) => {
                lo.and_then(|l| l.as_str()).is_none_or(|l| l <= *v)
                    && hi
                        .and_then(|h| h.as_str())
                        .is_none_or(|h| str_prefix_le(v, h))
            }
            Key::Int(v) => {
                lo.and_then(serde_json::Value::as_i64)
                    .is_none_or(|l| l <= *v)
                    && hi
                        .and_then(serde_json::Value::as_i64)
                        .is_none_or(|h| *v <= h)
            }
        }
    })
}

/// True if `v`, cut to the length of the (possibly truncated) maximum, is at
/// most that maximum.
fn str_prefix_le(v: &str, max: &str) -> bool {
    let v = v.as_bytes();
    v.get(..max.len()).unwrap_or(v) <= max.as_bytes()
}

/// True unless the row group's Parquet statistics rule a key out.
fn row_group_admits(rg: &RowGroupMetaData, keys: &[(&str, Key<'_>)]) -> bool {
    keys.iter().all(|(col, key)| {
        let Some(stats) = rg
            .columns()
            .iter()
            .find(|c| c.column_path().parts() == [*col])
            .and_then(|c| c.statistics())
        else {
            return true;
        };
        match (key, stats) {
            (Key::Str(v), Statistics::ByteArray(s)) => {
                s.min_opt().is_none_or(|l| l.data() <= v.as_bytes())
                    && s.max_opt().is_none_or(|h| {
                        let h = h.data();
                        let v = v.as_bytes();
                        v.get(..h.len()).unwrap_or(v) <= h
                    })
            }
            (Key::Int(v), Statistics::Int32(s)) => {
                s.min_opt().is_none_or(|l| i64::from(*l) <= *v)
                    && s.max_opt().is_none_or(|h| *v <= i64::from(*h))
            }
            (Key::Int(v), Statistics::Int64(s)) => {
                s.min_opt().is_none_or(|l| l <= v) && s.max_opt().is_none_or(|h| v <= h)
            }
            _ => true,
        }
    })
}

/// True if every key column of `row` equals its key.
fn row_matches(batch: &RecordBatch, row: usize, keys: &[(&str, Key<'_>)]) -> bool {
    keys.iter().all(|(col, key)| {
        let Some(c) = batch.column_by_name(col) else {
            return false;
        };
        match key {
            Key::Str(v) => string_value(c.as_ref(), row) == Some(*v),
            Key::Int(v) => !c.is_null(row) && int_value(c.as_ref(), row) == Some(*v),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_string_maxima_still_admit_their_keys() {
        // A 64-character key against a maximum cut to its first 32 characters.
        let key = "f".repeat(64);
        assert!(str_prefix_le(&key, &"f".repeat(32)));
        assert!(str_prefix_le("abc", "abd"));
        assert!(!str_prefix_le("abe", "abd"));
        assert!(str_prefix_le("ab", "abd"));
        let file = DataFile {
            path: Path::from("x"),
            size: 0,
            min: Some(serde_json::json!({"k": "b", "i": 3})),
            max: Some(serde_json::json!({"k": "d", "i": 5})),
        };
        assert!(file_admits(
            &file,
            &[("k", Key::Str("c")), ("i", Key::Int(4))]
        ));
        assert!(file_admits(&file, &[("k", Key::Str("dzz"))]));
        assert!(!file_admits(&file, &[("k", Key::Str("a"))]));
        assert!(!file_admits(&file, &[("i", Key::Int(6))]));
        // Columns without statistics rule nothing out.
        assert!(file_admits(&file, &[("other", Key::Int(6))]));
    }

    /// Writes the same blob parts to `silver.tensor_blobs` of a new lake, in
    /// three commits (three files), partitioned by `part_index` or not.
    async fn blob_lake(dir: &std::path::Path, partitioned: bool) -> crate::lake::Lake {
        use deltalake::arrow::array::{ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray};
        use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
        use deltalake::kernel::{StructField, StructType};
        use weightlake_schemas::silver;

        let lake =
            crate::lake::Lake::new(&dir.display().to_string(), Default::default()).expect("lake");
        let url = lake.table_url(silver::TENSOR_BLOBS);
        std::fs::create_dir_all(url.to_file_path().expect("path")).expect("mkdir");
        let schema = silver::tensor_blobs_schema();
        let columns: Vec<StructField> = StructType::try_from_arrow(schema.as_ref())
            .expect("kernel schema")
            .fields()
            .cloned()
            .collect();
        let mut create = deltalake::DeltaTableBuilder::from_url(url)
            .expect("url")
            .build()
            .expect("table")
            .create()
            .with_columns(columns);
        if partitioned {
            create = create.with_partition_columns(["part_index"]);
        }
        let mut table = create.await.expect("create");
        for sha in ["aa", "bb", "cc"] {
            let n = 3;
            let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
            let int64 = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
            let data: Vec<Vec<u8>> = (0..n).map(|p| format!("{sha}-{p}").into_bytes()).collect();
            let cols: Vec<ArrayRef> = vec![
                text(sha),
                Arc::new(Int32Array::from(vec![0, 1, 2])),
                Arc::new(Int32Array::from(vec![3; n])),
                int64(vec![0, 4, 8]),
                int64(vec![4; n]),
                Arc::new(Int32Array::from(vec![1; n])),
                text("raw"),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
                int64(vec![4; n]),
                text("run"),
                Arc::new(BinaryArray::from_iter_values(data)),
            ];
            let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
            table = table.write(vec![batch]).await.expect("write");
        }
        lake
    }

    /// `(content_sha256, part_index, data)` of every row found, sorted.
    fn found(batches: &[RecordBatch]) -> Vec<(String, i64, Vec<u8>)> {
        use crate::sql::binary_value;
        let mut rows = Vec::new();
        for b in batches {
            let col = |name: &str| b.column_by_name(name).expect(name).clone();
            for r in 0..b.num_rows() {
                rows.push((
                    string_value(col("content_sha256").as_ref(), r)
                        .unwrap_or_default()
                        .to_string(),
                    int_value(col("part_index").as_ref(), r).unwrap_or(-1),
                    binary_value(col("data").as_ref(), r)
                        .unwrap_or_default()
                        .to_vec(),
                ));
            }
        }
        rows.sort();
        rows
    }

    #[tokio::test]
    async fn tables_without_a_locator_answer_the_same_lookups_through_datafusion() {
        use weightlake_schemas::silver::TENSOR_BLOBS;
        let (plain_dir, parted_dir) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let plain = LakeSession::new(&blob_lake(plain_dir.path(), false).await)
            .await
            .expect("session");
        let parted = LakeSession::new(&blob_lake(parted_dir.path(), true).await)
            .await
            .expect("session");
        // The partitioned table takes the DataFusion path, the other the locator.
        assert!(plain.locator(TENSOR_BLOBS).is_some());
        assert!(parted.locator(TENSOR_BLOBS).is_none());

        let part = [
            ("content_sha256", Key::Str("bb")),
            ("part_index", Key::Int(1)),
        ];
        let all_parts = [("content_sha256", Key::Str("cc"))];
        let missing = [("content_sha256", Key::Str("bz"))];
        // (keys, columns besides the keys)
        type Case<'k> = (&'k [(&'k str, Key<'k>)], &'k [&'k str]);
        let cases: [Case<'_>; 3] = [
            (&part, &["data"]),
            (&all_parts, &["part_index", "data"]),
            (&missing, &["part_index", "data"]),
        ];
        let mut answers = Vec::new();
        for (keys, columns) in cases {
            let a = lookup(&plain, TENSOR_BLOBS, keys, columns).await;
            let b = lookup(&parted, TENSOR_BLOBS, keys, columns).await;
            let (a, b) = (found(&a.expect("locator")), found(&b.expect("scan")));
            assert_eq!(a, b, "keys {keys:?}");
            answers.push(b);
        }
        assert_eq!(answers[0], vec![("bb".to_string(), 1, b"bb-1".to_vec())]);
        let parts: Vec<i64> = answers[1].iter().map(|r| r.1).collect();
        assert_eq!(parts, vec![0, 1, 2]);
        assert_eq!(answers[1][2].2, b"cc-2".to_vec());
        assert!(answers[2].is_empty());
    }

    #[tokio::test]
    async fn a_point_lookup_fetches_its_own_pages_not_its_row_group() {
        use deltalake::arrow::array::{ArrayRef, BinaryArray, Int32Array, Int64Array, StringArray};
        use weightlake_schemas::silver::{self, TENSOR_BLOBS};

        // 32 blobs of 256 KiB (8 MiB, one row group) in one commit, written as
        // blob tables are written.
        let dir = tempfile::tempdir().expect("tmp");
        let table = blob_lake(dir.path(), false).await;
        let mut t = table
            .open(TENSOR_BLOBS)
            .await
            .expect("open")
            .expect("table");
        let n = 32;
        let shas: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        let blob =
            |i: usize| -> Vec<u8> { (0..256 << 10).map(|j| (j * 7 + i * 13) as u8).collect() };
        let text = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let cols: Vec<ArrayRef> = vec![
            text(shas.iter().map(String::as_str).collect()),
            Arc::new(Int32Array::from(vec![0; n])),
            Arc::new(Int32Array::from(vec![1; n])),
            Arc::new(Int64Array::from(vec![0; n])),
            Arc::new(Int64Array::from(vec![256 << 10; n])),
            Arc::new(Int32Array::from(vec![1; n])),
            text(vec!["raw"; n]),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(Int64Array::from(vec![256 << 10; n])),
            text(vec!["run"; n]),
            Arc::new(BinaryArray::from_iter_values((0..n).map(blob))),
        ];
        let batch = RecordBatch::try_new(silver::tensor_blobs_schema(), cols).expect("batch");
        t = t
            .write(vec![batch])
            .with_writer_properties(crate::append::table_writer_properties(TENSOR_BLOBS))
            .await
            .expect("write");
        drop(t);

        let session = LakeSession::new(&table).await.expect("session");
        let locator = session.locator(TENSOR_BLOBS).expect("locator");
        let get = |i: usize| {
            let keys = [("content_sha256", Key::Str(&shas[i]))];
            let locator = locator.clone();
            async move { locator.find(&keys, &["data"]).await.expect("find") }
        };
        get(0).await; // reads the footers and indexes the row group's keys
        let (before, reads) = (locator.bytes_fetched(), locator.reads());
        let rows = found_data(&get(5).await);
        assert_eq!(rows, vec![blob(5)]);
        let fetched = locator.bytes_fetched() - before;
        assert!(
            fetched < 3 << 19,
            "one 256 KiB blob cost {fetched} bytes of reads"
        );
        // One round trip: the keys are known, only the row's pages are read.
        assert_eq!(locator.reads() - reads, 1);
        // A key that is not there costs no read at all.
        let reads = locator.reads();
        let keys = [("content_sha256", Key::Str("d55"))]; // within the row group's min..max
        assert!(
            locator
                .find(&keys, &["data"])
                .await
                .expect("find")
                .is_empty()
        );
        assert_eq!(locator.reads(), reads);

        // A one-part content read back: its place and its bytes in one call.
        let reads = locator.reads();
        let bytes = crate::blobs::read_range(&session, &shas[9], 0..256 << 10)
            .await
            .expect("read");
        assert_eq!(&bytes[..], &blob(9)[..]);
        assert_eq!(locator.reads() - reads, 1);
        // Again (its part list is known): one call, no key lookup.
        let reads = locator.reads();
        let bytes = crate::blobs::read_range(&session, &shas[9], 100..200)
            .await
            .expect("read");
        assert_eq!(&bytes[..], &blob(9)[100..200]);
        assert_eq!(locator.reads() - reads, 1);
        // A content of three parts, its file's footer and keys known: its
        // part list in one call, then one call per part.
        let cc = [("content_sha256", Key::Str("cc"))];
        assert_eq!(locator.hits(&cc).await.expect("hits").len(), 3);
        let reads = locator.reads();
        let bytes = crate::blobs::read_range(&session, "cc", 0..12)
            .await
            .expect("read");
        assert_eq!(&bytes[..], b"cc-0cc-1cc-2");
        assert_eq!(locator.reads() - reads, 4);
    }

    fn found_data(batches: &[RecordBatch]) -> Vec<Vec<u8>> {
        use crate::sql::binary_value;
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("data").expect("data").clone();
                (0..b.num_rows())
                    .map(move |r| binary_value(c.as_ref(), r).unwrap_or_default().to_vec())
            })
            .collect()
    }
}
