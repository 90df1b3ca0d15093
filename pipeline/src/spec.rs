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

use serde::Deserialize;
use weightlake_connectors::source::SourceSpec;
use weightlake_connectors::storage::StorageConfig;

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
    /// Named sources that stages refer to.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSpec>,
    /// Named stages; run in dependency order.
    pub stages: BTreeMap<String, StageSpec>,
}

/// The job a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Sources -> bronze.
    Ingest,
    /// Bronze -> silver tensors.
    Tensorise,
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The job: `ingest`.
    pub job: JobKind,
    /// Stages that must finish first.
    #[serde(default)]
    pub depends_on: Vec<String>,
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
}
