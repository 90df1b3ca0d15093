//! The local runner: the stages as a DAG, with Databricks Workflows semantics,
//! each shard through the same entry point that `weightlake task` (a
//! Databricks task's `main`) calls.
//!
//! - Concurrency: a stage starts as soon as all of its `depends_on` stages
//!   have ended, so independent stages run at the same time.
//! - `run_if` is evaluated on how the upstream stages ended ([`Outcome`]):
//!   `succeeded` and `excluded` (left out by `--only`/`--from`) count as
//!   success, `failed` and `upstream_failed` as failure, `skipped` as neither.
//!   A stage whose condition does not hold ends `upstream_failed` when an
//!   upstream stage failed, else `skipped`; it does not run.
//! - Retries: an attempt that fails is retried up to `max_retries` times,
//!   `min_retry_interval` apart; bad input (exit-2 errors) is not retried.
//! - `timeout` drops the attempt's future (jobs are crash-safe: a dropped job
//!   leaves only rows that a later run reuses or deletes); a timed-out
//!   attempt is retried only with `retry_on_timeout: true`.
//! - `shards: N` runs N shard tasks at once, each with its own retries and
//!   timeout (as a Databricks `for_each_task` iteration); the stage fails if
//!   any shard does.
//! - The run fails (exit 1) when any stage failed, whatever ran after it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{Instrument, info, info_span, warn};
use weightlake_connectors::http::DownloadConfig;
use weightlake_jobs::export::ExportReport;
use weightlake_jobs::gold::promote::PromoteReport;
use weightlake_jobs::ingest::{DEFAULT_MEMORY_BUDGET, IngestJob, IngestReport};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::progress::{NoProgress, Progress};
use weightlake_jobs::shard::Shard;
use weightlake_jobs::tensorise::{TensoriseJob, TensoriseReport, parse_model_ref};

use crate::ledger::{Attempt, AttemptSink, AttemptStatus, Ledger};
use crate::spec::{JobKind, RunIf, StageSpec};
use crate::{PipelineError, ValidatedPipeline};

/// Options of one run or task.
#[derive(Clone)]
pub struct RunOptions {
    /// Run only this stage.
    pub only: Option<String>,
    /// Run this stage and everything downstream of it.
    pub from: Option<String>,
    /// This task's shard of the work.
    pub shard: Shard,
    /// Run id to record (default: new).
    pub run_id: Option<String>,
    /// Progress display.
    pub progress: Arc<dyn Progress>,
    /// Where attempts are recorded; [`run`] and [`run_task`] default to
    /// `_system.runs` of the pipeline's lake.
    pub ledger: Option<Arc<dyn AttemptSink>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            only: None,
            from: None,
            shard: Shard::ALL,
            run_id: None,
            progress: Arc::new(NoProgress),
            ledger: None,
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
    /// A promote stage's report.
    Promote(PromoteReport),
    /// An export stage's report.
    Export(ExportReport),
}

/// How a stage ended in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and succeeded (every shard).
    Succeeded,
    /// It ran and failed (a shard failed or timed out after its retries).
    Failed,
    /// Its `run_if` did not hold and an upstream stage failed.
    UpstreamFailed,
    /// Its `run_if` did not hold, no upstream stage failed.
    Skipped,
    /// Not part of this run (`--only`, `--from`); counts as succeeded.
    Excluded,
}

impl Outcome {
    /// Lower-case name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::UpstreamFailed => "upstream_failed",
            Self::Skipped => "skipped",
            Self::Excluded => "excluded",
        }
    }
}

/// One stage of a run.
#[derive(Debug)]
pub struct StageResult {
    /// The stage.
    pub stage: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempts made (the most of any shard); 0 when it did not run.
    pub attempts: u32,
    /// Reports of the shards that succeeded, with their shard.
    pub reports: Vec<(Shard, StageReport)>,
    /// Why it failed (the first failing shard's last error).
    pub error: Option<PipelineError>,
    /// Wall time of the stage (all shards, all attempts); zero when not run.
    pub elapsed: Duration,
}

/// A whole run: one result per stage, in run order.
#[derive(Debug)]
pub struct RunReport {
    /// Every stage of the pipeline.
    pub stages: Vec<StageResult>,
}

impl RunReport {
    /// True when no stage failed.
    pub fn succeeded(&self) -> bool {
        !self.stages.iter().any(|s| s.outcome == Outcome::Failed)
    }

    /// The failed stages' errors.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &PipelineError)> {
        self.stages
            .iter()
            .filter_map(|s| s.error.as_ref().map(|e| (s.stage.as_str(), e)))
    }
}

/// Does `run_if` hold, given the upstream outcomes?
pub fn run_if_holds(rule: RunIf, upstream: &[Outcome]) -> bool {
    let n = upstream.len();
    let ok = upstream
        .iter()
        .filter(|o| matches!(o, Outcome::Succeeded | Outcome::Excluded))
        .count();
    let failed = upstream
        .iter()
        .filter(|o| matches!(o, Outcome::Failed | Outcome::UpstreamFailed))
        .count();
    if n == 0 {
        return true;
    }
    match rule {
        RunIf::AllSuccess => ok == n,
        RunIf::AllDone => true,
        RunIf::NoneFailed => failed == 0 && ok > 0,
        RunIf::AtLeastOneSuccess => ok > 0,
        RunIf::AllFailed => failed == n,
        RunIf::AtLeastOneFailed => failed > 0,
    }
}

