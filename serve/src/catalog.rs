//! What the server can serve: repo + revision -> a model view, cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use weightlake_jobs::gold::{GoldRef, GoldState, Selector};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::sql::LakeSession;
use weightlake_jobs::view::{Manifest, ModelView};
use weightlake_jobs::{JobError, Result};

/// How long a lake snapshot is used before tables are re-read.
const REFRESH: Duration = Duration::from_secs(5);
/// Views kept in memory (each is metadata only: headers, offsets).
const MAX_VIEWS: usize = 64;
/// Silver commit shas remembered (repo, sha -> revision).
const MAX_SILVER_COMMITS: usize = 4096;
/// How long a content that matched its sha256 is trusted before the next
/// request that touches it checks it again (damage that appears on disk
/// while the lake's tables stay the same is found within this time).
pub const DEFAULT_RECHECK_AFTER: Duration = Duration::from_secs(600);

/// One servable revision.
#[derive(Clone)]
pub struct Resolved {
    /// The commit sha reported for it: 40 hex digits of its manifest sha256.
    pub commit: String,
    /// When it was promoted or last tensorised (microseconds, UTC), if known.
    pub modified_at: Option<i64>,
    /// A gold version (passed its gates), not a silver revision.
    pub gold: bool,
    /// Its files.
    pub view: Arc<ModelView>,
    /// The session whose snapshot the view was read from.
    pub session: Arc<LakeSession>,
}

/// The outcome of checking one content against its sha256, computed once,
/// and when the check was asked for.
type ContentCheck = (Arc<tokio::sync::OnceCell<bool>>, Instant);
/// The lake's tables, gold read from them, and when.
type Snapshot = (Arc<LakeSession>, Arc<GoldState>, Instant);
/// A silver revision's view, its manifest sha, and the id of the session it
/// was read through.
type SilverView = (Arc<ModelView>, String, u64);

/// The lake, a recent snapshot of it, and resolved views.
pub struct Catalog {
    lake: Lake,
    /// A recent snapshot: the lake's tables and gold read from them.
    snapshot: Mutex<Option<Snapshot>>,
    views: Mutex<HashMap<String, Arc<ModelView>>>,
    /// Silver commit shas handed out: (repo, commit) -> revision.
    silver_commits: Mutex<HashMap<(String, String), String>>,
    /// Silver revisions read recently: (repo, revision) -> view, its commit,
    /// and the session it was read through (reused while the snapshot is).
    silver_views: Mutex<HashMap<(String, String), SilverView>>,
    /// Contents checked against their sha256 (for ranges), by the session
    /// they were read through: each is checked once, by the first range
    /// that touches it, while the others wait for that check.
    verified: Mutex<(u64, HashMap<String, ContentCheck>)>,
    /// How long a passed check is trusted.
    recheck_after: Duration,
    /// Serve gold names only (no silver model ids).
    gold_only: bool,
}

