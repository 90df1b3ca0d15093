//! Pipelines: the YAML spec, its validation, and the local runner.
//!
//! A pipeline is parsed ([`spec::PipelineSpec`]), then validated into a
//! [`validate::ValidatedPipeline`] (pure: no network, no files), then run
//! stage by stage ([`runner`]).
//!
//! # Example
//!
//! ```
//! use weightlake_pipeline::load_str;
//!
//! let yaml = r#"
//! name: demo
//! lake: ./lake
//! sources:
//!   tiny: { local: { path: ./models/tiny } }
//! stages:
//!   ingest: { job: ingest, sources: [tiny], model_id: tiny }
//! "#;
//! let p = load_str(yaml, "demo.yaml")?;
//! assert_eq!(p.order(), ["ingest"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod alerts;
pub mod cost;
pub mod cron;
pub mod databricks;
pub mod duration;
mod error;
pub mod estimate;
mod gold_stages;
pub mod history;
mod interpolate;
pub use interpolate::environment_names;
pub mod ledger;
mod maintain_stage;
pub mod notifications;
mod parse_errors;
pub mod plan;
pub mod runner;
pub mod size;
pub mod spec;
mod stages;
pub mod tracking;
pub mod validate;

use std::collections::BTreeMap;

pub use error::{PipelineError, SpecError};
pub use validate::ValidatedPipeline;

/// Parse and validate pipeline YAML; `origin` names the file in errors.
pub fn load_str(yaml: &str, origin: &str) -> Result<ValidatedPipeline, PipelineError> {
    load_str_with(yaml, origin, &[])
}

/// Parse `--param NAME=VALUE`.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("invalid parameter `{s}`: expected NAME=VALUE")),
    }
}

/// [`load_str`] with parameter overrides (`--param NAME=VALUE`): each must name
/// a parameter declared under `parameters:`.
pub fn load_str_with(
    yaml: &str,
    origin: &str,
    overrides: &[(String, String)],
) -> Result<ValidatedPipeline, PipelineError> {
    let declared = interpolate::declared_parameters(yaml);
    let mut params: BTreeMap<String, String> = declared.clone();
    let mut unknown = interpolate::interpolated_defaults(yaml, &declared, origin);
    for (k, v) in overrides {
        if declared.contains_key(k) {
            params.insert(k.clone(), v.clone());
        } else {
            unknown.push(SpecError {
                file: origin.to_string(),
                line: 0,
                column: 0,
                message: format!(
                    "--param `{k}`: the pipeline declares no such parameter{}",
                    validate::suggest(k, declared.keys())
                ),
            });
        }
    }
    let (text, unresolved) = interpolate::interpolate_all(yaml, origin, &params);
    // Lines holding a name that did not resolve: what else is wrong there
    // follows from it (the placeholder is not a size, a source, …).
    let lines: std::collections::BTreeSet<usize> = unresolved.iter().map(|e| e.line).collect();
    unknown.extend(unresolved);
    let Some(text) = text else {
        return Err(PipelineError::Spec(unknown));
    };
    let follows =
        |e: &SpecError| lines.contains(&e.line) || e.message.contains(interpolate::PLACEHOLDER);
    match check_text(&text, yaml, origin) {
        Ok(p) if unknown.is_empty() => Ok(p.with_params(params)),
        Ok(_) => Err(PipelineError::Spec(unknown)),
        Err(PipelineError::Spec(more)) => {
            unknown.extend(more.into_iter().filter(|e| !follows(e)));
            Err(PipelineError::Spec(unknown))
        }
        Err(_) if !unknown.is_empty() => Err(PipelineError::Spec(unknown)),
        Err(e) => Err(e),
    }
}

