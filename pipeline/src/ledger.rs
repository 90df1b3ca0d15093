//! Recording task attempts in the run ledger, `_system.runs`.
//!
//! The runner reports every attempt of every shard to an [`AttemptSink`] as
//! it ends (and every stage that did not run, as attempt 0); [`Ledger`] is the
//! sink that appends them to the pipeline's lake, one small commit per
//! attempt. A ledger write that fails is logged as a warning: it never fails
//! the stage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tracing::warn;
use weightlake_jobs::lake::Lake;
use weightlake_jobs::ledger::{RunRecord, append};
use weightlake_jobs::shard::Shard;
use weightlake_schemas::system;

use crate::runner::StageReport;
use crate::{PipelineError, ValidatedPipeline};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed,
    /// It ran past `timeout` and was cancelled.
    TimedOut,
    /// Not run: `run_if` did not hold, nothing upstream failed.
    Skipped,
    /// Not run: `run_if` did not hold after an upstream failure.
    UpstreamFailed,
    /// Cancelled by the budget (stopped while running, or never started), or
    /// a run stopped by a signal.
    Cancelled,
    /// A run marker: the run has started and not ended.
    Running,
}

impl AttemptStatus {
    /// The `status` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => system::SUCCEEDED,
            Self::Failed => system::FAILED,
            Self::TimedOut => system::TIMED_OUT,
            Self::Skipped => system::SKIPPED,
            Self::UpstreamFailed => system::UPSTREAM_FAILED,
            Self::Cancelled => system::CANCELLED,
            Self::Running => system::RUNNING,
        }
    }
}

/// One ended attempt of one task.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The stage.
    pub stage: String,
    /// The shard, for a sharded stage.
    pub shard: Option<Shard>,
    /// 1-based; 0 for a stage that did not run.
    pub attempt: u32,
    /// How it ended.
    pub status: AttemptStatus,
    /// When it started.
    pub started: SystemTime,
    /// How long it ran.
    pub elapsed: Duration,
    /// Bytes moved (see [`StageReport::bytes`]).
    pub bytes: u64,
    /// Rows written (see [`StageReport::rows`]).
    pub rows: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Cost estimate in dollars (see [`crate::cost`]); None without prices.
    pub cost_usd: Option<f64>,
}

impl Attempt {
    /// An attempt that ended with `result`.
    pub fn ended(
        stage: &str,
        shard: Shard,
        attempt: u32,
        started: SystemTime,
        elapsed: Duration,
        result: &Result<StageReport, PipelineError>,
    ) -> Self {
        let (status, bytes, rows, error) = match result {
            Ok(r) => (AttemptStatus::Succeeded, r.bytes(), r.rows(), None),
            Err(e @ PipelineError::Timeout { .. }) => {
                (AttemptStatus::TimedOut, 0, 0, Some(e.to_string()))
            }
            Err(e @ PipelineError::Cancelled { .. }) => {
                (AttemptStatus::Cancelled, 0, 0, Some(e.to_string()))
            }
            Err(e) => (AttemptStatus::Failed, 0, 0, Some(e.to_string())),
        };
        Self {
            stage: stage.to_string(),
            shard: (shard.count > 1).then_some(shard),
            attempt,
            status,
            started,
            elapsed,
            bytes,
            rows,
            error,
            cost_usd: None,
        }
    }

    /// With a cost estimate.
    pub fn with_cost(mut self, usd: Option<f64>) -> Self {
        self.cost_usd = usd;
        self
    }

    /// With an error message.
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(weightlake_connectors::compact_xml_errors(&error.into()));
        self
    }

    /// A marker of the whole run (stage [`system::RUN_STAGE`]): `Running`
    /// when it starts, how it ended when it ends.
    pub fn run_marker(status: AttemptStatus, started: SystemTime) -> Self {
        Self {
            elapsed: started.elapsed().unwrap_or_default(),
            started,
            ..Self::not_run(system::RUN_STAGE, status)
        }
    }

    /// A stage that did not run.
    pub fn not_run(stage: &str, status: AttemptStatus) -> Self {
        Self {
            stage: stage.to_string(),
            shard: None,
            attempt: 0,
            status,
            started: SystemTime::now(),
            elapsed: Duration::ZERO,
            bytes: 0,
            rows: 0,
            error: None,
            cost_usd: None,
        }
    }
}

/// Where the runner reports attempts.
pub trait AttemptSink: Send + Sync {
    /// Record one ended attempt. Must not fail: a sink logs its own errors.
    fn record(&self, attempt: Attempt) -> BoxFuture<'_, ()>;
}

