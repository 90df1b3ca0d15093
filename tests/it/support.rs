//! Shared helpers: the CLI binary, the S3 server from scripts/test.sh, the
//! Python venv, real model files, and reading files back out of bronze.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use weightlake_jobs::lake::Lake;
use weightlake_jobs::sql::{LakeSession, binary_value, int_value};

/// The `weightlake` binary under test.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weightlake"));
    c.env("RUST_LOG", "warn");
    c
}

/// Run the CLI and return its output.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn weightlake")
}

/// stdout + stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn env_or_explain(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with `bash scripts/test.sh`"))
}

/// The S3 server endpoint started by scripts/test.sh.
pub fn s3_endpoint() -> String {
    env_or_explain("WEIGHTLAKE_TEST_S3_ENDPOINT")
}

/// Create a fresh bucket on the S3 server and return its name.
pub async fn new_bucket(prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid_like()[..12]);
    let resp = reqwest::Client::new()
        .put(format!("{}/{name}", s3_endpoint()))
        .send()
        .await
        .expect("create bucket");
    assert!(
        resp.status().is_success(),
        "create bucket {name}: {}",
        resp.status()
    );
    name
}

fn uuid_like() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..16)
        .map(|_| format!("{:x}", r.random_range(0..16u8)))
        .collect()
}

/// The Python of the test venv (with deltalake, safetensors, huggingface_hub).
pub fn python() -> PathBuf {
    PathBuf::from(env_or_explain("WEIGHTLAKE_TEST_PYTHON"))
}

/// A real model directory fetched by scripts/fetch-models.sh.
pub fn model_dir(name: &str) -> PathBuf {
    let p = PathBuf::from(env_or_explain("WEIGHTLAKE_TEST_MODELS")).join(name);
    assert!(
        p.is_dir(),
        "{} missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

/// sha256 of bytes, hex.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Write `files` (relative path, bytes) under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &[u8])]) {
    for (p, data) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, data).expect("write");
    }
}

/// Reassemble a complete file from bronze: the `bronze.files` row must exist,
/// and its chunks are concatenated in order. Panics if chunks are missing or
/// duplicated.
pub async fn read_back(lake: &Lake, model: &str, path: &str) -> Vec<u8> {
    let s = LakeSession::new(lake).await.expect("session");
    let q = format!(
        "SELECT c.chunk_index, c.chunk_offset, c.data FROM bronze.model_files c JOIN bronze.files f \
         ON c.model_id = f.model_id AND c.upload_id = f.upload_id \
         WHERE f.model_id = '{model}' AND f.file_path = '{path}' ORDER BY c.chunk_index"
    );
    let batches = s.query(&q).await.expect("query chunks");
    let mut out = Vec::new();
    let mut expect_index = 0;
    for b in &batches {
        for r in 0..b.num_rows() {
            let idx = int_value(b.column(0).as_ref(), r).expect("index");
            assert_eq!(
                idx, expect_index,
                "chunk {idx} of {path} out of order or duplicated"
            );
            expect_index += 1;
            assert_eq!(
                int_value(b.column(1).as_ref(), r),
                Some(out.len() as i64),
                "offset of chunk {idx}"
            );
            out.extend_from_slice(binary_value(b.column(2).as_ref(), r).expect("data"));
        }
    }
    assert!(expect_index > 0, "{model}/{path} is not complete in bronze");
    out
}

/// Rows of a single-column integer query.
pub async fn query_i64(lake: &Lake, sql: &str) -> Vec<i64> {
    let s = LakeSession::new(lake).await.expect("session");
    let batches = s.query(sql).await.expect("query");
    batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| int_value(b.column(0).as_ref(), r).expect("int"))
        })
        .collect()
}

/// A lake on local disk in a temp dir.
pub fn local_lake(dir: &Path) -> Lake {
    Lake::new(dir.join("lake").to_str().expect("utf8"), Default::default()).expect("lake")
}

/// BF16, F16 and fine-tune variants of the real MiniLM weights, made by
/// tests/fixtures/make_variants.py under `out` (`bf16/`, `f16/`, `ft/`).
/// Returns its JSON: `changed` tensors of the fine-tune, and `nan`, the one
/// that holds a NaN.
pub fn make_variants(out: &Path) -> serde_json::Value {
    let src = model_dir("all-minilm-l6-v2");
    let o = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_variants.py"))
        .args([
            src.join("model.safetensors").to_str().expect("utf8"),
            out.to_str().expect("utf8"),
        ])
        .output()
        .expect("python");
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(o.stdout.trim_ascii()).expect("json")
}

/// A small real model for gold and serving tests: the BF16 and fine-tune
/// variants with MiniLM's config and tokenizer files, a nested one included.
/// Returns `(base_dir, ft_dir, info)` (see [`make_variants`]).
pub fn gold_fixture(root: &Path) -> (PathBuf, PathBuf, serde_json::Value) {
    let src = model_dir("all-minilm-l6-v2");
    let variants = root.join("variants");
    let info = make_variants(&variants);
    let (base, ft) = (variants.join("bf16"), variants.join("ft"));
    for dir in [&base, &ft] {
        for extra in ["config.json", "tokenizer.json", "1_Pooling/config.json"] {
            let to = dir.join(extra);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            std::fs::copy(src.join(extra), to).expect("copy");
        }
    }
    (base, ft, info)
}

