//! Stages -> tasks: each stage is one task running `weightlake task STAGE`
//! through a launcher (JAR or wheel); a stage with `shards: N` is a
//! `for_each_task` over `[0..N)` whose inner task passes `--shard {{input}}/N`.
//!
//! Retries and the timeout sit on the task that runs the command (the inner
//! task of a `for_each_task`, so each shard retries on its own, as locally);
//! `depends_on` and `run_if` sit on the outer task.

use super::model::{ForEachTask, Library, PythonWheelTask, SparkJarTask, Task, TaskDependency};
use super::{Runner, SHARD_SUFFIX, cluster::CLUSTER_KEY};
use crate::ValidatedPipeline;
use crate::spec::{RunIf, StageSpec};

/// The launcher JAR's main class.
pub const MAIN_CLASS: &str = "ai.weightlake.Launcher";
/// The launcher wheel's package.
pub const WHEEL_PACKAGE: &str = "weightlake_launcher";
/// The launcher wheel's console-script entry point.
pub const WHEEL_ENTRY_POINT: &str = "weightlake-launcher";
/// The launcher JAR's file name under the artifacts location.
pub const JAR_FILE: &str = "weightlake-launcher.jar";
/// The launcher wheel's file name under the artifacts location.
pub const WHEEL_FILE: &str = "weightlake_launcher-0.1.0-py3-none-any.whl";
/// Shard iterations at once, at most (Databricks' `for_each_task` limit).
pub const MAX_CONCURRENCY: u32 = 100;

/// Where the task finds things on the cluster.
pub(crate) struct Locations<'a> {
    /// The pipeline YAML.
    pub pipeline: &'a str,
    /// The directory holding the launcher JAR / wheel.
    pub artifacts: &'a str,
}

/// One task per stage, in run order.
pub(crate) fn tasks(p: &ValidatedPipeline, runner: Runner, at: &Locations<'_>) -> Vec<Task> {
    p.order()
        .iter()
        .map(|name| stage_task(p, name, &p.spec().stages[name], runner, at))
        .collect()
}

fn stage_task(
    p: &ValidatedPipeline,
    name: &str,
    stage: &StageSpec,
    runner: Runner,
    at: &Locations<'_>,
) -> Task {
    let depends_on = stage
        .depends_on
        .iter()
        .map(|d| TaskDependency {
            task_key: d.clone(),
        })
        .collect();
    let run_if =
        (!stage.depends_on.is_empty()).then_some(stage.run_if.unwrap_or(RunIf::AllSuccess));
    let shards = stage.shards.unwrap_or(1);
    let mut args = vec![
        "task".to_string(),
        name.to_string(),
        "--pipeline".into(),
        at.pipeline.to_string(),
        "--run-id".into(),
        "{{job.run_id}}".into(),
    ];
    for param in p.spec().parameters.keys() {
        args.push("--param".into());
        args.push(format!("{param}={{{{job.parameters.{param}}}}}"));
    }
    if shards > 1 {
        args.push("--shard".into());
        args.push(format!("{{{{input}}}}/{shards}"));
    }
    let mut command = command_task(name, runner, args, at.artifacts);
    command.max_retries = stage.max_retries;
    command.min_retry_interval_millis = stage
        .min_retry_interval
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    command.retry_on_timeout = stage.retry_on_timeout;
    command.timeout_seconds = stage.timeout.map(|d| d.as_secs().max(1));
    if shards <= 1 {
        return Task {
            depends_on,
            run_if,
            ..command
        };
    }
    command.task_key = format!("{name}{SHARD_SUFFIX}");
    let inputs = serde_json::Value::from((0..shards).collect::<Vec<u32>>()).to_string();
    Task {
        task_key: name.to_string(),
        depends_on,
        run_if,
        job_cluster_key: None,
        spark_jar_task: None,
        python_wheel_task: None,
        for_each_task: Some(Box::new(ForEachTask {
            inputs,
            concurrency: shards.min(MAX_CONCURRENCY),
            task: command,
        })),
        libraries: Vec::new(),
        max_retries: None,
        min_retry_interval_millis: None,
        retry_on_timeout: None,
        timeout_seconds: None,
    }
}

/// A task that runs `weightlake <args>` through the launcher.
fn command_task(key: &str, runner: Runner, args: Vec<String>, artifacts: &str) -> Task {
    let mut t = Task {
        task_key: key.to_string(),
        depends_on: Vec::new(),
        run_if: None,
        job_cluster_key: Some(CLUSTER_KEY.into()),
        spark_jar_task: None,
        python_wheel_task: None,
        for_each_task: None,
        libraries: Vec::new(),
        max_retries: None,
        min_retry_interval_millis: None,
        retry_on_timeout: None,
        timeout_seconds: None,
    };
    match runner {
        Runner::Jar => {
            t.spark_jar_task = Some(SparkJarTask {
                main_class_name: MAIN_CLASS.into(),
                parameters: args,
            });
            t.libraries.push(Library {
                jar: Some(format!("{artifacts}/{JAR_FILE}")),
                whl: None,
            });
        }
        Runner::Wheel => {
            t.python_wheel_task = Some(PythonWheelTask {
                package_name: WHEEL_PACKAGE.into(),
                entry_point: WHEEL_ENTRY_POINT.into(),
                parameters: args,
            });
            t.libraries.push(Library {
                jar: None,
                whl: Some(format!("{artifacts}/{WHEEL_FILE}")),
            });
        }
    }
    t
}
