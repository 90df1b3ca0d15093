//! The tensorise job: complete bronze files -> `silver.files`, `silver.tensors`
//! and `silver.tensor_blobs`.
//!
//! Commit order, as in ingest: blob parts first, then tensor rows, then the
//! `silver.files` row, which marks the file done. A file whose `silver.files`
//! row exists is skipped; tensor rows left by an interrupted run (no files row)
//! are deleted before the file is done again; blob contents count as stored only
//! when all their parts are.

mod first_pass;
mod plan;
mod process;
mod reader;
mod rows;
mod spill;
mod work;

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::{info, warn};
use weightlake_schemas::{bronze, silver};

pub use plan::TensorisePlan;
use process::{BaseTensor, PartSink, Processor};
use reader::{BronzeFileRef, BronzeReader};
use rows::{FileKey, SilverFileRow, file_batch, tensors_batch};
pub(crate) use work::{SilverNewest, not_tensorised};
use work::{bronze_files, delete_orphans, restored_row};

use crate::append::{OrderedCommits, TableAppender};
use crate::blobs::{BlobPart, blob_row, blob_rows, complete_contents};
use crate::lake::Lake;
use crate::progress::{NoProgress, Progress};
use crate::shard::Shard;
use crate::sql::{LakeSession, int_value, string_value};
use crate::view::Manifest;
use crate::{JobError, Result};

/// What a tensorise run did.
#[derive(Debug, Clone, Default)]
pub struct TensoriseReport {
    /// The run id.
    pub run_id: String,
    /// Files tensorised now.
    pub files_tensorised: usize,
    /// Files already in silver.
    pub files_skipped: usize,
    /// Files recorded as removed from their revision (bronze recorded that
    /// their source no longer lists them).
    pub files_removed: usize,
    /// Files changed back to a version silver already had: its rows were
    /// made current again, nothing was read from bronze.
    pub files_restored: usize,
    /// Files that failed to parse (kept whole, recorded with their error).
    pub files_quarantined: Vec<(String, String)>,
    /// Tensors recorded.
    pub tensors: usize,
    /// Tensors (and pass-through files) whose content was already stored.
    pub dedup_hits: usize,
    /// With a base model: tensors of the other models, and how many of them
    /// matched a base tensor (same name, dtype and shape) and were compared.
    pub base_matches: Option<(usize, usize)>,
    /// Bytes of the files read.
    pub bytes_in: u64,
    /// Bytes written to `silver.tensor_blobs.data`.
    pub bytes_stored: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Builder of a tensorise run; `.await` it.
#[must_use = "a TensoriseJob does nothing until awaited"]
pub struct TensoriseJob {
    lake: Lake,
    model_id: Option<String>,
    base_model: Option<(String, String)>,
    shard: Shard,
    run_id: Option<String>,
    part_bytes: u64,
    commit_bytes: u64,
    scratch_dir: Option<PathBuf>,
    progress: Arc<dyn Progress>,
}

/// Parse `MODEL@REVISION` (the model id may contain `/`; the revision may not
/// contain `@`). Without `@`, the revision is `main`.
pub fn parse_model_ref(s: &str) -> Result<(String, String)> {
    let (m, r) = match s.rsplit_once('@') {
        Some((m, r)) => (m, r),
        None => (s, "main"),
    };
    if m.is_empty() || r.is_empty() || m.contains('@') {
        return Err(JobError::Invalid(format!(
            "invalid model reference `{s}`: expected MODEL@REVISION"
        )));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(JobError::Invalid(format!(
            "invalid model reference `{s}`: spaces and control characters are not allowed"
        )));
    }
    Ok((m.to_string(), r.to_string()))
}

impl TensoriseJob {
    /// Tensorise every complete bronze file of `lake` not yet in silver.
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            model_id: None,
            base_model: None,
            shard: Shard::ALL,
            run_id: None,
            part_bytes: silver::DEFAULT_PART_BYTES as u64,
            commit_bytes: COMMIT_BYTES,
            scratch_dir: None,
            progress: Arc::new(NoProgress),
        }
    }

    /// Only files of this model.
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = Some(id.into());
        self
    }

    /// Compare with (and XOR-encode against) this base model's tensors.
    pub fn with_base_model(
        mut self,
        model: impl Into<String>,
        revision: impl Into<String>,
    ) -> Self {
        self.base_model = Some((model.into(), revision.into()));
        self
    }

    /// Only this shard's files.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Record this run id.
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// Local directory for the scratch copy of a tensor bigger than one part
    /// between its two passes (default: the system's temporary directory,
    /// `TMPDIR`). It needs room for the largest tensor (twice that against a
    /// base). Where no file can be made there, the tensor is read again
    /// instead: slower, nothing lost.
    pub fn with_scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch_dir = Some(dir.into());
        self
    }

    /// Largest blob part (default [`silver::DEFAULT_PART_BYTES`], at most
    /// [`silver::MAX_PART_BYTES`]; smaller in tests).
    pub fn with_part_bytes(mut self, bytes: u64) -> Self {
        self.part_bytes = bytes.clamp(1, silver::MAX_PART_BYTES as u64);
        self
    }

    /// Report progress here.
    pub fn with_progress(mut self, p: Arc<dyn Progress>) -> Self {
        self.progress = p;
        self
    }
}

