//! The hub's listing endpoints: `GET /api/models/{repo}/tree/{rev}[/{dir}]`
//! (`list_repo_files`, `list_repo_tree`; what vLLM and many training scripts
//! call before downloading) and `GET /api/models/{repo}/refs`.

use std::collections::BTreeSet;

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::catalog::Resolved;
use crate::routes::{Body, json_response};

/// The files (and, unless `recursive`, the subdirectories) under `dir` of a
/// resolved revision, as the hub lists them: one page, every entry.
pub(crate) fn tree(r: &Resolved, dir: &str, recursive: bool) -> Response<Body> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries: Vec<Value> = Vec::new();
    let mut dirs = BTreeSet::new();
    for f in r.view.files.values() {
        let Some(rest) = f.entry.path.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((sub, _)) if !recursive => {
                dirs.insert(format!("{prefix}{sub}"));
            }
            _ => entries.push(file_entry(&f.entry)),
        }
    }
    if recursive {
        // A recursive listing names every directory on the way too.
        for f in r.view.files.values() {
            if let Some(rest) = f.entry.path.strip_prefix(&prefix) {
                let parts: Vec<&str> = rest.split('/').collect();
                for i in 1..parts.len() {
                    dirs.insert(format!("{prefix}{}", parts[..i].join("/")));
                }
            }
        }
    }
    if entries.is_empty() && dirs.is_empty() && !dir.is_empty() {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("{dir} is not a directory of this revision") }),
            &[("x-error-code", "EntryNotFound")],
        );
    }
    let mut all: Vec<Value> = dirs
        .into_iter()
        .map(|d| json!({ "type": "directory", "oid": r.commit, "size": 0, "path": d }))
        .collect();
    all.extend(entries);
    json_response(
        StatusCode::OK,
        &Value::Array(all),
        &[("x-repo-commit", r.commit.as_str())],
    )
}

/// One file as the hub's listings describe it.
fn file_entry(e: &weightlake_jobs::view::FileEntry) -> Value {
    json!({
        "type": "file",
        "oid": &e.sha256[..40.min(e.sha256.len())],
        "size": e.size,
        "path": e.path,
        "lfs": { "oid": e.sha256, "size": e.size, "pointerSize": 134 },
    })
}

/// `paths` of a resolved revision (`get_paths_info`): each a file or a
/// directory of it, in the order asked; paths it does not have are left out.
pub(crate) fn paths_info(r: &Resolved, paths: &[String]) -> Response<Body> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.trim_matches('/');
        if let Some(f) = r.view.files.get(p) {
            out.push(file_entry(&f.entry));
        } else if !p.is_empty()
            && r.view
                .files
                .keys()
                .any(|k| k.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
        {
            out.push(json!({ "type": "directory", "oid": r.commit, "size": 0, "path": p }));
        }
    }
    json_response(
        StatusCode::OK,
        &Value::Array(out),
        &[("x-repo-commit", r.commit.as_str())],
    )
}

/// The revision `main` resolves to, as the repository's one branch, and
/// `tags` (a gold model's aliases and version numbers) as its tags.
pub(crate) fn refs(main: &Resolved, tags: &[(String, String)]) -> Response<Body> {
    let tags: Vec<Value> = tags
        .iter()
        .map(|(name, commit)| {
            json!({ "name": name, "ref": format!("refs/tags/{name}"), "targetCommit": commit })
        })
        .collect();
    let body = json!({
        "branches": [{ "name": "main", "ref": "refs/heads/main", "targetCommit": main.commit }],
        "converts": [],
        "tags": tags,
    });
    json_response(StatusCode::OK, &body, &[])
}

/// An RFC 3339 time of `micros` since the epoch (the epoch when unknown).
fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Commits newest first, as `list_repo_commits` reads them: a gold model's
/// versions, each a commit.
pub(crate) fn commits(history: &[(String, i64, i64)]) -> Response<Body> {
    let body: Vec<Value> = history
        .iter()
        .map(|(commit, version, at)| {
            let title = if *version > 0 {
                format!("version {version}")
            } else {
                "silver revision".to_string()
            };
            json!({ "id": commit, "title": title, "message": "", "authors": [], "date": rfc3339(*at) })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(body), &[])
}

/// The tag saying which tier a repository is: a silver revision has passed
/// no gate.
pub(crate) fn tier_tag(gold: bool) -> &'static str {
    if gold {
        "weightlake:gold"
    } else {
        "weightlake:silver"
    }
}

/// The repositories served, as `list_models` reads them.
pub(crate) fn models(repos: &[(String, bool)]) -> Response<Body> {
    let body: Vec<Value> = repos
        .iter()
        .map(|(id, gold)| {
            json!({ "_id": id, "id": id, "modelId": id, "private": false,
                    "tags": ["weightlake", tier_tag(*gold)], "library_name": "weightlake" })
        })
        .collect();
    json_response(StatusCode::OK, &Value::Array(body), &[])
}