impl Catalog {
    /// A catalog of `lake`.
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            snapshot: Mutex::new(None),
            views: Mutex::new(HashMap::new()),
            silver_commits: Mutex::new(HashMap::new()),
            silver_views: Mutex::new(HashMap::new()),
            verified: Mutex::new((0, HashMap::new())),
            recheck_after: DEFAULT_RECHECK_AFTER,
            gold_only: false,
        }
    }

    /// Serve gold names only: a silver model id (weights no gate has
    /// passed) is not found.
    pub fn set_gold_only(&mut self, on: bool) {
        self.gold_only = on;
    }

    /// Trust a content that matched its sha256 for this long (default
    /// [`DEFAULT_RECHECK_AFTER`]); a request after that checks it again.
    pub fn set_recheck_after(&mut self, after: Duration) {
        self.recheck_after = after;
    }

    /// Whether content `sha256` (`len` bytes) read through `session` has
    /// that sha256; checked once per content and session, and again once
    /// the check is older than the recheck interval.
    pub async fn content_intact(
        &self,
        session: &LakeSession,
        sha256: &str,
        len: u64,
    ) -> Result<bool> {
        let cell = {
            let mut v = self.verified.lock().await;
            if v.0 != session.id() {
                *v = (session.id(), HashMap::new());
            }
            let fresh = || (Arc::new(tokio::sync::OnceCell::new()), Instant::now());
            let entry = v.1.entry(sha256.to_string()).or_insert_with(fresh);
            // A check still running is shared whatever its age.
            if entry.0.initialized() && entry.1.elapsed() >= self.recheck_after {
                *entry = fresh();
            }
            entry.0.clone()
        };
        cell.get_or_try_init(|| weightlake_jobs::view::content_intact(session, sha256, len))
            .await
            .copied()
    }

    /// The lake as of at most [`REFRESH`] ago: a request reads no table
    /// metadata unless the snapshot has expired, and an expired snapshot
    /// whose tables have not changed is kept, with what its session learnt
    /// (footers and key indexes: on an object store, round trips).
    async fn snapshot(&self) -> Result<(Arc<LakeSession>, Arc<GoldState>)> {
        let mut s = self.snapshot.lock().await;
        if let Some((session, gold, at)) = s.as_mut() {
            if at.elapsed() < REFRESH {
                return Ok((session.clone(), gold.clone()));
            }
            if session.is_current(&self.lake).await? {
                *at = Instant::now();
                return Ok((session.clone(), gold.clone()));
            }
        }
        let session = Arc::new(LakeSession::new(&self.lake).await?);
        let gold = Arc::new(GoldState::load(&self.lake, None).await?);
        *s = Some((session.clone(), gold.clone(), Instant::now()));
        Ok((session, gold))
    }

    async fn view_of(
        &self,
        session: &LakeSession,
        sha: &str,
        manifest: &Manifest,
    ) -> Result<Arc<ModelView>> {
        if let Some(v) = self.views.lock().await.get(sha) {
            return Ok(v.clone());
        }
        let view = Arc::new(ModelView::pinned(session, manifest).await?);
        let mut views = self.views.lock().await;
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(sha.to_string(), view.clone());
        Ok(view)
    }

    /// Whether `repo` names a gold model or a silver model (at any revision).
    pub async fn knows(&self, repo: &str) -> Result<bool> {
        let (session, gold) = self.snapshot().await?;
        Ok(gold.versions.contains_key(repo)
            || !self.gold_only
                && !weightlake_jobs::view::revisions_of(&session, repo)
                    .await?
                    .is_empty())
    }

    /// A gold repository's tags: each alias and version number with the
    /// commit it resolves to (none for a silver model).
    pub async fn tags(&self, repo: &str) -> Result<Vec<(String, String)>> {
        let (_, gold) = self.snapshot().await?;
        let Some(versions) = gold.versions.get(repo) else {
            return Ok(Vec::new());
        };
        let mut tags: Vec<(String, String)> = gold
            .aliases
            .iter()
            .filter(|((name, _), _)| name == repo)
            .filter_map(|((_, alias), v)| {
                Some((alias.clone(), versions.get(v)?.commit().to_string()))
            })
            .collect();
        tags.extend(
            versions
                .values()
                .map(|v| (v.version.to_string(), v.commit().to_string())),
        );
        Ok(tags)
    }

    /// A gold repository's versions up to and including the one whose
    /// commit is `commit`, newest first: (commit, version, promoted at, in
    /// microseconds). A silver revision is its own one commit.
    pub async fn history(&self, repo: &str, commit: &str) -> Result<Vec<(String, i64, i64)>> {
        let (_, gold) = self.snapshot().await?;
        let Some(versions) = gold.versions.get(repo) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(String, i64, i64)> = versions
            .values()
            .map(|v| (v.commit().to_string(), v.version, v.promoted_at))
            .collect();
        out.reverse();
        match out.iter().position(|(c, _, _)| c == commit) {
            Some(i) => Ok(out.split_off(i)),
            None => Ok(Vec::new()),
        }
    }

    /// Every repository served: gold names, then (unless gold only) silver
    /// model ids that gold does not shadow.
    pub async fn repositories(&self) -> Result<Vec<(String, bool)>> {
        let (session, gold) = self.snapshot().await?;
        let mut repos: Vec<(String, bool)> =
            gold.versions.keys().map(|n| (n.clone(), true)).collect();
        if !self.gold_only && session.has_table(weightlake_schemas::silver::FILES) {
            let batches = session
                .query(&format!(
                    "SELECT DISTINCT model_id FROM silver.files WHERE format <> '{}' ORDER BY model_id",
                    weightlake_schemas::silver::REMOVED_FORMAT
                ))
                .await?;
            for b in &batches {
                for r in 0..b.num_rows() {
                    if let Some(id) = weightlake_jobs::sql::string_value(b.column(0).as_ref(), r)
                        && !gold.versions.contains_key(id)
                    {
                        repos.push((id.to_string(), false));
                    }
                }
            }
        }
        Ok(repos)
    }

    /// `repo` at `revision`, or `None` when there is no such model or revision.
    pub async fn resolve(&self, repo: &str, revision: &str) -> Result<Option<Resolved>> {
        let (session, gold) = self.snapshot().await?;
        if let Some(versions) = gold.versions.get(repo) {
            let alias = gold.aliases.get(&(repo.to_string(), revision.to_string()));
            let v = if let Some(v) = alias {
                versions.get(v)
            } else if let Ok(n) = revision.parse::<i64>() {
                versions.get(&n)
            } else if revision == "main" || revision == "latest" {
                gold.resolve(&GoldRef {
                    name: repo.to_string(),
                    selector: Selector::Latest,
                })
                .ok()
            } else if is_commit(revision) {
                versions
                    .values()
                    .rev()
                    .find(|v| v.manifest_sha256.starts_with(revision))
            } else {
                None
            };
            let Some(v) = v else { return Ok(None) };
            let view = self
                .view_of(&session, &v.manifest_sha256, &v.manifest)
                .await?;
            return Ok(Some(Resolved {
                commit: v.commit().to_string(),
                modified_at: Some(v.promoted_at),
                gold: true,
                view,
                session,
            }));
        }
        if self.gold_only {
            return Ok(None);
        }
        // Silver: the revision as stored, or a commit sha handed out earlier.
        let known = self
            .silver_commits
            .lock()
            .await
            .get(&(repo.to_string(), revision.to_string()))
            .cloned();
        for rev in [Some(revision.to_string()), known].into_iter().flatten() {
            let Some((view, sha)) = self.silver_view(&session, repo, &rev).await? else {
                continue;
            };
            if rev != revision && !sha.starts_with(revision) {
                // Silver changed since that sha was handed out.
                return Ok(None);
            }
            let commit = sha[..40].to_string();
            let mut commits = self.silver_commits.lock().await;
            if commits.len() >= MAX_SILVER_COMMITS {
                commits.clear();
            }
            commits.insert((repo.to_string(), commit.clone()), rev);
            return Ok(Some(Resolved {
                commit,
                modified_at: view.modified_at,
                gold: false,
                view,
                session,
            }));
        }
        Ok(None)
    }

    /// The latest silver view of `repo@rev` in `session` and its manifest
    /// sha; None when silver has no such revision.
    async fn silver_view(
        &self,
        session: &LakeSession,
        repo: &str,
        rev: &str,
    ) -> Result<Option<(Arc<ModelView>, String)>> {
        let key = (repo.to_string(), rev.to_string());
        if let Some((view, sha, read_in)) = self.silver_views.lock().await.get(&key)
            && *read_in == session.id()
        {
            return Ok(Some((view.clone(), sha.clone())));
        }
        let view = match ModelView::latest(session, repo, rev).await {
            Ok(v) => Arc::new(v),
            Err(JobError::Invalid(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (_, sha) = view.manifest().to_json()?;
        let mut views = self.silver_views.lock().await;
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(key, (view.clone(), sha.clone(), session.id()));
        Ok(Some((view, sha)))
    }
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}
