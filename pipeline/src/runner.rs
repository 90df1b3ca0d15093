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
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{Instrument, info, info_span, warn};
use weightlake_connectors::http::DownloadConfig;
use weightlake_jobs::ingest::{DEFAULT_MEMORY_BUDGET, IngestJob, IngestReport};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::progress::{NoProgress, Progress};
use weightlake_jobs::shard::Shard;
use weightlake_jobs::tensorise::{TensoriseJob, TensoriseReport, parse_model_ref};

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
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            only: None,
            from: None,
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
pub async fn run(p: &ValidatedPipeline, opts: &RunOptions) -> Result<RunReport, PipelineError> {
    run_with(p, opts, |stage, shard| {
        let opts = RunOptions {
            shard,
            ..opts.clone()
        };
        async move { run_stage(p, &stage, &opts).await }
    })
    .await
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
                    running.push(run_stage_shards(name, stage, opts.shard, &execute));
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
    }
}

/// All shards of one stage at once (the given shard only when the caller
/// already runs one shard), each with its own retries and timeout.
async fn run_stage_shards<F, Fut>(
    name: String,
    stage: &StageSpec,
    shard: Shard,
    execute: &F,
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
    let outcomes = futures::future::join_all(
        shards
            .into_iter()
            .map(|s| with_retries(&name, stage, s, execute)),
    )
    .await;
    let mut result = not_run(&name, Outcome::Succeeded);
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
) -> (Shard, u32, Result<StageReport, PipelineError>)
where
    F: Fn(String, Shard) -> Fut,
    Fut: Future<Output = Result<StageReport, PipelineError>>,
{
    let max_attempts = 1 + stage.max_retries.unwrap_or(0);
    let mut attempt = 0;
    loop {
        attempt += 1;
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
fn classify(r: Result<StageReport, PipelineError>) -> (Result<StageReport, PipelineError>, bool) {
    let retry = r.as_ref().err().is_some_and(|e| !e.is_bad_input());
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
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    //! The DAG semantics with fake jobs: each stage's behaviour is scripted.

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::load_str;

    /// What a fake stage does on each attempt.
    #[derive(Clone, Copy)]
    enum Act {
        Ok,
        Fail,
        BadInput,
        /// Fail this many attempts, then succeed.
        FailTimes(u32),
        /// Sleep this long, then succeed.
        Sleep(Duration),
    }

    #[derive(Default)]
    struct Log {
        calls: Vec<(String, Shard)>,
        in_flight: usize,
        max_in_flight: usize,
    }

    fn pipeline(stages: &str) -> ValidatedPipeline {
        load_str(
            &format!("name: t\nlake: ./l\nsources: {{ s: {{ local: {{ path: ./m }} }} }}\nstages:\n{stages}"),
            "t.yaml",
        )
        .expect("valid")
    }

    async fn go(
        p: &ValidatedPipeline,
        opts: &RunOptions,
        acts: &[(&str, Act)],
    ) -> (BTreeMap<String, (Outcome, u32)>, Log) {
        let acts: BTreeMap<String, Act> = acts.iter().map(|(k, a)| (k.to_string(), *a)).collect();
        let log = Mutex::new(Log::default());
        let report = run_with(p, opts, |stage, shard| {
            let act = acts.get(&stage).copied().unwrap_or(Act::Ok);
            let log = &log;
            async move {
                let attempt = {
                    let mut l = log.lock().expect("lock");
                    l.calls.push((stage.clone(), shard));
                    l.in_flight += 1;
                    l.max_in_flight = l.max_in_flight.max(l.in_flight);
                    l.calls
                        .iter()
                        .filter(|(s, sh)| *s == stage && *sh == shard)
                        .count() as u32
                };
                struct Done<'a>(&'a Mutex<Log>);
                impl Drop for Done<'_> {
                    fn drop(&mut self) {
                        if let Ok(mut l) = self.0.lock() {
                            l.in_flight -= 1;
                        }
                    }
                }
                let _done = Done(log);
                let fail = || {
                    Err(PipelineError::Stage {
                        stage: stage.clone(),
                        source: Box::new(weightlake_jobs::JobError::Partial {
                            failed: 1,
                            total: 1,
                            first: "boom".into(),
                        }),
                    })
                };
                match act {
                    Act::Ok => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(StageReport::Ingest(IngestReport::default()))
                    }
                    Act::Fail => fail(),
                    Act::BadInput => Err(PipelineError::Stage {
                        stage: stage.clone(),
                        source: Box::new(weightlake_jobs::JobError::Invalid("bad".into())),
                    }),
                    Act::FailTimes(n) if attempt <= n => fail(),
                    Act::FailTimes(_) => Ok(StageReport::Ingest(IngestReport::default())),
                    Act::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        Ok(StageReport::Ingest(IngestReport::default()))
                    }
                }
            }
        })
        .await
        .expect("run");
        let outcomes = report
            .stages
            .iter()
            .map(|s| (s.stage.clone(), (s.outcome, s.attempts)))
            .collect();
        (outcomes, log.into_inner().expect("lock"))
    }

    #[tokio::test]
    async fn independent_stages_run_at_the_same_time() {
        let p = pipeline(
            "  a: { job: ingest, sources: [s] }\n  b: { job: ingest, sources: [s] }\n  c: { job: ingest, sources: [s], depends_on: [a, b] }\n",
        );
        let (out, log) = go(
            &p,
            &RunOptions::default(),
            &[
                ("a", Act::Sleep(Duration::from_millis(200))),
                ("b", Act::Sleep(Duration::from_millis(200))),
            ],
        )
        .await;
        assert_eq!(log.max_in_flight, 2);
        assert!(
            out.values().all(|(o, _)| *o == Outcome::Succeeded),
            "{out:?}"
        );
        assert_eq!(log.calls.last().map(|c| c.0.as_str()), Some("c"));
    }

    #[tokio::test]
    async fn run_if_rules_after_a_failed_upstream() {
        let p = pipeline(
            "  a: { job: ingest, sources: [s] }\n  ok: { job: ingest, sources: [s] }\n\
             \x20 all_success: { job: ingest, sources: [s], depends_on: [a] }\n\
             \x20 after_that: { job: ingest, sources: [s], depends_on: [all_success] }\n\
             \x20 all_done: { job: ingest, sources: [s], depends_on: [a], run_if: ALL_DONE }\n\
             \x20 none_failed: { job: ingest, sources: [s], depends_on: [ok], run_if: NONE_FAILED }\n\
             \x20 one_ok: { job: ingest, sources: [s], depends_on: [a, ok], run_if: AT_LEAST_ONE_SUCCESS }\n\
             \x20 all_failed: { job: ingest, sources: [s], depends_on: [a, ok], run_if: ALL_FAILED }\n\
             \x20 only_failed: { job: ingest, sources: [s], depends_on: [a], run_if: ALL_FAILED }\n\
             \x20 one_failed: { job: ingest, sources: [s], depends_on: [a, ok], run_if: AT_LEAST_ONE_FAILED }\n\
             \x20 on_success_failure: { job: ingest, sources: [s], depends_on: [ok], run_if: AT_LEAST_ONE_FAILED }\n",
        );
        let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::Fail)]).await;
        let o = |s: &str| out[s].0;
        assert_eq!(o("a"), Outcome::Failed);
        assert_eq!(o("all_success"), Outcome::UpstreamFailed);
        assert_eq!(o("after_that"), Outcome::UpstreamFailed);
        assert_eq!(o("all_done"), Outcome::Succeeded);
        assert_eq!(o("none_failed"), Outcome::Succeeded);
        assert_eq!(o("one_ok"), Outcome::Succeeded);
        assert_eq!(o("all_failed"), Outcome::UpstreamFailed);
        assert_eq!(o("only_failed"), Outcome::Succeeded);
        assert_eq!(o("one_failed"), Outcome::Succeeded);
        assert_eq!(o("on_success_failure"), Outcome::Skipped);
        assert_eq!(out["all_success"].1, 0, "a stage not run has no attempt");
    }

    #[test]
    fn run_if_truth_table_for_skipped_and_excluded_upstreams() {
        use Outcome::*;
        assert!(run_if_holds(RunIf::AllSuccess, &[Succeeded, Excluded]));
        assert!(!run_if_holds(RunIf::AllSuccess, &[Succeeded, Skipped]));
        assert!(!run_if_holds(RunIf::NoneFailed, &[Skipped]));
        assert!(run_if_holds(RunIf::NoneFailed, &[Skipped, Succeeded]));
        assert!(run_if_holds(RunIf::AllFailed, &[Failed, UpstreamFailed]));
        assert!(!run_if_holds(RunIf::AllFailed, &[Failed, Skipped]));
        assert!(run_if_holds(RunIf::AllDone, &[Failed, Skipped, Succeeded]));
    }

    #[tokio::test]
    async fn a_flaky_stage_succeeds_on_retry_after_the_interval() {
        let p = pipeline(
            "  a: { job: ingest, sources: [s], max_retries: 3, min_retry_interval: 100ms }\n",
        );
        let t = Instant::now();
        let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::FailTimes(2))]).await;
        assert_eq!(out["a"], (Outcome::Succeeded, 3));
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::Fail)]).await;
        assert_eq!(out["a"], (Outcome::Failed, 4));
        // Bad input is not retried: the next attempt would fail the same way.
        let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::BadInput)]).await;
        assert_eq!(out["a"], (Outcome::Failed, 1));
    }

    #[tokio::test]
    async fn a_timed_out_stage_is_cancelled_and_retried_only_with_retry_on_timeout() {
        let slow = [("a", Act::Sleep(Duration::from_secs(30)))];
        let p = pipeline("  a: { job: ingest, sources: [s], timeout: 100ms, max_retries: 2 }\n");
        let t = Instant::now();
        let (out, log) = go(&p, &RunOptions::default(), &slow).await;
        assert_eq!(out["a"], (Outcome::Failed, 1));
        assert_eq!(log.in_flight, 0, "the timed-out attempt was dropped");
        let p = pipeline(
            "  a: { job: ingest, sources: [s], timeout: 100ms, max_retries: 2, retry_on_timeout: true }\n",
        );
        let (out, _) = go(&p, &RunOptions::default(), &slow).await;
        assert_eq!(out["a"], (Outcome::Failed, 3));
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn shards_run_concurrently_and_a_failing_shard_fails_the_stage() {
        let p = pipeline(
            "  a: { job: ingest, sources: [s], shards: 4 }\n  b: { job: ingest, sources: [s], depends_on: [a] }\n",
        );
        let (out, log) = go(
            &p,
            &RunOptions::default(),
            &[("a", Act::Sleep(Duration::from_millis(200)))],
        )
        .await;
        assert_eq!(out["a"].0, Outcome::Succeeded);
        let mut shards: Vec<String> = log
            .calls
            .iter()
            .filter(|c| c.0 == "a")
            .map(|c| c.1.to_string())
            .collect();
        shards.sort();
        assert_eq!(shards, ["0/4", "1/4", "2/4", "3/4"]);
        assert_eq!(log.max_in_flight, 4);
        let (out, _) = go(&p, &RunOptions::default(), &[("a", Act::Fail)]).await;
        assert_eq!(out["a"].0, Outcome::Failed);
        assert_eq!(out["b"].0, Outcome::UpstreamFailed);
    }

    #[tokio::test]
    async fn from_runs_a_stage_and_its_downstream_only() {
        let p = pipeline(
            "  a: { job: ingest, sources: [s] }\n  b: { job: ingest, sources: [s], depends_on: [a] }\n  c: { job: ingest, sources: [s], depends_on: [b] }\n  d: { job: ingest, sources: [s] }\n",
        );
        let opts = RunOptions {
            from: Some("b".into()),
            ..Default::default()
        };
        let (out, log) = go(&p, &opts, &[]).await;
        let ran: Vec<&str> = log.calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(ran, ["b", "c"]);
        assert_eq!(out["a"].0, Outcome::Excluded);
        assert_eq!(out["d"].0, Outcome::Excluded);
        let opts = RunOptions {
            from: Some("bb".into()),
            ..Default::default()
        };
        let err = run_with(&p, &opts, |_, _| async {
            Ok(StageReport::Ingest(IngestReport::default()))
        })
        .await
        .expect_err("unknown stage");
        assert!(err.to_string().contains("did you mean `b`"), "{err}");
    }
}
