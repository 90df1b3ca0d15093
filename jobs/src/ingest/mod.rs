//! The ingest job: sources -> `bronze.model_files` (chunks) + `bronze.files`.
//!
//! Exactly once, resumable (see docs/ARCHITECTURE.md, "Ingest commit protocol"):
//!
//! 1. Resolve sources into files; skip files already in `bronze.files` (same
//!    sha256, or same size and ETag).
//! 2. Plan each remaining file into chunks. Chunks of the same upload committed by
//!    an earlier, interrupted run are reused, not downloaded again.
//! 3. Download ranges concurrently but hand them on in file order (a bounded
//!    window: memory stays at `concurrency × chunk_size`), hash each file in
//!    order, and append chunks in commits of at most `commit_bytes`.
//! 4. When a file's last chunk is committed and its size and sha256 check out,
//!    commit its `bronze.files` row. Only then is the file complete.
//!
//! A failed file is reported and does not stop the others; the job then ends
//! with [`JobError::Partial`].

mod download;
mod plan;
mod removed;
mod state;
mod writer;

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};
use weightlake_connectors::http::{DownloadConfig, HttpClient, plan_chunks};
use weightlake_connectors::source::{RemoteFile, SourceSpec};
use weightlake_schemas::bronze;

pub use plan::IngestPlan;
pub use writer::blob_writer_properties;

use crate::lake::Lake;
use crate::progress::{NoProgress, Progress};
use crate::shard::Shard;
use crate::sql::LakeSession;
use crate::{JobError, Result};
use download::{Msg, produce};
use removed::Removal;
use state::{BronzeState, UploadKey};
use writer::{BronzeWriter, ChunkRow, FileRow};

/// Default memory budget for bytes in flight and buffered for commit: 256 MiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 256 << 20;

/// What an ingest run did.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// The run id recorded on every row.
    pub run_id: String,
    /// Files the sources listed (in this shard).
    pub files_total: usize,
    /// Files already complete in bronze.
    pub files_skipped: usize,
    /// Files ingested by this run.
    pub files_ingested: usize,
    /// Files that failed, with the reason.
    pub files_failed: Vec<(String, String)>,
    /// Bytes downloaded by this run (reused chunks not counted).
    pub bytes_downloaded: u64,
    /// Chunks appended to bronze.
    pub chunks_written: usize,
    /// Chunks reused from an interrupted earlier run.
    pub chunks_reused: usize,
    /// Delta commits made.
    pub commits: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Files this run recorded as removed from their revision
    /// (`(model_id, revision, path)`): its source, listed whole, no longer
    /// lists them (a branch that moved, a file deleted from a directory).
    pub removed: Vec<(String, String, String)>,
    /// Files no source of this run lists, of a revision one source listed
    /// whole, that another source added (a single URL): kept.
    pub not_listed: Vec<(String, String, String)>,
    /// Files this run replaces whose copy in bronze came from another
    /// source (another stage or command feeding the same revision: the two
    /// replace each other's copy on every run).
    pub replaced_from_elsewhere: Vec<(String, String, String)>,
}

/// Builder of an ingest run; `.await` it.
#[must_use = "an IngestJob does nothing until awaited"]
pub struct IngestJob {
    lake: Lake,
    sources: Vec<SourceSpec>,
    model_id: Option<String>,
    revision: Option<String>,
    download: DownloadConfig,
    memory_budget: u64,
    shard: Shard,
    run_id: Option<String>,
    hf_token: Option<String>,
    progress: Arc<dyn Progress>,
}

impl IngestJob {
    /// Ingest `sources` into `lake`.
    pub fn new(lake: Lake, sources: Vec<SourceSpec>) -> Self {
        Self {
            lake,
            sources,
            model_id: None,
            revision: None,
            download: DownloadConfig::default(),
            memory_budget: DEFAULT_MEMORY_BUDGET,
            shard: Shard::ALL,
            run_id: None,
            hf_token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
            progress: Arc::new(NoProgress),
        }
    }

