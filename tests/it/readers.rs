//! Our tables are standard Delta: the Python `deltalake` package reads them.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn python_deltalake_reads_bronze_and_rebuilds_the_file() {
    let dir = model_dir("all-minilm-l6-v2");
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = run(&[
        "ingest",
        dir.join("config.json").to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        "minilm",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&[
        "ingest",
        dir.join("model.safetensors").to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        "minilm",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let script = r#"
import sys, hashlib
from deltalake import DeltaTable
lake = sys.argv[1]
files = DeltaTable(f"{lake}/bronze/files").to_pyarrow_table().to_pylist()
chunks = DeltaTable(f"{lake}/bronze/model_files").to_pyarrow_table().to_pylist()
for f in files:
    parts = sorted((c for c in chunks if c["upload_id"] == f["upload_id"]), key=lambda c: c["chunk_index"])
    data = b"".join(c["data"] for c in parts)
    assert len(parts) == f["chunk_count"], (f["file_path"], len(parts))
    assert hashlib.sha256(data).hexdigest() == f["file_sha256"], f["file_path"]
    print(f["file_path"], len(data), flush=True)
# deltalake's runtime can abort while the interpreter tears down under load
# ("terminate called without an active exception"): leave before that.
import os
os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, lake.to_str().expect("utf8")])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("config.json 612") && t.contains("model.safetensors 90868376"),
        "{t}"
    );
}

#[test]
fn python_deltalake_filters_find_tensors_whose_change_is_infinite() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A tensor moved off an all-zero base (rel_l2_change +inf), and one
    // changed by a finite amount, in one commit (one Parquet file).
    let mut moved = [1.0f32; 64];
    moved[0] = 1.5;
    let lake = finetune_lake(
        tmp.path(),
        &[
            ("a.safetensors", &safetensors_f32_named("a", &[0.0; 64])),
            ("b.safetensors", &safetensors_f32_named("b", &[1.0; 64])),
        ],
        &[
            ("a.safetensors", &safetensors_f32_named("a", &[0.5; 64])),
            ("b.safetensors", &safetensors_f32_named("b", &moved)),
        ],
    );
    let lake_s = lake.as_str();
    let script = r#"
import sys, os
from deltalake import DeltaTable
t = DeltaTable(f"{sys.argv[1]}/silver/tensors")
for op, v in ((">", 0.01), ("<", 1e300)):
    rows = t.to_pyarrow_table(filters=[("rel_l2_change", op, v)]).to_pylist()
    print(op, sorted(r["file_path"] for r in rows), flush=True)
os._exit(0)
"#;
    let read = || {
        let out = std::process::Command::new(python())
            .args(["-c", script, lake_s])
            .output()
            .expect("python");
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let t = read();
    assert!(t.contains("> ['a.safetensors', 'b.safetensors']"), "{t}");
    assert!(t.contains("< ['b.safetensors']"), "{t}");
    // Compacted into one file, the table still answers the same.
    run_ok(&["maintain", "--lake", lake_s, "-q"]);
    assert_eq!(read(), t);
}
