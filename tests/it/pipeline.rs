//! Pipeline files through the CLI: validate, run, task.

use crate::support::*;

fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_runs_end_to_end_and_is_idempotent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spec = repo_root().join("examples/quickstart.yaml");
    let root = repo_root();
    let out = bin()
        .current_dir(tmp.path())
        .args(["validate", spec.to_str().expect("utf8")])
        .output()
        .expect("validate");
    assert!(out.status.success(), "{}", text(&out));
    // Stages that may run at once are shown as one step of the DAG.
    let medallion = run(&[
        "validate",
        repo_root()
            .join("examples/medallion.yaml")
            .to_str()
            .expect("utf8"),
    ]);
    assert!(
        text(&medallion).contains("ingest_base, ingest_tuned -> tensorise"),
        "{}",
        text(&medallion)
    );
    // The quickstart's paths are relative to the repository root.
    let yaml = std::fs::read_to_string(&spec)
        .expect("read")
        .replace("./examples", &format!("{}/examples", root.display()))
        .replace(
            "lake: ./lake",
            &format!("lake: {}/lake", tmp.path().display()),
        );
    let local = tmp.path().join("quickstart.yaml");
    std::fs::write(&local, yaml).expect("write");
    let out = run(&["run", local.to_str().expect("utf8"), "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ingest: 3 files ingested"),
        "{}",
        text(&out)
    );
    let original =
        std::fs::read(root.join("examples/models/tiny/model.safetensors")).expect("model");
    assert_eq!(
        read_back(&local_lake(tmp.path()), "tiny", "model.safetensors").await,
        original
    );
    let again = run(&["run", local.to_str().expect("utf8"), "-q"]);
    assert!(
        text(&again).contains("ingest: 0 files ingested, 3 already present"),
        "{}",
        text(&again)
    );
    // The task entry point runs the same stage.
    let task = run(&[
        "task",
        "ingest",
        "--pipeline",
        local.to_str().expect("utf8"),
        "--shard",
        "0/2",
        "-q",
    ]);
    assert!(task.status.success(), "{}", text(&task));
    let bad_shard = run(&[
        "task",
        "ingest",
        "--pipeline",
        local.to_str().expect("utf8"),
        "--shard",
        "2/2",
    ]);
    assert_eq!(bad_shard.status.code(), Some(2), "{}", text(&bad_shard));
    let no_stage = run(&[
        "task",
        "ingset",
        "--pipeline",
        local.to_str().expect("utf8"),
    ]);
    assert_eq!(no_stage.status.code(), Some(2), "{}", text(&no_stage));
    assert!(
        text(&no_stage).contains("did you mean `ingest`"),
        "{}",
        text(&no_stage)
    );
}

#[test]
fn validate_reports_every_problem_with_file_line_column_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = tmp.path().join("bad.yaml");
    std::fs::write(
        &p,
        "name: bad\nlake: ./lake\nsources:\n  base: { local: { path: ./m } }\nstages:\n  ingest: { job: ingest, sources: [bsae] }\n  b: { job: ingest, sources: [base], depends_on: [ingset] }\n",
    )
    .expect("write");
    let out = run(&["validate", p.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    let shown = p.display().to_string();
    assert!(
        t.contains(&format!("{shown}:6:")) && t.contains("did you mean `base`"),
        "{t}"
    );
    assert!(
        t.contains(&format!("{shown}:7:")) && t.contains("did you mean `ingest`"),
        "{t}"
    );

    std::fs::write(&p, "name: x\nlake: ./l\nstages:\n  a:\n    job: ingest\n    sources: []\n    chunksize: 1MiB\n").expect("write");
    let out = run(&["validate", p.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains(&format!("{shown}:7:"))
            && text(&out).contains("did you mean `chunk_size`"),
        "{}",
        text(&out)
    );

    let missing = run(&["validate", "/nonexistent/p.yaml"]);
    assert_eq!(missing.status.code(), Some(2));

    // Parameters are checked as `run --param` would take them.
    std::fs::write(
        &p,
        "name: x\nlake: ./l\nparameters: { rev: main }\nsources:\n  s: { local: { path: ./m } }\nstages:\n  a: { job: ingest, sources: [s], revision: '${rev}' }\n",
    )
    .expect("write");
    let ps = p.to_str().expect("utf8");
    run_ok(&["validate", ps, "--param", "rev=v2"]);
    let typo = run(&["validate", ps, "--param", "revv=v2"]);
    assert_eq!(typo.status.code(), Some(2), "{}", text(&typo));
    assert!(
        text(&typo).contains("did you mean `rev`"),
        "{}",
        text(&typo)
    );
}

#[test]
fn a_sharded_tensorise_against_a_base_ingested_in_the_same_run_succeeds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let models = repo_root().join("examples/models");
    // No retries: shards without the base's files wait for the shards that
    // have them, and shards with nothing to compare do not need the base.
    // Which shard reaches the base first varies: three runs.
    for round in 0..3 {
        let lake = tmp.path().join(format!("lake{round}"));
        let yaml = format!(
            "name: sh\nlake: {lake}\nsources:\n  base: {{ local: {{ path: {m}/tiny }} }}\n  tuned: {{ local: {{ path: {m}/tiny-ft }} }}\n\
             stages:\n  ib: {{ job: ingest, sources: [base], model_id: tiny }}\n  it: {{ job: ingest, sources: [tuned], model_id: tiny-ft }}\n\
             \x20 t: {{ job: tensorise, depends_on: [ib, it], base_model: base, shards: 4 }}\n",
            lake = lake.display(),
            m = models.display()
        );
        let p = tmp.path().join("sh.yaml");
        std::fs::write(&p, yaml).expect("write");
        let out = run(&["run", p.to_str().expect("utf8"), "-q"]);
        assert!(out.status.success(), "round {round}: {}", text(&out));
        let sql = run_ok(&[
            "sql",
            "--lake",
            lake.to_str().expect("utf8"),
            "--format",
            "csv",
            "SELECT count(*) FROM silver.tensors WHERE model_id = 'tiny-ft' AND base_sha256 IS NULL",
        ]);
        assert_eq!(sql.lines().last(), Some("0"), "round {round}: {sql}");
        if round < 2 {
            continue;
        }
        // As a scheduler running one shard task at a time (a Databricks
        // for_each with less concurrency than shards): no shard waits for
        // another; the one that needs the base stores it.
        let lake = tmp.path().join("lake-tasks");
        std::fs::write(
            &p,
            std::fs::read_to_string(&p)
                .expect("read")
                .replace(&format!("lake{round}"), "lake-tasks"),
        )
        .expect("write");
        let p_s = p.to_str().expect("utf8");
        for stage in ["ib", "it"] {
            run_ok(&["task", stage, "--pipeline", p_s, "--run-id", "7", "-q"]);
        }
        for shard in 0..4 {
            let shard = format!("{shard}/4");
            let out = run(&[
                "task",
                "t",
                "--pipeline",
                p_s,
                "--shard",
                &shard,
                "--run-id",
                "7",
                "-q",
            ]);
            assert!(out.status.success(), "shard {shard}: {}", text(&out));
        }
        let sql = run_ok(&[
            "sql",
            "--lake",
            lake.to_str().expect("utf8"),
            "--format",
            "csv",
            "SELECT (SELECT count(*) FROM silver.tensors WHERE model_id = 'tiny-ft' AND base_sha256 IS NULL) \
               + (SELECT count(*) FROM silver.files) - (SELECT count(DISTINCT model_id || file_path) FROM silver.files)",
        ]);
        assert_eq!(sql.lines().last(), Some("0"), "one shard at a time: {sql}");
    }
}
