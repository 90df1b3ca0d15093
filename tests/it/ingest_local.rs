//! Ingest from a local directory into a lake on local disk, through the CLI.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn local_dir_is_ingested_byte_for_byte_and_reingest_is_a_noop() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("model");
    let big = random_bytes(300_000, 1);
    write_tree(
        &model,
        &[
            ("model.safetensors", &big),
            ("config.json", b"{\"a\":1}"),
            ("empty.txt", b""),
            ("sub/tok.json", b"[]"),
        ],
    );
    let lake_dir = tmp.path().join("lake");
    let lake_arg = lake_dir.to_str().expect("utf8");
    let args = [
        "ingest",
        model.to_str().expect("utf8"),
        "--lake",
        lake_arg,
        "--model-id",
        "org/m",
        "--chunk-size",
        "64KiB",
        "-q",
    ];
    let out = run(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("4 files ingested, 0 already present"),
        "{}",
        text(&out)
    );

    // A file:// URL of one file is that file.
    let one = tmp.path().join("one");
    let url = format!("file://{}", model.join("config.json").display());
    let out = run(&["ingest", &url, "--lake", one.to_str().expect("utf8"), "-q"]);
    assert!(
        out.status.success() && text(&out).contains("1 files ingested"),
        "{}",
        text(&out)
    );

    let lake = local_lake(tmp.path());
    assert_eq!(read_back(&lake, "org/m", "model.safetensors").await, big);
    assert_eq!(read_back(&lake, "org/m", "sub/tok.json").await, b"[]");
    assert_eq!(read_back(&lake, "org/m", "empty.txt").await, b"");
    let files = query_i64(
        &lake,
        &format!(
            "SELECT COUNT(*) FROM bronze.files WHERE file_sha256 = '{}'",
            sha256(&big)
        ),
    )
    .await;
    assert_eq!(files, [1]);
    let chunks = query_i64(
        &lake,
        "SELECT COUNT(*) FROM bronze.model_files WHERE file_path = 'model.safetensors'",
    )
    .await;
    assert_eq!(chunks, [(300_000u64.div_ceil(65_536)) as i64]);

    // Re-ingesting writes nothing: no new Delta versions.
    let versions = |t: &str| {
        std::fs::read_dir(lake_dir.join(t).join("_delta_log"))
            .expect("log")
            .count()
    };
    let before = (versions("bronze/model_files"), versions("bronze/files"));
    let again = run(&args);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("0 files ingested, 4 already present"),
        "{}",
        text(&again)
    );
    assert_eq!(
        (versions("bronze/model_files"), versions("bronze/files")),
        before
    );

    // A changed file is ingested again; the others are not.
    write_tree(&model, &[("config.json", b"{\"a\":2}")]);
    let changed = run(&args);
    assert!(
        text(&changed).contains("1 files ingested, 3 already present"),
        "{}",
        text(&changed)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_prints_table_csv_and_json_hides_blobs_and_only_reads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("m");
    write_tree(&model, &[("a.bin", &random_bytes(1000, 2))]);
    let lake = tmp.path().join("lake");
    let lake_arg = lake.to_str().expect("utf8");
    let out = run(&[
        "ingest",
        model.to_str().expect("utf8"),
        "--lake",
        lake_arg,
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let table = run(&[
        "sql",
        "--lake",
        lake_arg,
        "SELECT model_id, file_path, data FROM bronze.model_files",
    ]);
    assert!(table.status.success(), "{}", text(&table));
    let t = text(&table);
    assert!(
        t.contains("| m ") && t.contains("a.bin") && t.contains("<1000 bytes>"),
        "{t}"
    );

    let csv = run(&[
        "sql",
        "--lake",
        lake_arg,
        "--format",
        "csv",
        "SELECT file_path, file_size FROM bronze.files",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&csv.stdout).trim(),
        "file_path,file_size\na.bin,1000"
    );

    let json = run(&[
        "sql",
        "--lake",
        lake_arg,
        "--format",
        "json",
        "SELECT file_size FROM bronze.files",
    ]);
    let v: serde_json::Value = serde_json::from_slice(json.stdout.trim_ascii()).expect("json line");
    assert_eq!(v["file_size"], 1000);

    let bad = run(&["sql", "--lake", lake_arg, "SELECT nope FROM bronze.files"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("nope"), "{}", text(&bad));
    // The cause is said once, not once per wrapping error.
    assert_eq!(
        text(&bad).matches("Valid fields").count(),
        1,
        "{}",
        text(&bad)
    );

    // Empty results keep their header; JSON lines carry NULLs as null.
    let sql = |format: &str, q: &str| run(&["sql", "--lake", lake_arg, "--format", format, q]);
    let empty = sql(
        "csv",
        "SELECT file_path, file_size FROM bronze.files WHERE file_size < 0",
    );
    assert_eq!(
        String::from_utf8_lossy(&empty.stdout).trim(),
        "file_path,file_size"
    );
    let json = sql(
        "json",
        "SELECT file_size, CAST(NULL AS VARCHAR) AS note FROM bronze.files",
    );
    let v: serde_json::Value = serde_json::from_slice(json.stdout.trim_ascii()).expect("json line");
    assert!(v.get("note").is_some_and(serde_json::Value::is_null), "{v}");
    for wrong in ["SELECT 1; SELECT 2", "SELECT 1/0"] {
        let out = run(&["sql", "--lake", lake_arg, wrong]);
        assert_eq!(out.status.code(), Some(2), "{wrong}: {}", text(&out));
    }
    let nested = sql("csv", "SELECT make_array(1, 2) AS dims");
    assert_eq!(nested.status.code(), Some(2), "{}", text(&nested));
    assert!(text(&nested).contains("`dims`"), "{}", text(&nested));

    // A lake table (or view) not created yet is named, with what creates it.
    for (query, said) in [
        (
            "SELECT * FROM gold.models",
            "gold.models does not exist in this lake yet",
        ),
        (
            "SELECT * FROM silver.current_tensors",
            "silver.current_tensors does not exist in this lake yet: it reads silver.files, \
             which tensorise creates",
        ),
    ] {
        let out = run(&["sql", "--lake", lake_arg, query]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(said), "{}", text(&out));
    }

    // SQL only reads: writes, table definitions and COPY are bad input and
    // change nothing.
    let copy_to = lake.parent().expect("tmp").join("copied.csv");
    for statement in [
        "INSERT INTO bronze.files SELECT * FROM bronze.files".to_string(),
        format!("COPY (SELECT 1) TO '{}'", copy_to.display()),
        "CREATE TABLE t AS SELECT 1".to_string(),
        "DROP TABLE bronze.files".to_string(),
    ] {
        let refused = run(&["sql", "--lake", lake_arg, &statement]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{statement}: {}",
            text(&refused)
        );
        assert!(text(&refused).contains("only reads"), "{}", text(&refused));
    }
    assert!(!copy_to.exists());
    let rows = sql("csv", "SELECT count(*) AS n FROM bronze.files");
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "n\n1");
}

#[tokio::test(flavor = "multi_thread")]
async fn real_minilm_weights_are_ingested_byte_for_byte() {
    let dir = model_dir("all-minilm-l6-v2");
    let original = std::fs::read(dir.join("model.safetensors")).expect("read model");
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = run(&[
        "ingest",
        dir.join("model.safetensors").to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        "sentence-transformers/all-MiniLM-L6-v2",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let lake = local_lake(tmp.path());
    let back = read_back(
        &lake,
        "sentence-transformers/all-MiniLM-L6-v2",
        "model.safetensors",
    )
    .await;
    assert_eq!(back.len(), original.len());
    assert_eq!(sha256(&back), sha256(&original));
    let s = weightlake_jobs::sql::LakeSession::new(&lake)
        .await
        .expect("session");
    let rows = s
        .query("SELECT file_sha256 FROM bronze.files")
        .await
        .expect("query");
    let recorded = weightlake_jobs::sql::string_value(rows[0].column(0).as_ref(), 0)
        .expect("sha")
        .to_string();
    assert_eq!(recorded, sha256(&original));
}

#[test]
fn a_file_gone_from_its_directory_leaves_the_revision_and_older_gold_versions_keep_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    let weights = safetensors_f32(1000, 1);
    write_tree(&dir, &[("model.safetensors", &weights), ("old.bin", b"a")]);
    // A file another source added to the revision.
    let extra = tmp.path().join("elsewhere").join("extra.txt");
    write_tree(&tmp.path().join("elsewhere"), &[("extra.txt", b"x")]);
    let lake = tmp.path().join("lake");
    let (dir_s, lake_s) = (dir.to_str().expect("utf8"), lake.to_str().expect("utf8"));
    let extra_s = extra.to_str().expect("utf8");
    run_ok(&[
        "ingest",
        dir_s,
        extra_s,
        "--lake",
        lake_s,
        "--model-id",
        "m",
        "-q",
    ]);
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    run_ok(&["promote", "m@main", "--lake", lake_s, "--name", "gm", "-q"]);

    std::fs::remove_file(dir.join("old.bin")).expect("rm");
    std::fs::write(dir.join("new.bin"), b"b").expect("write");
    let out = run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    assert!(
        out.contains("1 file(s) its source no longer lists: removed from the revision")
            && out.contains("m@main/old.bin"),
        "{out}"
    );
    assert!(
        out.contains("added by another source: kept") && out.contains("m@main/extra.txt"),
        "{out}"
    );
    let out = run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    assert!(
        out.contains("1 file(s) removed from their revision"),
        "{out}"
    );

    // The revision now is what the directory holds, plus the other source's file.
    let now = tmp.path().join("now");
    run_ok(&[
        "export",
        "m@main",
        "--lake",
        lake_s,
        "--to",
        now.to_str().expect("utf8"),
        "-q",
    ]);
    let files: Vec<String> = exported_tree(&now).into_keys().collect();
    assert_eq!(files, ["extra.txt", "model.safetensors", "new.bin"]);
    // SQL sees the same through the current_* views; the tables keep history.
    for view in ["bronze.current_files", "silver.current_files"] {
        let out = run_ok(&[
            "sql",
            "--lake",
            lake_s,
            "--format",
            "csv",
            &format!("SELECT file_path FROM {view} WHERE model_id = 'm' ORDER BY 1"),
        ]);
        assert_eq!(
            out.lines().skip(1).collect::<Vec<_>>(),
            files,
            "{view}: {out}"
        );
    }
    let out = run_ok(&[
        "sql",
        "--lake",
        lake_s,
        "--format",
        "csv",
        "SELECT (SELECT count(*) FROM silver.files WHERE file_path = 'old.bin'), \
                (SELECT count(*) FROM silver.current_tensors WHERE file_path = 'old.bin') AS now",
    ]);
    assert_eq!(out.lines().nth(1), Some("2,0"), "{out}");
    // Version 1 was promoted before the removal and still rebuilds it.
    let v1 = tmp.path().join("v1");
    run_ok(&[
        "export",
        "gm:1",
        "--lake",
        lake_s,
        "--to",
        v1.to_str().expect("utf8"),
        "-q",
    ]);
    let files: Vec<String> = exported_tree(&v1).into_keys().collect();
    assert_eq!(files, ["extra.txt", "model.safetensors", "old.bin"]);

    // Ingesting the same listing again removes nothing more.
    let out = run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    assert!(!out.contains("removed from the revision"), "{out}");
    // A file put back is part of the revision again.
    std::fs::write(dir.join("old.bin"), b"a2").expect("write");
    let out = run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    assert!(out.contains("1 files ingested"), "{out}");
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    let back = tmp.path().join("back");
    run_ok(&[
        "export",
        "m@main",
        "--lake",
        lake_s,
        "--to",
        back.to_str().expect("utf8"),
        "-q",
    ]);
    assert_eq!(
        std::fs::read(back.join("old.bin")).expect("old.bin exported"),
        b"a2"
    );
}

#[test]
fn two_sources_giving_one_revision_the_same_path_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_tree(&a, &[("config.json", b"{\"v\":1}"), ("w.bin", b"1")]);
    write_tree(&b, &[("config.json", b"{\"v\":2}")]);
    let lake = tmp.path().join("lake");
    let out = run(&[
        "ingest",
        a.to_str().expect("utf8"),
        b.to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        "m",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("m@main is listed twice as `config.json`"),
        "{}",
        text(&out)
    );
    assert!(!lake.join("bronze").exists(), "nothing may be written");
    // Two commands (or stages) cannot be refused up front, but the second
    // says whose copy it replaces.
    let lake_s = lake.to_str().expect("utf8");
    for dir in [&a, &b] {
        let out = run_ok(&[
            "ingest",
            dir.to_str().expect("utf8"),
            "--lake",
            lake_s,
            "--model-id",
            "m",
            "-q",
        ]);
        assert_eq!(
            out.contains("1 file(s) replace the copy another source gave the revision")
                && out.contains("m@main/config.json"),
            dir == &b,
            "{out}"
        );
    }
}

/// Paths exported for `model@main` from the lake at `lake`.
fn exported(tmp: &std::path::Path, lake: &str, model: &str, name: &str) -> Vec<String> {
    let to = tmp.join(name);
    run_ok(&[
        "export",
        &format!("{model}@main"),
        "--lake",
        lake,
        "--to",
        to.to_str().expect("utf8"),
        "-q",
    ]);
    exported_tree(&to).into_keys().collect()
}

#[test]
fn odd_entries_fail_alone_are_named_and_hold_back_removals() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    // A Hugging Face cache-like layout: the weights are a link to a blob.
    write_tree(&dir, &[("config.json", b"{}"), ("blobs/w1", b"weights")]);
    std::os::unix::fs::symlink("blobs/w1", dir.join("model.safetensors")).expect("link");
    let lake = tmp.path().join("lake");
    let lake_s = lake.to_str().expect("utf8");
    let dir_s = dir.to_str().expect("utf8");
    run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    // The blob goes; entries no file system copy can take appear beside it.
    std::fs::remove_file(dir.join("blobs/w1")).expect("rm");
    std::fs::write(dir.join("tab\tname.txt"), b"t").expect("write");
    let fifo = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.bin"))
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    std::fs::write(dir.join("new.json"), b"[]").expect("write");
    let out = run(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    for named in [
        "model.safetensors",
        "which does not exist",
        "pipe.bin",
        "not a regular file",
        "tab\\tname.txt",
    ] {
        assert!(said.contains(named), "{named}: {said}");
    }
    // Log lines too name it escaped, so no line is split by its name.
    assert!(!said.contains('\t'), "{said}");
    // Quiet, the error line is all there is: the tab in it escaped, so the
    // failures stay on that one line.
    let quiet = run(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    assert_eq!(quiet.status.code(), Some(1), "{}", text(&quiet));
    let said = text(&quiet);
    let error = said
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        error.contains("tab\\tname.txt") && !error.contains('\t') && error.contains("pipe.bin"),
        "{said}"
    );
    // The readable new file landed; the link whose target is gone was not
    // taken for a file the source removed.
    let current = run_ok(&[
        "sql",
        "--lake",
        lake_s,
        "--format",
        "csv",
        "SELECT file_path FROM bronze.current_files ORDER BY file_path",
    ]);
    assert_eq!(
        current.lines().skip(1).collect::<Vec<_>>(),
        ["blobs/w1", "config.json", "model.safetensors", "new.json"],
        "{current}"
    );
    // The same through an object-store prefix (as an S3 listing is read):
    // an unsafe name fails alone, named, instead of being skipped.
    let prefix = tmp.path().join("p");
    write_tree(&prefix, &[("config.json", b"{}"), ("a\\b.txt", b"x")]);
    let url = format!("file://{}/", prefix.display());
    let out = run(&["ingest", &url, "--lake", lake_s, "--model-id", "p", "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("a\\b.txt") && text(&out).contains("backslash"),
        "{}",
        text(&out)
    );
    // Globs route around them, and then the run is whole again.
    let spec = tmp.path().join("p.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: odd\nlake: {lake_s}\nsources:\n  m: {{ local: {{ path: {dir_s}, exclude: [\"tab*\", pipe.bin, model.safetensors] }} }}\nstages:\n  ingest: {{ job: ingest, sources: [m], model_id: m }}\n"
        ),
    )
    .expect("write");
    let out = run_ok(&["run", spec.to_str().expect("utf8"), "-q"]);
    assert!(out.contains("blobs/w1"), "{out}");
}

#[test]
fn a_filtered_listing_removes_the_files_its_globs_keep_and_only_those() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    write_tree(&dir, &[("a.bin", b"a"), ("b.bin", b"b"), ("c.json", b"{}")]);
    let lake = tmp.path().join("lake");
    let lake_s = lake.to_str().expect("utf8");
    let spec = tmp.path().join("p.yaml");
    let pipeline = |include: &str| {
        std::fs::write(
            &spec,
            format!(
                "name: f\nlake: {lake_s}\nsources:\n  m: {{ local: {{ path: {}, include: [{include}] }} }}\nstages:\n  ingest: {{ job: ingest, sources: [m], model_id: m }}\n",
                dir.display()
            ),
        )
        .expect("write");
    };
    pipeline("\"*\"");
    run_ok(&["run", spec.to_str().expect("utf8"), "-q"]);
    // Upstream drops b.bin and c.json; this pipeline now takes only *.bin.
    std::fs::remove_file(dir.join("b.bin")).expect("rm");
    std::fs::remove_file(dir.join("c.json")).expect("rm");
    pipeline("\"*.bin\"");
    let plan = run_ok(&["plan", spec.to_str().expect("utf8")]);
    assert!(plan.contains("1 to remove (m@main/b.bin)"), "{plan}");
    let out = run_ok(&["run", spec.to_str().expect("utf8"), "-q"]);
    assert!(
        out.contains("m@main/b.bin") && !out.contains("c.json"),
        "{out}"
    );
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    // c.json is outside the globs: the listing says nothing about it.
    assert_eq!(
        exported(tmp.path(), lake_s, "m", "out"),
        ["a.bin", "c.json"]
    );
}

#[test]
fn each_shard_removes_the_paths_it_owns_even_with_nothing_left_to_ingest() {
    use weightlake_jobs::shard::Shard;
    let owner = |p: &str| {
        (0..2)
            .find(|i| {
                format!("{i}/2")
                    .parse::<Shard>()
                    .expect("shard")
                    .owns(&["m", "main", p])
            })
            .expect("one shard owns it")
    };
    // One file that shard 0 owns stays; files of shard 1 go.
    let names: Vec<String> = (0..40).map(|i| format!("f{i}.bin")).collect();
    let keep = names
        .iter()
        .find(|n| owner(n) == 0)
        .expect("a shard-0 name");
    let gone: Vec<&String> = names.iter().filter(|n| owner(n) == 1).take(2).collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    for n in std::iter::once(keep).chain(gone.iter().copied()) {
        write_tree(&dir, &[(n.as_str(), n.as_bytes())]);
    }
    let lake = tmp.path().join("lake");
    let lake_s = lake.to_str().expect("utf8");
    let spec = tmp.path().join("p.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: s\nlake: {lake_s}\nsources:\n  m: {{ local: {{ path: {} }} }}\nstages:\n  ingest: {{ job: ingest, sources: [m], model_id: m }}\n",
            dir.display()
        ),
    )
    .expect("write");
    let shards = || {
        for i in 0..2 {
            let shard = format!("{i}/2");
            let spec_s = spec.to_str().expect("utf8");
            run_ok(&[
                "task",
                "ingest",
                "--pipeline",
                spec_s,
                "--shard",
                &shard,
                "-q",
            ]);
        }
    };
    shards();
    for n in &gone {
        std::fs::remove_file(dir.join(n.as_str())).expect("rm");
    }
    shards();
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    assert_eq!(
        exported(tmp.path(), lake_s, "m", "out"),
        vec![keep.to_string()]
    );
}
