//! Sources: what a user names, resolved into files readable by byte range.
//!
//! | form | kind |
//! |---|---|
//! | `https://host/path/file[#sha256=HEX]` | [`SourceSpec::Url`] |
//! | `hf://org/repo[@revision]` | [`SourceSpec::Hub`] (endpoint from `HF_ENDPOINT`) |
//! | `s3://bucket/prefix`, `gs://…`, `file://…` | [`SourceSpec::ObjectStore`] |
//! | a local file or directory | [`SourceSpec::Local`] |
//!
//! The same kinds appear in pipeline YAML under `sources:`.

use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use url::Url;

use crate::http::{HttpClient, HttpTarget, RangeSink, redact};
use crate::hub::{default_endpoint, resolve_revision};
use crate::paths::{PathFilter, is_export_record, is_git_path, safe_relative_path};
use crate::storage::{StorageConfig, parse_location};
use crate::{ConnectorError, Result};

/// A source of model files, as written in YAML or on the command line.
///
/// In YAML a source is a map with exactly one key naming its kind:
/// `{ local: { path: … } }`, `{ hub: { repo: … } }`, `{ url: { url: … } }`,
/// `{ object_store: { url: … } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "SourceEntry")]
pub enum SourceSpec {
    /// One plain http(s) URL.
    Url(UrlSource),
    /// A Hugging Face-compatible hub repository at a revision.
    Hub(HubSource),
    /// An `s3://`, `gs://` or `file://` prefix.
    ObjectStore(StoreSource),
    /// A local file or directory.
    Local(LocalSource),
}

/// The YAML form of a source: one of the kinds, as a key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntry {
    #[serde(default)]
    url: Option<UrlSource>,
    #[serde(default)]
    hub: Option<HubSource>,
    #[serde(default)]
    object_store: Option<StoreSource>,
    #[serde(default)]
    local: Option<LocalSource>,
}

impl TryFrom<SourceEntry> for SourceSpec {
    type Error = String;

    fn try_from(e: SourceEntry) -> std::result::Result<Self, String> {
        let mut kinds = Vec::new();
        if let Some(u) = e.url {
            kinds.push(Self::Url(u));
        }
        if let Some(h) = e.hub {
            kinds.push(Self::Hub(h));
        }
        if let Some(s) = e.object_store {
            kinds.push(Self::ObjectStore(s));
        }
        if let Some(l) = e.local {
            kinds.push(Self::Local(l));
        }
        match kinds.len() {
            1 => Ok(kinds.remove(0)),
            0 => Err("a source needs one of `url`, `hub`, `object_store`, `local`".into()),
            _ => Err("a source has exactly one of `url`, `hub`, `object_store`, `local`".into()),
        }
    }
}

/// `url:` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlSource {
    /// The http(s) URL.
    pub url: String,
    /// Expected sha256 (hex); the download fails if the bytes differ.
    #[serde(default)]
    pub sha256: Option<String>,
    /// File path recorded in the lake. Default: the URL's last path segment.
    #[serde(default)]
    pub path: Option<String>,
}

/// `hub:` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// Hub endpoint. Default: `HF_ENDPOINT`, else `https://huggingface.co`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Repository id, `org/name`.
    pub repo: String,
    /// Branch, tag or commit. Default `main`.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Globs of files to take (all when empty), e.g. `["*.safetensors", "*.json"]`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of files to skip.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `object_store:` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSource {
    /// Prefix URL, e.g. `s3://checkpoints/run-42/`.
    pub url: String,
    /// Globs (relative to the prefix) of files to take; all when empty.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of files to skip.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `local:` source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSource {
    /// A file or directory.
    pub path: String,
    /// Globs (relative to the directory) of files to take; all when empty.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of files to skip.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_revision() -> String {
    "main".to_string()
}

/// The sha256 a URL's fragment gives (`#sha256=HEX`, any case), `None`
/// without one; a fragment that looks like another spelling of a checksum
/// (`#SHA-256=…`, `#sha256:…`, `#md5=…`) is an error rather than a check
/// silently not made. Other fragments (never sent to a server) are ignored.
pub fn checksum_fragment(url: &Url) -> std::result::Result<Option<String>, String> {
    let Some(fragment) = url.fragment().filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    if let Some((key, value)) = fragment.split_once('=')
        && key.eq_ignore_ascii_case("sha256")
    {
        return Ok(Some(value.to_ascii_lowercase()));
    }
    let lower = fragment.to_ascii_lowercase();
    if ["sha", "md5", "crc", "blake", "xxh"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err(format!(
            "fragment `#{fragment}` is not a checksum weightlake reads: write `#sha256=<64 hex digits>`"
        ));
    }
    Ok(None)
}

