//! Gold: promoted model versions, their aliases, and the registry mirror.
//!
//! `gold.models` is an event log (see `weightlake_schemas::gold`). This module
//! reads it into a [`GoldState`] (at the latest or any earlier table version),
//! resolves references like `NAME@champion`, `NAME:3` or `NAME`, and appends
//! events with a compare-and-swap commit: an append fails if anything was
//! committed since the state it was computed from, and is then recomputed. So
//! version numbers stay unique and monotonic with concurrent promoters.
//!
//! - [`promote::PromoteJob`]: gates, then a new version (and alias), then the
//!   MLflow registry.
//! - [`alias`]: moving and removing aliases, and syncing them to MLflow.

pub mod alias;
pub mod gates;
pub mod promote;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::DeltaTableError;
use deltalake::arrow::array::AsArray;
use deltalake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::TimestampMicrosecondType;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::protocol::SaveMode;
use weightlake_schemas::gold;

pub use gates::{Gate, GateAction, GateResult};

use crate::lake::Lake;
use crate::sql::{int_value, string_value};
use crate::view::Manifest;
use crate::{JobError, Result};

/// Which version of a gold model a reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest version.
    Latest,
    /// `NAME:N`.
    Version(i64),
    /// `NAME@alias`.
    Alias(String),
}

/// `NAME`, `NAME:VERSION` or `NAME@ALIAS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldRef {
    /// The gold model name.
    pub name: String,
    /// Which version.
    pub selector: Selector,
}

impl FromStr for GoldRef {
    type Err = JobError;

    fn from_str(s: &str) -> Result<Self> {
        let bad =
            |why: &str| JobError::Invalid(format!("invalid gold model reference `{s}`: {why}"));
        let (name, selector) = if let Some((n, a)) = s.split_once('@') {
            // `@main` and `@latest` are the newest version, as `serve` (and
            // every hub client, whose default revision is `main`) reads them.
            if a == "main" || a == "latest" {
                (n, Selector::Latest)
            } else {
                (n, Selector::Alias(a.to_string()))
            }
        } else if let Some((n, v)) = s.rsplit_once(':') {
            let v: i64 = v
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad("the version after `:` must be a positive number"))?;
            (n, Selector::Version(v))
        } else {
            (s, Selector::Latest)
        };
        check_name("model name", name)
            .map_err(|_| bad("expected NAME, NAME:VERSION or NAME@ALIAS"))?;
        if let Selector::Alias(a) = &selector {
            check_name("alias", a).map_err(|e| bad(&e.to_string()))?;
        }
        Ok(Self {
            name: name.to_string(),
            selector,
        })
    }
}

impl fmt::Display for GoldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Latest => write!(f, "{}", self.name),
            Selector::Version(v) => write!(f, "{}:{v}", self.name),
            Selector::Alias(a) => write!(f, "{}@{a}", self.name),
        }
    }
}

/// Names and aliases: letters, digits, `-`, `_`, `.`, `/`; 1-128 characters;
/// an alias may not be a number (MLflow's rule, so versions stay unambiguous).
pub fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !s.starts_with(['/', '.'])
        && !s.contains("..");
    if !ok {
        return Err(JobError::Invalid(format!(
            "invalid {what} `{s}`: use 1-128 letters, digits, `-`, `_`, `.` or `/`, \
             not starting with `/` or `.` and without `..`"
        )));
    }
    if what == "alias"
        && (s.chars().all(|c| c.is_ascii_digit())
            || s.eq_ignore_ascii_case("latest")
            || s.eq_ignore_ascii_case("main"))
    {
        return Err(JobError::Invalid(format!(
            "invalid alias `{s}`: an alias cannot be a number, `latest` or `main` \
             (`NAME@main` is the newest version)"
        )));
    }
    Ok(())
}

