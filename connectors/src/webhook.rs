//! Webhooks: POST a JSON document to a URL (alerts, notifications).
//!
//! A delivery is retried with jittered exponential backoff on connection
//! errors, timeouts, 429 and 5xx; any other answer outside 2xx fails at once.
//! The URL's query string may carry a token, so errors name the host and
//! path only.
//!
//! ```no_run
//! use weightlake_connectors::webhook::Webhook;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let hook = Webhook::new("http://127.0.0.1:8080/alerts")?;
//! hook.post(&serde_json::json!({ "kind": "throughput_drop" })).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use url::Url;

use crate::{ConnectorError, Result};

/// One webhook endpoint.
#[derive(Clone)]
pub struct Webhook {
    url: Url,
    http: reqwest::Client,
    retries: usize,
    min_backoff: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.redacted())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook at `url` (http or https).
    pub fn new(url: &str) -> Result<Self> {
        let parsed = Url::parse(url)
            .map_err(|e| ConnectorError::invalid("webhook URL", redact(url), e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConnectorError::invalid(
                "webhook URL",
                redact(url),
                "only http(s) webhooks are supported",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ConnectorError::invalid("webhook client", redact(url), e.to_string()))?;
        Ok(Self {
            url: parsed,
            http,
            retries: 3,
            min_backoff: Duration::from_millis(200),
        })
    }

    /// Retries after the first attempt (default 3), and the first backoff.
    pub fn with_retries(mut self, retries: usize, min_backoff: Duration) -> Self {
        self.retries = retries;
        self.min_backoff = min_backoff;
        self
    }

    /// The URL without its query string and credentials, for logs.
    pub fn redacted(&self) -> String {
        redact(self.url.as_str())
    }

    /// POST `body` as JSON; Ok once the endpoint answers 2xx.
    pub async fn post(&self, body: &serde_json::Value) -> Result<()> {
        let text = body.to_string();
        let attempt = || async {
            let resp = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(text.clone())
                .send()
                .await
                .map_err(|e| (true, format!("{e}")))?;
            let status = resp.status();
            if status.is_success() {
                Ok(())
            } else {
                let retry = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                Err((retry, format!("answered {status}")))
            }
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(self.min_backoff)
                    .with_max_times(self.retries)
                    .with_jitter(),
            )
            .when(|(retry, _)| *retry)
            .await
            .map_err(|(_, reason)| ConnectorError::Webhook {
                url: self.redacted(),
                reason,
            })
    }
}

/// `url` without userinfo and query.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '@']).next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_and_tokens_never_printed() {
        assert!(Webhook::new("ftp://x/y").is_err());
        let e = Webhook::new("not a url?token=secret").expect_err("not a URL");
        assert!(!e.to_string().contains("secret"), "{e}");
        let w = Webhook::new("https://user:pw@hooks.example/a?token=secret").expect("valid");
        assert_eq!(w.redacted(), "https://hooks.example/a");
        assert!(!format!("{w:?}").contains("secret"));
    }
}
