//! DataFusion SQL over every table of a lake.
//!
//! Tables are registered under their layer as schema: `bronze.model_files`,
//! `bronze.files`, … Only tables that exist are registered. Blob columns are
//! shown as `<N bytes>` when printed, so `SELECT *` stays readable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::catalog::MemorySchemaProvider;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use weightlake_schemas::TableName;

use crate::blobs::PartMeta;
use crate::lake::Lake;
use crate::locate::RowLocator;
use crate::{JobError, Result};

/// The id of the next [`LakeSession`].
static NEXT_SESSION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A DataFusion session with the lake's tables registered.
pub struct LakeSession {
    ctx: SessionContext,
    /// The snapshot each table was registered with (the tables that exist),
    /// for [`RowLocator`]s.
    snapshots: HashMap<TableName, deltalake::DeltaTable>,
    /// Locators built so far (`None`: the table needs DataFusion scans).
    locators: Mutex<HashMap<TableName, Option<Arc<RowLocator>>>>,
    /// Part lists of contents read so far, complete ones only: a stored
    /// content never changes, so each is looked up once per session (a
    /// fine-tune reads its base range by range).
    part_lists: Mutex<HashMap<String, Arc<[PartMeta]>>>,
    /// Unique among the sessions of this process.
    id: u64,
}

/// Views of what each revision has **now** (each path's newest row, without
/// removals; docs/TABLES.md, "Which files a revision has"), beside the
/// tables, which keep every row ever written. Registered when their tables
/// exist. Other engines get the same with the SQL below.
const CURRENT_VIEWS: &[(&[TableName], &str, &str)] = &[
    (
        &[weightlake_schemas::bronze::FILES],
        "bronze.current_files",
        "SELECT * EXCEPT (row_rank) FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY model_id, revision, file_path
                                        ORDER BY ingested_at DESC) AS row_rank
           FROM bronze.files)
         WHERE row_rank = 1 AND file_size >= 0",
    ),
    (
        &[weightlake_schemas::silver::FILES],
        "silver.current_files",
        "SELECT * EXCEPT (row_rank) FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY model_id, revision, file_path
                                        ORDER BY tensorised_at DESC) AS row_rank
           FROM silver.files)
         WHERE row_rank = 1 AND format <> 'removed'",
    ),
    (
        &[
            weightlake_schemas::silver::FILES,
            weightlake_schemas::silver::TENSORS,
        ],
        "silver.current_tensors",
        "SELECT t.* FROM silver.tensors t
         JOIN silver.current_files f
           ON t.model_id = f.model_id AND t.revision = f.revision
          AND t.file_path = f.file_path AND t.run_id = f.run_id",
    ),
];

async fn register_current_views(
    ctx: &SessionContext,
    tables: &HashMap<TableName, deltalake::DeltaTable>,
) -> Result<()> {
    for (needs, name, query) in CURRENT_VIEWS {
        if needs.iter().all(|t| tables.contains_key(t)) {
            ctx.sql(&format!("CREATE VIEW {name} AS {query}")).await?;
        }
    }
    Ok(())
}

/// What creates a table of the lake.
fn creator(t: &TableName) -> &'static str {
    match t.layer {
        "bronze" => "an ingest",
        "silver" => "tensorise",
        "gold" => "the first promotion",
        _ => "the first pipeline run",
    }
}

/// How `weightlake sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// An ASCII table.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
}

