//! Work on a lake that one process at a time may do, across processes and
//! machines: a lock object under `_system/locks/` at the lake root, created
//! with a conditional put (`If-None-Match: *` on S3, an exclusive create on
//! local disk), rewritten every [`HEARTBEAT`] while held and deleted at the
//! end. A lock whose heartbeat is older than [`STALE_AFTER`] was left by a
//! process that died, and is taken over; so is, at once, a lock whose holder
//! ran on this machine (same host, boot and process namespace) and whose
//! process is gone (killed outright, or stopped by a signal it did not
//! handle).
//!
//! - **Compaction of a table** (`maintain`): delta-rs lets two compactions
//!   read from the same version both commit (a compaction removes files
//!   with `dataChange = false`, which its conflict checker does not count
//!   against another such remove, and optimize passes no application
//!   transaction id through), and each adds its own copy of the rows: every
//!   row of the table doubled. A maintain that finds the lock held skips
//!   compacting that table.
//! - **Tensorise of a shard** (`tensorise`, per `i-of-N`): two overlapping
//!   runs both tensorised the same bronze files and both committed their
//!   rows. A second run waits for the first, then finds nothing left to do.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use weightlake_schemas::TableName;

use crate::lake::Lake;
use crate::{JobError, Result};

/// How often a held lock is rewritten.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// A lock not rewritten for this long belongs to a process that died.
const STALE_AFTER: Duration = Duration::from_secs(90);
/// How often a waiting run checks the lock again.
const POLL: Duration = Duration::from_secs(2);

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The maintain run holding it.
    pub run_id: String,
    /// When it was last rewritten (seconds since the Unix epoch).
    pub heartbeat_at: i64,
    /// When it was taken (microseconds since the Unix epoch; 0 when unknown).
    #[serde(default)]
    pub since: i64,
    /// The holding process, where it can be checked from the same machine.
    #[serde(default)]
    pub process: Option<Process>,
}

/// A process as another process on the same machine can check it: Linux's
/// host name, boot id and pid namespace say "same machine", the pid and its
/// start time (clock ticks after boot) say "same process" (pids are reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Process {
    /// `host/boot id/pid namespace`.
    pub machine: String,
    /// The process id.
    pub pid: u32,
    /// Its start time, field 22 of `/proc/PID/stat`.
    pub start: u64,
}

impl Process {
    /// This process, on Linux.
    fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            machine: machine()?,
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether this process ran on this machine and is gone.
    fn gone_from_here(&self) -> bool {
        machine().as_deref() == Some(self.machine.as_str())
            && start_time(self.pid) != Some(self.start)
    }
}

/// `host/boot id/pid namespace` of this machine, on Linux.
fn machine() -> Option<String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!(
        "{}/{}/{}",
        read("/proc/sys/kernel/hostname")?,
        read("/proc/sys/kernel/random/boot_id")?,
        ns.display()
    ))
}

/// The start time of live (not zombie) process `pid`, on Linux.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A held lock; [`LakeLock::release`] deletes it.
pub(crate) struct LakeLock {
    store: Arc<dyn ObjectStore>,
    path: Path,
    heartbeat: tokio::task::JoinHandle<()>,
    released: bool,
    /// When it was taken (microseconds since the Unix epoch).
    since: i64,
}

/// The name of the compaction lock of `table`.
pub(crate) fn compaction(table: TableName) -> String {
    format!("{}.{}.compaction", table.layer, table.table)
}

/// Take lock `name`, waiting while another live process holds it.
pub(crate) async fn wait_for(lake: &Lake, name: &str, run_id: &str) -> Result<LakeLock> {
    let (store, path) = lock_path(lake, name)?;
    wait_for_at(store, path, name, run_id).await
}

