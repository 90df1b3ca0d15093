//! The ranged HTTP downloader against a server that misbehaves on purpose.

use std::time::Duration;

use weightlake_connectors::http::{DownloadConfig, HttpClient, HttpTarget, download_to_file};
use weightlake_connectors::source::{SourceSpec, UrlSource};
use weightlake_jobs::JobError;
use weightlake_jobs::ingest::IngestJob;
use weightlake_testkit::{Fault, HttpFixture};

use crate::support::*;

fn fast_retries(chunk: u64) -> DownloadConfig {
    DownloadConfig {
        concurrency: 4,
        chunk_size: chunk,
        max_retries: 4,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        stall_timeout: Duration::from_millis(400),
        ..Default::default()
    }
}

fn url_source(url: String, sha256: Option<String>) -> SourceSpec {
    SourceSpec::Url(UrlSource {
        url,
        sha256,
        path: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_is_retried_and_the_file_arrives_intact() {
    let fx = HttpFixture::start().await.expect("server");
    let data = random_bytes(1 << 20, 3);
    fx.add_file("models/m/model.bin", data.clone());
    // The first request is the probe; the rest hit ranges.
    fx.push_faults([
        Fault::Status(503),
        Fault::Status(500),
        Fault::TooManyRequests(0),
        Fault::Reset(10_000),
        Fault::Truncate(5_000),
        Fault::Stall(1_000, Duration::from_secs(5)),
        Fault::WrongRange,
        Fault::IgnoreRange,
    ]);
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = local_lake(tmp.path());
    let report = IngestJob::new(
        lake.clone(),
        vec![url_source(
            fx.url("models/m/model.bin"),
            Some(sha256(&data)),
        )],
    )
    .with_download_config(fast_retries(128 << 10))
    .await
    .expect("ingest survives faults");
    assert_eq!(fx.pending_faults(), 0, "every fault was served");
    assert_eq!(report.files_ingested, 1);
    assert_eq!(read_back(&lake, "m", "model.bin").await, data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_replaced_while_it_is_read_is_refused_not_read_as_a_mix() {
    let fx = HttpFixture::start().await.expect("server");
    fx.add_file("m/w.bin", random_bytes(64 << 10, 1));
    let ctx = weightlake_connectors::source::ResolveContext {
        http: HttpClient::new(fast_retries(16 << 10)).expect("client"),
        storage: Default::default(),
        hf_token: None,
    };
    let resolved = url_source(fx.url("m/w.bin"), None)
        .resolve(&ctx)
        .await
        .expect("resolve");
    let file = &resolved.files[0];
    let mut buf = weightlake_connectors::http::ChunkBuffer::new(&(0..1024));
    file.read_range(&ctx.http, 0..1024, &mut buf)
        .await
        .expect("a range of the version listed");
    // The server now has another version of the same size.
    fx.add_file("m/w.bin", random_bytes(64 << 10, 2));
    let mut buf = weightlake_connectors::http::ChunkBuffer::new(&(1024..2048));
    let next = file.read_range(&ctx.http, 1024..2048, &mut buf).await;
    let err = next.expect_err("a range of another version").to_string();
    assert!(err.contains("changed while it was being read"), "{err}");
    let err = file
        .check_unchanged(&ctx.http)
        .await
        .expect_err("the final check")
        .to_string();
    assert!(err.contains("changed while it was being read"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_download_leaves_nothing_behind() {
    let fx = HttpFixture::start().await.expect("server");
    fx.add_file("slow.bin", random_bytes(4 << 20, 9));
    fx.set_throttle(weightlake_testkit::Throttle {
        bytes_per_sec: 256 << 10,
        latency: Duration::ZERO,
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let dest = tmp.path().join("slow.bin");
    let child = bin()
        .args(["download", &fx.url("slow.bin"), "-o"])
        .arg(&dest)
        .arg("-q")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Once the partial file exists, stop the download.
    let partial = || {
        std::fs::read_dir(tmp.path())
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while partial() == 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(partial(), 1, "no partial file appeared");
    let out = terminate(child);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains("starts over"), "{}", text(&out));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_without_ranges_or_length_is_read_as_one_stream() {
    for no_length in [false, true] {
        let fx = HttpFixture::start().await.expect("server");
        let data = random_bytes(700_000, 4);
        fx.add_file("w.bin", data.clone());
        fx.set_no_ranges(true);
        fx.set_no_length(no_length);
        // A reset mid-stream restarts the stream; already-sent chunks are not repeated.
        fx.push_faults([Fault::Pass, Fault::Reset(300_000)]);
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = local_lake(tmp.path());
        let report = IngestJob::new(lake.clone(), vec![url_source(fx.url("w.bin"), None)])
            .with_model_id("s")
            .with_download_config(fast_retries(128 << 10))
            .await
            .unwrap_or_else(|e| panic!("no_length={no_length}: {e}"));
        assert_eq!(report.files_ingested, 1);
        assert_eq!(
            read_back(&lake, "s", "w.bin").await,
            data,
            "no_length={no_length}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_sha256_fails_and_nothing_is_marked_complete() {
    let fx = HttpFixture::start().await.expect("server");
    fx.add_file("x.bin", random_bytes(50_000, 5));
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = local_lake(tmp.path());
    let err = IngestJob::new(
        lake.clone(),
        vec![url_source(fx.url("x.bin"), Some("0".repeat(64)))],
    )
    .with_download_config(fast_retries(16 << 10))
    .await
    .expect_err("sha mismatch");
    assert!(matches!(err, JobError::Partial { failed: 1, .. }), "{err}");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert_eq!(
        query_i64(&lake, "SELECT COUNT(*) FROM bronze.files").await,
        [0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_file_and_exhausted_retries_exit_1_naming_the_url() {
    let fx = HttpFixture::start().await.expect("server");
    fx.add_file("ok.bin", random_bytes(10, 6));
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let out = run(&[
        "ingest",
        &fx.url("nope.bin"),
        "--lake",
        lake.to_str().expect("utf8"),
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nope.bin") && text(&out).contains("404"),
        "{}",
        text(&out)
    );

    fx.push_faults(std::iter::repeat_n(Fault::Status(500), 20));
    let out = run(&[
        "ingest",
        &fx.url("ok.bin"),
        "--lake",
        lake.to_str().expect("utf8"),
        "--retries",
        "2",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("gave up after 2 retries"),
        "{}",
        text(&out)
    );

    // A presigned URL's query is a credential: no message repeats it.
    let out = run(&[
        "ingest",
        "http://127.0.0.1:1/x.bin?X-Amz-Signature=SIGSECRET123&token=TOKSECRET456",
        "--lake",
        lake.to_str().expect("utf8"),
        "--retries",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("127.0.0.1:1/x.bin") && !text(&out).contains("SECRET"),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn download_command_writes_the_file_with_parallel_ranges() {
    let fx = HttpFixture::start().await.expect("server");
    let data = random_bytes(3 << 20, 7);
    fx.add_file("big.bin", data.clone());
    fx.push_faults([Fault::Pass, Fault::Reset(1000), Fault::Truncate(100)]);
    let tmp = tempfile::tempdir().expect("tmp");
    let dest = tmp.path().join("big.bin");
    let client = HttpClient::new(fast_retries(256 << 10)).expect("client");
    let target = HttpTarget::new(fx.url("big.bin").parse().expect("url"));
    let report = download_to_file(&client, &target, &dest, Some(&sha256(&data)), true, None)
        .await
        .expect("download");
    assert_eq!(report.bytes, data.len() as u64);
    assert!(!report.single_stream);
    assert_eq!(std::fs::read(&dest).expect("read"), data);
    // One probe, one range per connection (3 MiB over 4 connections is longer
    // than the 256 KiB chunk size), and one retry each for the reset and the
    // truncated range.
    assert_eq!(fx.requests(), 1 + 4 + 2, "requests made");

    // A partial file a download killed outright left is removed by the next.
    let abandoned = tmp.path().join(".big.bin.4194300.partial");
    std::fs::write(&abandoned, b"half").expect("write");
    let again = run(&[
        "download",
        &fx.url("big.bin"),
        "-o",
        dest.to_str().expect("utf8"),
        "-q",
    ]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(!abandoned.exists(), "an abandoned partial file stayed");
    // A wrong checksum fails, given as a flag or, as `ingest` reads URLs,
    // in the fragment; a checksum spelt another way is refused, not skipped.
    let wrong = "f".repeat(64);
    let url = fx.url("big.bin");
    let dest_s = dest.to_str().expect("utf8");
    for args in [
        vec![url.clone(), "--sha256".into(), wrong.clone()],
        vec![format!("{url}#sha256={wrong}")],
    ] {
        let mut all = vec!["download".to_string()];
        all.extend(args);
        all.extend(["-o".into(), dest_s.into(), "-q".into()]);
        let out = run(&all.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.status.code(), Some(1), "{all:?}: {}", text(&out));
        assert!(text(&out).contains("sha256 mismatch"), "{}", text(&out));
    }
    let out = run(&[
        "download",
        &format!("{url}#SHA-256={wrong}"),
        "-o",
        dest_s,
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Bytes that failed the check never replace what the path held.
    assert_eq!(std::fs::read(&dest).expect("read"), data);
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}
