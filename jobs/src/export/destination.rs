//! What an export's destination holds: its completion marker, files other
//! exports wrote, files not of this export, and leftovers of stopped ones.

use futures::StreamExt;
use object_store::path::Path as StorePath;
use tracing::info;
use url::Url;

use super::{COMPLETE_MARKER, Destination, EXPORT_LOCK, ExportReport, OTHERS_LISTED};
use crate::{JobError, Result};

/// The files of `written` (path -> the version this export wrote) that the
/// destination now holds in another version, or no longer holds.
pub(super) async fn replaced_since(
    dest: &Destination,
    written: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    if written.is_empty() {
        return Vec::new();
    }
    let (store, prefix, _) = dest;
    let base = prefix.as_ref().trim_end_matches('/');
    let mut now = std::collections::BTreeMap::new();
    let mut listing = store.list(Some(prefix));
    while let Some(meta) = listing.next().await {
        let Ok(meta) = meta else { continue };
        let key = meta.location.as_ref();
        let rel = key
            .strip_prefix(base)
            .unwrap_or(key)
            .trim_start_matches('/')
            .to_string();
        if written.contains_key(&rel) {
            now.insert(rel, meta.e_tag);
        }
    }
    written
        .iter()
        .filter(|(rel, tag)| now.get(*rel).and_then(|t| t.as_ref()) != Some(*tag))
        .map(|(rel, _)| rel.clone())
        .collect()
}

/// Where the completion marker of a destination lives.
pub(super) fn marker_key(dest: &Destination) -> StorePath {
    dest.1.clone().join(COMPLETE_MARKER)
}

/// The completion marker's content.
pub(super) fn marker_json(
    label: &str,
    gold: Option<&serde_json::Value>,
    model_id: &str,
    revision: &str,
    report: &ExportReport,
) -> Result<String> {
    let files: Vec<serde_json::Value> = report
        .checked
        .iter()
        .map(|(path, sha)| serde_json::json!({ "path": path, "sha256": sha }))
        .collect();
    let body = serde_json::json!({
        "exported": label,
        "gold": gold,
        "model_id": model_id,
        "revision": revision,
        "files": files,
        "bytes": report.bytes,
        "missing_shards": report.missing,
        "exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "weightlake": env!("CARGO_PKG_VERSION"),
    });
    serde_json::to_string_pretty(&body)
        .map(|s| s + "\n")
        .map_err(|e| JobError::Invalid(format!("completion marker: {e}")))
}

/// Deleting "files not part of the model" under a destination that holds
/// the lake, or inside the lake, would delete the lake.
/// Local paths are compared as the file system resolves them (symbolic
/// links followed), so no link leads around the check.
pub(super) fn refuse_lake_overlap(lake: &Url, dest: &Url) -> Result<()> {
    if overlaps_lake(lake, dest) {
        return Err(JobError::Invalid(format!(
            "refusing to delete other files under {dest}: it holds the lake {lake} or lies inside it"
        )));
    }
    Ok(())
}

/// Whether the destination `dest` holds the lake at `lake` or lies inside
/// it (where deleting "files not part of the model" would delete the lake).
/// Local paths are compared as the file system resolves them.
pub fn overlaps_lake(lake: &Url, dest: &Url) -> bool {
    let dir = |u: &Url| {
        let resolved = u
            .to_file_path()
            .ok()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .map(|p| format!("file://{}", p.display()));
        format!(
            "{}/",
            resolved
                .as_deref()
                .unwrap_or(u.as_str())
                .trim_end_matches('/')
        )
    };
    let (lake_dir, dest_dir) = (dir(lake), dir(dest));
    lake_dir.starts_with(&dest_dir) || dest_dir.starts_with(&lake_dir)
}

/// The first directory of `path` under `dir` that exists as a symbolic link.
pub(super) fn linked_parent(dir: &std::path::Path, path: &str) -> Option<std::path::PathBuf> {
    let mut at = dir.to_path_buf();
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop(); // the file itself is replaced, never written through
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Remove object_store's staging files (`NAME#N`) that an interrupted export
/// left beside the files of this one (a local multipart upload stages into
/// `NAME#N` and renames it at the end; a killed process leaves it).
pub(super) fn remove_staged_leftovers<'a>(
    dir: &std::path::Path,
    paths: impl Iterator<Item = &'a String>,
) {
    // The files of this export by directory: one listing per directory.
    let mut names: std::collections::BTreeMap<
        std::path::PathBuf,
        std::collections::HashSet<String>,
    > = Default::default();
    for path in paths {
        let target = dir.join(path);
        if let (Some(parent), Some(name)) = (target.parent(), target.file_name()) {
            let name = name.to_string_lossy().into_owned();
            names.entry(parent.to_path_buf()).or_default().insert(name);
        }
    }
    for (parent, ours) in names {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let staged = n.rsplit_once('#').is_some_and(|(name, k)| {
                ours.contains(name) && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())
            });
            if staged && std::fs::remove_file(e.path()).is_ok() {
                info!(file = %e.path().display(), "removed a partial file left by an interrupted export");
            }
        }
    }
}

/// Files under the destination that are not among `ours` (relative name
/// and key, sorted), from at most [`OTHERS_LISTED`] listed entries. A
/// listing that fails counts as none.
pub(super) async fn others_in(
    dest: &Destination,
    ours: &std::collections::BTreeSet<String>,
) -> Vec<(String, StorePath)> {
    let (store, prefix, _) = dest;
    let base = prefix.as_ref().trim_end_matches('/');
    let listed: Vec<_> = store
        .list(Some(prefix))
        .take(OTHERS_LISTED)
        .filter_map(|m| async move { m.ok() })
        .collect()
        .await;
    let mut others: Vec<(String, StorePath)> = listed
        .into_iter()
        .map(|m| {
            let key = m.location.as_ref();
            let rel = key
                .strip_prefix(base)
                .unwrap_or(key)
                .trim_start_matches('/')
                .to_string();
            (rel, m.location)
        })
        .filter(|(rel, _)| !ours.contains(rel) && rel != COMPLETE_MARKER && rel != EXPORT_LOCK)
        .collect();
    others.sort();
    others
}