    /// Record files under this model id (default: the source's, e.g. the hub repo).
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = Some(id.into());
        self
    }

    /// Record files under this revision (default: the hub revision, else `main`).
    pub fn with_revision(mut self, rev: impl Into<String>) -> Self {
        self.revision = Some(rev.into());
        self
    }

    /// Downloader settings (ranges in flight, chunk size, retries, stall timeout).
    pub fn with_download_config(mut self, cfg: DownloadConfig) -> Self {
        self.download = cfg;
        self
    }

    /// Bytes that may be in flight or buffered for commit (default 256 MiB).
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Take only this shard's files.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Use this run id (default: a new UUID).
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// Hub token (default: `HF_TOKEN`).
    pub fn with_hf_token(mut self, token: Option<String>) -> Self {
        self.hf_token = token;
        self
    }

    /// Report progress here.
    pub fn with_progress(mut self, p: Arc<dyn Progress>) -> Self {
        self.progress = p;
        self
    }
}

impl IntoFuture for IngestJob {
    type Output = Result<IngestReport>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

struct FileTask {
    model_id: String,
    revision: String,
    /// The root of the source that lists it ([`weightlake_connectors::source::ResolvedSource::root`]).
    root: Option<String>,
    file: RemoteFile,
    /// Set once planned: the upload's identity and id.
    upload: Option<(UploadKey, String)>,
}

/// How a file is read: planned chunks (ranged), or one stream cut into chunks.
enum Plan {
    Ranged {
        key: UploadKey,
        chunks: Vec<(i32, std::ops::Range<u64>, bool)>,
    },
    Stream {
        key: UploadKey,
    },
}

struct FileProgress {
    hasher: Sha256,
    bytes: u64,
    failed: bool,
}

/// A model id or revision that `MODEL@REVISION` (tensorise, promote,
/// export, verify, serve) can name later: 1-256 characters, no spaces or
/// control characters, no `@`, no `..` segment.
pub fn check_id(what: &str, v: &str) -> Result<()> {
    if v.is_empty()
        || v.len() > 256
        || v.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '@')
        || v.split('/').any(|s| s == "..")
    {
        return Err(JobError::Invalid(format!(
            "invalid {what} `{v}`: use 1-256 characters without spaces, `@` or `..` \
             (MODEL@REVISION must be able to name it)"
        )));
    }
    Ok(())
}

