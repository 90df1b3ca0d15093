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
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use tracing::warn;
use url::Url;
use weightlake_connectors::storage::parse_location;

use crate::lake::Lake;
use crate::sql::LakeSession;
use crate::view::{Manifest, ModelView};
use crate::{JobError, Result};

mod destination;
mod upload;

pub use destination::overlaps_lake;
use destination::{
    linked_parent, marker_json, marker_key, others_in, refuse_lake_overlap,
    remove_staged_leftovers, replaced_since,
};
pub use upload::settle_uploads;
pub(crate) use upload::{Rebuilt, rebuild};

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
    gold: Option<serde_json::Value>,
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
            gold: None,
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
            gold: None,
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
            let body = marker_json(
                &report.exported,
                self.gold.as_ref(),
                &model_id,
                &revision,
                &report,
            )?;
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
            let mut job = Self::manifest(lake, v.manifest.clone()).described_as(label.clone());
            // For machines reading the completion marker: the version, and
            // the commit sha `serve` gives it.
            job.gold = Some(serde_json::json!({
                "name": v.name,
                "version": v.version,
                "manifest_sha256": v.manifest_sha256,
                "commit": v.commit(),
            }));
            return Ok((job, label));
        }
        let (m, r) = crate::tensorise::parse_model_ref(reference)?;
        let label = format!("silver {m}@{r}");
        Ok((Self::new(lake, m, r).described_as(label.clone()), label))
    }
}