impl FromStr for SourceSpec {
    type Err = ConnectorError;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("hf://") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, rev)) => (r, rev.to_string()),
                None => (rest, default_revision()),
            };
            crate::hub::check_repo_id(repo)?;
            return Ok(Self::Hub(HubSource {
                endpoint: None,
                repo: repo.to_string(),
                revision,
                include: vec![],
                exclude: vec![],
            }));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let mut url =
                Url::parse(s).map_err(|e| ConnectorError::invalid("source", s, e.to_string()))?;
            let sha256 = checksum_fragment(&url)
                .map_err(|reason| ConnectorError::invalid("source", s, reason))?;
            url.set_fragment(None);
            return Ok(Self::Url(UrlSource {
                url: url.to_string(),
                sha256,
                path: None,
            }));
        }
        if s.contains("://") {
            parse_location(s)?;
            return Ok(Self::ObjectStore(StoreSource {
                url: s.to_string(),
                include: vec![],
                exclude: vec![],
            }));
        }
        Ok(Self::Local(LocalSource {
            path: s.to_string(),
            include: vec![],
            exclude: vec![],
        }))
    }
}

/// How to read a resolved file.
#[derive(Clone)]
pub enum FileLocation {
    /// Over HTTP with ranged GETs.
    Http(HttpTarget),
    /// From an object store (S3, GCS, local disk).
    Store {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// The object's path in it.
        path: StorePath,
        /// Its ETag as listed (as the store spells it), sent as `If-Match`
        /// with every read.
        e_tag: Option<String>,
    },
}

impl std::fmt::Debug for FileLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(t) => t.fmt(f),
            Self::Store { path, .. } => write!(f, "Store({path})"),
        }
    }
}

/// One file of a resolved source.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    /// Path within the model, checked safe (`model.safetensors`, `onnx/x.onnx`).
    pub file_path: String,
    /// Where it came from, without credentials.
    pub source_uri: String,
    /// Size, when known before download (always known for ranged sources).
    pub size: Option<u64>,
    /// Expected sha256 (hex, lowercase) when the source publishes one.
    pub sha256: Option<String>,
    /// ETag or other version tag of the source object; empty when unknown.
    pub etag: String,
    /// True when the server honours byte ranges.
    pub ranges: bool,
    /// How to read it.
    pub location: FileLocation,
}

impl RemoteFile {
    /// Read `range` into `sink`, with the HTTP client's retries or the object
    /// store's own.
    pub async fn read_range<S: RangeSink>(
        &self,
        http: &HttpClient,
        range: std::ops::Range<u64>,
        sink: &mut S,
    ) -> Result<()> {
        match &self.location {
            FileLocation::Http(t) => http.fetch_range(t, range, sink).await,
            FileLocation::Store { store, path, e_tag } => {
                if range.is_empty() {
                    return Ok(());
                }
                let options = object_store::GetOptions {
                    range: Some(range.clone().into()),
                    // A version other than the one listed is refused by the
                    // store (S3: 412; local disk: inode, mtime and size).
                    if_match: e_tag.clone(),
                    ..Default::default()
                };
                let read = async { store.get_opts(path, options).await?.bytes().await };
                let bytes: Bytes = read.await.map_err(|source| match source {
                    object_store::Error::Precondition { .. } => ConnectorError::Changed {
                        url: self.source_uri.clone(),
                        listed: self.etag.clone(),
                        now: "another".into(),
                    },
                    source => ConnectorError::ObjectStore {
                        url: self.source_uri.clone(),
                        source,
                    },
                })?;
                if bytes.len() as u64 != range.end - range.start {
                    return Err(ConnectorError::Verify {
                        url: self.source_uri.clone(),
                        what: "range length",
                        expected: (range.end - range.start).to_string(),
                        actual: bytes.len().to_string(),
                    });
                }
                sink.write_owned(range.start, bytes)
                    .await
                    .map_err(|source| ConnectorError::Io {
                        path: self.source_uri.clone(),
                        source,
                    })
            }
        }
    }

