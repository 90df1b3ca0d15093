//! `promote` and `export` stages: their validation (pure, part of
//! [`crate::validate`]) and how the runner builds their jobs.
//!
//! - `promote` runs [`PromoteJob`] on a silver revision (`model:`, resolved
//!   like a tensorise stage's `base_model`). A `fail` gate that fails is a
//!   rejected promotion: the stage fails (exit 1) and is not retried (the same
//!   weights would be rejected again).
//! - `export` runs [`ExportJob::for_reference`] to `to:`.
//!
//! Neither is sharded: one task each.

use std::collections::BTreeSet;

use weightlake_connectors::mlflow::MlflowClient;
use weightlake_jobs::JobError;
use weightlake_jobs::export::{ExportJob, ExportReport};
use weightlake_jobs::gold::GoldRef;
use weightlake_jobs::gold::check_name;
use weightlake_jobs::gold::promote::{MlflowOptions, PromoteJob, PromoteReport};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::tensorise::parse_model_ref;

use crate::spec::{JobKind, PipelineSpec, StageSpec};
use crate::validate::{Errors, locate_path, resolve_model};

/// Default files rebuilt at once by an export stage.
pub const DEFAULT_EXPORT_PARALLELISM: usize = 4;

/// Check the promote/export fields of `stage`, and that no stage sets
/// fields of a job it does not run.
pub(crate) fn check(spec: &PipelineSpec, name: &str, stage: &StageSpec, errs: &mut Errors<'_>) {
    let raw = errs.raw;
    let at = |key: &str| locate_path(raw, &["stages", name, key]);
    let job = stage.job.as_str();
    let misplaced: [(&str, bool, &[JobKind]); 9] = [
        (
            "model",
            stage.model.is_some(),
            &[JobKind::Promote, JobKind::Export],
        ),
        ("name", stage.name.is_some(), &[JobKind::Promote]),
        ("alias", stage.alias.is_some(), &[JobKind::Promote]),
        ("gates", !stage.gates.is_empty(), &[JobKind::Promote]),
        ("metrics", !stage.metrics.is_empty(), &[JobKind::Promote]),
        ("mlflow", stage.mlflow.is_some(), &[JobKind::Promote]),
        (
            "allow_quarantined",
            stage.allow_quarantined,
            &[JobKind::Promote],
        ),
        ("to", stage.to.is_some(), &[JobKind::Export]),
        ("delete_others", stage.delete_others, &[JobKind::Export]),
    ];
    for (key, set, jobs) in misplaced {
        if set && !jobs.contains(&stage.job) {
            let owners: Vec<&str> = jobs.iter().map(|j| j.as_str()).collect();
            errs.at(
                at(key),
                format!(
                    "stage `{name}`: `{key}` applies to {} stages, not {job}",
                    owners.join(" and ")
                ),
            );
        }
    }
    if !matches!(stage.job, JobKind::Promote | JobKind::Export) {
        return;
    }
    for (key, set) in [
        ("sources", !stage.sources.is_empty()),
        ("base_model", stage.base_model.is_some()),
        ("model_id", stage.model_id.is_some()),
    ] {
        if set {
            errs.at(
                at(key),
                format!("stage `{name}`: `{key}` does not apply to {job} stages"),
            );
        }
    }
    if stage.shards.is_some_and(|n| n > 1) {
        errs.at(
            at("shards"),
            format!("stage `{name}`: a {job} stage runs as one task; remove `shards`"),
        );
    }
    let Some(model) = stage.model.as_deref() else {
        errs.at(
            locate_path(raw, &["stages", name]),
            format!("{job} stage `{name}` needs `model:`"),
        );
        return;
    };
    match stage.job {
        JobKind::Promote => check_promote(spec, name, stage, model, errs),
        _ => check_export(spec, name, stage, model, errs),
    }
}

