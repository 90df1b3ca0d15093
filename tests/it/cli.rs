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
    let missing = run(&["ingest", "/nonexistent/dir", "--lake", "/tmp/wl-never"]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing).contains("/nonexistent/dir"),
        "{}",
        text(&missing)
    );
}
