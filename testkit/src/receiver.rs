//! [`WebhookReceiver`]: an HTTP endpoint on 127.0.0.1 that records the JSON
//! bodies POSTed to it (alerts, notifications), and can answer 500 to the
//! first N requests to exercise retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

#[derive(Default)]
struct Inner {
    bodies: Mutex<Vec<serde_json::Value>>,
    fail_first: AtomicUsize,
    requests: AtomicUsize,
}

/// The receiver; clones share what it received.
#[derive(Clone)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl WebhookReceiver {
    /// Start on 127.0.0.1 with an OS-chosen port. Lives as long as the runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::default());
        let st = inner.clone();
        crate::serve(listener, move |req| handle(st.clone(), req));
        Ok(Self { addr, inner })
    }

    /// The URL to POST to (`/hook`).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answer 500 to the next `n` requests.
    pub fn fail_first(&self, n: usize) {
        self.inner.fail_first.store(n, Ordering::SeqCst);
    }

    /// Requests seen, including failed ones.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// The JSON bodies accepted so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.inner
            .bodies
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }

    /// Wait until `n` bodies arrived or `timeout` passed; what arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let t = Instant::now();
        while self.received().len() < n && t.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.received()
    }
}

async fn handle(
    st: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let reply = |status: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = status;
        Ok(r)
    };
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED);
    }
    let failing = st
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return reply(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST);
    };
    match serde_json::from_slice(&body.to_bytes()) {
        Ok(v) => {
            if let Ok(mut b) = st.bodies.lock() {
                b.push(v);
            }
            reply(StatusCode::NO_CONTENT)
        }
        Err(_) => reply(StatusCode::BAD_REQUEST),
    }
}
