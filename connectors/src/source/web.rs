//! Sources read over HTTP: plain URLs and Hugging Face-compatible hubs.

use url::Url;

use super::{
    FileLocation, HubSource, RemoteFile, ResolveContext, ResolvedSource, UrlSource,
    checksum_fragment, default_revision, last_segment,
};
use crate::http::{HttpTarget, redact};
use crate::hub::{default_endpoint, resolve_revision};
use crate::paths::{PathFilter, safe_relative_path};
use crate::{ConnectorError, Result};

/// What a URL source names, checked without the network: the URL (no
/// fragment), as shown, the file's path in the model, and its sha256.
pub(super) fn url_parts(u: &UrlSource) -> Result<(Url, String, String, Option<String>)> {
    let mut url =
        Url::parse(&u.url).map_err(|e| ConnectorError::invalid("source", &u.url, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConnectorError::invalid(
            "source",
            &u.url,
            "a url source is http:// or https:// (object_store: takes s3://, gs://, file://)",
        ));
    }
    let from_fragment = checksum_fragment(&url)
        .map_err(|reason| ConnectorError::invalid("source", &u.url, reason))?;
    url.set_fragment(None);
    let shown = redact(&url);
    let name = match &u.path {
        Some(p) => p.clone(),
        None => last_segment(&url)
            .ok_or_else(|| ConnectorError::invalid("source", &shown, "URL has no file name"))?,
    };
    let file_path = safe_relative_path(&name, &shown)?;
    let sha256 = match u.sha256.as_ref().or(from_fragment.as_ref()) {
        Some(s) if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(s.to_ascii_lowercase())
        }
        Some(s) => {
            return Err(ConnectorError::invalid(
                "sha256",
                s,
                "expected 64 hex digits",
            ));
        }
        None => None,
    };
    Ok((url, shown, file_path, sha256))
}

pub(super) async fn resolve_url(u: &UrlSource, ctx: &ResolveContext) -> Result<ResolvedSource> {
    let (url, shown, file_path, sha256) = url_parts(u)?;
    let target = HttpTarget::new(url.clone());
    let probe = match &sha256 {
        Some(_) => ctx.http.probe(&target).await?,
        None => ctx.http.probe_version(&target).await?,
    };
    // A published sha256 finds any change; else every later response must
    // be of the version probed.
    let target = match &sha256 {
        Some(_) => target,
        None => target.pinned(probe.pin.clone()),
    };
    if probe.pin == Default::default() && sha256.is_none() {
        tracing::warn!(url = %shown, "the server sends neither ETag nor Last-Modified: a change to \
            this file (while it is read, or between runs at the same size) cannot be seen; \
            give its sha256 as #sha256=…");
    }
    let segs: Vec<String> = url
        .path_segments()
        .map(|s| s.map(str::to_string).collect())
        .unwrap_or_default();
    let model = segs
        .iter()
        .rev()
        .nth(1)
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| url.host_str().unwrap_or("model").to_string());
    Ok(ResolvedSource {
        default_model_id: model,
        default_revision: default_revision(),
        files: vec![RemoteFile {
            file_path,
            source_uri: shown,
            size: probe.size,
            sha256,
            etag: probe.pin.recorded().unwrap_or_default(),
            ranges: probe.ranges,
            location: FileLocation::Http(target),
        }],
        root: None,
        unreadable: Vec::new(),
    })
}

pub(super) async fn resolve_hub(h: &HubSource, ctx: &ResolveContext) -> Result<ResolvedSource> {
    let endpoint = h.endpoint.clone().unwrap_or_else(default_endpoint);
    let rev = resolve_revision(
        &ctx.http,
        &endpoint,
        &h.repo,
        &h.revision,
        ctx.hf_token.as_deref(),
    )
    .await?;
    let filter = PathFilter::new(&h.include, &h.exclude)?;
    let mut files = Vec::new();
    for f in rev.files.iter().filter(|f| filter.matches(&f.path)) {
        let url = rev.resolve_url(&f.path)?;
        let mut target = HttpTarget {
            url: url.clone(),
            bearer: ctx.hf_token.clone(),
            version: None,
        };
        let (size, ranges, etag) = match f.size {
            // Sizes from the listing save a probe per file; ranges are checked
            // on use, and content by the listed sha256.
            Some(size) => (Some(size), true, f.sha256.clone().unwrap_or_default()),
            None => {
                let p = ctx.http.probe(&target).await?;
                if f.sha256.is_none() {
                    target.version = Some(p.pin.clone());
                }
                (p.size, p.ranges, p.pin.recorded().unwrap_or_default())
            }
        };
        files.push(RemoteFile {
            file_path: f.path.clone(),
            source_uri: redact(&url),
            size,
            sha256: f.sha256.clone(),
            // A non-LFS file's version tag: its blob id when listed (the same
            // content keeps it across commits), else the commit.
            etag: match (etag.is_empty(), &f.blob_id) {
                (false, _) => etag,
                (true, Some(blob)) => format!("blob:{blob}"),
                (true, None) => rev.commit.clone(),
            },
            ranges,
            location: FileLocation::Http(target),
        });
    }
    Ok(ResolvedSource {
        default_model_id: h.repo.clone(),
        default_revision: h.revision.clone(),
        files,
        root: Some(redact(&rev.resolve_root()?)),
        unreadable: Vec::new(),
    })
}
