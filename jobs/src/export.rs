//! Rebuild a model's files from silver, bit for bit, to a directory or an
//! object store prefix, or only check that they would rebuild (`verify`).
//!
//! What is rebuilt is a [`ModelView`]: the newest silver rows of a model
//! revision, or exactly the rows a gold manifest pins. Each file streams part by
//! part (memory stays at a few content parts per file in flight, whatever the
//! file size) into a multipart upload; its sha256 must equal the source's, or the
//! upload is aborted and the export fails.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};
use url::Url;
use weightlake_connectors::storage::parse_location;

use crate::lake::Lake;
use crate::sql::LakeSession;
use crate::view::{Manifest, ModelView, ViewFile};
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
    /// Files already in the destination that are not files of this model
    /// (left as they are; at most [`OTHERS_SHOWN`] named), and how many.
    pub others: Vec<String>,
    /// How many such files the destination holds (listing at most
    /// [`OTHERS_LISTED`] entries).
    pub others_count: usize,
    /// Shards an index of the model names that it does not have (an
    /// incomplete checkpoint: exported as it is).
    pub missing: Vec<String>,
    /// Files deleted from the destination because they are not part of the
    /// model ([`ExportJob::delete_others`]).
    pub others_deleted: usize,
    /// Whether deleting them was asked for (what `others` still holds is
    /// then behind symbolic links, or failed to delete).
    pub delete_others: bool,
    /// For a silver revision: paths bronze holds newer states of (ingested
    /// or removed since the last tensorise) that this export does not
    /// reflect.
    pub not_tensorised: Vec<String>,
    /// The completion marker written last ([`COMPLETE_MARKER`] under the
    /// destination), or `None` (verify, or a model with a file of that name).
    pub marker: Option<String>,
    /// What was exported: `gold NAME:VERSION (MODEL@REV)` or `silver MODEL@REV`.
    pub exported: String,
}

/// The file an export writes under its destination once every file of the
/// model is written and verified (and, when asked, the other files
/// deleted), and deletes before it writes the first: a destination holds a
/// complete export exactly while it holds this file. Its content is JSON
/// naming what was exported and every file's sha256. The name is the one
/// Spark and Hadoop jobs write and their consumers wait for; ingest skips it.
pub use weightlake_connectors::paths::{COMPLETE_MARKER, EXPORT_LOCK};

/// Names of unrelated destination files an [`ExportReport`] keeps.
pub const OTHERS_SHOWN: usize = 10;
/// Destination entries an export lists when looking for unrelated files.
pub const OTHERS_LISTED: usize = 10_000;

/// Which rows to rebuild.
#[derive(Debug, Clone)]
enum Selection {
    Latest { model_id: String, revision: String },
    Pinned(Box<Manifest>),
}

/// Builder of an export; `.await` it.
#[must_use = "an ExportJob does nothing until awaited"]
pub struct ExportJob {
    lake: Lake,
    selection: Selection,
    to: Option<String>,
    concurrency: usize,
    delete_others: bool,
    label: Option<String>,
}

impl ExportJob {
    /// Export the newest silver rows of `model_id@revision`; without
    /// [`ExportJob::to`], only verify.
    pub fn new(lake: Lake, model_id: impl Into<String>, revision: impl Into<String>) -> Self {
        Self {
            lake,
            selection: Selection::Latest {
                model_id: model_id.into(),
                revision: revision.into(),
            },
            to: None,
            concurrency: 4,
            delete_others: false,
            label: None,
        }
    }

    /// Export exactly the files a manifest (e.g. a gold version's) pins.
    pub fn manifest(lake: Lake, manifest: Manifest) -> Self {
        Self {
            lake,
            selection: Selection::Pinned(Box::new(manifest)),
            to: None,
            concurrency: 4,
            delete_others: false,
            label: None,
        }
    }

    /// Write the files under this directory or `s3://`/`gs://`/`file://` prefix.
    pub fn to(mut self, dest: impl Into<String>) -> Self {
        self.to = Some(dest.into());
        self
    }

    /// Once every file is written and verified, delete the destination's
    /// files that are not part of the model (an earlier version's shards,
    /// staging leftovers), so the destination holds exactly the model.
    /// Refused for a destination that holds the lake or lies inside it.
    pub fn delete_others(mut self, on: bool) -> Self {
        self.delete_others = on;
        self
    }

