//! One range (or one whole stream) fetched with retries that resume where the
//! last attempt stopped.
//!
//! Retried: connect errors, resets, 408/429/5xx (429 and 503 honour `Retry-After`),
//! no byte for `stall_timeout`, a truncated body, a `Content-Range` that does not
//! start where we asked. Not retried: other 4xx (404, 401, 416…), redirect loops.
//! A server that answers 200 to a `Range` request is read from the start and the
//! bytes before the range are skipped.

use std::ops::Range;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{RANGE, RETRY_AFTER};
use tracing::{debug, warn};

use super::{HttpClient, HttpTarget, redact};
use crate::{ConnectorError, Result};

/// Where fetched bytes go. `offset` is the absolute offset of `data` in the file.
///
/// A sink may be handed the same offsets again when a stream restarts from the
/// beginning (servers without `Range`): writes at an offset are idempotent.
pub trait RangeSink: Send {
    /// Accept `data`, which belongs at absolute file offset `offset`. A sink may
    /// wait here (backpressure): the download of this range pauses meanwhile.
    fn write(
        &mut self,
        offset: u64,
        data: &[u8],
    ) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Accept `data` by value (object stores hand over whole ranges): a sink
    /// that can keep the buffer avoids a copy. Default: [`RangeSink::write`].
    fn write_owned(
        &mut self,
        offset: u64,
        data: Bytes,
    ) -> impl Future<Output = std::io::Result<()>> + Send {
        async move { self.write(offset, &data).await }
    }
}

/// Collects one chunk (a byte range of a file) in memory. The buffer is
/// allocated on the first write; a whole range handed over by value is kept
/// as it is.
#[derive(Debug)]
pub struct ChunkBuffer {
    start: u64,
    len: usize,
    buf: Vec<u8>,
    whole: Option<Bytes>,
}

impl ChunkBuffer {
    /// A buffer for `range`.
    pub fn new(range: &Range<u64>) -> Self {
        Self {
            start: range.start,
            len: (range.end - range.start) as usize,
            buf: Vec::new(),
            whole: None,
        }
    }

    /// The collected bytes (zeros where nothing was written).
    pub fn into_inner(self) -> Vec<u8> {
        self.into_bytes().into()
    }

    /// The collected bytes, without a copy when the range was handed over whole.
    pub fn into_bytes(self) -> Bytes {
        match self.whole {
            Some(b) => b,
            None if self.buf.is_empty() => Bytes::from(vec![0; self.len]),
            None => Bytes::from(self.buf),
        }
    }

    /// The buffer to write into, materialised (with a kept whole range) on
    /// first use.
    fn materialised(&mut self) -> &mut Vec<u8> {
        if self.buf.len() != self.len {
            self.buf = match self.whole.take() {
                Some(b) => b.into(),
                None => vec![0; self.len],
            };
        }
        &mut self.buf
    }

    fn put(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let rel = offset.checked_sub(self.start).map(|r| r as usize);
        match rel {
            Some(rel) if rel + data.len() <= self.len => {
                self.materialised()[rel..rel + data.len()].copy_from_slice(data);
                Ok(())
            }
            _ => Err(std::io::Error::other(format!(
                "{} bytes at offset {offset} fall outside chunk {}..{}",
                data.len(),
                self.start,
                self.start + self.len as u64
            ))),
        }
    }
}

impl RangeSink for ChunkBuffer {
    async fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.put(offset, data)
    }

    async fn write_owned(&mut self, offset: u64, data: Bytes) -> std::io::Result<()> {
        if offset == self.start && data.len() == self.len && self.buf.is_empty() {
            self.whole = Some(data);
            Ok(())
        } else {
            self.put(offset, &data)
        }
    }
}

enum Failure {
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fatal(ConnectorError),
}

fn retry(reason: impl Into<String>) -> Failure {
    Failure::Retry {
        reason: reason.into(),
        after: None,
    }
}

