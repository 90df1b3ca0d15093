//! The promote job: silver model revision -> gold version, through gates.
//!
//! 1. Take the newest silver rows of `MODEL@REV` as a manifest.
//! 2. Gather metrics (given, and/or the latest of an MLflow run) and evaluate
//!    the gates over the tensors and metrics.
//! 3. A failed `fail` gate: record a `rejected` event and fail.
//! 4. Otherwise: the same weights already promoted under this name keep their
//!    version (promotion is idempotent); new weights get the next version. With
//!    MLflow, the registry version is ensured first (tagged with the manifest
//!    sha256, so re-runs find it), then the `promoted` and `alias_set` events
//!    are committed together, then the registry alias is set. A registry
//!    failure after the gold commit fails the job and says so: `weightlake
//!    models sync NAME` re-applies gold's aliases to the registry.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::{info, warn};
use weightlake_connectors::mlflow::MlflowClient;
use weightlake_schemas::gold;

use super::alias::sync_registry_alias;
use super::gates::{Gate, GateAction, GateResult, evaluate};
use super::{CAS_ATTEMPTS, Event, GoldState, append_if_unchanged, check_name, open_table};
use crate::lake::Lake;
use crate::sql::LakeSession;
use crate::view::{Manifest, ModelView};
use crate::{JobError, Result};

/// Tag on MLflow model versions: the sha256 of the gold manifest.
pub const MANIFEST_TAG: &str = "weightlake.manifest_sha256";

/// How a promotion talks to MLflow.
#[derive(Debug, Clone)]
pub struct MlflowOptions {
    /// The tracking server.
    pub client: MlflowClient,
    /// Create a registry version and mirror the alias (default true).
    pub register: bool,
    /// Experiment for the promotion's tracking run (default `weightlake`).
    pub experiment: String,
    /// Read metrics from this MLflow run (e.g. the fine-tune's eval run).
    pub metrics_run: Option<String>,
    /// The registry version's `source` (`s3://…` export location, `models:/…`);
    /// default `runs:/<promotion run>/weightlake`.
    pub source: Option<String>,
}

impl MlflowOptions {
    /// Register with `client`, defaults elsewhere.
    pub fn new(client: MlflowClient) -> Self {
        Self {
            client,
            register: true,
            experiment: "weightlake".into(),
            metrics_run: None,
            source: None,
        }
    }
}

/// What a promotion did.
#[derive(Debug, Clone)]
pub struct PromoteReport {
    /// Gold model name.
    pub name: String,
    /// The version (new or, for weights promoted before, the existing one).
    pub version: i64,
    /// True when the same weights were already promoted under this name.
    pub existing: bool,
    /// The alias set, if any.
    pub alias: Option<String>,
    /// The version the alias pointed to before, when this promotion moved it
    /// (a re-run of a pipeline that promotes old weights moves it back).
    pub alias_moved_from: Option<i64>,
    /// For weights promoted before: the newest version of the name when it
    /// is a later one (what `NAME` and `NAME@main` still resolve to).
    pub newer_version: Option<i64>,
    /// Gate results.
    pub gates: Vec<GateResult>,
    /// Metrics used.
    pub metrics: BTreeMap<String, f64>,
    /// MLflow registry version, when registered.
    pub mlflow_version: Option<String>,
    /// Files and bytes of the version.
    pub files: usize,
    /// Bytes of all files.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Builder of a promotion; `.await` it.
#[must_use = "a PromoteJob does nothing until awaited"]
pub struct PromoteJob {
    lake: Lake,
    model_id: String,
    revision: String,
    name: String,
    alias: Option<String>,
    gates: Vec<Gate>,
    metrics: BTreeMap<String, f64>,
    mlflow: Option<MlflowOptions>,
    run_id: Option<String>,
    allow_quarantined: bool,
}

impl PromoteJob {
    /// Promote silver `model_id@revision` as gold model `name`.
    pub fn new(
        lake: Lake,
        model_id: impl Into<String>,
        revision: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            lake,
            model_id: model_id.into(),
            revision: revision.into(),
            name: name.into(),
            alias: None,
            gates: Vec::new(),
            metrics: BTreeMap::new(),
            mlflow: None,
            run_id: None,
            allow_quarantined: false,
        }
    }

