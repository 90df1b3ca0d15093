//! `_system`: tables about weightlake itself.
//!
//! `_system.runs` is the run ledger: one row per attempt of one task (a
//! stage, or one shard of a sharded stage) of a pipeline run, appended when
//! the attempt ends, plus one row (attempt 0) per stage that did not run
//! (`skipped`, `upstream_failed`). Append-only: a retried task has one row
//! per attempt.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::{TableName, timestamp_type};

/// `_system.runs`.
pub const RUNS: TableName = TableName {
    layer: "_system",
    table: "runs",
};

/// Schema version of `_system.runs`.
pub const RUNS_VERSION: u32 = 1;

/// Status: the attempt succeeded.
pub const SUCCEEDED: &str = "succeeded";
/// Status: the attempt failed.
pub const FAILED: &str = "failed";
/// Status: the attempt ran past the stage's `timeout` and was cancelled.
pub const TIMED_OUT: &str = "timed_out";
/// Status: cancelled by the run's budget (running, or not started).
pub const CANCELLED: &str = "cancelled";
/// Status: not run, its `run_if` did not hold and no upstream stage failed.
pub const SKIPPED: &str = "skipped";
/// Status: not run, its `run_if` did not hold after an upstream failure.
pub const UPSTREAM_FAILED: &str = "upstream_failed";
/// Status of a run marker written when a pipeline run starts; a run whose
/// last marker still says so has not ended, or its process died.
pub const RUNNING: &str = "running";
/// The `stage` of a pipeline run's markers: one row when `weightlake run`
/// starts (`running`), one when it ends (`succeeded`, `failed` or
/// `cancelled`, also on Ctrl-C or SIGTERM).
pub const RUN_STAGE: &str = "(run)";

/// Arrow schema of `_system.runs`.
pub fn runs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        // "i/N" for a shard of a sharded stage; null for a whole stage
        Field::new("shard", DataType::Utf8, true),
        // 1, 2, … ; 0 for a stage that did not run
        Field::new("attempt", DataType::Int32, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("started_at", timestamp_type(), false),
        Field::new("ended_at", timestamp_type(), false),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        // bytes / second / 1e6
        Field::new("throughput_mbps", DataType::Float64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("cost_usd", DataType::Float64, true),
    ]))
}
