//! Pipeline subcommands: `run`, `task`, `plan`, `databricks export`. Parse
//! the arguments, call the pipeline crate, print, map errors to exit codes.

use weightlake_jobs::export::ExportReport;
use weightlake_jobs::gold::promote::PromoteReport;
use weightlake_jobs::shard::Shard;
use weightlake_pipeline::databricks::{self, ExportOptions};
use weightlake_pipeline::runner::{Outcome, RunOptions, run, run_task};
use weightlake_pipeline::{PipelineError, ValidatedPipeline};

use crate::args::{DatabricksExportArgs, ExportFormat, PlanArgs, RunArgs, TaskArgs, TaskRunner};
use crate::commands::{CliError, print_stage};
use crate::progress::reporter;

fn code(e: PipelineError) -> CliError {
    CliError {
        code: match &e {
            // 128 + SIGINT, as a shell reports a process Ctrl-C stopped.
            PipelineError::Interrupted { .. } => 130,
            e if e.is_bad_input() => 2,
            _ => 1,
        },
        error: e.into(),
    }
}

fn bad(e: impl Into<anyhow::Error>) -> CliError {
    CliError {
        error: e.into(),
        code: 2,
    }
}

pub(crate) fn load(
    path: &std::path::Path,
    params: &[String],
) -> Result<ValidatedPipeline, CliError> {
    let params = params
        .iter()
        .map(|p| weightlake_pipeline::parse_param(p).map_err(|e| bad(anyhow::anyhow!(e))))
        .collect::<Result<Vec<_>, _>>()?;
    weightlake_pipeline::load_file_with(path, &params).map_err(code)
}

/// `weightlake run`: the DAG; exit 1 when a stage failed (2 when every
/// failure was bad input).
pub async fn run_pipeline(a: RunArgs, quiet: bool) -> Result<(), CliError> {
    let p = load(&a.pipeline, &a.params)?;
    let opts = RunOptions {
        run_id: a.run_id,
        only: a.only,
        from: a.from,
        progress: reporter(quiet),
        stop_on_signals: true,
        ..Default::default()
    };
    let report = run(&p, &opts).await.map_err(code)?;
    for s in &report.stages {
        let sharded = s.reports.len() > 1;
        match s.outcome {
            Outcome::Succeeded => {
                for (shard, r) in &s.reports {
                    let label = if sharded {
                        format!("{}[{shard}]", s.stage)
                    } else {
                        s.stage.clone()
                    };
                    print_stage(&label, r);
                }
                if s.attempts > 1 {
                    println!("{}: succeeded after {} attempts", s.stage, s.attempts);
                }
            }
            Outcome::Cancelled => println!(
                "{}: cancelled: {}",
                s.stage,
                s.error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            Outcome::Failed => println!(
                "{}: failed after {} attempt{}: {}",
                s.stage,
                s.attempts,
                if s.attempts == 1 { "" } else { "s" },
                s.error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            Outcome::UpstreamFailed | Outcome::Skipped => {
                let rule = p.spec().stages[&s.stage].run_if.unwrap_or_default();
                println!(
                    "{}: {} (run_if {} not met)",
                    s.stage,
                    s.outcome.as_str(),
                    rule.as_str()
                );
            }
            Outcome::Excluded => {}
        }
    }
    if let Some(c) = report.cost_usd {
        println!("cost estimate: {}", weightlake_pipeline::cost::usd(c));
    }
    if report.succeeded() {
        return Ok(());
    }
    let failed: Vec<&str> = report
        .stages
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed | Outcome::Cancelled))
        .map(|s| s.stage.as_str())
        .collect();
    let all_bad_input = report.errors().all(|(_, e)| e.is_bad_input());
    Err(CliError {
        error: anyhow::anyhow!("stage(s) failed: {}", failed.join(", ")),
        code: if all_bad_input { 2 } else { 1 },
    })
}

/// `weightlake task`: one attempt of one stage (one shard), as a Databricks
/// task runs it.
pub async fn task(a: TaskArgs, quiet: bool) -> Result<(), CliError> {
    let p = load(&a.pipeline, &a.params)?;
    let shard = match a.shard {
        Some(s) => s.parse::<Shard>().map_err(bad)?,
        None => Shard::ALL,
    };
    let opts = RunOptions {
        shard,
        run_id: a.run_id,
        progress: reporter(quiet),
        ..Default::default()
    };
    let r = run_task(&p, &a.stage, &opts).await.map_err(code)?;
    print_stage(&a.stage, &r);
    Ok(())
}

/// One line for a promote stage: version, alias, gates, size.
pub(crate) fn print_promote(stage: &str, r: &PromoteReport) {
    let failed: Vec<&str> = r
        .gates
        .iter()
        .filter(|g| !g.passed)
        .map(|g| g.name.as_str())
        .collect();
    let gates = match (r.gates.len(), failed.is_empty()) {
        (0, _) => "no gates".to_string(),
        (n, true) => format!("{n} gates passed"),
        (n, false) => format!(
            "{} of {n} gates passed, warned: {}",
            n - failed.len(),
            failed.join(", ")
        ),
    };
    println!(
        "{stage}: {}:{}{}{}, {gates}, {} files, {}{}",
        r.name,
        r.version,
        crate::gold::alias_text(r),
        crate::gold::existing_text(r, " (new version)"),
        r.files,
        crate::progress::size(r.bytes),
        r.mlflow_version
            .as_ref()
            .map(|v| format!(", MLflow version {v}"))
            .unwrap_or_default()
    );
}

