//! Table maintenance: bronze retention, compaction (optimize), vacuum and
//! checkpoints, in that order.
//!
//! 1. **Bronze retention** (off by default, [`MaintainJob::with_bronze_retention`]):
//!    the chunk rows of a complete bronze file older than the retention are
//!    deleted once its silver rows rebuild it bit for bit (see [`retention`]).
//!    Its `bronze.files` row stays, so `ingest` and `tensorise` still skip it.
//! 2. **Optimize**: small files are bin-packed into files of about
//!    `target_file_size`, written with the same Parquet properties as the
//!    table's writers (no statistics or dictionary on blob columns).
//! 3. **Vacuum**: data files no longer referenced, and older than the
//!    retention (the table's `delta.deletedFileRetentionDuration`, 7 days by
//!    default), are deleted. This is what frees the bytes of steps 1 and 2.
//! 4. **Checkpoint**: a Parquet checkpoint of the log at the latest version.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use weightlake_jobs::{lake::Lake, maintain::MaintainJob};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let lake = Lake::new("./lake", Default::default())?;
//! let report = MaintainJob::new(lake)
//!     .with_bronze_retention(Duration::from_secs(30 * 86_400))
//!     .await?;
//! for t in &report.tables {
//!     println!("{}: {} -> {} files", t.table, t.files_before, t.files_after);
//! }
//! # Ok(()) }
//! ```

pub mod retention;

use std::future::IntoFuture;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use tracing::info;
use weightlake_schemas::TableName;

use crate::append::table_writer_properties;
use crate::lake::Lake;
use crate::{JobError, Result};

pub use retention::{DroppedFile, KeptFile, RetentionReport};

/// Default size of the files optimize writes (the writers' target too).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;
/// Smallest `target_file_size`.
pub const MIN_TARGET_FILE_SIZE: u64 = 1 << 20;
/// Largest `target_file_size`: compacted blob files stay bounded (a writer
/// holds a file in memory until it is uploaded).
pub const MAX_TARGET_FILE_SIZE: u64 = 1 << 30;
/// Files of bronze rebuilt and checked at once by bronze retention.
const VERIFY_CONCURRENCY: usize = 4;

/// What maintenance did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: TableName,
    /// Active data files before maintenance.
    pub files_before: usize,
    /// Active data files after maintenance.
    pub files_after: usize,
    /// Files optimize read and replaced.
    pub files_compacted: u64,
    /// Files optimize wrote.
    pub files_written: u64,
    /// Bytes of the files optimize replaced.
    pub bytes_compacted: u64,
    /// Bytes of the files optimize wrote.
    pub bytes_written: u64,
    /// Data files vacuum deleted from storage.
    pub files_vacuumed: usize,
    /// Their bytes, as vacuum recorded them in its `VACUUM START` commit.
    pub bytes_vacuumed: u64,
    /// The version checkpointed, when a checkpoint was written.
    pub checkpoint_version: Option<u64>,
    /// The table version after maintenance.
    pub version: u64,
}

/// What a maintain run did.
#[derive(Debug, Clone, Default)]
pub struct MaintainReport {
    /// The run id recorded in the commits.
    pub run_id: String,
    /// Per table, in [`TableName::ALL`] order.
    pub tables: Vec<TableReport>,
    /// Tables asked for that do not exist yet (skipped).
    pub missing: Vec<TableName>,
    /// Bronze retention, when it was on and ran.
    pub bronze: Option<RetentionReport>,
    /// Why bronze retention was on and did not run (another maintain run
    /// was rewriting `bronze.model_files`).
    pub bronze_skipped: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl MaintainReport {
    /// Bytes optimize rewrote, over every table.
    pub fn bytes_compacted(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes_compacted).sum()
    }

    /// Files vacuum deleted, over every table.
    pub fn files_vacuumed(&self) -> usize {
        self.tables.iter().map(|t| t.files_vacuumed).sum()
    }

    /// Bytes vacuum deleted, over every table.
    pub fn bytes_vacuumed(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes_vacuumed).sum()
    }
}

/// Builder of a maintain run; `.await` it.
#[must_use = "a MaintainJob does nothing until awaited"]
pub struct MaintainJob {
    lake: Lake,
    tables: Option<Vec<TableName>>,
    optimize: bool,
    target_file_size: u64,
    vacuum: bool,
    vacuum_retention: Option<Duration>,
    allow_short_retention: bool,
    bronze_retention: Option<Duration>,
    drop_replaced: bool,
    checkpoint: bool,
    now: Option<DateTime<Utc>>,
    run_id: Option<String>,
}

