//! The command line, as clap structs. Plain data: no I/O here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A lakehouse engine for model weights: ingest, tensorise, promote and serve
/// model files on Delta Lake.
#[derive(Debug, Parser)]
#[command(name = "weightlake", version, about, long_about = None)]
pub struct Cli {
    /// No progress bars; only errors on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull model files into bronze.model_files (ad hoc, without a pipeline).
    ///
    /// SOURCE is an http(s) URL (optionally ending in #sha256=HEX),
    /// hf://org/repo[@revision], an s3:// gs:// or file:// prefix, or a local path.
    /// Hubs: HF_ENDPOINT (default https://huggingface.co) and HF_TOKEN; S3:
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
    Ingest(IngestArgs),
    /// Run a pipeline file.
    Run(RunArgs),
    /// Parse complete bronze files into silver tensors (stats, dedup, encoding).
    Tensorise(TensoriseArgs),
    /// Rebuild a model's files from silver into a directory or object store prefix.
    Export(ExportArgs),
    /// Check that a model's files rebuild from silver bit for bit, writing nothing.
    Verify(VerifyArgs),
    /// Maintain the lake's tables: bronze retention, compaction, vacuum and
    /// checkpoints (the options of a pipeline's `maintain` stage).
    Maintain(MaintainArgs),
    /// Run one stage of a pipeline: the entry point of one Databricks task.
    Task(TaskArgs),
    /// Check a pipeline file and print every problem found.
    Validate(ValidateArgs),
    /// Run SQL over the lake's tables (bronze.model_files, bronze.files, …).
    Sql(SqlArgs),
    /// Download one URL to a local file with parallel ranged requests.
    Download(DownloadArgs),
    /// Promote a silver model revision to a gold version, through quality gates.
    Promote(PromoteArgs),
    /// List, show and alias gold models; sync aliases to the MLflow registry.
    Models(ModelsArgs),
    /// Serve gold (and silver) models read-only as a Hugging Face-compatible hub.
    Serve(ServeArgs),
    /// Show a pipeline's DAG, what each stage would do now, and the run's cost estimate.
    Plan(PlanArgs),
    /// The run ledger (_system.runs): list pipeline runs, show one.
    Runs(RunsArgs),
    /// Databricks Workflows: export a pipeline as a job.
    #[command(subcommand)]
    Databricks(DatabricksCommand),
}

/// Where the lake is and how to reach it.
#[derive(Debug, Args, Clone)]
pub struct LakeArgs {
    /// Lake root: a path, file://…, s3://bucket/prefix or gs://bucket/prefix.
    #[arg(long, env = "WEIGHTLAKE_LAKE")]
    pub lake: String,
    /// S3 endpoint (MinIO or another S3-compatible server).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
}

/// Downloader tuning shared by `ingest` and `download`.
#[derive(Debug, Args, Clone)]
pub struct TransferArgs {
    /// Ranges in flight at once.
    #[arg(long, short = 'n', default_value_t = 16)]
    pub parallelism: usize,
    /// Bytes per chunk, e.g. 16MiB: one bronze row per chunk for `ingest`; for
    /// `download`, the shortest range (the file is cut into one range per
    /// connection).
    #[arg(long, default_value = "16MiB")]
    pub chunk_size: String,
    /// Retries per range.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Seconds without a byte before a range is aborted and retried.
    #[arg(long, default_value_t = 30)]
    pub stall_timeout: u64,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Sources to ingest.
    #[arg(required = true)]
    pub sources: Vec<String>,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Model id to record (default: the hub repo or the directory name).
    #[arg(long)]
    pub model_id: Option<String>,
    /// Revision to record (default: the hub revision, else main).
    #[arg(long)]
    pub revision: Option<String>,
    /// Only files of this shard, I/N.
    #[arg(long)]
    pub shard: Option<String>,
    /// Bytes in flight plus buffered for commit, e.g. 256MiB.
    #[arg(long, default_value = "256MiB")]
    pub memory_budget: String,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Debug, Args)]
