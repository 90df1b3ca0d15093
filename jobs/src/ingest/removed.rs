//! Files a revision no longer has: paths bronze holds for a revision that the
//! revision's own source no longer lists (a hub branch that moved, a file
//! deleted from a directory or prefix). A source with include/exclude globs
//! speaks only for the paths its globs keep: a path they keep that the
//! listing lacks is gone; a path they filter out is not its business.
//!
//! Such a path gets a removal row in `bronze.files` ([`bronze::REMOVED_SIZE`])
//! at the end of a run in which every file succeeded, so a re-sharded
//! checkpoint loses its old shards only once the new ones are complete.
//! Tensorise carries the removal into `silver.files`; from then on
//! `MODEL@REVISION` (tensorise, promote, export, verify, serve) no longer has
//! the file. Nothing is deleted: earlier gold versions pinned to the file's
//! rows still rebuild.
//!
//! Only a path whose newest bronze row came from under the same source's root
//! is removed. A file another source added to the revision (a single URL, a
//! second directory) is kept and named in the run's summary instead.

use std::collections::{BTreeMap, HashSet};

use weightlake_connectors::paths::PathFilter;
use weightlake_connectors::source::ResolvedSource;
use weightlake_schemas::bronze;

use super::state::{BronzeState, UploadKey};
use super::writer::FileRow;
use crate::shard::Shard;

/// What this run's sources list, per revision, in every shard.
#[derive(Debug, Default)]
pub(super) struct Listings {
    revisions: BTreeMap<(String, String), Listed>,
}

#[derive(Debug, Default)]
struct Listed {
    /// Every path any source of the run lists for the revision.
    paths: HashSet<String>,
    /// Roots of the sources that list the revision, with the globs that
    /// say which paths under the root each one lists.
    roots: Vec<(String, PathFilter)>,
}

/// A path to record as removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Removal {
    pub model_id: String,
    pub revision: String,
    pub file_path: String,
    /// The root of the source that no longer lists it.
    pub root: String,
}

/// Bronze compared with the listings.
#[derive(Debug, Default)]
pub(super) struct Compared {
    /// Paths of this shard to record as removed.
    pub removed: Vec<Removal>,
    /// `(model, revision, path)` of files no source of the run lists, added
    /// by a source the run did not list whole: they stay.
    pub kept: Vec<(String, String, String)>,
}

impl Listings {
    /// Record what `resolved` lists for `model_id@revision`; `filter` when it
    /// lists every file of its root that the filter keeps (a hub repository,
    /// a directory, a prefix), `None` for a single file or URL.
    pub fn add(
        &mut self,
        model_id: &str,
        revision: &str,
        resolved: &ResolvedSource,
        filter: Option<PathFilter>,
    ) {
        let listed = self
            .revisions
            .entry((model_id.to_string(), revision.to_string()))
            .or_default();
        listed
            .paths
            .extend(resolved.files.iter().map(|f| f.file_path.clone()));
        if let (Some(filter), Some(root)) = (filter, &resolved.root) {
            listed.roots.push((root.clone(), filter));
        }
    }

    /// Every model id the sources list, in any shard.
    pub fn model_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.revisions.keys().map(|(m, _)| m.clone()).collect();
        ids.dedup();
        ids
    }

    /// The files bronze has for a listed revision that no source of the run
    /// lists: removed when they came from under a listing's root and its
    /// globs keep them (and this shard owns them); kept when they came from
    /// elsewhere.
    pub fn compare(&self, state: &BronzeState, shard: Shard) -> Compared {
        let mut out = Compared::default();
        for ((model, revision), listed) in &self.revisions {
            if listed.roots.is_empty() {
                continue;
            }
            let mut gone: Vec<(&str, &str)> = state
                .files_of(model, revision)
                .filter(|(p, _)| !listed.paths.contains(*p))
                .collect();
            gone.sort_unstable();
            for (path, source_uri) in gone {
                let under = listed
                    .roots
                    .iter()
                    .find(|(root, _)| source_uri.starts_with(root.as_str()));
                match under {
                    // Filtered out by this listing's globs: not its business.
                    Some((_, filter)) if !filter.matches(path) => {}
                    Some((root, _)) if shard.owns(&[model, revision, path]) => {
                        out.removed.push(Removal {
                            model_id: model.clone(),
                            revision: revision.clone(),
                            file_path: path.to_string(),
                            root: root.clone(),
                        })
                    }
                    Some(_) => {} // another shard's
                    None if shard == Shard::ALL => {
                        out.kept
                            .push((model.clone(), revision.clone(), path.to_string()))
                    }
                    None => {}
                }
            }
        }
        out
    }
}

impl Removal {
    /// The `bronze.files` row that records it. Its upload id is unique to
    /// the run, so tensorise sees it as new.
    pub fn row(&self, run_id: &str) -> FileRow {
        let etag = format!("removed:{run_id}");
        let key = UploadKey {
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            file_path: self.file_path.clone(),
            file_size: bronze::REMOVED_SIZE,
            etag: etag.clone(),
        };
        FileRow {
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            file_path: self.file_path.clone(),
            source_uri: self.root.clone(),
            file_size: bronze::REMOVED_SIZE,
            file_sha256: String::new(),
            etag,
            upload_id: key.id(),
            chunk_size: 0,
            chunk_count: 0,
        }
    }
}
