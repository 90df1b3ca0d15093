//! Pipelines with promote and export stages, the run ledger
//! (`_system.runs`, `weightlake runs`) and MLflow tracking of pipeline runs.

use std::path::{Path, PathBuf};

use weightlake_jobs::gold::GoldState;
use weightlake_jobs::ledger;

use crate::support::*;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models")
}

fn write(dir: &Path, name: &str, yaml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, yaml).expect("write");
    p.to_string_lossy().into_owned()
}

/// Ingest `base` and `tuned` (as models `base` and `ft`), tensorise against
/// the base, then `promote_and_more` (stages after `tensorise`).
fn medallion(name: &str, lake: &str, base: &Path, tuned: &Path, promote_and_more: &str) -> String {
    format!(
        "name: {name}\nlake: {lake}\nsources:\n  base: {{ local: {{ path: {} }} }}\n  tuned: {{ local: {{ path: {} }} }}\nstages:\n  ingest_base: {{ job: ingest, sources: [base], model_id: base }}\n  ingest_tuned: {{ job: ingest, sources: [tuned], model_id: ft }}\n  tensorise: {{ job: tensorise, depends_on: [ingest_base, ingest_tuned], base_model: base }}\n{promote_and_more}",
        base.display(),
        tuned.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_tensorise_promote_export_pipeline_with_ledger_and_idempotent_rerun() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (base, ft, _) = gold_fixture(tmp.path());
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let out_dir = tmp.path().join("out");
    let yaml = medallion(
        "gold-e2e",
        &lake,
        &base,
        &ft,
        &format!(
            "  promote:\n    job: promote\n    depends_on: [tensorise]\n    model: tuned\n    name: minilm\n    alias: champion\n    metrics: {{ eval_loss: 1.9 }}\n    gates:\n      - eval_loss < 2.1\n      - {{ name: no_nans, action: warn, expr: 'max(nan_count) = 0' }}\n  export: {{ job: export, depends_on: [promote], model: minilm@champion, to: {} }}\n",
            out_dir.display()
        ),
    );
    let p = write(tmp.path(), "p.yaml", &yaml);
    let plan = run_ok(&["plan", &p]);
    assert!(
        plan.contains("job=promote") && plan.contains("model=ft@main -> minilm@champion, 2 gates"),
        "{plan}"
    );
    assert!(plan.contains("wave 4  export  job=export"), "{plan}");

    let out = run_ok(&["run", &p, "-q", "--run-id", "run-one"]);
    assert!(
        out.contains(
            "promote: minilm:1 @champion (new version), 1 of 2 gates passed, warned: no_nans"
        ),
        "{out}"
    );
    assert!(out.contains("export: "), "{out}");
    // The export is the fine-tune, byte for byte.
    assert_eq!(exported_tree(&out_dir), tree_digest(&ft));

    let list = run_ok(&["runs", "list", "--lake", &lake]);
    assert!(
        list.contains("run-one  gold-e2e") && list.contains("succeeded  stages 5 ok, 0 failed"),
        "{list}"
    );
    let show = run_ok(&["runs", "show", "run-one", "--lake", &lake]);
    for stage in [
        "ingest_base",
        "ingest_tuned",
        "tensorise",
        "promote",
        "export",
    ] {
        assert!(
            show.lines()
                .any(|l| l.trim_start().starts_with(stage) && l.contains("attempt 1  succeeded")),
            "{stage}: {show}"
        );
    }

    // Again: nothing new is promoted, and the ledger has the second run.
    let again = run_ok(&["run", &p, "-q", "--run-id", "run-two"]);
    assert!(
        again.contains("promote: minilm:1 @champion (these weights were already promoted)"),
        "{again}"
    );
    let state = GoldState::load(&local_lake(tmp.path()), None)
        .await
        .expect("gold");
    assert_eq!(state.versions["minilm"].len(), 1);
    let list = run_ok(&["runs", "list", "--lake", &lake, "--pipeline", "gold-e2e"]);
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["run-two", "run-one"], "{list}");
    let limited = run_ok(&["runs", "list", "--lake", &lake, "--limit", "1"]);
    assert_eq!(limited.lines().count(), 1, "{limited}");
    // The jobs recorded the pipeline's run id.
    let gold_run = &state.versions["minilm"][&1].run_id;
    assert_eq!(gold_run, "run-one");
    // SQL sees the ledger too.
    let sql = run_ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT COUNT(*) AS n FROM _system.runs WHERE status = 'succeeded' AND stage <> '(run)'",
    ]);
    assert!(sql.contains("\n10"), "{sql}");
    // Each run has a start and an end marker.
    let markers = run_ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT status, COUNT(*) AS n FROM _system.runs WHERE stage = '(run)' GROUP BY status ORDER BY status",
    ]);
    assert_eq!(
        markers.trim(),
        "status,n\nrunning,2\nsucceeded,2",
        "{markers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_fail_gate_fails_the_run_and_the_ledger_records_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let yaml = medallion(
        "gold-reject",
        &lake,
        &examples().join("tiny"),
        &examples().join("tiny-ft"),
        "  promote:\n    job: promote\n    depends_on: [tensorise]\n    model: tuned\n    name: tiny-tuned\n    max_retries: 2\n    gates: ['max(rel_l2_change) = 0']\n  export: { job: export, depends_on: [promote], model: tiny-tuned, to: ./never }\n",
    );
    let p = write(tmp.path(), "p.yaml", &yaml);
    let out = run(&["run", &p, "-q", "--run-id", "rejected-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("promote: failed after 1 attempt") && t.contains("gate_1"),
        "a rejection is not retried: {t}"
    );
    assert!(t.contains("export: upstream_failed"), "{t}");

    let rows = ledger::read(&local_lake(tmp.path())).await.expect("ledger");
    let promote: Vec<_> = rows.iter().filter(|r| r.stage == "promote").collect();
    assert_eq!(promote.len(), 1, "{rows:?}");
    assert_eq!(
        (promote[0].attempt, promote[0].status.as_str()),
        (1, "failed")
    );
    assert!(
        promote[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("gate_1")),
        "{promote:?}"
    );
    let export = rows
        .iter()
        .find(|r| r.stage == "export")
        .expect("export row");
    assert_eq!(
        (export.attempt, export.status.as_str()),
        (0, "upstream_failed")
    );
    let ingest = rows
        .iter()
        .find(|r| r.stage == "ingest_tuned")
        .expect("ingest row");
    assert!(
        ingest.bytes > 27_000 && ingest.throughput_mbps > 0.0,
        "{ingest:?}"
    );
    assert_eq!(ingest.shard, None);
    let list = run_ok(&["runs", "list", "--lake", &lake]);
    assert!(
        list.contains("rejected-run  gold-reject")
            && list.contains("failed     stages 3 ok, 1 failed, 1 not run"),
        "{list}"
    );
    let show = run_ok(&["runs", "show", "rejected", "--lake", &lake]);
    assert!(show.contains("error: stage `promote` failed"), "{show}");
    assert!(!tmp.path().join("never").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_run_is_tracked_in_mlflow_with_stage_metrics() {
    let uri = mlflow_uri();
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let pipeline = format!("tracked-{suffix}");
    let yaml = format!(
        "parameters: {{ flavour: vanilla }}\ncost: {{ instance: c4a-standard-8 }}\n{}",
        medallion(
            &pipeline,
            &lake,
            &examples().join("tiny"),
            &examples().join("tiny-ft"),
            &format!(
                "  promote: {{ job: promote, depends_on: [tensorise], model: tuned, name: tiny-{suffix}, alias: champion }}\n"
            ),
        )
    );
    let p = write(tmp.path(), "p.yaml", &yaml);
    let out = bin()
        .env("MLFLOW_TRACKING_URI", &uri)
        .args(["run", &p, "-q", "--run-id", &format!("mlflow-{suffix}")])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    // With MLflow on, the promotion was registered too.
    assert!(text(&out).contains("MLflow version 1"), "{}", text(&out));

    let client = weightlake_connectors::mlflow::MlflowClient::new(&uri).expect("client");
    let exp = client
        .experiment_id(&format!("weightlake/{pipeline}"))
        .await
        .expect("experiment");
    let runs = mlflow_runs(&uri, &exp, None).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    let kv = |section: &str, key: &str| {
        run["data"][section]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["key"] == key))
            .map(|m| m["value"].clone())
            .unwrap_or_else(|| panic!("no {section} {key}: {run}"))
    };
    assert_eq!(kv("params", "pipeline"), pipeline.as_str());
    assert_eq!(kv("params", "run_id"), format!("mlflow-{suffix}").as_str());
    assert_eq!(kv("params", "param.flavour"), "vanilla");
    assert!(
        kv("metrics", "ingest_tuned.bytes").as_f64() > Some(27_000.0),
        "{run}"
    );
    assert!(
        kv("metrics", "ingest_tuned.throughput_mbps").as_f64() > Some(0.0),
        "{run}"
    );
    let mut stage_costs = 0.0;
    for stage in ["ingest_base", "ingest_tuned", "tensorise", "promote"] {
        assert!(
            kv("metrics", &format!("{stage}.duration_s")).as_f64() > Some(0.0),
            "{run}"
        );
        stage_costs += kv("metrics", &format!("{stage}.cost_usd"))
            .as_f64()
            .expect("a stage cost");
    }
    // The run's cost is its stages' (MLflow stores metrics as doubles).
    let total = kv("metrics", "run.cost_usd").as_f64().expect("run cost");
    assert!(total > 0.0 && (total - stage_costs).abs() < 1e-9, "{run}");
    assert_eq!(kv("params", "cost.instance"), "c4a-standard-8");
}

