//! Rebuild a model's files from silver, bit for bit, to a directory or an
//! object store prefix, or only check that they would rebuild (`verify`).
//!
//! Each file is written as: header bytes, then for each tensor in file order its
//! padding and decoded content, then the suffix; pass-through files are one
//! content. The sha256 of what was written must equal the source's, or the
//! export fails (and a local file that failed is removed).

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::datafusion::prelude::{col, lit};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::info;
use url::Url;
use weightlake_connectors::storage::parse_location;
use weightlake_schemas::silver;

use crate::blobs::read_content;
use crate::lake::Lake;
use crate::sql::{LakeSession, binary_value, int_value, string_value};
use crate::{JobError, Result};

/// What an export (or verify) did.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Files rebuilt and verified.
    pub files: usize,
    /// Bytes rebuilt.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// `(file_path, sha256)` of every file.
    pub checked: Vec<(String, String)>,
}

/// Builder of an export; `.await` it.
#[must_use = "an ExportJob does nothing until awaited"]
pub struct ExportJob {
    lake: Lake,
    model_id: String,
    revision: String,
    to: Option<String>,
    concurrency: usize,
}

impl ExportJob {
    /// Export `model_id@revision` from `lake`; without [`ExportJob::to`], only verify.
    pub fn new(lake: Lake, model_id: impl Into<String>, revision: impl Into<String>) -> Self {
        Self {
            lake,
            model_id: model_id.into(),
            revision: revision.into(),
            to: None,
            concurrency: 4,
        }
    }

    /// Write the files under this directory or `s3://`/`gs://`/`file://` prefix.
    pub fn to(mut self, dest: impl Into<String>) -> Self {
        self.to = Some(dest.into());
        self
    }

    /// Files rebuilt at once (default 4).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
}

impl IntoFuture for ExportJob {
    type Output = Result<ExportReport>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

#[derive(Debug, Clone)]
struct SilverFile {
    file_path: String,
    file_size: i64,
    file_sha256: String,
    format: String,
    run_id: String,
    header: Vec<u8>,
    suffix: Vec<u8>,
}

enum Sink {
    None,
    Store(Box<BufWriter>),
}

impl Sink {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Sink::Store(w) = self {
            w.write_all(data)
                .await
                .map_err(|e| JobError::Invalid(format!("write failed: {e}")))?;
        }
        Ok(())
    }
}

impl ExportJob {
    async fn run(self) -> Result<ExportReport> {
        let started = Instant::now();
        let session = Arc::new(LakeSession::new(&self.lake).await?);
        if !session.tables().contains(&silver::FILES) {
            return Err(JobError::Invalid(
                "the lake has no silver tables: run tensorise first".into(),
            ));
        }
        let files = self.files(&session).await?;
        if files.is_empty() {
            return Err(JobError::Invalid(format!(
                "no files of {}@{} in silver",
                self.model_id, self.revision
            )));
        }
        let dest = match &self.to {
            Some(d) => {
                let url = parse_location(d)?;
                if let Ok(p) = url.to_file_path() {
                    std::fs::create_dir_all(&p).map_err(|e| {
                        JobError::Invalid(format!("cannot create {}: {e}", p.display()))
                    })?;
                }
                let (store, prefix) = self.lake.storage().object_store(&url)?;
                Some((store, prefix, url))
            }
            None => None,
        };
        let dest = Arc::new(dest);
        let results: Vec<(String, String, u64)> = futures::stream::iter(files)
            .map(|f| {
                let (session, dest, model, rev) = (
                    session.clone(),
                    dest.clone(),
                    self.model_id.clone(),
                    self.revision.clone(),
                );
                async move { rebuild(&session, &model, &rev, f, dest.as_ref().as_ref()).await }
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut report = ExportReport {
            elapsed: started.elapsed(),
            ..Default::default()
        };
        for (path, sha, n) in results {
            report.files += 1;
            report.bytes += n;
            report.checked.push((path, sha));
        }
        report.checked.sort();
        Ok(report)
    }

    async fn files(&self, session: &LakeSession) -> Result<Vec<SilverFile>> {
        let batches = session
            .context()
            .table(silver::FILES.to_string())
            .await?
            .filter(
                col("model_id")
                    .eq(lit(self.model_id.clone()))
                    .and(col("revision").eq(lit(self.revision.clone()))),
            )?
            .select_columns(&[
                "file_path",
                "file_size",
                "file_sha256",
                "format",
                "run_id",
                "header",
                "suffix",
                "tensorised_at",
            ])?
            .sort(vec![col("tensorised_at").sort(true, true)])?
            .collect()
            .await?;
        let mut latest = std::collections::BTreeMap::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let s = |c: usize| {
                    string_value(b.column(c).as_ref(), r)
                        .unwrap_or_default()
                        .to_string()
                };
                let bin = |c: usize| {
                    binary_value(b.column(c).as_ref(), r)
                        .unwrap_or_default()
                        .to_vec()
                };
                let f = SilverFile {
                    file_path: s(0),
                    file_size: int_value(b.column(1).as_ref(), r).unwrap_or(0),
                    file_sha256: s(2),
                    format: s(3),
                    run_id: s(4),
                    header: bin(5),
                    suffix: bin(6),
                };
                latest.insert(f.file_path.clone(), f);
            }
        }
        Ok(latest.into_values().collect())
    }
}