impl IntoFuture for TensoriseJob {
    type Output = Result<TensoriseReport>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// Encoded blob bytes queued before a commit starts. At most one group is
/// queued while the one before is written (and delta-rs holds that file's
/// Parquet bytes in memory until it uploads them), so this sets most of a
/// tensorise's peak memory: on 86 MiB MLP matrices a 2 GiB model peaked at
/// 491-540 MiB with 64 MiB and 384-399 MiB with 48 MiB, at the same CPU
/// (docs/BENCHMARKS.md).
const COMMIT_BYTES: u64 = 48 << 20;

/// Files whose rows are committed together at most: a model of many small
/// files (tokenizer shards, per-layer checkpoints) would otherwise queue all
/// its rows until the end (memory growing with the file count, and a killed
/// run keeping none of its work).
const COMMIT_FILES: usize = 500;

/// Parts queued before a commit starts at most, however small: a file of
/// a few hundred thousand tiny tensors (hostile, or an odd export) would
/// otherwise queue every part until its end.
const COMMIT_PARTS: usize = 50_000;

/// Parts below this size are copied into shared batches ([`blob_rows`]);
/// larger ones each get their own batch, without a copy.
const SMALL_PART_BYTES: usize = 256 << 10;

/// Rows per batch of small parts.
const SMALL_PARTS_PER_BATCH: usize = 4096;

/// Table order of the silver commits: blobs before the tensors that refer to
/// them, tensors before the file row that marks a file done.
const BLOBS: usize = 0;
const TENSORS: usize = 1;
const FILES: usize = 2;

struct SilverSink {
    commits: OrderedCommits,
    known: HashSet<String>,
    pending_parts: Vec<BlobPart>,
    pending_part_bytes: u64,
    commit_bytes: u64,
    /// Files whose rows were queued since the last commit.
    pending_files: usize,
    run_id: String,
}

impl SilverSink {
    /// Start committing everything queued, in the background.
    async fn flush_all(&mut self) -> Result<()> {
        self.pending_files = 0;
        if !self.pending_parts.is_empty() {
            self.pending_part_bytes = 0;
            let (small, large): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_parts)
                .into_iter()
                .partition(|p| p.data.len() < SMALL_PART_BYTES);
            for group in small.chunks(SMALL_PARTS_PER_BATCH) {
                self.commits.push(BLOBS, blob_rows(group, &self.run_id)?);
            }
            // Large parts move into their batch without a copy.
            for part in large {
                self.commits.push(BLOBS, blob_row(part, &self.run_id)?);
            }
        }
        self.commits.commit().await
    }

    /// Commit everything queued and wait until it is committed.
    async fn finish(&mut self) -> Result<()> {
        self.flush_all().await?;
        self.commits.finish().await.map(|_| ())
    }
}

impl PartSink for SilverSink {
    fn has(&self, sha: &str) -> bool {
        self.known.contains(sha)
    }
    fn mark(&mut self, sha: &str) {
        self.known.insert(sha.to_string());
    }
    async fn put(&mut self, part: BlobPart) -> Result<()> {
        self.pending_part_bytes += part.data.len() as u64;
        self.pending_parts.push(part);
        if self.pending_part_bytes >= self.commit_bytes || self.pending_parts.len() >= COMMIT_PARTS
        {
            self.flush_all().await?;
        }
        Ok(())
    }
}

fn properties(version: u32) -> Vec<(&'static str, String)> {
    vec![("weightlake.schemaVersion", version.to_string())]
}

