//! Gold: promoted model versions and their aliases, as one event log.
//!
//! `gold.models` holds one row per event of a gold model name:
//!
//! - `promoted`: the promotion passed its `fail` gates and got the next
//!   `version` of its `name` (1, 2, …); `manifest` pins the exact silver rows
//!   (files, tensor order, offsets, content hashes) that rebuild every file bit
//!   for bit, with the gate results and metrics it was judged on.
//! - `rejected`: a `fail` gate stopped it; recorded with its gate results and no
//!   version.
//! - `alias_set` / `alias_removed`: `alias` now points at `version` / nowhere.
//!   The current target of an alias is its newest event.
//!
//! A promotion and the alias it sets are one Delta commit; moving an alias is
//! one commit; so every earlier state of gold is one Delta version
//! (time travel: `--as-of`).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::{TableName, timestamp_type};

/// `gold.models`.
pub const MODELS: TableName = TableName {
    layer: "gold",
    table: "models",
};

/// Schema version of `gold.models`.
pub const VERSION: u32 = 1;

/// Event: a version was promoted.
pub const PROMOTED: &str = "promoted";
/// Event: a promotion was stopped by a `fail` gate.
pub const REJECTED: &str = "rejected";
/// Event: an alias was pointed at a version.
pub const ALIAS_SET: &str = "alias_set";
/// Event: an alias was removed.
pub const ALIAS_REMOVED: &str = "alias_removed";

/// Arrow schema of `gold.models`.
pub fn models_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        // the version promoted, or the one the alias points at; null if rejected
        Field::new("version", DataType::Int64, true),
        Field::new("alias", DataType::Utf8, true),
        Field::new("model_id", DataType::Utf8, false),
        Field::new("revision", DataType::Utf8, false),
        Field::new("base_model", DataType::Utf8, true),
        // sha256 of the manifest JSON: the identity of the promoted weights
        Field::new("manifest_sha256", DataType::Utf8, true),
        Field::new("manifest", DataType::Utf8, true),
        // JSON array of {name, action, expr, passed, detail}
        Field::new("gates", DataType::Utf8, true),
        // JSON object: metric name -> number
        Field::new("metrics", DataType::Utf8, true),
        Field::new("mlflow_run_id", DataType::Utf8, true),
        Field::new("mlflow_version", DataType::Utf8, true),
        Field::new("run_id", DataType::Utf8, false),
        // the Delta version of the commit that wrote the event: events are
        // applied in this order (commits are compare-and-swap, so it is exact)
        Field::new("seq", DataType::Int64, false),
        Field::new("at", timestamp_type(), false),
    ]))
}
