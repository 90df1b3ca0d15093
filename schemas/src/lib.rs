//! Arrow schemas of every weightlake table, with their versions.
//!
//! Each table lives at `<lake_root>/<layer>/<table>` and is named `layer.table`
//! (see [`TableName`]). Changing a schema is a migration: bump its version constant
//! and say in `docs/TABLES.md` how old tables are upgraded.
//!
//! # Example
//!
//! ```
//! use weightlake_schemas::{bronze, TableName};
//!
//! let schema = bronze::model_files_schema();
//! assert_eq!(schema.field(schema.fields().len() - 1).name(), "data");
//! assert_eq!(bronze::MODEL_FILES.to_string(), "bronze.model_files");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bronze;
pub mod gold;
mod name;
pub mod silver;
pub mod system;

pub use name::{TableName, TableNameError};

/// Arrow timestamp type used by every `*_at` column: microseconds, UTC (Delta `timestamp`).
pub fn timestamp_type() -> arrow::datatypes::DataType {
    arrow::datatypes::DataType::Timestamp(
        arrow::datatypes::TimeUnit::Microsecond,
        Some("UTC".into()),
    )
}
