//! Buffered appends to one Delta table: batches are queued and committed
//! together once they reach a byte threshold, or on [`TableAppender::flush`].

use std::num::NonZeroU64;

use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use tracing::debug;
use weightlake_schemas::TableName;

use crate::ingest::blob_writer_properties;
use crate::{JobError, Result};

/// Queues batches for one table and commits them as one append.
pub(crate) struct TableAppender {
    table: Option<DeltaTable>,
    name: TableName,
    props: WriterProperties,
    pending: Vec<RecordBatch>,
    pending_bytes: u64,
    commit_bytes: u64,
    /// Commits made.
    pub commits: usize,
    /// Rows committed.
    pub rows: usize,
}

impl TableAppender {
    /// Append to `table` (named `name`), committing every `commit_bytes`.
    /// `blob_columns` get no statistics and no dictionary.
    pub fn new(
        table: DeltaTable,
        name: TableName,
        blob_columns: &[&str],
        commit_bytes: u64,
    ) -> Self {
        let props = match blob_columns.first() {
            Some(first) => {
                let mut p = blob_writer_properties(first, 16 << 20).into_builder();
                for c in &blob_columns[1..] {
                    p = p
                        .set_column_dictionary_enabled((*c).into(), false)
                        .set_column_statistics_enabled(
                            (*c).into(),
                            deltalake::parquet::file::properties::EnabledStatistics::None,
                        );
                }
                p.build()
            }
            None => WriterProperties::builder()
                .set_compression(deltalake::parquet::basic::Compression::ZSTD(
                    Default::default(),
                ))
                .build(),
        };
        Self {
            table: Some(table),
            name,
            props,
            pending: Vec::new(),
            pending_bytes: 0,
            commit_bytes,
            commits: 0,
            rows: 0,
        }
    }

    /// Queue a batch; returns true when the threshold is reached (the caller
    /// decides when to flush, to keep commit order across tables).
    pub fn push(&mut self, batch: RecordBatch) -> bool {
        self.pending_bytes += batch.get_array_memory_size() as u64;
        self.pending.push(batch);
        self.pending_bytes >= self.commit_bytes
    }

    /// Commit everything queued as one Delta append.
    pub async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let table = self.table.take().ok_or_else(|| {
            JobError::Invalid(format!("{} writer reused after a failure", self.name))
        })?;
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(self.props.clone())
            .with_target_file_size(NonZeroU64::new(128 << 20))
            .await
            .map_err(|e| JobError::delta(self.name, e))?;
        debug!(table = %self.name, rows = n, version = ?table.version(), "committed");
        self.table = Some(table);
        self.commits += 1;
        self.rows += n;
        Ok(())
    }
}