    /// Fail with [`ConnectorError::Changed`] when the file is no longer the
    /// version listed: called once every range has been read, it closes the
    /// window in which a file rewritten during its last range would be kept
    /// as a mix of two versions. A file with a published sha256 needs no
    /// check (the hash finds any change).
    pub async fn check_unchanged(&self, http: &HttpClient) -> Result<()> {
        if self.sha256.is_some() {
            return Ok(());
        }
        let changed = |now: Option<String>| ConnectorError::Changed {
            url: self.source_uri.clone(),
            listed: self.etag.clone(),
            now: now.unwrap_or_else(|| "none".into()),
        };
        match &self.location {
            FileLocation::Http(t) => {
                let Some(listed) = &t.version else {
                    return Ok(());
                };
                let now = http.probe(t).await?;
                if !listed.admits(&now.pin) {
                    return Err(changed(now.pin.tag));
                }
                Ok(())
            }
            FileLocation::Store { store, path, e_tag } => {
                let meta =
                    store
                        .head(path)
                        .await
                        .map_err(|source| ConnectorError::ObjectStore {
                            url: self.source_uri.clone(),
                            source,
                        })?;
                if (e_tag.is_some() && meta.e_tag != *e_tag) || Some(meta.size) != self.size {
                    return Err(changed(meta.e_tag.map(|t| t.trim_matches('"').to_string())));
                }
                Ok(())
            }
        }
    }
}

/// A source resolved into files, with the model id and revision it implies.
#[derive(Debug, Clone)]
pub struct ResolvedSource {
    /// Model id to record when the user gives none (hub repo, directory name…).
    pub default_model_id: String,
    /// Revision to record when the user gives none (hub revision, else `main`).
    pub default_revision: String,
    /// The files, sorted by path.
    pub files: Vec<RemoteFile>,
    /// The prefix of the `source_uri` of every file this source can list
    /// (`https://hub/org/m/resolve/`, `file:///models/m/`), whatever the
    /// revision's commit; `None` for a single file or URL.
    pub root: Option<String>,
    /// Entries of the listing that could not be taken as files (a broken
    /// link, a FIFO, a name object paths cannot hold, a directory that
    /// cannot be read), each with why: each fails as a file would, and the
    /// listing is incomplete.
    pub unreadable: Vec<(String, String)>,
}

/// What resolving needs: the shared HTTP client, storage options, hub token.
#[derive(Debug, Clone)]
pub struct ResolveContext {
    /// The shared downloader client.
    pub http: HttpClient,
    /// Storage settings for object store sources.
    pub storage: StorageConfig,
    /// Hub bearer token (`HF_TOKEN`); never logged.
    pub hf_token: Option<String>,
}

impl SourceSpec {
    /// A short description for messages, without credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Url(u) => Url::parse(&u.url)
                .map(|x| redact(&x))
                .unwrap_or_else(|_| u.url.clone()),
            Self::Hub(h) => format!("hf://{}@{}", h.repo, h.revision),
            Self::ObjectStore(s) => s.url.clone(),
            Self::Local(l) => l.path.clone(),
        }
    }

    /// Check what can be checked without reading anything (URLs, ids,
    /// checksums, paths, globs): `validate` reports these before a run.
    pub fn check_offline(&self) -> Result<()> {
        match self {
            Self::Url(u) => url_parts(u).map(|_| ()),
            Self::Hub(h) => {
                crate::hub::check_repo_id(&h.repo)?;
                if let Some(e) = &h.endpoint {
                    Url::parse(e)
                        .map_err(|err| ConnectorError::invalid("endpoint", e, err.to_string()))?;
                }
                PathFilter::new(&h.include, &h.exclude).map(|_| ())
            }
            Self::ObjectStore(s) => {
                parse_location(&s.url)?;
                PathFilter::new(&s.include, &s.exclude).map(|_| ())
            }
            Self::Local(l) => PathFilter::new(&l.include, &l.exclude).map(|_| ()),
        }
    }

    /// List the source's files (and probe URLs for size and range support).
    pub async fn resolve(&self, ctx: &ResolveContext) -> Result<ResolvedSource> {
        let mut resolved = match self {
            Self::Url(u) => resolve_url(u, ctx).await?,
            Self::Hub(h) => resolve_hub(h, ctx).await?,
            Self::ObjectStore(s) => {
                let url = parse_location(&s.url)?;
                // A file:// URL of one file is that local file.
                if let Ok(p) = url.to_file_path()
                    && p.is_file()
                {
                    let local = LocalSource {
                        path: p.display().to_string(),
                        include: Vec::new(),
                        exclude: Vec::new(),
                    };
                    return Box::pin(Self::Local(local).resolve(ctx)).await;
                }
                let name = last_segment(&url)
                    .unwrap_or_else(|| url.host_str().unwrap_or("model").to_string());
                let (store, prefix) = ctx.storage.object_store(&url)?;
                let filter = PathFilter::new(&s.include, &s.exclude)?;
                let (files, unreadable) = list_store(store, &prefix, &url, &filter).await?;
                let root = Some(listing_root(&url));
                match files.is_empty() && unreadable.is_empty() && s.include.is_empty() {
                    // Nothing under it as a prefix: maybe it is an object's own
                    // key, as copied from a console.
                    true => single_object(ctx, &url).await?.unwrap_or(ResolvedSource {
                        default_model_id: name,
                        default_revision: default_revision(),
                        files,
                        root,
                        unreadable,
                    }),
                    false => ResolvedSource {
                        default_model_id: name,
                        default_revision: default_revision(),
                        files,
                        root,
                        unreadable,
                    },
                }
            }
            Self::Local(l) => resolve_local(l, ctx).await?,
        };
        if resolved.files.is_empty() && resolved.unreadable.is_empty() {
            return Err(ConnectorError::Empty(self.describe()));
        }
        resolved.files.sort_by(|a, b| a.file_path.cmp(&b.file_path));
        Ok(resolved)
    }
}

