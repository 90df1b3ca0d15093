//! The pipeline YAML, as written. Field docs here are the reference
//! (docs/PIPELINE_SPEC.md mirrors them).
//!
//! ```yaml
//! name: quickstart
//! lake: ./lake                      # file://…, a path, s3://bucket/prefix, gs://…
//! storage: { endpoint: http://127.0.0.1:9000, allow_http: true }
//! sources:
//!   tiny: { local: { path: ./examples/models/tiny } }
//! stages:
//!   ingest: { job: ingest, sources: [tiny], model_id: tiny, parallelism: 16, chunk_size: 16MiB }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use weightlake_connectors::source::SourceSpec;
use weightlake_connectors::storage::StorageConfig;

use weightlake_jobs::gold::{Gate, GateAction};

use crate::duration::deserialize_opt_duration;
use crate::size::deserialize_opt_size;

/// A whole pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Pipeline name (letters, digits, `-`, `_`).
    pub name: String,
    /// Lake root: `file://…`, a local path (relative to the current directory),
    /// `s3://bucket/prefix` or `gs://bucket/prefix`.
    pub lake: String,
    /// S3/GCS settings for the lake and object-store sources.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Named sources that stages refer to (each name once).
    #[serde(default, deserialize_with = "unique_keys")]
    pub sources: BTreeMap<String, SourceSpec>,
    /// Named stages; run in dependency order (each name once).
    #[serde(deserialize_with = "unique_keys")]
    pub stages: BTreeMap<String, StageSpec>,
    /// Pipeline parameters and their defaults: `${name}` anywhere in the file
    /// is replaced by the value (`--param name=value` overrides the default).
    /// Exported to Databricks as job parameters.
    ///
    /// ```yaml
    /// parameters: { revision: main, parallelism: 16 }
    /// ```
    #[serde(default, deserialize_with = "deserialize_parameters")]
    pub parameters: BTreeMap<String, String>,
    /// When Databricks runs the exported job (the local runner ignores it).
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// Cluster hints for the Databricks export (the local runner ignores them).
    #[serde(default)]
    pub compute: Option<ComputeSpec>,
    /// MLflow tracking of pipeline runs (also on when `MLFLOW_TRACKING_URI`
    /// is set): one MLflow run per pipeline run.
    ///
    /// ```yaml
    /// mlflow: { tracking_uri: http://127.0.0.1:5000, experiment: weightlake/nightly }
    /// ```
    #[serde(default)]
    pub mlflow: Option<TrackingSpec>,
    /// The instance and price table behind cost estimates (see
    /// [`crate::cost`]): each task attempt's estimate is recorded in
    /// `_system.runs` and MLflow.
    #[serde(default)]
    pub cost: Option<crate::cost::CostSpec>,
    /// Dollar limits per run and per day (see [`crate::cost::budget`]).
    #[serde(default)]
    pub budget: Option<crate::cost::budget::BudgetSpec>,
    /// Throughput and cost alerts, and their webhook (see [`crate::alerts`]).
    #[serde(default)]
    pub alerts: Option<crate::alerts::AlertsSpec>,
    /// Who hears about runs starting, succeeding or failing (see
    /// [`crate::notifications`]).
    #[serde(default)]
    pub notifications: Option<crate::notifications::NotificationsSpec>,
}

/// `mlflow:` (top level) where pipeline runs are tracked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSpec {
    /// The tracking server, `http(s)://host:port`. Default `MLFLOW_TRACKING_URI`.
    #[serde(default)]
    pub tracking_uri: Option<String>,
    /// Experiment of the pipeline runs. Default `weightlake/<pipeline name>`.
    #[serde(default)]
    pub experiment: Option<String>,
}

