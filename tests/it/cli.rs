//! The command line itself: help, versions, bad arguments.

use crate::support::*;

#[test]
fn help_lists_commands_and_bad_args_exit_2() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    for cmd in ["ingest", "run", "task", "validate", "sql", "download"] {
        assert!(text(&out).contains(cmd), "help lacks {cmd}");
    }
    let out = run(&["ingest", "--help"]);
    assert!(text(&out).contains("hf://org/repo"), "{}", text(&out));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        run(&["ingest", "x", "--lake", "ftp://nope/x"])
            .status
            .code(),
        Some(2)
    );
    let bad_size = run(&[
        "ingest",
        "x",
        "--lake",
        "/tmp/l",
        "--chunk-size",
        "12 parsecs",
    ]);
    assert_eq!(bad_size.status.code(), Some(2), "{}", text(&bad_size));
    for (flag, bad) in [
        ("--model-id", "bad id"),
        ("--model-id", "a@b"),
        ("--revision", "../x"),
    ] {
        let tiny =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny");
        let tmp = tempfile::tempdir().expect("tmp");
        let lake = tmp.path().join("lake");
        let lake = lake.to_str().expect("utf8");
        let out = run(&[
            "ingest",
            tiny.to_str().expect("utf8"),
            "--lake",
            lake,
            flag,
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            text(&out).contains("MODEL@REVISION must be able to name it"),
            "{}",
            text(&out)
        );
    }
    let no_room = run(&["ingest", "x", "--lake", "/tmp/l", "--memory-budget", "1MiB"]);
    assert_eq!(no_room.status.code(), Some(2), "{}", text(&no_room));
    assert!(
        text(&no_room).contains("at least one chunk"),
        "{}",
        text(&no_room)
    );
    let tiny_chunks = run(&["ingest", "x", "--lake", "/tmp/l", "--chunk-size", "1"]);
    assert_eq!(tiny_chunks.status.code(), Some(2), "{}", text(&tiny_chunks));
    assert!(
        text(&tiny_chunks).contains("1KiB"),
        "{}",
        text(&tiny_chunks)
    );
    // A source that does not exist is bad input, said once.
    for missing in ["/nonexistent/dir", "file:///nonexistent/dir/"] {
        let out = run(&["ingest", missing, "--lake", "/tmp/wl-never"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("/nonexistent/dir") && t.contains("no such"),
            "{t}"
        );
        assert_eq!(t.matches("no such").count(), 1, "{t}");
    }
    // A local lake that does not exist is bad input for every command but
    // ingest (a typo in a cron job's --lake must not pass as done).
    for args in [
        vec!["maintain", "--lake", "/tmp/wl-never-made"],
        vec!["verify", "m@main", "--lake", "/tmp/wl-never-made"],
        vec!["runs", "list", "--lake", "/tmp/wl-never-made"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("does not exist"), "{}", text(&out));
    }
    // A lake that is a file is bad input wherever it is used.
    let file = tempfile::NamedTempFile::new().expect("tmp file");
    let lake = file.path().to_str().expect("utf8");
    for args in [
        vec!["sql", "--lake", lake, "SELECT 1"],
        vec!["models", "list", "--lake", lake],
        vec!["ingest", "/nonexistent/dir", "--lake", lake],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("not a directory"), "{}", text(&out));
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let lake = tmp.path().join("lake");
    let tiny = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny");
    run_ok(&[
        "ingest",
        tiny.to_str().expect("utf8"),
        "--lake",
        lake.to_str().expect("utf8"),
        "-q",
    ]);
    // Far more than a pipe holds, read by nobody (`… | head -0`).
    let mut child = bin()
        .args(["sql", "--lake", lake.to_str().expect("utf8")])
        .arg("SELECT value FROM generate_series(1, 300000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
