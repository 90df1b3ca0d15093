//! The local runner: stages in dependency order, each through the same entry
//! point that `weightlake task` (a Databricks task's `main`) calls.

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, info, info_span};
use weightlake_connectors::http::DownloadConfig;
use weightlake_jobs::ingest::{DEFAULT_MEMORY_BUDGET, IngestJob, IngestReport};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::progress::{NoProgress, Progress};
use weightlake_jobs::shard::Shard;
use weightlake_jobs::tensorise::{TensoriseJob, TensoriseReport, parse_model_ref};

use crate::spec::{JobKind, StageSpec};
use crate::{PipelineError, ValidatedPipeline};

/// Options of one run or task.
#[derive(Clone)]
pub struct RunOptions {
    /// Run only this stage.
    pub only: Option<String>,
    /// This task's shard of the work.
    pub shard: Shard,
    /// Run id to record (default: new).
    pub run_id: Option<String>,
    /// Progress display.
    pub progress: Arc<dyn Progress>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            only: None,
            shard: Shard::ALL,
            run_id: None,
            progress: Arc::new(NoProgress),
        }
    }
}

/// What a stage did.
#[derive(Debug, Clone)]
pub enum StageReport {
    /// An ingest stage's report.
    Ingest(IngestReport),
    /// A tensorise stage's report.
    Tensorise(TensoriseReport),
}

/// Run every stage (or `opts.only`) in dependency order; stop at the first failure.
pub async fn run(
    p: &ValidatedPipeline,
    opts: &RunOptions,
) -> Result<Vec<(String, StageReport)>, PipelineError> {
    let mut out = Vec::new();
    for name in p.order() {
        if opts.only.as_ref().is_some_and(|o| o != name) {
            continue;
        }
        let report = run_stage(p, name, opts).await?;
        out.push((name.clone(), report));
    }
    Ok(out)
}

/// Run one stage: the task entry point.
pub async fn run_stage(
    p: &ValidatedPipeline,
    name: &str,
    opts: &RunOptions,
) -> Result<StageReport, PipelineError> {
    let spec = p.spec();
    let stage: &StageSpec = spec.stages.get(name).ok_or_else(|| {
        PipelineError::Spec(vec![crate::SpecError {
            file: p.origin().to_string(),
            line: 0,
            column: 0,
            message: format!(
                "no stage `{name}`{}",
                crate::validate::suggest(name, spec.stages.keys())
            ),
        }])
    })?;
    let fail = |source: weightlake_jobs::JobError| PipelineError::Stage {
        stage: name.to_string(),
        source: Box::new(source),
    };
    let lake = Lake::new(&spec.lake, spec.storage.clone()).map_err(fail)?;
    let span = info_span!("stage", pipeline = %spec.name, stage = %name, shard = %opts.shard);
    async {
        info!("starting");
        match stage.job {
            JobKind::Ingest => {
                let sources = stage
                    .sources
                    .iter()
                    .filter_map(|s| spec.sources.get(s).cloned())
                    .collect();
                let defaults = DownloadConfig::default();
                let download = DownloadConfig {
                    concurrency: stage.parallelism.unwrap_or(defaults.concurrency),
                    chunk_size: stage.chunk_size.unwrap_or(defaults.chunk_size),
                    max_retries: stage.retries.unwrap_or(defaults.max_retries),
                    stall_timeout: stage
                        .stall_timeout_secs
                        .map(Duration::from_secs)
                        .unwrap_or(defaults.stall_timeout),
                    ..defaults
                };
                let mut job = IngestJob::new(lake, sources)
                    .with_download_config(download)
                    .with_memory_budget(stage.memory_budget.unwrap_or(DEFAULT_MEMORY_BUDGET))
                    .with_shard(opts.shard)
                    .with_progress(opts.progress.clone());
                if let Some(m) = &stage.model_id {
                    job = job.with_model_id(m.clone());
                }
                if let Some(r) = &stage.revision {
                    job = job.with_revision(r.clone());
                }
                if let Some(id) = &opts.run_id {
                    job = job.with_run_id(id.clone());
                }
                let report = job.await.map_err(fail)?;
                info!(
                    files = report.files_ingested,
                    skipped = report.files_skipped,
                    "done"
                );
                Ok(StageReport::Ingest(report))
            }
            JobKind::Tensorise => {
                let mut job = TensoriseJob::new(lake)
                    .with_shard(opts.shard)
                    .with_progress(opts.progress.clone());
                if let Some(m) = &stage.model_id {
                    job = job.with_model_id(m.clone());
                }
                if let Some(b) = &stage.base_model {
                    let reference = crate::validate::resolve_base(spec, b)
                        .map_err(|e| fail(weightlake_jobs::JobError::Invalid(e)))?;
                    let (m, r) = parse_model_ref(&reference).map_err(fail)?;
                    job = job.with_base_model(m, r);
                }
                if let Some(id) = &opts.run_id {
                    job = job.with_run_id(id.clone());
                }
                let report = job.await.map_err(fail)?;
                info!(
                    files = report.files_tensorised,
                    skipped = report.files_skipped,
                    "done"
                );
                Ok(StageReport::Tensorise(report))
            }
        }
    }
    .instrument(span)
    .await
}
