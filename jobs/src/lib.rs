//! The stage entry points of weightlake and the lake they work on.
//!
//! Each job is a builder that is `.await`ed, in the style of delta-rs operations:
//!
//! - [`ingest::IngestJob`]: sources -> `bronze.model_files` + `bronze.files`.
//! - [`maintain::MaintainJob`]: bronze retention, optimize, vacuum, checkpoints.
//! - [`sql::LakeSession`]: DataFusion SQL over every table of a lake.
//!
//! [`lake::Lake`] owns the lake root, its storage options and table creation.
//!
//! # Example
//!
//! ```no_run
//! use weightlake_jobs::{ingest::IngestJob, lake::Lake};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let lake = Lake::new("./lake", Default::default())?;
//! let report = IngestJob::new(lake.clone(), vec!["./models/tiny".parse()?])
//!     .with_model_id("tiny")
//!     .await?;
//! println!("{} files ingested", report.files_ingested);
//! # Ok(()) }
//! ```

mod append;
mod blobs;
mod error;
pub mod export;
mod file_ranges;
pub mod gold;
pub mod ingest;
mod json_floats;
pub mod lake;
pub mod ledger;
mod locate;
mod lock;
pub mod maintain;
mod on_drop;
pub mod progress;
pub mod shard;
pub mod sql;
pub mod tensorise;
pub mod view;

pub use error::{JobError, Result};
