//! The ranged HTTP downloader.
//!
//! One pooled [`reqwest::Client`] is shared by every file. A file is cut into
//! chunks ([`plan_chunks`]); each chunk is fetched with one `Range` request that is
//! retried with jittered exponential backoff on 5xx, 429 (honouring
//! `Retry-After`), connection resets, stalls and truncated bodies. A retry
//! resumes from the last byte received, so progress is never thrown away.
//!
//! Bytes are handed to a [`RangeSink`] as they arrive: the file sink writes them at
//! their offset ([`download_to_file`]), the chunk sink collects one chunk in memory
//! for a bronze row. Nothing holds a whole file.
//!
//! Servers that ignore `Range` (answer 200) or do not tell the length are read as
//! one stream; [`HttpClient::probe`] finds out which.

mod file;
pub(crate) mod range;

use std::ops::Range;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use url::Url;

pub use file::{DownloadReport, download_to_file};
pub use range::{ChunkBuffer, RangeSink};

use crate::{ConnectorError, Result};

/// The chunk sizes a download (and a bronze row) may use: 1 KiB to 1 GiB.
pub const CHUNK_SIZES: std::ops::RangeInclusive<u64> = 1 << 10..=1 << 30;

/// Downloader settings, shared by every source that reads over HTTP.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// Ranges in flight at once, across all files. Default 16.
    pub concurrency: usize,
    /// Bytes per range request. Default 16 MiB.
    pub chunk_size: u64,
    /// Retries per range after the first attempt. Default 5.
    pub max_retries: u32,
    /// First backoff delay; doubles per retry, with full jitter. Default 200 ms.
    pub min_backoff: Duration,
    /// Largest backoff delay (and cap on `Retry-After`). Default 10 s.
    pub max_backoff: Duration,
    /// Abort and retry a range when no byte arrives for this long. Default 30 s.
    pub stall_timeout: Duration,
    /// TCP connect timeout. Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            chunk_size: 16 << 20,
            max_retries: 5,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A URL to download, with the bearer token to send to its host (never logged,
/// and dropped by the client on redirects to another host).
#[derive(Clone)]
pub struct HttpTarget {
    /// The URL.
    pub url: Url,
    /// Bearer token for `Authorization`, e.g. `HF_TOKEN`.
    pub bearer: Option<String>,
    /// The version every response must be of ([`Pin::admits`]), pinned from
    /// the first response: a response of another one means the file changed
    /// while it was being read ([`ConnectorError::Changed`]).
    pub version: Option<Pin>,
}

/// The version of a file a response is of, as far as its headers say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pin {
    /// Its [`version_tag`].
    pub tag: Option<String>,
    /// Its `Last-Modified` date.
    pub last_modified: Option<String>,
}

impl Pin {
    /// What the headers of a response say.
    pub fn of(h: &HeaderMap) -> Self {
        Self {
            tag: version_tag(h),
            last_modified: header_str(h, "last-modified"),
        }
    }

    /// The tag to record for the file (a later run compares it to tell
    /// whether the file changed): the version tag, else its date.
    pub fn recorded(&self) -> Option<String> {
        self.tag.clone().or_else(|| {
            self.last_modified
                .as_ref()
                .map(|d| format!("last-modified:{d}"))
        })
    }

    /// Whether a response carrying `now` is of this version: the same tag,
    /// or, where the tags differ but both carry the same `Last-Modified`
    /// date, the same file (servers behind a load balancer give one file a
    /// different ETag per node). A response without a tag is not judged.
    pub fn admits(&self, now: &Pin) -> bool {
        match (&self.tag, &now.tag) {
            (Some(a), Some(b)) if a != b => {
                self.last_modified.is_some() && self.last_modified == now.last_modified
            }
            // Pinned by date alone (a server whose ETags change per response).
            (None, _) => match (&self.last_modified, &now.last_modified) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
            _ => true,
        }
    }
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &self.url.as_str())
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HttpTarget {
    /// A target without credentials.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            bearer: None,
            version: None,
        }
    }

    /// This target, every response of which must be of `version`.
    pub fn pinned(mut self, version: Pin) -> Self {
        self.version = Some(version);
        self
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(token) = &self.bearer
            && let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            v.set_sensitive(true);
            h.insert(reqwest::header::AUTHORIZATION, v);
        }
        h
    }
}