    /// Point this alias at the version.
    pub fn with_alias(mut self, alias: Option<String>) -> Self {
        self.alias = alias;
        self
    }

    /// Gates to pass.
    pub fn with_gates(mut self, gates: Vec<Gate>) -> Self {
        self.gates = gates;
        self
    }

    /// Metrics for the gates (these win over an MLflow run's of the same name).
    pub fn with_metrics(mut self, metrics: BTreeMap<String, f64>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Track, read metrics from and register with MLflow.
    pub fn with_mlflow(mut self, mlflow: Option<MlflowOptions>) -> Self {
        self.mlflow = mlflow;
        self
    }

    /// Promote even when files of the model were quarantined by tensorise
    /// (they failed to parse and are kept only as whole files): the built-in
    /// `files_parsed` gate then warns instead of failing.
    pub fn with_allow_quarantined(mut self, allow: bool) -> Self {
        self.allow_quarantined = allow;
        self
    }

    /// Use this run id (default: a new UUID).
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }
}

impl IntoFuture for PromoteJob {
    type Output = Result<PromoteReport>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl PromoteJob {
    async fn run(self) -> Result<PromoteReport> {
        let started = Instant::now();
        check_name("model name", &self.name)?;
        if let Some(a) = &self.alias {
            check_name("alias", a)?;
        }
        let run_id = self
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let session = Arc::new(LakeSession::new(&self.lake).await?);
        let view = ModelView::latest(&session, &self.model_id, &self.revision).await?;
        let manifest = view.manifest();
        let (manifest_json, manifest_sha) = manifest.to_json()?;
        let base_model = base_model_of(&session, &manifest).await?;

        let mut metrics = BTreeMap::new();
        if let Some(m) = &self.mlflow
            && let Some(r) = &m.metrics_run
        {
            metrics = m.client.run_metrics(r).await?;
            info!(run = %r, metrics = metrics.len(), "metrics from MLflow");
        }
        metrics.extend(self.metrics.clone());
        let mut gates = evaluate(&session, &manifest, &metrics, &self.gates).await?;
        if let Some(g) = files_parsed(&manifest, self.allow_quarantined) {
            gates.insert(0, g);
        }
        if let Some(g) = files_complete(&session, &view).await? {
            gates.insert(0, g);
        }
        if let Some(g) = pickles(&session, &manifest).await? {
            gates.insert(0, g);
        }
        if let Some(g) = silver_current(&session, &self.model_id, &self.revision).await? {
            gates.insert(0, g);
        }
        for g in &gates {
            if g.passed {
                info!(gate = %g.name, detail = %g.detail, "gate passed");
            } else {
                warn!(gate = %g.name, action = %g.action, detail = %g.detail, "gate failed");
            }
        }
        let gates_json = serde_json::to_string(&gates)
            .map_err(|e| JobError::Invalid(format!("gate results: {e}")))?;
        let metrics_json = serde_json::to_string(&metrics)
            .map_err(|e| JobError::Invalid(format!("metrics: {e}")))?;
        let base_event = Event {
            name: self.name.clone(),
            model_id: self.model_id.clone(),
            revision: self.revision.clone(),
            base_model: base_model.clone(),
            manifest_sha256: Some(manifest_sha.clone()),
            gates: Some(gates_json),
            metrics: Some(metrics_json),
            run_id: run_id.clone(),
            ..Default::default()
        };

        let blocking: Vec<String> = gates
            .iter()
            .filter(|g| g.blocks())
            .map(|g| format!("{} ({}: {})", g.name, g.expr, g.detail))
            .collect();
        if !blocking.is_empty() {
            let table = open_table(&self.lake).await?;
            let event = Event {
                event: gold::REJECTED,
                ..base_event
            };
            // Recording the rejection never conflicts in a way that matters:
            // retry a few times on a moving table.
            let mut table = Some(table);
            for _ in 0..CAS_ATTEMPTS {
                let t = match table.take() {
                    Some(t) => t,
                    None => open_table(&self.lake).await?,
                };
                if append_if_unchanged(t, std::slice::from_ref(&event))
                    .await?
                    .is_some()
                {
                    break;
                }
            }
            // The tracking server shows the candidate that was turned away
            // and why, beside the promotions (a FAILED run); that record is
            // best effort, the rejection stands either way.
            if let Some(m) = &self.mlflow {
                let logged = self
                    .log_promotion_run(m, &run_id, &manifest, &manifest_sha, &metrics, &gates)
                    .await;
                match logged {
                    Ok(run) => info!(mlflow_run = %run, "rejection tracked in MLflow"),
                    Err(e) => warn!(error = %e, "could not track the rejection in MLflow"),
                }
            }
            return Err(JobError::Rejected {
                name: self.name.clone(),
                failed: blocking,
            });
        }

        // The MLflow tracking run of this promotion (its source, unless
        // given). Weights promoted before keep the run they were promoted
        // with: a pipeline's re-runs would otherwise log a new run each.
        let promoted_before = match &self.mlflow {
            Some(_) => GoldState::load(&self.lake, None)
                .await?
                .promoted_as(&self.name, &manifest, &manifest_sha)
                .and_then(|v| v.mlflow_run_id.clone()),
            None => None,
        };
        let mut mlflow_run_id = promoted_before.clone();
        if let Some(m) = self.mlflow.as_ref().filter(|_| promoted_before.is_none()) {
            let run = self
                .log_promotion_run(m, &run_id, &manifest, &manifest_sha, &metrics, &gates)
                .await?;
            mlflow_run_id = Some(run);
        }
        let mlflow_version = match &self.mlflow {
            Some(m) if m.register => {
                m.client.ensure_registered_model(&self.name).await?;
                let source = m.source.clone().unwrap_or_else(|| {
                    format!(
                        "runs:/{}/weightlake",
                        mlflow_run_id.as_deref().unwrap_or_default()
                    )
                });
                let v = m
                    .client
                    .ensure_model_version(
                        &self.name,
                        &source,
                        mlflow_run_id.as_deref(),
                        MANIFEST_TAG,
                        &manifest_sha,
                        &[(
                            "weightlake.model".into(),
                            format!("{}@{}", self.model_id, self.revision),
                        )],
                    )
                    .await?;
                Some(v)
            }
            _ => None,
        };

        // Compare-and-swap: version numbers are computed from the state read.
        let mut outcome = None;
        for _ in 0..CAS_ATTEMPTS {
            let table = open_table(&self.lake).await?;
            let state = GoldState::read(&table).await?;
            let existing = state
                .promoted_as(&self.name, &manifest, &manifest_sha)
                .map(|v| v.version);
            let version = existing.unwrap_or_else(|| state.next_version(&self.name));
            let mut events = Vec::new();
            if existing.is_none() {
                events.push(Event {
                    event: gold::PROMOTED,
                    version: Some(version),
                    manifest: Some(manifest_json.clone()),
                    mlflow_run_id: mlflow_run_id.clone(),
                    mlflow_version: mlflow_version.clone(),
                    ..base_event.clone()
                });
            }
            let before = self
                .alias
                .as_ref()
                .and_then(|a| state.aliases.get(&(self.name.clone(), a.clone())))
                .copied();
            if let Some(a) = &self.alias
                && before != Some(version)
            {
                events.push(Event {
                    event: gold::ALIAS_SET,
                    version: Some(version),
                    alias: Some(a.clone()),
                    gates: None,
                    metrics: None,
                    ..base_event.clone()
                });
            }
            let newest = state.next_version(&self.name) - 1;
            if append_if_unchanged(table, &events).await?.is_some() {
                let moved_from = before.filter(|b| *b != version);
                let newer = Some(newest).filter(|n| existing.is_some() && *n > version);
                outcome = Some((version, existing.is_some(), moved_from, newer));
                break;
            }
        }
        let (version, existing, alias_moved_from, newer_version) = outcome.ok_or_else(|| {
            JobError::Invalid(format!(
                "gold.models kept changing; gave up after {CAS_ATTEMPTS} attempts"
            ))
        })?;
        info!(name = %self.name, version, existing, "promoted");

        if let (Some(m), Some(a), Some(mv)) = (&self.mlflow, &self.alias, &mlflow_version)
            && m.register
        {
            sync_registry_alias(&m.client, &self.name, a, Some(mv))
                .await
                .map_err(|e| JobError::RegistryOutOfSync {
                    name: self.name.clone(),
                    detail: format!(
                        "version {version} promoted in gold, alias `{a}` not set in MLflow: {e}"
                    ),
                })?;
        }
        Ok(PromoteReport {
            name: self.name,
            version,
            existing,
            alias: self.alias,
            alias_moved_from,
            newer_version,
            gates,
            metrics,
            mlflow_version,
            files: manifest.files.len(),
            bytes: manifest.bytes(),
            elapsed: started.elapsed(),
        })
    }

    /// Log this promotion as an MLflow run: parameters, metrics, each gate's
    /// result as a `weightlake.gate.NAME` tag, FINISHED when promoted and
    /// FAILED when a gate turned the weights away. Returns the run id.
    async fn log_promotion_run(
        &self,
        m: &MlflowOptions,
        run_id: &str,
        manifest: &Manifest,
        manifest_sha: &str,
        metrics: &BTreeMap<String, f64>,
        gates: &[GateResult],
    ) -> Result<String> {
        let rejected = gates.iter().any(GateResult::blocks);
        let exp = m.client.experiment_id(&m.experiment).await?;
        let mut tags = vec![
            ("weightlake.run_id".to_string(), run_id.to_string()),
            (MANIFEST_TAG.to_string(), manifest_sha.to_string()),
        ];
        let mut used = std::collections::HashSet::new();
        for g in gates {
            let outcome = match (g.passed, g.action) {
                (true, _) => "passed",
                (false, GateAction::Fail) => "failed",
                (false, _) => "warned",
            };
            // MLflow keys take letters (any script), digits, `_-. /`; two
            // gate names that differ only elsewhere (`a+b`, `a#b`) get a
            // number, as MLflow refuses a run with one key twice. Values up
            // to 8000 characters (5000 here, whatever the expression).
            let base: String = g
                .name
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || "_-. /".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let mut key = format!("weightlake.gate.{base}");
            let mut n = 1;
            while !used.insert(key.clone()) {
                n += 1;
                key = format!("weightlake.gate.{base}_{n}");
            }
            let value = format!("{outcome} ({}): {} — {}", g.action, g.expr, g.detail);
            tags.push((key, value.chars().take(5000).collect()));
        }
        let name = if rejected {
            format!("promote {} (rejected)", self.name)
        } else {
            format!("promote {}", self.name)
        };
        let run = m.client.create_run(&exp, &name, &tags).await?;
        let params = vec![
            ("model_id".to_string(), self.model_id.clone()),
            ("revision".to_string(), self.revision.clone()),
            ("gold_name".to_string(), self.name.clone()),
            ("manifest_sha256".to_string(), manifest_sha.to_string()),
        ];
        let mut logged: Vec<(String, f64)> = metrics.iter().map(|(k, v)| (k.clone(), *v)).collect();
        logged.push(("gold_bytes".into(), manifest.bytes() as f64));
        logged.push((
            "gates_failed".into(),
            gates.iter().filter(|g| !g.passed).count() as f64,
        ));
        m.client.log_batch(&run, &params, &logged).await?;
        m.client.finish_run(&run, !rejected).await?;
        Ok(run)
    }
}

/// The base model recorded on the model's tensors, if any.
async fn base_model_of(session: &LakeSession, m: &Manifest) -> Result<Option<String>> {
    let Some(f) = m.files.iter().find(|f| !f.tensors.is_empty()) else {
        return Ok(None);
    };
    use deltalake::datafusion::prelude::{col, lit};
    let batches = session
        .context()
        .table(weightlake_schemas::silver::FILES.to_string())
        .await?
        .filter(
            col("model_id")
                .eq(lit(m.model_id.clone()))
                .and(col("revision").eq(lit(m.revision.clone())))
                .and(col("file_path").eq(lit(f.path.clone())))
                .and(col("run_id").eq(lit(f.silver_run_id.clone()))),
        )?
        .select_columns(&["base_model"])?
        .limit(0, Some(1))?
        .collect()
        .await?;
    Ok(batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| crate::sql::string_value(b.column(0).as_ref(), 0))
        .map(str::to_string))
}

