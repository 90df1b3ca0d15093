//! Request routing and responses of the hub API.

use std::convert::Infallible;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, RANGE,
};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::{percent_decode, percent_decode_str};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use weightlake_jobs::JobError;
use weightlake_jobs::view::FileEntry;

use crate::catalog::{Catalog, Resolved};

pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Bytes per body frame (parts are sliced, not copied).
const FRAME: usize = 1 << 20;

pub(crate) async fn handle(
    catalog: Arc<Catalog>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let routed = if method == Method::POST && path.contains("/paths-info/") {
        paths_info(&catalog, req).await
    } else {
        route(&catalog, &req).await
    };
    let resp = match routed {
        Ok(r) => r,
        Err(e) => {
            warn!(%method, %path, error = %e, "request failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &e.to_string(),
            )
        }
    };
    debug!(%method, %path, status = %resp.status(), "served");
    Ok(resp)
}

fn decode(s: &str) -> Option<String> {
    let d = percent_decode_str(s).decode_utf8().ok()?.into_owned();
    // Hostile paths never match a manifest entry, but refuse them outright.
    if d.split('/').any(|seg| seg == ".." || seg == ".") || d.contains('\0') || d.starts_with('/') {
        return None;
    }
    Some(d)
}

/// A directory path in a tree request: empty for the root.
fn decode_dir(s: &str) -> Option<String> {
    let s = s.trim_end_matches('/');
    if s.is_empty() {
        Some(String::new())
    } else {
        decode(s)
    }
}

/// Largest `paths-info` form read.
const MAX_FORM_BYTES: usize = 1 << 20;

/// `POST /api/models/{repo}/paths-info/{rev}` with a form of `paths=…`
/// (repeated) and `expand=…`: the one read-only POST of the hub API.
async fn paths_info(
    catalog: &Arc<Catalog>,
    req: Request<Incoming>,
) -> Result<Response<Body>, JobError> {
    use http_body_util::BodyExt;
    let raw = req.uri().path().to_string();
    let Some((repo, rev)) = raw
        .strip_prefix("/api/models/")
        .and_then(|rest| rest.rsplit_once("/paths-info/"))
    else {
        return Ok(not_found("no such route"));
    };
    let (Some(repo), Some(rev)) = (decode(repo), decode(rev)) else {
        return Ok(not_found("bad repository or revision"));
    };
    let body = http_body_util::Limited::new(req.into_body(), MAX_FORM_BYTES)
        .collect()
        .await;
    let Ok(body) = body else {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BadRequest",
            "the form is larger than 1 MiB, or was cut short",
        ));
    };
    let Some(paths) = asked_paths(&body.to_bytes()) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "expected a form of paths=..., or JSON {\"paths\": [strings]}",
        ));
    };
    match catalog.resolve(&repo, &rev).await? {
        Some(r) => Ok(crate::tree::paths_info(&r, &paths)),
        None => unresolved(catalog, &repo, &rev).await,
    }
}

/// The paths a paths-info body asks for: a form (`paths=…`, repeated; what
/// huggingface_hub sends) or JSON (`{"paths": [...]}`; other clients).
/// `None` for JSON without a list of strings.
fn asked_paths(body: &[u8]) -> Option<Vec<String>> {
    if body.trim_ascii_start().starts_with(b"{") {
        let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
        return v
            .get("paths")?
            .as_array()?
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect();
    }
    Some(
        body.split(|&b| b == b'&')
            .filter_map(|kv| kv.strip_prefix(b"paths="))
            .filter_map(|v| {
                let v: Vec<u8> = v
                    .iter()
                    .map(|&b| if b == b'+' { b' ' } else { b })
                    .collect();
                percent_decode(&v)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned())
            })
            .collect(),
    )
}

