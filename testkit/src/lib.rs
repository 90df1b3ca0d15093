//! Test fixtures for weightlake.
//!
//! [`HttpFixture`] is an in-process HTTP/1.1 server on 127.0.0.1 that serves
//! in-memory files with `Range`, `ETag` and `HEAD`, answers a Hugging Face-shaped
//! hub API, and injects faults on demand ([`Fault`]): 5xx, 429 with
//! `Retry-After`, connection resets, truncated bodies, stalls, ignored ranges,
//! wrong `Content-Range`. [`Throttle`] emulates a WAN link per connection
//! (bandwidth cap and added latency) for benchmarks. [`WebhookReceiver`]
//! records the JSON POSTed to it.

mod receiver;

pub use receiver::WebhookReceiver;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A fault applied to the next matching GET of a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Serve this request normally (to skip past one request in the queue).
    Pass,
    /// Answer with this status (e.g. 500, 503).
    Status(u16),
    /// Answer 429 with `Retry-After: secs`.
    TooManyRequests(u64),
    /// Send this many body bytes, then reset the connection.
    Reset(usize),
    /// Announce the full length, send this many bytes, then end the body early.
    Truncate(usize),
    /// Send this many bytes, then stall for the duration.
    Stall(usize, Duration),
    /// Ignore `Range` and answer 200 with the whole file.
    IgnoreRange,
    /// Answer 206 with a `Content-Range` that starts at the wrong offset.
    WrongRange,
}

/// Per-connection WAN emulation: a bandwidth cap and added latency per response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throttle {
    /// Bytes per second per response (0 = unlimited).
    pub bytes_per_sec: u64,
    /// Added before each response's headers.
    pub latency: Duration,
}

#[derive(Default)]
struct State {
    files: Mutex<HashMap<String, (Bytes, String)>>,
    faults: Mutex<VecDeque<Fault>>,
    no_ranges: Mutex<bool>,
    no_length: Mutex<bool>,
    throttle: Mutex<Throttle>,
    hub: Mutex<Option<HubRepo>>,
    redirect_to: Mutex<Option<String>>,
    auth_seen: Mutex<Vec<Option<String>>>,
    requests: AtomicUsize,
    bytes_sent: AtomicUsize,
}

#[derive(Clone)]
struct HubRepo {
    repo: String,
    commit: String,
    files: Vec<(String, bool)>,
}

/// Serve HTTP/1.1 on `listener` with `handle`, one task per connection,
/// for as long as the runtime lives.
pub(crate) fn serve<H, F, B>(listener: TcpListener, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
}

/// The in-process test server. Dropping it stops nothing; it lives as long as
/// the runtime that started it.
#[derive(Clone)]
pub struct HttpFixture {
    addr: SocketAddr,
    state: Arc<State>,
}