/// The built-in `silver_current` gate, a warning: bronze holds a newer state
/// of the revision (files ingested or removed since the last tensorise), so
/// this version is the revision as silver last saw it.
async fn silver_current(
    session: &LakeSession,
    model_id: &str,
    revision: &str,
) -> Result<Option<GateResult>> {
    let pending = crate::tensorise::not_tensorised(session, model_id, revision).await?;
    if pending.is_empty() {
        return Ok(None);
    }
    let shown: Vec<&str> = pending.iter().take(5).map(String::as_str).collect();
    Ok(Some(GateResult {
        name: "silver_current".into(),
        action: GateAction::Warn,
        expr: "silver reflects everything bronze has for the revision".into(),
        passed: false,
        detail: format!(
            "{} file(s) ingested or removed since the last tensorise; this version is the \
             revision before those changes: {}{} (run tensorise, then promote again)",
            pending.len(),
            shown.join(", "),
            if pending.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ),
    }))
}

/// The built-in gate over files tensorise quarantined (they failed to parse):
/// none when every file parsed; else failing, or warning when allowed.
/// The built-in `files_complete` gate: fails when the revision names files
/// or tensors it does not have (shards in the weight map of a
/// `*.index.json`, tensors mapped to a shard without them, an index that is
/// not JSON) or holds no weights at all. Both are what an ingest that failed for some files
/// leaves when tensorise and promote then run on the rest.
async fn files_complete(session: &LakeSession, view: &ModelView) -> Result<Option<GateResult>> {
    let missing = view.missing_shards(session).await?;
    let has_weights = view
        .files
        .values()
        .any(|f| !f.entry.tensors.is_empty() || looks_like_weights(&f.entry.path));
    let detail = match (missing.is_empty(), has_weights) {
        (true, true) => return Ok(None),
        (false, _) => format!(
            "an index does not match the files stored: {}",
            missing.join(", ")
        ),
        (true, false) => "no file holds tensors or looks like a checkpoint".to_string(),
    };
    Ok(Some(GateResult {
        name: "files_complete".into(),
        action: GateAction::Fail,
        expr: "every shard an index names is stored, and the model has weights".into(),
        passed: false,
        detail,
    }))
}

