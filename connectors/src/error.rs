//! The connectors' error type: every variant names the URL or path it concerns.

/// Result with [`ConnectorError`].
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// Errors raised while resolving or reading sources and storage locations.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The user named something we cannot parse (a source, URL, glob or option).
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        /// What kind of input it was, e.g. "source" or "glob".
        what: &'static str,
        /// The offending value (never a secret).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An HTTP request failed for good (after retries, or on a non-retryable status).
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL (without credentials).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The hub answered, but not with what a Hugging Face-compatible hub answers.
    #[error("hub {url}: {reason}")]
    Hub {
        /// The API URL.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// A file path from a listing would escape the model directory.
    #[error("unsafe file path `{path}` from {origin}: {reason}")]
    UnsafePath {
        /// The path as listed.
        path: String,
        /// Where the listing came from.
        origin: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// Downloaded bytes do not match the expected size or sha256.
    #[error("{url}: {what} mismatch: expected {expected}, got {actual}")]
    Verify {
        /// The file's URL.
        url: String,
        /// `size` or `sha256`.
        what: &'static str,
        /// What the source promised.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// An object store operation failed.
    #[error("object store {url}: {}", compact_xml_errors(&source.to_string()))]
    ObjectStore {
        /// The location.
        url: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
    /// A local I/O operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The local path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An MLflow call failed (after retries, or with a 4xx answer).
    #[error("MLflow {server}: {call}: {reason}")]
    Mlflow {
        /// The call, e.g. `POST model-versions/create`.
        call: String,
        /// The tracking server.
        server: String,
        /// MLflow's `error_code`, e.g. `RESOURCE_ALREADY_EXISTS`.
        code: Option<String>,
        /// What went wrong.
        reason: String,
    },
    /// A webhook delivery failed (after retries, or on a non-retryable status).
    #[error("webhook POST {url}: {reason}")]
    Webhook {
        /// The endpoint, without query string or credentials.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// No files matched a source.
    #[error("source {0} matched no files")]
    Empty(String),
    /// The source replaced or rewrote a file while it was being read: what
    /// was read is a mix of two versions and is not kept.
    #[error(
        "{url}: changed while it was being read (version {listed} when listed, {now} now); \
         it is not recorded, and the next run reads the new version"
    )]
    Changed {
        /// The file's URL.
        url: String,
        /// Its version tag (ETag, Last-Modified, local inode-mtime-size) when listed.
        listed: String,
        /// Its version tag now.
        now: String,
    },
}

impl ConnectorError {
    /// Shorthand for [`ConnectorError::Invalid`].
    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// True when the error is the user's input (exit code 2) rather than a failed job.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. } | Self::UnsafePath { .. } | Self::Empty(_)
        )
    }
}

/// `text` with every S3-style XML error body (`<?xml …><Error><Code>…`)
/// replaced by its code and message: object_store puts the whole response
/// body in its errors, request and host ids included, several lines each.
pub fn compact_xml_errors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<?xml") {
        out.push_str(&rest[..start]);
        let body = &rest[start..];
        let end = body
            .find("</Error>")
            .map_or(body.len(), |e| e + "</Error>".len());
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let close = format!("</{name}>");
            let from = body[..end].find(&open)? + open.len();
            let to = body[from..end].find(&close)? + from;
            Some(body[from..to].trim().to_string())
        };
        match (tag("Code"), tag("Message")) {
            (Some(c), Some(m)) => out.push_str(&format!("{c}: {m}")),
            (Some(c), None) => out.push_str(&c),
            _ => out.push_str("(an XML error body)"),
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_error_bodies_shrink_to_code_and_message() {
        let text = "listing s3://nobucket/lake: 404 Not Found: <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>nobucket</BucketName><RequestId>ABC</RequestId><HostId>xyz=</HostId></Error>; then more";
        assert_eq!(
            compact_xml_errors(text),
            "listing s3://nobucket/lake: 404 Not Found: NoSuchBucket: The specified bucket does not exist; then more"
        );
        assert_eq!(compact_xml_errors("plain"), "plain");
    }
}