impl HttpClient {
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.cfg.min_backoff)
            .with_max_delay(self.cfg.max_backoff)
            .with_max_times(self.cfg.max_retries as usize)
            .with_jitter()
            .build()
    }

    /// Fetch `range` of `target` into `sink`, retrying and resuming.
    ///
    /// `file_len` is the file's size when known; it lets a 200 answer be used.
    pub async fn fetch_range<S: RangeSink>(
        &self,
        target: &HttpTarget,
        range: Range<u64>,
        sink: &mut S,
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let mut pos = range.start;
        let mut backoff = self.backoff();
        loop {
            match self.attempt(target, pos, Some(range.end), sink).await {
                Ok(()) => return Ok(()),
                Err((Failure::Fatal(e), _)) => return Err(e),
                Err((Failure::Retry { reason, after }, reached)) => {
                    pos = reached;
                    self.wait_or_give_up(target, &mut backoff, reason, after)
                        .await?;
                }
            }
        }
    }

    /// Read the whole body of `target` as one stream (for servers without `Range`).
    /// A failed attempt restarts from byte 0. Returns the number of bytes read.
    pub async fn fetch_stream<S: RangeSink>(
        &self,
        target: &HttpTarget,
        expected_len: Option<u64>,
        sink: &mut S,
    ) -> Result<u64> {
        let mut backoff = self.backoff();
        loop {
            match self.attempt_stream(target, expected_len, sink).await {
                Ok(n) => return Ok(n),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { reason, after }) => {
                    self.wait_or_give_up(target, &mut backoff, reason, after)
                        .await?;
                }
            }
        }
    }

    async fn wait_or_give_up(
        &self,
        target: &HttpTarget,
        backoff: &mut impl Iterator<Item = Duration>,
        reason: String,
        after: Option<Duration>,
    ) -> Result<()> {
        let Some(delay) = backoff.next() else {
            return Err(ConnectorError::Http {
                url: redact(&target.url),
                reason: format!("gave up after {} retries: {reason}", self.cfg.max_retries),
            });
        };
        // Retry-After is honoured, but bounded so a hostile server cannot park us.
        let delay = after.map_or(delay, |a| a.min(self.cfg.max_backoff * 6));
        warn!(url = %redact(&target.url), %reason, delay_ms = delay.as_millis() as u64, "retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn attempt<S: RangeSink>(
        &self,
        target: &HttpTarget,
        start: u64,
        end: Option<u64>,
        sink: &mut S,
    ) -> std::result::Result<(), (Failure, u64)> {
        let mut pos = start;
        let result = self.attempt_inner(target, &mut pos, end, sink).await;
        result.map_err(|f| (f, pos))
    }

    async fn attempt_inner<S: RangeSink>(
        &self,
        target: &HttpTarget,
        pos: &mut u64,
        end: Option<u64>,
        sink: &mut S,
    ) -> std::result::Result<(), Failure> {
        let range = end.map(|e| *pos..e);
        let mut resp = self.send_once(target, range.clone()).await?;
        if let Some(listed) = &target.version {
            let now = super::Pin::of(resp.headers());
            if !listed.admits(&now) {
                return Err(Failure::Fatal(ConnectorError::Changed {
                    url: redact(&target.url),
                    listed: listed.tag.clone().unwrap_or_default(),
                    now: now.tag.unwrap_or_default(),
                }));
            }
        }
        // 200 to a ranged request: the server ignored Range; skip to our start.
        let mut skip = if resp.status() == StatusCode::OK {
            *pos
        } else {
            0
        };
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            let cr = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let first = cr
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            if first != Some(*pos) {
                return Err(retry(format!(
                    "Content-Range `{cr}` does not start at {pos}",
                    pos = *pos
                )));
            }
        }
        loop {
            let next = tokio::time::timeout(self.cfg.stall_timeout, resp.chunk()).await;
            let bytes = match next {
                Err(_) => {
                    return Err(retry(format!(
                        "stalled: no byte for {:?}",
                        self.cfg.stall_timeout
                    )));
                }
                Ok(Err(e)) => return Err(retry(format!("body: {}", http_error(e)))),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(b))) => b,
            };
            let mut data = &bytes[..];
            if skip > 0 {
                let n = (skip as usize).min(data.len());
                data = &data[n..];
                skip -= n as u64;
            }
            if let Some(end) = end {
                let room = (end - *pos) as usize;
                data = &data[..data.len().min(room)];
            }
            if !data.is_empty() {
                sink.write(*pos, data).await.map_err(|e| {
                    Failure::Fatal(ConnectorError::Io {
                        path: redact(&target.url),
                        source: e,
                    })
                })?;
                *pos += data.len() as u64;
            }
            if end.is_some_and(|e| *pos >= e) {
                return Ok(());
            }
        }
        match end {
            Some(e) if *pos < e => Err(retry(format!(
                "truncated body: stopped at byte {} of range end {e}",
                *pos
            ))),
            _ => Ok(()),
        }
    }

    async fn attempt_stream<S: RangeSink>(
        &self,
        target: &HttpTarget,
        expected_len: Option<u64>,
        sink: &mut S,
    ) -> std::result::Result<u64, Failure> {
        let mut pos = 0;
        self.attempt_inner(target, &mut pos, expected_len, sink)
            .await?;
        if let Some(n) = expected_len
            && pos != n
        {
            return Err(retry(format!("stream ended at byte {pos}, expected {n}")));
        }
        Ok(pos)
    }

    async fn send_once(
        &self,
        target: &HttpTarget,
        range: Option<Range<u64>>,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let mut req = self
            .client
            .get(target.url.clone())
            .headers(target.headers());
        if let Some(r) = &range {
            req = req.header(
                RANGE,
                format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
            );
        }
        let resp = match tokio::time::timeout(self.cfg.stall_timeout, req.send()).await {
            Err(_) => return Err(retry("stalled waiting for response headers")),
            Ok(Err(e)) if e.is_redirect() || e.is_builder() => {
                return Err(Failure::Fatal(ConnectorError::Http {
                    url: redact(&target.url),
                    reason: http_error(e),
                }));
            }
            Ok(Err(e)) => return Err(retry(http_error(e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        debug!(url = %redact(&target.url), %status, ?range, "response");
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            let after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Retry {
                reason: format!("HTTP {status}"),
                after,
            });
        }
        Err(Failure::Fatal(ConnectorError::Http {
            url: redact(&target.url),
            reason: format!("HTTP {status}"),
        }))
    }
}

/// Send one request with retries (used for probes and API calls); the caller
/// reads the body.
pub(crate) async fn send_with_retry(
    client: &HttpClient,
    target: &HttpTarget,
    range: Option<Range<u64>>,
) -> Result<reqwest::Response> {
    let mut backoff = client.backoff();
    loop {
        match client.send_once(target, range.clone()).await {
            Ok(r) => return Ok(r),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry { reason, after }) => {
                client
                    .wait_or_give_up(target, &mut backoff, reason, after)
                    .await?
            }
        }
    }
}

