//! weightlake integration tests: one binary, one module per capability.
//!
//! Run through `bash scripts/test.sh`, which starts the S3 server and sets
//! `WEIGHTLAKE_TEST_*` (see `support`).

mod cli;
mod databricks;
mod export;
mod gold;
mod ingest_http;
mod ingest_hub;
mod ingest_local;
mod ingest_resume;
mod ingest_s3;
mod launchers;
mod maintain;
mod mlflow;
mod pipeline;
mod pipeline_cost;
mod pipeline_gold;
mod readers;
mod runner;
mod serve;
mod shards_s3;
mod support;
mod tensorise;
mod tensorise_runs;