fn check_promote(
    spec: &PipelineSpec,
    name: &str,
    stage: &StageSpec,
    model: &str,
    errs: &mut Errors<'_>,
) {
    let raw = errs.raw;
    let at = |key: &str| locate_path(raw, &["stages", name, key]);
    match resolve_model(spec, model, "model") {
        Ok(r) => {
            if let Err(e) = parse_model_ref(&r) {
                errs.at(at("model"), format!("stage `{name}`: {e}"));
            }
        }
        Err(e) => errs.at(at("model"), format!("stage `{name}`: {e}")),
    }
    match &stage.name {
        None => errs.at(
            locate_path(raw, &["stages", name]),
            format!("promote stage `{name}` needs `name:` (the gold model name)"),
        ),
        Some(n) => {
            if let Err(e) = check_name("model name", n) {
                errs.at(at("name"), format!("stage `{name}`: {e}"));
            }
        }
    }
    if let Some(a) = &stage.alias
        && let Err(e) = check_name("alias", a)
    {
        errs.at(at("alias"), format!("stage `{name}`: {e}"));
    }
    let mut seen = BTreeSet::new();
    for (i, g) in stage.gates.iter().enumerate() {
        let gate = g.to_gate(i + 1);
        let pos = gate_position(raw, name, &gate.expr, &gate.name);
        if gate.expr.is_empty() {
            errs.at(
                pos,
                format!("stage `{name}`: gate {} has an empty expression", i + 1),
            );
        } else if let Err(e) = weightlake_jobs::gold::gates::check_syntax(&gate.expr) {
            errs.at(
                pos,
                format!(
                    "stage `{name}`: gate `{}`: `{}` is not an SQL expression: {e}",
                    gate.name, gate.expr
                ),
            );
        }
        if gate.name.trim().is_empty() {
            errs.at(
                pos,
                format!("stage `{name}`: gate {} has an empty name", i + 1),
            );
        } else if !seen.insert(gate.name.clone()) {
            errs.at(
                pos,
                format!(
                    "stage `{name}`: gate `{}` is defined twice; gate names must be unique",
                    gate.name
                ),
            );
        }
    }
    for (k, v) in &stage.metrics {
        if !v.is_finite() {
            errs.at(
                at("metrics"),
                format!("stage `{name}`: metric `{k}` must be a finite number"),
            );
        }
    }
    if let Some(m) = &stage.mlflow {
        for (key, value) in [
            ("tracking_uri", &m.tracking_uri),
            ("experiment", &m.experiment),
            ("metrics_run", &m.metrics_run),
            ("source", &m.source),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                errs.at(
                    locate_path(raw, &["stages", name, "mlflow", key]),
                    format!("stage `{name}`: mlflow.{key} must not be empty"),
                );
            }
        }
    }
}

fn check_export(
    spec: &PipelineSpec,
    name: &str,
    stage: &StageSpec,
    model: &str,
    errs: &mut Errors<'_>,
) {
    let raw = errs.raw;
    let at = |key: &str| locate_path(raw, &["stages", name, key]);
    if model.parse::<GoldRef>().is_err() && parse_model_ref(model).is_err() {
        errs.at(
            at("model"),
            format!(
                "stage `{name}`: model `{model}` is not NAME@ALIAS, NAME:VERSION, NAME or MODEL@REVISION"
            ),
        );
    }
    match &stage.to {
        None => errs.at(
            locate_path(raw, &["stages", name]),
            format!("export stage `{name}` needs `to:` (a directory, s3://… or gs://…)"),
        ),
        Some(to) => match weightlake_connectors::storage::parse_location(to) {
            Err(e) => errs.at(at("to"), format!("stage `{name}`: {e}")),
            Ok(dest) => {
                let lake = weightlake_connectors::storage::parse_location(&spec.lake);
                if stage.delete_others
                    && lake.is_ok_and(|l| weightlake_jobs::export::overlaps_lake(&l, &dest))
                {
                    errs.at(
                        at("delete_others"),
                        format!(
                            "stage `{name}`: `delete_others` with `to: {to}`, which holds the \
                             lake or lies inside it, would delete the lake"
                        ),
                    );
                }
            }
        },
    }
    if stage.parallelism == Some(0) {
        errs.at(
            at("parallelism"),
            format!("stage `{name}`: parallelism must be at least 1"),
        );
    }
}

