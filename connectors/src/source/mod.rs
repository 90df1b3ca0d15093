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

mod file;
mod local;
mod store;
mod web;

pub use file::{FileLocation, RemoteFile};
use std::str::FromStr;

use serde::Deserialize;
use url::Url;

use crate::http::{HttpClient, redact};
use crate::paths::PathFilter;
use crate::storage::{StorageConfig, parse_location};
use crate::{ConnectorError, Result};
use local::resolve_local;
use store::{list_store, listing_root, single_object};
use web::{resolve_hub, resolve_url, url_parts};

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

pub(super) fn default_revision() -> String {
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

pub(super) fn last_segment(url: &Url) -> Option<String> {
    url.path_segments()?
        .rfind(|s| !s.is_empty())
        .map(str::to_string)
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
}