/// `schedule:` a Quartz cron expression and its time zone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Quartz cron (6 or 7 fields: seconds minutes hours day-of-month month
    /// day-of-week [year]), e.g. `0 0 3 * * ?` for 03:00 every day.
    pub quartz_cron: String,
    /// Java time zone id, e.g. `UTC` or `Europe/Paris`. Default `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Deploy the schedule paused. Default false.
    #[serde(default)]
    pub paused: bool,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// A cloud provider, for cluster attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

/// `compute:` the shared job cluster of the Databricks export.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    /// Which cloud the workspace runs on: `aws`, `gcp` or `azure`.
    pub cloud: Cloud,
    /// Node type id. Default per cloud: `i3.xlarge`, `n2-highmem-4`,
    /// `Standard_DS3_v2`.
    #[serde(default)]
    pub node_type: Option<String>,
    /// Worker count. Default 1.
    #[serde(default)]
    pub workers: Option<u32>,
    /// Spot / preemptible workers falling back to on-demand. Default false.
    #[serde(default)]
    pub spot: bool,
    /// Databricks runtime. Default `15.4.x-scala2.12` (LTS).
    #[serde(default)]
    pub spark_version: Option<String>,
}

/// When a stage runs, given how its `depends_on` stages ended (Databricks
/// `run_if`). See docs/PIPELINE_SPEC.md for the exact rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunIf {
    /// Every dependency succeeded (the default).
    #[default]
    AllSuccess,
    /// Every dependency finished, whatever the outcome.
    AllDone,
    /// No dependency failed, and at least one succeeded.
    NoneFailed,
    /// At least one dependency succeeded.
    AtLeastOneSuccess,
    /// Every dependency failed.
    AllFailed,
    /// At least one dependency failed.
    AtLeastOneFailed,
}

impl RunIf {
    /// The YAML / Databricks spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllSuccess => "ALL_SUCCESS",
            Self::AllDone => "ALL_DONE",
            Self::NoneFailed => "NONE_FAILED",
            Self::AtLeastOneSuccess => "AT_LEAST_ONE_SUCCESS",
            Self::AllFailed => "ALL_FAILED",
            Self::AtLeastOneFailed => "AT_LEAST_ONE_FAILED",
        }
    }
}

/// A map whose names must differ: YAML itself lets a repeated key silently
/// replace the first (a copied stage would vanish).
fn unique_keys<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<String, V>, D::Error> {
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping of names")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "`{name}` appears twice (the second would replace the first)"
                    )));
                }
                let value = map.next_value()?;
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// Parameter defaults: YAML scalars (strings, numbers, booleans) as text.
fn deserialize_parameters<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        B(bool),
        I(i64),
        F(f64),
        S(String),
    }
    let raw: BTreeMap<String, Scalar> = unique_keys(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Scalar::B(b) => b.to_string(),
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::S(s) => s,
            };
            (k, text)
        })
        .collect())
}

/// The job a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Sources -> bronze.
    Ingest,
    /// Bronze -> silver tensors.
    Tensorise,
    /// Silver model revision -> gold version, through gates.
    Promote,
    /// Gold version (or silver revision) -> files, verified.
    Export,
    /// Bronze retention, optimize, vacuum and checkpoints.
    Maintain,
}

impl JobKind {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Tensorise => "tensorise",
            Self::Promote => "promote",
            Self::Export => "export",
            Self::Maintain => "maintain",
        }
    }
}

/// One entry of a promote stage's `gates:`: a map, or a plain SQL expression
/// (action `fail`, named `gate_N` after its 1-based position).
#[derive(Debug, Clone, PartialEq)]
pub enum GateSpec {
    /// `- "max(nan_count) = 0"`.
    Expr(String),
    /// `- { name: no_nans, action: warn, expr: "max(nan_count) = 0" }`.
    Full(GateEntry),
}

/// A gate written as a map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateEntry {
    /// Name, reported with the result. Default `gate_N`.
    #[serde(default)]
    pub name: Option<String>,
    /// `warn` (record, promote anyway) or `fail` (do not promote). Default `fail`.
    #[serde(default = "default_gate_action")]
    pub action: GateAction,
    /// SQL boolean expression over the model's tensor rows and metrics.
    pub expr: String,
}

