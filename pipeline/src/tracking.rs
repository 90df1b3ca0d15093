//! MLflow tracking of pipeline runs: when `MLFLOW_TRACKING_URI` is set or the
//! pipeline has an `mlflow:` block, each `weightlake run` is one MLflow run in
//! experiment `weightlake/<pipeline>` (or `mlflow.experiment`), with params
//! (`pipeline`, `run_id`, and each pipeline parameter as `param.<name>`),
//! metrics per stage that ran (`<stage>.duration_s`, `<stage>.bytes`,
//! `<stage>.throughput_mbps`, and with `cost:` `<stage>.cost_usd` and
//! `run.cost_usd`, plus params `cost.instance` and `cost.usd_per_hour`) and
//! status `FINISHED` or `FAILED`.
//!
//! The run is logged when the pipeline run ends. Tracking is best effort: a
//! failure is a warning, never a failed pipeline run.

use std::time::SystemTime;

use tracing::{info, warn};
use weightlake_connectors::mlflow::MlflowClient;

use crate::ValidatedPipeline;
use crate::ledger::throughput_mbps;
use crate::runner::RunReport;

/// The tracking server and experiment of `p`, if tracking is on.
fn target(p: &ValidatedPipeline) -> Option<Result<(MlflowClient, String), String>> {
    let block = p.spec().mlflow.as_ref();
    let env = std::env::var("MLFLOW_TRACKING_URI")
        .ok()
        .filter(|v| !v.is_empty());
    if block.is_none() && env.is_none() {
        return None;
    }
    let experiment = block
        .and_then(|b| b.experiment.clone())
        .unwrap_or_else(|| format!("weightlake/{}", p.spec().name));
    let Some(uri) = block.and_then(|b| b.tracking_uri.clone()).or(env) else {
        return Some(Err(
            "the pipeline has an `mlflow:` block but no tracking_uri, and MLFLOW_TRACKING_URI is not set"
                .into(),
        ));
    };
    Some(
        MlflowClient::new(&uri)
            .map(|c| (c, experiment))
            .map_err(|e| e.to_string()),
    )
}

/// MLflow params: name -> value.
pub type Params = Vec<(String, String)>;
/// MLflow metrics: name -> value.
pub type Metrics = Vec<(String, f64)>;

/// The params and metrics logged for a run.
pub fn params_and_metrics(
    p: &ValidatedPipeline,
    run_id: &str,
    report: &RunReport,
) -> (Params, Metrics) {
    let mut params = vec![
        ("pipeline".to_string(), p.spec().name.clone()),
        ("run_id".to_string(), run_id.to_string()),
    ];
    params.extend(
        p.params()
            .iter()
            .map(|(k, v)| (format!("param.{k}"), v.clone())),
    );
    let mut metrics = Vec::new();
    for s in report.stages.iter().filter(|s| s.attempts > 0) {
        let bytes: u64 = s.reports.iter().map(|(_, r)| r.bytes()).sum();
        metrics.push((format!("{}.duration_s", s.stage), s.elapsed.as_secs_f64()));
        metrics.push((format!("{}.bytes", s.stage), bytes as f64));
        metrics.push((
            format!("{}.throughput_mbps", s.stage),
            throughput_mbps(bytes, s.elapsed),
        ));
        if let Some(c) = s.cost_usd {
            metrics.push((format!("{}.cost_usd", s.stage), c));
        }
    }
    if let Some(c) = report.cost_usd {
        metrics.push(("run.cost_usd".to_string(), c));
    }
    if let Some(m) = p.cost() {
        params.push(("cost.instance".to_string(), m.instance.clone()));
        params.push(("cost.usd_per_hour".to_string(), m.usd_per_hour.to_string()));
    }
    (params, metrics)
}

/// Log the run to MLflow if tracking is on; warn on failure.
pub async fn track(p: &ValidatedPipeline, run_id: &str, started: SystemTime, report: &RunReport) {
    let (client, experiment) = match target(p) {
        None => return,
        Some(Err(e)) => {
            warn!("MLflow tracking skipped: {e}");
            return;
        }
        Some(Ok(t)) => t,
    };
    let (params, metrics) = params_and_metrics(p, run_id, report);
    let result = async {
        let exp = client.experiment_id(&experiment).await?;
        let tags = vec![
            ("weightlake.run_id".to_string(), run_id.to_string()),
            ("weightlake.pipeline".to_string(), p.spec().name.clone()),
            (
                "weightlake.started_at".to_string(),
                chrono::DateTime::<chrono::Utc>::from(started).to_rfc3339(),
            ),
        ];
        let run = client
            .create_run(&exp, &format!("{} {run_id}", p.spec().name), &tags)
            .await?;
        client.log_batch(&run, &params, &metrics).await?;
        client.finish_run(&run, report.succeeded()).await?;
        Ok::<_, weightlake_connectors::ConnectorError>(run)
    }
    .await;
    match result {
        Ok(run) => info!(%experiment, mlflow_run = %run, "pipeline run tracked in MLflow"),
        Err(e) => warn!(%experiment, error = %e, "MLflow tracking failed"),
    }
}
