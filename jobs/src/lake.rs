//! A lake: a root URL under which every table lives at `<root>/<layer>/<table>`,
//! with the storage options to reach it.
//!
//! Tables are created on first use. Two processes may race to create the same
//! table: the loser of the commit race sees the winner's table and uses it.

use std::collections::HashMap;
use std::sync::Once;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::{StructField, StructType};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use tracing::debug;
use url::Url;
use weightlake_connectors::storage::{StorageConfig, join, parse_location};
use weightlake_schemas::TableName;

use crate::{JobError, Result};

static HANDLERS: Once = Once::new();

/// The table property naming the columns Delta file statistics cover.
pub const STATS_COLUMNS_PROPERTY: &str = "delta.dataSkippingStatsColumns";

/// The columns of `schema` that Delta file statistics can describe truly:
/// flat columns other than binary and floating point. Delta's statistics are
/// JSON, which has no infinity: delta-rs writes an infinite maximum (a
/// `rel_l2_change` of +inf) as `null`, and readers such as Python's
/// `deltalake` then skip the file for any filter on that column, returning
/// no rows. Blobs get no statistics either (they would put the blobs in the
/// log). A table that names these columns explicitly is not changed.
pub fn skipping_stats_columns(schema: &SchemaRef) -> String {
    use deltalake::arrow::datatypes::DataType;
    schema
        .fields()
        .iter()
        .filter(|f| {
            !matches!(
                f.data_type(),
                DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::Float16
                    | DataType::Float32
                    | DataType::Float64
                    | DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::Struct(_)
                    | DataType::Map(_, _)
            )
        })
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Register deltalake's S3 and GCS handlers (once per process).
pub fn register_object_store_handlers() {
    HANDLERS.call_once(|| {
        deltalake::aws::register_handlers(None);
        deltalake::gcp::register_handlers(None);
    });
}

/// A lake root and how to reach it.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    storage: StorageConfig,
}

impl Lake {
    /// A lake at `location` (`file://…`, a path, `s3://bucket/prefix`, `gs://…`).
    pub fn new(location: &str, storage: StorageConfig) -> Result<Self> {
        register_object_store_handlers();
        let root = parse_location(location)?;
        if let Ok(p) = root.to_file_path()
            && p.exists()
            && !p.is_dir()
        {
            return Err(JobError::Invalid(format!(
                "lake {location} is a file, not a directory"
            )));
        }
        Ok(Self { root, storage })
    }

    /// The root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The storage settings.
    pub fn storage(&self) -> &StorageConfig {
        &self.storage
    }

    /// Where `table` lives.
    pub fn table_url(&self, table: TableName) -> Url {
        join(&self.root, &table.relative_path())
    }

    fn options(&self, url: &Url) -> HashMap<String, String> {
        self.storage.options_for(url)
    }

    fn builder(&self, table: TableName) -> Result<DeltaTableBuilder> {
        let url = self.table_url(table);
        let options = self.options(&url);
        Ok(DeltaTableBuilder::from_url(url)
            .map_err(|e| JobError::delta(table, e))?
            .with_storage_options(options))
    }

    /// Whether `table` exists (has a commit), without loading it.
    pub async fn exists(&self, table: TableName) -> Result<bool> {
        if self.root.scheme() == "file"
            && let Ok(p) = self.table_url(table).to_file_path()
            && !p.exists()
        {
            return Ok(false);
        }
        self.builder(table)?
            .build()
            .map_err(|e| JobError::delta(table, e))?
            .verify_deltatable_existence()
            .await
            .map_err(|e| JobError::delta(table, e))
    }

    /// Open `table` at its latest version, or `None` if it does not exist yet.
    pub async fn open(&self, table: TableName) -> Result<Option<DeltaTable>> {
        if !self.exists(table).await? {
            return Ok(None);
        }
        let t = self
            .builder(table)?
            .load()
            .await
            .map_err(|e| JobError::delta(table, e))?;
        Ok(Some(t))
    }

    /// Open `table` at `version` (time travel).
    pub async fn open_version(&self, table: TableName, version: i64) -> Result<DeltaTable> {
        let v = u64::try_from(version)
            .map_err(|_| JobError::Invalid(format!("negative table version {version}")))?;
        match self.builder(table)?.with_version(v).load().await {
            Ok(t) => Ok(t),
            Err(e) => {
                // Say what exists instead of the log reader's complaint.
                let latest = self
                    .open(table)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|t| t.version());
                match latest {
                    None => Err(JobError::Invalid(format!(
                        "{table} does not exist yet, so it has no version {version}"
                    ))),
                    Some(l) if v > l => Err(JobError::Invalid(format!(
                        "{table} has versions 0 to {l}; version {version} is past the latest"
                    ))),
                    Some(_) => Err(JobError::delta(table, e)),
                }
            }
        }
    }

    /// Open `table`, creating it with `schema` (and `properties`) if it does not exist.
    pub async fn open_or_create(
        &self,
        table: TableName,
        schema: SchemaRef,
        properties: &[(&str, String)],
    ) -> Result<DeltaTable> {
        if let Some(t) = self.open(table).await? {
            return Ok(t);
        }
        let url = self.table_url(table);
        if let Ok(p) = url.to_file_path() {
            std::fs::create_dir_all(&p)
                .map_err(|e| JobError::Invalid(format!("cannot create {}: {e}", p.display())))?;
        }
        let kernel = StructType::try_from_arrow(schema.as_ref())?;
        let columns: Vec<StructField> = kernel.fields().cloned().collect();
        let mut config: HashMap<String, Option<String>> = properties
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone())))
            .collect();
        config.insert("weightlake.table".into(), Some(table.to_string()));
        config
            .entry(STATS_COLUMNS_PROPERTY.into())
            .or_insert_with(|| Some(skipping_stats_columns(&schema)));
        let t = self
            .builder(table)?
            .build()
            .map_err(|e| JobError::delta(table, e))?;
        let created = t
            .create()
            .with_columns(columns)
            .with_table_name(table.table)
            .with_save_mode(SaveMode::Ignore)
            .with_configuration(config)
            .with_raise_if_key_not_exists(false)
            // No retry: a create that loses the race must not land as a later
            // version (that would change the metadata under other writers).
            .with_commit_properties(
                deltalake::kernel::transaction::CommitProperties::default().with_max_retries(0),
            )
            .await;
        match created {
            Ok(t) => Ok(t),
            Err(e) => {
                // Lost a creation race with another process? Then the table exists now.
                debug!(%table, error = %e, "create failed; reopening");
                match self.open(table).await? {
                    Some(t) => Ok(t),
                    None => Err(JobError::delta(table, e)),
                }
            }
        }
    }
}
