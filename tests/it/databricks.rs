//! `weightlake databricks export`: the emitted job and bundle are checked
//! strictly against databricks-sdk's jobs model by
//! tests/fixtures/check_databricks_job.py (run with the test venv's Python),
//! and the checker itself is shown to reject broken payloads.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::support::*;

const PIPELINE: &str = "name: nightly-weights
lake: s3://lake/weights
parameters:
  revision: main
  parallelism: 16
schedule: { quartz_cron: '0 30 2 ? * MON-FRI', timezone: Europe/Paris, paused: true }
compute: { cloud: aws, node_type: r6id.2xlarge, workers: 2, spot: true }
cost: { instance: r6id.2xlarge, nodes: 3, price_table: aws, prices: { instances: { r6id.2xlarge: 0.6048 } } }
budget: { max_usd_per_run: 10 }
alerts: { throughput_drop_pct: 20 }
notifications:
  on: [start, failure]
  emails: [ml-platform@example.com]
  databricks_destinations: [0481e838-0a59-4eff-9541-a4ca6f149574]
sources:
  base: { hub: { repo: org/base, revision: main } }
  tuned: { object_store: { url: 's3://checkpoints/run-42/' } }
stages:
  ingest:
    job: ingest
    sources: [base, tuned]
    revision: ${revision}
    parallelism: ${parallelism}
    shards: 4
    max_retries: 3
    min_retry_interval: 30s
    timeout: 2h
    retry_on_timeout: true
  tensorise:
    job: tensorise
    depends_on: [ingest]
    base_model: base
    shards: 2
  report:
    job: tensorise
    depends_on: [ingest, tensorise]
    run_if: ALL_DONE
    timeout: 10m
";

fn checker() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check_databricks_job.py")
}

/// Run the SDK checker on a job JSON (or `--bundle` YAML) file.
fn check(args: &[&Path]) -> Output {
    std::process::Command::new(python())
        .arg(checker())
        .args(args)
        .output()
        .expect("run the checker")
}

