//! Byte ranges of one Parquet data file for the Parquet reader of point
//! lookups (`locate`).
//!
//! Ranges come from the table's object store; for a lake on local disk they
//! are read with positioned reads into uninitialised capacity instead:
//! object_store's local reader zero-fills every buffer before reading into
//! it, which was 4 % of a rebuild's CPU.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use deltalake::parquet::arrow::arrow_reader::ArrowReaderOptions;
use deltalake::parquet::arrow::async_reader::AsyncFileReader;
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

/// Byte ranges of one data file of known size.
pub(crate) struct FileRanges {
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// The file on local disk, when the table is.
    local: Option<PathBuf>,
    size: u64,
    /// What was read so far, shared with the locator.
    stats: Arc<ReadStats>,
}

/// Reads made through [`FileRanges`]: bytes, and calls (each call fetches
/// its ranges at once: one round trip to an object store).
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub bytes: AtomicU64,
    pub calls: AtomicU64,
}

impl FileRanges {
    /// Ranges of `path` (`size` bytes) in `store`; read from local disk when
    /// `local` (the table's root as a local file system) is given.
    pub fn new(
        store: &Arc<dyn ObjectStore>,
        local: Option<&LocalFileSystem>,
        path: &Path,
        size: u64,
        stats: &Arc<ReadStats>,
    ) -> Self {
        Self {
            store: store.clone(),
            path: path.clone(),
            local: local.and_then(|fs| fs.path_to_filesystem(path).ok()),
            size,
            stats: stats.clone(),
        }
    }

    /// `ranges` of the file, in order.
    async fn ranges(&self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>, ParquetError> {
        let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.stats.bytes.fetch_add(n, Ordering::Relaxed);
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let external = |e: Box<dyn std::error::Error + Send + Sync>| ParquetError::External(e);
        match &self.local {
            Some(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || read_local(&file, &ranges))
                    .await
                    .map_err(|e| external(Box::new(e)))?
                    .map_err(|e| external(Box::new(e)))
            }
            None => self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| external(Box::new(e))),
        }
    }
}

/// `ranges` of local file `path`, each read with [`read_exact_at`]; a range
/// past the end is an error naming the file.
fn read_local(path: &std::path::Path, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
    let mut file = std::fs::File::open(path)?;
    ranges
        .iter()
        .map(|r| {
            read_exact_at(&mut file, r.start, r.end.saturating_sub(r.start))
                .map(Bytes::from)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        })
        .collect()
}

/// `len` bytes at `offset` of `file`, read into a buffer of exactly that
/// capacity without zero-filling it first; fewer bytes than `len` is an
/// `UnexpectedEof` error.
pub(crate) fn read_exact_at(
    file: &mut std::fs::File,
    offset: u64,
    len: u64,
) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "range {offset}..{} ends past the file's {} bytes",
                offset + len,
                offset + buf.len() as u64
            ),
        ));
    }
    Ok(buf)
}

impl AsyncFileReader for FileRanges {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<Bytes>> {
        async move {
            let mut got = self.ranges(vec![range]).await?;
            got.pop()
                .ok_or_else(|| ParquetError::General("no bytes for a range".into()))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<Vec<Bytes>>> {
        async move { self.ranges(ranges).await }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, deltalake::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ranges_read_exactly_and_reject_ranges_past_the_end() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        std::fs::write(&path, &data).expect("write");
        let got = read_local(&path, &[5..9, 0..0, 9_000..10_000, 5..9]).expect("read");
        assert_eq!(got[0].as_ref(), &data[5..9]);
        assert!(got[1].is_empty());
        assert_eq!(got[2].as_ref(), &data[9_000..]);
        assert_eq!(got[3], got[0]);
        let err = read_local(&path, &[0..4, 9_990..10_010]).expect_err("past the end");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(
            err.to_string().contains("ends past the file's 10000 bytes"),
            "{err}"
        );
    }
}