/// The `_system.runs` table of a pipeline's lake, for one run.
pub struct Ledger {
    lake: Lake,
    run_id: String,
    pipeline: String,
}

impl Ledger {
    /// The ledger of run `run_id` of `p`, in `p`'s lake; `None` (with a
    /// warning) when the lake cannot be opened.
    pub fn for_pipeline(p: &ValidatedPipeline, run_id: &str) -> Option<Self> {
        let spec = p.spec();
        match Lake::new(&spec.lake, spec.storage.clone()) {
            Ok(lake) => Some(Self {
                lake,
                run_id: run_id.to_string(),
                pipeline: spec.name.clone(),
            }),
            Err(e) => {
                warn!(error = %e, "run ledger unavailable: attempts are not recorded");
                None
            }
        }
    }

    /// Create `_system.runs` if needed, before tasks race to append to it
    /// (a warning if that fails: the appends will try again).
    pub async fn prepare(&self) {
        if let Err(e) = weightlake_jobs::ledger::create(&self.lake).await {
            warn!(error = %e, "could not create _system.runs");
        }
    }

    /// The row of `a`.
    fn record_of(&self, a: &Attempt) -> RunRecord {
        let micros = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        };
        let started_at = micros(a.started);
        let duration_us = i64::try_from(a.elapsed.as_micros()).unwrap_or(i64::MAX);
        RunRecord {
            run_id: self.run_id.clone(),
            pipeline: self.pipeline.clone(),
            stage: a.stage.clone(),
            shard: a.shard.map(|s| s.to_string()),
            attempt: i32::try_from(a.attempt).unwrap_or(i32::MAX),
            status: a.status.as_str().to_string(),
            started_at,
            ended_at: started_at.saturating_add(duration_us),
            duration_ms: duration_us / 1000,
            bytes: i64::try_from(a.bytes).unwrap_or(i64::MAX),
            rows: i64::try_from(a.rows).unwrap_or(i64::MAX),
            throughput_mbps: throughput_mbps(a.bytes, a.elapsed),
            error: a.error.clone(),
            cost_usd: a.cost_usd,
        }
    }
}

/// Bytes per second / 1e6; 0 when nothing moved or no time passed.
pub fn throughput_mbps(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if bytes == 0 || secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / secs / 1e6
    }
}

impl AttemptSink for Ledger {
    fn record(&self, attempt: Attempt) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let row = self.record_of(&attempt);
            if let Err(e) = append(&self.lake, &[row]).await {
                warn!(stage = %attempt.stage, error = %e, "could not write _system.runs");
            }
        })
    }
}

impl StageReport {
    /// Bytes the stage moved: downloaded (ingest), source bytes read
    /// (tensorise), bytes rebuilt and written (export), bytes compaction
    /// rewrote (maintain); 0 for promote, which writes metadata only.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Ingest(r) => r.bytes_downloaded,
            Self::Tensorise(r) => r.bytes_in,
            Self::Promote(_) => 0,
            Self::Export(r) => r.bytes,
            Self::Maintain(r) => r.bytes_compacted(),
        }
    }

    /// Rows or items written: bronze chunks (ingest), silver tensors
    /// (tensorise), files (export), 1 for a new gold version else 0 (promote),
    /// bronze chunk rows dropped by retention (maintain).
    pub fn rows(&self) -> u64 {
        match self {
            Self::Ingest(r) => r.chunks_written as u64,
            Self::Tensorise(r) => r.tensors as u64,
            Self::Promote(r) => u64::from(!r.existing),
            Self::Export(r) => r.files as u64,
            Self::Maintain(r) => r.bronze.as_ref().map_or(0, |b| b.chunks_dropped),
        }
    }
}

/// One pipeline run, summarised from its `_system.runs` rows.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// Earliest attempt start (microseconds since the epoch).
    pub started_at: i64,
    /// Latest attempt end (microseconds since the epoch).
    pub ended_at: i64,
    /// Stages whose every task's last attempt succeeded.
    pub stages_ok: usize,
    /// Stages with a task whose last attempt failed, timed out or was
    /// cancelled.
    pub stages_failed: usize,
    /// Stages that did not run (skipped, upstream_failed).
    pub stages_not_run: usize,
    /// Bytes of the successful attempts.
    pub bytes: i64,
    /// Cost estimate of every attempt, when prices were configured.
    pub cost_usd: Option<f64>,
    /// The status of the run's last marker (`weightlake run` writes them;
    /// `weightlake task` runs have none).
    pub marker: Option<String>,
}

