//! `promote` and `models`: build the typed request, call `jobs::gold`, print.

use std::collections::BTreeMap;

use weightlake_connectors::mlflow::MlflowClient;
use weightlake_jobs::gold::alias::{set_alias, sync_registry};
use weightlake_jobs::gold::promote::{MlflowOptions, PromoteJob};
use weightlake_jobs::gold::{Gate, GoldRef, GoldState, GoldVersion};
use weightlake_jobs::tensorise::parse_model_ref;

use crate::args::{ModelsArgs, ModelsCommand, PromoteArgs};
use crate::commands::{CliError, bad_input, classify_job, open_lake};

fn mlflow_client(uri: Option<&str>) -> Result<Option<MlflowClient>, CliError> {
    match uri {
        Some(u) if !u.is_empty() => MlflowClient::new(u).map(Some).map_err(bad_input),
        _ => Ok(None),
    }
}

/// `weightlake promote`.
pub async fn promote(a: PromoteArgs) -> Result<(), CliError> {
    let lake = open_lake(&a.lake)?;
    let (m, r) = parse_model_ref(&a.model).map_err(bad_input)?;
    let gates = a
        .gates
        .iter()
        .map(|g| g.parse::<Gate>().map_err(bad_input))
        .collect::<Result<Vec<_>, _>>()?;
    let mut metrics = BTreeMap::new();
    for kv in &a.metrics {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad_input(anyhow::anyhow!("metric `{kv}`: expected NAME=NUMBER")))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| bad_input(anyhow::anyhow!("metric `{kv}`: `{v}` is not a number")))?;
        if metrics.insert(k.trim().to_string(), v).is_some() {
            return Err(bad_input(anyhow::anyhow!(
                "metric `{}` is given twice",
                k.trim()
            )));
        }
    }
    let mlflow = mlflow_client(a.mlflow.tracking_uri.as_deref())?.map(|client| {
        let mut o = MlflowOptions::new(client);
        o.register = !a.no_register;
        o.metrics_run = a.metrics_from_run.clone();
        o.source = a.registry_source.clone();
        o
    });
    if a.metrics_from_run.is_some() && mlflow.is_none() {
        return Err(bad_input(anyhow::anyhow!(
            "--metrics-from-run needs MLflow: set MLFLOW_TRACKING_URI or --mlflow-uri"
        )));
    }
    let report = PromoteJob::new(lake, m, r, a.name)
        .with_alias(a.alias)
        .with_gates(gates)
        .with_metrics(metrics)
        .with_mlflow(mlflow)
        .with_allow_quarantined(a.allow_quarantined)
        .await
        .map_err(classify_job)?;
    for g in &report.gates {
        println!(
            "  gate {:<20} {:<4} {:<5} {}  (requires: {})",
            g.name,
            g.action.to_string(),
            if g.passed { "pass" } else { "FAIL" },
            g.detail,
            g.expr
        );
    }
    println!(
        "promote: {}:{}{}{} ({} files, {}){}",
        report.name,
        report.version,
        existing_text(&report, ""),
        crate::gold::alias_text(&report),
        report.files,
        crate::progress::size(report.bytes),
        report
            .mlflow_version
            .as_ref()
            .map(|v| format!(", MLflow version {v}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// `weightlake models …`.
pub async fn models(a: ModelsArgs) -> Result<(), CliError> {
    use crate::args::AliasCommand;
    match a.command {
        ModelsCommand::List { gold } => {
            let lake = open_lake(&gold.lake)?;
            let state = GoldState::load(&lake, gold.as_of)
                .await
                .map_err(classify_job)?;
            if state.versions.is_empty() {
                println!("no gold models");
            }
            for (name, versions) in &state.versions {
                for v in versions.values() {
                    print_version_line(&state, name, v);
                }
            }
            Ok(())
        }
        ModelsCommand::Show { model, gold } => {
            let lake = open_lake(&gold.lake)?;
            let r: GoldRef = model.parse().map_err(bad_input)?;
            let state = GoldState::load(&lake, gold.as_of)
                .await
                .map_err(classify_job)?;
            let v = state.resolve(&r).map_err(bad_input)?;
            print_version(&state, v);
            Ok(())
        }
        ModelsCommand::Alias {
            action:
                AliasCommand::Set {
                    name,
                    alias,
                    to,
                    gold,
                },
        } => {
            let lake = open_lake(&gold.lake)?;
            let mlflow = mlflow_client(gold.mlflow.tracking_uri.as_deref())?;
            let target = if to.contains([':', '@']) {
                to.parse::<GoldRef>().map_err(bad_input)?
            } else {
                format!("{name}:{to}")
                    .parse::<GoldRef>()
                    .map_err(bad_input)?
            };
            let v = set_alias(&lake, &name, &alias, Some(&target), mlflow.as_ref())
                .await
                .map_err(classify_job)?;
            println!("{name}@{alias} -> {}", v.unwrap_or_default());
            warn_registry_not_told(&lake, &name, mlflow.is_some()).await;
            Ok(())
        }
        ModelsCommand::Alias {
            action: AliasCommand::Rm { name, alias, gold },
        } => {
            let lake = open_lake(&gold.lake)?;
            let mlflow = mlflow_client(gold.mlflow.tracking_uri.as_deref())?;
            let was = set_alias(&lake, &name, &alias, None, mlflow.as_ref())
                .await
                .map_err(classify_job)?;
            match was {
                Some(v) => println!("{name}@{alias} removed (it pointed at version {v})"),
                None => println!("{name}@{alias} was not set; nothing to remove"),
            }
            if was.is_some() {
                warn_registry_not_told(&lake, &name, mlflow.is_some()).await;
            }
            Ok(())
        }
        ModelsCommand::Sync { name, gold } => {
            let lake = open_lake(&gold.lake)?;
            let client = mlflow_client(gold.mlflow.tracking_uri.as_deref())?.ok_or_else(|| {
                bad_input(anyhow::anyhow!(
                    "sync needs MLflow: set MLFLOW_TRACKING_URI or --mlflow-uri"
                ))
            })?;
            let r = sync_registry(&lake, &name, &client)
                .await
                .map_err(classify_job)?;
            for (alias, v) in &r.set {
                println!("set {name}@{alias} -> MLflow version {v}");
            }
            for alias in &r.removed {
                println!("removed {name}@{alias}");
            }
            println!(
                "sync: {} aliases set, {} removed; registry matches gold",
                r.set.len(),
                r.removed.len()
            );
            Ok(())
        }
    }
}

/// An alias moved in gold without MLflow configured, for a model whose
/// versions are registered there: the registry's alias still points where
/// it did, and nothing else would say so.
async fn warn_registry_not_told(lake: &weightlake_jobs::lake::Lake, name: &str, told: bool) {
    if told {
        return;
    }
    let Ok(state) = GoldState::load(lake, None).await else {
        return;
    };
    let registered = state
        .versions
        .get(name)
        .is_some_and(|vs| vs.values().any(|v| v.mlflow_version.is_some()));
    if registered {
        eprintln!(
            "warning: {name} is registered in MLflow, which was not told (no \
             MLFLOW_TRACKING_URI or --mlflow-uri): its alias there is unchanged; run \
             `weightlake models sync {name}` with MLflow set"
        );
    }
}

fn print_version_line(state: &GoldState, name: &str, v: &GoldVersion) {
    let aliases = state.aliases_of(name, v.version);
    println!(
        "{name}:{}\t{}@{}\t{} files\t{}\t{}{}",
        v.version,
        v.model_id,
        v.revision,
        v.manifest.files.len(),
        crate::progress::size(v.manifest.bytes()),
        chrono::DateTime::from_timestamp_micros(v.promoted_at)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default(),
        if aliases.is_empty() {
            String::new()
        } else {
            format!("\t@{}", aliases.join(" @"))
        }
    );
}

fn print_version(state: &GoldState, v: &GoldVersion) {
    println!("name:        {}", v.name);
    println!("version:     {}", v.version);
    let aliases = state.aliases_of(&v.name, v.version);
    println!(
        "aliases:     {}",
        if aliases.is_empty() {
            "-".into()
        } else {
            aliases.join(", ")
        }
    );
    println!("source:      {}@{}", v.model_id, v.revision);
    println!("base model:  {}", v.base_model.as_deref().unwrap_or("-"));
    println!("manifest:    sha256 {}", v.manifest_sha256);
    println!(
        "promoted:    {} by run {}",
        chrono::DateTime::from_timestamp_micros(v.promoted_at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        v.run_id
    );
    println!(
        "MLflow:      {}",
        v.mlflow_version
            .as_deref()
            .map_or("-".to_string(), |m| format!(
                "version {m} (run {})",
                v.mlflow_run_id.as_deref().unwrap_or("-")
            ))
    );
    println!(
        "metrics:     {}",
        if v.metrics.is_empty() {
            "-".into()
        } else {
            v.metrics
                .iter()
                .map(|(k, x)| format!("{k}={x}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!("gates:");
    for g in &v.gates {
        println!(
            "  {:<20} {:<4} {:<5} {}  ({})",
            g.name,
            g.action.to_string(),
            if g.passed { "pass" } else { "FAIL" },
            g.detail,
            g.expr
        );
    }
    println!("files:");
    for f in &v.manifest.files {
        println!(
            "  {:<40} {:>12} bytes  {:<11} {} tensors  sha256 {}",
            f.path,
            f.size,
            f.format,
            f.tensors.len(),
            f.sha256
        );
    }
}

/// ` @alias`, and where it moved from when the promotion moved it.
/// ` (these weights were already promoted…)` for weights promoted before,
/// naming the newer version `NAME` still resolves to; `new` otherwise.
pub(crate) fn existing_text(
    r: &weightlake_jobs::gold::promote::PromoteReport,
    new: &str,
) -> String {
    match (r.existing, r.newer_version) {
        (true, Some(n)) => format!(
            " (these weights were already promoted; {}:{n} stays the newest version, \
             what {} and {}@main resolve to)",
            r.name, r.name, r.name
        ),
        (true, None) => " (these weights were already promoted)".to_string(),
        (false, _) => new.to_string(),
    }
}

pub(crate) fn alias_text(r: &weightlake_jobs::gold::promote::PromoteReport) -> String {
    match (&r.alias, r.alias_moved_from) {
        (Some(a), Some(from)) => format!(" @{a} (moved from version {from})"),
        (Some(a), None) => format!(" @{a}"),
        (None, _) => String::new(),
    }
}