#[test]
fn bad_promote_and_export_fields_are_reported_with_lines() {
    let tmp = tempfile::tempdir().expect("tmp");
    let head = "name: bad\nlake: ./lake\nsources:\n  s: { local: { path: ./m } }\nstages:\n  ingest: { job: ingest, sources: [s], model_id: m }\n";
    let cases = [
        (
            "  promote:\n    job: promote\n    model: s\n    name: tuned\n    gates:\n      - { name: a, action: maybe, expr: 'x = 1' }\n",
            ":12:",
            "unknown variant `maybe`",
        ),
        (
            "  promote:\n    job: promote\n    model: s\n    nmae: tuned\n",
            ":10:",
            "did you mean `name`",
        ),
        (
            "  export:\n    job: export\n    model: tuned@champion\n    to: ./out\n    paralelism: 2\n",
            ":11:",
            "did you mean `parallelism`",
        ),
        (
            "  promote:\n    job: promote\n    model: s\n    name: tuned\n    gates:\n      - { name: a, expr: 'x = 1' }\n      - { name: a, action: warn, expr: 'y = 1' }\n",
            ":13:",
            "gate `a` is defined twice",
        ),
    ];
    for (stages, line, message) in cases {
        let p = write(tmp.path(), "bad.yaml", &format!("{head}{stages}"));
        let out = run(&["validate", &p]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(
            t.contains(&format!("{p}{line}")) && t.contains(message),
            "expected {line} {message}: {t}"
        );
    }
}