    /// What the completion marker says was exported (e.g. `gold NAME:3
    /// (MODEL@main)`); by default the model revision.
    pub fn described_as(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
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

/// Where an export writes: the store, the prefix in it, and its URL.
pub(crate) type Destination = (Arc<dyn ObjectStore>, StorePath, Url);

impl ExportJob {
    async fn run(self) -> Result<ExportReport> {
        let started = Instant::now();
        let session = Arc::new(LakeSession::new(&self.lake).await?);
        let view = match &self.selection {
            Selection::Latest { model_id, revision } => {
                ModelView::latest(&session, model_id, revision).await?
            }
            Selection::Pinned(m) => ModelView::pinned(&session, m).await?,
        };
        let missing = view.missing_shards(&session).await?;
        // A silver revision (not a gold version, which is fixed): bronze may
        // already hold a newer state that tensorise has not stored.
        let not_tensorised = match &self.selection {
            Selection::Latest { model_id, revision } => {
                crate::tensorise::not_tensorised(&session, model_id, revision).await?
            }
            Selection::Pinned(_) => Vec::new(),
        };
        let dest: Option<Destination> = match &self.to {
            Some(d) => {
                let url = parse_location(d)?;
                if let Ok(p) = url.to_file_path() {
                    std::fs::create_dir_all(&p).map_err(|e| {
                        JobError::Invalid(format!("cannot create {}: {e}", p.display()))
                    })?;
                }
                if self.delete_others {
                    refuse_lake_overlap(self.lake.root(), &url)?;
                }
                // A directory where a local file should go would fail only at
                // its final rename, after the file (and others, in flight
                // beside it) were staged: refuse before writing anything.
                if let Ok(dir) = url.to_file_path()
                    && let Some(p) = view
                        .files
                        .keys()
                        .map(|path| dir.join(path))
                        .find(|p| p.is_dir())
                {
                    return Err(JobError::Invalid(format!(
                        "{} is a directory where an exported file goes; remove it or export elsewhere",
                        p.display()
                    )));
                }
                // A symbolic link to a directory inside the destination
                // would take the file outside it (`1_Pooling -> /elsewhere`).
                if let Ok(dir) = url.to_file_path()
                    && let Some(link) = view.files.keys().find_map(|path| linked_parent(&dir, path))
                {
                    return Err(JobError::Invalid(format!(
                        "{} is a symbolic link where an exported directory goes; remove it or export elsewhere",
                        link.display()
                    )));
                }
                if let Ok(dir) = url.to_file_path() {
                    let marker = COMPLETE_MARKER.to_string();
                    remove_staged_leftovers(&dir, view.files.keys().chain([&marker]));
                }
                let (store, prefix) = self.lake.storage().object_store(&url)?;
                Some((store, prefix, url))
            }
            None => None,
        };
        let ours: std::collections::BTreeSet<String> = view.files.keys().cloned().collect();
        // One export writes into a destination at a time: a second waits
        // (another's files beside this one's marker would be vouched for).
        let run_id = uuid::Uuid::new_v4().to_string();
        let lock = match &dest {
            Some(d) => Some(
                crate::lock::wait_for_at(
                    d.0.clone(),
                    d.1.clone().join(EXPORT_LOCK),
                    &format!("export to {}", d.2),
                    &run_id,
                )
                .await?,
            ),
            None => None,
        };
        // A model with a file of the marker's name keeps it; no marker then.
        let marker = match &dest {
            Some(d) if !ours.contains(COMPLETE_MARKER) => {
                let key = marker_key(d);
                // From here on the destination changes: it is no longer a
                // complete export until this one ends.
                match d.0.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(JobError::Failed(format!(
                            "cannot delete the completion marker {}/{COMPLETE_MARKER}: {e}",
                            d.2.as_str().trim_end_matches('/')
                        )));
                    }
                }
                Some(key)
            }
            _ => None,
        };
        let (model_id, revision) = (view.model_id.clone(), view.revision.clone());
        let dest = Arc::new(dest);
        // Every file runs to its end, so a failed one does not drop the
        // uploads beside it half-staged (each aborts its own on failure).
        let outcomes: Vec<Result<Rebuilt>> = futures::stream::iter(view.files.into_values())
            .map(|f| {
                let (session, dest) = (session.clone(), dest.clone());
                async move { rebuild(&session, &f, dest.as_ref().as_ref()).await }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut results = Vec::with_capacity(outcomes.len());
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok(r) => results.push(r),
                Err(e) if first_error.is_none() => first_error = Some(e),
                Err(e) => warn!(error = %e, "export of another file failed too"),
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut report = ExportReport {
            missing,
            not_tensorised,
            delete_others: self.delete_others,
            ..Default::default()
        };
        if let Some(d) = dest.as_ref() {
            let mut others = others_in(d, &ours).await;
            if self.delete_others {
                let local = d.2.to_file_path().ok();
                let mut behind_links = Vec::new();
                let mut undeleted: Vec<String> = Vec::new();
                for (rel, key) in std::mem::take(&mut others) {
                    // A listing walks into linked directories; deleting there
                    // would delete outside the destination.
                    if let Some(link) = local.as_deref().and_then(|dir| linked_parent(dir, &rel)) {
                        behind_links.push(link);
                        others.push((rel, key));
                        continue;
                    }
                    match d.0.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                            report.others_deleted += 1
                        }
                        Err(e) => {
                            warn!(file = %rel, error = %e, "could not delete a file that is not part of the model");
                            undeleted.push(format!("{rel}: {e}"));
                            others.push((rel, key));
                        }
                    }
                }
                // Asked to hold exactly the model, the destination does not:
                // a failure, and no completion marker.
                if let Some(first) = undeleted.first() {
                    return Err(JobError::Failed(format!(
                        "every file was written, but {} other file(s) could not be deleted \
                         (first: {first}), so the destination is not marked complete",
                        undeleted.len()
                    )));
                }
                behind_links.sort();
                behind_links.dedup();
                if let Some(first) = behind_links.first() {
                    warn!(
                        links = behind_links.len(),
                        first = %first.display(),
                        "not deleting files behind symbolic links in the destination"
                    );
                }
                others.sort();
            }
            report.others_count = others.len();
            report.others = others
                .into_iter()
                .take(OTHERS_SHOWN)
                .map(|(rel, _)| rel)
                .collect();
        }
        report.elapsed = started.elapsed();
        let mut written_tags = std::collections::BTreeMap::new();
        for (path, sha, n, tag) in results {
            report.files += 1;
            report.bytes += n;
            if let Some(tag) = tag {
                written_tags.insert(path.clone(), tag);
            }
            report.checked.push((path, sha));
        }
        report.checked.sort();
        report.exported = self
            .label
            .unwrap_or_else(|| format!("silver {model_id}@{revision}"));
        if let (Some(d), Some(key)) = (dest.as_ref(), marker) {
            // Another export into the same destination may have replaced
            // files of this one since: then it holds no whole export.
            let replaced = replaced_since(d, &written_tags).await;
            if let Some(first) = replaced.first() {
                return Err(JobError::Failed(format!(
                    "{} file(s) under {} were replaced while this export ran (first: {first}): \
                     another export or writer uses this destination, so it is not marked complete",
                    replaced.len(),
                    d.2.as_str().trim_end_matches('/')
                )));
            }
            let body = marker_json(&report.exported, &model_id, &revision, &report)?;
            d.0.put(&key, body.into_bytes().into()).await.map_err(|e| {
                JobError::Failed(format!(
                    "every file was written, but the completion marker could not be: {e}"
                ))
            })?;
            report.marker = Some(format!(
                "{}/{COMPLETE_MARKER}",
                d.2.as_str().trim_end_matches('/')
            ));
        }
        if let Some(lock) = lock {
            lock.release().await;
        }
        Ok(report)
    }
}

