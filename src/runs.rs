//! `weightlake runs list | show`: read the run ledger (`_system.runs`).

use weightlake_jobs::ledger::{RunRecord, read};
use weightlake_pipeline::ledger::summarize;
use weightlake_schemas::system;

use crate::args::{RunsArgs, RunsCommand};
use crate::commands::{CliError, bad_input, classify_job, open_lake};

fn time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| micros.to_string())
}

fn mb(bytes: i64) -> String {
    crate::progress::size(u64::try_from(bytes).unwrap_or(0))
}

/// `weightlake runs …`.
pub async fn runs(a: RunsArgs) -> Result<(), CliError> {
    match a.command {
        RunsCommand::List {
            pipeline,
            limit,
            lake,
        } => {
            let lake = open_lake(&lake)?;
            let records = read(&lake).await.map_err(classify_job)?;
            let runs: Vec<_> = summarize(&records)
                .into_iter()
                .filter(|r| pipeline.as_ref().is_none_or(|p| *p == r.pipeline))
                .take(limit)
                .collect();
            if runs.is_empty() {
                println!("no runs");
            }
            for r in runs {
                println!(
                    "{}  {}  {}  {:<9}  stages {} ok, {} failed{}  {}{}",
                    r.run_id,
                    r.pipeline,
                    time(r.started_at),
                    r.status(),
                    r.stages_ok,
                    r.stages_failed,
                    if r.stages_not_run > 0 {
                        format!(", {} not run", r.stages_not_run)
                    } else {
                        String::new()
                    },
                    mb(r.bytes),
                    r.cost_usd
                        .map(|c| format!("  {}", weightlake_pipeline::cost::usd(c)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        RunsCommand::Show { run_id, lake } => {
            let lake = open_lake(&lake)?;
            let records = read(&lake).await.map_err(classify_job)?;
            let mut ids: Vec<&str> = records
                .iter()
                .map(|r| r.run_id.as_str())
                .filter(|id| id.starts_with(run_id.as_str()))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let id = match ids.as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(bad_input(anyhow::anyhow!(
                        "no run `{run_id}` in _system.runs"
                    )));
                }
                many => {
                    return Err(bad_input(anyhow::anyhow!(
                        "run id `{run_id}` is ambiguous: {}",
                        many.join(", ")
                    )));
                }
            };
            let own: Vec<RunRecord> = records.iter().filter(|r| r.run_id == id).cloned().collect();
            let status = summarize(&own).first().map(|s| s.status());
            let mut rows: Vec<&RunRecord> = own.iter().collect();
            // A run's two markers share its start time: `running` first.
            let marker_end = |r: &RunRecord| r.status != "running";
            rows.sort_by(|a, b| {
                (a.started_at, &a.stage, &a.shard, a.attempt, marker_end(a)).cmp(&(
                    b.started_at,
                    &b.stage,
                    &b.shard,
                    b.attempt,
                    marker_end(b),
                ))
            });
            if let Some(first) = rows.first() {
                println!(
                    "run {id} of pipeline {}: {}",
                    first.pipeline,
                    status.unwrap_or("-")
                );
            }
            if status == Some("incomplete") {
                println!(
                    "  it never recorded its end: still running, or its process was killed; \
                     a stage running at that moment has no row"
                );
            }
            for r in rows {
                // The run's own marker of a run that never ended says
                // `running`; the run is incomplete.
                let row_status = match (r.stage.as_str(), r.status.as_str(), status) {
                    (system::RUN_STAGE, system::RUNNING, Some("incomplete")) => "incomplete",
                    _ => r.status.as_str(),
                };
                println!(
                    "  {:<16} shard {:<5} attempt {}  {:<15} {}  {:>8.2}s  {:>10}  {:>8.1} MB/s  {:>9}{}",
                    r.stage,
                    r.shard.as_deref().unwrap_or("-"),
                    r.attempt,
                    row_status,
                    time(r.started_at),
                    r.duration_ms as f64 / 1000.0,
                    mb(r.bytes),
                    r.throughput_mbps,
                    r.cost_usd
                        .map(weightlake_pipeline::cost::usd)
                        .unwrap_or_else(|| "-".into()),
                    r.error
                        .as_ref()
                        .map(|e| format!("  error: {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}