/// Run the CLI and insist that it succeeds; returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lake under `root` with [`gold_fixture`]'s base ingested as `base@main` and
/// its fine-tune as `ft@main`, tensorised against the base. Returns
/// `(lake, base_dir, ft_dir, info)`.
pub fn base_and_finetune_lake(root: &Path) -> (String, PathBuf, PathBuf, serde_json::Value) {
    let (base, ft, info) = gold_fixture(root);
    let lake = root.join("lake").to_string_lossy().into_owned();
    for (dir, model) in [(&base, "base"), (&ft, "ft")] {
        run_ok(&[
            "ingest",
            dir.to_str().expect("utf8"),
            "--lake",
            &lake,
            "--model-id",
            model,
            "-q",
        ]);
    }
    let out = run_ok(&[
        "tensorise",
        "--lake",
        &lake,
        "--base-model",
        "base@main",
        "-q",
    ]);
    // Every tensor of the fine-tune has its like in the base, and says so.
    let line = out
        .lines()
        .find(|l| l.contains("tensors matched the base"))
        .unwrap_or_else(|| panic!("no base summary: {out}"));
    let n: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(n.len() == 2 && n[0] == n[1] && n[0] > 0, "{line}");
    (lake, base, ft, info)
}

/// A safetensors file with one F32 tensor of `n` finite values.
pub fn safetensors_f32(n: usize, seed: usize) -> Vec<u8> {
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 31 + seed * 7) % 1000) as f32 * 1e-3)
        .collect();
    safetensors_f32_values(&values)
}

/// A lake under `root` holding the models `base` and `ft` (files by path),
/// both ingested and tensorised, `ft` against `base@main`; its path.
pub fn finetune_lake(root: &Path, base: &[(&str, &[u8])], ft: &[(&str, &[u8])]) -> String {
    let lake = root.join("lake").to_string_lossy().into_owned();
    for (files, id) in [(base, "base"), (ft, "ft")] {
        let dir = root.join(id);
        write_tree(&dir, files);
        let d = dir.to_str().expect("utf8");
        run_ok(&["ingest", d, "--lake", &lake, "--model-id", id, "-q"]);
    }
    run_ok(&["tensorise", "--lake", &lake, "--model-id", "base", "-q"]);
    run_ok(&[
        "tensorise",
        "--lake",
        &lake,
        "--base-model",
        "base@main",
        "-q",
    ]);
    lake
}

/// A safetensors file of one F32 tensor `w` holding `values`.
pub fn safetensors_f32_values(values: &[f32]) -> Vec<u8> {
    safetensors_f32_named("w", values)
}

/// A safetensors file of one F32 tensor `name` holding `values`.
pub fn safetensors_f32_named(name: &str, values: &[f32]) -> Vec<u8> {
    let n = values.len();
    let header = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        4 * n
    );
    let mut header = header.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Every file under `dir` (relative path -> sha256).
pub fn tree_digest(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("prefix")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, sha256(&std::fs::read(&p).expect("read")));
            }
        }
    }
    out
}

/// The files an export wrote under `dir` (relative path -> sha256), after
/// checking its completion marker: `_SUCCESS` lists exactly those files with
/// those sha256s.
pub fn exported_tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut files = tree_digest(dir);
    assert!(
        files.remove("_SUCCESS").is_some(),
        "{}: no completion marker",
        dir.display()
    );
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_SUCCESS")).expect("marker"))
            .expect("marker JSON");
    let listed: std::collections::BTreeMap<String, String> = marker["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().expect("path").to_string(),
                f["sha256"].as_str().expect("sha256").to_string(),
            )
        })
        .collect();
    assert_eq!(listed, files, "{}: marker and files differ", dir.display());
    files
}

/// Flip one byte in the middle of the largest `silver.tensor_blobs` data
/// file of the local lake at `lake_dir` (damage that only a content check
/// finds).
pub fn flip_a_stored_byte(lake_dir: &Path) {
    let blobs = lake_dir.join("silver/tensor_blobs");
    let file = std::fs::read_dir(&blobs)
        .expect("blobs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a data file");
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&file, bytes).expect("write");
}

/// The runs of MLflow experiment `exp` (only those named `run_name` when
/// given), as the tracking server's REST API returns them.
pub async fn mlflow_runs(uri: &str, exp: &str, run_name: Option<&str>) -> Vec<serde_json::Value> {
    let mut query = serde_json::json!({ "experiment_ids": [exp] });
    if let Some(name) = run_name {
        query["filter"] = format!("attributes.run_name = '{name}'").into();
    }
    let body = reqwest::Client::new()
        .post(format!("{uri}/api/2.0/mlflow/runs/search"))
        .header("content-type", "application/json")
        .body(query.to_string())
        .send()
        .await
        .expect("search")
        .bytes()
        .await
        .expect("body");
    let found: serde_json::Value = serde_json::from_slice(&body).expect("json");
    found["runs"].as_array().cloned().unwrap_or_default()
}

/// Stop `child` with SIGTERM (as a scheduler or Ctrl-C would) and wait for
/// what it printed.
pub fn terminate(child: std::process::Child) -> Output {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    child.wait_with_output().expect("wait")
}

/// The MLflow server started by scripts/test.sh.
pub fn mlflow_uri() -> String {
    env_or_explain("WEIGHTLAKE_TEST_MLFLOW_URI")
}
