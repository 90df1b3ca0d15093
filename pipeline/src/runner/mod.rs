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
use tracing::{info, warn};
use weightlake_jobs::export::ExportReport;
use weightlake_jobs::gold::promote::PromoteReport;
use weightlake_jobs::ingest::IngestReport;
use weightlake_jobs::maintain::MaintainReport;
use weightlake_jobs::progress::{NoProgress, Progress};
use weightlake_jobs::shard::Shard;
use weightlake_jobs::tensorise::TensoriseReport;

use crate::cost::budget::CostMeter;
use crate::ledger::{Attempt, AttemptSink, AttemptStatus};
use crate::spec::{RunIf, StageSpec};
pub use crate::stages::run_stage;
pub use entry::{run, run_task, selected_stages, stop_signal};

mod entry;
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
    /// Dollars the pipeline's runs spent earlier today, for
    /// `budget.max_usd_per_day` ([`run`] reads it from `_system.runs`).
    pub spent_today_usd: f64,
    /// [`run`] stops on Ctrl-C or SIGTERM, records the run as cancelled and
    /// returns [`PipelineError::Interrupted`] (the command line sets this).
    pub stop_on_signals: bool,
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
            spent_today_usd: 0.0,
            stop_on_signals: false,
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
    /// A maintain stage's report.
    Maintain(MaintainReport),
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
    /// Stopped, or never started, because the run reached its budget;
    /// counts as failed.
    Cancelled,
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
            Self::Cancelled => "cancelled",
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
    /// Cost estimate of all its attempts; None without prices.
    pub cost_usd: Option<f64>,
}

/// A whole run: one result per stage, in run order.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Every stage of the pipeline.
    pub stages: Vec<StageResult>,
    /// Cost estimate of every attempt; None without prices.
    pub cost_usd: Option<f64>,
    /// Why the budget cancelled the run, if it did.
    pub cancelled: Option<String>,
}

impl RunReport {
    /// True when no stage failed or was cancelled.
    pub fn succeeded(&self) -> bool {
        !self
            .stages
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed | Outcome::Cancelled))
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
        .filter(|o| {
            matches!(
                o,
                Outcome::Failed | Outcome::UpstreamFailed | Outcome::Cancelled
            )
        })
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
    let selected: BTreeSet<String> = selected_stages(p, opts)?.into_iter().collect();
    let spec = p.spec();
    let sink = opts.ledger.as_deref();
    let meter = CostMeter::new(
        p.cost().cloned(),
        spec.budget
            .as_ref()
            .and_then(|b| b.limit(opts.spent_today_usd)),
    );
    let meter = &meter;
    let mut tick = tokio::time::interval(crate::cost::budget::CHECK_EVERY);
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
            meter.check();
            for name in ready {
                let stage = &spec.stages[&name];
                if meter.is_cancelled() {
                    let e = PipelineError::Cancelled {
                        stage: name.clone(),
                        reason: meter.reason(),
                    };
                    warn!(stage = %name, "not started: {}", meter.reason());
                    if let Some(sink) = sink {
                        sink.record(
                            Attempt::not_run(&name, AttemptStatus::Cancelled)
                                .with_error(e.to_string()),
                        )
                        .await;
                    }
                    let mut r = not_run(&name, Outcome::Cancelled);
                    r.error = Some(e);
                    results.insert(name.clone(), r);
                    continue;
                }
                let upstream: Vec<Outcome> = stage
                    .depends_on
                    .iter()
                    .map(|d| results[d].outcome)
                    .collect();
                let rule = stage.run_if.unwrap_or_default();
                if run_if_holds(rule, &upstream) {
                    info!(stage = %name, "starting");
                    running.push(run_stage_shards(
                        name, stage, opts.shard, &execute, sink, meter,
                    ));
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
        let next = if meter.watching() {
            tokio::select! {
                r = running.next() => r,
                _ = tick.tick() => {
                    meter.check();
                    continue;
                }
            }
        } else {
            running.next().await
        };
        match next {
            Some(r) => {
                if r.outcome == Outcome::Failed {
                    warn!(stage = %r.stage, attempts = r.attempts, "stage failed");
                }
                results.insert(r.stage.clone(), r);
            }
            None => break,
        }
    }
    let stages: Vec<StageResult> = p.order().iter().filter_map(|n| results.remove(n)).collect();
    let cost_usd = meter
        .model()
        .map(|_| stages.iter().filter_map(|s| s.cost_usd).sum());
    Ok(RunReport {
        stages,
        cost_usd,
        cancelled: meter.is_cancelled().then(|| meter.reason()),
    })
}

pub(crate) fn known_stage<'a>(
    p: &'a ValidatedPipeline,
    name: &str,
) -> Result<&'a str, PipelineError> {
    p.spec()
        .stages
        .get_key_value(name)
        .map(|(k, _)| k.as_str())
        .ok_or_else(|| no_stage(p, name))
}