/// Name the shards an index of the model names that the model lacks: the
/// checkpoint is incomplete (files failed or not yet ingested upstream).
pub(crate) fn note_missing(r: &ExportReport) {
    if !r.not_tensorised.is_empty() {
        println!(
            "  bronze is ahead of silver: {} file(s) ingested or removed since the last tensorise are not reflected: {}{} (run tensorise)",
            r.not_tensorised.len(),
            r.not_tensorised
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if r.not_tensorised.len() > 5 {
                ", …"
            } else {
                ""
            }
        );
    }
    if r.missing.is_empty() {
        return;
    }
    println!(
        "  incomplete checkpoint: an index does not match the files stored ({} problem(s)): {}{}",
        r.missing.len(),
        r.missing
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        if r.missing.len() > 5 { ", …" } else { "" }
    );
}

/// One line for an export stage.
/// Warn that the destination also holds files that are not the model's
/// (left from an earlier export, or someone else's): a trainer reading the
/// directory would see them too.
pub(crate) fn warn_other_files(to: &str, r: &ExportReport) {
    if r.others_deleted > 0 {
        println!(
            "  deleted {} file(s) under {to} that are not part of this model",
            r.others_deleted
        );
    }
    if r.others_count == 0 {
        return;
    }
    let more = r.others_count.saturating_sub(r.others.len());
    eprintln!(
        "warning: {to} also holds {} file(s) that are not part of this model, left as they are \
         ({}): {}{}",
        r.others_count,
        if r.delete_others {
            "behind symbolic links, which deleting never follows"
        } else {
            "--delete-others, or `delete_others: true` on an export stage, deletes them"
        },
        r.others.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
}

pub(crate) fn print_export(stage: &str, r: &ExportReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{stage}: {}, {} files, {} rebuilt and verified in {:.2}s ({:.1} MB/s)",
        r.exported,
        r.files,
        crate::progress::size(r.bytes),
        secs,
        r.bytes as f64 / secs / 1e6
    );
    note_marker(r);
    warn_other_files(&format!("the destination of `{stage}`"), r);
    note_missing(r);
}

/// Name the completion marker an export wrote last.
pub(crate) fn note_marker(r: &ExportReport) {
    if let Some(m) = &r.marker {
        println!("  complete: {m} lists every file and its sha256");
    }
}

/// `weightlake plan`: the DAG, then (unless `--offline`) what each stage
/// would do now and what the run would cost.
pub async fn plan(a: PlanArgs) -> Result<(), CliError> {
    let p = load(&a.pipeline, &a.params)?;
    let opts = RunOptions {
        only: a.only,
        from: a.from,
        ..Default::default()
    };
    // A stage that is not there is bad input, said before any output.
    let stages = weightlake_pipeline::runner::selected_stages(&p, &opts).map_err(code)?;
    print!("{}", weightlake_pipeline::plan::render(&p));
    if a.offline {
        return Ok(());
    }
    let history = weightlake_pipeline::history::load(&p).await;
    let estimate = weightlake_pipeline::estimate::estimate(&p, &stages, &history).await;
    print!("{}", estimate.render());
    if let (Some(total), Some(b)) = (estimate.total_usd(), p.spec().budget.as_ref())
        && let Some(limit) = b.limit(history.spent_today())
    {
        println!(
            "budget: {} -> {}",
            limit.what,
            if total > limit.usd {
                "the run would be refused"
            } else {
                "within budget"
            }
        );
    }
    let blind: Vec<&str> = estimate
        .stages
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.stage.as_str())
        .collect();
    if !blind.is_empty() {
        // The plan above is incomplete: say so in the exit code too, so a
        // script gating on `plan` does not read a missing bucket as fine.
        return Err(CliError {
            error: anyhow::anyhow!("could not inspect stage(s) {}", blind.join(", ")),
            code: 1,
        });
    }
    Ok(())
}

/// `weightlake databricks export`.
pub fn databricks_export(a: DatabricksExportArgs) -> Result<(), CliError> {
    let p = load(&a.pipeline, &[])?;
    let format = match a.format {
        ExportFormat::JobJson => databricks::ExportFormat::JobJson,
        ExportFormat::Bundle => databricks::ExportFormat::Bundle,
    };
    let runner = match a.runner {
        TaskRunner::Jar => databricks::Runner::Jar,
        TaskRunner::Wheel => databricks::Runner::Wheel,
    };
    let opts = ExportOptions {
        artifacts: a.artifacts.trim_end_matches('/').to_string(),
        pipeline_path: a.pipeline_path,
        ..ExportOptions::new(format, runner)
    };
    let text = databricks::export(&p, &opts).map_err(|e| code(e.into()))?;
    if let Ok(text) = std::fs::read_to_string(&a.pipeline) {
        for var in weightlake_pipeline::environment_names(&text, &p.spec().parameters) {
            eprintln!(
                "warning: the pipeline reads ${{{var}}} from the environment, and each task \
                 reads it again on the cluster: set {var} there (the job's cluster \
                 spark_env_vars, or a secret); its value here is not exported"
            );
        }
    }
    for place in databricks::cluster_local_paths(&p) {
        eprintln!(
            "warning: {place} is a local path: on Databricks it is the cluster's own disk \
             (use s3://, gs://, /Volumes/… or /dbfs/…)"
        );
    }
    match a.output {
        Some(path) => std::fs::write(&path, text).map_err(|e| CliError {
            error: anyhow::anyhow!("{}: {e}", path.display()),
            code: 1,
        }),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