fn default_gate_action() -> GateAction {
    GateAction::Fail
}

impl GateSpec {
    /// The gate at 1-based `position`, with its default name and action.
    pub fn to_gate(&self, position: usize) -> Gate {
        match self {
            Self::Expr(e) => Gate {
                name: format!("gate_{position}"),
                action: GateAction::Fail,
                expr: e.trim().to_string(),
            },
            Self::Full(g) => Gate {
                name: g.name.clone().unwrap_or_else(|| format!("gate_{position}")),
                action: g.action,
                expr: g.expr.trim().to_string(),
            },
        }
    }
}

impl<'de> Deserialize<'de> for GateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GateSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a SQL expression, or a map {name, action, expr}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GateSpec, E> {
                Ok(GateSpec::Expr(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<GateSpec, A::Error> {
                GateEntry::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(GateSpec::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// `mlflow:` of a promote stage. MLflow is used when this block is present
/// or `MLFLOW_TRACKING_URI` is set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteMlflowSpec {
    /// The tracking server. Default the pipeline's `mlflow.tracking_uri`, else
    /// `MLFLOW_TRACKING_URI`.
    #[serde(default)]
    pub tracking_uri: Option<String>,
    /// Create a registry version and mirror the alias. Default true.
    #[serde(default = "default_true")]
    pub register: bool,
    /// Experiment of the promotion's tracking run. Default `weightlake`.
    #[serde(default)]
    pub experiment: Option<String>,
    /// Read metrics from this MLflow run id (e.g. the fine-tune's eval run).
    #[serde(default)]
    pub metrics_run: Option<String>,
    /// The registry version's `source` (the export location, `models:/…`).
    /// Default: the `s3://` destination of an export stage of this pipeline
    /// that exports `NAME` or `NAME@ALIAS`, else `runs:/<promotion run>/weightlake`.
    #[serde(default)]
    pub source: Option<String>,
}

fn default_true() -> bool {
    true
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The job: `ingest`, `tensorise`, `promote`, `export` or `maintain`.
    pub job: JobKind,
    /// Stages that must finish first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// When to run, given how the `depends_on` stages ended. Default
    /// `ALL_SUCCESS`.
    #[serde(default)]
    pub run_if: Option<RunIf>,
    /// Attempts after the first failure. Default 0.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Wait before each retry, e.g. `30s`, `2m`. Default 0.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub min_retry_interval: Option<Duration>,
    /// Retry an attempt that hit `timeout` (otherwise a timeout fails the
    /// stage at once). Default false.
    #[serde(default)]
    pub retry_on_timeout: Option<bool>,
    /// Cancel an attempt that runs longer than this, e.g. `1h`. Default none.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub timeout: Option<Duration>,
    /// Split the stage into this many shard tasks (`--shard i/N`), run at the
    /// same time; a Databricks `for_each_task` when exported. Default 1.
    #[serde(default)]
    pub shards: Option<u32>,
    /// (ingest) Names of sources to ingest.
    #[serde(default)]
    pub sources: Vec<String>,
    /// (tensorise) Base model, `MODEL@REVISION`, or the name of a source
    /// ingested in this pipeline: tensors are compared with it and XOR-encoded.
    #[serde(default)]
    pub base_model: Option<String>,
    /// (ingest) Model id to record; default the source's (hub repo, dir name).
    /// (tensorise) Only files of this model.
    #[serde(default)]
    pub model_id: Option<String>,
    /// (ingest) Revision to record; default the hub revision, else `main`.
    #[serde(default)]
    pub revision: Option<String>,
    /// (ingest) Ranges in flight. Default 16.
    /// (export) Files rebuilt at once. Default 4.
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// (ingest) Bytes per range request and bronze chunk. Default 16MiB.
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub chunk_size: Option<u64>,
    /// (ingest) Bytes in flight plus buffered for commit. Default 256MiB.
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub memory_budget: Option<u64>,
    /// (ingest) Retries per range. Default 5.
    #[serde(default)]
    pub retries: Option<u32>,
    /// (ingest) Seconds without a byte before a range is retried. Default 30.
    #[serde(default)]
    pub stall_timeout_secs: Option<u64>,
    /// (promote) The silver model revision, `MODEL@REVISION` or the name of
    /// a source ingested in this pipeline (as `base_model`).
    /// (export) What to export: `NAME@ALIAS`, `NAME:VERSION`, `NAME` (gold)
    /// or `MODEL@REVISION` (silver).
    #[serde(default)]
    pub model: Option<String>,
    /// (promote) The gold model name.
    #[serde(default)]
    pub name: Option<String>,
    /// (promote) Point this alias at the version, e.g. `champion`.
    #[serde(default)]
    pub alias: Option<String>,
    /// (promote) Quality gates, in order.
    #[serde(default)]
    pub gates: Vec<GateSpec>,
    /// (promote) Promote even if tensorise quarantined files of the model
    /// (they failed to parse and are stored only whole); the built-in
    /// `files_parsed` gate then warns instead of failing. Default false.
    #[serde(default)]
    pub allow_quarantined: bool,
    /// (promote) Metrics for the gates: name -> number.
    #[serde(default, deserialize_with = "unique_keys")]
    pub metrics: BTreeMap<String, f64>,
    /// (promote) MLflow tracking and registry.
    #[serde(default)]
    pub mlflow: Option<PromoteMlflowSpec>,
    /// (export) Destination: a directory, `file://…`, `s3://…` or `gs://…`.
    #[serde(default)]
    pub to: Option<String>,
    /// (export) Once every file is written and verified, delete the
    /// destination's files that are not part of the model (an earlier
    /// version's shards), so it holds exactly the model. Default false.
    #[serde(default)]
    pub delete_others: bool,
    /// (maintain) Tables to optimize, vacuum and checkpoint, e.g.
    /// `[bronze.model_files, silver.tensor_blobs]`. Default every table.
    #[serde(default)]
    pub tables: Vec<String>,
    /// (maintain) Compact small files into files of `target_file_size`.
    /// Default true.
    #[serde(default)]
    pub optimize: Option<bool>,
    /// (maintain) Size of the files compaction writes, 1MiB..1GiB. Default
    /// 128MiB.
    #[serde(default, deserialize_with = "deserialize_opt_size")]
    pub target_file_size: Option<u64>,
    /// (maintain) Delete data files no longer referenced and older than
    /// `vacuum_retention`. Default true.
    #[serde(default)]
    pub vacuum: Option<bool>,
    /// (maintain) How long vacuum keeps unreferenced files, e.g. `7d`.
    /// Default each table's `delta.deletedFileRetentionDuration` (7 days);
    /// shorter needs `allow_short_retention`.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub vacuum_retention: Option<Duration>,
    /// (maintain) Accept a `vacuum_retention` shorter than the table's
    /// (Delta's `retentionDurationCheck` off). Default false.
    #[serde(default)]
    pub allow_short_retention: Option<bool>,
    /// (maintain) Drop the `bronze.model_files` chunks of complete files
    /// older than this, e.g. `30d`, once silver rebuilds them bit for bit.
    /// Default off.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub bronze_retention: Option<Duration>,
    /// (maintain) With `bronze_retention`, also drop the chunks of file
    /// versions replaced or removed at the source before they were
    /// tensorised (bronze holds their only copy). Default false.
    #[serde(default)]
    pub drop_replaced: Option<bool>,
    /// (maintain) Write a checkpoint of each table. Default true.
    #[serde(default)]
    pub checkpoint: Option<bool>,
}
