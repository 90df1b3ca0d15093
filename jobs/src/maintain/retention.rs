//! Bronze retention: drop the chunk rows of bronze files that silver rebuilds
//! bit for bit, and nothing else.
//!
//! A bronze upload is dropped only when all of this holds:
//!
//! - it is complete (a `bronze.files` row) and that row is older than the
//!   retention (`ingested_at < now - older_than`);
//! - it still has chunk rows in `bronze.model_files`;
//! - silver has a `silver.files` row made from **this upload** (same
//!   `upload_id`, the key `tensorise` uses to skip done files, so tensorise
//!   never picks a dropped upload again) with the same size and sha256;
//! - those exact silver rows (that row's run) rebuild the file, and the
//!   rebuilt bytes have the bronze file's size and sha256 (the check
//!   `weightlake verify` does).
//!
//! Everything else is kept and reported with the reason. The dropped uploads'
//! chunks go in one Delta delete (predicate on `upload_id`), rewritten with
//! the table's writer properties; the `bronze.files` rows stay, so `ingest`
//! still sees the files as complete and downloads nothing. The bytes leave
//! storage when vacuum deletes the replaced Parquet files (after the vacuum
//! retention). The commit records the run and the dropped upload ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deltalake::datafusion::prelude::{Expr, col, lit};
use futures::StreamExt;
use tracing::{info, warn};
use weightlake_schemas::{bronze, silver};

use crate::append::table_writer_properties;
use crate::export::rebuild;
use crate::lake::Lake;
use crate::sql::{LakeSession, int_value, keep_newest, string_value, timestamp_micros};
use crate::view::ModelView;
use crate::{JobError, Result};

/// A bronze file whose chunk rows were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedFile {
    /// Model id.
    pub model_id: String,
    /// Revision.
    pub revision: String,
    /// Path within the model.
    pub file_path: String,
    /// The upload whose chunks were deleted.
    pub upload_id: String,
    /// sha256 of the file, checked on the rebuild from silver.
    pub file_sha256: String,
    /// Chunk rows deleted.
    pub chunks: u64,
    /// Bytes in those chunks.
    pub bytes: u64,
}

/// A bronze file old enough to drop that was kept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptFile {
    /// Model id.
    pub model_id: String,
    /// Revision.
    pub revision: String,
    /// Path within the model.
    pub file_path: String,
    /// The upload kept.
    pub upload_id: String,
    /// Why: not tensorised, or the rebuild from silver failed.
    pub reason: String,
}

/// What bronze retention did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionReport {
    /// Files completed before this time were eligible.
    pub cutoff: DateTime<Utc>,
    /// Files whose chunks were deleted.
    pub dropped: Vec<DroppedFile>,
    /// Eligible files kept, with the reason.
    pub kept: Vec<KeptFile>,
    /// Complete files with chunks that are younger than the retention.
    pub recent: usize,
    /// Chunk rows deleted.
    pub chunks_dropped: u64,
    /// Bytes in the chunks deleted (freed from storage by vacuum).
    pub bytes_freed: u64,
}

/// A complete bronze upload that still has chunks.
#[derive(Debug, Clone)]
struct Candidate {
    model_id: String,
    revision: String,
    file_path: String,
    upload_id: String,
    file_size: u64,
    file_sha256: String,
    ingested_at: i64,
    chunks: u64,
    bytes: u64,
    /// The path's newest bronze row is another upload or a removal: this
    /// version was replaced at the source.
    superseded: bool,
}

impl Candidate {
    fn kept(&self, reason: String) -> KeptFile {
        KeptFile {
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            file_path: self.file_path.clone(),
            upload_id: self.upload_id.clone(),
            reason,
        }
    }
}