fn export(dir: &Path, format: &str, runner: &str) -> PathBuf {
    let spec = dir.join("nightly.yaml");
    std::fs::write(&spec, PIPELINE).expect("write");
    let out_path = dir.join(format!("{format}-{runner}.out"));
    let out = run(&[
        "databricks",
        "export",
        spec.to_str().expect("utf8"),
        "--format",
        format,
        "--runner",
        runner,
        "-o",
        out_path.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    out_path
}

#[test]
fn job_json_passes_the_sdk_model_for_both_runners() {
    let tmp = tempfile::tempdir().expect("tmp");
    for runner in ["jar", "wheel"] {
        let path = export(tmp.path(), "job-json", runner);
        let out = check(&[&path]);
        assert!(out.status.success(), "{runner}: {}", text(&out));
        let job: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let inner = &job["tasks"][0]["for_each_task"]["task"];
        let task_kind = if runner == "jar" {
            "spark_jar_task"
        } else {
            "python_wheel_task"
        };
        let params = inner[task_kind]["parameters"].as_array().expect("params");
        assert!(params.contains(&json!("{{input}}/4")), "{params:?}");
        assert!(params.contains(&json!("revision={{job.parameters.revision}}")));
        let lib = if runner == "jar" { "jar" } else { "whl" };
        assert!(inner["libraries"][0][lib].is_string(), "{inner}");
        assert_eq!(job["tasks"][2]["run_if"], "ALL_DONE");
        assert_eq!(job["schedule"]["pause_status"], "PAUSED");
        assert_eq!(
            job["job_clusters"][0]["new_cluster"]["aws_attributes"]["availability"],
            "SPOT_WITH_FALLBACK"
        );
        let emails = &job["email_notifications"];
        assert_eq!(emails["on_failure"], json!(["ml-platform@example.com"]));
        assert_eq!(emails["on_start"], json!(["ml-platform@example.com"]));
        assert!(emails.get("on_success").is_none(), "{emails}");
        assert_eq!(
            job["webhook_notifications"]["on_failure"],
            json!([{ "id": "0481e838-0a59-4eff-9541-a4ca6f149574" }])
        );
    }
}

#[test]
fn bundle_job_passes_the_sdk_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    for runner in ["jar", "wheel"] {
        let path = export(tmp.path(), "bundle", runner);
        let out = check(&[Path::new("--bundle"), &path]);
        assert!(out.status.success(), "{runner}: {}", text(&out));
        let y = std::fs::read_to_string(&path).expect("read");
        assert!(
            y.contains("mode: development") && y.contains("mode: production"),
            "{y}"
        );
    }
}

#[test]
fn the_checker_rejects_unknown_fields_wrong_types_and_broken_graphs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good: Value = serde_json::from_slice(
        &std::fs::read(export(tmp.path(), "job-json", "jar")).expect("read"),
    )
    .expect("json");
    let broken = |name: &str, edit: &dyn Fn(&mut Value)| -> String {
        let mut job = good.clone();
        edit(&mut job);
        let p = tmp.path().join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_vec(&job).expect("json")).expect("write");
        let out = check(&[&p]);
        assert_eq!(out.status.code(), Some(1), "{name} passed: {}", text(&out));
        text(&out)
    };
    let t = broken("unknown-field", &|j| {
        j["tasks"][1]["retries"] = json!(3);
    });
    assert!(t.contains("unknown field 'retries'"), "{t}");
    let t = broken("nested-unknown-field", &|j| {
        j["tasks"][0]["for_each_task"]["task"]["spark_jar_task"]["main_class"] = json!("x");
    });
    assert!(t.contains("unknown field 'main_class'"), "{t}");
    let t = broken("dangling", &|j| {
        j["tasks"][1]["depends_on"][0]["task_key"] = json!("ingets");
    });
    assert!(t.contains("depends_on 'ingets'"), "{t}");
    let t = broken("cycle", &|j| {
        j["tasks"][0]["depends_on"] = json!([{ "task_key": "report" }]);
    });
    assert!(t.contains("dependency cycle"), "{t}");
    let t = broken("wrong-type", &|j| {
        j["tasks"][2]["timeout_seconds"] = json!("600");
    });
    assert!(t.contains("expected an integer"), "{t}");
    let t = broken("bad-enum", &|j| {
        j["tasks"][2]["run_if"] = json!("SOMETIMES");
    });
    assert!(t.contains("'SOMETIMES' is not one of RunIf"), "{t}");
    let t = broken("missing-required", &|j| {
        if let Some(t) = j["tasks"][1].as_object_mut() {
            t.remove("task_key");
        }
    });
    assert!(t.contains("missing required field 'task_key'"), "{t}");
    let t = broken("undefined-cluster", &|j| {
        j["job_clusters"][0]["job_cluster_key"] = json!("other");
    });
    assert!(t.contains("names no job cluster"), "{t}");
}

#[test]
fn export_of_an_invalid_pipeline_exits_2_and_every_example_exports() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        PIPELINE.replace("'0 30 2 ? * MON-FRI'", "'0 30 2 * * MON-FRI'"),
    )
    .expect("write");
    let out = run(&[
        "databricks",
        "export",
        bad.to_str().expect("utf8"),
        "--format",
        "job-json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{}:6:", bad.display())) && text(&out).contains("must be `?`"),
        "{}",
        text(&out)
    );
    // The launcher runs the binary under --artifacts, the task reads the
    // pipeline at --pipeline-path: neither can be an object store URL.
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, PIPELINE).expect("write");
    for (flag, value) in [
        ("--artifacts", "s3://bucket/wl"),
        ("--pipeline-path", "pipelines/p.yaml"),
    ] {
        let out = run(&[
            "databricks",
            "export",
            good.to_str().expect("utf8"),
            "--format",
            "job-json",
            flag,
            value,
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", text(&out));
        assert!(text(&out).contains("absolute path"), "{}", text(&out));
    }
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(&examples).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out_path = tmp.path().join("example.json");
        let out = bin()
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
            .args([
                "databricks",
                "export",
                path.to_str().expect("utf8"),
                "--format",
                "job-json",
                "-o",
                out_path.to_str().expect("utf8"),
            ])
            .output()
            .expect("export");
        assert!(out.status.success(), "{}: {}", path.display(), text(&out));
        let checked = check(&[&out_path]);
        assert!(
            checked.status.success(),
            "{}: {}",
            path.display(),
            text(&checked)
        );
    }
}
