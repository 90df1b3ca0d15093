//! Buffered appends to one Delta table: batches are queued and committed
//! together once they reach a byte threshold, or on [`TableAppender::flush`].

use std::num::NonZeroU64;

use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::protocol::SaveMode;
use tracing::debug;
use weightlake_schemas::{TableName, bronze, silver};

use crate::ingest::blob_writer_properties;
use crate::{JobError, Result};

/// Queues batches for one table and commits them as one append.
pub(crate) struct TableAppender {
    table: Option<DeltaTable>,
    name: TableName,
    props: WriterProperties,
    pub(crate) pending: Vec<RecordBatch>,
    /// Commits made.
    pub commits: usize,
    /// Rows committed.
    pub rows: usize,
}

/// The Parquet writer properties of `table`, the same for every writer of it
/// (appends and `maintain`'s compaction): zstd; blob columns without
/// statistics or dictionary and row groups capped at 16 MiB, so footers and
/// the Delta log never carry blob bytes; `silver.tensor_blobs.data` stored
/// uncompressed (the tensor codec compressed it already).
pub(crate) fn table_writer_properties(table: TableName) -> WriterProperties {
    let blob_columns: &[&str] = if table == bronze::MODEL_FILES {
        &[bronze::DATA_COLUMN]
    } else if table.layer == silver::FILES.layer {
        silver::blob_columns(table)
    } else {
        &[]
    };
    let Some(first) = blob_columns.first() else {
        return WriterProperties::builder()
            .set_compression(Compression::ZSTD(Default::default()))
            .build();
    };
    let mut p = blob_writer_properties(first, 16 << 20).into_builder();
    for c in &blob_columns[1..] {
        p = p
            .set_column_dictionary_enabled((*c).into(), false)
            .set_column_statistics_enabled((*c).into(), EnabledStatistics::None);
    }
    if table == silver::TENSOR_BLOBS {
        p = p.set_column_compression("data".into(), Compression::UNCOMPRESSED);
    }
    // The lookup key is a hash, distinct on nearly every row: a dictionary
    // saves nothing, and reading one row of a column chunk decodes its whole
    // dictionary page first (a lake of many small files made every lookup
    // decode every key of its row group).
    let key = if table == bronze::MODEL_FILES {
        "upload_id"
    } else {
        "content_sha256"
    };
    p = p.set_column_dictionary_enabled(key.into(), false);
    p.build()
}

impl TableAppender {
    /// Append to `table` (named `name`) with [`table_writer_properties`];
    /// [`OrderedCommits`] decides when.
    pub fn new(table: DeltaTable, name: TableName) -> Self {
        Self {
            table: Some(table),
            name,
            props: table_writer_properties(name),
            pending: Vec::new(),
            commits: 0,
            rows: 0,
        }
    }

    /// Commit everything queued as one Delta append.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let table = self.table.take().ok_or_else(|| {
            JobError::Invalid(format!("{} writer reused after a failure", self.name))
        })?;
        let started = std::time::Instant::now();
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(self.props.clone())
            .with_target_file_size(NonZeroU64::new(128 << 20))
            .await
            .map_err(|e| JobError::delta(self.name, e))?;
        debug!(table = %self.name, rows = n, version = ?table.version(), ms = started.elapsed().as_millis() as u64, "committed");
        self.table = Some(table);
        self.commits += 1;
        self.rows += n;
        Ok(())
    }
}

/// Appends to several tables in a fixed order, committing in the background.
///
/// Batches are queued per table; [`OrderedCommits::commit`] hands everything
/// queued to a background task that commits table 0, then table 1, and so on (one
/// Delta commit per table that has rows), while the caller goes on queueing. At
/// most one such group is being written at a time: the next `commit` first waits
/// for the previous one. So memory stays at about two groups, and a row pushed to
/// a later table is never visible before the rows pushed to earlier tables before
/// it (the order the ingest and tensorise commit protocols rely on).
///
/// A failed write surfaces at the next `commit`, [`OrderedCommits::wait`] or
/// [`OrderedCommits::finish`].
pub(crate) struct OrderedCommits {
    idle: Option<Vec<TableAppender>>,
    writing: Option<tokio::task::JoinHandle<Result<Vec<TableAppender>>>>,
    queued: Vec<Vec<RecordBatch>>,
    queued_bytes: u64,
    commit_bytes: u64,
}

impl Drop for OrderedCommits {
    fn drop(&mut self) {
        if let Some(handle) = self.writing.take() {
            crate::on_drop::finish(async move {
                let _ = handle.await;
            });
        }
    }
}

impl OrderedCommits {
    /// Commit to `tables` in this order; [`Self::push`] says when `commit_bytes`
    /// are queued.
    pub fn new(tables: Vec<TableAppender>, commit_bytes: u64) -> Self {
        let n = tables.len();
        Self {
            idle: Some(tables),
            writing: None,
            queued: (0..n).map(|_| Vec::new()).collect(),
            queued_bytes: 0,
            commit_bytes,
        }
    }

    /// Queue `batch` for table `table`; true when a commit is due.
    pub fn push(&mut self, table: usize, batch: RecordBatch) -> bool {
        self.queued_bytes += batch.get_array_memory_size() as u64;
        self.queued[table].push(batch);
        self.queued_bytes >= self.commit_bytes
    }

    /// Bytes queued and not yet handed to a commit.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Wait for the commit in progress, if any.
    pub async fn wait(&mut self) -> Result<()> {
        if let Some(handle) = self.writing.take() {
            let tables = handle
                .await
                .map_err(|e| JobError::Invalid(format!("commit task panicked: {e}")))??;
            self.idle = Some(tables);
        }
        Ok(())
    }

    /// Start committing everything queued (after the commit in progress ends).
    pub async fn commit(&mut self) -> Result<()> {
        if self.queued.iter().all(Vec::is_empty) {
            return Ok(());
        }
        self.wait().await?;
        let mut tables = self
            .idle
            .take()
            .ok_or_else(|| JobError::Invalid("table writer reused after a failure".into()))?;
        for (t, q) in tables.iter_mut().zip(&mut self.queued) {
            t.pending = std::mem::take(q);
        }
        self.queued_bytes = 0;
        self.writing = Some(tokio::spawn(async move {
            for t in &mut tables {
                t.flush().await?;
            }
            Ok(tables)
        }));
        Ok(())
    }

    /// Commit everything queued and wait; returns the tables (for their counts).
    ///
    /// Dropped before that (a stage timeout, Ctrl-C), the commit already
    /// started still finishes, and the drop waits for it; what is only queued
    /// is dropped. Otherwise its commit could land while a retry of the same
    /// job runs, which then, reading the table before it, stored the same
    /// contents a second time.
    pub async fn finish(&mut self) -> Result<&[TableAppender]> {
        self.commit().await?;
        self.wait().await?;
        self.idle
            .as_deref()
            .ok_or_else(|| JobError::Invalid("table writer reused after a failure".into()))
    }
}
