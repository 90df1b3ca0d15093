//! Databricks Workflows export: a pipeline becomes a Jobs API 2.2
//! `jobs/create` payload (`job-json`) or a Databricks Asset Bundle
//! (`databricks.yml`).
//!
//! - [`model`]: the payload's types, named as the API names them.
//! - [`tasks`]: stages -> tasks (launcher command lines, shards as `for_each_task`).
//! - [`cluster`]: `compute:` hints -> the shared job cluster.
//! - [`bundle`]: the job wrapped in a bundle with variables and dev/prod targets.
//!
//! Pure: no network, no files. Every task runs `weightlake task STAGE
//! --pipeline <artifacts>/<file> --run-id {{job.run_id}}` through a launcher
//! (`ai.weightlake.Launcher` in a JAR, or the `weightlake_launcher` wheel)
//! that finds the binary through `WEIGHTLAKE_BIN`, set on the cluster.
//!
//! # Example
//!
//! ```
//! use weightlake_pipeline::databricks::{ExportFormat, ExportOptions, Runner, export};
//!
//! let p = weightlake_pipeline::load_str(
//!     "name: demo\nlake: s3://lake\nsources: { m: { local: { path: ./m } } }\n\
//!      stages: { ingest: { job: ingest, sources: [m], shards: 4 } }\n",
//!     "demo.yaml",
//! )?;
//! let json = export(&p, &ExportOptions::new(ExportFormat::JobJson, Runner::Jar))?;
//! let job: serde_json::Value = serde_json::from_str(&json)?;
//! assert_eq!(job["tasks"][0]["for_each_task"]["inputs"], "[0,1,2,3]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bundle;
pub mod cluster;
pub mod model;
pub mod tasks;

use std::path::Path;

use weightlake_connectors::source::SourceSpec;

use crate::ValidatedPipeline;
use crate::notifications::{NotificationsSpec, RunEvent};
use model::{
    CronSchedule, Destination, JobEmailNotifications, JobParameterDefinition, JobSettings,
    WebhookNotifications,
};

/// Where the export expects the launcher, the binary and the pipeline file
/// when `--artifacts` is not given (a Unity Catalog volume).
pub const DEFAULT_ARTIFACTS: &str = "/Volumes/main/default/weightlake";

/// What to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A `jobs/create` JSON payload.
    JobJson,
    /// A `databricks.yml` bundle.
    Bundle,
}

/// Which launcher the tasks call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `spark_jar_task` with `ai.weightlake.Launcher`.
    Jar,
    /// `python_wheel_task` with the `weightlake_launcher` wheel.
    Wheel,
}

/// Export settings.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// What to emit.
    pub format: ExportFormat,
    /// Which launcher the tasks call.
    pub runner: Runner,
    /// Directory (on the cluster) holding the launcher, the `weightlake`
    /// binary and the pipeline file. Default [`DEFAULT_ARTIFACTS`].
    pub artifacts: String,
    /// The pipeline file on the cluster. Default `<artifacts>/<file name>`.
    pub pipeline_path: Option<String>,
}

impl ExportOptions {
    /// Defaults for `format` and `runner`.
    pub fn new(format: ExportFormat, runner: Runner) -> Self {
        Self {
            format,
            runner,
            artifacts: DEFAULT_ARTIFACTS.into(),
            pipeline_path: None,
        }
    }
}

/// Export failures (encoding only: the pipeline is already valid).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// JSON encoding failed.
    #[error("encoding the job as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// YAML encoding failed.
    #[error("encoding the bundle as YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    /// A location the job's tasks would read is not one a cluster can.
    #[error(
        "{what} `{value}` must be an absolute path every node of the cluster reads: /Volumes/…, /Workspace/… or /dbfs/…"
    )]
    Location {
        /// Which option.
        what: &'static str,
        /// What it was.
        value: String,
    },
}

impl ExportError {
    /// Whether the user's input is at fault (exit 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Location { .. })
    }
}

/// Locations of the pipeline that a Databricks cluster would read as its own
/// local disk: the lake, sources and export destinations given as local
/// paths (other than `/Volumes/…` and `/dbfs/…`, which every node sees).
/// Each entry says which setting and what it holds.
pub fn cluster_local_paths(p: &ValidatedPipeline) -> Vec<String> {
    let spec = p.spec();
    let local = |s: &str| !s.contains("://") || s.starts_with("file://");
    let shared = |s: &str| {
        let path = s.strip_prefix("file://").unwrap_or(s);
        path.starts_with("/Volumes/") || path.starts_with("/dbfs/")
    };
    let mut found = Vec::new();
    let mut check = |what: String, value: &str| {
        if local(value) && !shared(value) {
            found.push(format!("{what} `{value}`"));
        }
    };
    check("lake".into(), &spec.lake);
    for (name, source) in &spec.sources {
        match source {
            SourceSpec::Local(l) => check(format!("source `{name}`"), &l.path),
            SourceSpec::ObjectStore(o) => check(format!("source `{name}`"), &o.url),
            _ => {}
        }
    }
    for (name, stage) in &spec.stages {
        if let Some(to) = &stage.to {
            check(format!("stage `{name}` to:"), to);
        }
    }
    found
}