/// The built-in `no_pickles` gate, a warning: files of the version that
/// loading would unpickle (`silver.files.unsafe_pickle`), named, so a
/// promotion of a `pytorch_model.bin` checkpoint does not pass silently.
async fn pickles(session: &LakeSession, manifest: &Manifest) -> Result<Option<GateResult>> {
    use deltalake::datafusion::prelude::col;
    let batches = session
        .context()
        .table(weightlake_schemas::silver::FILES.to_string())
        .await?
        .filter(manifest.pinned_rows().and(col("unsafe_pickle")))?
        .select_columns(&["file_path"])?
        .collect()
        .await?;
    let mut paths: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .filter_map(|r| crate::sql::string_value(b.column(0).as_ref(), r).map(String::from))
                .collect::<Vec<_>>()
        })
        .collect();
    if paths.is_empty() {
        return Ok(None);
    }
    paths.sort();
    paths.dedup();
    Ok(Some(GateResult {
        name: "no_pickles".into(),
        action: GateAction::Warn,
        expr: "no file that loading would unpickle".into(),
        passed: false,
        detail: format!(
            "pickled (never unpickled here; loading them runs code): {}",
            paths.join(", ")
        ),
    }))
}

/// Whether a file stored whole is a checkpoint by its name.
fn looks_like_weights(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [
        ".safetensors",
        ".gguf",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".onnx",
        ".h5",
        ".msgpack",
        ".npz",
        ".pkl",
    ]
    .iter()
    .any(|ext| lower.ends_with(ext))
}

fn files_parsed(manifest: &Manifest, allow: bool) -> Option<GateResult> {
    let bad: Vec<&str> = manifest
        .files
        .iter()
        .filter(|f| f.format == "quarantined")
        .map(|f| f.path.as_str())
        .collect();
    if bad.is_empty() {
        return None;
    }
    Some(GateResult {
        name: "files_parsed".into(),
        action: if allow {
            GateAction::Warn
        } else {
            GateAction::Fail
        },
        expr: "every file parsed (--allow-quarantined, or allow_quarantined: true in YAML, keeps quarantined files)".into(),
        passed: false,
        detail: format!("quarantined by tensorise: {}", bad.join(", ")),
    })
}
