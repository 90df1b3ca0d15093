//! Validation: a parsed [`PipelineSpec`] becomes a [`ValidatedPipeline`], or
//! every problem is reported at once with its file:line:column. Pure: no
//! network and no file access.

use std::collections::{BTreeMap, BTreeSet};

use crate::spec::{JobKind, PipelineSpec};
use crate::{PipelineError, SpecError};

/// A pipeline that passed validation, with its stages in run order.
#[derive(Debug, Clone)]
pub struct ValidatedPipeline {
    spec: PipelineSpec,
    order: Vec<String>,
    origin: String,
}

impl ValidatedPipeline {
    /// The spec.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// Stage names in an order that respects `depends_on`.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    /// The file it came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Best-effort position of `key:` (the n-th match) in the raw text, for messages
/// about values that serde already accepted.
fn locate(raw: &str, key: &str) -> (usize, usize) {
    for (i, line) in raw.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with(&format!("{key}:")) || trimmed.starts_with(&format!("\"{key}\":")) {
            return (i + 1, line.len() - trimmed.len() + 1);
        }
        if let Some(col) = line.find(key) {
            let after = &line[col + key.len()..];
            let before_ok = col == 0 || !line.as_bytes()[col - 1].is_ascii_alphanumeric();
            if before_ok
                && (after.starts_with(':') || after.starts_with(']') || after.starts_with(','))
            {
                return (i + 1, col + 1);
            }
        }
    }
    (0, 0)
}