/// The line of a gate: the first line after the stage's `gates:` that holds
/// its expression, else `name: <its name>`, else the `gates:` line.
fn gate_position(raw: &str, stage: &str, expr: &str, gate_name: &str) -> (usize, usize) {
    let (line, col) = locate_path(raw, &["stages", stage, "gates"]);
    if line == 0 {
        return (line, col);
    }
    let named = format!("name: {gate_name}");
    for needle in [expr, named.as_str()] {
        if needle.is_empty() {
            continue;
        }
        for (i, text) in raw.lines().enumerate().skip(line - 1) {
            if let Some(c) = text.find(needle) {
                return (i + 1, c + 1);
            }
        }
    }
    (line, col)
}

/// The tracking server of a promote stage: its `mlflow.tracking_uri`, the
/// pipeline's, else `MLFLOW_TRACKING_URI`; `None` when MLflow is off (no
/// `mlflow:` block on the stage and no environment variable).
fn promote_mlflow(spec: &PipelineSpec, stage: &StageSpec) -> Result<Option<MlflowOptions>, String> {
    let env = std::env::var("MLFLOW_TRACKING_URI")
        .ok()
        .filter(|v| !v.is_empty());
    if stage.mlflow.is_none() && env.is_none() {
        return Ok(None);
    }
    let uri = stage
        .mlflow
        .as_ref()
        .and_then(|m| m.tracking_uri.clone())
        .or_else(|| spec.mlflow.as_ref().and_then(|m| m.tracking_uri.clone()))
        .or(env)
        .ok_or_else(|| {
            "the promote stage has an `mlflow:` block but no tracking server: set \
             mlflow.tracking_uri or MLFLOW_TRACKING_URI"
                .to_string()
        })?;
    let client = MlflowClient::new(&uri).map_err(|e| e.to_string())?;
    let mut o = MlflowOptions::new(client);
    if let Some(m) = &stage.mlflow {
        o.register = m.register;
        if let Some(e) = &m.experiment {
            o.experiment = e.clone();
        }
        o.metrics_run = m.metrics_run.clone();
        o.source = m.source.clone();
    }
    if o.source.is_none() {
        o.source = export_location(spec, stage);
    }
    Ok(Some(o))
}

/// Where this pipeline exports the version a promote stage makes: the `to:`
/// of an export stage whose `model:` is the gold name (or the name at the
/// stage's alias), when it is an `s3://` location (the schemes an MLflow
/// registry accepts as a version's source besides `runs:/` and `models:/`).
fn export_location(spec: &PipelineSpec, promote: &StageSpec) -> Option<String> {
    let name = promote.name.as_deref()?;
    let at_alias = promote.alias.as_ref().map(|a| format!("{name}@{a}"));
    spec.stages
        .values()
        .filter(|s| s.job == JobKind::Export)
        .filter(|s| {
            s.model
                .as_deref()
                .is_some_and(|m| m == name || Some(m) == at_alias.as_deref())
        })
        .find_map(|s| s.to.clone().filter(|to| to.starts_with("s3://")))
}

/// Run a promote stage.
pub(crate) async fn promote(
    spec: &PipelineSpec,
    stage: &StageSpec,
    lake: Lake,
    run_id: Option<&str>,
) -> Result<PromoteReport, JobError> {
    let model = stage
        .model
        .as_deref()
        .ok_or_else(|| JobError::Invalid("a promote stage needs `model:`".into()))?;
    let reference = resolve_model(spec, model, "model").map_err(JobError::Invalid)?;
    let (m, r) = parse_model_ref(&reference)?;
    let name = stage
        .name
        .clone()
        .ok_or_else(|| JobError::Invalid("a promote stage needs `name:`".into()))?;
    let gates = stage
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| g.to_gate(i + 1))
        .collect();
    let mut job = PromoteJob::new(lake, m, r, name)
        .with_alias(stage.alias.clone())
        .with_gates(gates)
        .with_metrics(stage.metrics.clone())
        .with_mlflow(promote_mlflow(spec, stage).map_err(JobError::Invalid)?)
        .with_allow_quarantined(stage.allow_quarantined);
    if let Some(id) = run_id {
        job = job.with_run_id(id);
    }
    job.await
}

