//! Rebuilding one file into an upload that is aborted if the export stops.

use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::info;

use super::Destination;
use crate::sql::LakeSession;
use crate::view::ViewFile;
use crate::{JobError, Result};

/// Uploads being completed, which a stopped command waits for.
static FINISHING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Woken when an upload completes.
static FINISHED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One upload being completed, counted in [`FINISHING`] while it lives.
struct Finishing;

impl Finishing {
    fn start() -> Self {
        FINISHING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Finishing
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        FINISHING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        FINISHED.notify_waiters();
    }
}

/// Wait (at most `limit`) for uploads that were being completed when their
/// export was stopped: an object store's multipart upload cut off in its
/// last step stays pending, invisible and billed. Returns how many were
/// still running at the limit.
pub async fn settle_uploads(limit: Duration) -> usize {
    let until = tokio::time::Instant::now() + limit;
    loop {
        let notified = FINISHED.notified();
        let left = FINISHING.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            return 0;
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return FINISHING.load(std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// An upload to the destination, aborted if it is dropped unfinished (the
/// export was stopped: Ctrl-C, SIGTERM, a stage timeout), so no multipart
/// upload is left pending on an object store and no staging file on disk.
struct Upload(Option<BufWriter>);

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(mut w) = self.0.take() else {
            return;
        };
        crate::on_drop::finish(async move {
            let _ = w.abort().await;
        });
    }
}

/// One file rebuilt: its path, sha256, size, and the version (ETag) the
/// destination held once it was written.
pub(crate) type Rebuilt = (String, String, u64, Option<String>);

/// Rebuild one file, hashing as it goes; upload it when `dest` is set. Fails
/// unless the bytes rebuilt have the file's size and sha256.
pub(crate) async fn rebuild(
    session: &LakeSession,
    f: &ViewFile,
    dest: Option<&Destination>,
) -> Result<Rebuilt> {
    let path = &f.entry.path;
    // `parse`, not `from`: the key is the file's path as it is (`from`
    // percent-encodes `#`, `%` and every non-ASCII character into the name).
    let key =
        match dest {
            Some((_, prefix, _)) => {
                let key = format!("{}/{}", prefix.as_ref().trim_end_matches('/'), path);
                Some(StorePath::parse(key.trim_start_matches('/')).map_err(|e| {
                    JobError::Invalid(format!("{path}: not a valid object path: {e}"))
                })?)
            }
            None => None,
        };
    let mut writer = Upload(match (dest, &key) {
        (Some((store, _, _)), Some(key)) => Some(BufWriter::new(store.clone(), key.clone())),
        _ => None,
    });
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut reader = f.reader(session, 0..f.entry.size);
    let result: Result<()> = async {
        while let Some(bytes) = reader.next().await? {
            hasher.update(&bytes);
            written += bytes.len() as u64;
            if let Some(w) = writer.0.as_mut() {
                w.write_all(&bytes)
                    .await
                    .map_err(|e| JobError::Failed(format!("{path}: write failed: {e}")))?;
            }
        }
        Ok(())
    }
    .await;
    let sha = hex::encode(hasher.finalize());
    let failure = match result {
        Err(e) => Some(e),
        Ok(()) if sha != f.entry.sha256 || written != f.entry.size => {
            Some(JobError::Corrupt(format!(
                "{path}: rebuilt {written} bytes with sha256 {sha}, expected {} bytes with {}",
                f.entry.size, f.entry.sha256
            )))
        }
        Ok(()) => None,
    };
    if let Some(e) = failure {
        if let Some(mut w) = writer.0.take() {
            let _ = w.abort().await;
        }
        return Err(e);
    }
    if let Some(mut w) = writer.0.take() {
        // Past this point an upload cannot be aborted (object_store's
        // `BufWriter` cannot abort once shutdown has begun), so it finishes
        // on a task of its own even if this export is stopped; a stopped
        // command waits for such uploads ([`settle_uploads`]).
        let finishing = Finishing::start();
        let done = tokio::spawn(async move {
            let r = w.shutdown().await;
            drop(finishing);
            r
        });
        // A failed upload is a failed job, not bad input.
        done.await
            .map_err(|e| JobError::Failed(format!("{path}: {e}")))?
            .map_err(|e| JobError::Failed(format!("{path}: upload failed: {e}")))?;
    }
    // The version the destination now holds, to tell before marking the
    // export complete whether another writer replaced it since.
    let e_tag = match (dest, &key) {
        (Some((store, _, _)), Some(key)) => store.head(key).await.ok().and_then(|m| m.e_tag),
        _ => None,
    };
    info!(file = %path, bytes = written, "rebuilt and verified");
    Ok((path.clone(), sha, written, e_tag))
}
