//! Unit tests of the export: the shape of tasks, shards, clusters, schedule.

use serde_json::Value;

use super::*;
use crate::load_str;

const YAML: &str = "name: nightly-weights
lake: s3://lake
parameters: { revision: main }
schedule: { quartz_cron: '0 0 3 * * ?', timezone: Europe/Paris }
compute: { cloud: gcp, workers: 4, spot: true }
sources: { m: { local: { path: ./m } } }
stages:
  ingest: { job: ingest, sources: [m], revision: '${revision}', shards: 3, max_retries: 2, min_retry_interval: 30s, timeout: 1h }
  tensorise: { job: tensorise, depends_on: [ingest], run_if: ALL_DONE, retry_on_timeout: true }
";

fn job(runner: Runner) -> Value {
    let p = load_str(YAML, "/x/nightly.yaml").expect("valid");
    let s = export(&p, &ExportOptions::new(ExportFormat::JobJson, runner)).expect("export");
    serde_json::from_str(&s).expect("json")
}

#[test]
fn stages_become_tasks_with_dependencies_retries_and_shards() {
    let j = job(Runner::Jar);
    assert_eq!(j["name"], "nightly-weights");
    let ingest = &j["tasks"][0];
    assert_eq!(ingest["task_key"], "ingest");
    assert!(ingest.get("run_if").is_none() && ingest.get("depends_on").is_none());
    let each = &ingest["for_each_task"];
    assert_eq!(each["inputs"], "[0,1,2]");
    assert_eq!(each["concurrency"], 3);
    let inner = &each["task"];
    assert_eq!(inner["task_key"], "ingest_shard");
    assert_eq!(inner["max_retries"], 2);
    assert_eq!(inner["min_retry_interval_millis"], 30_000);
    assert_eq!(inner["timeout_seconds"], 3600);
    assert_eq!(inner["job_cluster_key"], "weightlake");
    let args: Vec<&str> = inner["spark_jar_task"]["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args,
        [
            "task",
            "ingest",
            "--pipeline",
            "/Volumes/main/default/weightlake/nightly.yaml",
            "--run-id",
            "{{job.run_id}}",
            "--param",
            "revision={{job.parameters.revision}}",
            "--shard",
            "{{input}}/3"
        ]
    );
    assert_eq!(
        inner["libraries"][0]["jar"],
        "/Volumes/main/default/weightlake/weightlake-launcher.jar"
    );
    let tensorise = &j["tasks"][1];
    assert_eq!(tensorise["depends_on"][0]["task_key"], "ingest");
    assert_eq!(tensorise["run_if"], "ALL_DONE");
    assert_eq!(tensorise["retry_on_timeout"], true);
    assert!(tensorise.get("for_each_task").is_none());
}

#[test]
fn cluster_schedule_and_parameters() {
    let j = job(Runner::Wheel);
    let c = &j["job_clusters"][0]["new_cluster"];
    assert_eq!(
        c["gcp_attributes"]["availability"],
        "PREEMPTIBLE_WITH_FALLBACK_GCP"
    );
    assert_eq!(c["node_type_id"], "n2-highmem-4");
    assert_eq!(c["num_workers"], 4);
    assert!(c.get("aws_attributes").is_none());
    assert_eq!(
        c["spark_env_vars"]["WEIGHTLAKE_BIN"],
        "/Volumes/main/default/weightlake/weightlake"
    );
    assert_eq!(j["schedule"]["quartz_cron_expression"], "0 0 3 * * ?");
    assert_eq!(j["schedule"]["timezone_id"], "Europe/Paris");
    assert_eq!(j["schedule"]["pause_status"], "UNPAUSED");
    assert_eq!(j["parameters"][0]["name"], "revision");
    assert_eq!(j["parameters"][0]["default"], "main");
    let wheel = &j["tasks"][1]["python_wheel_task"];
    assert_eq!(wheel["package_name"], "weightlake_launcher");
    assert_eq!(wheel["entry_point"], "weightlake-launcher");
}

#[test]
fn aws_spot_and_defaults() {
    let yaml = YAML.replace("cloud: gcp, workers: 4", "cloud: aws");
    let p = load_str(&yaml, "n.yaml").expect("valid");
    let j = job_settings(&p, Runner::Jar, "/a", None);
    let c = &j.job_clusters[0].new_cluster;
    assert_eq!(
        c.aws_attributes.as_ref().map(|a| a.availability.as_str()),
        Some("SPOT_WITH_FALLBACK")
    );
    assert_eq!(c.num_workers, 1);
    assert_eq!(c.node_type_id, "i3.xlarge");
}

#[test]
fn bundle_has_variables_job_and_targets() {
    let p = load_str(YAML, "nightly.yaml").expect("valid");
    let y = export(&p, &ExportOptions::new(ExportFormat::Bundle, Runner::Jar)).expect("bundle");
    let v: yaml_serde::Value = yaml_serde::from_str(&y).expect("yaml");
    assert_eq!(v["bundle"]["name"].as_str(), Some("nightly-weights"));
    assert_eq!(v["variables"]["revision"]["default"].as_str(), Some("main"));
    let job = &v["resources"]["jobs"]["nightly_weights"];
    assert_eq!(
        job["parameters"][0]["default"].as_str(),
        Some("${var.revision}")
    );
    assert_eq!(
        job["tasks"][1]["libraries"][0]["jar"].as_str(),
        Some("${var.weightlake_artifacts}/weightlake-launcher.jar")
    );
    assert_eq!(v["targets"]["dev"]["mode"].as_str(), Some("development"));
    assert_eq!(v["targets"]["dev"]["default"].as_bool(), Some(true));
    assert_eq!(v["targets"]["prod"]["mode"].as_str(), Some("production"));
}

#[test]
fn local_paths_that_a_cluster_would_not_share_are_named() {
    let p = load_str(YAML, "/x/nightly.yaml").expect("valid");
    assert_eq!(cluster_local_paths(&p), ["source `m` `./m`"]);
    let shared = YAML
        .replace("lake: s3://lake", "lake: /Volumes/main/weights/lake")
        .replace("path: ./m", "path: /dbfs/models/m");
    let p = load_str(&shared, "/x/nightly.yaml").expect("valid");
    assert!(cluster_local_paths(&p).is_empty());
    let p = load_str(
        &YAML.replace("lake: s3://lake", "lake: ./lake"),
        "/x/n.yaml",
    )
    .expect("valid");
    assert_eq!(
        cluster_local_paths(&p),
        ["lake `./lake`", "source `m` `./m`"]
    );
}
