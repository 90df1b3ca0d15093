//! Scale-out: four `weightlake task` processes, shards 0..3 of 4, ingest and
//! then tensorise one model into one lake on the S3 server at the same time.
//! Every file lands exactly once in bronze and in silver, no Delta commit is
//! lost, and the model rebuilds bit for bit.

use std::process::Child;

use weightlake_connectors::storage::StorageConfig;
use weightlake_jobs::lake::Lake;

use crate::support::*;

fn spawn_shards(stage: &str, pipeline: &std::path::Path, run_id: &str) -> Vec<Child> {
    (0..4)
        .map(|i| {
            bin()
                .args([
                    "task",
                    stage,
                    "--pipeline",
                    pipeline.to_str().expect("utf8"),
                    "--shard",
                    &format!("{i}/4"),
                    "--run-id",
                    run_id,
                    "-q",
                ])
                .env("AWS_ENDPOINT_URL", s3_endpoint())
                .spawn()
                .expect("spawn task")
        })
        .collect()
}

fn wait_all(children: Vec<Child>) {
    for mut c in children {
        let status = c.wait().expect("wait");
        assert!(status.success(), "a shard task failed: {status}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_shard_tasks_share_one_pipeline_on_s3() {
    let bucket = new_bucket("shards").await;
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("model");
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            (
                format!("model-{i:05}-of-00008.safetensors"),
                safetensors_f32(40_000 + i * 1000, i),
            )
        })
        .collect();
    for (name, data) in &files {
        write_tree(&model, &[(name.as_str(), data.as_slice())]);
    }
    let pipeline = tmp.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: sharded
lake: s3://{bucket}/lake
storage: {{ endpoint: "{}", allow_http: true }}
sources:
  m: {{ local: {{ path: "{}" }} }}
stages:
  ingest: {{ job: ingest, sources: [m], model_id: sharded, chunk_size: 64KiB }}
  tensorise: {{ job: tensorise, depends_on: [ingest] }}
"#,
            s3_endpoint(),
            model.display()
        ),
    )
    .expect("write pipeline");

    wait_all(spawn_shards("ingest", &pipeline, "run-1"));
    wait_all(spawn_shards("tensorise", &pipeline, "run-1"));

    let lake = Lake::new(
        &format!("s3://{bucket}/lake"),
        StorageConfig {
            endpoint: Some(s3_endpoint()),
            ..Default::default()
        },
    )
    .expect("lake");
    let count = |sql: &'static str| {
        let lake = lake.clone();
        async move { query_i64(&lake, sql).await }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM bronze.files").await,
        vec![8],
        "each file once in bronze"
    );
    assert_eq!(
        count("SELECT COUNT(DISTINCT file_path) FROM bronze.files").await,
        vec![8]
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM silver.files").await,
        vec![8],
        "each file once in silver"
    );
    assert_eq!(count("SELECT COUNT(*) FROM silver.tensors").await, vec![8]);
    for (name, data) in &files {
        assert_eq!(read_back(&lake, "sharded", name).await, *data, "{name}");
    }
    // Every file rebuilds from silver.
    let lake_url = format!("s3://{bucket}/lake");
    let on_lake = |args: &[&str]| {
        let out = bin()
            .args(args)
            .args(["--lake", lake_url.as_str()])
            .env("AWS_ENDPOINT_URL", s3_endpoint())
            .output()
            .expect("run weightlake");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    // Run again, each shard counts only its own files as already present.
    let mut present = 0;
    for i in 0..4 {
        let out = bin()
            .args(["task", "tensorise", "--pipeline"])
            .arg(&pipeline)
            .args(["--shard", &format!("{i}/4"), "-q"])
            .env("AWS_ENDPOINT_URL", s3_endpoint())
            .output()
            .expect("run shard");
        assert!(out.status.success(), "{}", text(&out));
        let t = text(&out);
        let n: usize = t
            .split(" already present")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {t}"));
        present += n;
    }
    assert_eq!(present, 8, "already present, summed over the shards");
    let verify = on_lake(&["verify", "sharded@main", "-q"]);
    assert!(verify.contains("8 files"), "{verify}");

    // Maintenance on the S3 lake: the sharded writes left many small files;
    // compact them, drop the bronze chunks that silver rebuilds, vacuum
    // everything unreferenced at once, checkpoint. Silver still rebuilds all.
    let t = on_lake(&[
        "maintain",
        "--bronze-retention",
        "0s",
        "--vacuum-retention",
        "0s",
        "--allow-short-retention",
    ]);
    assert!(t.contains("8 files dropped"), "{t}");
    assert!(
        t.contains("checkpoint at version") && !t.contains(" 0 files vacuumed"),
        "compacted, vacuumed and checkpointed on S3: {t}"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM bronze.model_files").await,
        vec![0],
        "bronze chunks dropped"
    );
    assert_eq!(count("SELECT COUNT(*) FROM bronze.files").await, vec![8]);
    let verify = on_lake(&["verify", "sharded@main", "-q"]);
    assert!(verify.contains("8 files"), "after maintain: {verify}");
}