/// Take the lock object at `path` of `store` (`name` in messages), waiting
/// while another live process holds it.
pub(crate) async fn wait_for_at(
    store: Arc<dyn ObjectStore>,
    path: Path,
    name: &str,
    run_id: &str,
) -> Result<LakeLock> {
    let mut told = false;
    loop {
        match acquire_at(store.clone(), path.clone(), run_id).await? {
            Ok(lock) => return Ok(lock),
            Err(holder) => {
                if !told {
                    tracing::warn!(
                        lock = name,
                        holder = %holder.run_id,
                        "waiting for another run to finish (a lock not renewed for {} s is taken over)",
                        STALE_AFTER.as_secs()
                    );
                    told = true;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Where lock `name` of `lake` lives.
fn lock_path(lake: &Lake, name: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let (store, prefix) = lake.storage().object_store(lake.root())?;
    let key = format!(
        "{}/_system/locks/{name}",
        prefix.as_ref().trim_end_matches('/'),
    );
    let path = Path::parse(key.trim_start_matches('/'))
        .map_err(|e| JobError::Invalid(format!("lock path: {e}")))?;
    Ok((store, path))
}

/// Take lock `name`, or say who holds it.
pub(crate) async fn acquire(
    lake: &Lake,
    name: &str,
    run_id: &str,
) -> Result<std::result::Result<LakeLock, Holder>> {
    let (store, path) = lock_path(lake, name)?;
    acquire_at(store, path, run_id).await
}

/// Take the lock object at `path` of `store`, or say who holds it.
async fn acquire_at(
    store: Arc<dyn ObjectStore>,
    path: Path,
    run_id: &str,
) -> Result<std::result::Result<LakeLock, Holder>> {
    let failed = |e: object_store::Error| JobError::Invalid(format!("lock {path}: {e}"));
    for _ in 0..2 {
        let since = chrono::Utc::now().timestamp_micros();
        let body = payload(run_id, since)?;
        let create = PutOptions::from(PutMode::Create);
        match store.put_opts(&path, body, create).await {
            Ok(_) => {
                let heartbeat =
                    tokio::spawn(beat(store.clone(), path.clone(), run_id.to_string(), since));
                return Ok(Ok(LakeLock {
                    store,
                    path,
                    heartbeat,
                    released: false,
                    since,
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
                    since: 0,
                    process: None,
                })
            }
            // Released between the two calls: try again.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(failed(e)),
        };
        if holder.is_live() {
            return Ok(Err(holder));
        }
        let age = chrono::Utc::now().timestamp() - holder.heartbeat_at;
        let gone = holder.process.as_ref().is_some_and(Process::gone_from_here);
        tracing::warn!(
            lock = %path,
            holder = %holder.run_id,
            age_s = age,
            "taking over a lock whose holder stopped{}",
            if gone { " (its process on this machine is gone)" } else { "" }
        );
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Err(JobError::Invalid(format!(
        "lock {path}: could not take it; try again"
    )))
}

/// A lock dropped without [`LakeLock::release`] (its job's future was
/// dropped: Ctrl-C or SIGTERM stopped `weightlake run`, a timeout) is
/// deleted here, so the next run does not wait for it to go stale. A
/// process killed outright leaves it until [`STALE_AFTER`].
impl Drop for LakeLock {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        let (store, path) = (self.store.clone(), self.path.clone());
        crate::on_drop::finish(async move {
            let _ = store.delete(&path).await;
        });
    }
}

impl LakeLock {
    /// Stop the heartbeat and delete the lock.
    pub async fn release(mut self) {
        self.heartbeat.abort();
        self.released = true;
        if let Err(e) = self.store.delete(&self.path).await {
            tracing::warn!(lock = %self.path, error = %e, "could not delete a lock; it goes stale in 90 s");
        }
    }
}

impl Holder {
    /// Renewed within [`STALE_AFTER`], by a process not known to be gone.
    fn is_live(&self) -> bool {
        let age = chrono::Utc::now().timestamp() - self.heartbeat_at;
        age <= STALE_AFTER.as_secs() as i64
            && !self.process.as_ref().is_some_and(Process::gone_from_here)
    }
}

/// Take lock `name` like [`wait_for`], and also wait while a live lock whose
/// name starts with `family` and that `compatible` rejects was taken
/// earlier: tensorise runs with different shard counts (`tensorise.0-of-1`
/// beside `tensorise.1-of-2`) own different sets of files and would both
/// store the files the two sets share. Of two such runs starting at once,
/// each lists the others after taking its own lock, so the later one sees
/// the earlier and steps back.
pub(crate) async fn wait_for_family(
    lake: &Lake,
    name: &str,
    family: &str,
    compatible: impl Fn(&str) -> bool,
    run_id: &str,
) -> Result<LakeLock> {
    let mut told = false;
    loop {
        let lock = wait_for(lake, name, run_id).await?;
        let Some(earlier) = earlier_incompatible(&lock, family, &compatible).await? else {
            return Ok(lock);
        };
        lock.release().await;
        if !told {
            tracing::warn!(
                lock = name,
                other = %earlier.0,
                holder = %earlier.1,
                "waiting for another run holding {} (it shards the same work differently)",
                earlier.0
            );
            told = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `(name, run id)` of a live lock of `family` that `compatible` rejects and
/// that was taken before `mine`.
async fn earlier_incompatible(
    mine: &LakeLock,
    family: &str,
    compatible: &impl Fn(&str) -> bool,
) -> Result<Option<(String, String)>> {
    let others = live_others(mine, family).await?;
    Ok(others
        .into_iter()
        .find(|(name, holder)| !compatible(name) && holder.since < mine.since)
        .map(|(name, holder)| (name, holder.run_id)))
}

/// The live locks of `family` beside `mine`: name and holder.
async fn live_others(mine: &LakeLock, family: &str) -> Result<Vec<(String, Holder)>> {
    use futures::TryStreamExt;
    let failed = |e: object_store::Error| JobError::Invalid(format!("locks: {e}"));
    let dir = Path::parse(mine.path.as_ref().rsplit_once('/').map_or("", |(d, _)| d))
        .map_err(|e| JobError::Invalid(format!("lock path: {e}")))?;
    let listed: Vec<_> = mine
        .store
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(failed)?;
    let mut live = Vec::new();
    for meta in listed {
        let Some(other) = meta.location.filename() else {
            continue;
        };
        if meta.location == mine.path || !other.starts_with(family) {
            continue;
        }
        let holder = match mine.store.get(&meta.location).await {
            Ok(got) => {
                match serde_json::from_slice::<Holder>(&got.bytes().await.map_err(failed)?) {
                    Ok(h) => h,
                    Err(_) => continue,
                }
            }
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(failed(e)),
        };
        if holder.is_live() {
            live.push((other.to_string(), holder));
        }
    }
    Ok(live)
}

fn payload(run_id: &str, since: i64) -> Result<PutPayload> {
    let holder = Holder {
        run_id: run_id.to_string(),
        heartbeat_at: chrono::Utc::now().timestamp(),
        since,
        process: Process::current(),
    };
    Ok(PutPayload::from(
        serde_json::to_vec(&holder).map_err(|e| JobError::Invalid(format!("lock: {e}")))?,
    ))
}

async fn beat(store: Arc<dyn ObjectStore>, path: Path, run_id: String, since: i64) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Ok(body) = payload(&run_id, since) else {
            return;
        };
        if let Err(e) = store.put(&path, body).await {
            tracing::warn!(lock = %path, error = %e, "lock heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_holder_on_this_machine_is_gone_once_its_process_ends() {
        let me = Process::current().expect("linux");
        assert!(!me.gone_from_here());
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let start = start_time(pid);
        child.wait().expect("wait");
        let ended = Process {
            machine: me.machine.clone(),
            pid,
            start: start.unwrap_or(0),
        };
        assert!(ended.gone_from_here());
        // Another process now holding the pid is not the holder either.
        let reused = Process {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(reused.gone_from_here());
        // A holder on another machine is judged by its heartbeat alone.
        let elsewhere = Process {
            machine: "other-host/boot/ns".into(),
            ..ended
        };
        assert!(!elsewhere.gone_from_here());
    }
}