/// What a server says about a file before we download it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Total size, when the server tells it.
    pub size: Option<u64>,
    /// True when the server honours `Range` (answered 206).
    pub ranges: bool,
    /// The version the answer was of.
    pub pin: Pin,
}

/// One chunk of a file: its index and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    /// 0-based chunk number.
    pub index: u32,
    /// Byte range within the file.
    pub range: Range<u64>,
}

/// Cut `size` bytes into chunks of `chunk_size` (the last may be shorter; a
/// zero-byte file has one empty chunk so that it still gets a row).
pub fn plan_chunks(size: u64, chunk_size: u64) -> Vec<ChunkPlan> {
    let chunk_size = chunk_size.max(1);
    if size == 0 {
        return vec![ChunkPlan {
            index: 0,
            range: 0..0,
        }];
    }
    (0..size.div_ceil(chunk_size))
        .map(|i| {
            let start = i * chunk_size;
            ChunkPlan {
                index: i as u32,
                range: start..(start + chunk_size).min(size),
            }
        })
        .collect()
}

/// The shared HTTP client with the downloader's settings.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pub(crate) client: reqwest::Client,
    pub(crate) cfg: DownloadConfig,
}

impl HttpClient {
    /// Build the pooled client. Redirects are followed (10 at most); reqwest drops
    /// `Authorization` when a redirect leaves the original host.
    pub fn new(cfg: DownloadConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.concurrency.max(1) * 2)
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("weightlake/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ConnectorError::Http {
                url: "<client>".into(),
                reason: e.to_string(),
            })?;
        Ok(Self { client, cfg })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &DownloadConfig {
        &self.cfg
    }

    /// The underlying reqwest client (for API calls that are not downloads).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.client
    }

    /// [`HttpClient::probe`], asked twice when the answer has a version tag:
    /// a server that gives the same file another ETag on each response
    /// (nodes behind a load balancer) cannot be held to one, so the version
    /// is then its `Last-Modified` date alone (when that holds still), and
    /// no tag is recorded that would differ on the next run anyway.
    pub async fn probe_version(&self, target: &HttpTarget) -> Result<Probe> {
        let first = self.probe(target).await?;
        if first.pin.tag.is_none() {
            return Ok(first);
        }
        let second = self.probe(target).await?;
        if second.pin.tag == first.pin.tag {
            return Ok(first);
        }
        let date = first
            .pin
            .last_modified
            .clone()
            .filter(|d| second.pin.last_modified.as_ref() == Some(d));
        tracing::warn!(
            url = %redact(&target.url),
            "the server gives this file another version tag on each response: it is held to \
             its Last-Modified date{}; give its sha256 as #sha256=… to check it fully",
            if date.is_some() { "" } else { " (which changes too: not at all)" }
        );
        Ok(Probe {
            pin: Pin {
                tag: None,
                last_modified: date,
            },
            ..first
        })
    }

    /// Ask for byte 0 to learn the size, the ETag and whether ranges work.
    pub async fn probe(&self, target: &HttpTarget) -> Result<Probe> {
        let resp = range::send_with_retry(self, target, Some(0..1)).await?;
        let headers = resp.headers().clone();
        let status = resp.status();
        drop(resp);
        let pin = Pin::of(&headers);
        if status == reqwest::StatusCode::PARTIAL_CONTENT {
            let size = header_str(&headers, "content-range")
                .and_then(|cr| cr.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()));
            return Ok(Probe {
                size,
                ranges: size.is_some(),
                pin,
            });
        }
        let size = header_str(&headers, "content-length").and_then(|s| s.parse().ok());
        Ok(Probe {
            size,
            ranges: false,
            pin,
        })
    }
}

