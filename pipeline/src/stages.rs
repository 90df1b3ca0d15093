//! One stage's job: what `weightlake task` (a Databricks task's `main`) and
//! each shard of a local run execute, and the job builders that `plan` and
//! the cost estimate reuse without running them.

use std::time::Duration;

use tracing::{Instrument, info, info_span};
use weightlake_connectors::http::DownloadConfig;
use weightlake_jobs::ingest::{DEFAULT_MEMORY_BUDGET, IngestJob};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::tensorise::{TensoriseJob, parse_model_ref};

use crate::runner::{RunOptions, StageReport, no_stage};
use crate::spec::{JobKind, PipelineSpec, StageSpec};
use crate::{PipelineError, ValidatedPipeline};

/// Run one stage: the task entry point.
pub async fn run_stage(
    p: &ValidatedPipeline,
    name: &str,
    opts: &RunOptions,
) -> Result<StageReport, PipelineError> {
    let spec = p.spec();
    let stage: &StageSpec = spec.stages.get(name).ok_or_else(|| no_stage(p, name))?;
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
                let job = ingest_job(spec, stage, lake, opts);
                let report = job.await.map_err(fail)?;
                info!(
                    files = report.files_ingested,
                    skipped = report.files_skipped,
                    "done"
                );
                Ok(StageReport::Ingest(report))
            }
            JobKind::Tensorise => {
                let job = tensorise_job(spec, name, stage, lake, opts)?;
                let report = job.await.map_err(fail)?;
                info!(
                    files = report.files_tensorised,
                    skipped = report.files_skipped,
                    "done"
                );
                Ok(StageReport::Tensorise(report))
            }
            JobKind::Promote => {
                let report =
                    crate::gold_stages::promote(spec, stage, lake, opts.run_id.as_deref())
                        .await
                        .map_err(fail)?;
                info!(name = %report.name, version = report.version, existing = report.existing, "done");
                Ok(StageReport::Promote(report))
            }
            JobKind::Export => {
                let report = crate::gold_stages::export(stage, lake)
                    .await
                    .map_err(fail)?;
                info!(files = report.files, bytes = report.bytes, "done");
                Ok(StageReport::Export(report))
            }
            JobKind::Maintain => {
                let report = crate::maintain_stage::run(stage, lake, opts.run_id.as_deref())
                    .await
                    .map_err(fail)?;
                info!(
                    tables = report.tables.len(),
                    compacted_bytes = report.bytes_compacted(),
                    vacuumed = report.files_vacuumed(),
                    vacuumed_bytes = report.bytes_vacuumed(),
                    "done"
                );
                Ok(StageReport::Maintain(report))
            }
        }
    }
    .instrument(span)
    .await
}

/// The ingest job of `stage` (one shard of it with `opts.shard`).
pub(crate) fn ingest_job(
    spec: &PipelineSpec,
    stage: &StageSpec,
    lake: Lake,
    opts: &RunOptions,
) -> IngestJob {
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
    job
}

/// The tensorise job of stage `name` (one shard of it with `opts.shard`).
pub(crate) fn tensorise_job(
    spec: &PipelineSpec,
    name: &str,
    stage: &StageSpec,
    lake: Lake,
    opts: &RunOptions,
) -> Result<TensoriseJob, PipelineError> {
    let fail = |source: weightlake_jobs::JobError| PipelineError::Stage {
        stage: name.to_string(),
        source: Box::new(source),
    };
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
    Ok(job)
}
