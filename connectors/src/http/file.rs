//! Download one URL into a local file, ranges written at their offsets.
//!
//! Used by `weightlake download` and the download benchmark. Memory stays at
//! roughly `concurrency × 256 KiB` write buffers whatever the file size.
//!
//! Since ranges land straight in the file, a range can be as long as we like:
//! the file is cut into one range per connection (never shorter than the chunk
//! size), so each connection pays the request latency once, not once per chunk.
//! A failed range resumes from its last byte, so long ranges lose nothing.

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

const WRITE_BUFFER: usize = 256 << 10;

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
///
/// The bytes land in a hidden file beside `dest`, renamed over it only once
/// every check passed: a failed or interrupted download leaves whatever
/// `dest` held before, never bytes that failed verification.
pub async fn download_to_file(
    client: &HttpClient,
    target: &HttpTarget,
    dest: &Path,
    expected_sha256: Option<&str>,
    verify: bool,
    on_bytes: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> Result<DownloadReport> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    remove_abandoned_partials(dest, &name);
    let partial = dest.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    // Removed however this future ends: failed, or dropped by a signal.
    let _cleanup = RemoveOnDrop(partial.clone());
    let report = download_into(client, target, &partial, expected_sha256, verify, on_bytes).await?;
    std::fs::rename(&partial, dest).map_err(|source| ConnectorError::Io {
        path: dest.display().to_string(),
        source,
    })?;
    Ok(report)
}

/// Delete `.NAME.PID.partial` files beside `dest` that a download killed
/// outright left (their process no longer runs on this machine).
fn remove_abandoned_partials(dest: &Path, name: &str) {
    // Whether a process runs is read from /proc (Linux); elsewhere, keep all.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".partial"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let running = Path::new(&format!("/proc/{pid}")).exists();
        if !running && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(file = %e.path().display(), "removed a partial file a killed download left");
        }
    }
}

/// Deletes a file (if it is still there) when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// [`download_to_file`] straight into `dest`.
async fn download_into(
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
    let probe = match expected_sha256 {
        Some(_) => client.probe(target).await?,
        None => client.probe_version(target).await?,
    };
    // Every range must be of the version probed (unless a sha256 checks
    // the whole file anyway).
    let pinned = match expected_sha256 {
        Some(_) => target.clone(),
        None => target.clone().pinned(probe.pin.clone()),
    };
    let target = &pinned;
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
            let plan = plan_chunks(size, balanced_range_size(size, &client.cfg));
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

/// One range per connection, never shorter than the configured chunk size.
fn balanced_range_size(size: u64, cfg: &super::DownloadConfig) -> u64 {
    let connections = cfg.concurrency.max(1) as u64;
    size.div_ceil(connections).max(cfg.chunk_size)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::DownloadConfig;

    fn cfg(concurrency: usize, chunk_size: u64) -> DownloadConfig {
        DownloadConfig {
            concurrency,
            chunk_size,
            ..DownloadConfig::default()
        }
    }

    #[test]
    fn a_large_file_gets_one_range_per_connection() {
        let size = 1 << 30;
        let plan = plan_chunks(size, balanced_range_size(size, &cfg(8, 16 << 20)));
        assert_eq!(plan.len(), 8);
        assert_eq!(plan.last().map(|c| c.range.end), Some(size));
    }

    #[test]
    fn a_small_file_keeps_the_chunk_size() {
        let size = 40 << 20;
        let plan = plan_chunks(size, balanced_range_size(size, &cfg(32, 16 << 20)));
        assert_eq!(plan.len(), 3);
    }

    #[test]
    fn an_uneven_size_is_covered_exactly() {
        let size = (1 << 30) + 7;
        let plan = plan_chunks(size, balanced_range_size(size, &cfg(32, 1 << 20)));
        assert_eq!(plan.len(), 32);
        let covered: u64 = plan.iter().map(|c| c.range.end - c.range.start).sum();
        assert_eq!(covered, size);
    }
}
