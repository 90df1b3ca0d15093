//! Download one URL into a local file, ranges written at their offsets.
//!
//! Used by `weightlake download` and the download benchmark. Memory stays at
//! roughly `concurrency × 1 MiB` write buffers whatever the file size.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::{HttpClient, HttpTarget, RangeSink, plan_chunks, redact};
use crate::{ConnectorError, Result};

const WRITE_BUFFER: usize = 1 << 20;

/// What a finished download measured.
#[derive(Debug, Clone)]
pub struct DownloadReport {
    /// Bytes written.
    pub bytes: u64,
    /// sha256 of the file, hex (computed when asked to verify or when expected).
    pub sha256: Option<String>,
    /// Wall time of the transfer (without the verification read).
    pub elapsed: Duration,
    /// True when the server ignored `Range` and the file came as one stream.
    pub single_stream: bool,
}

struct FileSink {
    file: Arc<File>,
    path: String,
    buf: Vec<u8>,
    buf_offset: u64,
    on_bytes: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl FileSink {
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.buf_offset)?;
            if let Some(f) = &self.on_bytes {
                f(self.buf.len() as u64);
            }
            self.buf.clear();
        }
        Ok(())
    }
}

impl FileSink {
    fn put(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.buf.is_empty() || self.buf_offset + self.buf.len() as u64 != offset {
            self.flush()?;
            self.buf_offset = offset;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }
}

impl RangeSink for FileSink {
    async fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.put(offset, data)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(path = %self.path, error = %e, "write failed");
        }
    }
}

/// Download `target` to `dest` with parallel ranges; verify the size, and the
/// sha256 when `expected_sha256` is given or `verify` is set.
pub async fn download_to_file(
    client: &HttpClient,
    target: &HttpTarget,
    dest: &Path,
    expected_sha256: Option<&str>,
    verify: bool,
    on_bytes: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> Result<DownloadReport> {
    let io_err = |source| ConnectorError::Io {
        path: dest.display().to_string(),
        source,
    };
    let started = Instant::now();
    let probe = client.probe(target).await?;
    let file = Arc::new(File::create(dest).map_err(io_err)?);
    let sink = |file: &Arc<File>| FileSink {
        file: file.clone(),
        path: dest.display().to_string(),
        buf: Vec::with_capacity(WRITE_BUFFER),
        buf_offset: 0,
        on_bytes: on_bytes.clone(),
    };
    let (bytes, single_stream) = match (probe.ranges, probe.size) {
        (true, Some(size)) => {
            file.set_len(size).map_err(io_err)?;
            let plan = plan_chunks(size, client.cfg.chunk_size);
            futures::stream::iter(plan)
                .map(|c| {
                    let mut s = sink(&file);
                    async move {
                        client.fetch_range(target, c.range, &mut s).await?;
                        s.flush().map_err(|source| ConnectorError::Io {
                            path: s.path.clone(),
                            source,
                        })
                    }
                })
                .buffer_unordered(client.cfg.concurrency.max(1))
                .try_collect::<Vec<()>>()
                .await?;
            (size, false)
        }
        _ => {
            let mut s = sink(&file);
            let n = client.fetch_stream(target, probe.size, &mut s).await?;
            s.flush().map_err(io_err)?;
            file.set_len(n).map_err(io_err)?;
            (n, true)
        }
    };
    let elapsed = started.elapsed();
    let sha256 = if verify || expected_sha256.is_some() {
        let path = dest.to_path_buf();
        let digest = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(io_err)?;
        if let Some(exp) = expected_sha256
            && !exp.eq_ignore_ascii_case(&digest)
        {
            return Err(ConnectorError::Verify {
                url: redact(&target.url),
                what: "sha256",
                expected: exp.to_string(),
                actual: digest,
            });
        }
        Some(digest)
    } else {
        None
    };
    Ok(DownloadReport {
        bytes,
        sha256,
        elapsed,
        single_stream,
    })
}

/// sha256 of a local file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