async fn route(
    catalog: &Arc<Catalog>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, JobError> {
    let method = req.method();
    if method != Method::GET && method != Method::HEAD {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "read-only endpoint",
        ));
    }
    let raw = req.uri().path();
    if raw == "/api/models" || raw == "/api/models/" {
        // `list_models(search=…)`: ids containing the term, any case.
        let search = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("search="))
            .and_then(decode)
            .map(|s| s.to_lowercase());
        let mut repos = catalog.repositories().await?;
        if let Some(s) = &search {
            repos.retain(|(id, _)| id.to_lowercase().contains(s.as_str()));
        }
        return Ok(crate::tree::models(&repos));
    }
    if let Some(rest) = raw.strip_prefix("/api/models/") {
        if let Some((repo, rev)) = rest.rsplit_once("/commits/") {
            let (Some(repo), Some(rev)) = (decode(repo), decode(rev)) else {
                return Ok(not_found("bad repository or revision"));
            };
            return match catalog.resolve(&repo, &rev).await? {
                Some(r) => {
                    let mut history = catalog.history(&repo, &r.commit).await?;
                    if history.is_empty() {
                        // A silver revision: its one commit.
                        history.push((r.commit.clone(), 0, r.modified_at.unwrap_or(0)));
                    }
                    Ok(crate::tree::commits(&history))
                }
                None => unresolved(catalog, &repo, &rev).await,
            };
        }
        if let Some((repo, rest)) = rest.split_once("/tree/") {
            let (rev, dir) = rest.split_once('/').unwrap_or((rest, ""));
            let recursive = req.uri().query().is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv.eq_ignore_ascii_case("recursive=true"))
            });
            let (Some(repo), Some(rev), Some(dir)) = (decode(repo), decode(rev), decode_dir(dir))
            else {
                return Ok(not_found("bad repository, revision or path"));
            };
            return match catalog.resolve(&repo, &rev).await? {
                Some(r) => Ok(crate::tree::tree(&r, &dir, recursive)),
                None => unresolved(catalog, &repo, &rev).await,
            };
        }
        if let Some(repo) = rest.strip_suffix("/refs") {
            let Some(repo) = decode(repo) else {
                return Ok(not_found("bad repository"));
            };
            return match catalog.resolve(&repo, "main").await? {
                Some(r) => Ok(crate::tree::refs(&r, &catalog.tags(&repo).await?)),
                None => Ok(not_found(&format!("{repo} not found"))),
            };
        }
        let (repo, rev) = match rest.rsplit_once("/revision/") {
            Some((repo, rev)) => (repo, rev),
            None => (rest.trim_end_matches('/'), "main"),
        };
        let (Some(repo), Some(rev)) = (decode(repo), decode(rev)) else {
            return Ok(not_found("bad repository or revision"));
        };
        return match catalog.resolve(&repo, &rev).await? {
            Some(r) => Ok(model_info(&repo, &r)),
            None => unresolved(catalog, &repo, &rev).await,
        };
    }
    let Some((repo_raw, rest)) = raw.trim_start_matches('/').split_once("/resolve/") else {
        return Ok(not_found("no such route"));
    };
    let Some((rev, file_raw)) = rest.split_once('/') else {
        return Ok(not_found("no file path"));
    };
    let (Some(repo), Some(rev)) = (decode(repo_raw), decode(rev)) else {
        return Ok(not_found("bad path"));
    };
    let Some(file) = decode(file_raw) else {
        return Ok(entry_not_found("bad file path"));
    };
    let Some(r) = catalog.resolve(&repo, &rev).await? else {
        return unresolved(catalog, &repo, &rev).await;
    };
    let Some(f) = r.view.files.get(&file) else {
        return Ok(entry_not_found(&format!(
            "{file} is not a file of {repo}@{rev}"
        )));
    };
    if method == Method::HEAD && rev != r.commit {
        // A client that asks HEAD of an alias, a version or a branch, then
        // GETs the same URL (huggingface_hub), would get whatever the alias
        // names by then, and cache it under the commit and ETag the HEAD
        // announced. Sent on to the commit's own URL (as a hub redirects an
        // LFS file), it downloads from there: huggingface_hub GETs the URL
        // its HEAD ended at.
        let to = format!("/{repo_raw}/resolve/{}/{file_raw}", r.commit);
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::FOUND;
        if let Ok(v) = HeaderValue::from_str(&to) {
            resp.headers_mut().insert(hyper::header::LOCATION, v);
        }
        // What the hub's redirect of an LFS file carries too, so that a HEAD
        // not followed (`curl -I`) still says what the file is.
        put_file_headers(resp.headers_mut(), &f.entry, &r.commit);
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Ok(resp);
    }
    let size = f.entry.size;
    let range = match req
        .headers()
        .get(RANGE)
        .map(|v| parse_range(v.to_str().unwrap_or(""), size))
    {
        None => None,
        Some(Ok(r)) => r,
        Some(Err(())) => {
            let mut resp = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RangeNotSatisfiable",
                "bad range",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let (status, bytes) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..size),
    };
    let body = if method == Method::HEAD {
        empty()
    } else {
        stream_file(catalog, &r, &file, bytes.clone(), range.is_none())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    put_file_headers(h, &f.entry, &r.commit);
    let put = |h: &mut hyper::HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(bytes.end - bytes.start));
    if status == StatusCode::PARTIAL_CONTENT {
        put(
            h,
            "content-range",
            &format!(
                "bytes {}-{}/{size}",
                bytes.start,
                bytes.end.saturating_sub(1)
            ),
        );
    }
    Ok(resp)
}