impl HttpFixture {
    /// Start a server on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    /// Start a server on `addr`.
    pub async fn start_on(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        serve(listener, move |req| handle(st.clone(), req));
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of a served file.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// Serve `data` at `/path`.
    pub fn add_file(&self, path: &str, data: impl Into<Bytes>) {
        let data: Bytes = data.into();
        // The ETag is computed once here, not per request (files can be GiBs).
        let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&data))[..16]);
        lock(&self.state.files).insert(path.trim_start_matches('/').to_string(), (data, etag));
    }

    /// Queue faults; each is used by one GET of a file, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state.faults).extend(faults);
    }

    /// Faults still queued.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state.faults).len()
    }

    /// Ignore every `Range` header (answer 200 with the whole file).
    pub fn set_no_ranges(&self, on: bool) {
        *lock(&self.state.no_ranges) = on;
    }

    /// Send bodies chunked, without `Content-Length` (and ignore ranges).
    pub fn set_no_length(&self, on: bool) {
        *lock(&self.state.no_length) = on;
    }

    /// Emulate a WAN link.
    pub fn set_throttle(&self, t: Throttle) {
        *lock(&self.state.throttle) = t;
    }

    /// Answer the hub API for `repo` at `commit` with these served files;
    /// `true` marks an LFS file (listed with its sha256).
    pub fn set_hub_repo(&self, repo: &str, commit: &str, files: &[(&str, bool)]) {
        *lock(&self.state.hub) = Some(HubRepo {
            repo: repo.to_string(),
            commit: commit.to_string(),
            files: files.iter().map(|(p, l)| (p.to_string(), *l)).collect(),
        });
    }

    /// Redirect `resolve` downloads to this base URL (another server = another host).
    pub fn redirect_resolve_to(&self, base: Option<String>) {
        *lock(&self.state.redirect_to) = base;
    }

    /// The `Authorization` header of every request received, in order.
    pub fn auth_seen(&self) -> Vec<Option<String>> {
        lock(&self.state.auth_seen).clone()
    }

    /// Requests received.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Body bytes sent.
    pub fn bytes_sent(&self) -> usize {
        self.state.bytes_sent.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn parse_range(h: Option<&HeaderValue>, len: u64) -> Option<(u64, u64)> {
    let s = h?.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = s.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        b.parse::<u64>().ok()?.min(len.saturating_sub(1))
    };
    (start <= end && start < len).then_some((start, end + 1))
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    st.requests.fetch_add(1, Ordering::Relaxed);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    lock(&st.auth_seen).push(auth);
    let path = req.uri().path().trim_start_matches('/').to_string();
    let throttle = *lock(&st.throttle);
    if !throttle.latency.is_zero() {
        tokio::time::sleep(throttle.latency).await;
    }
    if let Some(r) = hub_api(&st, &path) {
        return Ok(r);
    }
    // Hub downloads: /{org}/{name}/resolve/{commit}/{path}
    let mut file_path = path.clone();
    if let Some(hub) = lock(&st.hub).clone() {
        let prefix = format!("{}/resolve/", hub.repo);
        if let Some(rest) = path.strip_prefix(&prefix) {
            let Some((commit, p)) = rest.split_once('/') else {
                return Ok(full(StatusCode::NOT_FOUND, ""));
            };
            if commit != hub.commit {
                return Ok(full(StatusCode::NOT_FOUND, "unknown revision"));
            }
            if let Some(base) = lock(&st.redirect_to).clone() {
                let mut r = full(StatusCode::FOUND, "");
                if let Ok(v) = HeaderValue::from_str(&format!("{base}/{p}")) {
                    r.headers_mut().insert("location", v);
                }
                return Ok(r);
            }
            file_path = p.to_string();
        }
    }
    let Some((data, etag)) = lock(&st.files).get(&file_path).cloned() else {
        return Ok(full(StatusCode::NOT_FOUND, "not found"));
    };
    let len = data.len() as u64;
    let no_length = *lock(&st.no_length);
    let no_ranges = *lock(&st.no_ranges) || no_length;
    let fault = if req.method() == Method::GET {
        lock(&st.faults).pop_front()
    } else {
        None
    };
    match fault {
        Some(Fault::Status(code)) => {
            return Ok(full(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "injected",
            ));
        }
        Some(Fault::TooManyRequests(secs)) => {
            let mut r = full(StatusCode::TOO_MANY_REQUESTS, "slow down");
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            return Ok(r);
        }
        _ => {}
    }
    let range = if no_ranges || fault == Some(Fault::IgnoreRange) {
        None
    } else {
        parse_range(req.headers().get("range"), len)
    };
    if req.headers().contains_key("range")
        && range.is_none()
        && !no_ranges
        && fault != Some(Fault::IgnoreRange)
        && len > 0
    {
        let mut r = full(StatusCode::RANGE_NOT_SATISFIABLE, "");
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
            r.headers_mut().insert(CONTENT_RANGE, v);
        }
        return Ok(r);
    }
    let (start, end, status) = match range {
        Some((s, e)) => (s, e, StatusCode::PARTIAL_CONTENT),
        None => (0, len, StatusCode::OK),
    };
    let body = data.slice(start as usize..end as usize);
    let announced = body.len();
    let (send, tail): (Bytes, Tail) = match fault {
        Some(Fault::Reset(n)) => (body.slice(..n.min(body.len())), Tail::Error),
        Some(Fault::Truncate(n)) => (body.slice(..n.min(body.len())), Tail::Error),
        Some(Fault::Stall(n, d)) => (body.slice(..n.min(body.len())), Tail::Stall(d)),
        _ => (body, Tail::End),
    };
    let is_head = req.method() == Method::HEAD;
    let stream_body = if is_head { Bytes::new() } else { send };
    st.bytes_sent
        .fetch_add(stream_body.len(), Ordering::Relaxed);
    let stream = paced(stream_body, throttle.bytes_per_sec, tail);
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    if !no_length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(announced as u64));
        h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let shown_start = if fault == Some(Fault::WrongRange) {
            start + 1
        } else {
            start
        };
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", shown_start, end - 1, len))
        {
            h.insert(CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

enum Tail {
    End,
    Error,
    Stall(Duration),
}

type FrameStream = futures::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>;

/// The body as frames of at most 64 KiB, paced to `rate` bytes/s, then `tail`.
fn paced(body: Bytes, rate: u64, tail: Tail) -> FrameStream {
    const PIECE: usize = 64 << 10;
    let pieces: Vec<Bytes> = (0..body.len().div_ceil(PIECE))
        .map(|i| body.slice(i * PIECE..((i + 1) * PIECE).min(body.len())))
        .collect();
    let start = tokio::time::Instant::now();
    let head = futures::stream::iter(pieces).scan(0u64, move |sent, piece| {
        *sent += piece.len() as u64;
        let due = if rate > 0 {
            Some(start + Duration::from_secs_f64(*sent as f64 / rate as f64))
        } else {
            None
        };
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            Some(Ok(Frame::data(piece)))
        }
    });
    let tail: FrameStream = match tail {
        Tail::End => futures::stream::empty().boxed(),
        Tail::Error => {
            futures::stream::once(async { Err(std::io::Error::other("injected reset")) }).boxed()
        }
        Tail::Stall(d) => futures::stream::once(async move {
            tokio::time::sleep(d).await;
            Err(std::io::Error::other("stalled"))
        })
        .boxed(),
    };
    head.chain(tail).boxed()
}

fn hub_api(st: &State, path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("api/models/")?;
    let hub = lock(&st.hub).clone()?;
    let rev_part = rest.strip_prefix(&format!("{}/revision/", hub.repo));
    let Some(_rev) = rev_part else {
        return Some(full(
            StatusCode::NOT_FOUND,
            "{\"error\":\"Repository not found\"}",
        ));
    };
    let files = lock(&st.files);
    let siblings: Vec<serde_json::Value> = hub
        .files
        .iter()
        .map(|(p, lfs)| {
            let data = files.get(p).map(|f| f.0.clone()).unwrap_or_default();
            // Like git's blob id, it names the content (here: by its sha256).
            let blob = &hex::encode(Sha256::digest(&data))[..40];
            let mut v = serde_json::json!({ "rfilename": p, "size": data.len(), "blobId": blob });
            if *lfs {
                v["lfs"] = serde_json::json!({ "sha256": hex::encode(Sha256::digest(&data)), "size": data.len(), "pointerSize": 134 });
            }
            v
        })
        .collect();
    let body = serde_json::json!({ "id": hub.repo, "sha": hub.commit, "siblings": siblings });
    let mut r = full(StatusCode::OK, body.to_string());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    Some(r)
}