impl MaintainJob {
    /// Maintain every existing table of `lake`: optimize, vacuum with each
    /// table's retention, checkpoint; no bronze retention.
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            tables: None,
            optimize: true,
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            vacuum: true,
            vacuum_retention: None,
            allow_short_retention: false,
            bronze_retention: None,
            drop_replaced: false,
            checkpoint: true,
            now: None,
            run_id: None,
        }
    }

    /// Optimize, vacuum and checkpoint only these tables (bronze retention
    /// is set on its own).
    pub fn with_tables(mut self, tables: Vec<TableName>) -> Self {
        self.tables = Some(tables);
        self
    }

    /// Compact small files (default on).
    pub fn with_optimize(mut self, on: bool) -> Self {
        self.optimize = on;
        self
    }

    /// Size of the files optimize writes, [`MIN_TARGET_FILE_SIZE`] to
    /// [`MAX_TARGET_FILE_SIZE`] (default [`DEFAULT_TARGET_FILE_SIZE`]).
    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = bytes;
        self
    }

    /// Delete unreferenced data files past the retention (default on).
    pub fn with_vacuum(mut self, on: bool) -> Self {
        self.vacuum = on;
        self
    }

    /// Keep unreferenced files this long (default: the table's
    /// `delta.deletedFileRetentionDuration`, 7 days). Shorter than the
    /// table's is refused unless [`MaintainJob::allow_short_retention`].
    pub fn with_vacuum_retention(mut self, retention: Duration) -> Self {
        self.vacuum_retention = Some(retention);
        self
    }

    /// Accept a vacuum retention shorter than the table's (Delta's
    /// `retentionDurationCheck = false`): readers of old versions and writers
    /// in flight may then lose files.
    pub fn allow_short_retention(mut self, allow: bool) -> Self {
        self.allow_short_retention = allow;
        self
    }

    /// Drop the bronze chunks of complete files older than this whose silver
    /// rows rebuild them bit for bit (default off).
    pub fn with_bronze_retention(mut self, older_than: Duration) -> Self {
        self.bronze_retention = Some(older_than);
        self
    }

    /// With bronze retention, also drop the chunks of file versions that
    /// were replaced or removed at the source before they were tensorised
    /// (no revision has them now, and bronze holds their only copy; kept by
    /// default).
    pub fn drop_replaced(mut self, on: bool) -> Self {
        self.drop_replaced = on;
        self
    }

    /// Write a checkpoint of each table (default on).
    pub fn with_checkpoint(mut self, on: bool) -> Self {
        self.checkpoint = on;
        self
    }

    /// The time bronze retention measures ages from (default: now).
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    /// Record this run id in the commits (default: a new UUID).
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }
}