/// Run the pipeline (or `opts.only`, or `opts.from` and downstream) as a DAG
/// with the real jobs.
///
/// The run gets one run id (`opts.run_id`, else a new UUID) that every job
/// records; each attempt is recorded in `_system.runs` (a failure to write
/// the ledger is a warning), and the run is tracked in MLflow when
/// configured (see [`crate::tracking`]).
pub async fn run(p: &ValidatedPipeline, opts: &RunOptions) -> Result<RunReport, PipelineError> {
    let (run_id, opts) = with_run_id_and_ledger(p, opts).await;
    let started = SystemTime::now();
    let opts = &opts;
    let report = run_with(p, opts, |stage, shard| {
        let opts = RunOptions {
            shard,
            ..opts.clone()
        };
        async move { run_stage(p, &stage, &opts).await }
    })
    .await?;
    crate::tracking::track(p, &run_id, started, &report).await;
    Ok(report)
}

/// `opts` with its run id fixed (`opts.run_id`, else a new UUID) and, unless
/// it has one, the ledger of `p`'s lake (its table created up front, so that
/// parallel tasks do not race to create it).
async fn with_run_id_and_ledger(p: &ValidatedPipeline, opts: &RunOptions) -> (String, RunOptions) {
    let run_id = opts
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut opts = RunOptions {
        run_id: Some(run_id.clone()),
        ..opts.clone()
    };
    if opts.ledger.is_none()
        && let Some(ledger) = Ledger::for_pipeline(p, &run_id)
    {
        ledger.prepare().await;
        opts.ledger = Some(Arc::new(ledger));
    }
    (run_id, opts)
}

/// One attempt of one stage (one shard), recorded in `_system.runs`: the
/// `weightlake task` entry point.
pub async fn run_task(
    p: &ValidatedPipeline,
    name: &str,
    opts: &RunOptions,
) -> Result<StageReport, PipelineError> {
    let (_, opts) = with_run_id_and_ledger(p, opts).await;
    let (started, t) = (SystemTime::now(), Instant::now());
    let r = run_stage(p, name, &opts).await;
    if let Some(sink) = &opts.ledger
        && p.spec().stages.contains_key(name)
    {
        sink.record(Attempt::ended(
            name,
            opts.shard,
            1,
            started,
            t.elapsed(),
            &r,
        ))
        .await;
    }
    r
}

/// [`run`] with `execute(stage, shard)` in place of the jobs (one attempt of
/// one shard). Errors only for an unknown `--only`/`--from` stage.
pub async fn run_with<F, Fut>(
    p: &ValidatedPipeline,
    opts: &RunOptions,
    execute: F,
) -> Result<RunReport, PipelineError>
where
    F: Fn(String, Shard) -> Fut,
    Fut: Future<Output = Result<StageReport, PipelineError>>,
{
    let selected: BTreeSet<String> = match (&opts.only, &opts.from) {
        (Some(o), _) => BTreeSet::from([known_stage(p, o)?.to_string()]),
        (None, Some(f)) => p.downstream_of(known_stage(p, f)?).into_iter().collect(),
        (None, None) => p.order().iter().cloned().collect(),
    };
    let spec = p.spec();
    let sink = opts.ledger.as_deref();
    let mut results: BTreeMap<String, StageResult> = BTreeMap::new();
    for name in p.order() {
        if !selected.contains(name) {
            results.insert(name.clone(), not_run(name, Outcome::Excluded));
        }
    }
    let mut pending: Vec<String> = p
        .order()
        .iter()
        .filter(|n| selected.contains(*n))
        .cloned()
        .collect();
    let mut running = FuturesUnordered::new();
    loop {
        // Start (or settle) every stage whose upstream stages have all ended;
        // settling one may make others ready, so repeat until nothing moves.
        loop {
            let ready: Vec<String> = pending
                .iter()
                .filter(|n| {
                    spec.stages[*n]
                        .depends_on
                        .iter()
                        .all(|d| results.contains_key(d))
                })
                .cloned()
                .collect();
            if ready.is_empty() {
                break;
            }
            pending.retain(|n| !ready.contains(n));
            for name in ready {
                let stage = &spec.stages[&name];
                let upstream: Vec<Outcome> = stage
                    .depends_on
                    .iter()
                    .map(|d| results[d].outcome)
                    .collect();
                let rule = stage.run_if.unwrap_or_default();
                if run_if_holds(rule, &upstream) {
                    info!(stage = %name, "starting");
                    running.push(run_stage_shards(name, stage, opts.shard, &execute, sink));
                } else {
                    let any_failed = upstream
                        .iter()
                        .any(|o| matches!(o, Outcome::Failed | Outcome::UpstreamFailed));
                    let outcome = if any_failed {
                        Outcome::UpstreamFailed
                    } else {
                        Outcome::Skipped
                    };
                    warn!(stage = %name, run_if = rule.as_str(), outcome = outcome.as_str(), "not run");
                    if let Some(sink) = sink {
                        let status = if any_failed {
                            AttemptStatus::UpstreamFailed
                        } else {
                            AttemptStatus::Skipped
                        };
                        sink.record(Attempt::not_run(&name, status)).await;
                    }
                    results.insert(name.clone(), not_run(&name, outcome));
                }
            }
        }
        match running.next().await {
            Some(r) => {
                if r.outcome == Outcome::Failed {
                    warn!(stage = %r.stage, attempts = r.attempts, "stage failed");
                }
                results.insert(r.stage.clone(), r);
            }
            None => break,
        }
    }
    let stages = p.order().iter().filter_map(|n| results.remove(n)).collect();
    Ok(RunReport { stages })
}