/// One promoted version.
#[derive(Debug, Clone)]
pub struct GoldVersion {
    /// Gold model name.
    pub name: String,
    /// Version number (1, 2, …).
    pub version: i64,
    /// Source model id and revision in silver.
    pub model_id: String,
    /// Source revision.
    pub revision: String,
    /// Base model the source was compared with, if any.
    pub base_model: Option<String>,
    /// sha256 of the manifest JSON.
    pub manifest_sha256: String,
    /// The rows that rebuild the files.
    pub manifest: Manifest,
    /// Gate results.
    pub gates: Vec<GateResult>,
    /// Metrics it was judged on.
    pub metrics: BTreeMap<String, f64>,
    /// MLflow registry version, when registered.
    pub mlflow_version: Option<String>,
    /// MLflow run of the promotion, when tracked.
    pub mlflow_run_id: Option<String>,
    /// The weightlake run that promoted it.
    pub run_id: String,
    /// When (microseconds since the epoch, UTC).
    pub promoted_at: i64,
}

impl GoldVersion {
    /// The commit sha the version is known by to hub clients (`serve`, the
    /// export's completion marker): the first 40 hex digits of its manifest
    /// sha256.
    pub fn commit(&self) -> &str {
        self.manifest_sha256
            .get(..40)
            .unwrap_or(&self.manifest_sha256)
    }
}

/// A promotion a `fail` gate stopped.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Gold model name.
    pub name: String,
    /// Source model id.
    pub model_id: String,
    /// Source revision.
    pub revision: String,
    /// Gate results.
    pub gates: Vec<GateResult>,
    /// The weightlake run.
    pub run_id: String,
    /// When (microseconds since the epoch, UTC).
    pub at: i64,
}

/// Everything `gold.models` says, at one table version.
#[derive(Debug, Clone, Default)]
pub struct GoldState {
    /// The Delta version read (`None`: the table does not exist yet).
    pub table_version: Option<u64>,
    /// Promoted versions, by name then version.
    pub versions: BTreeMap<String, BTreeMap<i64, GoldVersion>>,
    /// Current aliases: (name, alias) -> version.
    pub aliases: BTreeMap<(String, String), i64>,
    /// Rejected promotions, oldest first.
    pub rejections: Vec<Rejection>,
}

impl GoldState {
    /// Read gold as of the latest table version, or `as_of`.
    pub async fn load(lake: &Lake, as_of: Option<i64>) -> Result<Self> {
        let table = match as_of {
            Some(v) => Some(lake.open_version(gold::MODELS, v).await?),
            None => lake.open(gold::MODELS).await?,
        };
        match (table, as_of) {
            (Some(t), None) => Self::read(&t).await,
            (Some(t), Some(v)) => Self::read(&t).await.map_err(|e| {
                // Time travel reads files of that version; vacuum may have
                // removed them (the log still lists the version).
                if matches!(e, JobError::Query(_)) && e.to_string().contains("not found") {
                    JobError::Invalid(format!(
                        "gold.models version {v} can no longer be read: vacuum removed \
                         its data files (read a later version)"
                    ))
                } else {
                    e
                }
            }),
            (None, _) => Ok(Self::default()),
        }
    }

