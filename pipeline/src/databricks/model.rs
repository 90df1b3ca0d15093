//! The Jobs API 2.2 `jobs/create` payload, as typed structs: only the fields
//! weightlake emits, spelled as the API (and `databricks-sdk`'s
//! `databricks.sdk.service.jobs`) spells them. `None` fields are left out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::spec::RunIf;

/// The body of `POST /api/2.2/jobs/create` (and a bundle's `resources.jobs.<key>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSettings {
    /// Job name.
    pub name: String,
    /// Tasks, upstream first.
    pub tasks: Vec<Task>,
    /// Clusters the tasks share, by `job_cluster_key`.
    pub job_clusters: Vec<JobCluster>,
    /// Job parameters with their defaults.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<JobParameterDefinition>,
    /// When the job runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<CronSchedule>,
    /// Emails on start, success, failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_notifications: Option<JobEmailNotifications>,
    /// Notification destinations on start, success, failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_notifications: Option<WebhookNotifications>,
    /// Runs of this job at once.
    pub max_concurrent_runs: u32,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
}

/// `email_notifications`: addresses per run event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobEmailNotifications {
    /// When a run starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_start: Vec<String>,
    /// When a run succeeds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<String>,
    /// When a run fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
}

/// `webhook_notifications`: notification destinations per run event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WebhookNotifications {
    /// When a run starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_start: Vec<Destination>,
    /// When a run succeeds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<Destination>,
    /// When a run fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Destination>,
}

/// A notification destination, by id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Destination {
    /// The destination's id in the workspace.
    pub id: String,
}

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// Unique within the job.
    pub task_key: String,
    /// Upstream tasks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskDependency>,
    /// When to run, given the upstream outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_if: Option<RunIf>,
    /// Shared cluster; absent on a `for_each_task` wrapper (its inner task has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_cluster_key: Option<String>,
    /// JAR runner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spark_jar_task: Option<SparkJarTask>,
    /// Wheel runner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_wheel_task: Option<PythonWheelTask>,
    /// Shards: one inner task per input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_each_task: Option<Box<ForEachTask>>,
    /// The launcher JAR or wheel.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub libraries: Vec<Library>,
    /// Retries after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Wait before a retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_retry_interval_millis: Option<u64>,
    /// Retry after a timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on_timeout: Option<bool>,
    /// Cancel after this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskDependency {
    /// The upstream task.
    pub task_key: String,
}

/// `for_each_task`: run `task` once per element of `inputs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForEachTask {
    /// A JSON array, as a string: `"[0,1,2,3]"`.
    pub inputs: String,
    /// Iterations at once.
    pub concurrency: u32,
    /// The task each iteration runs; `{{input}}` is the element.
    pub task: Task,
}

/// `spark_jar_task`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparkJarTask {
    /// The launcher's main class.
    pub main_class_name: String,
    /// Arguments of `main`: the weightlake command line.
    pub parameters: Vec<String>,
}

/// `python_wheel_task`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PythonWheelTask {
    /// The wheel's package.
    pub package_name: String,
    /// Its console-script entry point.
    pub entry_point: String,
    /// The weightlake command line.
    pub parameters: Vec<String>,
}

/// A task library.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Library {
    /// A JAR's location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jar: Option<String>,
    /// A wheel's location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whl: Option<String>,
}

/// A job cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobCluster {
    /// Tasks refer to it by this key.
    pub job_cluster_key: String,
    /// Its spec.
    pub new_cluster: NewCluster,
}

/// `new_cluster` (a `compute.ClusterSpec`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewCluster {
    /// Databricks runtime.
    pub spark_version: String,
    /// Instance type.
    pub node_type_id: String,
    /// Workers.
    pub num_workers: u32,
    /// AWS spot settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_attributes: Option<AwsAttributes>,
    /// GCP preemptible settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gcp_attributes: Option<GcpAttributes>,
    /// Azure spot settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_attributes: Option<AzureAttributes>,
    /// Environment of every process: `WEIGHTLAKE_BIN` for the launchers.
    pub spark_env_vars: BTreeMap<String, String>,
}

/// `aws_attributes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AwsAttributes {
    /// `SPOT_WITH_FALLBACK`.
    pub availability: String,
    /// Nodes kept on demand (the driver).
    pub first_on_demand: u32,
}

/// `gcp_attributes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcpAttributes {
    /// `PREEMPTIBLE_WITH_FALLBACK_GCP`.
    pub availability: String,
}

/// `azure_attributes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AzureAttributes {
    /// `SPOT_WITH_FALLBACK_AZURE`.
    pub availability: String,
    /// Nodes kept on demand (the driver).
    pub first_on_demand: u32,
}

/// `schedule`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CronSchedule {
    /// Quartz cron.
    pub quartz_cron_expression: String,
    /// Java time zone id.
    pub timezone_id: String,
    /// `PAUSED` or `UNPAUSED`.
    pub pause_status: String,
}

/// A job parameter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobParameterDefinition {
    /// Name; tasks read it as `{{job.parameters.<name>}}`.
    pub name: String,
    /// Default value.
    pub default: String,
}