impl IngestJob {
    async fn run(self) -> Result<IngestReport> {
        let started = Instant::now();
        let run_id = self
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if self.sources.is_empty() {
            return Err(JobError::Invalid("ingest needs at least one source".into()));
        }
        if self.download.chunk_size == 0 || self.download.concurrency == 0 {
            return Err(JobError::Invalid(
                "chunk size and parallelism must be positive".into(),
            ));
        }
        let http = HttpClient::new(self.download.clone())?;
        let (tasks, listings, unreadable) = self.resolve_tasks(&http).await?;
        let mut report = IngestReport {
            run_id: run_id.clone(),
            files_total: tasks.len() + unreadable.len(),
            ..Default::default()
        };
        for (path, why) in unreadable {
            // Escaped: a name with a newline would split the log line.
            warn!(file = %path.escape_debug(), why = %why.escape_debug(), "cannot read this entry of the source");
            report.files_failed.push((path, why));
        }

        let chunks_table = self
            .lake
            .open_or_create(
                bronze::MODEL_FILES,
                bronze::model_files_schema(),
                &bronze_properties(true),
            )
            .await?;
        let files_table = self
            .lake
            .open_or_create(
                bronze::FILES,
                bronze::files_schema(),
                &bronze_properties(false),
            )
            .await?;
        let session = Arc::new(LakeSession::new(&self.lake).await?);
        // Every model the sources list, not only this shard's: a shard with
        // no file of a model may still own a path removed from it.
        let state = BronzeState::load(&session, &listings.model_ids()).await?;
        let compared = listings.compare(&state, self.shard);
        report.not_listed = compared.kept;
        for (model, revision, path) in &report.not_listed {
            warn!(
                model = %model,
                revision = %revision,
                file = %path,
                "no source of this run lists this file of the revision, and it came from \
                 another source; it stays part of {model}@{revision}"
            );
        }

        let (done, todo): (Vec<_>, Vec<_>) = tasks
            .into_iter()
            .partition(|t| state.is_complete(&t.model_id, &t.revision, &t.file));
        report.files_skipped = done.len();
        for t in &done {
            info!(model = %t.model_id, file = %t.file.file_path, "already in bronze; skipping");
        }
        // Two sources (two stages, two commands) feeding one path of a
        // revision replace each other's copy on every run: say so.
        for t in &todo {
            let Some(previous) = state.source_of(&t.model_id, &t.revision, &t.file.file_path)
            else {
                continue;
            };
            let same = match &t.root {
                Some(root) => previous.starts_with(root.as_str()),
                None => previous == t.file.source_uri,
            };
            if !same {
                warn!(model = %t.model_id, revision = %t.revision, file = %t.file.file_path,
                    previous = %previous, "replacing the copy another source gave this revision");
                report.replaced_from_elsewhere.push((
                    t.model_id.clone(),
                    t.revision.clone(),
                    t.file.file_path.clone(),
                ));
            }
        }
        let chunk_size = self.download.chunk_size;
        let mut todo = todo;
        let plans: Vec<Plan> = todo
            .iter_mut()
            .map(|t| plan_file(t, chunk_size, &state, &run_id))
            .collect();
        report.chunks_reused = plans
            .iter()
            .map(|p| match p {
                Plan::Ranged { chunks, .. } => chunks.iter().filter(|c| c.2).count(),
                Plan::Stream { .. } => 0,
            })
            .sum();
        let total_bytes: u64 = todo.iter().filter_map(|t| t.file.size).sum();
        self.progress.begin(todo.len(), total_bytes);

        // An eighth of the budget is queued for the next commit while the one
        // before it is written in the background (about twice that in Arrow and
        // Parquet buffers); the rest is ranges in flight.
        let commit_bytes = (self.memory_budget / 8).max(chunk_size);
        let in_flight =
            ((self.memory_budget.saturating_sub(2 * commit_bytes)) / chunk_size).max(1) as usize;
        let window = in_flight.min(self.download.concurrency);
        if window < self.download.concurrency {
            info!(
                window,
                requested = self.download.concurrency,
                "ranges in flight limited by the memory budget"
            );
        }

        // Ranged files end with their last planned chunk; streams with StreamEnd.
        let mut chunk_counts: Vec<i32> = plans
            .iter()
            .map(|p| match p {
                Plan::Ranged { chunks, .. } => chunks.len() as i32,
                Plan::Stream { .. } => -1,
            })
            .collect();
        let todo = Arc::new(todo);
        let (tx, mut rx) = mpsc::channel::<Msg>(1);
        let failed_flags: Arc<Vec<AtomicBool>> =
            Arc::new(todo.iter().map(|_| AtomicBool::new(false)).collect());
        let producer = tokio::spawn(produce(
            http,
            session.clone(),
            todo.clone(),
            plans,
            window,
            chunk_size,
            failed_flags.clone(),
            tx,
        ));

        let mut writer = BronzeWriter::new(chunks_table, files_table, run_id.clone(), commit_bytes);
        let mut progress: Vec<FileProgress> = todo
            .iter()
            .map(|_| FileProgress {
                hasher: Sha256::new(),
                bytes: 0,
                failed: false,
            })
            .collect();
        for t in todo.iter() {
            self.progress
                .file_started(&t.file.file_path, t.file.size.unwrap_or(0));
        }
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Chunk {
                    file,
                    index,
                    offset,
                    data,
                    reused,
                } => {
                    let p = &mut progress[file];
                    if p.failed {
                        continue;
                    }
                    p.hasher.update(&data);
                    p.bytes += data.len() as u64;
                    let t = &todo[file];
                    self.progress.advance(&t.file.file_path, data.len() as u64);
                    if !reused {
                        report.bytes_downloaded += data.len() as u64;
                        let (key, upload_id) = t.upload.clone().unwrap_or_default();
                        writer
                            .push_chunk(ChunkRow {
                                model_id: t.model_id.clone(),
                                revision: t.revision.clone(),
                                file_path: t.file.file_path.clone(),
                                source_uri: t.file.source_uri.clone(),
                                file_size: key.file_size,
                                etag: key.etag,
                                upload_id,
                                chunk_index: index,
                                chunk_offset: offset as i64,
                                chunk_sha256: hex::encode(Sha256::digest(&data)),
                                data,
                            })
                            .await?;
                    }
                    if index + 1 == chunk_counts[file] {
                        finish_file(
                            &mut writer,
                            &mut report,
                            &mut progress[file],
                            t,
                            chunk_size,
                            chunk_counts[file],
                            &failed_flags[file],
                        );
                        self.progress.file_finished(&t.file.file_path);
                    }
                }
                Msg::StreamEnd { file, chunks } => {
                    chunk_counts[file] = chunks;
                    let t = &todo[file];
                    if !progress[file].failed {
                        finish_file(
                            &mut writer,
                            &mut report,
                            &mut progress[file],
                            t,
                            chunk_size,
                            chunks,
                            &failed_flags[file],
                        );
                    }
                    self.progress.file_finished(&t.file.file_path);
                }
                Msg::Failed { file, error } => {
                    let t = &todo[file];
                    warn!(model = %t.model_id, file = %t.file.file_path.escape_debug(),
                        error = %error.escape_debug(), "file failed");
                    if !progress[file].failed {
                        progress[file].failed = true;
                        report.files_failed.push((t.file.file_path.clone(), error));
                    }
                    self.progress.file_finished(&t.file.file_path);
                }
            }
        }
        producer
            .await
            .map_err(|e| JobError::Invalid(format!("download task panicked: {e}")))?;
        record_removals(&mut writer, &mut report, compared.removed, &run_id);
        report.commits = writer.finish().await?;
        report.chunks_written = writer.chunks_written;
        report.elapsed = started.elapsed();
        if !report.files_failed.is_empty() {
            // Each named, a few of them: under `--quiet` this is all a user sees.
            const NAMED: usize = 3;
            let n = report.files_failed.len();
            let mut first: Vec<String> = report
                .files_failed
                .iter()
                .take(NAMED)
                // A name with a newline would split the line it is named in.
                .map(|(path, err)| {
                    format!("{path}: {err}")
                        .chars()
                        .flat_map(|c| {
                            let escaped: Vec<char> = if c.is_control() {
                                c.escape_default().collect()
                            } else {
                                vec![c]
                            };
                            escaped
                        })
                        .collect::<String>()
                })
                .collect();
            if n > NAMED {
                first.push(format!("and {} more", n - NAMED));
            }
            return Err(JobError::Partial {
                failed: n,
                total: report.files_total - report.files_skipped,
                first: first.join("; "),
            });
        }
        Ok(report)
    }
}

