//! Where model bytes come from and where the lake lives.
//!
//! - [`source`]: what a user names (`https://…`, `hf://org/repo@rev`, `s3://…`,
//!   `file://…`, a local path) resolved into a list of [`source::RemoteFile`]s
//!   that can be read by byte range.
//! - [`http`]: the ranged HTTP downloader: one pooled client, N ranges in flight,
//!   per-range retries with jittered exponential backoff, stall detection, and a
//!   single-stream fallback for servers that ignore `Range`.
//! - [`hub`]: the Hugging Face-compatible hub API (revision -> commit + file list).
//! - [`mlflow`]: the MLflow REST client (tracking and model registry).
//! - [`webhook`]: JSON POSTs to alert and notification endpoints, retried.
//! - [`storage`]: lake and source locations on local disk, S3/MinIO and GCS, and
//!   the `object_store` options for them.
//!
//! # Example
//!
//! ```
//! use weightlake_connectors::source::SourceSpec;
//!
//! let spec: SourceSpec = "hf://sentence-transformers/all-MiniLM-L6-v2@main".parse()?;
//! assert!(matches!(spec, SourceSpec::Hub(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub mod http;
pub mod hub;
pub mod mlflow;
pub mod paths;
pub mod source;
pub mod storage;
pub mod webhook;

pub use error::{ConnectorError, Result, compact_xml_errors};
