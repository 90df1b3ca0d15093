//! A pipeline's past, from `_system.runs`: how fast each stage went in its
//! last runs (for throughput alerts and cost estimates) and what the runs
//! of a day cost (for `budget.max_usd_per_day`).
//!
//! A stage's throughput in one run is the bytes of its succeeded attempts
//! over its wall time (first attempt start to last attempt end, all shards),
//! so a sharded stage is measured as a whole. Runs in which the stage moved
//! nothing (a re-run with nothing to do) are left out.

use std::collections::BTreeMap;
use std::time::Duration;

use weightlake_jobs::ledger::RunRecord;
use weightlake_schemas::system;

/// One past run of one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRun {
    /// The run.
    pub run_id: String,
    /// Start of its first attempt (microseconds since the epoch).
    pub started_at: i64,
    /// Bytes of its succeeded attempts.
    pub bytes: u64,
    /// First start to last end.
    pub elapsed: Duration,
}

impl StageRun {
    /// MB/s.
    pub fn throughput_mbps(&self) -> f64 {
        crate::ledger::throughput_mbps(self.bytes, self.elapsed)
    }
}

/// Bytes a stage run must move for its throughput to count in estimates
/// and alerts' medians: 16 MB.
pub const MIN_MEASURED_BYTES: u64 = 16_000_000;

/// The past runs of one pipeline.
#[derive(Debug, Clone, Default)]
pub struct History {
    records: Vec<RunRecord>,
}

impl History {
    /// The rows of `pipeline` among `records`.
    pub fn of(pipeline: &str, records: Vec<RunRecord>) -> Self {
        Self {
            records: records
                .into_iter()
                .filter(|r| r.pipeline == pipeline)
                .collect(),
        }
    }

    /// The last `n` runs in which `stage` succeeded and moved at least
    /// [`MIN_MEASURED_BYTES`], newest first: a run that moved a few bytes
    /// measures its fixed costs (opening tables, listing), not a throughput,
    /// and a plan extrapolating from 36 bytes in 0.05 s said an hour for
    /// 3 MB.
    pub fn stage_runs(&self, stage: &str, n: usize) -> Vec<StageRun> {
        let mut runs = self.succeeded_runs(stage);
        runs.retain(|r| r.bytes >= MIN_MEASURED_BYTES);
        runs.truncate(n);
        runs
    }

    /// Every run in which `stage` succeeded (the last attempt of each shard),
    /// newest first.
    fn succeeded_runs(&self, stage: &str) -> Vec<StageRun> {
        let mut by_run: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
        for r in self
            .records
            .iter()
            .filter(|r| r.stage == stage && r.attempt > 0)
        {
            by_run.entry(&r.run_id).or_default().push(r);
        }
        let mut runs: Vec<StageRun> = by_run
            .into_iter()
            .filter_map(|(run_id, rows)| {
                let mut last: BTreeMap<Option<&str>, &RunRecord> = BTreeMap::new();
                for r in &rows {
                    let e = last.entry(r.shard.as_deref()).or_insert(r);
                    if (r.attempt, r.ended_at) > (e.attempt, e.ended_at) {
                        *e = r;
                    }
                }
                if last.values().any(|r| r.status != system::SUCCEEDED) {
                    return None;
                }
                let bytes: i64 = rows
                    .iter()
                    .filter(|r| r.status == system::SUCCEEDED)
                    .map(|r| r.bytes)
                    .sum();
                let start = rows.iter().map(|r| r.started_at).min()?;
                let end = rows.iter().map(|r| r.ended_at).max()?;
                Some(StageRun {
                    run_id: run_id.to_string(),
                    started_at: start,
                    bytes: bytes.max(0) as u64,
                    elapsed: Duration::from_micros((end - start).max(0) as u64),
                })
            })
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        runs
    }

    /// Median throughput (MB/s) of `stage` over its last `n` runs that moved
    /// bytes, with the number of runs it is taken over; None without any.
    pub fn median_throughput(&self, stage: &str, n: usize) -> Option<(f64, usize)> {
        let v: Vec<f64> = self
            .stage_runs(stage, n)
            .iter()
            .map(StageRun::throughput_mbps)
            .collect();
        let len = v.len();
        median(v).map(|m| (m, len))
    }

    /// Median wall time of `stage` over its last `n` succeeded runs (with or
    /// without bytes), for stages whose work is not measured in bytes.
    pub fn median_duration(&self, stage: &str, n: usize) -> Option<Duration> {
        let mut runs = self.succeeded_runs(stage);
        runs.truncate(n);
        median(runs.iter().map(|r| r.elapsed.as_secs_f64()).collect()).map(Duration::from_secs_f64)
    }