/// Run an export stage.
pub(crate) async fn export(stage: &StageSpec, lake: Lake) -> Result<ExportReport, JobError> {
    let (model, to) = match (&stage.model, &stage.to) {
        (Some(m), Some(t)) => (m, t),
        _ => {
            return Err(JobError::Invalid(
                "an export stage needs `model:` and `to:`".into(),
            ));
        }
    };
    let (job, label) = ExportJob::for_reference(lake, model).await?;
    tracing::info!(%label, %to, "exporting");
    job.to(to.clone())
        .delete_others(stage.delete_others)
        .with_concurrency(stage.parallelism.unwrap_or(DEFAULT_EXPORT_PARALLELISM))
        .await
}

#[cfg(test)]
mod tests {
    use weightlake_jobs::gold::GateAction;

    use crate::load_str;

    const BASE: &str = "name: t\nlake: ./lake\nsources:\n  ft: { local: { path: ./m } }\nstages:\n  ingest: { job: ingest, sources: [ft], model_id: tuned }\n";

    fn err(stages: &str) -> String {
        load_str(&format!("{BASE}{stages}"), "t.yaml")
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn an_export_deleting_other_files_where_the_lake_is_is_refused() {
        for to in [".", "./lake", "./lake/silver"] {
            let e = err(&format!(
                "  out: {{ job: export, model: tuned@main, to: {to}, delete_others: true }}\n"
            ));
            assert!(e.contains("would delete the lake"), "{to}: {e}");
        }
        load_str(
            &format!("{BASE}  out: {{ job: export, model: tuned@main, to: ./out, delete_others: true }}\n"),
            "t.yaml",
        )
        .expect("a destination beside the lake is fine");
    }

    #[test]
    fn promote_and_export_stages_parse_with_gate_defaults() {
        let p = load_str(
            &format!(
                "{BASE}  promote:\n    job: promote\n    depends_on: [ingest]\n    model: ft\n    name: tuned\n    alias: champion\n    metrics: {{ eval_loss: 1.9 }}\n    gates:\n      - max(nan_count) = 0\n      - {{ name: loss, action: warn, expr: eval_loss < 2.1 }}\n      - {{ expr: 'max(rel_l2_change) < 0.05' }}\n    mlflow: {{ register: false }}\n  export: {{ job: export, depends_on: [promote], model: tuned@champion, to: ./out }}\n"
            ),
            "t.yaml",
        )
        .expect("valid");
        let st = &p.spec().stages["promote"];
        let gates: Vec<_> = st
            .gates
            .iter()
            .enumerate()
            .map(|(i, g)| g.to_gate(i + 1))
            .collect();
        assert_eq!(gates[0].name, "gate_1");
        assert_eq!(gates[0].action, GateAction::Fail);
        assert_eq!(
            (gates[1].name.as_str(), gates[1].action),
            ("loss", GateAction::Warn)
        );
        assert_eq!(
            (gates[2].name.as_str(), gates[2].action),
            ("gate_3", GateAction::Fail)
        );
        assert_eq!(st.mlflow.as_ref().map(|m| m.register), Some(false));
        assert_eq!(
            crate::validate::resolve_model(p.spec(), "ft", "model").as_deref(),
            Ok("tuned@main")
        );
        assert_eq!(p.order(), ["ingest", "promote", "export"]);
    }

    #[test]
    fn the_registry_source_defaults_to_the_pipelines_s3_export_of_the_version() {
        let p = load_str(
            &format!(
                "{BASE}  promote: {{ job: promote, depends_on: [ingest], model: tuned@main, name: llama, alias: champion }}\n  \
                 local: {{ job: export, depends_on: [promote], model: llama@champion, to: ./out }}\n  \
                 other: {{ job: export, depends_on: [promote], model: llama@candidate, to: 's3://serving/cand/' }}\n  \
                 serving: {{ job: export, depends_on: [promote], model: llama@champion, to: 's3://serving/llama/' }}\n"
            ),
            "t.yaml",
        )
        .expect("valid");
        let spec = p.spec();
        assert_eq!(
            super::export_location(spec, &spec.stages["promote"]).as_deref(),
            Some("s3://serving/llama/")
        );
        let p = load_str(
            &format!(
                "{BASE}  promote: {{ job: promote, depends_on: [ingest], model: tuned@main, name: llama }}\n  \
                 local: {{ job: export, depends_on: [promote], model: llama, to: ./out }}\n"
            ),
            "t.yaml",
        )
        .expect("valid");
        let spec = p.spec();
        assert_eq!(super::export_location(spec, &spec.stages["promote"]), None);
    }

    #[test]
    fn unknown_keys_and_bad_actions_have_lines_and_suggestions() {
        let e = err(
            "  promote:\n    job: promote\n    model: ft\n    name: tuned\n    alais: champion\n",
        );
        assert!(
            e.starts_with("t.yaml:11:") && e.contains("did you mean `alias`"),
            "{e}"
        );
        let e = err(
            "  promote:\n    job: promote\n    model: ft\n    name: tuned\n    gates:\n      - { name: a, action: maybe, expr: x = 1 }\n",
        );
        assert!(
            e.starts_with("t.yaml:12:") && e.contains("unknown variant `maybe`"),
            "{e}"
        );
        let e = err(
            "  promote:\n    job: promote\n    model: ft\n    name: tuned\n    gates:\n      - { name: a, acton: warn, expr: x = 1 }\n",
        );
        assert!(
            e.starts_with("t.yaml:12:") && e.contains("did you mean `action`"),
            "{e}"
        );
        let e = err("  export:\n    job: export\n    model: tuned@champion\n    too: ./out\n");
        assert!(
            e.starts_with("t.yaml:10:") && e.contains("did you mean `to`"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_are_all_reported_with_positions() {
        let e = err(
            "  promote:\n    job: promote\n    model: nope\n    alias: '42'\n    shards: 2\n    gates:\n      - max(nan_count) = 0\n      - { name: gate_1, expr: 'x = 1' }\n      - '  '\n      - 'max(nan_count = 0'\n  export:\n    job: export\n    model: 'tuned@'\n    parallelism: 0\n    gates: [x = 1]\n",
        );
        let line = |needle: &str| {
            e.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {e}"))
                .to_string()
        };
        assert!(line("needs `name:`").starts_with("t.yaml:7:"), "{e}");
        assert!(
            line("model `nope` is neither").starts_with("t.yaml:9:"),
            "{e}"
        );
        assert!(line("invalid alias `42`").starts_with("t.yaml:10:"), "{e}");
        assert!(line("runs as one task").starts_with("t.yaml:11:"), "{e}");
        assert!(
            line("`gate_1` is defined twice").starts_with("t.yaml:14:"),
            "{e}"
        );
        assert!(
            line("gate 3 has an empty expression").contains("t.yaml:"),
            "{e}"
        );
        assert!(
            line("`max(nan_count = 0` is not an SQL expression").starts_with("t.yaml:16:"),
            "{e}"
        );
        assert!(line("needs `to:`").starts_with("t.yaml:17:"), "{e}");
        assert!(
            line("model `tuned@` is not").starts_with("t.yaml:19:"),
            "{e}"
        );
        assert!(line("parallelism must be").starts_with("t.yaml:20:"), "{e}");
        assert!(
            line("`gates` applies to promote stages, not export").starts_with("t.yaml:21:"),
            "{e}"
        );
    }
}
