//! A resolved file and how to read it by byte range.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::http::{HttpClient, HttpTarget, RangeSink};
use crate::{ConnectorError, Result};

/// How to read a resolved file.
#[derive(Clone)]
pub enum FileLocation {
    /// Over HTTP with ranged GETs.
    Http(HttpTarget),
    /// From an object store (S3, GCS, local disk).
    Store {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// The object's path in it.
        path: StorePath,
        /// Its ETag as listed (as the store spells it), sent as `If-Match`
        /// with every read.
        e_tag: Option<String>,
    },
}

impl std::fmt::Debug for FileLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(t) => t.fmt(f),
            Self::Store { path, .. } => write!(f, "Store({path})"),
        }
    }
}

/// One file of a resolved source.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    /// Path within the model, checked safe (`model.safetensors`, `onnx/x.onnx`).
    pub file_path: String,
    /// Where it came from, without credentials.
    pub source_uri: String,
    /// Size, when known before download (always known for ranged sources).
    pub size: Option<u64>,
    /// Expected sha256 (hex, lowercase) when the source publishes one.
    pub sha256: Option<String>,
    /// ETag or other version tag of the source object; empty when unknown.
    pub etag: String,
    /// True when the server honours byte ranges.
    pub ranges: bool,
    /// How to read it.
    pub location: FileLocation,
}

impl RemoteFile {
    /// Read `range` into `sink`, with the HTTP client's retries or the object
    /// store's own.
    pub async fn read_range<S: RangeSink>(
        &self,
        http: &HttpClient,
        range: std::ops::Range<u64>,
        sink: &mut S,
    ) -> Result<()> {
        match &self.location {
            FileLocation::Http(t) => http.fetch_range(t, range, sink).await,
            FileLocation::Store { store, path, e_tag } => {
                if range.is_empty() {
                    return Ok(());
                }
                let options = object_store::GetOptions {
                    range: Some(range.clone().into()),
                    // A version other than the one listed is refused by the
                    // store (S3: 412; local disk: inode, mtime and size).
                    if_match: e_tag.clone(),
                    ..Default::default()
                };
                let read = async { store.get_opts(path, options).await?.bytes().await };
                let bytes: Bytes = read.await.map_err(|source| match source {
                    object_store::Error::Precondition { .. } => ConnectorError::Changed {
                        url: self.source_uri.clone(),
                        listed: self.etag.clone(),
                        now: "another".into(),
                    },
                    source => ConnectorError::ObjectStore {
                        url: self.source_uri.clone(),
                        source,
                    },
                })?;
                if bytes.len() as u64 != range.end - range.start {
                    return Err(ConnectorError::Verify {
                        url: self.source_uri.clone(),
                        what: "range length",
                        expected: (range.end - range.start).to_string(),
                        actual: bytes.len().to_string(),
                    });
                }
                sink.write_owned(range.start, bytes)
                    .await
                    .map_err(|source| ConnectorError::Io {
                        path: self.source_uri.clone(),
                        source,
                    })
            }
        }
    }

    /// Fail with [`ConnectorError::Changed`] when the file is no longer the
    /// version listed: called once every range has been read, it closes the
    /// window in which a file rewritten during its last range would be kept
    /// as a mix of two versions. A file with a published sha256 needs no
    /// check (the hash finds any change).
    pub async fn check_unchanged(&self, http: &HttpClient) -> Result<()> {
        if self.sha256.is_some() {
            return Ok(());
        }
        let changed = |now: Option<String>| ConnectorError::Changed {
            url: self.source_uri.clone(),
            listed: self.etag.clone(),
            now: now.unwrap_or_else(|| "none".into()),
        };
        match &self.location {
            FileLocation::Http(t) => {
                let Some(listed) = &t.version else {
                    return Ok(());
                };
                let now = http.probe(t).await?;
                if !listed.admits(&now.pin) {
                    return Err(changed(now.pin.tag));
                }
                Ok(())
            }
            FileLocation::Store { store, path, e_tag } => {
                let meta =
                    store
                        .head(path)
                        .await
                        .map_err(|source| ConnectorError::ObjectStore {
                            url: self.source_uri.clone(),
                            source,
                        })?;
                if (e_tag.is_some() && meta.e_tag != *e_tag) || Some(meta.size) != self.size {
                    return Err(changed(meta.e_tag.map(|t| t.trim_matches('"').to_string())));
                }
                Ok(())
            }
        }
    }
}
