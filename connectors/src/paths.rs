//! Untrusted file paths from listings, and include/exclude glob filters.
//!
//! Paths come from hub listings, object store listings and HTTP URLs: all hostile.
//! [`safe_relative_path`] accepts only plain relative paths that stay inside the
//! model directory.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{ConnectorError, Result};

/// Check that `path` (from `origin`) is a relative path that stays inside its root.
///
/// Rejects empty paths, absolute paths, `..` and `.` segments, empty segments,
/// backslashes, drive letters and control characters.
pub fn safe_relative_path(path: &str, origin: &str) -> Result<String> {
    let bad = |reason| ConnectorError::UnsafePath {
        path: path.to_string(),
        origin: origin.to_string(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.len() > 4096 {
        return Err(bad("longer than 4096 bytes"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\\') {
        return Err(bad("backslash in path"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("control character in path"));
    }
    if path
        .split('/')
        .next()
        .is_some_and(|s| s.len() >= 2 && s.as_bytes()[1] == b':')
    {
        return Err(bad("drive letter in path"));
    }
    for seg in path.split('/') {
        match seg {
            "" => return Err(bad("empty path segment")),
            "." | ".." => return Err(bad("`.` or `..` segment")),
            _ => {}
        }
    }
    if is_git_path(path) {
        // `.git/config` written into an export directory runs commands
        // (`core.fsmonitor`) the next time git looks at it.
        return Err(bad("`.git` segment (git metadata is not a model file)"));
    }
    Ok(path.to_string())
}

/// The file an export writes last under its destination, and deletes
/// before it writes the first (the name Spark and Hadoop jobs write): a
/// record about a directory, not a file of the model, so directory and
/// prefix listings skip it wherever it is.
pub const COMPLETE_MARKER: &str = "_SUCCESS";

/// The lock object an export holds under its destination while it writes
/// there: a second export into the same destination waits for the first,
/// so a completion marker never sits beside another export's files.
pub const EXPORT_LOCK: &str = "_WEIGHTLAKE_EXPORTING";

/// Whether `path` names a completion marker ([`COMPLETE_MARKER`]) or an
/// export's lock ([`EXPORT_LOCK`]): records about a directory, not files of
/// a model.
pub fn is_export_record(path: &str) -> bool {
    matches!(path.rsplit('/').next(), Some(COMPLETE_MARKER | EXPORT_LOCK))
}

/// Whether `path` has a `.git` segment (any case: case-insensitive file
/// systems treat `.GIT` as `.git`).
pub fn is_git_path(path: &str) -> bool {
    path.split('/').any(|s| s.eq_ignore_ascii_case(".git"))
}

/// Include/exclude globs over relative file paths. An empty include list includes all.
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl PathFilter {
    /// Build a filter; each glob is matched against the whole relative path,
    /// and a glob without `/` also matches the file name in any directory.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        Ok(Self {
            include: build_set(include)?,
            exclude: build_set(exclude)?,
        })
    }

    /// Does the filter keep `path`?
    pub fn matches(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        let hit = |set: &GlobSet| set.is_match(path) || set.is_match(name);
        self.include.as_ref().is_none_or(hit) && !self.exclude.as_ref().is_some_and(hit)
    }

    /// Does an exclude glob drop the directory `dir` (itself, or everything
    /// under it: `dir/**`)?
    pub fn excludes_dir(&self, dir: &str) -> bool {
        let name = dir.rsplit('/').next().unwrap_or(dir);
        let inside = format!("{dir}/_");
        self.exclude
            .as_ref()
            .is_some_and(|set| set.is_match(dir) || set.is_match(name) || set.is_match(&inside))
    }
}

fn build_set(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob =
            Glob::new(g).map_err(|e| ConnectorError::invalid("glob", g.clone(), e.to_string()))?;
        b.add(glob);
    }
    b.build()
        .map(Some)
        .map_err(|e| ConnectorError::invalid("glob", globs.join(","), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            "C:/x",
            "./a",
            "a/\u{0}b",
            ".git/config",
            "sub/.GIT/hooks/post-checkout",
        ] {
            assert!(safe_relative_path(p, "test").is_err(), "accepted {p:?}");
        }
        assert_eq!(
            safe_relative_path("onnx/model.onnx", "t").expect("ok"),
            "onnx/model.onnx"
        );
        // Hub repositories carry `.gitattributes`; only `.git` itself is refused.
        assert!(safe_relative_path(".gitattributes", "t").is_ok());
    }

    #[test]
    fn include_exclude() {
        let f = PathFilter::new(
            &["*.safetensors".into(), "*.json".into()],
            &["onnx/*".into()],
        )
        .expect("globs");
        assert!(f.matches("model.safetensors"));
        assert!(f.matches("sub/config.json"));
        assert!(!f.matches("onnx/config.json"));
        assert!(!f.matches("pytorch_model.bin"));
        assert!(
            PathFilter::new(&[], &[])
                .expect("empty")
                .matches("anything")
        );
        assert!(PathFilter::new(&["[".into()], &[]).is_err());
    }
}
