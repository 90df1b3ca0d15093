//! Moving and removing aliases of gold models, and mirroring them in MLflow.
//!
//! An alias move is one `alias_set` (or `alias_removed`) event, committed with
//! compare-and-swap; rolling back is moving the alias back. With MLflow, the
//! registry alias follows right after the gold commit; when that fails the
//! command fails and says so, and [`sync_registry`] (`weightlake models sync`)
//! puts the registry back in line with gold.

use std::collections::BTreeMap;

use tracing::info;
use weightlake_connectors::mlflow::MlflowClient;
use weightlake_schemas::gold;

use super::promote::MANIFEST_TAG;
use super::{
    CAS_ATTEMPTS, Event, GoldRef, GoldState, Selector, append_if_unchanged, check_name, open_table,
};
use crate::lake::Lake;
use crate::{JobError, Result};

/// Point `alias` of `name` at the version `target` means (`NAME:3`, `NAME@other`,
/// `NAME`), or remove it (`target = None`). Returns the version it now points
/// at; when removing, the version it pointed at (`None`: it was not set, and
/// gold is left as it was).
pub async fn set_alias(
    lake: &Lake,
    name: &str,
    alias: &str,
    target: Option<&GoldRef>,
    mlflow: Option<&MlflowClient>,
) -> Result<Option<i64>> {
    check_name("alias", alias)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut done = None;
    for _ in 0..CAS_ATTEMPTS {
        let table = open_table(lake).await?;
        let state = GoldState::read(&table).await?;
        let key = (name.to_string(), alias.to_string());
        let (event, version, v) = match target {
            Some(r) => {
                let v = state.resolve(r)?;
                if state.aliases.get(&key) == Some(&v.version) {
                    done = Some((Some(v.version), v.mlflow_version.clone()));
                    break;
                }
                (gold::ALIAS_SET, Some(v.version), Some(v))
            }
            None => {
                let Some(&current) = state.aliases.get(&key) else {
                    if !state.versions.contains_key(name) {
                        state.resolve(&GoldRef {
                            name: name.to_string(),
                            selector: Selector::Latest,
                        })?;
                    }
                    done = Some((None, None));
                    break;
                };
                let v = state.versions.get(name).and_then(|vs| vs.get(&current));
                (gold::ALIAS_REMOVED, Some(current), v)
            }
        };
        let ev = Event {
            name: name.to_string(),
            event,
            version,
            alias: Some(alias.to_string()),
            model_id: v.map(|v| v.model_id.clone()).unwrap_or_default(),
            revision: v.map(|v| v.revision.clone()).unwrap_or_default(),
            manifest_sha256: v.map(|v| v.manifest_sha256.clone()),
            run_id: run_id.clone(),
            ..Default::default()
        };
        let mlflow_version = v.and_then(|v| v.mlflow_version.clone());
        if append_if_unchanged(table, &[ev]).await?.is_some() {
            info!(name, alias, ?version, event, "alias updated");
            done = Some((version, mlflow_version));
            break;
        }
    }
    let (now, mlflow_version) = done.ok_or_else(|| {
        JobError::Invalid(format!(
            "gold.models kept changing; gave up after {CAS_ATTEMPTS} attempts"
        ))
    })?;
    if let Some(client) = mlflow {
        let pointed = if target.is_some() { now } else { None };
        let result = match (pointed, &mlflow_version) {
            (Some(_), Some(mv)) => sync_registry_alias(client, name, alias, Some(mv)).await,
            (Some(v), None) => Err(JobError::Invalid(format!(
                "version {v} was promoted without MLflow; nothing to point the registry alias at"
            ))),
            (None, _) => sync_registry_alias(client, name, alias, None).await,
        };
        result.map_err(|e| JobError::RegistryOutOfSync {
            name: name.to_string(),
            detail: format!("alias `{alias}` moved in gold but not in MLflow: {e}"),
        })?;
    }
    Ok(now)
}

/// Set (or with `None` remove) one registry alias.
pub(crate) async fn sync_registry_alias(
    client: &MlflowClient,
    name: &str,
    alias: &str,
    version: Option<&str>,
) -> Result<()> {
    match version {
        Some(v) => client.set_alias(name, alias, v).await?,
        None => client.delete_alias(name, alias).await?,
    }
    Ok(())
}

/// What [`sync_registry`] changed.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Aliases set in the registry: alias -> registry version.
    pub set: BTreeMap<String, String>,
    /// Aliases removed from the registry.
    pub removed: Vec<String>,
}

/// Make the registry's aliases of `name` match gold's.
pub async fn sync_registry(lake: &Lake, name: &str, client: &MlflowClient) -> Result<SyncReport> {
    let state = GoldState::load(lake, None).await?;
    if !state.versions.contains_key(name) {
        state.resolve(&GoldRef {
            name: name.to_string(),
            selector: Selector::Latest,
        })?;
    }
    let mut report = SyncReport::default();
    let mut wanted = BTreeMap::new();
    for ((n, alias), v) in &state.aliases {
        if n != name {
            continue;
        }
        let gv = state
            .versions
            .get(name)
            .and_then(|vs| vs.get(v))
            .ok_or_else(|| {
                JobError::Invalid(format!("alias `{alias}` points at missing version {v}"))
            })?;
        let mv = match &gv.mlflow_version {
            Some(mv) => mv.clone(),
            None => client
                .find_version_by_tag(name, MANIFEST_TAG, &gv.manifest_sha256)
                .await?
                .ok_or_else(|| {
                    JobError::Invalid(format!(
                        "{name}:{v} is not registered in MLflow; promote it again with MLflow configured"
                    ))
                })?,
        };
        wanted.insert(alias.clone(), mv);
    }
    for (alias, version) in client.aliases(name).await? {
        match wanted.get(&alias) {
            Some(mv) if *mv == version => {}
            Some(_) => {}
            None => {
                client.delete_alias(name, &alias).await?;
                report.removed.push(alias);
            }
        }
    }
    for (alias, mv) in wanted {
        if client.get_alias(name, &alias).await?.as_deref() != Some(mv.as_str()) {
            client.set_alias(name, &alias, &mv).await?;
            report.set.insert(alias, mv);
        }
    }
    Ok(report)
}
