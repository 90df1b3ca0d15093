//! The Hugging Face-compatible hub API: revision -> commit and file list.
//!
//! `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true` answers the commit
//! sha and the files (`siblings`) with sizes and, for LFS files, their sha256.
//! Files are then downloaded from `{endpoint}/{repo}/resolve/{commit}/{path}`,
//! pinned to the commit so that a branch moving mid-download cannot mix revisions.
//! Every listed path is untrusted and checked by [`crate::paths::safe_relative_path`].

use serde::Deserialize;
use url::Url;

use crate::http::{HttpClient, HttpTarget, redact};
use crate::paths::safe_relative_path;
use crate::{ConnectorError, Result};

/// The default hub: `HF_ENDPOINT` when set, else huggingface.co.
pub fn default_endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".to_string())
}

/// One file of a hub revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// Path within the repo, checked safe.
    pub path: String,
    /// Size in bytes, when listed.
    pub size: Option<u64>,
    /// sha256 of the content, listed for LFS files.
    pub sha256: Option<String>,
    /// The git blob id (`blobId`), listed for every file with `blobs=true`:
    /// it names the content, so a small non-LFS file that did not change
    /// keeps it across commits.
    pub blob_id: Option<String>,
}

/// A hub revision resolved to a commit.
#[derive(Debug, Clone)]
pub struct HubRevision {
    /// The endpoint, e.g. `https://huggingface.co`.
    pub endpoint: Url,
    /// `org/name`.
    pub repo: String,
    /// The commit sha the revision points to.
    pub commit: String,
    /// Every file of the commit.
    pub files: Vec<HubFile>,
}

impl HubRevision {
    /// The download URL of `path` at the resolved commit.
    pub fn resolve_url(&self, path: &str) -> Result<Url> {
        self.resolve_under(&[&self.commit, path])
    }

    /// The prefix of every file's download URL at any commit of the
    /// repository: `{endpoint}/{repo}/resolve/`.
    pub fn resolve_root(&self) -> Result<Url> {
        self.resolve_under(&[""])
    }

    fn resolve_under(&self, tail: &[&str]) -> Result<Url> {
        let mut u = self.endpoint.clone();
        {
            let mut seg = u.path_segments_mut().map_err(|_| {
                ConnectorError::invalid(
                    "hub endpoint",
                    self.endpoint.as_str(),
                    "cannot be a base URL",
                )
            })?;
            seg.pop_if_empty();
            seg.extend(self.repo.split('/'));
            seg.push("resolve");
            for t in tail {
                seg.extend(t.split('/'));
            }
        }
        Ok(u)
    }
}

#[derive(Deserialize)]
struct ApiRevision {
    sha: String,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<ApiLfs>,
    #[serde(default, rename = "blobId")]
    blob_id: Option<String>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: String,
    #[serde(default)]
    size: Option<u64>,
}

/// Check a repo id (`name` or `org/name`, letters, digits, `-`, `_`, `.`).
pub fn check_repo_id(repo: &str) -> Result<()> {
    let segs: Vec<&str> = repo.split('/').collect();
    let ok = (1..=2).contains(&segs.len())
        && segs.iter().all(|s| {
            !s.is_empty()
                && *s != "."
                && *s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(ConnectorError::invalid(
            "hub repo id",
            repo,
            "expected `org/name`",
        ))
    }
}

/// Resolve `revision` (branch, tag or commit) of `repo` at `endpoint`.
pub async fn resolve_revision(
    client: &HttpClient,
    endpoint: &str,
    repo: &str,
    revision: &str,
    token: Option<&str>,
) -> Result<HubRevision> {
    check_repo_id(repo)?;
    if revision.is_empty() || revision.contains("..") {
        return Err(ConnectorError::invalid(
            "hub revision",
            revision,
            "empty or contains `..`",
        ));
    }
    let endpoint_url = Url::parse(endpoint)
        .map_err(|e| ConnectorError::invalid("hub endpoint", endpoint, e.to_string()))?;
    let mut api = endpoint_url.clone();
    {
        let mut seg = api.path_segments_mut().map_err(|_| {
            ConnectorError::invalid("hub endpoint", endpoint, "cannot be a base URL")
        })?;
        seg.pop_if_empty();
        seg.push("api")
            .push("models")
            .extend(repo.split('/'))
            .push("revision")
            .push(revision);
    }
    api.set_query(Some("blobs=true"));
    let target = HttpTarget {
        url: api.clone(),
        bearer: token.map(str::to_string),
        version: None,
    };
    let resp = crate::http::range::send_with_retry(client, &target, None).await?;
    let body = resp.bytes().await.map_err(|e| ConnectorError::Hub {
        url: redact(&api),
        reason: crate::http::range::http_error(e),
    })?;
    if body.len() > 64 << 20 {
        return Err(ConnectorError::Hub {
            url: redact(&api),
            reason: "listing larger than 64 MiB".into(),
        });
    }
    let parsed: ApiRevision = serde_json::from_slice(&body).map_err(|e| ConnectorError::Hub {
        url: redact(&api),
        reason: format!("unexpected answer: {e}"),
    })?;
    if parsed.sha.is_empty() || !parsed.sha.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ConnectorError::Hub {
            url: redact(&api),
            reason: format!("bad commit sha `{}`", parsed.sha),
        });
    }
    let origin = redact(&api);
    let files = parsed
        .siblings
        .into_iter()
        .map(|s| {
            let path = safe_relative_path(&s.rfilename, &origin)?;
            let (size, sha256) = match s.lfs {
                Some(l) => (l.size.or(s.size), Some(l.sha256.to_ascii_lowercase())),
                None => (s.size, None),
            };
            let blob_id = s
                .blob_id
                .filter(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_alphanumeric()));
            Ok(HubFile {
                path,
                size,
                sha256,
                blob_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(HubRevision {
        endpoint: endpoint_url,
        repo: repo.to_string(),
        commit: parsed.sha,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(check_repo_id("org/name-1.5_x").is_ok());
        assert!(check_repo_id("name").is_ok());
        for bad in ["", "a/b/c", "../x", "a/..", "a b/c", "a/"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_url_is_pinned_to_commit() {
        let r = HubRevision {
            endpoint: Url::parse("http://127.0.0.1:1/").expect("url"),
            repo: "org/m".into(),
            commit: "abc".into(),
            files: vec![],
        };
        assert_eq!(
            r.resolve_url("onnx/model.onnx").expect("url").as_str(),
            "http://127.0.0.1:1/org/m/resolve/abc/onnx/model.onnx"
        );
        assert_eq!(
            r.resolve_root().expect("url").as_str(),
            "http://127.0.0.1:1/org/m/resolve/"
        );
    }
}