fn last_segment(url: &Url) -> Option<String> {
    url.path_segments()?
        .rfind(|s| !s.is_empty())
        .map(str::to_string)
}

/// What a URL source names, checked without the network: the URL (no
/// fragment), as shown, the file's path in the model, and its sha256.
fn url_parts(u: &UrlSource) -> Result<(Url, String, String, Option<String>)> {
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

async fn resolve_url(u: &UrlSource, ctx: &ResolveContext) -> Result<ResolvedSource> {
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

async fn resolve_hub(h: &HubSource, ctx: &ResolveContext) -> Result<ResolvedSource> {
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

async fn resolve_local(l: &LocalSource, ctx: &ResolveContext) -> Result<ResolvedSource> {
    let path = std::path::Path::new(&l.path);
    let meta = tokio::fs::metadata(path).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConnectorError::invalid("source", &l.path, "no such file or directory")
        } else {
            ConnectorError::Io {
                path: l.path.clone(),
                source,
            }
        }
    })?;
    let abs = std::path::absolute(path).map_err(|source| ConnectorError::Io {
        path: l.path.clone(),
        source,
    })?;
    let (dir, only) = if meta.is_dir() {
        (abs.clone(), None)
    } else {
        let parent = abs
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| abs.clone());
        let name = abs.file_name().map(|n| n.to_string_lossy().to_string());
        (parent, name)
    };
    let url = Url::from_directory_path(&dir)
        .map_err(|_| ConnectorError::invalid("source", &l.path, "not a valid path"))?;
    let (store, prefix) = ctx.storage.object_store(&url)?;
    let filter = match &only {
        Some(name) => PathFilter::new(&[globset::escape(name)], &[])?,
        None => PathFilter::new(&l.include, &l.exclude)?,
    };
    let (mut files, unreadable) = match &only {
        Some(_) => list_store(store, &prefix, &url, &filter).await?,
        None => list_local_dir(store, &prefix, &dir, &url, &filter).await?,
    };
    if only.is_some() {
        files.retain(|f| !f.file_path.contains('/'));
    }
    refuse_links_out(&dir, &files, &l.path)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    Ok(ResolvedSource {
        default_model_id: name,
        default_revision: default_revision(),
        files,
        root: only.is_none().then(|| listing_root(&url)),
        unreadable,
    })
}