/// What a hub says of a file in every answer about it: its ETag (the
/// sha256, also as `X-Linked-Etag`), its size and the revision's commit.
fn put_file_headers(h: &mut hyper::HeaderMap, entry: &FileEntry, commit: &str) {
    let etag = format!("\"{}\"", entry.sha256);
    for (k, v) in [
        ("etag", etag.as_str()),
        ("x-linked-etag", etag.as_str()),
        ("x-linked-size", &entry.size.to_string()),
        ("x-repo-commit", commit),
    ] {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
}

/// The byte range a `Range` header (`bytes=a-b`, `bytes=a-`, `bytes=-n`)
/// asks for: `Ok(None)` answers with the
/// whole file, as RFC 9110 (14.2) has a server do for a unit it does not
/// know, a header it cannot parse, a range whose last byte comes before its
/// first, or (here) several ranges; `Err` is 416, for a range that starts
/// past the end.
fn parse_range(v: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: answer with the whole file
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            // A suffix of no bytes cannot be satisfied (RFC 9110, 14.1.3).
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size
        } else {
            let Ok(last) = b.parse::<u64>() else {
                return Ok(None);
            };
            if last < start {
                // Syntactically invalid (RFC 9110, 14.1.1): ignored.
                return Ok(None);
            }
            last.saturating_add(1).min(size)
        };
        start..end
    };
    if r.start >= size || r.start >= r.end {
        if size == 0 && r.start == 0 {
            return Ok(None);
        }
        return Err(());
    }
    Ok(Some(r))
}

