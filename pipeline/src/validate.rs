//! Validation: a parsed [`PipelineSpec`] becomes a [`ValidatedPipeline`], or
//! every problem is reported at once with its file:line:column. Pure: no
//! network and no file access.

use std::collections::{BTreeMap, BTreeSet};

use crate::databricks::SHARD_SUFFIX;
use crate::spec::{JobKind, PipelineSpec, RunIf};
use crate::{PipelineError, SpecError};

/// A pipeline that passed validation, with its stages in run order.
#[derive(Debug, Clone)]
pub struct ValidatedPipeline {
    spec: PipelineSpec,
    order: Vec<String>,
    origin: String,
    params: BTreeMap<String, String>,
    cost: Option<crate::cost::CostModel>,
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

    /// Parameter values in effect: defaults, then `--param` overrides.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    pub(crate) fn with_params(mut self, params: BTreeMap<String, String>) -> Self {
        self.params = params;
        self
    }

    /// The prices of `cost:`, resolved; None without a `cost:` block.
    pub fn cost(&self) -> Option<&crate::cost::CostModel> {
        self.cost.as_ref()
    }

    pub(crate) fn with_cost(mut self, cost: Option<crate::cost::CostModel>) -> Self {
        self.cost = cost;
        self
    }

    /// `stage` and every stage downstream of it, in run order.
    pub fn downstream_of(&self, stage: &str) -> Vec<String> {
        let mut set = BTreeSet::from([stage.to_string()]);
        for name in &self.order {
            if self.spec.stages[name]
                .depends_on
                .iter()
                .any(|d| set.contains(d))
            {
                set.insert(name.clone());
            }
        }
        self.order
            .iter()
            .filter(|n| set.contains(*n))
            .cloned()
            .collect()
    }
}