/// List a local directory with its filter applied first, so that an entry
/// the filter drops never matters, and every other entry that is not a
/// readable regular file is named with why instead of failing the listing
/// (object_store's listing ends at the first name it cannot hold) or being
/// dropped without a word (it skips broken links and FIFOs).
async fn list_local_dir(
    store: Arc<dyn ObjectStore>,
    prefix: &StorePath,
    dir: &std::path::Path,
    url: &Url,
    filter: &PathFilter,
) -> Result<(Vec<RemoteFile>, Vec<(String, String)>)> {
    let base = url.as_str().trim_end_matches('/').to_string();
    let root = dir.to_path_buf();
    let filter_c = filter.clone();
    let walked = tokio::task::spawn_blocking(move || walk_local(&root, &filter_c))
        .await
        .map_err(|e| ConnectorError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(e),
        })?;
    let (found, mut unreadable) = walked;
    let mut files = Vec::with_capacity(found.len());
    for (rel, abs) in found {
        let file_path = match safe_relative_path(&rel, &base) {
            Ok(p) => p,
            Err(e) => {
                unreadable.push((rel, e.to_string()));
                continue;
            }
        };
        // The key as object_store's own listing makes it: relative to the
        // store's root (the directory), under the listing's prefix.
        let key = Url::from_file_path(&abs)
            .ok()
            .and_then(|u| {
                let rel = u.path().strip_prefix(url.path())?.to_string();
                StorePath::from_url_path(rel).ok()
            })
            .and_then(|k| match prefix.as_ref() {
                "" => Some(k),
                p => StorePath::parse(format!("{p}/{k}")).ok(),
            });
        let key = match key {
            Some(k) => k,
            None => {
                unreadable.push((
                    rel,
                    "its name holds a character an object path cannot (a control character \
                     such as a tab or newline); rename it, or exclude it"
                        .into(),
                ));
                continue;
            }
        };
        match store.head(&key).await {
            Ok(meta) => {
                let source_uri = format!("{base}/{file_path}");
                files.push(store_file(store.clone(), &meta, source_uri, file_path));
            }
            Err(e) => unreadable.push((rel, e.to_string())),
        }
    }
    files.sort_by(|a, b| a.file_path.cmp(&b.file_path));
    unreadable.sort();
    Ok((files, unreadable))
}

/// The regular files under `root` that `filter` keeps (relative path with
/// `/`, absolute path), links followed, and the entries that cannot be read.
#[allow(clippy::type_complexity)]
fn walk_local(
    root: &std::path::Path,
    filter: &PathFilter,
) -> (Vec<(String, std::path::PathBuf)>, Vec<(String, String)>) {
    let rel_of = |p: &std::path::Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/")
    };
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    let mut walk = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let Some(path) = e.path().map(std::path::Path::to_path_buf) else {
                    unreadable.push((String::new(), e.to_string()));
                    continue;
                };
                let rel = rel_of(&path);
                let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
                let broken = link && std::fs::metadata(&path).is_err();
                if broken {
                    if filter.matches(&rel) && !is_git_path(&rel) {
                        let target = std::fs::read_link(&path)
                            .map(|t| t.display().to_string())
                            .unwrap_or_default();
                        unreadable.push((
                            rel,
                            format!("a symbolic link to {target}, which does not exist"),
                        ));
                    }
                } else if !filter.excludes_dir(&rel) && !is_git_path(&rel) {
                    let why = match e.loop_ancestor() {
                        Some(a) => format!("a link back to {} (a loop); exclude it", a.display()),
                        None => e
                            .io_error()
                            .map_or_else(|| e.to_string(), |io| format!("cannot be read: {io}")),
                    };
                    unreadable.push((rel, why));
                }
                continue;
            }
        };
        let rel = rel_of(entry.path());
        if rel.is_empty() {
            continue;
        }
        if entry.file_type().is_dir() {
            if is_git_path(&rel) || filter.excludes_dir(&rel) {
                walk.skip_current_dir();
            }
            continue;
        }
        if !filter.matches(&rel) || is_git_path(&rel) {
            continue;
        }
        if is_export_record(&rel) {
            tracing::debug!(path = rel, "skipping a completion marker");
            continue;
        }
        if !entry.file_type().is_file() {
            unreadable.push((
                rel,
                "not a regular file (a FIFO, socket or device); exclude it".into(),
            ));
            continue;
        }
        if entry.path().to_str().is_none() {
            unreadable.push((
                rel,
                "its name is not UTF-8; rename it, or exclude it".into(),
            ));
            continue;
        }
        files.push((rel, entry.path().to_path_buf()));
    }
    (files, unreadable)
}

/// Refuse a local source any of whose files is a symbolic link (or lies under
/// one) that leads out of `dir`: a model directory from an untrusted archive
/// or clone could otherwise pull `/etc/shadow` into the lake, and `serve`
/// would hand it out. Links inside the directory are fine, and so are links
/// of a Hugging Face cache snapshot (`…/snapshots/<commit>/`) into its
/// repository's cache folder (`…/blobs/`).
fn refuse_links_out(dir: &std::path::Path, files: &[RemoteFile], source: &str) -> Result<()> {
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    let mut roots: Vec<std::path::PathBuf> = canonical(dir).into_iter().collect();
    if dir
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "snapshots")
        && let Some(repo) = dir.parent().and_then(|p| p.parent()).and_then(canonical)
    {
        roots.push(repo);
    }
    let mut outside = Vec::new();
    for f in files {
        let target = match canonical(&dir.join(&f.file_path)) {
            Some(t) => t,
            None => continue, // vanished since the listing: its read will say so
        };
        if !roots.iter().any(|r| target.starts_with(r)) {
            outside.push(format!("{} -> {}", f.file_path, target.display()));
        }
    }
    if outside.is_empty() {
        return Ok(());
    }
    let n = outside.len();
    outside.truncate(5);
    Err(ConnectorError::invalid(
        "source",
        source,
        format!(
            "{n} file(s) are symbolic links to outside the directory ({}{}); \
             copy them in, or ingest their directory as its own source",
            outside.join(", "),
            if n > 5 { ", …" } else { "" }
        ),
    ))
}

