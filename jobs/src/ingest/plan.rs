//! What an ingest would do now, without doing it: the sources listed and
//! compared with `bronze.files` (for `weightlake plan` and cost estimates).

use weightlake_connectors::http::HttpClient;
use weightlake_connectors::paths::PathFilter;
use weightlake_connectors::source::{ResolveContext, SourceSpec};
use weightlake_schemas::bronze;

use super::removed::Listings;
use super::state::BronzeState;
use super::{FileTask, IngestJob, check_id};
use crate::Result;
use crate::sql::LakeSession;

/// What an ingest would do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestPlan {
    /// Files the sources list (in this shard).
    pub files_total: usize,
    /// Of those, files already complete in bronze.
    pub files_present: usize,
    /// Bytes of the files still to ingest (those with a known size).
    pub bytes_to_ingest: u64,
    /// Files still to ingest whose size the source does not announce.
    pub files_of_unknown_size: usize,
    /// Files bronze has for a revision that its source no longer lists
    /// (`MODEL@REVISION/PATH`, sorted): the run records them as removed.
    pub files_to_remove: Vec<String>,
    /// Entries of the listings that cannot be read as files (`PATH: why`):
    /// each would fail, and while any does, nothing is removed.
    pub unreadable: Vec<String>,
}

impl IngestPlan {
    /// Files still to ingest.
    pub fn files_to_ingest(&self) -> usize {
        self.files_total - self.files_present
    }
}

impl IngestJob {
    /// List the sources and compare them with bronze: what `.await` would
    /// download now. Reads only; creates no table.
    pub async fn plan(self) -> Result<IngestPlan> {
        let http = HttpClient::new(self.download.clone())?;
        let (tasks, listings, unreadable) = self.resolve_tasks(&http).await?;
        let mut plan = IngestPlan {
            files_total: tasks.len(),
            unreadable: unreadable
                .into_iter()
                .map(|(path, why)| format!("{path}: {why}"))
                .collect(),
            ..Default::default()
        };
        let present: Vec<bool> = if self.lake.open(bronze::FILES).await?.is_some()
            && self.lake.open(bronze::MODEL_FILES).await?.is_some()
        {
            let session = LakeSession::new(&self.lake).await?;
            let state = BronzeState::load(&session, &listings.model_ids()).await?;
            plan.files_to_remove = listings
                .compare(&state, self.shard)
                .removed
                .iter()
                .map(|r| format!("{}@{}/{}", r.model_id, r.revision, r.file_path))
                .collect();
            tasks
                .iter()
                .map(|t| state.is_complete(&t.model_id, &t.revision, &t.file))
                .collect()
        } else {
            vec![false; tasks.len()]
        };
        if !plan.unreadable.is_empty() {
            plan.files_to_remove.clear();
        }
        for (t, done) in tasks.iter().zip(present) {
            match (done, t.file.size) {
                (true, _) => plan.files_present += 1,
                (false, Some(size)) => plan.bytes_to_ingest += size,
                (false, None) => plan.files_of_unknown_size += 1,
            }
        }
        Ok(plan)
    }

    /// The files of every source that this shard owns, with their model id
    /// and revision, and what the sources list in every shard.
    pub(super) async fn resolve_tasks(
        &self,
        http: &HttpClient,
    ) -> Result<(Vec<FileTask>, Listings, Vec<(String, String)>)> {
        let ctx = ResolveContext {
            http: http.clone(),
            storage: self.lake.storage().clone(),
            hf_token: self.hf_token.clone(),
        };
        let mut tasks = Vec::new();
        let mut listings = Listings::default();
        // Entries a listing could not take as files: each fails as a file.
        let mut unreadable = Vec::new();
        for spec in &self.sources {
            let filter = listing_filter(spec)?;
            let resolved = spec.resolve(&ctx).await?;
            let model_id = self
                .model_id
                .clone()
                .unwrap_or_else(|| resolved.default_model_id.clone());
            let revision = self
                .revision
                .clone()
                .unwrap_or_else(|| resolved.default_revision.clone());
            check_id("model id", &model_id)?;
            check_id("revision", &revision)?;
            listings.add(&model_id, &revision, &resolved, filter);
            for (path, why) in &resolved.unreadable {
                if self.shard.owns(&[&model_id, &revision, path]) {
                    unreadable.push((path.clone(), why.clone()));
                }
            }
            for file in resolved.files {
                if self.shard.owns(&[&model_id, &revision, &file.file_path]) {
                    tasks.push(FileTask {
                        model_id: model_id.clone(),
                        revision: revision.clone(),
                        root: resolved.root.clone(),
                        file,
                        upload: None,
                    });
                }
            }
        }
        refuse_ambiguous_paths(&tasks)?;
        Ok((tasks, listings, unreadable))
    }
}

/// A revision cannot hold both a file `a` and a file `a/b`: no file system
/// (and no export) can. Nor can it hold one path twice (two sources of one
/// revision listing the same file, or a hub listing naming it twice): which
/// copy would the revision have? Refused before anything is downloaded.
fn refuse_ambiguous_paths(tasks: &[FileTask]) -> Result<()> {
    let mut paths: std::collections::BTreeMap<(&str, &str, &str), &FileTask> = Default::default();
    for t in tasks {
        let key = (
            t.model_id.as_str(),
            t.revision.as_str(),
            t.file.file_path.as_str(),
        );
        if let Some(first) = paths.insert(key, t) {
            return Err(crate::JobError::Invalid(format!(
                "{}@{} is listed twice as `{}` (from {} and {}); a revision holds one file per \
                 path (use include/exclude or separate model ids)",
                key.0, key.1, key.2, first.file.source_uri, t.file.source_uri
            )));
        }
    }
    for &(m, r, p) in paths.keys() {
        let dir = format!("{p}/");
        if let Some((_, _, inner)) = paths
            .range((m, r, dir.as_str())..)
            .next()
            .map(|(k, _)| k)
            .filter(|(m2, r2, q)| *m2 == m && *r2 == r && q.starts_with(&dir))
        {
            return Err(crate::JobError::Invalid(format!(
                "{m}@{r} would hold both a file `{p}` and a file `{inner}` under it; \
                 no file system can (exclude one of them)"
            )));
        }
    }
    Ok(())
}

/// The globs that say which files under its root `spec` lists: every file
/// they keep is listed, so one missing from the listing is gone. `None` for
/// a single URL (it lists one file, not a revision).
fn listing_filter(spec: &SourceSpec) -> Result<Option<PathFilter>> {
    let globs = match spec {
        SourceSpec::Hub(h) => Some((&h.include, &h.exclude)),
        SourceSpec::Local(l) => Some((&l.include, &l.exclude)),
        SourceSpec::ObjectStore(o) => Some((&o.include, &o.exclude)),
        SourceSpec::Url(_) => None,
    };
    Ok(match globs {
        Some((include, exclude)) => Some(PathFilter::new(include, exclude)?),
        None => None,
    })
}