    /// Dollars recorded for the runs that started today (UTC), for
    /// `budget.max_usd_per_day`.
    pub fn spent_today(&self) -> f64 {
        self.spent_since(start_of_today_utc())
    }

    /// Dollars recorded for runs that started at or after `since`
    /// (microseconds since the epoch).
    pub fn spent_since(&self, since: i64) -> f64 {
        let mut first_start: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &self.records {
            let e = first_start.entry(&r.run_id).or_insert(r.started_at);
            *e = (*e).min(r.started_at);
        }
        self.records
            .iter()
            .filter(|r| {
                first_start
                    .get(r.run_id.as_str())
                    .is_some_and(|s| *s >= since)
            })
            .filter_map(|r| r.cost_usd)
            .sum()
    }
}

/// The median of `v`; None when empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The history of `p` from its lake's `_system.runs`; empty (with a warning)
/// when it cannot be read.
pub async fn load(p: &crate::ValidatedPipeline) -> History {
    let spec = p.spec();
    let records = match weightlake_jobs::lake::Lake::new(&spec.lake, spec.storage.clone()) {
        Ok(lake) => weightlake_jobs::ledger::read(&lake).await,
        Err(e) => Err(e),
    };
    match records {
        Ok(r) => History::of(&spec.name, r),
        Err(e) => {
            tracing::warn!(error = %e, "could not read _system.runs: no run history for budgets and alerts");
            History::default()
        }
    }
}

/// Start of the current UTC day, microseconds since the epoch.
pub fn start_of_today_utc() -> i64 {
    let now = chrono::Utc::now();
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A succeeded attempt of `stage` in `run`: `mb` megabytes in `secs`.
    pub(crate) fn attempt(run: &str, stage: &str, at_s: i64, mb: i64, secs: i64) -> RunRecord {
        RunRecord {
            run_id: run.into(),
            pipeline: "p".into(),
            stage: stage.into(),
            shard: None,
            attempt: 1,
            status: system::SUCCEEDED.into(),
            started_at: at_s * 1_000_000,
            ended_at: (at_s + secs) * 1_000_000,
            duration_ms: secs * 1000,
            bytes: mb * 1_000_000,
            rows: 1,
            throughput_mbps: mb as f64 / secs as f64,
            error: None,
            cost_usd: Some(0.25),
        }
    }

    #[test]
    fn median_of_the_last_runs_skips_failed_and_empty_runs() {
        let mut rows = vec![
            attempt("r1", "ingest", 100, 100, 1), // 100 MB/s, oldest: dropped by n = 3
            attempt("r2", "ingest", 200, 100, 2), // 50
            attempt("r3", "ingest", 300, 100, 4), // 25
            attempt("r4", "ingest", 400, 0, 1),   // nothing to do: left out
            attempt("r4b", "ingest", 450, 1, 100), // 1 MB: fixed costs, left out
            attempt("r5", "ingest", 500, 100, 5), // 20
            attempt("r5", "other", 500, 100, 5),
        ];
        let mut failed = attempt("r6", "ingest", 600, 100, 1);
        failed.status = system::FAILED.into();
        rows.push(failed);
        rows.push(RunRecord {
            pipeline: "elsewhere".into(),
            ..attempt("x", "ingest", 700, 1, 1000)
        });
        let h = History::of("p", rows);
        let (m, n) = h.median_throughput("ingest", 3).expect("history");
        assert_eq!(n, 3);
        assert!((m - 25.0).abs() < 1e-9, "median of 50, 25, 20: {m}");
        assert_eq!(h.median_throughput("nope", 3), None);
        assert!((h.spent_since(300 * 1_000_000) - 6.0 * 0.25).abs() < 1e-9);
    }

    #[test]
    fn a_sharded_stage_is_measured_as_a_whole() {
        let mut a = attempt("r1", "ingest", 100, 100, 10);
        a.shard = Some("0/2".into());
        let mut b = attempt("r1", "ingest", 105, 100, 5);
        b.shard = Some("1/2".into());
        let h = History::of("p", vec![a, b]);
        let runs = h.stage_runs("ingest", 5);
        assert_eq!(runs[0].bytes, 200_000_000);
        assert_eq!(runs[0].elapsed, Duration::from_secs(10));
    }
}