async fn rebuild(
    session: &LakeSession,
    model: &str,
    revision: &str,
    f: SilverFile,
    dest: Option<&(Arc<dyn ObjectStore>, StorePath, Url)>,
) -> Result<(String, String, u64)> {
    let mut sink = match dest {
        Some((store, prefix, _)) => {
            let path = StorePath::from(
                format!("{}/{}", prefix.as_ref().trim_end_matches('/'), f.file_path)
                    .trim_start_matches('/'),
            );
            Sink::Store(Box::new(BufWriter::new(store.clone(), path)))
        }
        None => Sink::None,
    };
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut put = |data: &[u8], hasher: &mut Sha256| {
        hasher.update(data);
        written += data.len() as u64;
    };
    if f.format == "safetensors" || f.format == "gguf" {
        put(&f.header, &mut hasher);
        sink.write(&f.header).await?;
        let batches = session
            .context()
            .table(silver::TENSORS.to_string())
            .await?
            .filter(
                col("model_id")
                    .eq(lit(model.to_string()))
                    .and(col("revision").eq(lit(revision.to_string())))
                    .and(col("file_path").eq(lit(f.file_path.clone())))
                    .and(col("run_id").eq(lit(f.run_id.clone()))),
            )?
            .select_columns(&["tensor_index", "content_sha256", "pad_before"])?
            .sort(vec![col("tensor_index").sort(true, true)])?
            .collect()
            .await?;
        for b in &batches {
            for r in 0..b.num_rows() {
                let pad = binary_value(b.column(2).as_ref(), r)
                    .unwrap_or_default()
                    .to_vec();
                let sha = string_value(b.column(1).as_ref(), r)
                    .unwrap_or_default()
                    .to_string();
                put(&pad, &mut hasher);
                sink.write(&pad).await?;
                let content = read_content(session, &sha, 0).await?;
                put(&content, &mut hasher);
                sink.write(&content).await?;
            }
        }
        put(&f.suffix, &mut hasher);
        sink.write(&f.suffix).await?;
    } else {
        let content = read_content(session, &f.file_sha256, 0).await?;
        put(&content, &mut hasher);
        sink.write(&content).await?;
    }
    let sha = hex::encode(hasher.finalize());
    if sha != f.file_sha256 || written != f.file_size as u64 {
        if let Sink::Store(mut w) = sink {
            let _ = w.abort().await;
        }
        return Err(JobError::Invalid(format!(
            "{}: rebuilt {written} bytes with sha256 {sha}, expected {} bytes with {}",
            f.file_path, f.file_size, f.file_sha256
        )));
    }
    if let Sink::Store(mut w) = sink {
        w.shutdown()
            .await
            .map_err(|e| JobError::Invalid(format!("{}: {e}", f.file_path)))?;
    }
    info!(file = %f.file_path, bytes = written, "rebuilt and verified");
    Ok((f.file_path, sha, written))
}
