//! What tensorise has to do: bronze's newest row of each path compared with
//! silver's newest row of the same path.
//!
//! A path is done when silver's newest row was made from the same upload as
//! bronze's newest row, or when both record a removal (or bronze records a
//! removal of a path silver never had). Comparing the newest rows, not any
//! row, is what makes a change back to an earlier content (a reverted
//! commit) current again.

use std::collections::{HashMap, HashSet};

use deltalake::datafusion::prelude::{Expr, col, lit};
use tracing::info;
use weightlake_schemas::{bronze, silver};

use super::reader::BronzeFileRef;
use crate::sql::{LakeSession, int_value, keep_newest, string_value, timestamp_micros};
use crate::{JobError, Result};

type PathKey = (String, String, String);

/// Bronze's newest row of each (model, revision, path), removals included,
/// sorted by key.
pub(super) async fn bronze_files(
    session: &LakeSession,
    model: Option<&str>,
) -> Result<Vec<BronzeFileRef>> {
    let mut df = session.context().table(bronze::FILES.to_string()).await?;
    if let Some(m) = model {
        df = df.filter(col("model_id").eq(lit(m.to_string())))?;
    }
    let batches = df
        .select_columns(&[
            "model_id",
            "revision",
            "file_path",
            "upload_id",
            "file_size",
            "file_sha256",
            "chunk_size",
            "ingested_at",
        ])?
        .collect()
        .await?;
    let mut newest: HashMap<PathKey, (i64, BronzeFileRef)> = HashMap::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let s = |c: usize| {
                string_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_string()
            };
            let i = |c: usize| int_value(b.column(c).as_ref(), r).unwrap_or(0);
            let size = i(4);
            let f = BronzeFileRef {
                model_id: s(0),
                revision: s(1),
                file_path: s(2),
                upload_id: s(3),
                file_size: size.max(0) as u64,
                file_sha256: s(5),
                chunk_size: i(6).max(0) as u64,
                removed: size == bronze::REMOVED_SIZE,
            };
            let at = timestamp_micros(b.column(7).as_ref(), r).unwrap_or(0);
            let key = (f.model_id.clone(), f.revision.clone(), f.file_path.clone());
            keep_newest(&mut newest, key, at, f);
        }
    }
    let mut out: Vec<_> = newest.into_values().map(|(_, f)| f).collect();
    out.sort_by(|a, b| {
        (&a.model_id, &a.revision, &a.file_path).cmp(&(&b.model_id, &b.revision, &b.file_path))
    });
    Ok(out)
}

/// Silver's newest row of each path: its upload, and whether it records a
/// removal.
#[derive(Debug, Default)]
pub(crate) struct SilverNewest {
    newest: HashMap<PathKey, (i64, (String, bool))>,
    /// Every (path, upload) silver has a file row of, newest or not.
    uploads: HashSet<(PathKey, String)>,
}

impl SilverNewest {
    /// Read `silver.files` (empty when the table does not exist).
    pub(crate) async fn load(session: &LakeSession) -> Result<Self> {
        let mut out = Self::default();
        if !session.has_table(silver::FILES) {
            return Ok(out);
        }
        let batches = session
            .context()
            .table(silver::FILES.to_string())
            .await?
            .select_columns(&[
                "model_id",
                "revision",
                "file_path",
                "upload_id",
                "format",
                "tensorised_at",
            ])?
            .collect()
            .await?;
        for b in &batches {
            for r in 0..b.num_rows() {
                let s = |c: usize| {
                    string_value(b.column(c).as_ref(), r)
                        .unwrap_or_default()
                        .to_string()
                };
                let at = timestamp_micros(b.column(5).as_ref(), r).unwrap_or(0);
                let key = (s(0), s(1), s(2));
                out.uploads.insert((key.clone(), s(3)));
                let removed = s(4) == silver::REMOVED_FORMAT;
                keep_newest(&mut out.newest, key, at, (s(3), removed));
            }
        }
        Ok(out)
    }

    /// The upload silver's newest row of a path was made from (a removal's
    /// too), if silver has the path.
    pub fn newest_upload(&self, model_id: &str, revision: &str, path: &str) -> Option<&str> {
        let key = (model_id.to_string(), revision.to_string(), path.to_string());
        self.newest
            .get(&key)
            .map(|(_, (upload, _))| upload.as_str())
    }

    /// Does silver hold an earlier row of the path made from `f`'s upload
    /// (the file changed and changed back)? Then that row is restored rather
    /// than the file tensorised again.
    pub fn had(&self, f: &BronzeFileRef) -> bool {
        let key = (f.model_id.clone(), f.revision.clone(), f.file_path.clone());
        !f.removed && self.uploads.contains(&(key, f.upload_id.clone()))
    }