impl LakeSession {
    /// Open every existing table of `lake` and register it.
    pub async fn new(lake: &Lake) -> Result<Self> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| JobError::Invalid("DataFusion default catalog missing".into()))?;
        let mut snapshots = HashMap::new();
        for name in TableName::ALL {
            let Some(table) = lake.open(*name).await? else {
                continue;
            };
            if catalog.schema(name.layer).is_none() {
                catalog.register_schema(name.layer, Arc::new(MemorySchemaProvider::new()))?;
            }
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| JobError::delta(name, e))?;
            let provider = table.table_provider().await?;
            ctx.register_table(format!("{}.{}", name.layer, name.table), provider)?;
            snapshots.insert(*name, table);
        }
        register_current_views(&ctx, &snapshots).await?;
        Ok(Self {
            ctx,
            snapshots,
            locators: Mutex::new(HashMap::new()),
            part_lists: Mutex::new(HashMap::new()),
            id: NEXT_SESSION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// An id no other session of this process has: what a cache of things
    /// read through a session keys them by, so they are not used with another
    /// snapshot.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Point lookups into `name` at the registered snapshot, built on first
    /// use; `None` if the table does not exist or needs DataFusion scans.
    pub(crate) fn locator(&self, name: TableName) -> Option<Arc<RowLocator>> {
        let mut locators = self.locators.lock().ok()?;
        locators
            .entry(name)
            .or_insert_with(|| {
                self.snapshots
                    .get(&name)
                    .and_then(RowLocator::new)
                    .map(Arc::new)
            })
            .clone()
    }

    /// The remembered part list of content `sha`, if it was read before.
    pub(crate) fn part_list(&self, sha: &str) -> Option<Arc<[PartMeta]>> {
        self.part_lists.lock().ok()?.get(sha).cloned()
    }

    /// Remember the complete part list of content `sha`.
    pub(crate) fn remember_part_list(&self, sha: &str, parts: Arc<[PartMeta]>) {
        if let Ok(mut lists) = self.part_lists.lock() {
            lists.insert(sha.to_string(), parts);
        }
    }

    /// Whether every table of `lake` is still at the version this session
    /// registered (and no table was created since): one log listing per
    /// table, far less than opening a new session, which also throws away
    /// what the session learnt (footers, key indexes, part lists).
    pub async fn is_current(&self, lake: &Lake) -> Result<bool> {
        for name in TableName::ALL {
            let current = match self.snapshots.get(name) {
                Some(table) => {
                    let latest = table
                        .get_latest_version()
                        .await
                        .map_err(|e| JobError::delta(*name, e))?;
                    table.version() == Some(latest)
                }
                None => !lake.exists(*name).await?,
            };
            if !current {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether table `name` exists and was registered.
    pub fn has_table(&self, name: TableName) -> bool {
        self.snapshots.contains_key(&name)
    }

    /// The DataFusion context, for jobs that build plans themselves.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plan `sql` into a DataFrame. SQL only reads the lake: statements that
    /// would write (INSERT, COPY), define tables or views (CREATE, DROP) or
    /// change the session (SET) are refused as bad input, so a mistyped
    /// statement cannot add rows to the tables whose commits mean "complete".
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let plan = self
            .ctx
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| {
                if let Some(missing) = self.missing_table(&e) {
                    JobError::Invalid(missing)
                } else if self.snapshots.is_empty() {
                    JobError::Invalid(format!(
                        "{e} (the lake has no tables yet; run an ingest first)"
                    ))
                } else {
                    JobError::Query(e)
                }
            })?;
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        if let Err(e) = read_only.verify_plan(&plan) {
            let what = match e.find_root() {
                DataFusionError::Plan(m) => m.clone(),
                other => other.to_string(),
            };
            return Err(JobError::Invalid(format!(
                "SQL over the lake only reads (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE): {what}"
            )));
        }
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }

    /// For a query naming one of the lake's tables that is not there yet,
    /// what would create it.
    fn missing_table(&self, e: &DataFusionError) -> Option<String> {
        let text = e.to_string();
        // A view over tables not there yet (`silver.current_tensors`) is
        // missing for the same reason as its first missing table.
        let view = CURRENT_VIEWS
            .iter()
            .find(|(_, view, _)| text.contains(&format!("{view}'")));
        if let Some((needs, view, _)) = view {
            let absent = needs.iter().find(|n| !self.snapshots.contains_key(n))?;
            return Some(format!(
                "{view} does not exist in this lake yet: it reads {}.{}, which {} creates",
                absent.layer,
                absent.table,
                creator(absent)
            ));
        }
        let name = TableName::ALL.iter().find(|n| {
            !self.snapshots.contains_key(n) && text.contains(&format!("{}.{}'", n.layer, n.table))
        })?;
        Some(format!(
            "{}.{} does not exist in this lake yet; {} creates it",
            name.layer,
            name.table,
            creator(name)
        ))
    }

    /// Run `sql` and collect the result.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.sql(sql).await?.collect().await?)
    }

    /// Run `sql` for printing: an empty result is one empty batch, so it
    /// still shows its columns (the table's header, the CSV header row).
    pub async fn query_with_columns(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let frame = self.sql(sql).await?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let mut batches = frame.collect().await?;
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    }
}

/// Render `batches` in `format`, with blob columns summarised as `<N bytes>`.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    let batches = batches
        .iter()
        .map(summarize_blobs)
        .collect::<Result<Vec<_>>>()?;
    match format {
        OutputFormat::Table => {
            Ok(deltalake::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
        }
        OutputFormat::Csv => {
            if let Some(f) = batches.first().and_then(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .find(|f| f.data_type().is_nested())
                    .cloned()
            }) {
                return Err(JobError::Invalid(format!(
                    "CSV cannot hold column `{}` ({}); select it as text \
                     (for a list: `array_to_string({0}, ',')`) or use --format json or table",
                    f.name(),
                    f.data_type()
                )));
            }
            let mut out = Vec::new();
            {
                let mut w = deltalake::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for b in &batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(out).map_err(|e| JobError::Invalid(e.to_string()))
        }
        OutputFormat::Json => {
            let mut out = Vec::new();
            {
                // NULLs as `"key": null`, so every line has every column.
                let mut w = deltalake::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(Arc::new(crate::json_floats::NonFiniteAsText))
                    .build::<_, deltalake::arrow::json::writer::LineDelimited>(&mut out);
                for b in &batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            String::from_utf8(out).map_err(|e| JobError::Invalid(e.to_string()))
        }
    }
}

fn summarize_blobs(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let lens: Option<Vec<Option<usize>>> = match c.data_type() {
            DataType::Binary => Some(
                c.as_binary::<i32>()
                    .iter()
                    .map(|v| v.map(<[u8]>::len))
                    .collect(),
            ),
            DataType::LargeBinary => Some(
                c.as_binary::<i64>()
                    .iter()
                    .map(|v| v.map(<[u8]>::len))
                    .collect(),
            ),
            DataType::BinaryView => Some(
                c.as_binary_view()
                    .iter()
                    .map(|v| v.map(<[u8]>::len))
                    .collect(),
            ),
            _ => None,
        };
        match lens {
            Some(lens) => {
                let s: StringArray = lens
                    .into_iter()
                    .map(|l| l.map(|n| format!("<{n} bytes>")))
                    .collect();
                fields.push(Field::new(f.name(), DataType::Utf8, true));
                cols.push(Arc::new(s));
            }
            None => {
                fields.push(f.as_ref().clone());
                cols.push(c.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}

/// Bytes of a binary-like column value (Binary, LargeBinary or BinaryView).
pub fn binary_value(col: &dyn Array, row: usize) -> Option<&[u8]> {
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Binary => Some(col.as_binary::<i32>().value(row)),
        DataType::LargeBinary => Some(col.as_binary::<i64>().value(row)),
        DataType::BinaryView => Some(col.as_binary_view().value(row)),
        _ => None,
    }
}

/// A string value of a Utf8-like column (Utf8, LargeUtf8 or Utf8View).
pub fn string_value(col: &dyn Array, row: usize) -> Option<&str> {
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(col.as_string_view().value(row)),
        _ => None,
    }
}

/// Keep `value` under `key` unless the map holds one stamped later than
/// `at`: the newest row per key of rows read in any order (of two with the
/// same stamp, the one read last).
pub(crate) fn keep_newest<K: Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, (i64, V)>,
    key: K,
    at: i64,
    value: V,
) {
    match map.get(&key) {
        Some((t, _)) if *t > at => {}
        _ => {
            map.insert(key, (at, value));
        }
    }
}

/// Microseconds since the epoch of a timestamp value (microsecond columns,
/// as every `*_at` column is).
pub fn timestamp_micros(col: &dyn Array, row: usize) -> Option<i64> {
    use deltalake::arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(col.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        _ => None,
    }
}

/// A timestamp column's value in microseconds since the epoch.
pub fn micros_value(col: &dyn Array, row: usize) -> Option<i64> {
    use deltalake::arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Some(col.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        _ => None,
    }
}

/// An integer value of any integer column, widened to i64.
pub fn int_value(col: &dyn Array, row: usize) -> Option<i64> {
    use deltalake::arrow::datatypes::{Int32Type, Int64Type};
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Int64 => Some(col.as_primitive::<Int64Type>().value(row)),
        DataType::Int32 => Some(i64::from(col.as_primitive::<Int32Type>().value(row))),
        _ => None,
    }
}