/// Stream `range` of `file`, one content part at a time. No byte of a tensor
/// content is sent before the whole content has been checked against its
/// sha256 (once per content and snapshot, see [`Catalog::content_intact`];
/// the checks run ahead of the stream): a damaged content stops the
/// response where it begins, so neither a range (parallel downloaders fetch
/// only ranges) nor a resumed download (huggingface_hub resumes a partial
/// file with a range from its end) ever receives wrong bytes. `verify` also
/// checks the whole file's sha256 (headers and padding included) and holds
/// the last frame back until it is known. A stopped response closes the
/// connection short of the declared length, which HTTP clients report.
fn stream_file(
    catalog: &Arc<Catalog>,
    r: &Resolved,
    file: &str,
    range: Range<u64>,
    verify: bool,
) -> Body {
    let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let session = r.session.clone();
    let view = r.view.clone();
    let file = file.to_string();
    let catalog = catalog.clone();
    tokio::spawn(async move {
        let Some(f) = view.files.get(&file) else {
            return;
        };
        let contents = f.contents_touched(range.clone());
        let mut checks = check_ahead(&catalog, &session, &contents);
        let mut hasher = verify.then(Sha256::new);
        let mut reader = f.reader(&session, range.clone());
        let mut held: Option<Bytes> = None;
        let gone = || JobError::Invalid("client went away".into());
        let sent: Result<(), JobError> = async {
            let (mut pos, mut next) = (range.start, 0usize);
            while let Some(bytes) = reader.next().await? {
                if let Some(h) = hasher.as_mut() {
                    h.update(&bytes);
                }
                let mut at = 0;
                while at < bytes.len() {
                    if let Some((start, sha, _)) = contents.get(next)
                        && pos >= *start
                    {
                        let Some(intact) = checks.recv().await else {
                            return Err(JobError::Invalid("content checks ended early".into()));
                        };
                        let intact = intact?;
                        if !intact {
                            return Err(JobError::Corrupt(format!(
                                "{file}: content {sha} does not rebuild to its sha256"
                            )));
                        }
                        next += 1;
                        continue;
                    }
                    let to_boundary = contents
                        .get(next)
                        .map_or(usize::MAX, |(start, _, _)| (start - pos) as usize);
                    let end = (at + FRAME)
                        .min(bytes.len())
                        .min(at.saturating_add(to_boundary));
                    let frame = bytes.slice(at..end);
                    pos += (end - at) as u64;
                    at = end;
                    let ready = if verify {
                        held.replace(frame)
                    } else {
                        Some(frame)
                    };
                    if let Some(frame) = ready {
                        tx.send(Ok(Frame::data(frame))).await.map_err(|_| gone())?;
                    }
                }
            }
            Ok(())
        }
        .await;
        let failure = match (sent, hasher) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(()), Some(h)) => {
                let got = hex::encode(h.finalize());
                (got != f.entry.sha256)
                    .then(|| format!("{file}: rebuilt sha256 {got}, expected {}", f.entry.sha256))
            }
            (Ok(()), None) => None,
        };
        match failure {
            Some(e) => {
                warn!(error = %e, "aborting a response");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
            None => {
                if let Some(frame) = held {
                    let _ = tx.send(Ok(Frame::data(frame))).await;
                }
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

/// Contents checked at once ahead of the bytes being sent (each check
/// decodes its content part by part).
const CHECKS_AHEAD: usize = 2;

/// Check `contents` in order, ahead of the response, on a task of their
/// own; the results arrive in the same order. Dropping the receiver (the
/// response ended) stops the checks.
fn check_ahead(
    catalog: &Arc<Catalog>,
    session: &Arc<weightlake_jobs::sql::LakeSession>,
    contents: &[(u64, String, u64)],
) -> mpsc::Receiver<Result<bool, JobError>> {
    let (tx, rx) = mpsc::channel(CHECKS_AHEAD);
    let jobs: Vec<(String, u64)> = contents.iter().map(|(_, s, l)| (s.clone(), *l)).collect();
    let (catalog, session) = (catalog.clone(), session.clone());
    tokio::spawn(async move {
        let mut results = futures::stream::iter(jobs)
            .map(|(sha, len)| {
                let (catalog, session) = (catalog.clone(), session.clone());
                async move { catalog.content_intact(&session, &sha, len).await }
            })
            .buffered(CHECKS_AHEAD);
        while let Some(r) = results.next().await {
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    rx
}

fn model_info(repo: &str, r: &Resolved) -> Response<Body> {
    let modified = r
        .modified_at
        .and_then(chrono::DateTime::from_timestamp_micros)
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let siblings: Vec<serde_json::Value> = r
        .view
        .files
        .values()
        .map(|f| {
            json!({
                "rfilename": f.entry.path,
                "size": f.entry.size,
                "blobId": &f.entry.sha256[..40.min(f.entry.sha256.len())],
                "lfs": { "sha256": f.entry.sha256, "size": f.entry.size, "pointerSize": 134 },
            })
        })
        .collect();
    let body = json!({
        "_id": r.commit,
        "id": repo,
        "modelId": repo,
        "sha": r.commit,
        "private": false,
        "disabled": false,
        "gated": false,
        "downloads": 0,
        "likes": 0,
        // Which tier: a silver revision has passed no gate.
        "tags": ["weightlake", crate::tree::tier_tag(r.gold)],
        "library_name": "weightlake",
        "lastModified": modified,
        "createdAt": modified,
        "siblings": siblings,
        "usedStorage": r.view.files.values().map(|f| f.entry.size).sum::<u64>(),
    });
    json_response(
        StatusCode::OK,
        &body,
        &[("x-repo-commit", r.commit.as_str())],
    )
}

pub(crate) fn json_response(
    status: StatusCode,
    v: &serde_json::Value,
    extra: &[(&'static str, &str)],
) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(*k, v);
        }
    }
    resp
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({ "error": message }),
        &[("x-error-code", code), ("x-error-message", message)],
    )
}

fn not_found(message: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, "RepoNotFound", message)
}

/// The hub's answer for `repo@rev` that does not resolve: `RevisionNotFound`
/// when the repository exists (clients such as `huggingface_hub` raise
/// `RevisionNotFoundError`, not "repository not found, log in").
async fn unresolved(catalog: &Catalog, repo: &str, rev: &str) -> Result<Response<Body>, JobError> {
    Ok(if catalog.knows(repo).await? {
        error(
            StatusCode::NOT_FOUND,
            "RevisionNotFound",
            &format!("{repo} has no revision {rev}"),
        )
    } else {
        not_found(&format!("{repo}@{rev} not found"))
    })
}

fn entry_not_found(message: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, "EntryNotFound", message)
}

fn full(b: Bytes) -> Body {
    BodyExt::boxed_unsync(Full::new(b).map_err(|never| match never {}))
}

fn empty() -> Body {
    full(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_and_checked() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some(50..100)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Ok(None));
        // What cannot be understood is ignored (the whole file, 200), as
        // RFC 9110 has it; only a range past the end is refused (416).
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=abc", 100), Ok(None));
        assert_eq!(parse_range("bytes=1-x", 100), Ok(None));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(
            decode("a/b.safetensors").as_deref(),
            Some("a/b.safetensors")
        );
        assert_eq!(decode("..%2Fetc%2Fpasswd"), None);
        assert_eq!(decode("a/../../x"), None);
        assert_eq!(decode("%2Fetc"), None);
    }
}
