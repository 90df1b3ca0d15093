//! Ingest from a Hugging Face-shaped hub API served by the test server.

use weightlake_testkit::HttpFixture;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn hub_revision_is_resolved_filtered_and_verified() {
    let fx = HttpFixture::start().await.expect("server");
    let weights = random_bytes(400_000, 8);
    fx.add_file("model.safetensors", weights.clone());
    fx.add_file("config.json", b"{\"hidden\":8}".to_vec());
    fx.add_file("pytorch_model.bin", random_bytes(1000, 9));
    fx.set_hub_repo(
        "org/tiny",
        "0123abcd",
        &[
            ("model.safetensors", true),
            ("config.json", false),
            ("pytorch_model.bin", true),
        ],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let spec = tmp.path().join("p.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: hub\nlake: {}\nsources:\n  tiny: {{ hub: {{ endpoint: {}, repo: org/tiny, revision: main, include: [\"*.safetensors\", \"*.json\"] }} }}\nstages:\n  ingest: {{ job: ingest, sources: [tiny], chunk_size: 64KiB }}\n",
            lake.display(),
            fx.base_url()
        ),
    )
    .expect("write");
    let out = bin()
        .args(["run", spec.to_str().expect("utf8"), "-q"])
        .env("HF_TOKEN", "hf_secret_token")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 files ingested"), "{}", text(&out));
    assert!(
        !text(&out).contains("hf_secret_token"),
        "token leaked to output"
    );
    // Every request carried the token (same host).
    assert!(
        fx.auth_seen()
            .iter()
            .all(|a| a.as_deref() == Some("Bearer hf_secret_token"))
    );

    let lake = local_lake(tmp.path());
    assert_eq!(
        read_back(&lake, "org/tiny", "model.safetensors").await,
        weights
    );
    let s = weightlake_jobs::sql::LakeSession::new(&lake)
        .await
        .expect("session");
    let rows = s
        .query("SELECT revision, source_uri FROM bronze.files ORDER BY file_path")
        .await
        .expect("q");
    let shown = weightlake_jobs::sql::format_batches(&rows, Default::default()).expect("fmt");
    assert!(
        shown.contains("main") && shown.contains("/org/tiny/resolve/0123abcd/config.json"),
        "{shown}"
    );
    assert!(!shown.contains("pytorch_model.bin"));
    let all = weightlake_jobs::sql::format_batches(
        &s.query("SELECT * FROM bronze.files").await.expect("q"),
        Default::default(),
    )
    .expect("fmt");
    assert!(!all.contains("hf_secret_token"), "token stored in a table");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_is_not_forwarded_to_another_host_on_redirect() {
    let hub = HttpFixture::start().await.expect("hub");
    let cdn = HttpFixture::start().await.expect("cdn");
    let data = random_bytes(200_000, 10);
    hub.add_file("w.safetensors", data.clone());
    cdn.add_file("w.safetensors", data.clone());
    hub.set_hub_repo("org/r", "c0ffee", &[("w.safetensors", true)]);
    hub.redirect_resolve_to(Some(cdn.base_url()));
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = bin()
        .args([
            "ingest",
            "hf://org/r",
            "--lake",
            lake.to_str().expect("utf8"),
            "--chunk-size",
            "64KiB",
            "-q",
        ])
        .env("HF_ENDPOINT", hub.base_url())
        .env("HF_TOKEN", "hf_secret_token")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        hub.auth_seen().iter().all(|a| a.is_some()),
        "hub got the token"
    );
    assert!(!cdn.auth_seen().is_empty());
    assert!(
        cdn.auth_seen().iter().all(Option::is_none),
        "token leaked to the CDN host: {:?}",
        cdn.auth_seen()
    );
    assert_eq!(
        read_back(&local_lake(tmp.path()), "org/r", "w.safetensors").await,
        data
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_listing_paths_are_rejected_with_exit_2() {
    let fx = HttpFixture::start().await.expect("server");
    fx.add_file("../../etc/passwd", b"root".to_vec());
    fx.set_hub_repo("org/evil", "abc", &[("../../etc/passwd", false)]);
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = bin()
        .args([
            "ingest",
            "hf://org/evil",
            "--lake",
            lake.to_str().expect("utf8"),
            "-q",
        ])
        .env("HF_ENDPOINT", fx.base_url())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unsafe file path `../../etc/passwd`"),
        "{}",
        text(&out)
    );
    assert!(!tmp.path().join("etc").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_branch_that_moves_back_and_drops_a_file_is_mirrored_by_its_revision() {
    let fx = HttpFixture::start().await.expect("server");
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let lake_s = lake.to_str().expect("utf8");
    let cli = |args: &[&str]| {
        let out = bin()
            .args(args)
            .env("HF_ENDPOINT", fx.base_url())
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (a, b) = (safetensors_f32(20_000, 1), safetensors_f32(20_000, 2));
    let both = [("model.safetensors", true), ("config.json", false)];
    fx.add_file("config.json", b"{}".to_vec());
    for (commit, weights) in [("c1", &a), ("c2", &b)] {
        fx.add_file("model.safetensors", weights.clone());
        fx.set_hub_repo("org/m", commit, &both);
        let out = cli(&[
            "ingest",
            "hf://org/m",
            "--lake",
            lake_s,
            "--chunk-size",
            "16KiB",
            "-q",
        ]);
        // config.json (not LFS) is the same blob at both commits: kept.
        if commit == "c2" {
            assert!(out.contains("1 files ingested, 1 already present"), "{out}");
        }
        cli(&["tensorise", "--lake", lake_s, "-q"]);
    }
    // A version promoted from the second weights must survive what follows.
    cli(&[
        "promote",
        "org/m@main",
        "--lake",
        lake_s,
        "--name",
        "gm",
        "-q",
    ]);
    // `main` moves back to the first weights and drops config.json.
    fx.add_file("model.safetensors", a.clone());
    fx.set_hub_repo("org/m", "c3", &[("model.safetensors", true)]);
    let out = cli(&[
        "ingest",
        "hf://org/m",
        "--lake",
        lake_s,
        "--chunk-size",
        "16KiB",
        "-q",
    ]);
    assert!(
        out.contains("1 files ingested") && out.contains("org/m@main/config.json"),
        "{out}"
    );
    // The first weights' chunks are still in bronze: recorded again, not downloaded.
    assert!(
        out.contains("0 chunks written") && !out.contains("(0 reused)"),
        "{out}"
    );
    cli(&["tensorise", "--lake", lake_s, "-q"]);
    let to = tmp.path().join("out");
    cli(&[
        "export",
        "org/m@main",
        "--lake",
        lake_s,
        "--to",
        to.to_str().expect("utf8"),
        "-q",
    ]);
    let files: Vec<String> = exported_tree(&to).into_keys().collect();
    assert_eq!(files, ["model.safetensors"]);
    assert_eq!(
        std::fs::read(to.join("model.safetensors")).expect("read"),
        a
    );
    // Redoing the path kept the silver rows that version 1 is pinned to.
    let v1 = tmp.path().join("v1");
    cli(&[
        "export",
        "gm:1",
        "--lake",
        lake_s,
        "--to",
        v1.to_str().expect("utf8"),
        "-q",
    ]);
    assert_eq!(
        std::fs::read(v1.join("model.safetensors")).expect("read"),
        b
    );
    assert!(v1.join("config.json").exists());
}