/// A reqwest error as text without its URL: the caller names the URL
/// redacted, and the full one may carry a presigned query
/// (`X-Amz-Signature=…`, `token=…`) that must not reach logs or tables.
pub(crate) fn http_error(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_buffer_rejects_out_of_range_writes() {
        let mut b = ChunkBuffer::new(&(10..14));
        b.put(10, b"ab").expect("in range");
        b.put(12, b"cd").expect("in range");
        assert!(b.put(13, b"xy").is_err());
        assert!(b.put(9, b"x").is_err());
        assert_eq!(b.into_inner(), b"abcd");
    }

    #[tokio::test]
    async fn a_whole_range_handed_over_is_kept_without_a_copy() {
        let data = Bytes::from(vec![7u8; 4]);
        let ptr = data.as_ptr();
        let mut b = ChunkBuffer::new(&(10..14));
        b.write_owned(10, data).await.expect("whole");
        let out = b.into_bytes();
        assert_eq!((out.as_ptr(), &out[..]), (ptr, &[7u8; 4][..]));
        // A partial range is copied in; a later write still lands.
        let mut b = ChunkBuffer::new(&(10..14));
        b.write_owned(10, Bytes::from_static(b"ab"))
            .await
            .expect("part");
        b.write(12, b"cd").await.expect("rest");
        assert_eq!(b.into_inner(), b"abcd");
        // A whole range, then a rewrite of part of it (a restarted stream).
        let mut b = ChunkBuffer::new(&(0..4));
        b.write_owned(0, Bytes::from_static(b"wxyz"))
            .await
            .expect("whole");
        b.write(1, b"X").await.expect("rewrite");
        assert_eq!(b.into_inner(), b"wXyz");
    }
}
