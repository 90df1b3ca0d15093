//! The Databricks task launchers (scripts/build-launchers.sh): the JAR's main
//! class and the wheel's console script run a real `weightlake task`, stream
//! its output and exit with its code.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A quickstart pipeline whose paths point at this checkout and a temp lake.
fn quickstart(dir: &Path) -> PathBuf {
    let root = repo_root();
    let yaml = std::fs::read_to_string(root.join("examples/quickstart.yaml"))
        .expect("read")
        .replace("./examples", &format!("{}/examples", root.display()))
        .replace("lake: ./lake", &format!("lake: {}/lake", dir.display()));
    let p = dir.join("quickstart.yaml");
    std::fs::write(&p, yaml).expect("write");
    p
}

fn build_launchers(out: &Path) -> bool {
    if Command::new("javac").arg("-version").output().is_err() {
        println!("SKIPPED launcher tests: javac is not installed");
        return false;
    }
    let built = Command::new("bash")
        .arg(repo_root().join("scripts/build-launchers.sh"))
        .arg(out)
        .env("PYTHON", python())
        .output()
        .expect("build launchers");
    assert!(built.status.success(), "{}", text(&built));
    true
}

/// Run `launcher ARGS` with WEIGHTLAKE_BIN set to the binary under test.
fn launch(mut launcher: Command, args: &[&str]) -> std::process::Output {
    launcher
        .args(args)
        .env("WEIGHTLAKE_BIN", env!("CARGO_BIN_EXE_weightlake"))
        .env("RUST_LOG", "warn")
        .env_remove("DATABRICKS_RUNTIME_VERSION")
        .output()
        .expect("run launcher")
}

#[test]
fn jar_and_wheel_launchers_run_a_task_and_propagate_exit_codes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dist = tmp.path().join("dist");
    if !build_launchers(&dist) {
        return;
    }
    let jar = dist.join("weightlake-launcher.jar");
    let wheel = std::fs::read_dir(&dist)
        .expect("dist")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    // Install the wheel the way a cluster does, console script included.
    let site = tmp.path().join("site");
    let pip = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
        ])
        .arg(&site)
        .arg(&wheel)
        .output()
        .expect("pip install");
    assert!(pip.status.success(), "{}", text(&pip));
    let script = site.join("bin/weightlake-launcher");
    assert!(script.is_file(), "no console script in {}", site.display());

    let java = || {
        let mut c = Command::new("java");
        c.arg("-jar").arg(&jar);
        c
    };
    let wheel_script = || {
        let mut c = Command::new(python());
        c.arg(&script).env("PYTHONPATH", &site);
        c
    };
    let launchers: [(&str, &dyn Fn() -> Command); 2] = [("jar", &java), ("wheel", &wheel_script)];
    for (i, (name, make)) in launchers.iter().enumerate() {
        let dir = tmp.path().join(format!("run-{i}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let spec = quickstart(&dir);
        let spec = spec.to_str().expect("utf8");
        let ok = launch(
            make(),
            &["task", "ingest", "--pipeline", spec, "--run-id", "42", "-q"],
        );
        assert_eq!(ok.status.code(), Some(0), "{name}: {}", text(&ok));
        assert!(
            String::from_utf8_lossy(&ok.stdout).contains("ingest: 3 files ingested"),
            "{name}: {}",
            text(&ok)
        );
        let bad = launch(make(), &["task", "ingset", "--pipeline", spec]);
        assert_eq!(bad.status.code(), Some(2), "{name}: {}", text(&bad));
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("did you mean `ingest`"),
            "{name}: {}",
            text(&bad)
        );
        let mut missing = make();
        missing.env("WEIGHTLAKE_BIN", dir.join("no-such-binary"));
        let out = missing.args(["--version"]).output().expect("run launcher");
        assert_eq!(out.status.code(), Some(127), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("WEIGHTLAKE_BIN"),
            "{name}: {}",
            text(&out)
        );
    }
}