impl TensoriseJob {
    /// Tensorise while holding this shard's lock (see `crate::lock`): an
    /// overlapping run of the same shard waits, then finds its files done.
    async fn run(self) -> Result<TensoriseReport> {
        let run_id = self
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if self.lake.open(bronze::FILES).await?.is_none() {
            return Err(JobError::Invalid(
                "the lake has no bronze.files table: ingest something first".into(),
            ));
        }
        let name = format!("tensorise.{}-of-{}", self.shard.index, self.shard.count);
        // Shards of one shard count split the files between them; a run
        // with another count would take files a shard here also takes.
        let same_count = format!("-of-{}", self.shard.count);
        let lock = crate::lock::wait_for_family(
            &self.lake,
            &name,
            "tensorise.",
            |other| other.ends_with(&same_count),
            &run_id,
        )
        .await?;
        let result = self.run_locked(run_id).await;
        lock.release().await;
        result
    }

    /// Store `files` of the base model `model@revision` that silver still
    /// lacks, under the base's own lock: shards of one run each store the
    /// base files they need instead of waiting for the shard that owns them
    /// (which may not run until they end, when a scheduler runs fewer shards
    /// at once than there are), and two shards never store one file twice.
    async fn store_base(
        &self,
        model: &str,
        revision: &str,
        files: &[BronzeFileRef],
        sink: &mut SilverSink,
        report: &mut TensoriseReport,
        run_id: &str,
    ) -> Result<()> {
        use sha2::Digest;
        let key = hex::encode(sha2::Sha256::digest(format!("{model}@{revision}")));
        let lock = crate::lock::wait_for(
            &self.lake,
            &format!("tensorise-base.{}", &key[..16]),
            run_id,
        )
        .await?;
        let result = async {
            // What other shards stored while this one waited is done.
            let fresh = Arc::new(LakeSession::new(&self.lake).await?);
            let done = SilverNewest::load(&fresh).await?;
            let still: Vec<BronzeFileRef> = files
                .iter()
                .filter(|f| !done.has(f) && !done.had(f))
                .cloned()
                .collect();
            if let Some(tensors) = self.lake.open(silver::TENSORS).await? {
                delete_orphans(tensors, &fresh, &still).await?;
            }
            self.process(&fresh, sink, &still, None, report).await?;
            sink.finish().await
        }
        .await;
        lock.release().await;
        result
    }