/// Validate `spec` (parsed from `raw`, read from `origin`).
pub fn validate(
    spec: PipelineSpec,
    raw: &str,
    origin: &str,
) -> Result<ValidatedPipeline, PipelineError> {
    let mut errors = Vec::new();
    let mut err = |key: &str, message: String| {
        let (line, column) = locate(raw, key);
        errors.push(SpecError {
            file: origin.to_string(),
            line,
            column,
            message,
        });
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name_ok(&spec.name) {
        err(
            "name",
            format!(
                "pipeline name `{}` must be letters, digits, `-` or `_`",
                spec.name
            ),
        );
    }
    if let Err(e) = weightlake_connectors::storage::parse_location(&spec.lake) {
        err("lake", e.to_string());
    }
    if spec.stages.is_empty() {
        err("stages", "a pipeline needs at least one stage".into());
    }
    for (name, stage) in &spec.stages {
        if !name_ok(name) {
            err(
                name,
                format!("stage name `{name}` must be letters, digits, `-` or `_`"),
            );
        }
        for dep in &stage.depends_on {
            if !spec.stages.contains_key(dep) {
                err(
                    dep,
                    format!(
                        "stage `{name}` depends on `{dep}`, which is not a stage{}",
                        suggest(dep, spec.stages.keys())
                    ),
                );
            }
        }
        match stage.job {
            JobKind::Tensorise => {}
            JobKind::Ingest => {
                if stage.sources.is_empty() {
                    err(name, format!("ingest stage `{name}` needs `sources: [..]`"));
                }
                for s in &stage.sources {
                    if !spec.sources.contains_key(s) {
                        err(
                            s,
                            format!(
                                "stage `{name}` reads source `{s}`, which is not defined under `sources:`{}",
                                suggest(s, spec.sources.keys())
                            ),
                        );
                    }
                }
                if stage.parallelism == Some(0) {
                    err(
                        "parallelism",
                        format!("stage `{name}`: parallelism must be at least 1"),
                    );
                }
                if stage
                    .chunk_size
                    .is_some_and(|c| !(1 << 10..=1 << 30).contains(&c))
                {
                    err(
                        "chunk_size",
                        format!("stage `{name}`: chunk_size must be between 1KiB and 1GiB"),
                    );
                }
            }
        }
    }
    for (name, stage) in &spec.stages {
        if let Some(b) = &stage.base_model
            && let Err(e) = resolve_base(&spec, b)
        {
            err("base_model", format!("stage `{name}`: {e}"));
        }
    }
    let order = match topo_order(&spec) {
        Ok(o) => o,
        Err(cycle) => {
            err(
                &cycle[0],
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
            Vec::new()
        }
    };
    if errors.is_empty() {
        Ok(ValidatedPipeline {
            spec,
            order,
            origin: origin.to_string(),
        })
    } else {
        Err(PipelineError::Spec(errors))
    }
}

/// A `base_model:` value as `MODEL@REVISION`: given as such, or the name of a
/// source whose model id and revision are known (a hub source, or a source that
/// an ingest stage records under an explicit `model_id`).
pub fn resolve_base(spec: &PipelineSpec, value: &str) -> Result<String, String> {
    let Some(source) = spec.sources.get(value) else {
        return if value.contains('@') {
            Ok(value.to_string())
        } else {
            Err(format!(
                "base_model `{value}` is neither MODEL@REVISION nor a source name{}",
                suggest(value, spec.sources.keys())
            ))
        };
    };
    for stage in spec.stages.values() {
        if stage.job == JobKind::Ingest
            && stage.sources.iter().any(|s| s == value)
            && let Some(m) = &stage.model_id
        {
            return Ok(format!(
                "{m}@{}",
                stage.revision.clone().unwrap_or_else(|| "main".into())
            ));
        }
    }
    match source {
        weightlake_connectors::source::SourceSpec::Hub(h) => {
            Ok(format!("{}@{}", h.repo, h.revision))
        }
        _ => Err(format!(
            "base_model `{value}`: give its ingest stage a `model_id`, or write MODEL@REVISION"
        )),
    }
}

/// " (did you mean `x`?)" when a known name is close to `wrong`.
pub(crate) fn suggest<'a>(wrong: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (strsim::levenshtein(wrong, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Kahn's algorithm over `depends_on`; on a cycle, returns its path.
fn topo_order(spec: &PipelineSpec) -> Result<Vec<String>, Vec<String>> {
    let mut indeg: BTreeMap<&str, usize> = spec.stages.keys().map(|k| (k.as_str(), 0)).collect();
    for (name, s) in &spec.stages {
        let known = s
            .depends_on
            .iter()
            .filter(|d| spec.stages.contains_key(*d))
            .count();
        indeg.insert(name, known);
    }
    let mut ready: BTreeSet<&str> = indeg
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut order = Vec::new();
    while let Some(n) = ready.pop_first() {
        order.push(n.to_string());
        for (name, s) in &spec.stages {
            if s.depends_on.iter().any(|d| d == n)
                && let Some(d) = indeg.get_mut(name.as_str())
            {
                *d -= 1;
                if *d == 0 {
                    ready.insert(name);
                }
            }
        }
    }
    if order.len() == spec.stages.len() {
        return Ok(order);
    }
    // Walk from a stage left over along unfinished dependencies until a repeat.
    let done: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let mut path: Vec<String> = Vec::new();
    let mut cur = spec
        .stages
        .keys()
        .find(|k| !done.contains(k.as_str()))
        .cloned()
        .unwrap_or_default();
    while !path.contains(&cur) {
        path.push(cur.clone());
        cur = spec.stages[&cur]
            .depends_on
            .iter()
            .find(|d| spec.stages.contains_key(*d) && !done.contains(d.as_str()))
            .cloned()
            .unwrap_or_default();
    }
    let start = path.iter().position(|p| *p == cur).unwrap_or(0);
    let mut cycle = path[start..].to_vec();
    cycle.push(cur);
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    const BASE: &str = "name: t\nlake: ./lake\nsources:\n  s: { local: { path: ./m } }\nstages:\n";

    #[test]
    fn valid_pipeline_orders_stages() {
        let p = load_str(&format!("{BASE}  b: {{ job: ingest, sources: [s], depends_on: [a] }}\n  a: {{ job: ingest, sources: [s] }}\n"), "t.yaml")
            .expect("valid");
        assert_eq!(p.order(), ["a", "b"]);
    }

    #[test]
    fn reports_all_problems_with_positions() {
        let yaml = format!(
            "{BASE}  a: {{ job: ingest, sources: [x], depends_on: [bb] }}\n  b: {{ job: ingest, sources: [s], depends_on: [b] }}\n"
        );
        let err = load_str(&yaml, "t.yaml").expect_err("invalid").to_string();
        assert!(err.contains("source `x`"), "{err}");
        assert!(
            err.contains("depends on `bb`") && err.contains("did you mean `b`"),
            "{err}"
        );
        assert!(err.contains("dependency cycle: b -> b"), "{err}");
        assert!(err.lines().all(|l| l.starts_with("t.yaml:")), "{err}");
    }

    #[test]
    fn unknown_field_has_line_and_suggestion() {
        let yaml = format!("{BASE}  a:\n    job: ingest\n    sources: [s]\n    paralelism: 4\n");
        let err = load_str(&yaml, "t.yaml").expect_err("typo").to_string();
        assert!(err.starts_with("t.yaml:9:"), "{err}");
        assert!(err.contains("did you mean `parallelism`"), "{err}");
    }

    #[test]
    fn bad_sizes_and_jobs_are_rejected() {
        let err = load_str(
            &format!("{BASE}  a: {{ job: ingest, sources: [s], chunk_size: 12 parsecs }}\n"),
            "t.yaml",
        )
        .expect_err("bad size")
        .to_string();
        assert!(err.contains("parsecs"), "{err}");
        let err = load_str(
            &format!("{BASE}  a: {{ job: fly, sources: [s] }}\n"),
            "t.yaml",
        )
        .expect_err("bad job")
        .to_string();
        assert!(err.contains("unknown variant `fly`"), "{err}");
    }
}