/// What identifies the version of a file a response carries: its ETag (or a
/// hub's `X-Linked-Etag`), quotes and weakness removed; else, for servers
/// without ETags (`python -m http.server`, many static servers), its
/// `Last-Modified` as `last-modified:<date>`.
pub fn version_tag(h: &HeaderMap) -> Option<String> {
    header_str(h, "x-linked-etag")
        .or_else(|| header_str(h, "etag"))
        .map(|s| s.trim_start_matches("W/").trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| header_str(h, "last-modified").map(|d| format!("last-modified:{d}")))
}

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Strip credentials and query from a URL before it is logged or stored.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_admits_per_node_etags_of_one_date_only() {
        let pin = |tag: Option<&str>, date: Option<&str>| Pin {
            tag: tag.map(str::to_string),
            last_modified: date.map(str::to_string),
        };
        let listed = pin(Some("abc-1"), Some("Fri, 04 Dec 2026 21:56:21 GMT"));
        assert!(listed.admits(&pin(Some("abc-1"), None)));
        // Another node's ETag for the same file: same date.
        assert!(listed.admits(&pin(Some("abc-2"), Some("Fri, 04 Dec 2026 21:56:21 GMT"))));
        // Another file: another date, or no date to tell.
        assert!(!listed.admits(&pin(Some("def"), Some("Fri, 04 Dec 2026 22:00:00 GMT"))));
        assert!(!pin(Some("abc"), None).admits(&pin(Some("def"), None)));
        // A response without a tag is not judged.
        assert!(listed.admits(&pin(None, None)));
        // Held to a date alone (ETags that change per response).
        let by_date = pin(None, Some("Fri, 04 Dec 2026 21:56:21 GMT"));
        assert!(by_date.admits(&pin(Some("x-7"), Some("Fri, 04 Dec 2026 21:56:21 GMT"))));
        assert!(!by_date.admits(&pin(Some("x-8"), Some("Fri, 04 Dec 2026 23:00:00 GMT"))));
        assert!(pin(None, None).admits(&pin(Some("any"), Some("any date"))));
    }

    #[test]
    fn a_version_is_the_etag_else_the_last_modified_date() {
        let mut h = HeaderMap::new();
        assert_eq!(version_tag(&h), None);
        h.insert(
            "last-modified",
            HeaderValue::from_static("Fri, 04 Dec 2026 21:56:21 GMT"),
        );
        assert_eq!(
            version_tag(&h).as_deref(),
            Some("last-modified:Fri, 04 Dec 2026 21:56:21 GMT")
        );
        h.insert("etag", HeaderValue::from_static("W/\"abc\""));
        assert_eq!(version_tag(&h).as_deref(), Some("abc"));
        h.insert("x-linked-etag", HeaderValue::from_static("\"lfs\""));
        assert_eq!(version_tag(&h).as_deref(), Some("lfs"));
    }

    #[test]
    fn chunk_plan_covers_file() {
        let p = plan_chunks(10, 4);
        assert_eq!(
            p.iter().map(|c| c.range.clone()).collect::<Vec<_>>(),
            vec![0..4, 4..8, 8..10]
        );
        assert_eq!(
            plan_chunks(0, 4),
            vec![ChunkPlan {
                index: 0,
                range: 0..0
            }]
        );
        assert_eq!(plan_chunks(8, 4).len(), 2);
    }

    #[test]
    fn redacts_credentials_and_query() {
        let u = Url::parse("https://user:pw@host/a?token=x").expect("url");
        assert_eq!(redact(&u), "https://host/a");
        let t = HttpTarget {
            url: u,
            bearer: Some("secret".into()),
            version: None,
        };
        assert!(!format!("{t:?}").contains("secret"));
    }
}