    async fn run_locked(self, run_id: String) -> Result<TensoriseReport> {
        let started = Instant::now();
        let mut report = TensoriseReport {
            run_id: run_id.clone(),
            ..Default::default()
        };
        let blobs_t = self
            .lake
            .open_or_create(
                silver::TENSOR_BLOBS,
                silver::tensor_blobs_schema(),
                &properties(silver::VERSION),
            )
            .await?;
        let tensors_t = self
            .lake
            .open_or_create(
                silver::TENSORS,
                silver::tensors_schema(),
                &properties(silver::VERSION),
            )
            .await?;
        let files_t = self
            .lake
            .open_or_create(
                silver::FILES,
                silver::files_schema(),
                &properties(silver::VERSION),
            )
            .await?;
        let session = Arc::new(LakeSession::new(&self.lake).await?);

        let candidates = bronze_files(&session, self.model_id.as_deref()).await?;
        if let (Some(m), true) = (&self.model_id, candidates.is_empty()) {
            let known = bronze_files(&session, None).await?;
            let models: std::collections::BTreeSet<&str> =
                known.iter().map(|f| f.model_id.as_str()).collect();
            return Err(JobError::Invalid(format!(
                "no complete files of model `{m}` in bronze (models there: {})",
                if models.is_empty() {
                    "none".to_string()
                } else {
                    models.into_iter().collect::<Vec<_>>().join(", ")
                }
            )));
        }
        let is_base = |f: &BronzeFileRef| {
            self.base_model
                .as_ref()
                .is_some_and(|(m, r)| *m == f.model_id && *r == f.revision)
        };
        // With a base, its files are candidates whatever `--model-id` says:
        // a fine-tune is compared with the base, which must be in silver.
        let mut candidates = candidates;
        if let Some((m, _)) = &self.base_model
            && self.model_id.as_ref().is_some_and(|id| id != m)
        {
            candidates.extend(
                bronze_files(&session, Some(m))
                    .await?
                    .into_iter()
                    .filter(|f| is_base(f)),
            );
        }
        let done = SilverNewest::load(&session).await?;
        let mut todo = Vec::new();
        let mut removals = Vec::new();
        let mut restores = Vec::new();
        // Files of the base another shard owns: stored here if this shard
        // needs the base before that shard has (see `store_base`).
        let mut others_base = Vec::new();
        for f in candidates {
            if !self.shard.owns(&[&f.model_id, &f.revision, &f.file_path]) {
                if is_base(&f) && !f.removed && !done.has(&f) && !done.had(&f) {
                    others_base.push(f);
                }
                continue; // another shard's, done or not
            }
            if done.has(&f) {
                report.files_skipped += usize::from(!f.removed);
            } else if f.removed {
                removals.push(f);
            } else if done.had(&f) {
                restores.push(f);
            } else {
                todo.push(f);
            }
        }
        // Orphans of base files are deleted under the base's lock (another
        // shard may be storing them now).
        let (base_files, other_files): (Vec<_>, Vec<_>) =
            todo.into_iter().partition(|f| is_base(f));
        let tensors_t = delete_orphans(tensors_t, &session, &other_files).await?;
        let commit_bytes = self.commit_bytes;
        let tables = vec![
            TableAppender::new(blobs_t, silver::TENSOR_BLOBS),
            TableAppender::new(tensors_t, silver::TENSORS),
            TableAppender::new(files_t, silver::FILES),
        ];
        let mut sink = SilverSink {
            commits: OrderedCommits::new(tables, u64::MAX),
            known: complete_contents(&session).await?,
            pending_parts: Vec::new(),
            pending_part_bytes: 0,
            commit_bytes,
            pending_files: 0,
            run_id: run_id.clone(),
        };
        for f in &removals {
            info!(model = %f.model_id, revision = %f.revision, file = %f.file_path,
                "removed from its revision at the source");
            sink.commits.push(
                FILES,
                file_batch(&FileKey::of(f), &SilverFileRow::removal(), &run_id)?,
            );
        }
        report.files_removed = removals.len();
        for f in &restores {
            info!(model = %f.model_id, revision = %f.revision, file = %f.file_path,
                "changed back to a version silver has: its rows are current again");
            sink.commits.push(FILES, restored_row(&session, f).await?);
        }
        report.files_restored = restores.len();
        // Files of the base model go first, so the others can refer to them;
        // a shard with files to compare also stores the base files other
        // shards own and have not stored yet.
        let mut base_files = base_files;
        if !other_files.is_empty() {
            base_files.extend(others_base);
        }
        self.progress.begin(
            base_files.len() + other_files.len(),
            base_files
                .iter()
                .chain(&other_files)
                .map(|f| f.file_size)
                .sum(),
        );
        if let Some((m, r)) = &self.base_model
            && !base_files.is_empty()
        {
            self.store_base(m, r, &base_files, &mut sink, &mut report, &run_id)
                .await?;
        }
        let base = match &self.base_model {
            // Nothing left to compare with the base (a shard of only base
            // files, or of nothing): no need for it, but a base no table
            // has heard of is a mistake to say now, not once files arrive.
            Some((m, r)) if other_files.is_empty() => {
                if !in_bronze(&session, m, r).await?
                    && base_tensors(&session, m, r).await?.is_none()
                {
                    return Err(JobError::Invalid(format!(
                        "base model {m}@{r} is neither in bronze nor in silver: ingest and \
                         tensorise it first (or check its name)"
                    )));
                }
                None
            }
            Some((m, r)) => {
                sink.finish().await?;
                let fresh = Arc::new(LakeSession::new(&self.lake).await?);
                let Some(map) = base_tensors(&fresh, m, r).await? else {
                    return Err(if in_bronze(&fresh, m, r).await? {
                        JobError::NotReady(format!(
                            "base model {m}@{r} is in bronze but has no tensors in silver \
                             yet: tensorise it (with no --model-id, or --model-id {m}) first"
                        ))
                    } else {
                        JobError::Invalid(format!(
                            "base model {m}@{r} has no tensors in silver: ingest and tensorise it first"
                        ))
                    });
                };
                Some((format!("{m}@{r}"), map, fresh))
            }
            None => None,
        };
        match &base {
            Some((label, map, fresh)) => {
                self.process(
                    fresh,
                    &mut sink,
                    &other_files,
                    Some((label.as_str(), map)),
                    &mut report,
                )
                .await?
            }
            None => {
                self.process(&session, &mut sink, &other_files, None, &mut report)
                    .await?
            }
        }
        sink.finish().await?;
        if let (Some((m, r)), Some((0, of))) = (&self.base_model, report.base_matches)
            && of > 0
        {
            warn!(
                base = %format!("{m}@{r}"),
                "none of {of} tensors matched a base tensor (same name, dtype and shape): nothing was compared or XOR-encoded"
            );
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn process(
        &self,
        session: &Arc<LakeSession>,
        sink: &mut SilverSink,
        files: &[BronzeFileRef],
        base: Option<(&str, &HashMap<String, BaseTensor>)>,
        report: &mut TensoriseReport,
    ) -> Result<()> {
        for f in files {
            self.progress.file_started(&f.file_path, f.file_size);
            let mut reader = BronzeReader::new(session.clone(), f.clone());
            let mut p = Processor {
                session: session.as_ref(),
                sink: &mut *sink,
                base: base.map(|b| b.1),
                part_bytes: self.part_bytes,
                scratch_dir: self.scratch_dir.as_deref(),
            };
            let mut result = p.file(&mut reader).await?;
            let key = FileKey::of(f);
            result.row.base_model = base.map(|b| b.0.to_string());
            if !result.tensors.is_empty() {
                sink.commits.push(
                    TENSORS,
                    tensors_batch(&key, base.map(|b| b.0), &result.tensors, &sink.run_id)?,
                );
            }
            let due = sink
                .commits
                .push(FILES, file_batch(&key, &result.row, &sink.run_id)?);
            sink.pending_files += 1;
            // A file's blobs, tensors and row are all queued: a consistent
            // point to commit at.
            if due || sink.pending_files >= COMMIT_FILES {
                sink.flush_all().await?;
            }
            info!(file = %f.file_path, format = result.row.format, tensors = result.tally.tensors, "tensorised");
            if let Some(e) = &result.row.error {
                report
                    .files_quarantined
                    .push((f.file_path.clone(), e.clone()));
            }
            if base.is_some() {
                let (matched, of) = report.base_matches.get_or_insert((0, 0));
                *of += result.tensors.len();
                *matched += result
                    .tensors
                    .iter()
                    .filter(|t| t.identical_to_base.is_some())
                    .count();
            }
            report.files_tensorised += 1;
            report.tensors += result.tally.tensors;
            report.dedup_hits += result.tally.dedup_hits;
            report.bytes_in += f.file_size;
            report.bytes_stored += result.tally.bytes_stored;
            self.progress.advance(&f.file_path, f.file_size);
            self.progress.file_finished(&f.file_path);
        }
        Ok(())
    }
}

/// The base's tensors by name, without names it holds twice with different
/// contents; `None` when silver has no tensors of it.
async fn base_tensors(
    session: &LakeSession,
    model: &str,
    revision: &str,
) -> Result<Option<HashMap<String, BaseTensor>>> {
    let batches = session
        .context()
        .table(silver::TENSORS.to_string())
        .await?
        // Only the files the base revision has now: after a change upstream,
        // older rows of a path would offer an older tensor of the same name.
        .filter(
            Manifest::newest(session, model, revision)
                .await?
                .pinned_rows(),
        )?
        .select_columns(&["tensor_name", "dtype", "shape", "content_sha256"])?
        .collect()
        .await?;
    let mut map: HashMap<String, BaseTensor> = HashMap::new();
    // Names two files of the base hold with different contents: which one a
    // fine-tuned tensor descends from cannot be told by name.
    let mut ambiguous = std::collections::BTreeSet::new();
    for b in &batches {
        let shapes = deltalake::arrow::array::AsArray::as_list::<i32>(b.column(2).as_ref());
        for r in 0..b.num_rows() {
            let s = |c: usize| {
                string_value(b.column(c).as_ref(), r)
                    .unwrap_or_default()
                    .to_string()
            };
            let shape_arr = shapes.value(r);
            let shape = (0..shape_arr.len())
                .filter_map(|i| int_value(shape_arr.as_ref(), i))
                .collect();
            let t = BaseTensor {
                dtype: s(1),
                shape,
                sha256: s(3),
            };
            if let Some(old) = map.insert(s(0), t)
                && old.sha256 != s(3)
            {
                ambiguous.insert(s(0));
            }
        }
    }
    if let Some(first) = ambiguous.first() {
        warn!(
            base = %format!("{model}@{revision}"),
            names = ambiguous.len(),
            first = %first,
            "tensor names the base holds in more than one file, with different contents: \
             tensors of these names are not compared with the base"
        );
    }
    if map.is_empty() {
        return Ok(None);
    }
    map.retain(|name, _| !ambiguous.contains(name));
    Ok(Some(map))
}

/// Whether bronze holds a complete file of `model_id@revision`.
async fn in_bronze(session: &LakeSession, model_id: &str, revision: &str) -> Result<bool> {
    use deltalake::datafusion::prelude::{col, lit};
    if !session.has_table(weightlake_schemas::bronze::FILES) {
        return Ok(false);
    }
    let n = session
        .context()
        .table(weightlake_schemas::bronze::FILES.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(model_id))
                .and(col("revision").eq(lit(revision)))
                .and(col("file_size").not_eq(lit(bronze::REMOVED_SIZE))),
        )?
        .count()
        .await?;
    Ok(n > 0)
}
