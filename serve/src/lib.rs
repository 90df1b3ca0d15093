//! `weightlake serve`: a read-only Hugging Face-compatible endpoint over a lake.
//!
//! Unmodified `huggingface_hub` clients (`snapshot_download`, `hf_hub_download`)
//! and weightlake's own hub source fetch models from it:
//!
//! - `GET /api/models/{repo}[/revision/{rev}]`: the revision's commit sha and
//!   its files (`siblings` with sizes and LFS sha256).
//! - `HEAD|GET /{repo}/resolve/{rev}/{path}`: a file, with `Range`, `ETag` (its
//!   sha256), `X-Repo-Commit`, `X-Linked-Etag` and `X-Linked-Size`. A HEAD by
//!   alias, version or branch answers 302 to the file at its commit, so a
//!   client that GETs where its HEAD ended (huggingface_hub) gets the version
//!   the HEAD announced, even if the alias moves in between.
//! - `GET /api/models/{repo}/tree/{rev}[/{dir}][?recursive=true]`,
//!   `GET /api/models/{repo}/refs` (a gold model's aliases and version
//!   numbers are its tags), `GET /api/models/{repo}/commits/{rev}` (its
//!   versions, newest first), `GET /api/models` and `POST
//!   /api/models/{repo}/paths-info/{rev}` (the one read-only POST): the
//!   listings `list_repo_files`, `list_repo_tree`, `list_repo_refs`,
//!   `list_repo_commits`, `list_models` and `get_paths_info` read.
//!
//! `repo` is a gold model name (revision: an alias, a version number, `main` for
//! the latest, or the commit sha the API returned) or else a silver model id
//! (revision: the silver revision; not with [`Server::gold_only`]). Model
//! info tags each `weightlake:gold` or `weightlake:silver`. Files are rebuilt
//! from silver as they are sent, one content part at a time: nothing holds a whole file, a whole GET is
//! checked against the file's sha256 as it streams (a mismatch aborts the
//! response), and only files named by a model's manifest can be read: any other
//! path is a 404.

mod catalog;
mod routes;
mod tree;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};
use weightlake_jobs::lake::Lake;

pub use catalog::Catalog;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A bound server; [`Server::run`] serves until the process ends.
pub struct Server {
    listener: TcpListener,
    catalog: Arc<Catalog>,
}

impl Server {
    /// Bind `addr` (e.g. `127.0.0.1:8080`; port 0 picks one) to serve `lake`.
    pub async fn bind(addr: &str, lake: Lake) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self {
            listener,
            catalog: Arc::new(Catalog::new(lake)),
        })
    }

    /// Trust a tensor content that matched its sha256 for this long before
    /// checking it again (default 10 minutes): damage that appears on disk
    /// while the lake's tables stay the same is refused from then on.
    pub fn with_recheck_after(mut self, after: std::time::Duration) -> Self {
        // Not shared before `run`.
        if let Some(catalog) = Arc::get_mut(&mut self.catalog) {
            catalog.set_recheck_after(after);
        }
        self
    }

    /// Serve gold names only: silver model ids, whose weights no gate has
    /// passed, are not found (404).
    pub fn gold_only(mut self, on: bool) -> Self {
        // Not shared before `run`.
        if let Some(catalog) = Arc::get_mut(&mut self.catalog) {
            catalog.set_gold_only(on);
        }
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve connections forever.
    pub async fn run(self) {
        if let Ok(a) = self.listener.local_addr() {
            info!(addr = %a, "serving");
        }
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let catalog = self.catalog.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| routes::handle(catalog.clone(), req));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }
}
