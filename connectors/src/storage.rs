//! Lake and source locations (`file://`, plain paths, `s3://`, `gs://`) and the
//! `object_store` options that reach them.
//!
//! Credentials are never part of a [`StorageConfig`]: they come from the usual
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `GOOGLE_APPLICATION_CREDENTIALS`…) so that they never land in YAML, logs or
//! tables. S3 commits rely on conditional put (`If-None-Match: *`), which MinIO,
//! AWS S3 and GCS support; no locking service and no unsafe rename are used.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use serde::Deserialize;
use url::Url;

use crate::{ConnectorError, Result};

/// Storage settings for S3-compatible and GCS locations (the YAML `storage:` block).
///
/// ```yaml
/// storage: { endpoint: http://127.0.0.1:9000, region: us-east-1, allow_http: true }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// S3 endpoint URL, for MinIO or another S3-compatible server.
    /// Default: `AWS_ENDPOINT_URL` from the environment, else AWS itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region. Default: `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain `http://` endpoints. Default: true when the endpoint is `http://`.
    #[serde(default)]
    pub allow_http: Option<bool>,
    /// Use virtual-hosted-style requests (`bucket.host`). Default: false (path style,
    /// which MinIO needs).
    #[serde(default)]
    pub virtual_hosted_style: Option<bool>,
}

impl StorageConfig {
    /// Options understood by `object_store` (and by deltalake) for `url`,
    /// merged from this config and the environment.
    pub fn options_for(&self, url: &Url) -> HashMap<String, String> {
        let mut o = HashMap::new();
        if url.scheme() == "s3" || url.scheme() == "s3a" {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let endpoint = self.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
            let region = self
                .region
                .clone()
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into());
            o.insert("aws_region".into(), region);
            if let Some(ep) = &endpoint {
                o.insert("aws_endpoint".into(), ep.clone());
                let http = self.allow_http.unwrap_or(ep.starts_with("http://"));
                o.insert("aws_allow_http".into(), http.to_string());
            } else if let Some(h) = self.allow_http {
                o.insert("aws_allow_http".into(), h.to_string());
            }
            let vhost = self.virtual_hosted_style.unwrap_or(false);
            o.insert("aws_virtual_hosted_style_request".into(), vhost.to_string());
            for (env_key, opt) in [
                ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                ("AWS_SESSION_TOKEN", "aws_session_token"),
            ] {
                if let Some(v) = env(env_key) {
                    o.insert(opt.into(), v);
                }
            }
            o.insert("aws_conditional_put".into(), "etag".into());
        } else if url.scheme() == "gs" {
            for (env_key, opt) in [
                ("GOOGLE_SERVICE_ACCOUNT", "google_service_account"),
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "google_application_credentials",
                ),
            ] {
                if let Ok(v) = std::env::var(env_key) {
                    o.insert(opt.into(), v);
                }
            }
        }
        o
    }

    /// An object store rooted at `url` (a directory-like prefix) and the path of
    /// `url` inside it.
    pub fn object_store(&self, url: &Url) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
        if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|_| {
                ConnectorError::invalid("location", url.as_str(), "not a local path")
            })?;
            if !dir.is_dir() {
                let reason = if dir.exists() {
                    "not a directory"
                } else {
                    "no such directory"
                };
                return Err(ConnectorError::invalid("location", url.as_str(), reason));
            }
            let fs =
                object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|source| {
                    ConnectorError::ObjectStore {
                        url: url.to_string(),
                        source,
                    }
                })?;
            return Ok((Arc::new(fs), StorePath::default()));
        }
        let (store, path) =
            object_store::parse_url_opts(url, self.options_for(url)).map_err(|source| {
                ConnectorError::ObjectStore {
                    url: url.to_string(),
                    source,
                }
            })?;
        Ok((Arc::from(store), path))
    }
}

/// Parse a location: `file://…`, `s3://bucket/prefix`, `gs://bucket/prefix`, or a
/// plain local path (made absolute against the current directory).
///
/// The returned URL has no trailing slash.
pub fn parse_location(s: &str) -> Result<Url> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ConnectorError::invalid("location", s, "empty"));
    }
    let url = if s.contains("://") {
        let u = Url::parse(s).map_err(|e| ConnectorError::invalid("location", s, e.to_string()))?;
        match u.scheme() {
            "file" | "s3" | "s3a" | "gs" => u,
            other => {
                return Err(ConnectorError::invalid(
                    "location",
                    s,
                    format!("unsupported scheme `{other}` (use file://, s3://, gs:// or a path)"),
                ));
            }
        }
    } else {
        // `s3:/bucket/x` (a slash short) would be a local directory `s3:`.
        if let Some((scheme, _)) = s.split_once(":/")
            && ["s3", "s3a", "gs", "file", "http", "https", "hf"]
                .contains(&scheme.to_ascii_lowercase().as_str())
        {
            return Err(ConnectorError::invalid(
                "location",
                s,
                format!("did you mean `{scheme}://…`? (`{scheme}:/` takes it for a local path)"),
            ));
        }
        let p = FsPath::new(s);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| ConnectorError::Io {
                    path: ".".into(),
                    source,
                })?
                .join(p)
        };
        Url::from_directory_path(&abs)
            .map_err(|_| ConnectorError::invalid("location", s, "not a valid local path"))?
    };
    if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(ConnectorError::invalid(
            "location",
            s,
            "missing bucket name",
        ));
    }
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// `base` joined with a relative `child` path (`lake` + `bronze/model_files`).
pub fn join(base: &Url, child: &str) -> Url {
    let mut u = base.clone();
    let path = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        child.trim_start_matches('/')
    );
    u.set_path(&path);
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        let u = parse_location("s3://lake/prefix/").expect("s3");
        assert_eq!(u.as_str(), "s3://lake/prefix");
        // A slash short is a typo, not a local directory named `s3:`.
        for typo in ["s3:/lake/prefix", "GS:/b/x", "file:/tmp/lake"] {
            let err = parse_location(typo).expect_err(typo).to_string();
            assert!(err.contains("did you mean"), "{err}");
        }
        assert_eq!(
            join(&u, "bronze/files").as_str(),
            "s3://lake/prefix/bronze/files"
        );
        let f = parse_location("/tmp/x").expect("path");
        assert_eq!(f.as_str(), "file:///tmp/x");
        assert!(parse_location("ftp://x/y").is_err());
        assert!(parse_location("s3:///nobucket").is_err());
        assert!(parse_location("").is_err());
    }

    #[test]
    fn s3_options_use_path_style_and_conditional_put() {
        let cfg = StorageConfig {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let o = cfg.options_for(&Url::parse("s3://b/p").expect("url"));
        assert_eq!(o["aws_allow_http"], "true");
        assert_eq!(o["aws_virtual_hosted_style_request"], "false");
        assert_eq!(o["aws_conditional_put"], "etag");
    }
}