pub struct TensoriseArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Only files of this model.
    #[arg(long)]
    pub model_id: Option<String>,
    /// Base model, MODEL@REVISION: tensors are compared with it and stored as XOR
    /// against it where that is smaller.
    #[arg(long)]
    pub base_model: Option<String>,
    /// Only files of this shard, I/N.
    #[arg(long)]
    pub shard: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to export: a gold model (NAME, NAME:VERSION, NAME@ALIAS) or a silver
    /// model revision, MODEL@REVISION (gold names win).
    pub model: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Destination: a directory, file://…, s3://bucket/prefix or gs://bucket/prefix.
    #[arg(long)]
    pub to: String,
    /// Files rebuilt at once (1 or more).
    #[arg(long, default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub parallelism: usize,
    /// Once every file is written and verified, delete the destination's
    /// files that are not part of the model (an earlier version's shards),
    /// so it holds exactly the model.
    #[arg(long)]
    pub delete_others: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// What to check: a gold NAME, NAME:VERSION or NAME@ALIAS, or a silver
    /// MODEL@REVISION (revision defaults to main).
    pub model: String,
    #[command(flatten)]
    pub lake: LakeArgs,
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Only this table (repeatable), e.g. --table bronze.model_files. Default:
    /// every table of the lake.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<String>,
    /// Do not compact small files.
    #[arg(long)]
    pub no_optimize: bool,
    /// Size of the files compaction writes, 1MiB..1GiB.
    #[arg(long, default_value = "128MiB")]
    pub target_file_size: String,
    /// Do not delete unreferenced data files.
    #[arg(long)]
    pub no_vacuum: bool,
    /// How long vacuum keeps unreferenced files, e.g. 7d (default: the table's
    /// delta.deletedFileRetentionDuration, 7 days).
    #[arg(long)]
    pub vacuum_retention: Option<String>,
    /// Accept a vacuum retention shorter than the table's: readers of older
    /// versions and writers in flight may lose files.
    #[arg(long)]
    pub allow_short_retention: bool,
    /// Drop the bronze chunks of complete files older than this (e.g. 30d)
    /// once silver rebuilds them bit for bit. Default: off.
    #[arg(long)]
    pub bronze_retention: Option<String>,
    /// With --bronze-retention, also drop the chunks of file versions
    /// replaced or removed at the source before they were tensorised (bronze
    /// holds their only copy; kept by default).
    #[arg(long, requires = "bronze_retention")]
    pub drop_replaced: bool,
    /// Do not write checkpoints.
    #[arg(long)]
    pub no_checkpoint: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Run only this stage.
    #[arg(long, conflicts_with = "from")]
    pub only: Option<String>,
    /// Run this stage and every stage downstream of it (to continue a run
    /// that broke there); the stages before it count as succeeded.
    #[arg(long)]
    pub from: Option<String>,
    /// Record this run id.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Set a pipeline parameter, NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The stage to run.
    pub stage: String,
    /// The pipeline file.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// This task's shard, I/N (Databricks for_each iteration).
    #[arg(long)]
    pub shard: Option<String>,
    /// Record this run id (the Databricks job run id).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Set a pipeline parameter, NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Set a pipeline parameter, NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Show only the DAG: do not list sources or read the lake.
    #[arg(long)]
    pub offline: bool,
    /// Estimate only this stage.
    #[arg(long, conflicts_with = "from")]
    pub only: Option<String>,
    /// Estimate this stage and everything downstream of it.
    #[arg(long)]
    pub from: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: RunsCommand,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Pipeline runs, newest first: run id, pipeline, start, status, stages
    /// succeeded/failed, bytes.
    List {
        /// Only runs of this pipeline (its `name:`).
        #[arg(long)]
        pipeline: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        lake: LakeArgs,
    },
    /// Every attempt of one run: stage, shard, attempt, status, time, bytes,
    /// throughput, error.
    Show {
        /// The run id (a unique prefix is enough).
        run_id: String,
        #[command(flatten)]
        lake: LakeArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatabricksCommand {
    /// Emit a Jobs API 2.2 `jobs/create` payload or a `databricks.yml` bundle.
    ///
    /// Each stage becomes a task that runs `weightlake task STAGE` through a
    /// launcher (JAR or wheel, see scripts/build-launchers.sh) on one shared
    /// job cluster; `shards: N` becomes a for_each_task.
    Export(DatabricksExportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// A `jobs/create` request body.
    JobJson,
    /// A Databricks Asset Bundle (`databricks.yml`).
    Bundle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TaskRunner {
    /// `spark_jar_task` with the launcher JAR.
    Jar,
    /// `python_wheel_task` with the launcher wheel.
    Wheel,
}

#[derive(Debug, Args)]
pub struct DatabricksExportArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// What to emit.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Which launcher the tasks call.
    #[arg(long, value_enum, default_value_t = TaskRunner::Jar)]
    pub runner: TaskRunner,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Directory on the cluster holding the `weightlake` binary, the launcher
    /// and the pipeline file.
    #[arg(long, default_value = weightlake_pipeline::databricks::DEFAULT_ARTIFACTS)]
    pub artifacts: String,
    /// The pipeline file on the cluster (default: ARTIFACTS/<file name>).
    #[arg(long)]
    pub pipeline_path: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Set a pipeline parameter, NAME=VALUE (repeatable): check the file as
    /// `run --param` would run it.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// An ASCII table.
    Table,
    /// CSV with a header row (also when there are no rows).
    Csv,
    /// One JSON object per line (NDJSON), NULLs included as `null`; NaN and
    /// ±infinity, which JSON has no number for, as the strings `"NaN"`,
    /// `"Infinity"` and `"-Infinity"`.
    Json,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT file_path, file_size FROM bronze.files". Read
    /// only: SELECT, WITH, EXPLAIN, SHOW and DESCRIBE.
    pub query: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The URL.
    pub url: String,
    /// Destination file.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Expected sha256 (hex); the command fails when the file differs.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Compute and print the sha256 even when none is expected.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// MLflow tracking server (tracking, metrics and model registry).
#[derive(Debug, Args, Clone)]
pub struct MlflowArgs {
    /// Tracking server URL, e.g. http://127.0.0.1:5000.
    #[arg(long = "mlflow-uri", env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: Option<String>,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The silver model revision, MODEL@REVISION (revision defaults to main).
    pub model: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Gold model name.
    #[arg(long)]
    pub name: String,
    /// Point this alias (e.g. champion) at the version.
    #[arg(long)]
    pub alias: Option<String>,
    /// A gate, NAME:warn|fail:SQL-EXPRESSION over the model's silver.tensors rows
    /// and metrics, e.g. `no_nans:fail:max(nan_count) = 0`. Repeatable.
    #[arg(long = "gate")]
    pub gates: Vec<String>,
    /// A metric for the gates, NAME=NUMBER, e.g. eval_loss=1.93. Repeatable.
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// Also read metrics from this MLflow run (given --metric values win).
    #[arg(long)]
    pub metrics_from_run: Option<String>,
    /// The registry version's source (default runs:/<promotion run>/weightlake),
    /// e.g. the s3:// location the model is exported to.
    #[arg(long)]
    pub registry_source: Option<String>,
    /// Track the promotion in MLflow but do not register a version.
    #[arg(long)]
    pub no_register: bool,
    /// Promote even if tensorise quarantined files of the model (they failed
    /// to parse and are stored only whole): the built-in `files_parsed` gate
    /// then warns instead of failing.
    #[arg(long)]
    pub allow_quarantined: bool,
    #[command(flatten)]
    pub mlflow: MlflowArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// How long a tensor content that matched its sha256 is trusted before a
    /// request that touches it checks it again (e.g. 10m, 1h): damage that
    /// appears on disk while the tables stay the same is refused from then on.
    #[arg(long, default_value = "10m")]
    pub recheck_after: String,
    /// Serve gold models only. Without it a silver model id is served too
    /// (tagged `weightlake:silver`): weights no gate has passed, including a
    /// candidate whose promotion was rejected.
    #[arg(long)]
    pub gold_only: bool,
    #[command(flatten)]
    pub lake: LakeArgs,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// Options of the `models` subcommands that change gold (no time travel).
#[derive(Debug, Args)]
pub struct GoldWriteArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub mlflow: MlflowArgs,
}

/// Options of the `models` subcommands that read gold.
#[derive(Debug, Args)]
pub struct GoldArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Read gold as of this gold.models table version (time travel).
    #[arg(long, allow_hyphen_values = true)]
    pub as_of: Option<i64>,
    #[command(flatten)]
    pub mlflow: MlflowArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every gold version, with its aliases.
    List {
        #[command(flatten)]
        gold: GoldArgs,
    },
    /// One version: NAME (latest), NAME:VERSION or NAME@ALIAS.
    Show {
        /// The gold model reference.
        model: String,
        #[command(flatten)]
        gold: GoldArgs,
    },
    /// Move or remove an alias (mirrored to MLflow when configured).
    Alias {
        #[command(subcommand)]
        action: AliasCommand,
    },
    /// Make the MLflow registry's aliases of NAME match gold's.
    Sync {
        /// The gold model name.
        name: String,
        #[command(flatten)]
        gold: GoldWriteArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point NAME@ALIAS at a version: a number, NAME:VERSION or NAME@OTHER.
    Set {
        /// Gold model name.
        name: String,
        /// The alias.
        alias: String,
        /// The version.
        to: String,
        #[command(flatten)]
        gold: GoldWriteArgs,
    },
    /// Remove NAME@ALIAS.
    Rm {
        /// Gold model name.
        name: String,
        /// The alias.
        alias: String,
        #[command(flatten)]
        gold: GoldWriteArgs,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_ingest() {
        let c = Cli::try_parse_from([
            "weightlake",
            "ingest",
            "hf://a/b",
            "./x",
            "--lake",
            "./lake",
            "-n",
            "8",
        ])
        .expect("parse");
        let Command::Ingest(a) = c.command else {
            panic!("not ingest")
        };
        assert_eq!(a.sources, ["hf://a/b", "./x"]);
        assert_eq!(a.transfer.parallelism, 8);
        assert!(Cli::try_parse_from(["weightlake", "ingest", "--lake", "x"]).is_err());
    }

    #[test]
    fn parses_run_params_from_and_databricks_export() {
        let c = Cli::try_parse_from([
            "weightlake",
            "run",
            "p.yaml",
            "--param",
            "a=1",
            "--param",
            "b=x=y",
            "--from",
            "t",
        ])
        .expect("parse");
        let Command::Run(a) = c.command else {
            panic!("not run")
        };
        assert_eq!(a.params, ["a=1", "b=x=y"]);
        assert_eq!(a.from.as_deref(), Some("t"));
        assert!(
            Cli::try_parse_from(["weightlake", "run", "p.yaml", "--from", "a", "--only", "b"])
                .is_err()
        );
        let c = Cli::try_parse_from([
            "weightlake",
            "databricks",
            "export",
            "p.yaml",
            "--format",
            "job-json",
            "--runner",
            "wheel",
            "-o",
            "job.json",
        ])
        .expect("parse");
        let Command::Databricks(DatabricksCommand::Export(e)) = c.command else {
            panic!("not databricks export")
        };
        assert!(matches!(e.format, ExportFormat::JobJson));
        assert!(matches!(e.runner, TaskRunner::Wheel));
        assert!(
            Cli::try_parse_from([
                "weightlake",
                "databricks",
                "export",
                "p.yaml",
                "--format",
                "zip"
            ])
            .is_err()
        );
    }
}