pub(crate) fn no_stage(p: &ValidatedPipeline, name: &str) -> PipelineError {
    PipelineError::Spec(vec![crate::SpecError {
        file: p.origin().to_string(),
        line: 0,
        column: 0,
        message: match crate::validate::suggest(name, p.spec().stages.keys()) {
            hint if hint.is_empty() => {
                format!("no stage `{name}` (stages: {})", p.order().join(", "))
            }
            hint => format!("no stage `{name}`{hint}"),
        },
    }])
}

/// `--shard i/N` must split a stage declared with `shards: N` the same way its
/// other tasks do; a different N would leave items to no task or to two.
pub(crate) fn check_shard(
    p: &ValidatedPipeline,
    name: &str,
    shard: Shard,
) -> Result<(), PipelineError> {
    let declared = p.spec().stages.get(name).and_then(|s| s.shards);
    match declared {
        Some(n) if shard != Shard::ALL && shard.count != n => {
            Err(PipelineError::Spec(vec![crate::SpecError {
                file: p.origin().to_string(),
                line: 0,
                column: 0,
                message: format!(
                    "stage `{name}` has `shards: {n}`; --shard {shard} must be one of 0/{n} to {}/{n}",
                    n - 1
                ),
            }]))
        }
        _ => Ok(()),
    }
}

fn not_run(name: &str, outcome: Outcome) -> StageResult {
    StageResult {
        stage: name.to_string(),
        outcome,
        attempts: 0,
        reports: Vec::new(),
        error: None,
        elapsed: Duration::ZERO,
        cost_usd: None,
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
    meter: &CostMeter,
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
            .map(|s| with_retries(&name, stage, s, execute, sink, meter)),
    )
    .await;
    let mut result = not_run(&name, Outcome::Succeeded);
    result.elapsed = t.elapsed();
    for (shard, attempts, cost, r) in outcomes {
        result.attempts = result.attempts.max(attempts);
        if let Some(c) = cost {
            *result.cost_usd.get_or_insert(0.0) += c;
        }
        match r {
            Ok(report) => result.reports.push((shard, report)),
            Err(e) => {
                // A stage the budget stopped is cancelled unless a shard
                // failed on its own.
                let cancelled = matches!(e, PipelineError::Cancelled { .. });
                if !cancelled || result.outcome == Outcome::Succeeded {
                    result.outcome = if cancelled {
                        Outcome::Cancelled
                    } else {
                        Outcome::Failed
                    };
                }
                if !cancelled || result.error.is_none() {
                    result.error = Some(e);
                }
            }
        }
    }
    result
}

/// One shard: attempts until success, a non-retryable error, no retries
/// left, or the budget cancels the run. Returns the shard, the attempts made,
/// their cost and the last result.
async fn with_retries<F, Fut>(
    name: &str,
    stage: &StageSpec,
    shard: Shard,
    execute: &F,
    sink: Option<&dyn AttemptSink>,
    meter: &CostMeter,
) -> (Shard, u32, Option<f64>, Result<StageReport, PipelineError>)
where
    F: Fn(String, Shard) -> Fut,
    Fut: Future<Output = Result<StageReport, PipelineError>>,
{
    let max_attempts = 1 + stage.max_retries.unwrap_or(0);
    let mut attempt = 0;
    let mut cost: Option<f64> = None;
    let cancelled = || PipelineError::Cancelled {
        stage: name.to_string(),
        reason: meter.reason(),
    };
    loop {
        attempt += 1;
        let (started, t) = (SystemTime::now(), Instant::now());
        let id = meter.start();
        let fut = execute(name.to_string(), shard);
        // None: the budget cancelled the run while the attempt ran.
        let guarded = async {
            tokio::select! {
                r = fut => Some(r),
                _ = meter.cancelled() => None,
            }
        };
        let (result, retryable) = match stage.timeout {
            Some(limit) => match tokio::time::timeout(limit, guarded).await {
                Ok(Some(r)) => classify(r),
                Ok(None) => (Err(cancelled()), false),
                Err(_) => (
                    Err(PipelineError::Timeout {
                        stage: name.to_string(),
                        after: limit,
                    }),
                    stage.retry_on_timeout.unwrap_or(false),
                ),
            },
            None => match guarded.await {
                Some(r) => classify(r),
                None => (Err(cancelled()), false),
            },
        };
        let elapsed = t.elapsed();
        let usd = meter
            .model()
            .map(|m| m.attempt_usd(result.as_ref().ok(), elapsed));
        meter.end(id, usd);
        if let Some(c) = usd {
            *cost.get_or_insert(0.0) += c;
        }
        if let Some(sink) = sink {
            sink.record(
                Attempt::ended(name, shard, attempt, started, elapsed, &result).with_cost(usd),
            )
            .await;
        }
        if result.is_ok() || !retryable || attempt >= max_attempts {
            return (shard, attempt, cost, result);
        }
        if let Err(e) = &result {
            warn!(stage = %name, %shard, attempt, error = %e, "attempt failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(stage.min_retry_interval.unwrap_or(Duration::ZERO)) => {}
            _ = meter.cancelled() => return (shard, attempt, cost, Err(cancelled())),
        }
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

#[cfg(test)]
mod tests;
