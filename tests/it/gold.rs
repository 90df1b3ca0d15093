//! Gold: promotion through gates, versions, aliases, time travel, export of a
//! gold version, and concurrent promoters. No services needed.

use std::future::IntoFuture;

use weightlake_jobs::gold::promote::PromoteJob;
use weightlake_jobs::gold::{Gate, GoldRef, GoldState};

use crate::support::*;

fn cli(args: &[&str]) -> std::process::Output {
    run(args)
}

fn ok(args: &[&str]) -> String {
    run_ok(args)
}

#[test]
fn a_drift_gate_fails_a_tensor_trained_away_from_zeros_or_that_diverged() {
    // A zero-initialised bias (or LoRA B matrix) that training moved; a
    // tensor that became NaN, and one that became infinite, in training.
    let mut moved = [0.0f32; 64];
    moved[3] = 0.25;
    let mut nan = [1.0f32; 64];
    nan[7] = f32::NAN;
    let inf = [f32::INFINITY; 64];
    let cases: [(&str, [f32; 64], [f32; 64]); 3] = [
        ("moved", [0.0; 64], moved),
        ("nan", [1.0; 64], nan),
        ("inf", [1.0; 64], inf),
    ];
    for (case, base_values, ft_values) in cases {
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = finetune_lake(
            tmp.path(),
            &[("model.safetensors", &safetensors_f32_values(&base_values))],
            &[("model.safetensors", &safetensors_f32_values(&ft_values))],
        );
        let lake_s = lake.as_str();
        let change = ok(&[
            "sql",
            "--lake",
            lake_s,
            "--format",
            "csv",
            "SELECT rel_l2_change > 1e300 OR isnan(rel_l2_change) AS unbounded \
             FROM silver.tensors WHERE model_id = 'ft'",
        ]);
        assert_eq!(change.lines().nth(1), Some("true"), "{case}: {change}");
        // A misspelt base is refused even when nothing is left to compare.
        let typo = cli(&["tensorise", "--lake", lake_s, "--base-model", "bsae@main"]);
        assert_eq!(typo.status.code(), Some(2), "{case}: {}", text(&typo));
        assert!(
            text(&typo).contains("bsae@main is neither"),
            "{}",
            text(&typo)
        );
        let out = cli(&[
            "promote",
            "ft@main",
            "--lake",
            lake_s,
            "--name",
            "ft",
            "--gate",
            "drift:fail:max(rel_l2_change) < 0.5",
        ]);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
        assert!(text(&out).contains("drift"), "{case}: {}", text(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gates_decide_versions_aliases_move_and_old_states_stay_readable() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, base_dir, ft_dir, info) = base_and_finetune_lake(tmp.path());

    // The base passes its gates: version 1, @champion.
    let out = ok(&[
        "promote",
        "base@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--alias",
        "champion",
        "--gate",
        "no_nans:fail:max(nan_count) = 0",
        "--gate",
        "loss:fail:eval_loss < 2.1",
        "--metric",
        "eval_loss=1.93",
    ]);
    assert!(out.contains("minilm:1 @champion"), "{out}");
    // The same weights again: still version 1, nothing new.
    let out = ok(&["promote", "base@main", "--lake", &lake, "--name", "minilm"]);
    assert!(
        out.contains("minilm:1") && out.contains("already promoted"),
        "{out}"
    );

    // The fine-tune has a NaN: a `fail` gate rejects it, with the reason.
    let out = cli(&[
        "promote",
        "ft@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--alias",
        "candidate",
        "--gate",
        "no_nans:fail:max(nan_count) = 0",
        "--gate",
        "small_change:warn:max(rel_l2_change) < 0.5",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no_nans"), "{}", text(&out));
    // A per-row expectation names how many rows failed: one tensor has the NaN.
    let out = cli(&[
        "promote",
        "ft@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--gate",
        "rowwise:fail:nan_count = 0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("false on 1 of"), "{}", text(&out));

    // As a warning it is promoted, and the failed gate is recorded with it.
    let out = ok(&[
        "promote",
        "ft@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--alias",
        "candidate",
        "--gate",
        "no_nans:warn:max(nan_count) = 0",
    ]);
    assert!(out.contains("minilm:2 @candidate"), "{out}");
    let l = local_lake(tmp.path());
    let state = GoldState::load(&l, None).await.expect("gold");
    let v2 = state
        .resolve(&"minilm@candidate".parse::<GoldRef>().expect("ref"))
        .expect("v2");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.base_model.as_deref(), Some("base@main"));
    assert!(!v2.gates[0].passed && v2.gates[0].name == "no_nans");
    assert_eq!(state.rejections.len(), 2, "both rejections are recorded");
    assert!(
        v2.manifest
            .files
            .iter()
            .any(|f| f.path == "1_Pooling/config.json"),
        "pass-through files are part of the version"
    );
    let nan_tensor = info["nan"].as_str().expect("nan");
    assert!(
        v2.manifest
            .files
            .iter()
            .flat_map(|f| &f.tensors)
            .any(|t| t.name == nan_tensor),
        "the manifest lists tensors"
    );
    // Promoting old weights under an alias that points elsewhere moves it
    // back, and says so (a re-run of a pipeline does exactly this).
    ok(&[
        "promote", "ft@main", "--lake", &lake, "--name", "minilm", "--alias", "staging",
    ]);
    let back = ok(&[
        "promote",
        "base@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--alias",
        "staging",
    ]);
    assert!(
        back.contains("minilm:1") && back.contains("@staging (moved from version 2)"),
        "{back}"
    );

    // Move champion to 2, then roll back to 1; each move is a commit.
    ok(&[
        "models", "alias", "set", "minilm", "champion", "2", "--lake", &lake,
    ]);
    let moved_at = GoldState::load(&l, None)
        .await
        .expect("gold")
        .table_version
        .expect("version");
    ok(&[
        "models", "alias", "set", "minilm", "champion", "minilm:1", "--lake", &lake,
    ]);
    let show = ok(&["models", "show", "minilm@champion", "--lake", &lake]);
    assert!(show.contains("version:     1"), "{show}");
    let then = ok(&[
        "models",
        "show",
        "minilm@champion",
        "--lake",
        &lake,
        "--as-of",
        &moved_at.to_string(),
    ]);
    assert!(then.contains("version:     2"), "as of {moved_at}: {then}");
    let rm = [
        "models",
        "alias",
        "rm",
        "minilm",
        "candidate",
        "--lake",
        &lake,
    ];
    let removed = ok(&rm);
    assert!(
        removed.contains("removed (it pointed at version 2)"),
        "{removed}"
    );
    let out = cli(&["models", "show", "minilm@candidate", "--lake", &lake]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Time travel is for reading; a write refuses it.
    let travel = cli(&[&rm[..], &["--as-of", "1"]].concat());
    assert_eq!(travel.status.code(), Some(2), "{}", text(&travel));
    // Removing it again changes nothing, and says so.
    let again = ok(&rm);
    assert!(again.contains("was not set"), "{again}");
    // Time travel past the latest version is bad input that says what exists.
    let past = cli(&["models", "list", "--lake", &lake, "--as-of", "999"]);
    assert_eq!(past.status.code(), Some(2), "{}", text(&past));
    assert!(text(&past).contains("past the latest"), "{}", text(&past));
    assert!(!text(&past).contains("ERROR"), "{}", text(&past));
    let list = ok(&["models", "list", "--lake", &lake]);
    assert!(
        list.contains("minilm:1") && list.contains("@champion") && list.contains("minilm:2"),
        "{list}"
    );

    // References that cannot be right say why, whichever layer they aim at.
    for (reference, says) in [
        ("minilm:0", "positive number"),
        ("minilm:", "positive number"),
        ("base@main@x", "expected MODEL@REVISION"),
        ("base@main ", "spaces"),
        ("base@nope", "base has: main"),
    ] {
        let out = cli(&["verify", reference, "--lake", &lake]);
        assert_eq!(out.status.code(), Some(2), "{reference}: {}", text(&out));
        assert!(text(&out).contains(says), "{reference}: {}", text(&out));
    }

    // Exports of gold versions are the promoted files, bit for bit.
    let out1 = tmp.path().join("out1");
    let out2 = tmp.path().join("out2");
    ok(&[
        "export",
        "minilm@champion",
        "--lake",
        &lake,
        "--to",
        out1.to_str().expect("utf8"),
    ]);
    ok(&[
        "export",
        "minilm:2",
        "--lake",
        &lake,
        "--to",
        out2.to_str().expect("utf8"),
    ]);
    assert_eq!(exported_tree(&out1), tree_digest(&base_dir));
    assert_eq!(exported_tree(&out2), tree_digest(&ft_dir));
    // verify takes gold references too, and checks the version's own files.
    let out = cli(&["verify", "minilm:2", "--lake", &lake]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("verifying gold minilm:2")
            && text(&out).contains("rebuild bit for bit"),
        "{}",
        text(&out)
    );
    let out = cli(&["verify", "minilm@nosuchalias", "--lake", &lake]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Python's deltalake reads gold.models: it is standard Delta.
    let script = r#"
import sys
from deltalake import DeltaTable
rows = DeltaTable(sys.argv[1] + "/gold/models").to_pyarrow_table().to_pylist()
print(sorted({(r["event"], r["version"]) for r in rows if r["event"] == "promoted"}), flush=True)
# deltalake's runtime can abort while the interpreter tears down under load
# ("terminate called without an active exception"): leave before that.
import os
os._exit(0)
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, &lake])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("[('promoted', 1), ('promoted', 2)]"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_gates_are_bad_input_and_promote_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, _, _, _) = base_and_finetune_lake(tmp.path());
    for gate in [
        "g:fail:no_such_column > 1",
        "g:fail:1; DROP TABLE x",
        "g:fail:max(nan_count)",
        "g:sometimes:1 = 1",
        "nocolons",
    ] {
        let out = cli(&[
            "promote",
            "base@main",
            "--lake",
            &lake,
            "--name",
            "m",
            "--gate",
            gate,
        ]);
        assert_eq!(out.status.code(), Some(2), "{gate}: {}", text(&out));
    }
    // A metric named like a tensor column is refused.
    let out = cli(&[
        "promote",
        "base@main",
        "--lake",
        &lake,
        "--name",
        "m",
        "--gate",
        "g:fail:1 = 1",
        "--metric",
        "nan_count=0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = cli(&["promote", "nope@main", "--lake", &lake, "--name", "m"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let state = GoldState::load(&local_lake(tmp.path()), None)
        .await
        .expect("gold");
    assert!(state.versions.is_empty(), "nothing promoted");
}

#[tokio::test(flavor = "multi_thread")]
async fn models_with_quarantined_files_are_not_promoted_unless_allowed() {
    let tmp = tempfile::tempdir().expect("tmp");
    // A model whose weights file is cut in half: tensorise quarantines it.
    let model = tmp.path().join("cut");
    let whole = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/models/tiny/model.safetensors"),
    )
    .expect("tiny model");
    write_tree(
        &model,
        &[
            ("model.safetensors", &whole[..whole.len() / 2]),
            ("config.json", b"{}"),
        ],
    );
    let lake = tmp.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    ok(&[
        "ingest",
        model.to_str().expect("utf8"),
        "--lake",
        lake,
        "-q",
    ]);
    ok(&["tensorise", "--lake", lake, "-q"]);

    let refused = cli(&["promote", "cut@main", "--lake", lake, "--name", "cut"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("files_parsed") && text(&refused).contains("model.safetensors"),
        "{}",
        text(&refused)
    );
    let state = GoldState::load(&local_lake(tmp.path()), None)
        .await
        .expect("gold");
    assert!(state.versions.is_empty(), "nothing promoted");

    let out = ok(&[
        "promote",
        "cut@main",
        "--lake",
        lake,
        "--name",
        "cut",
        "--allow-quarantined",
    ]);
    assert!(
        out.contains("files_parsed") && out.contains("warn") && out.contains("cut:1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_promotions_get_distinct_versions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake_path, _, _, _) = base_and_finetune_lake(tmp.path());
    let lake = weightlake_jobs::lake::Lake::new(&lake_path, Default::default()).expect("lake");
    let gate: Gate = "ok:fail:count(*) > 0".parse().expect("gate");
    let a = PromoteJob::new(lake.clone(), "base", "main", "shared").with_gates(vec![gate.clone()]);
    let b =
        PromoteJob::new(lake.clone(), "ft", "main", "shared").with_alias(Some("latest-ft".into()));
    let (ra, rb) = tokio::join!(a.into_future(), b.into_future());
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let mut versions = [ra.version, rb.version];
    versions.sort();
    assert_eq!(versions, [1, 2], "each promotion got its own version");
    let state = GoldState::load(&lake, None).await.expect("gold");
    assert_eq!(state.versions["shared"].len(), 2);
    assert_eq!(
        state.aliases[&("shared".to_string(), "latest-ft".to_string())],
        rb.version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn time_travel_to_a_vacuumed_version_says_why_it_cannot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let lake = lake.to_str().expect("utf8");
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny");
    ok(&["ingest", tiny.to_str().expect("utf8"), "--lake", lake, "-q"]);
    ok(&["tensorise", "--lake", lake, "-q"]);
    ok(&[
        "promote",
        "tiny@main",
        "--lake",
        lake,
        "--name",
        "t",
        "--alias",
        "a",
    ]);
    ok(&["models", "alias", "set", "t", "b", "1", "--lake", lake]);
    ok(&["models", "list", "--lake", lake, "--as-of", "1"]);
    // Compaction rewrites gold.models; a vacuum with no retention removes
    // the files version 1 was made of.
    ok(&[
        "maintain",
        "--lake",
        lake,
        "--vacuum-retention",
        "0s",
        "--allow-short-retention",
    ]);
    let gone = cli(&["models", "list", "--lake", lake, "--as-of", "1"]);
    assert_eq!(gone.status.code(), Some(2), "{}", text(&gone));
    assert!(
        text(&gone).contains("can no longer be read"),
        "{}",
        text(&gone)
    );
    ok(&["models", "list", "--lake", lake]);
}

/// A safetensors file of one-element F32 tensors, by name.
fn tensors_file(tensors: &[(&str, f32)]) -> Vec<u8> {
    let entries: Vec<String> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            format!(
                r#""{name}":{{"dtype":"F32","shape":[1],"data_offsets":[{},{}]}}"#,
                4 * i,
                4 * i + 4
            )
        })
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    for (_, v) in tensors {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A safetensors file of one tensor `w` holding `value`.
fn one_tensor_file(value: f32) -> Vec<u8> {
    tensors_file(&[("w", value)])
}

#[test]
fn promote_refuses_a_model_missing_a_shard_or_without_weights() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let index = br#"{"metadata":{},"weight_map":{"w":"model-00001-of-00002.safetensors","v":"model-00002-of-00002.safetensors"}}"#;
    let shard = one_tensor_file(1.0);
    // The second shard never arrived (its download failed).
    let sharded = tmp.path().join("sharded");
    write_tree(
        &sharded,
        &[
            ("config.json", b"{}"),
            ("model.safetensors.index.json", index),
            ("model-00001-of-00002.safetensors", &shard),
        ],
    );
    let config_only = tmp.path().join("config-only");
    write_tree(&config_only, &[("config.json", b"{}")]);
    for (dir, id) in [(&sharded, "sharded"), (&config_only, "bare")] {
        let dir = dir.to_str().expect("utf8");
        run_ok(&["ingest", dir, "--lake", &lake, "--model-id", id, "-q"]);
    }
    run_ok(&["tensorise", "--lake", &lake, "-q"]);
    for (model, why) in [
        ("sharded@main", "model-00002-of-00002.safetensors"),
        ("bare@main", "no file holds tensors"),
    ] {
        let out = run(&["promote", model, "--lake", &lake, "--name", "m"]);
        assert_eq!(out.status.code(), Some(1), "{model}: {}", text(&out));
        assert!(
            text(&out).contains("files_complete") && text(&out).contains(why),
            "{model}: {}",
            text(&out)
        );
    }
    // Silver still exports and verifies it as it is, and says what is missing.
    let to = tmp.path().join("out");
    for args in [
        vec!["verify", "sharded@main", "--lake", &lake, "-q"],
        vec![
            "export",
            "sharded@main",
            "--lake",
            &lake,
            "--to",
            to.to_str().expect("utf8"),
            "-q",
        ],
    ] {
        let out = run_ok(&args);
        assert!(
            out.contains(
                "incomplete checkpoint: an index does not match the files stored (1 problem(s))"
            ) && out.contains("model-00002-of-00002.safetensors (in model.safetensors.index.json)"),
            "{args:?}: {out}"
        );
    }
    // With the shard, the same model is promoted.
    // A shard that does not hold what the index maps to it, then an index
    // that is not JSON, are refused too; then the right shard is promoted.
    let dir = sharded.to_str().expect("utf8");
    let broken_index: &[u8] = br#"{"weight_map":{"w":"model-00001-of"#;
    let wrong_shard = one_tensor_file(2.0);
    let right_shard = safetensors_f32_named("v", &[2.0]);
    // `v`, and a second copy of the first shard's `w`, byte for byte: harmless.
    let with_copy = tensors_file(&[("v", 2.0), ("w", 1.0)]);
    for (shard, index, whys) in [
        // The second shard holds `w` (the first one's) instead of `v`.
        (
            &wrong_shard,
            &index[..],
            &[
                "v (mapped to model-00002-of-00002.safetensors",
                "w (held by 2 shards of model.safetensors.index.json",
            ][..],
        ),
        (
            &right_shard,
            broken_index,
            &["model.safetensors.index.json (not valid JSON"][..],
        ),
        (&with_copy, &index[..], &[][..]),
    ] {
        write_tree(
            &sharded,
            &[
                ("model-00002-of-00002.safetensors", shard),
                ("model.safetensors.index.json", index),
            ],
        );
        run_ok(&[
            "ingest",
            dir,
            "--lake",
            &lake,
            "--model-id",
            "sharded",
            "-q",
        ]);
        run_ok(&["tensorise", "--lake", &lake, "-q"]);
        let out = run(&["promote", "sharded@main", "--lake", &lake, "--name", "m"]);
        if whys.is_empty() {
            assert!(
                out.status.success() && text(&out).contains("m:1"),
                "{}",
                text(&out)
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{whys:?}: {}", text(&out));
            for why in whys {
                assert!(text(&out).contains(why), "{why}: {}", text(&out));
            }
        }
    }

    // A checkpoint holding a pickle is promoted, with a warning naming it.
    let pickled = tmp.path().join("pickled");
    write_tree(
        &pickled,
        &[
            ("model.safetensors", &one_tensor_file(3.0)),
            ("training_args.bin", &[0x80, 4, 0x95, 0, 0]),
        ],
    );
    let dir = pickled.to_str().expect("utf8");
    run_ok(&[
        "ingest",
        dir,
        "--lake",
        &lake,
        "--model-id",
        "pickled",
        "-q",
    ]);
    run_ok(&["tensorise", "--lake", &lake, "-q"]);
    let out = run_ok(&["promote", "pickled@main", "--lake", &lake, "--name", "p"]);
    assert!(
        out.contains("no_pickles") && out.contains("training_args.bin") && out.contains("p:1"),
        "{out}"
    );
}

#[test]
fn promote_warns_about_untensorised_changes_and_says_which_version_stays_newest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("m");
    let lake = tmp.path().join("lake");
    let (dir_s, lake_s) = (dir.to_str().expect("utf8"), lake.to_str().expect("utf8"));
    let promote = || run_ok(&["promote", "m@main", "--lake", lake_s, "--name", "g", "-q"]);
    for seed in [1, 2] {
        write_tree(&dir, &[("model.safetensors", &safetensors_f32(1000, seed))]);
        run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
        run_ok(&["tensorise", "--lake", lake_s, "-q"]);
        let out = promote();
        assert!(out.contains(&format!("g:{seed} (1 files")), "{out}");
    }
    // Upstream goes back to the first weights; tensorise has not run yet.
    write_tree(&dir, &[("model.safetensors", &safetensors_f32(1000, 1))]);
    run_ok(&["ingest", dir_s, "--lake", lake_s, "--model-id", "m", "-q"]);
    let out = run_ok(&["verify", "m@main", "--lake", lake_s, "-q"]);
    assert!(
        out.contains("bronze is ahead of silver: 1 file(s)") && out.contains("model.safetensors"),
        "{out}"
    );
    let out = promote();
    assert!(
        out.contains("promote: g:2 (these weights were already promoted)")
            && out.contains("gate silver_current")
            && out.contains("model.safetensors"),
        "{out}"
    );
    run_ok(&["tensorise", "--lake", lake_s, "-q"]);
    let out = promote();
    assert!(
        out.contains("g:1 (these weights were already promoted; g:2 stays the newest version")
            && !out.contains("silver_current"),
        "{out}"
    );
}