/// Position of the last of `path` (e.g. `["stages", "ingest", "shards"]`),
/// each looked up at or after the line of the one before; falls back to the
/// first match of the last key in the file.
pub(crate) fn locate_path(raw: &str, path: &[&str]) -> (usize, usize) {
    let lines: Vec<&str> = raw.lines().collect();
    let mut start = 0;
    let mut pos = (0, 0);
    for key in path {
        let rest = lines.get(start..).unwrap_or_default().join("\n");
        let (l, c) = locate(&rest, key);
        if l == 0 {
            return locate(raw, path.last().copied().unwrap_or_default());
        }
        start += l - 1;
        pos = (start + 1, c);
    }
    pos
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

/// The most shard tasks a stage may have (Databricks for_each inputs).
pub const MAX_SHARDS: u32 = 1000;
/// The most retries a stage may ask for.
pub const MAX_RETRIES: u32 = 100;

/// Validate `spec` (parsed from `raw`, read from `origin`).
pub fn validate(
    spec: PipelineSpec,
    raw: &str,
    origin: &str,
) -> Result<ValidatedPipeline, PipelineError> {
    let mut errs = Errors {
        list: Vec::new(),
        origin,
        raw,
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !name_ok(&spec.name) {
        errs.key(
            "name",
            format!(
                "pipeline name `{}` must be letters, digits, `-` or `_`",
                spec.name
            ),
        );
    }
    if let Err(e) = weightlake_connectors::storage::parse_location(&spec.lake) {
        errs.key("lake", e.to_string());
    }
    if spec.storage.allow_http == Some(false)
        && let Some(endpoint) = spec
            .storage
            .endpoint
            .as_deref()
            .filter(|e| e.starts_with("http://"))
    {
        errs.at(
            locate_path(raw, &["storage", "allow_http"]),
            format!(
                "storage.allow_http is false but the endpoint `{endpoint}` is plain http: \
                 use https:// or allow_http: true"
            ),
        );
    }
    if spec.stages.is_empty() {
        errs.key("stages", "a pipeline needs at least one stage".into());
    }
    // What a run would refuse only once it reached the source: found now.
    for (source, s) in &spec.sources {
        if let Err(e) = s.check_offline() {
            errs.at(
                locate_path(raw, &["sources", source]),
                format!("source `{source}`: {e}"),
            );
        }
    }
    for (name, stage) in &spec.stages {
        if !name_ok(name) || name.starts_with('-') {
            errs.key(
                name,
                format!(
                    "stage name `{name}` must be letters, digits, `-` or `_`, not starting \
                     with `-` (a task's command line takes it as an option)"
                ),
            );
        }
        // A Databricks task_key is at most 100 characters, and a sharded
        // stage's inner task is `<stage>_shard`.
        let sharded = stage.shards.is_some_and(|n| n > 1);
        let limit = if sharded {
            100 - SHARD_SUFFIX.len()
        } else {
            100
        };
        if name.chars().count() > limit {
            errs.key(
                name,
                format!(
                    "stage name `{name}` is longer than {limit} characters{} (Databricks task keys \
                     hold at most 100)",
                    if sharded { " for a sharded stage" } else { "" }
                ),
            );
        }
        if let Some(base) = name.strip_suffix(SHARD_SUFFIX)
            && spec
                .stages
                .get(base)
                .is_some_and(|s| s.shards.is_some_and(|n| n > 1))
        {
            errs.key(
                name,
                format!(
                    "stage name `{name}` is the Databricks task key of sharded stage `{base}`'s \
                     shards: rename one of them"
                ),
            );
        }
        for dep in &stage.depends_on {
            if !spec.stages.contains_key(dep) {
                errs.key(
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
            JobKind::Promote | JobKind::Export | JobKind::Maintain => {}
            JobKind::Ingest => {
                if stage.sources.is_empty() {
                    errs.key(name, format!("ingest stage `{name}` needs `sources: [..]`"));
                }
                for (key, value) in [("model_id", &stage.model_id), ("revision", &stage.revision)] {
                    if let Some(v) = value
                        && let Err(e) = weightlake_jobs::ingest::check_id(key, v)
                    {
                        errs.at(
                            locate_path(raw, &["stages", name, key]),
                            format!("stage `{name}`: {e}"),
                        );
                    }
                }
                for s in &stage.sources {
                    if !spec.sources.contains_key(s) {
                        errs.key(
                            s,
                            format!(
                                "stage `{name}` reads source `{s}`, which is not defined under `sources:`{}",
                                suggest(s, spec.sources.keys())
                            ),
                        );
                    }
                }
                if stage.parallelism == Some(0) {
                    errs.key(
                        "parallelism",
                        format!("stage `{name}`: parallelism must be at least 1"),
                    );
                }
                if stage
                    .chunk_size
                    .is_some_and(|c| !weightlake_connectors::http::CHUNK_SIZES.contains(&c))
                {
                    errs.key(
                        "chunk_size",
                        format!("stage `{name}`: chunk_size must be between 1KiB and 1GiB"),
                    );
                }
                let chunk = stage
                    .chunk_size
                    .unwrap_or(weightlake_connectors::http::DownloadConfig::default().chunk_size);
                if stage.memory_budget.is_some_and(|b| b < chunk) {
                    errs.key(
                        "memory_budget",
                        format!(
                            "stage `{name}`: memory_budget must hold at least one chunk ({chunk} bytes)"
                        ),
                    );
                }
            }
        }
    }
    for (name, stage) in &spec.stages {
        crate::gold_stages::check(&spec, name, stage, &mut errs);
        crate::maintain_stage::check(name, stage, &mut errs);
        let at = |key: &str| locate_path(raw, &["stages", name, key]);
        if stage.depends_on.is_empty() && stage.run_if.is_some_and(|r| r != RunIf::AllSuccess) {
            errs.at(
                at("run_if"),
                format!("stage `{name}`: run_if has no effect without depends_on"),
            );
        }
        if stage.shards == Some(0) || stage.shards.is_some_and(|n| n > MAX_SHARDS) {
            errs.at(
                at("shards"),
                format!("stage `{name}`: shards must be between 1 and {MAX_SHARDS}"),
            );
        }
        if stage.timeout.is_some_and(|t| t.is_zero()) {
            errs.at(
                at("timeout"),
                format!("stage `{name}`: timeout must be positive (leave it out for none)"),
            );
        }
        if stage.max_retries.is_some_and(|r| r > MAX_RETRIES) {
            errs.at(
                at("max_retries"),
                format!("stage `{name}`: max_retries must be at most {MAX_RETRIES}"),
            );
        }
    }
    for name in spec.parameters.keys() {
        if name == crate::databricks::ARTIFACTS_VARIABLE {
            errs.at(
                locate_path(raw, &["parameters", name]),
                format!(
                    "parameter name `{name}` is reserved: a Databricks bundle names the \
                     artifacts directory so"
                ),
            );
        }
        let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name != "env";
        if !ok {
            errs.at(
                locate_path(raw, &["parameters", name]),
                format!(
                    "parameter name `{name}` must start with a letter or `_` and hold only \
                     letters, digits and `_` (and not be `env`)"
                ),
            );
        }
    }
    if let Some(sched) = &spec.schedule {
        if let Err(e) = crate::cron::validate_quartz(&sched.quartz_cron) {
            errs.at(locate_path(raw, &["schedule", "quartz_cron"]), e);
        }
        if !is_time_zone(&sched.timezone) {
            errs.at(
                locate_path(raw, &["schedule", "timezone"]),
                format!(
                    "timezone `{}` must be a Java time zone id such as UTC or Europe/Paris",
                    sched.timezone
                ),
            );
        }
    }
    if let Some(c) = &spec.compute {
        if c.workers.is_some_and(|w| w > 10_000) {
            errs.at(
                locate_path(raw, &["compute", "workers"]),
                "compute.workers must be at most 10000".into(),
            );
        }
        if c.node_type.as_deref().is_some_and(|n| n.trim().is_empty()) {
            errs.at(
                locate_path(raw, &["compute", "node_type"]),
                "compute.node_type must not be empty".into(),
            );
        }
    }
    for (name, stage) in &spec.stages {
        if let Some(b) = &stage.base_model
            && let Err(e) = resolve_base(&spec, b)
        {
            errs.key("base_model", format!("stage `{name}`: {e}"));
        }
    }
    let order = match topo_order(&spec) {
        Ok(o) => o,
        Err(cycle) => {
            errs.key(
                &cycle[0],
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
            Vec::new()
        }
    };
    if errs.list.is_empty() {
        Ok(ValidatedPipeline {
            spec,
            order,
            origin: origin.to_string(),
            params: BTreeMap::new(),
            cost: None,
        })
    } else {
        Err(PipelineError::Spec(errs.list))
    }
}

/// Problems found so far, each placed in the file.
pub(crate) struct Errors<'a> {
    list: Vec<SpecError>,
    origin: &'a str,
    pub(crate) raw: &'a str,
}

impl Errors<'_> {
    /// A problem at `(line, column)`.
    pub(crate) fn at(&mut self, (line, column): (usize, usize), message: String) {
        self.list.push(SpecError {
            file: self.origin.to_string(),
            line,
            column,
            message,
        });
    }

    /// A problem at the first `key` in the file.
    fn key(&mut self, key: &str, message: String) {
        let pos = locate(self.raw, key);
        self.at(pos, message);
    }
}

/// A `base_model:` value as `MODEL@REVISION`: given as such, or the name of a
/// source whose model id and revision are known (a hub source, or a source that
/// an ingest stage records under an explicit `model_id`).
pub fn resolve_base(spec: &PipelineSpec, value: &str) -> Result<String, String> {
    resolve_model(spec, value, "base_model")
}

/// [`resolve_base`] for any field (`base_model`, a promote stage's `model`),
/// named in messages.
pub fn resolve_model(spec: &PipelineSpec, value: &str, field: &str) -> Result<String, String> {
    let Some(source) = spec.sources.get(value) else {
        return if value.contains('@') {
            Ok(value.to_string())
        } else {
            Err(format!(
                "{field} `{value}` is neither MODEL@REVISION nor a source name{}",
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
            "{field} `{value}`: give its ingest stage a `model_id`, or write MODEL@REVISION"
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

/// Whether `tz` is a time zone id Java (and so Databricks) accepts: a
/// region from the tz database (`Europe/Paris`, `UTC`), or a fixed offset
/// (`Z`, `+02:00`, `UTC+2`, `GMT-05:30`).
fn is_time_zone(tz: &str) -> bool {
    if tz.parse::<chrono_tz::Tz>().is_ok() || tz == "Z" {
        return true;
    }
    let offset = ["UTC", "GMT", "UT", ""]
        .iter()
        .find_map(|p| tz.strip_prefix(p).filter(|o| o.starts_with(['+', '-'])));
    offset.is_some_and(|o| {
        let (h, m) = o[1..].split_once(':').unwrap_or((&o[1..], "00"));
        let num = |s: &str, max: u32| {
            (1..=2).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<u32>().is_ok_and(|n| n <= max)
        };
        num(h, 18) && num(m, 59)
    })
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
    fn an_unresolved_name_does_not_hide_the_other_problems() {
        let yaml = format!(
            "{BASE}  a: {{ job: ingest, sources: [s], chunk_size: '${{size}}' }}\n  b: {{ job: tensorize }}\n  c: {{ job: ingest, sources: [s], revision: '${{rev}}', depends_on: [x] }}\n"
        );
        let err = load_str(&yaml, "t.yaml").expect_err("invalid").to_string();
        assert!(
            err.contains("t.yaml:6:") && err.contains("`${size}` is neither"),
            "{err}"
        );
        assert!(err.contains("`${rev}` is neither"), "{err}");
        // What is wrong elsewhere is reported with it (a parse error, and
        // a check made after parsing) ...
        assert!(err.contains("unknown variant `tensorize`"), "{err}");
        let yaml = format!(
            "{BASE}  c: {{ job: ingest, sources: [s], revision: '${{rev}}' }}\n  d: {{ job: ingest, sources: [s], depends_on: [x] }}\n"
        );
        let err = load_str(&yaml, "t.yaml").expect_err("invalid").to_string();
        assert!(err.contains("`${rev}` is neither"), "{err}");
        assert!(err.contains("depends on `x`"), "{err}");
        // ... but not what follows from the unresolved name itself.
        let yaml = format!("{BASE}  a: {{ job: ingest, sources: [s], chunk_size: '${{size}}' }}\n");
        let err = load_str(&yaml, "t.yaml").expect_err("invalid").to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn unknown_field_has_line_and_suggestion() {
        let yaml = format!("{BASE}  a:\n    job: ingest\n    sources: [s]\n    paralelism: 4\n");
        let err = load_str(&yaml, "t.yaml").expect_err("typo").to_string();
        assert!(err.starts_with("t.yaml:9:"), "{err}");
        assert!(err.contains("did you mean `parallelism`"), "{err}");
    }

    #[test]
    fn repeated_stage_and_source_names_are_errors() {
        let yaml =
            format!("{BASE}  a: {{ job: ingest, sources: [s] }}\n  a: {{ job: tensorise }}\n");
        let err = load_str(&yaml, "t.yaml")
            .expect_err("two stages `a`")
            .to_string();
        assert!(err.starts_with("t.yaml:7:"), "{err}");
        assert!(err.contains("`a` appears twice"), "{err}");
        assert!(!err.contains(" at line "), "location said twice: {err}");
        let yaml = "name: t\nlake: ./l\nsources:\n  s: { local: { path: ./m } }\n  s: { local: { path: ./n } }\nstages:\n  a: { job: ingest, sources: [s] }\n";
        let err = load_str(yaml, "t.yaml")
            .expect_err("two sources `s`")
            .to_string();
        assert!(err.contains("`s` appears twice"), "{err}");
    }

    #[test]
    fn sources_and_ids_a_run_would_refuse_are_found_offline() {
        let yaml = "name: t\nlake: ./l\nsources:\n\
                    \x20 g: { local: { path: ./m, include: ['[abc'] } }\n\
                    \x20 u: { url: { url: 'https://h/x.bin', sha256: abc } }\n\
                    \x20 p: { url: { url: 'https://h/y.bin', path: ../../e.json } }\n\
                    \x20 o: { object_store: { url: 's3:/b/x' } }\n\
                    stages:\n  i: { job: ingest, sources: [g, u, p, o], model_id: 'a b' }\n";
        let err = load_str(yaml, "t.yaml").expect_err("invalid").to_string();
        for said in [
            "t.yaml:4:3: source `g`: invalid glob",
            "t.yaml:5:3: source `u`: invalid sha256",
            "t.yaml:6:3: source `p`: unsafe file path",
            "t.yaml:7:3: source `o`: invalid location",
            "stage `i`: invalid model_id `a b`",
        ] {
            assert!(err.contains(said), "{said}: {err}");
        }
    }

    #[test]
    fn names_and_zones_databricks_would_refuse_are_errors() {
        let long = "s".repeat(95);
        let yaml = format!(
            "parameters: {{ weightlake_artifacts: x }}\n\
             schedule: {{ quartz_cron: '0 0 3 ? * MON-FRI', timezone: Mars/Olympus }}\n\
             {BASE}  a: {{ job: ingest, sources: [s], shards: 2 }}\n  a_shard: {{ job: ingest, sources: [s] }}\n\
             \x20 -x: {{ job: ingest, sources: [s] }}\n  {long}: {{ job: ingest, sources: [s], shards: 3 }}\n"
        );
        let err = load_str(&yaml, "t.yaml").expect_err("invalid").to_string();
        for said in [
            "`weightlake_artifacts` is reserved",
            "timezone `Mars/Olympus`",
            "`a_shard` is the Databricks task key of sharded stage `a`",
            "stage name `-x`",
            "longer than 94 characters for a sharded stage",
        ] {
            assert!(err.contains(said), "{said}: {err}");
        }
        for tz in [
            "UTC",
            "Europe/Paris",
            "America/New_York",
            "Z",
            "+02:00",
            "GMT-5",
            "UTC+05:30",
        ] {
            assert!(super::is_time_zone(tz), "{tz}");
        }
        for tz in ["Mars/Olympus", "", "UTC+25", "+2:3x", "Europe/Paris "] {
            assert!(!super::is_time_zone(tz), "{tz}");
        }
    }

    #[test]
    fn plain_http_endpoint_with_http_disallowed_is_an_error() {
        let yaml = format!(
            "storage: {{ endpoint: 'http://127.0.0.1:9000', allow_http: false }}\n{BASE}  a: {{ job: ingest, sources: [s] }}\n"
        );
        let err = load_str(&yaml, "t.yaml").expect_err("http").to_string();
        assert!(
            err.starts_with("t.yaml:1:") && err.contains("allow_http is false"),
            "{err}"
        );
    }

    #[test]
    fn type_errors_name_yaml_types() {
        let err = load_str(
            &format!("{BASE}  a: {{ job: ingest, sources: [s], parallelism: lots }}\n"),
            "t.yaml",
        )
        .expect_err("not a number")
        .to_string();
        assert!(err.contains("expected a whole number"), "{err}");
        let err = load_str(
            &format!("{BASE}  a: {{ job: ingest, sources: [s], chunk_size: -5 }}\n"),
            "t.yaml",
        )
        .expect_err("negative")
        .to_string();
        assert!(err.contains("must not be negative"), "{err}");
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

    #[test]
    fn orchestration_fields_parse() {
        let p = load_str(
            &format!(
                "parameters: {{ rev: main, n: 4 }}\nschedule: {{ quartz_cron: '0 0 3 * * ?' }}\ncompute: {{ cloud: aws, spot: true }}\n{BASE}  a: {{ job: ingest, sources: [s], revision: '${{rev}}', shards: 4, max_retries: 2, min_retry_interval: 2m, timeout: 1h, retry_on_timeout: true }}\n  b: {{ job: tensorise, depends_on: [a], run_if: AT_LEAST_ONE_FAILED }}\n"
            ),
            "t.yaml",
        )
        .expect("valid");
        let a = &p.spec().stages["a"];
        assert_eq!(a.revision.as_deref(), Some("main"));
        assert_eq!(
            a.min_retry_interval,
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            p.spec().schedule.as_ref().map(|s| s.timezone.as_str()),
            Some("UTC")
        );
        assert_eq!(p.params()["n"], "4");
        let over = crate::load_str_with(
            &format!("parameters: {{ rev: main }}\n{BASE}  a: {{ job: ingest, sources: [s], revision: '${{rev}}' }}\n"),
            "t.yaml",
            &[("rev".into(), "v2".into())],
        )
        .expect("override");
        assert_eq!(over.spec().stages["a"].revision.as_deref(), Some("v2"));
        let err = crate::load_str_with(
            &format!("parameters: {{ rev: main }}\n{BASE}  a: {{ job: ingest, sources: [s] }}\n"),
            "t.yaml",
            &[("revv".into(), "v2".into())],
        )
        .expect_err("unknown param")
        .to_string();
        assert!(err.contains("did you mean `rev`"), "{err}");
    }

    #[test]
    fn orchestration_errors_are_all_reported_with_positions() {
        let yaml = format!(
            "schedule: {{ quartz_cron: '0 0 25 * * ?' }}\nparameters: {{ 9lives: x }}\n{BASE}  a:\n    job: ingest\n    sources: [s]\n    shards: 0\n    run_if: ALL_DONE\n  b:\n    job: ingest\n    sources: [s]\n    depends_on: [a]\n    timeout: 0s\n"
        );
        let err = load_str(&yaml, "t.yaml").expect_err("invalid").to_string();
        let line = |needle: &str| {
            err.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no `{needle}` in {err}"))
                .to_string()
        };
        assert!(line("hours field `25`").starts_with("t.yaml:1:"), "{err}");
        assert!(
            line("parameter name `9lives`").starts_with("t.yaml:2:"),
            "{err}"
        );
        assert!(line("shards must be").starts_with("t.yaml:11:"), "{err}");
        assert!(
            line("run_if has no effect").starts_with("t.yaml:12:"),
            "{err}"
        );
        assert!(
            line("timeout must be positive").starts_with("t.yaml:17:"),
            "{err}"
        );
        let err = load_str(
            &format!("{BASE}  a: {{ job: ingest, sources: [s] }}\n  b: {{ job: ingest, sources: [s], depends_on: [a], run_if: ALL_SUCESS }}\n"),
            "t.yaml",
        )
        .expect_err("typo")
        .to_string();
        assert!(err.contains("did you mean `ALL_SUCCESS`"), "{err}");
        let err = load_str(
            &format!("{BASE}  a: {{ job: ingest, sources: [s], min_retry_interval: soon }}\n"),
            "t.yaml",
        )
        .expect_err("bad duration")
        .to_string();
        assert!(
            err.contains("stages.a.min_retry_interval: invalid duration `soon`")
                && err.starts_with("t.yaml:6:"),
            "{err}"
        );
        // A stage written as a block: the line of the field, not the stage.
        let err = load_str(
            &format!("{BASE}  a:\n    job: ingest\n    sources: [s]\n    chunk_size: lots\n"),
            "t.yaml",
        )
        .expect_err("bad size")
        .to_string();
        assert!(
            err.starts_with("t.yaml:9:5: stages.a.chunk_size: invalid size `lots`")
                && err.lines().count() == 1,
            "{err}"
        );
        let err = load_str(
            &format!("compute: {{ cloud: ibm }}\n{BASE}  a: {{ job: ingest, sources: [s] }}\n"),
            "t.yaml",
        )
        .expect_err("bad cloud")
        .to_string();
        assert!(
            err.contains("unknown variant `ibm`") && err.starts_with("t.yaml:1:"),
            "{err}"
        );
    }
}
