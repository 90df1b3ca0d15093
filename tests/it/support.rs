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