impl RunSummary {
    /// `incomplete` when the run started and never ended (still running, or
    /// its process died), `cancelled` when it was stopped, `failed` when a
    /// stage failed, else `succeeded`.
    pub fn status(&self) -> &'static str {
        match self.marker.as_deref() {
            Some(system::RUNNING) => "incomplete",
            Some(system::CANCELLED) => system::CANCELLED,
            _ if self.stages_failed > 0 => system::FAILED,
            Some(system::FAILED) => system::FAILED,
            _ => system::SUCCEEDED,
        }
    }
}

/// Runs in `records`, newest first.
pub fn summarize(records: &[RunRecord]) -> Vec<RunSummary> {
    use std::collections::BTreeMap;
    // run -> stage -> shard -> last attempt
    let mut runs: BTreeMap<&str, BTreeMap<&str, BTreeMap<Option<&str>, &RunRecord>>> =
        BTreeMap::new();
    let mut markers: BTreeMap<&str, &RunRecord> = BTreeMap::new();
    for r in records {
        if r.stage == system::RUN_STAGE {
            let last = markers.entry(&r.run_id).or_insert(r);
            if (r.ended_at, r.status != system::RUNNING)
                > (last.ended_at, last.status != system::RUNNING)
            {
                *last = r;
            }
            runs.entry(&r.run_id).or_default();
            continue;
        }
        let last = runs
            .entry(&r.run_id)
            .or_default()
            .entry(&r.stage)
            .or_default()
            .entry(r.shard.as_deref())
            .or_insert(r);
        if (r.attempt, r.ended_at) > (last.attempt, last.ended_at) {
            *last = r;
        }
    }
    let mut out: Vec<RunSummary> = runs
        .into_iter()
        .map(|(run_id, stages)| {
            let rows = records.iter().filter(|r| r.run_id == run_id);
            let mut s = RunSummary {
                run_id: run_id.to_string(),
                pipeline: String::new(),
                started_at: i64::MAX,
                ended_at: 0,
                stages_ok: 0,
                stages_failed: 0,
                stages_not_run: 0,
                bytes: 0,
                cost_usd: None,
                marker: markers.get(run_id).map(|m| m.status.clone()),
            };
            for r in rows {
                s.pipeline.clone_from(&r.pipeline);
                s.started_at = s.started_at.min(r.started_at);
                s.ended_at = s.ended_at.max(r.ended_at);
                if r.status == system::SUCCEEDED {
                    s.bytes += r.bytes;
                }
                if let Some(c) = r.cost_usd {
                    *s.cost_usd.get_or_insert(0.0) += c;
                }
            }
            for tasks in stages.values() {
                let st = |x: &str| tasks.values().any(|r| r.status == x);
                if st(system::FAILED) || st(system::TIMED_OUT) || st(system::CANCELLED) {
                    s.stages_failed += 1;
                } else if tasks.values().all(|r| r.status == system::SUCCEEDED) {
                    s.stages_ok += 1;
                } else {
                    s.stages_not_run += 1;
                }
            }
            s
        })
        .collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &str, stage: &str, attempt: i32, status: &str, at: i64) -> RunRecord {
        RunRecord {
            run_id: run.into(),
            pipeline: "p".into(),
            stage: stage.into(),
            shard: None,
            attempt,
            status: status.into(),
            started_at: at,
            ended_at: at + 10,
            duration_ms: 0,
            bytes: 100,
            rows: 1,
            throughput_mbps: 0.0,
            error: None,
            cost_usd: None,
        }
    }

    #[test]
    fn a_retried_stage_counts_by_its_last_attempt_and_runs_are_newest_first() {
        let rows = vec![
            row("r1", "a", 1, system::FAILED, 1),
            row("r1", "a", 2, system::SUCCEEDED, 20),
            row("r1", "b", 1, system::TIMED_OUT, 30),
            row("r1", "c", 0, system::UPSTREAM_FAILED, 40),
            row("r2", "a", 1, system::SUCCEEDED, 100),
        ];
        let s = summarize(&rows);
        assert_eq!(s[0].run_id, "r2");
        assert_eq!(s[0].status(), "succeeded");
        assert_eq!(
            (s[1].stages_ok, s[1].stages_failed, s[1].stages_not_run),
            (1, 1, 1)
        );
        assert_eq!(s[1].status(), "failed");
        assert_eq!(s[1].bytes, 100);
        assert_eq!(s[1].started_at, 1);
        assert!((throughput_mbps(2_000_000, Duration::from_secs(2)) - 1.0).abs() < 1e-9);
    }
}
