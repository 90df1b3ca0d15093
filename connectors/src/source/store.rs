//! Object store prefixes (`s3://`, `gs://`, `file://`) and single objects.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::{
    FileLocation, RemoteFile, ResolveContext, ResolvedSource, default_revision, last_segment,
};
use crate::paths::{PathFilter, is_export_record, is_git_path, safe_relative_path};
use crate::{ConnectorError, Result};

/// The object whose key `url` is, as a one-file source named by its parent
/// prefix; `None` when there is no such object.
pub(super) async fn single_object(
    ctx: &ResolveContext,
    url: &Url,
) -> Result<Option<ResolvedSource>> {
    let Some(name) = last_segment(url) else {
        return Ok(None);
    };
    let mut parent = url.clone();
    if let Ok(mut segments) = parent.path_segments_mut() {
        segments.pop_if_empty().pop();
    }
    let (store, prefix) = ctx.storage.object_store(&parent)?;
    let key = format!("{}/{name}", prefix.as_ref().trim_end_matches('/'));
    let key = StorePath::parse(key.trim_start_matches('/'))
        .map_err(|e| ConnectorError::invalid("source", url.as_str(), e.to_string()))?;
    let meta = match store.head(&key).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(ConnectorError::ObjectStore {
                url: url.to_string(),
                source,
            });
        }
    };
    let file_path = safe_relative_path(&name, url.as_str())?;
    let source_uri = url.as_str().trim_end_matches('/').to_string();
    let file = store_file(store, &meta, source_uri, file_path);
    Ok(Some(ResolvedSource {
        default_model_id: last_segment(&parent)
            .unwrap_or_else(|| parent.host_str().unwrap_or("model").to_string()),
        default_revision: default_revision(),
        files: vec![file],
        root: None,
        unreadable: Vec::new(),
    }))
}

/// The prefix of the `source_uri` of every file [`list_store`] lists under `url`.
pub(super) fn listing_root(url: &Url) -> String {
    format!("{}/", url.as_str().trim_end_matches('/'))
}

pub(super) async fn list_store(
    store: Arc<dyn ObjectStore>,
    prefix: &StorePath,
    url: &Url,
    filter: &PathFilter,
) -> Result<(Vec<RemoteFile>, Vec<(String, String)>)> {
    let base = url.as_str().trim_end_matches('/').to_string();
    // A name that cannot be an object path (a newline in it) ends
    // object_store's listing there, so it fails the source rather than
    // silently dropping the files listed after it.
    let metas: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|source| ConnectorError::ObjectStore {
            url: base.clone(),
            source,
        })?;
    let mut skipped = Vec::new();
    let markers = folder_markers(&store, url, &metas).await;
    let prefix_str = prefix.as_ref();
    let mut files = Vec::new();
    for m in metas {
        let full = m.location.as_ref();
        let rel = full
            .strip_prefix(prefix_str)
            .unwrap_or(full)
            .trim_start_matches('/');
        if rel.is_empty() || !filter.matches(rel) {
            continue;
        }
        if markers.contains(&m.location) {
            tracing::debug!(path = rel, "skipping a folder marker");
            continue;
        }
        if is_git_path(rel) {
            // A clone's repository data (hooks, objects, a second copy of
            // every LFS file) is not the model; a hub never lists it.
            tracing::debug!(path = rel, "skipping git metadata");
            continue;
        }
        if is_export_record(rel) {
            // An export's (or a Spark job's) record that the directory is
            // complete, not a file of the model.
            tracing::debug!(path = rel, "skipping a completion marker");
            continue;
        }
        let file_path = match safe_relative_path(rel, &base) {
            Ok(p) => p,
            Err(e) => {
                // Fails as a file would (named, and holding back removals),
                // as in a local directory.
                skipped.push((rel.to_string(), e.to_string()));
                continue;
            }
        };
        let source_uri = format!("{base}/{file_path}");
        files.push(store_file(store.clone(), &m, source_uri, file_path));
    }
    Ok((files, skipped))
}

/// The empty objects of a bucket listing that are folder markers: keys
/// ending in `/` (the S3 console's "Create folder", Hadoop, rclone), which
/// object_store lists without their slash, so that `run/dir/` looks like an
/// empty file `run/dir` that no GET finds. An empty listed object that a HEAD
/// of its listed name does not find is one.
async fn folder_markers(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    metas: &[object_store::ObjectMeta],
) -> std::collections::HashSet<StorePath> {
    let mut markers = std::collections::HashSet::new();
    if url.scheme() == "file" {
        return markers;
    }
    for m in metas.iter().filter(|m| m.size == 0) {
        if let Err(object_store::Error::NotFound { .. }) = store.head(&m.location).await {
            markers.insert(m.location.clone());
        }
    }
    markers
}

/// The object `meta` describes in `store`, as a file to ingest.
pub(super) fn store_file(
    store: Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
    source_uri: String,
    file_path: String,
) -> RemoteFile {
    RemoteFile {
        source_uri,
        file_path,
        size: Some(meta.size),
        sha256: None,
        etag: meta
            .e_tag
            .as_deref()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        ranges: true,
        location: FileLocation::Store {
            store,
            path: meta.location.clone(),
            e_tag: meta.e_tag.clone().filter(|t| !t.is_empty()),
        },
    }
}