/// Parse and validate the interpolated `text` of the file whose raw text is
/// `yaml`, reporting every problem found.
fn check_text(text: &str, yaml: &str, origin: &str) -> Result<ValidatedPipeline, PipelineError> {
    let spec: spec::PipelineSpec = yaml_serde::from_str(text).map_err(|e| {
        let message = e.to_string();
        let (line, column) = duplicate_position(text, &message)
            .or_else(|| e.location().map(|l| (l.line(), l.column())))
            .unwrap_or((0, 0));
        let first = SpecError {
            file: origin.to_string(),
            line,
            column,
            message: readable(&with_suggestion(&message)),
        };
        PipelineError::Spec(parse_errors::all_parse_errors(text, origin, first, |m| {
            readable(&with_suggestion(m))
        }))
    })?;
    let cost = cost::resolve(&spec, yaml, origin);
    let p = validate::validate(spec, yaml, origin);
    match (p, cost) {
        (Ok(p), Ok(cost)) => Ok(p.with_cost(cost)),
        (Err(PipelineError::Spec(mut a)), Err(PipelineError::Spec(b))) => {
            a.extend(b);
            Err(PipelineError::Spec(a))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Read, parse and validate a pipeline file.
pub fn load_file(path: &std::path::Path) -> Result<ValidatedPipeline, PipelineError> {
    load_file_with(path, &[])
}

/// [`load_file`] with parameter overrides (see [`load_str_with`]).
pub fn load_file_with(
    path: &std::path::Path,
    overrides: &[(String, String)],
) -> Result<ValidatedPipeline, PipelineError> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    load_str_with(&text, &path.display().to_string(), overrides)
}

/// Add " (did you mean `x`?)" to serde's "unknown field `y`, expected one of …".
/// Where the second of a repeated name is (`stages: \`a\` appears twice`):
/// the parser only knows the map's start.
fn duplicate_position(raw: &str, msg: &str) -> Option<(usize, usize)> {
    let (section, rest) = msg.split_once(": `")?;
    let (name, tail) = rest.split_once('`')?;
    if !tail.starts_with(" appears twice") {
        return None;
    }
    let mut path: Vec<&str> = section.split('.').collect();
    path.push(name);
    let (first, _) = validate::locate_path(raw, &path);
    if first == 0 {
        return None;
    }
    let after = raw.lines().skip(first).collect::<Vec<_>>().join("\n");
    match validate::locate_path(&after, &[name]) {
        (0, _) => None,
        (line, column) => Some((first + line, column)),
    }
}

/// A YAML error as the user should read it: without the " at line L column C"
/// that the `file:line:column:` prefix already says, and with YAML words for
/// the Rust types serde names.
fn readable(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(at)
            if msg[at + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            &msg[..at]
        }
        _ => msg,
    };
    [
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected u16", "expected a whole number ≥ 0"),
        ("expected u8", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        (
            "expected struct PipelineSpec",
            "expected a mapping of pipeline settings",
        ),
        (
            "data did not match any variant of untagged enum Raw",
            "expected a whole number or text such as `16MiB` or `30s`",
        ),
    ]
    .iter()
    .fold(msg.to_string(), |m, (rust, yaml)| m.replace(rust, yaml))
}

fn with_suggestion(msg: &str) -> String {
    let grab = |s: &str| s.split('`').nth(1).map(str::to_string);
    let Some(rest) = msg
        .split("unknown field ")
        .nth(1)
        .or_else(|| msg.split("unknown variant ").nth(1))
    else {
        return msg.to_string();
    };
    let Some(wrong) = grab(rest) else {
        return msg.to_string();
    };
    let known: Vec<String> = rest
        .split('`')
        .skip(3)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let hint = validate::suggest(&wrong, known.iter());
    if hint.is_empty() {
        msg.to_string()
    } else {
        // serde_yaml appends " at line L column C"; keep the hint before it.
        match msg.find(" at line ") {
            Some(at) => format!("{}{hint}{}", &msg[..at], &msg[at..]),
            None => format!("{msg}{hint}"),
        }
    }
}