impl IntoFuture for MaintainJob {
    type Output = Result<MaintainReport>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl MaintainJob {
    async fn run(self) -> Result<MaintainReport> {
        let started = Instant::now();
        if !(MIN_TARGET_FILE_SIZE..=MAX_TARGET_FILE_SIZE).contains(&self.target_file_size) {
            return Err(JobError::Invalid(format!(
                "target file size {} bytes is outside 1MiB..1GiB",
                self.target_file_size
            )));
        }
        let run_id = self
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut report = MaintainReport {
            run_id: run_id.clone(),
            ..Default::default()
        };
        // Open every table and check the retention first: a refused option
        // must fail the run before anything changes.
        let mut tables = Vec::new();
        for name in self.tables.as_deref().unwrap_or(TableName::ALL) {
            match self.lake.open(*name).await? {
                Some(t) => {
                    self.check_retention(*name, &t)?;
                    tables.push((*name, active_files(&t)?));
                }
                None if self.tables.is_some() => report.missing.push(*name),
                None => {}
            }
        }
        if let Some(older_than) = self.bronze_retention {
            // Retention deletes rows of bronze.model_files: it takes the
            // table's compaction lock, so two maintains never rewrite it at
            // once (Delta would fail one of them on the conflict).
            let lock_name = crate::lock::compaction(weightlake_schemas::bronze::MODEL_FILES);
            match crate::lock::acquire(&self.lake, &lock_name, &run_id).await? {
                Ok(lock) => {
                    let now = self.now.unwrap_or_else(Utc::now);
                    let done = retention::drop_verified(
                        &self.lake,
                        older_than,
                        now,
                        &run_id,
                        VERIFY_CONCURRENCY,
                        self.drop_replaced,
                    )
                    .await;
                    lock.release().await;
                    report.bronze = Some(done?);
                }
                Err(holder) => {
                    let why = format!(
                        "another maintain run ({}) is rewriting bronze.model_files; the next run \
                         applies retention",
                        holder.run_id
                    );
                    tracing::warn!("bronze retention skipped: {why}");
                    report.bronze_skipped = Some(why);
                }
            }
        }
        for (name, files_before) in tables {
            // Reopen: bronze retention may have committed since.
            let table = self
                .lake
                .open(name)
                .await?
                .ok_or_else(|| JobError::Invalid(format!("{name} vanished")))?;
            let mut r = self.maintain_table(name, table, &run_id).await?;
            r.files_before = files_before;
            report.tables.push(r);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Refuse a vacuum retention shorter than the table's minimum unless allowed.
    fn check_retention(&self, name: TableName, table: &DeltaTable) -> Result<()> {
        let (true, Some(asked), false) = (
            self.vacuum,
            self.vacuum_retention,
            self.allow_short_retention,
        ) else {
            return Ok(());
        };
        let state = table.snapshot().map_err(|e| JobError::delta(name, e))?;
        let min = state.table_config().deleted_file_retention_duration();
        if asked < min {
            return Err(JobError::Invalid(format!(
                "vacuum retention {} is shorter than the {} that {name} keeps deleted files \
                 (delta.deletedFileRetentionDuration): readers of older versions and writers \
                 in flight could lose files. Use a longer retention, or allow it explicitly \
                 (--allow-short-retention, `allow_short_retention: true`)",
                human_duration(asked),
                human_duration(min)
            )));
        }
        Ok(())
    }

    /// Bin-pack `table`'s small files (the caller holds its compaction lock).
    async fn compact(
        &self,
        name: TableName,
        table: DeltaTable,
        run_id: &str,
    ) -> Result<(DeltaTable, deltalake::operations::optimize::Metrics)> {
        let target = NonZeroU64::new(self.target_file_size).unwrap_or(NonZeroU64::MIN);
        table
            .optimize()
            .with_target_size(target)
            .with_writer_properties(table_writer_properties(name))
            .with_commit_properties(commit_properties(run_id, Vec::new()))
            .await
            .map_err(|e| JobError::delta(name, e))
    }

    /// Optimize, vacuum and checkpoint one table (`files_before` is counted
    /// here too; the caller may count it earlier).
    async fn maintain_table(
        &self,
        name: TableName,
        mut table: DeltaTable,
        run_id: &str,
    ) -> Result<TableReport> {
        let delta = |e| JobError::delta(name, e);
        let mut r = TableReport {
            table: name,
            files_before: active_files(&table)?,
            files_after: 0,
            files_compacted: 0,
            files_written: 0,
            bytes_compacted: 0,
            bytes_written: 0,
            files_vacuumed: 0,
            bytes_vacuumed: 0,
            checkpoint_version: None,
            version: 0,
        };
        if self.optimize {
            match crate::lock::acquire(&self.lake, &crate::lock::compaction(name), run_id).await? {
                Ok(lock) => {
                    // The lock was taken after `table` was loaded: compact
                    // what is there now, not what another compaction replaced.
                    let refreshed = table.update_state().await.map_err(delta);
                    let limited = match refreshed {
                        Ok(()) => limit_stats_columns(name, table.clone(), run_id).await,
                        Err(e) => Err(e),
                    };
                    let compacted = match limited {
                        Ok(t) => self.compact(name, t, run_id).await,
                        Err(e) => Err(e),
                    };
                    lock.release().await;
                    let (t, m) = compacted?;
                    table = t;
                    r.files_compacted = m.num_files_removed;
                    r.files_written = m.num_files_added;
                    r.bytes_compacted = m.files_removed.total_size.max(0) as u64;
                    r.bytes_written = m.files_added.total_size.max(0) as u64;
                }
                Err(holder) => {
                    tracing::warn!(
                        table = %name,
                        holder = %holder.run_id,
                        renewed_s_ago = chrono::Utc::now().timestamp() - holder.heartbeat_at,
                        "another maintain run is compacting this table; not compacting it again \
                         (a lock not renewed for 90 s, or whose process on this machine is gone, \
                         is taken over)"
                    );
                }
            }
        }
        if self.vacuum {
            let keep = self
                .vacuum_retention
                .map(|keep| {
                    chrono::Duration::from_std(keep).map_err(|_| {
                        JobError::Invalid(format!(
                            "vacuum retention {} is too long",
                            human_duration(keep)
                        ))
                    })
                })
                .transpose()?;
            let vacuum = |t: DeltaTable, dry_run: bool| {
                let mut v = t
                    .vacuum()
                    .with_mode(VacuumMode::Full)
                    .with_dry_run(dry_run)
                    .with_enforce_retention_duration(!self.allow_short_retention)
                    .with_commit_properties(commit_properties(run_id, Vec::new()));
                if let Some(keep) = keep {
                    v = v.with_retention_period(keep);
                }
                v
            };
            // delta-rs lists every expired tombstone, deleted before or not:
            // counted as they were, each run reported the same files and bytes
            // freed again, and committed a vacuum that deleted nothing. Only
            // the files still there are counted, and none means no vacuum.
            let (_, plan) = vacuum(table.clone(), true).await.map_err(delta)?;
            let present = match plan.files_deleted.is_empty() {
                true => Default::default(),
                false => present_files(&table).await.map_err(delta)?,
            };
            let doomed: Vec<u64> = plan
                .files_deleted
                .iter()
                .filter_map(|p| present.get(p.as_str()).copied())
                .collect();
            if !doomed.is_empty() {
                let (t, _) = vacuum(table, false).await.map_err(delta)?;
                table = t;
                r.files_vacuumed = doomed.len();
                r.bytes_vacuumed = doomed.iter().sum();
            }
        }
        r.files_after = active_files(&table)?;
        if self.checkpoint {
            // A checkpoint of the version the last one already covers would
            // only be written again.
            if last_checkpoint(&table).await != table.version() {
                deltalake::checkpoints::create_checkpoint(&table, None)
                    .await
                    .map_err(delta)?;
            }
            r.checkpoint_version = table.version();
        }
        r.version = table.version().unwrap_or(0);
        info!(
            table = %name,
            files_before = r.files_before,
            files_after = r.files_after,
            compacted = r.files_compacted,
            vacuumed = r.files_vacuumed,
            vacuumed_bytes = r.bytes_vacuumed,
            checkpoint = ?r.checkpoint_version,
            "maintained"
        );
        Ok(r)
    }
}

/// Give a table written before statistics were limited (see
/// [`crate::lake::skipping_stats_columns`]) the limit, when its columns
/// include one that statistics should not cover: files written from then on,
/// and the files compaction rewrites, carry no statistics that would make
/// readers skip them. One metadata commit, once per table; a writer that
/// commits at the same moment fails on the conflict and can be rerun.
async fn limit_stats_columns(
    name: TableName,
    table: DeltaTable,
    run_id: &str,
) -> Result<DeltaTable> {
    let snapshot = table.snapshot().map_err(|e| JobError::delta(name, e))?;
    if snapshot
        .table_config()
        .data_skipping_stats_columns
        .is_some()
    {
        return Ok(table);
    }
    let schema = snapshot.snapshot().arrow_schema();
    let columns = crate::lake::skipping_stats_columns(&schema);
    if columns.split(',').count() == schema.fields().len() {
        return Ok(table);
    }
    info!(table = %name, columns = %columns, "limiting Delta statistics to these columns");
    let properties = [(crate::lake::STATS_COLUMNS_PROPERTY.to_string(), columns)];
    table
        .set_tbl_properties()
        .with_properties(properties.into_iter().collect())
        .with_commit_properties(commit_properties(run_id, Vec::new()))
        .await
        .map_err(|e| JobError::delta(name, e))
}

/// The files under `table`'s root now, by path (relative to the root, as
/// vacuum names them), with their sizes.
async fn present_files(
    table: &DeltaTable,
) -> std::result::Result<std::collections::HashMap<String, u64>, deltalake::DeltaTableError> {
    let store = table.log_store().object_store(None);
    let mut listing = store.list(None);
    let mut present = std::collections::HashMap::new();
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        present.insert(meta.location.to_string(), meta.size);
    }
    Ok(present)
}

/// The version `_delta_log/_last_checkpoint` names, if it can be read.
async fn last_checkpoint(table: &DeltaTable) -> Option<u64> {
    use object_store::ObjectStoreExt;
    let store = table.log_store().object_store(None);
    let path = object_store::path::Path::from("_delta_log/_last_checkpoint");
    let bytes = store.get(&path).await.ok()?.bytes().await.ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("version")?
        .as_u64()
}

/// Active data files of a table's current version.
fn active_files(table: &DeltaTable) -> Result<usize> {
    let state = table
        .snapshot()
        .map_err(|e| JobError::delta(table.table_url(), e))?;
    Ok(state.log_data().num_files())
}

/// Commit metadata naming the job and the run, plus `extra`.
pub(crate) fn commit_properties(
    run_id: &str,
    extra: Vec<(String, serde_json::Value)>,
) -> CommitProperties {
    let mut meta = vec![
        ("weightlake.job".to_string(), "maintain".into()),
        ("weightlake.run_id".to_string(), run_id.into()),
    ];
    meta.extend(extra);
    CommitProperties::default().with_metadata(meta)
}

/// A duration in its largest whole unit, as pipeline files write it: `7d`,
/// `12h`, `90s`, `1500ms`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_their_largest_unit() {
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human_duration(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }
}