/// Queue a removal row for each file the revision's source no longer lists,
/// once every file of the run succeeded: old shards of a re-sharded
/// checkpoint go only when the new ones are complete.
fn record_removals(
    writer: &mut BronzeWriter,
    report: &mut IngestReport,
    removed: Vec<Removal>,
    run_id: &str,
) {
    if removed.is_empty() {
        return;
    }
    if !report.files_failed.is_empty() {
        warn!(
            files = removed.len(),
            "files the source no longer lists stay in their revision until a run \
             without failed files"
        );
        return;
    }
    for r in removed {
        info!(model = %r.model_id, revision = %r.revision, file = %r.file_path,
            "the source no longer lists this file: removed from the revision");
        writer.file_complete(r.row(run_id));
        report.removed.push((r.model_id, r.revision, r.file_path));
    }
}

/// Table properties of the bronze tables (statistics cover only the small
/// columns: see [`crate::lake::skipping_stats_columns`]).
fn bronze_properties(blobs: bool) -> Vec<(&'static str, String)> {
    let version = if blobs {
        bronze::MODEL_FILES_VERSION
    } else {
        bronze::FILES_VERSION
    };
    vec![("weightlake.schemaVersion", version.to_string())]
}

/// The ETag recorded for `file`: the source's, or one unique to this run for
/// streams of unknown length (which cannot be resumed).
fn etag_for(file: &RemoteFile, run_id: &str) -> String {
    if file.size.is_none() {
        format!("stream:{run_id}")
    } else {
        file.etag.clone()
    }
}