/// The object whose key `url` is, as a one-file source named by its parent
/// prefix; `None` when there is no such object.
async fn single_object(ctx: &ResolveContext, url: &Url) -> Result<Option<ResolvedSource>> {
    let Some(name) = last_segment(url) else {
        return Ok(None);
    };
    let mut parent = url.clone();
    if let Ok(mut segments) = parent.path_segments_mut() {
        segments.pop_if_empty().pop();
    }
    let (store, prefix) = ctx.storage.object_store(&parent)?;
    let key = format!("{}/{name}", prefix.as_ref().trim_end_matches('/'));
    let key = StorePath::parse(key.trim_start_matches('/'))
        .map_err(|e| ConnectorError::invalid("source", url.as_str(), e.to_string()))?;
    let meta = match store.head(&key).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(ConnectorError::ObjectStore {
                url: url.to_string(),
                source,
            });
        }
    };
    let file_path = safe_relative_path(&name, url.as_str())?;
    let source_uri = url.as_str().trim_end_matches('/').to_string();
    let file = store_file(store, &meta, source_uri, file_path);
    Ok(Some(ResolvedSource {
        default_model_id: last_segment(&parent)
            .unwrap_or_else(|| parent.host_str().unwrap_or("model").to_string()),
        default_revision: default_revision(),
        files: vec![file],
        root: None,
        unreadable: Vec::new(),
    }))
}

/// The prefix of the `source_uri` of every file [`list_store`] lists under `url`.
fn listing_root(url: &Url) -> String {
    format!("{}/", url.as_str().trim_end_matches('/'))
}

async fn list_store(
    store: Arc<dyn ObjectStore>,
    prefix: &StorePath,
    url: &Url,
    filter: &PathFilter,
) -> Result<(Vec<RemoteFile>, Vec<(String, String)>)> {
    let base = url.as_str().trim_end_matches('/').to_string();
    // A name that cannot be an object path (a newline in it) ends
    // object_store's listing there, so it fails the source rather than
    // silently dropping the files listed after it.
    let metas: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|source| ConnectorError::ObjectStore {
            url: base.clone(),
            source,
        })?;
    let mut skipped = Vec::new();
    let markers = folder_markers(&store, url, &metas).await;
    let prefix_str = prefix.as_ref();
    let mut files = Vec::new();
    for m in metas {
        let full = m.location.as_ref();
        let rel = full
            .strip_prefix(prefix_str)
            .unwrap_or(full)
            .trim_start_matches('/');
        if rel.is_empty() || !filter.matches(rel) {
            continue;
        }
        if markers.contains(&m.location) {
            tracing::debug!(path = rel, "skipping a folder marker");
            continue;
        }
        if is_git_path(rel) {
            // A clone's repository data (hooks, objects, a second copy of
            // every LFS file) is not the model; a hub never lists it.
            tracing::debug!(path = rel, "skipping git metadata");
            continue;
        }
        if is_export_record(rel) {
            // An export's (or a Spark job's) record that the directory is
            // complete, not a file of the model.
            tracing::debug!(path = rel, "skipping a completion marker");
            continue;
        }
        let file_path = match safe_relative_path(rel, &base) {
            Ok(p) => p,
            Err(e) => {
                // Fails as a file would (named, and holding back removals),
                // as in a local directory.
                skipped.push((rel.to_string(), e.to_string()));
                continue;
            }
        };
        let source_uri = format!("{base}/{file_path}");
        files.push(store_file(store.clone(), &m, source_uri, file_path));
    }
    Ok((files, skipped))
}