    /// Read the state of this snapshot of `gold.models`.
    pub async fn read(table: &DeltaTable) -> Result<Self> {
        let ctx = SessionContext::new();
        let provider = table.table_provider().await?;
        let batches = ctx.read_table(provider)?.collect().await?;
        let mut rows: Vec<(i64, i64, usize, usize)> = Vec::new();
        for (bi, b) in batches.iter().enumerate() {
            let at = b
                .column_by_name("at")
                .ok_or_else(|| JobError::Invalid("gold.models has no `at` column".into()))?
                .as_primitive::<TimestampMicrosecondType>();
            let seq = b
                .column_by_name("seq")
                .ok_or_else(|| JobError::Invalid("gold.models has no `seq` column".into()))?;
            for r in 0..b.num_rows() {
                rows.push((int_value(seq.as_ref(), r).unwrap_or(0), at.value(r), bi, r));
            }
        }
        // Events in commit order (rows of one commit keep their order).
        rows.sort();
        let mut state = GoldState {
            table_version: table.version(),
            ..Default::default()
        };
        for (_, at, bi, r) in rows {
            let b = &batches[bi];
            let s = |c: &str| {
                b.column_by_name(c)
                    .and_then(|a| string_value(a.as_ref(), r))
                    .map(str::to_string)
            };
            let version = b
                .column_by_name("version")
                .and_then(|a| int_value(a.as_ref(), r));
            let name = s("name").unwrap_or_default();
            match s("event").as_deref() {
                Some(gold::PROMOTED) => {
                    let Some(v) = version else { continue };
                    let manifest = Manifest::from_json(&s("manifest").unwrap_or_default())?;
                    let gv = GoldVersion {
                        name: name.clone(),
                        version: v,
                        model_id: s("model_id").unwrap_or_default(),
                        revision: s("revision").unwrap_or_default(),
                        base_model: s("base_model"),
                        manifest_sha256: s("manifest_sha256").unwrap_or_default(),
                        manifest,
                        gates: parse_json(s("gates"))?,
                        metrics: parse_json(s("metrics"))?,
                        mlflow_version: s("mlflow_version"),
                        mlflow_run_id: s("mlflow_run_id"),
                        run_id: s("run_id").unwrap_or_default(),
                        promoted_at: at,
                    };
                    state.versions.entry(name).or_default().insert(v, gv);
                }
                Some(gold::REJECTED) => state.rejections.push(Rejection {
                    name,
                    model_id: s("model_id").unwrap_or_default(),
                    revision: s("revision").unwrap_or_default(),
                    gates: parse_json(s("gates"))?,
                    run_id: s("run_id").unwrap_or_default(),
                    at,
                }),
                Some(gold::ALIAS_SET) => {
                    if let (Some(a), Some(v)) = (s("alias"), version) {
                        state.aliases.insert((name, a), v);
                    }
                }
                Some(gold::ALIAS_REMOVED) => {
                    if let Some(a) = s("alias") {
                        state.aliases.remove(&(name, a));
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }

    /// The version of `name` that holds these weights: the same manifest
    /// (`manifest_sha256`), or the same files stored by another silver run.
    pub fn promoted_as(
        &self,
        name: &str,
        manifest: &Manifest,
        manifest_sha256: &str,
    ) -> Option<&GoldVersion> {
        self.versions
            .get(name)?
            .values()
            .find(|v| v.manifest_sha256 == manifest_sha256 || v.manifest.same_files(manifest))
    }

    /// The version a reference means.
    pub fn resolve(&self, r: &GoldRef) -> Result<&GoldVersion> {
        let versions = self.versions.get(&r.name).ok_or_else(|| {
            let known: Vec<&str> = self.versions.keys().map(String::as_str).collect();
            JobError::Invalid(format!(
                "no gold model `{}`{}",
                r.name,
                if known.is_empty() {
                    " (nothing promoted yet)".to_string()
                } else {
                    format!("; known: {}", known.join(", "))
                }
            ))
        })?;
        let v = match &r.selector {
            Selector::Latest => versions.keys().next_back().copied(),
            Selector::Version(v) => Some(*v),
            Selector::Alias(a) => Some(
                *self
                    .aliases
                    .get(&(r.name.clone(), a.clone()))
                    .ok_or_else(|| {
                        JobError::Invalid(format!("gold model `{}` has no alias `{a}`", r.name))
                    })?,
            ),
        };
        v.and_then(|v| versions.get(&v))
            .ok_or_else(|| JobError::Invalid(format!("gold model `{r}` does not exist")))
    }

    /// Aliases pointing at `name`'s `version`.
    pub fn aliases_of(&self, name: &str, version: i64) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|((n, _), v)| n == name && **v == version)
            .map(|((_, a), _)| a.clone())
            .collect()
    }

    /// The next version number of `name`.
    pub fn next_version(&self, name: &str) -> i64 {
        self.versions
            .get(name)
            .and_then(|v| v.keys().next_back())
            .map_or(1, |v| v + 1)
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(s: Option<String>) -> Result<T> {
    match s {
        Some(s) if !s.is_empty() => serde_json::from_str(&s)
            .map_err(|e| JobError::Invalid(format!("gold.models holds bad JSON: {e}"))),
        _ => Ok(T::default()),
    }
}

/// One event to append to `gold.models`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Event {
    pub name: String,
    pub event: &'static str,
    pub version: Option<i64>,
    pub alias: Option<String>,
    pub model_id: String,
    pub revision: String,
    pub base_model: Option<String>,
    pub manifest_sha256: Option<String>,
    pub manifest: Option<String>,
    pub gates: Option<String>,
    pub metrics: Option<String>,
    pub mlflow_run_id: Option<String>,
    pub mlflow_version: Option<String>,
    pub run_id: String,
}

fn events_batch(events: &[Event], seq: i64) -> Result<RecordBatch> {
    let now = chrono::Utc::now().timestamp_micros();
    let req = |f: fn(&Event) -> &str| -> ArrayRef {
        Arc::new(events.iter().map(|e| Some(f(e))).collect::<StringArray>())
    };
    let opt = |f: fn(&Event) -> Option<&str>| -> ArrayRef {
        Arc::new(events.iter().map(f).collect::<StringArray>())
    };
    let cols: Vec<ArrayRef> = vec![
        req(|e| &e.name),
        req(|e| e.event),
        Arc::new(events.iter().map(|e| e.version).collect::<Int64Array>()),
        opt(|e| e.alias.as_deref()),
        req(|e| &e.model_id),
        req(|e| &e.revision),
        opt(|e| e.base_model.as_deref()),
        opt(|e| e.manifest_sha256.as_deref()),
        opt(|e| e.manifest.as_deref()),
        opt(|e| e.gates.as_deref()),
        opt(|e| e.metrics.as_deref()),
        opt(|e| e.mlflow_run_id.as_deref()),
        opt(|e| e.mlflow_version.as_deref()),
        req(|e| &e.run_id),
        Arc::new(Int64Array::from(vec![seq; events.len()])),
        Arc::new(TimestampMicrosecondArray::from(vec![now; events.len()]).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(gold::models_schema(), cols)?)
}

/// Open (or create) `gold.models`.
pub(crate) async fn open_table(lake: &Lake) -> Result<DeltaTable> {
    lake.open_or_create(
        gold::MODELS,
        gold::models_schema(),
        &[("weightlake.schemaVersion", gold::VERSION.to_string())],
    )
    .await
}

/// Append `events` computed from the state of `table`, only if nothing was
/// committed since (returns `Ok(None)` when something was: recompute and retry).
pub(crate) async fn append_if_unchanged(
    table: DeltaTable,
    events: &[Event],
) -> Result<Option<DeltaTable>> {
    if events.is_empty() {
        return Ok(Some(table));
    }
    let seq = table.version().map_or(0, |v| v as i64 + 1);
    let batch = events_batch(events, seq)?;
    let result = table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_commit_properties(CommitProperties::default().with_max_retries(0))
        .await;
    match result {
        Ok(t) => Ok(Some(t)),
        Err(
            e @ (DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_) | TransactionError::CommitConflict(_),
            }),
        ) => {
            tracing::debug!(error = %e, "gold.models moved on; recomputing");
            Ok(None)
        }
        Err(e) => Err(JobError::delta(gold::MODELS, e)),
    }
}

/// Attempts at a compare-and-swap commit before giving up.
pub(crate) const CAS_ATTEMPTS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_and_latest_are_the_newest_version_and_no_alias_can_take_them() {
        for s in ["m@main", "m@latest", "org/m@main", "m"] {
            let r: GoldRef = s.parse().expect(s);
            assert!(matches!(r.selector, Selector::Latest), "{s}");
        }
        let r: GoldRef = "m@champion".parse().expect("alias");
        assert!(matches!(r.selector, Selector::Alias(a) if a == "champion"));
        for alias in ["main", "latest", "Main", "3"] {
            assert!(check_name("alias", alias).is_err(), "{alias}");
        }
    }
}
