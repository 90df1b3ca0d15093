//! One compaction of a table at a time, across processes and machines.
//!
//! delta-rs lets two compactions read from the same version both commit: a
//! compaction removes files with `dataChange = false`, and its conflict
//! checker does not count two such removes of one file as a conflict (nor
//! does optimize pass an application transaction id through). Each commit
//! then adds its own copy of the rows, and every row of the table is
//! doubled. So `maintain` compacts a table only while it holds that table's
//! lock: an object `_system/locks/<layer>.<table>.compaction` under the lake
//! root, created with a conditional put (`If-None-Match: *` on S3, an
//! exclusive create on local disk), rewritten every [`HEARTBEAT`] while the
//! compaction runs and deleted at its end. A lock whose heartbeat is older
//! than [`STALE_AFTER`] was left by a process that died, and is taken over.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use weightlake_schemas::TableName;

use crate::lake::Lake;
use crate::{JobError, Result};

/// How often a held lock is rewritten.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock not rewritten for this long belongs to a process that died.
const STALE_AFTER: Duration = Duration::from_secs(300);

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The maintain run holding it.
    pub run_id: String,
    /// When it was last rewritten (seconds since the Unix epoch).
    pub heartbeat_at: i64,
}

/// A held compaction lock; [`CompactionLock::release`] deletes it.
pub(crate) struct CompactionLock {
    store: Arc<dyn ObjectStore>,
    path: Path,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Take the compaction lock of `table`, or say who holds it.
pub(crate) async fn acquire(
    lake: &Lake,
    table: TableName,
    run_id: &str,
) -> Result<std::result::Result<CompactionLock, Holder>> {
    let (store, prefix) = lake.storage().object_store(lake.root())?;
    let key = format!(
        "{}/_system/locks/{}.{}.compaction",
        prefix.as_ref().trim_end_matches('/'),
        table.layer,
        table.table
    );
    let path = Path::parse(key.trim_start_matches('/'))
        .map_err(|e| JobError::Invalid(format!("lock path: {e}")))?;
    let failed = |e: object_store::Error| JobError::Invalid(format!("compaction lock {path}: {e}"));
    for _ in 0..2 {
        let body = payload(run_id)?;
        let create = PutOptions::from(PutMode::Create);
        match store.put_opts(&path, body, create).await {
            Ok(_) => {
                let heartbeat = tokio::spawn(beat(store.clone(), path.clone(), run_id.to_string()));
                return Ok(Ok(CompactionLock {
                    store,
                    path,
                    heartbeat,
                }));
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(failed(e)),
        }
        let holder = match store.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(failed)?;
                serde_json::from_slice::<Holder>(&bytes).unwrap_or(Holder {
                    run_id: "unknown".into(),
                    heartbeat_at: 0,
                })
            }
            // Released between the two calls: try again.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(failed(e)),
        };
        let age = chrono::Utc::now().timestamp() - holder.heartbeat_at;
        if age <= STALE_AFTER.as_secs() as i64 {
            return Ok(Err(holder));
        }
        tracing::warn!(
            lock = %path,
            holder = %holder.run_id,
            age_s = age,
            "taking over a compaction lock whose holder stopped"
        );
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Err(JobError::Invalid(format!(
        "compaction lock {path}: could not take it; try again"
    )))
}

impl CompactionLock {
    /// Stop the heartbeat and delete the lock.
    pub async fn release(self) {
        self.heartbeat.abort();
        if let Err(e) = self.store.delete(&self.path).await {
            tracing::warn!(lock = %self.path, error = %e, "could not delete a compaction lock; it goes stale in 5 minutes");
        }
    }
}

fn payload(run_id: &str) -> Result<PutPayload> {
    let holder = Holder {
        run_id: run_id.to_string(),
        heartbeat_at: chrono::Utc::now().timestamp(),
    };
    Ok(PutPayload::from(serde_json::to_vec(&holder).map_err(
        |e| JobError::Invalid(format!("compaction lock: {e}")),
    )?))
}

async fn beat(store: Arc<dyn ObjectStore>, path: Path, run_id: String) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Ok(body) = payload(&run_id) else { return };
        if let Err(e) = store.put(&path, body).await {
            tracing::warn!(lock = %path, error = %e, "compaction lock heartbeat failed");
        }
    }
}
