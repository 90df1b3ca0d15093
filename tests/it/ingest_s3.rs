//! Lakes and sources on the S3 server (moto, started by scripts/test.sh).

use object_store::ObjectStoreExt;
use weightlake_connectors::storage::{StorageConfig, parse_location};
use weightlake_jobs::lake::Lake;

use crate::support::*;

fn s3_storage() -> StorageConfig {
    StorageConfig {
        endpoint: Some(s3_endpoint()),
        ..Default::default()
    }
}

async fn put_objects(bucket: &str, prefix: &str, files: &[(&str, Vec<u8>)]) {
    let url = parse_location(&format!("s3://{bucket}/{prefix}")).expect("url");
    let (store, root) = s3_storage().object_store(&url).expect("store");
    for (p, data) in files {
        let path = object_store::path::Path::from(format!("{root}/{p}"));
        store.put(&path, data.clone().into()).await.expect("put");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_prefix_source_into_s3_lake_with_sql() {
    let bucket = new_bucket("lake").await;
    let weights = random_bytes(2 << 20, 11);
    put_objects(
        &bucket,
        "checkpoints/run-42",
        &[
            ("model.safetensors", weights.clone()),
            ("config.json", b"{}".to_vec()),
            ("optimizer.pt", vec![1; 10]),
        ],
    )
    .await;
    // A folder marker (a key ending in `/`, as the S3 console's "Create
    // folder" makes) is not a file of the model.
    let marker = reqwest::Client::new()
        .put(format!(
            "{}/{bucket}/checkpoints/run-42/logs/",
            s3_endpoint()
        ))
        .send()
        .await
        .expect("put marker");
    assert!(marker.status().is_success(), "{marker:?}");
    let lake_url = format!("s3://{bucket}/lake");
    let out = bin()
        .args([
            "ingest",
            &format!("s3://{bucket}/checkpoints/run-42/"),
            "--lake",
            &lake_url,
            "--model-id",
            "tuned",
            "--revision",
            "step-100",
            "--chunk-size",
            "512KiB",
            "-q",
        ])
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 files ingested"), "{}", text(&out));

    let lake = Lake::new(&lake_url, s3_storage()).expect("lake");
    assert_eq!(
        read_back(&lake, "tuned", "model.safetensors").await,
        weights
    );
    let out = bin()
        .args([
            "sql",
            "--lake",
            &lake_url,
            "--format",
            "csv",
            "SELECT revision, COUNT(*) AS n FROM bronze.model_files GROUP BY revision",
        ])
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .output()
        .expect("sql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "revision,n\nstep-100,6",
        "{}",
        text(&out)
    );

    // One object's own key (as copied from a console) is that one file; its
    // model id defaults to the prefix it sits in.
    let out = bin()
        .args([
            "ingest",
            &format!("s3://{bucket}/checkpoints/run-42/config.json"),
            "--lake",
            &lake_url,
            "-q",
        ])
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .output()
        .expect("run");
    assert!(
        out.status.success() && text(&out).contains("1 files ingested"),
        "{}",
        text(&out)
    );
    assert_eq!(read_back(&lake, "run-42", "config.json").await, b"{}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_ingests_into_one_s3_table_lose_no_commit() {
    let bucket = new_bucket("conc").await;
    let lake_url = format!("s3://{bucket}/lake");
    let tmp = tempfile::tempdir().expect("tmp");
    let mut expected = Vec::new();
    let mut children = Vec::new();
    for w in 0..3u64 {
        let dir = tmp.path().join(format!("m{w}"));
        let files: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| {
                (
                    format!("shard-{i}.bin"),
                    random_bytes(40_000 + i * 1000, w * 10 + i as u64),
                )
            })
            .collect();
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        write_tree(&dir, &refs);
        expected.push((format!("m{w}"), files));
        // Tiny commits: every chunk is its own Delta commit, so the writers race.
        children.push(
            bin()
                .args([
                    "ingest",
                    dir.to_str().expect("utf8"),
                    "--lake",
                    &lake_url,
                    "--chunk-size",
                    "16KiB",
                    "--memory-budget",
                    "64KiB",
                    "-q",
                ])
                .env("AWS_ENDPOINT_URL", s3_endpoint())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn"),
        );
    }
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", text(&out));
    }
    let lake = Lake::new(&lake_url, s3_storage()).expect("lake");
    for (model, files) in &expected {
        for (path, data) in files {
            assert_eq!(&read_back(&lake, model, path).await, data, "{model}/{path}");
        }
    }
    let total_chunks: i64 = expected
        .iter()
        .flat_map(|(_, f)| f.iter().map(|(_, d)| d.len().div_ceil(16 << 10) as i64))
        .sum();
    assert_eq!(
        query_i64(&lake, "SELECT COUNT(*) FROM bronze.model_files").await,
        [total_chunks]
    );
    assert_eq!(
        query_i64(&lake, "SELECT COUNT(*) FROM bronze.files").await,
        [12]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefix_holding_a_file_and_a_directory_of_one_name_is_refused() {
    let bucket = new_bucket("lake").await;
    put_objects(
        &bucket,
        "odd",
        &[("a", b"file".to_vec()), ("a/b", b"under it".to_vec())],
    )
    .await;
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = bin()
        .args(["ingest", &format!("s3://{bucket}/odd/"), "--lake"])
        .arg(&lake)
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("both a file `a` and a file `a/b`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_missing_bucket_is_named_without_the_s3_xml_body() {
    let tiny = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny");
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "name: nobucket\nlake: s3://no-such-bucket-{}/lake\nsources:\n  t: {{ local: {{ path: {} }} }}\nstages:\n  ingest: {{ job: ingest, sources: [t] }}\n",
            &uuid::Uuid::new_v4().simple().to_string()[..8],
            tiny.display()
        ),
    )
    .expect("write");
    for args in [
        vec!["run", p.to_str().expect("utf8")],
        vec!["plan", p.to_str().expect("utf8")],
    ] {
        let out = bin()
            .args(&args)
            .env("AWS_ENDPOINT_URL", s3_endpoint())
            .output()
            .expect("run");
        let t = text(&out);
        assert!(
            !t.contains("<?xml") && !t.contains("<RequestId>"),
            "{args:?}: {t}"
        );
        assert!(t.contains("NoSuchBucket"), "{args:?}: {t}");
        // Neither the run nor its plan reads a missing bucket as fine.
        assert_eq!(out.status.code(), Some(1), "{args:?}: {t}");
    }
    // The error quotes its cause once.
    let lake = format!("s3://no-such-bucket-{}/lake", uuid::Uuid::new_v4().simple());
    let out = bin()
        .args([
            "ingest",
            tiny.to_str().expect("utf8"),
            "--lake",
            &lake,
            "-q",
        ])
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .output()
        .expect("run");
    let t = text(&out);
    assert_eq!(t.matches("NoSuchBucket").count(), 1, "{t}");
}