/// The bundle variable naming the artifacts directory (a pipeline parameter
/// cannot take this name).
pub const ARTIFACTS_VARIABLE: &str = "weightlake_artifacts";

/// What a sharded stage's inner task key adds to the stage name.
pub const SHARD_SUFFIX: &str = "_shard";

/// Emit the pipeline as `opts.format`.
pub fn export(p: &ValidatedPipeline, opts: &ExportOptions) -> Result<String, ExportError> {
    // The launcher runs the binary at this path and the task reads the
    // pipeline file at the other: an object store URL or a relative path
    // reaches neither (exit 127, "No such file" on every run).
    let absolute = |what: &'static str, value: &str| {
        if value.starts_with('/') && !value.contains("://") {
            Ok(())
        } else {
            Err(ExportError::Location {
                what,
                value: value.to_string(),
            })
        }
    };
    absolute("--artifacts", &opts.artifacts)?;
    if let Some(path) = &opts.pipeline_path {
        absolute("--pipeline-path", path)?;
    }
    match opts.format {
        ExportFormat::JobJson => {
            let job = job_settings(
                p,
                opts.runner,
                &opts.artifacts,
                opts.pipeline_path.as_deref(),
            );
            let mut s = serde_json::to_string_pretty(&job)?;
            s.push('\n');
            Ok(s)
        }
        ExportFormat::Bundle => bundle::bundle_yaml(p, opts),
    }
}

/// The `jobs/create` payload. `artifacts` may be a literal path or a bundle
/// reference such as `${var.weightlake_artifacts}`.
pub fn job_settings(
    p: &ValidatedPipeline,
    runner: Runner,
    artifacts: &str,
    pipeline_path: Option<&str>,
) -> JobSettings {
    let spec = p.spec();
    let file = Path::new(p.origin())
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.yaml", spec.name));
    let pipeline = pipeline_path
        .map(str::to_string)
        .unwrap_or_else(|| format!("{artifacts}/{file}"));
    let at = tasks::Locations {
        pipeline: &pipeline,
        artifacts,
    };
    JobSettings {
        name: spec.name.clone(),
        tasks: tasks::tasks(p, runner, &at),
        job_clusters: vec![cluster::job_cluster(
            spec.compute.as_ref(),
            &format!("{artifacts}/weightlake"),
        )],
        parameters: spec
            .parameters
            .iter()
            .map(|(name, default)| JobParameterDefinition {
                name: name.clone(),
                default: default.clone(),
            })
            .collect(),
        schedule: spec.schedule.as_ref().map(|s| CronSchedule {
            quartz_cron_expression: s.quartz_cron.clone(),
            timezone_id: s.timezone.clone(),
            pause_status: if s.paused { "PAUSED" } else { "UNPAUSED" }.into(),
        }),
        email_notifications: notifications(spec, |n| n.emails.clone()).map(|(a, b, c)| {
            JobEmailNotifications {
                on_start: a,
                on_success: b,
                on_failure: c,
            }
        }),
        webhook_notifications: notifications(spec, |n| {
            n.databricks_destinations
                .iter()
                .map(|id| Destination { id: id.clone() })
                .collect()
        })
        .map(|(a, b, c)| WebhookNotifications {
            on_start: a,
            on_success: b,
            on_failure: c,
        }),
        max_concurrent_runs: 1,
        tags: [("weightlake_pipeline".to_string(), spec.name.clone())].into(),
    }
}

/// `who` of the pipeline's `notifications:` for (start, success, failure),
/// each empty unless `on:` has that event; None when nobody is told anything.
fn notifications<T: Clone>(
    spec: &crate::spec::PipelineSpec,
    who: impl Fn(&NotificationsSpec) -> Vec<T>,
) -> Option<(Vec<T>, Vec<T>, Vec<T>)> {
    let n = spec.notifications.as_ref()?;
    let list = who(n);
    let pick = |e: RunEvent| if n.wants(e) { list.clone() } else { Vec::new() };
    let out = (
        pick(RunEvent::Start),
        pick(RunEvent::Success),
        pick(RunEvent::Failure),
    );
    (!(out.0.is_empty() && out.1.is_empty() && out.2.is_empty())).then_some(out)
}

#[cfg(test)]
mod tests;