fn known_stage<'a>(p: &'a ValidatedPipeline, name: &str) -> Result<&'a str, PipelineError> {
    p.spec()
        .stages
        .get_key_value(name)
        .map(|(k, _)| k.as_str())
        .ok_or_else(|| no_stage(p, name))
}

fn no_stage(p: &ValidatedPipeline, name: &str) -> PipelineError {
    PipelineError::Spec(vec![crate::SpecError {
        file: p.origin().to_string(),
        line: 0,
        column: 0,
        message: format!(
            "no stage `{name}`{}",
            crate::validate::suggest(name, p.spec().stages.keys())
        ),
    }])
}

fn not_run(name: &str, outcome: Outcome) -> StageResult {
    StageResult {
        stage: name.to_string(),
        outcome,
        attempts: 0,
        reports: Vec::new(),
        error: None,
        elapsed: Duration::ZERO,
    }
}

/// All shards of one stage at once (the given shard only when the caller
/// already runs one shard), each with its own retries and timeout.
async fn run_stage_shards<F, Fut>(
    name: String,
    stage: &StageSpec,
    shard: Shard,
    execute: &F,
    sink: Option<&dyn AttemptSink>,
) -> StageResult
where
    F: Fn(String, Shard) -> Fut,
    Fut: Future<Output = Result<StageReport, PipelineError>>,
{
    let n = stage.shards.unwrap_or(1);
    let shards: Vec<Shard> = if n > 1 && shard == Shard::ALL {
        (0..n).map(|index| Shard { index, count: n }).collect()
    } else {
        vec![shard]
    };
    let t = Instant::now();
    let outcomes = futures::future::join_all(
        shards
            .into_iter()
            .map(|s| with_retries(&name, stage, s, execute, sink)),
    )
    .await;
    let mut result = not_run(&name, Outcome::Succeeded);
    result.elapsed = t.elapsed();
    for (shard, attempts, r) in outcomes {
        result.attempts = result.attempts.max(attempts);
        match r {
            Ok(report) => result.reports.push((shard, report)),
            Err(e) => {
                result.outcome = Outcome::Failed;
                result.error.get_or_insert(e);
            }
        }
    }
    result
}

/// One shard: attempts until success, a non-retryable error, or no retries left.
async fn with_retries<F, Fut>(
    name: &str,
    stage: &StageSpec,
    shard: Shard,
    execute: &F,
    sink: Option<&dyn AttemptSink>,
) -> (Shard, u32, Result<StageReport, PipelineError>)
where
    F: Fn(String, Shard) -> Fut,
    Fut: Future<Output = Result<StageReport, PipelineError>>,
{
    let max_attempts = 1 + stage.max_retries.unwrap_or(0);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (started, t) = (SystemTime::now(), Instant::now());
        let fut = execute(name.to_string(), shard);
        let (result, retryable) = match stage.timeout {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => classify(r),
                Err(_) => (
                    Err(PipelineError::Timeout {
                        stage: name.to_string(),
                        after: limit,
                    }),
                    stage.retry_on_timeout.unwrap_or(false),
                ),
            },
            None => classify(fut.await),
        };
        if let Some(sink) = sink {
            sink.record(Attempt::ended(
                name,
                shard,
                attempt,
                started,
                t.elapsed(),
                &result,
            ))
            .await;
        }
        if result.is_ok() || !retryable || attempt >= max_attempts {
            return (shard, attempt, result);
        }
        if let Err(e) = &result {
            warn!(stage = %name, %shard, attempt, error = %e, "attempt failed; retrying");
        }
        tokio::time::sleep(stage.min_retry_interval.unwrap_or(Duration::ZERO)).await;
    }
}

/// The result, and whether an error is worth another attempt (not bad input).
/// A rejected promotion is not retried either: the same weights would be
/// judged the same way.
fn classify(r: Result<StageReport, PipelineError>) -> (Result<StageReport, PipelineError>, bool) {
    let retry = r.as_ref().err().is_some_and(|e| {
        !e.is_bad_input()
            && !matches!(e, PipelineError::Stage { source, .. }
                if matches!(**source, weightlake_jobs::JobError::Rejected { .. }))
    });
    (r, retry)
}

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
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