/// The empty objects of a bucket listing that are folder markers: keys
/// ending in `/` (the S3 console's "Create folder", Hadoop, rclone), which
/// object_store lists without their slash, so that `run/dir/` looks like an
/// empty file `run/dir` that no GET finds. An empty listed object that a HEAD
/// of its listed name does not find is one.
async fn folder_markers(
    store: &Arc<dyn ObjectStore>,
    url: &Url,
    metas: &[object_store::ObjectMeta],
) -> std::collections::HashSet<StorePath> {
    let mut markers = std::collections::HashSet::new();
    if url.scheme() == "file" {
        return markers;
    }
    for m in metas.iter().filter(|m| m.size == 0) {
        if let Err(object_store::Error::NotFound { .. }) = store.head(&m.location).await {
            markers.insert(m.location.clone());
        }
    }
    markers
}

/// The object `meta` describes in `store`, as a file to ingest.
fn store_file(
    store: Arc<dyn ObjectStore>,
    meta: &object_store::ObjectMeta,
    source_uri: String,
    file_path: String,
) -> RemoteFile {
    RemoteFile {
        source_uri,
        file_path,
        size: Some(meta.size),
        sha256: None,
        etag: meta
            .e_tag
            .as_deref()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        ranges: true,
        location: FileLocation::Store {
            store,
            path: meta.location.clone(),
            e_tag: meta.e_tag.clone().filter(|t| !t.is_empty()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_fragment_is_read_or_refused_never_ignored() {
        let hex = "A".repeat(64);
        for ok in [format!("sha256={hex}"), format!("SHA256={hex}")] {
            let u = Url::parse(&format!("https://h/m.bin#{ok}")).expect("url");
            assert_eq!(checksum_fragment(&u), Ok(Some("a".repeat(64))));
        }
        for bad in ["sha-256=ab", "sha256:ab", "SHA1=ab", "md5=ab"] {
            let u = Url::parse(&format!("https://h/m.bin#{bad}")).expect("url");
            assert!(checksum_fragment(&u).is_err(), "{bad}");
            assert!(
                format!("https://h/m.bin#{bad}")
                    .parse::<SourceSpec>()
                    .is_err()
            );
        }
        let u = Url::parse("https://h/m.bin#readme").expect("url");
        assert_eq!(checksum_fragment(&u), Ok(None));
    }

    #[test]
    fn parses_cli_sources() {
        assert!(
            matches!("hf://org/m@v1".parse::<SourceSpec>(), Ok(SourceSpec::Hub(h)) if h.revision == "v1")
        );
        assert!(
            matches!("hf://org/m".parse::<SourceSpec>(), Ok(SourceSpec::Hub(h)) if h.revision == "main")
        );
        assert!("hf://../x".parse::<SourceSpec>().is_err());
        let u: SourceSpec = format!("https://h/a/b.bin#sha256={}", "a".repeat(64))
            .parse()
            .expect("url");
        assert!(matches!(
            u,
            SourceSpec::Url(UrlSource {
                sha256: Some(_),
                ..
            })
        ));
        assert!(matches!(
            "s3://b/p".parse::<SourceSpec>(),
            Ok(SourceSpec::ObjectStore(_))
        ));
        assert!(matches!(
            "./dir".parse::<SourceSpec>(),
            Ok(SourceSpec::Local(_))
        ));
        assert!("ftp://x/y".parse::<SourceSpec>().is_err());
    }

    /// A resolve context for local sources (no hub, default storage).
    fn local_ctx() -> ResolveContext {
        ResolveContext {
            http: HttpClient::new(Default::default()).expect("client"),
            storage: StorageConfig::default(),
            hf_token: None,
        }
    }

    /// Every file of `dir`, unfiltered.
    fn whole_dir(dir: &std::path::Path) -> SourceSpec {
        SourceSpec::Local(LocalSource {
            path: dir.display().to_string(),
            include: vec![],
            exclude: vec![],
        })
    }

    #[tokio::test]
    async fn a_file_rewritten_after_listing_is_refused_not_read_as_a_mix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("w.bin");
        std::fs::write(&file, vec![1u8; 4096]).expect("write");
        let ctx = local_ctx();
        let r = whole_dir(dir.path()).resolve(&ctx).await.expect("resolve");
        let listed = &r.files[0];
        let mut buf = crate::http::ChunkBuffer::new(&(0..2048));
        listed
            .read_range(&ctx.http, 0..2048, &mut buf)
            .await
            .expect("first half");
        listed.check_unchanged(&ctx.http).await.expect("unchanged");
        // Rewritten in place, same size: only its modification time differs.
        std::fs::write(&file, vec![2u8; 4096]).expect("rewrite");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(later))
            .expect("mtime");
        let mut buf = crate::http::ChunkBuffer::new(&(2048..4096));
        let second = listed.read_range(&ctx.http, 2048..4096, &mut buf).await;
        assert!(
            matches!(second, Err(ConnectorError::Changed { .. })),
            "{second:?}"
        );
        let check = listed.check_unchanged(&ctx.http).await;
        assert!(
            matches!(check, Err(ConnectorError::Changed { .. })),
            "{check:?}"
        );
    }

    #[tokio::test]
    async fn local_dirs_refuse_links_out_and_skip_git_metadata() {
        let ctx = local_ctx();
        let resolve = |path: &std::path::Path| {
            SourceSpec::Local(LocalSource {
                path: path.display().to_string(),
                include: vec![],
                exclude: vec![],
            })
        };
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join(".git/hooks")).expect("mkdir");
        std::fs::write(model.join("config.json"), b"{}").expect("write");
        std::fs::write(model.join(".gitattributes"), b"*").expect("write");
        std::fs::write(model.join(".git/config"), b"[core]").expect("write");
        // A link inside the directory is fine.
        std::os::unix::fs::symlink(model.join("config.json"), model.join("alias.json"))
            .expect("link");
        let r = resolve(&model).resolve(&ctx).await.expect("resolve");
        let mut paths: Vec<_> = r.files.iter().map(|f| f.file_path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, [".gitattributes", "alias.json", "config.json"]);
        // A link to a file or a directory outside is refused, by name.
        std::os::unix::fs::symlink(outside.path().join("secret"), model.join("tokenizer.json"))
            .expect("link");
        std::os::unix::fs::symlink(outside.path(), model.join("extra")).expect("link");
        let e = resolve(&model).resolve(&ctx).await.expect_err("links out");
        let text = e.to_string();
        assert!(
            text.contains("2 file(s) are symbolic links to outside")
                && text.contains("tokenizer.json ->")
                && text.contains("extra/secret ->"),
            "{text}"
        );
        // A Hugging Face cache snapshot links into its repository's blobs.
        let repo = dir.path().join("models--org--m");
        let snap = repo.join("snapshots/abc");
        std::fs::create_dir_all(&snap).expect("mkdir");
        std::fs::create_dir_all(repo.join("blobs")).expect("mkdir");
        std::fs::write(repo.join("blobs/123"), b"w").expect("write");
        std::os::unix::fs::symlink("../../blobs/123", snap.join("model.safetensors"))
            .expect("link");
        let r = resolve(&snap).resolve(&ctx).await.expect("snapshot");
        assert_eq!(r.files.len(), 1);
    }

    #[tokio::test]
    async fn a_file_with_an_odd_name_is_skipped_not_the_whole_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["config.json", "a\\b.txt", "g:h.txt"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let ctx = local_ctx();
        let r = whole_dir(dir.path()).resolve(&ctx).await.expect("resolve");
        let paths: Vec<_> = r.files.iter().map(|f| f.file_path.as_str()).collect();
        assert_eq!(paths, ["config.json"]);
        let named: Vec<_> = r.unreadable.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(named, ["a\\b.txt", "g:h.txt"]);
    }

    #[tokio::test]
    async fn local_dir_lists_files_with_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("a.safetensors"), b"xx").expect("write");
        std::fs::write(dir.path().join("sub/b.json"), b"{}").expect("write");
        std::fs::write(dir.path().join("c.bin"), b"zz").expect("write");
        let ctx = local_ctx();
        let spec = SourceSpec::Local(LocalSource {
            path: dir.path().display().to_string(),
            include: vec!["*.safetensors".into(), "*.json".into()],
            exclude: vec![],
        });
        let r = spec.resolve(&ctx).await.expect("resolve");
        let paths: Vec<_> = r.files.iter().map(|f| f.file_path.as_str()).collect();
        assert_eq!(paths, ["a.safetensors", "sub/b.json"]);
        let one = SourceSpec::Local(LocalSource {
            path: dir.path().join("c.bin").display().to_string(),
            include: vec![],
            exclude: vec![],
        });
        let r = one.resolve(&ctx).await.expect("resolve file");
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].size, Some(2));
        let mut buf = crate::http::ChunkBuffer::new(&(0..2));
        r.files[0]
            .read_range(&ctx.http, 0..2, &mut buf)
            .await
            .expect("read");
        assert_eq!(buf.into_inner(), b"zz");
        // The same file as a file:// URL.
        let url = format!("file://{}", dir.path().join("c.bin").display());
        let r = url
            .parse::<SourceSpec>()
            .expect("spec")
            .resolve(&ctx)
            .await
            .expect("resolve file url");
        assert_eq!(r.files.len(), 1);
    }
}