    /// Does silver already reflect bronze's newest row `f`?
    pub fn has(&self, f: &BronzeFileRef) -> bool {
        let key = (f.model_id.clone(), f.revision.clone(), f.file_path.clone());
        match self.newest.get(&key) {
            Some((_, (upload, removed))) => *upload == f.upload_id || (f.removed && *removed),
            None => f.removed,
        }
    }
}

/// Delete tensor rows that an interrupted run wrote for files about to be
/// redone: rows of a path whose run has no `silver.files` row for it. Rows
/// of completed runs stay (gold versions may be pinned to them).
pub(super) async fn delete_orphans(
    table: deltalake::DeltaTable,
    session: &LakeSession,
    todo: &[BronzeFileRef],
) -> Result<deltalake::DeltaTable> {
    if todo.is_empty() {
        return Ok(table);
    }
    let todo_paths: HashSet<PathKey> = todo
        .iter()
        .map(|f| (f.model_id.clone(), f.revision.clone(), f.file_path.clone()))
        .collect();
    let runs = |sql: &'static str| async move {
        let batches = session.query(sql).await?;
        let mut out = HashSet::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let s = |c: usize| {
                    string_value(b.column(c).as_ref(), r)
                        .unwrap_or_default()
                        .to_string()
                };
                out.insert((s(0), s(1), s(2), s(3)));
            }
        }
        Ok::<_, JobError>(out)
    };
    let tensor_runs =
        runs("SELECT DISTINCT model_id, revision, file_path, run_id FROM silver.tensors").await?;
    let file_runs = runs("SELECT model_id, revision, file_path, run_id FROM silver.files").await?;
    let orphans: Vec<_> = tensor_runs
        .into_iter()
        .filter(|(m, r, p, run)| {
            todo_paths.contains(&(m.clone(), r.clone(), p.clone()))
                && !file_runs.contains(&(m.clone(), r.clone(), p.clone(), run.clone()))
        })
        .collect();
    let Some(predicate) = orphans
        .iter()
        .map(|(m, r, p, run)| {
            col("model_id")
                .eq(lit(m.clone()))
                .and(col("revision").eq(lit(r.clone())))
                .and(col("file_path").eq(lit(p.clone())))
                .and(col("run_id").eq(lit(run.clone())))
        })
        .reduce(Expr::or)
    else {
        return Ok(table);
    };
    info!(
        files = orphans.len(),
        "deleting tensor rows of an interrupted run"
    );
    let (table, _) = table
        .delete()
        .with_predicate(predicate)
        .await
        .map_err(|e| JobError::delta(silver::TENSORS, e))?;
    Ok(table)
}

/// Paths of `model_id@revision` whose newest bronze row silver does not
/// reflect yet (ingested or removed since the last tensorise), sorted.
pub(crate) async fn not_tensorised(
    session: &LakeSession,
    model_id: &str,
    revision: &str,
) -> Result<Vec<String>> {
    if !session.has_table(bronze::FILES) {
        return Ok(Vec::new());
    }
    let silver = SilverNewest::load(session).await?;
    Ok(bronze_files(session, Some(model_id))
        .await?
        .into_iter()
        .filter(|f| f.revision == revision && !silver.has(f))
        .map(|f| f.file_path)
        .collect())
}

/// The newest `silver.files` row of `f`'s path made from `f`'s upload, as a
/// new row: the same columns (its `run_id` still names the tensor rows that
/// rebuild it) with `tensorised_at` now, so it becomes the path's newest row
/// again. How a change back to an earlier version is recorded without
/// reading bronze.
pub(super) async fn restored_row(
    session: &LakeSession,
    f: &BronzeFileRef,
) -> Result<deltalake::arrow::array::RecordBatch> {
    use deltalake::arrow::array::{ArrayRef, TimestampMicrosecondArray};
    use deltalake::arrow::compute::cast;
    let batches = session
        .context()
        .table(silver::FILES.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(f.model_id.clone()))
                .and(col("revision").eq(lit(f.revision.clone())))
                .and(col("file_path").eq(lit(f.file_path.clone())))
                .and(col("upload_id").eq(lit(f.upload_id.clone())))
                .and(col("format").not_eq(lit(silver::REMOVED_FORMAT))),
        )?
        .sort(vec![col("tensorised_at").sort(false, true)])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    let row = batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| {
            JobError::Invalid(format!(
                "{}@{}: silver no longer has the earlier row of {} to restore",
                f.model_id, f.revision, f.file_path
            ))
        })?;
    let schema = silver::files_schema();
    let now = chrono::Utc::now().timestamp_micros();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = if field.name() == "tensorised_at" {
            std::sync::Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC"))
        } else {
            let got = row.column_by_name(field.name()).ok_or_else(|| {
                JobError::Invalid(format!("silver.files has no column {}", field.name()))
            })?;
            cast(got, field.data_type())?
        };
        columns.push(column);
    }
    Ok(deltalake::arrow::array::RecordBatch::try_new(
        schema, columns,
    )?)
}