fn plan_file(t: &mut FileTask, chunk_size: u64, state: &BronzeState, run_id: &str) -> Plan {
    let key = UploadKey {
        model_id: t.model_id.clone(),
        revision: t.revision.clone(),
        file_path: t.file.file_path.clone(),
        file_size: t.file.size.map_or(bronze::UNKNOWN_SIZE, |s| s as i64),
        etag: etag_for(&t.file, run_id),
    };
    t.upload = Some((key.clone(), key.id()));
    match t.file.size {
        Some(size) if t.file.ranges => {
            let committed = state.committed(&key);
            let chunks = plan_chunks(size, chunk_size)
                .into_iter()
                .map(|c| {
                    let idx = c.index as i32;
                    let reuse = committed.and_then(|m| m.get(&idx)).is_some_and(|cc| {
                        cc.offset == c.range.start as i64
                            && cc.len == (c.range.end - c.range.start) as i64
                    });
                    (idx, c.range, reuse)
                })
                .collect();
            Plan::Ranged { key, chunks }
        }
        _ => Plan::Stream { key },
    }
}

fn finish_file(
    writer: &mut BronzeWriter,
    report: &mut IngestReport,
    p: &mut FileProgress,
    t: &FileTask,
    chunk_size: u64,
    chunk_count: i32,
    failed_flag: &AtomicBool,
) {
    let digest = hex::encode(std::mem::take(&mut p.hasher).finalize());
    let mismatch = match (t.file.size, &t.file.sha256) {
        (Some(size), _) if size != p.bytes => {
            Some(format!("size mismatch: expected {size}, got {}", p.bytes))
        }
        (_, Some(sha)) if !sha.eq_ignore_ascii_case(&digest) => {
            Some(format!("sha256 mismatch: expected {sha}, got {digest}"))
        }
        _ => None,
    };
    if let Some(err) = mismatch {
        p.failed = true;
        failed_flag.store(true, Ordering::Relaxed);
        warn!(file = %t.file.file_path, %err, "verification failed");
        report.files_failed.push((t.file.file_path.clone(), err));
        return;
    }
    info!(model = %t.model_id, file = %t.file.file_path, bytes = p.bytes, sha256 = %digest, "file complete");
    report.files_ingested += 1;
    writer.file_complete(FileRow {
        model_id: t.model_id.clone(),
        revision: t.revision.clone(),
        file_path: t.file.file_path.clone(),
        source_uri: t.file.source_uri.clone(),
        file_size: p.bytes as i64,
        file_sha256: digest,
        etag: t.file.etag.clone(),
        upload_id: t.upload.as_ref().map(|u| u.1.clone()).unwrap_or_default(),
        chunk_size: chunk_size as i64,
        chunk_count,
    });
}