/// The files of `written` (path -> the version this export wrote) that the
/// destination now holds in another version, or no longer holds.
async fn replaced_since(
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
fn marker_key(dest: &Destination) -> StorePath {
    dest.1.clone().join(COMPLETE_MARKER)
}

/// The completion marker's content.
fn marker_json(
    label: &str,
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
fn refuse_lake_overlap(lake: &Url, dest: &Url) -> Result<()> {
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
fn linked_parent(dir: &std::path::Path, path: &str) -> Option<std::path::PathBuf> {
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
fn remove_staged_leftovers<'a>(dir: &std::path::Path, paths: impl Iterator<Item = &'a String>) {
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
async fn others_in(
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

/// Uploads being completed, which a stopped command waits for.
static FINISHING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Woken when an upload completes.
static FINISHED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One upload being completed, counted in [`FINISHING`] while it lives.
struct Finishing;

impl Finishing {
    fn start() -> Self {
        FINISHING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Finishing
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        FINISHING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        FINISHED.notify_waiters();
    }
}

/// Wait (at most `limit`) for uploads that were being completed when their
/// export was stopped: an object store's multipart upload cut off in its
/// last step stays pending, invisible and billed. Returns how many were
/// still running at the limit.
pub async fn settle_uploads(limit: Duration) -> usize {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let notified = FINISHED.notified();
        let left = FINISHING.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            return 0;
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return FINISHING.load(std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// An upload to the destination, aborted if it is dropped unfinished (the
/// export was stopped: Ctrl-C, SIGTERM, a stage timeout), so no multipart
/// upload is left pending on an object store and no staging file on disk.
struct Upload(Option<BufWriter>);

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut w) = self.0.take() else {
            return;
        };
        crate::on_drop::finish(async move {
            let _ = w.abort().await;
        });
    }
}

/// One file rebuilt: its path, sha256, size, and the version (ETag) the
/// destination held once it was written.
pub(crate) type Rebuilt = (String, String, u64, Option<String>);

/// Rebuild one file, hashing as it goes; upload it when `dest` is set. Fails
/// unless the bytes rebuilt have the file's size and sha256.
pub(crate) async fn rebuild(
    session: &LakeSession,
    f: &ViewFile,
    dest: Option<&Destination>,
) -> Result<Rebuilt> {
    let path = &f.entry.path;
    // `parse`, not `from`: the key is the file's path as it is (`from`
    // percent-encodes `#`, `%` and every non-ASCII character into the name).
    let key =
        match dest {
            Some((_, prefix, _)) => {
                let key = format!("{}/{}", prefix.as_ref().trim_end_matches('/'), path);
                Some(StorePath::parse(key.trim_start_matches('/')).map_err(|e| {
                    JobError::Invalid(format!("{path}: not a valid object path: {e}"))
                })?)
            }
            None => None,
        };
    let mut writer = Upload(match (dest, &key) {
        (Some((store, _, _)), Some(key)) => Some(BufWriter::new(store.clone(), key.clone())),
        _ => None,
    });
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut reader = f.reader(session, 0..f.entry.size);
    let result: Result<()> = async {
        while let Some(bytes) = reader.next().await? {
            hasher.update(&bytes);
            written += bytes.len() as u64;
            if let Some(w) = writer.0.as_mut() {
                w.write_all(&bytes)
                    .await
                    .map_err(|e| JobError::Failed(format!("{path}: write failed: {e}")))?;
            }
        }
        Ok(())
    }
    .await;
    let sha = hex::encode(hasher.finalize());
    let failure = match result {
        Err(e) => Some(e),
        Ok(()) if sha != f.entry.sha256 || written != f.entry.size => {
            Some(JobError::Corrupt(format!(
                "{path}: rebuilt {written} bytes with sha256 {sha}, expected {} bytes with {}",
                f.entry.size, f.entry.sha256
            )))
        }
        Ok(()) => None,
    };
    if let Some(e) = failure {
        if let Some(mut w) = writer.0.take() {
            let _ = w.abort().await;
        }
        return Err(e);
    }
    if let Some(mut w) = writer.0.take() {
        // Past this point an upload cannot be aborted (object_store's
        // `BufWriter` cannot abort once shutdown has begun), so it finishes
        // on a task of its own even if this export is stopped; a stopped
        // command waits for such uploads ([`settle_uploads`]).
        let finishing = Finishing::start();
        let done = tokio::spawn(async move {
            let r = w.shutdown().await;
            drop(finishing);
            r
        });
        // A failed upload is a failed job, not bad input.
        done.await
            .map_err(|e| JobError::Failed(format!("{path}: {e}")))?
            .map_err(|e| JobError::Failed(format!("{path}: upload failed: {e}")))?;
    }
    // The version the destination now holds, to tell before marking the
    // export complete whether another writer replaced it since.
    let e_tag = match (dest, &key) {
        (Some((store, _, _)), Some(key)) => store.head(key).await.ok().and_then(|m| m.e_tag),
        _ => None,
    };
    info!(file = %path, bytes = written, "rebuilt and verified");
    Ok((path.clone(), sha, written, e_tag))
}

impl ExportJob {
    /// An export of what `reference` names: a gold model (`NAME`, `NAME:VERSION`,
    /// `NAME@ALIAS`) when gold has that name, else silver `MODEL@REVISION`.
    /// Returns the job and a label saying which it picked.
    pub async fn for_reference(lake: Lake, reference: &str) -> Result<(Self, String)> {
        let state = crate::gold::GoldState::load(&lake, None).await?;
        let parsed = reference.parse::<crate::gold::GoldRef>();
        // A gold name with a broken version or alias is that mistake, not a
        // silver MODEL@REVISION to look for.
        let name = reference.split(['@', ':']).next().unwrap_or_default();
        if let Err(e) = &parsed
            && state.versions.contains_key(name)
        {
            return Err(JobError::Invalid(e.to_string()));
        }
        if let Ok(r) = parsed
            && state.versions.contains_key(&r.name)
        {
            let v = state.resolve(&r)?;
            let label = format!(
                "gold {}:{} ({}@{})",
                v.name, v.version, v.model_id, v.revision
            );
            let job = Self::manifest(lake, v.manifest.clone()).described_as(label.clone());
            return Ok((job, label));
        }
        let (m, r) = crate::tensorise::parse_model_ref(reference)?;
        let label = format!("silver {m}@{r}");
        Ok((Self::new(lake, m, r).described_as(label.clone()), label))
    }
}
