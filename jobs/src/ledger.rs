//! The run ledger, `_system.runs`: one row per task attempt of a pipeline
//! run (see `weightlake_schemas::system`). Appends are small blind appends
//! (Delta resolves concurrent appends from shards by retrying the commit);
//! reading loads the whole table, which stays small (a few rows per stage per
//! run).

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use weightlake_schemas::system;

use crate::lake::Lake;
use crate::sql::{int_value, string_value};
use crate::{JobError, Result};

/// One row of `_system.runs`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The pipeline run (shared by every task of the run).
    pub run_id: String,
    /// The pipeline name.
    pub pipeline: String,
    /// The stage.
    pub stage: String,
    /// `i/N` for a shard of a sharded stage, else `None`.
    pub shard: Option<String>,
    /// 1-based attempt; 0 for a stage that did not run.
    pub attempt: i32,
    /// `succeeded`, `failed`, `timed_out`, `skipped` or `upstream_failed`.
    pub status: String,
    /// Start, microseconds since the epoch (UTC).
    pub started_at: i64,
    /// End, microseconds since the epoch (UTC).
    pub ended_at: i64,
    /// Wall time in milliseconds.
    pub duration_ms: i64,
    /// Bytes the attempt moved (see docs/TABLES.md per job).
    pub bytes: i64,
    /// Rows the attempt wrote (see docs/TABLES.md per job).
    pub rows: i64,
    /// `bytes` per second / 1e6 (0 when nothing moved).
    pub throughput_mbps: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// Cost estimate in US dollars, when known.
    pub cost_usd: Option<f64>,
}

fn batch(records: &[RunRecord]) -> Result<RecordBatch> {
    let s = |f: fn(&RunRecord) -> &str| -> ArrayRef {
        Arc::new(records.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let ts = |f: fn(&RunRecord) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(records.iter().map(f)).with_timezone("UTC"),
        )
    };
    let i = |f: fn(&RunRecord) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(records.iter().map(f)))
    };
    let cols: Vec<ArrayRef> = vec![
        s(|r| &r.run_id),
        s(|r| &r.pipeline),
        s(|r| &r.stage),
        Arc::new(
            records
                .iter()
                .map(|r| r.shard.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(Int32Array::from_iter_values(
            records.iter().map(|r| r.attempt),
        )),
        s(|r| &r.status),
        ts(|r| r.started_at),
        ts(|r| r.ended_at),
        i(|r| r.duration_ms),
        i(|r| r.bytes),
        i(|r| r.rows),
        Arc::new(Float64Array::from_iter_values(
            records.iter().map(|r| r.throughput_mbps),
        )),
        Arc::new(
            records
                .iter()
                .map(|r| r.error.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(records.iter().map(|r| r.cost_usd).collect::<Float64Array>()),
    ];
    Ok(RecordBatch::try_new(system::runs_schema(), cols)?)
}

/// Open `_system.runs`, creating it if it does not exist.
pub async fn create(lake: &Lake) -> Result<deltalake::DeltaTable> {
    lake.open_or_create(
        system::RUNS,
        system::runs_schema(),
        &[("weightlake.schemaVersion", system::RUNS_VERSION.to_string())],
    )
    .await
}

/// Append `records` to `_system.runs` (created on first use) in one commit.
pub async fn append(lake: &Lake, records: &[RunRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let table = create(lake).await?;
    table
        .write(vec![batch(records)?])
        .with_save_mode(SaveMode::Append)
        .await
        .map_err(|e| JobError::delta(system::RUNS, e))?;
    Ok(())
}

/// Every row of `_system.runs` (none when the table does not exist yet), in
/// no particular order.
pub async fn read(lake: &Lake) -> Result<Vec<RunRecord>> {
    let Some(table) = lake.open(system::RUNS).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .collect()
        .await?;
    let mut out = Vec::new();
    for b in &batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| JobError::Invalid(format!("_system.runs has no `{name}` column")))
        };
        let (started, ended) = (col("started_at")?, col("ended_at")?);
        let (started, ended) = (
            started.as_primitive::<TimestampMicrosecondType>(),
            ended.as_primitive::<TimestampMicrosecondType>(),
        );
        let (tp, cost) = (col("throughput_mbps")?, col("cost_usd")?);
        let (tp, cost) = (
            tp.as_primitive::<Float64Type>(),
            cost.as_primitive::<Float64Type>(),
        );
        let strs: Vec<ArrayRef> = ["run_id", "pipeline", "stage", "shard", "status", "error"]
            .iter()
            .map(|c| col(c))
            .collect::<Result<_>>()?;
        let ints: Vec<ArrayRef> = ["attempt", "duration_ms", "bytes", "rows"]
            .iter()
            .map(|c| col(c))
            .collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let s = |i: usize| string_value(strs[i].as_ref(), r).map(str::to_string);
            let n = |i: usize| int_value(ints[i].as_ref(), r).unwrap_or(0);
            out.push(RunRecord {
                run_id: s(0).unwrap_or_default(),
                pipeline: s(1).unwrap_or_default(),
                stage: s(2).unwrap_or_default(),
                shard: s(3),
                attempt: i32::try_from(n(0)).unwrap_or(0),
                status: s(4).unwrap_or_default(),
                started_at: started.value(r),
                ended_at: ended.value(r),
                duration_ms: n(1),
                bytes: n(2),
                rows: n(3),
                throughput_mbps: tp.value(r),
                error: s(5),
                cost_usd: cost.is_valid(r).then(|| cost.value(r)),
            });
        }
    }
    Ok(out)
}