/// Drop the chunks of complete bronze files older than `older_than` (at
/// `now`) that silver rebuilds bit for bit.
pub(crate) async fn drop_verified(
    lake: &Lake,
    older_than: Duration,
    now: DateTime<Utc>,
    run_id: &str,
    concurrency: usize,
    drop_replaced: bool,
) -> Result<RetentionReport> {
    let age = chrono::Duration::from_std(older_than)
        .map_err(|_| JobError::Invalid("bronze retention is too long".into()))?;
    let cutoff = now - age;
    let mut report = RetentionReport {
        cutoff,
        dropped: Vec::new(),
        kept: Vec::new(),
        recent: 0,
        chunks_dropped: 0,
        bytes_freed: 0,
    };
    let session = Arc::new(LakeSession::new(lake).await?);
    if !session.has_table(bronze::FILES) || !session.has_table(bronze::MODEL_FILES) {
        return Ok(report);
    }
    let (old, recent) = candidates(&session, cutoff.timestamp_micros()).await?;
    report.recent = recent;
    let silver_rows = silver_rows(&session, &old).await?;
    let silver_now = crate::tensorise::SilverNewest::load(&session).await?;
    let checks = futures::stream::iter(old)
        .map(|c| {
            // A revision's current file that silver's newest row was not made
            // from is still to tensorise (a change back to an earlier upload
            // whose older silver rows exist): its chunks are needed.
            let row = silver_rows.get(&c.upload_id).cloned();
            let waiting = !c.superseded
                && row.is_some()
                && silver_now.newest_upload(&c.model_id, &c.revision, &c.file_path)
                    != Some(c.upload_id.as_str());
            let session = session.clone();
            // Replaced or removed at the source before it was tensorised:
            // bronze holds the only copy of a version no revision has now.
            let replaced = drop_replaced && c.superseded && row.is_none();
            async move {
                let verdict = match waiting {
                    _ if replaced => Ok(()),
                    true => Err(
                        "changed back to this version; silver's newest row is another one \
                         (run tensorise first)"
                            .to_string(),
                    ),
                    false => verify(&session, &c, row).await,
                };
                (c, verdict)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut verified = Vec::new();
    for (c, verdict) in checks {
        match verdict {
            Ok(()) => verified.push(c),
            Err(reason) => {
                warn!(file = %c.file_path, model = %c.model_id, upload_id = %c.upload_id, %reason, "bronze retention keeps the file");
                report.kept.push(c.kept(reason));
            }
        }
    }
    report.kept.sort_by(|a, b| a.upload_id.cmp(&b.upload_id));
    if verified.is_empty() {
        return Ok(report);
    }
    verified.sort_by(|a, b| a.upload_id.cmp(&b.upload_id));
    let ids: Vec<String> = verified.iter().map(|c| c.upload_id.clone()).collect();
    let table = lake
        .open(bronze::MODEL_FILES)
        .await?
        .ok_or_else(|| JobError::Invalid("bronze.model_files vanished".into()))?;
    let props = super::commit_properties(
        run_id,
        vec![(
            "weightlake.bronze_retention.dropped_uploads".into(),
            serde_json::json!(ids),
        )],
    );
    let (_, metrics) = table
        .delete()
        .with_predicate(col("upload_id").in_list(
            ids.iter().map(|i| lit(i.clone())).collect::<Vec<Expr>>(),
            false,
        ))
        .with_writer_properties(table_writer_properties(bronze::MODEL_FILES))
        .with_commit_properties(props)
        .await
        .map_err(|e| JobError::delta(bronze::MODEL_FILES, e))?;
    for c in verified {
        info!(file = %c.file_path, model = %c.model_id, revision = %c.revision, upload_id = %c.upload_id, chunks = c.chunks, bytes = c.bytes, "bronze chunks dropped: silver rebuilds the file");
        report.chunks_dropped += c.chunks;
        report.bytes_freed += c.bytes;
        report.dropped.push(DroppedFile {
            model_id: c.model_id,
            revision: c.revision,
            file_path: c.file_path,
            upload_id: c.upload_id,
            file_sha256: c.file_sha256,
            chunks: c.chunks,
            bytes: c.bytes,
        });
    }
    if let Some(n) = metrics.num_deleted_rows {
        report.chunks_dropped = n as u64;
    }
    Ok(report)
}

/// Complete uploads that still have chunks: those completed before `cutoff`
/// (microseconds since the epoch), and how many are more recent.
async fn candidates(session: &LakeSession, cutoff: i64) -> Result<(Vec<Candidate>, usize)> {
    let chunks = session
        .query(
            "SELECT upload_id, COUNT(*) AS chunks, SUM(chunk_len) AS bytes \
             FROM bronze.model_files GROUP BY upload_id",
        )
        .await?;
    let mut with_chunks: HashMap<String, (u64, u64)> = HashMap::new();
    for b in &chunks {
        for r in 0..b.num_rows() {
            if let Some(id) = string_value(b.column(0).as_ref(), r) {
                let n = |c: usize| int_value(b.column(c).as_ref(), r).unwrap_or(0).max(0) as u64;
                with_chunks.insert(id.to_string(), (n(1), n(2)));
            }
        }
    }
    let files = session
        .context()
        .table(bronze::FILES.to_string())
        .await?
        .select_columns(&[
            "model_id",
            "revision",
            "file_path",
            "upload_id",
            "file_size",
            "file_sha256",
            "ingested_at",
        ])?
        .collect()
        .await?;
    // One entry per upload (two racing ingests may both write its row).
    let mut by_upload: BTreeMap<String, Candidate> = BTreeMap::new();
    // The newest row of each path: (ingested_at, upload_id).
    let mut newest: HashMap<(String, String, String), (i64, String)> = HashMap::new();
    for b in &files {
        for r in 0..b.num_rows() {
            let s = |c: usize| {
                string_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_string()
            };
            let upload_id = s(3);
            let ingested_at = timestamp_micros(b.column(6).as_ref(), r).unwrap_or(i64::MAX);
            let path = (s(0), s(1), s(2));
            keep_newest(&mut newest, path, ingested_at, upload_id.clone());
            let Some(&(chunks, bytes)) = with_chunks.get(&upload_id) else {
                continue; // dropped already
            };
            let c = Candidate {
                model_id: s(0),
                revision: s(1),
                file_path: s(2),
                upload_id: upload_id.clone(),
                file_size: int_value(b.column(4).as_ref(), r).unwrap_or(-1).max(0) as u64,
                file_sha256: s(5),
                ingested_at,
                chunks,
                bytes,
                superseded: false,
            };
            let e = by_upload.entry(upload_id).or_insert_with(|| c.clone());
            e.ingested_at = e.ingested_at.min(c.ingested_at);
        }
    }
    for c in by_upload.values_mut() {
        let path = (c.model_id.clone(), c.revision.clone(), c.file_path.clone());
        c.superseded = newest.get(&path).is_some_and(|(_, id)| *id != c.upload_id);
    }
    let (old, recent): (Vec<_>, Vec<_>) = by_upload
        .into_values()
        .partition(|c| c.ingested_at < cutoff);
    Ok((old, recent.len()))
}

/// A silver file row: what rebuilds one upload.
#[derive(Debug, Clone)]
struct SilverRow {
    file_size: u64,
    file_sha256: String,
    run_id: String,
}

/// The `silver.files` rows made from the candidates' uploads, by upload id
/// (the newest row when a file was tensorised twice).
async fn silver_rows(
    session: &LakeSession,
    candidates: &[Candidate],
) -> Result<HashMap<String, SilverRow>> {
    let mut out = HashMap::new();
    if candidates.is_empty() || !session.has_table(silver::FILES) {
        return Ok(out);
    }
    let ids: Vec<Expr> = candidates
        .iter()
        .map(|c| lit(c.upload_id.clone()))
        .collect();
    let batches = session
        .context()
        .table(silver::FILES.to_string())
        .await?
        .filter(col("upload_id").in_list(ids, false))?
        .select_columns(&[
            "upload_id",
            "file_size",
            "file_sha256",
            "run_id",
            "tensorised_at",
        ])?
        .sort(vec![col("tensorised_at").sort(true, true)])?
        .collect()
        .await?;
    for b in &batches {
        for r in 0..b.num_rows() {
            let s = |c: usize| {
                string_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_string()
            };
            out.insert(
                s(0),
                SilverRow {
                    file_size: int_value(b.column(1).as_ref(), r).unwrap_or(-1).max(0) as u64,
                    file_sha256: s(2),
                    run_id: s(3),
                },
            );
        }
    }
    Ok(out)
}

/// Rebuild the candidate from the silver rows made from its upload; the
/// reason it is kept otherwise.
async fn verify(
    session: &LakeSession,
    c: &Candidate,
    row: Option<SilverRow>,
) -> std::result::Result<(), String> {
    let row = row.ok_or_else(|| match c.superseded {
        // Tensorise only takes a path's newest version: this one never will
        // be, and bronze holds its only copy.
        true => {
            "replaced or removed at the source before it was tensorised; bronze holds its only copy"
                .to_string()
        }
        false => "not in silver (run tensorise first)".to_string(),
    })?;
    if row.file_sha256 != c.file_sha256 || row.file_size != c.file_size {
        return Err(format!(
            "silver has {} bytes with sha256 {}, bronze {} bytes with {}",
            row.file_size, row.file_sha256, c.file_size, c.file_sha256
        ));
    }
    let pins = BTreeMap::from([(c.file_path.as_str(), row.run_id.as_str())]);
    let view = ModelView::runs(session, &c.model_id, &c.revision, &pins)
        .await
        .map_err(|e| format!("silver rows do not assemble: {e}"))?;
    let file = view
        .files
        .get(&c.file_path)
        .ok_or_else(|| format!("silver run {} has no row for the file", row.run_id))?;
    let (_, sha, n, _) = rebuild(session, file, None)
        .await
        .map_err(|e| format!("rebuild from silver failed: {e}"))?;
    if sha != c.file_sha256 || n != c.file_size {
        return Err(format!(
            "rebuilt {n} bytes with sha256 {sha}, bronze has {} bytes with {}",
            c.file_size, c.file_sha256
        ));
    }
    Ok(())
}
